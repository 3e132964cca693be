//! The Helm chart in `charts/keymint`, without a cluster: it lints and
//! renders, its schema refuses typos and dangerous combinations, its CRDs are the
//! generated ones, its README table is current, and what it renders (RBAC,
//! the Pod's token) is exactly what the operator needs. `tests/chart.rs`
//! installs it on the control plane.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use keymint_test_support::helm::{Helm, chart_dir, kube_version, repo, stderr};
use serde_json::{Value, json};

/// The release's ServiceAccount (the release's full name).
const SERVICE_ACCOUNT: &str = "keymint";

fn helm() -> Helm {
    Helm::new(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chart-render"))
}

/// A scratch directory for this test binary's values files.
fn scratch() -> PathBuf {
    helm().scratch().to_path_buf()
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
    let output = helm().run(&all);
    if !output.status.success() {
        return Err(stderr(&output));
    }
    let text = String::from_utf8(output.stdout).expect("helm output is UTF-8");
    Ok(serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).expect("rendered YAML"))
        .filter(|document: &Value| !document.is_null())
        .collect())
}

#[test]
fn helm_lint_passes() {
    let chart = chart_dir().display().to_string();
    let output = helm().run(&["lint", "--strict", &chart]);
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
    assert_eq!(rendered.len(), 4, "four CRDs by default");
    for mut crd in rendered {
        let name = crd["metadata"]["name"].as_str().expect("name").to_string();
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{name}: crds.keep defaults to true"
        );
        assert_eq!(
            crd["metadata"]["annotations"]["argocd.argoproj.io/sync-options"],
            "Prune=false,Delete=false",
            "{name}: kept when an Argo CD Application is deleted too"
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
    assert_eq!(unkept.len(), 4);
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
fn chart_refuses_dangerous_combinations() {
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
/// Consumers: watched, their pod-template annotation applied.
const WORKLOADS: &[&str] = &["deployments", "statefulsets", "daemonsets"];
const WORKLOAD_VERBS: &[&str] = &["list", "watch", "patch"];

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
            ("apps", WORKLOADS, WORKLOAD_VERBS),
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
            ("keymint.dev", &["keyrings"], READ),
            ("keymint.dev", &["keyrings/status"], &["patch"]),
            ("", &["namespaces"], READ),
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
            ("keymint.dev", &["keyrings"], READ),
            ("keymint.dev", &["keyrings/status"], &["patch"]),
            ("", &["namespaces"], READ),
        ])
    );
    let watched = triples(&[
        ("", &["secrets"], SECRET_VERBS),
        ("", &["serviceaccounts"], READ),
        ("events.k8s.io", &["events"], EVENT_VERBS),
        ("apps", WORKLOADS, WORKLOAD_VERBS),
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

#[test]
fn the_verifier_reads_only_its_ring_secret_and_runs_restricted() {
    let watch = render(&[
        "--set",
        "verifier.enabled=true",
        "--set",
        "verifier.keyRingSecret=billing-ring",
        "--set",
        "verifier.namespace=billing",
    ])
    .expect("renders");
    let role = find(&watch, "Role", "keymint-verifier", Some("billing"));
    assert_eq!(
        grants(role),
        triples(&[("", &["secrets"], READ)]),
        "get/list/watch on Secrets..."
    );
    assert_eq!(
        role["rules"][0]["resourceNames"],
        serde_json::json!(["billing-ring"]),
        "...of the ring only"
    );
    let deployment = find(&watch, "Deployment", "keymint-verifier", Some("billing"));
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["args"][0], "verify");
    assert!(
        container["args"]
            .as_array()
            .expect("args")
            .contains(&serde_json::json!("--keyring-secret=billing-ring"))
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["serviceAccountName"], "keymint-verifier");

    let file = render(&[
        "--set",
        "verifier.enabled=true",
        "--set",
        "verifier.keyRingSecret=billing-ring",
        "--set",
        "verifier.mode=file",
    ])
    .expect("renders");
    assert!(
        file.iter()
            .all(|d| d["metadata"]["name"] != "keymint-verifier" || d["kind"] != "Role"),
        "file mode needs no API access"
    );
    let deployment = find(
        &file,
        "Deployment",
        "keymint-verifier",
        Some("keymint-system"),
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "billing-ring");
    assert!(pod["serviceAccountName"].is_null());
    assert!(
        render(&["--set", "verifier.enabled=true"])
            .expect_err("a ring Secret is required")
            .contains("verifier.keyRingSecret is required")
    );
}

#[test]
fn rotation_pacing_values_become_the_operator_flags() {
    let args_of = |set: &[&str]| -> Vec<Value> {
        let documents = render(set).expect("render");
        let deployment = find(&documents, "Deployment", "keymint", Some("keymint-system"));
        deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .expect("args")
            .clone()
    };
    let defaults = args_of(&[]);
    for flag in ["--rotation-spread=0s", "--max-rotations-per-second=50"] {
        assert!(defaults.contains(&json!(flag)), "{flag} in {defaults:?}");
    }
    let set = args_of(&["--set", "rotations.spread=10m,rotations.maxPerSecond=20"]);
    for flag in ["--rotation-spread=10m", "--max-rotations-per-second=20"] {
        assert!(set.contains(&json!(flag)), "{flag} in {set:?}");
    }
    let error = render(&["--set", "rotations.spread=ten minutes"]).expect_err("rendered");
    assert!(
        error.contains("rotations.spread") || error.contains("spread"),
        "{error}"
    );
}
