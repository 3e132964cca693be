//! What a run measured: the result types the phases fill in, and the report,
//! the JSON and the plot read. Data only; it imports nothing but the types of
//! the figures it holds.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::audit::Requests;
use crate::machine::Machine;
use crate::operator::{Peaks, ProcSample};
use crate::server_cpu::ServerCpu;
use crate::stats::{RateSummary, Summary};

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub date: String,
    pub machine: Machine,
    pub kubernetes_version: String,
    pub keymint_commit: String,
    pub concurrency: usize,
    pub rest_seconds: u64,
    /// `--storm-rate`: the storm operator's `--max-rotations-per-second`.
    pub storm_rate: u32,
    pub rounds: Vec<Round>,
    /// The crowded cluster, when that phase ran and got through.
    pub crowded: Option<Crowded>,
    /// The big round, when that phase ran (with what stopped it, if anything).
    pub big: Option<BigRound>,
    /// Phases or rounds that failed, with their error; what they measured
    /// before is kept elsewhere in the run.
    pub failures: Vec<Failure>,
}

/// A phase (or one round of it) that failed.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub phase: String,
    pub error: String,
}

/// The measurements at one N.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub keys: usize,
    pub baseline: Baseline,
    pub ideal: IdealOperator,
    pub ready: Ready,
    pub requests: RequestCounts,
    pub resources: Resources,
    pub restart: Restart,
    pub storm: Storm,
    /// Server CPU per write, by kind of write.
    pub write_costs: WriteCosts,
    /// WARN/ERROR lines the operator logged over the round.
    pub operator_warnings: usize,
    /// kube-apiserver CPU profiles of (2) and of the ideal operator (over
    /// `phases::profile_seconds`), their top functions and their
    /// difference: file names in the results directory.
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

/// (1) The ideal operator: a bare client making keymint's writes for N new
/// keys (APIKey create, Secret apply, status apply, Event), with no operator.
#[derive(Debug, Clone, Serialize)]
pub struct IdealOperator {
    /// From the first request to the last status response.
    pub seconds: f64,
    pub per_second: f64,
    /// From the first request to the last Event's response.
    pub seconds_with_events: f64,
    /// kube-apiserver and etcd CPU over all of it, Events included.
    pub server_cpu: ServerCpu,
    /// The status apply's body, bytes.
    pub status_bytes: usize,
    pub retries: u64,
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
    /// `seconds` over the bare-Secret baseline's.
    pub ratio: f64,
    /// `seconds` over the ideal operator's.
    pub ratio_to_ideal: f64,
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

/// (5) The rotation storm: N keys whose renewal falls due within the
/// minting time, rotated by an operator with a spread window and a rate limit.
#[derive(Debug, Clone, Serialize)]
pub struct Storm {
    /// The operator's `--max-rotations-per-second`.
    pub rate_limit: u32,
    /// The operator's `--rotation-spread` W, seconds: the window before its
    /// renewal deadline in which each key is rotated.
    pub spread_window_seconds: u64,
    /// The keys' `spec.renewBefore` (2 W) and `spec.validFor`, seconds.
    pub renew_before_seconds: u64,
    pub valid_for_seconds: u64,
    /// How long minting the N storm keys took (a second time-to-Ready sample).
    pub mint_seconds: f64,
    /// The earliest second any key may rotate (earliest deadline - W + 1).
    pub earliest_rotation_at: String,
    /// Whether every storm key was Ready before then.
    pub minted_before_first_rotation: bool,
    /// First -> last rotation, Secret watch (sub-second) and `status.createdAt`.
    pub spread_seconds: f64,
    pub spread_created_at_seconds: f64,
    /// Rotated after the key's renewal deadline (its first
    /// `status.createdAt` + validFor - renewBefore): by the new key's
    /// `status.createdAt`, and by the Secret seen rotated after the end of
    /// the deadline's second.
    pub late_by_created_at: usize,
    pub late_by_watch: usize,
    /// Rotated after the old key's `expiresAt` (by `status.createdAt` at or
    /// after it, or the Secret seen rotated after it).
    pub expired_in_use: usize,
    /// Per key: deadline - Secret seen rotated (sub-second; negative is late).
    pub headroom_watch: Summary,
    /// Per key: deadline - new key's `status.createdAt` (whole seconds).
    pub headroom_created_at: Summary,
    /// Rotations per second by the new keys' `status.createdAt`, from the
    /// first rotation's second to the last's.
    pub rotations_per_second: RateSummary,
    /// The operator's requests per second over the same seconds (audit log,
    /// by arrival), all and by kind.
    pub operator_requests_per_second: RequestRates,
    /// The rate limit × (object writes + Events) per rotation: the request
    /// rate the limit allows for the writes.
    pub allowed_writes_per_second: f64,
    /// Keys seen rotated twice before the operator settled (0 by design).
    pub rotated_twice: usize,
    /// Every operator request from just before the earliest rotation until it settled.
    pub requests: Requests,
    pub object_writes_per_rotation: f64,
    pub event_writes_per_rotation: f64,
    pub reads_per_rotation: f64,
    pub cpu_seconds: f64,
    pub peaks: Peaks,
    /// kube-apiserver and etcd CPU from just before the earliest rotation until the operator settled.
    pub server_cpu: ServerCpu,
    /// The operator's reconciles per key over the same window.
    pub reconciles_per_key: f64,
}

/// Requests per second: all, object writes, Event writes, reads.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RequestRates {
    pub all: RateSummary,
    pub object_writes: RateSummary,
    pub event_writes: RateSummary,
    pub reads: RateSummary,
}

/// (6) Restart with N keys present and up to date.
#[derive(Debug, Clone, Serialize)]
pub struct Restart {
    /// Process start -> `keymint_keys{kind="APIKey"}` = N: the median of
    /// [`Restart::each`] (one restart's time varies by a second here).
    pub seconds: f64,
    /// Every restart's time, the first one measured in full (the requests,
    /// peaks and CPU below are of that one).
    pub each: crate::stats::Summary,
    pub requests: Requests,
    pub object_writes: u64,
    pub event_writes: u64,
    pub reads_per_key: f64,
    /// GETs of single Secrets (a LIST is not one), and per key.
    pub secret_gets: u64,
    pub secret_gets_per_key: f64,
    pub cpu_seconds: f64,
    pub peaks: Peaks,
    pub reconciles: f64,
    pub reconcile_errors: f64,
    /// kube-apiserver and etcd CPU from the kill until the new process settled.
    pub server_cpu: ServerCpu,
}

/// Server CPU per write: batches of one kind of write each, on objects of
/// their own namespace, with the benchmark's concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct WriteCosts {
    /// Writes per batch: min(N, 2,000).
    pub writes: usize,
    pub kinds: Vec<WriteCost>,
}

/// One batch of [`WriteCosts`].
#[derive(Debug, Clone, Serialize)]
pub struct WriteCost {
    /// A stable id, e.g. `secret-apply-update`.
    pub kind: String,
    /// What the table says, e.g. `Secret server-side apply (update)`.
    pub label: String,
    pub seconds: f64,
    pub per_second: f64,
    pub server_cpu: ServerCpu,
    /// kube-apiserver + etcd CPU per write, milliseconds.
    pub server_ms_per_write: f64,
    pub retries: u64,
}

/// The crowded cluster: keys among many unrelated objects, the operator
/// watching all namespaces.
#[derive(Debug, Clone, Serialize)]
pub struct Crowded {
    pub keys: usize,
    pub unrelated_secrets: usize,
    pub unrelated_service_accounts: usize,
    pub unrelated_namespaces: usize,
    /// First create -> last key seen Ready.
    pub mint_seconds: f64,
    /// How long creating the unrelated objects took.
    pub unrelated_seconds: f64,
    /// (c) restart -> all keys confirmed.
    pub restart_seconds: f64,
    /// Started, no keys yet.
    pub idle: ProcSample,
    /// (a) minted and settled.
    pub minted: ProcSample,
    /// (b) after the unrelated objects, settled.
    pub crowded: ProcSample,
    /// (c) after a SIGKILL and restart, all confirmed, settled.
    pub restarted: ProcSample,
    /// RSS (b) - (a) and (c) - (a), MiB.
    pub unrelated_growth_mib: f64,
    pub restart_growth_mib: f64,
    /// The restarted operator's writes until it settled.
    pub restart_writes: u64,
}

/// The big round: mint, memory at rest and restart at `--big-keys`, or as
/// far as it got.
#[derive(Debug, Clone, Serialize)]
pub struct BigRound {
    pub keys: usize,
    pub mint: Option<BigMint>,
    pub at_rest: Option<BigAtRest>,
    pub restart: Option<BigRestart>,
    /// etcd's `etcd_mvcc_db_total_size_in_bytes` at the end (or the failure).
    pub etcd_db_bytes: Option<u64>,
    /// What stopped the round, if something did.
    pub limit: Option<BigLimit>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BigMint {
    /// First create -> last key seen Ready.
    pub seconds: f64,
    pub apply_seconds: f64,
    pub per_second: f64,
    pub reconciles_per_key: f64,
    pub server_cpu: ServerCpu,
    pub retries: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BigAtRest {
    pub idle: ProcSample,
    pub at_rest: ProcSample,
    /// (RSS at rest - RSS idle) per 1,000 keys, MiB.
    pub rss_per_1000_keys_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BigRestart {
    /// Process start -> `keymint_keys{kind="APIKey"}` = N.
    pub seconds: f64,
    pub object_writes: u64,
    pub event_writes: u64,
    pub secret_gets: u64,
    pub peak_rss_mib: f64,
}

/// What stopped the big round.
#[derive(Debug, Clone, Serialize)]
pub struct BigLimit {
    /// The step that failed: `mint`, `at rest` or `restart`.
    pub step: String,
    pub error: String,
    /// Keys seen Ready when it failed.
    pub keys_ready: usize,
    /// Seconds from the round's start.
    pub after_seconds: f64,
}
