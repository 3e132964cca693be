//! `RootKey`: a cluster-scoped admin key (the seed's CreateRootKey).

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{KeySpec, KeySpecCommon, KeyStatus};
use super::schema::{DNS1123_LABEL_PATTERN, no_nullable};

/// Desired state of a RootKey.
// clippy's duplicated_attributes misfires on the repeated `type_ = ...` of
// kube's `printcolumn(...)` lists.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "keymint.dev",
    version = "v1alpha1",
    kind = "RootKey",
    doc = "A RootKey is a cluster-wide admin API key (the form of CreateRootKey, POST /api/admin/v1/keys). keymint mints the key, writes it to a Secret of type keymint.dev/key in spec.secretNamespace, reports its id and expiry in status (never the key) and rotates it before it expires. Only cluster admins should be allowed to create RootKeys.",
    status = "KeyStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "rk",
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
pub struct RootKeySpec {
    /// The fields all key kinds share.
    #[serde(flatten)]
    pub common: KeySpecCommon,

    /// Namespace of the Secret, a DNS-1123 label such as `keymint-system`.
    /// Default: the operator's own namespace. The operator only writes to the
    /// namespaces its `--root-key-namespaces` flag allows (by default its own);
    /// any other namespace gives `Ready=False`, reason `NamespaceNotAllowed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS1123_LABEL_PATTERN), length(max = 63))]
    pub secret_namespace: Option<String>,
}

impl RootKeySpec {
    /// Token prefix when `format.prefix` is unset.
    pub const DEFAULT_PREFIX: &'static str = "rk";

    /// The Secret's namespace: `secretNamespace`, else `operator_namespace`.
    pub fn secret_namespace<'a>(&'a self, operator_namespace: &'a str) -> &'a str {
        self.secret_namespace
            .as_deref()
            .unwrap_or(operator_namespace)
    }
}

impl KeySpec for RootKeySpec {
    fn common(&self) -> &KeySpecCommon {
        &self.common
    }

    fn default_prefix(&self) -> &'static str {
        Self::DEFAULT_PREFIX
    }
}
