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
use crate::api::KeyStatus;
use zeroize::Zeroizing;

use crate::keys::plan::{Change, KeyRecord, Observed, PreviousKey};
pub use crate::keys::signature::Claim;
use crate::keys::signature::{SigningKey, Subject};
use crate::keys::{sha256_bytes_hex, sha256_hex, verify_checksum};

pub use crate::api::names::record::{
    BOUND_UID, COMPROMISE_HANDLED, CREATED_AT, EXPIRES_AT, KEY_ID, KEY_SHA256, OWNER, OWNER_UID,
    PREVIOUS_EXPIRES_AT, PREVIOUS_ID, RECORD_SIGNATURE, ROTATE_REQUEST_HANDLED, ROTATIONS,
    UPDATED_AT,
};
pub use crate::api::names::{
    ANNOTATION_PREFIX, MANAGED_BY_LABEL, MANAGED_BY_VALUE as MANAGED_BY, SECRET_ID as DATA_ID,
    SECRET_KEY as DATA_KEY, SECRET_PREVIOUS_ID as DATA_PREVIOUS_ID,
    SECRET_PREVIOUS_KEY as DATA_PREVIOUS_KEY, SECRET_TYPE,
};
use crate::api::{RESERVED_APP_KEYS, RESERVED_KEY_DOMAINS};

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
// One short-lived value per reconcile: boxing the record would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Found {
    Nothing,
    /// Ours: keymint wrote it for this very resource, and its record is
    /// trusted (its signature verifies).
    Ours {
        secret: Box<Secret>,
        record: KeyRecord,
    },
    /// keymint issued a key to this Secret (the resource's status, which only
    /// keymint writes, says so), but the record in it does not verify: someone
    /// edited it. Nothing of it is kept; a new key replaces it.
    Tampered(Box<Secret>),
    /// Not provably this resource's: never written to.
    Foreign(Foreign),
}

/// Whose a foreign Secret is, as far as can be told without quoting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreign {
    /// Not a keymint Secret.
    Application,
    /// A keymint Secret of another resource (or made to look like one).
    OtherResource,
    /// A Secret keymint wrote for an earlier resource of the same name (deleted
    /// with `deletionPolicy: Retain` or orphaned): its key is not handed to
    /// the new resource.
    EarlierResource,
}

/// Tells our Secret from someone else's. Anyone who can write the Secret can
/// write its annotations, type and managedFields, so only the record's
/// signature (under the operator's key, bound to this resource's name and
/// UID and to the Secret's name) proves keymint wrote it for this resource.
/// A Secret written before records were signed is adopted when its record
/// matches the resource's status exactly (only keymint writes status); its
/// previous key is then not kept.
pub fn classify(
    secret: Option<Secret>,
    data: &DataDigests,
    claim: &Claim<'_>,
    key: &SigningKey,
    status: Option<&KeyStatus>,
) -> Found {
    let Some(secret) = secret else {
        return Found::Nothing;
    };
    if secret.type_.as_deref() != Some(SECRET_TYPE) {
        return Found::Foreign(Foreign::Application);
    }
    let record = read_record(&secret);
    let signature = annotation(&secret, RECORD_SIGNATURE);
    let previous_sha256 = data.values.get(DATA_PREVIOUS_KEY).cloned();
    let signed_for = |owner_uid: &str, record: &KeyRecord| {
        let subject = Subject {
            claim: Claim {
                owner_uid,
                ..*claim
            },
            record,
            previous_key_sha256: previous_sha256.as_deref(),
        };
        signature.is_some_and(|signature| key.verify(&subject, signature))
    };
    if let Some(record) = &record {
        // A genuine but older record put back (an earlier version of the
        // Secret) would bring a rotated-out key back: the status, which
        // follows every record keymint writes, is never newer than the
        // current one.
        let rolled_back = status
            .filter(|status| issued_here(status, claim))
            .and_then(|status| status.updated_at.as_ref())
            .is_some_and(|published| published.0 > record.updated_at);
        if signed_for(claim.owner_uid, record) && !rolled_back {
            let record = record.clone();
            return Found::Ours {
                secret: Box::new(secret),
                record,
            };
        }
        if signature.is_none()
            && let Some(status) = status
            && matches_status(record, status, claim.name)
        {
            // What the status cannot vouch for is not kept: the previous key,
            // and the bound UID (a ServiceAccountKey is re-issued once).
            let record = KeyRecord {
                previous: None,
                bound_uid: None,
                ..record.clone()
            };
            return Found::Ours {
                secret: Box::new(secret),
                record,
            };
        }
    }
    if status.is_some_and(|status| issued_here(status, claim)) {
        return Found::Tampered(Box::new(secret));
    }
    let earlier_uid = annotation(&secret, OWNER_UID);
    let earlier = match (&record, earlier_uid) {
        (Some(record), Some(uid)) if uid != claim.owner_uid => signed_for(uid, record),
        _ => false,
    };
    if earlier && annotation(&secret, OWNER) == Some(claim.owner) {
        Found::Foreign(Foreign::EarlierResource)
    } else if annotation(&secret, OWNER).is_some() {
        Found::Foreign(Foreign::OtherResource)
    } else {
        Found::Foreign(Foreign::Application)
    }
}

/// The resource's status says keymint issued a key to this Secret.
pub fn issued_here(status: &KeyStatus, claim: &Claim<'_>) -> bool {
    status.key_sha256.is_some()
        && status.secret_name.as_deref() == Some(claim.name)
        && status
            .secret_namespace
            .as_deref()
            .is_none_or(|namespace| namespace == claim.namespace)
}

/// An unsigned record that says exactly what the status says, down to the
/// rotate request it handled (a forged one would skip a requested rotation).
fn matches_status(record: &KeyRecord, status: &KeyStatus, secret_name: &str) -> bool {
    let time =
        |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| t.as_ref().map(|t| t.0);
    status.secret_name.as_deref() == Some(secret_name)
        && status.id.as_deref() == Some(record.id.as_str())
        && status.key_sha256.as_deref() == Some(record.sha256.as_str())
        && time(&status.created_at) == Some(record.created_at)
        && time(&status.updated_at) == Some(record.updated_at)
        && time(&status.expires_at) == record.expires_at
        && status.last_rotate_request == record.rotate_request
        && status
            .rotations
            .and_then(|r| u64::try_from(r).ok())
            .unwrap_or(0)
            == record.rotations
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

/// What keymint judges a Secret's data by: the SHA-256 of each value, never
/// the values, so a Secret can be judged from a view that holds no key.
/// (Serialized only into the startup views, see `known`.)
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataDigests {
    /// Hex SHA-256 of each data value, by name.
    pub values: BTreeMap<String, String>,
    /// The SHA-256 of `data.key`, only if it is a well-formed keymint key
    /// (format and checksum): a key keymint did not mint counts as tampered.
    pub minted_key_sha256: Option<String>,
}

impl DataDigests {
    pub fn of(secret: &Secret) -> Self {
        let values = secret
            .data
            .iter()
            .flatten()
            .map(|(name, value)| (name.clone(), sha256_bytes_hex(&value.0)))
            .collect();
        let minted_key_sha256 = data_text(secret, DATA_KEY)
            .filter(|key| verify_checksum(key).is_ok())
            .map(sha256_hex);
        DataDigests {
            values,
            minted_key_sha256,
        }
    }
}

/// What our Secret holds: its trusted record and the SHA-256 of the key
/// actually in it.
pub fn observe(data: &DataDigests, record: KeyRecord) -> Observed {
    Observed::Present {
        record,
        actual_sha256: data.minted_key_sha256.clone(),
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
        compromise: get(COMPROMISE_HANDLED).map(str::to_string),
    })
}

/// The key texts a Secret is written with.
pub struct KeyTexts {
    pub key: Zeroizing<String>,
    pub previous_key: Option<Zeroizing<String>>,
}

impl KeyTexts {
    /// Every key text, to scrub from messages that might quote them.
    pub fn all(&self) -> Vec<&str> {
        std::iter::once(self.key.as_str())
            .chain(self.previous_key.as_ref().map(|k| k.as_str()))
            .collect()
    }
}

impl KeyTexts {
    /// Empty stand-ins for the keys a Secret judged by its view keeps (the
    /// view holds none), as [`key_texts`] would carry them: never written,
    /// only compared, by the digests [`carry_key_digests`] puts in their place.
    pub fn carried_unread(observed: &Observed, found: &DataDigests) -> Self {
        let has_previous = matches!(observed, Observed::Present { record, .. } if record.previous.is_some())
            && found.values.contains_key(DATA_PREVIOUS_KEY);
        KeyTexts {
            key: Zeroizing::new(String::new()),
            previous_key: has_previous.then(|| Zeroizing::new(String::new())),
        }
    }
}

/// The digests of the keys carried over from `found`, in place of the
/// stand-ins' (a stand-in without a key to carry keeps its own digest, so
/// the Secret differs and is read).
pub fn carry_key_digests(desired: &mut DataDigests, found: &DataDigests) {
    for name in [DATA_KEY, DATA_PREVIOUS_KEY] {
        if let (Some(value), Some(digest)) = (desired.values.get_mut(name), found.values.get(name))
        {
            value.clone_from(digest);
        }
    }
}

/// The key texts to write: the freshly minted key, or the one found in a
/// Secret whose record verified; as previous key, the one just rotated out,
/// or the one already kept. Nothing is taken from an untrusted Secret.
/// `None` if no key is minted and none can be kept.
pub fn key_texts(
    existing: Option<&Secret>,
    observed: &Observed,
    minted: Option<&str>,
    change: &Change,
) -> Option<KeyTexts> {
    let trusted = match observed {
        Observed::Present { record, .. } => Some(record),
        _ => None,
    };
    let found = |field| {
        existing
            .filter(|_| trusted.is_some())
            .and_then(|s| data_text(s, field))
            .map(|k| Zeroizing::new(k.to_string()))
    };
    let current = found(DATA_KEY);
    let key = match minted {
        Some(token) => Zeroizing::new(token.to_string()),
        None => current.clone()?,
    };
    let previous_key = match change {
        Change::Rotate(_) => current,
        Change::Mint(_) => None,
        _ if trusted.is_some_and(|r| r.previous.is_some()) => found(DATA_PREVIOUS_KEY),
        _ => None,
    };
    Some(KeyTexts { key, previous_key })
}

/// Formats a timestamp the way every keymint field does: RFC 3339, seconds, UTC.
pub fn format_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Everything the Secret is built from.
pub struct SecretContent<'a> {
    pub claim: Claim<'a>,
    pub signing_key: &'a SigningKey,
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
    let claim = content.claim;
    // The record as written: a previous key without its text is not kept.
    let record = &KeyRecord {
        previous: content
            .record
            .previous
            .clone()
            .filter(|_| content.previous_key.is_some()),
        ..content.record.clone()
    };
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
    record_annotation(OWNER, claim.owner.to_string());
    record_annotation(OWNER_UID, claim.owner_uid.to_string());
    // Signed exactly as written: a previous key is kept only with its record.
    let previous_key_sha256 = record
        .previous
        .as_ref()
        .and(content.previous_key)
        .map(sha256_hex);
    let subject = Subject {
        claim,
        record,
        previous_key_sha256: previous_key_sha256.as_deref(),
    };
    record_annotation(RECORD_SIGNATURE, content.signing_key.sign(&subject));
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
    if let Some(compromise) = &record.compromise {
        record_annotation(COMPROMISE_HANDLED, compromise.clone());
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
            name: Some(claim.name.to_string()),
            namespace: Some(claim.namespace.to_string()),
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

/// The writes that bring a Secret to `desired`.
#[derive(Debug, PartialEq)]
pub struct Writes {
    /// Applying `desired` changes something: a value differs, or a field
    /// keymint owns (per `managedFields`) is no longer wanted. An up-to-date
    /// Secret is never written, so a resync makes no writes.
    pub apply: bool,
    /// A JSON merge patch removing what apply cannot (see [`stale_fields`]).
    pub remove: Option<Value>,
}

/// What it takes to bring `existing` to `desired`; keymint's field ownership
/// is read from `managedFields` once for both answers.
/// Data compare by digest, so `existing` may be a view without values.
pub fn writes(
    existing: Option<(&Secret, &DataDigests)>,
    desired: &Secret,
    desired_data: &DataDigests,
) -> Writes {
    let Some((existing, existing_data)) = existing else {
        return Writes {
            apply: true,
            remove: None,
        };
    };
    let owned = OwnedFields::of(&existing.metadata);
    Writes {
        apply: differs(existing, existing_data, desired, desired_data, &owned),
        remove: stale_fields(existing_data, desired_data, existing, desired, &owned),
    }
}

impl Writes {
    pub fn any(&self) -> bool {
        self.apply || self.remove.is_some()
    }
}

fn differs(
    existing: &Secret,
    existing_data: &DataDigests,
    desired: &Secret,
    desired_data: &DataDigests,
    owned: &OwnedFields,
) -> bool {
    let differs = |wanted: Option<&BTreeMap<String, String>>,
                   found: Option<&BTreeMap<String, String>>,
                   owned: &BTreeSet<String>| {
        let wanted = wanted.cloned().unwrap_or_default();
        let found = found.cloned().unwrap_or_default();
        wanted.iter().any(|(k, v)| found.get(k) != Some(v))
            || owned.iter().any(|k| !wanted.contains_key(k))
    };
    let data_differs = {
        let (wanted, found) = (&desired_data.values, &existing_data.values);
        wanted.iter().any(|(k, v)| found.get(k) != Some(v))
            || owned.data.iter().any(|k| !wanted.contains_key(k))
    };
    let owner_refs_differ = {
        let uids = |secret: &Secret| -> BTreeSet<String> {
            secret
                .metadata
                .owner_references
                .iter()
                .flatten()
                .map(|r| r.uid.clone())
                .collect()
        };
        let wanted = uids(desired);
        !wanted.is_subset(&uids(existing))
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

/// Key entries and record annotations that the Secret has, keymint does not
/// want, and server-side apply will not remove because keymint's field
/// manager does not own them (someone erased its managedFields, or planted
/// them): a JSON merge patch that removes them.
fn stale_fields(
    existing_data: &DataDigests,
    desired_data: &DataDigests,
    existing: &Secret,
    desired: &Secret,
    owned: &OwnedFields,
) -> Option<Value> {
    let data: serde_json::Map<String, Value> = existing_data
        .values
        .keys()
        .filter(|k| [DATA_KEY, DATA_ID, DATA_PREVIOUS_KEY, DATA_PREVIOUS_ID].contains(&k.as_str()))
        .filter(|k| !desired_data.values.contains_key(*k) && !owned.data.contains(*k))
        .map(|k| (k.clone(), Value::Null))
        .collect();
    let wanted_annotations = desired.metadata.annotations.as_ref();
    let annotations: serde_json::Map<String, Value> = existing
        .metadata
        .annotations
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(ANNOTATION_PREFIX))
        .filter(|k| {
            !wanted_annotations.is_some_and(|a| a.contains_key(*k))
                && !owned.annotations.contains(*k)
        })
        .map(|k| (k.clone(), Value::Null))
        .collect();
    if data.is_empty() && annotations.is_empty() {
        return None;
    }
    Some(serde_json::json!({"metadata": {"annotations": annotations}, "data": data}))
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
            compromise: None,
        }
    }

    const CLAIM: Claim<'static> = Claim {
        owner: "APIKey/ns/k",
        owner_uid: "uid-1",
        namespace: "ns",
        name: "s",
    };

    fn signing_key() -> &'static SigningKey {
        static KEY: std::sync::OnceLock<SigningKey> = std::sync::OnceLock::new();
        KEY.get_or_init(|| SigningKey::new(&[7; 32]).expect("key"))
    }

    fn classified(secret: Secret, claim: &Claim<'_>, status: Option<&KeyStatus>) -> Found {
        let data = DataDigests::of(&secret);
        classify(Some(secret), &data, claim, signing_key(), status)
    }

    /// [`writes`] for Secrets that hold their values.
    fn writes_full(existing: Option<&Secret>, desired: &Secret) -> Writes {
        let found = existing.map(DataDigests::of);
        writes(
            existing.zip(found.as_ref()),
            desired,
            &DataDigests::of(desired),
        )
    }

    fn tampered(secret: Secret, status: &KeyStatus) -> bool {
        matches!(classified(secret, &CLAIM, Some(status)), Found::Tampered(_))
    }

    /// The status keymint writes after issuing `record` to CLAIM's Secret.
    fn status_of(record: &KeyRecord) -> KeyStatus {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        KeyStatus {
            id: Some(record.id.clone()),
            key_sha256: Some(record.sha256.clone()),
            secret_name: Some(CLAIM.name.into()),
            created_at: Some(Time(record.created_at)),
            updated_at: Some(Time(record.updated_at)),
            expires_at: record.expires_at.map(Time),
            last_rotate_request: record.rotate_request.clone(),
            rotations: Some(i64::try_from(record.rotations).expect("small")),
            ..Default::default()
        }
    }

    /// The Secret keymint writes for `record`, with no template.
    fn written(record: &KeyRecord) -> Secret {
        desired_secret(&content(record, &BTreeMap::new(), &token()))
    }

    fn content<'a>(
        record: &'a KeyRecord,
        labels: &'a BTreeMap<String, String>,
        key: &'a str,
    ) -> SecretContent<'a> {
        SecretContent {
            claim: CLAIM,
            signing_key: signing_key(),
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
        let record = record();
        let secret = written(&record);
        let Found::Ours {
            secret: found,
            record: trusted,
        } = classified(secret.clone(), &CLAIM, None)
        else {
            panic!("a Secret keymint wrote verifies");
        };
        assert_eq!(
            observe(&DataDigests::of(&found), trusted),
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
        let record = record();
        let mut secret = written(&record);
        wipe(&mut secret);
        for value in secret.data.iter().flat_map(|d| d.values()) {
            assert!(value.0.iter().all(|b| *b == 0) || value.0.is_empty());
        }
        assert_eq!(
            data_text(&secret, DATA_KEY).map(|k| k.contains(&token())),
            Some(false)
        );
    }

    #[test]
    fn an_edited_record_is_tampered_when_keymint_issued_there_and_foreign_otherwise() {
        let key = token();
        let record = record();
        let empty = BTreeMap::new();
        let status = status_of(&record);
        let edits: [(&str, &str); 5] = [
            (CREATED_AT, "yesterday"),
            (CREATED_AT, "2099-01-01T00:00:00Z"),
            (KEY_ID, "FORGED"),
            (PREVIOUS_EXPIRES_AT, "2099-01-01T00:00:00Z"),
            (RECORD_SIGNATURE, "v1:00"),
        ];
        for (field, value) in edits {
            let mut secret = desired_secret(&content(&record, &empty, &key));
            secret
                .metadata
                .annotations
                .as_mut()
                .expect("annotations")
                .insert(field.into(), value.into());
            assert!(
                matches!(
                    classified(secret.clone(), &CLAIM, Some(&status)),
                    Found::Tampered(_)
                ),
                "{field}={value}"
            );
            assert!(
                matches!(
                    classified(secret, &CLAIM, None),
                    Found::Foreign(Foreign::OtherResource)
                ),
                "{field}={value} without a status that says keymint issued there"
            );
        }
        // A planted previous key is not covered by the record alone.
        let mut secret = desired_secret(&content(&record, &empty, &key));
        secret
            .data
            .as_mut()
            .expect("data")
            .insert(DATA_PREVIOUS_KEY.into(), ByteString(b"ak_planted".to_vec()));
        assert!(tampered(secret, &status));
    }

    #[test]
    fn an_earlier_signed_record_put_back_is_tampered_not_adopted() {
        let record = record();
        let earlier = written(&record);
        let later = KeyRecord {
            id: "NEWER".into(),
            updated_at: record.updated_at + jiff::SignedDuration::from_secs(60),
            ..record.clone()
        };
        let status = status_of(&later);
        assert!(tampered(earlier, &status));
        // The current record (or one newer than the status, after a crash
        // between the two writes) is ours.
        assert!(matches!(
            classified(written(&later), &CLAIM, Some(&status)),
            Found::Ours { .. }
        ));
        assert!(matches!(
            classified(written(&later), &CLAIM, Some(&status_of(&record))),
            Found::Ours { .. }
        ));
    }

    #[test]
    fn a_rotation_without_a_grace_period_still_verifies() {
        // The engine passes the rotated-out key, but with no grace period the
        // record keeps no previous key and neither does the Secret.
        let key = token();
        let record = KeyRecord {
            previous: None,
            ..record()
        };
        let empty = BTreeMap::new();
        let secret = desired_secret(&content(&record, &empty, &key));
        assert_eq!(data_text(&secret, DATA_PREVIOUS_KEY), None);
        assert!(matches!(
            classified(secret, &CLAIM, None),
            Found::Ours { .. }
        ));
    }

    #[test]
    fn an_unsigned_record_is_adopted_only_when_it_matches_the_status_and_loses_its_previous_key() {
        let record = record();
        let mut secret = written(&record);
        secret
            .metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .remove(RECORD_SIGNATURE);
        let status = status_of(&record);
        let Found::Ours {
            record: adopted, ..
        } = classified(secret.clone(), &CLAIM, Some(&status))
        else {
            panic!("a record written before signing is adopted when the status agrees");
        };
        assert_eq!(adopted.previous, None);
        assert_eq!(adopted.bound_uid, None);
        assert_eq!(adopted.id, record.id);
        // A forged "rotate request handled" would skip the requested rotation.
        let mut skipping = secret.clone();
        skipping
            .metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .insert(ROTATE_REQUEST_HANDLED.into(), "the-pending-request".into());
        assert!(tampered(skipping, &status));
        let forged = KeyStatus {
            id: Some("OTHER".into()),
            ..status
        };
        assert!(tampered(secret, &forged));
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
    fn ownership_is_proven_by_the_signature_for_this_resource_and_secret() {
        let record = record();
        let secret = written(&record);
        assert!(matches!(
            classified(secret.clone(), &CLAIM, None),
            Found::Ours { .. }
        ));
        // The same Secret claimed by another resource, or found under another
        // name, does not verify.
        let other = Claim {
            owner: "APIKey/ns/other",
            ..CLAIM
        };
        assert!(matches!(
            classified(secret.clone(), &other, None),
            Found::Foreign(Foreign::OtherResource)
        ));
        let copied = Claim {
            name: "copy",
            ..CLAIM
        };
        assert!(matches!(
            classified(secret.clone(), &copied, None),
            Found::Foreign(_)
        ));
        // A re-created resource of the same name (new UID) does not inherit it.
        let recreated = Claim {
            owner_uid: "uid-2",
            ..CLAIM
        };
        assert!(matches!(
            classified(secret.clone(), &recreated, None),
            Found::Foreign(Foreign::EarlierResource)
        ));
        // Signed under another operator's key: not ours.
        let stranger = SigningKey::new(&[8; 32]).expect("key");
        assert!(matches!(
            classify(
                Some(secret.clone()),
                &DataDigests::of(&secret),
                &CLAIM,
                &stranger,
                None
            ),
            Found::Foreign(_)
        ));
        let mut opaque = secret;
        opaque.type_ = Some("Opaque".into());
        assert!(matches!(
            classified(opaque, &CLAIM, None),
            Found::Foreign(Foreign::Application)
        ));
        assert!(matches!(
            classified(Secret::default(), &CLAIM, None),
            Found::Foreign(Foreign::Application)
        ));
        assert!(matches!(
            classify(None, &DataDigests::default(), &CLAIM, signing_key(), None),
            Found::Nothing
        ));
    }

    #[test]
    fn an_identical_secret_needs_no_write_but_a_dropped_owned_field_does() {
        let record = record();
        let desired = written(&record);
        let mut existing = desired.clone();
        assert!(!writes_full(Some(&existing), &desired).apply);
        assert!(writes_full(None, &desired).apply);

        // The grace period ended: previous-key is no longer wanted but still owned.
        let mut without_previous = record.clone();
        without_previous.previous = None;
        let smaller = written(&without_previous);
        existing.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({
                "f:data": {"f:key": {}, "f:id": {}, "f:previous-key": {}, "f:previous-id": {}},
                "f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}}}
            }))),
            ..Default::default()
        }]);
        assert!(writes_full(Some(&existing), &smaller).apply);

        // A field someone else added is not ours to remove.
        let mut with_foreign_label = desired.clone();
        with_foreign_label
            .metadata
            .labels
            .as_mut()
            .expect("labels")
            .insert("added-by-user".into(), "x".into());
        assert!(!writes_full(Some(&with_foreign_label), &desired).apply);

        // An edited value is written back.
        let mut edited = desired.clone();
        edited
            .data
            .as_mut()
            .expect("data")
            .insert(DATA_KEY.into(), ByteString(b"ak_other".to_vec()));
        assert!(writes_full(Some(&edited), &desired).apply);
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
