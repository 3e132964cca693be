//! Prometheus metrics: reconciles, errors, keys by kind, seconds until the
//! earliest expiry, rotations. Labels come from fixed sets, never free text.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::Instant;

use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::reason::Reason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub category: String,
}

const KINDS: [&str; 3] = ["RootKey", "ServiceAccountKey", "APIKey"];

/// Issued keys, by a keyed hash of the resource's identity: its kind (an
/// index into [`KINDS`]) and expiry in Unix seconds ([`NEVER`]: it never
/// expires). 24 bytes a key, where the identity string and the table took
/// about 100. The hasher's keys are drawn per process, so names cannot be
/// crafted to collide; two keys colliding by chance count as one.
#[derive(Default)]
struct KeyBook {
    keys: HashMap<u64, (u8, i64)>,
    hasher: RandomState,
}

/// The expiry in the book of a key that never expires.
const NEVER: i64 = i64::MAX;

impl KeyBook {
    fn identity(&self, owner: &str) -> u64 {
        self.hasher.hash_one(owner)
    }
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    rotations: Family<KindLabel, Counter>,
    keys: Family<KindLabel, Gauge>,
    earliest_expiry: Gauge<f64, std::sync::atomic::AtomicU64>,
    duration: Family<KindLabel, Histogram>,
    events_suppressed: Family<KindLabel, Counter>,
    not_ready: Family<ReasonLabels, Counter>,
    rollouts_triggered: Family<KindLabel, Counter>,
    rollouts_completed: Family<KindLabel, Counter>,
    rollouts_timed_out: Family<KindLabel, Counter>,
    secret_reads: Family<KindLabel, Counter>,
    book: Mutex<KeyBook>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub kind: String,
    pub reason: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keymint");
        let reconciles = Family::<KindLabel, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let rotations = Family::<KindLabel, Counter>::default();
        let keys = Family::<KindLabel, Gauge>::default();
        let earliest_expiry = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let duration = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
        });
        registry.register("reconciles", "Reconciliations started", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by error category",
            errors.clone(),
        );
        registry.register(
            "rotations",
            "Keys rotated (scheduled or requested)",
            rotations.clone(),
        );
        registry.register("keys", "Keys currently issued", keys.clone());
        registry.register(
            "seconds_until_earliest_expiry",
            "Seconds until the earliest key expiry (negative: already expired)",
            earliest_expiry.clone(),
        );
        let events_suppressed = Family::<KindLabel, Counter>::default();
        let not_ready = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "not_ready_transitions",
            "Resources that turned Ready=False, by reason",
            not_ready.clone(),
        );
        registry.register(
            "events_suppressed",
            "Events not written because one resource had its share of Events with that reason",
            events_suppressed.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            duration.clone(),
        );
        let rollouts_triggered = Family::<KindLabel, Counter>::default();
        let rollouts_completed = Family::<KindLabel, Counter>::default();
        let rollouts_timed_out = Family::<KindLabel, Counter>::default();
        registry.register(
            "rollouts_triggered",
            "Consumer pod templates keymint changed to a new key id, by workload kind",
            rollouts_triggered.clone(),
        );
        registry.register(
            "rollouts_completed",
            "New keys whose consumers all rolled out, so the previous key went before its grace period ended, by key kind",
            rollouts_completed.clone(),
        );
        registry.register(
            "rollouts_timed_out",
            "New keys whose grace period ended before every consumer rolled out, by key kind",
            rollouts_timed_out.clone(),
        );
        let secret_reads = Family::<KindLabel, Counter>::default();
        registry.register(
            "secret_reads",
            "Key Secrets read one by one from the API server (a new key, and an up-to-date key after a restart, need none)",
            secret_reads.clone(),
        );
        for kind in crate::api::ConsumerKind::ALL {
            let _ = rollouts_triggered.get_or_create(&KindLabel {
                kind: kind.as_str().into(),
            });
        }
        // Every kind's series exist from the start, so dashboards see zeros, not gaps.
        for kind in KINDS {
            let label = KindLabel { kind: kind.into() };
            let _ = reconciles.get_or_create(&label);
            let _ = rotations.get_or_create(&label);
            let _ = events_suppressed.get_or_create(&label);
            for reason in Reason::ALL.into_iter().filter(|r| *r != Reason::KeyIssued) {
                let _ = not_ready.get_or_create(&ReasonLabels {
                    kind: kind.into(),
                    reason: reason.as_str().into(),
                });
            }
            let _ = keys.get_or_create(&label);
            let _ = rollouts_completed.get_or_create(&label);
            let _ = rollouts_timed_out.get_or_create(&label);
            let _ = secret_reads.get_or_create(&label);
        }
        Metrics {
            secret_reads,
            rollouts_triggered,
            rollouts_completed,
            rollouts_timed_out,
            registry,
            events_suppressed,
            not_ready,
            reconciles,
            errors,
            rotations,
            keys,
            earliest_expiry,
            duration,
            book: Mutex::default(),
        }
    }
}

/// Observes a reconciliation's duration when dropped.
pub struct ReconcileTimer<'a> {
    histogram: Histogram,
    started: Instant,
    _metrics: &'a Metrics,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

impl Metrics {
    pub fn reconcile_started(&self, kind: &str) -> ReconcileTimer<'_> {
        let label = KindLabel { kind: kind.into() };
        self.reconciles.get_or_create(&label).inc();
        ReconcileTimer {
            histogram: self.duration.get_or_create(&label).clone(),
            started: Instant::now(),
            _metrics: self,
        }
    }

    pub fn reconcile_failed(&self, kind: &str, category: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.into(),
                category: category.into(),
            })
            .inc();
    }

    pub fn not_ready(&self, kind: &str, reason: Reason) {
        self.not_ready
            .get_or_create(&ReasonLabels {
                kind: kind.into(),
                reason: reason.as_str().into(),
            })
            .inc();
    }

    pub fn event_suppressed(&self, kind: &str) {
        self.events_suppressed
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// keymint changed a consumer's pod template to a new key id.
    pub fn rollout_triggered(&self, workload_kind: &str) {
        self.rollouts_triggered
            .get_or_create(&KindLabel {
                kind: workload_kind.into(),
            })
            .inc();
    }

    /// Every consumer of a key runs its new key.
    pub fn rollout_completed(&self, kind: &str) {
        self.rollouts_completed
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// A key's grace period ended before every consumer ran its new key.
    pub fn rollout_timed_out(&self, kind: &str) {
        self.rollouts_timed_out
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// A key's Secret was read from the API server.
    pub fn secret_read(&self, kind: &str) {
        self.secret_reads
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    pub fn rotated(&self, kind: &str) {
        self.rotations
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// A resource's key is issued with this expiry.
    pub fn key_observed(&self, kind: &str, owner: &str, expires_at: Option<Timestamp>) {
        let Some(kind) = KINDS.iter().position(|k| *k == kind) else {
            return;
        };
        let kind = u8::try_from(kind).unwrap_or(u8::MAX);
        let expiry = expires_at.map_or(NEVER, |at| at.as_second());
        let mut book = self.lock_book();
        let identity = book.identity(owner);
        let before = book.keys.insert(identity, (kind, expiry));
        // Counted as it changes: a pass over every key per reconcile would
        // cost O(keys) each, O(keys²) to mint them all.
        if before.map(|(k, _)| k) != Some(kind) {
            self.count(kind, 1);
            if let Some((previous, _)) = before {
                self.count(previous, -1);
            }
        }
    }

    /// A resource has no usable key (blocked, revoked).
    pub fn key_blocked(&self, _kind: &str, owner: &str) {
        let mut book = self.lock_book();
        let identity = book.identity(owner);
        if let Some((kind, _)) = book.keys.remove(&identity) {
            self.count(kind, -1);
        }
    }

    /// Keeps only the keys of the resources `present` names (the others are
    /// gone).
    pub fn retain_keys(&self, present: &HashSet<String>) {
        let mut book = self.lock_book();
        let present: HashSet<u64> = present.iter().map(|owner| book.identity(owner)).collect();
        book.keys.retain(|identity, _| present.contains(identity));
        super::memory::shrink_if_sparse(&mut book.keys);
        let mut counts = [0i64; KINDS.len()];
        for (kind, _) in book.keys.values() {
            if let Some(count) = counts.get_mut(usize::from(*kind)) {
                *count += 1;
            }
        }
        for (kind, count) in KINDS.iter().zip(counts) {
            self.keys
                .get_or_create(&KindLabel {
                    kind: (*kind).into(),
                })
                .set(count);
        }
    }

    fn count(&self, kind: u8, change: i64) {
        if let Some(kind) = KINDS.get(usize::from(kind)) {
            self.keys
                .get_or_create(&KindLabel {
                    kind: (*kind).into(),
                })
                .inc_by(change);
        }
    }

    fn lock_book(&self) -> std::sync::MutexGuard<'_, KeyBook> {
        self.book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The earliest expiry, computed when the metrics are read (a scrape),
    /// not on every reconcile.
    fn update_earliest_expiry(&self) {
        let earliest = self
            .lock_book()
            .keys
            .values()
            .map(|(_, expiry)| *expiry)
            .filter(|expiry| *expiry != NEVER)
            .min();
        let seconds = earliest
            .map(|at| (at - Timestamp::now().as_second()) as f64)
            .unwrap_or(f64::INFINITY);
        self.earliest_expiry.set(seconds);
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        self.update_earliest_expiry();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(metrics: &Metrics, kind: &str) -> i64 {
        metrics
            .keys
            .get_or_create(&KindLabel { kind: kind.into() })
            .get()
    }

    #[test]
    fn the_key_count_follows_issued_blocked_and_deleted_resources() {
        let metrics = Metrics::default();
        let soon = Timestamp::now() + jiff::SignedDuration::from_secs(600);
        for n in 0..100 {
            metrics.key_observed("APIKey", &format!("APIKey/ns/k{n}"), Some(soon));
        }
        metrics.key_observed("RootKey", "RootKey/r", None);
        metrics.key_observed("APIKey", "APIKey/ns/k0", Some(soon));
        assert_eq!(
            (issued(&metrics, "APIKey"), issued(&metrics, "RootKey")),
            (100, 1)
        );
        metrics.key_blocked("APIKey", "APIKey/ns/k1");
        assert_eq!(issued(&metrics, "APIKey"), 99);
        let present = HashSet::from(["APIKey/ns/k2".to_string(), "RootKey/r".to_string()]);
        metrics.retain_keys(&present);
        assert_eq!(
            (issued(&metrics, "APIKey"), issued(&metrics, "RootKey")),
            (1, 1)
        );
        // The rule shrink_if_sparse keeps (a table's capacity counts its
        // free slots, less those erased entries left as tombstones, so it
        // can land anywhere up to the threshold without a shrink).
        let book = metrics.lock_book();
        assert!(
            book.keys.capacity() <= 4 * book.keys.len() + 64,
            "the table shrinks: {}",
            book.keys.capacity()
        );
        drop(book);
        let text = metrics.encode().expect("encode");
        let line = text
            .lines()
            .find(|l| l.starts_with("keymint_seconds_until_earliest_expiry "))
            .expect("gauge");
        let seconds: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("value");
        assert!((590.0..=600.0).contains(&seconds), "{line}");
    }
}
