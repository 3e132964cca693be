//! Key rings: what the services that check keys load. Pure, no I/O.
//!
//! - [`document`]: the versioned ring document keymint writes into the ring's
//!   Secret (ids, hashes, permissions, issuers, validity; never a key), built
//!   deterministically from the member keys;
//! - [`consent`]: whether a ring accepts a key from a namespace (both sides
//!   must consent: the key names the ring, the ring accepts the namespace);
//! - [`membership`]: which keys a ring lists (and refuses), from the keys
//!   that name it and its earlier document;
//! - [`verify`]: checking a presented key against a loaded ring, with a
//!   machine-readable reason, in time independent of the stored hashes.

pub mod consent;
pub mod document;
pub mod membership;
pub mod verify;

pub use consent::{AllowedFrom, accepts};
pub use document::{
    DOCUMENT_DATA_KEY, DOCUMENT_VERSION, DocumentError, Issuer, MAX_DOCUMENT_BYTES, MAX_MEMBERS,
    Member, MemberKind, MemberState, RingDocument, RingRef, SECRET_BUDGET_BYTES,
};
pub use verify::{Keyring, Reason, Verdict, grants};
