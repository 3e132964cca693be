//! (5) The rotation storm: N keys whose renewal deadlines all fall within
//! the time it took to mint them, rotated by an operator started with
//! `--rotation-spread W` and `--max-rotations-per-second R`. Measures
//! whether any key rotated late (after its deadline) or in use past its
//! expiry, how the rotations spread over the window, the rotation rate and
//! the operator's request rate against the configured one, and the cost per
//! rotation.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use keymint::api::ApiKey;
use keymint_testenv::OPERATOR_USER;
use kube::api::Api;

use crate::audit::Timeline;
use crate::operator::Operator;
use crate::phases::{OPERATOR_START, PATIENCE, RoundContext, settle};
use crate::results::{RequestRates, Storm};
use crate::stats::{RateSummary, Summary};
use crate::workload::{self, KeyProgress, SecretProgress};
use crate::{Result, cluster};

/// The shortest spread window the storm uses, seconds.
const MIN_WINDOW_SECONDS: u64 = 20;
/// Margin, seconds: after minting before the earliest rotation, and after
/// the last rotation before the first key could rotate a second time.
const MARGIN_SECONDS: f64 = 30.0;

/// The storm's timing, from N, the rate limit and (2)'s mint time M.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StormPlan {
    /// W: max(20 s, ceil(1.5 × N / rate)).
    pub window_seconds: u64,
    /// 2 W: the operator's window is min(spread, renewBefore / 2) = W.
    pub renew_before_seconds: u64,
    /// renewBefore + L, L (creation -> renewal deadline) = 2 W + 2 M + 30 s,
    /// whole seconds. The earliest rotation, L − W = W + 2 M + 30 s after
    /// the first key was created, comes after minting (about M); L ≥ 2 W
    /// keeps the operator's other cap, half of L, from narrowing the window;
    /// and the new keys (the same validFor) rotate again no earlier than
    /// 2 (L − W) after the first creation, 2 M + 30 s − (minting time) after
    /// the last first rotation: the operator settles and the measurement
    /// ends before any key rotates twice.
    pub valid_for_seconds: u64,
}

impl StormPlan {
    pub fn new(n: usize, rate: u32, mint_seconds: f64) -> StormPlan {
        let window =
            ((1.5 * n as f64 / f64::from(rate.max(1))).ceil() as u64).max(MIN_WINDOW_SECONDS);
        let to_deadline =
            (2.0 * window as f64 + 2.0 * mint_seconds.max(0.0) + MARGIN_SECONDS).ceil() as u64;
        StormPlan {
            window_seconds: window,
            renew_before_seconds: 2 * window,
            valid_for_seconds: 2 * window + to_deadline,
        }
    }

    /// From a key's creation to its renewal deadline.
    fn seconds_to_deadline(&self) -> i64 {
        (self.valid_for_seconds - self.renew_before_seconds) as i64
    }

    /// The operator flags that set this plan.
    fn operator_args(&self, rate: u32) -> Vec<String> {
        vec![
            "--max-rotations-per-second".into(),
            rate.to_string(),
            "--rotation-spread".into(),
            format!("{}s", self.window_seconds),
        ]
    }
}

/// (5) The storm, on a fresh operator and namespace. Returns the figures and
/// the WARN/ERROR lines the operator logged.
pub async fn storm(ctx: &RoundContext<'_>, ready_seconds: f64) -> Result<(Storm, usize)> {
    let (n, client, rate) = (ctx.n, ctx.client, ctx.options.storm_rate);
    let plan = StormPlan::new(n, rate, ready_seconds);
    let storm_ns = ctx.namespace("storm");
    cluster::create_namespace(client, &storm_ns).await?;
    let mut operator = Operator::start(
        &ctx.options.keymint,
        ctx.plane,
        &format!("operator-{n}-storm"),
        Some(&storm_ns),
        &plan.operator_args(rate),
    )?;
    operator.wait_ready(OPERATOR_START).await?;
    let mut keys_seen = workload::track_keys(client, &storm_ns);
    let mut secrets_seen = workload::track_secrets(client, &storm_ns);
    keys_seen
        .wait("synced", Duration::from_secs(60), |c| c.synced)
        .await?;
    secrets_seen
        .wait("synced", Duration::from_secs(60), |c| c.synced)
        .await?;
    ctx.progress(&format!(
        "(5) storm: minting {n} keys, validFor {} s, renewBefore {} s; operator spread {} s, {rate} rotations/s",
        plan.valid_for_seconds, plan.renew_before_seconds, plan.window_seconds
    ));
    let keys = Api::<ApiKey>::namespaced(client.clone(), &storm_ns);
    let spec = serde_json::json!({
        "validFor": format!("{}s", plan.valid_for_seconds),
        "renewBefore": format!("{}s", plan.renew_before_seconds),
    });
    let applied = workload::create_all(&keys, n, ctx.options.concurrency, |i| {
        workload::api_key(&storm_ns, i, &spec)
    })
    .await?;
    keys_seen
        .wait("all Ready", PATIENCE, |c| c.ready >= n)
        .await?;
    let mint_seconds = applied.started.elapsed().as_secs_f64();
    let minted_metrics = settle(&operator).await?;
    let earliest_deadline = keys_seen
        .snapshot()
        .values()
        .filter_map(|p| p.first_created_at)
        .map(|created| created.as_second() + plan.seconds_to_deadline())
        .min()
        .ok_or("storm: no key reported its createdAt")?;
    let earliest_rotation =
        Timestamp::from_second(earliest_deadline - plan.window_seconds as i64 + 1)?;
    let minted_before_first_rotation = Timestamp::now() < earliest_rotation;
    if !minted_before_first_rotation {
        ctx.progress("(5) WARNING: minting overran the earliest rotation");
    }
    // Until just before the earliest rotation.
    let until_first =
        earliest_rotation.duration_since(Timestamp::now()) - SignedDuration::from_secs(1);
    if let Ok(wait) = Duration::try_from(until_first) {
        ctx.progress(&format!(
            "(5) minted in {mint_seconds:.1} s; {:.0} s until the earliest rotation",
            wait.as_secs_f64() + 1.0
        ));
        tokio::time::sleep(wait).await;
    }
    let mark = ctx.audit.mark()?;
    let server_before = ctx.server.cpu();
    let before = operator.sample()?;
    let sampler = operator.sampler(Duration::from_millis(200));
    // Without a spread, nothing would move until the first deadline, W later.
    let patience = PATIENCE.max(Duration::from_secs(plan.window_seconds + 30));
    keys_seen
        .wait("all rotated", patience, |c| c.rotated >= n)
        .await?;
    secrets_seen
        .wait("all rotated", patience, |c| c.rotated >= n)
        .await?;
    let rotated_metrics = settle(&operator).await?;
    let rotated_twice = secrets_seen.counts().rotated_twice;
    let mark_end = ctx.audit.mark()?;
    let server_cpu = ctx.server.cpu().since(server_before);
    let after = operator.sample()?;
    let peaks = sampler.stop();
    let rotations = Rotations::of(&plan, &keys_seen.finish(), &secrets_seen.finish());
    let requests = ctx.audit.requests(OPERATOR_USER, mark, mark_end)?;
    let timeline = ctx.audit.per_second(OPERATOR_USER, mark, mark_end)?;
    let object_writes_per_rotation = ctx.per_key(requests.object_writes());
    let event_writes_per_rotation = ctx.per_key(requests.event_writes());
    let storm = Storm {
        rate_limit: rate,
        spread_window_seconds: plan.window_seconds,
        renew_before_seconds: plan.renew_before_seconds,
        valid_for_seconds: plan.valid_for_seconds,
        mint_seconds,
        earliest_rotation_at: earliest_rotation.to_string(),
        minted_before_first_rotation,
        spread_seconds: span(&rotations.seen_at),
        spread_created_at_seconds: span(&rotations.created_at),
        late_by_created_at: rotations.late_by_created_at,
        late_by_watch: rotations.late_by_watch,
        expired_in_use: rotations.expired_in_use,
        headroom_watch: Summary::of(&rotations.headroom_watch),
        headroom_created_at: Summary::of(&rotations.headroom_created_at),
        rotations_per_second: rotations.rate(),
        operator_requests_per_second: rotations.request_rates(&timeline),
        allowed_writes_per_second: f64::from(rate)
            * (object_writes_per_rotation + event_writes_per_rotation),
        rotated_twice,
        object_writes_per_rotation,
        event_writes_per_rotation,
        reads_per_rotation: ctx.per_key(requests.reads()),
        requests,
        cpu_seconds: after.cpu_seconds - before.cpu_seconds,
        peaks,
        server_cpu,
        reconciles_per_key: (rotated_metrics.reconciles - minted_metrics.reconciles) / n as f64,
    };
    ctx.progress(&format!(
        "(5) rotated over {:.1} s (window {} s): {} late, {} expired in use; deadline − rotation min {:.1} s; highest {} rotations in 1 s, {:.1}/s over 10 s (limit {rate}/s)",
        storm.spread_seconds,
        storm.spread_window_seconds,
        storm.late_by_created_at.max(storm.late_by_watch),
        storm.expired_in_use,
        storm.headroom_watch.min,
        storm.rotations_per_second.highest_1s,
        storm.rotations_per_second.highest_10s_per_second,
    ));
    let warnings = operator.warnings();
    operator.kill()?;
    Ok((storm, warnings))
}

/// Each key's rotation against its deadline and expiry.
#[derive(Debug, Default)]
struct Rotations {
    /// Unix seconds (fractional) the Secret was seen rotated.
    seen_at: Vec<f64>,
    /// The new keys' `status.createdAt`, Unix seconds.
    created_at: Vec<f64>,
    headroom_watch: Vec<f64>,
    headroom_created_at: Vec<f64>,
    late_by_created_at: usize,
    late_by_watch: usize,
    expired_in_use: usize,
    /// Rotations per second of `status.createdAt`.
    per_second: BTreeMap<i64, u64>,
}

impl Rotations {
    fn of(
        plan: &StormPlan,
        keys: &HashMap<String, KeyProgress>,
        secrets: &HashMap<String, SecretProgress>,
    ) -> Rotations {
        let mut rotations = Rotations::default();
        for (name, key) in keys {
            let (Some(first_created), Some(rotated_created)) =
                (key.first_created_at, key.rotated_created_at)
            else {
                continue;
            };
            let deadline = first_created.as_second() + plan.seconds_to_deadline();
            let expires = key
                .first_expires_at
                .map(|t| t.as_second())
                .unwrap_or(first_created.as_second() + plan.valid_for_seconds as i64);
            let created = rotated_created.as_second();
            rotations.created_at.push(created as f64);
            rotations
                .headroom_created_at
                .push((deadline - created) as f64);
            *rotations.per_second.entry(created).or_default() += 1;
            rotations.late_by_created_at += usize::from(created > deadline);
            let mut expired = created >= expires;
            if let Some(seen) = secrets.get(name).and_then(|s| s.rotated) {
                let seen_at = seen.wall.as_duration().as_secs_f64();
                rotations.seen_at.push(seen_at);
                rotations.headroom_watch.push(deadline as f64 - seen_at);
                // The operator works in whole seconds: a rotation started in
                // the deadline's second is in time.
                let late_on_watch = seen_at >= (deadline + 1) as f64;
                rotations.late_by_watch += usize::from(late_on_watch);
                expired |= seen_at > expires as f64;
            }
            rotations.expired_in_use += usize::from(expired);
        }
        rotations
    }

    fn seconds(&self) -> (i64, i64) {
        let first = self.per_second.keys().next().copied().unwrap_or(0);
        let last = self.per_second.keys().next_back().copied().unwrap_or(-1);
        (first, last)
    }

    /// Rotations per second from the first rotation's second to the last's.
    fn rate(&self) -> RateSummary {
        let (first, last) = self.seconds();
        RateSummary::of(&self.per_second, first, last)
    }

    /// The operator's requests per second over the same seconds.
    fn request_rates(&self, timeline: &Timeline) -> RequestRates {
        let (first, last) = self.seconds();
        RequestRates {
            all: RateSummary::of(&timeline.all, first, last),
            object_writes: RateSummary::of(&timeline.object_writes, first, last),
            event_writes: RateSummary::of(&timeline.event_writes, first, last),
            reads: RateSummary::of(&timeline.reads, first, last),
        }
    }
}

/// Largest minus smallest (0 when empty).
fn span(values: &[f64]) -> f64 {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.is_empty() { 0.0 } else { max - min }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Stamp;

    #[test]
    fn the_plan_spreads_n_keys_over_one_and_a_half_times_their_rate() {
        let plan = StormPlan::new(10_000, 100, 60.0);
        assert_eq!(plan.window_seconds, 150);
        assert_eq!(plan.renew_before_seconds, 300);
        // L = 2 × 150 + 2 × 60 + 30 = 450.
        assert_eq!(plan.valid_for_seconds, 750);
        assert_eq!(plan.seconds_to_deadline(), 450);
        let small = StormPlan::new(200, 100, 1.3);
        assert_eq!(small.window_seconds, 20);
        // L = 40 + 2.6 + 30 = 72.6, rounded up.
        assert_eq!(small.valid_for_seconds, 40 + 73);
        assert_eq!(
            small.operator_args(100),
            [
                "--max-rotations-per-second",
                "100",
                "--rotation-spread",
                "20s"
            ]
        );
    }

    #[test]
    fn late_and_expired_rotations_are_counted() {
        let plan = StormPlan::new(200, 100, 1.0);
        let to_deadline = plan.seconds_to_deadline();
        let created = 1_900_000_000;
        let at = |s: i64| Timestamp::from_second(s).expect("t");
        let key = |rotated: i64| KeyProgress {
            first_created_at: Some(at(created)),
            first_expires_at: Some(at(created + plan.valid_for_seconds as i64)),
            rotated_created_at: Some(at(rotated)),
            ..Default::default()
        };
        let deadline = created + to_deadline;
        let keys = HashMap::from([
            ("early".to_string(), key(deadline - 10)),
            ("at-deadline".to_string(), key(deadline)),
            ("late".to_string(), key(deadline + 1)),
            (
                "expired".to_string(),
                key(created + plan.valid_for_seconds as i64),
            ),
        ]);
        let seen = |s: f64| SecretProgress {
            rotated: Some(Stamp {
                at: std::time::Instant::now(),
                wall: Timestamp::from_duration(SignedDuration::from_secs_f64(s)).expect("t"),
            }),
            ..Default::default()
        };
        let secrets = HashMap::from([
            ("early".to_string(), seen((deadline - 10) as f64 + 0.3)),
            ("at-deadline".to_string(), seen(deadline as f64 + 0.8)),
        ]);
        let rotations = Rotations::of(&plan, &keys, &secrets);
        assert_eq!(rotations.late_by_created_at, 2);
        assert_eq!(rotations.late_by_watch, 0);
        assert_eq!(rotations.expired_in_use, 1);
        let rate = rotations.rate();
        assert_eq!(rate.total, 4);
        assert_eq!(rate.highest_1s, 1);
        assert!((span(&rotations.seen_at) - 10.5).abs() < 1e-6);
    }
}
