//! Issue 10, on the real control plane: Secret writes the API server refuses
//! (immutable Secret, exhausted quota, admission policy) are reported and
//! backed off; Events for one key are bounded; terminating ServiceAccounts and
//! key resources revoke; a tenant erasing keymint's markers cannot stop a
//! revocation; no user string forges a line in the text log.
//!
//! Its own test binary: its own control plane and one operator, logging in
//! text format (the log test reads it; no other test here reads the log).

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ResourceQuota, Secret, ServiceAccount};
use keymint::api::{ApiKey, ServiceAccountKey};
use keymint_test_support::*;
use keymint_testenv::OPERATOR_USER;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

/// The Secret patches by the operator allowed in the 60 s after a write starts
/// failing: backoff 5, 10, 20, 40 s gives 4 (a fixed 5 s gives 12).
const MAX_FAILING_PATCHES_IN_60S: usize = 6;
/// At most 5 Events with one reason per resource in 10 minutes (one of slack).
const MAX_ROTATED_EVENTS_IN_60S: i64 = 6;
const FORGED: &str = "2026-01-01T00:00:00Z  INFO forged";

fn operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        Operator::start(
            "untrusted-writes",
            &cluster().operator_kubeconfig_path(),
            &["--leader-elect=false", "--log-format", "text"],
            &[],
        )
    })
}

/// An admin client and a fresh namespace; the operator is running.
async fn setup(prefix: &str) -> (kube::Client, String) {
    operator();
    fresh_namespace(prefix).await
}

async fn merge_patch<K>(api: &Api<K>, name: &str, patch: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("merge patch {name} with {patch}: {e}"))
}

/// Makes the Secret `immutable: true`, as a tenant may.
async fn freeze(secrets: &Api<Secret>, name: &str) -> Secret {
    let frozen = merge_patch(secrets, name, json!({"immutable": true})).await;
    assert_eq!(frozen.immutable, Some(true), "the Secret is now immutable");
    frozen
}

/// The operator's PATCH requests on one Secret among the audit events after `after`.
fn operator_secret_patches(namespace: &str, name: &str, after: usize) -> usize {
    since(after)
        .by(OPERATOR_USER)
        .verbs(&["patch"])
        .resource("secrets")
        .in_namespace(namespace)
        .named(name)
        .count()
}

/// How many times an Event with `reason` about `name` happened: each
/// events.k8s.io Event counts once, or by its series count if it has one.
async fn occurrences(client: &kube::Client, namespace: &str, name: &str, reason: &str) -> i64 {
    events_for(client, namespace, name)
        .await
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| {
            e.series
                .as_ref()
                .map(|s| i64::from(s.count))
                .unwrap_or(1)
                .max(1)
        })
        .sum()
}

/// The sum of every sample of `name` (all label sets).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn create_account(client: &kube::Client, namespace: &str, name: &str, finalizers: &[&str]) {
    let mut account = service_account(name);
    account.metadata.finalizers =
        (!finalizers.is_empty()).then(|| finalizers.iter().map(|f| f.to_string()).collect());
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &account)
        .await
        .expect("create ServiceAccount");
}

/// A ServiceAccount `robot` and a ServiceAccountKey `robot-key` bound to it,
/// Ready. Returns the key's Secret.
async fn bound_key(client: &kube::Client, namespace: &str, finalizers: &[&str]) -> Secret {
    create_account(client, namespace, "robot", finalizers).await;
    let keys = Api::<ServiceAccountKey>::namespaced(client.clone(), namespace);
    apply(
        &keys,
        &manifest(
            "ServiceAccountKey",
            json!({"name": "robot-key"}),
            json!({"serviceAccountName": "robot"}),
        ),
    )
    .await
    .expect("apply ServiceAccountKey");
    let key = wait_ready(&keys, "robot-key").await;
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get("robot-key")
        .await
        .expect("the key's Secret");
    assert_eq!(
        annotation(&secret, "keymint.dev/key-sha256"),
        key.status.and_then(|s| s.key_sha256),
        "the Secret holds the key the status records"
    );
    secret
}

/// The ServiceAccount is gone or terminating: the Secret is deleted, the key
/// reports `ServiceAccountNotFound`, and `KeyRevoked` is announced.
async fn assert_revoked(client: &kube::Client, namespace: &str) {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    wait_gone(
        &secrets,
        "robot-key",
        "the revoked key's Secret to be deleted",
    )
    .await;
    let keys = Api::<ServiceAccountKey>::namespaced(client.clone(), namespace);
    wait_reason(&keys, "robot-key", "False", "ServiceAccountNotFound").await;
    wait_event(client, namespace, "robot-key", "KeyRevoked").await;
    assert!(
        secrets
            .get_opt("robot-key")
            .await
            .expect("get Secret")
            .is_none(),
        "no key is minted again once revoked"
    );
}

async fn drop_finalizers<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {"finalizers": null}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => panic!("remove the finalizers of {name}: {error}"),
    }
}

// ---------------------------------------------------------------------------
// Write errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immutable_secret_fails_the_rotation_visibly_and_backs_off() {
    let (client, namespace) = setup("immutable").await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    apply(&keys, &api_key("frozen", json!({"permissions": ["read"]})))
        .await
        .expect("apply");
    wait_ready(&keys, "frozen").await;
    let frozen = freeze(&secrets, "frozen").await;
    let key_before = text(&frozen, "key").expect("key");

    let audit_start = audit_mark();
    let window = Instant::now();
    merge_patch(
        &keys,
        "frozen",
        json!({"metadata": {"annotations": {"keymint.dev/rotate-request": "r1"}}}),
    )
    .await;

    // Retries back off: count the operator's patches of the Secret over 60 s.
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(window.elapsed())).await;
    let patches = operator_secret_patches(&namespace, "frozen", audit_start);
    let now = keys.get("frozen").await.expect("APIKey");
    println!(
        "immutable: {patches} Secret patches by the operator in 60 s; Ready {:?}",
        ready_of(&now)
    );

    // The write cannot succeed: the status says so, with the API server's reason.
    let failed = wait_reason(&keys, "frozen", "False", "SecretWriteFailed").await;
    let message = ready_message(&failed);
    println!("immutable: Ready=False SecretWriteFailed: {message}");
    assert!(
        message.contains("Invalid"),
        "the message names the API server's reason (Invalid): {message}"
    );
    wait_warning(&client, &namespace, "frozen", "SecretWriteFailed").await;
    assert!(
        patches <= MAX_FAILING_PATCHES_IN_60S,
        "a failing Secret write backs off exponentially: {patches} patches in 60 s (at most {MAX_FAILING_PATCHES_IN_60S})"
    );
    assert!(
        patches >= 2,
        "the failing write is retried, not abandoned: {patches} patches in 60 s"
    );
    let after = secrets.get("frozen").await.expect("Secret");
    assert_eq!(
        text(&after, "key"),
        Some(key_before),
        "the immutable Secret still holds its key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_secret_quota_is_reported_as_forbidden() {
    let (client, namespace) = setup("quota").await;
    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), &namespace);
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "secrets"},
        "spec": {"hard": {"count/secrets": "1"}}
    }))
    .expect("quota");
    quotas
        .create(&PostParams::default(), &quota)
        .await
        .expect("create quota");
    // No quota controller runs here: publish the (true) usage so admission enforces it.
    quotas
        .patch_status(
            "secrets",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"hard": {"count/secrets": "1"}, "used": {"count/secrets": "0"}}}),
            ),
        )
        .await
        .expect("quota status");
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    secrets
        .create(
            &PostParams::default(),
            &opaque_secret("filler", &[("a", "b")]),
        )
        .await
        .expect("the one Secret the quota allows");
    let refused = secrets
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &Secret {
                metadata: ObjectMeta {
                    name: Some("probe".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
        "the quota is exhausted: {refused:?}"
    );

    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    apply(
        &keys,
        &api_key("over-quota", json!({"permissions": ["read"]})),
    )
    .await
    .expect("apply");
    let failed = wait_reason(&keys, "over-quota", "False", "SecretWriteFailed").await;
    let message = ready_message(&failed);
    println!("quota: Ready=False SecretWriteFailed: {message}");
    assert!(
        message.contains("Forbidden"),
        "the message names the API server's reason (Forbidden): {message}"
    );
    wait_warning(&client, &namespace, "over-quota", "SecretWriteFailed").await;
    assert!(
        secrets.get_opt("over-quota").await.expect("get").is_none(),
        "no Secret was written past the quota"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_policy_denying_secret_writes_is_reported() {
    let (client, namespace) = setup("admission").await;
    let policy_name = format!("keymint-e2e-deny-{namespace}");
    let selector = json!({"matchLabels": {"kubernetes.io/metadata.name": namespace}});
    let gvk = |kind: &str| {
        ApiResource::from_gvk(&GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            kind,
        ))
    };
    let policies =
        Api::<DynamicObject>::all_with(client.clone(), &gvk("ValidatingAdmissionPolicy"));
    let bindings =
        Api::<DynamicObject>::all_with(client.clone(), &gvk("ValidatingAdmissionPolicyBinding"));
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy_name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": selector,
                "resourceRules": [{
                    "apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["secrets"]
                }]
            },
            "validations": [{
                "expression": "false",
                "message": "keymint-e2e: Secrets are frozen in this namespace",
                "reason": "Forbidden"
            }]
        }
    }))
    .expect("policy");
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("create policy");
    let binding: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy_name},
        "spec": {
            "policyName": policy_name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": selector}
        }
    }))
    .expect("binding");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("create binding");

    // The API server enforces a new policy once its informers have it.
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    eventually("the policy to deny Secret writes", WAIT, || {
        let secrets = secrets.clone();
        async move {
            let probe = Secret {
                metadata: ObjectMeta {
                    name: Some("probe".into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let params = PostParams {
                dry_run: true,
                ..Default::default()
            };
            match secrets.create(&params, &probe).await {
                Err(kube::Error::Api(s)) if s.message.contains("frozen") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;

    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    apply(&keys, &api_key("denied", json!({"permissions": ["read"]})))
        .await
        .expect("apply");
    let failed = wait_reason(&keys, "denied", "False", "SecretWriteFailed").await;
    let message = ready_message(&failed);
    println!("admission: Ready=False SecretWriteFailed: {message}");
    assert!(
        message.contains("Forbidden") && message.contains("frozen"),
        "the message carries the API server's reason and message: {message}"
    );
    wait_warning(&client, &namespace, "denied", "SecretWriteFailed").await;
    assert!(
        secrets.get_opt("denied").await.expect("get").is_none(),
        "no Secret got past the policy"
    );

    for api in [&bindings, &policies] {
        api.delete(&policy_name, &DeleteParams::default())
            .await
            .expect("delete the cluster-scoped policy objects");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_rotation_cannot_be_written_is_not_ready_past_its_expiry() {
    let (client, namespace) = setup("expiry").await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    apply(
        &keys,
        &api_key("short", json!({"permissions": ["read"], "validFor": "6s"})),
    )
    .await
    .expect("apply");
    wait_ready(&keys, "short").await;
    // The key the frozen Secret holds decides the expiry (a rotation may have
    // happened just before the freeze).
    let frozen = freeze(&secrets, "short").await;
    let expires_at: Timestamp = annotation(&frozen, "keymint.dev/expires-at")
        .expect("expires-at")
        .parse()
        .expect("expires-at is a timestamp");
    let deadline = expires_at + jiff::SignedDuration::from_secs(5);
    let timeout =
        Duration::try_from(deadline.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO);

    let after = eventually(
        "Ready=False at most 5 s after the frozen key's expiry",
        timeout,
        || {
            let keys = keys.clone();
            async move {
                let key = keys.get("short").await.map_err(|e| e.to_string())?;
                match ready_of(&key) {
                    Some((status, reason)) if status == "False" => {
                        Ok((reason, ready_message(&key)))
                    }
                    other => Err(format!("{other:?} at {}", Timestamp::now())),
                }
            }
        },
    )
    .await;
    println!(
        "expiry: the key expired at {expires_at}; Ready=False {} at {}: {}",
        after.0,
        Timestamp::now(),
        after.1
    );
}

// ---------------------------------------------------------------------------
// Events bound

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keys_rotation_events_are_bounded() {
    let (client, namespace) = setup("events").await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    let suppressed_before = metric_sum(
        &operator().wait_metrics().await,
        "keymint_events_suppressed_total",
    );
    apply(
        &keys,
        &api_key("storm", json!({"permissions": ["read"], "validFor": "1s"})),
    )
    .await
    .expect("apply");
    let window = Instant::now();
    wait_ready(&keys, "storm").await;
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(window.elapsed())).await;

    let rotations = keys
        .get("storm")
        .await
        .expect("APIKey")
        .status
        .and_then(|s| s.rotations)
        .unwrap_or(0);
    let rotated = occurrences(&client, &namespace, "storm", "KeyRotated").await;
    let suppressed = metric_sum(
        &operator().wait_metrics().await,
        "keymint_events_suppressed_total",
    ) - suppressed_before;
    println!(
        "events: {rotations} rotations in 60 s, {rotated} KeyRotated Events written, {suppressed} suppressed (all keys)"
    );
    assert!(
        rotations > MAX_ROTATED_EVENTS_IN_60S,
        "the key rotated more often than Events may be written ({rotations}), so the bound is exercised"
    );
    assert!(
        rotated <= MAX_ROTATED_EVENTS_IN_60S,
        "at most {MAX_ROTATED_EVENTS_IN_60S} KeyRotated Events for one key in 60 s, got {rotated}"
    );
    assert!(
        suppressed >= 1.0,
        "the Events not written are counted in keymint_events_suppressed_total"
    );
}

// ---------------------------------------------------------------------------
// Terminating objects

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminating_service_account_revokes_its_key() {
    let (client, namespace) = setup("sa-terminating").await;
    bound_key(&client, &namespace, &["example.com/hold"]).await;
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &namespace);
    accounts
        .delete("robot", &DeleteParams::default())
        .await
        .expect("delete ServiceAccount");
    let account = accounts.get("robot").await.expect("held by its finalizer");
    assert!(
        account.metadata.deletion_timestamp.is_some(),
        "the ServiceAccount is terminating"
    );
    assert_revoked(&client, &namespace).await;
    drop_finalizers(&accounts, "robot").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminating_key_resource_loses_its_secret_at_expiry() {
    let (client, namespace) = setup("key-terminating").await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let held: ApiKey = manifest(
        "APIKey",
        json!({"name": "held", "finalizers": ["example.com/hold"]}),
        json!({"permissions": ["read"], "validFor": "12s"}),
    );
    keys.create(&PostParams::default(), &held)
        .await
        .expect("create");
    let ready = wait_ready(&keys, "held").await;
    let status = ready.status.clone().expect("status");
    let id = status.id.clone().expect("key id");
    keys.delete("held", &DeleteParams::default())
        .await
        .expect("delete");
    let terminating = keys.get("held").await.expect("held by its finalizer");
    assert!(
        terminating.metadata.deletion_timestamp.is_some(),
        "the APIKey is terminating"
    );
    // The key served at deletion time decides the expiry (it may have rotated
    // between the Ready read and the delete).
    let secret = secrets.get("held").await.expect("Secret");
    let served = annotation(&secret, "keymint.dev/key-id").expect("key id");
    let expires_at: Timestamp = annotation(&secret, "keymint.dev/expires-at")
        .expect("expires-at")
        .parse()
        .expect("expires-at is a timestamp");
    let deadline = expires_at + jiff::SignedDuration::from_secs(5);
    let timeout =
        Duration::try_from(deadline.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO);

    let ids_seen: Mutex<BTreeSet<String>> = Mutex::default();
    eventually(
        "the terminating key's Secret to be deleted by expiry + 5 s",
        timeout,
        || {
            let secrets = secrets.clone();
            let ids_seen = &ids_seen;
            async move {
                match secrets.get_opt("held").await.map_err(|e| e.to_string())? {
                    None => Ok(()),
                    Some(secret) => {
                        if let Some(id) = annotation(&secret, "keymint.dev/key-id") {
                            ids_seen.lock().expect("ids").insert(id);
                        }
                        Err(format!("Secret still there at {}", Timestamp::now()))
                    }
                }
            }
        },
    )
    .await;
    println!(
        "terminating key: {served} expired at {expires_at}; Secret gone at {}",
        Timestamp::now()
    );
    let ids_seen = ids_seen.into_inner().expect("ids");
    assert!(
        ids_seen.iter().all(|seen| *seen == served),
        "no rotation while terminating: the Secret held {ids_seen:?}, first {served} (Ready showed {id})"
    );
    let expired = wait_reason(&keys, "held", "False", "KeyExpired").await;
    assert!(
        expired
            .status
            .as_ref()
            .and_then(|s| s.id.as_deref())
            .is_none_or(|now| now == served),
        "no new key id in status: {:?}",
        expired.status
    );
    wait_event(&client, &namespace, "held", "KeyRevoked").await;
    assert!(
        secrets.get_opt("held").await.expect("get").is_none(),
        "no key is minted again while terminating"
    );
    drop_finalizers(&keys, "held").await;
}

// ---------------------------------------------------------------------------
// Revocation does not depend on markers a tenant can erase

async fn revocation_survives(prefix: &str, erase: Value, erased: impl Fn(&Secret) -> bool) {
    let (client, namespace) = setup(prefix).await;
    bound_key(&client, &namespace, &[]).await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let tampered = merge_patch(&secrets, "robot-key", erase.clone()).await;
    assert!(erased(&tampered), "the patch {erase} erased the marker");
    Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
        .delete("robot", &DeleteParams::default())
        .await
        .expect("delete ServiceAccount");
    assert_revoked(&client, &namespace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_survives_erased_managed_fields() {
    revocation_survives(
        "erase-fields",
        json!({"metadata": {"managedFields": [{}]}}),
        |s| s.metadata.managed_fields.as_ref().is_none_or(Vec::is_empty),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_survives_an_erased_managed_by_label() {
    revocation_survives(
        "erase-label",
        json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}}),
        |s| !s.labels().contains_key("app.kubernetes.io/managed-by"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_survives_an_erased_owner_annotation() {
    revocation_survives(
        "erase-owner",
        json!({"metadata": {"annotations": {"keymint.dev/owner": null}}}),
        |s| !s.annotations().contains_key("keymint.dev/owner"),
    )
    .await;
}

// ---------------------------------------------------------------------------
// Text log

/// A line tracing-subscriber's text format writes: RFC 3339 time with a
/// fraction, then the level.
fn is_event_line(line: &str) -> bool {
    static LINE: OnceLock<regex::Regex> = OnceLock::new();
    LINE.get_or_init(|| {
        regex::Regex::new(
            r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+Z +(TRACE|DEBUG|INFO|WARN|ERROR) ",
        )
        .expect("regex")
    })
    .is_match(line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_strings_with_newlines_never_forge_a_text_log_line() {
    let (client, namespace) = setup("textlog").await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let labelled = |name: &str, owner: String| Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "keymint".to_string(),
                )]
                .into(),
            ),
            annotations: Some([("keymint.dev/owner".to_string(), owner)].into()),
            ..Default::default()
        },
        string_data: Some([("password".to_string(), "not-a-key".to_string())].into()),
        ..Default::default()
    };
    // A foreign Secret an APIKey claims; another whose owner annotation names
    // a resource (that does not exist) with a newline in its name.
    for secret in [
        labelled("foreign", format!("x\n{FORGED}")),
        labelled(
            "pointer",
            format!("APIKey/{namespace}/ghost\n{FORGED}-owner"),
        ),
    ] {
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("create Secret");
    }
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    apply(
        &keys,
        &api_key(
            "claimant",
            json!({"permissions": ["read"], "secretName": "foreign"}),
        ),
    )
    .await
    .expect("apply");
    wait_reason(&keys, "claimant", "False", "SecretConflict").await;
    // The Warning Event is published after the operator logged the conflict.
    wait_event(&client, &namespace, "claimant", "SecretConflict").await;

    // A rotate request with a newline.
    apply(
        &keys,
        &api_key("requester", json!({"permissions": ["read"]})),
    )
    .await
    .expect("apply");
    wait_ready(&keys, "requester").await;
    merge_patch(
        &keys,
        "requester",
        json!({"metadata": {"annotations": {"keymint.dev/rotate-request": format!("now\n{FORGED}-request")}}}),
    )
    .await;
    wait_for(&keys, "requester", "the requested rotation", |k| {
        k.status.as_ref().and_then(|s| s.rotations) == Some(1)
    })
    .await;
    wait_event(&client, &namespace, "requester", "KeyRotated").await;
    // Touch the pointer Secret so its owner annotation is read once more.
    merge_patch(
        &secrets,
        "pointer",
        json!({"metadata": {"labels": {"touched": "yes"}}}),
    )
    .await;
    // The claimant is looked at again on its own Secret's change too.
    merge_patch(
        &secrets,
        "foreign",
        json!({"metadata": {"labels": {"touched": "yes"}}}),
    )
    .await;
    // A key created after both edits, Ready: the operator has most likely
    // handled them too (extra coverage; the checks above are the barriers).
    apply(&keys, &api_key("marker", json!({"permissions": ["read"]})))
        .await
        .expect("apply");
    wait_ready(&keys, "marker").await;

    let log = operator().log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.len() > 10 && lines.iter().any(|l| l.contains(" INFO ")),
        "the operator logged in text format: {} lines",
        lines.len()
    );
    let forged: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|line| !is_event_line(line) || line.starts_with("2026-01-01T00:00:00Z"))
        .collect();
    assert!(
        forged.is_empty(),
        "every text log line is a real event line; these are not: {:?}",
        forged.iter().take(10).collect::<Vec<_>>()
    );
    println!("text log: {} lines, each a real event line", lines.len());
}
