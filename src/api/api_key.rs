//! `APIKey`: a namespaced API key carrying permissions (the seeds' CreateAPIKey).

use super::common::{KeySpec, KeySpecCommon, KeyStatus};
use super::schema::no_nullable;

/// Syntax of one permission: lowercase letters, digits and `:`, `.`, `_`, `*`,
/// `-`, starting with a letter or digit, at most 63 characters (`read`,
/// `models:write`, `models:*`).
pub const PERMISSION_PATTERN: &str = "^[a-z0-9][a-z0-9:._*-]{0,62}$";

/// Most permissions one APIKey may carry.
pub const MAX_PERMISSIONS: u32 = 64;

/// Longest `description`.
pub const MAX_DESCRIPTION_LENGTH: u32 = 1024;

key_kind! {
    derives: [],
    kube: [
    kind = "APIKey",
    root = "ApiKey",
    namespaced,
    doc = "An APIKey is an API key with a set of permissions, for use inside its namespace (the form of CreateAPIKey). keymint mints the key, writes it to a Secret of type keymint.dev/key in the same namespace with the permissions and description as annotations for verifiers, reports its id and expiry in status (never the key) and rotates it before it expires. The permissions are never used to grant Kubernetes access.",
    shortname = "ak"
    ],
    extra_columns: [

    ],
    /// Desired state of an APIKey.
    #[serde(rename_all = "camelCase")]
    #[schemars(transform = no_nullable)]
    pub struct ApiKeySpec {
        /// The fields all key kinds share.
        #[serde(flatten)]
        pub common: KeySpecCommon,

        /// What the key may do, for the services that verify it (the seed's
        /// `action`), e.g. `[read, models:write]`. Required, 1 to 64 distinct
        /// entries of lowercase letters, digits and `:`, `.`, `_`, `*`, `-`,
        /// starting with a letter or digit, at most 63 characters each. Copied to
        /// the Secret's annotations; never used to grant Kubernetes access.
        #[schemars(length(min = 1, max = MAX_PERMISSIONS), inner(regex(pattern = PERMISSION_PATTERN), length(max = 63)))]
        #[x_kube(merge_strategy = ListMerge::Set)]
        pub permissions: Vec<String>,

        /// Free text saying what the key is for, e.g. `nightly billing export`; at
        /// most 1024 characters. Copied to the Secret's annotations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(max = MAX_DESCRIPTION_LENGTH))]
        pub description: Option<String>,

        /// Key rings (the verifying services' `KeyRing`s) this key joins, at
        /// most 8, e.g. `[{name: billing-api, namespace: billing}]`. A ring lists
        /// the key's id and hash (never the key) for its verify server, if the
        /// ring accepts this namespace; otherwise the key reports `Ready=False`,
        /// reason `KeyRingNotAllowed`, and is not added.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        #[schemars(length(max = super::key_ring::MAX_KEY_RINGS))]
        pub key_rings: Vec<super::key_ring::KeyRingRef>,

        /// Workloads in this namespace that read this key's Secret
        /// (Deployments, StatefulSets, DaemonSets, by name or label
        /// selector), at most 16, e.g. `[{kind: Deployment, name: web}]`. On
        /// every new key keymint sets the pod-template annotation
        /// `keymint.dev/key-<hash>` of each to the key id, so they roll out
        /// to the new key, and keeps the previous key until every one of them
        /// has finished (at most `gracePeriod`). A workload whose pod template
        /// does not read the Secret is never touched (`NotAHolder`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        #[schemars(length(max = super::consumer::MAX_CONSUMERS))]
        pub consumers: Vec<super::consumer::Consumer>,
    }
}

impl ApiKeySpec {
    /// Token prefix when `format.prefix` is unset.
    pub const DEFAULT_PREFIX: &'static str = "ak";

    /// A spec with the given permissions and every optional field unset.
    pub fn new<I, S>(permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            common: KeySpecCommon::default(),
            permissions: permissions.into_iter().map(Into::into).collect(),
            description: None,
            key_rings: Vec::new(),
            consumers: Vec::new(),
        }
    }
}

impl KeySpec for ApiKeySpec {
    fn common(&self) -> &KeySpecCommon {
        &self.common
    }

    fn default_prefix(&self) -> &'static str {
        Self::DEFAULT_PREFIX
    }
}
