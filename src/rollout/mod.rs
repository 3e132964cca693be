//! The holders of a key: the workloads (Deployments, StatefulSets,
//! DaemonSets) that read its Secret. Pure decisions, no I/O, for the holder
//! side of rotation:
//!
//! - [`references`]: whether a pod template reads a Secret (env, envFrom,
//!   volume, projected volume), so keymint never restarts a workload that
//!   does not hold the key;
//! - [`progress`]: the deterministic pod-template annotation that rolls a
//!   workload out to a key id, and whether a workload has finished rolling
//!   out to it, by each kind's own status rules;
//! - [`consumers`]: which workloads a key's `spec.consumers` names, what each
//!   of them runs, and whether the previous key may go;
//! - [`template`]: the annotations keymint applies to one workload for every
//!   key feeding it, and whether it may start a rollout now.

pub mod consumers;
pub mod progress;
pub mod references;
pub mod template;

pub use consumers::{Assessment, Candidate, Report, Switch, assess, report, selects};
pub use progress::{
    Progress, Workload, annotation_key, progress, rolled_out, template_annotations,
};
pub use references::{Reference, references_secret};
pub use template::{Feed, may_start, wanted_annotations};
