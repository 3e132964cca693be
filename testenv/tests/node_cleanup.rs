//! The node harness cleans up after itself however a run ends: a test process
//! killed with SIGKILL leaves containers and their shims running (they outlive
//! kubelet and containerd), and the watchdog must remove them, their mounts,
//! cgroups and network devices; a second run then starts on a clean machine
//! and a stopped one leaves nothing. Root only (the node needs it).

use std::process::{Child, Command};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use keymint_test_support::{Signal, eventually, send};
use keymint_testenv::{node_leftovers, spawn_tied_to_process};
use kube::api::{Api, PostParams};

/// Node start on 2 cores (control plane, containerd, kubelet): well under this.
const START: Duration = Duration::from_secs(180);
const CLEAN: Duration = Duration::from_secs(60);

/// `keymint-testenv node`, tied to this process (it dies with it, so a failed
/// test leaves no node running); its kubeconfig once the node is Ready.
fn start_node(log: &std::path::Path) -> (Child, String) {
    let _ = std::fs::remove_file(log);
    let mut command = Command::new(env!("CARGO_BIN_EXE_keymint-testenv"));
    command.arg("node");
    let mut child = spawn_tied_to_process(command, log).expect("start keymint-testenv node");
    match wait_for_kubeconfig(log) {
        Ok(kubeconfig) => (child, kubeconfig),
        Err(output) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node did not start:\n{output}")
        }
    }
}

/// The kubeconfig `keymint-testenv node` prints once the node is Ready, or
/// its output when it failed or took longer than [`START`].
fn wait_for_kubeconfig(log: &std::path::Path) -> Result<String, String> {
    let deadline = std::time::Instant::now() + START;
    loop {
        let output = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(kubeconfig) = output
            .lines()
            .find_map(|line| line.strip_prefix("export KUBECONFIG="))
        {
            return Ok(kubeconfig.to_string());
        }
        if std::time::Instant::now() >= deadline || output.contains("keymint-testenv: ") {
            return Err(output);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn client(kubeconfig: &str) -> kube::Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).expect("read the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .expect("a client configuration");
    kube::Client::try_from(config).expect("a client")
}

/// A Pod with a projected ServiceAccount token (a tmpfs mount), running.
async fn run_a_pod(client: &kube::Client) {
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "leftover"},
        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10.2", "imagePullPolicy": "Never"}]}
    }))
    .expect("a Pod");
    // The ServiceAccount `default` appears shortly after the namespace.
    eventually("the Pod to be created", START, || async {
        pods.create(&PostParams::default(), &pod)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    eventually("the Pod to run", START, || async {
        let pod = pods.get("leftover").await.map_err(|e| e.to_string())?;
        let phase = pod.status.and_then(|status| status.phase);
        if phase.as_deref() == Some("Running") {
            Ok(())
        } else {
            Err(format!("phase {phase:?}"))
        }
    })
    .await;
}

async fn wait_clean(after: &str) {
    eventually(&format!("nothing left after {after}"), CLEAN, || async {
        let left = node_leftovers();
        if left.is_empty() {
            Ok(())
        } else {
            Err(left.join("; "))
        }
    })
    .await;
}

#[tokio::test]
async fn a_killed_run_leaves_nothing_behind_and_the_next_run_starts_and_stops_clean() {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let log = scratch.path().join("node.log");
    let (mut first, kubeconfig) = start_node(&log);
    run_a_pod(&client(&kubeconfig).await).await;
    let running = node_leftovers();
    for thing in [
        "process",
        "cgroup",
        "mount",
        "network link",
        "iptables",
        "directory",
    ] {
        assert!(
            running.iter().any(|line| line.starts_with(thing)),
            "a running node shows a {thing} (else the check below proves nothing): {running:?}"
        );
    }
    send(first.id(), Signal::KILL);
    first.wait().expect("reap the killed run");
    wait_clean("SIGKILL").await;

    let (mut second, kubeconfig) = start_node(&log);
    run_a_pod(&client(&kubeconfig).await).await;
    send(second.id(), Signal::TERM);
    let status = second.wait().expect("reap the stopped run");
    assert!(
        status.success(),
        "keymint-testenv node stopped with {status}"
    );
    wait_clean("SIGTERM").await;
}
