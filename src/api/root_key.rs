//! `RootKey`: a cluster-scoped admin key (the seed's CreateRootKey).

use super::common::{KeySpec, KeySpecCommon, KeyStatus};
use super::schema::{DNS1123_LABEL_PATTERN, no_nullable};

key_kind! {
    derives: [Default],
    kube: [
    kind = "RootKey",
    doc = "A RootKey is a cluster-wide admin API key (the form of CreateRootKey, POST /api/admin/v1/keys). keymint mints the key, writes it to a Secret of type keymint.dev/key in spec.secretNamespace, reports its id and expiry in status (never the key) and rotates it before it expires. Only cluster admins should be allowed to create RootKeys.",
    derive = "Default",
    shortname = "rk"
    ],
    extra_columns: [

    ],
    /// Desired state of a RootKey.
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
