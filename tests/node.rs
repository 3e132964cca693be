//! The Helm chart on a real node: the operator image from `make image` runs as
//! Pods (kubelet, containerd, runc, a CNI bridge, kube-proxy), installed with
//! the README's commands and values only.
//!
//! One node per machine, so every test here runs on the one shared node, one
//! at a time (they share the release `keymint` in `keymint-system`, as a user
//! has it). Root only; `make test` builds the node (`make node`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keymint::api::names::record;
use keymint::api::{ApiKey, RootKey, ServiceAccountKey};
use keymint_test_support::helm::{Helm, stderr};
use keymint_test_support::node::{
    ProcessView, image_archive, node, pod_ready, readme_install_commands, release_pods,
    run_readme_command,
};
use keymint_test_support::{
    Signal, api_key, eventually, http_get_at, read_only, send, wait_ready, within,
};
use keymint_testenv::{AuditEvent, Node};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

/// The holder side: consumers rolled out on every new key (one binary with
/// the rest of the node suite: one node per machine).
#[path = "node_suite/holders.rs"]
mod holders;

/// Real Argo CD syncing the chart and the examples (issue #13): in this
/// binary because the Helm Application runs the operator on the node.
#[path = "node_suite/argocd.rs"]
mod argocd;

const RELEASE: &str = "keymint";
const NAMESPACE: &str = "keymint-system";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The operator's identity: the chart's ServiceAccount.
const OPERATOR: &str = "system:serviceaccount:keymint-system:keymint";
const LEASE: &str = "keymint-leader";
/// The chart's default `leaderElection.leaseDuration`.
const LEASE_DURATION: Duration = Duration::from_secs(15);
const METRICS_PORT: u16 = 8080;
/// Rollouts on 2 cores: image already on the node, probes every 10 s.
const ROLLOUT: Duration = Duration::from_secs(180);
const WAIT: Duration = Duration::from_secs(60);

/// The tests share one release: one at a time.
static SUITE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn scratch() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("node")
}

fn helm() -> Helm {
    Helm::new(scratch().join("helm"))
}

fn image_reference(tag: &str) -> String {
    format!("docker.io/library/keymint:{tag}")
}

/// The values a user adds for an image in the node's own containerd (README).
fn image_values(tag: &str) -> Vec<String> {
    [
        "--set",
        "image.repository=keymint",
        "--set",
        &format!("image.tag={tag}"),
        "--set",
        "image.pullPolicy=Never",
    ]
    .map(str::to_string)
    .to_vec()
}

/// The node, with the image imported into its containerd (once).
fn node_with_image() -> &'static Node {
    static IMPORTED: OnceLock<()> = OnceLock::new();
    let node = node();
    IMPORTED.get_or_init(|| {
        node.import_image(image_archive(&scratch()), &image_reference(VERSION))
            .unwrap_or_else(|e| panic!("import the image: {e}"))
    });
    node
}

async fn admin() -> kube::Client {
    node_with_image()
        .control_plane()
        .client()
        .await
        .expect("admin client")
}

/// The release as the README installs it, rolled out; an admin client.
async fn installed() -> kube::Client {
    // The Argo CD tests leave the installation to Argo CD; take it back.
    argocd::hand_back().await;
    let node = node_with_image();
    let helm = helm();
    let kubeconfig = node.control_plane().kubeconfig_path();
    let status = helm.run(&[
        "status",
        RELEASE,
        "--namespace",
        NAMESPACE,
        "--kubeconfig",
        &kubeconfig.display().to_string(),
    ]);
    if !status.status.success() {
        install_as_readme_says(&helm, node, false);
    }
    let client = admin().await;
    wait_rollout(&client).await;
    client
}

/// Runs the README's install commands (only its `helm` line when `helm_only`).
fn install_as_readme_says(helm: &Helm, node: &Node, helm_only: bool) {
    let values = image_values(VERSION);
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let commands = readme_install_commands();
    assert!(
        commands.iter().any(|command| command[0] == "helm"),
        "the README's Helm section has no helm command: {commands:?}"
    );
    for command in commands {
        if helm_only && command[0] != "helm" {
            continue;
        }
        let output = run_readme_command(helm, node, &command, &values);
        // A second install finds the namespace of the first (kept on uninstall).
        let exists =
            command[..2] == ["kubectl", "create"] && stderr(&output).contains("AlreadyExists");
        assert!(
            output.status.success() || exists,
            "README command `{}` failed:\n{}",
            command.join(" "),
            stderr(&output)
        );
    }
}

/// Waits until the operator's Deployment has rolled out completely.
async fn wait_rollout(client: &kube::Client) -> Vec<Pod> {
    wait_deployment(client, NAMESPACE, RELEASE, "operator").await
}

/// Waits until a Deployment of the release has rolled out completely: every
/// replica of the current template updated, Ready and available, no Pod of
/// an older one left.
async fn wait_deployment(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    component: &str,
) -> Vec<Pod> {
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let pods_of = || async {
        release_pods(client, namespace, RELEASE)
            .await
            .into_iter()
            .filter(|pod| {
                pod.labels()
                    .get("app.kubernetes.io/component")
                    .map(String::as_str)
                    == Some(component)
            })
            .collect::<Vec<Pod>>()
    };
    eventually(&format!("Deployment {namespace}/{name} to roll out"), ROLLOUT, || async {
        let deployment = deployments.get(name).await.map_err(|e| e.to_string())?;
        let wanted = deployment.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1);
        let status = deployment.status.clone().unwrap_or_default();
        let current = status.observed_generation >= deployment.metadata.generation;
        let counts = [
            status.replicas,
            status.updated_replicas,
            status.ready_replicas,
            status.available_replicas,
        ];
        let every_pod = pods_of().await;
        let gone_old = every_pod.len() == wanted as usize;
        let pods: Vec<Pod> = every_pod
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .collect();
        let all_ready = pods.len() == wanted as usize && pods.iter().all(pod_ready);
        if current && counts.iter().all(|count| *count == Some(wanted)) && all_ready && gone_old {
            Ok(pods)
        } else {
            Err(format!(
                "generation current {current}, replicas/updated/ready/available {counts:?} of {wanted}, {} Pods (all Ready {all_ready}, old ones gone {gone_old})",
                pods.len()
            ))
        }
    })
    .await
}

async fn lease_holder(client: &kube::Client) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), NAMESPACE)
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|lease| lease.spec)
        .and_then(|spec| spec.holder_identity)
}

async fn wait_leader(client: &kube::Client, candidates: &[String]) -> String {
    eventually("a Pod of the release to hold the Lease", WAIT, || async {
        match lease_holder(client).await {
            Some(holder) if candidates.contains(&holder) => Ok(holder),
            other => Err(format!("holder {other:?}, Pods {candidates:?}")),
        }
    })
    .await
}

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter().map(|pod| pod.name_any()).collect()
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|status| status.pod_ip.clone())
        .expect("a running Pod has an IP")
}

fn container_id(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref())
        .and_then(|statuses| statuses.first())
        .and_then(|status| status.container_id.clone())
        .expect("a running Pod has a container id")
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref())
        .and_then(|statuses| statuses.first())
        .map_or(0, |status| status.restart_count)
}

/// A fresh namespace with `count` APIKeys, all Ready.
async fn keys_namespace(client: &kube::Client, prefix: &str, count: usize) -> String {
    let namespace = node()
        .control_plane()
        .namespace(client, prefix)
        .await
        .expect("create a namespace");
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    for index in 0..count {
        keys.create(
            &PostParams::default(),
            &api_key(&format!("key-{index}"), read_only()),
        )
        .await
        .expect("create an APIKey");
    }
    for index in 0..count {
        wait_ready(&keys, &format!("key-{index}")).await;
    }
    namespace
}

/// Each Secret of `namespace`: its resourceVersion and key id.
async fn secrets(client: &kube::Client, namespace: &str) -> BTreeMap<String, (String, String)> {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .expect("list Secrets")
        .items
        .into_iter()
        .map(|secret| {
            let key_id = secret
                .annotations()
                .get(record::KEY_ID)
                .cloned()
                .unwrap_or_default();
            (
                secret.name_any(),
                (secret.resource_version().unwrap_or_default(), key_id),
            )
        })
        .collect()
}

fn audit_mark() -> usize {
    audit().len()
}

fn audit() -> Vec<AuditEvent> {
    node()
        .control_plane()
        .audit_events()
        .expect("read the audit log")
}

/// The operator's writes since `mark`, other than to its Lease.
fn operator_writes_since(mark: usize) -> Vec<AuditEvent> {
    audit()
        .into_iter()
        .skip(mark)
        .filter(|event| event.user.username == OPERATOR)
        .filter(keymint_test_support::is_write)
        .filter(|event| {
            event
                .object_ref
                .as_ref()
                .is_some_and(|object| object.resource != "leases")
        })
        .collect()
}

/// The keys of `namespace` are as `before` (same resourceVersions and key ids)
/// and the operator wrote no Secret anywhere since `mark`.
async fn assert_no_secret_written(
    client: &kube::Client,
    namespace: &str,
    before: &BTreeMap<String, (String, String)>,
    mark: usize,
    what: &str,
) {
    assert_eq!(&secrets(client, namespace).await, before, "{what}");
    let secret_writes = operator_secret_writes_since(mark);
    assert!(
        secret_writes.is_empty(),
        "{what}: Secret writes {:?}",
        describe(&secret_writes)
    );
}

/// The operator's Secret writes since `mark`.
fn operator_secret_writes_since(mark: usize) -> Vec<AuditEvent> {
    operator_writes_since(mark)
        .into_iter()
        .filter(|event| {
            event
                .object_ref
                .as_ref()
                .is_some_and(|o| o.resource == "secrets")
        })
        .collect()
}

fn describe(events: &[AuditEvent]) -> Vec<String> {
    events
        .iter()
        .map(|event| {
            let object = event.object_ref.as_ref();
            format!(
                "{} {}/{} by {:?}",
                event.verb,
                object.map_or("", |o| o.resource.as_str()),
                object.and_then(|o| o.name.clone()).unwrap_or_default(),
                event.user.pod_name()
            )
        })
        .collect()
}

/// The operator's `keymint_reconciles_total` for APIKeys, read through the Pod's network.
fn api_key_reconciles(pod: &Pod) -> Result<u64, String> {
    let (code, body) =
        http_get_at(&pod_ip(pod), METRICS_PORT, "/metrics").map_err(|e| e.to_string())?;
    if code != 200 {
        return Err(format!("/metrics answered {code}"));
    }
    body.lines()
        .find_map(|line| line.strip_prefix("keymint_reconciles_total{kind=\"APIKey\"} "))
        .ok_or_else(|| "no keymint_reconciles_total for APIKey".to_string())?
        .trim()
        .parse()
        .map_err(|e| format!("{e}"))
}

/// Waits until a freshly started operator has reconciled every APIKey in the cluster.
async fn wait_confirmed_all(client: &kube::Client, pod: &Pod) {
    let total = Api::<ApiKey>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list APIKeys")
        .items
        .len() as u64;
    eventually(
        "the new operator to reconcile every APIKey",
        WAIT,
        || async {
            let reconciled = api_key_reconciles(pod)?;
            if reconciled >= total {
                Ok(())
            } else {
                Err(format!("{reconciled} of {total} reconciled"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn the_chart_runs_the_image_as_a_pod_that_leads_and_mints_the_examples() {
    let _suite = SUITE.lock().await;
    let client = installed().await;
    let pods = wait_rollout(&client).await;
    assert_eq!(pods.len(), 1, "one replica by default");
    let pod = &pods[0];
    let image = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.containers[0].image.clone());
    assert!(
        image
            .as_deref()
            .is_some_and(|image| image.starts_with("keymint:")),
        "the Pod runs the imported image, not a registry's: {image:?}"
    );
    let leader = wait_leader(&client, &names(&pods)).await;
    assert_eq!(leader, pod.name_any());

    // The examples, as a user applies them (they name their namespace).
    let mark = audit_mark();
    let kubeconfig = node().control_plane().kubeconfig_path();
    let examples = keymint_test_support::helm::repo().join("examples");
    let apply =
        std::process::Command::new(keymint_test_support::helm::repo().join(".venv/bin/kubectl"))
            .args(["apply", "-f"])
            .arg(&examples)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .output()
            .expect("run kubectl");
    assert!(
        apply.status.success(),
        "kubectl apply -f examples/: {}",
        stderr(&apply)
    );
    let mut minted = 0;
    for entry in std::fs::read_dir(&examples).expect("read examples/") {
        let path = entry.expect("an entry").path();
        if path.extension().is_none_or(|extension| extension != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read an example");
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value =
                serde::Deserialize::deserialize(document).expect("an example parses");
            let name = value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let namespace = value["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            match value["kind"].as_str() {
                Some("APIKey") => {
                    wait_ready(
                        &Api::<ApiKey>::namespaced(client.clone(), &namespace),
                        &name,
                    )
                    .await;
                }
                Some("ServiceAccountKey") => {
                    wait_ready(
                        &Api::<ServiceAccountKey>::namespaced(client.clone(), &namespace),
                        &name,
                    )
                    .await;
                }
                Some("RootKey") => {
                    wait_ready(&Api::<RootKey>::all(client.clone()), &name).await;
                }
                _ => continue,
            }
            minted += 1;
        }
    }
    assert!(
        minted >= 3,
        "the examples hold every kind; {minted} keys found"
    );
    // Minted by the operator Pod: its bound token names the Pod.
    let secret_writes = operator_secret_writes_since(mark);
    assert!(
        !secret_writes.is_empty(),
        "the operator Pod wrote the examples' Secrets"
    );
    assert!(
        secret_writes
            .iter()
            .all(|event| event.user.pod_name() == Some(leader.as_str())),
        "every Secret write came from the leader Pod: {:?}",
        describe(&secret_writes)
    );
}

#[tokio::test]
async fn the_restricted_profile_is_in_force_on_the_running_process() {
    let _suite = SUITE.lock().await;
    let client = installed().await;
    let namespace = Api::<Namespace>::all(client.clone())
        .get(NAMESPACE)
        .await
        .expect("the release namespace");
    assert_eq!(
        namespace
            .labels()
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted"),
        "the README labels the namespace"
    );
    // Enforced: a privileged Pod is refused in that namespace.
    let privileged: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "privileged-probe"},
        "spec": {"containers": [{
            "name": "c", "image": "registry.k8s.io/pause:3.10.2",
            "securityContext": {"privileged": true}
        }]}
    }))
    .expect("a Pod");
    let refused = Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &privileged)
        .await;
    match refused {
        Err(kube::Error::Api(status)) => assert!(
            status.code == 403 && status.message.contains("violates PodSecurity \"restricted"),
            "refused by Pod Security admission: {status:?}"
        ),
        other => panic!("a privileged Pod was not refused: {other:?}"),
    }

    let pods = wait_rollout(&client).await;
    let pid = node()
        .container_pid(&container_id(&pods[0]))
        .expect("the operator container's pid");
    let process = ProcessView::read(pid).expect("read the operator process");
    assert_eq!(process.uids, vec![65532; 4], "non-root: {process:?}");
    assert_eq!(process.gids, vec![65532; 4], "non-root group: {process:?}");
    for (set, mask) in &process.capabilities {
        assert_eq!(*mask, 0, "no capabilities ({set}): {process:?}");
    }
    assert_eq!(
        process.seccomp, 2,
        "a seccomp filter (RuntimeDefault): {process:?}"
    );
    assert!(process.no_new_privs, "no privilege escalation: {process:?}");
    assert!(
        process
            .root_mount_options
            .iter()
            .any(|option| option == "ro"),
        "read-only root filesystem: {process:?}"
    );
}

#[tokio::test]
async fn two_replicas_only_the_leader_writes_and_hand_over_within_the_lease() {
    let _suite = SUITE.lock().await;
    let client = installed().await;
    let plane = node().control_plane();
    helm().install_ok(
        plane,
        RELEASE,
        NAMESPACE,
        &["--reuse-values", "--set", "replicaCount=2"],
    );
    let pods = wait_rollout(&client).await;
    assert_eq!(pods.len(), 2);
    let leader = wait_leader(&client, &names(&pods)).await;
    let follower = names(&pods)
        .into_iter()
        .find(|name| *name != leader)
        .expect("a second replica");

    let mark = audit_mark();
    let namespace = keys_namespace(&client, "replicas", 3).await;
    let writes = operator_writes_since(mark);
    let by_follower: Vec<&AuditEvent> = writes
        .iter()
        .filter(|event| event.user.pod_name() == Some(follower.as_str()))
        .collect();
    assert!(
        by_follower.is_empty(),
        "the follower wrote: {:?}",
        describe(&writes)
    );
    assert!(
        writes
            .iter()
            .any(|event| event.user.pod_name() == Some(leader.as_str())),
        "the leader minted the keys: {:?}",
        describe(&writes)
    );

    // Deleting the leader's Pod hands the Lease to the follower.
    let before = secrets(&client, &namespace).await;
    let deleted = Instant::now();
    Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .delete(&leader, &DeleteParams::default())
        .await
        .expect("delete the leader's Pod");
    // The follower, or the replacement Pod if it starts first: any live Pod
    // of the release other than the deleted leader.
    let new_leader = within("another Pod to take the Lease", LEASE_DURATION, || async {
        let live = names(&release_pods(&client, NAMESPACE, RELEASE).await);
        match lease_holder(&client).await {
            Some(holder) if holder != leader && live.contains(&holder) => Ok(holder),
            other => Err(format!("holder {other:?}, Pods {live:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let handed_over = deleted.elapsed();
    assert!(
        handed_over <= LEASE_DURATION,
        "hand-over took {handed_over:?}"
    );
    eprintln!(
        "the Lease passed from {leader} to {new_leader} (follower {follower}) in {handed_over:?}"
    );

    // The new leader mints a new key once and re-mints none of the old ones.
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    keys.create(
        &PostParams::default(),
        &api_key("after-hand-over", read_only()),
    )
    .await
    .expect("create an APIKey");
    wait_ready(&keys, "after-hand-over").await;
    let after = secrets(&client, &namespace).await;
    for (name, state) in &before {
        assert_eq!(
            after.get(name),
            Some(state),
            "Secret {name} unchanged by the hand-over"
        );
    }
    // A mint is one accepted Secret write (server-side apply); a key minted
    // twice would show a second one. A refused create-only apply (409: the
    // Secret is there already, as after a reconcile on a cache that had not
    // yet seen the status) writes nothing and is not counted.
    let secret_writes: Vec<AuditEvent> = operator_writes_since(mark)
        .into_iter()
        .filter(keymint_test_support::succeeded)
        .filter(|event| {
            event.object_ref.as_ref().is_some_and(|object| {
                object.resource == "secrets" && object.namespace.as_deref() == Some(&namespace)
            })
        })
        .collect();
    let mut writes_per_secret: BTreeMap<String, usize> = BTreeMap::new();
    for event in &secret_writes {
        let name = event
            .object_ref
            .as_ref()
            .and_then(|object| object.name.clone());
        *writes_per_secret
            .entry(name.unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(
        writes_per_secret.len(),
        4,
        "four keys, four Secrets: {writes_per_secret:?}"
    );
    assert!(
        writes_per_secret.values().all(|writes| *writes == 1),
        "each key minted once: {writes_per_secret:?} in {:?}",
        describe(&secret_writes)
            .into_iter()
            .zip(secret_writes.iter().map(keymint_test_support::code))
            .collect::<Vec<_>>()
    );

    helm().install_ok(
        plane,
        RELEASE,
        NAMESPACE,
        &["--reuse-values", "--set", "replicaCount=1"],
    );
    wait_rollout(&client).await;
}

#[tokio::test]
async fn helm_upgrade_to_a_new_tag_and_values_rolls_out_without_touching_keys() {
    let _suite = SUITE.lock().await;
    let client = installed().await;
    let old_pods = names(&wait_rollout(&client).await);
    let namespace = keys_namespace(&client, "upgrade", 2).await;
    let before = secrets(&client, &namespace).await;

    let tag = format!("{VERSION}-next");
    node()
        .ctr(&[
            "images",
            "tag",
            "--force",
            &image_reference(VERSION),
            &image_reference(&tag),
        ])
        .expect("tag the image");
    let mark = audit_mark();
    helm().install_ok(
        node().control_plane(),
        RELEASE,
        NAMESPACE,
        &[
            "--reuse-values",
            "--set",
            &format!("image.tag={tag}"),
            "--set",
            "logging.level=debug",
        ],
    );
    let pods = wait_rollout(&client).await;
    let pod = &pods[0];
    assert!(
        !old_pods.contains(&pod.name_any()),
        "a new Pod replaced {old_pods:?}"
    );
    let container = &pod.spec.as_ref().expect("a spec").containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(format!("keymint:{tag}").as_str())
    );
    let args = container.args.clone().unwrap_or_default();
    assert!(
        args.windows(2)
            .any(|pair| pair[0] == "--log-level" && pair[1] == "debug")
            || args.iter().any(|arg| arg == "--log-level=debug"),
        "the values change reached the Pod: {args:?}"
    );
    wait_leader(&client, &names(&pods)).await;
    wait_confirmed_all(&client, pod).await;

    assert_no_secret_written(
        &client,
        &namespace,
        &before,
        mark,
        "no Secret rewritten, no key re-minted",
    )
    .await;
}

#[tokio::test]
async fn helm_uninstall_keeps_keys_and_crds_and_a_reinstall_adopts_them() {
    let _suite = SUITE.lock().await;
    let client = installed().await;
    let namespace = keys_namespace(&client, "reinstall", 2).await;
    let before = secrets(&client, &namespace).await;
    let mark = audit_mark();

    let kubeconfig = node()
        .control_plane()
        .kubeconfig_path()
        .display()
        .to_string();
    let uninstall = helm().run(&[
        "uninstall",
        RELEASE,
        "--namespace",
        NAMESPACE,
        "--kubeconfig",
        &kubeconfig,
    ]);
    assert!(
        uninstall.status.success(),
        "helm uninstall: {}",
        stderr(&uninstall)
    );
    eventually("the operator Pods to be gone", ROLLOUT, || async {
        let left = release_pods(&client, NAMESPACE, RELEASE).await;
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{:?}", names(&left)))
        }
    })
    .await;
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in [
        "apikeys.keymint.dev",
        "serviceaccountkeys.keymint.dev",
        "rootkeys.keymint.dev",
    ] {
        assert!(
            crds.get_opt(crd).await.expect("get a CRD").is_some(),
            "CRD {crd} kept (crds.keep)"
        );
    }
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    assert_eq!(
        keys.list(&ListParams::default())
            .await
            .expect("list APIKeys")
            .items
            .len(),
        2
    );
    assert_eq!(secrets(&client, &namespace).await, before, "Secrets kept");

    install_as_readme_says(&helm(), node(), true);
    let pods = wait_rollout(&client).await;
    wait_leader(&client, &names(&pods)).await;
    wait_confirmed_all(&client, &pods[0]).await;
    for index in 0..2 {
        wait_ready(&keys, &format!("key-{index}")).await;
    }
    assert_no_secret_written(&client, &namespace, &before, mark, "adopted, not re-minted").await;
}

#[tokio::test]
async fn metrics_are_scraped_through_the_pod_network_and_the_probes_decide_ready() {
    let _suite = SUITE.lock().await;
    let client = installed().await;
    let pods = wait_rollout(&client).await;
    let pod = &pods[0];

    // Through the Pod's address on the CNI bridge, and through the metrics
    // Service's cluster IP (kube-proxy's rules).
    let (code, body) = http_get_at(&pod_ip(pod), METRICS_PORT, "/metrics").expect("scrape the Pod");
    assert_eq!(code, 200);
    assert!(body.contains("keymint_reconciles_total"), "{body}");
    let service = Api::<Service>::namespaced(client.clone(), NAMESPACE)
        .get("keymint-metrics")
        .await
        .expect("the metrics Service");
    let cluster_ip = service
        .spec
        .and_then(|spec| spec.cluster_ip)
        .expect("a cluster IP");
    let scraped = eventually("a scrape through the Service", WAIT, || async {
        http_get_at(&cluster_ip, METRICS_PORT, "/metrics").map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(scraped.0, 200);
    assert!(scraped.1.contains("keymint_reconciles_total"));

    // The probes are the operator's endpoints...
    let container = &pod.spec.as_ref().expect("a spec").containers[0];
    let path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|get| get.path.clone())
    };
    assert_eq!(path(&container.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(path(&container.liveness_probe).as_deref(), Some("/healthz"));
    // ...and they decide: a frozen operator stops answering, the readiness
    // probe takes the Pod out of Ready, the liveness probe restarts it.
    let restarts = restart_count(pod);
    let pid = node()
        .container_pid(&container_id(pod))
        .expect("the operator's pid");
    send(pid, Signal::STOP);
    let pods_api = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
    let name = pod.name_any();
    eventually(
        "the readiness probe to take the frozen Pod out of Ready",
        ROLLOUT,
        || async {
            let pod = pods_api.get(&name).await.map_err(|e| e.to_string())?;
            if pod_ready(&pod) {
                Err("still Ready".into())
            } else {
                Ok(())
            }
        },
    )
    .await;
    eventually(
        "the liveness probe to restart the operator, Ready again",
        ROLLOUT,
        || async {
            let pod = pods_api.get(&name).await.map_err(|e| e.to_string())?;
            if restart_count(&pod) > restarts && pod_ready(&pod) {
                Ok(())
            } else {
                Err(format!(
                    "restarts {}, Ready {}",
                    restart_count(&pod),
                    pod_ready(&pod)
                ))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn the_chart_deploys_keymint_verify_for_a_ring_and_it_answers_through_its_service() {
    use keymint_test_support::verify::request_at;
    let _suite = SUITE.lock().await;
    let client = installed().await;
    let plane = node().control_plane();
    // The examples' ring and the key that joins it (namespace default).
    let example = keymint_test_support::helm::repo().join("examples/keyring.yaml");
    let apply =
        std::process::Command::new(keymint_test_support::helm::repo().join(".venv/bin/kubectl"))
            .args(["apply", "-f"])
            .arg(&example)
            .arg("--kubeconfig")
            .arg(plane.kubeconfig_path())
            .output()
            .expect("run kubectl");
    assert!(apply.status.success(), "kubectl apply: {}", stderr(&apply));
    let keys = Api::<ApiKey>::namespaced(client.clone(), "default");
    let issued = wait_ready(&keys, "invoices-exporter").await;
    let secret = Api::<Secret>::namespaced(client.clone(), "default")
        .get("invoices-exporter")
        .await
        .expect("the key's Secret");
    let key = String::from_utf8(secret.data.expect("data")["key"].0.clone()).expect("utf-8");

    helm().install_ok(
        plane,
        RELEASE,
        NAMESPACE,
        &[
            "--reuse-values",
            "--set",
            "verifier.enabled=true",
            "--set",
            "verifier.namespace=default",
            "--set",
            "verifier.keyRingSecret=billing-api",
        ],
    );
    // Ready only once the ring is loaded: through the API, with the chart's
    // Role on that one Secret.
    let pods = wait_deployment(&client, "default", "keymint-verifier", "verifier").await;
    assert_eq!(pods.len(), 2, "verifier.replicas defaults to 2");
    let service = Api::<Service>::namespaced(client.clone(), "default")
        .get("keymint-verifier")
        .await
        .expect("the verifier Service");
    let address = service
        .spec
        .and_then(|spec| spec.cluster_ip)
        .expect("a cluster IP");
    let body = serde_json::json!({"key": key, "permission": "exports:csv"}).to_string();
    let verdict = eventually("a verification through the Service", WAIT, || async {
        let answer = request_at(
            &address,
            8081,
            "POST",
            "/v1/verify",
            &[("Content-Type", "application/json")],
            &body,
        )
        .map_err(|e| e.to_string())?;
        // Shown with the test's output: what answered before the verifier did.
        answer
            .ok_json()
            .inspect_err(|seen| eprintln!("through the Service: {seen}"))
    })
    .await;
    assert_eq!(verdict["code"], "VALID", "{verdict}");
    assert_eq!(
        verdict["id"],
        serde_json::json!(issued.status.and_then(|s| s.id))
    );
    assert_eq!(verdict["issuer"]["name"], "invoices-exporter");
    let bearer = format!("Bearer {key}");
    let forward = request_at(
        &address,
        8081,
        "GET",
        "/v1/forward-auth/invoices",
        &[("Authorization", &bearer)],
        "",
    )
    .expect("forward-auth");
    assert_eq!(forward.status, 200);
    assert!(forward.header("x-keymint-key-id").is_some());
    let refused = request_at(
        &address,
        8081,
        "GET",
        "/v1/forward-auth",
        &[("X-API-Key", "ak_notakey")],
        "",
    )
    .expect("forward-auth");
    assert_eq!(refused.status, 401);

    helm().install_ok(
        plane,
        RELEASE,
        NAMESPACE,
        &["--reuse-values", "--set", "verifier.enabled=false"],
    );
}
