//! Counting one identity's requests in a window of the API server's audit log.
//!
//! The log is JSON lines at Metadata level (testenv's audit policy, stage
//! `RequestReceived` omitted). A window is a byte range of the file, taken
//! with [`AuditLog::mark`] before and after; a request counts once: its
//! `ResponseComplete` event, or `ResponseStarted` for a watch (which may stay
//! open past the window). Requests are counted by verb and resource, or per
//! second of their `requestReceivedTimestamp` (a request rate).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Result;

pub struct AuditLog {
    path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    #[serde(default)]
    stage: String,
    #[serde(default)]
    verb: String,
    #[serde(default)]
    user: User,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default, rename = "requestURI")]
    request_uri: String,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
    #[serde(default)]
    request_received_timestamp: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct User {
    #[serde(default)]
    username: String,
}

#[derive(Debug, Deserialize)]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    subresource: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: Option<u16>,
}

/// Requests in a window, by `"<verb> <resource>[/<subresource>]"`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Requests {
    pub by_verb: BTreeMap<String, u64>,
    /// The subset answered 404 (a GET of a Secret not written yet), same keys.
    pub not_found: BTreeMap<String, u64>,
    /// The subset that failed otherwise (HTTP status >= 400), same keys.
    pub failed: BTreeMap<String, u64>,
}

/// The one Secret the operator reads at every start (its record-signing
/// key, the bench runs it with the default name): counted apart from the
/// keys' Secrets, whose reads a restart should not need.
pub const RECORD_KEY_SECRET: &str = keymint::controller::record_key::DEFAULT_SECRET_NAME;
/// The request key of that read.
pub const RECORD_KEY_GET: &str = "get secrets (record key)";

const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

impl Requests {
    pub fn total(&self) -> u64 {
        self.by_verb.values().sum()
    }

    /// Requests of one `"<verb> <resource>"`, e.g. `"get secrets"`.
    pub fn count(&self, key: &str) -> u64 {
        self.by_verb.get(key).copied().unwrap_or(0)
    }

    fn sum(&self, keep: impl Fn(&str, &str) -> bool) -> u64 {
        self.by_verb
            .iter()
            .filter(|(key, _)| {
                let (verb, resource) = key.split_once(' ').unwrap_or((key.as_str(), ""));
                keep(verb, resource)
            })
            .map(|(_, n)| n)
            .sum()
    }

    /// Writes to anything but Events (Secrets, status, ...).
    pub fn object_writes(&self) -> u64 {
        self.sum(|verb, resource| WRITE_VERBS.contains(&verb) && resource != "events")
    }

    /// Event writes (created or patched as a series).
    pub fn event_writes(&self) -> u64 {
        self.sum(|verb, resource| WRITE_VERBS.contains(&verb) && resource == "events")
    }

    /// Reads (get, list, watch).
    pub fn reads(&self) -> u64 {
        self.sum(|verb, _| !WRITE_VERBS.contains(&verb))
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }
}

impl AuditLog {
    pub fn new(path: PathBuf) -> AuditLog {
        AuditLog { path }
    }

    /// The end of the last complete line written so far.
    pub fn mark(&self) -> Result<u64> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(format!("open {}: {error}", self.path.display()).into()),
        };
        let len = file.metadata()?.len();
        let tail_start = len.saturating_sub(256 * 1024);
        file.seek(SeekFrom::Start(tail_start))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail)?;
        let tail = &tail[..usize::try_from(len - tail_start)
            .unwrap_or(tail.len())
            .min(tail.len())];
        Ok(match tail.iter().rposition(|b| *b == b'\n') {
            Some(at) => tail_start + at as u64 + 1,
            None => tail_start,
        })
    }

    /// Requests made by `user` between two marks.
    pub fn requests(&self, user: &str, from: u64, to: u64) -> Result<Requests> {
        let mut requests = Requests::default();
        self.each_request(user, from, to, |event| {
            let key = request_key(event);
            *requests.by_verb.entry(key.clone()).or_default() += 1;
            match event.response_status.as_ref().and_then(|s| s.code) {
                Some(404) => *requests.not_found.entry(key).or_default() += 1,
                Some(code) if code >= 400 => *requests.failed.entry(key).or_default() += 1,
                _ => {}
            }
        })?;
        Ok(requests)
    }

    /// Requests made by `user` between two marks, per Unix second in which
    /// the server received them.
    pub fn per_second(&self, user: &str, from: u64, to: u64) -> Result<Timeline> {
        let mut timeline = Timeline::default();
        self.each_request(user, from, to, |event| {
            let Some(second) = event
                .request_received_timestamp
                .as_deref()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_second())
            else {
                return;
            };
            let key = request_key(event);
            let (verb, resource) = key.split_once(' ').unwrap_or((key.as_str(), ""));
            let counts = if !WRITE_VERBS.contains(&verb) {
                &mut timeline.reads
            } else if resource == "events" {
                &mut timeline.event_writes
            } else {
                &mut timeline.object_writes
            };
            *counts.entry(second).or_default() += 1;
            *timeline.all.entry(second).or_default() += 1;
        })?;
        Ok(timeline)
    }

    /// Calls `visit` with each of `user`'s requests between two marks, once each.
    fn each_request(
        &self,
        user: &str,
        from: u64,
        to: u64,
        mut visit: impl FnMut(&Line),
    ) -> Result<()> {
        let mut file =
            File::open(&self.path).map_err(|e| format!("open {}: {e}", self.path.display()))?;
        file.seek(SeekFrom::Start(from))?;
        let reader = BufReader::with_capacity(1 << 20, file.take(to.saturating_sub(from)));
        for line in reader.lines() {
            let line = line?;
            // Cheap pre-filter: most lines in a window are someone else's.
            if !line.contains(user) {
                continue;
            }
            let Ok(event) = serde_json::from_str::<Line>(&line) else {
                continue;
            };
            if event.user.username != user || !counts_once(&event) {
                continue;
            }
            visit(&event);
        }
        Ok(())
    }
}

/// Requests per Unix second: all of them, and by kind as in [`Requests`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    pub all: BTreeMap<i64, u64>,
    pub object_writes: BTreeMap<i64, u64>,
    pub event_writes: BTreeMap<i64, u64>,
    pub reads: BTreeMap<i64, u64>,
}

fn counts_once(event: &Line) -> bool {
    match event.stage.as_str() {
        "ResponseStarted" => event.verb == "watch",
        "ResponseComplete" | "Panic" => event.verb != "watch",
        _ => false,
    }
}

fn request_key(event: &Line) -> String {
    match &event.object_ref {
        Some(object)
            if event.verb == "get"
                && object.resource == "secrets"
                && object.name == RECORD_KEY_SECRET =>
        {
            RECORD_KEY_GET.to_string()
        }
        Some(object) if !object.resource.is_empty() => match &object.subresource {
            Some(sub) if !sub.is_empty() => format!("{} {}/{sub}", event.verb, object.resource),
            _ => format!("{} {}", event.verb, object.resource),
        },
        _ => {
            let path = event.request_uri.split('?').next().unwrap_or("");
            format!("{} {path}", event.verb)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_verb_once_per_request() {
        let dir = std::env::temp_dir().join(format!("keymint-bench-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("audit.log");
        let line = |stage: &str, verb: &str, user: &str, resource: &str, sub: &str, code: u16| {
            let sub = if sub.is_empty() {
                String::new()
            } else {
                format!(",\"subresource\":\"{sub}\"")
            };
            format!(
                "{{\"stage\":\"{stage}\",\"verb\":\"{verb}\",\"user\":{{\"username\":\"{user}\"}},\"objectRef\":{{\"resource\":\"{resource}\"{sub}}},\"requestURI\":\"/x\",\"responseStatus\":{{\"code\":{code}}}}}\n"
            )
        };
        let before = line("ResponseComplete", "get", "op", "secrets", "", 200);
        let window = [
            line("ResponseComplete", "patch", "op", "secrets", "", 200),
            line("ResponseComplete", "patch", "op", "apikeys", "status", 200),
            line("ResponseComplete", "patch", "op", "apikeys", "status", 409),
            line("ResponseComplete", "create", "op", "events", "", 201),
            line("ResponseStarted", "watch", "op", "secrets", "", 200),
            line("ResponseComplete", "watch", "op", "secrets", "", 200),
            line("ResponseComplete", "get", "op", "secrets", "", 404),
            line("ResponseComplete", "create", "admin", "secrets", "", 201),
            format!(
                "{{\"stage\":\"ResponseComplete\",\"verb\":\"get\",\"user\":{{\"username\":\"op\"}},\"objectRef\":{{\"resource\":\"secrets\",\"name\":\"{RECORD_KEY_SECRET}\"}},\"requestURI\":\"/x\",\"responseStatus\":{{\"code\":200}}}}\n"
            ),
        ]
        .concat();
        std::fs::write(&path, format!("{before}{window}partial")).expect("write");
        let log = AuditLog::new(path);
        let end = log.mark().expect("mark");
        let requests = log
            .requests("op", before.len() as u64, end)
            .expect("requests");
        assert_eq!(requests.count("patch secrets"), 1);
        assert_eq!(requests.count("patch apikeys/status"), 2);
        assert_eq!(requests.count("watch secrets"), 1);
        assert_eq!(requests.count("get secrets"), 1);
        assert_eq!(requests.count(RECORD_KEY_GET), 1);
        assert_eq!(requests.object_writes(), 3);
        assert_eq!(requests.event_writes(), 1);
        assert_eq!(requests.reads(), 3);
        assert_eq!(requests.failed_total(), 1);
        assert_eq!(requests.not_found.get("get secrets"), Some(&1));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn counts_per_second_of_arrival() {
        let dir = std::env::temp_dir().join(format!("keymint-bench-rate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("audit.log");
        let line = |verb: &str, resource: &str, at: &str| {
            format!(
                "{{\"stage\":\"ResponseComplete\",\"verb\":\"{verb}\",\"user\":{{\"username\":\"op\"}},\"objectRef\":{{\"resource\":\"{resource}\"}},\"requestURI\":\"/x\",\"requestReceivedTimestamp\":\"{at}\"}}\n"
            )
        };
        let text = [
            line("patch", "secrets", "2030-01-01T00:00:00.100000Z"),
            line("patch", "apikeys", "2030-01-01T00:00:00.900000Z"),
            line("create", "events", "2030-01-01T00:00:01.000001Z"),
            line("get", "secrets", "2030-01-01T00:00:01.500000Z"),
        ]
        .concat();
        std::fs::write(&path, &text).expect("write");
        let log = AuditLog::new(path);
        let timeline = log
            .per_second("op", 0, text.len() as u64)
            .expect("timeline");
        let second: i64 = "2030-01-01T00:00:00Z"
            .parse::<jiff::Timestamp>()
            .expect("t")
            .as_second();
        assert_eq!(timeline.all.get(&second), Some(&2));
        assert_eq!(timeline.all.get(&(second + 1)), Some(&2));
        assert_eq!(timeline.object_writes.get(&second), Some(&2));
        assert_eq!(timeline.event_writes.get(&(second + 1)), Some(&1));
        assert_eq!(timeline.reads.get(&(second + 1)), Some(&1));
        let _ = std::fs::remove_dir_all(dir);
    }
}
