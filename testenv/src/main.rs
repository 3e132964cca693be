//! `keymint-testenv up [DIR]`: starts the local control plane for people
//! (`make cluster-up`, `make run`), prints where its kubeconfig is, and stops
//! it on Ctrl-C or SIGTERM.
//!
//! `keymint-testenv node`: the same with a real node (root only; one per
//! machine; its control plane lives in a temporary directory).

use std::path::PathBuf;

use keymint_testenv::{ControlPlane, Node, Options};

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    if command.as_deref() == Some("node") {
        return node();
    }
    let (Some("up"), dir) = (command.as_deref(), args.next()) else {
        eprintln!("usage: keymint-testenv up [DIR] | keymint-testenv node");
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
    let plane = match ControlPlane::start(Options {
        dir: Some(dir),
        ..Options::default()
    }) {
        Ok(plane) => plane,
        Err(error) => {
            eprintln!("keymint-testenv: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("control plane ready at {}", plane.server());
    println!("export KUBECONFIG={}", plane.kubeconfig_path().display());
    wait_for_stop_signal();
    println!("stopping the control plane");
    plane.stop();
    std::process::ExitCode::SUCCESS
}

fn node() -> std::process::ExitCode {
    let node = match Node::start() {
        Ok(node) => node,
        Err(error) => {
            eprintln!("keymint-testenv: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let plane = node.control_plane();
    println!("node ready at {}", plane.server());
    println!("export KUBECONFIG={}", plane.kubeconfig_path().display());
    wait_for_stop_signal();
    println!("stopping the node");
    match node.stop() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keymint-testenv: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Blocks until Ctrl-C or SIGTERM.
fn wait_for_stop_signal() {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("keymint-testenv: cannot wait for signals: {error}");
            return;
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
}
