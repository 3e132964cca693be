//! Pacing, so that one tenant cannot starve the others or flood the API
//! server: exponential backoff per resource after failures, a bound on the
//! reconciles in flight per namespace, a budget of Events per resource and
//! reason, and one claim at a time per Secret name. Every map here is keyed
//! by objects that exist and forgets an entry once it is back at rest.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::memory::shrink_if_sparse;

/// First retry after a failure; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Reconciles of one namespace in flight at once that are always granted
/// (of the controllers' 40 each)...
pub const IN_FLIGHT_PER_NAMESPACE: usize = 8;
/// ...and the total in flight up to which a namespace may go past that share:
/// a lone busy namespace uses most of the slots (the API server is the limit,
/// not an idle share), while the last [`IN_FLIGHT_PER_NAMESPACE`] slots stay
/// for namespaces within their share, so a flood never holds up another tenant.
pub const IN_FLIGHT_SHARED: usize = 32;
/// A key turned away is woken when a slot frees and it is first in line.
/// Should that wake be lost (the key it went to was deleted meanwhile), it
/// also comes back by itself, after its place in its namespace's line times
/// the time a reconcile takes there over the slots, times this...
const LINE_PATIENCE: f64 = 2.0;
/// ...but no sooner than this...
const LINE_MIN_WAIT: Duration = Duration::from_millis(250);
/// ...and no later than this.
const LINE_MAX_WAIT: Duration = Duration::from_secs(60);
/// The moving average of that time follows about this many reconciles.
const MEAN_WEIGHT: f64 = 32.0;

/// Asks for a reconcile of a key (by its owner id) now: a slot is free for it.
pub type Waker = Box<dyn Fn(&str) + Send + Sync>;
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

/// How often at most the Event budgets are swept of full buckets.
const EVENT_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Pacing {
    failures: Mutex<HashMap<String, u32>>,
    in_flight: Arc<Mutex<HashMap<String, Slots>>>,
    claimed: Arc<Mutex<HashSet<String>>>,
    events: Mutex<EventBudgets>,
    rotations: Mutex<Option<Rate>>,
    waker: Arc<OnceLock<Waker>>,
}

/// A rate with a burst of one second's worth: `per_second` tokens, refilled
/// continuously.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_second: f64,
    tokens: f64,
    since: Instant,
}

impl Rate {
    fn new(per_second: u32, now: Instant) -> Self {
        let per_second = f64::from(per_second.max(1));
        Rate {
            per_second,
            tokens: per_second,
            since: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.since).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        self.since = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Event budgets per (object, reason), and when full ones were last swept:
/// sweeping on every publish past a size would cost a pass over the map per
/// Event while many keys are new. Budgets are found by keyed hashes of the
/// object and of the reason (40 bytes a budget, where two strings and the
/// table took about 200: every new key spends one, so 10,000 keys held 2 MB
/// for the two minutes a token takes to come back). The hasher's keys are
/// drawn per process, so names cannot be crafted to share a budget; should
/// two share one by chance, they are only held to one budget together.
#[derive(Default)]
struct EventBudgets {
    buckets: HashMap<(u64, u64), Bucket>,
    swept: Option<Instant>,
    hasher: RandomState,
}

impl EventBudgets {
    /// Forgets the full buckets (they carry no information) and those of
    /// objects not `present`, when that is known.
    fn sweep(&mut self, now: Instant, present: Option<&HashSet<u64>>) {
        self.buckets.retain(|(object, _), bucket| {
            bucket.refill(now);
            bucket.tokens < EVENT_BURST && present.is_none_or(|present| present.contains(object))
        });
        shrink_if_sparse(&mut self.buckets);
        self.swept = Some(now);
    }

    fn budget(&mut self, object: &str, reason: &str, now: Instant) -> &mut Bucket {
        let key = (self.hasher.hash_one(object), self.hasher.hash_one(reason));
        self.buckets.entry(key).or_insert_with(|| Bucket::full(now))
    }
}

/// One namespace's reconciles: those in flight, the keys turned away and not
/// yet back (their line, in the order they came), and how long its
/// reconciles take.
#[derive(Debug, Default)]
struct Slots {
    running: usize,
    waiting: HashSet<String>,
    /// The waiting keys in order; an entry whose key is no longer waiting
    /// (it got a slot by itself, or was deleted) is skipped.
    line: VecDeque<String>,
    /// Mean time in flight, seconds (moving average); unset until one ends.
    mean_seconds: Option<f64>,
}

impl Slots {
    fn idle(&self) -> bool {
        self.running == 0 && self.waiting.is_empty()
    }

    fn join(&mut self, object: &str) {
        if self.waiting.insert(object.to_string()) {
            self.line.push_back(object.to_string());
        }
        // Skipped entries never pile up past the keys that wait.
        if self.line.len() > 2 * self.waiting.len() + 64 {
            self.forget_skipped();
        }
    }

    fn forget_skipped(&mut self) {
        let waiting = &self.waiting;
        self.line.retain(|object| waiting.contains(object));
        if self.line.capacity() > 4 * self.line.len() + 64 {
            self.line.shrink_to_fit();
        }
    }

    /// The first key in line, which leaves it.
    fn next(&mut self) -> Option<String> {
        while let Some(object) = self.line.pop_front() {
            if self.waiting.remove(&object) {
                return Some(object);
            }
        }
        None
    }

    fn finished(&mut self, took: Duration) {
        let took = took.as_secs_f64();
        self.mean_seconds = Some(match self.mean_seconds {
            Some(mean) => mean + (took - mean) / MEAN_WEIGHT,
            None => took,
        });
    }

    /// How long the key at the end of the line waits for a wake before it
    /// comes back by itself: its place over how many the namespace's slots
    /// can finish per second, with patience. From the time a reconcile
    /// takes, not from how many finished: with slots left idle that count
    /// would fall, and the waits would grow, feeding each other.
    fn wait(&self) -> Duration {
        // Nothing measured yet (a restart queues every key at once, before
        // the first reconcile ends): no guess spreads them.
        let Some(mean) = self.mean_seconds else {
            return LINE_MIN_WAIT;
        };
        let capacity = IN_FLIGHT_SHARED as f64 / mean.max(1e-4) / LINE_PATIENCE;
        let place = self.waiting.len() as f64;
        Duration::from_secs_f64(place / capacity).clamp(LINE_MIN_WAIT, LINE_MAX_WAIT)
    }
}

/// Held while a reconcile of a namespace runs; when it ends, the slot goes
/// to the first key in line (of this namespace, else of another).
pub struct InFlight {
    namespace: String,
    since: Instant,
    in_flight: Arc<Mutex<HashMap<String, Slots>>>,
    waker: Arc<OnceLock<Waker>>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let next = {
            let mut in_flight = lock(&self.in_flight);
            if let Some(slots) = in_flight.get_mut(&self.namespace) {
                slots.running = slots.running.saturating_sub(1);
                slots.finished(self.since.elapsed());
            }
            next_in_line(&mut in_flight, &self.namespace)
        };
        // Outside the lock: the wake may run anything.
        if let (Some(object), Some(wake)) = (next, self.waker.get()) {
            wake(&object);
        }
    }
}

/// The key a freed slot of `namespace` goes to: the first of its own line,
/// else the first of another namespace's (whose keys were turned away only
/// because all shared slots were taken). Namespaces left at rest go.
fn next_in_line(in_flight: &mut HashMap<String, Slots>, namespace: &str) -> Option<String> {
    let next = match in_flight.get_mut(namespace).and_then(Slots::next) {
        Some(object) => Some((namespace.to_string(), object)),
        None => in_flight
            .iter_mut()
            .find_map(|(other, slots)| slots.next().map(|object| (other.clone(), object))),
    };
    let from = next.as_ref().map(|(from, _)| from.as_str());
    for name in [Some(namespace), from].into_iter().flatten() {
        if in_flight.get(name).is_some_and(Slots::idle) {
            in_flight.remove(name);
        }
    }
    next.map(|(_, object)| object)
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
    /// Pacing with scheduled rotations bounded to `max_rotations_per_second`.
    pub fn new(max_rotations_per_second: u32) -> Self {
        Pacing {
            rotations: Mutex::new(Some(Rate::new(max_rotations_per_second, Instant::now()))),
            ..Default::default()
        }
    }

    /// How a key first in line is woken when a slot frees (set once, by
    /// the runner that owns the controllers).
    pub fn set_waker(&self, waker: Waker) {
        let _ = self.waker.set(waker);
    }

    /// Whether one more scheduled rotation may start now (always, without a
    /// configured rate).
    pub fn take_rotation(&self) -> bool {
        self.take_rotation_at(Instant::now())
    }

    fn take_rotation_at(&self, now: Instant) -> bool {
        lock(&self.rotations)
            .as_mut()
            .is_none_or(|rate| rate.take(now))
    }

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

    /// Forgets the state of resources no longer `present` (deleted).
    pub fn retain(&self, present: &HashSet<String>) {
        {
            let mut failures = lock(&self.failures);
            failures.retain(|object, _| present.contains(object));
            shrink_if_sparse(&mut failures);
        }
        lock(&self.in_flight).retain(|_, slots| {
            slots.waiting.retain(|object| present.contains(object));
            slots.forget_skipped();
            !slots.idle()
        });
        // Full buckets carry no information either: at rest the map empties.
        let mut events = lock(&self.events);
        let present: HashSet<u64> = present
            .iter()
            .map(|object| events.hasher.hash_one(object.as_str()))
            .collect();
        events.sweep(Instant::now(), Some(&present));
    }

    /// A slot for a reconcile of `object` in `namespace`, unless the
    /// namespace has its share in flight: then `object` joins the
    /// namespace's line, to be woken when a slot is free for it, and the
    /// answer is how long it waits at most before it asks again by itself.
    /// Thousands of keys of one namespace asking again and again would
    /// spend the operator's CPU being turned away.
    pub fn enter(&self, namespace: &str, object: &str) -> Result<InFlight, Duration> {
        self.enter_at(namespace, object, Instant::now())
    }

    fn enter_at(&self, namespace: &str, object: &str, now: Instant) -> Result<InFlight, Duration> {
        let mut in_flight = lock(&self.in_flight);
        let total: usize = in_flight.values().map(|slots| slots.running).sum();
        let slots = in_flight.entry(namespace.to_string()).or_default();
        if slots.running >= IN_FLIGHT_PER_NAMESPACE && total >= IN_FLIGHT_SHARED {
            slots.join(object);
            return Err(slots.wait());
        }
        slots.waiting.remove(object);
        slots.running += 1;
        Ok(InFlight {
            namespace: namespace.to_string(),
            since: now,
            in_flight: self.in_flight.clone(),
            waker: self.waker.clone(),
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
        let sweep_due = events
            .swept
            .is_none_or(|swept| now.saturating_duration_since(swept) >= EVENT_SWEEP_INTERVAL);
        if events.buckets.len() > 10_000 && sweep_due {
            events.sweep(now, None);
        }
        events.budget(object, reason, now).take(now)
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
        pacing.retain(&HashSet::from(["b".to_string()]));
        assert_eq!(
            pacing.failed("a"),
            Duration::from_secs(5),
            "a was forgotten"
        );
        assert_eq!(pacing.failed("b"), Duration::from_secs(10), "b was kept");
        assert!(lock(&pacing.events).buckets.is_empty());
    }

    #[test]
    fn a_namespace_gets_a_bounded_share_and_its_slots_come_back() {
        let pacing = Pacing::default();
        // Alone, a namespace goes past its share up to the shared limit...
        let held: Vec<_> = (0..IN_FLIGHT_SHARED)
            .map(|n| pacing.enter("a", &format!("a/{n}")).expect("slot"))
            .collect();
        assert!(
            pacing.enter("a", "a/late").is_err(),
            "no more than the shared limit"
        );
        // ...and the slots above it are for namespaces within their share.
        let others: Vec<_> = (0..IN_FLIGHT_PER_NAMESPACE)
            .map(|n| {
                pacing
                    .enter("b", &format!("b/{n}"))
                    .expect("other namespaces are not held up")
            })
            .collect();
        assert!(
            pacing.enter("b", "b/late").is_err(),
            "b is at its share and the shared slots are taken"
        );
        assert!(
            pacing.enter("c", "c/0").is_ok(),
            "a third namespace still gets its share"
        );
        drop(held);
        assert!(pacing.enter("a", "a/late").is_ok());
        drop(others);
        assert!(pacing.enter("b", "b/late").is_ok());
        assert!(lock(&pacing.in_flight).get("a").is_none(), "a at rest");
        assert!(lock(&pacing.in_flight).get("b").is_none(), "b at rest");
    }

    #[test]
    fn keys_turned_away_wait_by_their_place_in_line_and_the_time_a_reconcile_takes() {
        let pacing = Pacing::default();
        let start = Instant::now();
        let mut held: Vec<_> = (0..IN_FLIGHT_SHARED)
            .map(|n| {
                pacing
                    .enter_at("a", &format!("a/{n}"), start)
                    .expect("slot")
            })
            .collect();
        // Not yet measured: the shortest wait for all.
        let early = pacing.enter_at("a", "a/early", start).expect_err("full");
        assert_eq!(early, LINE_MIN_WAIT);
        // Reconciles of 0.1 s: 32 slots finish 320 per second; with the
        // patience a key comes back by itself as if 160 did.
        {
            let mut in_flight = lock(&pacing.in_flight);
            let slots = in_flight.get_mut("a").expect("a");
            slots.finished(Duration::from_millis(100));
            slots.waiting.clear();
            slots.line.clear();
        }
        let waits: Vec<Duration> = (0..12000)
            .map(|n| {
                pacing
                    .enter_at("a", &format!("a/waiting-{n}"), start)
                    .expect_err("the namespace has its share")
            })
            .collect();
        assert_eq!(waits[0], LINE_MIN_WAIT, "the first in line comes back soon");
        assert_eq!(waits[319], Duration::from_secs(2), "320th of 160/s");
        assert_eq!(waits[11999], LINE_MAX_WAIT, "no longer than the bound");
        assert!(waits.windows(2).all(|pair| pair[0] <= pair[1]), "in order");
        // A key asking again is not counted twice.
        assert!(pacing.enter_at("a", "a/waiting-0", start).is_err());
        assert_eq!(lock(&pacing.in_flight)["a"].waiting.len(), 12000);
        assert_eq!(lock(&pacing.in_flight)["a"].line.len(), 12000);
        // Deleted keys leave the line; a key that gets its slot leaves it too.
        let kept: HashSet<String> = (0..720).map(|n| format!("a/waiting-{n}")).collect();
        pacing.retain(&kept);
        drop(held.pop());
        held.push(
            pacing
                .enter_at("a", "a/waiting-0", start)
                .expect("its turn"),
        );
        assert_eq!(lock(&pacing.in_flight)["a"].waiting.len(), 719);
        // Reconciles that take 1 ms: the same line is through in 0.06 s.
        {
            let mut in_flight = lock(&pacing.in_flight);
            let slots = in_flight.get_mut("a").expect("a");
            slots.mean_seconds = None;
            slots.finished(Duration::from_millis(1));
        }
        assert_eq!(
            pacing.enter_at("a", "a/new", start).expect_err("full"),
            LINE_MIN_WAIT
        );
        drop(held);
        pacing.retain(&HashSet::new());
        assert!(lock(&pacing.in_flight).is_empty(), "nothing kept at rest");
    }

    #[test]
    fn a_freed_slot_wakes_the_first_in_line_of_its_namespace_then_of_others() {
        let pacing = Pacing::default();
        let woken = Arc::new(Mutex::new(Vec::<String>::new()));
        let record = woken.clone();
        pacing.set_waker(Box::new(move |object| {
            lock(&record).push(object.to_string())
        }));
        let mut a: Vec<_> = (0..IN_FLIGHT_SHARED - IN_FLIGHT_PER_NAMESPACE)
            .map(|n| pacing.enter("a", &format!("a/{n}")).expect("slot"))
            .collect();
        let b: Vec<_> = (0..IN_FLIGHT_PER_NAMESPACE)
            .map(|n| pacing.enter("b", &format!("b/{n}")).expect("slot"))
            .collect();
        for n in 0..3 {
            assert!(pacing.enter("a", &format!("a/waiting-{n}")).is_err());
        }
        assert!(pacing.enter("b", "b/waiting").is_err());
        // Asking again keeps a key's place.
        assert!(pacing.enter("a", "a/waiting-0").is_err());
        drop(a.pop());
        drop(a.pop());
        assert_eq!(*lock(&woken), ["a/waiting-0", "a/waiting-1"], "in order");
        // The woken key takes the slot; one that got a slot by itself (a
        // timer) is skipped in line.
        a.push(pacing.enter("a", "a/waiting-0").expect("woken"));
        a.push(pacing.enter("a", "a/waiting-2").expect("a free slot"));
        drop(a.pop());
        drop(a.pop());
        assert_eq!(
            *lock(&woken),
            ["a/waiting-0", "a/waiting-1", "b/waiting"],
            "a's line empty, b's next; then no one waits"
        );
        drop(b);
        drop(a);
        assert!(lock(&pacing.in_flight).is_empty(), "nothing kept at rest");
    }

    #[test]
    fn scheduled_rotations_start_at_the_configured_rate() {
        let pacing = Pacing::new(10);
        let start = Instant::now();
        let burst = (0..20).filter(|_| pacing.take_rotation_at(start)).count();
        assert_eq!(burst, 10, "one second's worth at once");
        // Over the next 3 s: 10 per second.
        let later = (1..=300)
            .filter(|tick| pacing.take_rotation_at(start + Duration::from_millis(tick * 10)))
            .count();
        // 30, give or take one for the float sums of 0.1 tokens.
        assert!((29..=30).contains(&later), "{later} in 3 s");
        assert!(
            Pacing::default().take_rotation(),
            "unbounded without a rate"
        );
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
    fn event_budgets_are_forgotten_once_full_again_and_their_table_shrinks() {
        let pacing = Pacing::default();
        let start = Instant::now();
        for n in 0..1000 {
            assert!(pacing.may_publish_at(&format!("APIKey/ns/k{n}"), "KeyIssued", start));
        }
        let mut events = lock(&pacing.events);
        events.sweep(start + EVENT_REFILL / 2, None);
        assert_eq!(
            events.buckets.len(),
            1000,
            "a spent token is remembered until it is back"
        );
        events.sweep(start + EVENT_REFILL, None);
        assert!(events.buckets.is_empty());
        assert!(
            events.buckets.capacity() <= 64,
            "{}",
            events.buckets.capacity()
        );
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
