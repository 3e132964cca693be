//! A minimal key holder, for proving zero-downtime rotation end to end
//! (hidden subcommand `keymint hold`): it reads its key once at start, as a
//! workload reading an env var does, sends it to a verify server's
//! `/v1/verify` at a steady rate, and counts the answers. On SIGTERM it stops
//! sending and writes the counts as one JSON line to stdout and to the
//! container's termination message, where a test reads them after the Pod is
//! gone. The key itself is never printed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use zeroize::Zeroizing;

/// Where the kubelet reads a container's termination message by default.
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// How long one verification may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What a holder saw.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    pub sent: u64,
    pub valid: u64,
    /// Answers other than VALID, by code.
    pub refused: BTreeMap<String, u64>,
    /// Requests with no answer (connection refused, timeout, not JSON) even
    /// after one retry.
    pub errors: u64,
    /// Requests sent again after a transport error (a pooled connection the
    /// server had closed, say): what any HTTP client of an idempotent call does.
    pub retries: u64,
    /// The key ids the verifier named in VALID answers.
    pub key_ids: BTreeSet<String>,
    /// How long the holder sent, in seconds.
    pub seconds: f64,
}

impl Tally {
    /// Counts one answer body (or a failure to get one).
    pub fn count(&mut self, answer: Result<serde_json::Value, String>) {
        self.sent += 1;
        let Ok(answer) = answer else {
            self.errors += 1;
            return;
        };
        match answer["code"].as_str() {
            Some("VALID") => {
                self.valid += 1;
                if let Some(id) = answer["id"].as_str() {
                    self.key_ids.insert(id.to_string());
                }
            }
            Some(code) => *self.refused.entry(code.to_string()).or_default() += 1,
            None => self.errors += 1,
        }
    }
}

/// Sends `key` to `url` `rate` times a second until `stop` resolves.
pub async fn hold(
    url: &str,
    key: Zeroizing<String>,
    rate: u32,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Tally, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("--url: {e}"))?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let body = Zeroizing::new(serde_json::json!({ "key": key.as_str() }).to_string());
    let mut tally = Tally::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let started = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = &mut stop => {
                tally.seconds = started.elapsed().as_secs_f64();
                return Ok(tally);
            }
            _ = tick.tick() => {
                let mut answer = verify(&client, &uri, &body).await;
                if answer.is_err() {
                    tally.retries += 1;
                    tokio::time::sleep(RETRY_AFTER).await;
                    answer = verify(&client, &uri, &body).await;
                }
                tally.count(answer);
            }
        }
    }
}

/// Pause before the one retry of a request that got no answer.
const RETRY_AFTER: Duration = Duration::from_millis(50);

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One verification: the answer's JSON, or why there is none.
async fn verify(
    client: &HttpClient,
    uri: &hyper::Uri,
    body: &str,
) -> Result<serde_json::Value, String> {
    let request = hyper::Request::post(uri.clone())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.as_bytes().to_vec())))
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|_| Err("timed out".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_counted_by_code_and_valid_ones_by_key_id() {
        let mut tally = Tally::default();
        tally.count(Ok(json!({"code": "VALID", "id": "K1"})));
        tally.count(Ok(json!({"code": "VALID", "id": "K2"})));
        tally.count(Ok(json!({"code": "NOT_FOUND"})));
        tally.count(Ok(json!({"unexpected": true})));
        tally.count(Err("connection refused".into()));
        assert_eq!(tally.sent, 5);
        assert_eq!(tally.valid, 2);
        assert_eq!(
            tally.refused,
            BTreeMap::from([("NOT_FOUND".to_string(), 1)])
        );
        assert_eq!(tally.errors, 2);
        assert_eq!(
            serde_json::to_value(&tally).expect("json")["keyIds"],
            json!(["K1", "K2"])
        );
    }
}
