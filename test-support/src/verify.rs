//! `keymint verify` as the tests run it: the process (file or watch mode),
//! and plain HTTP/1.1 requests to it with their status, headers and body.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;

use crate::process::keymint_binary;

/// A running `keymint verify` on a free loopback port; killed on drop.
pub struct VerifyServer {
    child: Child,
    log: PathBuf,
    pub port: u16,
}

impl VerifyServer {
    /// Starts `keymint verify` with `source` (`--keyring-file PATH`, or
    /// `--keyring-secret NAME --namespace NS`), JSON logs at debug (the log
    /// scans prove keys stay out of the log even there), and `env`.
    pub fn start(dir: &Path, name: &str, source: &[&str], env: &[(&str, &str)]) -> VerifyServer {
        let log = dir.join(format!("{name}.log"));
        let port = keymint_testenv::free_port().expect("free port");
        let mut command = Command::new(keymint_binary());
        command
            .arg("verify")
            .args(source)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--log-format",
                "json",
                "--log-level",
                "debug",
            ])
            .envs(env.iter().copied());
        let child =
            keymint_testenv::spawn_tied_to_process(command, &log).expect("start keymint verify");
        VerifyServer { child, log, port }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `POST /v1/verify` with a JSON body.
    pub fn verify_json(&self, body: &Value) -> std::io::Result<Answer> {
        request(
            self.port,
            "POST",
            "/v1/verify",
            &[("Content-Type", "application/json")],
            &body.to_string(),
        )
    }
}

impl Drop for VerifyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
pub struct Answer {
    pub status: u16,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The JSON body of a `200 OK`, or what came instead: for a poller that
    /// asks again until the right server answers (through a Service whose
    /// endpoints are still settling, once an answer with no body came back).
    pub fn ok_json(&self) -> Result<Value, String> {
        match (self.status, serde_json::from_str(&self.body)) {
            (200, Ok(value)) => Ok(value),
            (status, _) => Err(format!(
                "HTTP {status}, headers {:?}, body {:?}",
                self.headers, self.body
            )),
        }
    }
}

/// One HTTP/1.1 request on loopback (connection closed after it).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Answer> {
    request_at("127.0.0.1", port, method, path, headers, body)
}

/// [`request`] to `host` (a Pod's or a Service's address on the node).
pub fn request_at(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Answer> {
    let mut stream = std::net::TcpStream::connect((host, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(text.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    // A connection closed before the end of an answer's head (with no bytes
    // at all, seen through a Service on the node while its endpoints
    // settled) is no answer: an error, so that a caller polling for an
    // answer polls again.
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "{host}:{port} closed the connection before the end of an answer's head: {response:?}"
            ),
        ));
    };
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_string(),
    })
}
