//! Issue 10's fairness and memory bounds, on the real control plane: one
//! tenant's 1-second keys cannot push another tenant's new key past 10 s to
//! Ready, and large labelled Secrets and huge annotations cannot push the
//! operator past its chart memory limit (256 MiB).
//!
//! Its own test binary: its own control plane and one operator. The two tests
//! take turns (each would distort the other's figure).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use keymint::api::ApiKey;
use keymint_test_support::*;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use rand::Rng;
use serde_json::json;

/// The acceptance bound for another tenant's new key.
const READY_BOUND: Duration = Duration::from_secs(10);
/// The chart's memory limit.
const MEMORY_BOUND_KIB: u64 = 256 * 1024;
const STORM_KEYS: usize = 300;
const PROBE_WAIT: Duration = Duration::from_secs(60);
/// Requests the test keeps in flight while creating objects.
const CREATE_CONCURRENCY: usize = 8;

/// One test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static OPERATOR: Mutex<Option<Operator>> = Mutex::new(None);

fn start_operator(name: &str) -> u32 {
    let operator = Operator::start(
        name,
        &cluster().operator_kubeconfig_path(),
        &["--leader-elect=false", "--log-level", "info"],
        &[],
    );
    let pid = operator.pid();
    *OPERATOR.lock().expect("operator") = Some(operator);
    pid
}

/// The operator's pid, started on first use.
fn operator_pid() -> u32 {
    let running = OPERATOR
        .lock()
        .expect("operator")
        .as_ref()
        .map(Operator::pid);
    running.unwrap_or_else(|| start_operator("untrusted-bounds"))
}

/// Stops the operator (SIGTERM, waits for the exit) and starts a new one.
async fn restart_operator(name: &str) -> u32 {
    let old = OPERATOR.lock().expect("operator").take();
    if let Some(old) = old {
        old.stop().await;
    }
    start_operator(name)
}

async fn setup(prefix: &str) -> (kube::Client, String) {
    operator_pid();
    fresh_namespace(prefix).await
}

async fn namespace(client: &kube::Client, prefix: &str) -> String {
    cluster()
        .namespace(client, prefix)
        .await
        .expect("namespace")
}

/// Creates `count` objects made by `make`, at most [`CREATE_CONCURRENCY`] at a time.
async fn create_all<K, F>(api: &Api<K>, count: usize, make: F)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    F: Fn(usize) -> K,
{
    futures::stream::iter((0..count).map(|i| {
        let object = make(i);
        async move { api.create(&PostParams::default(), &object).await }
    }))
    .buffer_unordered(CREATE_CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await
    .expect("create objects");
}

/// Waits until keymint has written at least `count` Secrets in `namespace`.
async fn wait_secrets(client: &kube::Client, namespace: &str, count: usize, timeout: Duration) {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels("app.kubernetes.io/managed-by=keymint");
    eventually(
        &format!("{count} keymint Secrets in {namespace}"),
        timeout,
        || {
            let secrets = secrets.clone();
            let params = params.clone();
            async move {
                let found = secrets
                    .list_metadata(&params)
                    .await
                    .map_err(|e| e.to_string())?
                    .items
                    .len();
                if found >= count {
                    Ok(())
                } else {
                    Err(format!("{found} so far"))
                }
            }
        },
    )
    .await;
}

/// Creates an APIKey and measures the time until it is seen Ready=True.
async fn time_to_ready(client: &kube::Client, namespace: &str, name: &str) -> Duration {
    let keys = Api::<ApiKey>::namespaced(client.clone(), namespace);
    let started = Instant::now();
    keys.create(&PostParams::default(), &api_key(name, read_only()))
        .await
        .expect("create");
    // Long past the bound, so a slow figure is measured and printed, not cut off.
    let ready = eventually(
        &format!("{namespace}/{name} to be Ready"),
        PROBE_WAIT,
        || {
            let keys = keys.clone();
            async move {
                let key = keys.get(name).await.map_err(|e| e.to_string())?;
                match ready_of(&key) {
                    Some((status, _)) if status == "True" => Ok(key),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    let elapsed = started.elapsed();
    let server_side = ready
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .zip(ready.metadata.creation_timestamp.as_ref())
        .map(|(c, created)| c.last_transition_time.0.duration_since(created.0));
    println!(
        "{namespace}/{name}: Ready {:.2} s after create (condition time minus creation time: {server_side:?})",
        elapsed.as_secs_f64()
    );
    elapsed
}

/// Peak resident set size of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

fn random_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_one_second_keys_do_not_delay_another_tenants_new_key() {
    let _turn = SERIAL.lock().await;
    let (client, storm) = setup("storm").await;
    let storm_keys = Api::<ApiKey>::namespaced(client.clone(), &storm);
    create_all(&storm_keys, STORM_KEYS, |i| {
        api_key(
            &format!("fast-{i:03}"),
            json!({"permissions": ["read"], "validFor": "1s"}),
        )
    })
    .await;
    // The storm is on once a third of the keys are issued (each then rotates
    // every second; the rest are queued behind them).
    wait_secrets(&client, &storm, STORM_KEYS / 3, Duration::from_secs(180)).await;

    let quiet = namespace(&client, "quiet").await;
    let mut figures = Vec::new();
    for i in 0..3 {
        figures.push(time_to_ready(&client, &quiet, &format!("newcomer-{i}")).await);
    }
    let rotations: i64 = storm_keys
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter_map(|k| k.status.as_ref().and_then(|s| s.rotations))
        .sum();
    let worst = figures.iter().max().copied().unwrap_or_default();
    println!(
        "fairness: {STORM_KEYS} one-second keys ({rotations} rotations so far); another namespace's new keys Ready after {:?} s (worst {:.2} s, bound {} s)",
        figures
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>(),
        worst.as_secs_f64(),
        READY_BOUND.as_secs()
    );
    // End the storm before the next test.
    storm_keys
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("delete the storm");
    assert!(
        rotations > 0,
        "the one-second keys were rotating during the measurement"
    );
    assert!(
        worst <= READY_BOUND,
        "another tenant's new key must be Ready within {READY_BOUND:?}; worst {worst:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_labelled_secrets_and_huge_annotations_stay_within_the_memory_limit() {
    let _turn = SERIAL.lock().await;
    let (client, blobs) = setup("blobs").await;
    // 64 labelled Secrets of ~1 MB each (not keymint's: no owner, Opaque).
    let secrets = Api::<Secret>::namespaced(client.clone(), &blobs);
    create_all(&secrets, 64, |i| {
        let mut data = vec![0u8; 1_000_000];
        rand::rng().fill(&mut data[..]);
        Secret {
            metadata: ObjectMeta {
                name: Some(format!("blob-{i:02}")),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        "keymint".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some([("blob".to_string(), ByteString(data))].into()),
            ..Default::default()
        }
    })
    .await;
    // 300 APIKeys with ~200 KB of annotations each (the API server allows 256 KiB).
    let heavy = namespace(&client, "heavy").await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &heavy);
    create_all(&keys, 300, |i| {
        manifest(
            "APIKey",
            json!({"name": format!("heavy-{i:03}"), "annotations": {"example.com/blob": random_text(200_000)}}),
            read_only(),
        )
    })
    .await;
    wait_secrets(&client, &heavy, 300, Duration::from_secs(300)).await;
    let elsewhere = namespace(&client, "elsewhere").await;
    time_to_ready(&client, &elsewhere, "probe").await;
    let running = vm_hwm_kib(operator_pid());
    println!(
        "memory: operator peak RSS {} MiB while the objects were created",
        running / 1024
    );

    // A fresh operator lists all of it at start-up.
    let pid = restart_operator("untrusted-bounds-restarted").await;
    let after_restart = namespace(&client, "after-restart").await;
    time_to_ready(&client, &after_restart, "probe").await;
    // Restoring a deleted Secret needs the Secret watch past its initial list.
    let probe_secrets = Api::<Secret>::namespaced(client.clone(), &after_restart);
    probe_secrets
        .delete("probe", &DeleteParams::default())
        .await
        .expect("delete the probe's Secret");
    wait_event(&client, &after_restart, "probe", "KeyRestored").await;
    let restarted = vm_hwm_kib(pid);
    println!(
        "memory: restarted operator peak RSS {} MiB (bound {} MiB)",
        restarted / 1024,
        MEMORY_BOUND_KIB / 1024
    );

    for namespace in [&blobs, &heavy] {
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .delete(namespace, &DeleteParams::default())
            .await
            .expect("delete namespace");
    }
    assert!(
        running < MEMORY_BOUND_KIB,
        "the operator's peak RSS {running} KiB exceeds {MEMORY_BOUND_KIB} KiB"
    );
    assert!(
        restarted < MEMORY_BOUND_KIB,
        "the restarted operator's peak RSS {restarted} KiB exceeds {MEMORY_BOUND_KIB} KiB"
    );
}
