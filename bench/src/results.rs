//! What a run measured: the result types the phases fill in, and the report,
//! the JSON and the plot read. Data only; it imports nothing but the types of
//! the figures it holds.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::audit::Requests;
use crate::machine::Machine;
use crate::operator::{Peaks, ProcSample};
use crate::server_cpu::ServerCpu;
use crate::stats::Summary;

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub date: String,
    pub machine: Machine,
    pub kubernetes_version: String,
    pub keymint_commit: String,
    pub concurrency: usize,
    pub rest_seconds: u64,
    pub rounds: Vec<Round>,
}

/// The measurements at one N.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub keys: usize,
    pub baseline: Baseline,
    pub ready: Ready,
    pub requests: RequestCounts,
    pub resources: Resources,
    pub restart: Restart,
    pub storm: Storm,
    /// WARN/ERROR lines the operator logged over the round.
    pub operator_warnings: usize,
    /// kube-apiserver CPU profile over the first 20 s of (2) (`phases::PROFILE_SECONDS`),
    /// and its top functions, in the results directory.
    pub apiserver_profile: Vec<String>,
}

/// (1) A bare client creating N Secrets.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub seconds: f64,
    pub per_second: f64,
    pub secret_bytes: usize,
    pub retries: u64,
    /// kube-apiserver and etcd CPU over the run.
    pub server_cpu: ServerCpu,
    /// The benchmark's own CPU over the run (it shares the machine).
    pub bench_cpu_seconds: f64,
    /// Reference: the same client creating N APIKeys that no operator
    /// watches (the custom resource's own cost on the server).
    pub apikeys_without_operator: CreateCost,
}

/// A bare client creating N objects.
#[derive(Debug, Clone, Serialize)]
pub struct CreateCost {
    pub seconds: f64,
    pub per_second: f64,
    pub server_cpu: ServerCpu,
}

/// (2) Applying N APIKeys until all are Ready.
#[derive(Debug, Clone, Serialize)]
pub struct Ready {
    /// From the first create to the last key seen Ready.
    pub seconds: f64,
    pub ratio: f64,
    /// How long the benchmark took to create the N APIKeys.
    pub apply_seconds: f64,
    /// Per key: its create returned -> seen Ready.
    pub latency: Summary,
    pub secrets_found: usize,
    pub secret_bytes: usize,
    /// One Ready APIKey as JSON (what the operator's cache holds per key), and
    /// the part of it that is `metadata.managedFields`.
    pub apikey_bytes: usize,
    pub apikey_managed_fields_bytes: usize,
    pub retries: u64,
    /// kube-apiserver and etcd CPU from the first create until the operator settled.
    pub server_cpu: ServerCpu,
    pub bench_cpu_seconds: f64,
    /// The operator's reconciles per key (each of its own writes comes back
    /// as a watch event and triggers one more).
    pub reconciles_per_key: f64,
}

/// (3) The operator's requests.
#[derive(Debug, Clone, Serialize)]
pub struct RequestCounts {
    /// From the operator's start until it settled after the last key was Ready.
    pub mint: Requests,
    pub mint_per_key: BTreeMap<String, f64>,
    pub object_writes_per_mint: f64,
    pub event_writes_per_mint: f64,
    pub reads_per_mint: f64,
    /// The rest window that follows.
    pub rest: Requests,
    pub rest_seconds: f64,
    pub rest_server_cpu: ServerCpu,
}

/// (4) The operator's memory and CPU.
#[derive(Debug, Clone, Serialize)]
pub struct Resources {
    /// Started, no keys yet.
    pub idle: ProcSample,
    /// Right after all N were Ready and the operator settled.
    pub after_mint: ProcSample,
    /// At the end of the rest window.
    pub at_rest: ProcSample,
    pub peaks: Peaks,
    /// CPU seconds spent minting the N keys.
    pub mint_cpu_seconds: f64,
    /// (RSS at rest - RSS idle) per 1,000 keys, MiB.
    pub rss_per_1000_keys_mib: f64,
}

/// (5) The rotation storm.
#[derive(Debug, Clone, Serialize)]
pub struct Storm {
    /// The second every key is due.
    pub due_at: String,
    /// How long minting the N storm keys took (a second time-to-Ready sample).
    pub mint_seconds: f64,
    /// Whether every storm key was Ready before the due second.
    pub minted_before_due: bool,
    /// Due second -> last Secret seen rotated (watch).
    pub seconds: f64,
    /// Due second -> last status seen rotated.
    pub status_seconds: f64,
    /// `status_seconds` over the baseline.
    pub ratio: f64,
    /// Per key: Secret seen rotated (watch, sub-second) - due second.
    pub slip_watch: Summary,
    /// Per key: the new key's `status.createdAt` - due second (whole seconds).
    pub slip_created_at: Summary,
    /// Keys seen rotated twice before all had rotated once.
    pub rotated_twice: usize,
    pub requests: Requests,
    pub object_writes_per_rotation: f64,
    pub event_writes_per_rotation: f64,
    pub reads_per_rotation: f64,
    pub cpu_seconds: f64,
    pub peaks: Peaks,
    /// kube-apiserver and etcd CPU from the due second until the operator settled.
    pub server_cpu: ServerCpu,
    /// The operator's reconciles per key from the due second until it settled.
    pub reconciles_per_key: f64,
}

/// (6) Restart with N keys present and up to date.
#[derive(Debug, Clone, Serialize)]
pub struct Restart {
    /// Process start -> `keymint_keys{kind="APIKey"}` = N.
    pub seconds: f64,
    pub requests: Requests,
    pub object_writes: u64,
    pub event_writes: u64,
    pub reads_per_key: f64,
    pub cpu_seconds: f64,
    pub peaks: Peaks,
    pub reconciles: f64,
    pub reconcile_errors: f64,
    /// kube-apiserver and etcd CPU from the kill until the new process settled.
    pub server_cpu: ServerCpu,
}
