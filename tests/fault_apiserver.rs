//! API-server faults and conflicting writers: kube-apiserver and etcd stop and
//! come back under a running operator; other writers edit the Secret and the
//! status. Its own test binary (own control plane, which it restarts).

#[allow(dead_code)]
#[path = "e2e/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use keymint::api::ApiKey;
use keymint::keys::sha256_hex;
use keymint_testenv::{OPERATOR_USER, eventually};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::*;

const OUTAGE: Duration = Duration::from_secs(8);

fn api_key(name: &str, spec: serde_json::Value) -> ApiKey {
    serde_json::from_value(json!({"apiVersion": "keymint.dev/v1alpha1", "kind": "APIKey", "metadata": {"name": name}, "spec": spec})).expect("manifest")
}

async fn rotations(keys: &Api<ApiKey>) -> BTreeMap<String, i64> {
    keys.list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|k| {
            (
                k.name_any(),
                k.status.and_then(|s| s.rotations).unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_survives_an_api_server_and_etcd_restart() {
    let plane = cluster();
    let client = plane.client().await.expect("client");
    let namespace = plane.namespace(&client, "outage").await.expect("namespace");
    let operator = Operator::start(
        "outage",
        &plane.operator_kubeconfig_path(),
        &[
            "--leader-elect=false",
            "--watch-namespace",
            namespace.as_str(),
        ],
        &[],
    );
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    let names: Vec<String> = (0..20).map(|i| format!("outage-{i}")).collect();
    for name in &names {
        apply(
            &keys,
            &api_key(
                name,
                json!({"permissions": ["read"], "validFor": "10s", "renewBefore": "3s"}),
            ),
        )
        .await
        .expect("apply");
    }
    for name in &names {
        wait_ready(&keys, name).await;
    }

    // Both down: the operator must notice, keep running and not spin.
    let log_before = operator.log().len();
    tokio::task::spawn_blocking(move || {
        plane.stop_component("kube-apiserver");
        plane.stop_component("etcd");
    })
    .await
    .expect("stop");
    eventually("the operator to notice the outage", WAIT, || async {
        let log = operator.log();
        if log[log_before..].contains("\"level\":\"WARN\"")
            || log[log_before..].contains("\"level\":\"ERROR\"")
        {
            Ok(())
        } else {
            Err("no error logged yet".to_string())
        }
    })
    .await;
    // The fault itself: the control plane stays down longer than the keys'
    // rotation period (7 s), so rotations fall due while it is away.
    tokio::time::sleep(OUTAGE).await;
    assert!(
        operator
            .child
            .lock()
            .expect("child")
            .try_wait()
            .expect("wait")
            .is_none(),
        "the operator is still running"
    );

    let mark = plane.audit_events().expect("audit").len();
    tokio::task::spawn_blocking(move || {
        plane.start_component("etcd")?;
        plane.start_component("kube-apiserver")?;
        plane.wait_until_ready()
    })
    .await
    .expect("join")
    .expect("control plane back");
    let client = plane.client().await.expect("client");
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    let before = rotations(&keys).await;

    // It converges: every key rotates again after the server returns.
    eventually(
        "every key to rotate after the outage",
        Duration::from_secs(90),
        || async {
            let now = rotations(&keys).await;
            let behind: Vec<_> = now
                .iter()
                .filter(|(name, count)| **count <= before.get(*name).copied().unwrap_or(0))
                .map(|(n, _)| n.clone())
                .collect();
            if behind.is_empty() {
                Ok(())
            } else {
                Err(format!("not rotated yet: {behind:?}"))
            }
        },
    )
    .await;
    for name in &names {
        wait_ready(&keys, name).await;
    }
    assert!(
        operator
            .child
            .lock()
            .expect("child")
            .try_wait()
            .expect("wait")
            .is_none(),
        "the operator never crashed"
    );

    // No busy loop: requests per key since the restart stay within what the
    // work explains (re-lists, watches, one rotation or two per key with its
    // reads and writes), far below a retry storm.
    let requests = plane
        .count_requests_by_verb(OPERATOR_USER, mark)
        .expect("audit");
    let total: usize = requests.values().sum();
    assert!(
        total <= names.len() * 40 + 100,
        "operator made {total} requests after the restart: {requests:?}"
    );
    println!("requests after the restart, by verb: {requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_the_secret_and_the_status_lose_nothing() {
    let plane = cluster();
    let client = plane.client().await.expect("client");
    let namespace = plane
        .namespace(&client, "writers")
        .await
        .expect("namespace");
    let _operator = Operator::start(
        "writers",
        &plane.operator_kubeconfig_path(),
        &[
            "--leader-elect=false",
            "--watch-namespace",
            namespace.as_str(),
        ],
        &[],
    );
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    apply(
        &keys,
        &api_key("contested", json!({"permissions": ["read"]})),
    )
    .await
    .expect("apply");
    let first = wait_ready(&keys, "contested").await.status.expect("status");

    // A second field manager takes the key by force and adds a label of its own.
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let intruder = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "contested", "labels": {"added-by": "intruder"}},
        "data": {"key": ByteString(b"ak_forced-by-someone-else".to_vec())}
    });
    let refused = secrets
        .patch(
            "contested",
            &PatchParams::apply("intruder"),
            &Patch::Apply(&intruder),
        )
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 409),
        "keymint owns data.key: {refused:?}"
    );
    secrets
        .patch(
            "contested",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(&intruder),
        )
        .await
        .expect("forced apply");
    let replaced = wait_for(&keys, "contested", "the forced key to be replaced", |k| {
        k.status.as_ref().is_some_and(|s| s.id != first.id)
    })
    .await
    .status
    .expect("status");
    let secret = secrets.get("contested").await.expect("secret");
    let key = text(&secret, "key").expect("key");
    assert_ne!(key, "ak_forced-by-someone-else");
    assert_eq!(replaced.key_sha256, Some(sha256_hex(&key)));
    assert_eq!(
        secret.labels().get("added-by").map(String::as_str),
        Some("intruder"),
        "another manager's own fields are left alone"
    );

    // A user overwrites the status: the operator restores it from the Secret.
    let forged = json!({"status": {"id": "FORGED", "keySHA256": "0".repeat(64)}});
    keys.patch_status("contested", &PatchParams::default(), &Patch::Merge(&forged))
        .await
        .expect("patch status");
    let restored = wait_for(&keys, "contested", "the status to be restored", |k| {
        k.status
            .as_ref()
            .is_some_and(|s| s.id == replaced.id && s.key_sha256 == replaced.key_sha256)
    })
    .await;
    assert_eq!(
        restored.status.expect("status").key_sha256,
        Some(sha256_hex(&key))
    );
    assert_eq!(
        text(&secrets.get("contested").await.expect("secret"), "key"),
        Some(key),
        "restoring the status did not touch the key"
    );
}
