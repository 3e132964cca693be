//! `latest.json` (everything measured) and `latest.md`: the rounds' table
//! the README quotes, requests by verb, server CPU per write, the crowded
//! cluster, the big round and what failed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::Result;
use crate::operator::ProcSample;
use crate::results::{BigRound, Crowded, Round, Run};

/// Writes `latest.json` and `latest.md` into `out`.
pub fn write(out: &Path, run: &Run) -> Result<Vec<PathBuf>> {
    let json = out.join("latest.json");
    let mut text = serde_json::to_string_pretty(run)?;
    text.push('\n');
    std::fs::write(&json, text).map_err(|e| format!("write {}: {e}", json.display()))?;
    let md = out.join("latest.md");
    std::fs::write(&md, markdown(run)).map_err(|e| format!("write {}: {e}", md.display()))?;
    Ok(vec![md, json])
}

fn mark(met: bool) -> &'static str {
    if met { "✅" } else { "❌" }
}

fn with_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One table row: a label, the target, and a cell per round.
fn row(
    out: &mut String,
    label: &str,
    target: &str,
    rounds: &[Round],
    cell: impl Fn(&Round) -> String,
) {
    let cells: Vec<String> = rounds.iter().map(cell).collect();
    let _ = writeln!(out, "| {label} | {target} | {} |", cells.join(" | "));
}

pub fn markdown(run: &Run) -> String {
    let mut out = String::new();
    let machine = &run.machine;
    let _ = writeln!(out, "# keymint benchmark\n");
    let _ = writeln!(
        out,
        "{} · {} CPUs ({}), {:.1} GiB · Kubernetes {} (local control plane) · keymint `{}` · load average {:.1} at start, {} at end · {} requests in flight when the benchmark creates objects\n",
        run.date,
        machine.cpus,
        machine.cpu_model,
        machine.memory_gib,
        run.kubernetes_version,
        run.keymint_commit,
        machine.load_at_start,
        machine
            .load_at_end
            .map(|l| format!("{l:.1}"))
            .unwrap_or_else(|| "?".into()),
        run.concurrency,
    );
    if !run.rounds.is_empty() {
        rounds_table(&mut out, &run.rounds);
        requests_by_verb(&mut out, &run.rounds);
        write_costs_table(&mut out, &run.rounds, run.concurrency);
    }
    if let Some(crowded) = &run.crowded {
        crowded_section(&mut out, crowded);
    }
    if let Some(big) = &run.big {
        big_section(&mut out, big);
    }
    if !run.failures.is_empty() {
        let _ = writeln!(out, "\n## Failed\n");
        for failure in &run.failures {
            let _ = writeln!(
                out,
                "- {}: `{}`",
                failure.phase,
                failure.error.replace('\n', " ").replace('`', "'")
            );
        }
    }
    let profiles: Vec<String> = run
        .rounds
        .iter()
        .flat_map(|r| r.apiserver_profile.iter().map(|f| format!("[`{f}`]({f})")))
        .collect();
    if !profiles.is_empty() {
        let _ = writeln!(
            out,
            "\nkube-apiserver CPU profiles over the first N / 150 seconds (10 to 120) of (2) and of (1)'s ideal operator (`-ideal-`), with their top functions, and where (2) spent more than the ideal operator (`-diff-`, pprof `-diff_base`): {}.",
            profiles.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\nHow each figure is taken: `bench/README.md`. Raw numbers: `latest.json`."
    );
    out
}

/// `N = 1,000 | N = 10,000`.
fn round_headers(rounds: &[Round]) -> Vec<String> {
    rounds
        .iter()
        .map(|r| format!("N = {}", with_thousands(r.keys)))
        .collect()
}

/// The verdict for a target that applies at 10,000 keys and more (empty below).
fn mark_at_10000(keys: usize, met: bool) -> &'static str {
    if keys >= 10_000 { mark(met) } else { "" }
}

fn rounds_table(out: &mut String, rounds: &[Round]) {
    let header = round_headers(rounds);
    let _ = writeln!(out, "| measurement | target | {} |", header.join(" | "));
    let _ = writeln!(out, "|---|---|{}", "---|".repeat(rounds.len()));
    row(
        out,
        "(1) baseline: bare client creates N Secrets",
        "—",
        rounds,
        |r| {
            format!(
                "{:.2} s ({:.0}/s, {} B each)",
                r.baseline.seconds, r.baseline.per_second, r.baseline.secret_bytes
            )
        },
    );
    row(
        out,
        "(1) reference: bare client creates N APIKeys (no operator)",
        "—",
        rounds,
        |r| {
            let c = &r.baseline.apikeys_without_operator;
            format!("{:.2} s ({:.0}/s)", c.seconds, c.per_second)
        },
    );
    row(
        out,
        "(1) ideal operator: bare client makes keymint's writes for N keys (create, apply Secret, apply status, Event)",
        "—",
        rounds,
        |r| {
            format!(
                "{:.2} s ({:.0} keys/s; {:.2} s with the Events)",
                r.ideal.seconds, r.ideal.per_second, r.ideal.seconds_with_events
            )
        },
    );
    row(
        out,
        "(1) kube-apiserver + etcd CPU per Secret",
        "—",
        rounds,
        |r| format!("{:.2} ms", r.baseline.server_cpu.ms_per_key(r.keys)),
    );
    row(
        out,
        "(2) apply N APIKeys → all Ready",
        "≤ 1.15× ideal",
        rounds,
        |r| {
            format!(
                "{:.2} s = **{:.2}×** ideal {} · {:.2}× baseline",
                r.ready.seconds,
                r.ready.ratio_to_ideal,
                mark(r.ready.ratio_to_ideal <= 1.15),
                r.ready.ratio
            )
        },
    );
    row(
        out,
        "(2) kube-apiserver + etcd CPU per key (create + mint); the ideal operator's",
        "—",
        rounds,
        |r| {
            format!(
                "{:.2} ms; ideal {:.2} ms",
                r.ready.server_cpu.ms_per_key(r.keys),
                r.ideal.server_cpu.ms_per_key(r.keys)
            )
        },
    );
    row(out, "(2) operator reconciles per key", "—", rounds, |r| {
        format!("{:.2}", r.ready.reconciles_per_key)
    });
    row(
        out,
        "(2) per key, created → Ready (p50 / p99)",
        "—",
        rounds,
        |r| {
            format!(
                "{:.2} s / {:.2} s",
                r.ready.latency.p50, r.ready.latency.p99
            )
        },
    );
    row(
        out,
        "(3) object writes per mint (Secret + status)",
        "2",
        rounds,
        |r| {
            let w = r.requests.object_writes_per_mint;
            format!("**{w:.2}** {}", mark((w - 2.0).abs() < 0.005))
        },
    );
    row(
        out,
        "(3) Event writes per mint (apart)",
        "—",
        rounds,
        |r| format!("{:.2}", r.requests.event_writes_per_mint),
    );
    row(
        out,
        "(3) reads per mint (GET, LIST, WATCH)",
        "—",
        rounds,
        |r| format!("{:.2}", r.requests.reads_per_mint),
    );
    row(out, "(3) requests at rest", "0", rounds, |r| {
        let rest = &r.requests.rest;
        format!(
            "**{}** in {:.0} s ({} writes; server CPU {:.2} s) {}",
            rest.total(),
            r.requests.rest_seconds,
            rest.object_writes() + rest.event_writes(),
            r.requests.rest_server_cpu.total(),
            mark(rest.total() == 0)
        )
    });
    row(
        out,
        "(3) failed requests while minting (404s apart)",
        "—",
        rounds,
        |r| r.requests.mint.failed_total().to_string(),
    );
    row(
        out,
        "(4) operator peak RSS (VmHWM): mint / restart / storm",
        "≤ 48 MiB at 10,000",
        rounds,
        |r| {
            let mint = r.resources.at_rest.peak_rss_mib;
            let restart = r.restart.peaks.peak_rss_mib;
            let storm = r.storm.peaks.peak_rss_mib;
            let peak = mint.max(restart).max(storm);
            format!(
                "**{mint:.1}** / {restart:.1} / {storm:.1} MiB {}",
                mark_at_10000(r.keys, peak <= 48.0)
            )
        },
    );
    row(out, "(4) RSS idle → at rest", "—", rounds, |r| {
        format!(
            "{:.1} → {:.1} MiB",
            r.resources.idle.rss_mib, r.resources.at_rest.rss_mib
        )
    });
    row(
        out,
        "(4) one cached APIKey as JSON (of which managedFields)",
        "—",
        rounds,
        |r| {
            format!(
                "{} B ({} B)",
                r.ready.apikey_bytes, r.ready.apikey_managed_fields_bytes
            )
        },
    );
    row(out, "(4) RSS per 1,000 keys", "—", rounds, |r| {
        format!("{:.2} MiB", r.resources.rss_per_1000_keys_mib)
    });
    row(
        out,
        "(4) open fds idle → at rest (mostly idle API connections)",
        "—",
        rounds,
        |r| {
            format!(
                "{} → {}",
                r.resources.idle.open_fds, r.resources.at_rest.open_fds
            )
        },
    );
    row(out, "(4) operator CPU to mint N", "—", rounds, |r| {
        format!("{:.1} s", r.resources.mint_cpu_seconds)
    });
    storm_rows(out, rounds);
    row(
        out,
        "(6) restart → all N confirmed",
        "≤ 3 s at 10,000",
        rounds,
        |r| {
            format!(
                "**{:.2} s** (median of {}: {:.2} to {:.2}) {}",
                r.restart.seconds,
                r.restart.each.count,
                r.restart.each.min,
                r.restart.each.max,
                mark_at_10000(r.keys, r.restart.seconds <= 3.0)
            )
        },
    );
    row(out, "(6) writes after the restarts", "0", rounds, |r| {
        let writes = r.restart.object_writes + r.restart.event_writes;
        format!("**{writes}** {}", mark(writes == 0))
    });
    row(
        out,
        "(6) GETs of keys' Secrets per key during restart (a LIST is not one)",
        "0",
        rounds,
        |r| {
            format!(
                "**{:.2}** ({} GETs; apart: {} of the record key at start) {}",
                r.restart.secret_gets_per_key,
                r.restart.secret_gets,
                r.restart.requests.count(crate::audit::RECORD_KEY_GET),
                mark(r.restart.secret_gets == 0)
            )
        },
    );
    row(
        out,
        "(6) restart: peak RSS, open fds, operator CPU, server CPU",
        "—",
        rounds,
        |r| {
            format!(
                "{:.1} MiB, {} fds, {:.1} s; server {:.2} ms per key",
                r.restart.peaks.peak_rss_mib,
                r.restart.peaks.max_open_fds,
                r.restart.cpu_seconds,
                r.restart.server_cpu.ms_per_key(r.keys)
            )
        },
    );
}

fn storm_rows(out: &mut String, rounds: &[Round]) {
    row(
        out,
        "(5) storm: rate limit; spread window W (keys' renewBefore, validFor)",
        "—",
        rounds,
        |r| {
            let s = &r.storm;
            format!(
                "{}/s; W = {} s ({} s, {} s)",
                s.rate_limit, s.spread_window_seconds, s.renew_before_seconds, s.valid_for_seconds
            )
        },
    );
    row(
        out,
        "(5) first → last rotation (Secret watch)",
        "—",
        rounds,
        |r| {
            let s = &r.storm;
            let overran = if s.minted_before_first_rotation {
                ""
            } else {
                " (minting overran the first rotation)"
            };
            format!(
                "{:.1} s in a window of {} s{overran}",
                s.spread_seconds, s.spread_window_seconds
            )
        },
    );
    row(
        out,
        "(5) rotated late, after the renewal deadline (by `status.createdAt` / Secret watch)",
        "0",
        rounds,
        |r| {
            let s = &r.storm;
            format!(
                "**{}** / **{}** {}",
                s.late_by_created_at,
                s.late_by_watch,
                mark(s.late_by_created_at == 0 && s.late_by_watch == 0)
            )
        },
    );
    row(
        out,
        "(5) expired in use: rotated after the old key's `expiresAt`",
        "0",
        rounds,
        |r| {
            let s = &r.storm;
            format!("**{}** {}", s.expired_in_use, mark(s.expired_in_use == 0))
        },
    );
    row(
        out,
        "(5) deadline − rotation, Secret watch (min / p50 / max)",
        "—",
        rounds,
        |r| {
            let h = &r.storm.headroom_watch;
            format!("{:.2} / {:.2} / {:.2} s", h.min, h.p50, h.max)
        },
    );
    row(
        out,
        "(5) rotations per second (highest 1 s / highest 10 s)",
        "10 s ≤ limit",
        rounds,
        |r| {
            let s = &r.storm;
            let rate = &s.rotations_per_second;
            format!(
                "{} / **{:.1}** {}",
                rate.highest_1s,
                rate.highest_10s_per_second,
                mark(rate.highest_10s_per_second <= f64::from(s.rate_limit))
            )
        },
    );
    row(
        out,
        "(5) operator requests per second (mean / highest 1 s / highest 10 s)",
        "—",
        rounds,
        |r| {
            let s = &r.storm;
            let all = &s.operator_requests_per_second.all;
            let writes = &s.operator_requests_per_second.object_writes;
            let events = &s.operator_requests_per_second.event_writes;
            format!(
                "{:.0} / {} / {:.0}; object writes {:.0} / {} / {:.0}, Events {:.0} / {} / {:.0}; the limit allows {:.0} writes/s",
                all.mean_per_second,
                all.highest_1s,
                all.highest_10s_per_second,
                writes.mean_per_second,
                writes.highest_1s,
                writes.highest_10s_per_second,
                events.mean_per_second,
                events.highest_1s,
                events.highest_10s_per_second,
                s.allowed_writes_per_second
            )
        },
    );
    row(out, "(5) object writes per rotation", "2", rounds, |r| {
        format!(
            "{:.2} (+ {:.2} Events, {:.2} reads)",
            r.storm.object_writes_per_rotation,
            r.storm.event_writes_per_rotation,
            r.storm.reads_per_rotation
        )
    });
    row(
        out,
        "(5) kube-apiserver + etcd CPU per rotation",
        "—",
        rounds,
        |r| format!("{:.2} ms", r.storm.server_cpu.ms_per_key(r.keys)),
    );
}

fn requests_by_verb(out: &mut String, rounds: &[Round]) {
    let header = round_headers(rounds);
    let _ = writeln!(
        out,
        "\nOperator requests per key while minting, by verb (audit log; the operator's start-up LIST/WATCH included):\n"
    );
    let mut verbs: Vec<&String> = rounds
        .iter()
        .flat_map(|r| r.requests.mint_per_key.keys())
        .collect();
    verbs.sort();
    verbs.dedup();
    let _ = writeln!(out, "| request | {} |", header.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(rounds.len()));
    for verb in verbs {
        row_plain(out, verb, rounds, |r| {
            let per_key = r.requests.mint_per_key.get(verb).copied().unwrap_or(0.0);
            let mut cell = format!("{per_key:.3}");
            if let Some(n) = r.requests.mint.not_found.get(verb) {
                let _ = write!(cell, " ({n} × 404)");
            }
            if let Some(n) = r.requests.mint.failed.get(verb) {
                let _ = write!(cell, " ({n} failed)");
            }
            cell
        });
    }
}

fn write_costs_table(out: &mut String, rounds: &[Round], concurrency: usize) {
    let header: Vec<String> = rounds
        .iter()
        .map(|r| {
            format!(
                "N = {} ({} each)",
                with_thousands(r.keys),
                with_thousands(r.write_costs.writes)
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "\n## Server CPU per write\n\nkube-apiserver + etcd CPU per request, one batch of min(N, 2,000) requests per kind, {concurrency} in flight, on objects of a namespace of their own (requests per second in brackets):\n"
    );
    let _ = writeln!(out, "| write | {} |", header.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(rounds.len()));
    let mut kinds: Vec<(&str, &str)> = Vec::new();
    for cost in rounds.iter().flat_map(|r| r.write_costs.kinds.iter()) {
        if !kinds.iter().any(|(kind, _)| *kind == cost.kind) {
            kinds.push((&cost.kind, &cost.label));
        }
    }
    for (kind, label) in kinds {
        let cells: Vec<String> = rounds
            .iter()
            .map(|r| {
                r.write_costs
                    .kinds
                    .iter()
                    .find(|c| c.kind == kind)
                    .map(|c| format!("{:.2} ms ({:.0}/s)", c.server_ms_per_write, c.per_second))
                    .unwrap_or_else(|| "—".into())
            })
            .collect();
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }
}

fn crowded_section(out: &mut String, crowded: &Crowded) {
    let _ = writeln!(
        out,
        "\n## Crowded cluster\n\n{} APIKeys, the operator watching all namespaces; then {} Secrets without keymint's label and {} ServiceAccounts in {} other namespaces. Minted in {:.1} s; unrelated objects created in {:.1} s; after the restart all keys confirmed in {:.2} s with {} writes.\n",
        with_thousands(crowded.keys),
        with_thousands(crowded.unrelated_secrets),
        with_thousands(crowded.unrelated_service_accounts),
        crowded.unrelated_namespaces,
        crowded.mint_seconds,
        crowded.unrelated_seconds,
        crowded.restart_seconds,
        crowded.restart_writes,
    );
    let _ = writeln!(out, "| operator | RSS (VmRSS) | peak (VmHWM) | target |");
    let _ = writeln!(out, "|---|---|---|---|");
    let sample_row = |out: &mut String, label: &str, sample: &ProcSample, target: &str| {
        let _ = writeln!(
            out,
            "| {label} | {:.1} MiB | {:.1} MiB | {target} |",
            sample.rss_mib, sample.peak_rss_mib
        );
    };
    sample_row(out, "started, no keys", &crowded.idle, "—");
    let minted_target = format!("≤ 48 MiB {}", mark(crowded.minted.rss_mib <= 48.0));
    sample_row(
        out,
        "(a) keys minted, at rest",
        &crowded.minted,
        &minted_target,
    );
    sample_row(
        out,
        "(b) with the unrelated objects, at rest",
        &crowded.crowded,
        "—",
    );
    sample_row(
        out,
        "(c) after SIGKILL and restart, at rest",
        &crowded.restarted,
        "—",
    );
    for (label, growth) in [
        ("(b) − (a): unrelated objects", crowded.unrelated_growth_mib),
        ("(c) − (a): restart", crowded.restart_growth_mib),
    ] {
        let _ = writeln!(
            out,
            "| {label} | **{growth:+.1} MiB** | | ≤ 5 MiB {} |",
            mark(growth <= 5.0)
        );
    }
}

fn big_section(out: &mut String, big: &BigRound) {
    let _ = writeln!(
        out,
        "\n## Big round: {} keys\n\nOne operator on one namespace, on a control plane of its own.\n",
        with_thousands(big.keys)
    );
    let _ = writeln!(out, "| measurement | result |");
    let _ = writeln!(out, "|---|---|");
    if let Some(mint) = &big.mint {
        let _ = writeln!(
            out,
            "| apply N APIKeys → all Ready | {:.1} s ({:.0} keys/s; applied in {:.1} s) |",
            mint.seconds, mint.per_second, mint.apply_seconds
        );
        let _ = writeln!(
            out,
            "| reconciles per key; kube-apiserver + etcd CPU per key | {:.2}; {:.2} ms |",
            mint.reconciles_per_key,
            mint.server_cpu.ms_per_key(big.keys)
        );
    }
    if let Some(rest) = &big.at_rest {
        let _ = writeln!(
            out,
            "| RSS idle → at rest (peak) | {:.1} → {:.1} MiB ({:.1} MiB) |",
            rest.idle.rss_mib, rest.at_rest.rss_mib, rest.at_rest.peak_rss_mib
        );
        let _ = writeln!(
            out,
            "| RSS per 1,000 keys | {:.2} MiB |",
            rest.rss_per_1000_keys_mib
        );
    }
    if let Some(restart) = &big.restart {
        let _ = writeln!(
            out,
            "| restart → all N confirmed | {:.2} s |",
            restart.seconds
        );
        let _ = writeln!(
            out,
            "| writes after restart (object writes + Events); GET secrets | {} + {}; {} |",
            restart.object_writes, restart.event_writes, restart.secret_gets
        );
        let _ = writeln!(
            out,
            "| restart peak RSS | {:.1} MiB |",
            restart.peak_rss_mib
        );
    }
    let db = big
        .etcd_db_bytes
        .map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "not read".into());
    let _ = writeln!(out, "| etcd database size at the end | {db} |");
    if let Some(limit) = &big.limit {
        let _ = writeln!(
            out,
            "| **stopped** in {} after {:.0} s, {} keys Ready | `{}` |",
            limit.step,
            limit.after_seconds,
            with_thousands(limit.keys_ready),
            limit
                .error
                .replace('\n', " ")
                .replace('|', "\\|")
                .replace('`', "'")
        );
    }
}

fn row_plain(out: &mut String, label: &str, rounds: &[Round], cell: impl Fn(&Round) -> String) {
    let cells: Vec<String> = rounds.iter().map(cell).collect();
    let _ = writeln!(out, "| `{label}` | {} |", cells.join(" | "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands() {
        assert_eq!(with_thousands(50), "50");
        assert_eq!(with_thousands(1000), "1,000");
        assert_eq!(with_thousands(10000), "10,000");
        assert_eq!(with_thousands(1234567), "1,234,567");
    }
}
