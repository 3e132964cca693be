//! The rounds of the operator phase: for each N, on one control plane, the
//! baseline and ideal operator (1), time to Ready (2), requests (3), memory
//! (4), restart (6), the rotation storm (5, in `storm`) and the per-write
//! table (in `write_costs`); and the waits the other phases share (settled,
//! all confirmed).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use keymint::api::ApiKey;
use keymint_testenv::{ControlPlane, OPERATOR_USER};
use kube::api::Api;
use tokio::task::JoinHandle;

use crate::audit::AuditLog;
use crate::machine;
use crate::operator::{Metrics, Operator, ProcSample, Sampler};
use crate::options::Options;
use crate::results::{
    Baseline, CreateCost, IdealOperator, Ready, RequestCounts, Resources, Restart, Round, Run,
};
use crate::server_cpu::{ServerCpu, ServerProcesses};
use crate::stats::Summary;
use crate::workload::{self, BaselineSecrets, Created, KeyProgress};
use crate::{Result, cluster, ideal, plot, profile, progress, report, storm, write_costs};

/// Lifetime of the keys of measurements 2, 3, 4 and 6 (nothing rotates during the run).
const VALID_FOR: &str = "2160h";
const RENEW_BEFORE: &str = "360h";
pub const OPERATOR_START: Duration = Duration::from_secs(60);
/// The operator counts as settled when its reconcile counter has not moved for this long.
const SETTLE_QUIET: Duration = Duration::from_secs(3);
const SETTLE_LIMIT: Duration = Duration::from_secs(90);
/// A wait fails when nothing moved for this long (slow is measured, stuck is an error).
pub const PATIENCE: Duration = Duration::from_secs(120);
/// Restarts timed in (6): the first is measured in full, the others only
/// timed, and the median reported.
const RESTARTS: usize = 3;
/// How long the API server is profiled from the start of (1)'s ideal
/// operator and of (2): about as long as each takes at this N (both run
/// near 200 keys a second here), so that the two profiles hold the same
/// work and their difference is the cost of keymint's way per N keys.
fn profile_seconds(n: usize) -> u64 {
    (n as u64 / 150).clamp(10, 120)
}

/// Runs every round and writes the results into `results` and to disk after
/// each (a failed 10,000 round leaves the 1,000 one). Returns the files written.
pub async fn run(
    plane: &ControlPlane,
    options: &Options,
    results: &mut Run,
) -> Result<Vec<PathBuf>> {
    let client = prepare(plane, options, results).await?;
    progress(&format!(
        "Kubernetes {}, keymint {}, {} CPUs, load {:.1}",
        results.kubernetes_version,
        results.keymint_commit,
        results.machine.cpus,
        results.machine.load_at_start
    ));
    let server = ServerProcesses::find(plane.dir())?;
    remove_old_profiles(&options.out);
    let mut written = Vec::new();
    for &keys in &options.keys {
        let round = round(plane, &client, &server, options, keys).await?;
        results.rounds.push(round);
        results.machine.load_at_end = machine::load_average();
        written = report::write(&options.out, results)?;
        match plot::time_to_ready(&options.out.join("time-to-ready.png"), results) {
            Ok(path) => written.push(path),
            Err(error) => progress(&format!("no plot: {error}")),
        }
    }
    Ok(written)
}

/// A phase's fresh control plane made ready for keys: a client, the
/// Kubernetes version recorded (once per run), keymint's CRDs, the
/// operator's namespace, and the server warmed up.
pub async fn prepare(
    plane: &ControlPlane,
    options: &Options,
    results: &mut Run,
) -> Result<kube::Client> {
    let client = plane.client().await?;
    if results.kubernetes_version.is_empty() {
        results.kubernetes_version = cluster::server_version(&client).await?;
    }
    cluster::install_crds(&client).await?;
    cluster::create_namespace(&client, "keymint-system").await?;
    warm_up(&client, options.concurrency).await?;
    Ok(client)
}

/// What every phase of one round works with.
pub struct RoundContext<'a> {
    pub plane: &'a ControlPlane,
    pub client: &'a kube::Client,
    pub server: &'a ServerProcesses,
    pub options: &'a Options,
    pub audit: AuditLog,
    /// N, the number of keys this round measures.
    pub n: usize,
}

impl RoundContext<'_> {
    /// `bench-<N>-<purpose>`: each phase of each round has namespaces of its own.
    pub fn namespace(&self, purpose: &str) -> String {
        format!("bench-{}-{purpose}", self.n)
    }

    /// `count` over N.
    pub fn per_key(&self, count: u64) -> f64 {
        count as f64 / self.n as f64
    }

    /// A progress line prefixed with `N=<N>: `.
    pub fn progress(&self, message: &str) {
        progress(&format!("N={}: {message}", self.n));
    }
}

/// One round at N: the phases in the order they run. (6) runs before (5)
/// because it reuses the keys of (2)-(4); the storm needs keys of its own.
/// The per-write table comes last: it measures the server alone.
async fn round(
    plane: &ControlPlane,
    client: &kube::Client,
    server: &ServerProcesses,
    options: &Options,
    n: usize,
) -> Result<Round> {
    let ctx = RoundContext {
        plane,
        client,
        server,
        options,
        audit: AuditLog::new(plane.audit_log_path()),
        n,
    };
    let baseline = baseline(&ctx).await?;
    let (ideal, ideal_profile) = ideal_operator(&ctx).await?;
    let (ready, minted) = mint(&ctx, &baseline, &ideal).await?;
    let AtRest {
        operator,
        requests,
        resources,
        apiserver_profile,
    } = at_rest(&ctx, minted, ideal_profile).await?;
    let (restart, restart_warnings) = restart(&ctx, operator).await?;
    let (storm, storm_warnings) = storm::storm(&ctx, ready.seconds).await?;
    let writes = n.min(write_costs::MAX_WRITES);
    ctx.progress(&format!(
        "server CPU per write: {writes} writes of each kind, {} in flight",
        options.concurrency
    ));
    let write_costs = write_costs::measure(
        client,
        server,
        &ctx.namespace("writes"),
        writes,
        options.concurrency,
        &long_lived_spec(),
    )
    .await?;
    Ok(Round {
        keys: n,
        baseline,
        ideal,
        ready,
        requests,
        resources,
        restart,
        storm,
        write_costs,
        operator_warnings: restart_warnings + storm_warnings,
        apiserver_profile,
    })
}

/// The spec of the keys of (1)'s reference and of (2)-(4) and (6).
pub fn long_lived_spec() -> serde_json::Value {
    serde_json::json!({"validFor": VALID_FOR, "renewBefore": RENEW_BEFORE})
}

/// (1) Baseline: N Secrets of keymint's size from a bare client, then the
/// reference: N APIKeys that no operator watches.
async fn baseline(ctx: &RoundContext<'_>) -> Result<Baseline> {
    let (n, concurrency, server) = (ctx.n, ctx.options.concurrency, ctx.server);
    let base_ns = ctx.namespace("baseline");
    cluster::create_namespace(ctx.client, &base_ns).await?;
    let template = BaselineSecrets::new(&base_ns)?;
    let secret_bytes = workload::json_size(&template.secret(0)?);
    ctx.progress(&format!(
        "(1) baseline: creating {n} Secrets ({secret_bytes} B), {concurrency} in flight"
    ));
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &base_ns);
    let (server_before, bench_before) = (server.cpu(), bench_cpu());
    let created = workload::create_all(&secrets, n, concurrency, |i| template.secret(i)).await?;
    let (server_after, bench_after) = (server.cpu(), bench_cpu());
    let seconds = created.elapsed.as_secs_f64();
    let per_second = n as f64 / seconds;
    ctx.progress(&format!("(1) baseline {seconds:.2} s ({per_second:.0}/s)"));
    let apikeys_without_operator = apikeys_without_operator(ctx).await?;
    Ok(Baseline {
        seconds,
        per_second,
        secret_bytes,
        retries: created.retries,
        server_cpu: server_after.since(server_before),
        bench_cpu_seconds: bench_after - bench_before,
        apikeys_without_operator,
    })
}

/// (1)'s reference: the same N APIKeys with no operator watching (what the
/// custom resource alone costs the server).
async fn apikeys_without_operator(ctx: &RoundContext<'_>) -> Result<CreateCost> {
    let n = ctx.n;
    let bare_ns = ctx.namespace("apikeys-only");
    cluster::create_namespace(ctx.client, &bare_ns).await?;
    let bare_keys = Api::<ApiKey>::namespaced(ctx.client.clone(), &bare_ns);
    let spec = long_lived_spec();
    let server_before = ctx.server.cpu();
    let created = workload::create_all(&bare_keys, n, ctx.options.concurrency, |i| {
        workload::api_key(&bare_ns, i, &spec)
    })
    .await?;
    let cost = CreateCost {
        seconds: created.elapsed.as_secs_f64(),
        per_second: n as f64 / created.elapsed.as_secs_f64(),
        server_cpu: ctx.server.cpu().since(server_before),
    };
    ctx.progress(&format!(
        "(1) reference: {n} APIKeys with no operator {:.2} s ({:.0}/s)",
        cost.seconds, cost.per_second
    ));
    Ok(cost)
}

/// (1) The ideal operator: keymint's writes for N new keys from a bare
/// client, in a namespace no operator watches. Also returns the API server
/// profile over its first [`profile_seconds`] (the base (2)'s is compared
/// with), if one was taken.
async fn ideal_operator(ctx: &RoundContext<'_>) -> Result<(IdealOperator, Option<SavedProfile>)> {
    let (n, concurrency) = (ctx.n, ctx.options.concurrency);
    let ideal_ns = ctx.namespace("ideal");
    cluster::create_namespace(ctx.client, &ideal_ns).await?;
    ctx.progress(&format!(
        "(1) ideal operator: {n} keys (create, apply Secret, apply status, Event), {concurrency} in flight"
    ));
    // The watch that times (2) watches here too: both runs carry the
    // benchmark's observer, so the ratio is the operators' alone.
    let mut observer = workload::track_keys(ctx.client, &ideal_ns);
    observer
        .wait("synced", Duration::from_secs(60), |c| c.synced)
        .await?;
    let profiling = tokio::spawn(profile::apiserver_cpu(
        ctx.client.clone(),
        profile_seconds(n),
    ));
    let ideal = ideal::run(
        ctx.client,
        ctx.server,
        &ideal_ns,
        n,
        concurrency,
        &long_lived_spec(),
    )
    .await?;
    observer
        .wait("all Ready", PATIENCE, |c| c.ready >= n)
        .await?;
    drop(observer.finish());
    ctx.progress(&format!(
        "(1) ideal operator {:.2} s ({:.0} keys/s; {:.2} s with the Events), server CPU {:.2} ms per key",
        ideal.seconds,
        ideal.per_second,
        ideal.seconds_with_events,
        ideal.server_cpu.ms_per_key(n)
    ));
    // Awaited here: the server takes one CPU profile at a time, and (2)'s
    // starts next.
    let profile = save_profile(ctx, profiling, &format!("apiserver-cpu-ideal-{n}")).await;
    Ok((ideal, profile))
}

/// The operator of (2)-(4) once its N keys are Ready, and what (3) and (4)
/// go on measuring from (2).
struct Minted {
    operator: Operator,
    /// The operator started, no keys yet.
    idle: ProcSample,
    /// The operator settled after the last key was Ready.
    after_mint: ProcSample,
    /// Peaks from before the first create to the end of the rest window.
    sampler: Sampler,
    /// The API server's CPU profile over the first [`profile_seconds`].
    profiling: JoinHandle<Result<Vec<u8>>>,
    /// Audit log marks: before the operator started, and once it settled.
    mark_start: u64,
    mark_minted: u64,
    /// kube-apiserver and etcd CPU once the operator settled.
    server_minted: ServerCpu,
}

/// (2) Time to Ready: an operator on an empty namespace, N APIKeys applied,
/// until the last is seen Ready and the operator settled.
async fn mint(
    ctx: &RoundContext<'_>,
    baseline: &Baseline,
    ideal: &IdealOperator,
) -> Result<(Ready, Minted)> {
    let (n, concurrency, client, server) = (ctx.n, ctx.options.concurrency, ctx.client, ctx.server);
    let keys_ns = ctx.namespace("keys");
    cluster::create_namespace(client, &keys_ns).await?;
    let mut operator = Operator::start(
        &ctx.options.keymint,
        ctx.plane,
        &format!("operator-{n}"),
        Some(&keys_ns),
        &[],
    )?;
    let mark_start = ctx.audit.mark()?;
    operator.wait_ready(OPERATOR_START).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = operator.sample()?;
    let mut tracker = workload::track_keys(client, &keys_ns);
    tracker
        .wait("synced", Duration::from_secs(60), |c| c.synced)
        .await?;
    let sampler = operator.sampler(Duration::from_millis(200));
    let profiling = tokio::spawn(profile::apiserver_cpu(client.clone(), profile_seconds(n)));
    ctx.progress(&format!(
        "(2) applying {n} APIKeys, {concurrency} in flight"
    ));
    let keys = Api::<ApiKey>::namespaced(client.clone(), &keys_ns);
    let spec = long_lived_spec();
    let (server_before, bench_before) = (server.cpu(), bench_cpu());
    let applied = workload::create_all(&keys, n, concurrency, |i| {
        workload::api_key(&keys_ns, i, &spec)
    })
    .await?;
    ctx.progress(&format!(
        "(2) applied in {:.2} s; waiting for Ready",
        applied.elapsed.as_secs_f64()
    ));
    tracker
        .wait("all Ready", PATIENCE, |c| c.ready >= n)
        .await?;
    let (ready_seconds, latencies) = ready_times(&applied, &tracker.finish(), n);
    let minted_metrics = settle(&operator).await?;
    let after_mint = operator.sample()?;
    let (server_minted, bench_minted) = (server.cpu(), bench_cpu());
    let mark_minted = ctx.audit.mark()?;
    let secrets = Api::<Secret>::namespaced(client.clone(), &keys_ns);
    let secrets_found =
        workload::count_objects(&secrets, Some(&workload::managed_selector())).await?;
    if secrets_found != n {
        return Err(format!("N={n}: {secrets_found} managed Secrets for {n} Ready keys").into());
    }
    let stored = StoredSizes::of_first_key(&secrets, &keys).await;
    let ready = Ready {
        apikey_bytes: stored.apikey_bytes,
        apikey_managed_fields_bytes: stored.apikey_managed_fields_bytes,
        seconds: ready_seconds,
        ratio: ready_seconds / baseline.seconds,
        ratio_to_ideal: ready_seconds / ideal.seconds,
        apply_seconds: applied.elapsed.as_secs_f64(),
        latency: Summary::of(&latencies),
        secrets_found,
        secret_bytes: stored.secret_bytes,
        retries: applied.retries,
        server_cpu: server_minted.since(server_before),
        bench_cpu_seconds: bench_minted - bench_before,
        reconciles_per_key: minted_metrics.reconciles / n as f64,
    };
    ctx.progress(&format!(
        "(2) all Ready in {:.2} s ({:.2}x ideal, {:.2}x baseline); per key p50 {:.2} s p99 {:.2} s",
        ready.seconds, ready.ratio_to_ideal, ready.ratio, ready.latency.p50, ready.latency.p99
    ));
    let minted = Minted {
        operator,
        idle,
        after_mint,
        sampler,
        profiling,
        mark_start,
        mark_minted,
        server_minted,
    };
    Ok((ready, minted))
}

/// From the first create to the last key seen Ready, in seconds, and per key
/// from its create response to it being seen Ready.
fn ready_times(
    applied: &Created,
    seen: &HashMap<String, KeyProgress>,
    n: usize,
) -> (f64, Vec<f64>) {
    let last_ready = seen
        .values()
        .filter_map(|p| p.ready.map(|s| s.at))
        .max()
        .unwrap_or(applied.started);
    let latencies = (0..n)
        .filter_map(|i| {
            let ready = seen.get(&workload::key_name(i))?.ready?;
            Some(
                ready
                    .at
                    .saturating_duration_since(applied.done_at[i])
                    .as_secs_f64(),
            )
        })
        .collect();
    let ready_seconds = last_ready.duration_since(applied.started).as_secs_f64();
    (ready_seconds, latencies)
}

/// What the operator stored for the first key, as JSON bytes (0 when it
/// cannot be read).
struct StoredSizes {
    /// The Secret, without what the server adds (as the baseline's is measured).
    secret_bytes: usize,
    /// The APIKey as the operator's cache holds it, and its `managedFields`.
    apikey_bytes: usize,
    apikey_managed_fields_bytes: usize,
}

impl StoredSizes {
    async fn of_first_key(secrets: &Api<Secret>, keys: &Api<ApiKey>) -> StoredSizes {
        let name = workload::key_name(0);
        let secret_bytes = match secrets.get(&name).await {
            Ok(mut secret) => {
                secret.metadata.managed_fields = None;
                secret.metadata.resource_version = None;
                secret.metadata.uid = None;
                secret.metadata.creation_timestamp = None;
                workload::json_size(&secret)
            }
            Err(_) => 0,
        };
        let (apikey_bytes, apikey_managed_fields_bytes) = match keys.get(&name).await {
            Ok(key) => (
                workload::json_size(&key),
                workload::json_size(&key.metadata.managed_fields),
            ),
            Err(_) => (0, 0),
        };
        StoredSizes {
            secret_bytes,
            apikey_bytes,
            apikey_managed_fields_bytes,
        }
    }
}

/// (3) and (4), taken at the end of the rest window, and the operator, still
/// running, for (6).
struct AtRest {
    operator: Operator,
    requests: RequestCounts,
    resources: Resources,
    apiserver_profile: Vec<String>,
}

/// (3) API requests and (4) memory and CPU: the operator of (2) left alone
/// for `--rest-seconds`.
async fn at_rest(
    ctx: &RoundContext<'_>,
    minted: Minted,
    ideal_profile: Option<SavedProfile>,
) -> Result<AtRest> {
    let Minted {
        operator,
        idle,
        after_mint,
        sampler,
        profiling,
        mark_start,
        mark_minted,
        server_minted,
    } = minted;
    let n = ctx.n;
    ctx.progress(&format!("(3) at rest for {} s", ctx.options.rest.as_secs()));
    let rest_started = Instant::now();
    tokio::time::sleep(ctx.options.rest).await;
    let mark_rest = ctx.audit.mark()?;
    let rest_server_cpu = ctx.server.cpu().since(server_minted);
    let rest_seconds = rest_started.elapsed().as_secs_f64();
    let at_rest = operator.sample()?;
    let keymint_profile = save_profile(ctx, profiling, &format!("apiserver-cpu-{n}")).await;
    let apiserver_profile = compare_profiles(ctx, ideal_profile, keymint_profile);
    let peaks = sampler.stop();
    let mint = ctx.audit.requests(OPERATOR_USER, mark_start, mark_minted)?;
    let rest = ctx.audit.requests(OPERATOR_USER, mark_minted, mark_rest)?;
    let requests = RequestCounts {
        mint_per_key: mint
            .by_verb
            .iter()
            .map(|(k, v)| (k.clone(), ctx.per_key(*v)))
            .collect(),
        object_writes_per_mint: ctx.per_key(mint.object_writes()),
        event_writes_per_mint: ctx.per_key(mint.event_writes()),
        reads_per_mint: ctx.per_key(mint.reads()),
        mint,
        rest,
        rest_seconds,
        rest_server_cpu,
    };
    ctx.progress(&format!(
        "(3) per mint: {:.2} object writes, {:.2} events, {:.2} reads; at rest: {} requests",
        requests.object_writes_per_mint,
        requests.event_writes_per_mint,
        requests.reads_per_mint,
        requests.rest.total()
    ));
    let resources = Resources {
        idle,
        after_mint,
        at_rest,
        peaks,
        mint_cpu_seconds: after_mint.cpu_seconds - idle.cpu_seconds,
        rss_per_1000_keys_mib: (at_rest.rss_mib - idle.rss_mib) / n as f64 * 1000.0,
    };
    ctx.progress(&format!(
        "(4) RSS idle {:.1} MiB, at rest {:.1} MiB, peak {:.1} MiB; {:.2} MiB per 1,000 keys; {:.1} CPU s",
        resources.idle.rss_mib,
        resources.at_rest.rss_mib,
        resources.at_rest.peak_rss_mib,
        resources.rss_per_1000_keys_mib,
        resources.mint_cpu_seconds
    ));
    Ok(AtRest {
        operator,
        requests,
        resources,
        apiserver_profile,
    })
}

/// A profile written to the results directory: the `.pprof` and the files
/// written with it.
struct SavedProfile {
    pprof: std::path::PathBuf,
    files: Vec<std::path::PathBuf>,
}

/// Waits for an API server profile, writes it to the results directory as
/// `<stem>.pprof` (and its top functions as `<stem>.txt`); `None` if it
/// failed: the round goes on without it.
async fn save_profile(
    ctx: &RoundContext<'_>,
    profiling: JoinHandle<Result<Vec<u8>>>,
    stem: &str,
) -> Option<SavedProfile> {
    let bytes = match profiling.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => {
            ctx.progress(&format!("no API server profile {stem}: {error}"));
            return None;
        }
        Err(error) => {
            ctx.progress(&format!("no API server profile {stem}: {error}"));
            return None;
        }
    };
    let pprof = ctx.options.out.join(format!("{stem}.pprof"));
    match profile::save(&pprof, &bytes) {
        Ok(files) => Some(SavedProfile { pprof, files }),
        Err(error) => {
            ctx.progress(&format!(
                "cannot save the API server profile {stem}: {error}"
            ));
            None
        }
    }
}

/// The names of the profile files of (1)'s ideal operator and of (2), with
/// (when both were taken) where (2)'s server time went beyond the ideal's.
fn compare_profiles(
    ctx: &RoundContext<'_>,
    ideal: Option<SavedProfile>,
    keymint: Option<SavedProfile>,
) -> Vec<String> {
    let mut files = Vec::new();
    if let (Some(ideal), Some(keymint)) = (&ideal, &keymint) {
        let diff = ctx
            .options
            .out
            .join(format!("apiserver-cpu-diff-{}.txt", ctx.n));
        match profile::save_diff(&ideal.pprof, &keymint.pprof, &diff) {
            Ok(true) => files.push(diff),
            Ok(false) => {}
            Err(error) => ctx.progress(&format!("cannot compare the API server profiles: {error}")),
        }
    }
    let saved = keymint.into_iter().chain(ideal).flat_map(|p| p.files);
    saved
        .chain(files)
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect()
}

/// (6) Restart: the operator of (2)-(4) killed with SIGKILL and started again,
/// until every key is confirmed. Returns the figures and the WARN/ERROR lines
/// both processes logged.
async fn restart(ctx: &RoundContext<'_>, operator: Operator) -> Result<(Restart, usize)> {
    let n = ctx.n;
    let mut warnings = operator.warnings();
    operator.kill()?;
    let mark_restart = ctx.audit.mark()?;
    let server_restart = ctx.server.cpu();
    ctx.progress(&format!(
        "(6) operator killed; starting it again with {n} keys"
    ));
    let start = |name: String| {
        Operator::start(
            &ctx.options.keymint,
            ctx.plane,
            &name,
            Some(&ctx.namespace("keys")),
            &[],
        )
    };
    let restart_started = Instant::now();
    let mut restarted = start(format!("operator-{n}-restart"))?;
    let sampler = restarted.sampler(Duration::from_millis(100));
    let confirmed = confirm_all(&mut restarted, n, PATIENCE).await?;
    let restart_seconds = confirmed.duration_since(restart_started).as_secs_f64();
    let settled = settle(&restarted).await?;
    let mark_restarted = ctx.audit.mark()?;
    let restart_server_cpu = ctx.server.cpu().since(server_restart);
    let restart_sample = restarted.sample()?;
    let restart_peaks = sampler.stop();
    let restart_requests = ctx
        .audit
        .requests(OPERATOR_USER, mark_restart, mark_restarted)?;
    warnings += restarted.warnings();
    restarted.kill()?;
    let mut each = vec![restart_seconds];
    for repeat in 1..RESTARTS {
        let started = Instant::now();
        let mut again = start(format!("operator-{n}-restart-{repeat}"))?;
        let confirmed = confirm_all(&mut again, n, PATIENCE).await?;
        each.push(confirmed.duration_since(started).as_secs_f64());
        warnings += again.warnings();
        again.kill()?;
    }
    let each = Summary::of(&each);
    // The repeats must write nothing either: their writes are counted in.
    let repeats = ctx
        .audit
        .requests(OPERATOR_USER, mark_restarted, ctx.audit.mark()?)?;
    let restart = Restart {
        seconds: each.p50,
        each,
        object_writes: restart_requests.object_writes() + repeats.object_writes(),
        event_writes: restart_requests.event_writes() + repeats.event_writes(),
        reads_per_key: ctx.per_key(restart_requests.reads()),
        secret_gets: restart_requests.count("get secrets"),
        secret_gets_per_key: ctx.per_key(restart_requests.count("get secrets")),
        requests: restart_requests,
        cpu_seconds: restart_sample.cpu_seconds,
        peaks: restart_peaks,
        reconciles: settled.reconciles,
        reconcile_errors: settled.reconcile_errors,
        server_cpu: restart_server_cpu,
    };
    ctx.progress(&format!(
        "(6) all {n} confirmed {:.2} s after start (median of {RESTARTS}, {:.2} to {:.2}); {} object writes, {} events, {} Secret GETs; peak RSS {:.1} MiB, {} fds",
        restart.seconds,
        restart.each.min,
        restart.each.max,
        restart.object_writes,
        restart.event_writes,
        restart.secret_gets,
        restart.peaks.peak_rss_mib,
        restart.peaks.max_open_fds
    ));
    Ok((restart, warnings))
}

/// Waits until the operator's reconcile counter has been still for
/// [`SETTLE_QUIET`] (its own writes trigger follow-up reconciles), and
/// returns its metrics then.
pub async fn settle(operator: &Operator) -> Result<Metrics> {
    let started = Instant::now();
    let mut last = operator.metrics().await?;
    let mut still_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = operator.metrics().await?;
        if now.reconciles != last.reconciles {
            still_since = Instant::now();
            last = now;
        } else if still_since.elapsed() >= SETTLE_QUIET {
            return Ok(now);
        }
        if started.elapsed() > SETTLE_LIMIT {
            progress("  the operator did not settle; counting anyway");
            return Ok(now);
        }
    }
}

/// Polls the restarted operator's metrics until it reports all `n` keys
/// issued, and returns when it first did. Gives up when the count has not
/// moved for `patience`.
pub async fn confirm_all(operator: &mut Operator, n: usize, patience: Duration) -> Result<Instant> {
    let started = Instant::now();
    let mut last_report = started;
    let mut last_move = started;
    let mut last_keys = -1.0;
    loop {
        if let Ok(metrics) = operator.metrics().await {
            if metrics.keys >= n as f64 {
                return Ok(Instant::now());
            }
            if metrics.keys != last_keys {
                last_keys = metrics.keys;
                last_move = Instant::now();
            }
            if last_report.elapsed() >= Duration::from_secs(10) {
                progress(&format!(
                    "  restart: {} of {n} keys confirmed",
                    metrics.keys
                ));
                last_report = Instant::now();
            }
        }
        if last_move.elapsed() >= patience || started.elapsed() >= workload::WAIT_CAP {
            return Err(format!(
                "restarted operator confirmed {last_keys} of {n} keys after {:.0} s; log tail:\n{}",
                started.elapsed().as_secs_f64(),
                operator.log_tail(20)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The benchmark's own CPU seconds so far.
pub fn bench_cpu() -> f64 {
    crate::operator::cpu_seconds(std::process::id(), crate::machine::clock_ticks())
        .unwrap_or(f64::NAN)
}

/// The warm-up's namespace.
pub const WARM_UP_NAMESPACE: &str = "bench-warm-up";

/// The first writes of a kind after its CRD is installed are slow (the
/// server builds its handlers, schema and CEL programs): a few of each,
/// in a namespace of their own, before anything is timed.
async fn warm_up(client: &kube::Client, concurrency: usize) -> Result<()> {
    const WARM_UP: usize = 50;
    let namespace = WARM_UP_NAMESPACE;
    cluster::create_namespace(client, namespace).await?;
    let spec = serde_json::json!({"validFor": VALID_FOR, "renewBefore": RENEW_BEFORE});
    let keys = Api::<ApiKey>::namespaced(client.clone(), namespace);
    workload::create_all(&keys, WARM_UP, concurrency, |i| {
        workload::api_key(namespace, i, &spec)
    })
    .await?;
    let template = BaselineSecrets::new(namespace)?;
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    workload::create_all(&secrets, WARM_UP, concurrency, |i| template.secret(i)).await?;
    Ok(())
}

/// Profiles of an earlier run (perhaps at other N) would pass for this one's.
fn remove_old_profiles(out: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("apiserver-cpu-")
            && (name.ends_with(".pprof") || name.ends_with(".txt"))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
