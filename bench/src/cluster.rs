//! Set-up on the control plane: keymint's CRDs and namespaces.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

use crate::Result;

const FIELD_MANAGER: &str = "keymint-bench";
const ESTABLISH_DEADLINE: Duration = Duration::from_secs(60);

/// Server-side applies keymint's CRDs and waits until each is established.
pub async fn install_crds(client: &kube::Client) -> Result<()> {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in keymint::api::crds() {
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(|e| format!("apply CRD {name}: {e}"))?;
        let deadline = Instant::now() + ESTABLISH_DEADLINE;
        loop {
            let established = crds
                .get(&name)
                .await?
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if Instant::now() > deadline {
                return Err(
                    format!("CRD {name} not established within {ESTABLISH_DEADLINE:?}").into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
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
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(format!("create namespace {name}: {error}").into()),
    }
}

/// The API server's version, e.g. `v1.37.2`.
pub async fn server_version(client: &kube::Client) -> Result<String> {
    Ok(client.apiserver_version().await?.git_version)
}
