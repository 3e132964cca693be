//! A real local Kubernetes control plane for keymint's tests and `make run`.
//!
//! Starts etcd, kube-apiserver and kube-controller-manager (built from Go
//! modules into `bin/` by `make controlplane`) on free loopback ports in a
//! temporary directory, writes an admin kubeconfig, and stops everything it
//! started when it is dropped, when the process exits, and (through
//! `PR_SET_PDEATHSIG`) when the process dies without cleaning up.
//!
//! - `controlplane`: starting, stopping and restarting the components, readiness;
//! - `process`: child processes tied to the test process;
//! - `node`: a real node (containerd, kubelet, kube-scheduler, kube-proxy), root only;
//! - `identity`: token identities, kubeconfigs, clients, ServiceAccounts;
//! - `audit`: audit events and counting them;
//! - `wait`: [`eventually`].
//!
//! Every public item is also re-exported here, at the crate root.

use std::path::PathBuf;
use std::time::Duration;

mod audit;
mod controlplane;
mod identity;
mod node;
mod process;
mod wait;

pub use audit::{AuditEvent, AuditObjectRef, AuditResponseStatus, AuditUser};
pub use controlplane::{ControlPlane, Options, bin_dir, free_port};
pub use identity::{ADMIN_USER, OPERATOR_USER, STANDBY_OPERATOR_USER, rule};
pub use node::{
    HOST_ADDRESS, NODE_NAME, Node, POD_SUBNET, SERVICE_SUBNET, clean_node_leftovers, node_leftovers,
};
pub use process::spawn_tied_to_process;
pub use wait::eventually;

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
    #[error("node: {0}")]
    Node(String),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("key generation: {0}")]
    Key(#[from] rcgen::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps an I/O error to [`Error::Io`], saying what was being done.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |e| Error::Io(what, e)
}
