//! Child processes tied to the test process: spawning with `PR_SET_PDEATHSIG`
//! from a thread that never ends, stopping (SIGTERM, then SIGKILL), and the
//! exit hook that kills what is left when the process exits.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{Error, Result, io_err};

/// How long [`terminate`] waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Every pid spawned here and not yet stopped: what the exit hook kills.
static EXIT_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Starts `command` (stdout and stderr to `log`) from a thread that lives as
/// long as the process, so the child is killed when the test process dies,
/// however it dies, and at a normal exit. Tests use it for the operator.
pub fn spawn_tied_to_process(mut command: Command, log: &Path) -> Result<Child> {
    type Request = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<std::sync::mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel::<Request>();
        let _ = std::thread::Builder::new()
            .name("keymint-spawner".into())
            .spawn(move || {
                for (mut command, reply) in receiver {
                    let _ = reply.send(command.spawn());
                }
                loop {
                    std::thread::park();
                }
            });
        Mutex::new(sender)
    });
    // Appends: a restarted process keeps its earlier log (tests scan all of it).
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err(format!("open {}", log.display())))?;
    let err = out.try_clone().map_err(io_err("clone log handle"))?;
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    kill_with_parent(&mut command);
    let (reply, response) = std::sync::mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((command, reply))
        .map_err(|_| spawner_gone_error())?;
    let child = response
        .recv()
        .map_err(|_| spawner_gone_error())?
        .map_err(io_err("spawn a process"))?;
    if let Ok(mut pids) = EXIT_PIDS.lock() {
        pids.push(child.id());
    }
    Ok(child)
}

fn spawner_gone_error() -> Error {
    Error::Io(
        "spawn a process".into(),
        std::io::Error::other("the spawner thread is gone"),
    )
}

/// Statics are never dropped, so a process-wide control plane is stopped
/// (its `pids` killed, its `dir` removed) by an exit hook as well.
pub(crate) fn register_exit_cleanup(pids: impl IntoIterator<Item = u32>, dir: PathBuf) {
    static DIR: Mutex<Option<PathBuf>> = Mutex::new(None);
    extern "C" fn cleanup() {
        if let Ok(pids) = EXIT_PIDS.lock() {
            for pid in pids.iter() {
                // SAFETY: kill(2) on a pid we spawned; no memory is touched.
                unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        if let Ok(Some(dir)) = DIR.lock().map(|dir| dir.clone()) {
            let _ = fs::remove_dir_all(dir);
        }
    }
    if let Ok(mut exit_pids) = EXIT_PIDS.lock() {
        exit_pids.extend(pids);
    }
    if let Ok(mut registered_dir) = DIR.lock() {
        *registered_dir = Some(dir);
    }
    // SAFETY: registers a plain extern "C" function with no captured state.
    unsafe { libc::atexit(cleanup) };
}

/// Has the kernel send the child SIGKILL when the thread that spawned it ends.
fn kill_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; called between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Stops `child` (named `name` in messages): SIGTERM, then SIGKILL after
/// [`STOP_GRACE`].
pub(crate) fn terminate(name: &str, child: &mut Child) {
    if let Ok(mut pids) = EXIT_PIDS.lock() {
        // Never signal a pid at exit that may have been reused since.
        pids.retain(|pid| *pid != child.id());
    }
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on the child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{name} did not stop on SIGTERM within {STOP_GRACE:?}; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `lines` lines of the file at `path` (empty if it cannot be read).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let content = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = content.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
