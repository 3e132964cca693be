//! The operator under test: `keymint run` as a child process, its metrics
//! endpoint, and its memory and CPU from /proc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keymint_testenv::ControlPlane;
use serde::Serialize;

use crate::{Result, progress};

/// RSS counts as at rest when it moved less than this...
const REST_TOLERANCE_MIB: f64 = 0.25;
/// ...over this long...
const REST_QUIET: Duration = Duration::from_secs(3);
/// ...and is read anyway after this long.
const REST_LIMIT: Duration = Duration::from_secs(30);

/// A running `keymint run`.
pub struct Operator {
    child: Child,
    pid: u32,
    metrics_port: u16,
    log: PathBuf,
    clock_ticks: f64,
}

/// One reading of /proc/<pid>.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcSample {
    /// Resident set size now (VmRSS), MiB.
    pub rss_mib: f64,
    /// Peak resident set size so far (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// User + system CPU time so far, seconds.
    pub cpu_seconds: f64,
    pub threads: u64,
    /// Open file descriptors (sockets to the API server among them).
    pub open_fds: u64,
}

impl Operator {
    /// Starts `keymint run` as testenv's operator identity, reconciling
    /// APIKeys in `watch_namespace` only, or in all namespaces with `None`;
    /// `extra_args` go after the benchmark's own flags.
    pub fn start(
        keymint: &Path,
        plane: &ControlPlane,
        name: &str,
        watch_namespace: Option<&str>,
        extra_args: &[String],
    ) -> Result<Self> {
        let metrics_port = keymint_testenv::free_port()?;
        let log = plane.dir().join(format!("{name}.log"));
        let mut command = Command::new(keymint);
        command.args([
            "run",
            "--kubeconfig",
            &plane.operator_kubeconfig_path().display().to_string(),
            "--leader-elect=false",
            "--metrics-address",
            &format!("127.0.0.1:{metrics_port}"),
            // The default level (info): the operator as it runs in a cluster.
            "--log-format",
            "json",
        ]);
        if let Some(namespace) = watch_namespace {
            command.args(["--watch-namespace", namespace]);
        }
        command.args(extra_args);
        let child = keymint_testenv::spawn_tied_to_process(command, &log)?;
        Ok(Operator {
            pid: child.id(),
            child,
            metrics_port,
            log,
            clock_ticks: crate::machine::clock_ticks(),
        })
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "keymint exited ({status}); log tail:\n{}",
                    self.log_tail(20)
                )
                .into());
            }
            if let Ok((200, _)) = http_get(self.metrics_port, "/readyz").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "keymint not ready within {timeout:?}; log tail:\n{}",
                    self.log_tail(20)
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The operator's Prometheus metrics.
    pub async fn metrics(&self) -> Result<Metrics> {
        let (code, body) = http_get(self.metrics_port, "/metrics").await?;
        if code != 200 {
            return Err(format!("/metrics answered {code}").into());
        }
        Ok(Metrics::parse(&body))
    }

    pub fn sample(&self) -> Result<ProcSample> {
        read_proc(self.pid, self.clock_ticks)
    }

    /// The /proc reading once RSS has been still for [`REST_QUIET`]
    /// (sampled every 500 ms), or after [`REST_LIMIT`] in any case.
    pub async fn sample_at_rest(&self) -> Result<ProcSample> {
        let started = Instant::now();
        let mut window: Vec<(Instant, f64)> = Vec::new();
        loop {
            let sample = self.sample()?;
            let now = Instant::now();
            window.push((now, sample.rss_mib));
            window.retain(|(at, _)| now.duration_since(*at) <= REST_QUIET);
            let (low, high) = window.iter().fold(
                (f64::INFINITY, f64::NEG_INFINITY),
                |(low, high), (_, rss)| (low.min(*rss), high.max(*rss)),
            );
            let covered = window.first().is_some_and(|(at, _)| {
                now.duration_since(*at) + Duration::from_millis(500) >= REST_QUIET
            });
            if covered && high - low < REST_TOLERANCE_MIB {
                return Ok(sample);
            }
            if started.elapsed() >= REST_LIMIT {
                progress(&format!(
                    "  RSS still moving after {} s ({low:.1}-{high:.1} MiB); reading it anyway",
                    REST_LIMIT.as_secs()
                ));
                return Ok(sample);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Samples /proc every `every` until the returned handle is stopped.
    pub fn sampler(&self, every: Duration) -> Sampler {
        Sampler::start(self.pid, self.clock_ticks, every)
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Copies the operator's log (JSON lines, no key material) to `path`.
    pub fn save_log(&self, path: &std::path::Path) -> Result<()> {
        std::fs::copy(&self.log, path).map_err(|e| format!("copy {}: {e}", path.display()))?;
        Ok(())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        keymint_test_support::process::last_lines(&text, lines)
    }

    /// Lines of the log at WARN or ERROR level.
    pub fn warnings(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
            .count()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The operator metrics the benchmark reads (kind APIKey).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// `keymint_keys{kind="APIKey"}`: keys the operator has confirmed issued.
    pub keys: f64,
    pub reconciles: f64,
    pub reconcile_errors: f64,
    pub rotations: f64,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let value = |name: &str| -> f64 {
            text.lines()
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| {
                    let (series, value) = line.rsplit_once(' ')?;
                    let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
                    (metric == name && labels.contains("kind=\"APIKey\""))
                        .then(|| value.parse::<f64>().ok())
                        .flatten()
                })
                .sum()
        };
        Metrics {
            keys: value("keymint_keys"),
            reconciles: value("keymint_reconciles_total"),
            reconcile_errors: value("keymint_reconcile_errors_total"),
            rotations: value("keymint_rotations_total"),
        }
    }
}

fn read_proc(pid: u32, clock_ticks: f64) -> Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let cpu_seconds = cpu_seconds(pid, clock_ticks)?;
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count() as u64)
        .unwrap_or(0);
    Ok(ProcSample {
        rss_mib: field("VmRSS:") / 1024.0,
        peak_rss_mib: field("VmHWM:") / 1024.0,
        cpu_seconds,
        threads: field("Threads:") as u64,
        open_fds,
    })
}

/// User + system CPU seconds of a process so far (/proc/<pid>/stat).
pub fn cpu_seconds(pid: u32, clock_ticks: f64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |index: usize| -> f64 {
        fields
            .get(index)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime is field 14 and stime field 15 of stat(5): indices 11 and 12 here.
    Ok((ticks(11) + ticks(12)) / clock_ticks)
}

/// Peaks seen by a [`Sampler`].
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Peaks {
    pub peak_rss_mib: f64,
    pub max_open_fds: u64,
    pub max_threads: u64,
}

/// Background /proc sampling (for the open-fd peak, which /proc keeps no
/// high-water mark of).
pub struct Sampler {
    peaks: Arc<Mutex<Peaks>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32, clock_ticks: f64, every: Duration) -> Sampler {
        let peaks = Arc::new(Mutex::new(Peaks::default()));
        let shared = peaks.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Ok(sample) = read_proc(pid, clock_ticks) else {
                    return;
                };
                let mut peaks = shared.lock().unwrap_or_else(|p| p.into_inner());
                peaks.peak_rss_mib = peaks.peak_rss_mib.max(sample.peak_rss_mib);
                peaks.max_open_fds = peaks.max_open_fds.max(sample.open_fds);
                peaks.max_threads = peaks.max_threads.max(sample.threads);
            }
        });
        Sampler { peaks, task }
    }

    pub fn stop(self) -> Peaks {
        self.task.abort();
        *self.peaks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A plain HTTP/1.0 GET on loopback (no chunked body): (status code, body).
/// One GET to the operator's health and metrics server (blocking, so off
/// the runtime's threads).
async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let path = path.to_string();
    let answer = tokio::task::spawn_blocking(move || keymint_test_support::http_get(port, &path))
        .await
        .map_err(|e| format!("GET: {e}"))??;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apikey_series() {
        let text = "# HELP keymint_keys Keys currently issued.\n\
            keymint_keys{kind=\"RootKey\"} 3\n\
            keymint_keys{kind=\"APIKey\"} 200\n\
            keymint_reconciles_total{kind=\"APIKey\"} 612\n\
            keymint_reconcile_errors_total{kind=\"APIKey\",category=\"conflict\"} 2\n\
            keymint_reconcile_errors_total{kind=\"APIKey\",category=\"api\"} 1\n\
            keymint_rotations_total{kind=\"APIKey\"} 0\n";
        let m = Metrics::parse(text);
        assert_eq!(m.keys, 200.0);
        assert_eq!(m.reconciles, 612.0);
        assert_eq!(m.reconcile_errors, 3.0);
        assert_eq!(m.rotations, 0.0);
    }

    #[test]
    fn reads_our_own_proc_entry() {
        let sample = read_proc(std::process::id(), 100.0).expect("proc");
        assert!(sample.rss_mib > 0.0 && sample.peak_rss_mib >= sample.rss_mib);
        assert!(sample.threads >= 1 && sample.open_fds >= 1);
    }
}
