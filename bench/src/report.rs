//! `latest.json` (everything measured) and `latest.md` (the table the README quotes).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::Result;
use crate::results::{Round, Run};

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
    let rounds = &run.rounds;
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
    let header: Vec<String> = rounds
        .iter()
        .map(|r| format!("N = {}", with_thousands(r.keys)))
        .collect();
    let _ = writeln!(out, "| measurement | target | {} |", header.join(" | "));
    let _ = writeln!(out, "|---|---|{}", "---|".repeat(rounds.len()));
    row(
        &mut out,
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
        &mut out,
        "(1) reference: bare client creates N APIKeys (no operator)",
        "—",
        rounds,
        |r| {
            let c = &r.baseline.apikeys_without_operator;
            format!("{:.2} s ({:.0}/s)", c.seconds, c.per_second)
        },
    );
    row(
        &mut out,
        "(1) kube-apiserver + etcd CPU per Secret",
        "—",
        rounds,
        |r| format!("{:.2} ms", r.baseline.server_cpu.ms_per_key(r.keys)),
    );
    row(
        &mut out,
        "(2) apply N APIKeys → all Ready",
        "≤ 1.2×",
        rounds,
        |r| {
            format!(
                "{:.2} s = **{:.2}×** {}",
                r.ready.seconds,
                r.ready.ratio,
                mark(r.ready.ratio <= 1.2)
            )
        },
    );
    row(
        &mut out,
        "(2) kube-apiserver + etcd CPU per key (create + mint)",
        "—",
        rounds,
        |r| format!("{:.2} ms", r.ready.server_cpu.ms_per_key(r.keys)),
    );
    row(
        &mut out,
        "(2) operator reconciles per key",
        "—",
        rounds,
        |r| format!("{:.2}", r.ready.reconciles_per_key),
    );
    row(
        &mut out,
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
        &mut out,
        "(3) object writes per mint (Secret + status)",
        "2",
        rounds,
        |r| {
            let w = r.requests.object_writes_per_mint;
            format!("**{w:.2}** {}", mark((w - 2.0).abs() < 0.005))
        },
    );
    row(
        &mut out,
        "(3) Event writes per mint (apart)",
        "—",
        rounds,
        |r| format!("{:.2}", r.requests.event_writes_per_mint),
    );
    row(
        &mut out,
        "(3) reads per mint (GET, LIST, WATCH)",
        "—",
        rounds,
        |r| format!("{:.2}", r.requests.reads_per_mint),
    );
    row(&mut out, "(3) requests at rest", "0", rounds, |r| {
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
        &mut out,
        "(3) failed requests while minting (404s apart)",
        "—",
        rounds,
        |r| r.requests.mint.failed_total().to_string(),
    );
    row(
        &mut out,
        "(4) operator peak RSS (VmHWM): mint / restart / storm",
        "≤ 64 MiB at 10,000",
        rounds,
        |r| {
            let mint = r.resources.at_rest.peak_rss_mib;
            let restart = r.restart.peaks.peak_rss_mib;
            let storm = r.storm.peaks.peak_rss_mib;
            let peak = mint.max(restart).max(storm);
            let verdict = if r.keys >= 10_000 {
                mark(peak <= 64.0)
            } else {
                ""
            };
            format!("**{mint:.1}** / {restart:.1} / {storm:.1} MiB {verdict}")
        },
    );
    row(&mut out, "(4) RSS idle → at rest", "—", rounds, |r| {
        format!(
            "{:.1} → {:.1} MiB",
            r.resources.idle.rss_mib, r.resources.at_rest.rss_mib
        )
    });
    row(
        &mut out,
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
    row(&mut out, "(4) RSS per 1,000 keys", "—", rounds, |r| {
        format!("{:.2} MiB", r.resources.rss_per_1000_keys_mib)
    });
    row(
        &mut out,
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
    row(&mut out, "(4) operator CPU to mint N", "—", rounds, |r| {
        format!("{:.1} s", r.resources.mint_cpu_seconds)
    });
    row(
        &mut out,
        "(5) storm: due → all rotated (status)",
        "≤ 1.2×",
        rounds,
        |r| {
            format!(
                "{:.2} s = **{:.2}×** {}",
                r.storm.status_seconds,
                r.storm.ratio,
                mark(r.storm.ratio <= 1.2)
            )
        },
    );
    row(
        &mut out,
        "(5) slip, Secret seen rotated (p50 / p99 / max)",
        "p99 ≤ 1 s",
        rounds,
        |r| {
            let s = &r.storm.slip_watch;
            format!(
                "{:.2} / **{:.2}** / {:.2} s {}",
                s.p50,
                s.p99,
                s.max,
                mark(s.p99 <= 1.0)
            )
        },
    );
    row(
        &mut out,
        "(5) slip, `status.createdAt` (p50 / p99 / max)",
        "—",
        rounds,
        |r| {
            let s = &r.storm.slip_created_at;
            format!("{:.0} / {:.0} / {:.0} s", s.p50, s.p99, s.max)
        },
    );
    row(
        &mut out,
        "(5) object writes per rotation",
        "2",
        rounds,
        |r| {
            format!(
                "{:.2} (+ {:.2} Events, {:.2} reads)",
                r.storm.object_writes_per_rotation,
                r.storm.event_writes_per_rotation,
                r.storm.reads_per_rotation
            )
        },
    );
    row(
        &mut out,
        "(5) kube-apiserver + etcd CPU per rotation",
        "—",
        rounds,
        |r| format!("{:.2} ms", r.storm.server_cpu.ms_per_key(r.keys)),
    );
    row(
        &mut out,
        "(6) restart → all N confirmed",
        "≤ 15 s at 10,000",
        rounds,
        |r| {
            let verdict = if r.keys >= 10_000 {
                mark(r.restart.seconds <= 15.0)
            } else {
                ""
            };
            format!("**{:.2} s** {verdict}", r.restart.seconds)
        },
    );
    row(&mut out, "(6) writes after restart", "0", rounds, |r| {
        let writes = r.restart.object_writes + r.restart.event_writes;
        format!("**{writes}** {}", mark(writes == 0))
    });
    row(
        &mut out,
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
        row_plain(&mut out, verb, rounds, |r| {
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
    let profiles: Vec<String> = rounds
        .iter()
        .flat_map(|r| r.apiserver_profile.iter().map(|f| format!("[`{f}`]({f})")))
        .collect();
    if !profiles.is_empty() {
        let _ = writeln!(
            out,
            "\nkube-apiserver CPU profiles over the first 20 s of (2), with their top functions: {}.",
            profiles.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\nHow each figure is taken: `bench/README.md`. Raw numbers: `latest.json`."
    );
    out
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
