//! The committed CRDs in `crds/` match the Rust types, the schemas are
//! structural and bounded, and full manifests of each kind survive a round trip
//! through the Rust types.
//!
//! `KEYMINT_UPDATE_CRDS=1 cargo test --test crd_golden` rewrites `crds/`.

use std::path::PathBuf;

use keymint::api::{self, ApiKey, KeyRing, RootKey, ServiceAccountKey};
use kube::CustomResourceExt;
use serde_json::Value;

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds")
}

fn updating() -> bool {
    std::env::var("KEYMINT_UPDATE_CRDS").is_ok_and(|v| !v.is_empty() && v != "0")
}

#[test]
fn golden_crds() {
    let dir = crds_dir();
    if updating() {
        std::fs::create_dir_all(&dir).expect("create crds/");
    }
    let mut stale = Vec::new();
    for crd in api::crds() {
        let path = dir.join(api::crd_file_name(&crd));
        let generated = serde_json::to_value(&crd).expect("CRD serialises");
        if updating() {
            let yaml = serde_yaml::to_string(&crd).expect("CRD serialises to YAML");
            std::fs::write(&path, yaml).expect("write CRD file");
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run KEYMINT_UPDATE_CRDS=1 cargo test --test crd_golden",
                path.display()
            )
        });
        let committed: Value = serde_yaml::from_str(&text).expect("committed CRD is YAML");
        if committed != generated {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "CRD files out of date: {stale:?}; run KEYMINT_UPDATE_CRDS=1 cargo test --test crd_golden"
    );
}

#[test]
fn crd_names_and_files() {
    let names: Vec<String> = api::crds().iter().map(api::crd_file_name).collect();
    assert_eq!(
        names,
        [
            "rootkeys.keymint.dev.yaml",
            "serviceaccountkeys.keymint.dev.yaml",
            "apikeys.keymint.dev.yaml",
            "keyrings.keymint.dev.yaml"
        ]
    );
    let yaml = api::crds_yaml().expect("YAML");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML document"))
        .collect();
    assert_eq!(docs.len(), 4);
    for (doc, crd) in docs.iter().zip(api::crds()) {
        assert_eq!(doc, &serde_json::to_value(&crd).expect("JSON"));
    }
}

#[test]
fn crd_names() {
    for (crd, kind, plural, short, scope) in [
        (RootKey::crd(), "RootKey", "rootkeys", "rk", "Cluster"),
        (
            ServiceAccountKey::crd(),
            "ServiceAccountKey",
            "serviceaccountkeys",
            "sak",
            "Namespaced",
        ),
        (ApiKey::crd(), "APIKey", "apikeys", "ak", "Namespaced"),
        (KeyRing::crd(), "KeyRing", "keyrings", "kr", "Namespaced"),
    ] {
        assert_eq!(crd.spec.group, "keymint.dev");
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(crd.spec.names.short_names, Some(vec![short.to_string()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["keymint".to_string()]));
        assert_eq!(crd.spec.scope, scope);
        assert_eq!(crd.spec.versions.len(), 1);
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        let expected: &[&str] = if kind == "KeyRing" {
            &["Ready", "Members", "Secret", "Age"]
        } else {
            &["Ready", "Key ID", "Expires", "Secret", "Age"]
        };
        for column in expected {
            assert!(columns.contains(column), "{kind}: no column {column}");
        }
    }
}

fn schema_of(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let crd = serde_json::to_value(crd).expect("JSON");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Walks every schema node, calling `f(path, node)`.
fn walk(path: &str, node: &Value, f: &mut dyn FnMut(&str, &serde_json::Map<String, Value>)) {
    let Value::Object(object) = node else { return };
    f(path, object);
    if let Some(Value::Object(properties)) = object.get("properties") {
        for (name, property) in properties {
            walk(&format!("{path}.{name}"), property, f);
        }
    }
    if let Some(items) = object.get("items") {
        walk(&format!("{path}[]"), items, f);
    }
    if let Some(additional) = object.get("additionalProperties") {
        walk(&format!("{path}{{}}"), additional, f);
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(subschemas)) = object.get(key) {
            for (i, subschema) in subschemas.iter().enumerate() {
                walk(&format!("{path}/{key}[{i}]"), subschema, f);
            }
        }
    }
    if let Some(not) = object.get("not") {
        walk(&format!("{path}/not"), not, f);
    }
}

#[test]
fn schemas_are_structural_and_bounded() {
    for crd in api::crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema_of(&crd);
        let mut problems = Vec::new();
        walk(&kind, &schema, &mut |path, node| {
            // kube's generated root type makes `status` an `Option` without our
            // `no_nullable` transform; a `null` status is harmless (only the
            // controller writes status). Every other node must refuse `null`.
            if path != format!("{kind}.status") && node.contains_key("nullable") {
                problems.push(format!("{path}: has nullable"));
            }
            for key in [
                "x-kubernetes-preserve-unknown-fields",
                "anyOf",
                "oneOf",
                "allOf",
                "not",
                "$ref",
                "definitions",
                "$defs",
                "const",
            ] {
                if node.contains_key(key) {
                    problems.push(format!("{path}: has {key}"));
                }
            }
            match node.get("type").and_then(Value::as_str) {
                None => problems.push(format!("{path}: no type")),
                Some("string") => {
                    if !(node.contains_key("maxLength")
                        || node.contains_key("enum")
                        || node.contains_key("format"))
                    {
                        problems.push(format!("{path}: unbounded string"));
                    }
                }
                Some("array") => {
                    if !node.contains_key("maxItems") {
                        problems.push(format!("{path}: unbounded array"));
                    }
                }
                Some("object") => {
                    if node.contains_key("additionalProperties")
                        && !node.contains_key("maxProperties")
                    {
                        problems.push(format!("{path}: unbounded map"));
                    }
                }
                Some(_) => {}
            }
            if path != kind && path.matches('.').count() >= 1 && !node.contains_key("description") {
                // every field a user can `kubectl explain` is documented
                let in_status_condition = path.contains(".conditions[]");
                if !in_status_condition && !path.ends_with("{}") && !path.ends_with("[]") {
                    problems.push(format!("{path}: no description"));
                }
            }
        });
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

/// The CEL rules sit on the right schema nodes.
#[test]
fn cel_rules_in_place() {
    // The key kinds; KeyRing's one rule is checked on the control plane.
    for crd in api::crds()
        .into_iter()
        .filter(|crd| crd.spec.names.kind != "KeyRing")
    {
        let schema = schema_of(&crd);
        let spec = &schema["properties"]["spec"];
        let rules = |node: &Value| -> Vec<String> {
            node["x-kubernetes-validations"]
                .as_array()
                .map(|rules| {
                    rules
                        .iter()
                        .map(|r| r["message"].as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            rules(spec),
            ["spec.renewBefore must be shorter than spec.validFor"]
        );
        assert_eq!(
            spec["x-kubernetes-validations"][0]["fieldPath"],
            ".renewBefore"
        );
        let properties = &spec["properties"];
        assert_eq!(
            rules(&properties["validFor"]),
            ["spec.validFor must be at least 1s and at most 876000h"]
        );
        assert_eq!(
            rules(&properties["renewBefore"]),
            ["spec.renewBefore must be at least 0s and at most 876000h"]
        );
        assert_eq!(
            rules(&properties["gracePeriod"]),
            ["spec.gracePeriod must be at least 0s and at most 876000h"]
        );
        assert_eq!(
            rules(&properties["expiresAt"]),
            ["spec.expiresAt must not be later than 9999-12-30T00:00:00Z"]
        );
        let template = &properties["secretTemplate"]["properties"];
        // Key syntax and reserved keys for both; annotations also bound value bytes.
        for (field, expected) in [("labels", 2), ("annotations", 3)] {
            let messages = rules(&template[field]);
            assert_eq!(messages.len(), expected, "{field}: {messages:?}");
            assert!(
                messages
                    .iter()
                    .all(|m| m.starts_with(&format!("spec.secretTemplate.{field}: ")))
            );
        }
        // Every status time is bounded by what the controller can read back.
        let status = &schema["properties"]["status"]["properties"];
        let bound = "must not be later than 9999-12-30T22:00:00.999999999Z";
        for field in [
            "createdAt",
            "updatedAt",
            "expiresAt",
            "renewalTime",
            "previousExpiresAt",
        ] {
            assert_eq!(
                rules(&status[field]),
                [format!("status.{field} {bound}")],
                "{field}"
            );
        }
        assert_eq!(
            rules(&status["conditions"]["items"]["properties"]["lastTransitionTime"]),
            [format!("status.conditions[].lastTransitionTime {bound}")]
        );
        for field in ["revokedAt", "until"] {
            assert_eq!(
                rules(&status["revokedKeys"]["items"]["properties"][field]),
                [format!("status.revokedKeys[].{field} {bound}")]
            );
        }
        // APIKeys and ServiceAccountKeys name their consumers by name or selector.
        let kind = crd.spec.names.kind.as_str();
        let consumer_rules = if kind == "RootKey" {
            assert!(properties.get("consumers").is_none());
            0
        } else {
            assert_eq!(
                rules(&properties["consumers"]["items"]),
                ["spec.consumers: set exactly one of name and selector"]
            );
            1
        };
        // No other node carries rules.
        let mut count = 0;
        walk("", &schema, &mut |_, node| {
            count += node
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
        });
        assert_eq!(count, 18 + consumer_rules, "{kind}");
    }
}

fn round_trip<K>(manifest: &str)
where
    K: serde::de::DeserializeOwned + serde::Serialize,
{
    let original: Value = serde_yaml::from_str(manifest).expect("manifest is YAML");
    let typed: K = serde_json::from_value(original.clone()).expect("manifest deserialises");
    let back = serde_json::to_value(&typed).expect("serialises");
    assert_eq!(back, original);
}

const STATUS: &str = r#"
status:
  id: 7QX2M4KD9PZ1
  createdAt: "2026-11-01T10:00:00Z"
  updatedAt: "2026-11-01T10:00:05Z"
  expiresAt: "2027-01-30T10:00:00Z"
  renewalTime: "2027-01-15T10:00:00Z"
  secretName: billing-key
  secretNamespace: billing
  keySHA256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  previousId: 3ABC9
  previousExpiresAt: "2026-11-02T10:00:00Z"
  rotations: 3
  lastRotateRequest: "2026-11-01"
  observedGeneration: 2
  conditions:
    - type: Ready
      status: "True"
      reason: KeyIssued
      message: key 7QX2M4KD9PZ1 issued
      lastTransitionTime: "2026-11-01T10:00:05Z"
      observedGeneration: 2
"#;

const COMMON_SPEC: &str = r#"
  expiresAt: "2027-06-30T00:00:00Z"
  validFor: 2160h
  renewBefore: 360h
  gracePeriod: 24h
  secretName: billing-key
  secretTemplate:
    labels:
      app.kubernetes.io/part-of: billing
    annotations:
      team.example.com/owner: billing
  format:
    prefix: bill
    entropyBits: 384
  deletionPolicy: Retain
"#;

#[test]
fn root_key_round_trip() {
    let manifest = format!(
        "apiVersion: keymint.dev/v1alpha1\nkind: RootKey\nmetadata:\n  name: admin\n  annotations:\n    keymint.dev/rotate-request: \"2026-11-01\"\nspec:{COMMON_SPEC}  secretNamespace: keymint-system\n{STATUS}"
    );
    round_trip::<RootKey>(&manifest);
}

#[test]
fn service_account_key_round_trip() {
    let manifest = format!(
        "apiVersion: keymint.dev/v1alpha1\nkind: ServiceAccountKey\nmetadata:\n  name: worker\n  namespace: billing\nspec:{COMMON_SPEC}  serviceAccountName: billing-worker\n{STATUS}"
    );
    round_trip::<ServiceAccountKey>(&manifest);
}

#[test]
fn api_key_round_trip() {
    let manifest = format!(
        "apiVersion: keymint.dev/v1alpha1\nkind: APIKey\nmetadata:\n  name: export\n  namespace: billing\nspec:{COMMON_SPEC}  permissions: [read, \"models:write\"]\n  description: nightly billing export\n{STATUS}"
    );
    round_trip::<ApiKey>(&manifest);
}

#[test]
fn minimal_manifests_round_trip() {
    round_trip::<RootKey>(
        "apiVersion: keymint.dev/v1alpha1\nkind: RootKey\nmetadata:\n  name: admin\nspec: {}\n",
    );
    round_trip::<ServiceAccountKey>(
        "apiVersion: keymint.dev/v1alpha1\nkind: ServiceAccountKey\nmetadata:\n  name: w\n  namespace: n\nspec:\n  serviceAccountName: w\n",
    );
    round_trip::<ApiKey>(
        "apiVersion: keymint.dev/v1alpha1\nkind: APIKey\nmetadata:\n  name: a\n  namespace: n\nspec:\n  permissions: [read]\n",
    );
}
