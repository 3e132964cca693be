//! `ServiceAccountKey`: a key bound to a Kubernetes ServiceAccount (the seed's
//! CreateServiceAccountKey).

use super::common::{KeySpec, KeySpecCommon, KeyStatus};
use super::schema::{DNS1123_SUBDOMAIN_PATTERN, no_nullable};

key_kind! {
    derives: [],
    kube: [
    kind = "ServiceAccountKey",
    namespaced,
    doc = "A ServiceAccountKey is an API key for a ServiceAccount of its namespace (the form of CreateServiceAccountKey, POST /api/org/v1/service-accounts/{sa}/keys). keymint mints the key, writes it to a Secret of type keymint.dev/key in the same namespace, reports its id and expiry in status (never the key) and rotates it before it expires. A missing ServiceAccount gives Ready=False, reason ServiceAccountNotFound, until it appears; deleting the ServiceAccount revokes the key, and re-creating it mints a new one.",
    shortname = "sak"
    ],
    extra_columns: [
    printcolumn(
        name = "Service Account",
        type_ = "string",
        json_path = ".spec.serviceAccountName",
        description = "ServiceAccount the key belongs to"
    ),
    ],
    /// Desired state of a ServiceAccountKey.
    #[serde(rename_all = "camelCase")]
    #[schemars(transform = no_nullable)]
    pub struct ServiceAccountKeySpec {
        /// The fields all key kinds share.
        #[serde(flatten)]
        pub common: KeySpecCommon,

        /// Name of the ServiceAccount, in this resource's namespace, the key belongs
        /// to, e.g. `billing-worker`. Required.
        #[schemars(regex(pattern = DNS1123_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
        pub service_account_name: String,

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

impl ServiceAccountKeySpec {
    /// Token prefix when `format.prefix` is unset.
    pub const DEFAULT_PREFIX: &'static str = "sak";

    /// A spec for `service_account_name` with every optional field unset.
    pub fn new(service_account_name: impl Into<String>) -> Self {
        Self {
            common: KeySpecCommon::default(),
            service_account_name: service_account_name.into(),
            key_rings: Vec::new(),
            consumers: Vec::new(),
        }
    }
}

impl KeySpec for ServiceAccountKeySpec {
    fn common(&self) -> &KeySpecCommon {
        &self.common
    }

    fn default_prefix(&self) -> &'static str {
        Self::DEFAULT_PREFIX
    }
}
