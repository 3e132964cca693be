//! Argo CD support (docs/argocd.md) on the control plane: the argocd-cm
//! snippet merges into an existing argocd-cm; the fixtures are what the API
//! server returns, and the health checks and the `rotate` action agree on the
//! live objects; the examples, synced the way Argo CD syncs them (server-side
//! apply as `argocd-controller`), show no drift once keymint has issued their
//! keys, and their Secrets never carry Argo CD's tracking metadata.
//! `tests/argocd_lua.rs` runs the scripts on the fixtures without a cluster.
//!
//! Regenerate the fixtures with `KEYMINT_UPDATE_ARGOCD_FIXTURES=1 cargo test
//! --test argocd fixtures` (from a fresh control plane).
//! Its own test binary, so its own control plane and operator.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use keymint::api::{ApiKey, RootKey, ServiceAccountKey};
use keymint_test_support::argocd::*;
use keymint_test_support::helm::repo;
use keymint_test_support::{
    OPERATOR_NAMESPACE, WAIT, cluster, create_if_absent, eventually, namespace, setup,
};
use kube::api::{
    Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams, ValidationDirective,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// Argo CD's field manager when it syncs with `ServerSideApply=true`.
const ARGOCD_MANAGER: &str = "argocd-controller";
/// keymint's field manager.
const KEYMINT_MANAGER: &str = "keymint";
const UPDATE_FIXTURES: &str = "KEYMINT_UPDATE_ARGOCD_FIXTURES";

#[tokio::test]
async fn argocd_cm_snippet_merges_into_an_existing_argocd_cm() {
    // What `kubectl patch --type merge --patch-file` does, against the real API
    // server: the keys are valid ConfigMap keys and existing settings stay.
    let client = cluster().client().await.expect("client");
    create_if_absent(&Api::<Namespace>::all(client.clone()), &namespace("argocd"))
        .await
        .expect("create namespace argocd");
    let configmaps = Api::<ConfigMap>::namespaced(client, "argocd");
    let existing: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "argocd-cm", "labels": {"app.kubernetes.io/part-of": "argocd"}},
        "data": {"url": "https://argocd.example.com", "resource.customizations.health.example.com_Thing": "hs = {}\nreturn hs\n"},
    }))
    .expect("configmap");
    configmaps
        .create(&PostParams::default(), &existing)
        .await
        .expect("create argocd-cm");
    let snippet: Value = serde_yaml::from_str(&read(&argocd_cm_path())).expect("snippet");
    let patched = configmaps
        .patch(
            "argocd-cm",
            &PatchParams::default(),
            &Patch::Merge(&snippet),
        )
        .await
        .expect("merge patch");
    let data = patched.data.expect("data");
    for (key, value) in existing.data.expect("data") {
        assert_eq!(data.get(&key), Some(&value), "{key} kept");
    }
    for (key, value) in snippet["data"].as_object().expect("data") {
        assert_eq!(
            data.get(key).map(|v| json!(v)),
            Some(value.clone()),
            "{key}"
        );
    }
}

// ---- the real control plane ----

fn api_resource(kind: &str) -> ApiResource {
    match kind {
        "APIKey" => ApiResource::erase::<ApiKey>(&()),
        "RootKey" => ApiResource::erase::<RootKey>(&()),
        "ServiceAccountKey" => ApiResource::erase::<ServiceAccountKey>(&()),
        "ServiceAccount" => ApiResource::erase::<ServiceAccount>(&()),
        "KeyRing" => ApiResource::erase::<keymint::api::KeyRing>(&()),
        other => panic!("no API for kind {other}"),
    }
}

/// The API for `manifest`'s kind (cluster-wide for RootKey).
fn api_for(client: &kube::Client, manifest: &Value) -> Api<DynamicObject> {
    let kind = manifest["kind"].as_str().expect("kind");
    let resource = api_resource(kind);
    match manifest
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
    {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

fn name_of(manifest: &Value) -> String {
    manifest["metadata"]["name"]
        .as_str()
        .expect("metadata.name")
        .to_string()
}

/// Server-side apply as Argo CD does with `ServerSideApply=true` (no force:
/// a field owned by another manager would be a conflict, not taken over).
fn argocd_apply(dry_run: bool) -> PatchParams {
    PatchParams {
        dry_run,
        force: false,
        field_manager: Some(ARGOCD_MANAGER.into()),
        field_validation: Some(ValidationDirective::Strict),
    }
}

async fn sync(client: &kube::Client, manifest: &Value) -> Value {
    let object = api_for(client, manifest)
        .patch(
            &name_of(manifest),
            &argocd_apply(false),
            &Patch::Apply(manifest),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {}: {e}", name_of(manifest)));
    serde_json::to_value(object).expect("json")
}

async fn get(client: &kube::Client, manifest: &Value) -> Value {
    let object = api_for(client, manifest)
        .get(&name_of(manifest))
        .await
        .unwrap_or_else(|e| panic!("get {}: {e}", name_of(manifest)));
    serde_json::to_value(object).expect("json")
}

fn is_current(object: &Value) -> bool {
    object.pointer("/status/observedGeneration").is_some()
        && object.pointer("/status/observedGeneration") == object.pointer("/metadata/generation")
}

/// Polls until the object's Ready condition has `status` (and `reason`, if
/// given) for the current generation.
async fn wait_ready_as(
    client: &kube::Client,
    manifest: &Value,
    status: &str,
    reason: Option<&str>,
) -> Value {
    let what = format!("{} to be Ready={status} {reason:?}", name_of(manifest));
    eventually(&what, WAIT, || async {
        let object = get(client, manifest).await;
        let matches = ready_condition(&object)
            .is_some_and(|c| c["status"] == status && reason.is_none_or(|r| c["reason"] == r));
        if is_current(&object) && matches {
            Ok(object)
        } else {
            Err(format!("{}", object["status"]))
        }
    })
    .await
}

fn without_managed_fields(mut object: Value) -> Value {
    if let Some(metadata) = object["metadata"].as_object_mut() {
        metadata.remove("managedFields");
    }
    object
}

fn key_manifest(kind: &str, name: &str, namespace: &str, spec: Value) -> Value {
    let mut metadata = json!({"name": name});
    if kind != "RootKey" {
        metadata["namespace"] = json!(namespace);
    }
    json!({"apiVersion": "keymint.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec})
}

/// The spec of a fixture object, and the spec edit for the `edited` state.
fn fixture_spec(kind: &str, state: State) -> Value {
    let secret_conflict = matches!(state, State::Blocked("secret-conflict", _));
    let mut spec = match kind {
        "APIKey" => json!({
            "permissions": ["reports:read"],
            "description": "read-only key for the reporting dashboard",
            "validFor": "2160h",
            "renewBefore": "360h",
        }),
        "ServiceAccountKey" => json!({
            "serviceAccountName": "ingest-robot",
            "validFor": "720h",
            "renewBefore": "72h",
        }),
        "RootKey" => json!({"expiresAt": "2030-01-01T00:00:00Z"}),
        other => panic!("{other}"),
    };
    if secret_conflict {
        spec["secretName"] = json!(format!("not-keymints-{}", kind.to_lowercase()));
    }
    match state {
        State::Blocked("service-account-not-found", _) => {
            spec["serviceAccountName"] = json!("missing-robot");
        }
        State::Blocked("namespace-not-allowed", _) => {
            spec["secretNamespace"] = json!("team-a");
        }
        _ => {}
    }
    spec
}

fn edit(kind: &str, spec: &mut Value) {
    match kind {
        "APIKey" => spec["validFor"] = json!("720h"),
        "ServiceAccountKey" => spec["validFor"] = json!("1440h"),
        "RootKey" => spec["expiresAt"] = json!("2031-01-01T00:00:00Z"),
        other => panic!("{other}"),
    }
}

/// Creates a Secret keymint does not own, for the SecretConflict states.
async fn foreign_secret(client: &kube::Client, namespace: &str, name: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "someone-else"}},
        "stringData": {"token": "not a keymint key"},
    }))
    .expect("secret");
    create_if_absent(
        &Api::<Secret>::namespaced(client.clone(), namespace),
        &secret,
    )
    .await
    .unwrap_or_else(|error| panic!("create secret {namespace}/{name}: {error}"));
}

/// Brings one key resource into `state` on the real control plane and returns
/// the object as the API server returned it.
async fn capture(client: &kube::Client, namespace: &str, kind: &str, state: State) -> Value {
    // Names by short name and state: one Secret name per object.
    let short = match kind {
        "APIKey" => "ak",
        "RootKey" => "rk",
        _ => "sak",
    };
    let name = format!("{short}-{}", state.name());
    let mut manifest = key_manifest(kind, &name, namespace, fixture_spec(kind, state));
    match state {
        // The API server's answer to the create: keymint has not seen it yet.
        State::NoStatus => sync(client, &manifest).await,
        State::Ready => {
            sync(client, &manifest).await;
            wait_ready_as(client, &manifest, "True", None).await
        }
        // The API server's answer to a spec edit of an issued key: generation
        // moved on, status is still the previous generation's.
        State::Edited => {
            sync(client, &manifest).await;
            wait_ready_as(client, &manifest, "True", None).await;
            edit(kind, &mut manifest["spec"]);
            sync(client, &manifest).await
        }
        State::Blocked(_, reason) => {
            sync(client, &manifest).await;
            wait_ready_as(client, &manifest, "False", Some(reason)).await
        }
    }
}

/// Quotes plain RFC 3339 values as kubectl prints them, so that no YAML 1.1
/// reader takes them for timestamps.
fn quote_timestamps(yaml: &str) -> String {
    let plain = regex::Regex::new(
        r"(?m)^(\s*(?:- )?[\w./-]+: )(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)$",
    )
    .expect("regex");
    plain.replace_all(yaml, "${1}'${2}'").into_owned()
}

/// Paths of every field (array items as `[]`): the shape of an object.
fn shape(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                shape(item, &format!("{prefix}.{key}"), out);
            }
        }
        Value::Array(items) => {
            for item in items {
                shape(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

fn shape_of(value: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    shape(value, "", &mut out);
    out
}

#[tokio::test]
async fn fixtures_are_what_the_control_plane_returns_and_the_checks_agree_live() {
    let (client, namespace) = setup("argocd-fixtures").await;
    let update = std::env::var_os(UPDATE_FIXTURES).is_some();
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &namespace);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "ingest-robot"}})).expect("account");
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("service account");
    for (kind, _) in KINDS {
        let secret_namespace = if kind == "RootKey" {
            OPERATOR_NAMESPACE
        } else {
            namespace.as_str()
        };
        let name = format!("not-keymints-{}", kind.to_lowercase());
        foreign_secret(&client, secret_namespace, &name).await;
    }

    let mut captures = Vec::new();
    let (client_ref, namespace_ref) = (&client, namespace.as_str());
    for (kind, states) in KINDS {
        for &state in states {
            captures.push(async move {
                let object = capture(client_ref, namespace_ref, kind, state).await;
                (kind, state, without_managed_fields(object))
            });
        }
    }
    let captured = futures::future::join_all(captures).await;

    let mut tables: BTreeMap<&str, HealthTable> = BTreeMap::new();
    for (kind, state, object) in captured {
        let what = format!("{kind}/{}", state.name());
        if let State::Blocked(_, reason) = state {
            assert_eq!(
                ready_condition(&object).map(|c| &c["reason"]),
                Some(&json!(reason)),
                "{what}"
            );
        }
        // The scripts on the live object, as Argo CD would see it now.
        let expected = expected_health(kind, state, &object);
        assert_eq!(health(kind, &object), expected, "{what} (live)");
        let after = rotate(kind, &object, None);
        assert_only_rotate_request_changed(&object, &after, &what);

        let path = fixtures_dir(kind).join(format!("{}.yaml", state.name()));
        if update {
            let text = format!(
                "# {kind} {}: returned by the API server of the local control plane, captured by\n\
                 # tests/argocd.rs ({UPDATE_FIXTURES}=1 cargo test --test argocd fixtures);\n\
                 # only metadata.managedFields removed.\n{}",
                state.name(),
                quote_timestamps(&serde_yaml::to_string(&object).expect("yaml"))
            );
            write(&path, &text);
            tables
                .entry(kind)
                .or_insert(HealthTable { tests: vec![] })
                .tests
                .push(HealthCase {
                    health_status: expected,
                    input_path: format!("{}.yaml", state.name()),
                });
        } else {
            // Values differ run to run (uids, times, key ids); the fields must not.
            let stored = load_yaml(&path);
            assert_eq!(
                shape_of(&stored),
                shape_of(&object),
                "{} no longer has the fields the API server returns: run `{UPDATE_FIXTURES}=1 cargo test --test argocd fixtures`",
                path.display()
            );
        }
    }
    for (kind, table) in tables {
        let text = format!(
            "# Expected Argo CD health of each fixture (Argo CD's health_test.yaml layout);\n\
             # written with the fixtures by tests/argocd.rs: the status follows from the\n\
             # state, the message from the object's Ready condition.\n{}",
            serde_yaml::to_string(&table).expect("yaml")
        );
        write(&fixtures_dir(kind).join("health_test.yaml"), &text);
    }
}

// ---- no drift when Argo CD syncs the examples ----

/// The key resources and the ServiceAccount in `examples/*.yaml` (the folder
/// itself only: `examples/argocd/` holds Argo CD Applications), moved to
/// `namespace`.
fn example_manifests(namespace: &str) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut manifests = Vec::new();
    for file in files {
        let text = read(&file);
        for document in serde_yaml::Deserializer::from_str(&text) {
            let mut manifest =
                Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if manifest.is_null() {
                continue;
            }
            let kind = manifest["kind"].as_str().unwrap_or_default();
            let ours = manifest["apiVersion"] == "keymint.dev/v1alpha1";
            if !ours && kind != "ServiceAccount" {
                continue;
            }
            if manifest.pointer("/metadata/namespace").is_some() {
                manifest["metadata"]["namespace"] = json!(namespace);
            }
            manifests.push(manifest);
        }
    }
    manifests
}

fn map_at<'a>(object: &'a Value, pointer: &str) -> BTreeMap<&'a str, &'a Value> {
    object
        .pointer(pointer)
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default()
}

/// Whether every field `part` sets has that value in `whole`.
fn is_subset(part: &Value, whole: &Value) -> bool {
    match (part, whole) {
        (Value::Object(part), Value::Object(whole)) => part
            .iter()
            .all(|(k, v)| whole.get(k).is_some_and(|w| is_subset(v, w))),
        _ => part == whole,
    }
}

/// A JSON merge patch from `old` to `new`, as Argo CD computes the patch for an action's result.
fn merge_diff(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in new {
                match old.get(key) {
                    Some(previous) => {
                        if let Some(change) = merge_diff(previous, value) {
                            patch.insert(key.clone(), change);
                        }
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        _ => (old != new).then(|| new.clone()),
    }
}

/// The managed fields entries of `manager`.
fn managed_by<'a>(object: &'a Value, manager: &str) -> Vec<&'a Value> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|entries| entries.iter().filter(|e| e["manager"] == manager).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn examples_synced_by_argo_cd_show_no_drift_and_their_secrets_carry_no_tracking() {
    let (client, namespace) = setup("argocd-sync").await;
    let mut manifests = example_manifests(&namespace);
    let keys: Vec<usize> = (0..manifests.len())
        .filter(|&i| manifests[i]["apiVersion"] == "keymint.dev/v1alpha1")
        .collect();
    for kind in ["APIKey", "RootKey", "ServiceAccountKey", "ServiceAccount"] {
        assert!(
            manifests.iter().any(|m| m["kind"] == kind),
            "examples/ has no {kind}"
        );
    }
    // Argo CD's tracking metadata on one key resource (label tracking and
    // annotation tracking): it must never reach the Secret.
    let tracked = manifests
        .iter_mut()
        .find(|m| m["kind"] == "APIKey" && m["metadata"]["name"] == "reports-reader")
        .expect("examples/apikey-basic.yaml");
    let labels = tracked["metadata"]
        .as_object_mut()
        .expect("metadata")
        .entry("labels")
        .or_insert_with(|| json!({}));
    labels["app.kubernetes.io/instance"] = json!("my-app");
    let annotations = tracked["metadata"]
        .as_object_mut()
        .expect("metadata")
        .entry("annotations")
        .or_insert_with(|| json!({}));
    annotations["argocd.argoproj.io/tracking-id"] = json!(format!(
        "my-app:keymint.dev/APIKey:{namespace}/reports-reader"
    ));

    // Sync: the ServiceAccount first (Argo CD orders it before custom
    // resources), then the key resources.
    for manifest in manifests.iter().filter(|m| m["kind"] == "ServiceAccount") {
        sync(&client, manifest).await;
    }
    for &i in &keys {
        sync(&client, &manifests[i]).await;
    }
    for &i in &keys {
        wait_ready_as(&client, &manifests[i], "True", None).await;
    }

    for &i in &keys {
        let manifest = &manifests[i];
        let what = format!("{} {}", manifest["kind"], name_of(manifest));
        let api = api_for(&client, manifest);
        let before = get(&client, manifest).await;

        // Argo CD's diff: a server-side dry-run apply of the manifest.
        let dry: Value = serde_json::to_value(
            api.patch(
                &name_of(manifest),
                &argocd_apply(true),
                &Patch::Apply(manifest),
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: dry-run apply: {e}")),
        )
        .expect("json");
        assert_eq!(dry["spec"], before["spec"], "{what}: spec");
        assert!(
            is_subset(&manifest["spec"], &dry["spec"]),
            "{what}: spec as applied"
        );
        for pointer in ["/metadata/labels", "/metadata/annotations"] {
            assert_eq!(
                map_at(&dry, pointer),
                map_at(manifest, pointer),
                "{what}: {pointer}"
            );
            assert_eq!(
                map_at(&before, pointer),
                map_at(manifest, pointer),
                "{what}: {pointer}"
            );
        }
        assert_eq!(
            dry["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
            "{what}: dry-run changed something"
        );

        // A real sync of the same manifest is a no-op.
        let after = sync(&client, manifest).await;
        assert_eq!(
            after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
            "{what}: re-apply wrote"
        );
        assert_eq!(
            after["metadata"]["generation"], before["metadata"]["generation"],
            "{what}"
        );

        // keymint's field manager owns status and nothing else.
        let keymint = managed_by(&after, KEYMINT_MANAGER);
        assert!(
            !keymint.is_empty(),
            "{what}: no keymint entry in managedFields"
        );
        for entry in keymint {
            assert_eq!(entry["subresource"], "status", "{what}: {entry}");
            let fields: Vec<&String> = entry["fieldsV1"]
                .as_object()
                .map(|f| f.keys().collect())
                .unwrap_or_default();
            assert_eq!(fields, vec!["f:status"], "{what}: {entry}");
        }
        for entry in managed_by(&after, ARGOCD_MANAGER) {
            assert!(
                entry["fieldsV1"].get("f:status").is_none(),
                "{what}: {entry}"
            );
        }

        // The Secret: owned through an owner reference (so Argo CD never
        // prunes it) unless Retain, and never tracked by Argo CD.
        let secret_name = after["status"]["secretName"].as_str().expect("secretName");
        let secret_namespace = after["status"]["secretNamespace"]
            .as_str()
            .or(after["metadata"]["namespace"].as_str())
            .expect("namespace");
        let secret = Api::<Secret>::namespaced(client.clone(), secret_namespace)
            .get(secret_name)
            .await
            .unwrap_or_else(|e| panic!("{what}: Secret {secret_namespace}/{secret_name}: {e}"));
        let labels = secret.metadata.labels.clone().unwrap_or_default();
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        assert!(
            !labels.contains_key("app.kubernetes.io/instance"),
            "{what}: {labels:?}"
        );
        for key in labels.keys().chain(annotations.keys()) {
            assert!(!key.starts_with("argocd.argoproj.io/"), "{what}: {key}");
        }
        let owners = secret.metadata.owner_references.clone().unwrap_or_default();
        if manifest["spec"]["deletionPolicy"] == "Retain" {
            assert!(owners.is_empty(), "{what}: {owners:?}");
        } else {
            assert_eq!(owners.len(), 1, "{what}: {owners:?}");
            assert_eq!(
                Some(owners[0].uid.as_str()),
                after["metadata"]["uid"].as_str()
            );
            assert_eq!(owners[0].controller, Some(true), "{what}");
        }
    }

    // A Retain Secret a user marked for Argo CD keeps the mark through a
    // rotation triggered by the rotate action, and a later sync keeps the
    // action's annotation (so it does not rotate again).
    let manifest = manifests
        .iter()
        .find(|m| m["kind"] == "APIKey" && m["spec"]["deletionPolicy"] == "Retain")
        .expect("examples/apikey-secret-template.yaml")
        .clone();
    let live = get(&client, &manifest).await;
    let secret_name = live["status"]["secretName"]
        .as_str()
        .expect("secretName")
        .to_string();
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let mark = json!({"metadata": {"annotations": {"argocd.argoproj.io/compare-options": "IgnoreExtraneous"}}});
    secrets
        .patch(
            &secret_name,
            &PatchParams {
                field_manager: Some("kubectl-annotate".into()),
                ..Default::default()
            },
            &Patch::Merge(&mark),
        )
        .await
        .expect("annotate the Secret");

    let acted = rotate("APIKey", &without_managed_fields(live.clone()), None);
    let patch = merge_diff(&without_managed_fields(live.clone()), &acted).expect("a change");
    let value = acted["metadata"]["annotations"][ROTATE_REQUEST].clone();
    assert_eq!(
        patch,
        json!({"metadata": {"annotations": {ROTATE_REQUEST: value}}})
    );
    api_for(&client, &manifest)
        .patch(
            &name_of(&manifest),
            &PatchParams {
                field_manager: Some("argocd-server".into()),
                ..Default::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .expect("run the rotate action");
    let rotations = live["status"]["rotations"].as_i64().unwrap_or(0);
    let rotated = eventually("the rotate action to rotate the key", WAIT, || async {
        let object = get(&client, &manifest).await;
        if object["status"]["lastRotateRequest"] == value
            && object["status"]["rotations"].as_i64() == Some(rotations + 1)
        {
            Ok(object)
        } else {
            Err(format!("{}", object["status"]))
        }
    })
    .await;
    assert_ne!(rotated["status"]["id"], live["status"]["id"], "a new key");
    let secret = secrets.get(&secret_name).await.expect("secret");
    let annotations = secret.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get("argocd.argoproj.io/compare-options")
            .map(String::as_str),
        Some("IgnoreExtraneous"),
        "the user's mark survives keymint's writes"
    );
    assert_eq!(
        annotations.get("keymint.dev/key-id").map(|v| json!(v)),
        Some(rotated["status"]["id"].clone())
    );
    let synced = sync(&client, &manifest).await;
    assert_eq!(synced["metadata"]["annotations"][ROTATE_REQUEST], value);
    assert_eq!(synced["spec"], live["spec"]);
}
