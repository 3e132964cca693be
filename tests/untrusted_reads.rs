//! Issue 10, on the real control plane: what a tenant can write into the
//! objects keymint reads. A poisoned `managedFields` time on any object
//! (Secret, ServiceAccount, each key kind) blocks no one, before and after an
//! operator restart; a forged record in a Secret (planted key and hash, future
//! `created-at`, forged key id, planted previous key) is never adopted; a
//! Secret prepared before its resource, a key of an earlier resource of the
//! same name, and a Secret two resources claim at once are never taken over; a
//! Secret in one namespace never makes keymint read another; a conflict
//! message never quotes the foreign Secret.
//!
//! Its own test binary: its own control plane and one operator (trace level
//! for every crate). The poisoning test restarts the operator and, while it
//! runs, holds [`RESTARTS`] exclusively; every other test holds it shared.
//! Poisoned objects are read and written as raw JSON: a typed client cannot
//! parse them (that is the attack).

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use http::Method;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use keymint::api::{ApiKey, RootKey, ServiceAccountKey};
use keymint::keys::{sha256_hex, try_mint_token};
use keymint_test_support::*;
use keymint_testenv::{AuditEvent, OPERATOR_USER};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::{Value, json};

/// The field manager of the poisoned `managedFields` entry: it appears only in
/// the poisoned objects, so finding it in the operator's log means a response
/// body was logged.
const MALLORY: &str = "mallory-untrusted-reads";
/// keymint's own field manager, which a tenant can use too.
const KEYMINT_MANAGER: &str = "keymint";
/// How long a state that must not change is watched.
const HOLD: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// The operator: one per binary, restartable.

static OPERATOR: Mutex<Option<Operator>> = Mutex::new(None);
/// Shared by every test; exclusive while the poisoning test runs (it restarts
/// the operator and poisons objects that would break today's operator for all).
static RESTARTS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn start_operator() -> Operator {
    Operator::start(
        "untrusted-reads",
        &cluster().operator_kubeconfig_path(),
        &["--leader-elect=false", "--log-level", "trace"],
        &[],
    )
}

fn ensure_operator() {
    let mut operator = OPERATOR.lock().unwrap_or_else(|p| p.into_inner());
    if operator.is_none() {
        *operator = Some(start_operator());
    }
}

/// The operator's whole log (every run: a restart appends).
fn log_text() -> String {
    std::fs::read_to_string(cluster().dir().join("untrusted-reads.log")).unwrap_or_default()
}

/// SIGTERM, wait for the exit, start again (same log file).
async fn restart_operator() {
    let old = OPERATOR.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(old) = old {
        old.stop().await;
    }
    *OPERATOR.lock().unwrap_or_else(|p| p.into_inner()) = Some(start_operator());
}

/// The operator running, the shared lock, an admin client and a fresh namespace.
async fn shared(
    prefix: &str,
) -> (
    tokio::sync::RwLockReadGuard<'static, ()>,
    kube::Client,
    String,
) {
    let guard = RESTARTS.read().await;
    ensure_operator();
    let plane = cluster();
    let client = plane.client().await.expect("client");
    let namespace = plane.namespace(&client, prefix).await.expect("namespace");
    (guard, client, namespace)
}

// ---------------------------------------------------------------------------
// Manifests and typed helpers.

async fn create_account(client: &kube::Client, namespace: &str, name: &str) {
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &service_account(name))
        .await
        .expect("create ServiceAccount");
}

fn now_plus(seconds: i64) -> String {
    let at = Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(seconds))
        .expect("time in range");
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

// ---------------------------------------------------------------------------
// Raw JSON access (poisoned objects cannot be read by typed clients).

/// What must not change on a Secret nobody may write: its data, metadata
/// values and version.
fn fingerprint(secret: &Value) -> Value {
    json!({
        "data": secret["data"], "type": secret["type"],
        "labels": secret["metadata"]["labels"], "annotations": secret["metadata"]["annotations"],
        "ownerReferences": secret["metadata"]["ownerReferences"],
        "resourceVersion": secret["metadata"]["resourceVersion"],
    })
}

/// A write the API server carried out: keymint's create-only apply of a
/// Secret it never issued a key to is refused (409) when one exists, which
/// changes nothing.
fn carried_out_write(event: &AuditEvent) -> bool {
    is_write(event) && code(event) != Some(409)
}

/// For a while, the Secret `target` keeps its `before` fingerprint and the
/// operator writes nothing to it.
async fn holds_untouched(
    what: &str,
    client: &kube::Client,
    namespace: &str,
    mark: usize,
    before: &Value,
) {
    holds_for(&format!("{what} untouched"), HOLD, || async move {
        let now = fingerprint(&secret_json(client, namespace, "target").await);
        let writes = operator_requests(
            mark,
            "secrets",
            namespace,
            Some("target"),
            carried_out_write,
        );
        if &now != before {
            Err(format!("changed: {now} (was {before})"))
        } else if !writes.is_empty() {
            Err(format!("operator writes: {writes:?}"))
        } else {
            Ok(())
        }
    })
    .await;
}

async fn secret_json(client: &kube::Client, namespace: &str, name: &str) -> Value {
    raw_get(client, &secret_path(namespace, name))
        .await
        .expect("read Secret")
        .unwrap_or_else(|| panic!("Secret {namespace}/{name} exists"))
}

// ---------------------------------------------------------------------------
// Audit log.

/// The operator's requests after `mark` about `resource` in `namespace`
/// (`name`: only that object) that `filter` keeps, as `verb uri (code)`.
fn operator_requests(
    mark: usize,
    resource: &str,
    namespace: &str,
    name: Option<&str>,
    filter: impl Fn(&AuditEvent) -> bool,
) -> Vec<String> {
    let requests = since(mark)
        .by(OPERATOR_USER)
        .resource(resource)
        .in_namespace(namespace);
    match name {
        Some(name) => requests.named(name),
        None => requests,
    }
    .only(filter)
    .lines_with_codes()
}

// ---------------------------------------------------------------------------
// Forged Secrets.

/// A Secret applied with keymint's own field manager, keymint's type and label,
/// and a complete record for `owner` around a well-formed key.
fn prepared_secret(name: &str, owner: &str, key: &str, id: &str) -> Secret {
    let now = now_plus(0);
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "keymint.dev/key",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "keymint"},
            "annotations": {
                "keymint.dev/owner": owner,
                "keymint.dev/owner-uid": "6f1c9a52-0d4e-4b8e-9a57-3d5c1e2f7a10",
                "keymint.dev/record-signature": "9".repeat(64),
                "keymint.dev/key-id": id,
                "keymint.dev/key-sha256": sha256_hex(key),
                "keymint.dev/created-at": now,
                "keymint.dev/updated-at": now,
                "keymint.dev/rotations": "0",
                "keymint.dev/permissions": "read",
            }
        },
        "data": {
            "key": ByteString(key.as_bytes().to_vec()),
            "id": ByteString(id.as_bytes().to_vec()),
        }
    }))
    .expect("secret manifest")
}

/// An APIKey Ready, its Secret as JSON, and its status.
async fn issued_api_key(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    spec: Value,
) -> (Api<ApiKey>, keymint::api::KeyStatus) {
    let keys = Api::<ApiKey>::namespaced(client.clone(), namespace);
    apply(&keys, &api_key(name, spec)).await.expect("apply");
    let status = wait_ready(&keys, name).await.status.expect("status");
    (keys, status)
}

/// Waits until the APIKey's Secret holds a key other than `not`, whose hash the
/// status reports, after a `KeyReplaced` Event; returns (key, status, Secret).
async fn wait_replaced(
    client: &kube::Client,
    keys: &Api<ApiKey>,
    namespace: &str,
    name: &str,
    not: &str,
) -> (String, keymint::api::KeyStatus, Value) {
    wait_event(client, namespace, name, "KeyReplaced").await;
    eventually(
        &format!("{name}: a fresh key in the Secret and in status"),
        WAIT,
        || async move {
            let key = keys.get(name).await.map_err(|e| e.to_string())?;
            let status = key.status.clone().unwrap_or_default();
            let secret = raw_get(client, &secret_path(namespace, name))
                .await?
                .ok_or("no Secret")?;
            let token = raw_text(&secret, "key").ok_or("no key")?;
            let ready = ready_of(&key).is_some_and(|(s, _)| s == "True");
            if token != not && status.key_sha256.as_deref() == Some(&sha256_hex(&token)) && ready {
                Ok((token, status, secret))
            } else {
                Err(format!("{:?}: {}", ready_of(&key), ready_message(&key)))
            }
        },
    )
    .await
}

// ---------------------------------------------------------------------------
// 1. Poisoned managedFields.

/// Everything the poisoning scenario set up.
struct Poisoned {
    tenant: String,
    other: String,
    root: String,
    /// The key SHA-256 of each resource whose key must not change, with the
    /// object's path, its Secret's path and the Events' namespace.
    kept: Vec<(String, String, String, String, String)>,
    lookalike_version: Value,
    keys_seen: Mutex<BTreeSet<String>>,
}

impl Poisoned {
    fn remember(&self, secret: &Value) {
        for field in ["key", "previous-key"] {
            if let Some(key) = raw_text(secret, field) {
                self.keys_seen.lock().expect("keys").insert(key);
            }
        }
    }

    fn poisoned_paths(&self) -> Vec<String> {
        let tenant = self.tenant.as_str();
        vec![
            secret_path(tenant, "own"),
            secret_path(tenant, "lookalike"),
            account_path(tenant, "bound"),
            account_path(tenant, "unrelated"),
            key_path("apikeys", Some(tenant), "poisoned-ak"),
            key_path("serviceaccountkeys", Some(tenant), "poisoned-sak"),
            key_path("rootkeys", None, &self.root),
        ]
    }
}

async fn set_up_poisoned(client: &kube::Client, tenant: &str, other: &str, root: &str) -> Poisoned {
    create_account(client, tenant, "bound").await;
    create_account(client, tenant, "unrelated").await;
    create_account(client, other, "robot").await;
    let api_keys = Api::<ApiKey>::namespaced(client.clone(), tenant);
    let account_keys = Api::<ServiceAccountKey>::namespaced(client.clone(), tenant);
    let root_keys = Api::<RootKey>::all(client.clone());
    let bystanders = Api::<ApiKey>::namespaced(client.clone(), other);
    for name in ["own", "poisoned-ak"] {
        apply(&api_keys, &api_key(name, read_only()))
            .await
            .expect("apply");
    }
    for name in ["bound-key", "poisoned-sak"] {
        let key: ServiceAccountKey = manifest(
            "ServiceAccountKey",
            name,
            json!({"serviceAccountName": "bound"}),
        );
        apply(&account_keys, &key).await.expect("apply");
    }
    let root_key: RootKey = manifest("RootKey", root, json!({}));
    apply(&root_keys, &root_key).await.expect("apply");
    for name in ["restore-before", "restore-after"] {
        apply(&bystanders, &api_key(name, read_only()))
            .await
            .expect("apply");
    }
    Api::<Secret>::namespaced(client.clone(), tenant)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "lookalike", "labels": {"app.kubernetes.io/managed-by": "keymint"}},
                "stringData": {"password": "lookalike-tenant-password-0001"}
            }))
            .expect("secret"),
        )
        .await
        .expect("lookalike Secret");

    let mut kept = Vec::new();
    for name in ["own", "poisoned-ak"] {
        let status = wait_ready(&api_keys, name).await.status.expect("status");
        kept.push((
            status.key_sha256.expect("hash"),
            key_path("apikeys", Some(tenant), name),
            secret_path(tenant, name),
            tenant.to_string(),
            name.to_string(),
        ));
    }
    for name in ["bound-key", "poisoned-sak"] {
        let status = wait_ready(&account_keys, name)
            .await
            .status
            .expect("status");
        kept.push((
            status.key_sha256.expect("hash"),
            key_path("serviceaccountkeys", Some(tenant), name),
            secret_path(tenant, name),
            tenant.to_string(),
            name.to_string(),
        ));
    }
    let status = wait_ready(&root_keys, root).await.status.expect("status");
    kept.push((
        status.key_sha256.expect("hash"),
        key_path("rootkeys", None, root),
        secret_path(OPERATOR_NAMESPACE, root),
        "default".to_string(),
        root.to_string(),
    ));
    for name in ["restore-before", "restore-after"] {
        wait_ready(&bystanders, name).await;
    }
    // "own" rotates below: only the others must keep their key.
    kept.remove(0);
    let scenario = Poisoned {
        tenant: tenant.to_string(),
        other: other.to_string(),
        root: root.to_string(),
        kept,
        lookalike_version: Value::Null,
        keys_seen: Mutex::default(),
    };
    for path in scenario.poisoned_paths() {
        poison(client, &path, MALLORY).await;
    }
    let lookalike = secret_json(client, tenant, "lookalike").await;
    Poisoned {
        lookalike_version: fingerprint(&lookalike),
        ..scenario
    }
}

/// The RootKey another tenant (a cluster admin) creates in `phase`.
fn bystander_root(s: &Poisoned, phase: &str) -> String {
    format!("{}-root-{phase}", s.other)
}

/// Another tenant keeps working: a new key of each kind is Ready.
async fn bystander_mints(client: &kube::Client, s: &Poisoned, phase: &str) -> Result<(), String> {
    let other = s.other.as_str();
    let fresh = format!("fresh-{phase}");
    let root = bystander_root(s, phase);
    apply(
        &Api::<ApiKey>::namespaced(client.clone(), other),
        &api_key(&fresh, read_only()),
    )
    .await
    .map_err(|e| e.to_string())?;
    let account_key: ServiceAccountKey = manifest(
        "ServiceAccountKey",
        &fresh,
        json!({"serviceAccountName": "robot", "secretName": format!("{fresh}-sak")}),
    );
    apply(
        &Api::<ServiceAccountKey>::namespaced(client.clone(), other),
        &account_key,
    )
    .await
    .map_err(|e| e.to_string())?;
    let root_key: RootKey = manifest("RootKey", &root, json!({}));
    apply(&Api::<RootKey>::all(client.clone()), &root_key)
        .await
        .map_err(|e| e.to_string())?;
    let mut failures = Vec::new();
    for (kind, path) in [
        ("APIKey", key_path("apikeys", Some(other), &fresh)),
        (
            "ServiceAccountKey",
            key_path("serviceaccountkeys", Some(other), &fresh),
        ),
        ("RootKey", key_path("rootkeys", None, &root)),
    ] {
        let path = path.as_str();
        let ready = within(
            &format!("{phase}: a new {kind} ({path}) Ready"),
            WAIT,
            || async move {
                let object = raw_get(client, path).await?.ok_or("gone")?;
                match raw_ready(&object) {
                    Some((status, _)) if status == "True" => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        failures.extend(ready.err());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Another tenant keeps working: a deleted Secret is restored (KeyRestored).
async fn bystander_restores(
    client: &kube::Client,
    s: &Poisoned,
    phase: &str,
) -> Result<(), String> {
    let other = s.other.as_str();
    let keys = Api::<ApiKey>::namespaced(client.clone(), other);
    let keys = &keys;
    let restored = format!("restore-{phase}");
    let restored = restored.as_str();
    let before = keys
        .get(restored)
        .await
        .map_err(|e| e.to_string())?
        .status
        .and_then(|st| st.key_sha256);
    let before = &before;
    Api::<Secret>::namespaced(client.clone(), other)
        .delete(restored, &DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    within(
        &format!("{phase}: deleted Secret {other}/{restored} restored (KeyRestored)"),
        WAIT,
        || async move {
            let events = events_for(client, other, restored).await;
            if !events
                .iter()
                .any(|e| e.reason.as_deref() == Some("KeyRestored"))
            {
                return Err("no KeyRestored Event".into());
            }
            let secret = raw_get(client, &secret_path(other, restored))
                .await?
                .ok_or("no Secret")?;
            s.remember(&secret);
            let token = raw_text(&secret, "key").ok_or("no key")?;
            let status = keys
                .get(restored)
                .await
                .map_err(|e| e.to_string())?
                .status
                .and_then(|st| st.key_sha256);
            if status.as_deref() == Some(&sha256_hex(&token)) && status.as_ref() != before.as_ref()
            {
                Ok(())
            } else {
                Err("status does not report the restored key".into())
            }
        },
    )
    .await
}

/// The APIKey whose own Secret is poisoned keeps its key and still rotates on request.
async fn own_rotates(client: &kube::Client, s: &Poisoned, phase: &str) -> Result<(), String> {
    let tenant = s.tenant.as_str();
    let keys = Api::<ApiKey>::namespaced(client.clone(), tenant);
    let before = keys
        .get("own")
        .await
        .map_err(|e| e.to_string())?
        .status
        .unwrap_or_default();
    let secret = raw_get(client, &secret_path(tenant, "own"))
        .await?
        .ok_or("own Secret gone")?;
    s.remember(&secret);
    let token = raw_text(&secret, "key").ok_or("own Secret lost its key")?;
    if before.key_sha256.as_deref() != Some(&sha256_hex(&token)) {
        return Err(format!(
            "{phase}: the poisoned own Secret's key is not the one status reports"
        ));
    }
    let request = json!({"metadata": {"annotations": {"keymint.dev/rotate-request": phase}}});
    keys.patch("own", &PatchParams::default(), &Patch::Merge(&request))
        .await
        .map_err(|e| e.to_string())?;
    let keys = &keys;
    let before = &before;
    within(
        &format!("{phase}: APIKey own (poisoned Secret) rotated on request"),
        WAIT,
        || async move {
            let key = keys.get("own").await.map_err(|e| e.to_string())?;
            let status = key.status.clone().unwrap_or_default();
            let secret = raw_get(client, &secret_path(tenant, "own"))
                .await?
                .ok_or("own Secret gone")?;
            s.remember(&secret);
            let token = raw_text(&secret, "key").ok_or("no key")?;
            let rotated = status.last_rotate_request.as_deref() == Some(phase)
                && status.rotations == Some(before.rotations.unwrap_or(0) + 1)
                && status.key_sha256.as_deref() == Some(&sha256_hex(&token))
                && status.key_sha256 != before.key_sha256
                && raw_annotation(&secret, "keymint.dev/key-id") == status.id;
            if rotated {
                Ok(())
            } else {
                Err(format!(
                    "rotations {:?}, last request {:?}, {:?}: {}",
                    status.rotations,
                    status.last_rotate_request,
                    ready_of(&key),
                    ready_message(&key)
                ))
            }
        },
    )
    .await
}

/// A poisoned key resource (or one bound to a poisoned ServiceAccount) keeps
/// its key, and is at worst Ready=False with a Warning Event of that reason.
async fn contained(
    client: &kube::Client,
    s: &Poisoned,
    phase: &str,
    kept: &(String, String, String, String, String),
) -> Result<(), String> {
    let (sha, object_path, secret_path, events_namespace, name) = kept;
    let secret = raw_get(client, secret_path)
        .await?
        .ok_or_else(|| format!("{phase}: {name}: its Secret was deleted"))?;
    s.remember(&secret);
    let token = raw_text(&secret, "key").unwrap_or_default();
    if &sha256_hex(&token) != sha {
        return Err(format!("{phase}: {name}: its key changed"));
    }
    let object = raw_get(client, object_path)
        .await?
        .ok_or_else(|| format!("{phase}: {name} gone"))?;
    match raw_ready(&object) {
        Some((status, reason)) if status == "False" => {
            if reason == "ServiceAccountNotFound" || reason == "KeyExpired" {
                return Err(format!("{phase}: {name}: Ready=False/{reason}"));
            }
            let reason = reason.as_str();
            within(
                &format!("{phase}: {name}: a Warning Event {reason}"),
                WAIT,
                || async move {
                    let events = events_for(client, events_namespace, name).await;
                    if events.iter().any(|e| {
                        e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning")
                    }) {
                        Ok(())
                    } else {
                        Err("none".to_string())
                    }
                },
            )
            .await
        }
        _ => Ok(()),
    }
}

async fn check_phase(client: &kube::Client, s: &Poisoned, phase: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for path in s.poisoned_paths() {
        poison(client, &path, MALLORY).await;
    }
    let (mints, restores, rotates) = tokio::join!(
        bystander_mints(client, s, phase),
        bystander_restores(client, s, phase),
        own_rotates(client, s, phase),
    );
    failures.extend(
        [mints, restores, rotates]
            .into_iter()
            .filter_map(Result::err),
    );
    for kept in &s.kept {
        if let Err(e) = contained(client, s, phase, kept).await {
            failures.push(e);
        }
    }
    let lookalike = secret_json(client, &s.tenant, "lookalike").await;
    if fingerprint(&lookalike) != s.lookalike_version {
        failures.push(format!("{phase}: the lookalike Secret changed"));
    }
    failures
}

/// Every spelling of `key` the log scan looks for: raw, and base64 at the
/// three alignments (the part of the encoding that depends on the key alone).
fn encodings(key: &str) -> Vec<String> {
    let mut forms = vec![key.to_string()];
    for shift in 0..3usize {
        let mut bytes = vec![b'x'; shift];
        bytes.extend_from_slice(key.as_bytes());
        let encoded = serde_json::to_value(ByteString(bytes))
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let start = if shift == 0 { 0 } else { 4 };
        let end = encoded.len().saturating_sub(4);
        if end > start + 16 {
            forms.push(encoded[start..end].to_string());
        }
    }
    forms
}

async fn poisoned_scenario(client: &kube::Client, tenant: &str, other: &str, root: &str) {
    let mark = audit_mark();
    let s = set_up_poisoned(client, tenant, other, root).await;
    let mut failures = check_phase(client, &s, "before").await;
    restart_operator().await;
    failures.extend(check_phase(client, &s, "after").await);

    // Nothing keymint does not own was written.
    let lookalike_writes = operator_requests(mark, "secrets", tenant, Some("lookalike"), is_write);
    if !lookalike_writes.is_empty() {
        failures.push(format!(
            "operator writes to the lookalike Secret: {lookalike_writes:?}"
        ));
    }
    let account_writes = operator_requests(mark, "serviceaccounts", tenant, None, is_write);
    if !account_writes.is_empty() {
        failures.push(format!(
            "operator writes to ServiceAccounts: {account_writes:?}"
        ));
    }

    // The log: no key in any encoding, no response body.
    for namespace in [tenant, other] {
        if let Ok(Some(list)) =
            raw_get(client, &format!("/api/v1/namespaces/{namespace}/secrets")).await
        {
            for secret in list["items"].as_array().into_iter().flatten() {
                s.remember(secret);
            }
        }
    }
    if let Ok(Some(secret)) = raw_get(client, &secret_path(OPERATOR_NAMESPACE, root)).await {
        s.remember(&secret);
    }
    let log = log_text();
    assert!(
        log.contains("TRACE"),
        "the operator logged at trace level ({} bytes of log)",
        log.len()
    );
    // The scan finds a key where a body would show it: in a Secret's JSON.
    let sample = secret_json(client, tenant, "own").await;
    let sample_key = raw_text(&sample, "key").expect("sample key");
    let sample_text = serde_json::to_string(&sample).expect("json");
    assert!(
        encodings(&sample_key)
            .iter()
            .any(|form| form != &sample_key && sample_text.contains(form.as_str())),
        "the scan recognises a key in base64"
    );
    let unescaped = log.replace('\\', "");
    let keys = s.keys_seen.lock().expect("keys").clone();
    let mut leaked = 0;
    for key in &keys {
        if encodings(key)
            .iter()
            .any(|form| log.contains(form.as_str()))
        {
            leaked += 1;
        }
    }
    if leaked > 0 {
        failures.push(format!(
            "{leaked} of {} keys appear in the operator's log",
            keys.len()
        ));
    }
    for marker in [MALLORY, "\"managedFields\"", "\"kind\":\"SecretList\""] {
        let count = unescaped.matches(marker).count();
        if count > 0 {
            failures.push(format!(
                "a response body in the operator's log: {marker} appears {count} times"
            ));
        }
    }
    if keys.len() < 6 {
        failures.push(format!("only {} keys to scan the log for", keys.len()));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_managed_fields_block_no_one_before_or_after_a_restart() {
    let exclusive = RESTARTS.write().await;
    ensure_operator();
    let plane = cluster();
    let client = plane.client().await.expect("client");
    let tenant = plane
        .namespace(&client, "poisoned")
        .await
        .expect("namespace");
    let other = plane
        .namespace(&client, "bystander")
        .await
        .expect("namespace");
    let root = format!("{tenant}-root");
    let outcome = AssertUnwindSafe(poisoned_scenario(&client, &tenant, &other, &root))
        .catch_unwind()
        .await;

    // Remove every poisoned object, so that the tests after this one are not
    // judged on a cluster this one poisoned.
    for name in [
        root.clone(),
        format!("{other}-root-before"),
        format!("{other}-root-after"),
    ] {
        let _ = raw_request(
            &client,
            Method::DELETE,
            &key_path("rootkeys", None, &name),
            None,
        )
        .await;
    }
    let namespaces = Api::<Namespace>::all(client.clone());
    for namespace in [&tenant, &other] {
        let _ = namespaces.delete(namespace, &DeleteParams::default()).await;
    }
    let client = &client;
    let namespaces = &namespaces;
    let (tenant, other, root) = (&tenant, &other, &root);
    let cleaned = within("the poisoned objects to be gone", WAIT, || async move {
        let root_gone = raw_get(client, &key_path("rootkeys", None, root))
            .await?
            .is_none();
        let tenant_gone = namespaces
            .get_opt(tenant)
            .await
            .map_err(|e| e.to_string())?
            .is_none();
        let other_gone = namespaces
            .get_opt(other)
            .await
            .map_err(|e| e.to_string())?
            .is_none();
        if root_gone && tenant_gone && other_gone {
            Ok(())
        } else {
            Err(format!(
                "RootKey gone {root_gone}, {tenant} gone {tenant_gone}, {other} gone {other_gone}"
            ))
        }
    })
    .await;
    if let Err(error) = cleaned {
        eprintln!("clean-up: {error}");
    }
    drop(exclusive);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

// ---------------------------------------------------------------------------
// 2. Forged records on a Secret keymint issued.

#[tokio::test]
async fn a_planted_token_with_a_matching_hash_is_replaced_not_adopted() {
    let (_shared, client, namespace) = shared("planted").await;
    let (keys, issued) = issued_api_key(&client, &namespace, "target", read_only()).await;
    let planted = try_mint_token("ak", 256)
        .expect("OS randomness")
        .expose()
        .to_string();
    let forgery = json!({
        "metadata": {"annotations": {"keymint.dev/key-sha256": sha256_hex(&planted)}},
        "data": {"key": ByteString(planted.as_bytes().to_vec())}
    });
    raw_merge(&client, &secret_path(&namespace, "target"), &forgery).await;

    let (key, status, _) = wait_replaced(&client, &keys, &namespace, "target", &planted).await;
    assert_ne!(status.id, issued.id, "a fresh key, with a fresh id");
    assert_ne!(
        status.key_sha256.as_deref(),
        Some(sha256_hex(&planted).as_str())
    );
    let (keys, namespace, client, key) = (&keys, namespace.as_str(), &client, &key);
    holds_for("the planted key stays out", HOLD, || async move {
        let secret = secret_json(client, namespace, "target").await;
        let now = keys.get("target").await.map_err(|e| e.to_string())?;
        let sha = now.status.and_then(|s| s.key_sha256);
        if raw_text(&secret, "key").as_deref() == Some(key.as_str())
            && sha.as_deref() == Some(&sha256_hex(key))
        {
            Ok(())
        } else {
            Err("the key or its status hash changed".into())
        }
    })
    .await;
}

#[tokio::test]
async fn a_created_at_in_the_future_does_not_postpone_the_rotation() {
    let (_shared, client, namespace) = shared("future").await;
    let (keys, _) = issued_api_key(
        &client,
        &namespace,
        "target",
        json!({"permissions": ["read"], "validFor": "6s"}),
    )
    .await;
    let forged_created_at = now_plus(365 * 24 * 3600);
    let forgery =
        json!({"metadata": {"annotations": {"keymint.dev/created-at": forged_created_at}}});
    let forged = raw_merge(&client, &secret_path(&namespace, "target"), &forgery).await;
    let forged_id = raw_annotation(&forged, "keymint.dev/key-id").expect("key id");
    let forged_expiry = raw_annotation(&forged, "keymint.dev/expires-at").expect("expiry");
    let forged_at = Timestamp::now();

    // The key it held then is rotated by its real schedule (at most 6 s), or
    // replaced at once: either way a new id within a few seconds.
    let keys = &keys;
    let forged_id = forged_id.as_str();
    let status = eventually(
        "a new key within its real lifetime of 6 s",
        Duration::from_secs(20),
        || async move {
            let key = keys.get("target").await.map_err(|e| e.to_string())?;
            let status = key.status.clone().unwrap_or_default();
            if status.id.as_deref().is_some_and(|id| id != forged_id) {
                Ok(status)
            } else {
                Err(format!(
                    "still {:?}, expires {:?}",
                    status.id, status.expires_at
                ))
            }
        },
    )
    .await;
    let elapsed = forged_at.duration_until(Timestamp::now());
    assert!(
        elapsed < jiff::SignedDuration::from_secs(15),
        "the forged key lived {elapsed:?} after the forgery (expiry was {forged_expiry})"
    );
    let horizon = Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(10))
        .expect("time");
    for (field, time) in [
        ("createdAt", status.created_at.as_ref()),
        ("expiresAt", status.expires_at.as_ref()),
    ] {
        let time = time.unwrap_or_else(|| panic!("status.{field} set")).0;
        assert!(time <= horizon, "status.{field} {time} is not forged");
    }
    let secret = secret_json(&client, &namespace, "target").await;
    assert_ne!(
        raw_annotation(&secret, "keymint.dev/created-at"),
        Some(forged_created_at),
        "the forged created-at is not kept"
    );
}

#[tokio::test]
async fn a_forged_key_id_and_rotation_count_never_reach_status() {
    const FORGED_ID: &str = "FORGED0KEY0ID0001";
    let (_shared, client, namespace) = shared("forged-id").await;
    let (keys, issued) = issued_api_key(&client, &namespace, "target", read_only()).await;
    let secret = secret_json(&client, &namespace, "target").await;
    let original_key = raw_text(&secret, "key").expect("key");
    let forgery = json!({
        "metadata": {"annotations": {"keymint.dev/key-id": FORGED_ID, "keymint.dev/rotations": "1000"}},
        "data": {"id": ByteString(FORGED_ID.as_bytes().to_vec())}
    });
    raw_merge(&client, &secret_path(&namespace, "target"), &forgery).await;

    // Every status seen from now on: never the forged id or count.
    let seen_forged = Mutex::new(Vec::new());
    let (keys_ref, seen, client_ref, ns) = (&keys, &seen_forged, &client, namespace.as_str());
    let issued_id = issued.id.clone();
    let issued_id = issued_id.as_deref();
    let check = || async move {
        let key = keys_ref.get("target").await.map_err(|e| e.to_string())?;
        let status = key.status.clone().unwrap_or_default();
        if status.id.as_deref() == Some(FORGED_ID) || status.rotations == Some(1000) {
            seen.lock()
                .expect("seen")
                .push(format!("{:?} rotations {:?}", status.id, status.rotations));
        }
        Ok::<_, String>(status)
    };
    let replaced = eventually("KeyReplaced and a fresh key id", WAIT, || async move {
        let status = check().await?;
        let events = events_for(client_ref, ns, "target").await;
        let replaced_event = events
            .iter()
            .any(|e| e.reason.as_deref() == Some("KeyReplaced"));
        let fresh = status
            .id
            .as_deref()
            .is_some_and(|id| id != FORGED_ID && Some(id) != issued_id);
        if replaced_event && fresh {
            Ok(status)
        } else {
            Err(format!(
                "KeyReplaced {replaced_event}, id {:?}, rotations {:?}",
                status.id, status.rotations
            ))
        }
    })
    .await;
    holds_for("status free of the forged record", HOLD, || async move {
        check().await.map(drop)
    })
    .await;
    let forged_seen = seen_forged.lock().expect("seen").clone();
    assert!(
        forged_seen.is_empty(),
        "forged record in status: {forged_seen:?}"
    );
    assert_eq!(
        replaced.rotations, issued.rotations,
        "the rotation count continues from status"
    );
    let secret = secret_json(&client, &namespace, "target").await;
    let key = raw_text(&secret, "key").expect("key");
    assert_ne!(key, original_key, "a new key was minted");
    assert_eq!(replaced.key_sha256, Some(sha256_hex(&key)));
    assert_eq!(raw_annotation(&secret, "keymint.dev/key-id"), replaced.id);
    assert_eq!(raw_text(&secret, "id"), replaced.id);
    for event in events_for(&client, &namespace, "target").await {
        let text = serde_json::to_string(&event).expect("json");
        assert!(
            !text.contains(FORGED_ID),
            "Event {:?} names the forged id",
            event.reason
        );
    }
}

#[tokio::test]
async fn a_planted_previous_key_with_a_far_expiry_is_dropped() {
    const PLANTED_ID: &str = "PLANTED0PREV0001";
    let (_shared, client, namespace) = shared("previous").await;
    let (keys, issued) = issued_api_key(&client, &namespace, "target", read_only()).await;
    let planted = try_mint_token("ak", 256)
        .expect("OS randomness")
        .expose()
        .to_string();
    let forgery = json!({
        "metadata": {"annotations": {
            "keymint.dev/previous-id": PLANTED_ID,
            "keymint.dev/previous-expires-at": "2999-01-01T00:00:00Z",
        }},
        "data": {
            "previous-key": ByteString(planted.as_bytes().to_vec()),
            "previous-id": ByteString(PLANTED_ID.as_bytes().to_vec()),
        }
    });
    let forged = raw_merge(&client, &secret_path(&namespace, "target"), &forgery).await;
    let original = raw_text(&forged, "key").expect("key");

    let (key, status, _) = wait_replaced(&client, &keys, &namespace, "target", &original).await;
    assert_ne!(status.id, issued.id);
    let (keys, namespace, client, key) = (&keys, namespace.as_str(), &client, &key);
    let check = || async move {
        let secret = secret_json(client, namespace, "target").await;
        let status = keys
            .get("target")
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        let mut found = Vec::new();
        if raw_text(&secret, "previous-key").is_some() {
            found.push("data.previous-key".to_string());
        }
        if let Some(until) = raw_annotation(&secret, "keymint.dev/previous-expires-at") {
            found.push(format!("previous-expires-at {until}"));
        }
        if status.previous_id.is_some() || status.previous_expires_at.is_some() {
            found.push(format!(
                "status previous {:?} until {:?}",
                status.previous_id, status.previous_expires_at
            ));
        }
        if raw_text(&secret, "key").as_deref() != Some(key.as_str()) {
            found.push("the key changed again".into());
        }
        if found.is_empty() {
            Ok(())
        } else {
            Err(format!("{found:?} (gracePeriod is 0s)"))
        }
    };
    eventually("the planted previous key dropped", WAIT, check).await;
    holds_for("no previous key past a 0s grace period", HOLD, check).await;
}

// ---------------------------------------------------------------------------
// 3. A Secret prepared before its resource exists.

#[tokio::test]
async fn a_secret_prepared_before_its_resource_is_never_adopted_or_written() {
    const FORGED_ID: &str = "PREPARED0KEY0001";
    let (_shared, client, namespace) = shared("prepared").await;
    let planted = try_mint_token("ak", 256)
        .expect("OS randomness")
        .expose()
        .to_string();
    let owner = format!("APIKey/{namespace}/target");
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    secrets
        .patch(
            "target",
            &PatchParams::apply(KEYMINT_MANAGER).force(),
            &Patch::Apply(&prepared_secret("target", &owner, &planted, FORGED_ID)),
        )
        .await
        .expect("prepare the Secret as keymint's field manager");
    let before = fingerprint(&secret_json(&client, &namespace, "target").await);
    let mark = audit_mark();

    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    apply(&keys, &api_key("target", read_only()))
        .await
        .expect("apply");
    let conflicted = wait_reason(&keys, "target", "False", "SecretConflict").await;
    let event = wait_event(&client, &namespace, "target", "SecretConflict").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let status = conflicted.status.expect("status");
    assert_ne!(status.id.as_deref(), Some(FORGED_ID));
    assert_ne!(
        status.key_sha256.as_deref(),
        Some(sha256_hex(&planted).as_str())
    );
    holds_untouched("the prepared Secret", &client, &namespace, mark, &before).await;
}

// ---------------------------------------------------------------------------
// 4. Identity.

/// Deletes the APIKey (with `params`), waits until it is gone and its Secret
/// has no owner reference left, re-creates it under the same name and checks
/// that the Secret is never adopted.
async fn recreated_does_not_adopt(
    client: &kube::Client,
    namespace: &str,
    spec: Value,
    params: DeleteParams,
) {
    let (keys, _) = issued_api_key(client, namespace, "target", spec.clone()).await;
    keys.delete("target", &params).await.expect("delete");
    wait_gone(&keys, "target", "the APIKey to be gone").await;
    let old = eventually(
        "the Secret kept, with no owner reference",
        WAIT,
        || async move {
            let secret = raw_get(client, &secret_path(namespace, "target"))
                .await?
                .ok_or("the Secret was deleted")?;
            if secret["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(|r| r.is_empty())
            {
                Ok(secret)
            } else {
                Err(format!("{}", secret["metadata"]["ownerReferences"]))
            }
        },
    )
    .await;
    let before = fingerprint(&old);
    let mark = audit_mark();

    apply(&keys, &api_key("target", spec))
        .await
        .expect("re-create");
    let conflicted = wait_reason(&keys, "target", "False", "SecretConflict").await;
    let message = ready_message(&conflicted);
    assert!(
        message.to_lowercase().contains("delete"),
        "the message says to delete the Secret to get a new key: {message}"
    );
    let event = wait_event(client, namespace, "target", "SecretConflict").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let status = conflicted.status.expect("status");
    let old_key = raw_text(&old, "key").expect("old key");
    assert_ne!(
        status.key_sha256.as_deref(),
        Some(sha256_hex(&old_key).as_str()),
        "the old key is not reported as the new resource's"
    );
    holds_untouched(
        "the earlier resource's Secret",
        client,
        namespace,
        mark,
        &before,
    )
    .await;
}

#[tokio::test]
async fn a_retained_secret_is_not_adopted_by_a_recreated_resource() {
    let (_shared, client, namespace) = shared("retained").await;
    recreated_does_not_adopt(
        &client,
        &namespace,
        json!({"permissions": ["read"], "deletionPolicy": "Retain"}),
        DeleteParams::default(),
    )
    .await;
}

#[tokio::test]
async fn an_orphaned_secret_is_not_adopted_by_a_recreated_resource() {
    let (_shared, client, namespace) = shared("orphaned").await;
    recreated_does_not_adopt(
        &client,
        &namespace,
        read_only(),
        DeleteParams {
            propagation_policy: Some(PropagationPolicy::Orphan),
            ..Default::default()
        },
    )
    .await;
}

/// Reads one claimant's Ready, typed by kind.
async fn claimant_state(
    client: &kube::Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Result<(Option<(String, String)>, keymint::api::KeyStatus), String> {
    macro_rules! read {
        ($kind:ty) => {{
            let object = Api::<$kind>::namespaced(client.clone(), namespace)
                .get(name)
                .await
                .map_err(|e| e.to_string())?;
            let current = object.status.as_ref().and_then(|s| s.observed_generation)
                == object.metadata.generation;
            let ready = ready_of(&object).filter(|_| current);
            Ok((ready, object.status.unwrap_or_default()))
        }};
    }
    if kind == "APIKey" {
        read!(ApiKey)
    } else {
        read!(ServiceAccountKey)
    }
}

/// Contested Secrets per test: more pairs, more chances to catch a race.
const CONTESTS: usize = 6;

/// Claimant `i` of pair `pair`: (kind, name). The first is always an APIKey.
fn claimant(pair: usize, second_kind: &'static str, i: usize) -> (&'static str, String) {
    match i {
        0 => ("APIKey", format!("first-{pair}")),
        _ => (second_kind, format!("second-{pair}")),
    }
}

/// The pair's outcome once settled: which claimant won (0 or 1) and the key
/// the Secret holds, which must be the one the winner's status reports.
async fn settled(
    client: &kube::Client,
    namespace: &str,
    second_kind: &'static str,
    pair: usize,
) -> Result<(usize, String), String> {
    let mut states = Vec::new();
    for i in 0..2 {
        let (kind, name) = claimant(pair, second_kind, i);
        states.push(claimant_state(client, namespace, kind, &name).await?);
    }
    let is = |i: usize, status: &str, reason: &str| {
        states[i].0 == Some((status.to_string(), reason.to_string()))
    };
    let issued = |i| is(i, "True", "KeyIssued");
    let conflict = |i| is(i, "False", "SecretConflict");
    let winner = match (issued(0) && conflict(1), issued(1) && conflict(0)) {
        (true, false) => 0,
        (false, true) => 1,
        _ => {
            return Err(format!(
                "pair {pair}: first {:?}, second {:?}",
                states[0].0, states[1].0
            ));
        }
    };
    let sha = states[winner].1.key_sha256.clone().ok_or("no hash")?;
    let secret = raw_get(client, &secret_path(namespace, &format!("shared-{pair}")))
        .await?
        .ok_or("no Secret")?;
    let token = raw_text(&secret, "key").ok_or("no key")?;
    if sha256_hex(&token) != sha {
        return Err(format!(
            "pair {pair}: the Secret does not hold the winner's ({}) key",
            claimant(pair, second_kind, winner).1
        ));
    }
    Ok((winner, token))
}

/// Pairs of resources created at once, each pair claiming Secret `shared-N`:
/// in each pair exactly one ends Ready, the other SecretConflict; the Secret
/// holds the winner's key throughout, written once by the operator.
async fn one_owner_of_a_contested_secret(
    client: &kube::Client,
    namespace: &str,
    second_kind: &'static str,
) {
    let mark = audit_mark();
    let api_keys = Api::<ApiKey>::namespaced(client.clone(), namespace);
    let account_keys = Api::<ServiceAccountKey>::namespaced(client.clone(), namespace);
    let mut creates = Vec::new();
    for pair in 0..CONTESTS {
        let secret_name = format!("shared-{pair}");
        for i in 0..2 {
            let (kind, name) = claimant(pair, second_kind, i);
            if kind == "APIKey" {
                let key = api_key(
                    &name,
                    json!({"permissions": ["read"], "secretName": secret_name}),
                );
                let api = api_keys.clone();
                creates.push(async move { apply(&api, &key).await.map(drop) }.boxed());
            } else {
                let key: ServiceAccountKey = manifest(
                    "ServiceAccountKey",
                    &name,
                    json!({"serviceAccountName": "robot", "secretName": secret_name}),
                );
                let api = account_keys.clone();
                creates.push(async move { apply(&api, &key).await.map(drop) }.boxed());
            }
        }
    }
    for created in futures::future::join_all(creates).await {
        created.expect("apply");
    }
    let mut outcomes = Vec::new();
    for pair in 0..CONTESTS {
        outcomes.push(
            eventually(
                &format!("pair {pair}: exactly one Ready=True owner, the other SecretConflict"),
                WAIT,
                || settled(client, namespace, second_kind, pair),
            )
            .await,
        );
    }
    let outcomes = &outcomes;
    holds_for("one owner per Secret, its key in it", HOLD, || async move {
        for (pair, outcome) in outcomes.iter().enumerate() {
            if &settled(client, namespace, second_kind, pair).await? != outcome {
                return Err(format!("pair {pair}: the owner or the key changed"));
            }
        }
        Ok(())
    })
    .await;
    for (pair, (winner, _)) in outcomes.iter().enumerate() {
        let secret_name = format!("shared-{pair}");
        let writes = operator_requests(mark, "secrets", namespace, Some(&secret_name), |e| {
            is_write(e) && succeeded(e)
        });
        assert_eq!(
            writes.len(),
            1,
            "pair {pair}: one write of the contested Secret: {writes:?}"
        );
        let secret = secret_json(client, namespace, &secret_name).await;
        let (kind, name) = claimant(pair, second_kind, *winner);
        assert_eq!(
            raw_annotation(&secret, "keymint.dev/owner"),
            Some(format!("{kind}/{namespace}/{name}"))
        );
    }
}

#[tokio::test]
async fn an_api_key_and_a_service_account_key_claiming_one_secret_end_with_one_owner() {
    let (_shared, client, namespace) = shared("contested-kinds").await;
    create_account(&client, &namespace, "robot").await;
    one_owner_of_a_contested_secret(&client, &namespace, "ServiceAccountKey").await;
}

#[tokio::test]
async fn two_api_keys_claiming_one_secret_end_with_one_owner() {
    let (_shared, client, namespace) = shared("contested").await;
    one_owner_of_a_contested_secret(&client, &namespace, "APIKey").await;
}

// ---------------------------------------------------------------------------
// 5. A Secret in namespace A naming a resource in namespace B.

#[tokio::test]
async fn a_secret_in_one_namespace_never_makes_keymint_read_another() {
    let (_shared, client, namespace_a) = shared("lure").await;
    let namespace_b = cluster()
        .namespace(&client, "lured")
        .await
        .expect("namespace");
    let (keys_b, _) = issued_api_key(&client, &namespace_b, "x", read_only()).await;
    let (_, _) = issued_api_key(&client, &namespace_a, "sentinel", read_only()).await;
    let before = keys_b.get("x").await.expect("x");
    let mark = audit_mark();

    let secrets_a = Api::<Secret>::namespaced(client.clone(), &namespace_a);
    secrets_a
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {
                    "name": "lure",
                    "labels": {"app.kubernetes.io/managed-by": "keymint"},
                    "annotations": {"keymint.dev/owner": format!("APIKey/{namespace_b}/x")}
                },
                "stringData": {"note": "points at another namespace"}
            }))
            .expect("secret"),
        )
        .await
        .expect("lure");
    for i in 0..10 {
        let touch = json!({"metadata": {"annotations": {"touch": i.to_string()}}});
        secrets_a
            .patch("lure", &PatchParams::default(), &Patch::Merge(&touch))
            .await
            .expect("patch lure");
    }
    // The operator has seen the lure's events: a later event in the same watch
    // (a deleted Secret in A) is handled.
    secrets_a
        .delete("sentinel", &DeleteParams::default())
        .await
        .expect("delete sentinel Secret");
    wait_event(&client, &namespace_a, "sentinel", "KeyRestored").await;

    let (namespace_b, keys_b, before) = (namespace_b.as_str(), &keys_b, &before);
    holds_for("no operator request in B", HOLD, || async move {
        let requests = since(mark)
            .by(OPERATOR_USER)
            .in_namespace(namespace_b)
            .lines();
        if !requests.is_empty() {
            return Err(format!("operator requests in {namespace_b}: {requests:?}"));
        }
        let now = keys_b.get("x").await.map_err(|e| e.to_string())?;
        if now.resource_version() != before.resource_version() || now.status != before.status {
            return Err("B's APIKey was reconciled (status or version changed)".into());
        }
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------
// 6. Conflict messages.

#[tokio::test]
async fn a_conflict_message_never_quotes_the_foreign_secret() {
    let (_shared, client, namespace) = shared("quote").await;
    let owner = format!("APIKey/{namespace}/claimant\nFORGED-LINE secret-ish-VALUE-123");
    let annotations = json!({
        "keymint.dev/owner": owner,
        "keymint.dev/key-id": "QUOTEDVALUE456",
        "example.com/contact": "annotation-VALUE-789-contact",
        "example.com/url": "https://internal.example.com/VALUE-321",
    });
    let labels = json!({"app.kubernetes.io/managed-by": "keymint", "team": "labelVALUE654"});
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "foreign", "labels": labels, "annotations": annotations},
                "stringData": {"password": "foreign-password-VALUE-987"}
            }))
            .expect("secret"),
        )
        .await
        .expect("foreign Secret");
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
    let conflicted = wait_reason(&keys, "claimant", "False", "SecretConflict").await;
    wait_event(&client, &namespace, "claimant", "SecretConflict").await;

    let mut values: Vec<String> = vec![
        "VALUE-123".into(),
        "FORGED-LINE".into(),
        "foreign-password-VALUE-987".into(),
    ];
    for map in [&annotations, &labels] {
        for (key, value) in map.as_object().expect("map") {
            if key != "app.kubernetes.io/managed-by" {
                values.push(value.as_str().expect("string").to_string());
            }
        }
    }
    let mut places = vec![(
        "status".to_string(),
        serde_json::to_string(&conflicted.status).expect("json"),
    )];
    for event in events_for(&client, &namespace, "claimant").await {
        places.push((
            format!("Event {:?}", event.reason),
            serde_json::to_string(&event).expect("json"),
        ));
    }
    let mut quoted = Vec::new();
    for (place, text) in &places {
        // JSON escapes the newline: look for the value as JSON writes it too.
        for value in &values {
            let escaped = serde_json::to_string(value).expect("json");
            if text.contains(value.as_str()) || text.contains(escaped.trim_matches('"')) {
                quoted.push(format!("{place} quotes {value:?}"));
            }
        }
    }
    assert!(quoted.is_empty(), "{quoted:#?}");
}
