//! The verify server's Prometheus metrics: verifications by reason, the
//! loaded ring's size and age, and how loading goes. Labels come from
//! [`Reason::ALL`] only, never from a request.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::keyring::{Keyring, Reason};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// What the last successful load left, for the gauges computed at scrape time.
#[derive(Default)]
struct LastLoad {
    at: Option<Instant>,
    updated_at: Option<Timestamp>,
}

/// The verify server's metrics (prefix `keymint_verify_`).
pub struct VerifyMetrics {
    registry: Registry,
    verifications: Family<ReasonLabel, Counter>,
    members: Gauge,
    ring_age: Gauge<f64, AtomicU64>,
    since_load: Gauge<f64, AtomicU64>,
    reload_failures: Counter,
    loads: Counter,
    last: Mutex<LastLoad>,
}

impl Default for VerifyMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keymint_verify");
        let verifications = Family::<ReasonLabel, Counter>::default();
        let members = Gauge::default();
        let ring_age = Gauge::<f64, AtomicU64>::default();
        let since_load = Gauge::<f64, AtomicU64>::default();
        let reload_failures = Counter::default();
        let loads = Counter::default();
        registry.register(
            "verifications",
            "Keys verified, by reason (VALID, NOT_FOUND, ...)",
            verifications.clone(),
        );
        registry.register(
            "ring_members",
            "Members of the loaded ring",
            members.clone(),
        );
        registry.register(
            "ring_age_seconds",
            "Seconds since the loaded ring's updatedAt (-1 before a ring loads)",
            ring_age.clone(),
        );
        registry.register(
            "seconds_since_last_load",
            "Seconds since a ring last loaded (-1 before a ring loads)",
            since_load.clone(),
        );
        registry.register(
            "reload_failures",
            "Ring documents refused or unreadable (the last good ring stays)",
            reload_failures.clone(),
        );
        registry.register("ring_loads", "Ring documents loaded", loads.clone());
        // Every reason's series exists from the start: dashboards see zeros, not gaps.
        for reason in Reason::ALL {
            let _ = verifications.get_or_create(&ReasonLabel {
                reason: reason.code().into(),
            });
        }
        ring_age.set(-1.0);
        since_load.set(-1.0);
        VerifyMetrics {
            registry,
            verifications,
            members,
            ring_age,
            since_load,
            reload_failures,
            loads,
            last: Mutex::default(),
        }
    }
}

impl VerifyMetrics {
    pub fn verified(&self, reason: Reason) {
        self.verifications
            .get_or_create(&ReasonLabel {
                reason: reason.code().into(),
            })
            .inc();
    }

    pub fn loaded(&self, ring: &Keyring) {
        self.loads.inc();
        self.members
            .set(i64::try_from(ring.len()).unwrap_or(i64::MAX));
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = LastLoad {
            at: Some(Instant::now()),
            updated_at: ring.updated_at(),
        };
    }

    pub fn reload_failed(&self) {
        self.reload_failures.inc();
    }

    /// Total verifications so far with `reason` (for tests and logs).
    pub fn count(&self, reason: Reason) -> u64 {
        self.verifications
            .get_or_create(&ReasonLabel {
                reason: reason.code().into(),
            })
            .get()
    }

    /// The metrics in the Prometheus text format (the age gauges as of now).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        {
            let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = last.at {
                self.since_load.set(at.elapsed().as_secs_f64());
            }
            if let Some(updated_at) = last.updated_at {
                self.ring_age
                    .set(Timestamp::now().duration_since(updated_at).as_secs_f64());
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_there_from_the_start() {
        let metrics = VerifyMetrics::default();
        let text = metrics.encode().expect("encode");
        for reason in Reason::ALL {
            let line = format!(
                "keymint_verify_verifications_total{{reason=\"{}\"}} 0",
                reason.code()
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(text.contains("keymint_verify_seconds_since_last_load -1"));
        assert!(text.contains("keymint_verify_reload_failures_total 0"));
        assert!(text.contains("keymint_verify_ring_loads_total 0"));
        metrics.verified(Reason::NotFound);
        assert_eq!(metrics.count(Reason::NotFound), 1);
    }
}
