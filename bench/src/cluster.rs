//! Set-up on the control plane: keymint's CRDs and namespaces (created, or
//! deleted and waited for).

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

/// Deletes a namespace and waits, polling with `deadline`, until it is gone
/// (the namespace controller deletes what it holds first).
pub async fn delete_namespace(
    client: &kube::Client,
    name: &str,
    deadline: std::time::Duration,
) -> Result<()> {
    let namespaces = Api::<Namespace>::all(client.clone());
    match namespaces.delete(name, &Default::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(error) => return Err(format!("delete namespace {name}: {error}").into()),
    }
    let started = std::time::Instant::now();
    while namespaces.get_opt(name).await?.is_some() {
        if started.elapsed() >= deadline {
            return Err(format!("namespace {name} still there after {deadline:?}").into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    Ok(())
}

/// The API server's version, e.g. `v1.37.2`.
pub async fn server_version(client: &kube::Client) -> Result<String> {
    Ok(client.apiserver_version().await?.git_version)
}
