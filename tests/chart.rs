//! The Helm chart in `charts/keymint`: it lints and renders, its schema refuses
//! typos, its CRDs are the generated ones, its README table is current, it
//! installs into a Pod Security `restricted` namespace, the operator works
//! with exactly the chart's ServiceAccount and RBAC (all namespaces and a
//! fixed list), and the aggregated roles give `edit`/`admin`/`view` users
//! keys but never RootKeys.
//!
//! Its own test binary, so its own control plane. The chart's base release
//! (`keymint` in `keymint-system`, CRDs included) is installed before the
//! shared set-up of `e2e/support.rs` runs, which then only re-applies the CRDs.

#[allow(dead_code)]
#[path = "e2e/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use keymint::api::{ApiKey, RootKey, ServiceAccountKey};
use keymint_testenv::{ControlPlane, eventually};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::*;

/// The base release: installed once, with the CRDs, into the operator's namespace.
const RELEASE: &str = "keymint";
/// Its ServiceAccount (the release's full name).
const SERVICE_ACCOUNT: &str = "keymint";
/// A second release in the same namespace, in fixed-namespaces mode.
const SCOPED_RELEASE: &str = "keymint-scoped";
const PSA_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    repo().join("charts/keymint")
}

/// `bin/helm` (built by `make tools`), or a panic that says how to get it.
fn helm_bin() -> PathBuf {
    let helm = repo().join("bin/helm");
    assert!(
        helm.is_file(),
        "helm not found at {}: run `make tools` (or `make test`, which builds it)",
        helm.display()
    );
    helm
}

/// A scratch directory for this test binary (values files, helm's own state).
fn scratch() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chart-test");
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

/// The Kubernetes version the control plane runs (`v1.37.2`), for `helm template`.
fn kube_version() -> String {
    std::fs::read_to_string(repo().join("tests/controlplane/KUBERNETES_VERSION"))
        .expect("tests/controlplane/KUBERNETES_VERSION")
        .trim()
        .to_string()
}

/// Runs helm with its cache, config and data in the scratch directory.
fn helm(args: &[&str]) -> Output {
    let home = scratch().join("helm-home");
    Command::new(helm_bin())
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .output()
        .expect("run helm")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `helm template` of the chart with `args` (e.g. `--set`), as parsed documents.
fn render(args: &[&str]) -> Result<Vec<Value>, String> {
    let chart = chart_dir().display().to_string();
    let version = kube_version();
    let mut all = vec![
        "template",
        "keymint",
        chart.as_str(),
        "--namespace",
        "keymint-system",
        "--kube-version",
        version.as_str(),
    ];
    all.extend_from_slice(args);
    let output = helm(&all);
    if !output.status.success() {
        return Err(stderr(&output));
    }
    let text = String::from_utf8(output.stdout).expect("helm output is UTF-8");
    Ok(serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).expect("rendered YAML"))
        .filter(|document: &Value| !document.is_null())
        .collect())
}

/// `helm install` (or upgrade) of the chart against the test control plane.
fn helm_install(plane: &ControlPlane, release: &str, namespace: &str, args: &[&str]) -> Output {
    let chart = chart_dir().display().to_string();
    let kubeconfig = plane.kubeconfig_path().display().to_string();
    let mut all = vec![
        "upgrade",
        "--install",
        release,
        chart.as_str(),
        "--namespace",
        namespace,
        "--kubeconfig",
        kubeconfig.as_str(),
    ];
    all.extend_from_slice(args);
    helm(&all)
}

fn install_ok(plane: &ControlPlane, release: &str, namespace: &str, args: &[&str]) {
    let output = helm_install(plane, release, namespace, args);
    assert!(
        output.status.success(),
        "helm install {release} failed:\n{}",
        stderr(&output)
    );
}

/// The control plane with the chart's base release installed (CRDs from the
/// chart), then the shared set-up of `e2e/support.rs`.
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
            install_ok(plane, RELEASE, OPERATOR_NAMESPACE, &[]);
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
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(restricted_labels()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("create namespace {name}: {error}"),
    }
}

fn from_json<K: serde::de::DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("manifest")
}

fn api_key(name: &str) -> ApiKey {
    from_json(json!({
        "apiVersion": "keymint.dev/v1alpha1", "kind": "APIKey",
        "metadata": {"name": name}, "spec": {"permissions": ["read"]}
    }))
}

fn service_account_key(name: &str, account: &str) -> ServiceAccountKey {
    from_json(json!({
        "apiVersion": "keymint.dev/v1alpha1", "kind": "ServiceAccountKey",
        "metadata": {"name": name}, "spec": {"serviceAccountName": account}
    }))
}

fn root_key(name: &str, secret_namespace: &str) -> RootKey {
    from_json(json!({
        "apiVersion": "keymint.dev/v1alpha1", "kind": "RootKey",
        "metadata": {"name": name}, "spec": {"secretNamespace": secret_namespace}
    }))
}

fn service_account(name: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

// ---- chart files: no cluster needed ----

#[test]
fn helm_lint_passes() {
    let chart = chart_dir().display().to_string();
    let output = helm(&["lint", "--strict", &chart]);
    assert!(
        output.status.success(),
        "helm lint:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(&output)
    );
}

#[test]
fn chart_crds_are_copies_of_the_generated_crds() {
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.ends_with(".yaml"))
            .collect()
    };
    let generated = repo().join("crds");
    let copies = chart_dir().join("files/crds");
    assert_eq!(
        names(&copies),
        names(&generated),
        "charts/keymint/files/crds/ and crds/ hold different files: run `make chart-crds`"
    );
    for name in names(&generated) {
        assert_eq!(
            std::fs::read_to_string(copies.join(&name)).expect("chart copy"),
            std::fs::read_to_string(generated.join(&name)).expect("generated CRD"),
            "charts/keymint/files/crds/{name} differs from crds/{name}: run `make chart-crds`"
        );
    }
}

#[test]
fn crd_templates_render_the_generated_crds() {
    let crds = |args: &[&str]| -> Vec<Value> {
        render(args)
            .expect("renders")
            .into_iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
            .collect()
    };
    let rendered = crds(&[]);
    assert_eq!(rendered.len(), 3, "three CRDs by default");
    for mut crd in rendered {
        let name = crd["metadata"]["name"].as_str().expect("name").to_string();
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{name}: crds.keep defaults to true"
        );
        assert_eq!(
            crd["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "Helm"
        );
        let metadata = crd["metadata"].as_object_mut().expect("metadata");
        metadata.remove("labels");
        metadata.remove("annotations");
        let file = repo().join("crds").join(format!("{name}.yaml"));
        let generated: Value =
            serde_yaml::from_str(&std::fs::read_to_string(&file).expect("crds/ file"))
                .expect("CRD YAML");
        assert_eq!(crd, generated, "{name}: the template changed the CRD");
    }
    let unkept = crds(&["--set", "crds.keep=false"]);
    assert_eq!(unkept.len(), 3);
    assert!(
        unkept
            .iter()
            .all(|crd| crd["metadata"]["annotations"].is_null())
    );
    assert!(crds(&["--set", "crds.enabled=false"]).is_empty());
}

#[test]
fn values_table_in_the_chart_readme_is_up_to_date() {
    let output = Command::new("python3")
        .arg(repo().join("scripts/chart-docs.py"))
        .arg("--check")
        .output()
        .expect("python3 runs scripts/chart-docs.py");
    assert!(
        output.status.success(),
        "{}\nrun `make chart-docs`",
        stderr(&output)
    );
}

#[test]
fn schema_refuses_a_typo_and_a_wrong_type_naming_the_value() {
    let cases = [
        ("typo", "replicaCout: 2\n", "replicaCout"),
        (
            "nested-typo",
            "containerSecurityContext:\n  allowPrivilegeEscalaton: true\n",
            "allowPrivilegeEscalaton",
        ),
        (
            "wrong-type",
            "leaderElection:\n  leaseDuration: \"15s\"\n",
            "/leaderElection/leaseDuration",
        ),
        (
            "wrong-enum",
            "logging:\n  format: yaml\n",
            "/logging/format",
        ),
        ("negative", "replicaCount: -1\n", "/replicaCount"),
    ];
    for (name, values, named) in cases {
        let file = scratch().join(format!("schema-{name}.yaml"));
        std::fs::write(&file, values).expect("write values file");
        let error = render(&["-f", &file.display().to_string()])
            .expect_err(&format!("{name}: helm template accepted {values:?}"));
        assert!(
            error.contains("values don't meet the specifications of the schema")
                && error.contains(named),
            "{name}: the error does not name {named}:\n{error}"
        );
    }
    // The defaults and every optional object the chart offers are accepted.
    render(&[
        "--set",
        "podDisruptionBudget.enabled=true,podDisruptionBudget.minAvailable=50%",
        "--set",
        "serviceMonitor.enabled=true,networkPolicy.enabled=true",
        "--set",
        "watchNamespaces={team-a,team-b},rootKeyNamespaces={keymint-system,roots}",
    ])
    .expect("valid values render");
}

#[test]
fn chart_refuses_unsafe_combinations() {
    let cases: [(&[&str], &str); 2] = [
        (
            &["--set", "podDisruptionBudget.enabled=true"],
            "podDisruptionBudget.minAvailable (1) must be lower than replicaCount (1)",
        ),
        (
            &["--set", "replicaCount=2,leaderElection.enabled=false"],
            "replicaCount > 1 needs leaderElection.enabled",
        ),
    ];
    for (args, expected) in cases {
        let error = render(args).expect_err(&format!("{args:?} rendered"));
        assert!(error.contains(expected), "{args:?}: {error}");
    }
    let documents = render(&[
        "--set",
        "replicaCount=3,podDisruptionBudget.enabled=true,podDisruptionBudget.minAvailable=2",
    ])
    .expect("a PDB below the replica count renders");
    let budget = find(
        &documents,
        "PodDisruptionBudget",
        "keymint",
        Some("keymint-system"),
    );
    assert_eq!(budget["spec"]["minAvailable"], 2);
}

#[tokio::test]
async fn helm_install_refuses_a_typo_and_creates_nothing() {
    let plane = chart_cluster();
    let client = plane.client().await.expect("client");
    let namespace = plane.namespace(&client, "typo").await.expect("namespace");
    let file = scratch().join("install-typo.yaml");
    std::fs::write(&file, "crds:\n  enabeld: false\n").expect("write values file");
    let output = helm_install(
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

/// (apiGroup, resource, verb) triples of a rendered (Cluster)Role.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    out
}

fn triples(list: &[(&str, &[&str], &[&str])]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for (group, resources, verbs) in list {
        for resource in *resources {
            for verb in *verbs {
                out.insert((group.to_string(), resource.to_string(), verb.to_string()));
            }
        }
    }
    out
}

fn find<'a>(documents: &'a [Value], kind: &str, name: &str, namespace: Option<&str>) -> &'a Value {
    documents
        .iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"] == name
                && d["metadata"]["namespace"].as_str() == namespace
        })
        .unwrap_or_else(|| panic!("no {kind} {namespace:?}/{name} rendered"))
}

const SECRET_VERBS: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];
const READ: &[&str] = &["get", "list", "watch"];
const WATCH: &[&str] = &["list", "watch"];
const EVENT_VERBS: &[&str] = &["create", "patch"];

#[test]
fn operator_rbac_is_exactly_what_the_controller_uses() {
    let documents = render(&[]).expect("renders");
    for role in documents
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        for (group, resource, verb) in grants(role) {
            assert!(
                group != "*" && resource != "*" && verb != "*",
                "wildcard in {}",
                role["metadata"]["name"]
            );
            assert!(
                group != "apiextensions.k8s.io"
                    && group != "admissionregistration.k8s.io"
                    && !resource.starts_with("pods")
                    && !matches!(verb.as_str(), "escalate" | "bind" | "impersonate"),
                "{} grants {verb} on {group}/{resource}",
                role["metadata"]["name"]
            );
        }
    }
    let cluster_role = find(&documents, "ClusterRole", "keymint", None);
    assert_eq!(
        grants(cluster_role),
        triples(&[
            ("", &["secrets"], SECRET_VERBS),
            ("", &["serviceaccounts"], READ),
            ("events.k8s.io", &["events"], EVENT_VERBS),
            (
                "keymint.dev",
                &["rootkeys", "serviceaccountkeys", "apikeys"],
                WATCH
            ),
            (
                "keymint.dev",
                &[
                    "rootkeys/status",
                    "serviceaccountkeys/status",
                    "apikeys/status"
                ],
                &["patch"]
            ),
        ])
    );
    let lease_role = find(
        &documents,
        "Role",
        "keymint-leader-election",
        Some("keymint-system"),
    );
    assert_eq!(
        grants(lease_role),
        triples(&[(
            "coordination.k8s.io",
            &["leases"],
            &["create", "get", "patch"]
        )])
    );
    let named = lease_role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| {
            r["verbs"]
                .as_array()
                .is_some_and(|v| v.contains(&json!("patch")))
        })
        .expect("the patch rule");
    assert_eq!(named["resourceNames"], json!(["keymint-leader"]));

    // Aggregated roles: keys for admin/edit, read-only for view, no RootKeys.
    let edit = find(&documents, "ClusterRole", "keymint-edit", None);
    assert_eq!(
        edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert_eq!(
        edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"],
        "true"
    );
    let view = find(&documents, "ClusterRole", "keymint-view", None);
    assert_eq!(
        view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    for role in [edit, view] {
        assert!(
            grants(role)
                .iter()
                .all(|(_, r, _)| !r.starts_with("rootkeys")),
            "RootKeys are for cluster admins only"
        );
    }
    assert!(
        grants(view)
            .iter()
            .all(|(_, _, v)| READ.contains(&v.as_str())),
        "view is read-only"
    );
    assert!(
        grants(edit)
            .iter()
            .all(|(_, r, v)| !r.ends_with("/status") || READ.contains(&v.as_str())),
        "status stays the operator's"
    );

    // The record signing key: created, then read by name, in the release namespace.
    let record_key = find(
        &documents,
        "Role",
        "keymint-record-key",
        Some("keymint-system"),
    );
    assert_eq!(
        grants(record_key),
        triples(&[("", &["secrets"], &["create", "get"])])
    );
    assert!(
        record_key["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .filter(|rule| rule["verbs"] == serde_json::json!(["get"]))
            .all(|rule| rule["resourceNames"] == serde_json::json!(["keymint-record-key"])),
        "get is limited to the record key Secret"
    );

    // No leader election: no Lease Role.
    let single = render(&["--set", "leaderElection.enabled=false"]).expect("renders");
    assert!(
        single
            .iter()
            .all(|d| d["kind"] != "Role" || d["metadata"]["name"] == "keymint-record-key")
    );
}

#[test]
fn fixed_namespaces_get_roles_and_the_cluster_role_keeps_only_rootkeys() {
    let documents = render(&[
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "rootKeyNamespaces={keymint-system,roots}",
    ])
    .expect("renders");
    assert_eq!(
        grants(find(&documents, "ClusterRole", "keymint", None)),
        triples(&[
            ("keymint.dev", &["rootkeys"], WATCH),
            ("keymint.dev", &["rootkeys/status"], &["patch"]),
        ])
    );
    let watched = triples(&[
        ("", &["secrets"], SECRET_VERBS),
        ("", &["serviceaccounts"], READ),
        ("events.k8s.io", &["events"], EVENT_VERBS),
        ("keymint.dev", &["serviceaccountkeys", "apikeys"], WATCH),
        (
            "keymint.dev",
            &["serviceaccountkeys/status", "apikeys/status"],
            &["patch"],
        ),
    ]);
    let root_keys = triples(&[(
        "",
        &["secrets"],
        &["get", "list", "watch", "create", "patch"],
    )]);
    let events = triples(&[("events.k8s.io", &["events"], EVENT_VERBS)]);
    for (namespace, expected) in [
        ("team-a", &watched),
        ("team-b", &watched),
        ("keymint-system", &root_keys),
        ("roots", &root_keys),
        ("default", &events),
    ] {
        let role = find(&documents, "Role", "keymint", Some(namespace));
        assert_eq!(&grants(role), expected, "Role in {namespace}");
        let binding = find(&documents, "RoleBinding", "keymint", Some(namespace));
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "keymint", "namespace": "keymint-system"}])
        );
    }
    let roles = documents
        .iter()
        .filter(|d| d["kind"] == "Role" && d["metadata"]["name"] == "keymint")
        .count();
    assert_eq!(roles, 5, "one Role per namespace, no others");
    let deployment = find(&documents, "Deployment", "keymint", Some("keymint-system"));
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .expect("args")
            .contains(&json!("--watch-namespace=team-a,team-b")),
        "{args}"
    );
    assert!(
        args.as_array()
            .expect("args")
            .contains(&json!("--root-key-namespaces=keymint-system,roots")),
        "{args}"
    );
}

#[test]
fn pod_gets_its_api_token_only_in_the_operator_container() {
    let documents = render(&[]).expect("renders");
    let deployment = find(&documents, "Deployment", "keymint", Some("keymint-system"));
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["serviceAccountName"], SERVICE_ACCOUNT);
    let sources = &pod["volumes"][0]["projected"]["sources"];
    assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(sources[1]["configMap"]["items"][0]["key"], "ca.crt");
    assert_eq!(
        sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    assert_eq!(container["volumeMounts"][0]["readOnly"], true);
    let env: Vec<&str> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(env, ["POD_NAME", "POD_NAMESPACE"]);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["runAsUser"], 65532);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    // No PodDisruptionBudget at the default single replica.
    assert!(documents.iter().all(|d| d["kind"] != "PodDisruptionBudget"));
}

// ---- against the control plane ----

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
    install_ok(
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

/// A kubeconfig that authenticates as the chart's ServiceAccount `account`
/// in `namespace` with a TokenRequest token.
async fn service_account_kubeconfig(
    plane: &ControlPlane,
    client: &kube::Client,
    namespace: &str,
    account: &str,
) -> PathBuf {
    let token = plane
        .service_account_token(client, namespace, account)
        .await
        .expect("TokenRequest for the chart's ServiceAccount");
    let admin = kube::config::Kubeconfig::read_from(plane.kubeconfig_path()).expect("kubeconfig");
    let cluster = admin.clusters[0].cluster.as_ref().expect("cluster");
    let ca = cluster
        .certificate_authority
        .clone()
        .expect("certificate-authority");
    let path = plane.dir().join(format!("{account}.kubeconfig"));
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {}\n    certificate-authority: {ca}\nusers:\n- name: {account}\n  user:\n    token: {token}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: {account}\ncurrent-context: local\n",
        plane.server()
    );
    std::fs::write(&path, config).expect("write kubeconfig");
    path
}

/// Requests by `user` the API server refused with 403.
fn forbidden_requests(plane: &ControlPlane, user: &str) -> Vec<String> {
    plane
        .audit_events()
        .expect("audit log")
        .into_iter()
        .filter(|e| e.user.username == user)
        .filter(|e| e.response_status.as_ref().and_then(|s| s.code) == Some(403))
        .map(|e| format!("{} {}", e.verb, e.request_uri))
        .collect()
}

fn assert_never_forbidden(plane: &ControlPlane, operator: &Operator, user: &str) {
    assert_eq!(
        forbidden_requests(plane, user),
        Vec::<String>::new(),
        "requests refused by RBAC"
    );
    let log = operator.log();
    assert!(
        !log.to_lowercase().contains("forbidden") && !log.contains("code: 403"),
        "the operator log shows a refused request:\n{log}"
    );
}

async fn stop(operator: &Operator) {
    // SAFETY: SIGTERM to our own child process.
    unsafe { libc::kill(operator.pid(), libc::SIGTERM) };
    let status = eventually("the operator to exit after SIGTERM", WAIT, || async {
        operator
            .child
            .lock()
            .expect("child")
            .try_wait()
            .map_err(|e| e.to_string())?
            .ok_or("running".to_string())
    })
    .await;
    assert!(status.success(), "exit {status:?}:\n{}", operator.log());
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
    apply(&api_keys, &api_key("billing")).await.expect("APIKey");
    apply(&account_keys, &service_account_key("app-key", "app"))
        .await
        .expect("ServiceAccountKey");
    apply(&root_keys, &root_key(&root_name, root_namespace))
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
    eventually("the revoked key's Secret to be deleted", WAIT, || async {
        match secrets
            .get_opt("app-key")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
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
    stop(&operator).await;
    assert_eq!(
        lease_holder(&client, "keymint-leader").await,
        None,
        "the Lease was released"
    );
    assert_never_forbidden(plane, &operator, &user);

    // Fixed namespaces: a second release whose ClusterRole keeps only RootKeys.
    let scoped = plane.namespace(&client, "scoped").await.expect("namespace");
    let watch = format!("watchNamespaces={{{scoped}}}");
    let roots = format!("rootKeyNamespaces={{{OPERATOR_NAMESPACE},{ROOT_KEY_NAMESPACE}}}");
    install_ok(
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
    stop(&operator).await;
    assert_never_forbidden(plane, &operator, &scoped_user);
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
        &api_key("by-editor"),
        "an edit user",
    )
    .await;
    Api::<ServiceAccountKey>::namespaced(editor.clone(), &namespace)
        .create(
            &PostParams::default(),
            &service_account_key("by-editor", "editor"),
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
            &root_key(&format!("{namespace}-editor"), OPERATOR_NAMESPACE),
        )
        .await;
    assert!(is_forbidden(&refused), "edit user and RootKey: {refused:?}");

    // `admin` bound cluster-wide: keys in any namespace, still no RootKeys.
    let ns_admin = user_with_role(plane, &admin, &namespace, "admin", "admin", true).await;
    create_when_allowed(
        &Api::<ApiKey>::namespaced(ns_admin.clone(), &namespace),
        &api_key("by-admin"),
        "an admin user",
    )
    .await;
    let refused = Api::<RootKey>::all(ns_admin.clone())
        .create(
            &PostParams::default(),
            &root_key(&format!("{namespace}-admin"), OPERATOR_NAMESPACE),
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
        .create(&PostParams::default(), &api_key("by-viewer"))
        .await;
    assert!(
        is_forbidden(&refused),
        "view user creates an APIKey: {refused:?}"
    );
}
