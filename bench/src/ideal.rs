//! The ideal operator: a bare kube client making, for each new key, exactly
//! the writes keymint makes when it issues one (create the APIKey,
//! server-side apply its Secret, server-side apply its status, create an
//! `events.k8s.io/v1` Event), one after another per key, `--concurrency`
//! keys in flight. What the writes alone cost, with no watch, cache or
//! reconcile: the floor keymint's time to Ready is compared against. Also
//! the builders of those objects, which the per-write table reuses.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use keymint::api::ApiKey;
use keymint::controller::FIELD_MANAGER;
use keymint::controller::reason::KeyEvent;
use keymint::controller::status::{self, Consumers, Issued};
use keymint::keys::plan::KeyRecord;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};

use crate::Result;
use crate::results::IdealOperator;
use crate::server_cpu::ServerProcesses;
use crate::workload::{self, BaselineKey, BaselineSecrets};

/// `spec.renewBefore` of the keys the ideal operator issues (as (2)'s).
const RENEW_BEFORE: Duration = Duration::from_secs(360 * 3600);

/// The status keymint writes for a key just issued (keymint's own
/// `controller::status::issued`, Ready with its message), as the body of a
/// server-side apply on the `status` subresource.
pub fn issued_status_patch(
    namespace: &str,
    name: &str,
    record: &KeyRecord,
    generation: Option<i64>,
) -> Result<serde_json::Value> {
    let expires_note = record
        .expires_at
        .map(|t| {
            format!(
                "; expires at {}",
                keymint::controller::secret::format_time(t)
            )
        })
        .unwrap_or_default();
    let issued = Issued {
        record,
        renewal_time: record
            .expires_at
            .map(|expires| keymint::keys::renewal_time(record.created_at, expires, RENEW_BEFORE)),
        secret_name: name,
        secret_namespace: None,
        generation,
        ready: status::Ready::issued(format!(
            "Key {} issued to Secret {namespace}/{name}{expires_note}",
            record.id
        )),
        previous_key_sha256: None,
        revoked_keys: Vec::new(),
        consumers: Consumers::None,
    };
    let status = status::issued(None, &issued, Timestamp::now());
    Ok(serde_json::json!({
        "apiVersion": keymint::api::API_VERSION,
        "kind": "APIKey",
        "status": serde_json::to_value(status)?,
    }))
}

/// The `events.k8s.io/v1` Event keymint creates when it issues a key (reason
/// `KeyIssued`, action `Issue`), with a note of about 80 bytes.
pub fn key_issued_event(key: &ApiKey, key_id: &str) -> Event {
    let name = key.name_any();
    let namespace = key.namespace().unwrap_or_default();
    let now = Timestamp::now();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        action: Some("Issue".into()),
        reason: Some(KeyEvent::KeyIssued.as_str().into()),
        note: Some(format!("Issued key {key_id} to Secret {namespace}/{name}")),
        event_time: Some(MicroTime(now)),
        regarding: Some(key.object_ref(&())),
        reporting_controller: Some("keymint".into()),
        reporting_instance: Some("keymint-bench".into()),
        type_: Some("Normal".into()),
        ..Default::default()
    }
}

/// Server-side apply as keymint does it: its field manager, forced.
pub fn keymint_apply() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// One key's writes, in keymint's order; returns when its status was applied
/// (the Event follows).
struct KeyWrites<'a> {
    keys: &'a Api<ApiKey>,
    secrets: &'a Api<Secret>,
    events: &'a Api<Event>,
    namespace: &'a str,
    retries: &'a AtomicU64,
}

impl KeyWrites<'_> {
    async fn issue(&self, key: &ApiKey, issued: &BaselineKey) -> Result<Instant> {
        let name = key.name_any();
        let created =
            workload::with_retries(&format!("create APIKey {name}"), self.retries, || async {
                self.keys.create(&PostParams::default(), key).await
            })
            .await?;
        workload::with_retries(&format!("apply Secret {name}"), self.retries, || async {
            self.secrets
                .patch(&name, &keymint_apply(), &Patch::Apply(&issued.secret))
                .await
        })
        .await?;
        let status = issued_status_patch(
            self.namespace,
            &name,
            &issued.record,
            created.metadata.generation,
        )?;
        workload::with_retries(&format!("apply status {name}"), self.retries, || async {
            self.keys
                .patch_status(&name, &keymint_apply(), &Patch::Apply(&status))
                .await
        })
        .await?;
        let status_done = Instant::now();
        let event = key_issued_event(&created, &issued.record.id);
        workload::with_retries(
            &format!("create Event for {name}"),
            self.retries,
            || async { self.events.create(&PostParams::default(), &event).await },
        )
        .await?;
        Ok(status_done)
    }
}

/// Issues `n` keys in `namespace` (no operator watches it) the way keymint
/// does, `concurrency` keys in flight. `spec` is (2)'s.
pub async fn run(
    client: &kube::Client,
    server: &ServerProcesses,
    namespace: &str,
    n: usize,
    concurrency: usize,
    spec: &serde_json::Value,
) -> Result<IdealOperator> {
    let template = BaselineSecrets::new(namespace)?;
    let planned: Vec<(ApiKey, BaselineKey)> = (0..n)
        .map(|i| Ok((workload::api_key(namespace, i, spec)?, template.key(i)?)))
        .collect::<Result<_>>()?;
    let keys = Api::<ApiKey>::namespaced(client.clone(), namespace);
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let events = Api::<Event>::namespaced(client.clone(), namespace);
    let retries = AtomicU64::new(0);
    let writes = KeyWrites {
        keys: &keys,
        secrets: &secrets,
        events: &events,
        namespace,
        retries: &retries,
    };
    let status_bytes = match planned.first() {
        Some((key, issued)) => workload::json_size(&issued_status_patch(
            namespace,
            &key.name_any(),
            &issued.record,
            Some(1),
        )?),
        None => 0,
    };
    let server_before = server.cpu();
    let started = Instant::now();
    let status_done: Vec<Instant> = futures::stream::iter(planned.iter())
        .map(|(key, issued)| writes.issue(key, issued))
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    let all_done = started.elapsed();
    let server_cpu = server.cpu().since(server_before);
    let last_status = status_done.into_iter().max().unwrap_or(started);
    let seconds = last_status.duration_since(started).as_secs_f64();
    Ok(IdealOperator {
        seconds,
        per_second: n as f64 / seconds,
        seconds_with_events: all_done.as_secs_f64(),
        server_cpu,
        status_bytes,
        retries: retries.into_inner(),
    })
}
