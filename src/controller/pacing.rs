//! Pacing, so that one tenant cannot starve the others or flood the API
//! server: exponential backoff per resource after failures, a bound on the
//! reconciles in flight per namespace, a budget of Events per resource and
//! reason, and one claim at a time per Secret name. Every map here is keyed
//! by objects that exist and forgets an entry once it is back at rest.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// First retry after a failure; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Reconciles of one namespace in flight at once (of the controller's 32):
/// the rest of the slots stay free for other namespaces.
pub const IN_FLIGHT_PER_NAMESPACE: usize = 8;
/// Events with one reason for one resource: a burst of this many...
pub const EVENT_BURST: u32 = 5;
/// ...then one more per this interval.
pub const EVENT_REFILL: Duration = Duration::from_secs(120);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The delay before retry `failures` (1-based): 5 s, 10 s, 20 s, ... 300 s.
pub fn backoff_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF)
}

/// A token bucket: `burst` tokens, one more every `refill`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    since: Instant,
}

impl Bucket {
    fn full(now: Instant) -> Self {
        Bucket {
            tokens: EVENT_BURST,
            since: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.since);
        let earned = u32::try_from(elapsed.as_secs() / EVENT_REFILL.as_secs()).unwrap_or(u32::MAX);
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(EVENT_BURST);
            self.since += EVENT_REFILL.saturating_mul(earned.min(EVENT_BURST));
            if self.tokens == EVENT_BURST {
                self.since = now;
            }
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[derive(Default)]
pub struct Pacing {
    failures: Mutex<HashMap<String, u32>>,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    claimed: Arc<Mutex<HashSet<String>>>,
    events: Mutex<HashMap<(String, String), Bucket>>,
}

/// Held while a reconcile of a namespace runs.
pub struct InFlight {
    namespace: String,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut in_flight = lock(&self.in_flight);
        if let Some(count) = in_flight.get_mut(&self.namespace) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_flight.remove(&self.namespace);
            }
        }
    }
}

/// Held while a reconcile reads and writes one Secret name.
pub struct SecretClaim {
    secret: String,
    claimed: Arc<Mutex<HashSet<String>>>,
}

impl Drop for SecretClaim {
    fn drop(&mut self) {
        lock(&self.claimed).remove(&self.secret);
    }
}

impl Pacing {
    /// Records a failure of `object` and returns how long to wait.
    pub fn failed(&self, object: &str) -> Duration {
        let mut failures = lock(&self.failures);
        let count = failures.entry(object.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        backoff_delay(*count)
    }

    /// `object` reconciled cleanly: the next failure starts from the first delay.
    pub fn succeeded(&self, object: &str) {
        lock(&self.failures).remove(object);
    }

    /// Forgets the failures of resources `keep` no longer names (deleted).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        lock(&self.failures).retain(|object, _| keep(object));
        lock(&self.events).retain(|(object, _), _| keep(object));
    }

    /// A slot for a reconcile in `namespace`, unless it has its share in flight.
    pub fn enter(&self, namespace: &str) -> Option<InFlight> {
        let mut in_flight = lock(&self.in_flight);
        let count = in_flight.entry(namespace.to_string()).or_insert(0);
        if *count >= IN_FLIGHT_PER_NAMESPACE {
            return None;
        }
        *count += 1;
        Some(InFlight {
            namespace: namespace.to_string(),
            in_flight: self.in_flight.clone(),
        })
    }

    /// The right to read and write the Secret `namespace/name`, unless
    /// another reconcile holds it (two resources naming one Secret are then
    /// decided one after the other, never both from the same read).
    pub fn claim(&self, namespace: &str, name: &str) -> Option<SecretClaim> {
        let secret = format!("{namespace}/{name}");
        if !lock(&self.claimed).insert(secret.clone()) {
            return None;
        }
        Some(SecretClaim {
            secret,
            claimed: self.claimed.clone(),
        })
    }

    /// Whether one more Event with `reason` about `object` may be written now.
    pub fn may_publish(&self, object: &str, reason: &str) -> bool {
        self.may_publish_at(object, reason, Instant::now())
    }

    fn may_publish_at(&self, object: &str, reason: &str, now: Instant) -> bool {
        let mut events = lock(&self.events);
        // Full buckets carry no information: forget them when the map grows.
        if events.len() > 10_000 {
            events.retain(|_, bucket| {
                bucket.refill(now);
                bucket.tokens < EVENT_BURST
            });
        }
        events
            .entry((object.to_string(), reason.to_string()))
            .or_insert_with(|| Bucket::full(now))
            .take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_to_five_minutes() {
        let delays: Vec<u64> = (1..=9).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff_delay(u32::MAX), MAX_BACKOFF);
        let pacing = Pacing::default();
        assert_eq!(pacing.failed("a"), Duration::from_secs(5));
        assert_eq!(pacing.failed("a"), Duration::from_secs(10));
        assert_eq!(pacing.failed("b"), Duration::from_secs(5));
        pacing.succeeded("a");
        assert_eq!(pacing.failed("a"), Duration::from_secs(5));
        // A deleted resource's state goes; a present one's stays.
        assert!(pacing.may_publish("gone", "KeyRotated"));
        pacing.retain(|owner| owner == "b");
        assert_eq!(
            pacing.failed("a"),
            Duration::from_secs(5),
            "a was forgotten"
        );
        assert_eq!(pacing.failed("b"), Duration::from_secs(10), "b was kept");
        assert!(lock(&pacing.events).is_empty());
    }

    #[test]
    fn a_namespace_gets_a_bounded_share_and_its_slots_come_back() {
        let pacing = Pacing::default();
        let held: Vec<_> = (0..IN_FLIGHT_PER_NAMESPACE)
            .map(|_| pacing.enter("a").expect("slot"))
            .collect();
        assert!(pacing.enter("a").is_none());
        assert!(
            pacing.enter("b").is_some(),
            "other namespaces are not held up"
        );
        drop(held);
        assert!(pacing.enter("a").is_some());
        assert!(lock(&pacing.in_flight).get("a").is_none_or(|n| *n == 0));
    }

    #[test]
    fn one_secret_is_claimed_by_one_reconcile_at_a_time() {
        let pacing = Pacing::default();
        let first = pacing.claim("ns", "s").expect("free");
        assert!(pacing.claim("ns", "s").is_none());
        assert!(pacing.claim("ns", "t").is_some());
        drop(first);
        assert!(pacing.claim("ns", "s").is_some());
    }

    #[test]
    fn events_per_resource_and_reason_are_a_burst_then_one_per_refill() {
        let pacing = Pacing::default();
        let start = Instant::now();
        let allowed = (0..20)
            .filter(|_| pacing.may_publish_at("k", "KeyRotated", start))
            .count();
        assert_eq!(allowed, EVENT_BURST as usize);
        assert!(pacing.may_publish_at("k", "KeyIssued", start), "per reason");
        assert!(
            pacing.may_publish_at("other", "KeyRotated", start),
            "per resource"
        );
        assert!(!pacing.may_publish_at("k", "KeyRotated", start + EVENT_REFILL / 2));
        assert!(pacing.may_publish_at("k", "KeyRotated", start + EVENT_REFILL));
        assert!(!pacing.may_publish_at("k", "KeyRotated", start + EVENT_REFILL));
        // A minute of 1-second rotations writes at most the burst plus refills.
        let pacing = Pacing::default();
        let in_a_minute = (0..60)
            .filter(|s| pacing.may_publish_at("k", "KeyRotated", start + Duration::from_secs(*s)))
            .count();
        assert_eq!(in_a_minute, EVENT_BURST as usize);
    }
}
