//! The six measurements, for each N, on one control plane.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use keymint::api::ApiKey;
use keymint_testenv::{ControlPlane, OPERATOR_USER};
use kube::api::Api;

use crate::audit::AuditLog;
use crate::machine::{self, Machine};
use crate::operator::{Metrics, Operator};
use crate::results::{
    Baseline, CreateCost, Ready, RequestCounts, Resources, Restart, Round, Run, Storm,
};
use crate::server_cpu::{ServerCpu, ServerProcesses};
use crate::stats::Summary;
use crate::workload::{self, BaselineSecrets, Stamp};
use crate::{Options, Result, cluster, plot, profile, progress, report};

/// Lifetime of the keys of measurements 2, 3, 4 and 6 (nothing rotates during the run).
const VALID_FOR: &str = "2160h";
const RENEW_BEFORE: &str = "360h";
const OPERATOR_START: Duration = Duration::from_secs(60);
/// The operator counts as settled when its reconcile counter has not moved for this long.
const SETTLE_QUIET: Duration = Duration::from_secs(3);
const SETTLE_LIMIT: Duration = Duration::from_secs(90);
/// A wait fails when nothing moved for this long (slow is measured, stuck is an error).
const PATIENCE: Duration = Duration::from_secs(120);
/// How long the API server is profiled from the start of (2).
const PROFILE_SECONDS: u64 = 20;

/// Runs every round and writes the results after each (a failed 10,000
/// round leaves the 1,000 one on disk). Returns the files written.
pub async fn run(plane: &ControlPlane, options: &Options) -> Result<Vec<PathBuf>> {
    let client = plane.client().await?;
    let mut results = Run {
        date: Timestamp::now().to_string(),
        machine: Machine::probe(),
        kubernetes_version: cluster::server_version(&client).await?,
        keymint_commit: machine::keymint_commit(),
        concurrency: options.concurrency,
        rest_seconds: options.rest.as_secs(),
        rounds: Vec::new(),
    };
    progress(&format!(
        "Kubernetes {}, keymint {}, {} CPUs, load {:.1}",
        results.kubernetes_version,
        results.keymint_commit,
        results.machine.cpus,
        results.machine.load_at_start
    ));
    let server = ServerProcesses::find(plane.dir())?;
    cluster::install_crds(&client).await?;
    cluster::create_namespace(&client, "keymint-system").await?;
    warm_up(&client, options.concurrency).await?;
    std::fs::create_dir_all(&options.out)
        .map_err(|e| format!("create {}: {e}", options.out.display()))?;
    remove_old_profiles(&options.out);
    let mut written = Vec::new();
    for &keys in &options.keys {
        let round = round(plane, &client, &server, options, keys).await?;
        results.rounds.push(round);
        results.machine.load_at_end = machine::load_average();
        written = report::write(&options.out, &results)?;
        match plot::time_to_ready(&options.out.join("time-to-ready.png"), &results) {
            Ok(path) => written.push(path),
            Err(error) => progress(&format!("no plot: {error}")),
        }
    }
    Ok(written)
}

async fn round(
    plane: &ControlPlane,
    client: &kube::Client,
    server: &ServerProcesses,
    options: &Options,
    n: usize,
) -> Result<Round> {
    let audit = AuditLog::new(plane.audit_log_path());
    let concurrency = options.concurrency;

    // (1) Baseline: N Secrets of keymint's size from a bare client.
    let base_ns = format!("bench-{n}-baseline");
    cluster::create_namespace(client, &base_ns).await?;
    let template = BaselineSecrets::new(&base_ns)?;
    let secret_bytes = workload::json_size(&template.secret(0)?);
    progress(&format!(
        "N={n}: (1) baseline: creating {n} Secrets ({secret_bytes} B), {concurrency} in flight"
    ));
    let secrets = Api::<Secret>::namespaced(client.clone(), &base_ns);
    let (server_before, bench_before) = (server.cpu(), bench_cpu());
    let created = workload::create_all(&secrets, n, concurrency, |i| template.secret(i)).await?;
    let (server_after, bench_after) = (server.cpu(), bench_cpu());
    let mut baseline = Baseline {
        apikeys_without_operator: CreateCost {
            seconds: f64::NAN,
            per_second: f64::NAN,
            server_cpu: ServerCpu::default(),
        },
        seconds: created.elapsed.as_secs_f64(),
        per_second: n as f64 / created.elapsed.as_secs_f64(),
        secret_bytes,
        retries: created.retries,
        server_cpu: server_after.since(server_before),
        bench_cpu_seconds: bench_after - bench_before,
    };
    progress(&format!(
        "N={n}: (1) baseline {:.2} s ({:.0}/s)",
        baseline.seconds, baseline.per_second
    ));

    // Reference: the same N APIKeys with no operator watching (what the
    // custom resource alone costs the server).
    let bare_ns = format!("bench-{n}-apikeys-only");
    cluster::create_namespace(client, &bare_ns).await?;
    let bare_keys = Api::<ApiKey>::namespaced(client.clone(), &bare_ns);
    let spec = serde_json::json!({"validFor": VALID_FOR, "renewBefore": RENEW_BEFORE});
    let server_before = server.cpu();
    let created = workload::create_all(&bare_keys, n, concurrency, |i| {
        workload::api_key(&bare_ns, i, &spec)
    })
    .await?;
    baseline.apikeys_without_operator = CreateCost {
        seconds: created.elapsed.as_secs_f64(),
        per_second: n as f64 / created.elapsed.as_secs_f64(),
        server_cpu: server.cpu().since(server_before),
    };
    progress(&format!(
        "N={n}: (1) reference: {n} APIKeys with no operator {:.2} s ({:.0}/s)",
        baseline.apikeys_without_operator.seconds, baseline.apikeys_without_operator.per_second
    ));

    // (2)-(4) Apply N APIKeys with the operator running.
    let keys_ns = format!("bench-{n}-keys");
    cluster::create_namespace(client, &keys_ns).await?;
    let mut operator =
        Operator::start(&options.keymint, plane, &format!("operator-{n}"), &keys_ns)?;
    let mark_start = audit.mark()?;
    operator.wait_ready(OPERATOR_START).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = operator.sample()?;
    let mut tracker = workload::track_keys(client, &keys_ns);
    tracker
        .wait("synced", Duration::from_secs(60), |c| c.synced)
        .await?;
    let sampler = operator.sampler(Duration::from_millis(200));
    let profiling = tokio::spawn(profile::apiserver_cpu(client.clone(), PROFILE_SECONDS));
    progress(&format!(
        "N={n}: (2) applying {n} APIKeys, {concurrency} in flight"
    ));
    let keys = Api::<ApiKey>::namespaced(client.clone(), &keys_ns);
    let (server_before, bench_before) = (server.cpu(), bench_cpu());
    let applied = workload::create_all(&keys, n, concurrency, |i| {
        workload::api_key(&keys_ns, i, &spec)
    })
    .await?;
    progress(&format!(
        "N={n}: (2) applied in {:.2} s; waiting for Ready",
        applied.elapsed.as_secs_f64()
    ));
    tracker
        .wait("all Ready", PATIENCE, |c| c.ready >= n)
        .await?;
    let seen = tracker.finish();
    let ready_at: Vec<Instant> = seen
        .values()
        .filter_map(|p| p.ready.map(|s| s.at))
        .collect();
    let last_ready = ready_at.iter().max().copied().unwrap_or(applied.started);
    let latencies: Vec<f64> = (0..n)
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
    let minted_metrics = settle(&operator).await?;
    let after_mint = operator.sample()?;
    let (server_minted, bench_minted) = (server.cpu(), bench_cpu());
    let mark_minted = audit.mark()?;
    let secrets_found = workload::count_objects(
        &Api::<Secret>::namespaced(client.clone(), &keys_ns),
        Some(&workload::managed_selector()),
    )
    .await?;
    if secrets_found != n {
        return Err(format!("N={n}: {secrets_found} managed Secrets for {n} Ready keys").into());
    }
    let keymint_secret_bytes = match Api::<Secret>::namespaced(client.clone(), &keys_ns)
        .get(&workload::key_name(0))
        .await
    {
        Ok(mut secret) => {
            secret.metadata.managed_fields = None;
            // As the baseline's is measured: without what the server adds.
            secret.metadata.resource_version = None;
            secret.metadata.uid = None;
            secret.metadata.creation_timestamp = None;
            workload::json_size(&secret)
        }
        Err(_) => 0,
    };
    // What each cached APIKey weighs, and how much of it is managedFields.
    let (apikey_bytes, apikey_managed_fields_bytes) = match keys.get(&workload::key_name(0)).await {
        Ok(key) => (
            workload::json_size(&key),
            workload::json_size(&key.metadata.managed_fields),
        ),
        Err(_) => (0, 0),
    };
    let ready = Ready {
        apikey_bytes,
        apikey_managed_fields_bytes,
        seconds: ready_seconds,
        ratio: ready_seconds / baseline.seconds,
        apply_seconds: applied.elapsed.as_secs_f64(),
        latency: Summary::of(&latencies),
        secrets_found,
        secret_bytes: keymint_secret_bytes,
        retries: applied.retries,
        server_cpu: server_minted.since(server_before),
        bench_cpu_seconds: bench_minted - bench_before,
        reconciles_per_key: minted_metrics.reconciles / n as f64,
    };
    progress(&format!(
        "N={n}: (2) all Ready in {:.2} s ({:.2}x baseline); per key p50 {:.2} s p99 {:.2} s",
        ready.seconds, ready.ratio, ready.latency.p50, ready.latency.p99
    ));

    // (3) at rest.
    progress(&format!(
        "N={n}: (3) at rest for {} s",
        options.rest.as_secs()
    ));
    let rest_started = Instant::now();
    tokio::time::sleep(options.rest).await;
    let mark_rest = audit.mark()?;
    let rest_server_cpu = server.cpu().since(server_minted);
    let rest_seconds = rest_started.elapsed().as_secs_f64();
    let at_rest = operator.sample()?;
    let apiserver_profile = match profiling.await {
        Ok(Ok(bytes)) => {
            let path = options.out.join(format!("apiserver-cpu-{n}.pprof"));
            match profile::save(&path, &bytes) {
                Ok(files) => files
                    .iter()
                    .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect(),
                Err(error) => {
                    progress(&format!(
                        "N={n}: cannot save the API server profile: {error}"
                    ));
                    Vec::new()
                }
            }
        }
        Ok(Err(error)) => {
            progress(&format!("N={n}: no API server profile: {error}"));
            Vec::new()
        }
        Err(error) => {
            progress(&format!("N={n}: no API server profile: {error}"));
            Vec::new()
        }
    };
    let peaks = sampler.stop();
    let mint = audit.requests(OPERATOR_USER, mark_start, mark_minted)?;
    let rest = audit.requests(OPERATOR_USER, mark_minted, mark_rest)?;
    let per_key = |count: u64| count as f64 / n as f64;
    let requests = RequestCounts {
        mint_per_key: mint
            .by_verb
            .iter()
            .map(|(k, v)| (k.clone(), per_key(*v)))
            .collect(),
        object_writes_per_mint: per_key(mint.object_writes()),
        event_writes_per_mint: per_key(mint.event_writes()),
        reads_per_mint: per_key(mint.reads()),
        mint,
        rest,
        rest_seconds,
        rest_server_cpu,
    };
    progress(&format!(
        "N={n}: (3) per mint: {:.2} object writes, {:.2} events, {:.2} reads; at rest: {} requests",
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
    progress(&format!(
        "N={n}: (4) RSS idle {:.1} MiB, at rest {:.1} MiB, peak {:.1} MiB; {:.2} MiB per 1,000 keys; {:.1} CPU s",
        resources.idle.rss_mib,
        resources.at_rest.rss_mib,
        resources.at_rest.peak_rss_mib,
        resources.rss_per_1000_keys_mib,
        resources.mint_cpu_seconds
    ));
    let mut warnings = operator.warnings();

    // (6) Restart: kill, start again, wait until every key is confirmed.
    operator.kill()?;
    let mark_restart = audit.mark()?;
    let server_restart = server.cpu();
    progress(&format!(
        "N={n}: (6) operator killed; starting it again with {n} keys"
    ));
    let restart_started = Instant::now();
    let mut restarted = Operator::start(
        &options.keymint,
        plane,
        &format!("operator-{n}-restart"),
        &keys_ns,
    )?;
    let sampler = restarted.sampler(Duration::from_millis(100));
    let confirmed = confirm_all(&mut restarted, n, PATIENCE).await?;
    let restart_seconds = confirmed.duration_since(restart_started).as_secs_f64();
    let settled = settle(&restarted).await?;
    let mark_restarted = audit.mark()?;
    let restart_server_cpu = server.cpu().since(server_restart);
    let restart_sample = restarted.sample()?;
    let restart_peaks = sampler.stop();
    let restart_requests = audit.requests(OPERATOR_USER, mark_restart, mark_restarted)?;
    let restart = Restart {
        seconds: restart_seconds,
        object_writes: restart_requests.object_writes(),
        event_writes: restart_requests.event_writes(),
        reads_per_key: per_key(restart_requests.reads()),
        requests: restart_requests,
        cpu_seconds: restart_sample.cpu_seconds,
        peaks: restart_peaks,
        reconciles: settled.reconciles,
        reconcile_errors: settled.reconcile_errors,
        server_cpu: restart_server_cpu,
    };
    progress(&format!(
        "N={n}: (6) all {n} confirmed {:.2} s after start; {} object writes, {} events; peak RSS {:.1} MiB, {} fds",
        restart.seconds,
        restart.object_writes,
        restart.event_writes,
        restart.peaks.peak_rss_mib,
        restart.peaks.max_open_fds
    ));
    warnings += restarted.warnings();
    restarted.kill()?;

    // (5) Rotation storm.
    let storm = storm(
        plane,
        client,
        server,
        options,
        n,
        &baseline,
        ready.seconds,
        &mut warnings,
    )
    .await?;

    Ok(Round {
        keys: n,
        baseline,
        ready,
        requests,
        resources,
        restart,
        storm,
        operator_warnings: warnings,
        apiserver_profile,
    })
}

#[allow(clippy::too_many_arguments)]
async fn storm(
    plane: &ControlPlane,
    client: &kube::Client,
    server: &ServerProcesses,
    options: &Options,
    n: usize,
    baseline: &Baseline,
    ready_seconds: f64,
    warnings: &mut usize,
) -> Result<Storm> {
    let audit = AuditLog::new(plane.audit_log_path());
    let storm_ns = format!("bench-{n}-storm");
    cluster::create_namespace(client, &storm_ns).await?;
    let mut operator = Operator::start(
        &options.keymint,
        plane,
        &format!("operator-{n}-storm"),
        &storm_ns,
    )?;
    operator.wait_ready(OPERATOR_START).await?;
    let mut keys_seen = workload::track_keys(client, &storm_ns);
    let mut secrets_seen = workload::track_secrets(client, &storm_ns);
    keys_seen
        .wait("synced", Duration::from_secs(60), |c| c.synced)
        .await?;
    secrets_seen
        .wait("synced", Duration::from_secs(60), |c| c.synced)
        .await?;
    // Time to mint them all, then as long again, so that even the last key
    // minted lives longer than the storm takes: with expiresAt passed, a
    // rotated key keeps its predecessor's lifetime, and a short one would
    // rotate a second time inside the storm.
    let lead = SignedDuration::from_secs_f64((2.0 * ready_seconds + 15.0).max(20.0));
    let due = Timestamp::from_second((Timestamp::now() + lead).as_second() + 1)?;
    progress(&format!(
        "N={n}: (5) storm: minting {n} keys that all expire at {due}"
    ));
    let keys = Api::<ApiKey>::namespaced(client.clone(), &storm_ns);
    let spec = serde_json::json!({"expiresAt": due.to_string()});
    let applied = workload::create_all(&keys, n, options.concurrency, |i| {
        workload::api_key(&storm_ns, i, &spec)
    })
    .await?;
    keys_seen
        .wait("all Ready", PATIENCE, |c| c.ready >= n)
        .await?;
    let mint_seconds = applied.started.elapsed().as_secs_f64();
    let minted_before_due = Timestamp::now() < due;
    if !minted_before_due {
        progress(&format!(
            "N={n}: (5) WARNING: minting overran the due second"
        ));
    }
    let minted_metrics = settle(&operator).await?;
    // Until just before the due second.
    let until_due = due.duration_since(Timestamp::now()) - SignedDuration::from_secs(1);
    if let Ok(wait) = Duration::try_from(until_due) {
        progress(&format!(
            "N={n}: (5) minted in {mint_seconds:.1} s; {:.0} s until due",
            wait.as_secs_f64() + 1.0
        ));
        tokio::time::sleep(wait).await;
    }
    let mark = audit.mark()?;
    let server_due = server.cpu();
    let before = operator.sample()?;
    let sampler = operator.sampler(Duration::from_millis(200));
    keys_seen
        .wait("all rotated", PATIENCE, |c| c.rotated >= n)
        .await?;
    secrets_seen
        .wait("all rotated", PATIENCE, |c| c.rotated >= n)
        .await?;
    let rotated_twice = secrets_seen.counts().rotated_twice;
    let rotated_metrics = settle(&operator).await?;
    let mark_end = audit.mark()?;
    let storm_server_cpu = server.cpu().since(server_due);
    let after = operator.sample()?;
    let peaks = sampler.stop();
    let keys_progress = keys_seen.finish();
    let secrets_progress = secrets_seen.finish();
    let since_due = |stamp: Stamp| stamp.wall.duration_since(due).as_secs_f64();
    let slip_watch: Vec<f64> = secrets_progress
        .values()
        .filter_map(|p| p.rotated.map(since_due))
        .collect();
    let slip_created_at: Vec<f64> = keys_progress
        .values()
        .filter_map(|p| p.rotated_created_at)
        .map(|created| (created.as_second() - due.as_second()) as f64)
        .collect();
    let last = |values: &[f64]| values.iter().copied().fold(f64::NAN, f64::max);
    let status_rotated: Vec<f64> = keys_progress
        .values()
        .filter_map(|p| p.rotated.map(since_due))
        .collect();
    let requests = audit.requests(OPERATOR_USER, mark, mark_end)?;
    let per_key = |count: u64| count as f64 / n as f64;
    let seconds = last(&slip_watch);
    let status_seconds = last(&status_rotated);
    let storm = Storm {
        due_at: due.to_string(),
        mint_seconds,
        minted_before_due,
        seconds,
        status_seconds,
        ratio: status_seconds / baseline.seconds,
        slip_watch: Summary::of(&slip_watch),
        slip_created_at: Summary::of(&slip_created_at),
        rotated_twice,
        object_writes_per_rotation: per_key(requests.object_writes()),
        event_writes_per_rotation: per_key(requests.event_writes()),
        reads_per_rotation: per_key(requests.reads()),
        requests,
        cpu_seconds: after.cpu_seconds - before.cpu_seconds,
        peaks,
        server_cpu: storm_server_cpu,
        reconciles_per_key: (rotated_metrics.reconciles - minted_metrics.reconciles) / n as f64,
    };
    progress(&format!(
        "N={n}: (5) all rotated {:.2} s after the due second (status {:.2} s, {:.2}x baseline); slip p50 {:.2} s p99 {:.2} s max {:.2} s",
        storm.seconds,
        storm.status_seconds,
        storm.ratio,
        storm.slip_watch.p50,
        storm.slip_watch.p99,
        storm.slip_watch.max
    ));
    *warnings += operator.warnings();
    operator.kill()?;
    Ok(storm)
}

/// Waits until the operator's reconcile counter has been still for
/// [`SETTLE_QUIET`] (its own writes trigger follow-up reconciles), and
/// returns its metrics then.
async fn settle(operator: &Operator) -> Result<Metrics> {
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
async fn confirm_all(operator: &mut Operator, n: usize, patience: Duration) -> Result<Instant> {
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
fn bench_cpu() -> f64 {
    crate::operator::cpu_seconds(std::process::id(), crate::machine::clock_ticks())
        .unwrap_or(f64::NAN)
}

/// The first writes of a kind after its CRD is installed are slow (the
/// server builds its handlers, schema and CEL programs): a few of each,
/// in a namespace of their own, before anything is timed.
async fn warm_up(client: &kube::Client, concurrency: usize) -> Result<()> {
    const WARM_UP: usize = 50;
    let namespace = "bench-warm-up";
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
