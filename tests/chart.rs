//! The Helm chart in `charts/keymint` on the control plane: `helm install`
//! refuses a typo, the release installs into a Pod Security `restricted`
//! namespace, the operator works with exactly the chart's ServiceAccount and
//! RBAC (all namespaces and a fixed list), and the aggregated roles give
//! `edit`/`admin`/`view` users keys but never RootKeys. `tests/chart_render.rs`
//! checks what the chart renders, without a cluster.
//!
//! Its own test binary, so its own control plane. The chart's base release
//! (`keymint` in `keymint-system`, CRDs included) is installed before the
//! shared set-up of `keymint_test_support::cluster` runs, which then only
//! re-applies the CRDs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use keymint::api::{ApiKey, RootKey, ServiceAccountKey};
use keymint_test_support::helm::{Helm, stderr};
use keymint_test_support::*;
use keymint_testenv::ControlPlane;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

/// The base release: installed once, with the CRDs, into the operator's namespace.
const RELEASE: &str = "keymint";
/// Its ServiceAccount (the release's full name).
const SERVICE_ACCOUNT: &str = "keymint";
/// A second release in the same namespace, in fixed-namespaces mode.
const SCOPED_RELEASE: &str = "keymint-scoped";
const PSA_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

fn helm() -> Helm {
    Helm::new(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chart-test"))
}

/// The control plane with the chart's base release installed (CRDs from the
/// chart), then the shared set-up.
fn chart_cluster() -> &'static ControlPlane {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let plane = ControlPlane::shared();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let client = plane.client().await.expect("client");
                create_restricted_namespace(&client, OPERATOR_NAMESPACE).await;
            });
            helm().install_ok(plane, RELEASE, OPERATOR_NAMESPACE, &[]);
        })
        .join()
        .expect("chart set-up panicked");
        // Re-applies the (same) CRDs and creates the operator's namespaces.
        cluster();
    });
    ControlPlane::shared()
}

fn restricted_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (PSA_ENFORCE.to_string(), "restricted".to_string()),
        (format!("{PSA_ENFORCE}-version"), "latest".to_string()),
    ])
}

/// Labels an existing namespace so its Pods must meet Pod Security `restricted`.
async fn enforce_restricted(client: &kube::Client, name: &str) {
    let patch = json!({"metadata": {"labels": restricted_labels()}});
    Api::<Namespace>::all(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("label the namespace");
}

/// A namespace whose Pods must meet Pod Security `restricted`.
async fn create_restricted_namespace(client: &kube::Client, name: &str) {
    let mut restricted = namespace(name);
    restricted.metadata.labels = Some(restricted_labels());
    create_if_absent(&Api::all(client.clone()), &restricted)
        .await
        .unwrap_or_else(|error| panic!("create namespace {name}: {error}"));
}

#[tokio::test]
async fn helm_install_refuses_a_typo_and_creates_nothing() {
    let plane = chart_cluster();
    let client = plane.client().await.expect("client");
    let namespace = plane.namespace(&client, "typo").await.expect("namespace");
    let helm = helm();
    let file = helm.scratch().join("install-typo.yaml");
    std::fs::write(&file, "crds:\n  enabeld: false\n").expect("write values file");
    let output = helm.install(
        plane,
        "typo",
        &namespace,
        &["-f", &file.display().to_string()],
    );
    let error = stderr(&output);
    assert!(!output.status.success(), "helm install accepted a typo");
    assert!(
        error.contains("/crds") && error.contains("enabeld"),
        "the error does not name crds.enabeld:\n{error}"
    );
    let deployments = Api::<Deployment>::namespaced(client, &namespace)
        .list(&ListParams::default())
        .await
        .expect("list deployments");
    assert!(deployments.items.is_empty(), "nothing was installed");
}

#[tokio::test]
async fn installs_into_a_restricted_namespace_and_its_pod_is_admitted() {
    let plane = chart_cluster();
    let client = plane.client().await.expect("client");
    let pods = Api::<Pod>::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    // No scheduler or kubelet: admitted Pods stay Pending, which is enough.
    let pod = eventually("the Deployment's Pod to be created", WAIT, || async {
        pods.list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .next()
            .ok_or_else(|| "no Pod yet".to_string())
    })
    .await;
    let spec = pod.spec.expect("spec");
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.service_account_name.as_deref(), Some(SERVICE_ACCOUNT));
    let volumes: Vec<String> = spec
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(volumes, ["kube-api-access"], "no injected token volume");
}

#[tokio::test]
async fn a_weakened_security_context_is_refused_by_pod_security() {
    let plane = chart_cluster();
    let client = plane.client().await.expect("client");
    let namespace = plane.namespace(&client, "weak").await.expect("namespace");
    enforce_restricted(&client, &namespace).await;
    helm().install_ok(
        plane,
        "weak",
        &namespace,
        &[
            "--set",
            "crds.enabled=false,rbac.aggregateToDefaultRoles=false",
            "--set",
            "containerSecurityContext.allowPrivilegeEscalation=true",
        ],
    );
    let replica_sets = Api::<ReplicaSet>::namespaced(client.clone(), &namespace);
    let message = eventually("the ReplicaSet to report ReplicaFailure", WAIT, || async {
        let list = replica_sets
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .iter()
            .flat_map(|rs| rs.status.iter().flat_map(|s| s.conditions.iter().flatten()))
            .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
            .and_then(|c| c.message.clone())
            .ok_or_else(|| format!("{} ReplicaSets, no failure yet", list.items.len()))
    })
    .await;
    assert!(
        message.contains("violates PodSecurity \"restricted")
            && message.contains("allowPrivilegeEscalation"),
        "{message}"
    );
    let events = Api::<CoreEvent>::namespaced(client.clone(), &namespace);
    let event = eventually("a FailedCreate Event", WAIT, || async {
        events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("FailedCreate"))
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    assert!(
        event
            .message
            .unwrap_or_default()
            .contains("violates PodSecurity \"restricted"),
        "the Event names the profile"
    );
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .expect("list pods");
    assert!(pods.items.is_empty(), "no Pod was admitted");
}

/// Requests by `user` the API server refused with 403.
fn forbidden_requests(user: &str) -> Vec<String> {
    since(0).by(user).with_code(403).lines()
}

fn assert_never_forbidden(operator: &Operator, user: &str) {
    assert_eq!(
        forbidden_requests(user),
        Vec::<String>::new(),
        "requests refused by RBAC"
    );
    let log = operator.log();
    assert!(
        !log.to_lowercase().contains("forbidden") && !log.contains("code: 403"),
        "the operator log shows a refused request:\n{log}"
    );
}

async fn lease_holder(client: &kube::Client, name: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .get_opt(name)
        .await
        .expect("get lease")
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Applies an APIKey, a ServiceAccountKey (and its account) in `namespace` and a
/// RootKey, waits until all are Ready with their Secrets, then revokes the
/// ServiceAccountKey by deleting its account.
async fn exercise(client: &kube::Client, namespace: &str, prefix: &str, root_namespace: &str) {
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    accounts
        .create(&PostParams::default(), &service_account("app"))
        .await
        .expect("create ServiceAccount");
    let api_keys = Api::<ApiKey>::namespaced(client.clone(), namespace);
    let account_keys = Api::<ServiceAccountKey>::namespaced(client.clone(), namespace);
    let root_keys = Api::<RootKey>::all(client.clone());
    let root_name = format!("{prefix}-{namespace}");
    apply(&api_keys, &api_key("billing", read_only()))
        .await
        .expect("APIKey");
    apply(
        &account_keys,
        &service_account_key("app-key", bound_to("app")),
    )
    .await
    .expect("ServiceAccountKey");
    apply(
        &root_keys,
        &root_key(&root_name, json!({"secretNamespace": root_namespace})),
    )
    .await
    .expect("RootKey");
    wait_ready(&api_keys, "billing").await;
    wait_ready(&account_keys, "app-key").await;
    wait_ready(&root_keys, &root_name).await;
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    for name in ["billing", "app-key"] {
        let secret = secrets.get(name).await.expect("the key's Secret");
        assert!(text(&secret, "key").is_some_and(|k| !k.is_empty()));
    }
    Api::<Secret>::namespaced(client.clone(), root_namespace)
        .get(&root_name)
        .await
        .expect("the RootKey's Secret");
    wait_event(client, namespace, "billing", "KeyIssued").await;
    wait_event(client, "default", &root_name, "KeyIssued").await;

    // Revocation deletes the Secret.
    accounts
        .delete("app", &DeleteParams::default())
        .await
        .expect("delete ServiceAccount");
    wait_reason(&account_keys, "app-key", "False", "ServiceAccountNotFound").await;
    wait_gone(
        &secrets,
        "app-key",
        "the revoked key's Secret to be deleted",
    )
    .await;
}

#[tokio::test]
async fn operator_works_with_exactly_the_charts_service_account() {
    let plane = chart_cluster();
    let client = plane.client().await.expect("client");

    // All namespaces: the base release's ClusterRole and Lease Role.
    let namespace = plane
        .namespace(&client, "identity")
        .await
        .expect("namespace");
    let kubeconfig =
        service_account_kubeconfig(plane, &client, OPERATOR_NAMESPACE, SERVICE_ACCOUNT).await;
    let user = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{SERVICE_ACCOUNT}");
    let operator = Operator::start(
        "chart-identity",
        &kubeconfig,
        &["--leader-elect=true", "--lease-name", "keymint-leader"],
        &[("POD_NAME", "chart-identity")],
    );
    exercise(&client, &namespace, "all", ROOT_KEY_NAMESPACE).await;
    assert_eq!(
        lease_holder(&client, "keymint-leader").await.as_deref(),
        Some("chart-identity")
    );
    operator.stop_cleanly().await;
    assert_eq!(
        lease_holder(&client, "keymint-leader").await,
        None,
        "the Lease was released"
    );
    assert_never_forbidden(&operator, &user);

    // Fixed namespaces: a second release whose ClusterRole keeps only RootKeys.
    let scoped = plane.namespace(&client, "scoped").await.expect("namespace");
    let watch = format!("watchNamespaces={{{scoped}}}");
    let roots = format!("rootKeyNamespaces={{{OPERATOR_NAMESPACE},{ROOT_KEY_NAMESPACE}}}");
    helm().install_ok(
        plane,
        SCOPED_RELEASE,
        OPERATOR_NAMESPACE,
        &[
            "--set",
            "crds.enabled=false,rbac.aggregateToDefaultRoles=false,replicaCount=0",
            "--set",
            &watch,
            "--set",
            &roots,
        ],
    );
    let kubeconfig =
        service_account_kubeconfig(plane, &client, OPERATOR_NAMESPACE, SCOPED_RELEASE).await;
    let scoped_user = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{SCOPED_RELEASE}");
    let operator = Operator::start(
        "chart-identity-scoped",
        &kubeconfig,
        &[
            "--leader-elect=true",
            "--lease-name",
            "keymint-scoped-leader",
            "--watch-namespace",
            &scoped,
        ],
        &[("POD_NAME", "chart-identity-scoped")],
    );
    exercise(&client, &scoped, "scoped", OPERATOR_NAMESPACE).await;
    assert_eq!(
        lease_holder(&client, "keymint-scoped-leader")
            .await
            .as_deref(),
        Some("chart-identity-scoped")
    );
    operator.stop_cleanly().await;
    assert_never_forbidden(&operator, &scoped_user);
}

/// A ServiceAccount in `namespace` bound to the built-in ClusterRole `role`
/// (by a RoleBinding there, or a ClusterRoleBinding when `cluster_wide`),
/// and a client authenticating as it.
async fn user_with_role(
    plane: &ControlPlane,
    admin: &kube::Client,
    namespace: &str,
    name: &str,
    role: &str,
    cluster_wide: bool,
) -> kube::Client {
    Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &service_account(name))
        .await
        .expect("create ServiceAccount");
    let role_ref = RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: "ClusterRole".into(),
        name: role.into(),
    };
    let subjects = Some(vec![Subject {
        kind: "ServiceAccount".into(),
        name: name.into(),
        namespace: Some(namespace.into()),
        ..Default::default()
    }]);
    if cluster_wide {
        let binding = ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some(format!("{namespace}-{name}")),
                ..Default::default()
            },
            role_ref,
            subjects,
        };
        Api::<ClusterRoleBinding>::all(admin.clone())
            .create(&PostParams::default(), &binding)
            .await
            .expect("create ClusterRoleBinding");
    } else {
        let binding = RoleBinding {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            role_ref,
            subjects,
        };
        Api::<RoleBinding>::namespaced(admin.clone(), namespace)
            .create(&PostParams::default(), &binding)
            .await
            .expect("create RoleBinding");
    }
    let token = plane
        .service_account_token(admin, namespace, name)
        .await
        .expect("token");
    plane.client_with_token(&token).await.expect("client")
}

fn is_forbidden<T>(result: &Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

/// Creates `object` as soon as RBAC allows it (the aggregation controller
/// updates the built-in roles shortly after the chart's ClusterRoles appear).
async fn create_when_allowed<K>(api: &Api<K>, object: &K, who: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    eventually(
        &format!("{who} to be allowed to create it"),
        WAIT,
        || async {
            match api.create(&PostParams::default(), object).await {
                Ok(_) => Ok(()),
                Err(error) => Err(error.to_string()),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn admin_edit_and_view_users_get_keys_through_aggregation_but_never_rootkeys() {
    let plane = chart_cluster();
    let admin = plane.client().await.expect("client");
    let namespace = plane.namespace(&admin, "users").await.expect("namespace");

    // `edit` in one namespace: manages APIKeys and ServiceAccountKeys there.
    let editor = user_with_role(plane, &admin, &namespace, "editor", "edit", false).await;
    create_when_allowed(
        &Api::<ApiKey>::namespaced(editor.clone(), &namespace),
        &api_key("by-editor", read_only()),
        "an edit user",
    )
    .await;
    Api::<ServiceAccountKey>::namespaced(editor.clone(), &namespace)
        .create(
            &PostParams::default(),
            &service_account_key("by-editor", bound_to("editor")),
        )
        .await
        .expect("an edit user creates a ServiceAccountKey");
    Api::<ApiKey>::namespaced(editor.clone(), &namespace)
        .delete("by-editor", &DeleteParams::default())
        .await
        .expect("an edit user deletes an APIKey");
    let refused = Api::<RootKey>::all(editor.clone())
        .create(
            &PostParams::default(),
            &root_key(
                &format!("{namespace}-editor"),
                json!({"secretNamespace": OPERATOR_NAMESPACE}),
            ),
        )
        .await;
    assert!(is_forbidden(&refused), "edit user and RootKey: {refused:?}");

    // `admin` bound cluster-wide: keys in any namespace, still no RootKeys.
    let ns_admin = user_with_role(plane, &admin, &namespace, "admin", "admin", true).await;
    create_when_allowed(
        &Api::<ApiKey>::namespaced(ns_admin.clone(), &namespace),
        &api_key("by-admin", read_only()),
        "an admin user",
    )
    .await;
    let refused = Api::<RootKey>::all(ns_admin.clone())
        .create(
            &PostParams::default(),
            &root_key(
                &format!("{namespace}-admin"),
                json!({"secretNamespace": OPERATOR_NAMESPACE}),
            ),
        )
        .await;
    assert!(
        is_forbidden(&refused),
        "admin user and RootKey: {refused:?}"
    );
    let listed = Api::<RootKey>::all(ns_admin.clone())
        .list(&ListParams::default())
        .await;
    assert!(
        is_forbidden(&listed),
        "admin user lists RootKeys: {listed:?}"
    );

    // `view`: reads keys, creates none.
    let viewer = user_with_role(plane, &admin, &namespace, "viewer", "view", false).await;
    let keys = Api::<ApiKey>::namespaced(viewer.clone(), &namespace);
    let listed = eventually("a view user to list APIKeys", WAIT, || async {
        keys.list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    assert!(
        listed
            .items
            .iter()
            .any(|k| k.metadata.name.as_deref() == Some("by-admin"))
    );
    Api::<ServiceAccountKey>::namespaced(viewer.clone(), &namespace)
        .get("by-editor")
        .await
        .expect("a view user reads a ServiceAccountKey");
    let refused = keys
        .create(&PostParams::default(), &api_key("by-viewer", read_only()))
        .await;
    assert!(
        is_forbidden(&refused),
        "view user creates an APIKey: {refused:?}"
    );
}
