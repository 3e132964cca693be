//! A CPU profile of kube-apiserver (its `/debug/pprof/profile`, on by
//! default) while the operator works: where the server's time goes, the
//! profile behind any target that is not met.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

/// Records `seconds` of kube-apiserver CPU profile (gzipped protobuf).
pub async fn apiserver_cpu(client: kube::Client, seconds: u64) -> Result<Vec<u8>> {
    let request =
        http::Request::get(format!("/debug/pprof/profile?seconds={seconds}")).body(Vec::new())?;
    let stream = client.request_stream(request).await?;
    let mut stream = std::pin::pin!(stream);
    let mut bytes = Vec::new();
    futures::AsyncReadExt::read_to_end(&mut stream, &mut bytes).await?;
    Ok(bytes)
}

/// Writes the profile to `path` and, when `go` is on the PATH, its top
/// functions (flat and cumulative) next to it as `.txt`. Returns the files
/// written.
pub fn save(path: &Path, profile: &[u8]) -> Result<Vec<PathBuf>> {
    std::fs::write(path, profile).map_err(|e| format!("write {}: {e}", path.display()))?;
    let mut written = vec![path.to_path_buf()];
    let summary = path.with_extension("txt");
    if write_top(&[], path, &summary)? {
        written.push(summary);
    }
    Ok(written)
}

/// Writes to `out` the top functions of `profile` less those of `base`
/// (pprof's `-diff_base`; the profiles should span the same time): where
/// the server spent more. `false` when `go` is not on the PATH.
pub fn save_diff(base: &Path, profile: &Path, out: &Path) -> Result<bool> {
    let base = format!("-diff_base={}", base.display());
    write_top(&[base.as_str()], profile, out)
}

/// `go tool pprof -top` of `profile` (flat, then cumulative) into `out`;
/// `false`, and nothing written, when pprof cannot run.
fn write_top(extra: &[&str], profile: &Path, out: &Path) -> Result<bool> {
    let mut text = String::new();
    for (title, order) in [("flat", None), ("cumulative", Some("-cum"))] {
        let mut command = Command::new("go");
        command.args(["tool", "pprof", "-top", "-nodecount=40"]);
        command.args(extra).args(order).arg(profile);
        match command.output() {
            Ok(output) if output.status.success() => {
                text.push_str(&format!("## {title}\n\n"));
                text.push_str(&String::from_utf8_lossy(&output.stdout));
                text.push('\n');
            }
            _ => return Ok(false),
        }
    }
    std::fs::write(out, text).map_err(|e| format!("write {}: {e}", out.display()))?;
    Ok(true)
}
