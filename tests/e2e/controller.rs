//! The controller's behaviours, each against the real control plane with the
//! operator running as its own process.

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use keymint::api::{ApiKey, RootKey, ServiceAccountKey};
use keymint::keys::sha256_hex;
use keymint_testenv::{OPERATOR_USER, eventually};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use keymint_test_support::*;

fn time(value: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Timestamp {
    value.as_ref().expect("timestamp set").0
}

async fn secret(client: &kube::Client, namespace: &str, name: &str) -> Secret {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .expect("secret exists")
}

/// Everything observable about a key except the Secret itself.
async fn assert_key_not_exposed(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    key: &str,
    status: &impl serde::Serialize,
) {
    assert!(
        !serde_json::to_string(status)
            .expect("status json")
            .contains(key),
        "key in status"
    );
    for event in events_for(client, namespace, name).await {
        assert!(
            !serde_json::to_string(&event)
                .expect("event json")
                .contains(key),
            "key in event {:?}",
            event.reason
        );
    }
    assert!(!operator_log().contains(key), "key in the operator's log");
}

#[tokio::test]
async fn an_api_key_is_minted_into_an_owned_secret_with_status() {
    let (client, namespace) = setup("mint").await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    let spec = json!({"permissions": ["read", "models:write"], "description": "billing export", "validFor": "1h", "renewBefore": "10m",
        "secretTemplate": {"labels": {"team": "payments"}, "annotations": {"example.com/owner": "payments"}}});
    let created = apply(&keys, &api_key("billing", spec))
        .await
        .expect("apply");
    let key = wait_ready(&keys, "billing").await;
    let status = key.status.clone().expect("status");

    let secret = secret(&client, &namespace, "billing").await;
    let token = text(&secret, "key").expect("key in secret");
    assert!(token.starts_with("ak_"), "default prefix");
    keymint::keys::verify_checksum(&token).expect("token checksum");
    assert_eq!(text(&secret, "id"), status.id);
    assert_eq!(
        status.key_sha256.as_deref(),
        Some(sha256_hex(&token).as_str()),
        "status hash matches the Secret's key"
    );
    assert_eq!(
        annotation(&secret, "keymint.dev/key-sha256"),
        status.key_sha256
    );
    assert_eq!(annotation(&secret, "keymint.dev/key-id"), status.id);
    assert!(annotation(&secret, "keymint.dev/expires-at").is_some());
    assert_eq!(
        annotation(&secret, "keymint.dev/permissions").as_deref(),
        Some("read,models:write")
    );
    assert_eq!(
        annotation(&secret, "keymint.dev/description").as_deref(),
        Some("billing export")
    );
    assert_eq!(
        annotation(&secret, "example.com/owner").as_deref(),
        Some("payments")
    );
    assert_eq!(
        secret.labels().get("team").map(String::as_str),
        Some("payments")
    );
    assert_eq!(
        secret
            .labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("keymint")
    );
    assert_eq!(secret.type_.as_deref(), Some("keymint.dev/key"));
    let owners = secret.owner_references();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].uid, created.uid().expect("uid"));
    assert_eq!(owners[0].controller, Some(true));

    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "KeyIssued")
    );
    assert_eq!(status.secret_name.as_deref(), Some("billing"));
    assert_eq!(status.observed_generation, key.metadata.generation);
    assert!(
        status
            .id
            .as_deref()
            .is_some_and(keymint::keys::is_valid_key_id)
    );
    let created_at = time(&status.created_at);
    assert_eq!(time(&status.updated_at), created_at);
    assert_eq!(
        time(&status.expires_at),
        created_at + jiff::SignedDuration::from_hours(1)
    );
    assert_eq!(
        time(&status.renewal_time),
        created_at + jiff::SignedDuration::from_mins(50)
    );
    assert_eq!(status.rotations, Some(0));

    wait_event(&client, &namespace, "billing", "KeyIssued").await;
    assert_key_not_exposed(&client, &namespace, "billing", &token, &key.status).await;
}

#[tokio::test]
async fn a_key_rotates_at_expiry_minus_renew_before_and_keeps_the_previous_for_the_grace_period() {
    let (client, namespace) = setup("rotate").await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    apply(&keys, &api_key("short", json!({"permissions": ["read"], "validFor": "8s", "renewBefore": "3s", "gracePeriod": "4s"}))).await.expect("apply");
    let first = wait_ready(&keys, "short").await.status.expect("status");
    let first_token = text(&secret(&client, &namespace, "short").await, "key").expect("key");
    let due = time(&first.renewal_time);
    assert_eq!(
        due,
        time(&first.created_at) + jiff::SignedDuration::from_secs(5)
    );

    let rotated = wait_for(&keys, "short", "a rotation", |k| {
        k.status.as_ref().and_then(|s| s.rotations) == Some(1)
    })
    .await
    .status
    .expect("status");
    let rotated_at = time(&rotated.created_at);
    let slip = rotated_at.duration_since(due);
    assert!(
        slip >= jiff::SignedDuration::ZERO && slip <= jiff::SignedDuration::from_secs(2),
        "rotated {slip:?} after it was due"
    );
    assert_ne!(rotated.id, first.id, "a new key id");
    assert_eq!(rotated.previous_id, first.id);
    assert_eq!(
        time(&rotated.previous_expires_at),
        rotated_at + jiff::SignedDuration::from_secs(4)
    );

    let during_grace = secret(&client, &namespace, "short").await;
    assert_eq!(
        text(&during_grace, "previous-key").as_deref(),
        Some(first_token.as_str())
    );
    assert_eq!(text(&during_grace, "previous-id"), first.id);
    assert_ne!(
        text(&during_grace, "key").as_deref(),
        Some(first_token.as_str())
    );
    wait_event(&client, &namespace, "short", "KeyRotated").await;

    // The grace period ends: the previous key is removed (before the next rotation).
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let after_grace = eventually("the previous key to be removed", WAIT, || {
        let secrets = secrets.clone();
        async move {
            let secret = secrets.get("short").await.map_err(|e| e.to_string())?;
            if text(&secret, "previous-key").is_none() {
                Ok(secret)
            } else {
                Err("previous-key still there".into())
            }
        }
    })
    .await;
    assert!(text(&after_grace, "previous-id").is_none());
    assert!(annotation(&after_grace, "keymint.dev/previous-id").is_none());
    let now = Timestamp::now();
    assert!(
        now >= time(&rotated.previous_expires_at),
        "removed no earlier than the grace period's end"
    );
    assert_key_not_exposed(&client, &namespace, "short", &first_token, &rotated).await;
}

#[tokio::test]
async fn rotations_without_a_grace_period_keep_the_key_chain_and_never_replace() {
    // A rotation that keeps no previous key must read back as keymint's own
    // record: a regression once replaced the key right after every rotation.
    let (client, namespace) = setup("chain").await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    apply(
        &keys,
        &api_key("chain", json!({"permissions": ["read"], "validFor": "3s"})),
    )
    .await
    .expect("apply");
    let rotated = wait_for(&keys, "chain", "two rotations", |k| {
        k.status.as_ref().and_then(|s| s.rotations) >= Some(2)
    })
    .await
    .status
    .expect("status");
    let secret = secret(&client, &namespace, "chain").await;
    assert!(
        text(&secret, "previous-key").is_none(),
        "no grace period, no previous key"
    );
    let reasons: Vec<_> = events_for(&client, &namespace, "chain")
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        !reasons
            .iter()
            .any(|r| r == "KeyReplaced" || r == "KeyRestored"),
        "only issue and rotations: {reasons:?} (status {rotated:?})"
    );
    assert!(reasons.iter().any(|r| r == "KeyRotated"), "{reasons:?}");
}

#[tokio::test]
async fn a_rotate_request_rotates_exactly_once() {
    let (client, namespace) = setup("request").await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    apply(&keys, &api_key("manual", json!({"permissions": ["read"]})))
        .await
        .expect("apply");
    let first = wait_ready(&keys, "manual").await.status.expect("status");
    assert_eq!(first.expires_at, None, "no expiry asked, none given");

    let mut requested = api_key("manual", json!({"permissions": ["read"]}));
    requested.metadata.annotations = Some(
        [(
            "keymint.dev/rotate-request".to_string(),
            "2026-11-23T12:00".to_string(),
        )]
        .into(),
    );
    apply(&keys, &requested).await.expect("apply");
    let rotated = wait_for(&keys, "manual", "the requested rotation", |k| {
        k.status.as_ref().and_then(|s| s.rotations) == Some(1)
    })
    .await;
    let status = rotated.status.clone().expect("status");
    assert_ne!(status.id, first.id);
    assert_eq!(
        status.last_rotate_request.as_deref(),
        Some("2026-11-23T12:00")
    );

    // A later spec change is reconciled with the same request: no second rotation.
    let mut edited = requested.clone();
    edited.spec.description = Some("now with a description".into());
    let edited = apply(&keys, &edited).await.expect("apply");
    let after = wait_for(&keys, "manual", "the edit to be observed", |k| {
        k.status.as_ref().and_then(|s| s.observed_generation) == edited.metadata.generation
    })
    .await;
    let after = after.status.expect("status");
    assert_eq!(after.rotations, Some(1));
    assert_eq!(after.id, status.id);
    let rotations = events_for(&client, &namespace, "manual")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("KeyRotated"))
        .count();
    assert_eq!(rotations, 1, "one KeyRotated event");
}

#[tokio::test]
async fn editing_the_lifetime_recomputes_the_expiry_without_minting() {
    let (client, namespace) = setup("edit").await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    apply(
        &keys,
        &api_key("edit", json!({"permissions": ["read"], "validFor": "1h"})),
    )
    .await
    .expect("apply");
    let first = wait_ready(&keys, "edit").await.status.expect("status");
    let token = text(&secret(&client, &namespace, "edit").await, "key").expect("key");

    let edited = apply(
        &keys,
        &api_key("edit", json!({"permissions": ["read"], "validFor": "2h"})),
    )
    .await
    .expect("apply");
    let after = wait_for(&keys, "edit", "the new expiry", |k| {
        k.status.as_ref().and_then(|s| s.observed_generation) == edited.metadata.generation
    })
    .await;
    let after = after.status.expect("status");
    assert_eq!(after.id, first.id, "same key");
    assert_eq!(after.rotations, Some(0));
    assert_eq!(
        time(&after.expires_at),
        time(&first.created_at) + jiff::SignedDuration::from_hours(2)
    );
    let expires_at = Timestamp::now() + jiff::SignedDuration::from_hours(24 * 400);
    let pinned = apply(&keys, &api_key("edit", json!({"permissions": ["read"], "validFor": "2h", "expiresAt": expires_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}))).await.expect("apply");
    let pinned_status = wait_for(&keys, "edit", "expiresAt observed", |k| {
        k.status.as_ref().and_then(|s| s.observed_generation) == pinned.metadata.generation
    })
    .await
    .status
    .expect("status");
    assert_eq!(pinned_status.id, first.id);
    assert_eq!(
        time(&pinned_status.expires_at),
        time(&first.created_at) + jiff::SignedDuration::from_hours(2),
        "validFor still earlier than expiresAt"
    );
    let secret = secret(&client, &namespace, "edit").await;
    assert_eq!(
        text(&secret, "key").as_deref(),
        Some(token.as_str()),
        "the key itself is unchanged"
    );
    assert_eq!(
        annotation(&secret, "keymint.dev/expires-at"),
        pinned_status
            .expires_at
            .as_ref()
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
    );
}

#[tokio::test]
async fn a_secret_keymint_does_not_own_is_never_touched() {
    let (client, namespace) = setup("conflict").await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let foreign = Secret {
        metadata: ObjectMeta {
            name: Some("taken".into()),
            ..Default::default()
        },
        string_data: Some([("password".to_string(), "hunter2".to_string())].into()),
        ..Default::default()
    };
    let before = secrets
        .create(&PostParams::default(), &foreign)
        .await
        .expect("foreign secret");
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    apply(
        &keys,
        &api_key(
            "wants-taken",
            json!({"permissions": ["read"], "secretName": "taken"}),
        ),
    )
    .await
    .expect("apply");
    let key = wait_reason(&keys, "wants-taken", "False", "SecretConflict").await;
    let message = &key.status.as_ref().expect("status").conditions[0].message;
    assert!(
        message.contains("spec.secretName") && message.contains("taken"),
        "{message}"
    );
    let event = wait_event(&client, &namespace, "wants-taken", "SecretConflict").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let after = secrets.get("taken").await.expect("still there");
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "not written"
    );
    assert_eq!(after.data, before.data);

    // Two keymint resources naming the same Secret: the second gets the conflict.
    apply(
        &keys,
        &api_key(
            "first-owner",
            json!({"permissions": ["read"], "secretName": "shared"}),
        ),
    )
    .await
    .expect("apply");
    wait_ready(&keys, "first-owner").await;
    apply(
        &keys,
        &api_key(
            "second-owner",
            json!({"permissions": ["read"], "secretName": "shared"}),
        ),
    )
    .await
    .expect("apply");
    let second = wait_reason(&keys, "second-owner", "False", "SecretConflict").await;
    let message = &second.status.expect("status").conditions[0].message;
    assert!(
        message.contains("another keymint resource") && !message.contains("first-owner"),
        "says another keymint resource owns it, without quoting the Secret: {message}"
    );
}

#[tokio::test]
async fn a_deleted_secret_is_restored_with_a_new_key() {
    let (client, namespace) = setup("restore").await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    apply(&keys, &api_key("lost", json!({"permissions": ["read"]})))
        .await
        .expect("apply");
    let first = wait_ready(&keys, "lost").await.status.expect("status");
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    secrets
        .delete("lost", &DeleteParams::default())
        .await
        .expect("delete secret");
    let restored = wait_for(&keys, "lost", "a new key", |k| {
        k.status
            .as_ref()
            .is_some_and(|s| s.id != first.id && s.id.is_some())
    })
    .await;
    let restored = restored.status.expect("status");
    let secret = secret(&client, &namespace, "lost").await;
    assert_eq!(text(&secret, "id"), restored.id);
    assert_eq!(
        restored.key_sha256,
        Some(sha256_hex(&text(&secret, "key").expect("key")))
    );
    let event = wait_event(&client, &namespace, "lost", "KeyRestored").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
}

#[tokio::test]
async fn an_edited_key_is_detected_by_its_hash_and_replaced() {
    let (client, namespace) = setup("tamper").await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    apply(
        &keys,
        &api_key("tampered", json!({"permissions": ["read"]})),
    )
    .await
    .expect("apply");
    let first = wait_ready(&keys, "tampered").await.status.expect("status");
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let edit = json!({"data": {"key": ByteString(b"ak_chosen-by-an-attacker".to_vec())}});
    secrets
        .patch("tampered", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit the key");
    let replaced = wait_for(&keys, "tampered", "a replacement key", |k| {
        k.status.as_ref().is_some_and(|s| s.id != first.id)
    })
    .await
    .status
    .expect("status");
    let secret = secret(&client, &namespace, "tampered").await;
    let token = text(&secret, "key").expect("key");
    assert_ne!(token, "ak_chosen-by-an-attacker");
    assert_eq!(replaced.key_sha256, Some(sha256_hex(&token)));
    wait_event(&client, &namespace, "tampered", "KeyReplaced").await;
}

/// The Secret watch one namespace's APIKey and ServiceAccountKey controllers
/// share wakes a ServiceAccountKey too.
#[tokio::test]
async fn a_service_account_keys_deleted_or_edited_secret_is_replaced() {
    let (client, namespace) = setup("sak-secret").await;
    Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &service_account("robot"))
        .await
        .expect("create account");
    let keys = Api::<ServiceAccountKey>::namespaced(client.clone(), &namespace);
    apply(
        &keys,
        &service_account_key("robot-key", json!({"serviceAccountName": "robot"})),
    )
    .await
    .expect("apply");
    let first = wait_ready(&keys, "robot-key").await.status.expect("status");
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    secrets
        .delete("robot-key", &DeleteParams::default())
        .await
        .expect("delete secret");
    let restored = wait_for(&keys, "robot-key", "a new key", |k| {
        k.status
            .as_ref()
            .is_some_and(|s| s.id.is_some() && s.id != first.id)
    })
    .await
    .status
    .expect("status");
    wait_event(&client, &namespace, "robot-key", "KeyRestored").await;
    let edit = json!({"data": {"key": ByteString(b"sak_chosen-by-an-attacker".to_vec())}});
    secrets
        .patch("robot-key", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("edit the key");
    let replaced = wait_for(&keys, "robot-key", "a replacement key", |k| {
        k.status
            .as_ref()
            .is_some_and(|s| s.id.is_some() && s.id != restored.id)
    })
    .await
    .status
    .expect("status");
    let token = text(&secret(&client, &namespace, "robot-key").await, "key").expect("key");
    assert_ne!(token, "sak_chosen-by-an-attacker");
    assert_eq!(replaced.key_sha256, Some(sha256_hex(&token)));
}

#[tokio::test]
async fn a_service_account_key_follows_its_service_account() {
    let (client, namespace) = setup("sak").await;
    let keys = Api::<ServiceAccountKey>::namespaced(client.clone(), &namespace);
    let key: ServiceAccountKey = manifest(
        "ServiceAccountKey",
        "robot-key",
        json!({"serviceAccountName": "robot"}),
    );
    apply(&keys, &key).await.expect("apply");
    let missing = wait_reason(&keys, "robot-key", "False", "ServiceAccountNotFound").await;
    assert!(
        missing.status.expect("status").conditions[0]
            .message
            .contains("spec.serviceAccountName")
    );
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    assert!(
        secrets.get_opt("robot-key").await.expect("get").is_none(),
        "no key without the account"
    );

    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &namespace);
    let account = || ServiceAccount {
        metadata: ObjectMeta {
            name: Some("robot".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let first_account = accounts
        .create(&PostParams::default(), &account())
        .await
        .expect("create account");
    let issued = wait_ready(&keys, "robot-key").await.status.expect("status");
    let secret = secrets.get("robot-key").await.expect("secret");
    assert!(text(&secret, "key").expect("key").starts_with("sak_"));
    assert_eq!(
        annotation(&secret, "keymint.dev/bound-uid"),
        first_account.uid()
    );

    accounts
        .delete("robot", &DeleteParams::default())
        .await
        .expect("delete account");
    let revoked = wait_reason(&keys, "robot-key", "False", "ServiceAccountNotFound")
        .await
        .status
        .expect("status");
    assert_eq!(revoked.id, None, "no key reported after revocation");
    wait_gone(&secrets, "robot-key", "the Secret to be revoked").await;
    wait_event(&client, &namespace, "robot-key", "KeyRevoked").await;

    let second_account = accounts
        .create(&PostParams::default(), &account())
        .await
        .expect("re-create account");
    let reissued = wait_ready(&keys, "robot-key").await.status.expect("status");
    assert_ne!(reissued.id, issued.id, "a new identity gets a new key");
    let secret = secrets.get("robot-key").await.expect("secret");
    assert_eq!(
        annotation(&secret, "keymint.dev/bound-uid"),
        second_account.uid()
    );
}

#[tokio::test]
async fn root_keys_go_only_to_allowed_namespaces() {
    let (client, _) = setup("root").await;
    let roots = Api::<RootKey>::all(client.clone());
    let suffix = Timestamp::now().as_nanosecond() % 1_000_000;
    let default_name = format!("root-default-{suffix}");
    let allowed_name = format!("root-allowed-{suffix}");
    let denied_name = format!("root-denied-{suffix}");
    apply(
        &roots,
        &manifest::<RootKey>("RootKey", &default_name, json!({"validFor": "24h"})),
    )
    .await
    .expect("apply");
    apply(
        &roots,
        &manifest::<RootKey>(
            "RootKey",
            &allowed_name,
            json!({"secretNamespace": ROOT_KEY_NAMESPACE}),
        ),
    )
    .await
    .expect("apply");
    apply(
        &roots,
        &manifest::<RootKey>(
            "RootKey",
            &denied_name,
            json!({"secretNamespace": "default"}),
        ),
    )
    .await
    .expect("apply");

    let default_key = wait_ready(&roots, &default_name)
        .await
        .status
        .expect("status");
    assert_eq!(
        default_key.secret_namespace.as_deref(),
        Some(OPERATOR_NAMESPACE)
    );
    let secret = secret(&client, OPERATOR_NAMESPACE, &default_name).await;
    assert!(text(&secret, "key").expect("key").starts_with("rk_"));
    let allowed = wait_ready(&roots, &allowed_name)
        .await
        .status
        .expect("status");
    assert_eq!(
        allowed.secret_namespace.as_deref(),
        Some(ROOT_KEY_NAMESPACE)
    );
    let allowed_secret = self::secret(&client, ROOT_KEY_NAMESPACE, &allowed_name).await;
    assert_eq!(text(&allowed_secret, "id"), allowed.id);

    let denied = wait_reason(&roots, &denied_name, "False", "NamespaceNotAllowed").await;
    assert!(
        denied.status.expect("status").conditions[0]
            .message
            .contains("spec.secretNamespace")
    );
    assert!(
        Api::<Secret>::namespaced(client.clone(), "default")
            .get_opt(&denied_name)
            .await
            .expect("get")
            .is_none()
    );
    for name in [&default_name, &allowed_name, &denied_name] {
        roots
            .delete(name, &DeleteParams::default())
            .await
            .expect("clean up");
    }
}

#[tokio::test]
async fn deletion_policy_decides_what_happens_to_the_secret() {
    let (client, namespace) = setup("deletion").await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    apply(&keys, &api_key("goes", json!({"permissions": ["read"]})))
        .await
        .expect("apply");
    apply(
        &keys,
        &api_key(
            "stays",
            json!({"permissions": ["read"], "deletionPolicy": "Retain"}),
        ),
    )
    .await
    .expect("apply");
    wait_ready(&keys, "goes").await;
    wait_ready(&keys, "stays").await;
    assert!(
        secret(&client, &namespace, "stays")
            .await
            .owner_references()
            .is_empty(),
        "Retain: no owner reference"
    );

    keys.delete("goes", &DeleteParams::default())
        .await
        .expect("delete");
    keys.delete("stays", &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&secrets, "goes", "the owned Secret to be garbage-collected").await;
    wait_gone(&keys, "stays", "the APIKey to be gone").await;
    let kept = secrets.get("stays").await.expect("retained secret");
    assert!(text(&kept, "key").is_some());
}

/// Each rotation and each end of a grace period is one Secret write then one
/// status write. A key woken before the watch delivered keymint's own status
/// write (its Secret's event can beat the write's reply) must not write that
/// status again from its stale cache: under load it did, 11 times in 120
/// rotations.
#[tokio::test]
async fn every_status_write_follows_its_own_secret_write_while_keys_rotate() {
    let (client, namespace) = setup("rotations").await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    let names: Vec<String> = (0..10).map(|i| format!("fast-{i}")).collect();
    let spec = json!({"permissions": ["read"], "validFor": "8s", "renewBefore": "3s", "gracePeriod": "4s"});
    for name in &names {
        apply(&keys, &api_key(name, spec.clone()))
            .await
            .expect("apply");
    }
    for name in &names {
        wait_ready(&keys, name).await;
    }
    let plane = plane();
    let mark = plane.audit_events().expect("audit").len();
    let rotations = || async {
        keys.list(&Default::default())
            .await
            .expect("list")
            .items
            .iter()
            .filter_map(|k| k.status.as_ref().and_then(|s| s.rotations))
            .sum::<i64>()
    };
    let start = rotations().await;
    eventually("five rotations per key", WAIT, || async {
        let done = rotations().await - start;
        if done >= 5 * names.len() as i64 {
            Ok(())
        } else {
            Err(format!("{done} rotations"))
        }
    })
    .await;
    let writes: Vec<(String, String)> = plane.audit_events().expect("audit")[mark..]
        .iter()
        .filter(|e| e.user.username == OPERATOR_USER && e.verb == "patch")
        .filter_map(|e| {
            let object = e.object_ref.as_ref()?;
            let name = object.name.clone()?;
            (object.namespace.as_deref() == Some(namespace.as_str()))
                .then(|| (name, object.resource.clone()))
        })
        .collect();
    for name in &names {
        let sequence: Vec<&str> = writes
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, resource)| resource.as_str())
            .collect();
        assert!(sequence.len() >= 8, "{name}: rotations write: {sequence:?}");
        assert!(
            !sequence
                .windows(2)
                .any(|pair| pair == ["apikeys", "apikeys"]),
            "{name}: a status written twice: {sequence:?}"
        );
    }
}

#[tokio::test]
async fn an_up_to_date_key_causes_no_writes_on_a_resync() {
    let (client, namespace) = setup("rest").await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    let names: Vec<String> = (0..5).map(|i| format!("idle-{i}")).collect();
    for name in &names {
        apply(
            &keys,
            &api_key(
                name,
                json!({"permissions": ["read"], "validFor": "24h", "gracePeriod": "1h"}),
            ),
        )
        .await
        .expect("apply");
    }
    for name in &names {
        wait_ready(&keys, name).await;
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let versions = |items: Vec<Secret>| {
        items
            .into_iter()
            .map(|s| (s.name_any(), s.resource_version()))
            .collect::<BTreeSet<_>>()
    };
    let secrets_before = versions(secrets.list(&Default::default()).await.expect("list").items);
    let statuses_before: Vec<_> = keys
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|k| (k.name_any(), serde_json::to_value(&k.status).expect("json")))
        .collect();
    let plane = plane();
    let mark = plane.audit_events().expect("audit").len();

    // Force a resync: touch every resource's metadata (no generation change),
    // which makes the operator reconcile each one again.
    for name in &names {
        let touch = json!({"metadata": {"labels": {"touched": "yes"}}});
        keys.patch(name, &PatchParams::default(), &Patch::Merge(&touch))
            .await
            .expect("touch");
    }
    // Each reconcile reads the Secret: wait until the operator has read all of them.
    eventually(
        "the operator to reconcile every touched key",
        WAIT,
        || async {
            let events = plane.audit_events().map_err(|e| e.to_string())?;
            let read: BTreeSet<String> = events[mark..]
                .iter()
                .filter(|e| e.user.username == OPERATOR_USER && e.verb == "get")
                .filter_map(|e| e.object_ref.as_ref())
                .filter(|r| {
                    r.resource == "secrets" && r.namespace.as_deref() == Some(namespace.as_str())
                })
                .filter_map(|r| r.name.clone())
                .collect();
            if names.iter().all(|n| read.contains(n)) {
                Ok(())
            } else {
                Err(format!("read so far: {read:?}"))
            }
        },
    )
    .await;

    let writes: Vec<String> = plane.audit_events().expect("audit")[mark..]
        .iter()
        .filter(|e| {
            e.user.username == OPERATOR_USER
                && matches!(e.verb.as_str(), "create" | "update" | "patch" | "delete")
        })
        .filter(|e| {
            e.object_ref.as_ref().and_then(|r| r.namespace.as_deref()) == Some(namespace.as_str())
        })
        .map(|e| format!("{} {}", e.verb, e.request_uri))
        .collect();
    assert!(writes.is_empty(), "writes at rest: {writes:?}");
    assert_eq!(
        versions(secrets.list(&Default::default()).await.expect("list").items),
        secrets_before
    );
    let statuses_after: Vec<_> = keys
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|k| (k.name_any(), serde_json::to_value(&k.status).expect("json")))
        .collect();
    assert_eq!(statuses_after, statuses_before);
}

#[tokio::test]
async fn an_api_key_author_cannot_reach_another_namespace_or_a_foreign_secret() {
    let plane = plane();
    let (admin, namespace_a) = setup("authority-a").await;
    let namespace_b = plane
        .namespace(&admin, "authority-b")
        .await
        .expect("namespace");
    // A Secret in B the author must never reach, and one in A it does not own.
    for (namespace, name) in [
        (namespace_b.as_str(), "target"),
        (namespace_a.as_str(), "not-yours"),
    ] {
        Api::<Secret>::namespaced(admin.clone(), namespace)
            .create(
                &PostParams::default(),
                &Secret {
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        ..Default::default()
                    },
                    string_data: Some(
                        [("password".to_string(), format!("{name}-value-0001"))].into(),
                    ),
                    ..Default::default()
                },
            )
            .await
            .expect("secret");
    }
    let author = plane
        .service_account_client(
            &admin,
            &namespace_a,
            "author",
            vec![keymint_testenv::rule(
                &["keymint.dev"],
                &["apikeys"],
                &["create", "get", "list", "patch"],
            )],
        )
        .await
        .expect("author");
    let mark = plane.audit_events().expect("audit").len();
    let keys = Api::<ApiKey>::namespaced(author.clone(), &namespace_a);

    // A namespace is not a name: refused by the schema.
    let across = apply(
        &keys,
        &api_key(
            "across",
            json!({"permissions": ["read"], "secretName": format!("{namespace_b}/target")}),
        ),
    )
    .await;
    assert!(
        matches!(&across, Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("spec.secretName")),
        "{across:?}"
    );
    // Its own namespace only, and never another application's Secret.
    apply(
        &keys,
        &api_key(
            "grab",
            json!({"permissions": ["read"], "secretName": "not-yours"}),
        ),
    )
    .await
    .expect("apply");
    let grab = wait_reason(
        &Api::<ApiKey>::namespaced(admin.clone(), &namespace_a),
        "grab",
        "False",
        "SecretConflict",
    )
    .await;
    assert!(
        !serde_json::to_string(&grab)
            .expect("json")
            .contains("not-yours-value-0001")
    );
    // The author's key works, in A.
    apply(&keys, &api_key("mine", json!({"permissions": ["read"]})))
        .await
        .expect("apply");
    wait_ready(
        &Api::<ApiKey>::namespaced(admin.clone(), &namespace_a),
        "mine",
    )
    .await;
    // RootKeys (which name a namespace) are cluster admins' only.
    let root: RootKey = manifest(
        "RootKey",
        "author-root",
        json!({"secretNamespace": namespace_b}),
    );
    let denied = apply(&Api::<RootKey>::all(author.clone()), &root).await;
    assert!(
        matches!(&denied, Err(kube::Error::Api(s)) if s.code == 403),
        "{denied:?}"
    );

    // The operator wrote nothing in B, and B's Secret is untouched.
    let writes_in_b: Vec<String> = plane.audit_events().expect("audit")[mark..]
        .iter()
        .filter(|e| {
            e.user.username == OPERATOR_USER
                && e.verb != "get"
                && e.verb != "list"
                && e.verb != "watch"
        })
        .filter(|e| {
            e.object_ref.as_ref().and_then(|r| r.namespace.as_deref()) == Some(namespace_b.as_str())
        })
        .map(|e| e.request_uri.clone())
        .collect();
    assert!(writes_in_b.is_empty(), "{writes_in_b:?}");
    let target = Api::<Secret>::namespaced(admin.clone(), &namespace_b)
        .get("target")
        .await
        .expect("target");
    assert!(target.annotations().get("keymint.dev/owner").is_none());
    assert_eq!(
        Api::<Secret>::namespaced(admin.clone(), &namespace_a)
            .get("not-yours")
            .await
            .expect("secret")
            .annotations()
            .get("keymint.dev/owner"),
        None
    );
}

#[tokio::test]
async fn concurrent_writers_on_the_secret_and_the_status_lose_nothing() {
    let (client, namespace) = setup("writers").await;
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

/// A consumer's pod template is the tenant's: a crafted `keymint.dev/key-*`
/// value (not a key id, longer than the status schema takes) on a named
/// workload that keymint never writes must not stall the key's status.
#[tokio::test]
async fn a_crafted_consumer_annotation_never_blocks_the_key_status() {
    use k8s_openapi::api::apps::v1::Deployment;
    use keymint::api::ConsumerState;
    let (client, namespace) = setup("crafted-consumer").await;
    let annotation = keymint::rollout::annotation_key("APIKey", &namespace, "held");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {annotation.clone(): "x".repeat(300)}},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
            },
        },
    }))
    .expect("a Deployment");
    Api::<Deployment>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create the Deployment");
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    let spec =
        json!({"permissions": ["read"], "consumers": [{"kind": "Deployment", "name": "web"}]});
    keys.create(&PostParams::default(), &api_key("held", spec))
        .await
        .expect("create the key");
    let key = wait_for(&keys, "held", "the consumer reported", |key: &ApiKey| {
        key.status.as_ref().is_some_and(|s| {
            s.id.is_some()
                && s.consumers
                    .iter()
                    .any(|c| c.name == "web" && c.state == ConsumerState::NotAHolder)
        })
    })
    .await;
    let status = key.status.expect("status");
    assert_eq!(status.consumers.len(), 1);
    assert_eq!(status.consumers[0].key_id, None);
    // Rotations still reach the status (the rings read it).
    keys.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"keymint.dev/rotate-request": "one"}}})),
    )
    .await
    .expect("rotate");
    let first = status.id.clone();
    wait_for(&keys, "held", "the rotation in status", |key: &ApiKey| {
        key.status.as_ref().is_some_and(|s| s.id != first)
    })
    .await;
    let web = Api::<Deployment>::namespaced(client.clone(), &namespace)
        .get("web")
        .await
        .expect("the Deployment");
    assert_eq!(web.metadata.generation, Some(1), "a non-holder was written");
}

/// At most `--max-rollouts-per-namespace` (4 for the shared operator)
/// consumers of a namespace roll out at once, even when many start together.
/// Without a node no Pod ever runs, so every adopted consumer stays rolling.
#[tokio::test]
async fn no_more_than_the_namespace_limit_of_consumers_roll_out_at_once() {
    use k8s_openapi::api::apps::v1::Deployment;
    let (client, namespace) = setup("rollout-limit").await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    let spec = json!({"permissions": ["read"],
        "consumers": [{"kind": "Deployment", "selector": {"matchLabels": {"tier": "web"}}}]});
    keys.create(&PostParams::default(), &api_key("shared", spec))
        .await
        .expect("create the key");
    let id = wait_ready(&keys, "shared")
        .await
        .status
        .and_then(|s| s.id)
        .expect("an id");
    let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace);
    for i in 0..7 {
        let name = format!("web-{i}");
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"tier": "web"}},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1",
                        "env": [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "shared", "key": "key"}}}]}]},
                },
            },
        }))
        .expect("a Deployment");
        deployments
            .create(&PostParams::default(), &deployment)
            .await
            .expect("create a consumer");
    }
    let annotation = keymint::rollout::annotation_key("APIKey", &namespace, "shared");
    let adopted = || {
        let deployments = deployments.clone();
        let (annotation, id) = (annotation.clone(), id.clone());
        async move {
            let list = deployments
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<usize, String>(
                list.items
                    .iter()
                    .filter(|d| {
                        d.spec
                            .as_ref()
                            .and_then(|s| s.template.metadata.as_ref())
                            .and_then(|m| m.annotations.as_ref())
                            .and_then(|a| a.get(&annotation))
                            == Some(&id)
                    })
                    .count(),
            )
        }
    };
    eventually("four consumers adopted", WAIT, || async {
        let count = adopted().await?;
        (count >= 4).then_some(()).ok_or(format!("{count} adopted"))
    })
    .await;
    holds_for(
        "at most four rolling",
        std::time::Duration::from_secs(8),
        || async {
            let count = adopted().await?;
            (count == 4).then_some(()).ok_or(format!("{count} adopted"))
        },
    )
    .await;
    let key = keys.get("shared").await.expect("the key");
    let states: Vec<_> = key
        .status
        .expect("status")
        .consumers
        .iter()
        .map(|c| c.state)
        .collect();
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == keymint::api::ConsumerState::Pending)
            .count(),
        3,
        "{states:?}"
    );
}
