//! The Secret a key lives in: its layout, reading the key's record back from
//! it, telling ours from someone else's, and whether it needs a write at all.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use serde_json::Value;

use super::FIELD_MANAGER;
use crate::keys::plan::{KeyRecord, Observed, PreviousKey};
use crate::keys::{sha256_hex, verify_checksum};

pub use crate::api::{
    EXPIRES_AT_ANNOTATION as EXPIRES_AT, KEY_ID_ANNOTATION as KEY_ID,
    KEY_SHA256_ANNOTATION as KEY_SHA256, MANAGED_BY_LABEL, MANAGED_BY_VALUE as MANAGED_BY,
    SECRET_ID as DATA_ID, SECRET_KEY as DATA_KEY, SECRET_PREVIOUS_ID as DATA_PREVIOUS_ID,
    SECRET_PREVIOUS_KEY as DATA_PREVIOUS_KEY, SECRET_TYPE,
};
use crate::api::{RESERVED_APP_KEYS, RESERVED_KEY_DOMAINS};

/// Further annotations holding the key's record (never the key itself).
pub const OWNER: &str = "keymint.dev/owner";
pub const CREATED_AT: &str = "keymint.dev/created-at";
pub const UPDATED_AT: &str = "keymint.dev/updated-at";
pub const ROTATIONS: &str = "keymint.dev/rotations";
pub const PREVIOUS_ID: &str = "keymint.dev/previous-id";
pub const PREVIOUS_EXPIRES_AT: &str = "keymint.dev/previous-expires-at";
pub const ROTATE_REQUEST_HANDLED: &str = "keymint.dev/rotate-request-handled";
pub const BOUND_UID: &str = "keymint.dev/bound-uid";

/// Label and annotation keys a `secretTemplate` may never set: they would let
/// a resource's author make the Secret look like another tool's (Argo CD
/// tracking, a service-account token) or forge keymint's own record. The CRD
/// refuses them at apply time; this is the controller's second line.
pub fn is_reserved_key(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return false;
    };
    if prefix == "app.kubernetes.io" {
        return RESERVED_APP_KEYS.contains(&key);
    }
    RESERVED_KEY_DOMAINS
        .iter()
        .any(|domain| prefix == *domain || prefix.ends_with(&format!(".{domain}")))
}

/// What was found at the Secret's name.
#[derive(Debug)]
pub enum Found {
    Nothing,
    /// Ours: written by keymint for this very resource.
    Ours(Box<Secret>),
    /// Someone else's (another application's, or another keymint resource's).
    Foreign {
        owner: Option<String>,
    },
}

/// Tells our Secret from someone else's: the owner annotation names this
/// resource (`Kind/namespace/name`, so two resources never fight over one
/// Secret), the type is keymint's, and keymint's own field manager applied it
/// (so a look-alike Secret created by another tool, e.g. synced from Git, is
/// never adopted).
pub fn classify(secret: Option<Secret>, owner: &str) -> Found {
    match secret {
        None => Found::Nothing,
        Some(secret) => {
            let recorded = annotation(&secret, OWNER);
            let applied_by_keymint = secret
                .metadata
                .managed_fields
                .iter()
                .flatten()
                .any(|entry| {
                    entry.manager.as_deref() == Some(FIELD_MANAGER)
                        && entry.operation.as_deref() == Some("Apply")
                });
            if recorded == Some(owner)
                && secret.type_.as_deref() == Some(SECRET_TYPE)
                && applied_by_keymint
            {
                Found::Ours(Box::new(secret))
            } else {
                Found::Foreign {
                    owner: recorded.map(str::to_string),
                }
            }
        }
    }
}

fn annotation<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The value of a data entry as text (keys are ASCII tokens).
pub fn data_text<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| std::str::from_utf8(&v.0).ok())
}

/// Overwrites the values an in-memory Secret holds (keys among them) before
/// it is dropped.
pub fn wipe(secret: &mut Secret) {
    use zeroize::Zeroize;
    for value in secret.data.iter_mut().flat_map(|data| data.values_mut()) {
        value.0.zeroize();
    }
}

/// Reads the key's record from our Secret. A record that cannot be read
/// (someone edited the annotations) counts as a lost key: it is replaced.
pub fn observe(secret: &Secret) -> Observed {
    match read_record(secret) {
        Some(record) => {
            // A key keymint did not mint (wrong format or checksum) counts as
            // tampered, even if someone planted its hash next to it.
            let actual_sha256 = data_text(secret, DATA_KEY)
                .filter(|key| verify_checksum(key).is_ok())
                .map(sha256_hex);
            Observed::Present {
                record,
                actual_sha256,
            }
        }
        None => Observed::Missing,
    }
}

fn read_record(secret: &Secret) -> Option<KeyRecord> {
    let get = |key| annotation(secret, key);
    let time = |key| get(key).map(|v| v.parse::<Timestamp>().ok());
    let previous = match (get(PREVIOUS_ID), time(PREVIOUS_EXPIRES_AT)) {
        (Some(id), Some(Some(until))) => Some(PreviousKey {
            id: id.to_string(),
            until,
        }),
        (None, None) => None,
        _ => return None,
    };
    Some(KeyRecord {
        id: get(KEY_ID)?.to_string(),
        sha256: get(KEY_SHA256)?.to_string(),
        created_at: time(CREATED_AT)??,
        updated_at: time(UPDATED_AT)??,
        expires_at: match time(EXPIRES_AT) {
            None => None,
            Some(parsed) => Some(parsed?),
        },
        previous,
        rotations: get(ROTATIONS)?.parse().ok()?,
        rotate_request: get(ROTATE_REQUEST_HANDLED).map(str::to_string),
        bound_uid: get(BOUND_UID).map(str::to_string),
    })
}

/// Formats a timestamp the way every keymint field does: RFC 3339, seconds, UTC.
pub fn format_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Everything the Secret is built from.
pub struct SecretContent<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub owner: &'a str,
    pub record: &'a KeyRecord,
    pub key: &'a str,
    pub previous_key: Option<&'a str>,
    pub template_labels: &'a BTreeMap<String, String>,
    pub template_annotations: &'a BTreeMap<String, String>,
    /// Kind-specific annotations (e.g. an APIKey's permissions).
    pub extra_annotations: BTreeMap<String, String>,
    pub owner_reference: Option<OwnerReference>,
}

/// The Secret exactly as keymint applies it (every field it owns).
pub fn desired_secret(content: &SecretContent<'_>) -> Secret {
    let record = content.record;
    let mut labels: BTreeMap<String, String> = content
        .template_labels
        .iter()
        .filter(|(k, _)| !is_reserved_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());

    let mut annotations: BTreeMap<String, String> = content
        .template_annotations
        .iter()
        .filter(|(k, _)| !is_reserved_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.extend(content.extra_annotations.clone());
    let mut record_annotation = |key: &str, value: String| {
        annotations.insert(key.to_string(), value);
    };
    record_annotation(OWNER, content.owner.to_string());
    record_annotation(KEY_ID, record.id.clone());
    record_annotation(KEY_SHA256, record.sha256.clone());
    record_annotation(CREATED_AT, format_time(record.created_at));
    record_annotation(UPDATED_AT, format_time(record.updated_at));
    record_annotation(ROTATIONS, record.rotations.to_string());
    if let Some(expires_at) = record.expires_at {
        record_annotation(EXPIRES_AT, format_time(expires_at));
    }
    if let Some(request) = &record.rotate_request {
        record_annotation(ROTATE_REQUEST_HANDLED, request.clone());
    }
    if let Some(uid) = &record.bound_uid {
        record_annotation(BOUND_UID, uid.clone());
    }

    let text = |value: &str| ByteString(value.as_bytes().to_vec());
    let mut data = BTreeMap::from([
        (DATA_KEY.to_string(), text(content.key)),
        (DATA_ID.to_string(), text(&record.id)),
    ]);
    if let (Some(previous), Some(previous_key)) = (&record.previous, content.previous_key) {
        record_annotation(PREVIOUS_ID, previous.id.clone());
        record_annotation(PREVIOUS_EXPIRES_AT, format_time(previous.until));
        data.insert(DATA_PREVIOUS_KEY.into(), text(previous_key));
        data.insert(DATA_PREVIOUS_ID.into(), text(&previous.id));
    }

    Secret {
        metadata: ObjectMeta {
            name: Some(content.name.to_string()),
            namespace: Some(content.namespace.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: content.owner_reference.clone().map(|r| vec![r]),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.into()),
        data: Some(data),
        ..Default::default()
    }
}

/// Whether applying `desired` would change anything: a value differs, or a
/// field keymint owns (per `managedFields`) is no longer wanted. An up-to-date
/// Secret is never written, so a resync makes no writes.
pub fn needs_write(existing: Option<&Secret>, desired: &Secret) -> bool {
    let Some(existing) = existing else {
        return true;
    };
    let owned = OwnedFields::of(&existing.metadata);
    let differs = |wanted: Option<&BTreeMap<String, String>>,
                   found: Option<&BTreeMap<String, String>>,
                   owned: &BTreeSet<String>| {
        let wanted = wanted.cloned().unwrap_or_default();
        let found = found.cloned().unwrap_or_default();
        wanted.iter().any(|(k, v)| found.get(k) != Some(v))
            || owned.iter().any(|k| !wanted.contains_key(k))
    };
    let data_differs = {
        let wanted = desired.data.clone().unwrap_or_default();
        let found = existing.data.clone().unwrap_or_default();
        wanted.iter().any(|(k, v)| found.get(k) != Some(v))
            || owned.data.iter().any(|k| !wanted.contains_key(k))
    };
    let owner_refs_differ = {
        let wanted: BTreeSet<String> = desired
            .metadata
            .owner_references
            .iter()
            .flatten()
            .map(|r| r.uid.clone())
            .collect();
        let found: BTreeSet<String> = existing
            .metadata
            .owner_references
            .iter()
            .flatten()
            .map(|r| r.uid.clone())
            .collect();
        !wanted.is_subset(&found)
            || owned
                .owner_reference_uids
                .iter()
                .any(|uid| !wanted.contains(uid))
    };
    existing.type_ != desired.type_
        || differs(
            desired.metadata.labels.as_ref(),
            existing.metadata.labels.as_ref(),
            &owned.labels,
        )
        || differs(
            desired.metadata.annotations.as_ref(),
            existing.metadata.annotations.as_ref(),
            &owned.annotations,
        )
        || data_differs
        || owner_refs_differ
}

/// The Secret fields keymint's field manager owns, read from `managedFields`.
#[derive(Debug, Default)]
struct OwnedFields {
    labels: BTreeSet<String>,
    annotations: BTreeSet<String>,
    data: BTreeSet<String>,
    owner_reference_uids: BTreeSet<String>,
}

impl OwnedFields {
    fn of(metadata: &ObjectMeta) -> Self {
        let mut owned = OwnedFields::default();
        let entries = metadata.managed_fields.iter().flatten();
        for entry in entries.filter(|e| {
            e.manager.as_deref() == Some(FIELD_MANAGER) && e.operation.as_deref() == Some("Apply")
        }) {
            let Some(fields) = entry.fields_v1.as_ref().map(|f| &f.0) else {
                continue;
            };
            let names = |path: &[&str]| -> BTreeSet<String> {
                let mut node = fields;
                for step in path {
                    match node.get(*step) {
                        Some(next) => node = next,
                        None => return BTreeSet::new(),
                    }
                }
                node.as_object()
                    .map(|map| {
                        map.keys()
                            .filter_map(|k| k.strip_prefix("f:"))
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            owned.labels.extend(names(&["f:metadata", "f:labels"]));
            owned
                .annotations
                .extend(names(&["f:metadata", "f:annotations"]));
            owned.data.extend(names(&["f:data"]));
            if let Some(Value::Object(refs)) = fields
                .get("f:metadata")
                .and_then(|m| m.get("f:ownerReferences"))
            {
                for key in refs.keys() {
                    // Keys look like k:{"uid":"..."}.
                    if let Some(uid) = key
                        .strip_prefix("k:")
                        .and_then(|k| serde_json::from_str::<Value>(k).ok())
                        .and_then(|v| v.get("uid").and_then(Value::as_str).map(str::to_string))
                    {
                        owned.owner_reference_uids.insert(uid);
                    }
                }
            }
        }
        owned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};

    /// A well-formed token (valid checksum), the same in every test.
    fn token() -> String {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        crate::keys::mint_token_with(&mut rng, "ak", 256)
            .expose()
            .to_string()
    }

    /// Marks `secret` as applied by keymint's field manager, as the API server would.
    fn applied_by_keymint(mut secret: Secret) -> Secret {
        secret.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            ..Default::default()
        }]);
        secret
    }

    fn record() -> KeyRecord {
        KeyRecord {
            id: "ABC123".into(),
            sha256: sha256_hex(&token()),
            created_at: "2026-11-23T10:00:00Z".parse().expect("time"),
            updated_at: "2026-11-23T10:00:00Z".parse().expect("time"),
            expires_at: Some("2026-11-24T10:00:00Z".parse().expect("time")),
            previous: Some(PreviousKey {
                id: "OLD1".into(),
                until: "2026-11-23T11:00:00Z".parse().expect("time"),
            }),
            rotations: 2,
            rotate_request: Some("r1".into()),
            bound_uid: None,
        }
    }

    fn content<'a>(
        record: &'a KeyRecord,
        labels: &'a BTreeMap<String, String>,
        key: &'a str,
    ) -> SecretContent<'a> {
        SecretContent {
            name: "s",
            namespace: "ns",
            owner: "APIKey/ns/k",
            record,
            key,
            previous_key: Some("ak_old"),
            template_labels: labels,
            template_annotations: labels,
            extra_annotations: BTreeMap::new(),
            owner_reference: None,
        }
    }

    #[test]
    fn the_record_round_trips_through_the_secret() {
        let key = token();
        let record = record();
        let empty = BTreeMap::new();
        let secret = desired_secret(&content(&record, &empty, &key));
        assert_eq!(
            observe(&secret),
            Observed::Present {
                record: record.clone(),
                actual_sha256: Some(record.sha256.clone())
            }
        );
        assert_eq!(data_text(&secret, DATA_PREVIOUS_KEY), Some("ak_old"));
        assert_eq!(secret.type_.as_deref(), Some(SECRET_TYPE));
    }

    #[test]
    fn wipe_overwrites_every_value() {
        let key = token();
        let record = record();
        let empty = BTreeMap::new();
        let mut secret = desired_secret(&content(&record, &empty, &key));
        wipe(&mut secret);
        for value in secret.data.iter().flat_map(|d| d.values()) {
            assert!(value.0.iter().all(|b| *b == 0) || value.0.is_empty());
        }
        assert_eq!(
            data_text(&secret, DATA_KEY).map(|k| k.contains(&key)),
            Some(false)
        );
    }

    #[test]
    fn a_broken_record_reads_as_missing() {
        let key = token();
        let record = record();
        let empty = BTreeMap::new();
        let mut secret = desired_secret(&content(&record, &empty, &key));
        secret
            .metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .insert(CREATED_AT.into(), "yesterday".into());
        assert_eq!(observe(&secret), Observed::Missing);
    }

    #[test]
    fn reserved_template_keys_are_never_copied() {
        let key = token();
        let record = record();
        let labels = BTreeMap::from([
            (
                "app.kubernetes.io/instance".to_string(),
                "argo-app".to_string(),
            ),
            ("argocd.argoproj.io/instance".to_string(), "x".to_string()),
            (
                "kubernetes.io/service-account.name".to_string(),
                "default".to_string(),
            ),
            ("sub.keymint.dev/x".to_string(), "x".to_string()),
            ("app.kubernetes.io/name".to_string(), "billing".to_string()),
            ("team".to_string(), "payments".to_string()),
        ]);
        let secret = desired_secret(&content(&record, &labels, &key));
        let labels = secret.metadata.labels.expect("labels");
        assert_eq!(labels.get("team").map(String::as_str), Some("payments"));
        assert_eq!(
            labels.get("app.kubernetes.io/name").map(String::as_str),
            Some("billing")
        );
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some(MANAGED_BY)
        );
        assert_eq!(labels.len(), 3, "{labels:?}");
        let annotations = secret.metadata.annotations.expect("annotations");
        assert!(!annotations.contains_key("argocd.argoproj.io/instance"));
        assert!(!annotations.contains_key("app.kubernetes.io/instance"));
    }

    #[test]
    fn ownership_is_by_owner_annotation_and_type() {
        let key = token();
        let record = record();
        let empty = BTreeMap::new();
        let secret = applied_by_keymint(desired_secret(&content(&record, &empty, &key)));
        assert!(matches!(
            classify(Some(secret.clone()), "APIKey/ns/k"),
            Found::Ours(_)
        ));
        // A look-alike that another tool applied (e.g. synced from Git) is not ours.
        let planted = desired_secret(&content(&record, &empty, &key));
        assert!(matches!(
            classify(Some(planted), "APIKey/ns/k"),
            Found::Foreign { .. }
        ));
        assert!(matches!(
            classify(Some(secret.clone()), "APIKey/ns/other"),
            Found::Foreign { .. }
        ));
        let mut opaque = secret;
        opaque.type_ = Some("Opaque".into());
        assert!(matches!(
            classify(Some(opaque), "APIKey/ns/k"),
            Found::Foreign { .. }
        ));
        assert!(matches!(
            classify(Some(Secret::default()), "APIKey/ns/k"),
            Found::Foreign { owner: None }
        ));
        assert!(matches!(classify(None, "APIKey/ns/k"), Found::Nothing));
    }

    #[test]
    fn an_identical_secret_needs_no_write_but_a_dropped_owned_field_does() {
        let key = token();
        let record = record();
        let empty = BTreeMap::new();
        let desired = desired_secret(&content(&record, &empty, &key));
        let mut existing = desired.clone();
        assert!(!needs_write(Some(&existing), &desired));
        assert!(needs_write(None, &desired));

        // The grace period ended: previous-key is no longer wanted but still owned.
        let mut without_previous = record.clone();
        without_previous.previous = None;
        let smaller = desired_secret(&content(&without_previous, &empty, &key));
        existing.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({
                "f:data": {"f:key": {}, "f:id": {}, "f:previous-key": {}, "f:previous-id": {}},
                "f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}}}
            }))),
            ..Default::default()
        }]);
        assert!(needs_write(Some(&existing), &smaller));

        // A field someone else added is not ours to remove.
        let mut with_foreign_label = desired.clone();
        with_foreign_label
            .metadata
            .labels
            .as_mut()
            .expect("labels")
            .insert("added-by-user".into(), "x".into());
        assert!(!needs_write(Some(&with_foreign_label), &desired));

        // An edited value is written back.
        let mut edited = desired.clone();
        edited
            .data
            .as_mut()
            .expect("data")
            .insert(DATA_KEY.into(), ByteString(b"ak_other".to_vec()));
        assert!(needs_write(Some(&edited), &desired));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Keys shaped like what users (and attackers) write: reserved
        /// domains, look-alike subdomains, and ordinary keys.
        fn template_key() -> impl Strategy<Value = String> {
            let domain = prop_oneof![
                Just("kubernetes.io".to_string()),
                Just("k8s.io".to_string()),
                Just("argocd.argoproj.io".to_string()),
                Just("keymint.dev".to_string()),
                Just("app.kubernetes.io".to_string()),
                Just("kubernetes.io.evil.com".to_string()),
                "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}",
                "[a-z]{1,6}\\.(kubernetes\\.io|k8s\\.io|keymint\\.dev|argocd\\.argoproj\\.io)",
            ];
            let name = prop_oneof![
                Just("instance".to_string()),
                Just("managed-by".to_string()),
                Just("owner".to_string()),
                Just("key-sha256".to_string()),
                "[a-zA-Z0-9][-a-zA-Z0-9_.]{0,20}",
            ];
            prop_oneof![
                (domain, name).prop_map(|(d, n)| format!("{d}/{n}")),
                "[a-z][-a-z0-9]{0,20}"
            ]
        }

        proptest! {
            #[test]
            fn templates_never_set_reserved_keys_or_displace_keymints_own(
                labels in proptest::collection::btree_map(template_key(), "[a-z0-9]{0,12}", 0..24),
                annotations in proptest::collection::btree_map(template_key(), ".{0,40}", 0..24),
            ) {
                let record = record();
                let key = token();
                let mut content = content(&record, &labels, &key);
                content.template_annotations = &annotations;
                let secret = desired_secret(&content);
                let written_labels = secret.metadata.labels.clone().unwrap_or_default();
                let written_annotations = secret.metadata.annotations.clone().unwrap_or_default();
                prop_assert_eq!(written_labels.get(MANAGED_BY_LABEL).map(String::as_str), Some(MANAGED_BY));
                prop_assert_eq!(written_annotations.get(OWNER).map(String::as_str), Some("APIKey/ns/k"));
                prop_assert_eq!(written_annotations.get(KEY_SHA256), Some(&record.sha256));
                for key in labels.keys().chain(annotations.keys()) {
                    let ours = key == MANAGED_BY_LABEL || key.starts_with("keymint.dev/");
                    if is_reserved_key(key) && !ours {
                        prop_assert!(!written_labels.contains_key(key) && !written_annotations.contains_key(key), "{} was copied", key);
                    }
                }
                for key in written_labels.keys().chain(written_annotations.keys()) {
                    let ours = key == MANAGED_BY_LABEL || key.starts_with("keymint.dev/");
                    prop_assert!(ours || !is_reserved_key(key), "{} is reserved", key);
                }
                prop_assert_eq!(secret.type_.as_deref(), Some(SECRET_TYPE));
            }

            #[test]
            fn is_reserved_key_never_panics(key in ".{0,80}") {
                let _ = is_reserved_key(&key);
            }
        }
    }
}
