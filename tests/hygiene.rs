//! Secrets hygiene: every path that handles a key runs once with the operator
//! logging at debug level for every crate; every key that ever existed is
//! recorded from a watch; then the operator's log, all Events and all statuses
//! are scanned for each of them. Its own test binary (own control plane).

#[allow(dead_code)]
#[path = "e2e/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use keymint::api::{ApiKey, RootKey, ServiceAccountKey};
use keymint_testenv::eventually;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use support::*;

fn manifest<K: serde::de::DeserializeOwned>(
    kind: &str,
    name: &str,
    annotations: Value,
    spec: Value,
) -> K {
    serde_json::from_value(json!({
        "apiVersion": "keymint.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name, "annotations": annotations}, "spec": spec
    }))
    .expect("manifest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_appears_in_logs_events_or_status() {
    let plane = cluster();
    let client = plane.client().await.expect("client");
    let namespace = plane
        .namespace(&client, "hygiene")
        .await
        .expect("namespace");

    // Every key value any managed Secret ever held, cluster-wide.
    let keys_seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let watch = {
        let keys_seen = keys_seen.clone();
        let stream = watcher(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default().labels("app.kubernetes.io/managed-by=keymint"),
        )
        .applied_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Ok(Some(secret)) = stream.try_next().await {
                for field in ["key", "previous-key"] {
                    if let Some(value) = text(&secret, field) {
                        keys_seen.lock().expect("keys").insert(value);
                    }
                }
            }
        })
    };
    // Debug for every crate, kube's client and hyper included.
    let operator = Operator::start(
        "hygiene",
        &plane.operator_kubeconfig_path(),
        &["--leader-elect=false", "--log-level", "debug"],
        &[],
    );

    // Mint, scheduled rotation with a grace period, manual rotation.
    let api_keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    apply(&api_keys, &manifest("APIKey", "rotating", json!({}), json!({"permissions": ["read"], "validFor": "4s", "renewBefore": "1s", "gracePeriod": "2s"}))).await.expect("apply");
    wait_for(&api_keys, "rotating", "two rotations", |k| {
        k.status.as_ref().and_then(|s| s.rotations).unwrap_or(0) >= 2
    })
    .await;
    apply(
        &api_keys,
        &manifest(
            "APIKey",
            "manual",
            json!({}),
            json!({"permissions": ["read"]}),
        ),
    )
    .await
    .expect("apply");
    wait_ready(&api_keys, "manual").await;
    apply(
        &api_keys,
        &manifest(
            "APIKey",
            "manual",
            json!({"keymint.dev/rotate-request": "now"}),
            json!({"permissions": ["read"]}),
        ),
    )
    .await
    .expect("apply");
    wait_for(&api_keys, "manual", "the requested rotation", |k| {
        k.status.as_ref().and_then(|s| s.rotations) == Some(1)
    })
    .await;

    // Restore after deletion, replacement after tampering.
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    secrets
        .delete("manual", &DeleteParams::default())
        .await
        .expect("delete");
    wait_event(&client, &namespace, "manual", "KeyRestored").await;
    let tampered_key = "ak_TamperedValueThatMustNeverBeLoggedAnywhere000000";
    let edit = json!({"data": {"key": ByteString(tampered_key.as_bytes().to_vec())}});
    secrets
        .patch("manual", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("tamper");
    wait_event(&client, &namespace, "manual", "KeyReplaced").await;
    keys_seen
        .lock()
        .expect("keys")
        .insert(tampered_key.to_string());

    // Conflict with another application's Secret (its value must not leak either).
    let foreign_value = "foreign-application-password-value-0001";
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("foreign".into()),
                    ..Default::default()
                },
                string_data: Some([("password".to_string(), foreign_value.to_string())].into()),
                ..Default::default()
            },
        )
        .await
        .expect("foreign secret");
    keys_seen
        .lock()
        .expect("keys")
        .insert(foreign_value.to_string());
    apply(
        &api_keys,
        &manifest(
            "APIKey",
            "conflicted",
            json!({}),
            json!({"permissions": ["read"], "secretName": "foreign"}),
        ),
    )
    .await
    .expect("apply");
    wait_reason(&api_keys, "conflicted", "False", "SecretConflict").await;

    // A ServiceAccountKey issued and revoked; a RootKey.
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &namespace);
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("robot".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("account");
    let account_keys = Api::<ServiceAccountKey>::namespaced(client.clone(), &namespace);
    apply(
        &account_keys,
        &manifest(
            "ServiceAccountKey",
            "robot-key",
            json!({}),
            json!({"serviceAccountName": "robot"}),
        ),
    )
    .await
    .expect("apply");
    wait_ready(&account_keys, "robot-key").await;
    accounts
        .delete("robot", &DeleteParams::default())
        .await
        .expect("delete account");
    wait_event(&client, &namespace, "robot-key", "KeyRevoked").await;
    let root_keys = Api::<RootKey>::all(client.clone());
    apply(
        &root_keys,
        &manifest(
            "RootKey",
            "hygiene-root",
            json!({}),
            json!({"validFor": "24h"}),
        ),
    )
    .await
    .expect("apply");
    wait_ready(&root_keys, "hygiene-root").await;

    // Every key the watch should have seen is in: the Secrets' current values.
    eventually(
        "the watch to have recorded every current key",
        WAIT,
        || async {
            let current: BTreeSet<String> = Api::<Secret>::all(client.clone())
                .list(
                    &kube::api::ListParams::default()
                        .labels("app.kubernetes.io/managed-by=keymint"),
                )
                .await
                .map_err(|e| e.to_string())?
                .items
                .iter()
                .filter_map(|s| text(s, "key"))
                .collect();
            let seen = keys_seen.lock().expect("keys").clone();
            if current.is_subset(&seen) {
                Ok(())
            } else {
                Err(format!(
                    "{} current keys not yet seen",
                    current.difference(&seen).count()
                ))
            }
        },
    )
    .await;
    watch.abort();
    let keys = keys_seen.lock().expect("keys").clone();
    assert!(keys.len() >= 8, "the workload minted keys: {}", keys.len());

    // Scan everything the operator produced.
    let mut places: Vec<(String, String)> = vec![("operator log".into(), operator.log())];
    for event in Api::<Event>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("events")
        .items
    {
        places.push((
            format!("event {:?}", event.reason),
            serde_json::to_string(&event).expect("json"),
        ));
    }
    for event in Api::<CoreEvent>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("core events")
        .items
    {
        places.push((
            format!("core event {:?}", event.reason),
            serde_json::to_string(&event).expect("json"),
        ));
    }
    for key in Api::<ApiKey>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("list")
        .items
    {
        places.push((
            format!("APIKey {:?}", key.metadata.name),
            serde_json::to_string(&key).expect("json"),
        ));
    }
    for key in Api::<ServiceAccountKey>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("list")
        .items
    {
        places.push((
            format!("ServiceAccountKey {:?}", key.metadata.name),
            serde_json::to_string(&key).expect("json"),
        ));
    }
    for key in Api::<RootKey>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("list")
        .items
    {
        places.push((
            format!("RootKey {:?}", key.metadata.name),
            serde_json::to_string(&key).expect("json"),
        ));
    }
    assert!(
        places[0].1.contains("DEBUG"),
        "the operator logged at debug level"
    );
    let mut leaks = Vec::new();
    for (place, content) in &places {
        for key in &keys {
            // The random part alone would identify a key too.
            let body = key.split_once('_').map(|(_, b)| b).unwrap_or(key);
            if content.contains(key.as_str()) || (body.len() >= 16 && content.contains(body)) {
                leaks.push(format!("{place} contains a key"));
            }
        }
    }
    assert!(leaks.is_empty(), "{leaks:?}");
    println!(
        "hygiene: scanned {} places for {} keys, none found",
        places.len(),
        keys.len()
    );
}
