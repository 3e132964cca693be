//! CPU seconds the control plane itself spends (kube-apiserver and etcd):
//! the API load a phase puts on the cluster, comparable between the bare
//! client and the operator; and the size of etcd's database (what limits a
//! very large round).

use std::path::Path;

use serde::Serialize;

use crate::Result;
use crate::operator::cpu_seconds;

/// The control plane's processes, found by their command lines (they name
/// the control plane's directory).
pub struct ServerProcesses {
    apiserver: u32,
    etcd: u32,
    /// etcd's plain-HTTP client port on loopback (its `--listen-client-urls`).
    etcd_client_port: Option<u16>,
    clock_ticks: f64,
}

/// CPU seconds so far, or spent over a phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ServerCpu {
    pub apiserver_seconds: f64,
    pub etcd_seconds: f64,
}

impl ServerCpu {
    pub fn since(self, earlier: ServerCpu) -> ServerCpu {
        ServerCpu {
            apiserver_seconds: self.apiserver_seconds - earlier.apiserver_seconds,
            etcd_seconds: self.etcd_seconds - earlier.etcd_seconds,
        }
    }

    pub fn total(&self) -> f64 {
        self.apiserver_seconds + self.etcd_seconds
    }

    /// Milliseconds per key.
    pub fn ms_per_key(&self, keys: usize) -> f64 {
        self.total() * 1000.0 / keys as f64
    }
}

impl ServerProcesses {
    pub fn find(dir: &Path) -> Result<ServerProcesses> {
        let dir = dir.display().to_string();
        let mut apiserver = None;
        let mut etcd = None;
        let mut etcd_client_port = None;
        for entry in std::fs::read_dir("/proc")? {
            let entry = entry?;
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if !args.iter().any(|a| a.contains(&dir)) {
                continue;
            }
            match args.first().map(String::as_str) {
                Some(program) if program.ends_with("/kube-apiserver") => apiserver = Some(pid),
                Some(program) if program.ends_with("/etcd") => {
                    etcd = Some(pid);
                    etcd_client_port = args.iter().find_map(|a| listen_client_port(a));
                }
                _ => {}
            }
        }
        match (apiserver, etcd) {
            (Some(apiserver), Some(etcd)) => Ok(ServerProcesses {
                apiserver,
                etcd,
                etcd_client_port,
                clock_ticks: crate::machine::clock_ticks(),
            }),
            _ => Err(format!("kube-apiserver or etcd of {dir} not found in /proc").into()),
        }
    }

    /// etcd's `etcd_mvcc_db_total_size_in_bytes` (None when it cannot be read).
    pub async fn etcd_db_bytes(&self) -> Option<u64> {
        let port = self.etcd_client_port?;
        let body = tokio::task::spawn_blocking(move || http_1_0_get(port, "/metrics"))
            .await
            .ok()?
            .ok()?;
        metric_value(&body, "etcd_mvcc_db_total_size_in_bytes").map(|v| v as u64)
    }

    pub fn cpu(&self) -> ServerCpu {
        ServerCpu {
            apiserver_seconds: cpu_seconds(self.apiserver, self.clock_ticks).unwrap_or(f64::NAN),
            etcd_seconds: cpu_seconds(self.etcd, self.clock_ticks).unwrap_or(f64::NAN),
        }
    }
}

/// The port of `--listen-client-urls=http://127.0.0.1:<port>`.
fn listen_client_port(arg: &str) -> Option<u16> {
    let urls = arg.strip_prefix("--listen-client-urls=")?;
    let first = urls.split(',').next()?;
    first.strip_prefix("http://127.0.0.1:")?.parse().ok()
}

/// A GET on loopback as HTTP/1.0, so the answer comes unchunked; the body.
fn http_1_0_get(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// The value of an unlabelled Prometheus series.
fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.split_once(' ')?;
            (series == name)
                .then(|| value.trim().parse().ok())
                .flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_etcds_port_and_db_size() {
        assert_eq!(
            listen_client_port("--listen-client-urls=http://127.0.0.1:2379"),
            Some(2379)
        );
        assert_eq!(listen_client_port("--data-dir=/x"), None);
        let text = "# HELP etcd_mvcc_db_total_size_in_bytes Total size.\n\
            etcd_mvcc_db_total_size_in_bytes_in_use 10\n\
            etcd_mvcc_db_total_size_in_bytes 2.4576e+07\n";
        assert_eq!(
            metric_value(text, "etcd_mvcc_db_total_size_in_bytes"),
            Some(24_576_000.0)
        );
    }
}
