//! `keymint-bench` (`make bench`): keymint measured against the physical limit
//! of the API server it runs on.
//!
//! One run starts its own local control plane, installs keymint's CRDs and,
//! for every N in `--keys`, measures on that same control plane:
//!
//! 1. baseline: a bare kube client creating N Secrets of the size keymint
//!    writes, with the concurrency the benchmark applies keys with;
//! 2. time from applying N APIKeys until all are Ready, as a ratio to (1);
//! 3. the operator's API requests per key by verb, from the audit log, and
//!    at rest;
//! 4. the operator's peak and resting RSS, CPU seconds, RSS per 1,000 keys;
//! 5. a rotation storm: N keys due in the same second;
//! 6. a restart with N keys up to date: time to confirm all, writes made.
//!
//! Results go to `<out>/latest.md`, `<out>/latest.json` and
//! `<out>/time-to-ready.png`.
//!
//! The verify phase (no cluster) measures `keymint verify`: verifications
//! per second and latency against a fixed-answer floor on the same stack,
//! and the time from a ring file rewrite to the server's new answer
//! (`<out>/verify.md`, `<out>/verify.json`). `--phases` runs either alone.

mod audit;
mod cluster;
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
mod verify;
mod verify_watch;
mod workload;

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use keymint_testenv::ControlPlane;

use options::{Options, Phase};

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
    let started = Instant::now();
    let mut written = Vec::new();
    if options.phases.contains(&Phase::Operator) {
        match operator_phases(&options) {
            Ok(files) => written.extend(files),
            Err(code) => return code,
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
                return ExitCode::FAILURE;
            }
        }
    }
    progress(&format!(
        "done in {:.0} s; results: {}",
        started.elapsed().as_secs_f64(),
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    ExitCode::SUCCESS
}

/// The operator measurements on their own control plane: the files written,
/// or the exit code to stop with.
fn operator_phases(options: &Options) -> Result<Vec<std::path::PathBuf>, ExitCode> {
    progress("starting the local control plane");
    let plane = match ControlPlane::start(keymint_testenv::Options::default()) {
        Ok(plane) => plane,
        Err(error) => {
            eprintln!("keymint-bench: cannot start the control plane: {error}");
            return Err(ExitCode::FAILURE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("keymint-bench: cannot start the async runtime: {error}");
            return Err(ExitCode::FAILURE);
        }
    };
    let outcome = runtime.block_on(phases::run(&plane, options));
    // Watch tasks end with the runtime, before the control plane goes.
    drop(runtime);
    plane.stop();
    outcome.map_err(|error| {
        eprintln!("keymint-bench: {error}");
        ExitCode::FAILURE
    })
}

/// One line of progress on stderr, with the time of day.
pub fn progress(message: &str) {
    let now = jiff::Zoned::now();
    eprintln!("[{}] {message}", now.strftime("%H:%M:%S"));
}
