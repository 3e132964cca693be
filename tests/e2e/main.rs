//! Integration tests against the real local control plane: one control plane
//! and one operator process per test binary; each test in its own namespace.

// Shared with tests/operator_process.rs; each test binary uses part of it.
#[allow(dead_code)]
mod support;

mod api_validation;
mod controller;
mod hostile;
