//! Who is in a ring: from the keys that name it (their issued facts, as their
//! status reports them) and the ring's earlier document, the members to list,
//! the keys refused, and when the list next changes by itself (a grace period
//! or a key ending). Pure.

use jiff::Timestamp;

use super::document::{
    Issuer, Member, MemberKind, MemberState, RingDocument, RingRef, SECRET_BUDGET_BYTES,
};

/// The issued state of one key resource that names the ring.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub kind: MemberKind,
    pub issuer: Issuer,
    pub permissions: Vec<String>,
    /// The ring accepts the key's namespace.
    pub accepted: bool,
    /// When the key resource was created: older members keep their place
    /// when the ring is full.
    pub created: Timestamp,
    pub current: Option<CurrentKey>,
    pub previous: Option<PreviousKey>,
    /// Keys of this resource marked compromised, still within their time.
    pub revoked: Vec<RevokedKey>,
}

/// A key marked compromised (`status.revokedKeys`).
#[derive(Debug, Clone, PartialEq)]
pub struct RevokedKey {
    pub id: String,
    pub sha256: String,
    pub until: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CurrentKey {
    pub id: String,
    pub sha256: String,
    pub minted: Timestamp,
    pub expires_at: Option<Timestamp>,
}

/// The previous key of a rotation still in its grace period. Its hash is in
/// the key's status (`previousKeySHA256`); a status written before that field
/// existed leaves it to the hash the ring listed for that id before.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviousKey {
    pub id: String,
    pub until: Timestamp,
    pub sha256: Option<String>,
}

/// Why a key that names the ring is not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The ring does not accept the key's namespace.
    NotAllowed,
    /// The ring's Secret is full.
    RingFull,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub document: RingDocument,
    /// `namespace/name` of each refused key, with why.
    pub refused: Vec<(String, Refusal)>,
    /// When the document changes without any event (a listed key expiring or
    /// a grace period ending).
    pub wake_at: Option<Timestamp>,
}

/// RFC 3339 to the second, as the document writes times.
pub fn format_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn issuer_id(issuer: &Issuer) -> String {
    match &issuer.namespace {
        Some(namespace) => format!("{namespace}/{}", issuer.name),
        None => issuer.name.clone(),
    }
}

/// The members of `ring` at `now`. `earlier` (the document in the ring's
/// Secret, if any) supplies previous keys' hashes and keeps `updatedAt` when
/// nothing changed.
pub fn decide(
    ring: RingRef,
    mut candidates: Vec<Candidate>,
    earlier: Option<&RingDocument>,
    now: Timestamp,
) -> Membership {
    candidates.sort_by_key(|c| (c.created, issuer_id(&c.issuer)));
    let earlier_hash = |id: &str| {
        earlier.and_then(|document| {
            document
                .members
                .iter()
                .find(|member| member.id == id)
                .map(|member| member.sha256.clone())
        })
    };
    let mut members = Vec::new();
    let mut refused = Vec::new();
    let mut wake_at: Option<Timestamp> = None;
    let mut wake = |t: Timestamp| {
        if t > now {
            wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
        }
    };
    // Keys marked compromised stay listed as revoked until they would have
    // expired, and no other entry may carry their hash.
    let revoked: Vec<Member> = earlier
        .map(|document| {
            document
                .members
                .iter()
                .filter(|member| member.state == MemberState::Revoked)
                .filter(|member| {
                    member
                        .expires_at
                        .as_deref()
                        .and_then(|t| t.parse::<Timestamp>().ok())
                        .is_some_and(|expiry| expiry > now)
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    // The keys' own records of their compromised keys (accepted keys only).
    let mut revoked = revoked;
    for candidate in candidates.iter().filter(|c| c.accepted) {
        for key in candidate.revoked.iter().filter(|key| key.until > now) {
            if revoked.iter().any(|member| member.sha256 == key.sha256) {
                continue;
            }
            revoked.push(Member {
                id: key.id.clone(),
                sha256: key.sha256.clone(),
                kind: candidate.kind,
                issuer: candidate.issuer.clone(),
                permissions: candidate.permissions.clone(),
                not_before: format_time(key.until.min(now)),
                expires_at: Some(format_time(key.until)),
                state: MemberState::Revoked,
            });
        }
    }
    // A key's revoked entries hide only that key's own entries (a stale
    // status still naming the leaked key as current); and no hash is ever
    // listed twice, whoever claims it (a crafted status could copy another
    // key's hash, and a verifier refuses a document with a repeated hash):
    // the first claimant, the oldest key, keeps it.
    let is_revoked = |member: &Member| {
        revoked
            .iter()
            .any(|r| r.sha256 == member.sha256 && r.issuer == member.issuer)
    };
    let mut listed: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut size: usize = revoked
        .iter()
        .map(|member| serde_json::to_vec(member).map_or(0, |b| b.len() + 1))
        .sum();
    for member in &revoked {
        if let Some(expiry) = member.expires_at.as_deref().and_then(|t| t.parse().ok()) {
            wake(expiry);
        }
    }
    for candidate in candidates {
        if !candidate.accepted {
            refused.push((issuer_id(&candidate.issuer), Refusal::NotAllowed));
            continue;
        }
        let mut own = Vec::new();
        if let Some(current) = &candidate.current
            && current.expires_at.is_none_or(|expiry| expiry > now)
        {
            own.push(Member {
                id: current.id.clone(),
                sha256: current.sha256.clone(),
                kind: candidate.kind,
                issuer: candidate.issuer.clone(),
                permissions: candidate.permissions.clone(),
                not_before: format_time(current.minted),
                expires_at: current.expires_at.map(format_time),
                state: MemberState::Current,
            });
            if let Some(expiry) = current.expires_at {
                wake(expiry);
            }
        }
        if let (Some(previous), Some(current)) = (&candidate.previous, &candidate.current)
            && previous.until > now
            && previous.id != current.id
            && let Some(sha256) = previous
                .sha256
                .clone()
                .or_else(|| earlier_hash(&previous.id))
            && sha256 != current.sha256
        {
            own.push(Member {
                id: previous.id.clone(),
                sha256,
                kind: candidate.kind,
                issuer: candidate.issuer.clone(),
                permissions: candidate.permissions.clone(),
                not_before: format_time(current.minted.min(previous.until)),
                expires_at: Some(format_time(previous.until)),
                state: MemberState::Previous,
            });
            wake(previous.until);
        }
        own.retain(|member| !is_revoked(member) && !listed.contains(&member.sha256));
        let added: usize = own
            .iter()
            .map(|member| serde_json::to_vec(member).map_or(0, |b| b.len() + 1))
            .sum();
        if size + added > SECRET_BUDGET_BYTES {
            refused.push((issuer_id(&candidate.issuer), Refusal::RingFull));
            continue;
        }
        size += added;
        listed.extend(own.iter().map(|member| member.sha256.clone()));
        members.extend(own);
    }
    members.extend(
        revoked
            .iter()
            .filter(|member| !listed.contains(&member.sha256))
            .cloned(),
    );
    let fresh = RingDocument::new(ring, format_time(now), members);
    let document = match earlier {
        Some(earlier) if earlier.same_members(&fresh) => RingDocument {
            updated_at: earlier.updated_at.clone(),
            ..fresh
        },
        _ => fresh,
    };
    Membership {
        document,
        refused,
        wake_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: &str) -> Timestamp {
        t.parse().expect("time")
    }

    fn ring() -> RingRef {
        RingRef {
            namespace: "svc".into(),
            name: "ring".into(),
        }
    }

    fn candidate(
        name: &str,
        accepted: bool,
        current: Option<(&str, char)>,
        previous: Option<(&str, &str)>,
    ) -> Candidate {
        Candidate {
            kind: MemberKind::ApiKey,
            issuer: Issuer {
                namespace: Some("client".into()),
                name: name.into(),
                service_account: None,
            },
            permissions: vec!["read".into()],
            accepted,
            created: at("2026-01-01T00:00:00Z"),
            current: current.map(|(id, sha)| CurrentKey {
                id: id.into(),
                sha256: std::iter::repeat_n(sha, 64).collect(),
                minted: at("2026-03-01T00:00:00Z"),
                expires_at: Some(at("2026-06-01T00:00:00Z")),
            }),
            previous: previous.map(|(id, until)| PreviousKey {
                id: id.into(),
                until: at(until),
                sha256: None,
            }),
            revoked: Vec::new(),
        }
    }

    #[test]
    fn a_rotation_lists_the_previous_key_until_its_grace_ends() {
        let now = at("2026-03-01T00:00:10Z");
        let before = decide(
            ring(),
            vec![candidate("a", true, Some(("OLD", 'a')), None)],
            None,
            at("2026-02-01T00:00:00Z"),
        );
        let rotated = decide(
            ring(),
            vec![candidate(
                "a",
                true,
                Some(("NEW", 'b')),
                Some(("OLD", "2026-03-01T01:00:00Z")),
            )],
            Some(&before.document),
            now,
        );
        let states: Vec<(&str, MemberState)> = rotated
            .document
            .members
            .iter()
            .map(|m| (m.id.as_str(), m.state))
            .collect();
        assert_eq!(
            states,
            vec![
                ("NEW", MemberState::Current),
                ("OLD", MemberState::Previous)
            ]
        );
        assert_eq!(
            rotated.document.members[1].sha256,
            before.document.members[0].sha256
        );
        assert_eq!(
            rotated.document.members[1].expires_at.as_deref(),
            Some("2026-03-01T01:00:00Z")
        );
        assert_eq!(rotated.wake_at, Some(at("2026-03-01T01:00:00Z")));
        let after_grace = decide(
            ring(),
            vec![candidate(
                "a",
                true,
                Some(("NEW", 'b')),
                Some(("OLD", "2026-03-01T01:00:00Z")),
            )],
            Some(&rotated.document),
            at("2026-03-01T01:00:00Z"),
        );
        assert_eq!(after_grace.document.members.len(), 1);
    }

    #[test]
    fn a_revoked_entry_stays_until_its_expiry_and_its_hash_is_never_listed_otherwise() {
        let now = at("2026-03-02T00:00:00Z");
        let mut earlier = decide(
            ring(),
            vec![candidate("a", true, Some(("NEW", 'b')), None)],
            None,
            now,
        )
        .document;
        earlier.members.push(Member {
            id: "OLD".into(),
            sha256: std::iter::repeat_n('a', 64).collect(),
            state: MemberState::Revoked,
            expires_at: Some("2026-06-01T00:00:00Z".into()),
            ..earlier.members[0].clone()
        });
        // A stale status still naming the leaked key as current.
        let stale = decide(
            ring(),
            vec![candidate("a", true, Some(("OLD", 'a')), None)],
            Some(&earlier),
            now,
        );
        let states: Vec<(&str, MemberState)> = stale
            .document
            .members
            .iter()
            .map(|m| (m.id.as_str(), m.state))
            .collect();
        assert_eq!(states, vec![("OLD", MemberState::Revoked)]);
        let later = decide(
            ring(),
            vec![candidate("a", true, Some(("NEW", 'b')), None)],
            Some(&earlier),
            at("2026-06-01T00:00:00Z"),
        );
        assert!(
            later
                .document
                .members
                .iter()
                .all(|m| m.state != MemberState::Revoked),
            "gone after its expiry"
        );
    }

    #[test]
    fn the_status_alone_gives_the_previous_hash_and_the_revoked_keys() {
        let now = at("2026-03-01T00:00:10Z");
        let mut joined_after_rotation = candidate(
            "a",
            true,
            Some(("NEW", 'b')),
            Some(("OLD", "2026-03-01T01:00:00Z")),
        );
        if let Some(previous) = joined_after_rotation.previous.as_mut() {
            previous.sha256 = Some(std::iter::repeat_n('a', 64).collect());
        }
        joined_after_rotation.revoked = vec![RevokedKey {
            id: "LEAKED".into(),
            sha256: std::iter::repeat_n('c', 64).collect(),
            until: at("2026-05-01T00:00:00Z"),
        }];
        let decided = decide(ring(), vec![joined_after_rotation], None, now);
        let states: Vec<(&str, MemberState)> = decided
            .document
            .members
            .iter()
            .map(|m| (m.id.as_str(), m.state))
            .collect();
        assert_eq!(
            states,
            vec![
                ("LEAKED", MemberState::Revoked),
                ("NEW", MemberState::Current),
                ("OLD", MemberState::Previous)
            ]
        );
    }

    #[test]
    fn a_hash_copied_by_another_key_is_never_listed_twice_nor_revokes_the_owner() {
        let now = at("2026-03-01T00:00:10Z");
        let owner = candidate("owner", true, Some(("OWN", 'a')), None);
        // A later key whose status claims the owner's hash as its previous key
        // and as a revoked key of its own.
        let mut copier = candidate(
            "copier",
            true,
            Some(("COPY", 'b')),
            Some(("STOLEN", "2026-03-01T01:00:00Z")),
        );
        copier.created = at("2026-02-01T00:00:00Z");
        if let Some(previous) = copier.previous.as_mut() {
            previous.sha256 = Some(std::iter::repeat_n('a', 64).collect());
        }
        copier.revoked = vec![RevokedKey {
            id: "FAKE".into(),
            sha256: std::iter::repeat_n('a', 64).collect(),
            until: at("2026-05-01T00:00:00Z"),
        }];
        let decided = decide(ring(), vec![copier, owner], None, now);
        let bytes = decided.document.to_bytes();
        RingDocument::parse(&bytes).expect("a document a verifier loads: no repeated hash");
        let states: Vec<(&str, MemberState)> = decided
            .document
            .members
            .iter()
            .map(|m| (m.id.as_str(), m.state))
            .collect();
        assert_eq!(
            states,
            vec![
                ("COPY", MemberState::Current),
                ("OWN", MemberState::Current)
            ]
        );
    }

    #[test]
    fn refused_and_unchanged() {
        let first = decide(
            ring(),
            vec![
                candidate("in", true, Some(("A", 'a')), None),
                candidate("out", false, Some(("B", 'b')), None),
            ],
            None,
            at("2026-03-02T00:00:00Z"),
        );
        assert_eq!(first.document.members.len(), 1);
        assert_eq!(
            first.refused,
            vec![("client/out".to_string(), Refusal::NotAllowed)]
        );
        let again = decide(
            ring(),
            vec![candidate("in", true, Some(("A", 'a')), None)],
            Some(&first.document),
            at("2026-03-03T00:00:00Z"),
        );
        assert_eq!(
            again.document, first.document,
            "unchanged members keep updatedAt: no write"
        );
    }

    #[test]
    fn an_expired_key_and_a_key_not_issued_yet_are_not_listed() {
        let expired = decide(
            ring(),
            vec![candidate("a", true, Some(("A", 'a')), None)],
            None,
            at("2026-07-01T00:00:00Z"),
        );
        assert!(expired.document.members.is_empty());
        let unissued = decide(
            ring(),
            vec![candidate("a", true, None, None)],
            None,
            at("2026-03-02T00:00:00Z"),
        );
        assert!(unissued.document.members.is_empty());
    }

    #[test]
    fn a_full_ring_refuses_the_newest_keys() {
        let many: Vec<Candidate> = (0..6000)
            .map(|index| {
                let mut c = candidate(&format!("key-{index:05}"), true, Some(("A", 'a')), None);
                if let Some(k) = c.current.as_mut() {
                    k.id = format!("K{index}");
                    k.sha256 = format!("{index:064x}");
                }
                c.created = at("2026-01-01T00:00:00Z") + jiff::SignedDuration::from_secs(index);
                c
            })
            .collect();
        let full = decide(ring(), many, None, at("2026-03-02T00:00:00Z"));
        assert!(full.document.to_bytes().len() <= SECRET_BUDGET_BYTES + 1024);
        assert!(!full.refused.is_empty());
        assert!(
            full.refused
                .iter()
                .all(|(_, why)| *why == Refusal::RingFull)
        );
        assert_eq!(
            full.refused.last().map(|(name, _)| name.as_str()),
            Some("client/key-05999")
        );
    }
}
