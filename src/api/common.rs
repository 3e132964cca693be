//! Spec fields and status shared by all three key kinds.
//!
//! The shared spec fields live in [`KeySpecCommon`], which every kind's spec
//! embeds with `#[serde(flatten)]`: on the wire (and in the CRD schema) they sit
//! directly under `spec`, as the API contract wants, while the controller reads
//! them through one type ([`KeySpec::common`]).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use kube::core::{Message, Reason, Rule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::schema::{
    DNS1123_LABEL_PATTERN, DNS1123_SUBDOMAIN_PATTERN, RFC3339_PATTERN, cel_str, no_nullable,
    object_schema,
};

// The schema's limits are the parsers' own (one definition, in `keys`).
pub use crate::keys::{
    DEFAULT_ENTROPY_BITS, DURATION_PATTERN, MAX_DURATION_STR, MAX_ENTROPY_BITS, MIN_ENTROPY_BITS,
};

/// Longest duration string the schema accepts.
pub const DURATION_MAX_LENGTH: u32 = 32;

/// Token prefix syntax (`format.prefix`).
pub const PREFIX_PATTERN: &str = "^[a-z][a-z0-9]{0,15}$";

/// Key id syntax (`status.id`, `status.previousId`): the seeds' ResourceId.
pub const KEY_ID_PATTERN: &str = "^[A-Z0-9]{1,20}$";

/// Most labels `secretTemplate.labels` may hold.
pub const MAX_TEMPLATE_LABELS: u32 = 64;
/// Most annotations `secretTemplate.annotations` may hold (32 values of at most
/// 4096 characters plus their keys stay under the API server's 256 KiB limit on
/// a Secret's annotations).
pub const MAX_TEMPLATE_ANNOTATIONS: u32 = 32;
/// Longest label or annotation key: a 253-character DNS prefix, `/` and a
/// 63-character name.
pub const MAX_METADATA_KEY_LENGTH: u32 = 317;
/// Longest label value (Kubernetes' own limit).
pub const MAX_LABEL_VALUE_LENGTH: u32 = 63;
/// Longest annotation value accepted in `secretTemplate.annotations`.
pub const MAX_ANNOTATION_VALUE_LENGTH: u32 = 4096;

/// Label value syntax (Kubernetes' own): empty, or alphanumerics with `-`, `_`,
/// `.` inside.
pub const LABEL_VALUE_PATTERN: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// Qualified-name syntax of a label or annotation key: an optional lowercase
/// DNS-subdomain prefix and `/`, then a name of 1..63 alphanumerics, `-`, `_`,
/// `.` that starts and ends alphanumeric.
pub const METADATA_KEY_PATTERN: &str = "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";

/// Key prefixes (with their subdomains) that `secretTemplate` may not set.
pub const RESERVED_KEY_DOMAINS: [&str; 4] = [
    "kubernetes.io",
    "k8s.io",
    "argocd.argoproj.io",
    "keymint.dev",
];

/// Keys under `app.kubernetes.io/` that `secretTemplate` may not set (the rest of
/// `app.kubernetes.io/` is allowed).
pub const RESERVED_APP_KEYS: [&str; 2] =
    ["app.kubernetes.io/instance", "app.kubernetes.io/managed-by"];

/// The fields every key kind has, flattened into each kind's `spec`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = no_nullable)]
#[x_kube(validation = renew_before_rule())]
pub struct KeySpecCommon {
    /// When the key should expire, as an RFC 3339 date-time, e.g.
    /// `2027-01-01T00:00:00Z`. Alone, every key minted for this resource expires
    /// at this instant; with `validFor`, a key expires after `validFor` but never
    /// later than `expiresAt` while `expiresAt` is still in the future. Once it
    /// has passed, rotated keys get the lifetime of their predecessor. Unset (and
    /// `validFor` unset): keys never expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = RFC3339_PATTERN), length(max = TIME_MAX_LENGTH))]
    #[x_kube(validation = expires_at_rule())]
    pub expires_at: Option<Time>,

    /// Lifetime of every key minted for this resource, as a Go duration of
    /// hours, minutes and seconds: `2160h` (90 days), `90m`, `1h30m`; from `1s`
    /// to `876000h` (100 years). The key is replaced by a new one when it
    /// expires (or `renewBefore` earlier). Unset: keys live until `expiresAt`,
    /// or forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH))]
    #[x_kube(validation = duration_rule("spec.validFor", "1s"))]
    pub valid_for: Option<String>,

    /// How long before a key expires it is replaced by a new one, as a Go
    /// duration (`360h`, `30m`), at most `876000h`. Must be shorter than
    /// `validFor`. Default: `0s`, rotate at expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH))]
    #[x_kube(validation = duration_rule("spec.renewBefore", "0s"))]
    pub renew_before: Option<String>,

    /// How long the previous key stays valid after a rotation, as a Go duration
    /// (`24h`, `15m`), at most `876000h`. During this time the Secret also
    /// holds `previous-key` and `previous-id`, so consumers can roll over
    /// without downtime. Default: `0s`, the previous key is dropped at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH))]
    #[x_kube(validation = duration_rule("spec.gracePeriod", "0s"))]
    pub grace_period: Option<String>,

    /// Name of the Secret (type `keymint.dev/key`) the key is written to, a
    /// DNS-1123 subdomain such as `billing-api-key`. Default: the name of this
    /// resource. A Secret of that name that keymint does not manage is never
    /// overwritten (the resource reports `Ready=False`, reason `SecretConflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS1123_SUBDOMAIN_PATTERN), length(max = 253))]
    pub secret_name: Option<String>,

    /// Extra labels and annotations copied onto the Secret, e.g. to let a
    /// workload's tooling find it.
    // Boxed, like `format`: most keys leave both unset, and every key is
    // cached (56 and 32 bytes of each cached key become 8 each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<Box<SecretTemplate>>,

    /// Shape of the generated token: `<prefix>_<random base62><checksum>`.
    /// Default: prefix `rk` (RootKey), `sak` (ServiceAccountKey) or `ak` (APIKey)
    /// and 256 bits of randomness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Box<KeyFormat>>,

    /// What happens to the Secret when this resource is deleted: `Delete` (the
    /// default) removes it with the resource, `Retain` leaves it (and the key in
    /// it) in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

impl KeySpecCommon {
    /// The Secret's name: `secretName`, else the resource's own name.
    pub fn secret_name<'a>(&'a self, resource_name: &'a str) -> &'a str {
        self.secret_name.as_deref().unwrap_or(resource_name)
    }

    /// `deletionPolicy`, defaulted.
    pub fn deletion_policy(&self) -> DeletionPolicy {
        self.deletion_policy.unwrap_or_default()
    }

    /// `format.entropyBits`, defaulted.
    pub fn entropy_bits(&self) -> u16 {
        self.format
            .as_ref()
            .and_then(|format| format.entropy_bits)
            .unwrap_or(DEFAULT_ENTROPY_BITS)
    }

    /// `format.prefix`, else `default_prefix`.
    pub fn prefix<'a>(&'a self, default_prefix: &'a str) -> &'a str {
        self.format
            .as_ref()
            .and_then(|format| format.prefix.as_deref())
            .unwrap_or(default_prefix)
    }

    /// `secretTemplate.labels` (empty when unset).
    pub fn template_labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.secret_template
            .as_ref()
            .map_or(&EMPTY, |template| &template.labels)
    }

    /// `secretTemplate.annotations` (empty when unset).
    pub fn template_annotations(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.secret_template
            .as_ref()
            .map_or(&EMPTY, |template| &template.annotations)
    }
}

/// What each kind's spec offers the controller, whatever the kind.
pub trait KeySpec {
    /// The fields all three kinds share.
    fn common(&self) -> &KeySpecCommon;

    /// Token prefix used when `format.prefix` is unset (`rk`, `sak`, `ak`).
    fn default_prefix(&self) -> &'static str;

    /// The token prefix to use: `format.prefix`, else [`KeySpec::default_prefix`].
    fn token_prefix(&self) -> &str {
        self.common().prefix(self.default_prefix())
    }
}

/// Extra metadata for the Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = no_nullable)]
pub struct SecretTemplate {
    /// Labels added to the Secret, e.g. `app.kubernetes.io/part-of: billing`. At
    /// most 64. Keys under `kubernetes.io/`, `k8s.io/`, `argocd.argoproj.io/`,
    /// `keymint.dev/` (or a subdomain of them) and the keys
    /// `app.kubernetes.io/instance` and `app.kubernetes.io/managed-by` are
    /// reserved and refused; the rest of `app.kubernetes.io/` is allowed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "template_labels_schema")]
    #[x_kube(
        validation = metadata_keys_rule("spec.secretTemplate.labels"),
        validation = reserved_keys_rule("spec.secretTemplate.labels"),
    )]
    pub labels: BTreeMap<String, String>,

    /// Annotations added to the Secret, e.g. `team.example.com/owner: billing`.
    /// At most 32, values of at most 4096 bytes. The same keys as for
    /// `labels` are reserved and refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "template_annotations_schema")]
    #[x_kube(
        validation = metadata_keys_rule("spec.secretTemplate.annotations"),
        validation = reserved_keys_rule("spec.secretTemplate.annotations"),
        validation = annotation_bytes_rule("spec.secretTemplate.annotations"),
    )]
    pub annotations: BTreeMap<String, String>,
}

/// Shape of the generated token.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = no_nullable)]
pub struct KeyFormat {
    /// Token prefix, so the key is recognisable (and secret scanners can find
    /// it): a lowercase letter and up to 15 lowercase letters or digits, e.g.
    /// `billing` gives `billing_3xK9...`. Default: `rk`, `sak` or `ak` by kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = PREFIX_PATTERN), length(max = 16))]
    pub prefix: Option<String>,

    /// Bits of randomness in the token, from 128 to 512. Default: 256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_ENTROPY_BITS, max = MAX_ENTROPY_BITS), extend("format" = "int32"))]
    pub entropy_bits: Option<u16>,
}

/// What happens to the Secret when the key resource is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeletionPolicy {
    /// The Secret is owned by the resource and deleted with it.
    #[default]
    Delete,
    /// The Secret (and the key in it) stays when the resource is deleted.
    Retain,
}

/// Observed state of a key resource: what the seed APIs return in their
/// response body, never the key itself.
// Every time in it is refused by the schema unless the controller can read it
// back (`MAX_STATUS_TIME`): one unreadable object would fail the list of its
// whole kind.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = no_nullable)]
pub struct KeyStatus {
    /// Id of the current key (`^[A-Z0-9]{1,20}$`), also in the Secret's `id`
    /// and in its annotation `keymint.dev/key-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = KEY_ID_PATTERN), length(max = 20))]
    pub id: Option<String>,

    /// When the current key was minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = RFC3339_PATTERN), length(max = TIME_MAX_LENGTH))]
    #[x_kube(validation = status_time_rule("status.createdAt"))]
    pub created_at: Option<Time>,

    /// When the current key or its expiry last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = RFC3339_PATTERN), length(max = TIME_MAX_LENGTH))]
    #[x_kube(validation = status_time_rule("status.updatedAt"))]
    pub updated_at: Option<Time>,

    /// When the current key expires; unset for a key that never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = RFC3339_PATTERN), length(max = TIME_MAX_LENGTH))]
    #[x_kube(validation = status_time_rule("status.expiresAt"))]
    pub expires_at: Option<Time>,

    /// When the current key will be replaced (`expiresAt` minus `renewBefore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = RFC3339_PATTERN), length(max = TIME_MAX_LENGTH))]
    #[x_kube(validation = status_time_rule("status.renewalTime"))]
    pub renewal_time: Option<Time>,

    /// Name of the Secret holding the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS1123_SUBDOMAIN_PATTERN), length(max = 253))]
    pub secret_name: Option<String>,

    /// Namespace of the Secret holding the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS1123_LABEL_PATTERN), length(max = 63))]
    pub secret_namespace: Option<String>,

    /// Lowercase hex SHA-256 of the current token (never the token itself), so
    /// a verifier can check a presented key; also in the Secret's annotation
    /// `keymint.dev/key-sha256`.
    #[serde(rename = "keySHA256", default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-f0-9]{64}$"), length(max = 64))]
    pub key_sha256: Option<String>,

    /// Id of the key the current one replaced, while it is still in its grace
    /// period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = KEY_ID_PATTERN), length(max = 20))]
    pub previous_id: Option<String>,

    /// When the previous key stops being valid (end of its grace period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = RFC3339_PATTERN), length(max = TIME_MAX_LENGTH))]
    #[x_kube(validation = status_time_rule("status.previousExpiresAt"))]
    pub previous_expires_at: Option<Time>,

    /// Lowercase hex SHA-256 of the previous key during its grace period, for
    /// the key rings that list it.
    #[serde(
        rename = "previousKeySHA256",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(regex(pattern = "^[a-f0-9]{64}$"), length(max = 64))]
    pub previous_key_sha256: Option<String>,

    /// Keys of this resource marked compromised (`keymint.dev/compromised`),
    /// newest first, at most 4, each until it would have expired: key rings
    /// list them as revoked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub revoked_keys: Vec<RevokedKey>,

    /// The consumers named in `spec.consumers`, as keymint last saw them,
    /// at most 32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = super::consumer::MAX_CONSUMER_STATUSES))]
    pub consumers: Vec<super::consumer::ConsumerStatus>,

    /// How many times the key has been rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub rotations: Option<i64>,

    /// The last value of the annotation `keymint.dev/rotate-request` that was
    /// acted upon; setting the annotation to a different value rotates the key
    /// once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub last_rotate_request: Option<String>,

    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,

    /// Standard conditions. `Ready` is `True` with reason `KeyIssued` once the
    /// key is in its Secret, else `False` with reason `SecretConflict`,
    /// `ServiceAccountNotFound`, `NamespaceNotAllowed` or `InvalidSpec`.
    /// `ConsumersRolledOut` (only with `spec.consumers`) is `True` with reason
    /// `RolledOut` once every consumer runs the current key, else `False` with
    /// reason `RollingOut`, or `RolloutTimedOut` when `gracePeriod` ended
    /// first (its message names the consumers that did not finish).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// A key marked compromised.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = no_nullable)]
pub struct RevokedKey {
    /// Id of the leaked key.
    #[schemars(regex(pattern = KEY_ID_PATTERN), length(max = 20))]
    pub id: String,

    /// Lowercase hex SHA-256 of the leaked key.
    #[serde(rename = "keySHA256")]
    #[schemars(regex(pattern = "^[a-f0-9]{64}$"), length(max = 64))]
    pub key_sha256: String,

    /// When it was revoked.
    #[schemars(regex(pattern = RFC3339_PATTERN), length(max = TIME_MAX_LENGTH))]
    #[x_kube(validation = status_time_rule("status.revokedKeys[].revokedAt"))]
    pub revoked_at: Time,

    /// Until when key rings list it as revoked (when it would have expired).
    #[schemars(regex(pattern = RFC3339_PATTERN), length(max = TIME_MAX_LENGTH))]
    #[x_kube(validation = status_time_rule("status.revokedKeys[].until"))]
    pub until: Time,
}

impl KeyStatus {
    /// The condition of the given type, if any.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|condition| condition.type_ == type_)
    }
}

/// A CEL rule bounding a duration field to `min ..= MAX_DURATION_STR`.
///
/// It is guarded so that it does not fail on a string the field's `pattern`
/// already refuses: the API server evaluates CEL rules even when a `pattern`
/// did not match (only type, required, enum, maxLength and maxItems errors
/// stop it), and `duration()` of such a string is an evaluation error.
fn duration_rule(field: &str, min: &str) -> Rule {
    Rule::new(format!(
        "!self.matches({}) || (duration(self) >= duration({}) && duration(self) <= duration({}))",
        cel_str(DURATION_PATTERN),
        cel_str(min),
        cel_str(MAX_DURATION_STR),
    ))
    .message(Message::Message(format!(
        "{field} must be at least {min} and at most {MAX_DURATION_STR}"
    )))
    .reason(Reason::FieldValueInvalid)
}

/// Latest `expiresAt` accepted: the controller's timestamps (jiff) end on
/// 9999-12-30, and an object it cannot read would stall the watch of its kind.
pub const MAX_EXPIRES_AT: &str = "9999-12-30T00:00:00Z";

/// `expiresAt` no later than [`MAX_EXPIRES_AT`] (the field's `date-time`
/// format makes it a CEL timestamp).
fn expires_at_rule() -> Rule {
    Rule::new(format!("self <= timestamp({})", cel_str(MAX_EXPIRES_AT)))
        .message(Message::Message(format!(
            "spec.expiresAt must not be later than {MAX_EXPIRES_AT}"
        )))
        .reason(Reason::FieldValueInvalid)
}

/// Latest time accepted anywhere in `status`: `jiff::Timestamp::MAX`, the last
/// instant `k8s_openapi`'s `Time` can hold. A later one (`9999-12-31T23:59:59Z`
/// passes the API server's `date-time` format) would make the object
/// unreadable to the controller, and with it every list of its kind. The
/// earliest time [`RFC3339_PATTERN`] admits (`0000-01-01T00:00:00+23:59`) is
/// well inside jiff's range (it starts in year -9999), so no lower bound is
/// needed.
pub const MAX_STATUS_TIME: &str = "9999-12-30T22:00:00.999999999Z";

/// Longest RFC 3339 date-time [`RFC3339_PATTERN`] admits
/// (`9999-12-30T22:00:00.999999999+23:59`).
pub const TIME_MAX_LENGTH: u32 = 35;

/// A status time no later than [`MAX_STATUS_TIME`].
pub(super) fn status_time_rule(field: &str) -> Rule {
    Rule::new(status_time_cel())
        .message(Message::Message(status_time_message(field)))
        .reason(Reason::FieldValueInvalid)
}

fn status_time_cel() -> String {
    format!("self <= timestamp({})", cel_str(MAX_STATUS_TIME))
}

fn status_time_message(field: &str) -> String {
    format!("{field} must not be later than {MAX_STATUS_TIME}")
}

/// Annotation values bounded in bytes (the Secret's 256 KiB limit is in bytes;
/// `maxLength` counts characters, up to 4 bytes each).
fn annotation_bytes_rule(field: &str) -> Rule {
    Rule::new(format!(
        "self.all(k, size(bytes(self[k])) <= {MAX_ANNOTATION_VALUE_LENGTH})"
    ))
    .message(Message::Message(format!(
        "{field}: values must be at most {MAX_ANNOTATION_VALUE_LENGTH} bytes"
    )))
    .reason(Reason::FieldValueInvalid)
}

/// `renewBefore` < `validFor` when both are set (and both well-formed).
fn renew_before_rule() -> Rule {
    let pattern = cel_str(DURATION_PATTERN);
    Rule::new(format!(
        "!has(self.validFor) || !has(self.renewBefore) || !self.validFor.matches({pattern}) || \
         !self.renewBefore.matches({pattern}) || duration(self.renewBefore) < duration(self.validFor)"
    ))
    .message("spec.renewBefore must be shorter than spec.validFor")
    .field_path(".renewBefore")
    .reason(Reason::FieldValueInvalid)
}

/// Every key of a label/annotation map is a well-formed qualified name.
fn metadata_keys_rule(field: &str) -> Rule {
    Rule::new(format!(
        "self.all(k, size(k) <= {MAX_METADATA_KEY_LENGTH} && k.matches({}) && !k.matches({}))",
        cel_str(METADATA_KEY_PATTERN),
        // The prefix is a DNS subdomain: at most 253 characters.
        cel_str("^[^/]{254,}/"),
    ))
    .message(Message::Message(format!(
        "{field}: keys must be qualified names (an optional DNS subdomain of at most 253 \
         characters and '/', then 1 to 63 letters, digits, '-', '_' or '.'), at most \
         {MAX_METADATA_KEY_LENGTH} characters"
    )))
    .reason(Reason::FieldValueInvalid)
}

/// No key of a label/annotation map is reserved.
fn reserved_keys_rule(field: &str) -> Rule {
    let mut reserved: Vec<String> = Vec::new();
    for domain in RESERVED_KEY_DOMAINS {
        reserved.push(format!("k.startsWith({})", cel_str(&format!("{domain}/"))));
        reserved.push(format!("k.contains({})", cel_str(&format!(".{domain}/"))));
    }
    let app_allowed = std::iter::once(format!("k.startsWith({})", cel_str("app.kubernetes.io/")))
        .chain(
            RESERVED_APP_KEYS
                .iter()
                .map(|key| format!("k != {}", cel_str(key))),
        )
        .collect::<Vec<_>>()
        .join(" && ");
    Rule::new(format!(
        "self.all(k, ({app_allowed}) || !({}))",
        reserved.join(" || ")
    ))
    .message(Message::Message(format!(
        "{field}: keys under kubernetes.io/, k8s.io/, argocd.argoproj.io/, keymint.dev/ (or a \
         subdomain of them) and app.kubernetes.io/instance|managed-by are reserved"
    )))
    .reason(Reason::FieldValueForbidden)
}

fn template_labels_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    object_schema(json!({
        "type": "object",
        "maxProperties": MAX_TEMPLATE_LABELS,
        "additionalProperties": {
            "type": "string",
            "maxLength": MAX_LABEL_VALUE_LENGTH,
            "pattern": LABEL_VALUE_PATTERN,
        },
    }))
}

fn template_annotations_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    object_schema(json!({
        "type": "object",
        "maxProperties": MAX_TEMPLATE_ANNOTATIONS,
        "additionalProperties": {
            "type": "string",
            "maxLength": MAX_ANNOTATION_VALUE_LENGTH,
        },
    }))
}

/// `metav1.Condition` with the bounds upstream declares for it (so CEL cost
/// estimates and stored sizes stay bounded), as a list keyed by `type`.
pub(super) fn conditions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    object_schema(json!({
        "type": "array",
        "maxItems": 16,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "type": {
                    "description": "Type of condition in CamelCase or in foo.example.com/CamelCase, e.g. `Ready`.",
                    "type": "string",
                    "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
                },
                "status": {
                    "description": "Status of the condition: True, False or Unknown.",
                    "type": "string",
                    "enum": ["True", "False", "Unknown"],
                },
                "observedGeneration": {
                    "description": "The metadata.generation the condition was set based upon.",
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0,
                },
                "lastTransitionTime": {
                    "description": "When the condition last changed from one status to another.",
                    "type": "string",
                    "format": "date-time",
                    "maxLength": TIME_MAX_LENGTH,
                    "pattern": RFC3339_PATTERN,
                    "x-kubernetes-validations": [{
                        "rule": status_time_cel(),
                        "message": status_time_message("status.conditions[].lastTransitionTime"),
                        "reason": "FieldValueInvalid",
                    }],
                },
                "reason": {
                    "description": "Machine-readable CamelCase reason for the condition's last transition, e.g. `KeyIssued`.",
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1024,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                },
                "message": {
                    "description": "Human-readable details about the transition; may be empty.",
                    "type": "string",
                    "maxLength": 32768,
                },
            },
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    use serde_json::Value;

    #[test]
    fn max_status_time_is_the_last_instant_time_can_hold() {
        let max: Timestamp = MAX_STATUS_TIME.parse().expect("MAX_STATUS_TIME parses");
        assert_eq!(max, Timestamp::MAX);
        assert!(max.checked_add(SignedDuration::from_nanos(1)).is_err());
        for later in [
            "9999-12-30T22:00:01Z",
            "9999-12-31T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "9999-12-30T22:00:00-00:01",
        ] {
            assert!(
                serde_json::from_value::<Time>(json!(later)).is_err(),
                "{later} is readable: the bound is not jiff's"
            );
        }
        // What the controller writes (second precision) stays within the bound
        // and the pattern, even at jiff's maximum.
        let written = serde_json::to_value(Time(Timestamp::MAX)).expect("Time serialises");
        let written = written.as_str().expect("a string");
        assert!(written.parse::<Timestamp>().expect("parses") <= max);
        assert!(
            regex::Regex::new(RFC3339_PATTERN)
                .expect("regex")
                .is_match(written)
        );
    }

    #[test]
    fn every_time_the_pattern_admits_within_the_bounds_is_readable() {
        let pattern = regex::Regex::new(RFC3339_PATTERN).expect("regex");
        for time in [
            // The earliest instant the pattern admits, and year 1.
            "0000-01-01T00:00:00+23:59",
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-01-01T00:00:00Z",
            MAX_STATUS_TIME,
            // The longest string the pattern admits.
            "9999-12-30T23:59:59.999999999+23:59",
        ] {
            assert!(pattern.is_match(time), "{time}");
            assert!(time.len() <= TIME_MAX_LENGTH as usize, "{time}");
            serde_json::from_value::<Time>(json!(time))
                .unwrap_or_else(|e| panic!("{time} does not parse: {e}"));
        }
        assert_eq!(
            "9999-12-30T22:00:00.999999999+23:59".len(),
            TIME_MAX_LENGTH as usize
        );
    }

    /// Every `date-time` in every CRD (spec and status, conditions included)
    /// carries the pattern, the length bound and a CEL upper bound naming its
    /// field.
    #[test]
    fn every_crd_time_is_bounded() {
        fn walk(path: &str, schema: &Value, found: &mut Vec<String>) {
            if schema.get("format").and_then(Value::as_str) == Some("date-time") {
                assert_eq!(schema["pattern"], json!(RFC3339_PATTERN), "{path}");
                assert_eq!(schema["maxLength"], json!(TIME_MAX_LENGTH), "{path}");
                let rules = schema["x-kubernetes-validations"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{path}: no CEL rule"));
                assert!(
                    rules.iter().any(|rule| {
                        rule["rule"]
                            .as_str()
                            .is_some_and(|r| r.starts_with("self <= timestamp("))
                            && rule["message"]
                                .as_str()
                                .is_some_and(|m| m.starts_with(path))
                    }),
                    "{path}: no upper bound naming the field in {rules:?}"
                );
                found.push(path.to_string());
            }
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    let path = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{path}.{name}")
                    };
                    walk(&path, property, found);
                }
            }
            if let Some(items) = schema.get("items") {
                walk(&format!("{path}[]"), items, found);
            }
        }
        for crd in crate::api::crds() {
            let crd = serde_json::to_value(&crd).expect("CRD serialises");
            let mut found = Vec::new();
            walk(
                "",
                &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
                &mut found,
            );
            let expected: &[&str] = if crd["spec"]["names"]["kind"] == "KeyRing" {
                &["status.conditions[].lastTransitionTime", "status.updatedAt"]
            } else {
                &[
                    "spec.expiresAt",
                    "status.conditions[].lastTransitionTime",
                    "status.createdAt",
                    "status.expiresAt",
                    "status.previousExpiresAt",
                    "status.renewalTime",
                    "status.revokedKeys[].revokedAt",
                    "status.revokedKeys[].until",
                    "status.updatedAt",
                ]
            };
            assert_eq!(found, expected, "{}", crd["metadata"]["name"]);
        }
    }

    #[test]
    fn defaults() {
        let spec = KeySpecCommon::default();
        assert_eq!(spec.secret_name("web"), "web");
        assert_eq!(spec.deletion_policy(), DeletionPolicy::Delete);
        assert_eq!(spec.entropy_bits(), 256);
        assert_eq!(spec.prefix("ak"), "ak");
        assert!(spec.template_labels().is_empty());
        let spec = KeySpecCommon {
            secret_name: Some("other".into()),
            deletion_policy: Some(DeletionPolicy::Retain),
            format: Some(Box::new(KeyFormat {
                prefix: Some("billing".into()),
                entropy_bits: Some(128),
            })),
            ..Default::default()
        };
        assert_eq!(spec.secret_name("web"), "other");
        assert_eq!(spec.deletion_policy(), DeletionPolicy::Retain);
        assert_eq!(spec.entropy_bits(), 128);
        assert_eq!(spec.prefix("ak"), "billing");
    }
}
