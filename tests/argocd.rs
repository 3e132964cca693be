//! Argo CD support (docs/argocd.md), tested three ways:
//!
//! - the Lua health checks and the `rotate` action in `argocd/keymint.dev/`
//!   run in a real Lua interpreter, sandboxed as Argo CD sandboxes custom
//!   scripts (base, table, package and an `os` with only `time` and `date`),
//!   on fixtures captured from the real control plane (`argocd/fixtures/`);
//! - `argocd/argocd-cm-keymint.yaml` is generated from the `.lua` files and
//!   fails here when it is out of date;
//! - the examples, synced the way Argo CD syncs them (server-side apply as
//!   `argocd-controller`), show no drift once keymint has issued their keys,
//!   and their Secrets never carry Argo CD's tracking metadata.
//!
//! Regenerate with `KEYMINT_UPDATE_ARGOCD_CM=1 cargo test --test argocd argocd_cm_snippet_is`
//! (the argocd-cm snippet) and `KEYMINT_UPDATE_ARGOCD_FIXTURES=1 cargo test
//! --test argocd fixtures` (the fixtures, from a fresh control plane).
//! Its own test binary, so its own control plane and operator.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use keymint::api::{ApiKey, RootKey, ServiceAccountKey};
use keymint_test_support::{
    OPERATOR_NAMESPACE, WAIT, cluster, create_if_absent, eventually, namespace, setup,
};
use kube::api::{
    Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams, ValidationDirective,
};
use mlua::{Lua, LuaOptions, StdLib, Value as LuaValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Argo CD's field manager when it syncs with `ServerSideApply=true`.
const ARGOCD_MANAGER: &str = "argocd-controller";
/// keymint's field manager.
const KEYMINT_MANAGER: &str = "keymint";
const ROTATE_REQUEST: &str = "keymint.dev/rotate-request";
const GROUP: &str = "keymint.dev";
const UPDATE_CM: &str = "KEYMINT_UPDATE_ARGOCD_CM";
const UPDATE_FIXTURES: &str = "KEYMINT_UPDATE_ARGOCD_FIXTURES";

/// The kinds, and the states each has a fixture for.
const KINDS: [(&str, &[State]); 3] = [
    (
        "APIKey",
        &[
            State::Ready,
            State::Edited,
            State::NoStatus,
            State::Blocked("secret-conflict", "SecretConflict"),
        ],
    ),
    (
        "RootKey",
        &[
            State::Ready,
            State::Edited,
            State::NoStatus,
            State::Blocked("secret-conflict", "SecretConflict"),
            State::Blocked("namespace-not-allowed", "NamespaceNotAllowed"),
        ],
    ),
    (
        "ServiceAccountKey",
        &[
            State::Ready,
            State::Edited,
            State::NoStatus,
            State::Blocked("secret-conflict", "SecretConflict"),
            State::Blocked("service-account-not-found", "ServiceAccountNotFound"),
        ],
    ),
];

/// A state a key resource is captured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Ready=True, observedGeneration current.
    Ready,
    /// Ready=True for generation 1, spec just edited (generation 2).
    Edited,
    /// Just created: no status yet.
    NoStatus,
    /// Ready=False with this reason: (file name, reason).
    Blocked(&'static str, &'static str),
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Edited => "edited",
            State::NoStatus => "no-status",
            State::Blocked(name, _) => name,
        }
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn customizations_dir(kind: &str) -> PathBuf {
    repo().join("argocd").join(GROUP).join(kind)
}

fn fixtures_dir(kind: &str) -> PathBuf {
    repo().join("argocd/fixtures").join(kind)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("create directory");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn health_script(kind: &str) -> String {
    read(&customizations_dir(kind).join("health.lua"))
}

fn discovery_script(kind: &str) -> String {
    read(&customizations_dir(kind).join("actions/discovery.lua"))
}

fn rotate_script(kind: &str) -> String {
    read(&customizations_dir(kind).join("actions/rotate/action.lua"))
}

// ---- Lua, as Argo CD runs it ----

/// A Lua state with what Argo CD gives custom health checks and actions: the
/// base, table and package libraries and an `os` with only `time` and `date`
/// (no string, math or io library: `useOpenLibs` is off by default).
fn argo_cd_lua(clock: Option<&str>) -> Lua {
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::PACKAGE | StdLib::OS,
        LuaOptions::default(),
    )
    .expect("Lua state");
    lua.load(
        "local safe = {time = os.time, date = os.date}\n\
         os = safe\n\
         package.loaded.os = safe\n",
    )
    .set_name("argo-cd-sandbox")
    .exec()
    .expect("sandbox");
    if let Some(now) = clock {
        let date = lua
            .create_function({
                let now = now.to_string();
                move |_, _: mlua::MultiValue| Ok(now.clone())
            })
            .expect("pinned os.date");
        let os: mlua::Table = lua.globals().get("os").expect("os");
        os.set("date", date).expect("pin os.date");
    }
    lua
}

/// JSON to Lua as Argo CD's `decodeValue` does it (null is nil).
fn to_lua(lua: &Lua, value: &Value) -> mlua::Result<LuaValue> {
    Ok(match value {
        Value::Null => LuaValue::Nil,
        Value::Bool(b) => LuaValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => LuaValue::Integer(i),
            None => LuaValue::Number(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => LuaValue::String(lua.create_string(s)?),
        Value::Array(items) => {
            let table = lua.create_table()?;
            for (i, item) in items.iter().enumerate() {
                table.raw_set(i + 1, to_lua(lua, item)?)?;
            }
            LuaValue::Table(table)
        }
        Value::Object(map) => {
            let table = lua.create_table()?;
            for (key, item) in map {
                table.raw_set(key.as_str(), to_lua(lua, item)?)?;
            }
            LuaValue::Table(table)
        }
    })
}

/// Lua to JSON as Argo CD's encoder does it: a table with keys 1..n is an
/// array, an empty table an empty array (see [`clean_returned`]).
fn from_lua(value: LuaValue) -> Result<Value, String> {
    Ok(match value {
        LuaValue::Nil => Value::Null,
        LuaValue::Boolean(b) => Value::Bool(b),
        LuaValue::Integer(i) => json!(i),
        LuaValue::Number(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => json!(f as i64),
        LuaValue::Number(f) => json!(f),
        LuaValue::String(s) => Value::String(s.to_str().map_err(|e| e.to_string())?.to_string()),
        LuaValue::Table(table) => {
            let mut entries = Vec::new();
            for pair in table.pairs::<LuaValue, LuaValue>() {
                entries.push(pair.map_err(|e| e.to_string())?);
            }
            if entries.len() == table.raw_len() {
                let mut items = Vec::new();
                for i in 1..=table.raw_len() {
                    let item: LuaValue = table.raw_get(i).map_err(|e| e.to_string())?;
                    items.push(from_lua(item)?);
                }
                Value::Array(items)
            } else {
                let mut map = serde_json::Map::new();
                for (key, item) in entries {
                    let LuaValue::String(key) = key else {
                        return Err(format!("table mixes array and map keys: {key:?}"));
                    };
                    let key = key.to_str().map_err(|e| e.to_string())?.to_string();
                    map.insert(key, from_lua(item)?);
                }
                Value::Object(map)
            }
        }
        other => return Err(format!("a Lua {} has no JSON form", other.type_name())),
    })
}

/// What Argo CD does to an action's result before patching: an empty table
/// that was an object in the live object stays that object.
fn clean_returned(new: Value, old: &Value) -> Value {
    match (new, old) {
        (Value::Object(mut new), Value::Object(old)) => {
            for (key, old_value) in old {
                if let Some(new_value) = new.remove(key) {
                    let cleaned = match (&new_value, old_value) {
                        (Value::Array(items), Value::Object(_)) if items.is_empty() => {
                            old_value.clone()
                        }
                        _ => clean_returned(new_value, old_value),
                    };
                    new.insert(key.clone(), cleaned);
                }
            }
            Value::Object(new)
        }
        (Value::Array(new), Value::Array(old)) => Value::Array(
            new.into_iter()
                .enumerate()
                .map(|(i, item)| match old.get(i) {
                    Some(old_item) => clean_returned(item, old_item),
                    None => item,
                })
                .collect(),
        ),
        (new, _) => new,
    }
}

/// Runs `script` with the global `obj` set to `object`; returns what it returns.
fn run_lua(script: &str, name: &str, object: &Value, clock: Option<&str>) -> Value {
    let lua = argo_cd_lua(clock);
    let obj = to_lua(&lua, object).expect("object to Lua");
    lua.globals().set("obj", obj).expect("set obj");
    let result: LuaValue = lua
        .load(script)
        .set_name(name)
        .eval()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    from_lua(result).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Health {
    status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

fn health(kind: &str, object: &Value) -> Health {
    let result = run_lua(
        &health_script(kind),
        &format!("{kind}/health.lua"),
        object,
        None,
    );
    serde_json::from_value(result.clone())
        .unwrap_or_else(|e| panic!("{kind}/health.lua returned {result}: {e}"))
}

fn rotate(kind: &str, object: &Value, clock: Option<&str>) -> Value {
    let result = run_lua(
        &rotate_script(kind),
        &format!("{kind}/actions/rotate/action.lua"),
        object,
        clock,
    );
    clean_returned(result, object)
}

/// The Ready condition of a key resource, as JSON.
fn ready_condition(object: &Value) -> Option<&Value> {
    object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

/// The health a state must have, from the object itself (never from the script).
fn expected_health(kind: &str, state: State, object: &Value) -> Health {
    let condition_message = || {
        ready_condition(object)
            .and_then(|c| c["message"].as_str())
            .map(str::to_string)
    };
    match state {
        State::Ready => Health {
            status: "Healthy".into(),
            message: condition_message(),
        },
        State::Edited => Health {
            status: "Progressing".into(),
            message: Some(format!(
                "Waiting for keymint to observe generation {} (status is for generation {})",
                object["metadata"]["generation"], object["status"]["observedGeneration"]
            )),
        },
        State::NoStatus => Health {
            status: "Progressing".into(),
            message: Some(format!("Waiting for keymint to issue the {kind}")),
        },
        State::Blocked(_, _) => Health {
            status: "Degraded".into(),
            message: condition_message(),
        },
    }
}

// ---- fixtures and the Argo CD test table (argocd/fixtures/<Kind>/) ----

/// `health_test.yaml`, in the layout Argo CD uses for its built-in checks.
#[derive(Debug, Serialize, Deserialize)]
struct HealthTable {
    tests: Vec<HealthCase>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthCase {
    health_status: Health,
    input_path: String,
}

fn load_yaml(path: &Path) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn health_table(kind: &str) -> HealthTable {
    serde_yaml::from_str(&read(&fixtures_dir(kind).join("health_test.yaml")))
        .unwrap_or_else(|e| panic!("{kind}/health_test.yaml: {e}"))
}

/// Every fixture of every kind: (kind, file name, object).
fn all_fixtures() -> Vec<(&'static str, String, Value)> {
    let mut fixtures = Vec::new();
    for (kind, _) in KINDS {
        for entry in std::fs::read_dir(fixtures_dir(kind)).expect("fixtures directory") {
            let path = entry.expect("entry").path();
            let file = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .to_string();
            if file.ends_with(".yaml") && file != "health_test.yaml" {
                fixtures.push((kind, file, load_yaml(&path)));
            }
        }
    }
    fixtures.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    fixtures
}

#[test]
fn every_kind_has_a_fixture_and_an_expected_health_for_each_state() {
    for (kind, states) in KINDS {
        let wanted: BTreeSet<String> = states
            .iter()
            .map(|s| format!("{}.yaml", s.name()))
            .collect();
        let listed: BTreeSet<String> = health_table(kind)
            .tests
            .iter()
            .map(|t| t.input_path.clone())
            .collect();
        let present: BTreeSet<String> = all_fixtures()
            .into_iter()
            .filter(|(k, _, _)| *k == kind)
            .map(|(_, file, _)| file)
            .collect();
        assert_eq!(listed, wanted, "{kind}: states in health_test.yaml");
        assert_eq!(present, wanted, "{kind}: fixture files");
    }
}

#[test]
fn health_checks_report_the_expected_status_and_message_on_every_fixture() {
    for (kind, _) in KINDS {
        for case in health_table(kind).tests {
            let object = load_yaml(&fixtures_dir(kind).join(&case.input_path));
            assert_eq!(object["kind"], kind, "{kind}/{}", case.input_path);
            assert_eq!(
                health(kind, &object),
                case.health_status,
                "{kind}/{}",
                case.input_path
            );
        }
    }
}

#[test]
fn a_degraded_key_that_was_just_edited_is_progressing() {
    // The fix for a Ready=False key is often a spec edit: until keymint has
    // looked at it, the old failure is not the current state.
    for (kind, file, object) in all_fixtures() {
        if ready_condition(&object).is_some_and(|c| c["status"] == "False") {
            let mut edited = object.clone();
            let generation = edited["metadata"]["generation"]
                .as_i64()
                .expect("generation");
            edited["metadata"]["generation"] = json!(generation + 1);
            assert_eq!(
                health(kind, &edited).status,
                "Progressing",
                "{kind}/{file} edited"
            );
        }
    }
}

#[test]
fn the_three_health_checks_share_one_logic() {
    // One script per kind, as Argo CD keys them; only the kind name (and the
    // reasons named in the header comment) may differ.
    let code = |kind: &str| -> Vec<String> {
        health_script(kind)
            .replace(kind, "KIND")
            .lines()
            .filter(|l| !l.starts_with("--"))
            .map(str::to_string)
            .collect()
    };
    let reference = code("APIKey");
    for (kind, _) in KINDS {
        assert_eq!(code(kind), reference, "{kind}/health.lua");
        let actions = |k: &str| {
            (
                discovery_script(k).replace(k, "KIND"),
                rotate_script(k).replace(k, "KIND"),
            )
        };
        assert_eq!(actions(kind), actions("APIKey"), "{kind}/actions");
    }
}

// ---- the rotate action ----

#[test]
fn discovery_offers_rotate_enabled_on_every_fixture() {
    for (kind, file, object) in all_fixtures() {
        let actions = run_lua(
            &discovery_script(kind),
            &format!("{kind}/actions/discovery.lua"),
            &object,
            None,
        );
        let rotate = actions
            .get("rotate")
            .unwrap_or_else(|| panic!("{kind}/{file}: no rotate action in {actions}"));
        // Argo CD: an action is enabled unless `disabled` is true.
        assert_ne!(rotate.get("disabled"), Some(&json!(true)), "{kind}/{file}");
        assert_eq!(
            actions.as_object().map(|a| a.len()),
            Some(1),
            "{kind}/{file}: {actions}"
        );
    }
}

/// Asserts `after` is `before` with only the rotate-request annotation set to
/// a new value, and returns that value.
fn assert_only_rotate_request_changed(before: &Value, after: &Value, what: &str) -> String {
    let value = after
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ROTATE_REQUEST))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{what}: no {ROTATE_REQUEST} in {after}"))
        .to_string();
    assert!(!value.is_empty(), "{what}: empty rotate request");
    let previous = before
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ROTATE_REQUEST));
    assert_ne!(previous, Some(&json!(value)), "{what}: value not new");
    let handled = before.pointer("/status/lastRotateRequest");
    assert_ne!(
        handled,
        Some(&json!(value)),
        "{what}: value already handled"
    );
    let mut expected = before.clone();
    let metadata = expected["metadata"].as_object_mut().expect("metadata");
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("annotations");
    annotations.insert(ROTATE_REQUEST.into(), json!(value));
    assert_eq!(after, &expected, "{what}: only the annotation may change");
    value
}

#[test]
fn rotate_sets_a_new_rotate_request_and_nothing_else_on_every_fixture() {
    let timestamp = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ(-\d+)?$").expect("regex");
    for (kind, file, object) in all_fixtures() {
        let after = rotate(kind, &object, None);
        let value = assert_only_rotate_request_changed(&object, &after, &format!("{kind}/{file}"));
        assert!(timestamp.is_match(&value), "{kind}/{file}: {value}");
    }
}

#[test]
fn rotate_twice_within_a_second_still_asks_for_a_new_key() {
    let now = "2030-01-02T03:04:05Z";
    let (kind, file, fixture) = all_fixtures()
        .into_iter()
        .find(|(_, file, _)| file == "ready.yaml")
        .expect("a ready fixture");
    let what = format!("{kind}/{file}");

    let first = rotate(kind, &fixture, Some(now));
    assert_eq!(
        assert_only_rotate_request_changed(&fixture, &first, &what),
        now
    );
    // Same second: the annotation already holds `now`.
    let second = rotate(kind, &first, Some(now));
    assert_eq!(
        assert_only_rotate_request_changed(&first, &second, &what),
        format!("{now}-2")
    );
    // keymint handled `now-2` and someone set the annotation back to `now`.
    let mut handled = first.clone();
    handled["status"]["lastRotateRequest"] = json!(format!("{now}-2"));
    let third = rotate(kind, &handled, Some(now));
    assert_eq!(
        assert_only_rotate_request_changed(&handled, &third, &what),
        format!("{now}-3")
    );
}

// ---- argocd/argocd-cm-keymint.yaml, generated from the .lua files ----

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|line| {
            if line.is_empty() {
                "\n".to_string()
            } else {
                format!("{pad}{line}\n")
            }
        })
        .collect()
}

/// The ConfigMap keys Argo CD reads, `resource.customizations.<what>.<group>_<Kind>`.
fn cm_key(what: &str, kind: &str) -> String {
    format!("resource.customizations.{what}.{GROUP}_{kind}")
}

fn render_argocd_cm() -> String {
    let mut out = String::from(
        "# Argo CD resource customizations for keymint: a health check and the
# `rotate` action for each of APIKey, RootKey and ServiceAccountKey.
#
# GENERATED from argocd/keymint.dev/<Kind>/{health.lua,actions/} by
# tests/argocd.rs; edit the .lua files, then run
#   KEYMINT_UPDATE_ARGOCD_CM=1 cargo test --test argocd argocd_cm_snippet_is
#
# Merge these keys into the argocd-cm of an installed Argo CD (see docs/argocd.md):
#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file argocd/argocd-cm-keymint.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
",
    );
    for (kind, _) in KINDS {
        let actions = format!(
            "discovery.lua: |\n{}definitions:\n- name: rotate\n  action.lua: |\n{}",
            indent(&discovery_script(kind), 2),
            indent(&rotate_script(kind), 4),
        );
        out.push_str(&format!(
            "  {}: |\n{}",
            cm_key("actions", kind),
            indent(&actions, 4)
        ));
        out.push_str(&format!(
            "  {}: |\n{}",
            cm_key("health", kind),
            indent(&health_script(kind), 4)
        ));
    }
    out
}

fn argocd_cm_path() -> PathBuf {
    repo().join("argocd/argocd-cm-keymint.yaml")
}

/// `resource.customizations.actions.*` values, as Argo CD parses them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceActions {
    #[serde(rename = "discovery.lua")]
    discovery: String,
    definitions: Vec<ActionDefinition>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionDefinition {
    name: String,
    #[serde(rename = "action.lua")]
    action: String,
}

#[test]
fn argocd_cm_snippet_is_generated_from_the_lua_files() {
    let rendered = render_argocd_cm();
    let path = argocd_cm_path();
    if std::env::var_os(UPDATE_CM).is_some() {
        write(&path, &rendered);
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "{} is out of date with the .lua files: run `{UPDATE_CM}=1 cargo test --test argocd argocd_cm_snippet_is`",
        path.display()
    );

    // It parses back to exactly the scripts, under the keys Argo CD reads.
    let config: ConfigMap = serde_yaml::from_str(&committed).expect("a ConfigMap");
    let data = config.data.expect("data");
    let mut keys = BTreeSet::new();
    for (kind, _) in KINDS {
        let health_key = cm_key("health", kind);
        assert_eq!(
            data.get(&health_key),
            Some(&health_script(kind)),
            "{health_key}"
        );
        let actions_key = cm_key("actions", kind);
        let actions: ResourceActions =
            serde_yaml::from_str(data.get(&actions_key).expect("actions key"))
                .unwrap_or_else(|e| panic!("{actions_key}: {e}"));
        assert_eq!(actions.discovery, discovery_script(kind), "{actions_key}");
        assert_eq!(actions.definitions.len(), 1, "{actions_key}");
        assert_eq!(actions.definitions[0].name, "rotate", "{actions_key}");
        assert_eq!(
            actions.definitions[0].action,
            rotate_script(kind),
            "{actions_key}"
        );
        keys.insert(health_key);
        keys.insert(actions_key);
    }
    assert_eq!(data.keys().cloned().collect::<BTreeSet<_>>(), keys);
}

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

// ---- examples/argocd/: the Argo CD Applications ----

fn application(file: &str) -> Value {
    let value = load_yaml(&repo().join("examples/argocd").join(file));
    assert_eq!(value["apiVersion"], "argoproj.io/v1alpha1", "{file}");
    assert_eq!(value["kind"], "Application", "{file}");
    value
}

fn sync_wave(application: &Value) -> i64 {
    application["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
        .as_str()
        .and_then(|w| w.parse().ok())
        .expect("a sync wave")
}

fn sync_options(application: &Value) -> Vec<&str> {
    application["spec"]["syncPolicy"]["syncOptions"]
        .as_array()
        .map(|o| o.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn example_applications_install_keymint_first_then_sync_the_examples() {
    let operator = application("keymint.yaml");
    assert_eq!(operator["spec"]["source"]["path"], "charts/keymint");
    assert_eq!(
        operator["spec"]["destination"]["namespace"],
        OPERATOR_NAMESPACE
    );
    assert!(sync_options(&operator).contains(&"ServerSideApply=true"));

    let examples = application("keymint-examples.yaml");
    assert_eq!(examples["spec"]["source"]["path"], "examples");
    // Not examples/argocd/ (these Applications) along with the key resources.
    assert_eq!(examples["spec"]["source"]["directory"]["recurse"], false);
    let options = sync_options(&examples);
    assert!(
        options.contains(&"SkipDryRunOnMissingResource=true"),
        "{options:?}"
    );
    assert!(options.contains(&"ServerSideApply=true"), "{options:?}");

    assert!(sync_wave(&operator) < sync_wave(&examples));
    let source = |a: &Value| {
        (
            a["spec"]["source"]["repoURL"].clone(),
            a["spec"]["source"]["targetRevision"].clone(),
        )
    };
    assert_eq!(source(&operator), source(&examples));
}
