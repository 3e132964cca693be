//! The ring document: a JSON document in the ring's Secret (data key
//! [`DOCUMENT_DATA_KEY`]) listing every member key a verifier may accept.
//! It holds ids and SHA-256 hashes, never a key. Members are sorted, so the
//! same members always give the same bytes and an unchanged ring is never
//! rewritten.

use serde::{Deserialize, Serialize};

/// `version` of the documents this keymint writes and reads.
pub const DOCUMENT_VERSION: &str = "keymint.dev/keyring/v1";
/// The Secret data key holding the document (and the file name when mounted).
pub const DOCUMENT_DATA_KEY: &str = "keyring.json";
/// Most members a document a verifier reads may hold. keymint itself writes
/// at most what fits in one Secret ([`SECRET_BUDGET_BYTES`]); a mounted file
/// from elsewhere may be larger.
pub const MAX_MEMBERS: usize = 100_000;
/// Longest document a verifier reads, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;
/// Most bytes keymint puts in a ring's Secret: the API server refuses
/// objects over 1.5 MiB (etcd's request limit), and the Secret has metadata.
pub const SECRET_BUDGET_BYTES: usize = 1024 * 1024;

/// Which ring a document belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingRef {
    pub namespace: String,
    pub name: String,
}

/// The kind of the key resource a member comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MemberKind {
    #[serde(rename = "APIKey")]
    ApiKey,
    ServiceAccountKey,
    RootKey,
}

/// Whether a member is the key's current key, its previous key during the
/// grace period after a rotation, or a key marked compromised (listed so a
/// verifier can say `REVOKED` rather than `NOT_FOUND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Current,
    Previous,
    Revoked,
}

/// Who issued a member: its key resource, and for a ServiceAccountKey the
/// ServiceAccount it is bound to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Issuer {
    /// Namespace of the key resource (absent for a cluster-scoped RootKey).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// One key a verifier may be shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// The key's id (`status.id` of its resource, or the previous id).
    pub id: String,
    /// Lowercase hex SHA-256 of the key.
    pub sha256: String,
    pub kind: MemberKind,
    pub issuer: Issuer,
    /// What the key may do (an APIKey's `permissions`; empty for other kinds).
    #[serde(default)]
    pub permissions: Vec<String>,
    /// RFC 3339: when the key was minted.
    pub not_before: String,
    /// RFC 3339: when the key expires; for a previous key, when its grace
    /// period ends. Absent: it does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub state: MemberState,
}

/// The document in a ring's Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RingDocument {
    /// [`DOCUMENT_VERSION`].
    pub version: String,
    pub ring: RingRef,
    /// RFC 3339: when the member list last changed.
    pub updated_at: String,
    pub members: Vec<Member>,
}

/// Why a document was refused. Names the field; never quotes a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("the document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("the document is not a key ring document: {0}")]
    Syntax(String),
    #[error("unsupported version (this keymint reads {DOCUMENT_VERSION})")]
    Version,
    #[error("more than {MAX_MEMBERS} members")]
    TooManyMembers,
    #[error("members[{index}].{field} is invalid")]
    Member { index: usize, field: &'static str },
    #[error("members[{index}].sha256 repeats an earlier member's")]
    DuplicateHash { index: usize },
}

impl RingDocument {
    /// A document for `ring` with `members` in canonical order (by id, then
    /// state), `updated_at` as given.
    pub fn new(ring: RingRef, updated_at: String, mut members: Vec<Member>) -> Self {
        members.sort_by(|a, b| (&a.id, a.state, &a.sha256).cmp(&(&b.id, b.state, &b.sha256)));
        for member in &mut members {
            member.permissions.sort();
            member.permissions.dedup();
        }
        RingDocument {
            version: DOCUMENT_VERSION.to_string(),
            ring,
            updated_at,
            members,
        }
    }

    /// The same members (the `updated_at` aside): no write is needed.
    pub fn same_members(&self, other: &RingDocument) -> bool {
        self.version == other.version && self.ring == other.ring && self.members == other.members
    }

    /// Canonical JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain structs of strings cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a document, refusing anything a verifier must not trust:
    /// oversized input, another version, too many members, a malformed id,
    /// hash or time, or one hash listed twice (which member would it be?).
    pub fn parse(bytes: &[u8]) -> Result<RingDocument, DocumentError> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(DocumentError::TooLarge);
        }
        let document: RingDocument = serde_json::from_slice(bytes).map_err(|e| {
            // serde_json's messages name the field and position, not the value.
            DocumentError::Syntax(format!(
                "line {} column {}: {}",
                e.line(),
                e.column(),
                classify(&e)
            ))
        })?;
        if document.version != DOCUMENT_VERSION {
            return Err(DocumentError::Version);
        }
        if document.members.len() > MAX_MEMBERS {
            return Err(DocumentError::TooManyMembers);
        }
        let mut seen = std::collections::HashSet::new();
        for (index, member) in document.members.iter().enumerate() {
            let bad = |field| DocumentError::Member { index, field };
            if !crate::keys::is_valid_key_id(&member.id) {
                return Err(bad("id"));
            }
            if member.sha256.len() != 64
                || !member
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(bad("sha256"));
            }
            if member.not_before.parse::<jiff::Timestamp>().is_err() {
                return Err(bad("notBefore"));
            }
            if member
                .expires_at
                .as_deref()
                .is_some_and(|t| t.parse::<jiff::Timestamp>().is_err())
            {
                return Err(bad("expiresAt"));
            }
            if member.permissions.len() > crate::api::MAX_PERMISSIONS as usize
                || member
                    .permissions
                    .iter()
                    .any(|p| p.is_empty() || p.len() > 63)
            {
                return Err(bad("permissions"));
            }
            if !seen.insert(member.sha256.as_str()) {
                return Err(DocumentError::DuplicateHash { index });
            }
        }
        Ok(document)
    }
}

/// serde_json's error category, without the message (which may quote input).
fn classify(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "a field is missing or has the wrong type",
        serde_json::error::Category::Eof => "truncated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn member(id: &str, sha: char, state: MemberState) -> Member {
        Member {
            id: id.to_string(),
            sha256: std::iter::repeat_n(sha, 64).collect(),
            kind: MemberKind::ApiKey,
            issuer: Issuer {
                namespace: Some("client".into()),
                name: "billing".into(),
                service_account: None,
            },
            permissions: vec!["read".into()],
            not_before: "2026-01-01T00:00:00Z".into(),
            expires_at: Some("2027-01-01T00:00:00Z".into()),
            state,
        }
    }

    fn ring() -> RingRef {
        RingRef {
            namespace: "svc".into(),
            name: "ring".into(),
        }
    }

    #[test]
    fn members_are_canonically_ordered_and_round_trip() {
        let document = RingDocument::new(
            ring(),
            "2026-01-01T00:00:00Z".into(),
            vec![
                member("B", 'b', MemberState::Current),
                member("A", 'a', MemberState::Previous),
            ],
        );
        assert_eq!(document.members[0].id, "A");
        let parsed = RingDocument::parse(&document.to_bytes()).expect("parses");
        assert_eq!(parsed, document);
        let reordered = RingDocument::new(
            ring(),
            "2026-02-01T00:00:00Z".into(),
            vec![
                member("A", 'a', MemberState::Previous),
                member("B", 'b', MemberState::Current),
            ],
        );
        assert!(reordered.same_members(&document));
    }

    #[test]
    fn hostile_documents_are_refused_naming_the_field() {
        let good = RingDocument::new(
            ring(),
            "2026-01-01T00:00:00Z".into(),
            vec![member("A", 'a', MemberState::Current)],
        );
        let mutate = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut value = serde_json::to_value(&good).expect("value");
            change(&mut value);
            RingDocument::parse(&serde_json::to_vec(&value).expect("bytes"))
        };
        assert_eq!(
            mutate(&|v| v["version"] = "v0".into()),
            Err(DocumentError::Version)
        );
        assert_eq!(
            mutate(&|v| v["members"][0]["sha256"] = "AB".into()),
            Err(DocumentError::Member {
                index: 0,
                field: "sha256"
            })
        );
        assert_eq!(
            mutate(&|v| v["members"][0]["id"] = "lower".into()),
            Err(DocumentError::Member {
                index: 0,
                field: "id"
            })
        );
        assert_eq!(
            mutate(&|v| v["members"][0]["expiresAt"] = "tomorrow".into()),
            Err(DocumentError::Member {
                index: 0,
                field: "expiresAt"
            })
        );
        assert_eq!(
            mutate(&|v| {
                let copy = v["members"][0].clone();
                v["members"].as_array_mut().expect("array").push(copy);
            }),
            Err(DocumentError::DuplicateHash { index: 1 })
        );
        assert!(matches!(
            RingDocument::parse(b"{not json"),
            Err(DocumentError::Syntax(_))
        ));
        assert_eq!(
            RingDocument::parse(&vec![b' '; MAX_DOCUMENT_BYTES + 1]),
            Err(DocumentError::TooLarge)
        );
        let secret_looking = mutate(&|v| v["members"][0]["kind"] = "ak_secretvalue".into());
        let message = secret_looking.expect_err("unknown kind").to_string();
        assert!(
            !message.contains("ak_secretvalue"),
            "errors never quote input: {message}"
        );
    }
}
