//! Every keymint manifest in `examples/` fits the Rust types exactly: it
//! deserialises into its kind's type and serialises back to the same document,
//! so no example carries a field the types (and so the operator) would drop.

use std::collections::BTreeSet;
use std::path::PathBuf;

use keymint::api::{API_VERSION, ApiKey, KeyRing, RootKey, ServiceAccountKey};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Kinds the examples may contain besides keymint's own; they are skipped.
const OTHER_KINDS: [&str; 1] = ["ServiceAccount"];

/// The keymint kinds, each of which must appear in at least one example.
const KEYMINT_KINDS: [&str; 4] = ["RootKey", "ServiceAccountKey", "APIKey", "KeyRing"];

fn example_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml" || extension == "yml")
        })
        .collect();
    files.sort();
    files
}

/// `document` through `K` and back.
fn round_trip<K: DeserializeOwned + Serialize>(document: &Value) -> Result<(), String> {
    let typed: K = serde_json::from_value(document.clone())
        .map_err(|e| format!("does not deserialise: {e}"))?;
    let back = serde_json::to_value(&typed).map_err(|e| format!("does not serialise: {e}"))?;
    if &back == document {
        Ok(())
    } else {
        Err(format!(
            "changed by the round trip:\n    before: {document}\n    after:  {back}"
        ))
    }
}

#[test]
fn every_example_round_trips_through_the_rust_types() {
    let files = example_files();
    assert!(!files.is_empty(), "no examples/*.yaml");
    let mut problems = Vec::new();
    let mut checked = BTreeSet::new();
    let mut count = 0;
    for file in &files {
        let name = file.file_name().expect("file name").display().to_string();
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (index, yaml) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let place = format!("{name} document {index}");
            let document: Value = match serde::Deserialize::deserialize(yaml) {
                Ok(document) => document,
                Err(error) => {
                    problems.push(format!("{place}: not YAML: {error}"));
                    continue;
                }
            };
            let kind = document["kind"].as_str().unwrap_or_default().to_string();
            if OTHER_KINDS.contains(&kind.as_str()) {
                continue;
            }
            let result = match kind.as_str() {
                "RootKey" => round_trip::<RootKey>(&document),
                "ServiceAccountKey" => round_trip::<ServiceAccountKey>(&document),
                "APIKey" => round_trip::<ApiKey>(&document),
                "KeyRing" => round_trip::<KeyRing>(&document),
                other => Err(format!(
                    "kind {other:?} is neither keymint's nor one of {OTHER_KINDS:?}"
                )),
            };
            if KEYMINT_KINDS.contains(&kind.as_str())
                && document["apiVersion"].as_str() != Some(API_VERSION)
            {
                problems.push(format!(
                    "{place}: apiVersion {} is not {API_VERSION}",
                    document["apiVersion"]
                ));
            }
            match result {
                Ok(()) => {
                    count += 1;
                    checked.insert(kind);
                }
                Err(problem) => problems.push(format!("{place} ({kind}): {problem}")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let missing: Vec<&str> = KEYMINT_KINDS
        .into_iter()
        .filter(|kind| !checked.contains(*kind))
        .collect();
    assert!(
        missing.is_empty(),
        "no example of {missing:?} in examples/ ({count} keymint manifests checked)"
    );
}

/// The round trip notices a field the types drop and a value they rewrite.
#[test]
fn the_round_trip_detects_lost_fields() {
    let manifest = |spec: Value| {
        serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": "APIKey",
            "metadata": {"name": "k", "namespace": "default"},
            "spec": spec,
        })
    };
    assert_eq!(
        round_trip::<ApiKey>(&manifest(serde_json::json!({"permissions": ["read"]}))),
        Ok(())
    );
    let unknown = manifest(serde_json::json!({"permissions": ["read"], "validfor": "1h"}));
    assert!(round_trip::<ApiKey>(&unknown).is_err());
    let rewritten = manifest(
        serde_json::json!({"permissions": ["read"], "expiresAt": "2030-01-01T02:00:00+02:00"}),
    );
    assert!(round_trip::<ApiKey>(&rewritten).is_err());
}
