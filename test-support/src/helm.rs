//! The Helm chart in `charts/keymint` and `bin/helm`: helm run with its own
//! state in a scratch directory, and installs against the test control plane.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keymint_testenv::ControlPlane;

/// The repository's root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support is a folder of the repository")
}

pub fn chart_dir() -> PathBuf {
    repo().join("charts/keymint")
}

/// The Kubernetes version the control plane runs (`v1.37.2`), for `helm template`.
pub fn kube_version() -> String {
    std::fs::read_to_string(repo().join("tests/controlplane/KUBERNETES_VERSION"))
        .expect("tests/controlplane/KUBERNETES_VERSION")
        .trim()
        .to_string()
}

/// A command's standard error, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `bin/helm` (built by `make tools`) with its cache, config and data in a
/// scratch directory of the test binary's own.
pub struct Helm {
    scratch: PathBuf,
}

impl Helm {
    /// Helm with its state (and the test's values files) under `scratch`.
    pub fn new(scratch: impl Into<PathBuf>) -> Helm {
        let scratch = scratch.into();
        std::fs::create_dir_all(&scratch).expect("create the scratch directory");
        Helm { scratch }
    }

    /// Where a test writes its values files.
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// Runs helm with `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        let binary = repo().join("bin/helm");
        assert!(
            binary.is_file(),
            "helm not found at {}: run `make tools` (or `make test`, which builds it)",
            binary.display()
        );
        let home = self.scratch.join("helm-home");
        Command::new(binary)
            .args(args)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("KUBECONFIG")
            .output()
            .expect("run helm")
    }

    /// `helm install` (or upgrade) of the chart against `plane`.
    pub fn install(
        &self,
        plane: &ControlPlane,
        release: &str,
        namespace: &str,
        args: &[&str],
    ) -> Output {
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
        self.run(&all)
    }

    /// [`Helm::install`], which must succeed.
    pub fn install_ok(&self, plane: &ControlPlane, release: &str, namespace: &str, args: &[&str]) {
        let output = self.install(plane, release, namespace, args);
        assert!(
            output.status.success(),
            "helm install {release} failed:\n{}",
            stderr(&output)
        );
    }
}
