//! The keymint API, group `keymint.dev`, version `v1alpha1`: the custom
//! resources [`RootKey`], [`ServiceAccountKey`] and [`ApiKey`] (kind `APIKey`),
//! the verifying side's [`KeyRing`],
//! their shared spec fields and status, the names keymint puts on Secrets, and
//! the CRDs generated from the types.

/// A key kind's spec with its CRD: the group, version, status, category and
/// columns all three kinds share, around the kind's own `#[kube(...)]`
/// attributes and columns (placed after Ready).
macro_rules! key_kind {
    (
        derives: [$($derive:ident),*],
        kube: [$($own:tt)*],
        extra_columns: [$($column:tt)*],
        $(#[$attr:meta])*
        pub struct $spec:ident { $($body:tt)* }
    ) => {
        // clippy's duplicated_attributes misfires on the repeated `type_ = ...`
        // of kube's `printcolumn(...)` lists.
        #[allow(clippy::duplicated_attributes)]
        #[derive(
            kube::CustomResource,
            kube::KubeSchema,
            serde::Serialize,
            serde::Deserialize,
            Clone,
            Debug,
            PartialEq
            $(, $derive)*
        )]
        #[kube(
            group = "keymint.dev",
            version = "v1alpha1",
            status = "KeyStatus",
            derive = "PartialEq",
            category = "keymint",
            $($own)*,
            printcolumn(
                name = "Ready",
                type_ = "string",
                json_path = ".status.conditions[?(@.type==\"Ready\")].status",
                description = "Whether the key is issued and in its Secret"
            ),
            $($column)*
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
        $(#[$attr])*
        pub struct $spec { $($body)* }
    };
}

mod api_key;
mod common;
mod consumer;
mod key_ring;
pub mod names;
mod root_key;
mod schema;
mod service_account_key;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use api_key::{
    ApiKey, ApiKeySpec, MAX_DESCRIPTION_LENGTH, MAX_PERMISSIONS, PERMISSION_PATTERN,
};
pub use common::{
    DEFAULT_ENTROPY_BITS, DURATION_MAX_LENGTH, DURATION_PATTERN, DeletionPolicy, KEY_ID_PATTERN,
    KeyFormat, KeySpec, KeySpecCommon, KeyStatus, MAX_DURATION_STR, MAX_ENTROPY_BITS,
    MIN_ENTROPY_BITS, PREFIX_PATTERN, RESERVED_APP_KEYS, RESERVED_KEY_DOMAINS, RevokedKey,
    SecretTemplate,
};
pub use consumer::{
    Consumer, ConsumerKind, ConsumerState, ConsumerStatus, MAX_CONSUMER_STATUSES, MAX_CONSUMERS,
};
pub use key_ring::{
    AllowedNamespaces, KeyRing, KeyRingRef, KeyRingSpec, KeyRingStatus, MAX_KEY_RINGS,
    NamespacesFrom,
};
pub use root_key::{RootKey, RootKeySpec};
pub use schema::{DNS1123_LABEL_PATTERN, DNS1123_SUBDOMAIN_PATTERN, RFC3339_PATTERN};
pub use service_account_key::{ServiceAccountKey, ServiceAccountKeySpec};

/// API group of all keymint resources.
pub const GROUP: &str = "keymint.dev";
/// API version of all keymint resources.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of all keymint resources.
pub const API_VERSION: &str = "keymint.dev/v1alpha1";
/// Category of all keymint resources (`kubectl get keymint`).
pub const CATEGORY: &str = "keymint";

pub use names::*;

/// Condition type reported on every key resource.
pub const CONDITION_READY: &str = "Ready";

/// Condition type reported on a key resource that names consumers: whether
/// every consumer runs the current key.
pub const CONDITION_CONSUMERS_ROLLED_OUT: &str = "ConsumersRolledOut";

/// The CRDs of all keymint resources: RootKey, ServiceAccountKey, APIKey, KeyRing.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        RootKey::crd(),
        ServiceAccountKey::crd(),
        ApiKey::crd(),
        KeyRing::crd(),
    ]
}

/// All CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

/// File name of a CRD, e.g. `rootkeys.keymint.dev.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    let name = crd
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| format!("{}.{}", crd.spec.names.plural, crd.spec.group));
    format!("{name}.yaml")
}
