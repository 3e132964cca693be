//! The reconcile engine: one generic [`engine::reconcile`] over the
//! [`KeyResource`] trait that RootKey, ServiceAccountKey and APIKey implement.

pub mod engine;
pub mod kinds;
pub mod metrics;
pub mod runner;
pub mod secret;
pub mod status;

use std::sync::Arc;

use kube::runtime::events::{Recorder, Reporter};

pub use kinds::KeyResource;
pub use metrics::Metrics;

/// The one field manager keymint writes with (Secrets and status).
pub const FIELD_MANAGER: &str = "keymint";

/// Operator settings the reconcilers need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The namespace the operator runs in: RootKey Secrets go here by default.
    pub operator_namespace: String,
    /// Namespaces RootKey Secrets may be written to.
    pub root_key_namespaces: Vec<String>,
}

/// Shared state of all reconcilers.
pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
}

impl Context {
    pub fn new(client: kube::Client, metrics: Arc<Metrics>, settings: Settings) -> Self {
        let reporter = Reporter {
            controller: "keymint".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Context {
            client,
            recorder,
            metrics,
            settings,
        }
    }
}

/// Everything a reconcile can fail with. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("{0}")]
    Mint(#[source] crate::keys::TokenError),
    #[error("{kind} has no {field}")]
    MissingField {
        kind: &'static str,
        field: &'static str,
    },
    #[error("cannot serialise {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Error::Kube(error)
    }
}

impl Error {
    /// A fixed label for metrics (never a free-form string).
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "transport",
            Error::Mint(_) => "mint",
            Error::MissingField { .. } => "missing_field",
            Error::Serialize { .. } => "serialize",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
