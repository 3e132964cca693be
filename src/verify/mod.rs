//! `keymint verify`: the server that services (or their proxies) ask
//! whether a key is valid, over a ring loaded from a mounted file or
//! watched in its Secret, and the small library API a Rust service uses to
//! do the same in-process. The decisions are in [`crate::keyring`] (pure);
//! this module owns the I/O around them:
//!
//! - [`source`]: loading the ring (file mode polls a mounted Secret, watch
//!   mode watches the Secret) and swapping it whole, keeping the last good
//!   ring when a document is refused;
//! - [`http`]: the JSON and forward-auth endpoints, health and metrics;
//! - [`metrics`]: the server's Prometheus metrics.
//!
//! # In a Rust service
//!
//! ```no_run
//! # async fn example() -> Option<()> {
//! use std::time::Duration;
//! use keymint::verify::RingHandle;
//!
//! // Reloads when the mounted Secret changes; `current()` is `None` until
//! // the file first parses.
//! let ring = RingHandle::watch_file("/etc/keymint/ring/keyring.json", Duration::from_secs(1));
//! let current = ring.current()?;
//! let verdict = current.verify("ak_...", Some("models:read"), jiff::Timestamp::now());
//! if verdict.is_valid() {
//!     let id = verdict.member.map(|m| m.id.as_str());
//! }
//! # Some(())
//! # }
//! ```
//!
//! Or once, without a runtime: [`load_file`] (a path) or
//! [`Keyring::from_bytes`](crate::keyring::Keyring::from_bytes) (the
//! Secret's `keyring.json` bytes), then
//! [`Keyring::verify`](crate::keyring::Keyring::verify).

pub mod http;
pub mod metrics;
pub mod source;

pub use crate::keyring::{Keyring, Reason, Verdict};
pub use metrics::VerifyMetrics;
pub use source::{DEFAULT_POLL_INTERVAL, LoadError, Publisher, RingHandle, load_file};

/// The port `keymint verify` listens on by default.
pub const DEFAULT_PORT: u16 = 8081;
