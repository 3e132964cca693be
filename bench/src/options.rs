//! The command line (clap derive): which phases run, which N to measure,
//! where the results go, which keymint binary runs as the operator (and as
//! the verify server), and the load each phase is given (rounds, rotation
//! storm rate, crowded cluster, big round).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// A group of measurements that can run alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// The operator measurements at each N, on a local control plane.
    Operator,
    /// `--crowded-keys` keys among unrelated Secrets and ServiceAccounts,
    /// the operator watching all namespaces (a control plane of its own).
    Crowded,
    /// `--big-keys` keys: mint, memory at rest, restart (a control plane of
    /// its own; not in the default list).
    Big,
    /// `keymint verify` throughput, latency and reload time (no cluster).
    Verify,
}

/// keymint measured against the API server it runs on, at each N in `--keys`
/// (see bench/README.md). Starts local control planes of its own.
#[derive(Debug, Clone, Parser)]
// A flag given twice takes its last value: `make bench` passes `--out` and
// `--keymint` before `BENCH_ARGS`, which may give them again.
#[command(name = "keymint-bench", args_override_self = true)]
pub struct Options {
    /// Which phases run, in this order whatever the order given
    /// (comma-separated): `operator`, `crowded`, `big`, `verify`.
    #[arg(
        long,
        value_name = "PHASE,...",
        value_delimiter = ',',
        default_value = "operator,crowded,verify"
    )]
    pub phases: Vec<Phase>,
    /// The key counts to measure, in order (comma-separated, `_` allowed: 1_000).
    #[arg(
        long,
        value_name = "N,...",
        value_delimiter = ',',
        default_value = "1000,10000",
        value_parser = positive_count
    )]
    pub keys: Vec<usize>,
    /// Where the results are written.
    #[arg(long, value_name = "DIR", default_value = "bench/results")]
    pub out: PathBuf,
    /// The `keymint` binary to run as the operator.
    #[arg(long, value_name = "PATH", default_value = "target/release/keymint")]
    pub keymint: PathBuf,
    /// Requests the benchmark keeps in flight when it creates objects (the
    /// baseline and the APIKeys alike).
    #[arg(long, value_name = "REQUESTS", default_value = "32", value_parser = positive_count)]
    pub concurrency: usize,
    /// How long the operator is watched at rest after all keys are Ready.
    #[arg(
        long = "rest-seconds",
        value_name = "SECONDS",
        default_value = "30",
        value_parser = whole_seconds
    )]
    pub rest: Duration,
    /// Scheduled rotations per second the storm's operator may start
    /// (`--max-rotations-per-second`); its spread window follows from it.
    #[arg(long, value_name = "PER_SECOND", default_value = "100", value_parser = positive_rate)]
    pub storm_rate: u32,
    /// APIKeys of the crowded-cluster phase.
    #[arg(long, value_name = "N", default_value = "10000", value_parser = positive_count)]
    pub crowded_keys: usize,
    /// Secrets without keymint's label the crowded phase adds (10 namespaces).
    #[arg(long, value_name = "N", default_value = "30000", value_parser = positive_count)]
    pub unrelated_secrets: usize,
    /// ServiceAccounts the crowded phase adds (the same 10 namespaces).
    #[arg(long, value_name = "N", default_value = "10000", value_parser = positive_count)]
    pub unrelated_service_accounts: usize,
    /// APIKeys of the big round.
    #[arg(long, value_name = "N", default_value = "100000", value_parser = positive_count)]
    pub big_keys: usize,
    /// Members of the ring the verify phase serves.
    #[arg(long, value_name = "N", default_value = "10000", value_parser = positive_count)]
    pub verify_members: usize,
    /// Keep-alive connections the verify load client keeps busy.
    #[arg(long, value_name = "N", default_value = "16", value_parser = positive_count)]
    pub verify_connections: usize,
    /// How long each verify load measurement runs.
    #[arg(
        long = "verify-seconds",
        value_name = "SECONDS",
        default_value = "5",
        value_parser = whole_seconds
    )]
    pub verify_duration: Duration,
}

/// A count of at least 1; `_` may separate thousands.
fn positive_count(text: &str) -> Result<usize, String> {
    let count: usize = text
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|e| format!("{text}: {e}"))?;
    if count == 0 {
        return Err("needs a positive count, e.g. 1000".into());
    }
    Ok(count)
}

/// A rate of at least 1 per second.
fn positive_rate(text: &str) -> Result<u32, String> {
    let count = positive_count(text)?;
    u32::try_from(count).map_err(|_| format!("{text}: too large"))
}

/// A whole number of seconds.
fn whole_seconds(text: &str) -> Result<Duration, String> {
    let seconds: u64 = text.parse().map_err(|e| format!("{text}: {e}"))?;
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("keymint-bench").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Options::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let defaults = parse(&[]).expect("defaults");
        assert_eq!(defaults.keys, vec![1000, 10000]);
        assert_eq!(defaults.out, PathBuf::from("bench/results"));
        assert_eq!(defaults.keymint, PathBuf::from("target/release/keymint"));
        assert_eq!(defaults.concurrency, 32);
        assert_eq!(defaults.rest, Duration::from_secs(30));
        assert_eq!(
            defaults.phases,
            vec![Phase::Operator, Phase::Crowded, Phase::Verify]
        );
        assert_eq!(defaults.storm_rate, 100);
        assert_eq!(defaults.crowded_keys, 10_000);
        assert_eq!(defaults.unrelated_secrets, 30_000);
        assert_eq!(defaults.unrelated_service_accounts, 10_000);
        assert_eq!(defaults.big_keys, 100_000);
        assert_eq!(defaults.verify_members, 10_000);
        assert_eq!(defaults.verify_connections, 16);
        assert_eq!(defaults.verify_duration, Duration::from_secs(5));
        let alone = parse(&["--phases", "verify", "--verify-members=100"]).expect("verify alone");
        assert_eq!(alone.phases, vec![Phase::Verify]);
        assert_eq!(alone.verify_members, 100);
    }

    #[test]
    fn flags_with_separate_and_inline_values() {
        let parsed = parse(&[
            "--keys",
            "50,1_000",
            "--out=/tmp/x",
            "--keymint",
            "k",
            "--concurrency",
            "8",
            "--rest-seconds=5",
        ])
        .expect("flags");
        assert_eq!(parsed.keys, vec![50, 1000]);
        assert_eq!(parsed.out, PathBuf::from("/tmp/x"));
        assert_eq!(parsed.keymint, PathBuf::from("k"));
        assert_eq!(parsed.concurrency, 8);
        assert_eq!(parsed.rest, Duration::from_secs(5));
        let big = parse(&["--phases", "big", "--big-keys", "500", "--storm-rate=40"]).expect("big");
        assert_eq!(big.phases, vec![Phase::Big]);
        assert_eq!((big.big_keys, big.storm_rate), (500, 40));
        let again =
            parse(&["--out", "bench/results", "--out", "bench/results/big"]).expect("again");
        assert_eq!(again.out, PathBuf::from("bench/results/big"));
    }

    #[test]
    fn zero_counts_and_unknown_flags_are_refused() {
        assert!(parse(&["--keys", "0"]).is_err());
        assert!(parse(&["--keys", "50,0"]).is_err());
        assert!(parse(&["--concurrency", "0"]).is_err());
        assert!(parse(&["--rest-seconds", "-1"]).is_err());
        assert!(parse(&["--bogus", "1"]).is_err());
        assert!(parse(&["--storm-rate", "0"]).is_err());
        assert!(parse(&["--phases", "operator,bogus"]).is_err());
    }
}
