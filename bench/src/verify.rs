//! The verify phase: `keymint verify --keyring-file` over a ring
//! of `--verify-members` members, driven by a keep-alive HTTP/1.1 load client
//! with `--verify-connections` connections for `--verify-seconds`:
//!
//! 1. `POST /v1/verify` with a valid key: verifications per second, latency;
//! 2. the floor: `keymint verify --floor`, the same binary and HTTP stack
//!    answering a fixed `VALID` without a ring, measured the same way;
//! 3. reload: the ring file replaced with one key removed (written aside and
//!    renamed, as the kubelet swaps a mounted Secret) until the server answers
//!    `NOT_FOUND` for it, at the default 1 s poll interval, the rewrites
//!    spread over the poll cycle;
//! 4. and 5. watch mode on a local control plane (`verify_watch`): a rotation
//!    and a compromise mark, from the API write to the answer changing.
//!
//! The load client shares the machine with the server, so (1) and (2) are
//! only comparable with each other, in the same run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use keymint::keyring::{Issuer, Member, MemberKind, MemberState, RingDocument, RingRef};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::machine::{self, Machine};
use crate::options::Options;
use crate::stats::Summary;
use crate::{Result, progress};

/// Not measured: the first part of each load run (connections, caches).
const WARM_UP: Duration = Duration::from_millis(500);
/// Reload samples (each removes another key).
const RELOADS: usize = 5;
const START: Duration = Duration::from_secs(60);
/// keymint verify's default `--poll-interval-ms`, what a deployment runs with.
const POLL_INTERVAL_MS: u64 = 1000;

/// Everything the verify phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyRun {
    pub date: String,
    pub machine: Machine,
    pub keymint_commit: String,
    pub members: usize,
    pub ring_bytes: usize,
    pub connections: usize,
    pub seconds: f64,
    /// (1) a valid key against the ring.
    pub verify: Load,
    /// (2) the fixed answer on the same stack.
    pub floor: Load,
    /// verify's rate over the floor's.
    pub ratio_to_floor: f64,
    /// (3) ring file replaced -> the removed key answered `NOT_FOUND`.
    pub reload_poll_interval_ms: u64,
    pub reload_seconds: Summary,
    /// (4) watch mode: rotation -> the old key `NOT_FOUND`.
    pub watch_rotation_seconds: Summary,
    /// (5) watch mode: `keymint.dev/compromised` -> the leaked key `REVOKED`.
    pub watch_revocation_seconds: Summary,
}

/// One load measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    pub requests: usize,
    pub per_second: f64,
    /// Seconds per request, on the client.
    pub latency: Summary,
    /// Answers that were not 200 with the expected code.
    pub unexpected: usize,
}

struct Process {
    child: Child,
    port: u16,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(keymint: &Path, log: &Path, extra: &[&str]) -> Result<Process> {
    let port = keymint_testenv::free_port()?;
    let mut command = Command::new(keymint);
    command
        .args(["verify", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--log-level", "warn"])
        .args(extra);
    let child = keymint_testenv::spawn_tied_to_process(command, log)?;
    Ok(Process { child, port })
}

async fn wait_ready(process: &Process) -> Result<()> {
    let deadline = Instant::now() + START;
    loop {
        if let Ok((200, _)) = keymint_test_support::http_get(process.port, "/readyz") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "keymint verify on {} not ready after {START:?}",
                process.port
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ring(keys: &[String]) -> Vec<u8> {
    let members = keys
        .iter()
        .enumerate()
        .map(|(index, key)| Member {
            id: format!("B{index:019}"),
            sha256: keymint::keys::sha256_hex(key),
            kind: MemberKind::ApiKey,
            issuer: Issuer {
                namespace: Some("bench".into()),
                name: format!("key-{index}"),
                service_account: None,
            },
            permissions: vec!["models:*".into(), "read".into()],
            not_before: "2026-01-01T00:00:00Z".into(),
            expires_at: Some("2999-01-01T00:00:00Z".into()),
            state: MemberState::Current,
        })
        .collect();
    RingDocument::new(
        RingRef {
            namespace: "bench".into(),
            name: "ring".into(),
        },
        jiff::Timestamp::now().to_string(),
        members,
    )
    .to_bytes()
}

fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, bytes)?;
    std::fs::rename(&aside, path)?;
    Ok(())
}

fn verify_request(key: &str) -> Vec<u8> {
    let body = serde_json::json!({"key": key, "permission": "read"}).to_string();
    format!(
        "POST /v1/verify HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A keep-alive HTTP/1.1 connection: one request, one response, in turn.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    async fn open(port: u16) -> Result<Connection> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buffer: Vec::with_capacity(4096),
        })
    }

    /// Sends `request`; the status and body of the answer.
    async fn exchange(&mut self, request: &[u8]) -> Result<(u16, Vec<u8>)> {
        self.stream.write_all(request).await?;
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).to_string();
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let length = head
                    .lines()
                    .filter_map(|line| line.split_once(':'))
                    .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, value)| value.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let total = end + 4 + length;
                while self.buffer.len() < total {
                    self.fill().await?;
                }
                let body = self.buffer[end + 4..total].to_vec();
                self.buffer.drain(..total);
                return Ok((status, body));
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 4096];
        let read = self.stream.read(&mut chunk).await?;
        if read == 0 {
            return Err("the server closed the connection".into());
        }
        self.buffer.extend_from_slice(&chunk[..read]);
        Ok(())
    }
}

/// `connections` connections sending `request` back to back for `duration`
/// (after [`WARM_UP`]); answers must be 200 and hold `expect`.
async fn load(
    port: u16,
    request: Vec<u8>,
    expect: &'static str,
    connections: usize,
    duration: Duration,
) -> Result<Load> {
    let request = std::sync::Arc::new(request);
    let warm_until = Instant::now() + WARM_UP;
    let until = warm_until + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(port).await?;
            let mut latencies = Vec::new();
            let mut unexpected = 0usize;
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let (status, body) = connection.exchange(&request).await?;
                if sent < warm_until {
                    continue;
                }
                latencies.push(sent.elapsed().as_secs_f64());
                let expected =
                    status == 200 && body.windows(expect.len()).any(|w| w == expect.as_bytes());
                unexpected += usize::from(!expected);
            }
            Ok::<_, crate::Error>((latencies, unexpected))
        }));
    }
    let mut latencies = Vec::new();
    let mut unexpected = 0;
    for task in tasks {
        let (mine, bad) = task.await??;
        latencies.extend(mine);
        unexpected += bad;
    }
    Ok(Load {
        requests: latencies.len(),
        per_second: latencies.len() as f64 / duration.as_secs_f64(),
        latency: Summary::of(&latencies),
        unexpected,
    })
}

/// Runs the phase; the files written.
pub async fn run(options: &Options) -> Result<Vec<PathBuf>> {
    let dir = std::env::temp_dir().join(format!("keymint-bench-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let outcome = measure(options, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let run = outcome?;
    std::fs::create_dir_all(&options.out)?;
    let json = options.out.join("verify.json");
    let mut text = serde_json::to_string_pretty(&run)?;
    text.push('\n');
    std::fs::write(&json, text).map_err(|e| format!("write {}: {e}", json.display()))?;
    let md = options.out.join("verify.md");
    std::fs::write(&md, markdown(&run)).map_err(|e| format!("write {}: {e}", md.display()))?;
    Ok(vec![md, json])
}

async fn measure(options: &Options, dir: &Path) -> Result<VerifyRun> {
    let n = options.verify_members;
    progress(&format!("verify: minting a ring of {n} members"));
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        keys.push(
            keymint::keys::try_mint_token("ak", 256)?
                .expose()
                .to_string(),
        );
    }
    let ring_path = dir.join("keyring.json");
    let bytes = ring(&keys);
    let ring_bytes = bytes.len();
    replace(&ring_path, &bytes)?;
    let server = start(
        &options.keymint,
        &dir.join("verify.log"),
        &[
            "--keyring-file",
            &ring_path.display().to_string(),
            "--poll-interval-ms",
            &POLL_INTERVAL_MS.to_string(),
        ],
    )?;
    let floor = start(&options.keymint, &dir.join("floor.log"), &["--floor"])?;
    wait_ready(&server).await?;
    wait_ready(&floor).await?;
    let (connections, duration) = (options.verify_connections, options.verify_duration);
    // A key from the middle of the ring, not a lucky first entry.
    let key = &keys[n / 2];
    progress(&format!(
        "verify: {connections} connections for {duration:?} against the ring"
    ));
    let verify = load(
        server.port,
        verify_request(key),
        "\"code\":\"VALID\"",
        connections,
        duration,
    )
    .await?;
    progress("verify: the same against the floor");
    let floor_load = load(
        floor.port,
        verify_request(key),
        "\"code\":\"VALID\"",
        connections,
        duration,
    )
    .await?;
    drop(floor);

    progress(&format!("verify: {RELOADS} reloads, one key removed each"));
    let mut reloads = Vec::new();
    let mut connection = Connection::open(server.port).await?;
    let mut kept: Vec<String> = keys.clone();
    for removed in 0..RELOADS.min(n) {
        // Each rewrite lands at another point of the poll cycle (detection
        // just happened at a poll): the samples spread over 0..interval
        // instead of all being the worst case.
        let phase = POLL_INTERVAL_MS * removed as u64 / RELOADS as u64;
        tokio::time::sleep(Duration::from_millis(phase)).await;
        let gone = kept.remove(0);
        replace(&ring_path, &ring(&kept))?;
        let written = Instant::now();
        let request = verify_request(&gone);
        loop {
            let (_, body) = connection.exchange(&request).await?;
            if body.windows(11).any(|w| w == b"\"NOT_FOUND\"") {
                break;
            }
            if written.elapsed() > START {
                return Err(format!("reload {removed}: still valid after {START:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        reloads.push(written.elapsed().as_secs_f64());
    }
    drop(connection);
    drop(server);
    let watch = crate::verify_watch::measure(&options.keymint, dir).await?;
    Ok(VerifyRun {
        watch_rotation_seconds: watch.rotation,
        watch_revocation_seconds: watch.revocation,
        date: jiff::Timestamp::now().to_string(),
        machine: Machine::probe(),
        keymint_commit: machine::keymint_commit(),
        members: n,
        ring_bytes,
        connections,
        seconds: duration.as_secs_f64(),
        ratio_to_floor: if floor_load.per_second > 0.0 {
            verify.per_second / floor_load.per_second
        } else {
            0.0
        },
        verify,
        floor: floor_load,
        reload_poll_interval_ms: POLL_INTERVAL_MS,
        reload_seconds: Summary::of(&reloads),
    })
}

fn markdown(run: &VerifyRun) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# keymint verify benchmark\n");
    let _ = writeln!(
        out,
        "{} · {} CPUs ({}) shared by server and load client · keymint `{}` · ring of {} members ({} bytes) · {} keep-alive connections for {} s\n",
        run.date,
        run.machine.cpus,
        run.machine.cpu_model,
        run.keymint_commit,
        run.members,
        run.ring_bytes,
        run.connections,
        run.seconds
    );
    let _ = writeln!(
        out,
        "| | verifications/s | p50 | p99 | unexpected answers |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (label, load) in [
        ("POST /v1/verify, valid key", &run.verify),
        ("floor: fixed 200, same stack", &run.floor),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {:.0} | {:.3} ms | {:.3} ms | {} |",
            load.per_second,
            load.latency.p50 * 1000.0,
            load.latency.p99 * 1000.0,
            load.unexpected
        );
    }
    let _ = writeln!(out, "\nverify / floor: {:.2}\n", run.ratio_to_floor);
    let _ = writeln!(
        out,
        "Ring file replaced (one key removed) -> `NOT_FOUND`, poll interval {} ms: p50 {:.3} s, max {:.3} s over {} reloads",
        run.reload_poll_interval_ms,
        run.reload_seconds.p50,
        run.reload_seconds.max,
        run.reload_seconds.count
    );
    let _ = writeln!(
        out,
        "\nWatch mode (`--keyring-secret`, keymint run on a local control plane), from the API write to the answer changing, over {} samples each:\n",
        run.watch_rotation_seconds.count
    );
    let _ = writeln!(out, "| change | p50 | max |\n|---|---|---|");
    for (label, summary) in [
        (
            "rotation (no grace period): old key -> `NOT_FOUND`",
            &run.watch_rotation_seconds,
        ),
        (
            "`keymint.dev/compromised`: leaked key -> `REVOKED`",
            &run.watch_revocation_seconds,
        ),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {:.3} s | {:.3} s |",
            summary.p50, summary.max
        );
    }
    out
}
