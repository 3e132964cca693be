//! The signature keymint puts on the record it keeps in a Secret's
//! annotations. Anyone who can write the Secret can write the annotations, so
//! the record is trusted only when its HMAC-SHA256, under a key only the
//! operator holds, verifies. The signature binds the record to the resource
//! (kind, namespace, name and UID) and to the Secret (namespace and name), so
//! a record cannot be forged, edited, copied to another Secret, or inherited
//! by a re-created resource of the same name.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::plan::KeyRecord;
use super::token::hex;

/// Signatures start with their scheme, so another scheme can follow.
const SCHEME: &str = "v1";
/// Bytes of the operator's signing key.
pub const SIGNING_KEY_BYTES: usize = 32;

/// The operator-held key records are signed with. Never logged.
#[derive(Clone)]
pub struct SigningKey(Hmac<Sha256>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the record signing key must be at least {SIGNING_KEY_BYTES} bytes")]
pub struct ShortKey;

impl SigningKey {
    pub fn new(bytes: &[u8]) -> Result<Self, ShortKey> {
        if bytes.len() < SIGNING_KEY_BYTES {
            return Err(ShortKey);
        }
        <Hmac<Sha256> as Mac>::new_from_slice(bytes)
            .map(SigningKey)
            .map_err(|_| ShortKey)
    }

    /// Fresh key bytes from the operating system's CSPRNG.
    pub fn generate_bytes() -> Result<Zeroizing<Vec<u8>>, rand::rand_core::OsError> {
        use rand::TryRngCore;
        let mut bytes = Zeroizing::new(vec![0u8; SIGNING_KEY_BYTES]);
        rand::rngs::OsRng.try_fill_bytes(&mut bytes)?;
        Ok(bytes)
    }

    fn mac(&self, subject: &Subject<'_>) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(&subject.message());
        mac
    }

    pub fn sign(&self, subject: &Subject<'_>) -> String {
        let tag = self.mac(subject).finalize().into_bytes();
        format!("{SCHEME}:{}", hex(&tag))
    }

    /// Whether `signature` is this key's signature of `subject` (constant time).
    pub fn verify(&self, subject: &Subject<'_>, signature: &str) -> bool {
        let Some(tag) = signature
            .strip_prefix(SCHEME)
            .and_then(|rest| rest.strip_prefix(':'))
            .and_then(unhex)
        else {
            return false;
        };
        self.mac(subject).verify_slice(&tag).is_ok()
    }
}

/// Who claims a Secret: the resource (by name and UID) and where its Secret
/// goes. A signature binds a record to exactly this.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// `Kind/namespace/name` (or `Kind/name`) of the owning resource.
    pub owner: &'a str,
    pub owner_uid: &'a str,
    /// The Secret's namespace and name.
    pub namespace: &'a str,
    pub name: &'a str,
}

/// Everything a signature vouches for.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub claim: Claim<'a>,
    pub record: &'a KeyRecord,
    /// SHA-256 of the previous key the Secret holds, if it holds one.
    pub previous_key_sha256: Option<&'a str>,
}

impl Subject<'_> {
    /// An unambiguous encoding: a JSON array of every field, in a fixed order
    /// (free text such as a rotate request cannot shift the fields).
    fn message(&self) -> Vec<u8> {
        let record = self.record;
        let time = |t: jiff::Timestamp| t.as_second().to_string();
        let fields: Vec<Option<String>> = vec![
            Some(SCHEME.into()),
            Some(self.claim.owner.into()),
            Some(self.claim.owner_uid.into()),
            Some(self.claim.namespace.into()),
            Some(self.claim.name.into()),
            Some(record.id.clone()),
            Some(record.sha256.clone()),
            Some(time(record.created_at)),
            Some(time(record.updated_at)),
            record.expires_at.map(time),
            Some(record.rotations.to_string()),
            record.rotate_request.clone(),
            record.bound_uid.clone(),
            record.previous.as_ref().map(|p| p.id.clone()),
            record.previous.as_ref().map(|p| time(p.until)),
            self.previous_key_sha256.map(str::to_string),
        ];
        // Appended only when set, so records signed before it existed verify.
        let mut fields = fields;
        if let Some(compromise) = &record.compromise {
            fields.push(Some(compromise.clone()));
        }
        // Serialising strings and nulls cannot fail.
        serde_json::to_vec(&fields).unwrap_or_default()
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::plan::PreviousKey;

    fn record() -> KeyRecord {
        KeyRecord {
            id: "ABC".into(),
            sha256: "00".repeat(32),
            created_at: "2026-11-23T10:00:00Z".parse().expect("time"),
            updated_at: "2026-11-23T10:00:00Z".parse().expect("time"),
            expires_at: Some("2026-11-24T10:00:00Z".parse().expect("time")),
            previous: Some(PreviousKey {
                id: "OLD".into(),
                until: "2026-11-23T11:00:00Z".parse().expect("time"),
            }),
            rotations: 1,
            rotate_request: Some("r".into()),
            bound_uid: None,
            compromise: None,
        }
    }

    const CLAIM: Claim<'static> = Claim {
        owner: "APIKey/team/k",
        owner_uid: "uid-1",
        namespace: "team",
        name: "k",
    };

    fn subject(record: &KeyRecord) -> Subject<'_> {
        Subject {
            claim: CLAIM,
            record,
            previous_key_sha256: Some("ff"),
        }
    }

    #[test]
    fn a_signature_verifies_only_the_exact_subject_under_the_same_key() {
        let key = SigningKey::new(&SigningKey::generate_bytes().expect("random")).expect("key");
        let record = record();
        let signature = key.sign(&subject(&record));
        assert!(key.verify(&subject(&record), &signature));

        let other_key =
            SigningKey::new(&SigningKey::generate_bytes().expect("random")).expect("key");
        assert!(!other_key.verify(&subject(&record), &signature));

        type Edit = Box<dyn Fn(&mut KeyRecord)>;
        let edits: Vec<Edit> = vec![
            Box::new(|r| r.id = "FORGED".into()),
            Box::new(|r| r.sha256 = "11".repeat(32)),
            Box::new(|r| r.created_at = "2030-01-01T00:00:00Z".parse().expect("time")),
            Box::new(|r| r.expires_at = None),
            Box::new(|r| r.rotations = 0),
            Box::new(|r| r.rotate_request = None),
            Box::new(|r| r.bound_uid = Some("x".into())),
            Box::new(|r| {
                r.previous = Some(PreviousKey {
                    id: "OLD".into(),
                    until: "2099-01-01T00:00:00Z".parse().expect("time"),
                })
            }),
        ];
        for edit in edits {
            let mut forged = record.clone();
            edit(&mut forged);
            assert!(!key.verify(&subject(&forged), &signature), "{forged:?}");
        }
        let elsewhere = [
            Subject {
                claim: Claim {
                    owner: "APIKey/team/other",
                    ..CLAIM
                },
                ..subject(&record)
            },
            Subject {
                claim: Claim {
                    owner_uid: "uid-2",
                    ..CLAIM
                },
                ..subject(&record)
            },
            Subject {
                claim: Claim {
                    namespace: "b",
                    ..CLAIM
                },
                ..subject(&record)
            },
            Subject {
                claim: Claim {
                    name: "s2",
                    ..CLAIM
                },
                ..subject(&record)
            },
            Subject {
                previous_key_sha256: None,
                ..subject(&record)
            },
        ];
        for other in elsewhere {
            assert!(!key.verify(&other, &signature), "{other:?}");
        }
    }

    #[test]
    fn malformed_signatures_never_verify() {
        let key = SigningKey::new(&[9; 32]).expect("key");
        let record = record();
        for signature in ["", "v1", "v1:", "v1:zz", "v2:00", &"v1:0".repeat(100)] {
            assert!(!key.verify(&subject(&record), signature), "{signature}");
        }
    }

    #[test]
    fn short_keys_are_refused_and_keys_are_not_printed() {
        assert_eq!(SigningKey::new(&[1; 8]).err(), Some(ShortKey));
        let key = SigningKey::new(&[7; 32]).expect("long enough");
        assert_eq!(format!("{key:?}"), "SigningKey(<redacted>)");
    }
}
