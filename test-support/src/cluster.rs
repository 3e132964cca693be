//! The control plane as keymint's tests use it: keymint's CRDs and the
//! operator's namespaces installed once per test binary, the shared operator
//! process, CRD install with a deadline, "create unless it exists",
//! server-side apply as the test's field manager, and a kubeconfig for a
//! ServiceAccount.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keymint_testenv::ControlPlane;
use kube::api::{Api, Patch, PatchParams, PostParams, ValidationDirective};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::builders::namespace;
use crate::process::Operator;

/// How long a test waits for the cluster or the operator to do something.
pub const WAIT: Duration = Duration::from_secs(60);
/// The operator's own namespace: RootKey Secrets go here by default.
pub const OPERATOR_NAMESPACE: &str = "keymint-system";
/// A second namespace RootKey Secrets may be written to.
pub const ROOT_KEY_NAMESPACE: &str = "keymint-roots";
/// The tests' field manager.
pub const TEST_MANAGER: &str = "e2e-test";

/// The control plane with keymint's CRDs and the operator's namespaces installed.
pub fn cluster() -> &'static ControlPlane {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        ControlPlane::shared();
        // Set-up runs on its own runtime: each test has its own.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let client = ControlPlane::shared().client().await.expect("client");
                install_crds(&client, TEST_MANAGER)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                for name in [OPERATOR_NAMESPACE, ROOT_KEY_NAMESPACE] {
                    create_if_absent(&Api::all(client.clone()), &namespace(name))
                        .await
                        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
                }
            });
        })
        .join()
        .expect("set-up panicked");
    });
    ControlPlane::shared()
}

/// The control plane with one operator running (the controller tests share it).
pub fn plane() -> &'static ControlPlane {
    operator();
    cluster()
}

/// The shared operator process (started on first use).
pub fn operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        Operator::start(
            "operator",
            &cluster().operator_kubeconfig_path(),
            &["--leader-elect=false"],
            &[],
        )
    })
}

/// The shared operator's log so far.
pub fn operator_log() -> String {
    operator().log()
}

/// The shared operator running, an admin client and a fresh namespace for one test.
pub async fn setup(prefix: &str) -> (kube::Client, String) {
    let plane = plane();
    let client = plane.client().await.expect("client");
    let namespace = plane.namespace(&client, prefix).await.expect("namespace");
    (client, namespace)
}

/// An admin client and a fresh namespace, with no operator started.
pub async fn fresh_namespace(prefix: &str) -> (kube::Client, String) {
    let plane = cluster();
    let client = plane.client().await.expect("client");
    let namespace = plane.namespace(&client, prefix).await.expect("namespace");
    (client, namespace)
}

/// Server-side applies `crd` as `manager` and waits (up to [`WAIT`]) until it
/// is established.
pub async fn apply_crd(
    client: &kube::Client,
    crd: &CustomResourceDefinition,
    manager: &str,
) -> Result<(), String> {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(crd),
    )
    .await
    .map_err(|e| format!("apply CRD {name}: {e}"))?;
    let deadline = Instant::now() + WAIT;
    loop {
        let established = crds
            .get(&name)
            .await
            .map_err(|e| format!("read CRD {name}: {e}"))?
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("CRD {name} not established within {WAIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Applies keymint's three CRDs as `manager`, each established.
pub async fn install_crds(client: &kube::Client, manager: &str) -> Result<(), String> {
    for crd in keymint::api::crds() {
        apply_crd(client, &crd, manager).await?;
    }
    Ok(())
}

/// Creates `object`; one that already exists (409) is fine.
pub async fn create_if_absent<K>(api: &Api<K>, object: &K) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Server-side applies `object` as the test's field manager, with strict field validation.
pub async fn apply<K>(api: &Api<K>, object: &K) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let mut params = PatchParams::apply(TEST_MANAGER).force();
    params.field_validation = Some(ValidationDirective::Strict);
    api.patch(&object.name_any(), &params, &Patch::Apply(object))
        .await
}

/// A kubeconfig (written into the control plane's directory) that
/// authenticates as the ServiceAccount `namespace/account` with a
/// TokenRequest token.
pub async fn service_account_kubeconfig(
    plane: &ControlPlane,
    client: &kube::Client,
    namespace: &str,
    account: &str,
) -> PathBuf {
    let token = plane
        .service_account_token(client, namespace, account)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{account}: {e}"));
    let admin = kube::config::Kubeconfig::read_from(plane.kubeconfig_path()).expect("kubeconfig");
    let ca = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority.clone())
        .expect("certificate-authority in the admin kubeconfig");
    let path = plane.dir().join(format!("{account}.kubeconfig"));
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {}\n    certificate-authority: {ca}\nusers:\n- name: {account}\n  user:\n    token: {token}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: {account}\ncurrent-context: local\n",
        plane.server()
    );
    std::fs::write(&path, config).expect("write kubeconfig");
    path
}
