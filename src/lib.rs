//! keymint: a Kubernetes operator that mints API keys into Secrets and rotates them.
// Denied everywhere; the one exception is `controller::memory` (a libc call).
#![deny(unsafe_code)]

pub mod api;
pub mod controller;
pub mod holder;
pub mod keyring;
pub mod keys;
pub mod rollout;
pub mod server;
pub mod telemetry;
pub mod verify;
