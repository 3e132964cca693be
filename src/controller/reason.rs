//! Why a key resource is, or is not, Ready, and what keymint wrote about it:
//! the typed reasons of the `Ready` condition and of Events. Each condition
//! reason carries how soon to look again and whether the key is revoked, so
//! the engine never compares strings.

use std::time::Duration;

/// Even an idle key is looked at this often (it makes no writes when up to date).
pub const MAX_REQUEUE: Duration = Duration::from_secs(3600);
/// A Secret owned by someone else is not watched: look again this often.
pub const CONFLICT_REQUEUE: Duration = Duration::from_secs(30);

/// The reason of the `Ready` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// `Ready=True`: the key is minted and in its Secret.
    KeyIssued,
    /// The Secret at `secretName` is not provably this resource's.
    SecretConflict,
    /// The API server refused the Secret write (immutable, quota, admission).
    SecretWriteFailed,
    /// Reading the resource's own Secret failed.
    SecretUnreadable,
    /// The bound ServiceAccount is missing or terminating: the key is revoked.
    ServiceAccountNotFound,
    /// The resource is terminating and its key expired: the Secret is deleted.
    KeyExpired,
    /// A RootKey's `secretNamespace` is not allowed by the operator.
    NamespaceNotAllowed,
    /// The spec cannot be acted upon.
    InvalidSpec,
    /// A KeyRing the key names does not exist.
    KeyRingNotFound,
    /// A KeyRing the key names does not accept keys from its namespace.
    KeyRingNotAllowed,
    /// A KeyRing the key names cannot list more keys.
    KeyRingFull,
}

/// When to look at a resource again after it ended in a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    After(Duration),
    /// Exponential backoff per resource (see `pacing`).
    Backoff,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::KeyIssued,
        Reason::SecretConflict,
        Reason::SecretWriteFailed,
        Reason::SecretUnreadable,
        Reason::ServiceAccountNotFound,
        Reason::KeyExpired,
        Reason::NamespaceNotAllowed,
        Reason::InvalidSpec,
        Reason::KeyRingNotFound,
        Reason::KeyRingNotAllowed,
        Reason::KeyRingFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::KeyIssued => "KeyIssued",
            Reason::SecretConflict => "SecretConflict",
            Reason::SecretWriteFailed => "SecretWriteFailed",
            Reason::SecretUnreadable => "SecretUnreadable",
            Reason::ServiceAccountNotFound => "ServiceAccountNotFound",
            Reason::KeyExpired => "KeyExpired",
            Reason::NamespaceNotAllowed => "NamespaceNotAllowed",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::KeyRingNotFound => "KeyRingNotFound",
            Reason::KeyRingNotAllowed => "KeyRingNotAllowed",
            Reason::KeyRingFull => "KeyRingFull",
        }
    }

    /// Whether the key no longer exists once the resource ends in this reason
    /// (its status then keeps no key).
    pub fn revokes(self) -> bool {
        matches!(self, Reason::ServiceAccountNotFound | Reason::KeyExpired)
    }

    pub fn requeue(self) -> Requeue {
        match self {
            Reason::SecretConflict => Requeue::After(CONFLICT_REQUEUE),
            Reason::SecretWriteFailed | Reason::SecretUnreadable => Requeue::Backoff,
            Reason::KeyIssued
            | Reason::ServiceAccountNotFound
            | Reason::KeyExpired
            | Reason::NamespaceNotAllowed
            | Reason::InvalidSpec
            | Reason::KeyRingNotFound
            | Reason::KeyRingNotAllowed
            | Reason::KeyRingFull => Requeue::After(MAX_REQUEUE),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reason of an Event keymint publishes about a key's life (Warnings for
/// a `Ready=False` transition carry its [`Reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEvent {
    KeyIssued,
    KeyRotated,
    KeyRestored,
    KeyReplaced,
    KeyRevoked,
    KeyCompromised,
    /// Every consumer runs the new key: the previous key went before its
    /// grace period ended.
    ConsumersRolledOut,
    /// The grace period ended before every consumer ran the new key.
    RolloutTimedOut,
    /// A named consumer does not read the key's Secret: it is left alone.
    ConsumerNotAHolder,
}

impl KeyEvent {
    /// A key lost or tampered with is worth a Warning: someone should look.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            KeyEvent::KeyRestored
                | KeyEvent::KeyReplaced
                | KeyEvent::KeyCompromised
                | KeyEvent::RolloutTimedOut
                | KeyEvent::ConsumerNotAHolder
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyEvent::KeyIssued => "KeyIssued",
            KeyEvent::KeyRotated => "KeyRotated",
            KeyEvent::KeyRestored => "KeyRestored",
            KeyEvent::KeyReplaced => "KeyReplaced",
            KeyEvent::KeyRevoked => "KeyRevoked",
            KeyEvent::KeyCompromised => "KeyCompromised",
            KeyEvent::ConsumersRolledOut => "ConsumersRolledOut",
            KeyEvent::RolloutTimedOut => "RolloutTimedOut",
            KeyEvent::ConsumerNotAHolder => "ConsumerNotAHolder",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_name_and_only_revocations_revoke() {
        let names: std::collections::BTreeSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        let revoking: Vec<_> = Reason::ALL.into_iter().filter(|r| r.revokes()).collect();
        assert_eq!(
            revoking,
            [Reason::ServiceAccountNotFound, Reason::KeyExpired]
        );
        assert_eq!(Reason::SecretWriteFailed.requeue(), Requeue::Backoff);
        assert_eq!(
            Reason::SecretConflict.requeue(),
            Requeue::After(CONFLICT_REQUEUE)
        );
    }
}
