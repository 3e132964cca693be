//! The big round, on a control plane of its own: `--big-keys` APIKeys (100,000
//! by default) in one namespace, one operator on it. Time to Ready, memory at
//! rest, restart. When something gives out (etcd's quota, a timeout, memory),
//! the error, the step it stopped in, the keys Ready by then and etcd's
//! database size are the result, instead of ending the run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use keymint::api::ApiKey;
use keymint_testenv::{ControlPlane, OPERATOR_USER};
use kube::api::Api;

use crate::audit::AuditLog;
use crate::operator::Operator;
use crate::options::Options;
use crate::phases::{self, OPERATOR_START, PATIENCE, confirm_all, settle};
use crate::results::{BigAtRest, BigLimit, BigMint, BigRestart, BigRound, Run};
use crate::server_cpu::ServerProcesses;
use crate::workload::{self, KeyProgress, Tracker};
use crate::{Result, cluster, progress, report};

const NAMESPACE: &str = "bench-big-keys";

/// Where the round is, for the report of what stopped it.
struct Progress {
    step: &'static str,
    tracker: Option<Tracker<KeyProgress>>,
}

/// Runs the round and writes the results (into `results` and to disk),
/// whether or not the round got through; fails only when the control plane
/// cannot be used at all.
pub async fn run(
    plane: &ControlPlane,
    options: &Options,
    results: &mut Run,
) -> Result<Vec<PathBuf>> {
    let client = phases::prepare(plane, options, results).await?;
    let server = ServerProcesses::find(plane.dir())?;
    let mut big = BigRound {
        keys: options.big_keys,
        mint: None,
        at_rest: None,
        restart: None,
        etcd_db_bytes: None,
        limit: None,
    };
    let started = Instant::now();
    let mut at = Progress {
        step: "start",
        tracker: None,
    };
    let outcome = measure(plane, &client, &server, options, &mut big, &mut at).await;
    big.etcd_db_bytes = server.etcd_db_bytes().await;
    if let Err(error) = outcome {
        let keys_ready = at.tracker.as_ref().map_or(0, |t| t.counts().ready);
        progress(&format!(
            "big: stopped in {} after {:.0} s with {keys_ready} keys Ready: {error}",
            at.step,
            started.elapsed().as_secs_f64()
        ));
        big.limit = Some(BigLimit {
            step: at.step.into(),
            error: error.to_string(),
            keys_ready,
            after_seconds: started.elapsed().as_secs_f64(),
        });
    }
    results.big = Some(big);
    results.machine.load_at_end = crate::machine::load_average();
    report::write(&options.out, results)
}

async fn measure(
    plane: &ControlPlane,
    client: &kube::Client,
    server: &ServerProcesses,
    options: &Options,
    big: &mut BigRound,
    at: &mut Progress,
) -> Result<()> {
    let n = big.keys;
    let audit = AuditLog::new(plane.audit_log_path());
    at.step = "mint";
    cluster::create_namespace(client, NAMESPACE).await?;
    let mut operator = Operator::start(
        &options.keymint,
        plane,
        "operator-big",
        Some(NAMESPACE),
        &[],
    )?;
    operator.wait_ready(OPERATOR_START).await?;
    let idle = operator.sample_at_rest().await?;
    let tracker = at.tracker.insert(workload::track_keys(client, NAMESPACE));
    tracker
        .wait("synced", Duration::from_secs(60), |c| c.synced)
        .await?;
    progress(&format!(
        "big: applying {n} APIKeys, {} in flight",
        options.concurrency
    ));
    let keys = Api::<ApiKey>::namespaced(client.clone(), NAMESPACE);
    let spec = phases::long_lived_spec();
    let server_before = server.cpu();
    let applied = workload::create_all(&keys, n, options.concurrency, |i| {
        workload::api_key(NAMESPACE, i, &spec)
    })
    .await?;
    progress(&format!(
        "big: applied in {:.1} s; waiting for Ready",
        applied.elapsed.as_secs_f64()
    ));
    // Slow is measured: the cap allows for 20 keys a second.
    let cap = workload::WAIT_CAP.max(Duration::from_secs((n / 20) as u64));
    tracker
        .wait_at_most("all Ready", PATIENCE, cap, |c| c.ready >= n)
        .await?;
    let last_ready = tracker
        .snapshot()
        .values()
        .filter_map(|p| p.ready.map(|s| s.at))
        .max()
        .unwrap_or(applied.started);
    let seconds = last_ready.duration_since(applied.started).as_secs_f64();
    let metrics = settle(&operator).await?;
    big.mint = Some(BigMint {
        seconds,
        apply_seconds: applied.elapsed.as_secs_f64(),
        per_second: n as f64 / seconds,
        reconciles_per_key: metrics.reconciles / n as f64,
        server_cpu: server.cpu().since(server_before),
        retries: applied.retries,
    });
    progress(&format!("big: all {n} Ready in {seconds:.1} s"));

    at.step = "at rest";
    let secrets = Api::<Secret>::namespaced(client.clone(), NAMESPACE);
    let found = workload::count_objects(&secrets, Some(&workload::managed_selector())).await?;
    if found != n {
        return Err(format!("{found} managed Secrets for {n} Ready keys").into());
    }
    tokio::time::sleep(options.rest).await;
    let resting = operator.sample_at_rest().await?;
    big.at_rest = Some(BigAtRest {
        idle,
        at_rest: resting,
        rss_per_1000_keys_mib: (resting.rss_mib - idle.rss_mib) / n as f64 * 1000.0,
    });
    progress(&format!(
        "big: RSS at rest {:.1} MiB (peak {:.1} MiB)",
        resting.rss_mib, resting.peak_rss_mib
    ));

    at.step = "restart";
    operator.kill()?;
    let mark = audit.mark()?;
    let restart_started = Instant::now();
    let mut restarted = Operator::start(
        &options.keymint,
        plane,
        "operator-big-restart",
        Some(NAMESPACE),
        &[],
    )?;
    let confirmed = confirm_all(&mut restarted, n, PATIENCE).await?;
    let restart_seconds = confirmed.duration_since(restart_started).as_secs_f64();
    settle(&restarted).await?;
    let requests = audit.requests(OPERATOR_USER, mark, audit.mark()?)?;
    let sample = restarted.sample()?;
    big.restart = Some(BigRestart {
        seconds: restart_seconds,
        object_writes: requests.object_writes(),
        event_writes: requests.event_writes(),
        secret_gets: requests.count("get secrets"),
        peak_rss_mib: sample.peak_rss_mib,
    });
    progress(&format!(
        "big: restarted, all {n} confirmed in {restart_seconds:.1} s; {} writes",
        requests.object_writes() + requests.event_writes()
    ));
    // Where the restart's time went: the operator's own log of it.
    restarted.save_log(&options.out.join(format!("operator-restart-{n}.log")))?;
    restarted.kill()?;
    Ok(())
}
