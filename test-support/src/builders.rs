//! Manifests of keymint's three kinds, and the plain objects tests create
//! around them (namespaces, ServiceAccounts, Opaque Secrets).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use keymint::api::{API_VERSION, ApiKey, RootKey, ServiceAccountKey};
use kube::api::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// What [`manifest`] takes as metadata: a name, or the whole metadata object.
pub trait Metadata {
    fn into_metadata(self) -> Value;
}

impl Metadata for &str {
    fn into_metadata(self) -> Value {
        json!({ "name": self })
    }
}

impl Metadata for &String {
    fn into_metadata(self) -> Value {
        self.as_str().into_metadata()
    }
}

impl Metadata for Value {
    fn into_metadata(self) -> Value {
        self
    }
}

/// A keymint object of `kind` with `metadata` (a name, or the whole object) and `spec`.
pub fn manifest<K: DeserializeOwned>(kind: &str, metadata: impl Metadata, spec: Value) -> K {
    let metadata = metadata.into_metadata();
    serde_json::from_value(json!({
        "apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec
    }))
    .unwrap_or_else(|e| panic!("the {kind} manifest matches the types: {e}"))
}

pub fn api_key(name: &str, spec: Value) -> ApiKey {
    manifest("APIKey", name, spec)
}

pub fn service_account_key(name: &str, spec: Value) -> ServiceAccountKey {
    manifest("ServiceAccountKey", name, spec)
}

pub fn root_key(name: &str, spec: Value) -> RootKey {
    manifest("RootKey", name, spec)
}

/// The smallest APIKey spec: read permission, defaults for the rest.
pub fn read_only() -> Value {
    json!({"permissions": ["read"]})
}

/// The spec of a ServiceAccountKey bound to `account`.
pub fn bound_to(account: &str) -> Value {
    json!({"serviceAccountName": account})
}

/// Metadata with only a name.
pub fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    }
}

pub fn service_account(name: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: named(name),
        ..Default::default()
    }
}

pub fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: named(name),
        ..Default::default()
    }
}

/// An Opaque Secret with `string_data` (not keymint's: no label, no owner).
pub fn opaque_secret(name: &str, string_data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: named(name),
        string_data: Some(
            string_data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}
