//! The holders of a key: `spec.consumers` of an APIKey or ServiceAccountKey
//! names the workloads that read its Secret, and `status.consumers` says
//! which key each of them runs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use kube::core::{Reason, Rule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::{DNS1123_SUBDOMAIN_PATTERN, bounded_label_selector, no_nullable};

/// Most consumer entries one key may name.
pub const MAX_CONSUMERS: u32 = 16;

/// Most consumers a status lists (a selector can match many workloads).
pub const MAX_CONSUMER_STATUSES: u32 = 32;

/// A workload (or a label-selected set of them) in the key's namespace that
/// reads the key's Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = no_nullable)]
#[x_kube(validation = one_of_name_or_selector())]
pub struct Consumer {
    /// `Deployment`, `StatefulSet` or `DaemonSet` (group `apps`).
    pub kind: ConsumerKind,

    /// Name of the workload, in the key's namespace. Exactly one of `name`
    /// and `selector` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS1123_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub name: Option<String>,

    /// Label selector for workloads of `kind` in the key's namespace, e.g.
    /// `{matchLabels: {app: billing}}`. Exactly one of `name` and `selector`
    /// is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "workload_selector_schema")]
    pub selector: Option<LabelSelector>,
}

/// The workload kinds keymint rolls out.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum ConsumerKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl ConsumerKind {
    pub const ALL: [ConsumerKind; 3] = [
        ConsumerKind::Deployment,
        ConsumerKind::StatefulSet,
        ConsumerKind::DaemonSet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerKind::Deployment => "Deployment",
            ConsumerKind::StatefulSet => "StatefulSet",
            ConsumerKind::DaemonSet => "DaemonSet",
        }
    }
}

impl std::fmt::Display for ConsumerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn one_of_name_or_selector() -> Rule {
    Rule::new("has(self.name) != has(self.selector)")
        .message("spec.consumers: set exactly one of name and selector")
        .field_path(".name")
        .reason(Reason::FieldValueInvalid)
}

fn workload_selector_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_label_selector(
        "Workload label selector: matchLabels and matchExpressions, ANDed; an empty selector matches every workload of the kind in the namespace.",
        "Labels a workload must have, e.g. `{app: billing}`; at most 16.",
    )
}

/// One consumer as keymint last saw it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = no_nullable)]
pub struct ConsumerStatus {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: ConsumerKind,

    /// Name of the workload.
    #[schemars(length(max = 253))]
    pub name: String,

    /// The key id its pod template carries (`keymint.dev/key-<hash>`), if any.
    #[serde(rename = "keyID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20))]
    pub key_id: Option<String>,

    /// `RolledOut`: every replica runs the current key and is available, no
    /// Pod of an older revision is left. `RollingOut`: the template carries
    /// the current key, the rollout is not finished. `Pending`: the template
    /// does not carry the current key yet (waiting for the namespace's
    /// rollout limit or a burst of rotations to settle). `NotAHolder`: its
    /// pod template does not read the key's Secret, so keymint leaves it
    /// alone. `NotFound`: no such workload.
    pub state: ConsumerState,
}

/// See [`ConsumerStatus::state`].
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerState {
    RolledOut,
    RollingOut,
    Pending,
    NotAHolder,
    NotFound,
}

impl ConsumerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerState::RolledOut => "RolledOut",
            ConsumerState::RollingOut => "RollingOut",
            ConsumerState::Pending => "Pending",
            ConsumerState::NotAHolder => "NotAHolder",
            ConsumerState::NotFound => "NotFound",
        }
    }
}
