//! Secrets hygiene: every path that handles a key runs once with the operator
//! at `--log-level trace` (every crate, kube's client and the HTTP stack
//! included); every key that ever existed is recorded from a watch; then the
//! operator's log, all Events (core/v1 and events.k8s.io), every key resource
//! (status and conditions included) and the operator's /metrics are scanned
//! for each key in every form it could be written in: raw, JSON-escaped, and
//! base64 at each of the three alignments. One APIKey's own Secret is given a
//! `managedFields` entry that k8s-openapi cannot parse (year 9999): it must
//! still rotate, and the log must never hold a response body. Failures are
//! collected and reported together. Its own test binary (own control plane).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use keymint::api::{ApiKey, RootKey, ServiceAccountKey};
use keymint_test_support::*;
use kube::Resource;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

/// A Secret as the key recorder reads it: its data, and its metadata without
/// `managedFields`, which k8s-openapi cannot parse once a tenant poisons them.
#[derive(Clone, Debug, Deserialize)]
struct LeanSecret {
    #[serde(deserialize_with = "metadata_without_managed_fields")]
    metadata: ObjectMeta,
    #[serde(default)]
    data: Option<BTreeMap<String, ByteString>>,
}

fn metadata_without_managed_fields<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<ObjectMeta, D::Error> {
    let mut metadata = Value::deserialize(deserializer)?;
    if let Some(fields) = metadata.as_object_mut() {
        fields.remove("managedFields");
    }
    serde_json::from_value(metadata).map_err(serde::de::Error::custom)
}

impl Resource for LeanSecret {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Secret".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "secrets".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl LeanSecret {
    fn value(&self, field: &str) -> Option<Vec<u8>> {
        self.data.as_ref()?.get(field).map(|v| v.0.clone())
    }
}

/// Needles shorter than this could match by chance.
const MIN_NEEDLE: usize = 12;

/// Standard base64 with padding, as Kubernetes writes `data` (k8s-openapi's
/// encoder, so the test shares no code with what it checks in keymint).
fn base64(bytes: &[u8]) -> String {
    match serde_json::to_value(ByteString(bytes.to_vec())) {
        Ok(Value::String(encoded)) => encoded,
        other => panic!("ByteString serialises to a string: {other:?}"),
    }
}

/// `text` as it appears inside a JSON string (without the quotes).
fn json_escaped(text: &str) -> String {
    let quoted = serde_json::to_string(text).expect("a string serialises");
    quoted[1..quoted.len() - 1].to_string()
}

/// Every text form `secret` could take in a log line, an Event, a status or a
/// metric: raw; JSON-escaped once, and twice (JSON text inside a JSON log
/// line); base64, standard and URL-safe, at each of the three alignments it
/// can have inside a longer blob. For base64 only the characters that depend
/// on `secret`'s bytes alone are kept: character i holds bits 6i..6i+6 of the
/// blob, and the secret's bits are 8p..8(p+n) after p bytes of prefix.
fn needles(secret: &[u8]) -> BTreeSet<String> {
    let mut forms = BTreeSet::new();
    if let Ok(text) = std::str::from_utf8(secret) {
        let once = json_escaped(text);
        forms.insert(json_escaped(&once));
        forms.insert(once);
        forms.insert(text.to_string());
    }
    for prefix in 0..3usize {
        let mut blob = vec![0u8; prefix];
        blob.extend_from_slice(secret);
        let encoded = base64(&blob);
        let start = (8 * prefix).div_ceil(6);
        let end = 8 * (prefix + secret.len()) / 6;
        if end > start {
            let own = &encoded[start..end];
            forms.insert(own.replace('+', "-").replace('/', "_"));
            forms.insert(own.to_string());
        }
    }
    forms.retain(|form| form.len() >= MIN_NEEDLE);
    forms
}

#[test]
fn needles_find_a_secret_at_any_offset_of_a_longer_blob() {
    assert_eq!(base64(b"hello"), "aGVsbG8=");
    assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
    let secret = b"ak_Q2hlY2tzdW0tZnJlZS1yYW5kb20tYm9keS1mb3ItdGVzdHM";
    let other = b"ak_AnotherKeyThatIsNotTheSecretAtAll000000000000000";
    let forms = needles(secret);
    assert!(forms.len() >= 4, "raw and three alignments: {forms:?}");
    for offset in 0..6 {
        for suffix in 0..3 {
            let mut blob = vec![0xa5u8; offset];
            blob.extend_from_slice(secret);
            blob.extend(std::iter::repeat_n(0x5au8, suffix));
            let standard = base64(&blob);
            let url_safe = standard.replace('+', "-").replace('/', "_");
            for encoded in [&standard, &url_safe] {
                assert!(
                    forms.iter().any(|form| encoded.contains(form.as_str())),
                    "offset {offset}, suffix {suffix}: {encoded}"
                );
                assert!(
                    !needles(other)
                        .iter()
                        .any(|form| encoded.contains(form.as_str())),
                    "another key is not found in {encoded}"
                );
            }
        }
    }
    // JSON-escaped, also inside a JSON log line's message.
    let quoted = "pa\"ss\\word\nwith-some-length";
    let line = json!({"fields": {"message": format!("body {}", json!({"k": quoted}))}}).to_string();
    assert!(
        needles(quoted.as_bytes())
            .iter()
            .any(|f| line.contains(f.as_str())),
        "{line}"
    );
    // A binary secret (the record key) is found in base64 too.
    let binary: Vec<u8> = (0u8..32).map(|b| b.wrapping_mul(37)).collect();
    let blob = base64(&[b"x".as_slice(), &binary].concat());
    assert!(
        needles(&binary).iter().any(|f| blob.contains(f.as_str())),
        "{blob}"
    );
}

/// Text that only an object's JSON body (a response body) would put in the
/// log; each is also looked for JSON-escaped, as inside a JSON log line.
const BODY_MARKERS: &[&str] = &[
    r#""kind":"Secret""#,
    r#""apiVersion":"v1""#,
    r#""data":{"#,
    r#""metadata":{"#,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_appears_in_logs_events_status_or_metrics() {
    let plane = cluster();
    let client = plane.client().await.expect("client");
    let namespace = plane
        .namespace(&client, "hygiene")
        .await
        .expect("namespace");
    let mut failures: Vec<String> = Vec::new();

    // Every key value any managed Secret ever held, cluster-wide.
    let keys_seen: Arc<Mutex<BTreeSet<Vec<u8>>>> = Arc::default();
    let watch = {
        let keys_seen = keys_seen.clone();
        let stream = watcher(
            Api::<LeanSecret>::all(client.clone()),
            watcher::Config::default().labels("app.kubernetes.io/managed-by=keymint"),
        )
        .default_backoff()
        .applied_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            // An error (the watch restarting) must not end the recording.
            while let Some(event) = stream.next().await {
                let Ok(secret) = event else { continue };
                for field in ["key", "previous-key"] {
                    if let Some(value) = secret.value(field) {
                        keys_seen.lock().expect("keys").insert(value);
                    }
                }
            }
        })
    };
    // Trace for every crate: whatever keymint caps, it caps itself.
    let operator = Operator::start(
        "hygiene",
        &plane.operator_kubeconfig_path(),
        &["--leader-elect=false", "--log-level", "trace"],
        &[],
    );

    // Mint, scheduled rotation with a grace period, manual rotation.
    let api_keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    apply(&api_keys, &manifest("APIKey", "rotating", json!({"permissions": ["read"], "validFor": "4s", "renewBefore": "1s", "gracePeriod": "2s"}))).await.expect("apply");
    wait_for(&api_keys, "rotating", "two rotations", |k| {
        k.status.as_ref().and_then(|s| s.rotations).unwrap_or(0) >= 2
    })
    .await;
    apply(
        &api_keys,
        &manifest("APIKey", "manual", json!({"permissions": ["read"]})),
    )
    .await
    .expect("apply");
    wait_ready(&api_keys, "manual").await;
    apply(
        &api_keys,
        &manifest(
            "APIKey",
            json!({"name": "manual", "annotations": {"keymint.dev/rotate-request": "now"}}),
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
        .insert(tampered_key.as_bytes().to_vec());

    // Conflict with another application's Secret (its value must not leak either).
    let foreign_value = "foreign-application-password-value-0001";
    secrets
        .create(
            &PostParams::default(),
            &opaque_secret("foreign", &[("password", foreign_value)]),
        )
        .await
        .expect("foreign secret");
    keys_seen
        .lock()
        .expect("keys")
        .insert(foreign_value.as_bytes().to_vec());
    apply(
        &api_keys,
        &manifest(
            "APIKey",
            "conflicted",
            json!({"permissions": ["read"], "secretName": "foreign"}),
        ),
    )
    .await
    .expect("apply");
    wait_reason(&api_keys, "conflicted", "False", "SecretConflict").await;

    // A ServiceAccountKey issued and revoked; a RootKey.
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &namespace);
    accounts
        .create(&PostParams::default(), &service_account("robot"))
        .await
        .expect("account");
    let account_keys = Api::<ServiceAccountKey>::namespaced(client.clone(), &namespace);
    apply(
        &account_keys,
        &manifest(
            "ServiceAccountKey",
            "robot-key",
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
        &manifest("RootKey", "hygiene-root", json!({"validFor": "24h"})),
    )
    .await
    .expect("apply");
    wait_ready(&root_keys, "hygiene-root").await;

    // A key in a key ring: listed, rotated (previous key listed), then marked
    // compromised (revoked in the ring, a Warning Event).
    let rings = Api::<keymint::api::KeyRing>::namespaced(client.clone(), &namespace);
    apply(
        &rings,
        &serde_json::from_value(json!({
            "apiVersion": "keymint.dev/v1alpha1", "kind": "KeyRing",
            "metadata": {"name": "hygiene-ring"}, "spec": {"allowedNamespaces": {"from": "Same"}}
        }))
        .expect("a KeyRing"),
    )
    .await
    .expect("apply");
    let ringed = |annotations: serde_json::Value| {
        manifest(
            "APIKey",
            json!({"name": "ringed", "annotations": annotations}),
            json!({"permissions": ["read"], "gracePeriod": "1h", "keyRings": [{"name": "hygiene-ring"}]}),
        )
    };
    apply(&api_keys, &ringed(json!({}))).await.expect("apply");
    wait_ready(&api_keys, "ringed").await;
    apply(
        &api_keys,
        &ringed(json!({"keymint.dev/rotate-request": "ring-1"})),
    )
    .await
    .expect("apply");
    wait_for(&api_keys, "ringed", "the rotation", |k| {
        k.status.as_ref().and_then(|s| s.rotations) == Some(1)
    })
    .await;
    apply(
        &api_keys,
        &ringed(
            json!({"keymint.dev/rotate-request": "ring-1", "keymint.dev/compromised": "INC-1"}),
        ),
    )
    .await
    .expect("apply");
    wait_event(&client, &namespace, "ringed", "KeyCompromised").await;
    let ring_document = eventually("the leaked key revoked in the ring", WAIT, || async {
        let secret = raw_get(&client, &secret_path(&namespace, "hygiene-ring"))
            .await?
            .ok_or("no ring Secret")?;
        let document = raw_data(&secret, "keyring.json").ok_or("no document")?;
        let text = String::from_utf8_lossy(&document).into_owned();
        if text.contains("\"revoked\"") {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await;

    // A tenant poisons its own Secret's managedFields with a time k8s-openapi
    // cannot parse (past jiff's range); the key must still rotate.
    apply(
        &api_keys,
        &manifest("APIKey", "poisoned", json!({"permissions": ["read"]})),
    )
    .await
    .expect("apply");
    wait_ready(&api_keys, "poisoned").await;
    let path = secret_path(&namespace, "poisoned");
    let poisoned = poison(&client, &path, "mallory").await;
    assert!(
        secrets.get("poisoned").await.is_err(),
        "typed clients cannot read the poisoned Secret (else the case tests nothing)"
    );
    let poisoned_key = raw_data(&poisoned, "key").expect("the poisoned Secret's key");
    apply(
        &api_keys,
        &manifest("APIKey", json!({"name": "poisoned", "annotations": {"keymint.dev/rotate-request": "after-poisoning"}}),
            json!({"permissions": ["read"]}),
        ),
    )
    .await
    .expect("apply");
    let rotated = within(
        "the APIKey whose own Secret has poisoned managedFields to rotate",
        WAIT,
        || async {
            let key = api_keys.get("poisoned").await.map_err(|e| e.to_string())?;
            let status = key.status.clone().unwrap_or_default();
            let current = status.observed_generation == key.metadata.generation;
            let ready = ready_of(&key);
            if !(current
                && status.rotations == Some(1)
                && ready.as_ref().is_some_and(|(s, _)| s == "True"))
            {
                return Err(format!("rotations {:?}, Ready {ready:?}", status.rotations));
            }
            let secret = raw_get(&client, &path).await?.ok_or("no Secret")?;
            let key_now = raw_data(&secret, "key").ok_or("no key in the Secret")?;
            if key_now == poisoned_key {
                return Err("status says rotated, the Secret holds the old key".into());
            }
            if status.key_sha256.as_deref()
                != Some(keymint::keys::sha256_hex(&String::from_utf8_lossy(&key_now)).as_str())
            {
                return Err("status.keySHA256 does not match the Secret's new key".into());
            }
            Ok(())
        },
    )
    .await;
    if let Err(failure) = rotated {
        failures.push(failure);
    }

    // The operator's record key signs what it writes: it must not leak either.
    let record_key = raw_get(
        &client,
        &secret_path(OPERATOR_NAMESPACE, "keymint-record-key"),
    )
    .await
    .expect("read the record key Secret");
    if let Some(value) = record_key.and_then(|secret| raw_data(&secret, "hmac-sha256")) {
        keys_seen.lock().expect("keys").insert(value);
    }

    // Every key the watch should have seen is in: the Secrets' current values.
    let managed = Api::<LeanSecret>::all(client.clone());
    eventually(
        "the watch to have recorded every current key",
        WAIT,
        || async {
            let current: BTreeSet<Vec<u8>> = managed
                .list(
                    &kube::api::ListParams::default()
                        .labels("app.kubernetes.io/managed-by=keymint"),
                )
                .await
                .map_err(|e| e.to_string())?
                .items
                .iter()
                .filter_map(|s| s.value("key"))
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
    assert!(keys.len() >= 9, "the workload minted keys: {}", keys.len());

    // Scan everything the operator produced, as raw JSON where it is an object.
    let log = operator.log();
    assert!(
        log.contains(r#""level":"DEBUG""#),
        "the operator logged below info (it runs at trace)"
    );
    let mut places: Vec<(String, String)> = vec![
        ("operator log".into(), log.clone()),
        ("key ring document".into(), ring_document.clone()),
    ];
    let lists = [
        ("event", "/apis/events.k8s.io/v1/events".to_string()),
        ("core event", "/api/v1/events".to_string()),
        ("APIKey", ApiKey::url_path(&(), None)),
        ("ServiceAccountKey", ServiceAccountKey::url_path(&(), None)),
        ("RootKey", RootKey::url_path(&(), None)),
        ("KeyRing", keymint::api::KeyRing::url_path(&(), None)),
    ];
    for (kind, path) in &lists {
        let list = raw_get(&client, path)
            .await
            .expect("list")
            .unwrap_or_else(|| panic!("{path} exists"));
        for item in list["items"].as_array().into_iter().flatten() {
            let name = format!(
                "{kind} {}/{} ({})",
                item["metadata"]["namespace"].as_str().unwrap_or(""),
                item["metadata"]["name"].as_str().unwrap_or(""),
                item["reason"].as_str().unwrap_or("status and conditions"),
            );
            places.push((name, item.to_string()));
        }
    }
    match operator.metrics() {
        Ok(metrics) if metrics.contains("keymint_") => places.push(("/metrics".into(), metrics)),
        other => failures.push(format!("no /metrics to scan: {other:?}")),
    }

    for key in &keys {
        let mut forms = needles(key);
        // The random part alone would identify a key too.
        if let Some(body) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.split_once('_'))
            .map(|(_, body)| body)
            .filter(|body| body.len() >= 16)
        {
            forms.extend(needles(body.as_bytes()));
        }
        assert!(!forms.is_empty(), "every key has a form to look for");
        for (place, content) in &places {
            if let Some(form) = forms.iter().find(|form| content.contains(form.as_str())) {
                let shown = form.get(..6).unwrap_or(form);
                failures.push(format!(
                    "{place} contains a key (a form starting {shown:?}…)"
                ));
            }
        }
    }
    for marker in BODY_MARKERS {
        for form in [marker.to_string(), json_escaped(marker)] {
            if log.contains(&form) {
                failures.push(format!("the operator log holds a response body: {form}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!(
        "hygiene: scanned {} places for {} keys, none found",
        places.len(),
        keys.len()
    );
}
