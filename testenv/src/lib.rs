//! A real local Kubernetes control plane for keymint's tests and `make run`.
//!
//! Starts etcd, kube-apiserver and kube-controller-manager (built from Go
//! modules into `bin/` by `make controlplane`) on free loopback ports in a
//! temporary directory, writes an admin kubeconfig, and stops everything it
//! started when it is dropped, when the process exits, and (through
//! `PR_SET_PDEATHSIG`) when the process dies without cleaning up.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Deserialize;

/// User name of the admin identity (group `system:masters`).
pub const ADMIN_USER: &str = "keymint-admin";
/// User name the operator runs as in tests, so the audit log can tell its
/// requests apart from the test's own.
pub const OPERATOR_USER: &str = "keymint-operator";
/// A second operator identity (`system:masters`), for a second replica.
pub const STANDBY_OPERATOR_USER: &str = "keymint-operator-standby";

const START_ATTEMPTS: usize = 3;
const READY_DEADLINE: Duration = Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("control plane binary {0} not found: run `make controlplane` first")]
    MissingBinary(PathBuf),
    #[error("{component} exited during start-up ({status}); last log lines:\n{log}")]
    Exited {
        component: &'static str,
        status: String,
        log: String,
    },
    #[error("control plane not ready within {0:?}: {1}")]
    NotReady(Duration, String),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("key generation: {0}")]
    Key(#[from] rcgen::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |e| Error::Io(what, e)
}

/// Where the control plane binaries live: `$KEYMINT_BIN_DIR`, else `bin/` at the repository root.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("KEYMINT_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../bin"))
}

/// Ports one start attempt uses.
#[derive(Debug, Clone, Copy)]
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
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
    dir: PathBuf,
    /// Keeps the temporary directory alive (and removes it on drop) unless a
    /// fixed directory was requested.
    _tempdir: Option<tempfile::TempDir>,
    server: String,
    processes: Mutex<Vec<(&'static str, Child)>>,
    ports: Ports,
    admin_token: String,
    operator_token: String,
    standby_token: String,
}

/// Options for [`ControlPlane::start`].
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Use this directory (created if missing) instead of a temporary one.
    pub dir: Option<PathBuf>,
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
        let mut last_error = None;
        for attempt in 1..=START_ATTEMPTS {
            let ports = Ports::pick()?;
            let mut plane = ControlPlane {
                dir: dir.clone(),
                _tempdir: None,
                server: format!("https://127.0.0.1:{}", ports.apiserver),
                processes: Mutex::new(Vec::new()),
                ports,
                admin_token: random_token(),
                operator_token: random_token(),
                standby_token: random_token(),
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
        self.write_kubeconfig(
            &self.kubeconfig_path(),
            ADMIN_USER,
            &self.admin_token.clone(),
        )?;
        self.write_kubeconfig(
            &self.operator_kubeconfig_path(),
            OPERATOR_USER,
            &self.operator_token.clone(),
        )?;
        self.write_kubeconfig(
            &self.standby_kubeconfig_path(),
            STANDBY_OPERATOR_USER,
            &self.standby_token.clone(),
        )?;
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

    /// Kubeconfig of the admin user (`system:masters`).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Kubeconfig of the operator's test identity ([`OPERATOR_USER`], `system:masters`).
    pub fn operator_kubeconfig_path(&self) -> PathBuf {
        self.dir.join("operator.kubeconfig")
    }

    /// Kubeconfig of the second operator identity ([`STANDBY_OPERATOR_USER`]).
    pub fn standby_kubeconfig_path(&self) -> PathBuf {
        self.dir.join("standby.kubeconfig")
    }

    /// The API server's audit log (JSON lines, metadata level).
    pub fn audit_log_path(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    fn write_config_files(&self) -> Result<()> {
        let write = |name: &str, content: &str| {
            let path = self.dir.join(name);
            fs::write(&path, content).map_err(io_err(format!("write {}", path.display())))
        };
        // The token file is read once at start-up: every identity the tests need
        // that is not a ServiceAccount must be here.
        write(
            "tokens.csv",
            &format!(
                "{},{ADMIN_USER},uid-admin,\"system:masters\"\n{},{OPERATOR_USER},uid-operator,\"system:masters\"\n{},{STANDBY_OPERATOR_USER},uid-standby,\"system:masters\"\n",
                self.admin_token, self.operator_token, self.standby_token
            ),
        )?;
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

    fn spawn(&self, component: &'static str, args: &[String]) -> Result<()> {
        let mut command = Command::new(bin_dir().join(component));
        command.args(args);
        let child = spawn_tied_to_process(command, &self.dir.join(format!("{component}.log")))?;
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

    fn lock_processes(&self) -> std::sync::MutexGuard<'_, Vec<(&'static str, Child)>> {
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
        let args = vec![
            format!("--etcd-servers={}", self.etcd_url()),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // A loopback advertise address is refused by the endpoint reconciler; nothing here needs it.
            "--endpoint-reconciler-type=none".into(),
            format!("--secure-port={}", self.ports.apiserver),
            format!("--cert-dir={dir}/certs"),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            format!("--service-account-issuer={}", self.server),
            format!("--service-account-key-file={dir}/sa.pub"),
            format!("--service-account-signing-key-file={dir}/sa.key"),
            "--authorization-mode=RBAC".into(),
            format!("--token-auth-file={dir}/tokens.csv"),
            "--allow-privileged=true".into(),
            format!("--audit-policy-file={dir}/audit-policy.yaml"),
            format!("--audit-log-path={dir}/audit.log"),
            "--audit-log-maxsize=0".into(),
            "--v=0".into(),
        ];
        self.spawn("kube-apiserver", &args)
    }

    fn start_controller_manager(&self) -> Result<()> {
        let args = vec![
            format!("--kubeconfig={}", self.kubeconfig_path().display()),
            "--leader-elect=false".into(),
            "--controllers=garbage-collector-controller,namespace-controller,clusterrole-aggregation-controller,serviceaccount-controller,deployment-controller,replicaset-controller".into(),
            "--secure-port=0".into(),
            "--concurrent-gc-syncs=5".into(),
            "--v=0".into(),
        ];
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

    fn check_alive(&self) -> Result<()> {
        let mut processes = self.lock_processes();
        for (component, child) in processes.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = tail(&self.dir.join(format!("{component}.log")), 25);
                return Err(Error::Exited {
                    component,
                    status: status.to_string(),
                    log,
                });
            }
        }
        Ok(())
    }

    fn write_kubeconfig(&self, path: &Path, user: &str, token: &str) -> Result<()> {
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: keymint-local\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: keymint-local\n  context:\n    cluster: keymint-local\n    user: {user}\n    namespace: default\ncurrent-context: keymint-local\n",
            server = self.server,
            ca = self.dir.join("certs/apiserver.crt").display(),
        );
        fs::write(path, config).map_err(io_err(format!("write {}", path.display())))
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
            // The serving certificate appears once the server is up enough to serve.
            if self.dir.join("certs/apiserver.crt").exists() {
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
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(Error::NotReady(READY_DEADLINE, last))
    }

    /// A client for the admin user. Create one per test: a client belongs to
    /// the tokio runtime it was first used on.
    pub async fn client(&self) -> Result<kube::Client> {
        self.client_from(&self.kubeconfig_path()).await
    }

    /// A client for [`OPERATOR_USER`].
    pub async fn operator_client(&self) -> Result<kube::Client> {
        self.client_from(&self.operator_kubeconfig_path()).await
    }

    async fn client_from(&self, path: &Path) -> Result<kube::Client> {
        let kubeconfig =
            Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig(e.to_string()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        Ok(kube::Client::try_from(config)?)
    }

    /// A client that authenticates with a bearer token (e.g. from the TokenRequest API).
    pub async fn client_with_token(&self, token: &str) -> Result<kube::Client> {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig_path())
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.to_string().into()),
            ..Default::default()
        };
        Ok(kube::Client::try_from(config)?)
    }

    /// Creates a namespace with a unique name starting with `prefix` and returns its name.
    pub async fn namespace(&self, client: &kube::Client, prefix: &str) -> Result<String> {
        let name = format!("{prefix}-{}", &random_token()[..8].to_lowercase());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        Ok(name)
    }

    /// Creates a ServiceAccount in `namespace`, grants it `rules` there through a Role,
    /// and returns a client that authenticates as it with a token from the TokenRequest API.
    pub async fn service_account_client(
        &self,
        admin: &kube::Client,
        namespace: &str,
        name: &str,
        rules: Vec<PolicyRule>,
    ) -> Result<kube::Client> {
        let meta = ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        };
        let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), namespace);
        accounts
            .create(
                &PostParams::default(),
                &ServiceAccount {
                    metadata: meta.clone(),
                    ..Default::default()
                },
            )
            .await?;
        if !rules.is_empty() {
            Api::<Role>::namespaced(admin.clone(), namespace)
                .create(
                    &PostParams::default(),
                    &Role {
                        metadata: meta.clone(),
                        rules: Some(rules),
                    },
                )
                .await?;
            let binding = RoleBinding {
                metadata: meta.clone(),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: name.into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: name.into(),
                    namespace: Some(namespace.into()),
                    ..Default::default()
                }]),
            };
            Api::<RoleBinding>::namespaced(admin.clone(), namespace)
                .create(&PostParams::default(), &binding)
                .await?;
        }
        let token = self.service_account_token(admin, namespace, name).await?;
        self.client_with_token(&token).await
    }

    /// A token for a ServiceAccount from the TokenRequest API.
    pub async fn service_account_token(
        &self,
        admin: &kube::Client,
        namespace: &str,
        name: &str,
    ) -> Result<String> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let response = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await?;
        response.status.map(|status| status.token).ok_or_else(|| {
            Error::Kubeconfig(format!(
                "TokenRequest for {namespace}/{name} returned no token"
            ))
        })
    }

    /// Every audit event recorded so far.
    pub fn audit_events(&self) -> Result<Vec<AuditEvent>> {
        let path = self.audit_log_path();
        let file = fs::File::open(&path).map_err(io_err(format!("open {}", path.display())))?;
        Ok(BufReader::new(file)
            .lines()
            .map_while(std::result::Result::ok)
            .filter_map(|line| serde_json::from_str(&line).ok())
            .collect())
    }

    /// How many requests `user` made, by verb, among the events after the first
    /// `after` (pass an earlier `audit_events().len()` to count a window).
    pub fn count_requests_by_verb(
        &self,
        user: &str,
        after: usize,
    ) -> Result<BTreeMap<String, usize>> {
        let mut counts = BTreeMap::new();
        for event in self
            .audit_events()?
            .into_iter()
            .skip(after)
            .filter(|e| e.user.username == user)
        {
            *counts.entry(event.verb).or_insert(0) += 1;
        }
        Ok(counts)
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
                .inspect(register_exit_cleanup)
                .unwrap_or_else(|error| panic!("cannot start the local control plane: {error}"))
        })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `command` (stdout and stderr to `log`) from a thread that lives as
/// long as the process, so the child is killed when the test process dies,
/// however it dies, and at a normal exit. Tests use it for the operator.
pub fn spawn_tied_to_process(mut command: Command, log: &Path) -> Result<Child> {
    type Request = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<std::sync::mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel::<Request>();
        let _ = std::thread::Builder::new()
            .name("keymint-spawner".into())
            .spawn(move || {
                for (mut command, reply) in receiver {
                    let _ = reply.send(command.spawn());
                }
                loop {
                    std::thread::park();
                }
            });
        Mutex::new(sender)
    });
    // Appends: a restarted process keeps its earlier log (tests scan all of it).
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err(format!("open {}", log.display())))?;
    let err = out.try_clone().map_err(io_err("clone log handle"))?;
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    kill_with_parent(&mut command);
    let (reply, response) = std::sync::mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((command, reply))
        .map_err(|_| Error::NotReady(READY_DEADLINE, "spawner thread is gone".into()))?;
    let child = response
        .recv()
        .map_err(|_| Error::NotReady(READY_DEADLINE, "spawner thread is gone".into()))?
        .map_err(io_err("spawn a process"))?;
    if let Ok(mut pids) = EXIT_PIDS.lock() {
        pids.push(child.id());
    }
    Ok(child)
}

static EXIT_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Statics are never dropped, so the shared control plane is stopped (and its
/// directory removed) by an exit hook as well.
fn register_exit_cleanup(plane: &ControlPlane) {
    static DIR: Mutex<Option<PathBuf>> = Mutex::new(None);
    extern "C" fn cleanup() {
        if let Ok(pids) = EXIT_PIDS.lock() {
            for pid in pids.iter() {
                // SAFETY: kill(2) on a pid we spawned; no memory is touched.
                unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        if let Ok(Some(dir)) = DIR.lock().map(|dir| dir.clone()) {
            let _ = fs::remove_dir_all(dir);
        }
    }
    if let Ok(mut pids) = EXIT_PIDS.lock() {
        pids.extend(plane.lock_processes().iter().map(|(_, child)| child.id()));
    }
    if let Ok(mut dir) = DIR.lock() {
        *dir = Some(plane.dir.clone());
    }
    // SAFETY: registers a plain extern "C" function with no captured state.
    unsafe { libc::atexit(cleanup) };
}

fn kill_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; called between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn terminate(name: &str, child: &mut Child) {
    if let Ok(mut pids) = EXIT_PIDS.lock() {
        // Never signal a pid at exit that may have been reused since.
        pids.retain(|pid| *pid != child.id());
    }
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on the child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{name} did not stop on SIGTERM within 10s; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

fn tail(path: &Path, lines: usize) -> String {
    let content = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = content.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fields of an audit event the tests count by.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub verb: String,
    pub user: AuditUser,
    #[serde(default)]
    pub object_ref: Option<AuditObjectRef>,
    #[serde(default, rename = "requestURI")]
    pub request_uri: String,
    #[serde(default)]
    pub response_status: Option<AuditResponseStatus>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuditUser {
    #[serde(default)]
    pub username: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditObjectRef {
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub subresource: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuditResponseStatus {
    #[serde(default)]
    pub code: Option<u16>,
}

/// Convenience for tests: a ClusterRole rule.
pub fn rule(api_groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect());
    PolicyRule {
        api_groups: strings(api_groups),
        resources: strings(resources),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what`
/// and the last observation after `timeout`. Tests use it instead of sleeps.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
