//! KeyRings on the real control plane: a service namespace's ring lists the
//! keys of the namespaces it accepts (ids and hashes, never a key), follows
//! rotations (the previous key during its grace period), deletions and
//! consent changes, refuses keys it does not accept (they report
//! `KeyRingNotAllowed`), restores a forged document, never overwrites a
//! Secret it does not own, and writes nothing at rest.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use keymint::api::{ApiKey, KeyRing, ROTATE_REQUEST_ANNOTATION};
use keymint::keyring::{MemberState, RingDocument};
use keymint_test_support::verify::VerifyServer;
use keymint_test_support::{
    TEST_MANAGER, WAIT, api_key, eventually, plane, setup, wait_ready, wait_reason,
};
use keymint_testenv::OPERATOR_USER;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

fn ring(name: &str, allowed: serde_json::Value) -> KeyRing {
    serde_json::from_value(json!({
        "apiVersion": "keymint.dev/v1alpha1", "kind": "KeyRing",
        "metadata": {"name": name},
        "spec": {"allowedNamespaces": allowed}
    }))
    .expect("a KeyRing")
}

fn key_in_ring(
    name: &str,
    ring_namespace: &str,
    ring_name: &str,
    extra: serde_json::Value,
) -> ApiKey {
    let mut spec = json!({
        "permissions": ["models:read"],
        "keyRings": [{"name": ring_name, "namespace": ring_namespace}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    api_key(name, spec)
}

/// Creates a KeyRing `name` in `namespace` accepting `allowed`.
async fn create_ring(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    allowed: serde_json::Value,
) {
    Api::<KeyRing>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &ring(name, allowed))
        .await
        .unwrap_or_else(|e| panic!("create the ring {name}: {e}"));
}

/// The operator's create, update and patch requests since `mark`.
fn operator_writes_since(mark: usize) -> Vec<keymint_testenv::AuditEvent> {
    plane()
        .audit_events()
        .expect("audit")
        .into_iter()
        .skip(mark)
        .filter(|e| e.user.username == OPERATOR_USER)
        .filter(|e| ["create", "update", "patch"].contains(&e.verb.as_str()))
        .collect()
}

/// Sets annotations on an APIKey (server-side apply as the test's manager).
async fn annotate(keys: &Api<ApiKey>, name: &str, annotations: serde_json::Value) {
    keys.patch(
        name,
        &PatchParams::apply(TEST_MANAGER),
        &Patch::Apply(&json!({
            "apiVersion": "keymint.dev/v1alpha1", "kind": "APIKey",
            "metadata": {"name": name, "annotations": annotations},
        })),
    )
    .await
    .unwrap_or_else(|e| panic!("annotate {name}: {e}"));
}

async fn label_namespace(client: &kube::Client, namespace: &str, labels: serde_json::Value) {
    Api::<Namespace>::all(client.clone())
        .patch(
            namespace,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": labels}})),
        )
        .await
        .expect("label a namespace");
}

/// The ring's document, once its Secret exists.
async fn read_document(
    client: &kube::Client,
    namespace: &str,
    secret: &str,
) -> Result<RingDocument, String> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(secret)
        .await
        .map_err(|e| e.to_string())?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get("keyring.json"))
        .ok_or("no keyring.json")?;
    RingDocument::parse(&bytes.0).map_err(|e| e.to_string())
}

/// Waits until the ring's document satisfies `check`.
async fn wait_document(
    client: &kube::Client,
    namespace: &str,
    secret: &str,
    what: &str,
    check: impl Fn(&RingDocument) -> bool,
) -> RingDocument {
    eventually(what, WAIT, || async {
        let document = read_document(client, namespace, secret).await?;
        if check(&document) {
            Ok(document)
        } else {
            Err(format!("{:?}", document.members))
        }
    })
    .await
}

#[tokio::test]
async fn a_ring_lists_accepted_keys_follows_rotation_and_deletion_and_refuses_the_rest() {
    let (client, service) = setup("ring-svc").await;
    let (_, client_ns) = setup("ring-client").await;
    let (_, stranger) = setup("ring-stranger").await;
    label_namespace(&client, &client_ns, json!({"ring-test/billing": "member"})).await;
    let rings = Api::<KeyRing>::namespaced(client.clone(), &service);
    create_ring(
        &client,
        &service,
        "billing",
        json!({"from": "Selector", "selector": {"matchLabels": {"ring-test/billing": "member"}}}),
    )
    .await;

    // A key from an accepted namespace joins: its id and hash, never the key.
    let keys = Api::<ApiKey>::namespaced(client.clone(), &client_ns);
    keys.create(
        &PostParams::default(),
        &key_in_ring(
            "client-key",
            &service,
            "billing",
            json!({"gracePeriod": "1h"}),
        ),
    )
    .await
    .expect("create the key");
    let key = wait_ready(&keys, "client-key").await;
    let status = key.status.clone().expect("status");
    let id = status.id.clone().expect("an id");
    let document = wait_document(&client, &service, "billing", "the key in the ring", |d| {
        d.members.iter().any(|m| m.id == id)
    })
    .await;
    let member = &document.members[0];
    assert_eq!(member.sha256, status.key_sha256.clone().expect("a hash"));
    assert_eq!(member.state, MemberState::Current);
    assert_eq!(member.permissions, vec!["models:read".to_string()]);
    assert_eq!(member.issuer.namespace.as_deref(), Some(client_ns.as_str()));
    assert_eq!(member.issuer.name, "client-key");
    let client_secret = Api::<Secret>::namespaced(client.clone(), &client_ns)
        .get("client-key")
        .await
        .expect("the key's Secret");
    let token =
        String::from_utf8(client_secret.data.expect("data")["key"].0.clone()).expect("utf-8");
    let ring_secret = Api::<Secret>::namespaced(client.clone(), &service)
        .get("billing")
        .await
        .expect("the ring's Secret");
    let ring_bytes = serde_json::to_string(&ring_secret).expect("JSON");
    assert!(!ring_bytes.contains(&token), "the ring never holds a key");
    let updated =
        keymint_test_support::wait_event(&client, &service, "billing", "RingUpdated").await;
    assert!(
        updated
            .note
            .as_deref()
            .is_some_and(|note| note.contains(&format!("+{id} (current)"))),
        "the Event names the change: {:?}",
        updated.note
    );

    // A key from a namespace the ring does not accept is refused and reported.
    let strangers = Api::<ApiKey>::namespaced(client.clone(), &stranger);
    strangers
        .create(
            &PostParams::default(),
            &key_in_ring("outsider", &service, "billing", json!({})),
        )
        .await
        .expect("create the outsider");
    let refused = wait_reason(&strangers, "outsider", "False", "KeyRingNotAllowed").await;
    assert!(
        refused
            .status
            .as_ref()
            .and_then(|s| s.id.as_ref())
            .is_some(),
        "the key itself is still issued"
    );
    eventually("the ring to report the refused key", WAIT, || async {
        let ring = rings.get("billing").await.map_err(|e| e.to_string())?;
        let status = ring.status.unwrap_or_default();
        if status.refused.contains(&format!("{stranger}/outsider")) && status.members == Some(1) {
            Ok(())
        } else {
            Err(format!("{status:?}"))
        }
    })
    .await;
    assert_eq!(
        read_document(&client, &service, "billing")
            .await
            .expect("doc")
            .members
            .len(),
        1
    );

    // Rotation: the new key and, for the grace period, the previous one.
    annotate(
        &keys,
        "client-key",
        json!({ROTATE_REQUEST_ANNOTATION: "one"}),
    )
    .await;
    let rotated = wait_document(
        &client,
        &service,
        "billing",
        "the rotation in the ring",
        |d| {
            d.members.len() == 2
                && d.members
                    .iter()
                    .any(|m| m.id == id && m.state == MemberState::Previous)
        },
    )
    .await;
    let previous = rotated
        .members
        .iter()
        .find(|m| m.id == id)
        .expect("previous");
    assert_eq!(
        previous.sha256, member.sha256,
        "the previous key keeps its hash"
    );
    assert!(
        previous.expires_at.is_some(),
        "the grace period's end is its expiry"
    );

    // At rest: no write to the ring's Secret.
    let mark = plane().audit_events().expect("audit").len();
    keymint_test_support::holds_for(
        "no operator write at rest",
        Duration::from_secs(5),
        || async {
            let writes: Vec<String> = operator_writes_since(mark)
                .into_iter()
                .filter(|e| {
                    e.object_ref
                        .as_ref()
                        .is_some_and(|o| o.namespace.as_deref() == Some(service.as_str()))
                })
                .map(|e| {
                    format!(
                        "{} {:?}",
                        e.verb,
                        e.object_ref.map(|o| (o.resource, o.name))
                    )
                })
                .collect();
            if writes.is_empty() {
                Ok(())
            } else {
                Err(format!("{writes:?}"))
            }
        },
    )
    .await;

    // Withdrawing consent (the namespace label) removes the key and reports it.
    label_namespace(&client, &client_ns, json!({"ring-test/billing": null})).await;
    wait_document(
        &client,
        &service,
        "billing",
        "the key gone after consent ends",
        |d| d.members.is_empty(),
    )
    .await;
    wait_reason(&keys, "client-key", "False", "KeyRingNotAllowed").await;
    label_namespace(&client, &client_ns, json!({"ring-test/billing": "member"})).await;
    wait_document(&client, &service, "billing", "the key back", |d| {
        !d.members.is_empty()
    })
    .await;

    // Deleting the key removes it.
    keys.delete("client-key", &Default::default())
        .await
        .expect("delete the key");
    wait_document(
        &client,
        &service,
        "billing",
        "the key gone after deletion",
        |d| d.members.is_empty(),
    )
    .await;
}

#[tokio::test]
async fn a_forged_document_is_restored_and_a_foreign_secret_is_never_overwritten() {
    let (client, namespace) = setup("ring-forged").await;
    let rings = Api::<KeyRing>::namespaced(client.clone(), &namespace);
    create_ring(&client, &namespace, "own", json!({"from": "Same"})).await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    keys.create(
        &PostParams::default(),
        &key_in_ring("member", &namespace, "own", json!({})),
    )
    .await
    .expect("create the key");
    wait_ready(&keys, "member").await;
    let genuine = wait_document(&client, &namespace, "own", "the member listed", |d| {
        d.members.len() == 1
    })
    .await;

    // Someone with write access to the ring's Secret plants a member.
    let mut forged = genuine.clone();
    let mut planted = forged.members[0].clone();
    planted.id = "PLANTED".into();
    planted.sha256 = "ab".repeat(32);
    forged.members.push(planted);
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .patch(
            "own",
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {"keyring.json": ByteString(forged.to_bytes())}})),
        )
        .await
        .expect("forge the document");
    wait_document(
        &client,
        &namespace,
        "own",
        "the forged member removed",
        |d| d.members.len() == 1 && d.members[0].id == genuine.members[0].id,
    )
    .await;
    // Garbage is replaced too.
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .patch(
            "own",
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {"keyring.json": ByteString(b"{not json".to_vec())}})),
        )
        .await
        .expect("break the document");
    wait_document(&client, &namespace, "own", "the document restored", |d| {
        d.members.len() == 1
    })
    .await;

    // A ring pointed at an application's Secret never writes to it.
    let application = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("app-config".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(
            "config".to_string(),
            "keep me".to_string(),
        )])),
        ..Default::default()
    };
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let before = secrets
        .create(&PostParams::default(), &application)
        .await
        .expect("an app Secret");
    let mut conflicting = ring("conflicting", json!({"from": "Same"}));
    conflicting.spec.secret_name = Some("app-config".into());
    rings
        .create(&PostParams::default(), &conflicting)
        .await
        .expect("create");
    eventually("SecretConflict on the ring", WAIT, || async {
        let ring = rings.get("conflicting").await.map_err(|e| e.to_string())?;
        let reason = ring
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .map(|c| (c.status, c.reason));
        if reason == Some(("False".into(), "SecretConflict".into())) {
            Ok(())
        } else {
            Err(format!("{reason:?}"))
        }
    })
    .await;
    let warning =
        keymint_test_support::wait_event(&client, &namespace, "conflicting", "SecretConflict")
            .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let after = secrets.get("app-config").await.expect("the app Secret");
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "never written"
    );
    assert!(after.meta().owner_references.is_none());
}

#[tokio::test]
async fn a_key_naming_a_missing_ring_says_so_and_joins_when_it_appears() {
    let (client, namespace) = setup("ring-missing").await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    keys.create(
        &PostParams::default(),
        &key_in_ring("early", &namespace, "later", json!({})),
    )
    .await
    .expect("create the key");
    wait_reason(&keys, "early", "False", "KeyRingNotFound").await;
    create_ring(&client, &namespace, "later", json!({"from": "Same"})).await;
    wait_ready(&keys, "early").await;
    wait_document(&client, &namespace, "later", "the key listed", |d| {
        d.members.len() == 1
    })
    .await;
}

#[tokio::test]
async fn marking_a_key_compromised_rotates_it_at_once_and_revokes_the_leaked_key_in_its_rings() {
    let (client, namespace) = setup("ring-leak").await;
    create_ring(&client, &namespace, "leaks", json!({"from": "Same"})).await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    keys.create(
        &PostParams::default(),
        &key_in_ring("leaky", &namespace, "leaks", json!({"gracePeriod": "24h"})),
    )
    .await
    .expect("create the key");
    let before = wait_ready(&keys, "leaky").await.status.expect("status");
    let leaked_id = before.id.clone().expect("id");
    let leaked_sha = before.key_sha256.clone().expect("hash");
    wait_document(&client, &namespace, "leaks", "the key listed", |d| {
        d.members.len() == 1
    })
    .await;

    annotate(&keys, "leaky", json!({"keymint.dev/compromised": "INC-42"})).await;
    let after = wait_for_new_key(&keys, "leaky", &leaked_id).await;
    assert_eq!(after.previous_id, None, "no grace period for a leaked key");
    let secret = Api::<Secret>::namespaced(client.clone(), &namespace)
        .get("leaky")
        .await
        .expect("the key's Secret");
    let data = secret.data.expect("data");
    assert!(
        !data.contains_key("previous-key"),
        "the leaked key is gone from the Secret"
    );
    let document = wait_document(
        &client,
        &namespace,
        "leaks",
        "the leaked key revoked",
        |d| {
            d.members
                .iter()
                .any(|m| m.sha256 == leaked_sha && m.state == MemberState::Revoked)
                && d.members
                    .iter()
                    .any(|m| Some(&m.id) == after.id.as_ref() && m.state == MemberState::Current)
        },
    )
    .await;
    assert_eq!(
        document
            .members
            .iter()
            .filter(|m| m.sha256 == leaked_sha)
            .count(),
        1,
        "the leaked hash is only listed as revoked"
    );
    let event =
        keymint_test_support::wait_event(&client, &namespace, "leaky", "KeyCompromised").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    // The mark stays; it rotates nothing more.
    keymint_test_support::holds_for("one rotation per mark", Duration::from_secs(3), || async {
        let id = keys
            .get("leaky")
            .await
            .map_err(|e| e.to_string())?
            .status
            .and_then(|s| s.id);
        if id == after.id {
            Ok(())
        } else {
            Err(format!("rotated again to {id:?}"))
        }
    })
    .await;
}

async fn wait_for_new_key(keys: &Api<ApiKey>, name: &str, old_id: &str) -> keymint::api::KeyStatus {
    eventually("a new key after the compromise mark", WAIT, || async {
        let status = keys
            .get(name)
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        if status.id.as_deref().is_some_and(|id| id != old_id) {
            Ok(status)
        } else {
            Err(format!("{status:?}"))
        }
    })
    .await
}

/// A ServiceAccount in `namespace` that may only read the one Secret `secret`
/// (the verify server's least RBAC in watch mode); its kubeconfig.
async fn reader_of(client: &kube::Client, namespace: &str, secret: &str) -> std::path::PathBuf {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
    let meta = kube::api::ObjectMeta {
        name: Some("verifier".into()),
        namespace: Some(namespace.into()),
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("a ServiceAccount");
    let rule = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["secrets".into()]),
        resource_names: Some(vec![secret.into()]),
        verbs: vec!["get".into(), "list".into(), "watch".into()],
        ..Default::default()
    };
    Api::<Role>::namespaced(client.clone(), namespace)
        .create(
            &PostParams::default(),
            &Role {
                metadata: meta.clone(),
                rules: Some(vec![rule]),
            },
        )
        .await
        .expect("a Role");
    let binding = RoleBinding {
        metadata: meta.clone(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "verifier".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "verifier".into(),
            namespace: Some(namespace.into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("a RoleBinding");
    keymint_test_support::service_account_kubeconfig(plane(), client, namespace, "verifier").await
}

async fn token_of(client: &kube::Client, namespace: &str, secret: &str) -> String {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(secret)
        .await
        .expect("the key's Secret");
    String::from_utf8(secret.data.expect("data")["key"].0.clone()).expect("utf-8")
}

/// Waits until the verify server answers `key` with `code`.
async fn wait_answer(server: &VerifyServer, key: &str, code: &str, within: Duration) {
    eventually(
        &format!("the verify server to answer {code}"),
        within,
        || async {
            let answer = server
                .verify_json(&json!({"key": key}))
                .map_err(|e| e.to_string())?
                .json();
            if answer["code"] == code {
                Ok(())
            } else {
                Err(format!("{answer}"))
            }
        },
    )
    .await
}

#[tokio::test]
async fn the_verify_server_in_watch_mode_follows_the_ring_through_rotation_compromise_and_deletion()
{
    let (client, service) = setup("verify-svc").await;
    let (_, client_ns) = setup("verify-client").await;
    let (_, stranger) = setup("verify-stranger").await;
    label_namespace(&client, &client_ns, json!({"ring-test/api": "member"})).await;
    create_ring(
        &client,
        &service,
        "api",
        json!({"from": "Selector", "selector": {"matchLabels": {"ring-test/api": "member"}}}),
    )
    .await;
    let kubeconfig = reader_of(&client, &service, "api").await;
    let scratch = tempfile::tempdir().expect("scratch");
    let server = VerifyServer::start(
        scratch.path(),
        "verify-watch",
        &["--keyring-secret", "api", "--namespace", &service],
        &[("KUBECONFIG", &kubeconfig.display().to_string())],
    );

    let keys = Api::<ApiKey>::namespaced(client.clone(), &client_ns);
    keys.create(
        &PostParams::default(),
        &key_in_ring("caller", &service, "api", json!({"gracePeriod": "6s"})),
    )
    .await
    .expect("create the key");
    let first = wait_ready(&keys, "caller").await.status.expect("status");
    let first_key = token_of(&client, &client_ns, "caller").await;
    wait_answer(&server, &first_key, "VALID", WAIT).await;
    let answer = server
        .verify_json(&json!({"key": first_key}))
        .expect("verify")
        .json();
    assert_eq!(answer["id"], json!(first.id));
    assert_eq!(answer["issuer"]["namespace"], json!(client_ns));

    // A key from a namespace the ring does not accept: refused and reported.
    let strangers = Api::<ApiKey>::namespaced(client.clone(), &stranger);
    strangers
        .create(
            &PostParams::default(),
            &key_in_ring("intruder", &service, "api", json!({})),
        )
        .await
        .expect("create the intruder");
    wait_reason(&strangers, "intruder", "False", "KeyRingNotAllowed").await;
    let intruder_key = token_of(&client, &stranger, "intruder").await;
    wait_answer(&server, &intruder_key, "NOT_FOUND", WAIT).await;

    // Rotation: the new key, and the previous one during its grace period only.
    annotate(&keys, "caller", json!({ROTATE_REQUEST_ANNOTATION: "r1"})).await;
    let second = wait_for_new_key(&keys, "caller", first.id.as_deref().unwrap_or_default()).await;
    let second_key = token_of(&client, &client_ns, "caller").await;
    wait_answer(&server, &second_key, "VALID", WAIT).await;
    assert_eq!(
        server
            .verify_json(&json!({"key": first_key}))
            .expect("verify")
            .json()["code"],
        "VALID",
        "the previous key is accepted during its grace period"
    );
    wait_answer(&server, &first_key, "NOT_FOUND", WAIT).await;

    // A leak: within 2 s the server refuses the leaked key.
    let marked = std::time::Instant::now();
    annotate(
        &keys,
        "caller",
        json!({
                ROTATE_REQUEST_ANNOTATION: "r1", "keymint.dev/compromised": "INC-1"}),
    )
    .await;
    wait_answer(&server, &second_key, "REVOKED", Duration::from_secs(2)).await;
    eprintln!(
        "the leaked key was refused {:?} after the mark",
        marked.elapsed()
    );
    let third = wait_for_new_key(&keys, "caller", second.id.as_deref().unwrap_or_default()).await;
    let third_key = token_of(&client, &client_ns, "caller").await;
    wait_answer(&server, &third_key, "VALID", WAIT).await;
    assert!(third.previous_id.is_none());

    // Deleting the key removes it.
    keys.delete("caller", &Default::default())
        .await
        .expect("delete the key");
    wait_answer(&server, &third_key, "NOT_FOUND", WAIT).await;
    let log = server.log();
    for key in [&first_key, &second_key, &third_key, &intruder_key] {
        assert!(
            !log.contains(key.as_str()),
            "a key in the verify server's log"
        );
    }
}

#[tokio::test]
async fn a_burst_of_new_keys_is_one_document_write_not_one_per_key() {
    let (client, namespace) = setup("ring-burst").await;
    create_ring(&client, &namespace, "burst", json!({"from": "Same"})).await;
    wait_document(
        &client,
        &namespace,
        "burst",
        "the empty ring written",
        |d| d.members.is_empty(),
    )
    .await;
    let mark = plane().audit_events().expect("audit").len();
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    const BURST: usize = 8;
    for index in 0..BURST {
        keys.create(
            &PostParams::default(),
            &key_in_ring(&format!("burst-{index}"), &namespace, "burst", json!({})),
        )
        .await
        .expect("create a key");
    }
    wait_document(&client, &namespace, "burst", "every key listed", |d| {
        d.members.len() == BURST
    })
    .await;
    let writes = operator_writes_since(mark)
        .into_iter()
        .filter(|e| {
            e.object_ref.as_ref().is_some_and(|o| {
                o.resource == "secrets"
                    && o.name.as_deref() == Some("burst")
                    && o.subresource.is_none()
            })
        })
        .count();
    assert!(
        writes <= 2,
        "{BURST} keys minted at once took {writes} ring document writes"
    );
}

#[tokio::test]
async fn the_api_server_refuses_a_selector_ring_without_a_selector_naming_the_field() {
    let (client, namespace) = setup("ring-cel").await;
    let rings = Api::<KeyRing>::namespaced(client.clone(), &namespace);
    for (allowed, refused) in [
        (json!({"from": "Selector"}), true),
        (
            json!({"from": "Same", "selector": {"matchLabels": {"a": "b"}}}),
            true,
        ),
        (json!({"selector": {"matchLabels": {"a": "b"}}}), true),
        (
            json!({"from": "Selector", "selector": {"matchLabels": {"a": "b"}}}),
            false,
        ),
        (json!({"from": "All"}), false),
    ] {
        let name = format!("cel-{}", rand_suffix());
        let outcome = rings
            .create(&PostParams::default(), &{
                let mut ring = ring(&name, allowed.clone());
                ring.metadata.namespace = Some(namespace.clone());
                ring
            })
            .await;
        match (outcome, refused) {
            (Err(kube::Error::Api(status)), true) => assert!(
                status.message.contains("spec.allowedNamespaces.selector"),
                "{allowed}: {}",
                status.message
            ),
            (Ok(_), false) => {}
            (other, _) => panic!("{allowed}: {other:?}"),
        }
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}
