//! A real node beside the control plane: containerd (runc, CNI bridge), a
//! kubelet with a node identity, kube-scheduler and kube-proxy, so the Helm
//! chart's Deployment runs the operator image as Pods.
//!
//! The kubelet and containerd use fixed paths of this machine (`/kubepods`
//! cgroups, `/var/lib/kubelet/device-plugins`, `/run/containerd/s`), so there
//! is one node per machine, started as root, guarded by a lock file. What a
//! run leaves behind (containers and shims keep running when their parents
//! die) is removed by `tests/node/cleanup.sh`: before a node starts, when it
//! stops, and from a watchdog that runs it once the test process is gone,
//! however it ended.

use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::api::Api;

use crate::controlplane::{bin_dir, free_port};
use crate::process::{spawn_tied_to_process, tail, terminate};
use crate::{ControlPlane, Error, Options, Result, io_err};

/// The node's name; the kubelet authenticates as `system:node:<name>`.
pub const NODE_NAME: &str = "keymint-node";
/// The host's address on the node network: the API server listens here and
/// the `kubernetes` Service's endpoint points here (Pods cannot reach loopback).
pub const HOST_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 245, 0, 1);
/// Pod addresses (host-local IPAM on the CNI bridge).
pub const POD_SUBNET: &str = "10.244.0.0/24";
/// Service cluster IPs; the `kubernetes` Service, what Pods reach the API server by, is the first.
pub const SERVICE_SUBNET: &str = "10.0.0.0/24";
/// The sandbox image, under the name containerd pins.
const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.10.2";

/// Fixed paths (see the module comment); `tests/node/cleanup.sh` knows them too.
const ROOT: &str = "/var/lib/keymint-node";
const RUN: &str = "/run/keymint-node";
const LOCK: &str = "/run/keymint-node.lock";
const BRIDGE: &str = "keymint-cni0";
const HOST_LINK: &str = "keymint-host";
const CONTAINERD_NAMESPACE: &str = "k8s.io";

const READY_DEADLINE: Duration = Duration::from_secs(120);
const POLL_INTERVAL: Duration = Duration::from_millis(250);
const EXIT_LOG_LINES: usize = 30;

/// A running node and the control plane it belongs to. Dropping it stops the
/// node's processes, removes everything it left, then stops the control plane.
pub struct Node {
    plane: ControlPlane,
    dir: PathBuf,
    processes: Mutex<Vec<(&'static str, Child)>>,
    /// Held for the node's lifetime: one node per machine.
    _lock: fs::File,
    /// The watchdog runs the clean-up when this pipe closes (at any exit).
    _watchdog: ChildStdin,
}

fn socket() -> String {
    format!("{RUN}/containerd/containerd.sock")
}

fn cleanup_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/node/cleanup.sh")
}

/// Runs `tests/node/cleanup.sh`: removes whatever a node run left on this machine.
pub fn clean_node_leftovers() -> Result<()> {
    let output = Command::new("bash")
        .arg(cleanup_script())
        .arg(bin_dir())
        .stdin(Stdio::null())
        .output()
        .map_err(io_err("run tests/node/cleanup.sh"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Node(format!(
            "tests/node/cleanup.sh failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// Runs a command to completion; its output, or an error naming it.
fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Result<String> {
    let program = program.as_ref();
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("run {}", program.to_string_lossy())))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Node(format!(
            "{} {} failed ({}): {}",
            program.to_string_lossy(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Takes the machine-wide node lock, waiting for a node run that still holds it.
fn lock_machine() -> Result<fs::File> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .map_err(io_err(format!("open {LOCK}")))?;
    // SAFETY: flock(2) on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io_err(format!("lock {LOCK}"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(file)
}

/// Starts the watchdog: a shell, outside this process group and not tied to
/// this process, that waits for its stdin to close (this process exited or
/// died) and then runs the clean-up under the node lock.
fn start_watchdog() -> Result<ChildStdin> {
    use std::os::unix::process::CommandExt;
    let script = format!(
        "read -r _; exec flock {LOCK} bash {} {} >/dev/null 2>&1",
        cleanup_script().display(),
        bin_dir().display()
    );
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(io_err("start the node watchdog"))?;
    child
        .stdin
        .take()
        .ok_or_else(|| Error::Node("the watchdog has no stdin".into()))
}

impl Node {
    /// Cleans what an earlier run left, starts a control plane for the node and
    /// the node itself, and waits until the Node is Ready. Root only.
    pub fn start() -> Result<Node> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::Node(
                "a node needs root (run `make test` as root)".into(),
            ));
        }
        for binary in [
            "kubelet",
            "kube-scheduler",
            "kube-proxy",
            "containerd",
            "containerd-shim-runc-v2",
            "ctr",
            "cni/bridge",
            "cni/host-local",
            "cni/loopback",
            "pause-oci.tar",
        ] {
            let path = bin_dir().join(binary);
            if !path.exists() {
                return Err(Error::Node(format!(
                    "{} not found: run `make node` first",
                    path.display()
                )));
            }
        }
        let lock = lock_machine()?;
        clean_node_leftovers()?;
        let watchdog = start_watchdog()?;
        add_host_address()?;
        let plane = ControlPlane::start(Options {
            node_address: Some(HOST_ADDRESS),
            ..Options::default()
        })?;
        let dir = plane.dir().join("node");
        fs::create_dir_all(&dir).map_err(io_err("create the node log dir"))?;
        let node = Node {
            plane,
            dir,
            processes: Mutex::new(Vec::new()),
            _lock: lock,
            _watchdog: watchdog,
        };
        node.boot()?;
        Ok(node)
    }

    fn boot(&self) -> Result<()> {
        self.write_config_files()?;
        self.start_containerd()?;
        self.import_image(&bin_dir().join("pause-oci.tar"), SANDBOX_IMAGE)?;
        self.start_kubelet()?;
        let kubeconfig = self.plane.kubeconfig_path();
        let kubeconfig = kubeconfig.display();
        self.spawn(
            "kube-scheduler",
            &bin_dir().join("kube-scheduler"),
            &[
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                // Its own authentication needs no front-proxy configuration.
                "--authentication-skip-lookup=true".into(),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()?),
                "--v=0".into(),
            ],
        )?;
        self.spawn(
            "kube-proxy",
            &bin_dir().join("kube-proxy"),
            &[format!("--config={ROOT}/kube-proxy.yaml"), "--v=0".into()],
        )?;
        self.wait_node_ready()
    }

    /// The control plane the node is registered with.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.plane
    }

    /// Where the node's component logs are.
    pub fn log_dir(&self) -> &Path {
        &self.dir
    }

    fn write_config_files(&self) -> Result<()> {
        for dir in [
            format!("{ROOT}/cni/net.d"),
            format!("{ROOT}/kubelet"),
            format!("{RUN}/containerd"),
        ] {
            fs::create_dir_all(&dir).map_err(io_err(format!("create {dir}")))?;
        }
        let write = |path: String, content: String| {
            fs::write(&path, content).map_err(io_err(format!("write {path}")))
        };
        write(format!("{ROOT}/containerd.toml"), containerd_config())?;
        write(
            format!("{ROOT}/cni/net.d/10-keymint.conflist"),
            cni_config(),
        )?;
        write(
            format!("{ROOT}/kubelet.yaml"),
            kubelet_config(free_port()?, free_port()?),
        )?;
        write(
            format!("{ROOT}/kube-proxy.yaml"),
            kube_proxy_config(&self.plane.kubeconfig_path(), free_port()?, free_port()?),
        )?;
        self.plane.write_kubeconfig(
            Path::new(&format!("{ROOT}/kubelet.kubeconfig")),
            &format!("system:node:{NODE_NAME}"),
            &self.plane.tokens.node,
        )
    }

    fn spawn(&self, component: &'static str, program: &Path, args: &[String]) -> Result<()> {
        let mut command = Command::new(program);
        command.args(args);
        // containerd finds its shim and runc on PATH.
        let path = std::env::var("PATH").unwrap_or_default();
        command.env(
            "PATH",
            format!(
                "{}:/usr/sbin:/usr/bin:/sbin:/bin:{path}",
                bin_dir().display()
            ),
        );
        let log = self.dir.join(format!("{component}.log"));
        let child = spawn_tied_to_process(command, &log)?;
        self.lock_processes().push((component, child));
        Ok(())
    }

    fn lock_processes(&self) -> MutexGuard<'_, Vec<(&'static str, Child)>> {
        self.processes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_alive(&self) -> Result<()> {
        for (component, child) in self.lock_processes().iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Exited {
                    component,
                    status: status.to_string(),
                    log: tail(&self.dir.join(format!("{component}.log")), EXIT_LOG_LINES),
                });
            }
        }
        Ok(())
    }

    fn start_containerd(&self) -> Result<()> {
        self.spawn(
            "containerd",
            &bin_dir().join("containerd"),
            &[format!("--config={ROOT}/containerd.toml")],
        )?;
        self.poll("containerd to answer", || {
            Ok(self.ctr(&["version"]).is_ok())
        })
    }

    fn start_kubelet(&self) -> Result<()> {
        self.spawn(
            "kubelet",
            &bin_dir().join("kubelet"),
            &[
                format!("--config={ROOT}/kubelet.yaml"),
                format!("--kubeconfig={ROOT}/kubelet.kubeconfig"),
                format!("--root-dir={ROOT}/kubelet"),
                format!("--cert-dir={ROOT}/kubelet/pki"),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-ip={HOST_ADDRESS}"),
                "--v=0".into(),
            ],
        )
    }

    /// Polls `condition` until it holds, failing early when a node process exited.
    fn poll(&self, what: &str, mut condition: impl FnMut() -> Result<bool>) -> Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        let mut last = String::from("not polled yet");
        while Instant::now() < deadline {
            self.check_alive()?;
            self.plane.check_alive()?;
            match condition() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(error) => last = error.to_string(),
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        Err(Error::NotReady(
            READY_DEADLINE,
            format!("waiting for {what}: {last}"),
        ))
    }

    fn wait_node_ready(&self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_err("start a runtime"))?;
        self.poll("the Node to be Ready", || {
            runtime.block_on(async {
                let nodes = Api::<NodeObject>::all(self.plane.client().await?);
                let Some(node) = nodes.get_opt(NODE_NAME).await? else {
                    return Ok(false);
                };
                let ready = node
                    .status
                    .and_then(|status| status.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|condition| condition.type_ == "Ready" && condition.status == "True");
                let tainted = node
                    .spec
                    .and_then(|spec| spec.taints)
                    .unwrap_or_default()
                    .iter()
                    .any(|taint| taint.key.starts_with("node.kubernetes.io/"));
                Ok(ready && !tainted)
            })
        })
    }

    /// Runs `ctr` against the node's containerd, in the CRI's namespace.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        let socket = socket();
        let mut all = vec![
            "--address",
            socket.as_str(),
            "--namespace",
            CONTAINERD_NAMESPACE,
        ];
        all.extend_from_slice(args);
        run(bin_dir().join("ctr"), &all)
    }

    /// Imports an oci-archive (`make image`'s `keymint-oci.tar`) and names it
    /// `reference` (e.g. `docker.io/library/keymint:0.1.0`, the name the CRI
    /// looks up for `keymint:0.1.0`).
    pub fn import_image(&self, archive: &Path, reference: &str) -> Result<()> {
        let archive = archive.to_string_lossy();
        let output = self.ctr(&["images", "import", "--local", archive.as_ref()])?;
        // ctr prints "unpacking <name> (sha256:...)...done" per image imported.
        let imported = output
            .lines()
            .find_map(|line| line.strip_prefix("unpacking "))
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(|| Error::Node(format!("ctr images import named no image: {output}")))?
            .to_string();
        // The CRI resolves an image by the first of its names, normalised
        // (`keymint:0.1.0` is `docker.io/library/keymint:0.1.0`): that form
        // must exist too. Names are only added, never removed (the CRI's
        // cache would keep a removed one).
        if !imported.contains('/') {
            self.ctr(&[
                "images",
                "tag",
                "--force",
                &imported,
                &format!("docker.io/library/{imported}"),
            ])?;
        }
        if imported != reference {
            self.ctr(&["images", "tag", "--force", &imported, reference])?;
        }
        Ok(())
    }

    /// The host pid of a running container (`containerd://<id>` from a Pod's status).
    pub fn container_pid(&self, container_id: &str) -> Result<u32> {
        let id = container_id
            .strip_prefix("containerd://")
            .unwrap_or(container_id);
        let tasks = self.ctr(&["tasks", "list"])?;
        tasks
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next() == Some(id))
                    .then(|| fields.next().and_then(|pid| pid.parse().ok()))
                    .flatten()
            })
            .ok_or_else(|| Error::Node(format!("no running task {id}")))
    }

    /// Stops the node's processes and removes what they left (containers,
    /// mounts, cgroups, network devices), then stops the control plane.
    pub fn stop(&self) -> Result<()> {
        let mut processes = self.lock_processes();
        while let Some((name, mut child)) = processes.pop() {
            terminate(name, &mut child);
        }
        drop(processes);
        let cleaned = clean_node_leftovers();
        self.plane.stop();
        cleaned
    }

    /// The node shared by every test in this test binary: started on first use;
    /// its processes die with the test process and the watchdog cleans up.
    pub fn shared() -> &'static Node {
        static SHARED: OnceLock<Node> = OnceLock::new();
        SHARED.get_or_init(|| {
            // PR_SET_PDEATHSIG fires when the thread that spawned a child exits:
            // start from a thread that never ends (as ControlPlane::shared does).
            let (sender, receiver) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("keymint-node".into())
                .spawn(move || {
                    let _ = sender.send(Node::start());
                    loop {
                        std::thread::park();
                    }
                })
                .map_err(io_err("spawn the node thread"))
                .and_then(|_| {
                    receiver
                        .recv()
                        .map_err(|_| Error::Node("the node thread died".into()))?
                })
                .inspect(|node| {
                    let mut pids: Vec<u32> = node
                        .lock_processes()
                        .iter()
                        .map(|(_, child)| child.id())
                        .collect();
                    pids.extend(node.plane.pids());
                    crate::process::register_exit_cleanup(pids, node.plane.dir().to_path_buf());
                })
                .unwrap_or_else(|error| panic!("cannot start the local node: {error}"))
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("node clean-up: {error}");
        }
    }
}

/// The host address Pods reach the API server at, on a dummy link of its own.
fn add_host_address() -> Result<()> {
    // A link of its own (this kernel has no dummy links): an empty bridge.
    run("ip", &["link", "add", HOST_LINK, "type", "bridge"])?;
    run(
        "ip",
        &[
            "addr",
            "add",
            &format!("{HOST_ADDRESS}/32"),
            "dev",
            HOST_LINK,
        ],
    )?;
    run("ip", &["link", "set", HOST_LINK, "up"])?;
    Ok(())
}

fn containerd_config() -> String {
    let cni_bin = bin_dir().join("cni");
    format!(
        r#"version = 3
root = "{ROOT}/containerd"
state = "{RUN}/containerd"

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{SANDBOX_IMAGE}"

[plugins.'io.containerd.cri.v1.runtime']
  # The sandbox lacks CAP_SYS_RESOURCE: without this every sandbox fails.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{ROOT}/cni/net.d"
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"#,
        socket = socket(),
        cni_bin = cni_bin.display(),
    )
}

fn cni_config() -> String {
    format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "keymint",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{BRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{ "subnet": "{POD_SUBNET}" }}]],
        "routes": [{{ "dst": "0.0.0.0/0" }}],
        "dataDir": "{ROOT}/cni/ipam"
      }}
    }},
    {{ "type": "loopback" }}
  ]
}}
"#
    )
}

fn kubelet_config(port: u16, healthz_port: u16) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine: cgroup v1 (hybrid), no systemd, swap may be on.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://{socket}
address: {HOST_ADDRESS}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz_port}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
authorization:
  mode: Webhook
clusterDomain: cluster.local
podLogsDir: {ROOT}/pod-logs
# A shared test machine's disk and memory are not the node's to guard.
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
"#,
        socket = socket(),
    )
}

fn kube_proxy_config(kubeconfig: &Path, healthz_port: u16, metrics_port: u16) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: {NODE_NAME}
clusterCIDR: {POD_SUBNET}
clientConnection:
  kubeconfig: {kubeconfig}
healthzBindAddress: 127.0.0.1:{healthz_port}
metricsBindAddress: 127.0.0.1:{metrics_port}
conntrack:
  # Leave the host's conntrack table size alone.
  maxPerCore: 0
  min: 0
"#,
        kubeconfig = kubeconfig.display(),
    )
}

/// What a node run left on this machine, one line per thing (empty when
/// clean): processes naming the node's directories (its shims too), kubepods
/// cgroups, mounts under the node's directories, its network links,
/// kube-proxy's iptables chains, and the directories themselves.
pub fn node_leftovers() -> Vec<String> {
    let mut left = Vec::new();
    let under_node =
        |text: &str| text.contains(&format!("{ROOT}/")) || text.contains(&format!("{RUN}/"));
    let own_pid = std::process::id().to_string();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == own_pid {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("cleanup.sh") {
            continue;
        }
        // Shims name the node's containerd socket (`-address`).
        if under_node(&cmdline) {
            left.push(format!("process {pid}: {}", cmdline.trim()));
        }
    }
    for controller in fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let kubepods = controller.path().join("kubepods");
        if kubepods.exists() {
            left.push(format!("cgroup {}", kubepods.display()));
        }
    }
    if let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") {
        for line in mountinfo.lines() {
            if let Some(point) = line.split_whitespace().nth(4)
                && under_node(&format!("{point}/"))
            {
                left.push(format!("mount {point}"));
            }
        }
    }
    for link in [BRIDGE, HOST_LINK] {
        if Path::new("/sys/class/net").join(link).exists() {
            left.push(format!("network link {link}"));
        }
    }
    if run("iptables", &["-t", "nat", "-S", "KUBE-SERVICES"]).is_ok() {
        left.push("iptables nat chain KUBE-SERVICES".into());
    }
    for dir in [ROOT, RUN] {
        if Path::new(dir).exists() {
            left.push(format!("directory {dir}"));
        }
    }
    left
}
