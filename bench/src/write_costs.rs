//! Server CPU per write: for each kind of request keymint makes or could
//! make instead (Secret create, apply, merge patch, GET; status apply or
//! merge patch; Events of either API), one batch of min(N, 2,000) requests
//! of that kind alone, on objects of a namespace of its own, with the
//! benchmark's concurrency; kube-apiserver's and etcd's CPU seconds around
//! each batch, per request. The numbers to choose between write kinds on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keymint::api::ApiKey;
use keymint::controller::reason::KeyEvent;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};

use crate::ideal::{issued_status_patch, key_issued_event, keymint_apply};
use crate::results::{WriteCost, WriteCosts};
use crate::server_cpu::ServerProcesses;
use crate::workload::{self, BaselineKey, BaselineSecrets};
use crate::{Result, cluster};

/// The most writes of one kind per batch.
pub const MAX_WRITES: usize = 2000;
/// The annotation the update, the merge patch and nothing else change.
const REVISION_ANNOTATION: &str = "bench.keymint.dev/revision";

/// What the batches share.
struct Batches<'a> {
    server: &'a ServerProcesses,
    concurrency: usize,
    count: usize,
    /// Transient failures retried, over all batches (each records its share).
    retries: &'a AtomicU64,
    costs: Vec<WriteCost>,
}

impl Batches<'_> {
    /// Runs `request(i)` for i in 0..count, `concurrency` in flight, and
    /// records the batch's wall time and server CPU as `kind`. Returns the
    /// answers in index order.
    async fn measure<T, F, Fut>(&mut self, kind: &str, label: &str, request: F) -> Result<Vec<T>>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let retries_before = self.retries.load(Ordering::Relaxed);
        let server_before = self.server.cpu();
        let started = Instant::now();
        let mut answers: Vec<(usize, T)> = futures::stream::iter(0..self.count)
            .map(|i| {
                let answer = request(i);
                async move { Ok::<_, crate::Error>((i, answer.await?)) }
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        let seconds = started.elapsed().as_secs_f64();
        let server_cpu = self.server.cpu().since(server_before);
        answers.sort_by_key(|(i, _)| *i);
        let ms_per_write = server_cpu.ms_per_key(self.count);
        self.costs.push(WriteCost {
            kind: kind.into(),
            label: label.into(),
            seconds,
            per_second: self.count as f64 / seconds,
            server_cpu,
            server_ms_per_write: ms_per_write,
            retries: self.retries.load(Ordering::Relaxed) - retries_before,
        });
        crate::progress(&format!(
            "  {label}: {ms_per_write:.2} ms server CPU per write, {:.0}/s",
            self.count as f64 / seconds
        ));
        Ok(answers.into_iter().map(|(_, answer)| answer).collect())
    }
}

/// A baseline Secret renamed `<prefix>-<index>`, with the revision annotation at `revision`.
fn named_secret(key: &BaselineKey, prefix: &str, index: usize, revision: u32) -> Secret {
    let mut secret = key.secret.clone();
    secret.metadata.name = Some(format!("{prefix}-{index:05}"));
    secret
        .annotations_mut()
        .insert(REVISION_ANNOTATION.into(), revision.to_string());
    secret
}

/// A merge patch setting the revision annotation.
fn revision_patch(revision: u32) -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {REVISION_ANNOTATION: revision.to_string()}}})
}

/// The `core/v1` Event keymint would create about an issued key.
fn core_key_issued_event(key: &ApiKey, key_id: &str) -> CoreEvent {
    let name = key.name_any();
    let namespace = key.namespace().unwrap_or_default();
    let now = Timestamp::now();
    CoreEvent {
        metadata: ObjectMeta {
            name: Some(format!("{name}.core.{:x}", now.as_nanosecond())),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: key.object_ref(&()),
        reason: Some(KeyEvent::KeyIssued.as_str().into()),
        message: Some(format!("Issued key {key_id} to Secret {namespace}/{name}")),
        source: Some(EventSource {
            component: Some("keymint".into()),
            host: None,
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        type_: Some("Normal".into()),
        action: Some("Issue".into()),
        reporting_component: Some("keymint".into()),
        reporting_instance: Some("keymint-bench".into()),
        ..Default::default()
    }
}

/// Every batch, in `namespace` (created here), `count` writes each.
pub async fn measure(
    client: &kube::Client,
    server: &ServerProcesses,
    namespace: &str,
    count: usize,
    concurrency: usize,
    spec: &serde_json::Value,
) -> Result<WriteCosts> {
    cluster::create_namespace(client, namespace).await?;
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let keys = Api::<ApiKey>::namespaced(client.clone(), namespace);
    let events = Api::<Event>::namespaced(client.clone(), namespace);
    let core_events = Api::<CoreEvent>::namespaced(client.clone(), namespace);
    let template = BaselineSecrets::new(namespace)?;
    let issued: Vec<BaselineKey> = (0..count).map(|i| template.key(i)).collect::<Result<_>>()?;
    let posted: Vec<Secret> = (0..count)
        .map(|i| named_secret(&issued[i], "post", i, 0))
        .collect();
    let applied: Vec<Secret> = (0..count)
        .map(|i| named_secret(&issued[i], "apply", i, 0))
        .collect();
    let reapplied: Vec<Secret> = (0..count)
        .map(|i| named_secret(&issued[i], "apply", i, 1))
        .collect();
    let retries = &AtomicU64::new(0);
    let mut batches = Batches {
        server,
        concurrency,
        count,
        retries,
        costs: Vec::new(),
    };
    let create = &PostParams::default();
    let merge_params = &PatchParams::default();
    let (secrets, keys, events, core_events) = (&secrets, &keys, &events, &core_events);
    batches
        .measure("secret-create", "Secret create (POST)", |i| {
            let secret = &posted[i];
            workload::with_retries("create Secret", retries, move || async move {
                secrets.create(create, secret).await
            })
        })
        .await?;
    for (kind, label, bodies) in [
        (
            "secret-apply-create",
            "Secret server-side apply, new Secret",
            &applied,
        ),
        (
            "secret-apply-update",
            "Secret server-side apply, one annotation changed",
            &reapplied,
        ),
    ] {
        batches
            .measure(kind, label, |i| {
                let secret = &bodies[i];
                let name = secret.name_any();
                async move {
                    workload::with_retries("apply Secret", retries, || async {
                        secrets
                            .patch(&name, &keymint_apply(), &Patch::Apply(secret))
                            .await
                    })
                    .await
                }
            })
            .await?;
    }
    let merge = &revision_patch(2);
    batches
        .measure(
            "secret-merge-patch",
            "Secret JSON merge patch, one annotation",
            |i| {
                let name = posted[i].name_any();
                async move {
                    workload::with_retries("merge-patch Secret", retries, || async {
                        secrets
                            .patch(&name, merge_params, &Patch::Merge(merge))
                            .await
                    })
                    .await
                }
            },
        )
        .await?;
    batches
        .measure("secret-get", "Secret GET (found)", |i| {
            let name = posted[i].name_any();
            async move {
                workload::with_retries("get Secret", retries, || async { secrets.get(&name).await })
                    .await
            }
        })
        .await?;
    batches
        .measure("secret-get-404", "Secret GET (404)", |i| {
            let name = format!("missing-{i:05}");
            async move {
                workload::with_retries("get missing Secret", retries, || async {
                    secrets.get_opt(&name).await
                })
                .await
            }
        })
        .await?;
    // Two sets of fresh APIKeys: one per kind of status write, each write
    // the first status of its key (as when a key is issued).
    let key_objects: Vec<ApiKey> = (0..2 * count)
        .map(|i| workload::api_key(namespace, i, spec))
        .collect::<Result<_>>()?;
    let created_keys = batches
        .measure(
            "apikey-create",
            "APIKey create (POST), for the status writes",
            |i| {
                let key = &key_objects[i];
                workload::with_retries("create APIKey", retries, move || async move {
                    keys.create(create, key).await
                })
            },
        )
        .await?;
    // The second set, not measured (the same kind of write as the first).
    workload::create_all(keys, count, concurrency, |i| {
        Ok(key_objects[count + i].clone())
    })
    .await?;
    // A new key's first status: generation 1.
    let statuses: Vec<serde_json::Value> = (0..2 * count)
        .map(|i| {
            issued_status_patch(
                namespace,
                &workload::key_name(i),
                &issued[i % count].record,
                Some(1),
            )
        })
        .collect::<Result<_>>()?;
    batches
        .measure("status-apply", "APIKey status server-side apply", |i| {
            let status = &statuses[i];
            let name = workload::key_name(i);
            async move {
                workload::with_retries("apply status", retries, || async {
                    keys.patch_status(&name, &keymint_apply(), &Patch::Apply(status))
                        .await
                })
                .await
            }
        })
        .await?;
    let merge_statuses: Vec<serde_json::Value> = statuses[count..]
        .iter()
        .map(|body| serde_json::json!({"status": body["status"]}))
        .collect();
    batches
        .measure(
            "status-merge-patch",
            "APIKey status JSON merge patch",
            |i| {
                let status = &merge_statuses[i];
                let name = workload::key_name(count + i);
                async move {
                    workload::with_retries("merge-patch status", retries, || async {
                        keys.patch_status(&name, merge_params, &Patch::Merge(status))
                            .await
                    })
                    .await
                }
            },
        )
        .await?;
    let v1_events: Vec<Event> = (0..count)
        .map(|i| key_issued_event(&created_keys[i], &issued[i].record.id))
        .collect();
    batches
        .measure(
            "event-create-events-v1",
            "Event create, events.k8s.io/v1",
            |i| {
                let event = &v1_events[i];
                workload::with_retries("create Event", retries, move || async move {
                    events.create(create, event).await
                })
            },
        )
        .await?;
    let v1_core_events: Vec<CoreEvent> = (0..count)
        .map(|i| core_key_issued_event(&created_keys[i], &issued[i].record.id))
        .collect();
    batches
        .measure("event-create-core-v1", "Event create, core/v1", |i| {
            let event = &v1_core_events[i];
            workload::with_retries("create core Event", retries, move || async move {
                core_events.create(create, event).await
            })
        })
        .await?;
    Ok(WriteCosts {
        writes: count,
        kinds: batches.costs,
    })
}
