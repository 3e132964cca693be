//! Argo CD support (docs/argocd.md) without a cluster: the Lua health checks
//! and the `rotate` action in `argocd/keymint.dev/` run in a real Lua
//! interpreter, sandboxed as Argo CD sandboxes custom scripts (base, table,
//! package and an `os` with only `time` and `date`), on the fixtures
//! `tests/argocd.rs` captures from the control plane (`argocd/fixtures/`);
//! `argocd/argocd-cm-keymint.yaml` is generated from the `.lua` files and
//! fails here when it is out of date; the example Applications install keymint
//! before the examples. The same checks then run in Argo CD's own code
//! (`argocd admin settings resource-overrides`, gopher-lua), the judge.
//!
//! Regenerate the argocd-cm snippet with
//! `KEYMINT_UPDATE_ARGOCD_CM=1 cargo test --test argocd_lua argocd_cm_snippet_is`.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ConfigMap;
use keymint_test_support::OPERATOR_NAMESPACE;
use keymint_test_support::argocd::*;
use keymint_test_support::argocd_instance::ArgoCd;
use keymint_test_support::helm::repo;
use serde::Deserialize;
use serde_json::{Value, json};

const UPDATE_CM: &str = "KEYMINT_UPDATE_ARGOCD_CM";

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

// ---- the same scripts run by Argo CD's own code ----
//
// `argocd admin settings resource-overrides` (bin/argocd, built by `make
// argocd` at the version in tests/argocd/go.mod) runs the health and action
// scripts with Argo CD's gopher-lua sandbox on a file, reading the
// customizations from `argocd/argocd-cm-keymint.yaml` as users paste it.

fn argocd_overrides(command: &str, object: &Value, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("object.yaml");
    std::fs::write(&path, serde_yaml::to_string(object).expect("YAML")).expect("write the object");
    let path = path.display().to_string();
    let cm = argocd_cm_path().display().to_string();
    let mut args = vec!["settings", "resource-overrides", command, path.as_str()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--argocd-cm-path", cm.as_str()]);
    ArgoCd::admin(&args).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn argo_cds_own_lua_reports_the_expected_health_on_every_fixture() {
    for (kind, _) in KINDS {
        for case in health_table(kind).tests {
            let object = load_yaml(&fixtures_dir(kind).join(&case.input_path));
            let output = argocd_overrides("health", &object, &[]);
            let field = |name: &str| {
                output
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(str::to_string)
            };
            let reported = Health {
                status: field("STATUS: ")
                    .unwrap_or_else(|| panic!("{kind}/{}: {output}", case.input_path)),
                message: field("MESSAGE: ").filter(|message| !message.is_empty()),
            };
            assert_eq!(
                reported, case.health_status,
                "{kind}/{}: Argo CD said\n{output}",
                case.input_path
            );
        }
    }
}

#[test]
fn argo_cds_own_lua_offers_rotate_enabled_on_every_fixture() {
    for (kind, file, object) in all_fixtures() {
        let output = argocd_overrides("list-actions", &object, &[]);
        let actions: Vec<Vec<&str>> = output
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().collect())
            .collect();
        assert_eq!(
            actions,
            vec![vec!["rotate", "false"]],
            "{kind}/{file}: Argo CD said\n{output}"
        );
    }
}

#[test]
fn argo_cds_own_lua_rotate_changes_only_the_rotate_request_on_every_fixture() {
    let timestamp = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ(-\d+)?$").expect("regex");
    for (kind, file, object) in all_fixtures() {
        // Argo CD prints `diff live new` of the object the action returned.
        let output = argocd_overrides("run-action", &object, &["rotate"]);
        assert!(
            output.starts_with("Following fields have been changed"),
            "{kind}/{file}: {output}"
        );
        let removed: Vec<&str> = output
            .lines()
            .filter(|line| line.starts_with('<'))
            .collect();
        assert!(
            removed.is_empty(),
            "{kind}/{file}: the action removed {removed:?}"
        );
        let added: Vec<&str> = output
            .lines()
            .filter_map(|line| line.strip_prefix("> "))
            .map(str::trim)
            .filter(|line| *line != "annotations:")
            .collect();
        let [request] = added.as_slice() else {
            panic!("{kind}/{file}: the action changed more than the request: {added:?}");
        };
        let value = request
            .strip_prefix("keymint.dev/rotate-request: ")
            .unwrap_or_else(|| panic!("{kind}/{file}: {request}"))
            .trim_matches(|c| c == '"' || c == '\'');
        assert!(timestamp.is_match(value), "{kind}/{file}: {value}");
    }
}
