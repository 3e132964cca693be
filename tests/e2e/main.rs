//! Integration tests against the real local control plane: one control plane
//! and one operator process per test binary; each test in its own namespace.

mod api_validation;
mod controller;
mod hostile;
mod table;
