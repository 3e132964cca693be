//! The holders of a key: the workloads (Deployments, StatefulSets,
//! DaemonSets) that read its Secret. Pure decisions, no I/O, for the holder
//! side of rotation (issue #15, not wired into the controller yet):
//!
//! - [`references`]: whether a pod template reads a Secret (env, envFrom,
//!   volume, projected volume), so keymint never restarts a workload that
//!   does not hold the key;
//! - [`progress`]: the deterministic pod-template annotation that rolls a
//!   workload out to a key id, and whether a workload has finished rolling
//!   out to it, by each kind's own status rules.

pub mod progress;
pub mod references;

pub use progress::{
    Progress, annotation_key, daemon_set_progress, deployment_progress, stateful_set_progress,
};
pub use references::{Reference, references_secret};
