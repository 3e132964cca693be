//! API-server faults: kube-apiserver and etcd stop and come back under a
//! running operator. Its own test binary (own control plane, which it
//! restarts), and the only test in it, so no other test runs through the
//! outage. (Conflicting writers are tested in tests/e2e/controller.rs.)

use std::collections::BTreeMap;
use std::time::Duration;

use keymint::api::ApiKey;
use keymint_test_support::*;
use keymint_testenv::OPERATOR_USER;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::json;

const OUTAGE: Duration = Duration::from_secs(8);

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
    let operator = Operator::watching("outage", &namespace);
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
    assert!(operator.is_running(), "the operator is still running");

    let mark = audit_mark();
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
    assert!(operator.is_running(), "the operator never crashed");

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
