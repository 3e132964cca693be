//! What to do with a resource's key right now: mint, rotate, reschedule,
//! drop the previous key, or nothing. A pure function of the recorded state,
//! the wanted state and the time, so every rule is table-tested without a
//! cluster; the controller only carries the decision out.

use jiff::Timestamp;

use super::schedule::{
    ExpiryError, ExpiryPolicy, Predecessor, grace_ends_at, key_expiry, recompute_expiry,
    renewal_time, spread_renewal,
};

/// The state of the current key as recorded next to it (the Secret's
/// annotations). Everything the controller needs survives a restart here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: String,
    pub sha256: String,
    pub created_at: Timestamp,
    /// When the key state last changed (mint, rotation, rescheduling).
    pub updated_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub previous: Option<PreviousKey>,
    pub rotations: u64,
    /// The last `keymint.dev/rotate-request` value acted on.
    pub rotate_request: Option<String>,
    /// UID of the object the key is bound to (a ServiceAccount), if any.
    pub bound_uid: Option<String>,
    /// The last `keymint.dev/compromised` value acted on.
    pub compromise: Option<String>,
}

/// A rotated-out key kept during its grace period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousKey {
    pub id: String,
    /// When the previous key is removed.
    pub until: Timestamp,
}

/// What the controller found where the key should be.
// One short-lived value per reconcile: boxing the record would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// No Secret (never created, or deleted by someone).
    Missing,
    /// Our Secret, but its record does not verify (someone edited it): nothing
    /// in it is trusted. `rotations` is the count the status last published.
    Untrusted { rotations: u64 },
    /// Our Secret, with its record and the SHA-256 of the key it actually holds.
    Present {
        record: KeyRecord,
        actual_sha256: Option<String>,
    },
}

/// What the resource asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub policy: ExpiryPolicy,
    pub rotate_request: Option<String>,
    pub bound_uid: Option<String>,
    /// The `keymint.dev/compromised` value (recorded form), if set.
    pub compromise: Option<String>,
    /// The resource's status says a key was issued before (so a missing
    /// Secret means the key was lost, not that this is the first mint).
    pub issued_before: bool,
    /// Every workload holding the key runs the current key (see
    /// `crate::rollout`): the previous key goes now, before its grace period
    /// ends.
    pub previous_released: bool,
    /// Scheduled rotations are spread over up to this long before their
    /// renewal time (see [`crate::keys::spread_renewal`]).
    pub rotation_spread: std::time::Duration,
}

/// Why a brand-new key (with no predecessor kept) is minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MintReason {
    /// The first key for this resource.
    Initial,
    /// The Secret was deleted: the key cannot be recovered.
    SecretLost,
    /// The Secret's key no longer matches its recorded SHA-256.
    KeyTampered,
    /// The bound object was re-created (new UID): the identity changed.
    BindingChanged,
}

/// Why the key is rotated (the old key kept for the grace period).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateReason {
    /// `expiresAt - renewBefore` was reached.
    Scheduled,
    /// The `keymint.dev/rotate-request` annotation changed.
    Requested,
    /// The `keymint.dev/compromised` annotation changed: no grace period.
    Compromised,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Mint(MintReason),
    Rotate(RotateReason),
    /// The spec's expiry changed: the current key's expiry is recomputed (and
    /// an expired grace period may end at the same time).
    Reschedule,
    /// The previous key's grace period ended.
    DropPrevious,
    /// Up to date: nothing to write.
    None,
}

/// A freshly minted key's public facts (the token itself stays with the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    pub id: String,
    pub sha256: String,
}

/// The decision and the record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub change: Change,
    pub record: KeyRecord,
    /// When to look again (rotation or end of grace period), if ever.
    pub wake_at: Option<Timestamp>,
}

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError<E: std::error::Error + 'static> {
    /// The spec asks for an expiry that cannot be given (reported as InvalidSpec).
    #[error(transparent)]
    Expiry(#[from] ExpiryError),
    /// Minting the new key failed.
    #[error("cannot mint a key: {0}")]
    Mint(#[source] E),
}

/// Decides what to do at `now`. `mint` is called exactly once when, and only
/// when, the plan needs a new key.
pub fn plan<E: std::error::Error + 'static>(
    now: Timestamp,
    observed: &Observed,
    wanted: &Wanted,
    mint: impl FnOnce() -> Result<NewKey, E>,
) -> Result<Plan, PlanError<E>> {
    let (change, record) = match observed {
        Observed::Missing => {
            let reason = if wanted.issued_before {
                MintReason::SecretLost
            } else {
                MintReason::Initial
            };
            (
                Change::Mint(reason),
                fresh_record(now, wanted, None, 0, mint)?,
            )
        }
        Observed::Untrusted { rotations } => (
            Change::Mint(MintReason::KeyTampered),
            fresh_record(now, wanted, None, *rotations, mint)?,
        ),
        Observed::Present {
            record,
            actual_sha256,
        } => {
            if actual_sha256.as_deref() != Some(record.sha256.as_str()) {
                (
                    Change::Mint(MintReason::KeyTampered),
                    fresh_record(now, wanted, Some(record), record.rotations, mint)?,
                )
            } else if wanted.bound_uid.is_some() && wanted.bound_uid != record.bound_uid {
                (
                    Change::Mint(MintReason::BindingChanged),
                    fresh_record(now, wanted, Some(record), record.rotations, mint)?,
                )
            } else if wanted.compromise.is_some() && wanted.compromise != record.compromise {
                let mut rotated = rotated_record(now, wanted, record, mint)?;
                // A leaked key is not kept for consumers to roll over.
                rotated.previous = None;
                (Change::Rotate(RotateReason::Compromised), rotated)
            } else if wanted.rotate_request.is_some()
                && wanted.rotate_request != record.rotate_request
            {
                (
                    Change::Rotate(RotateReason::Requested),
                    rotated_record(now, wanted, record, mint)?,
                )
            } else {
                // The expiry under the current spec decides whether the key is due:
                // an edit can move it into the past.
                let (change, current) = maintained(now, wanted, record);
                if is_due(now, &current, wanted) {
                    (
                        Change::Rotate(RotateReason::Scheduled),
                        rotated_record(now, wanted, &current, mint)?,
                    )
                } else {
                    (change, current)
                }
            }
        }
    };
    let wake_at = wake_at(&record, wanted);
    Ok(Plan {
        change,
        record,
        wake_at,
    })
}

/// When the key in `record` is due for rotation under `policy`, if ever.
pub fn rotation_time(record: &KeyRecord, policy: &ExpiryPolicy) -> Option<Timestamp> {
    record
        .expires_at
        .map(|expires_at| renewal_time(record.created_at, expires_at, policy.renew_before))
}

/// When the key in `record` is rotated: its renewal time, brought forward
/// by the spread (keys renewing in the same second rotate over a window
/// before it).
pub fn planned_rotation(record: &KeyRecord, wanted: &Wanted) -> Option<Timestamp> {
    rotation_time(record, &wanted.policy).map(|renewal| {
        spread_renewal(
            record.created_at,
            renewal,
            &wanted.policy,
            wanted.rotation_spread,
            &record.id,
        )
    })
}

fn is_due(now: Timestamp, record: &KeyRecord, wanted: &Wanted) -> bool {
    planned_rotation(record, wanted).is_some_and(|due| due <= now)
}

fn wake_at(record: &KeyRecord, wanted: &Wanted) -> Option<Timestamp> {
    let grace_end = record.previous.as_ref().map(|previous| previous.until);
    [planned_rotation(record, wanted), grace_end]
        .into_iter()
        .flatten()
        .min()
}

/// A new key with no predecessor kept in the Secret. Its expiry may still
/// follow the replaced key's lifetime (rule 3 of the contract).
fn fresh_record<E: std::error::Error + 'static>(
    now: Timestamp,
    wanted: &Wanted,
    replaced: Option<&KeyRecord>,
    rotations: u64,
    mint: impl FnOnce() -> Result<NewKey, E>,
) -> Result<KeyRecord, PlanError<E>> {
    let predecessor = replaced.map(|record| Predecessor {
        created_at: record.created_at,
        expires_at: record.expires_at,
    });
    let expires_at = key_expiry(now, &wanted.policy, predecessor.as_ref())?;
    let key = mint().map_err(PlanError::Mint)?;
    Ok(KeyRecord {
        id: key.id,
        sha256: key.sha256,
        created_at: now,
        updated_at: now,
        expires_at,
        previous: None,
        rotations,
        rotate_request: wanted.rotate_request.clone(),
        bound_uid: wanted.bound_uid.clone(),
        // A fresh key answers any pending compromise mark.
        compromise: wanted.compromise.clone(),
    })
}

fn rotated_record<E: std::error::Error + 'static>(
    now: Timestamp,
    wanted: &Wanted,
    current: &KeyRecord,
    mint: impl FnOnce() -> Result<NewKey, E>,
) -> Result<KeyRecord, PlanError<E>> {
    let predecessor = Predecessor {
        created_at: current.created_at,
        expires_at: current.expires_at,
    };
    let expires_at = key_expiry(now, &wanted.policy, Some(&predecessor))?;
    let key = mint().map_err(PlanError::Mint)?;
    Ok(KeyRecord {
        id: key.id,
        sha256: key.sha256,
        created_at: now,
        updated_at: now,
        expires_at,
        previous: grace_ends_at(now, wanted.policy.grace_period).map(|until| PreviousKey {
            id: current.id.clone(),
            until,
        }),
        rotations: current.rotations.saturating_add(1),
        rotate_request: wanted.rotate_request.clone(),
        bound_uid: current.bound_uid.clone(),
        compromise: wanted.compromise.clone(),
    })
}

/// No new key: recompute the expiry from the spec and end a finished grace period.
fn maintained(now: Timestamp, wanted: &Wanted, current: &KeyRecord) -> (Change, KeyRecord) {
    let mut record = current.clone();
    let expires_at = recompute_expiry(current.created_at, &wanted.policy, current.expires_at);
    let rescheduled = expires_at != current.expires_at;
    let grace_over = current
        .previous
        .as_ref()
        .is_some_and(|previous| previous.until <= now || wanted.previous_released);
    if grace_over {
        record.previous = None;
    }
    if rescheduled {
        record.expires_at = expires_at;
        record.updated_at = now;
    }
    let change = match (rescheduled, grace_over) {
        (true, _) => Change::Reschedule,
        (false, true) => Change::DropPrevious,
        (false, false) => Change::None,
    };
    (change, record)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("valid timestamp")
    }

    fn policy(valid_for: Option<u64>, renew_before: u64, grace: u64) -> ExpiryPolicy {
        ExpiryPolicy {
            expires_at: None,
            valid_for: valid_for.map(Duration::from_secs),
            renew_before: Duration::from_secs(renew_before),
            grace_period: Duration::from_secs(grace),
        }
    }

    fn wanted(policy: ExpiryPolicy) -> Wanted {
        Wanted {
            policy,
            rotate_request: None,
            bound_uid: None,
            issued_before: false,
            previous_released: false,
            compromise: None,
            rotation_spread: Duration::ZERO,
        }
    }

    fn record(created: i64, expires: Option<i64>) -> KeyRecord {
        KeyRecord {
            id: "OLD".into(),
            sha256: "aa".into(),
            created_at: at(created),
            updated_at: at(created),
            expires_at: expires.map(at),
            previous: None,
            rotations: 3,
            rotate_request: None,
            bound_uid: None,
            compromise: None,
        }
    }

    fn present(record: KeyRecord) -> Observed {
        let actual_sha256 = Some(record.sha256.clone());
        Observed::Present {
            record,
            actual_sha256,
        }
    }

    fn new_key() -> Result<NewKey, std::fmt::Error> {
        Ok(NewKey {
            id: "NEW".into(),
            sha256: "bb".into(),
        })
    }

    fn no_mint() -> Result<NewKey, std::fmt::Error> {
        panic!("this plan must not mint")
    }

    /// The plan at `now` for `current` under `policy`.
    fn planned(
        now: Timestamp,
        current: KeyRecord,
        policy: ExpiryPolicy,
        mint: fn() -> Result<NewKey, std::fmt::Error>,
    ) -> Plan {
        plan(now, &present(current), &wanted(policy), mint).expect("plan")
    }

    #[test]
    fn first_key_is_minted_with_its_expiry_and_wake_up() {
        let plan = plan(
            at(0),
            &Observed::Missing,
            &wanted(policy(Some(100), 10, 0)),
            new_key,
        )
        .expect("plan");
        assert_eq!(plan.change, Change::Mint(MintReason::Initial));
        assert_eq!(plan.record.id, "NEW");
        assert_eq!(plan.record.expires_at, Some(at(100)));
        assert_eq!(plan.record.rotations, 0);
        assert_eq!(plan.wake_at, Some(at(90)));
    }

    #[test]
    fn a_compromise_mark_rotates_once_with_no_grace_period() {
        let mut wanted = wanted(policy(Some(100), 10, 3600));
        wanted.compromise = Some("incident-7".into());
        let leaked = record(0, Some(100));
        let plan = plan(at(5), &present(leaked.clone()), &wanted, new_key).expect("plan");
        assert_eq!(plan.change, Change::Rotate(RotateReason::Compromised));
        assert_eq!(plan.record.id, "NEW");
        assert_eq!(
            plan.record.previous, None,
            "the leaked key is not kept for a grace period"
        );
        assert_eq!(plan.record.compromise.as_deref(), Some("incident-7"));
        assert_eq!(plan.record.rotations, leaked.rotations + 1);
        // The same mark again: nothing more.
        let again = plan_again(at(6), plan.record.clone(), &wanted);
        assert_eq!(again.change, Change::None);
        // A new mark: once more.
        let mut next = wanted.clone();
        next.compromise = Some("incident-8".into());
        let next_plan = plan_with(at(7), plan.record, &next);
        assert_eq!(next_plan.change, Change::Rotate(RotateReason::Compromised));
    }

    fn plan_again(now: Timestamp, current: KeyRecord, wanted: &Wanted) -> Plan {
        plan(now, &present(current), wanted, no_mint).expect("plan")
    }

    fn plan_with(now: Timestamp, current: KeyRecord, wanted: &Wanted) -> Plan {
        plan(now, &present(current), wanted, new_key).expect("plan")
    }

    #[test]
    fn a_missing_secret_after_issuing_is_a_lost_key() {
        let mut wanted = wanted(policy(None, 0, 0));
        wanted.issued_before = true;
        let plan = plan(at(0), &Observed::Missing, &wanted, new_key).expect("plan");
        assert_eq!(plan.change, Change::Mint(MintReason::SecretLost));
        assert_eq!(plan.wake_at, None);
    }

    #[test]
    fn an_up_to_date_key_changes_nothing() {
        let current = record(0, Some(100));
        let plan = planned(at(50), current.clone(), policy(Some(100), 10, 0), no_mint);
        assert_eq!(plan.change, Change::None);
        assert_eq!(plan.record, current);
        assert_eq!(plan.wake_at, Some(at(90)));
    }

    #[test]
    fn rotation_happens_at_expiry_minus_renew_before() {
        let current = record(0, Some(100));
        let before = planned(at(89), current.clone(), policy(Some(100), 10, 30), no_mint);
        assert_eq!(before.change, Change::None);
        let plan = planned(at(90), current, policy(Some(100), 10, 30), new_key);
        assert_eq!(plan.change, Change::Rotate(RotateReason::Scheduled));
        assert_eq!(plan.record.id, "NEW");
        assert_eq!(plan.record.rotations, 4);
        assert_eq!(plan.record.expires_at, Some(at(190)));
        assert_eq!(
            plan.record.previous,
            Some(PreviousKey {
                id: "OLD".into(),
                until: at(120)
            })
        );
        assert_eq!(
            plan.wake_at,
            Some(at(120)),
            "wakes first to end the grace period"
        );
    }

    #[test]
    fn a_spread_rotation_happens_at_its_point_before_renewal_and_wakes_for_it() {
        let current = record(0, Some(1000));
        let wanted = Wanted {
            rotation_spread: Duration::from_secs(60),
            ..wanted(policy(Some(1000), 200, 0))
        };
        let point = planned_rotation(&current, &wanted).expect("rotates");
        let early = at(800).as_second() - point.as_second();
        assert!((0..60).contains(&early), "{early} s before renewal at 800");
        let observed = present(current.clone());
        let second = |s: i64| Timestamp::from_second(s).expect("in range");
        let before =
            plan(second(point.as_second() - 1), &observed, &wanted, no_mint).expect("plan");
        assert_eq!(before.change, Change::None);
        assert_eq!(before.wake_at, Some(point), "wakes at the spread point");
        let at_point = plan(point, &observed, &wanted, new_key).expect("plan");
        assert_eq!(at_point.change, Change::Rotate(RotateReason::Scheduled));
        assert_eq!(
            at_point.record.expires_at,
            Some(second(point.as_second() + 1000)),
            "the new key gets its full validFor"
        );
    }

    #[test]
    fn without_grace_period_no_previous_key_is_kept() {
        let plan = planned(
            at(100),
            record(0, Some(100)),
            policy(Some(100), 0, 0),
            new_key,
        );
        assert_eq!(plan.change, Change::Rotate(RotateReason::Scheduled));
        assert_eq!(plan.record.previous, None);
    }

    #[test]
    fn the_grace_period_ends_without_a_new_key() {
        let mut current = record(0, Some(1000));
        current.previous = Some(PreviousKey {
            id: "PREV".into(),
            until: at(30),
        });
        let during = planned(at(29), current.clone(), policy(Some(1000), 0, 30), no_mint);
        assert_eq!(during.change, Change::None);
        assert_eq!(during.wake_at, Some(at(30)));
        let after = planned(at(30), current, policy(Some(1000), 0, 30), no_mint);
        assert_eq!(after.change, Change::DropPrevious);
        assert_eq!(after.record.previous, None);
        assert_eq!(after.record.id, "OLD");
        assert_eq!(after.wake_at, Some(at(1000)));
    }

    #[test]
    fn the_previous_key_goes_early_once_every_holder_runs_the_new_key() {
        let mut current = record(0, Some(1000));
        current.previous = Some(PreviousKey {
            id: "PREV".into(),
            until: at(300),
        });
        let mut wanted = wanted(policy(Some(1000), 0, 300));
        wanted.previous_released = true;
        let released = plan(at(20), &present(current.clone()), &wanted, no_mint).expect("plan");
        assert_eq!(released.change, Change::DropPrevious);
        assert_eq!(released.record.previous, None);
        assert_eq!(released.record.id, "OLD");
        // Released or not, a key that is due still rotates (and keeps its
        // predecessor for the new holders' rollout).
        let due = plan(at(1000), &present(current), &wanted, new_key).expect("plan");
        assert_eq!(due.change, Change::Rotate(RotateReason::Scheduled));
        assert!(due.record.previous.is_some());
    }

    #[test]
    fn a_rotate_request_rotates_once() {
        let mut wanted = wanted(policy(None, 0, 0));
        wanted.rotate_request = Some("2026-11-23".into());
        let first = plan(at(5), &present(record(0, None)), &wanted, new_key).expect("plan");
        assert_eq!(first.change, Change::Rotate(RotateReason::Requested));
        assert_eq!(first.record.rotate_request.as_deref(), Some("2026-11-23"));
        let again = plan(at(6), &present(first.record.clone()), &wanted, no_mint).expect("plan");
        assert_eq!(again.change, Change::None);
    }

    #[test]
    fn a_rotate_request_present_at_first_mint_is_taken_as_handled() {
        let mut wanted = wanted(policy(None, 0, 0));
        wanted.rotate_request = Some("x".into());
        let first = plan(at(0), &Observed::Missing, &wanted, new_key).expect("plan");
        let again = plan(at(1), &present(first.record), &wanted, no_mint).expect("plan");
        assert_eq!(again.change, Change::None);
    }

    #[test]
    fn editing_valid_for_reschedules_without_minting() {
        let current = record(0, Some(100));
        let plan = planned(at(10), current, policy(Some(500), 0, 0), no_mint);
        assert_eq!(plan.change, Change::Reschedule);
        assert_eq!(plan.record.id, "OLD");
        assert_eq!(plan.record.expires_at, Some(at(500)));
        assert_eq!(plan.record.updated_at, at(10));
        assert_eq!(plan.wake_at, Some(at(500)));
    }

    #[test]
    fn shortening_the_lifetime_into_the_past_rotates() {
        let plan = planned(
            at(50),
            record(0, Some(100)),
            policy(Some(20), 0, 0),
            new_key,
        );
        assert_eq!(plan.change, Change::Rotate(RotateReason::Scheduled));
        assert_eq!(plan.record.expires_at, Some(at(70)));
    }

    #[test]
    fn a_tampered_key_is_replaced() {
        let current = record(0, Some(100));
        let observed = Observed::Present {
            record: current,
            actual_sha256: Some("ff".into()),
        };
        let plan =
            plan(at(10), &observed, &wanted(policy(Some(100), 0, 0)), new_key).expect("plan");
        assert_eq!(plan.change, Change::Mint(MintReason::KeyTampered));
        assert_eq!(
            plan.record.previous, None,
            "a tampered key is never kept as previous"
        );
        assert_eq!(plan.record.rotations, 3);
    }

    #[test]
    fn a_deleted_key_value_is_replaced() {
        let observed = Observed::Present {
            record: record(0, None),
            actual_sha256: None,
        };
        let plan = plan(at(10), &observed, &wanted(policy(None, 0, 0)), new_key).expect("plan");
        assert_eq!(plan.change, Change::Mint(MintReason::KeyTampered));
    }

    #[test]
    fn a_recreated_binding_mints_a_new_key() {
        let mut current = record(0, None);
        current.bound_uid = Some("uid-1".into());
        let mut wanted = wanted(policy(None, 0, 0));
        wanted.bound_uid = Some("uid-2".into());
        let plan = plan(at(10), &present(current), &wanted, new_key).expect("plan");
        assert_eq!(plan.change, Change::Mint(MintReason::BindingChanged));
        assert_eq!(plan.record.bound_uid.as_deref(), Some("uid-2"));
    }

    #[test]
    fn an_expires_at_in_the_past_with_no_predecessor_is_an_error() {
        let mut policy = policy(None, 0, 0);
        policy.expires_at = Some(at(-10));
        assert!(plan(at(0), &Observed::Missing, &wanted(policy), new_key).is_err());
    }

    #[test]
    fn after_expires_at_passes_keys_keep_the_predecessor_lifetime() {
        let mut policy = policy(None, 0, 0);
        policy.expires_at = Some(at(100));
        let plan = planned(at(100), record(40, Some(100)), policy, new_key);
        assert_eq!(plan.change, Change::Rotate(RotateReason::Scheduled));
        assert_eq!(plan.record.expires_at, Some(at(160)));
    }
}
