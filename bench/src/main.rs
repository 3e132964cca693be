//! `keymint-bench` (`make bench`): keymint measured against the physical limit
//! of the API server it runs on.
//!
//! The operator phase starts its own local control plane, installs keymint's
//! CRDs and, for every N in `--keys`, measures on that same control plane:
//!
//! 1. baseline: a bare kube client creating N Secrets of the size keymint
//!    writes, with the concurrency the benchmark applies keys with; and the
//!    ideal operator: a bare client making keymint's writes for N new keys;
//! 2. time from applying N APIKeys until all are Ready, as a ratio to the
//!    ideal operator and to (1);
//! 3. the operator's API requests per key by verb, from the audit log, and
//!    at rest;
//! 4. the operator's peak and resting RSS, CPU seconds, RSS per 1,000 keys;
//! 5. a rotation storm: N keys due within the minting time, spread over a
//!    window at a limited rate;
//! 6. a restart with N keys up to date: time to confirm all, writes made;
//!
//! and the server CPU per write of each kind keymint could make. The crowded
//! phase (keys among many unrelated objects) and the big round (100,000
//! keys) each run on a fresh control plane after it.
//!
//! Results go to `<out>/latest.md`, `<out>/latest.json` and
//! `<out>/time-to-ready.png`, rewritten after every round and phase.
//!
//! The verify phase (no cluster) measures `keymint verify`: verifications
//! per second and latency against a fixed-answer floor on the same stack,
//! and the time from a ring file rewrite to the server's new answer
//! (`<out>/verify.md`, `<out>/verify.json`). `--phases` runs any of them.

mod audit;
mod big;
mod cluster;
mod crowded;
mod ideal;
mod machine;
mod operator;
mod options;
mod phases;
mod plot;
mod profile;
mod report;
mod results;
mod server_cpu;
mod stats;
mod storm;
mod verify;
mod verify_watch;
mod workload;
mod write_costs;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use jiff::Timestamp;
use keymint_testenv::ControlPlane;

use machine::Machine;
use options::{Options, Phase};
use results::{Failure, Run};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let options = Options::parse();
    if !options.keymint.is_file() {
        eprintln!(
            "keymint-bench: no keymint binary at {} (build it with `cargo build --release --bin keymint`)",
            options.keymint.display()
        );
        return ExitCode::from(2);
    }
    if let Err(error) = std::fs::create_dir_all(&options.out) {
        eprintln!(
            "keymint-bench: cannot create {}: {error}",
            options.out.display()
        );
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    let mut run = Run {
        date: Timestamp::now().to_string(),
        machine: Machine::probe(),
        kubernetes_version: String::new(),
        keymint_commit: machine::keymint_commit(),
        concurrency: options.concurrency,
        rest_seconds: options.rest.as_secs(),
        storm_rate: options.storm_rate,
        rounds: Vec::new(),
        crowded: None,
        big: None,
        failures: Vec::new(),
    };
    let mut written: Vec<PathBuf> = Vec::new();
    // Each cluster phase on a control plane of its own, one after another
    // (the previous one stopped first), in this order.
    for phase in [Phase::Operator, Phase::Crowded, Phase::Big] {
        if !options.phases.contains(&phase) {
            continue;
        }
        let outcome = on_fresh_control_plane(async |plane| match phase {
            Phase::Operator => phases::run(plane, &options, &mut run).await,
            Phase::Crowded => crowded::run(plane, &options, &mut run).await,
            Phase::Big => big::run(plane, &options, &mut run).await,
            Phase::Verify => Ok(Vec::new()),
        });
        match outcome {
            Ok(files) => written.extend(files),
            Err(error) => {
                eprintln!("keymint-bench: {phase:?} phase: {error}");
                run.failures.push(Failure {
                    phase: format!("{phase:?}").to_lowercase(),
                    error: error.to_string(),
                });
                run.machine.load_at_end = machine::load_average();
                // What the earlier phases and rounds measured stays on disk.
                match report::write(&options.out, &run) {
                    Ok(files) => written.extend(files),
                    Err(error) => eprintln!("keymint-bench: cannot write the results: {error}"),
                }
            }
        }
    }
    if options.phases.contains(&Phase::Verify) {
        let outcome = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(Error::from)
            .and_then(|runtime| runtime.block_on(verify::run(&options)));
        match outcome {
            Ok(files) => written.extend(files),
            Err(error) => {
                eprintln!("keymint-bench: verify phase: {error}");
                run.failures.push(Failure {
                    phase: "verify".into(),
                    error: error.to_string(),
                });
            }
        }
    }
    written.sort();
    written.dedup();
    progress(&format!(
        "done in {:.0} s; results: {}",
        started.elapsed().as_secs_f64(),
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if run.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Starts a local control plane and an async runtime, runs `body` on them,
/// and stops both (the runtime first: watch tasks end before the server).
fn on_fresh_control_plane<T>(body: impl AsyncFnOnce(&ControlPlane) -> Result<T>) -> Result<T> {
    progress("starting a local control plane");
    let plane = ControlPlane::start(keymint_testenv::Options::default())
        .map_err(|error| format!("cannot start the control plane: {error}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the async runtime: {error}"))?;
    let outcome = runtime.block_on(body(&plane));
    drop(runtime);
    plane.stop();
    outcome
}

/// One line of progress on stderr, with the time of day.
pub fn progress(message: &str) {
    let now = jiff::Zoned::now();
    eprintln!("[{}] {message}", now.strftime("%H:%M:%S"));
}
