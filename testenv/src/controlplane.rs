//! The control plane itself: starting etcd, kube-apiserver and
//! kube-controller-manager on free loopback ports, waiting until the API
//! server is ready, stopping and restarting components for fault tests, and
//! the one control plane a test binary shares.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;

use crate::identity::StaticTokens;
use crate::process::{register_exit_cleanup, spawn_tied_to_process, tail, terminate};
use crate::{Error, Result, io_err};

const START_ATTEMPTS: usize = 3;
const READY_DEADLINE: Duration = Duration::from_secs(90);
/// How often readiness is polled during start-up.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Log lines shown when a component exits during start-up.
const EXIT_LOG_LINES: usize = 25;

/// Where the control plane binaries live: `$KEYMINT_BIN_DIR`, else `bin/` at the repository root.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("KEYMINT_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../bin"))
}

/// A free loopback TCP port.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("read a free port"))?
        .port();
    Ok(port)
}

/// Ports one start attempt uses.
#[derive(Debug, Clone, Copy)]
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
}

impl Ports {
    fn pick() -> Result<Self> {
        Ok(Ports {
            etcd_client: free_port()?,
            etcd_peer: free_port()?,
            apiserver: free_port()?,
        })
    }
}

/// A running control plane. Dropping it stops every process it started.
pub struct ControlPlane {
    pub(crate) dir: PathBuf,
    /// Keeps the temporary directory alive (and removes it on drop) unless a
    /// fixed directory was requested.
    _tempdir: Option<tempfile::TempDir>,
    pub(crate) server: String,
    processes: Mutex<Vec<(&'static str, Child)>>,
    ports: Ports,
    pub(crate) tokens: StaticTokens,
    /// Where the API server listens and what it advertises: loopback, or the
    /// node's host address (see [`Options::node_address`]).
    pub(crate) address: Ipv4Addr,
}

/// Options for [`ControlPlane::start`].
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Use this directory (created if missing) instead of a temporary one.
    pub dir: Option<PathBuf>,
    /// Serve a real node: the API server listens on and advertises this
    /// host address (reachable from Pods, so the `kubernetes` Service has an
    /// endpoint), authorizes kubelets with the Node authorizer, and the
    /// controller-manager runs the controllers Pods and Services need.
    pub node_address: Option<Ipv4Addr>,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager and waits until
    /// the API server is ready and namespace `default` exists. Retries with new
    /// ports when a port turned out to be taken.
    pub fn start(options: Options) -> Result<Self> {
        for binary in ["etcd", "kube-apiserver", "kube-controller-manager"] {
            let path = bin_dir().join(binary);
            if !path.is_file() {
                return Err(Error::MissingBinary(path));
            }
        }
        let (dir, tempdir) = match options.dir {
            Some(dir) => {
                fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
                (dir, None)
            }
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("keymint-controlplane-")
                    .tempdir()
                    .map_err(io_err("create a temporary directory"))?;
                (tmp.path().to_path_buf(), Some(tmp))
            }
        };
        let address = options.node_address.unwrap_or(Ipv4Addr::LOCALHOST);
        let mut last_error = None;
        for attempt in 1..=START_ATTEMPTS {
            let ports = Ports::pick()?;
            let mut plane = ControlPlane {
                dir: dir.clone(),
                _tempdir: None,
                server: format!("https://{address}:{}", ports.apiserver),
                processes: Mutex::new(Vec::new()),
                ports,
                tokens: StaticTokens::generate(),
                address,
            };
            match plane.boot() {
                Ok(()) => {
                    plane._tempdir = tempdir;
                    return Ok(plane);
                }
                Err(error) => {
                    eprintln!("control plane start attempt {attempt} failed: {error}");
                    plane.stop();
                    // A fresh etcd data dir for the next attempt.
                    let _ = fs::remove_dir_all(dir.join("etcd"));
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::NotReady(READY_DEADLINE, "no attempt made".into())))
    }

    fn boot(&mut self) -> Result<()> {
        self.write_config_files()?;
        self.start_etcd()?;
        self.start_apiserver()?;
        self.write_kubeconfigs()?;
        self.wait_ready()?;
        self.start_controller_manager()?;
        Ok(())
    }

    /// The directory holding the kubeconfig, logs, certificates and etcd data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The API server's audit log (JSON lines, metadata level).
    pub fn audit_log_path(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// The API server's self-signed serving certificate, the kubeconfigs' CA.
    /// It appears once the server is up enough to serve.
    pub(crate) fn serving_certificate_path(&self) -> PathBuf {
        self.dir.join("certs/apiserver.crt")
    }

    fn write_config_files(&self) -> Result<()> {
        let write = |name: &str, content: &str| {
            let path = self.dir.join(name);
            fs::write(&path, content).map_err(io_err(format!("write {}", path.display())))
        };
        write("tokens.csv", &self.tokens.token_auth_file())?;
        write(
            "audit-policy.yaml",
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"RequestReceived\"]\nrules:\n- level: Metadata\n",
        )?;
        let sa_key = self.dir.join("sa.key");
        if !sa_key.exists() {
            // The ECDSA key that signs service-account tokens, and its public half to verify them.
            let key = rcgen::KeyPair::generate()?;
            write("sa.key", &key.serialize_pem())?;
            write("sa.pub", &key.public_key_pem())?;
        }
        fs::create_dir_all(self.dir.join("certs")).map_err(io_err("create cert dir"))?;
        Ok(())
    }

    fn component_log_path(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.log"))
    }

    fn spawn(&self, component: &'static str, args: &[String]) -> Result<()> {
        let mut command = Command::new(bin_dir().join(component));
        command.args(args);
        let child = spawn_tied_to_process(command, &self.component_log_path(component))?;
        self.lock_processes().push((component, child));
        Ok(())
    }

    /// Restarts `etcd` or `kube-apiserver` in place (same ports, same data) for
    /// fault tests, and waits until the API server is ready again. Blocking:
    /// call it from `tokio::task::spawn_blocking`.
    pub fn restart_component(&self, component: &str) -> Result<()> {
        self.stop_component(component);
        self.start_component(component)?;
        self.wait_ready()
    }

    /// Starts a stopped `etcd` or `kube-apiserver` again (same ports, same data).
    pub fn start_component(&self, component: &str) -> Result<()> {
        match component {
            "etcd" => self.start_etcd(),
            _ => self.start_apiserver(),
        }
    }

    /// Blocks until `/readyz` answers and namespace `default` exists, with a
    /// deadline. Blocking: call it from `tokio::task::spawn_blocking`.
    pub fn wait_until_ready(&self) -> Result<()> {
        self.wait_ready()
    }

    fn lock_processes(&self) -> MutexGuard<'_, Vec<(&'static str, Child)>> {
        self.processes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.etcd_client)
    }

    fn start_etcd(&self) -> Result<()> {
        let peer = format!("http://127.0.0.1:{}", self.ports.etcd_peer);
        let client = self.etcd_url();
        let args = vec![
            format!("--data-dir={}", self.dir.join("etcd").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=default={peer}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ];
        self.spawn("etcd", &args)
    }

    /// Starts (or restarts, after [`ControlPlane::stop_component`]) kube-apiserver.
    pub fn start_apiserver(&self) -> Result<()> {
        let dir = self.dir.display();
        let mut args = vec![
            format!("--etcd-servers={}", self.etcd_url()),
            format!("--bind-address={}", self.address),
            format!("--advertise-address={}", self.address),
            format!("--secure-port={}", self.ports.apiserver),
            format!("--cert-dir={dir}/certs"),
            format!("--service-cluster-ip-range={}", crate::node::SERVICE_SUBNET),
            format!("--service-account-issuer={}", self.server),
            format!("--service-account-key-file={dir}/sa.pub"),
            format!("--service-account-signing-key-file={dir}/sa.key"),
            format!("--token-auth-file={dir}/tokens.csv"),
            "--allow-privileged=true".into(),
            format!("--audit-policy-file={dir}/audit-policy.yaml"),
            format!("--audit-log-path={dir}/audit.log"),
            "--audit-log-maxsize=0".into(),
            "--v=0".into(),
        ];
        if self.serves_node() {
            // The endpoint reconciler publishes the `kubernetes` Service's endpoint.
            args.extend([
                "--endpoint-reconciler-type=lease".into(),
                "--authorization-mode=Node,RBAC".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
            ]);
        } else {
            args.extend([
                // A loopback advertise address is refused by the endpoint reconciler; nothing here needs it.
                "--endpoint-reconciler-type=none".into(),
                "--authorization-mode=RBAC".into(),
            ]);
        }
        self.spawn("kube-apiserver", &args)
    }

    /// The pids of the running components.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.lock_processes()
            .iter()
            .map(|(_, child)| child.id())
            .collect()
    }

    /// Whether this control plane was started for a real node.
    pub fn serves_node(&self) -> bool {
        !self.address.is_loopback()
    }

    fn start_controller_manager(&self) -> Result<()> {
        let mut controllers = String::from(
            "garbage-collector-controller,namespace-controller,clusterrole-aggregation-controller,serviceaccount-controller,deployment-controller,replicaset-controller",
        );
        let mut args = Vec::new();
        if self.serves_node() {
            // kube-root-ca.crt (projected token volumes never mount without it),
            // the not-ready taint lifted, Service endpoints, finished Pods collected.
            controllers.push_str(",root-ca-certificate-publisher-controller,node-lifecycle-controller,endpointslice-controller,pod-garbage-collector-controller");
            args.push(format!(
                "--root-ca-file={}",
                self.serving_certificate_path().display()
            ));
        }
        args.extend([
            format!("--kubeconfig={}", self.kubeconfig_path().display()),
            "--leader-elect=false".into(),
            format!("--controllers={controllers}"),
            "--secure-port=0".into(),
            "--concurrent-gc-syncs=5".into(),
            "--v=0".into(),
        ]);
        self.spawn("kube-controller-manager", &args)
    }

    /// Stops one component (`etcd`, `kube-apiserver`, `kube-controller-manager`), for fault tests.
    pub fn stop_component(&self, component: &str) {
        let mut processes = self.lock_processes();
        for (name, child) in processes.iter_mut().filter(|(name, _)| *name == component) {
            terminate(name, child);
        }
        processes.retain(|(name, _)| *name != component);
    }

    pub(crate) fn check_alive(&self) -> Result<()> {
        let mut processes = self.lock_processes();
        for (component, child) in processes.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = tail(&self.component_log_path(component), EXIT_LOG_LINES);
                return Err(Error::Exited {
                    component,
                    status: status.to_string(),
                    log,
                });
            }
        }
        Ok(())
    }

    /// Polls `/readyz` and namespace `default` until both answer, with a deadline.
    fn wait_ready(&self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_err("start a runtime"))?;
        let deadline = Instant::now() + READY_DEADLINE;
        let mut last = String::from("not polled yet");
        while Instant::now() < deadline {
            self.check_alive()?;
            if self.serving_certificate_path().exists() {
                let outcome = runtime.block_on(async {
                    let client = self.client().await?;
                    let readyz = http::Request::get("/readyz")
                        .body(Vec::new())
                        .map_err(|e| Error::NotReady(READY_DEADLINE, e.to_string()))?;
                    client.request_text(readyz).await?;
                    Api::<Namespace>::all(client).get("default").await?;
                    Ok::<(), Error>(())
                });
                match outcome {
                    Ok(()) => return Ok(()),
                    Err(error) => last = error.to_string(),
                }
            }
            std::thread::sleep(READY_POLL_INTERVAL);
        }
        Err(Error::NotReady(READY_DEADLINE, last))
    }

    /// Stops every process this control plane started (SIGTERM, then SIGKILL).
    pub fn stop(&self) {
        let mut processes = self.lock_processes();
        // Reverse start order: controller-manager, apiserver, etcd.
        while let Some((name, mut child)) = processes.pop() {
            terminate(name, &mut child);
        }
    }

    /// The control plane shared by every test in this test binary: started on
    /// first use, stopped when the process exits (also after a panicking test).
    pub fn shared() -> &'static ControlPlane {
        static SHARED: OnceLock<ControlPlane> = OnceLock::new();
        SHARED.get_or_init(|| {
            // PR_SET_PDEATHSIG fires when the *thread* that spawned a child exits,
            // so the processes are started from a thread that never ends.
            let (sender, receiver) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("keymint-controlplane".into())
                .spawn(move || {
                    let started = ControlPlane::start(Options::default());
                    let _ = sender.send(started);
                    loop {
                        std::thread::park();
                    }
                })
                .map_err(io_err("spawn the control plane thread"))
                .and_then(|_| {
                    receiver.recv().map_err(|_| {
                        Error::NotReady(READY_DEADLINE, "control plane thread died".into())
                    })?
                })
                .inspect(|plane| {
                    let pids: Vec<u32> = plane
                        .lock_processes()
                        .iter()
                        .map(|(_, child)| child.id())
                        .collect();
                    register_exit_cleanup(pids, plane.dir.clone());
                })
                .unwrap_or_else(|error| panic!("cannot start the local control plane: {error}"))
        })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}
