//! The keymint API, group `keymint.dev`, version `v1alpha1`: the custom
//! resources [`RootKey`], [`ServiceAccountKey`] and [`ApiKey`] (kind `APIKey`),
//! their shared spec fields and status, the names keymint puts on Secrets, and
//! the CRDs generated from the types.

mod api_key;
mod common;
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
    MIN_ENTROPY_BITS, PREFIX_PATTERN, RESERVED_APP_KEYS, RESERVED_KEY_DOMAINS, SecretTemplate,
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

/// Annotation on a key resource: set it to a new value to rotate the key once.
pub const ROTATE_REQUEST_ANNOTATION: &str = "keymint.dev/rotate-request";
/// Annotation on a Secret: id of the key it holds.
pub const KEY_ID_ANNOTATION: &str = "keymint.dev/key-id";
/// Annotation on a Secret: when the key it holds expires (RFC 3339).
pub const EXPIRES_AT_ANNOTATION: &str = "keymint.dev/expires-at";
/// Annotation on a Secret: lowercase hex SHA-256 of the key it holds.
pub const KEY_SHA256_ANNOTATION: &str = "keymint.dev/key-sha256";
/// Label on every Secret keymint manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on every Secret keymint manages.
pub const MANAGED_BY_VALUE: &str = "keymint";
/// Type of every Secret keymint writes.
pub const SECRET_TYPE: &str = "keymint.dev/key";

/// Secret data key: the token.
pub const SECRET_KEY: &str = "key";
/// Secret data key: the token's id.
pub const SECRET_ID: &str = "id";
/// Secret data key: the previous token, during a grace period.
pub const SECRET_PREVIOUS_KEY: &str = "previous-key";
/// Secret data key: the previous token's id, during a grace period.
pub const SECRET_PREVIOUS_ID: &str = "previous-id";

/// Condition type reported on every key resource.
pub const CONDITION_READY: &str = "Ready";
/// `Ready=True`: the key is minted and in its Secret.
pub const REASON_KEY_ISSUED: &str = "KeyIssued";
/// `Ready=False`: a Secret of that name exists and keymint does not manage it.
pub const REASON_SECRET_CONFLICT: &str = "SecretConflict";
/// `Ready=False`: the ServiceAccount of a ServiceAccountKey does not exist.
pub const REASON_SERVICE_ACCOUNT_NOT_FOUND: &str = "ServiceAccountNotFound";
/// `Ready=False`: a RootKey's `secretNamespace` is not allowed by the operator.
pub const REASON_NAMESPACE_NOT_ALLOWED: &str = "NamespaceNotAllowed";
/// `Ready=False`: the spec cannot be acted upon.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";

/// The CRDs of all keymint resources: RootKey, ServiceAccountKey, APIKey.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![RootKey::crd(), ServiceAccountKey::crd(), ApiKey::crd()]
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
