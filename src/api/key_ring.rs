//! `KeyRing`: the verifying side. A service's namespace declares a ring, says
//! which namespaces may contribute keys to it, and keymint keeps a Secret in
//! that namespace listing the member keys' ids and hashes (never a key) for
//! the service's verify server. Keys join by naming the ring (`spec.keyRings`
//! of an APIKey or ServiceAccountKey): both sides consent.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::KubeSchema;
use kube::core::{Reason, Rule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{TIME_MAX_LENGTH, status_time_rule};
use super::schema::{
    DNS1123_LABEL_PATTERN, DNS1123_SUBDOMAIN_PATTERN, RFC3339_PATTERN, bounded_label_selector,
    no_nullable,
};

/// Most rings one key may join.
pub const MAX_KEY_RINGS: u32 = 8;

/// Desired state of a KeyRing.
#[allow(clippy::duplicated_attributes)]
#[derive(
    kube::CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq,
)]
#[kube(
    group = "keymint.dev",
    version = "v1alpha1",
    kind = "KeyRing",
    namespaced,
    status = "KeyRingStatus",
    derive = "PartialEq",
    category = "keymint",
    shortname = "kr",
    doc = "A KeyRing is the verifying side of keys: a service's namespace declares it, says which namespaces may contribute keys (its own by default), and keymint keeps a Secret in this namespace with a versioned document listing every member key's id, SHA-256, permissions, issuer and validity (never a key) for `keymint verify`. APIKeys and ServiceAccountKeys join by naming the ring in spec.keyRings; a key from a namespace the ring does not accept is never added and reports Ready=False, reason KeyRingNotAllowed.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the ring's Secret is up to date"
    ),
    printcolumn(
        name = "Members",
        type_ = "integer",
        json_path = ".status.members",
        description = "Keys listed in the ring (current and previous keys)"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".status.secretName",
        description = "Secret holding the ring document"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = no_nullable)]
pub struct KeyRingSpec {
    /// Which namespaces may contribute keys to this ring. Default: only this
    /// ring's own namespace (`from: Same`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,

    /// Name of the Secret (type `keymint.dev/keyring`, data key
    /// `keyring.json`) the ring document is written to, a DNS-1123 subdomain.
    /// Default: the ring's name. A Secret of that name that keymint does not
    /// manage is never overwritten (`Ready=False`, reason `SecretConflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS1123_SUBDOMAIN_PATTERN), length(max = 253))]
    pub secret_name: Option<String>,
}

/// Where member keys may come from, as Gateway API's `allowedRoutes.namespaces`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = no_nullable)]
#[x_kube(validation = selector_rule())]
pub struct AllowedNamespaces {
    /// `Same` (default): this namespace only. `Selector`: namespaces whose
    /// labels match `selector`. `All`: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<NamespacesFrom>,

    /// Namespace label selector, required with (and only with) `from: Selector`,
    /// e.g. `{matchLabels: {keymint.dev/ring-billing: "true"}}`. Namespace
    /// labels are set by whoever may label namespaces, not by their tenants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "label_selector_schema")]
    pub selector: Option<LabelSelector>,
}

/// See [`AllowedNamespaces::from`].
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NamespacesFrom {
    #[default]
    Same,
    Selector,
    All,
}

fn selector_rule() -> Rule {
    Rule::new("(has(self.from) && self.from == 'Selector') == has(self.selector)")
        .message("spec.allowedNamespaces.selector is required with from: Selector, and only then")
        .field_path(".selector")
        .reason(Reason::FieldValueInvalid)
}

/// A ring a key asks to join.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = no_nullable)]
pub struct KeyRingRef {
    /// Name of the KeyRing.
    #[schemars(regex(pattern = DNS1123_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub name: String,

    /// Namespace of the KeyRing (the verifying service's). Default: the key's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS1123_LABEL_PATTERN), length(max = 63))]
    pub namespace: Option<String>,
}

/// Observed state of a KeyRing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = no_nullable)]
pub struct KeyRingStatus {
    /// Keys listed in the ring document (current and previous keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<i64>,

    /// Name of the Secret holding the ring document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub secret_name: Option<String>,

    /// When the member list last changed (the document's `updatedAt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = RFC3339_PATTERN), length(max = TIME_MAX_LENGTH))]
    #[x_kube(validation = status_time_rule("status.updatedAt"))]
    pub updated_at: Option<Time>,

    /// Key resources that name this ring but are not accepted (or do not fit),
    /// as `namespace/name`, at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(max = 317)))]
    pub refused: Vec<String>,

    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`: the Secret holds the current document (reasons `RingUpdated`,
    /// `SecretConflict`, `RingTooLarge`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::common::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// A namespace label selector with bounded sizes (the upstream type's schema
/// has none).
fn label_selector_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_label_selector(
        "Namespace label selector: matchLabels and matchExpressions, ANDed; an empty selector matches every namespace.",
        "Labels a namespace must have, e.g. `{team: billing}`; at most 16.",
    )
}
