//! The real node as the node suite uses it: the shared node, the operator
//! image built once (what `make image` runs) and imported into the node's
//! containerd, the README's Helm install commands, the operator's Pods, and
//! what a container's process runs as, read from `/proc` on this host (the
//! node is this machine).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Pod;
use keymint_testenv::Node;
use kube::api::{Api, ListParams};

use crate::helm::{Helm, repo, stderr};

/// The shared node (and its control plane), started on first use.
pub fn node() -> &'static Node {
    Node::shared()
}

/// Builds the image with `scripts/build-image.sh` (what `make image` runs)
/// into `out`, from a static build of `profile`; the oci-archive's path.
pub fn build_image(out: &Path, profile: &str) -> Result<PathBuf, String> {
    let script = repo().join("scripts/build-image.sh");
    let output = Command::new(&script)
        .current_dir(repo())
        .env("KEYMINT_IMAGE_DIR", out)
        .env("KEYMINT_IMAGE_PROFILE", profile)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}):\n{}{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            stderr(&output)
        ));
    }
    Ok(out.join("keymint-oci.tar"))
}

/// The image's oci-archive, built once per test binary under `scratch`
/// (`KEYMINT_IMAGE_PROFILE`, default dev: a fraction of a release build's time).
pub fn image_archive(scratch: &Path) -> &'static Path {
    static ARCHIVE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let profile = std::env::var("KEYMINT_IMAGE_PROFILE").unwrap_or_else(|_| "dev".to_string());
    match ARCHIVE.get_or_init(|| build_image(&scratch.join("image"), &profile)) {
        Ok(path) => path,
        Err(error) => panic!("{error}"),
    }
}

/// The console block of the README's "Installing with Helm" section, one
/// command per line (words split on spaces; the block has no quoting).
pub fn readme_install_commands() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("read README.md");
    let section = readme
        .split("\n## Installing with Helm\n")
        .nth(1)
        .expect("README.md has a section `## Installing with Helm`");
    let block = section
        .split("```console\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the Helm section opens with a console block");
    block
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// Runs one README command against `node`'s control plane: `kubectl` from
/// `.venv`, `helm` from `bin/` (with `extra` appended: the values a test adds).
pub fn run_readme_command(helm: &Helm, node: &Node, command: &[String], extra: &[&str]) -> Output {
    let kubeconfig = node.control_plane().kubeconfig_path();
    let kubeconfig = kubeconfig.display().to_string();
    let (program, args) = command.split_first().expect("an empty README command");
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--kubeconfig", kubeconfig.as_str()]);
    match program.as_str() {
        "helm" => {
            args.extend_from_slice(extra);
            helm.run(&args)
        }
        "kubectl" => Command::new(repo().join(".venv/bin/kubectl"))
            .args(&args)
            .env_remove("KUBECONFIG")
            .output()
            .expect("run kubectl (`make tools` installs it)"),
        other => panic!(
            "the README's Helm section runs `{other}`; the node suite knows helm and kubectl"
        ),
    }
}

/// The Pods of a Helm release of the chart, by its instance label.
pub async fn release_pods(client: &kube::Client, namespace: &str, release: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={release}")))
        .await
        .expect("list the release's Pods")
        .items
}

/// Whether a Pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
        })
}

/// What a process runs as, from `/proc/<pid>/status` and its mount table.
#[derive(Debug)]
pub struct ProcessView {
    /// Real, effective, saved and filesystem uids.
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    /// Inheritable, permitted, effective, bounding and ambient capability masks.
    pub capabilities: Vec<(String, u64)>,
    /// 0 none, 1 strict, 2 filter.
    pub seccomp: u32,
    pub no_new_privs: bool,
    /// The mount options of the process's `/`.
    pub root_mount_options: Vec<String>,
}

impl ProcessView {
    pub fn read(pid: u32) -> Result<ProcessView, String> {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name}:")))
                .map(str::trim)
                .ok_or_else(|| format!("{path} has no {name}"))
        };
        let ids = |name: &str| -> Result<Vec<u32>, String> {
            field(name)?
                .split_whitespace()
                .map(|id| id.parse().map_err(|e| format!("{name} {id}: {e}")))
                .collect()
        };
        let mut capabilities = Vec::new();
        for name in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            let mask = u64::from_str_radix(field(name)?, 16).map_err(|e| format!("{name}: {e}"))?;
            capabilities.push((name.to_string(), mask));
        }
        let mountinfo_path = format!("/proc/{pid}/mountinfo");
        let mountinfo = std::fs::read_to_string(&mountinfo_path)
            .map_err(|e| format!("{mountinfo_path}: {e}"))?;
        // Fields: id parent major:minor root mount-point options ...
        let root_mount_options = mountinfo
            .lines()
            .rfind(|line| line.split_whitespace().nth(4) == Some("/"))
            .and_then(|line| line.split_whitespace().nth(5))
            .map(|options| options.split(',').map(str::to_string).collect())
            .ok_or_else(|| format!("{mountinfo_path} has no / mount"))?;
        Ok(ProcessView {
            uids: ids("Uid")?,
            gids: ids("Gid")?,
            capabilities,
            seccomp: field("Seccomp")?
                .parse()
                .map_err(|e| format!("Seccomp: {e}"))?,
            no_new_privs: field("NoNewPrivs")? == "1",
            root_mount_options,
        })
    }
}
