//! The `keymint run` process itself on the real control plane: leader election
//! between two replicas, graceful shutdown on SIGTERM, health and metrics.
//! Its own test binary (so its own control plane): these tests start and kill
//! operators, which must not race the controller tests' shared one.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use keymint::api::ApiKey;
use keymint_test_support::*;
use keymint_testenv::{OPERATOR_USER, STANDBY_OPERATOR_USER};
use kube::api::Api;

const LEASE_SECONDS: u64 = 4;

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Writes by `user` to keymint's objects (Secrets, key resources, Events) in `namespace`.
fn writes_by(user: &str, namespace: &str, after: usize) -> Vec<String> {
    since(after)
        .by(user)
        .writes()
        .in_namespace(namespace)
        .only(|e| {
            e.object_ref
                .as_ref()
                .is_some_and(|r| r.resource != "leases")
        })
        .lines()
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_hand_over_when_it_dies() {
    let plane = cluster();
    let client = plane.client().await.expect("client");
    let namespace = plane
        .namespace(&client, "election")
        .await
        .expect("namespace");
    let lease_name = "election-test";
    let mark = audit_mark();
    let args = [
        "--leader-elect=true",
        "--lease-name",
        lease_name,
        "--lease-duration",
        "4",
        "--watch-namespace",
        namespace.as_str(),
    ];
    let first = Operator::start(
        "replica-a",
        &plane.operator_kubeconfig_path(),
        &args,
        &[("POD_NAME", "replica-a")],
    );
    let leases = Api::<Lease>::namespaced(client.clone(), OPERATOR_NAMESPACE);
    eventually("replica-a to take the Lease", WAIT, || async {
        holder(&leases, lease_name)
            .await
            .filter(|h| h == "replica-a")
            .ok_or("no holder".to_string())
    })
    .await;
    let second = Operator::start(
        "replica-b",
        &plane.standby_kubeconfig_path(),
        &args,
        &[("POD_NAME", "replica-b")],
    );

    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    apply(&keys, &api_key("elected", read_only()))
        .await
        .expect("apply");
    wait_ready(&keys, "elected").await;
    // The follower is up (it answers /readyz) yet has written nothing.
    eventually("replica-b to serve /readyz", WAIT, || async {
        http_get(second.metrics_port, "/readyz")
            .map_err(|e| format!("{e}; log:\n{}", second.log()))
            .and_then(|(c, _)| if c == 200 { Ok(()) } else { Err(c.to_string()) })
    })
    .await;
    assert_eq!(
        holder(&leases, lease_name).await.as_deref(),
        Some("replica-a")
    );
    assert!(
        !writes_by(OPERATOR_USER, &namespace, mark).is_empty(),
        "the leader wrote the key"
    );
    assert_eq!(
        writes_by(STANDBY_OPERATOR_USER, &namespace, mark),
        Vec::<String>::new(),
        "the follower writes nothing"
    );

    // Kill the leader outright: the follower takes over within the lease time.
    let killed_at = Instant::now();
    first.sigkill();
    eventually("replica-b to take the Lease", WAIT, || async {
        holder(&leases, lease_name)
            .await
            .filter(|h| h == "replica-b")
            .ok_or("not yet".to_string())
    })
    .await;
    let hand_over = killed_at.elapsed();
    assert!(
        hand_over <= Duration::from_secs(LEASE_SECONDS * 2),
        "hand-over took {hand_over:?} with a {LEASE_SECONDS}s lease"
    );

    let mark = audit_mark();
    apply(&keys, &api_key("after-failover", read_only()))
        .await
        .expect("apply");
    wait_ready(&keys, "after-failover").await;
    assert!(
        !writes_by(STANDBY_OPERATOR_USER, &namespace, mark).is_empty(),
        "the new leader writes"
    );
    assert!(!second.log().contains("panicked"));

    // SIGTERM: the leader stops cleanly, releasing the Lease at once.
    second.stop_cleanly().await;
    assert_eq!(
        holder(&leases, lease_name).await,
        None,
        "the Lease was released"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let plane = cluster();
    let client = plane.client().await.expect("client");
    let namespace = plane
        .namespace(&client, "metrics")
        .await
        .expect("namespace");
    let operator = Operator::watching("metrics", &namespace);
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    let mut expiring = api_key("measured", read_only());
    expiring.spec.common.valid_for = Some("1h".into());
    apply(&keys, &expiring).await.expect("apply");
    wait_ready(&keys, "measured").await;

    let (code, body) = http_get(operator.metrics_port, "/healthz").expect("healthz");
    assert_eq!((code, body.as_str()), (200, "ok"));
    assert_eq!(
        http_get(operator.metrics_port, "/readyz")
            .expect("readyz")
            .0,
        200
    );
    let metrics = eventually("metrics for the APIKey", WAIT, || async {
        let (_, body) = http_get(operator.metrics_port, "/metrics").map_err(|e| e.to_string())?;
        if body.contains("keymint_keys{kind=\"APIKey\"} 1") {
            Ok(body)
        } else {
            Err(body)
        }
    })
    .await;
    for expected in [
        "keymint_reconciles_total{kind=\"APIKey\"}",
        "keymint_rotations_total{kind=\"APIKey\"} 0",
        "keymint_keys{kind=\"RootKey\"} 0",
        "keymint_seconds_until_earliest_expiry",
        "keymint_reconcile_duration_seconds_count{kind=\"APIKey\"}",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from\n{metrics}"
        );
    }
    let earliest: f64 = metrics
        .lines()
        .find(|l| l.starts_with("keymint_seconds_until_earliest_expiry "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("earliest expiry value");
    assert!(
        earliest > 3000.0 && earliest <= 3600.0,
        "seconds until the 1h key expires: {earliest}"
    );

    // A deleted resource is forgotten by the keys gauge.
    keys.delete("measured", &Default::default())
        .await
        .expect("delete");
    eventually("the keys gauge to drop to 0", WAIT, || async {
        let (_, body) = http_get(operator.metrics_port, "/metrics").map_err(|e| e.to_string())?;
        if body.contains("keymint_keys{kind=\"APIKey\"} 0") {
            Ok(())
        } else {
            Err(body)
        }
    })
    .await;
    operator.stop_cleanly().await;
}

/// A new key is created without a read of its Secret; after a restart the
/// up-to-date keys are confirmed from the startup list of Secrets, without
/// one read or write each, while a Secret tampered with during the downtime
/// is still read and gets a new key.
#[tokio::test]
async fn a_restart_confirms_up_to_date_keys_without_reading_each_secret() {
    let plane = cluster();
    let client = plane.client().await.expect("client");
    let namespace = plane
        .namespace(&client, "restart")
        .await
        .expect("namespace");
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &namespace);
    let names: Vec<String> = (0..20).map(|i| format!("key-{i}")).collect();
    let secret_reads = |mark| {
        since(mark)
            .by(OPERATOR_USER)
            .verbs(&["get"])
            .resource("secrets")
            .in_namespace(&namespace)
    };

    let minting = audit_mark();
    let operator = Operator::watching("restart-1", &namespace);
    for name in &names {
        apply(&keys, &api_key(name, read_only()))
            .await
            .expect("apply");
    }
    for name in &names {
        wait_ready(&keys, name).await;
    }
    // (A reconcile woken by the watch before keymint has recorded its own
    // write may read a Secret that exists; none reads one still missing.)
    assert_eq!(
        secret_reads(minting).with_code(404).lines(),
        Vec::<String>::new(),
        "a new key's Secret is created, not read first"
    );
    operator.stop_cleanly().await;

    let tampered = "key-7";
    let before = keys.get(tampered).await.expect("get");
    let before_id = before.status.as_ref().and_then(|s| s.id.clone());
    let mut planted = secrets.get(tampered).await.expect("get");
    planted.data.get_or_insert_default().insert(
        "key".into(),
        k8s_openapi::ByteString(b"ak_planted".to_vec()),
    );
    planted.metadata.managed_fields = None;
    secrets
        .replace(tampered, &Default::default(), &planted)
        .await
        .expect("tamper");

    let restart = audit_mark();
    let operator = Operator::watching("restart-2", &namespace);
    wait_for(
        &keys,
        tampered,
        "a new key for the tampered Secret",
        |key| key.status.as_ref().and_then(|s| s.id.clone()) != before_id && is_current(key),
    )
    .await;
    // All 20 keys confirmed by this process (the gauge counts the keys it
    // saw issued), so the reads below are not counted too early.
    let metrics = eventually("all 20 keys confirmed after the restart", WAIT, || async {
        let body = operator.metrics().map_err(|e| e.to_string())?;
        if body.contains("keymint_keys{kind=\"APIKey\"} 20") {
            Ok(body)
        } else {
            Err(body)
        }
    })
    .await;
    let reads = secret_reads(restart);
    assert!(
        reads.clone().named(tampered).count() >= 1,
        "the tampered Secret is read"
    );
    assert_eq!(
        reads
            .only(|e| e.object_ref.as_ref().and_then(|r| r.name.as_deref()) != Some(tampered))
            .lines(),
        Vec::<String>::new(),
        "up-to-date keys are confirmed without reading their Secrets"
    );
    let writes = since(restart)
        .by(OPERATOR_USER)
        .writes()
        .in_namespace(&namespace)
        .resource("secrets")
        .lines();
    assert!(
        writes
            .iter()
            .all(|w| w.contains(&format!("/secrets/{tampered}"))),
        "only the tampered Secret is written: {writes:?}"
    );
    let replaced = secrets.get(tampered).await.expect("get");
    assert_ne!(text(&replaced, "key").as_deref(), Some("ak_planted"));
    let counted: f64 = metrics
        .lines()
        .find(|l| l.starts_with("keymint_secret_reads_total{kind=\"APIKey\"}"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("keymint_secret_reads_total");
    assert!(
        (1.0..=3.0).contains(&counted),
        "Secret reads counted: {counted}"
    );
    operator.stop_cleanly().await;
}
