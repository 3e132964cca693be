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

mod audit;
mod cluster;
mod machine;
mod operator;
mod phases;
mod plot;
mod profile;
mod report;
mod results;
mod server_cpu;
mod stats;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use keymint_testenv::ControlPlane;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;

const USAGE: &str = "usage: keymint-bench [--keys 1000,10000] [--out bench/results] \
[--keymint target/release/keymint] [--concurrency 32] [--rest-seconds 30]";

/// Command-line options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The key counts to measure, in order.
    pub keys: Vec<usize>,
    /// Where the results are written.
    pub out: PathBuf,
    /// The `keymint` binary to run as the operator.
    pub keymint: PathBuf,
    /// Requests the benchmark keeps in flight when it creates objects (the
    /// baseline and the APIKeys alike).
    pub concurrency: usize,
    /// How long the operator is watched at rest after all keys are Ready.
    pub rest: Duration,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        keys: vec![1_000, 10_000],
        out: PathBuf::from("bench/results"),
        keymint: PathBuf::from("target/release/keymint"),
        concurrency: 32,
        rest: Duration::from_secs(30),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (arg.clone(), None),
        };
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.into());
        }
        let value = match inline.or_else(|| args.next()) {
            Some(value) => value,
            None => return Err(format!("{flag} needs a value\n{USAGE}")),
        };
        match flag.as_str() {
            "--keys" => {
                options.keys = value
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| {
                        s.trim()
                            .replace('_', "")
                            .parse::<usize>()
                            .map_err(|e| format!("--keys {s}: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
                if options.keys.is_empty() || options.keys.contains(&0) {
                    return Err("--keys needs positive counts, e.g. 1000,10000".into());
                }
            }
            "--out" => options.out = PathBuf::from(value),
            "--keymint" => options.keymint = PathBuf::from(value),
            "--concurrency" => {
                options.concurrency = value
                    .parse()
                    .map_err(|e| format!("--concurrency {value}: {e}"))?;
                if options.concurrency == 0 {
                    return Err("--concurrency must be at least 1".into());
                }
            }
            "--rest-seconds" => {
                let seconds: u64 = value
                    .parse()
                    .map_err(|e| format!("--rest-seconds {value}: {e}"))?;
                options.rest = Duration::from_secs(seconds);
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    if !options.keymint.is_file() {
        eprintln!(
            "keymint-bench: no keymint binary at {} (build it with `cargo build --release --bin keymint`)",
            options.keymint.display()
        );
        return ExitCode::from(2);
    }
    let started = Instant::now();
    progress("starting the local control plane");
    let plane = match ControlPlane::start(keymint_testenv::Options::default()) {
        Ok(plane) => plane,
        Err(error) => {
            eprintln!("keymint-bench: cannot start the control plane: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("keymint-bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(phases::run(&plane, &options));
    // Watch tasks end with the runtime, before the control plane goes.
    drop(runtime);
    plane.stop();
    match outcome {
        Ok(written) => {
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
        Err(error) => {
            eprintln!("keymint-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// One line of progress on stderr, with the time of day.
pub fn progress(message: &str) {
    let now = jiff::Zoned::now();
    eprintln!("[{}] {message}", now.strftime("%H:%M:%S"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_and_flags() {
        let defaults = parse_args(args(&[])).expect("defaults");
        assert_eq!(defaults.keys, vec![1000, 10000]);
        assert_eq!(defaults.concurrency, 32);
        let parsed = parse_args(args(&[
            "--keys",
            "50,200",
            "--out=/tmp/x",
            "--keymint",
            "k",
            "--concurrency",
            "8",
        ]))
        .expect("flags");
        assert_eq!(parsed.keys, vec![50, 200]);
        assert_eq!(parsed.out, PathBuf::from("/tmp/x"));
        assert_eq!(parsed.keymint, PathBuf::from("k"));
        assert_eq!(parsed.concurrency, 8);
        assert!(parse_args(args(&["--keys", "0"])).is_err());
        assert!(parse_args(args(&["--bogus", "1"])).is_err());
    }
}
