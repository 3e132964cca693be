//! The `keymint run` process a test starts: its arguments, log and metrics
//! port; signals to it (and to any child or process group a test owns)
//! without `unsafe`; a plain HTTP GET of its health and metrics endpoints.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub use rustix::process::Signal;
use rustix::process::{Pid, geteuid, kill_process, kill_process_group};

use crate::cluster::{OPERATOR_NAMESPACE, ROOT_KEY_NAMESPACE, WAIT, cluster};

/// The operator binary: cargo's `CARGO_BIN_EXE_keymint` when it sets it at run
/// time, else `keymint` next to the test binary's `deps/` directory.
pub fn keymint_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_keymint") {
        return PathBuf::from(path);
    }
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in <target>/<profile>/deps");
    let binary = profile_dir.join("keymint");
    assert!(
        binary.is_file(),
        "{} not found: build it (cargo test builds it for the root package's tests)",
        binary.display()
    );
    binary
}

/// A `keymint run` process started by a test.
pub struct Operator {
    child: Mutex<Child>,
    /// Its stdout and stderr (appended to: a restart under the same name keeps the earlier runs).
    pub log: PathBuf,
    pub metrics_port: u16,
}

impl Operator {
    /// Starts `keymint run` as the identity in `kubeconfig`, with `extra` arguments.
    pub fn start(name: &str, kubeconfig: &Path, extra: &[&str], env: &[(&str, &str)]) -> Operator {
        let plane = cluster();
        let log = plane.dir().join(format!("{name}.log"));
        let metrics_port = keymint_testenv::free_port().expect("free port");
        let mut command = Command::new(keymint_binary());
        command.args([
            "run",
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--operator-namespace",
            OPERATOR_NAMESPACE,
            "--root-key-namespaces",
            &format!("{OPERATOR_NAMESPACE},{ROOT_KEY_NAMESPACE}"),
            "--metrics-address",
            &format!("127.0.0.1:{metrics_port}"),
        ]);
        if !extra.contains(&"--log-format") {
            // JSON unless the test asks for another format (clap refuses the flag twice).
            command.args(["--log-format", "json"]);
        }
        if !extra.contains(&"--log-level") {
            // Debug level: the log scans prove keys stay out of the log even here.
            command.args([
                "--log-level",
                "debug,hyper=info,tower=info,kube_client=info,rustls=info,h2=info",
            ]);
        }
        command.args(extra).envs(env.iter().copied());
        let child =
            keymint_testenv::spawn_tied_to_process(command, &log).expect("start keymint run");
        Operator {
            child: Mutex::new(child),
            log,
            metrics_port,
        }
    }

    /// Starts `keymint run` as the operator identity, without leader election,
    /// watching only `namespace` (so it cannot race another test's operator).
    pub fn watching(name: &str, namespace: &str) -> Operator {
        Operator::start(
            name,
            &cluster().operator_kubeconfig_path(),
            &["--leader-elect=false", "--watch-namespace", namespace],
            &[],
        )
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        last_lines(&self.log(), lines)
    }

    /// The log so far (every run under this name).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) {
        send(self.pid(), signal);
    }

    pub fn sigterm(&self) {
        self.signal(Signal::TERM);
    }

    pub fn sigkill(&self) {
        self.signal(Signal::KILL);
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.child().try_wait().expect("wait for the operator")
    }

    pub fn is_running(&self) -> bool {
        self.try_wait().is_none()
    }

    /// SIGKILL, and waits until the process is reaped.
    pub fn kill(&self) -> ExitStatus {
        self.sigkill();
        self.child().wait().expect("reap the killed operator")
    }

    /// SIGTERM, then polls (up to [`WAIT`]) until it has exited; its status.
    pub async fn stop(&self) -> ExitStatus {
        self.sigterm();
        keymint_testenv::eventually("the operator to exit after SIGTERM", WAIT, || async {
            // The log's end says what it is waiting for.
            self.try_wait()
                .ok_or_else(|| format!("still running; log ends:\n{}", self.log_tail(60)))
        })
        .await
    }

    /// Like [`Operator::stop`], and asserts a clean exit (status 0).
    pub async fn stop_cleanly(&self) {
        let status = self.stop().await;
        assert!(status.success(), "exit {status:?}; log:\n{}", self.log());
    }

    /// `GET /metrics`: the body.
    pub fn metrics(&self) -> std::io::Result<String> {
        http_get(self.metrics_port, "/metrics").map(|(_, body)| body)
    }

    /// `/metrics` once the server answers (polls up to [`WAIT`]).
    pub async fn wait_metrics(&self) -> String {
        keymint_testenv::eventually("the operator's /metrics", WAIT, || async {
            self.metrics().map_err(|e| e.to_string())
        })
        .await
    }
}

/// The last `lines` lines of `text` (an operator's log, for a failure message).
pub fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn pid_of(pid: u32) -> Pid {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .unwrap_or_else(|| panic!("{pid} is a process id"))
}

/// Sends `signal` to the process `pid` (a child the test started).
pub fn send(pid: u32, signal: Signal) {
    kill_process(pid_of(pid), signal).unwrap_or_else(|e| panic!("signal {signal:?} to {pid}: {e}"));
}

/// Sends `signal` to every process in the group `group` (as Ctrl-C does).
pub fn send_to_group(group: u32, signal: Signal) {
    kill_process_group(pid_of(group), signal)
        .unwrap_or_else(|e| panic!("signal {signal:?} to process group {group}: {e}"));
}

/// Whether the test runs as root (some checks need it, e.g. chroot).
pub fn is_root() -> bool {
    geteuid().is_root()
}

/// A plain HTTP/1.1 GET on loopback: (status code, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_get_at("127.0.0.1", port, path)
}

/// [`http_get`] from `host` (a Pod's or a Service's address on the node).
pub fn http_get_at(host: &str, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect((host, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}
