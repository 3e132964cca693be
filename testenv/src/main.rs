//! `keymint-testenv up [DIR]`: starts the local control plane for people
//! (`make cluster-up`, `make run`), prints where its kubeconfig is, and stops
//! it on Ctrl-C or SIGTERM.

use std::path::PathBuf;

use keymint_testenv::{ControlPlane, Options};

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some("up"), dir) = (args.next().as_deref(), args.next()) else {
        eprintln!("usage: keymint-testenv up [DIR]");
        return std::process::ExitCode::from(2);
    };
    let dir = dir
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".cluster"));
    let dir = match std::path::absolute(&dir) {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("keymint-testenv: {}: {error}", dir.display());
            return std::process::ExitCode::FAILURE;
        }
    };
    // A long-lived cluster starts from an empty etcd each time.
    let _ = std::fs::remove_dir_all(dir.join("etcd"));
    let plane = match ControlPlane::start(Options { dir: Some(dir) }) {
        Ok(plane) => plane,
        Err(error) => {
            eprintln!("keymint-testenv: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("control plane ready at {}", plane.server());
    println!("export KUBECONFIG={}", plane.kubeconfig_path().display());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("keymint-testenv: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    });
    println!("stopping the control plane");
    plane.stop();
    std::process::ExitCode::SUCCESS
}
