//! Waiting on a condition in tests: [`eventually`] polls instead of sleeping.

use std::time::{Duration, Instant};

/// How often [`eventually`] checks again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `check` every 100 ms until it returns `Ok`, or panics with `what`
/// and the last observation after `timeout`. Tests use it instead of sleeps.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}
