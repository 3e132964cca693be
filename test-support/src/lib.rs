//! What keymint's test binaries (and testenv's smoke tests) share, so no test
//! file copies another's helpers: one module per concern, each re-exported
//! here so a test writes `use keymint_test_support::*;`.
//!
//! - [`process`]: the `keymint run` process, signals, and its HTTP endpoints;
//! - [`cluster`]: the shared control plane with keymint's CRDs and namespaces,
//!   the shared operator, CRD install, "create unless it exists", server-side
//!   apply, and a ServiceAccount's kubeconfig;
//! - [`builders`]: manifests of the three kinds and the objects around them;
//! - [`waits`]: reading a key's state (Ready, Events, Secret fields) and
//!   polling with a deadline until it is as expected;
//! - [`audit`]: counting the API server's audit events by user, verb and object;
//! - [`raw`]: objects as raw JSON, for what typed clients cannot parse;
//! - [`helm`]: the chart and `bin/helm`;
//! - [`verify`]: the `keymint verify` process and HTTP requests to it;
//! - [`node`]: the real node, the operator image on it, the README's Helm
//!   install commands, Pods and what their processes run as;
//! - `argocd` (feature `argocd`): Argo CD's Lua sandbox and keymint's
//!   customizations and fixtures for it;
//! - [`argocd_instance`]: a real Argo CD (`make argocd`) in its own network
//!   namespace next to a control plane, and a local git repository for it.

#[cfg(feature = "argocd")]
pub mod argocd;
pub mod argocd_instance;
pub mod audit;
pub mod builders;
pub mod cluster;
pub mod helm;
pub mod node;
pub mod process;
pub mod raw;
pub mod verify;
pub mod waits;

pub use audit::*;
pub use builders::*;
pub use cluster::*;
pub use process::*;
pub use raw::*;
pub use waits::*;

/// Polls with a deadline; re-exported so a test needs one import.
pub use keymint_testenv::eventually;
