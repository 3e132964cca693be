//! The API server's audit log: the event fields tests count by, reading the
//! log, and counting one user's requests.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};

use serde::Deserialize;

use crate::{ControlPlane, Result, io_err};

/// The fields of an audit event the tests count by.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub verb: String,
    pub user: AuditUser,
    #[serde(default)]
    pub object_ref: Option<AuditObjectRef>,
    #[serde(default, rename = "requestURI")]
    pub request_uri: String,
    #[serde(default)]
    pub response_status: Option<AuditResponseStatus>,
    /// Where the request came from (a Pod's address on the node).
    #[serde(default, rename = "sourceIPs")]
    pub source_ips: Vec<String>,
    /// The client's User-Agent (Argo CD's components name themselves here).
    #[serde(default)]
    pub user_agent: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuditUser {
    #[serde(default)]
    pub username: String,
    /// For a Pod's ServiceAccount token: `authentication.kubernetes.io/pod-name` and more.
    #[serde(default)]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl AuditUser {
    /// The Pod whose bound ServiceAccount token made the request, if any.
    pub fn pod_name(&self) -> Option<&str> {
        self.extra
            .get("authentication.kubernetes.io/pod-name")
            .and_then(|names| names.first())
            .map(String::as_str)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditObjectRef {
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub subresource: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuditResponseStatus {
    #[serde(default)]
    pub code: Option<u16>,
}

impl ControlPlane {
    /// Every audit event recorded so far.
    pub fn audit_events(&self) -> Result<Vec<AuditEvent>> {
        let path = self.audit_log_path();
        let file = fs::File::open(&path).map_err(io_err(format!("open {}", path.display())))?;
        Ok(BufReader::new(file)
            .lines()
            .map_while(std::result::Result::ok)
            .filter_map(|line| serde_json::from_str(&line).ok())
            .collect())
    }

    /// How many requests `user` made, by verb, among the events after the first
    /// `after` (pass an earlier `audit_events().len()` to count a window).
    pub fn count_requests_by_verb(
        &self,
        user: &str,
        after: usize,
    ) -> Result<BTreeMap<String, usize>> {
        let mut counts = BTreeMap::new();
        for event in self
            .audit_events()?
            .into_iter()
            .skip(after)
            .filter(|e| e.user.username == user)
        {
            *counts.entry(event.verb).or_insert(0) += 1;
        }
        Ok(counts)
    }
}
