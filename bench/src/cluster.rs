//! Set-up on the control plane: keymint's CRDs and namespaces.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta};

use crate::Result;

const FIELD_MANAGER: &str = "keymint-bench";

/// Server-side applies keymint's CRDs and waits until each is established.
pub async fn install_crds(client: &kube::Client) -> Result<()> {
    Ok(keymint_test_support::install_crds(client, FIELD_MANAGER).await?)
}

/// Creates a namespace (an existing one is fine).
pub async fn create_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    keymint_test_support::create_if_absent(&Api::<Namespace>::all(client.clone()), &namespace)
        .await
        .map_err(|error| format!("create namespace {name}: {error}").into())
}

/// The API server's version, e.g. `v1.37.2`.
pub async fn server_version(client: &kube::Client) -> Result<String> {
    Ok(client.apiserver_version().await?.git_version)
}
