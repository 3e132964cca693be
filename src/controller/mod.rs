//! The reconcile engine: one generic [`engine::reconcile`] over the
//! [`KeyResource`] trait that RootKey, ServiceAccountKey and APIKey implement.

pub mod engine;
pub mod holders;
pub mod kinds;
pub mod lenient;
pub mod metrics;
pub mod owner;
pub mod pacing;
pub mod reason;
pub mod record_key;
pub mod ring;
pub mod runner;
pub mod secret;
pub mod status;

use std::sync::Arc;

use kube::api::ObjectMeta;
use kube::runtime::events::{Recorder, Reporter};

pub use kinds::KeyResource;
pub use metrics::Metrics;
use pacing::Pacing;

use crate::keys::signature::SigningKey;

/// The one field manager keymint writes with (Secrets and status).
pub const FIELD_MANAGER: &str = "keymint";

/// Operator settings the reconcilers need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The namespace the operator runs in: RootKey Secrets go here by default.
    pub operator_namespace: String,
    /// Namespaces RootKey Secrets may be written to.
    pub root_key_namespaces: Vec<String>,
    /// Most consumer workloads of one namespace keymint has rolling out at once.
    pub max_rollouts_per_namespace: usize,
}

/// Shared state of all reconcilers.
pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// Signs and verifies the records keymint keeps in Secrets.
    pub signing_key: SigningKey,
    pub pacing: Pacing,
    /// The resourceVersion of each Secret as keymint last wrote it, so the
    /// watch echo of its own write does not trigger another reconcile.
    own_writes: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// The consumer workloads' caches, set once the controllers start.
    pub holders: std::sync::OnceLock<Arc<holders::Holders>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        metrics: Arc<Metrics>,
        settings: Settings,
        signing_key: SigningKey,
    ) -> Self {
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
            signing_key,
            pacing: Pacing::default(),
            own_writes: Default::default(),
            holders: Default::default(),
        }
    }

    fn secret_key(secret: &ObjectMeta) -> String {
        format!(
            "{}/{}",
            secret.namespace.as_deref().unwrap_or_default(),
            secret.name.as_deref().unwrap_or_default()
        )
    }

    /// Remembers the version of a Secret keymint just wrote.
    pub fn record_own_write(&self, secret: &ObjectMeta) {
        if let Some(version) = &secret.resource_version {
            let mut writes = self.own_writes.lock().unwrap_or_else(|p| p.into_inner());
            writes.insert(Self::secret_key(secret), version.clone());
        }
    }

    /// Whether this Secret event is the echo of keymint's own last write (any
    /// later change by someone else has another resourceVersion).
    pub fn is_own_write(&self, secret: &ObjectMeta) -> bool {
        let writes = self.own_writes.lock().unwrap_or_else(|p| p.into_inner());
        secret.resource_version.is_some()
            && writes.get(&Self::secret_key(secret)) == secret.resource_version.as_ref()
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
