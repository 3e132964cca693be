//! The holder side on the real node: keys name their consumers, keymint rolls
//! them out on every new key and drops the previous key once they have
//! switched (issue #15). Real Deployments, real Pods, the operator as the
//! chart installs it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use keymint::api::names::SECRET_PREVIOUS_KEY;
use keymint::api::{ApiKey, CONDITION_CONSUMERS_ROLLED_OUT, ConsumerState, KeyRing};
use keymint::rollout::annotation_key;
use keymint_test_support::{
    api_key, create_if_absent, eventually, http_get_at, namespace, wait_for, wait_ready,
};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::{RELEASE, SUITE, VERSION, installed, node, pod_ip, stderr};

/// A rollout of a small Deployment on this node, with probes every second.
const SWITCH: Duration = Duration::from_secs(120);

/// One test's setting: the suite's turn, the release installed, a namespace
/// of its own and the APIs the tests use in it.
struct Scene {
    _suite: tokio::sync::MutexGuard<'static, ()>,
    client: kube::Client,
    ns: String,
    keys: Api<ApiKey>,
    secrets: Api<Secret>,
    deployments: Api<Deployment>,
}

impl Scene {
    async fn new(ns: &str) -> Scene {
        let _suite = SUITE.lock().await;
        let client = installed().await;
        let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
        create_if_absent(&namespaces, &namespace(ns))
            .await
            .expect("namespace");
        Scene {
            _suite,
            keys: Api::namespaced(client.clone(), ns),
            secrets: Api::namespaced(client.clone(), ns),
            deployments: Api::namespaced(client.clone(), ns),
            ns: ns.to_string(),
            client,
        }
    }
}

/// A consumer reading the given Secrets' `key` as env vars, serving
/// /readyz on 8081 (`keymint verify --floor`); its readiness probe asks
/// `probe_port` (another port never becomes Ready).
fn consumer(name: &str, replicas: i32, secrets: &[&str], probe_port: u16) -> Deployment {
    let env: Vec<Value> = secrets
        .iter()
        .enumerate()
        .map(|(i, secret)| {
            json!({"name": format!("KEY_{i}"), "valueFrom": {"secretKeyRef": {"name": secret, "key": "key"}}})
        })
        .collect();
    workload(
        name,
        replicas,
        json!(["verify", "--floor", "--listen", "0.0.0.0:8081"]),
        env,
        Some(probe_port),
    )
}

fn workload(
    name: &str,
    replicas: i32,
    args: Value,
    env: Vec<Value>,
    probe_port: Option<u16>,
) -> Deployment {
    let probe = probe_port.map(|port| {
        json!({"httpGet": {"path": "/readyz", "port": port}, "periodSeconds": 1, "failureThreshold": 1})
    });
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "containers": [{
                        "name": "app",
                        "image": format!("keymint:{VERSION}"),
                        "imagePullPolicy": "Never",
                        "args": args,
                        "env": env,
                        "readinessProbe": probe,
                        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                    }],
                },
            },
        },
    }))
    .expect("a Deployment")
}

fn template_annotation(deployment: &Deployment, annotation: &str) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(annotation)
        .cloned()
}

fn current_id(key: &ApiKey) -> String {
    key.status
        .as_ref()
        .and_then(|s| s.id.clone())
        .expect("an issued key")
}

/// The consumer's Pods: all of them run `id` under `annotation`, Ready, none
/// of another template left (terminating ones included).
async fn wait_switched(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    annotation: &str,
    id: &str,
) -> Vec<Pod> {
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    eventually(
        &format!("{name} to run key {id} on every Pod"),
        SWITCH,
        || async {
            let deployment = deployments.get(name).await.map_err(|e| e.to_string())?;
            let wanted = deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1) as usize;
            let listed = pods
                .list(&ListParams::default().labels(&format!("app={name}")))
                .await
                .map_err(|e| e.to_string())?
                .items;
            let carried: Vec<Option<String>> = listed
                .iter()
                .map(|pod| pod.annotations().get(annotation).cloned())
                .collect();
            let ready = listed.iter().all(super::pod_ready);
            if template_annotation(&deployment, annotation).as_deref() == Some(id)
                && listed.len() == wanted
                && carried.iter().all(|c| c.as_deref() == Some(id))
                && ready
            {
                Ok(listed)
            } else {
                Err(format!(
                    "{} Pods carrying {carried:?}, all Ready {ready}",
                    listed.len()
                ))
            }
        },
    )
    .await
}

async fn rotate(keys: &Api<ApiKey>, name: &str, request: &str) {
    keys.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"keymint.dev/rotate-request": request}}}),
        ),
    )
    .await
    .expect("rotate request");
}

async fn wait_new_id(keys: &Api<ApiKey>, name: &str, old: &str) -> ApiKey {
    wait_for(keys, name, "a new key id", |key: &ApiKey| {
        key.status
            .as_ref()
            .and_then(|s| s.id.as_deref())
            .is_some_and(|id| id != old)
    })
    .await
}

fn has_previous(secret: &Secret) -> bool {
    secret
        .data
        .as_ref()
        .is_some_and(|data| data.contains_key(SECRET_PREVIOUS_KEY))
}

/// Every Pod of a namespace as the test saw it: the key id its template
/// carried, when it was first seen deleting or gone, its termination message.
#[derive(Default, Debug, Clone)]
struct SeenPod {
    key_id: Option<String>,
    gone_at: Option<Instant>,
    message: Option<String>,
}

#[derive(Clone)]
struct PodLog(Arc<Mutex<BTreeMap<String, SeenPod>>>);

impl PodLog {
    /// Watches the Pods labelled `app=<app>` in `namespace` until dropped.
    fn start(
        client: &kube::Client,
        namespace: &str,
        app: &str,
        annotation: &str,
    ) -> (PodLog, tokio::task::JoinHandle<()>) {
        let log = PodLog(Arc::default());
        let pods = Api::<Pod>::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().labels(&format!("app={app}"));
        let annotation = annotation.to_string();
        let writer = log.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher(pods, config).boxed();
            while let Some(event) = events.next().await {
                let Ok(event) = event else { continue };
                let (pod, deleted) = match event {
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => (pod, false),
                    watcher::Event::Delete(pod) => (pod, true),
                    _ => continue,
                };
                let mut seen = writer.0.lock().expect("log");
                let entry = seen.entry(pod.name_any()).or_default();
                entry.key_id = pod.annotations().get(&annotation).cloned();
                let message = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first())
                    .and_then(|c| c.state.as_ref())
                    .and_then(|s| s.terminated.as_ref())
                    .and_then(|t| t.message.clone());
                if message.is_some() {
                    entry.message = message;
                }
                if deleted && entry.gone_at.is_none() {
                    entry.gone_at = Some(Instant::now());
                }
            }
        });
        (log, task)
    }

    fn snapshot(&self) -> BTreeMap<String, SeenPod> {
        self.0.lock().expect("log").clone()
    }

    /// When the last Pod not carrying `id` was gone, once the watch saw it.
    async fn wait_old_gone(&self, id: &str) -> Instant {
        eventually(
            "the watch to see the old Pods gone",
            Duration::from_secs(10),
            || async {
                self.last_gone_without(id)
                    .ok_or("an old Pod not seen gone".to_string())
            },
        )
        .await
    }

    /// When the last Pod whose template did not carry `id` was gone.
    fn last_gone_without(&self, id: &str) -> Option<Instant> {
        self.snapshot()
            .values()
            .filter(|pod| pod.key_id.as_deref() != Some(id))
            .map(|pod| pod.gone_at)
            .collect::<Option<Vec<Instant>>>()
            .and_then(|times| times.into_iter().max())
    }
}

/// The operator's metric `name{kind="..."}`, summed over its Pods.
async fn operator_metric(client: &kube::Client, name: &str, kind: &str) -> u64 {
    let pods = super::wait_rollout(client).await;
    let mut total = 0;
    for pod in pods {
        let (_, text) =
            http_get_at(&pod_ip(&pod), super::METRICS_PORT, "/metrics").unwrap_or_default();
        let series = format!("{name}_total{{kind=\"{kind}\"}} ");
        total += text
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

#[tokio::test]
async fn a_holder_switches_on_rotation_and_the_previous_key_goes_when_its_last_old_pod_is_gone() {
    let Scene {
        _suite,
        client,
        ns,
        keys,
        secrets,
        deployments,
    } = Scene::new("holders-env").await;
    let spec = json!({"permissions": ["read"], "validFor": "720h", "gracePeriod": "10m",
        "consumers": [{"kind": "Deployment", "name": "app"}]});
    keys.create(&PostParams::default(), &api_key("app-key", spec))
        .await
        .expect("key");
    // Same, with no consumers: behaves as before.
    let plain = json!({"permissions": ["read"], "validFor": "720h", "gracePeriod": "10m"});
    keys.create(&PostParams::default(), &api_key("plain-key", plain))
        .await
        .expect("key");
    let first = current_id(&wait_ready(&keys, "app-key").await);
    let plain_first = current_id(&wait_ready(&keys, "plain-key").await);
    deployments
        .create(
            &PostParams::default(),
            &consumer("app", 2, &["app-key"], 8081),
        )
        .await
        .expect("consumer");
    let annotation = annotation_key("APIKey", &ns, "app-key");
    wait_switched(&client, &ns, "app", &annotation, &first).await;
    let adopted = wait_for(
        &keys,
        "app-key",
        "ConsumersRolledOut=True",
        |key: &ApiKey| {
            key.status
                .as_ref()
                .and_then(|s| s.condition(CONDITION_CONSUMERS_ROLLED_OUT))
                .is_some_and(|c| c.status == "True")
        },
    )
    .await;
    let listed = &adopted.status.as_ref().expect("status").consumers;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].name.as_str(),
            listed[0].state,
            listed[0].key_id.as_deref()
        ),
        ("app", ConsumerState::RolledOut, Some(first.as_str()))
    );

    let (pods, watch) = PodLog::start(&client, &ns, "app", &annotation);
    let completed_before = operator_metric(&client, "keymint_rollouts_completed", "APIKey").await;
    let rotated_at = Instant::now();
    rotate(&keys, "app-key", "one").await;
    rotate(&keys, "plain-key", "one").await;
    let second = current_id(&wait_new_id(&keys, "app-key", &first).await);
    let plain_second = wait_new_id(&keys, "plain-key", &plain_first).await;
    wait_switched(&client, &ns, "app", &annotation, &second).await;
    let dropped = eventually("the previous key to leave the Secret", SWITCH, || async {
        let secret = secrets.get("app-key").await.map_err(|e| e.to_string())?;
        if has_previous(&secret) {
            Err("previous key still there".to_string())
        } else {
            Ok(Instant::now())
        }
    })
    .await;
    let last_old_gone = pods.wait_old_gone(&second).await;
    watch.abort();
    let seen = pods.snapshot();
    assert_eq!(
        seen.values()
            .filter(|p| p.key_id.as_deref() == Some(first.as_str()))
            .count(),
        2,
        "{seen:?}"
    );
    let after_old_gone = dropped.saturating_duration_since(last_old_gone);
    println!(
        "rotation to {second}: both Pods switched, previous key removed {:.1} s after the last old Pod was gone ({:.1} s after the rotation; gracePeriod 600 s)",
        after_old_gone.as_secs_f64(),
        dropped.duration_since(rotated_at).as_secs_f64()
    );
    assert!(
        dropped >= last_old_gone || last_old_gone.duration_since(dropped) < Duration::from_secs(1),
        "the previous key went before the last old Pod was gone"
    );
    assert!(
        after_old_gone < Duration::from_secs(10),
        "previous key removed {after_old_gone:?} after the last old Pod"
    );
    let key = wait_for(
        &keys,
        "app-key",
        "status without the previous key",
        |key: &ApiKey| key.status.as_ref().is_some_and(|s| s.previous_id.is_none()),
    )
    .await;
    let condition = key
        .status
        .as_ref()
        .and_then(|s| s.condition(CONDITION_CONSUMERS_ROLLED_OUT))
        .expect("condition")
        .clone();
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "RolledOut")
    );
    assert_eq!(
        operator_metric(&client, "keymint_rollouts_completed", "APIKey").await,
        completed_before + 1
    );
    let events = keymint_test_support::events_for(&client, &ns, "app-key").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("ConsumersRolledOut")),
        "{events:?}"
    );

    // No consumers: the previous key stays for its grace period, as before.
    let plain = plain_second.status.expect("status");
    assert_eq!(plain.previous_id.as_deref(), Some(plain_first.as_str()));
    assert!(plain.condition(CONDITION_CONSUMERS_ROLLED_OUT).is_none());
    assert!(has_previous(
        &secrets.get("plain-key").await.expect("secret")
    ));
}

#[tokio::test]
async fn a_consumer_that_never_becomes_available_keeps_the_previous_key_until_grace_then_a_warning()
{
    let Scene {
        _suite,
        client,
        ns,
        keys,
        secrets,
        deployments,
    } = Scene::new("holders-stuck").await;
    let spec = json!({"permissions": ["read"], "validFor": "720h", "gracePeriod": "20s",
        "consumers": [{"kind": "Deployment", "name": "stuck"}, {"kind": "Deployment", "name": "elsewhere"}]});
    keys.create(&PostParams::default(), &api_key("stuck-key", spec))
        .await
        .expect("key");
    let first = current_id(&wait_ready(&keys, "stuck-key").await);
    // Its readiness probe asks a port nothing listens on.
    deployments
        .create(
            &PostParams::default(),
            &consumer("stuck", 1, &["stuck-key"], 9),
        )
        .await
        .expect("consumer");
    // A workload that does not read the key's Secret is never touched.
    deployments
        .create(&PostParams::default(), &consumer("elsewhere", 1, &[], 8081))
        .await
        .expect("bystander");
    let annotation = annotation_key("APIKey", &ns, "stuck-key");
    wait_for(
        &keys,
        "stuck-key",
        "the consumers listed",
        |key: &ApiKey| {
            key.status.as_ref().is_some_and(|s| {
                s.consumers
                    .iter()
                    .any(|c| c.name == "elsewhere" && c.state == ConsumerState::NotAHolder)
                    && s.consumers
                        .iter()
                        .any(|c| c.name == "stuck" && c.state == ConsumerState::RollingOut)
            })
        },
    )
    .await;
    rotate(&keys, "stuck-key", "one").await;
    let rotated = wait_new_id(&keys, "stuck-key", &first).await;
    let second = current_id(&rotated);
    let until = rotated
        .status
        .as_ref()
        .and_then(|s| s.previous_expires_at.clone())
        .expect("grace end")
        .0;
    eventually(
        "the new id on the stuck consumer's template",
        SWITCH,
        || async {
            let d = deployments.get("stuck").await.map_err(|e| e.to_string())?;
            (template_annotation(&d, &annotation).as_deref() == Some(second.as_str()))
                .then_some(())
                .ok_or("not yet".to_string())
        },
    )
    .await;
    // Still there while the consumer cannot finish.
    let waiting = keys.get("stuck-key").await.expect("key");
    let condition = waiting
        .status
        .as_ref()
        .and_then(|s| s.condition(CONDITION_CONSUMERS_ROLLED_OUT))
        .expect("condition")
        .clone();
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "RollingOut"),
        "{}",
        condition.message
    );
    assert!(
        condition.message.contains("Deployment/stuck"),
        "{}",
        condition.message
    );
    assert!(
        has_previous(&secrets.get("stuck-key").await.expect("secret")),
        "the previous key went before gracePeriod"
    );
    let timed_out = wait_for(&keys, "stuck-key", "RolloutTimedOut", |key: &ApiKey| {
        key.status
            .as_ref()
            .and_then(|s| s.condition(CONDITION_CONSUMERS_ROLLED_OUT))
            .is_some_and(|c| c.reason == "RolloutTimedOut")
    })
    .await;
    assert!(
        jiff::Timestamp::now() >= until,
        "timed out before the grace period ended"
    );
    let message = timed_out
        .status
        .as_ref()
        .and_then(|s| s.condition(CONDITION_CONSUMERS_ROLLED_OUT))
        .expect("condition")
        .message
        .clone();
    assert!(
        message.contains("Deployment/stuck") && !message.contains("elsewhere"),
        "{message}"
    );
    assert!(!has_previous(
        &secrets.get("stuck-key").await.expect("secret")
    ));
    let warning =
        keymint_test_support::wait_warning(&client, &ns, "stuck-key", "RolloutTimedOut").await;
    assert!(
        warning
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("Deployment/stuck")
    );
    keymint_test_support::wait_warning(&client, &ns, "stuck-key", "ConsumerNotAHolder").await;
    let bystander = deployments.get("elsewhere").await.expect("bystander");
    assert_eq!(
        bystander.metadata.generation,
        Some(1),
        "a workload not reading the Secret was changed"
    );
    assert!(template_annotation(&bystander, &annotation).is_none());
}

/// The ReplicaSets of a Deployment (one per template it has rolled out).
async fn replica_sets(client: &kube::Client, namespace: &str, app: &str) -> usize {
    Api::<ReplicaSet>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("ReplicaSets")
        .items
        .len()
}

#[tokio::test]
async fn an_operator_restart_and_a_gitops_sync_of_the_consumer_cause_no_rollout_and_no_drift() {
    let Scene {
        _suite,
        client,
        ns,
        keys,
        secrets: _,
        deployments,
    } = Scene::new("holders-sync").await;
    let spec = json!({"permissions": ["read"], "validFor": "720h", "gracePeriod": "10m",
        "consumers": [{"kind": "Deployment", "selector": {"matchLabels": {"app": "synced"}}}]});
    keys.create(&PostParams::default(), &api_key("synced-key", spec))
        .await
        .expect("key");
    let id = current_id(&wait_ready(&keys, "synced-key").await);
    let manifest = consumer("synced", 1, &["synced-key"], 8081);
    // As Argo CD's server-side sync creates it.
    let argocd = PatchParams::apply("argocd-controller").force();
    deployments
        .patch("synced", &argocd, &Patch::Apply(&manifest))
        .await
        .expect("apply");
    let annotation = annotation_key("APIKey", &ns, "synced-key");
    wait_switched(&client, &ns, "synced", &annotation, &id).await;
    let settled = deployments.get("synced").await.expect("consumer");
    let generation = settled.metadata.generation;
    let sets = replica_sets(&client, &ns, "synced").await;

    // The operator restarts (its Pod deleted; a new one takes the lease).
    let operator = super::wait_rollout(&client).await;
    Api::<Pod>::namespaced(client.clone(), super::NAMESPACE)
        .delete(&operator[0].name_any(), &Default::default())
        .await
        .expect("delete the operator Pod");
    let restarted = eventually("a new operator Pod", super::ROLLOUT, || async {
        let pods = super::wait_rollout(&client).await;
        (pods[0].name_any() != operator[0].name_any())
            .then_some(pods)
            .ok_or("the old Pod".to_string())
    })
    .await;
    super::wait_confirmed_all(&client, &restarted[0]).await;
    // The manifest synced again, server-side as Argo CD, then client-side.
    let synced = deployments
        .patch("synced", &argocd, &Patch::Apply(&manifest))
        .await
        .expect("apply");
    assert_eq!(
        template_annotation(&synced, &annotation).as_deref(),
        Some(id.as_str()),
        "the sync removed keymint's annotation"
    );
    // No drift: a dry run of the sync changes nothing.
    let dry = deployments
        .patch(
            "synced",
            &PatchParams {
                dry_run: true,
                ..argocd.clone()
            },
            &Patch::Apply(&manifest),
        )
        .await
        .expect("dry run");
    let live = deployments.get("synced").await.expect("consumer");
    assert_eq!(dry.spec, live.spec, "a sync would change the consumer");
    let unchanged = |compare_generation: bool| {
        let deployments = deployments.clone();
        let client = client.clone();
        let (ns, annotation, id) = (ns.clone(), annotation.clone(), id.clone());
        move || {
            let (deployments, client) = (deployments.clone(), client.clone());
            let (ns, annotation, id) = (ns.clone(), annotation.clone(), id.clone());
            async move {
                let now = deployments.get("synced").await.map_err(|e| e.to_string())?;
                let count = replica_sets(&client, &ns, "synced").await;
                let same_generation = !compare_generation || now.metadata.generation == generation;
                if same_generation
                    && count == sets
                    && template_annotation(&now, &annotation).as_deref() == Some(id.as_str())
                {
                    Ok(())
                } else {
                    Err(format!(
                        "generation {:?} -> {:?}, ReplicaSets {sets} -> {count}, annotation {:?}",
                        generation,
                        now.metadata.generation,
                        template_annotation(&now, &annotation)
                    ))
                }
            }
        }
    };
    keymint_test_support::holds_for(
        "no rollout after the restart and the server-side sync",
        Duration::from_secs(8),
        unchanged(true),
    )
    .await;
    // A client-side `kubectl apply` of the same manifest keeps the annotation
    // and starts no rollout. (Its first apply over a server-side-applied
    // object bumps metadata.generation with no template change, keymint or
    // not: only the ReplicaSets and the template are compared here.)
    let kubectl = keymint_test_support::helm::repo().join(".venv/bin/kubectl");
    let file = super::scratch().join("synced.json");
    std::fs::create_dir_all(super::scratch()).expect("scratch");
    std::fs::write(&file, serde_json::to_vec(&manifest).expect("json")).expect("manifest");
    let plane = node().control_plane();
    let apply = std::process::Command::new(&kubectl)
        .args(["apply", "--namespace", &ns, "-f"])
        .arg(&file)
        .arg("--kubeconfig")
        .arg(plane.kubeconfig_path())
        .output()
        .expect("kubectl");
    assert!(apply.status.success(), "{}", stderr(&apply));
    keymint_test_support::holds_for(
        "no rollout after a client-side apply",
        Duration::from_secs(8),
        unchanged(false),
    )
    .await;
}

/// Every key of `ids` (name -> current id) switched on the Deployment `fed`.
async fn wait_fed(client: &kube::Client, ns: &str, ids: &BTreeMap<String, String>) {
    for (name, id) in ids {
        wait_switched(client, ns, "fed", &annotation_key("APIKey", ns, name), id).await;
    }
}

async fn generation_of(deployments: &Api<Deployment>, name: &str) -> i64 {
    deployments
        .get(name)
        .await
        .expect("the Deployment")
        .metadata
        .generation
        .expect("generation")
}

#[tokio::test]
async fn twenty_keys_rotated_in_the_same_second_feeding_one_deployment_cause_one_rollout() {
    let Scene {
        _suite,
        client,
        ns,
        keys,
        secrets: _,
        deployments,
    } = Scene::new("holders-burst").await;
    let names: Vec<String> = (0..20).map(|i| format!("burst-{i:02}")).collect();
    for name in &names {
        let spec = json!({"permissions": ["read"], "validFor": "720h", "gracePeriod": "10m",
            "consumers": [{"kind": "Deployment", "name": "fed"}]});
        keys.create(&PostParams::default(), &api_key(name, spec))
            .await
            .expect("key");
    }
    let mut ids = BTreeMap::new();
    for name in &names {
        ids.insert(name.clone(), current_id(&wait_ready(&keys, name).await));
    }
    let secrets: Vec<&str> = names.iter().map(String::as_str).collect();
    deployments
        .create(&PostParams::default(), &consumer("fed", 1, &secrets, 8081))
        .await
        .expect("consumer");
    wait_fed(&client, &ns, &ids).await;
    let before = generation_of(&deployments, "fed").await;
    let sets = replica_sets(&client, &ns, "fed").await;
    let triggered = operator_metric(&client, "keymint_rollouts_triggered", "Deployment").await;

    futures::future::join_all(names.iter().map(|name| rotate(&keys, name, "burst"))).await;
    for name in &names {
        let rotated = current_id(&wait_new_id(&keys, name, &ids[name]).await);
        ids.insert(name.clone(), rotated);
    }
    wait_fed(&client, &ns, &ids).await;
    let after = generation_of(&deployments, "fed").await;
    let new_sets = replica_sets(&client, &ns, "fed").await;
    let writes =
        operator_metric(&client, "keymint_rollouts_triggered", "Deployment").await - triggered;
    println!(
        "20 rotations: generation {before} -> {after}, ReplicaSets {sets} -> {new_sets}, template writes {writes}"
    );
    assert_eq!(
        (after - before, new_sets - sets, writes),
        (1, 1, 1),
        "20 rotations caused more than one rollout"
    );
}

/// The verify server's answers by reason, summed over its Pods.
async fn verifications(client: &kube::Client, namespace: &str) -> BTreeMap<String, u64> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels("app.kubernetes.io/component=verifier"))
        .await
        .expect("verifier Pods")
        .items;
    let mut by_reason = BTreeMap::new();
    for pod in pods {
        let (_, text) = http_get_at(&pod_ip(&pod), 8081, "/metrics").expect("verifier metrics");
        for line in text
            .lines()
            .filter(|l| l.starts_with("keymint_verify_verifications_total{reason=\""))
        {
            let rest = &line["keymint_verify_verifications_total{reason=\"".len()..];
            if let Some((reason, value)) = rest.split_once("\"} ") {
                *by_reason.entry(reason.to_string()).or_default() +=
                    value.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    by_reason
}

fn ring_lists(secret: &Secret, id: &str) -> bool {
    keymint_test_support::text(secret, "keyring.json")
        .and_then(|doc| serde_json::from_str::<Value>(&doc).ok())
        .and_then(|doc| doc["members"].as_array().cloned())
        .is_some_and(|members| members.iter().any(|m| m["id"] == id))
}

#[tokio::test]
async fn zero_downtime_a_holder_sending_through_a_verifier_across_three_rotations_is_never_refused()
{
    let Scene {
        _suite,
        client,
        ns,
        keys,
        secrets,
        deployments,
    } = Scene::new("holders-proof").await;
    let rings = Api::<KeyRing>::namespaced(client.clone(), &ns);
    rings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
            "apiVersion": "keymint.dev/v1alpha1", "kind": "KeyRing",
            "metadata": {"name": "api"}, "spec": {}}))
            .expect("ring"),
        )
        .await
        .expect("ring");
    let spec = json!({"permissions": ["read"], "validFor": "720h", "gracePeriod": "10m",
        "keyRings": [{"name": "api"}], "consumers": [{"kind": "Deployment", "name": "holder"}]});
    keys.create(&PostParams::default(), &api_key("holder-key", spec))
        .await
        .expect("key");
    let mut id = current_id(&wait_ready(&keys, "holder-key").await);
    let first = id.clone();
    eventually("the ring to list the key", super::WAIT, || async {
        let ring = secrets.get("api").await.map_err(|e| e.to_string())?;
        ring_lists(&ring, &id)
            .then_some(())
            .ok_or("not listed".to_string())
    })
    .await;
    // The verify server, as the chart deploys it (watch mode, one-Secret Role).
    let plane = node().control_plane();
    super::helm().install_ok(
        plane,
        RELEASE,
        super::NAMESPACE,
        &[
            "--reuse-values",
            "--set",
            "verifier.enabled=true",
            "--set",
            &format!("verifier.namespace={ns}"),
            "--set",
            "verifier.keyRingSecret=api",
        ],
    );
    super::wait_deployment(&client, &ns, "keymint-verifier", "verifier").await;
    let service = Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), &ns)
        .get("keymint-verifier")
        .await
        .expect("verifier Service");
    let address = service.spec.and_then(|s| s.cluster_ip).expect("cluster IP");
    // kube-proxy programs a new Service's rules shortly after its endpoints
    // are ready: the holders start once it routes (from the node itself).
    eventually("the verifier Service to route", super::WAIT, || async {
        let answer =
            keymint_test_support::verify::request_at(&address, 8081, "GET", "/readyz", &[], "")
                .map_err(|e| e.to_string())?;
        (answer.status == 200)
            .then_some(())
            .ok_or(format!("/readyz answered {}", answer.status))
    })
    .await;
    let annotation = annotation_key("APIKey", &ns, "holder-key");
    let holder = workload(
        "holder",
        2,
        json!([
            "hold",
            "--url",
            format!("http://{address}:8081/v1/verify"),
            "--rate",
            "25"
        ]),
        vec![
            json!({"name": "KEYMINT_KEY", "valueFrom": {"secretKeyRef": {"name": "holder-key", "key": "key"}}}),
        ],
        None,
    );
    let (pods, watch) = PodLog::start(&client, &ns, "holder", &annotation);
    deployments
        .create(&PostParams::default(), &holder)
        .await
        .expect("holder");
    wait_switched(&client, &ns, "holder", &annotation, &id).await;

    let mut report = Vec::new();
    for round in 1..=3 {
        let old = id.clone();
        rotate(&keys, "holder-key", &format!("round-{round}")).await;
        id = current_id(&wait_new_id(&keys, "holder-key", &old).await);
        wait_switched(&client, &ns, "holder", &annotation, &id).await;
        let (secret_clean, ring_clean) = eventually(
            "the previous key gone from the Secret and the ring",
            SWITCH,
            || async {
                let secret = secrets.get("holder-key").await.map_err(|e| e.to_string())?;
                let ring = secrets.get("api").await.map_err(|e| e.to_string())?;
                if has_previous(&secret) || ring_lists(&ring, &old) {
                    Err("previous key still there".to_string())
                } else {
                    Ok((Instant::now(), Instant::now()))
                }
            },
        )
        .await;
        let last_old = pods.wait_old_gone(&id).await;
        let lag = secret_clean.saturating_duration_since(last_old);
        assert!(
            lag < Duration::from_secs(10),
            "round {round}: the previous key stayed {lag:?} after the last old Pod"
        );
        report.push(format!("round {round}: key {old} -> {id}; previous key gone from Secret and ring {:.1} s after the last old holder Pod", lag.as_secs_f64()));
        let _ = ring_clean;
    }
    // Stop the holders: each writes its counts as it terminates.
    deployments
        .patch(
            "holder",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .expect("scale down");
    let summaries = eventually("every holder Pod gone with its counts", SWITCH, || async {
        let seen = pods.snapshot();
        let missing: Vec<&String> = seen
            .iter()
            .filter(|(_, p)| p.message.is_none() || p.gone_at.is_none())
            .map(|(n, _)| n)
            .collect();
        // The first two (adopted as consumers), then two per rotation.
        if seen.len() >= 8 && missing.is_empty() {
            Ok(seen)
        } else {
            Err(format!(
                "{} Pods seen, no counts yet from {missing:?}",
                seen.len()
            ))
        }
    })
    .await;
    watch.abort();
    let (mut sent, mut valid, mut errors, mut retries) = (0u64, 0u64, 0u64, 0u64);
    let mut refused = 0u64;
    for (name, pod) in &summaries {
        let tally: Value = serde_json::from_str(pod.message.as_deref().unwrap_or_default())
            .expect("a holder's counts");
        let pod_sent = tally["sent"].as_u64().unwrap_or(0);
        let seconds = tally["seconds"].as_f64().unwrap_or(0.0);
        sent += pod_sent;
        valid += tally["valid"].as_u64().unwrap_or(0);
        errors += tally["errors"].as_u64().unwrap_or(0);
        retries += tally["retries"].as_u64().unwrap_or(0);
        println!("{name}: {tally}");
        refused += tally["refused"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        assert!(
            pod_sent as f64 >= 20.0 * seconds - 25.0,
            "{name} sent {pod_sent} in {seconds:.1} s: {tally}"
        );
        // Every Pod ran the key its template carried (the first Pods, created
        // before keymint adopted the holder, the key of that time), and only that one.
        let expected = pod.key_id.clone().unwrap_or_else(|| first.clone());
        assert_eq!(tally["keyIds"], json!([expected]), "{name}: {tally}");
    }
    let verifier = verifications(&client, &ns).await;
    for line in &report {
        println!("{line}");
    }
    println!(
        "holders: {} Pods, {sent} requests, {valid} VALID, {refused} refused, {errors} without an answer ({retries} sent again after a transport error); verify servers: {verifier:?}",
        summaries.len()
    );
    assert_eq!((refused, errors), (0, 0), "requests refused or unanswered");
    assert_eq!(valid, sent);
    assert!(
        verifier
            .iter()
            .all(|(reason, count)| reason == "VALID" || *count == 0),
        "{verifier:?}"
    );
    assert!(verifier.get("VALID").copied().unwrap_or(0) >= sent);

    super::helm().install_ok(
        plane,
        RELEASE,
        super::NAMESPACE,
        &["--reuse-values", "--set", "verifier.enabled=false"],
    );
}
