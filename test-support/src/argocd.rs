//! Argo CD as keymint's tests model it (feature `argocd`): the Lua sandbox
//! Argo CD runs custom health checks and actions in, with its JSON encoding;
//! the scripts, fixtures and generated argocd-cm snippet under `argocd/`; and
//! the health each fixture state must have, worked out from the object itself.

use std::path::{Path, PathBuf};

use mlua::{Lua, LuaOptions, StdLib, Value as LuaValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::helm::repo;

/// The annotation the `rotate` action sets.
pub const ROTATE_REQUEST: &str = "keymint.dev/rotate-request";
/// The API group Argo CD keys the customizations by.
pub const GROUP: &str = "keymint.dev";

/// The kinds, and the states each has a fixture for.
pub const KINDS: [(&str, &[State]); 3] = [
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
pub enum State {
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
    pub fn name(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Edited => "edited",
            State::NoStatus => "no-status",
            State::Blocked(name, _) => name,
        }
    }
}

pub fn customizations_dir(kind: &str) -> PathBuf {
    repo().join("argocd").join(GROUP).join(kind)
}

pub fn fixtures_dir(kind: &str) -> PathBuf {
    repo().join("argocd/fixtures").join(kind)
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("create directory");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn health_script(kind: &str) -> String {
    read(&customizations_dir(kind).join("health.lua"))
}

pub fn discovery_script(kind: &str) -> String {
    read(&customizations_dir(kind).join("actions/discovery.lua"))
}

pub fn rotate_script(kind: &str) -> String {
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
pub fn run_lua(script: &str, name: &str, object: &Value, clock: Option<&str>) -> Value {
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
pub struct Health {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

pub fn health(kind: &str, object: &Value) -> Health {
    let result = run_lua(
        &health_script(kind),
        &format!("{kind}/health.lua"),
        object,
        None,
    );
    serde_json::from_value(result.clone())
        .unwrap_or_else(|e| panic!("{kind}/health.lua returned {result}: {e}"))
}

pub fn rotate(kind: &str, object: &Value, clock: Option<&str>) -> Value {
    let result = run_lua(
        &rotate_script(kind),
        &format!("{kind}/actions/rotate/action.lua"),
        object,
        clock,
    );
    clean_returned(result, object)
}

/// The Ready condition of a key resource, as JSON.
pub fn ready_condition(object: &Value) -> Option<&Value> {
    object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

/// The health a state must have, from the object itself (never from the script).
pub fn expected_health(kind: &str, state: State, object: &Value) -> Health {
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
pub struct HealthTable {
    pub tests: Vec<HealthCase>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCase {
    pub health_status: Health,
    pub input_path: String,
}

pub fn load_yaml(path: &Path) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn health_table(kind: &str) -> HealthTable {
    serde_yaml::from_str(&read(&fixtures_dir(kind).join("health_test.yaml")))
        .unwrap_or_else(|e| panic!("{kind}/health_test.yaml: {e}"))
}

/// Every fixture of every kind: (kind, file name, object).
pub fn all_fixtures() -> Vec<(&'static str, String, Value)> {
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

/// Asserts `after` is `before` with only the rotate-request annotation set to
/// a new value, and returns that value.
pub fn assert_only_rotate_request_changed(before: &Value, after: &Value, what: &str) -> String {
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
pub fn cm_key(what: &str, kind: &str) -> String {
    format!("resource.customizations.{what}.{GROUP}_{kind}")
}

pub fn render_argocd_cm() -> String {
    let mut out = String::from(
        "# Argo CD resource customizations for keymint: a health check and the
# `rotate` action for each of APIKey, RootKey and ServiceAccountKey.
#
# GENERATED from argocd/keymint.dev/<Kind>/{health.lua,actions/} by
# tests/argocd_lua.rs; edit the .lua files, then run
#   KEYMINT_UPDATE_ARGOCD_CM=1 cargo test --test argocd_lua argocd_cm_snippet_is
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

pub fn argocd_cm_path() -> PathBuf {
    repo().join("argocd/argocd-cm-keymint.yaml")
}
