//! `make run` end to end: from nothing, a control plane, the CRDs, the operator
//! and every example Ready with its Secret; Ctrl-C (SIGINT to the process
//! group) stops everything and leaves no process behind.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Processes whose command line mentions `dir` (the run's own cluster directory).
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

fn poll<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn make_run_shows_the_examples_ready_and_ctrl_c_stops_everything() {
    let dir = tempfile::Builder::new()
        .prefix("keymint-make-run-")
        .tempdir()
        .expect("temp dir");
    let cluster = dir.path().join("cluster");
    let output = dir.path().join("run.out");
    let log = std::fs::File::create(&output).expect("output file");
    let repo = repo();
    // `make run` builds the launcher first (`make build`); so does this test.
    let built = Command::new(env!("CARGO"))
        .args([
            "build",
            "--locked",
            "-p",
            "keymint-testenv",
            "--bin",
            "keymint-testenv",
        ])
        .current_dir(&repo)
        .status()
        .expect("cargo build");
    assert!(built.success(), "cannot build keymint-testenv");
    let mut run = Command::new("bash");
    run.arg(repo.join("scripts/run.sh"))
        .current_dir(&repo)
        .env("KEYMINT_CLUSTER_DIR", &cluster)
        .env(
            "KEYMINT_METRICS_ADDRESS",
            format!("127.0.0.1:{}", keymint_testenv::free_port().expect("port")),
        )
        .env(
            "PATH",
            format!(
                "{}:{}:{}",
                repo.join("bin").display(),
                repo.join(".venv/bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        // Its own process group, as a terminal gives `make run`.
        .process_group(0);
    let mut child = run.spawn().expect("start scripts/run.sh");
    let read = || {
        let mut text = String::new();
        let _ = std::fs::File::open(&output).and_then(|mut f| f.read_to_string(&mut text));
        text
    };
    let shown = poll("the examples to be Ready", Duration::from_secs(300), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("scripts/run.sh exited early ({status}):\n{}", read());
        }
        let text = read();
        text.contains("Press Ctrl-C").then_some(text)
    });
    // Every example is Ready, with its Secret.
    for name in [
        "reports-reader",
        "billing-export",
        "partner-webhook",
        "search-api",
        "platform-root",
        "ingest-robot-key",
        "invoices-exporter",
        "billing-api",
    ] {
        assert!(
            shown
                .lines()
                .any(|l| l.contains(name) && l.contains(" True ")),
            "{name} not Ready in:\n{shown}"
        );
    }
    for secret in [
        "reports-reader",
        "billing-export",
        "partner-webhook",
        "search-api-credentials",
        "platform-root",
        "ingest-robot-key",
        "invoices-exporter",
    ] {
        assert!(
            shown
                .lines()
                .any(|l| l.contains(secret) && l.contains("keymint.dev/key")),
            "Secret {secret} missing in:\n{shown}"
        );
    }
    assert!(
        shown
            .lines()
            .any(|l| l.contains("billing-api") && l.contains("keymint.dev/keyring")),
        "the key ring's Secret missing in:\n{shown}"
    );
    assert!(
        !processes_using(&cluster).is_empty(),
        "the control plane runs from the run's directory"
    );

    // Ctrl-C: SIGINT to the whole process group.
    keymint_test_support::send_to_group(child.id(), keymint_test_support::Signal::INT);
    let status = poll("scripts/run.sh to stop", Duration::from_secs(60), || {
        child.try_wait().ok().flatten()
    });
    assert!(
        status.success() || status.code() == Some(130),
        "exit status {status:?}:\n{}",
        read()
    );
    let left = poll("every process to stop", Duration::from_secs(30), || {
        let left = processes_using(&cluster);
        left.is_empty().then_some(left)
    });
    assert!(left.is_empty());
    assert!(read().contains("control plane stopped"), "{}", read());
}
