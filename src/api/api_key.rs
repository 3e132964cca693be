//! `APIKey`: a namespaced API key carrying permissions (the seeds' CreateAPIKey).

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

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

/// Desired state of an APIKey.
// clippy's duplicated_attributes misfires on the repeated `type_ = ...` of
// kube's `printcolumn(...)` lists.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "keymint.dev",
    version = "v1alpha1",
    kind = "APIKey",
    root = "ApiKey",
    namespaced,
    doc = "An APIKey is an API key with a set of permissions, for use inside its namespace (the form of CreateAPIKey). keymint mints the key, writes it to a Secret of type keymint.dev/key in the same namespace with the permissions and description as annotations for verifiers, reports its id and expiry in status (never the key) and rotates it before it expires. The permissions are never used to grant Kubernetes access.",
    status = "KeyStatus",
    derive = "PartialEq",
    shortname = "ak",
    category = "keymint",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the key is issued and in its Secret"
    ),
    printcolumn(
        name = "Key ID",
        type_ = "string",
        json_path = ".status.id",
        description = "Id of the current key"
    ),
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".status.expiresAt",
        description = "When the current key expires (RFC 3339)"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".status.secretName",
        description = "Secret holding the key"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
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
