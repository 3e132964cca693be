//! Checking a presented key against a ring: the checksum first (a typo or a
//! forged string is `MALFORMED` before any lookup), then the SHA-256 looked
//! up in buckets chosen by a per-process keyed hash and compared in constant
//! time, then state, validity window and the required permission.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use jiff::Timestamp;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::document::{Member, MemberState, RingDocument};
use crate::keys::verify_checksum;

/// Why a key was accepted or refused, as verifiers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Valid,
    /// Not a keymint key: bad prefix, characters, length or checksum.
    Malformed,
    /// Well-formed, but not in the ring.
    NotFound,
    /// In the ring, but past its expiry (or its grace period's end).
    Expired,
    /// In the ring, but not valid yet.
    NotYetValid,
    /// Marked compromised.
    Revoked,
    /// Valid, but without the required permission.
    PermissionDenied,
}

impl Reason {
    /// The machine-readable code (`VALID`, `NOT_FOUND`, ...).
    pub fn code(self) -> &'static str {
        match self {
            Reason::Valid => "VALID",
            Reason::Malformed => "MALFORMED",
            Reason::NotFound => "NOT_FOUND",
            Reason::Expired => "EXPIRED",
            Reason::NotYetValid => "NOT_YET_VALID",
            Reason::Revoked => "REVOKED",
            Reason::PermissionDenied => "PERMISSION_DENIED",
        }
    }

    /// Every reason, for metrics.
    pub const ALL: [Reason; 7] = [
        Reason::Valid,
        Reason::Malformed,
        Reason::NotFound,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::Revoked,
        Reason::PermissionDenied,
    ];
}

/// The outcome of one verification: the reason, and the member the key
/// matched (absent for `MALFORMED` and `NOT_FOUND`).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict<'a> {
    pub reason: Reason,
    pub member: Option<&'a Member>,
}

impl Verdict<'_> {
    pub fn is_valid(&self) -> bool {
        self.reason == Reason::Valid
    }
}

struct Entry {
    digest: [u8; 32],
    member: Member,
    not_before: Timestamp,
    expires_at: Option<Timestamp>,
}

/// A loaded ring, ready to answer.
pub struct Keyring {
    document: RingDocument,
    buckets: HashMap<u64, Vec<usize>>,
    entries: Vec<Entry>,
    hasher: RandomState,
    updated_at: Option<Timestamp>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("ring", &self.document.ring)
            .field("members", &self.entries.len())
            .finish()
    }
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (index, pair) in hex.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[index] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

impl Keyring {
    /// A ring from a parsed (and so validated) document.
    pub fn new(document: RingDocument) -> Keyring {
        let hasher = RandomState::new();
        let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut entries = Vec::with_capacity(document.members.len());
        for member in &document.members {
            // parse() validated hashes and times; anything else is skipped.
            let (Some(digest), Ok(not_before)) = (
                decode_hex(&member.sha256),
                member.not_before.parse::<Timestamp>(),
            ) else {
                continue;
            };
            let expires_at = match member.expires_at.as_deref().map(str::parse::<Timestamp>) {
                Some(Ok(t)) => Some(t),
                Some(Err(_)) => continue,
                None => None,
            };
            buckets
                .entry(hasher.hash_one(digest))
                .or_default()
                .push(entries.len());
            entries.push(Entry {
                digest,
                member: member.clone(),
                not_before,
                expires_at,
            });
        }
        let updated_at = document.updated_at.parse().ok();
        Keyring {
            document,
            buckets,
            entries,
            hasher,
            updated_at,
        }
    }

    /// Parses and loads a document.
    pub fn from_bytes(bytes: &[u8]) -> Result<Keyring, super::DocumentError> {
        RingDocument::parse(bytes).map(Keyring::new)
    }

    pub fn document(&self) -> &RingDocument {
        &self.document
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the ring's members last changed.
    pub fn updated_at(&self) -> Option<Timestamp> {
        self.updated_at
    }

    /// Checks `key` (optionally for `required` permission) at `now`.
    pub fn verify(&self, key: &str, required: Option<&str>, now: Timestamp) -> Verdict<'_> {
        if verify_checksum(key).is_err() {
            return Verdict {
                reason: Reason::Malformed,
                member: None,
            };
        }
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let bucket = self.buckets.get(&self.hasher.hash_one(digest));
        let mut found: Option<&Entry> = None;
        for index in bucket.into_iter().flatten() {
            let entry = &self.entries[*index];
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        let Some(entry) = found else {
            return Verdict {
                reason: Reason::NotFound,
                member: None,
            };
        };
        let reason = if entry.member.state == MemberState::Revoked {
            Reason::Revoked
        } else if now < entry.not_before {
            Reason::NotYetValid
        } else if entry.expires_at.is_some_and(|expiry| now >= expiry) {
            Reason::Expired
        } else if required.is_some_and(|wanted| !grants(&entry.member.permissions, wanted)) {
            Reason::PermissionDenied
        } else {
            Reason::Valid
        };
        Verdict {
            reason,
            member: Some(&entry.member),
        }
    }
}

/// Whether `permissions` grant `wanted`: an equal entry, `*`, or an entry
/// `prefix:*` for a `wanted` of `prefix:anything` (`models:*` grants
/// `models:write` and `models:eu:read`, not `models`). A `wanted` holding
/// `*` is matched literally, so a caller cannot widen its own check.
pub fn grants(permissions: &[String], wanted: &str) -> bool {
    permissions.iter().any(|permission| {
        permission == wanted
            || permission == "*"
            || permission.strip_suffix('*').is_some_and(|prefix| {
                prefix.ends_with(':') && wanted.starts_with(prefix) && wanted.len() > prefix.len()
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::document::{Issuer, MemberKind, RingRef};

    fn token() -> String {
        crate::keys::try_mint_token("ak", 256)
            .expect("mint")
            .expose()
            .to_string()
    }

    fn member(key: &str, state: MemberState, expires_at: Option<&str>) -> Member {
        Member {
            id: "K1".into(),
            sha256: crate::keys::sha256_hex(key),
            kind: MemberKind::ApiKey,
            issuer: Issuer {
                namespace: Some("client".into()),
                name: "billing".into(),
                service_account: None,
            },
            permissions: vec!["models:*".into(), "read".into()],
            not_before: "2026-01-01T00:00:00Z".into(),
            expires_at: expires_at.map(str::to_string),
            state,
        }
    }

    fn ring(members: Vec<Member>) -> Keyring {
        let document = RingDocument::new(
            RingRef {
                namespace: "svc".into(),
                name: "ring".into(),
            },
            "2026-01-01T00:00:00Z".into(),
            members,
        );
        Keyring::from_bytes(&document.to_bytes()).expect("a valid document")
    }

    fn at(t: &str) -> Timestamp {
        t.parse().expect("a time")
    }

    #[test]
    fn reasons_table() {
        let current = token();
        let expired = token();
        let revoked = token();
        let ring = ring(vec![
            member(&current, MemberState::Current, Some("2027-01-01T00:00:00Z")),
            Member {
                id: "K2".into(),
                ..member(
                    &expired,
                    MemberState::Previous,
                    Some("2026-06-01T00:00:00Z"),
                )
            },
            Member {
                id: "K3".into(),
                ..member(&revoked, MemberState::Revoked, None)
            },
        ]);
        let now = at("2026-07-01T00:00:00Z");
        let mut typo = current.clone();
        typo.pop();
        typo.push(if current.ends_with('A') { 'B' } else { 'A' });
        let rows: Vec<(&str, Option<&str>, Reason)> = vec![
            (&current, None, Reason::Valid),
            (&current, Some("read"), Reason::Valid),
            (&current, Some("models:write"), Reason::Valid),
            (&current, Some("write"), Reason::PermissionDenied),
            (&current, Some("models"), Reason::PermissionDenied),
            (&expired, None, Reason::Expired),
            (&revoked, None, Reason::Revoked),
            (&typo, None, Reason::Malformed),
            ("", None, Reason::Malformed),
            ("Bearer x", None, Reason::Malformed),
        ];
        for (key, required, expected) in rows {
            assert_eq!(
                ring.verify(key, required, now).reason,
                expected,
                "{required:?}"
            );
        }
        let other = token();
        assert_eq!(ring.verify(&other, None, now).reason, Reason::NotFound);
        assert_eq!(
            ring.verify(&current, None, at("2025-01-01T00:00:00Z"))
                .reason,
            Reason::NotYetValid
        );
        let verdict = ring.verify(&current, None, now);
        assert_eq!(verdict.member.map(|m| m.id.as_str()), Some("K1"));
    }

    #[test]
    fn wildcards_grant_below_their_prefix_only() {
        let perms = |list: &[&str]| list.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert!(grants(&perms(&["*"]), "anything"));
        assert!(grants(&perms(&["models:*"]), "models:eu:read"));
        assert!(!grants(&perms(&["models:*"]), "models:"));
        assert!(!grants(&perms(&["models:*"]), "modelsx:read"));
        assert!(!grants(&perms(&["read"]), "*"));
        assert!(grants(&perms(&["*"]), "*"));
    }

    #[test]
    fn ten_thousand_members_load_and_answer() {
        let keys: Vec<String> = (0..10_000).map(|_| token()).collect();
        let members = keys
            .iter()
            .enumerate()
            .map(|(index, key)| Member {
                id: format!("K{index}"),
                ..member(key, MemberState::Current, None)
            })
            .collect();
        let ring = ring(members);
        assert_eq!(ring.len(), 10_000);
        let now = at("2026-07-01T00:00:00Z");
        for key in keys.iter().step_by(997) {
            assert!(ring.verify(key, None, now).is_valid());
        }
    }
}
