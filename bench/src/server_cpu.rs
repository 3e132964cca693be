//! CPU seconds the control plane itself spends (kube-apiserver and etcd):
//! the API load a phase puts on the cluster, comparable between the bare
//! client and the operator.

use std::path::Path;

use serde::Serialize;

use crate::Result;
use crate::operator::cpu_seconds;

/// The control plane's processes, found by their command lines (they name
/// the control plane's directory).
pub struct ServerProcesses {
    apiserver: u32,
    etcd: u32,
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
                Some(program) if program.ends_with("/etcd") => etcd = Some(pid),
                _ => {}
            }
        }
        match (apiserver, etcd) {
            (Some(apiserver), Some(etcd)) => Ok(ServerProcesses {
                apiserver,
                etcd,
                clock_ticks: crate::machine::clock_ticks(),
            }),
            _ => Err(format!("kube-apiserver or etcd of {dir} not found in /proc").into()),
        }
    }

    pub fn cpu(&self) -> ServerCpu {
        ServerCpu {
            apiserver_seconds: cpu_seconds(self.apiserver, self.clock_ticks).unwrap_or(f64::NAN),
            etcd_seconds: cpu_seconds(self.etcd, self.clock_ticks).unwrap_or(f64::NAN),
        }
    }
}
