//! A real Argo CD (built by `make argocd` from the pinned module) next to a
//! control plane: redis, repo-server, application-controller and server in a
//! network namespace of their own with only loopback, so nothing Argo CD
//! listens on is reachable from outside it. The API server is reached through
//! a forwarder: a socat on the namespace's 127.0.0.1:6443 passing connections
//! over a Unix socket to a socat outside that dials the API server. A local
//! bare git repository (`file://`) is the source the repo-server reads.
//!
//! Every process is tied to the test process (killed when it dies, however it
//! dies); the namespace goes with its last process.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use keymint_testenv::{ControlPlane, bin_dir, spawn_tied_to_process};

use crate::helm::{repo, stderr};

/// Argo CD's namespace, as its install manifests have it.
pub const ARGOCD_NAMESPACE: &str = "argocd";
/// The admin password of this test instance (never a real secret).
const ADMIN_PASSWORD: &str = "keymint-argocd-test";
/// Where the processes listen inside their network namespace.
const APISERVER_PORT: u16 = 6443;
const REDIS: &str = "127.0.0.1:6379";
const REPO_SERVER: &str = "127.0.0.1:8081";
const SERVER: &str = "127.0.0.1:8080";
/// How often Argo CD compares each Application with git and the cluster
/// (3 minutes by default): short, so a sync loop would show within a test.
const RECONCILIATION: &str = "10s";
/// The longest an `argocd` CLI call may take (a sync waits up to 120 s).
const CLI_LIMIT: Duration = Duration::from_secs(200);
/// Start-up on 2 cores, next to a node.
const START_DEADLINE: Duration = Duration::from_secs(120);

/// The Application health check Argo CD's "Resource Health" page gives, so a
/// parent Application waits for a child's health in sync waves (app of apps),
/// as docs/argocd.md tells users to restore it.
pub const APPLICATION_HEALTH_LUA: &str = r#"hs = {}
hs.status = "Progressing"
hs.message = ""
if obj.status ~= nil then
  if obj.status.health ~= nil then
    hs.status = obj.status.health.status
    if obj.status.health.message ~= nil then
      hs.message = obj.status.health.message
    end
  end
end
return hs
"#;

/// A running Argo CD. Dropping it stops every process.
pub struct ArgoCd {
    dir: PathBuf,
    netns: PathBuf,
    processes: Vec<(&'static str, Child)>,
}

fn run(command: &mut Command, what: &str) -> Result<Output, String> {
    let output = command
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!("{what} failed:\n{}", stderr(&output)))
    }
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("kubectl");
    command.arg("--kubeconfig").arg(kubeconfig).args(args);
    command
}

/// The host:port of a server URL (`https://10.245.0.1:6443` → `10.245.0.1:6443`).
fn host_port(server: &str) -> &str {
    server
        .split_once("://")
        .map_or(server, |(_, rest)| rest)
        .trim_end_matches('/')
}

impl ArgoCd {
    /// Installs Argo CD's CRDs and settings on `plane` and starts it, with
    /// `dir` for its state (created, emptied first). Needs root (network
    /// namespace) and `make argocd`.
    pub fn start(plane: &ControlPlane, dir: &Path) -> Result<ArgoCd, String> {
        let binary = bin_dir().join("argocd");
        if !binary.is_file() {
            return Err(format!("{} not found: run `make argocd`", binary.display()));
        }
        let _ = fs::remove_dir_all(dir);
        for sub in ["home", "config/gpg/source", "config/ssh", "config/tls"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let mut argocd = ArgoCd {
            dir: dir.to_path_buf(),
            netns: PathBuf::new(),
            processes: Vec::new(),
        };
        argocd.install(plane)?;
        argocd.start_forwarder(plane)?;
        argocd.write_kubeconfig(plane)?;
        argocd.start_components()?;
        argocd.login()?;
        Ok(argocd)
    }

    /// Where its logs, kubeconfig, CLI config and git repository are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CRDs (from the module), the namespace, and the settings Argo CD
    /// reads: argocd-cm with the Application health check and a short
    /// reconciliation, then keymint's customizations merged in exactly as
    /// docs/argocd.md tells users to; argocd-secret with the admin password.
    fn install(&self, plane: &ControlPlane) -> Result<(), String> {
        let kubeconfig = plane.kubeconfig_path();
        let crds = bin_dir().join("argocd-crds");
        run(
            kubectl(&kubeconfig, &["apply", "--server-side", "-f"]).arg(&crds),
            "install Argo CD's CRDs",
        )?;
        // `kubectl wait` can race a CRD created a moment ago: retry.
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let waited = kubectl(
                &kubeconfig,
                &["wait", "--for=condition=Established", "--timeout=30s", "-f"],
            )
            .arg(&crds)
            .output();
            match waited {
                Ok(output) if output.status.success() => break,
                _ if Instant::now() > deadline => {
                    return Err("Argo CD's CRDs never became Established".into());
                }
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        }
        let hash = run(
            Command::new(bin_dir().join("argocd"))
                .args(["account", "bcrypt", "--password", ADMIN_PASSWORD])
                .env("HOME", self.dir.join("home")),
            "argocd account bcrypt",
        )?;
        let hash = String::from_utf8_lossy(&hash.stdout).trim().to_string();
        let health = APPLICATION_HEALTH_LUA
            .lines()
            .map(|line| format!("    {line}"))
            .collect::<Vec<_>>()
            .join("\n");
        let manifest = format!(
            r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ARGOCD_NAMESPACE}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: {ARGOCD_NAMESPACE}
  labels:
    app.kubernetes.io/part-of: argocd
data:
  timeout.reconciliation: {RECONCILIATION}
  resource.customizations.health.argoproj.io_Application: |
{health}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-rbac-cm
  namespace: {ARGOCD_NAMESPACE}
  labels:
    app.kubernetes.io/part-of: argocd
---
apiVersion: v1
kind: Secret
metadata:
  name: argocd-secret
  namespace: {ARGOCD_NAMESPACE}
  labels:
    app.kubernetes.io/part-of: argocd
stringData:
  admin.password: '{hash}'
  admin.passwordMtime: '2026-01-01T00:00:00Z'
  server.secretkey: '{secret_key}'
"#,
            secret_key = random_hex()?,
        );
        let path = self.dir.join("install.yaml");
        fs::write(&path, manifest).map_err(|e| format!("write {}: {e}", path.display()))?;
        run(
            kubectl(&kubeconfig, &["apply", "--server-side", "-f"]).arg(&path),
            "install Argo CD's settings",
        )?;
        // As a user pastes keymint's customizations (docs/argocd.md).
        run(
            kubectl(
                &kubeconfig,
                &[
                    "-n",
                    ARGOCD_NAMESPACE,
                    "patch",
                    "configmap",
                    "argocd-cm",
                    "--type",
                    "merge",
                    "--patch-file",
                ],
            )
            .arg(repo().join("argocd/argocd-cm-keymint.yaml")),
            "merge argocd/argocd-cm-keymint.yaml into argocd-cm",
        )?;
        Ok(())
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// The namespace's anchor (a socat on its 127.0.0.1:6443) and the
    /// forwarder outside it to the API server.
    fn start_forwarder(&mut self, plane: &ControlPlane) -> Result<(), String> {
        let socket = self.dir.join("apiserver.sock");
        let mut outside = Command::new("socat");
        outside
            .arg(format!(
                "UNIX-LISTEN:{},fork,unlink-early",
                socket.display()
            ))
            .arg(format!("TCP:{}", host_port(plane.server())));
        let child = spawn_tied_to_process(outside, &self.log("forwarder"))
            .map_err(|e| format!("start the API server forwarder: {e}"))?;
        self.processes.push(("forwarder", child));
        let mut anchor = Command::new("unshare");
        anchor.args(["--net", "--", "sh", "-c"]).arg(format!(
            "ip link set lo up && exec socat TCP-LISTEN:{APISERVER_PORT},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:{}",
            socket.display()
        ));
        let child = spawn_tied_to_process(anchor, &self.log("netns"))
            .map_err(|e| format!("start Argo CD's network namespace: {e}"))?;
        let pid = child.id();
        self.netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        self.processes.push(("netns", child));
        // Until the anchor runs socat, /proc/<pid>/ns/net may still be ours:
        // nothing may join it before.
        let deadline = Instant::now() + START_DEADLINE;
        let ours =
            fs::read_link("/proc/self/ns/net").map_err(|e| format!("read our netns: {e}"))?;
        loop {
            let theirs = fs::read_link(&self.netns).ok();
            let program = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if theirs.is_some_and(|theirs| theirs != ours) && program.starts_with(b"socat") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Argo CD's network namespace never came up:\n{}",
                    self.tail("netns")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The kubeconfig the components use inside the namespace: the forwarder's
    /// address, the API server's certificate checked against its real name.
    fn write_kubeconfig(&self, plane: &ControlPlane) -> Result<(), String> {
        let admin = fs::read_to_string(plane.kubeconfig_path())
            .map_err(|e| format!("read the admin kubeconfig: {e}"))?;
        let server_name = host_port(plane.server())
            .rsplit_once(':')
            .map_or("", |(host, _)| host)
            .to_string();
        let inside = admin
            .replace(
                &format!("server: {}", plane.server()),
                &format!(
                    "server: https://127.0.0.1:{APISERVER_PORT}\n    tls-server-name: {server_name}"
                ),
            )
            .replace(
                "namespace: default",
                &format!("namespace: {ARGOCD_NAMESPACE}"),
            );
        let path = self.kubeconfig();
        fs::write(&path, inside).map_err(|e| format!("write {}: {e}", path.display()))
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// A command run inside Argo CD's network namespace with its environment.
    fn inside(&self, program: &Path) -> Command {
        self.inside_within(program, None)
    }

    /// [`ArgoCd::inside`], killed after `limit` when given (a CLI call that
    /// hangs must fail the test, not stall it).
    fn inside_within(&self, program: &Path, limit: Option<Duration>) -> Command {
        let mut command = match limit {
            Some(limit) => {
                let mut timeout = Command::new("timeout");
                timeout
                    .arg("--kill-after=10")
                    .arg(limit.as_secs().to_string())
                    .arg("nsenter");
                timeout
            }
            None => Command::new("nsenter"),
        };
        command
            .arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .arg(program);
        let path = format!(
            "{}:{}:{}",
            bin_dir().join("argocd-hack").display(),
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        command
            .env("PATH", path)
            .env("HOME", self.dir.join("home"))
            .env("KUBECONFIG", self.kubeconfig())
            .env("ARGOCD_FAKE_IN_CLUSTER", "true")
            .env("TMPDIR", self.dir.join("home"))
            // The paths the container image has under /app/config, here.
            .env("ARGOCD_GPG_ENABLED", "false")
            .env("ARGOCD_GNUPGHOME", self.dir.join("config/gpg/source"))
            .env("ARGOCD_SSH_DATA_PATH", self.dir.join("config/ssh"))
            .env("ARGOCD_TLS_DATA_PATH", self.dir.join("config/tls"));
        command
    }

    fn component(&self, name: &'static str, args: &[&str]) -> Command {
        let mut command = self.inside(&bin_dir().join("argocd"));
        // Argo CD's install manifests pass argocd-cm's `timeout.reconciliation`
        // to the components as this variable.
        command
            .env("ARGOCD_BINARY_NAME", name)
            .env("ARGOCD_RECONCILIATION_TIMEOUT", RECONCILIATION)
            .args(args);
        command
    }

    fn start_components(&mut self) -> Result<(), String> {
        let mut redis = self.inside(Path::new("redis-server"));
        redis.args([
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        let repo_server = self.component(
            "argocd-repo-server",
            &[
                "--disable-tls",
                "--client-ca-path",
                "",
                "--redis",
                REDIS,
                "--port",
                "8081",
                "--metrics-port",
                "8084",
                "--loglevel",
                "info",
            ],
        );
        let controller = self.component(
            "argocd-application-controller",
            // Resource health in the Application's status (Argo CD's
            // `controller.resource.health.persist`), where tests read it.
            &[
                "--repo-server",
                REPO_SERVER,
                "--repo-server-plaintext",
                "--redis",
                REDIS,
                "--metrics-port",
                "8082",
                "--persist-resource-health",
                "--loglevel",
                "info",
            ],
        );
        let server = self.component(
            "argocd-server",
            &[
                "--insecure",
                "--repo-server",
                REPO_SERVER,
                "--repo-server-plaintext",
                "--redis",
                REDIS,
                "--port",
                "8080",
                "--metrics-port",
                "8083",
                "--loglevel",
                "info",
            ],
        );
        for (name, command) in [
            ("redis", redis),
            ("argocd-repo-server", repo_server),
            ("argocd-application-controller", controller),
            ("argocd-server", server),
        ] {
            let child = spawn_tied_to_process(command, &self.log(name))
                .map_err(|e| format!("start {name}: {e}"))?;
            self.processes.push((name, child));
        }
        Ok(())
    }

    /// Logs the CLI in as admin through argocd-server (retried until the
    /// server answers).
    fn login(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let output = self
                .cli_command(&[
                    "login",
                    SERVER,
                    "--plaintext",
                    "--username",
                    "admin",
                    "--password",
                    ADMIN_PASSWORD,
                ])
                .output()
                .map_err(|e| format!("argocd login: {e}"))?;
            if output.status.success() {
                return Ok(());
            }
            if let Some((name, _)) = self.exited() {
                return Err(format!("{name} exited:\n{}", self.tail(name)));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "argocd login never succeeded within {START_DEADLINE:?}:\n{}\nserver log:\n{}",
                    stderr(&output),
                    self.tail("argocd-server")
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Checks that every Argo CD process (redis and the components, not the
    /// outside forwarder) runs in the instance's network namespace, not the
    /// host's: whatever they listen on is reachable only from inside it.
    pub fn confined(&self) -> Result<(), String> {
        let host = fs::read_link("/proc/self/ns/net").map_err(|e| format!("our netns: {e}"))?;
        let theirs =
            fs::read_link(&self.netns).map_err(|e| format!("the instance's netns: {e}"))?;
        if theirs == host {
            return Err("the instance's network namespace is the host's".into());
        }
        for (name, child) in &self.processes {
            if *name == "forwarder" {
                continue;
            }
            let net = fs::read_link(format!("/proc/{}/ns/net", child.id()))
                .map_err(|e| format!("{name}'s netns: {e}"))?;
            if net != theirs {
                return Err(format!(
                    "{name} runs in {net:?}, not the instance's {theirs:?}"
                ));
            }
        }
        Ok(())
    }

    /// A component that has exited, if any.
    pub fn exited(&mut self) -> Option<(&'static str, std::process::ExitStatus)> {
        self.processes.iter_mut().find_map(|(name, child)| {
            child
                .try_wait()
                .ok()
                .flatten()
                .map(|status| (*name, status))
        })
    }

    /// The last lines of a component's log.
    pub fn tail(&self, name: &str) -> String {
        let text = fs::read_to_string(self.log(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn cli_command(&self, args: &[&str]) -> Command {
        let mut command = self.inside_within(&bin_dir().join("argocd"), Some(CLI_LIMIT));
        command
            .arg("--config")
            .arg(self.dir.join("home/cli-config"))
            .args(args);
        command
    }

    /// Runs the `argocd` CLI against argocd-server, logged in as admin.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let output = run(
            &mut self.cli_command(args),
            &format!("argocd {}", args.join(" ")),
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs `argocd admin ...` (Argo CD's own code, offline) with `args`.
    pub fn admin(args: &[&str]) -> Result<String, String> {
        let home = tempdir_home()?;
        let output = run(
            Command::new(bin_dir().join("argocd"))
                .arg("admin")
                .args(args)
                .env("HOME", &home),
            &format!("argocd admin {}", args.join(" ")),
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Stops every process (also done on drop).
    pub fn stop(&mut self) {
        for (_, child) in self.processes.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.processes.clear();
    }
}

impl Drop for ArgoCd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// 32 random bytes as hex, from the kernel.
fn random_hex() -> Result<String, String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(|e| format!("read /dev/urandom: {e}"))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn tempdir_home() -> Result<PathBuf, String> {
    let home = std::env::temp_dir().join("keymint-argocd-admin-home");
    fs::create_dir_all(&home).map_err(|e| format!("create {}: {e}", home.display()))?;
    Ok(home)
}

/// A local git repository Argo CD reads as `file://<dir>/repo.git`: a bare
/// repository and a work tree the test commits and pushes from.
pub struct GitRepo {
    work: PathBuf,
    bare: PathBuf,
}

impl GitRepo {
    /// A new repository under `dir` holding `paths` of this repository (files
    /// or folders, at the same places), committed and pushed on `main`.
    pub fn with(dir: &Path, paths: &[&str]) -> Result<GitRepo, String> {
        let _ = fs::remove_dir_all(dir);
        let work = dir.join("work");
        let bare = dir.join("repo.git");
        fs::create_dir_all(&work).map_err(|e| format!("create {}: {e}", work.display()))?;
        let git = GitRepo { work, bare };
        run(
            Command::new("git")
                .args(["init", "--quiet", "--bare", "--initial-branch=main"])
                .arg(&git.bare),
            "git init --bare",
        )?;
        git.git(&["init", "--quiet", "--initial-branch=main"])?;
        for path in paths {
            run(
                Command::new("cp")
                    .args(["-r", "--parents"])
                    .arg(path)
                    .arg(&git.work)
                    .current_dir(repo()),
                &format!("copy {path}"),
            )?;
        }
        git.git(&["remote", "add", "origin", &git.bare.display().to_string()])?;
        git.commit_and_push("keymint at this commit")?;
        Ok(git)
    }

    /// What an Application's `repoURL` names.
    pub fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// The work tree (edit files here, then [`GitRepo::commit_and_push`]).
    pub fn work(&self) -> &Path {
        &self.work
    }

    fn git(&self, args: &[&str]) -> Result<String, String> {
        let output = run(
            Command::new("git")
                .args([
                    "-c",
                    "user.name=keymint tests",
                    "-c",
                    "user.email=tests@keymint.dev",
                ])
                .args(args)
                .current_dir(&self.work),
            &format!("git {}", args.join(" ")),
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Commits everything in the work tree and pushes it; the new revision.
    pub fn commit_and_push(&self, message: &str) -> Result<String, String> {
        self.git(&["add", "--all"])?;
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message])?;
        self.git(&["push", "--quiet", "origin", "main"])?;
        Ok(self.git(&["rev-parse", "HEAD"])?.trim().to_string())
    }
}
