//! Expiry and rotation maths (contract section "Expiry and rotation").
//!
//! Everything works in whole seconds: inputs are truncated to the second
//! (timestamps with [`truncate_to_second`], durations by dropping their
//! sub-second part) and every returned time is a whole second. Sums that
//! would pass the end of jiff's range (year 9999) saturate at the last
//! representable second instead of failing: such a key still expires, just
//! very late.

use std::time::Duration;

use jiff::Timestamp;

/// The expiry-related part of a key resource's spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiryPolicy {
    /// `spec.expiresAt`.
    pub expires_at: Option<Timestamp>,
    /// `spec.validFor`.
    pub valid_for: Option<Duration>,
    /// `spec.renewBefore` (0 when unset).
    pub renew_before: Duration,
    /// `spec.gracePeriod` (0 when unset).
    pub grace_period: Duration,
}

/// The key being replaced, as far as rule 3 needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Predecessor {
    /// When the previous key was minted.
    pub created_at: Timestamp,
    /// When the previous key expires, if it does.
    pub expires_at: Option<Timestamp>,
}

/// Why no expiry could be computed for a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    /// Rule 3 with nothing to go on: `expiresAt` has passed, `validFor` is
    /// unset and there is no predecessor with a positive lifetime to reuse.
    #[error("spec.expiresAt ({expires_at}) is in the past; set a future expiresAt or a validFor")]
    ExpiresAtInPast {
        /// `spec.expiresAt`, truncated to the second.
        expires_at: Timestamp,
    },
    /// `validFor` is shorter than one second, so every key would be expired
    /// on arrival and rotation would never stop.
    #[error("spec.validFor must be at least 1s")]
    ValidForTooShort,
}

/// `t` with its sub-second part dropped (towards the Unix epoch).
pub fn truncate_to_second(t: Timestamp) -> Timestamp {
    at_second(t.as_second())
}

/// Expiry of a key minted at `minted_at` (contract rules 1–4, in order):
///
/// 1. `valid_for` set: `minted_at + valid_for`, but not later than
///    `expires_at` while `expires_at > minted_at`.
/// 2. else `expires_at > minted_at`: `expires_at`.
/// 3. else `expires_at` set (so `<= minted_at`): the predecessor's lifetime
///    again, `minted_at + (prev.expires_at - prev.created_at)`, when the
///    predecessor has an expiry and a positive lifetime.
/// 4. else: `None`, the key never expires.
///
/// A policy that asks for expiry (either field set) never yields `Ok(None)`.
///
/// # Errors
///
/// [`ExpiryError::ExpiresAtInPast`] when rule 3 has no usable predecessor;
/// [`ExpiryError::ValidForTooShort`] when `valid_for` is under one second
/// (the CRD should refuse that at apply time).
pub fn key_expiry(
    minted_at: Timestamp,
    policy: &ExpiryPolicy,
    predecessor: Option<&Predecessor>,
) -> Result<Option<Timestamp>, ExpiryError> {
    let t = minted_at.as_second();
    match apply_rules(t, policy) {
        Rule::Expires(_) if policy.valid_for.is_some_and(|d| d.as_secs() == 0) => {
            Err(ExpiryError::ValidForTooShort)
        }
        Rule::Expires(e) => Ok(Some(at_second(e))),
        Rule::ExpiresAtPassed(expires_at) => {
            let lifetime = predecessor
                .and_then(|p| {
                    let e = p.expires_at?.as_second();
                    Some(e.saturating_sub(p.created_at.as_second()))
                })
                .filter(|&l| l > 0);
            match lifetime {
                Some(l) => Ok(Some(at_second(t.saturating_add(l)))),
                None => Err(ExpiryError::ExpiresAtInPast {
                    expires_at: at_second(expires_at),
                }),
            }
        }
        Rule::Never => Ok(None),
    }
}

/// The current key's expiry after a spec edit: rules 1, 2 and 4 of
/// [`key_expiry`] applied at the key's `created_at`. Rule 3 (`expires_at`
/// set but not after `created_at`, `valid_for` unset) keeps the key's
/// current expiry, `current_expires_at`; if the key had none, the past
/// `expires_at` itself is returned, so the key is due for rotation at once.
///
/// Returns `None` exactly when the policy asks for no expiry.
pub fn recompute_expiry(
    created_at: Timestamp,
    policy: &ExpiryPolicy,
    current_expires_at: Option<Timestamp>,
) -> Option<Timestamp> {
    match apply_rules(created_at.as_second(), policy) {
        Rule::Expires(e) => Some(at_second(e)),
        Rule::ExpiresAtPassed(e) => Some(truncate_to_second(
            current_expires_at.unwrap_or_else(|| at_second(e)),
        )),
        Rule::Never => None,
    }
}

/// When to rotate a key: `expires_at - renew_before` when `renew_before` is
/// shorter than the key's lifetime (`expires_at - created_at`), otherwise
/// `expires_at` (a key whose whole life lies inside the renewal window is
/// rotated at expiry, never in a loop at creation).
///
/// The result is never after `expires_at` and, when
/// `expires_at >= created_at`, never before `created_at`. With inconsistent
/// input (`expires_at < created_at`) it is `expires_at`: rotate now.
pub fn renewal_time(
    created_at: Timestamp,
    expires_at: Timestamp,
    renew_before: Duration,
) -> Timestamp {
    let (c, e) = (created_at.as_second(), expires_at.as_second());
    let lifetime = e.saturating_sub(c);
    let before = secs(renew_before);
    if before < lifetime {
        at_second(e - before)
    } else {
        at_second(e)
    }
}

/// When a key due at `renewal` is rotated, so that keys whose renewal falls
/// in the same second do not all rotate in it: `renewal - offset`, the offset
/// fixed by `seed` (the key's id, so a restart finds the same point) and
/// spread evenly over a window of `spread`, at most half of `renewBefore` and
/// half of the key's time from creation to renewal (so the new key is never
/// due again at once). Whole seconds; never after `renewal`.
///
/// Only a key whose successor gains from an early rotation is moved: one
/// whose lifetime comes from `validFor`. A fixed `expiresAt` still ahead
/// would give the new key the same expiry, so rotating early buys nothing.
pub fn spread_renewal(
    created_at: Timestamp,
    renewal: Timestamp,
    policy: &ExpiryPolicy,
    spread: Duration,
    seed: &str,
) -> Timestamp {
    let fixed_expiry_ahead = policy.expires_at.is_some_and(|e| e > renewal);
    if policy.valid_for.is_none() || fixed_expiry_ahead {
        return renewal;
    }
    let (c, r) = (created_at.as_second(), renewal.as_second());
    let window = secs(spread)
        .min(secs(policy.renew_before) / 2)
        .min(r.saturating_sub(c) / 2);
    if window < 1 {
        return renewal;
    }
    let offset = seed_fraction(seed) * window as f64;
    // In [0, window): the float product is below `window`; the cast truncates.
    at_second(r - (offset as i64).clamp(0, window - 1))
}

/// A number in [0, 1) fixed by `seed`, evenly spread over seeds (the first
/// 53 bits of its SHA-256).
fn seed_fraction(seed: &str) -> f64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(seed.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// When the previous key leaves the Secret after a rotation at
/// `rotated_at`: `rotated_at + grace_period`, or `None` when the grace
/// period is zero (under one second), meaning it is dropped at once.
pub fn grace_ends_at(rotated_at: Timestamp, grace_period: Duration) -> Option<Timestamp> {
    let g = secs(grace_period);
    (g > 0).then(|| at_second(rotated_at.as_second().saturating_add(g)))
}

/// Outcome of rules 1, 2 and 4, with rule 3 left to the caller because
/// minting and recomputing resolve it differently.
enum Rule {
    /// Rules 1 or 2: expires at this second.
    Expires(i64),
    /// Rule 3: `expires_at` (this second) is not after the reference time.
    ExpiresAtPassed(i64),
    /// Rule 4: never expires.
    Never,
}

fn apply_rules(t: i64, policy: &ExpiryPolicy) -> Rule {
    let expires_at = policy.expires_at.map(Timestamp::as_second);
    let future_expires_at = expires_at.filter(|&e| e > t);
    match (policy.valid_for, future_expires_at, expires_at) {
        (Some(valid_for), cap, _) => {
            let e = t.saturating_add(secs(valid_for));
            Rule::Expires(cap.map_or(e, |c| c.min(e)))
        }
        (None, Some(e), _) => Rule::Expires(e),
        (None, None, Some(e)) => Rule::ExpiresAtPassed(e),
        (None, None, None) => Rule::Never,
    }
}

/// Whole seconds of `d`, saturating (the parser caps durations far below).
fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The timestamp at Unix second `s`, clamped into jiff's range.
fn at_second(s: i64) -> Timestamp {
    let lo = Timestamp::MIN.as_second();
    let hi = Timestamp::MAX.as_second();
    // In range after the clamp, so the fallback is unreachable; it keeps the
    // function total without a panic path.
    Timestamp::from_second(s.clamp(lo, hi)).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn spread_policy(valid_for: u64, renew_before: u64) -> ExpiryPolicy {
        ExpiryPolicy {
            valid_for: Some(Duration::from_secs(valid_for)),
            renew_before: Duration::from_secs(renew_before),
            ..Default::default()
        }
    }

    #[test]
    fn renewals_in_the_same_second_are_spread_evenly_over_the_window_before_it() {
        let created = at_second(1_000_000);
        let renewal = at_second(1_000_000 + 30 * DAY as i64);
        let policy = spread_policy(31 * DAY, DAY);
        let spread = Duration::from_secs(600);
        let mut per_minute = [0usize; 10];
        for key in 0..10_000 {
            let at = spread_renewal(created, renewal, &policy, spread, &format!("key{key}"));
            let early = renewal.as_second() - at.as_second();
            assert!(
                (0..600).contains(&early),
                "{early} s early is outside the window"
            );
            per_minute[usize::try_from(early / 60).expect("small")] += 1;
        }
        // 1,000 expected per minute of the window: evenly spread, no clump.
        for count in per_minute {
            assert!(
                (850..1150).contains(&count),
                "uneven spread: {per_minute:?}"
            );
        }
        assert_eq!(
            spread_renewal(created, renewal, &policy, spread, "key1"),
            spread_renewal(created, renewal, &policy, spread, "key1"),
            "the point is fixed by the key"
        );
    }

    #[test]
    fn the_spread_window_is_bounded_by_renew_before_and_the_keys_age() {
        let created = at_second(1_000_000);
        let renewal = at_second(1_000_000 + 100);
        let long = Duration::from_secs(3600);
        for key in 0..500 {
            let seed = format!("k{key}");
            // renewBefore 40 s: at most 20 s early.
            let at = spread_renewal(created, renewal, &spread_policy(140, 40), long, &seed);
            assert!(renewal.as_second() - at.as_second() < 20);
            // Created 100 s before renewal: at most 50 s early, never at creation.
            let at = spread_renewal(created, renewal, &spread_policy(1000, 900), long, &seed);
            assert!(renewal.as_second() - at.as_second() < 50);
            assert!(at > created);
        }
        // No spread configured, or nothing to gain: exactly at renewal.
        let policy = spread_policy(140, 40);
        assert_eq!(
            spread_renewal(created, renewal, &policy, Duration::ZERO, "k"),
            renewal
        );
        let fixed = ExpiryPolicy {
            expires_at: Some(at_second(1_000_000 + 140)),
            ..policy
        };
        assert_eq!(spread_renewal(created, renewal, &fixed, long, "k"), renewal);
        let never = ExpiryPolicy {
            valid_for: None,
            ..policy
        };
        assert_eq!(spread_renewal(created, renewal, &never, long, "k"), renewal);
    }

    const H: u64 = 3600;
    const DAY: u64 = 24 * H;

    /// 2026-01-01T00:00:00Z.
    const T0: i64 = 1_767_225_600;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("test input is valid")
    }

    fn at(offset_secs: i64) -> Timestamp {
        ts(T0 + offset_secs)
    }

    fn d(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn policy(expires_at: Option<i64>, valid_for: Option<u64>) -> ExpiryPolicy {
        ExpiryPolicy {
            expires_at: expires_at.map(at),
            valid_for: valid_for.map(d),
            ..ExpiryPolicy::default()
        }
    }

    fn pred(created: i64, expires: Option<i64>) -> Predecessor {
        Predecessor {
            created_at: at(created),
            expires_at: expires.map(at),
        }
    }

    #[test]
    fn key_expiry_table() {
        let day = DAY as i64;
        // (name, expires_at offset, valid_for, predecessor, expected)
        type Row = (
            &'static str,
            Option<i64>,
            Option<u64>,
            Option<Predecessor>,
            Result<Option<Timestamp>, ExpiryError>,
        );
        let rows: Vec<Row> = vec![
            (
                "rule 1: validFor only",
                None,
                Some(90 * DAY),
                None,
                Ok(Some(at(90 * day))),
            ),
            (
                "rule 1: validFor ends before expiresAt",
                Some(100 * day),
                Some(90 * DAY),
                None,
                Ok(Some(at(90 * day))),
            ),
            (
                "rule 1: validFor longer than time to expiresAt is capped",
                Some(30 * day),
                Some(90 * DAY),
                None,
                Ok(Some(at(30 * day))),
            ),
            (
                "rule 1: validFor equal to time to expiresAt",
                Some(90 * day),
                Some(90 * DAY),
                None,
                Ok(Some(at(90 * day))),
            ),
            (
                "rule 1: expiresAt one second ahead still caps",
                Some(1),
                Some(90 * DAY),
                None,
                Ok(Some(at(1))),
            ),
            (
                "rule 1: expiresAt == mintedAt no longer caps",
                Some(0),
                Some(90 * DAY),
                None,
                Ok(Some(at(90 * day))),
            ),
            (
                "rule 1: expiresAt past no longer caps",
                Some(-day),
                Some(90 * DAY),
                Some(pred(-10 * day, Some(-9 * day))),
                Ok(Some(at(90 * day))),
            ),
            ("rule 1: validFor 1s", None, Some(1), None, Ok(Some(at(1)))),
            (
                "rule 1: validFor 0 refused",
                None,
                Some(0),
                None,
                Err(ExpiryError::ValidForTooShort),
            ),
            (
                "rule 2: expiresAt in the future",
                Some(30 * day),
                None,
                None,
                Ok(Some(at(30 * day))),
            ),
            (
                "rule 2: predecessor ignored",
                Some(30 * day),
                None,
                Some(pred(-day, Some(0))),
                Ok(Some(at(30 * day))),
            ),
            (
                "rule 3: expiresAt == mintedAt reuses predecessor lifetime",
                Some(0),
                None,
                Some(pred(-30 * day, Some(0))),
                Ok(Some(at(30 * day))),
            ),
            (
                "rule 3: expiresAt past reuses predecessor lifetime",
                Some(-5 * day),
                None,
                Some(pred(-12 * day, Some(-2 * day))),
                Ok(Some(at(10 * day))),
            ),
            (
                "rule 3: no predecessor",
                Some(-day),
                None,
                None,
                Err(ExpiryError::ExpiresAtInPast {
                    expires_at: at(-day),
                }),
            ),
            (
                "rule 3: predecessor never expired",
                Some(-day),
                None,
                Some(pred(-10 * day, None)),
                Err(ExpiryError::ExpiresAtInPast {
                    expires_at: at(-day),
                }),
            ),
            (
                "rule 3: predecessor with zero lifetime",
                Some(-day),
                None,
                Some(pred(-10 * day, Some(-10 * day))),
                Err(ExpiryError::ExpiresAtInPast {
                    expires_at: at(-day),
                }),
            ),
            (
                "rule 3: predecessor with negative lifetime",
                Some(0),
                None,
                Some(pred(-10 * day, Some(-11 * day))),
                Err(ExpiryError::ExpiresAtInPast { expires_at: at(0) }),
            ),
            ("rule 4: nothing set", None, None, None, Ok(None)),
            (
                "rule 4: predecessor ignored",
                None,
                None,
                Some(pred(-day, Some(0))),
                Ok(None),
            ),
        ];
        for (name, expires_at, valid_for, predecessor, want) in rows {
            let got = key_expiry(at(0), &policy(expires_at, valid_for), predecessor.as_ref());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn key_expiry_truncates_to_seconds() {
        let minted = Timestamp::new(T0, 999_999_999).expect("test input is valid");
        let p = ExpiryPolicy {
            valid_for: Some(Duration::from_millis(90_500)),
            ..ExpiryPolicy::default()
        };
        assert_eq!(key_expiry(minted, &p, None), Ok(Some(at(90))));
        let sub_second = ExpiryPolicy {
            valid_for: Some(Duration::from_millis(999)),
            ..ExpiryPolicy::default()
        };
        assert_eq!(
            key_expiry(minted, &sub_second, None),
            Err(ExpiryError::ValidForTooShort)
        );
        let p = ExpiryPolicy {
            expires_at: Some(Timestamp::new(T0 + 10, 500_000_000).expect("test input is valid")),
            ..ExpiryPolicy::default()
        };
        assert_eq!(key_expiry(minted, &p, None), Ok(Some(at(10))));
    }

    #[test]
    fn key_expiry_saturates_at_end_of_time() {
        let p = policy(None, Some(876_000 * H));
        let minted = Timestamp::MAX;
        let got = key_expiry(minted, &p, None)
            .expect("test input is valid")
            .expect("test input is valid");
        assert_eq!(got, truncate_to_second(Timestamp::MAX));
    }

    #[test]
    fn expires_at_in_past_message() {
        let err = key_expiry(at(0), &policy(Some(-1), None), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.expiresAt (2025-12-31T23:59:59Z) is in the past; set a future expiresAt or a validFor"
        );
    }

    #[test]
    fn recompute_expiry_table() {
        let day = DAY as i64;
        // (name, expires_at offset, valid_for, current expiry, expected)
        type Row = (
            &'static str,
            Option<i64>,
            Option<u64>,
            Option<i64>,
            Option<i64>,
        );
        let rows: Vec<Row> = vec![
            (
                "rule 1 from createdAt",
                None,
                Some(30 * DAY),
                Some(90 * day),
                Some(30 * day),
            ),
            (
                "rule 1 capped",
                Some(10 * day),
                Some(30 * DAY),
                Some(90 * day),
                Some(10 * day),
            ),
            (
                "rule 1 with expiresAt past",
                Some(-day),
                Some(30 * DAY),
                None,
                Some(30 * day),
            ),
            ("rule 1 validFor 0", None, Some(0), Some(90 * day), Some(0)),
            ("rule 2", Some(10 * day), None, None, Some(10 * day)),
            (
                "rule 2 expiresAt passed since creation",
                Some(5),
                None,
                Some(90 * day),
                Some(5),
            ),
            (
                "rule 3 keeps current",
                Some(-day),
                None,
                Some(90 * day),
                Some(90 * day),
            ),
            (
                "rule 3 at createdAt keeps current",
                Some(0),
                None,
                Some(7 * day),
                Some(7 * day),
            ),
            (
                "rule 3 without current expiry",
                Some(-day),
                None,
                None,
                Some(-day),
            ),
            ("rule 4 drops expiry", None, None, Some(90 * day), None),
            ("rule 4 stays none", None, None, None, None),
        ];
        for (name, expires_at, valid_for, current, want) in rows {
            let got = recompute_expiry(at(0), &policy(expires_at, valid_for), current.map(at));
            assert_eq!(got, want.map(at), "{name}");
        }
    }

    #[test]
    fn renewal_time_table() {
        let day = DAY as i64;
        // (name, created, expires, renew_before, expected)
        let rows: Vec<(&str, i64, i64, u64, i64)> = vec![
            ("renewBefore 0 rotates at expiry", 0, 90 * day, 0, 90 * day),
            (
                "renewBefore inside lifetime",
                0,
                90 * day,
                10 * DAY,
                80 * day,
            ),
            (
                "renewBefore one second short of lifetime",
                0,
                90 * day,
                90 * DAY - 1,
                1,
            ),
            (
                "renewBefore == lifetime rotates at expiry",
                0,
                90 * day,
                90 * DAY,
                90 * day,
            ),
            (
                "renewBefore > lifetime rotates at expiry",
                0,
                90 * day,
                100 * DAY,
                90 * day,
            ),
            ("zero lifetime", 0, 0, 0, 0),
            ("inconsistent input: expiry before creation", 0, -5, 1, -5),
        ];
        for (name, created, expires, before, want) in rows {
            let got = renewal_time(at(created), at(expires), d(before));
            assert_eq!(got, at(want), "{name}");
        }
    }

    #[test]
    fn renewal_time_truncates() {
        let created = Timestamp::new(T0, 700_000_000).expect("test input is valid");
        let expires = Timestamp::new(T0 + 100, 300_000_000).expect("test input is valid");
        assert_eq!(
            renewal_time(created, expires, Duration::from_millis(10_900)),
            at(90)
        );
    }

    #[test]
    fn grace_ends_at_table() {
        assert_eq!(grace_ends_at(at(0), Duration::ZERO), None);
        assert_eq!(grace_ends_at(at(0), Duration::from_millis(999)), None);
        assert_eq!(grace_ends_at(at(0), d(H)), Some(at(3600)));
        assert_eq!(
            grace_ends_at(
                Timestamp::new(T0, 500_000_000).expect("test input is valid"),
                d(60)
            ),
            Some(at(60))
        );
        assert_eq!(
            grace_ends_at(Timestamp::MAX, d(60)),
            Some(truncate_to_second(Timestamp::MAX))
        );
    }

    #[test]
    fn truncate_to_second_table() {
        assert_eq!(
            truncate_to_second(Timestamp::new(T0, 999_999_999).expect("test input is valid")),
            at(0)
        );
        assert_eq!(truncate_to_second(at(0)), at(0));
        assert_eq!(truncate_to_second(Timestamp::MAX).subsec_nanosecond(), 0);
        assert_eq!(truncate_to_second(Timestamp::MIN).subsec_nanosecond(), 0);
    }

    /// Seconds from 1970 to about 2100, so sums stay well inside jiff's range.
    fn time() -> impl Strategy<Value = i64> {
        0i64..4_102_444_800
    }

    fn dur() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (0u64..=876_000 * H).prop_map(Duration::from_secs),
            (0u64..=100_000_000_000).prop_map(Duration::from_millis),
            Just(Duration::ZERO),
        ]
    }

    fn any_policy() -> impl Strategy<Value = ExpiryPolicy> {
        (
            prop::option::of(time()),
            prop::option::of(dur()),
            dur(),
            dur(),
        )
            .prop_map(|(e, v, r, g)| ExpiryPolicy {
                expires_at: e.map(ts),
                valid_for: v,
                renew_before: r,
                grace_period: g,
            })
    }

    fn any_predecessor() -> impl Strategy<Value = Option<Predecessor>> {
        prop::option::of(
            (time(), prop::option::of(time())).prop_map(|(c, e)| Predecessor {
                created_at: ts(c),
                expires_at: e.map(ts),
            }),
        )
    }

    proptest! {
        /// (a) Never after expiresAt while expiresAt is after mintedAt.
        #[test]
        fn expiry_never_after_future_expires_at(
            minted in time(),
            policy in any_policy(),
            predecessor in any_predecessor(),
        ) {
            let minted = ts(minted);
            if let (Some(cap), Ok(Some(e))) =
                (policy.expires_at, key_expiry(minted, &policy, predecessor.as_ref()))
                && cap > minted
            {
                prop_assert!(e <= cap);
            }
        }

        /// (b) A policy asking for expiry never yields a key that never
        /// expires; errors happen only in the documented cases.
        #[test]
        fn expiry_policy_never_yields_none(
            minted in time(),
            policy in any_policy(),
            predecessor in any_predecessor(),
        ) {
            prop_assume!(policy.expires_at.is_some() || policy.valid_for.is_some());
            let minted = ts(minted);
            match key_expiry(minted, &policy, predecessor.as_ref()) {
                Ok(Some(e)) => {
                    prop_assert!(e >= minted);
                    prop_assert_eq!(e.subsec_nanosecond(), 0);
                }
                Ok(None) => prop_assert!(false, "expiring policy yielded no expiry"),
                Err(ExpiryError::ValidForTooShort) => {
                    prop_assert!(policy.valid_for.is_some_and(|d| d.as_secs() == 0));
                }
                Err(ExpiryError::ExpiresAtInPast { .. }) => {
                    prop_assert!(policy.valid_for.is_none());
                    prop_assert!(policy.expires_at.is_some_and(|e| e <= minted));
                }
            }
        }

        /// Rule 4 is the only way to get no expiry.
        #[test]
        fn no_expiry_policy_yields_none(minted in time(), predecessor in any_predecessor()) {
            let p = ExpiryPolicy::default();
            prop_assert_eq!(key_expiry(ts(minted), &p, predecessor.as_ref()), Ok(None));
        }

        /// (c) The renewal time lies within the key's life.
        #[test]
        fn renewal_within_life(created in time(), lifetime in 0i64..4_000_000_000, before in dur()) {
            let created = ts(created);
            let expires = ts(created.as_second() + lifetime);
            let r = renewal_time(created, expires, before);
            prop_assert!(r <= expires);
            prop_assert!(r >= created);
            prop_assert_eq!(r.subsec_nanosecond(), 0);
            // Rotation happens strictly after creation whenever the key lives
            // at all, so a fresh key is never immediately due.
            if lifetime > 0 {
                prop_assert!(r > created);
            }
        }

        /// (d) Recomputing with an expiring policy never drops the expiry,
        /// and it agrees with minting for rules 1 and 2.
        #[test]
        fn recompute_keeps_expiry(
            created in time(),
            policy in any_policy(),
            current in prop::option::of(time()),
        ) {
            let created = ts(created);
            let got = recompute_expiry(created, &policy, current.map(ts));
            if policy.expires_at.is_some() || policy.valid_for.is_some() {
                prop_assert!(got.is_some());
            } else {
                prop_assert_eq!(got, None);
            }
            if let Ok(minted) = key_expiry(created, &policy, None) {
                prop_assert_eq!(got, minted);
            }
        }
    }
}
