//! The reconcile engine: one generic [`engine::reconcile`] over the
//! [`KeyResource`] trait that RootKey, ServiceAccountKey and APIKey implement.

pub mod engine;
pub mod events;
pub mod holders;
pub mod kinds;
pub mod known;
pub mod lenient;
pub mod memory;
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
    /// Scheduled rotations are spread over up to this long before renewal.
    pub rotation_spread: std::time::Duration,
    /// Scheduled rotations started per second, at most (until renewal time).
    pub max_rotations_per_second: u32,
}

/// Shared state of all reconcilers.
pub struct Context {
    pub client: kube::Client,
    pub events: events::Publisher,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// Signs and verifies the records keymint keeps in Secrets.
    pub signing_key: SigningKey,
    pub pacing: Pacing,
    /// What keymint last wrote, so the watch echo of its own write does not
    /// trigger another reconcile.
    echoes: Echoes,
    /// The consumer workloads' caches, set once the controllers start.
    pub holders: std::sync::OnceLock<Arc<holders::Holders>>,
    /// Views of the managed Secrets listed at startup.
    pub known: known::KnownSecrets,
}

impl Context {
    pub fn new(
        client: kube::Client,
        metrics: Arc<Metrics>,
        settings: Settings,
        signing_key: SigningKey,
    ) -> Self {
        let pacing = Pacing::new(settings.max_rotations_per_second);
        let events =
            events::Publisher::new(client.clone(), "keymint", std::env::var("POD_NAME").ok());
        Context {
            client,
            events,
            metrics,
            settings,
            signing_key,
            pacing,
            echoes: Default::default(),
            holders: Default::default(),
            known: Default::default(),
        }
    }

    /// Remembers the version of a Secret keymint just wrote.
    pub fn record_own_write(&self, secret: &ObjectMeta) {
        self.echoes.record("Secret", secret);
    }

    /// Whether this Secret event is the echo of keymint's own last write (any
    /// later change by someone else has another resourceVersion).
    pub fn is_own_write(&self, secret: &ObjectMeta) -> bool {
        self.echoes.is_echo("Secret", secret)
    }

    /// Remembers the version of a key resource after keymint's status write.
    pub fn record_own_status(&self, kind: &str, resource: &ObjectMeta) {
        self.echoes.record(kind, resource);
    }

    /// Whether this key resource event is the echo of keymint's own status
    /// write: the reconcile that wrote it already acted on that version.
    pub fn is_own_status(&self, kind: &str, resource: &ObjectMeta) -> bool {
        self.echoes.is_echo(kind, resource)
    }
}

/// The resourceVersion each object had after keymint's last write to it, by
/// a hash of its kind, namespace and name (16 bytes an object). A
/// resourceVersion names one write in the whole cluster, so a hash collision
/// can only make an echo look new (one extra reconcile), never the reverse.
#[derive(Default)]
struct Echoes(std::sync::Mutex<std::collections::HashMap<u64, u64>>);

impl Echoes {
    fn object_key(kind: &str, object: &ObjectMeta) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        // A fixed hasher: the map lives as long as the process.
        let mut hasher =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .build_hasher();
        hasher.write(kind.as_bytes());
        hasher.write_u8(0);
        hasher.write(object.namespace.as_deref().unwrap_or_default().as_bytes());
        hasher.write_u8(0);
        hasher.write(object.name.as_deref().unwrap_or_default().as_bytes());
        hasher.finish()
    }

    fn version(object: &ObjectMeta) -> Option<u64> {
        object.resource_version.as_deref()?.parse().ok()
    }

    fn record(&self, kind: &str, object: &ObjectMeta) {
        if let Some(version) = Self::version(object) {
            let mut echoes = self.0.lock().unwrap_or_else(|p| p.into_inner());
            echoes.insert(Self::object_key(kind, object), version);
        }
    }

    fn is_echo(&self, kind: &str, object: &ObjectMeta) -> bool {
        let Some(version) = Self::version(object) else {
            return false;
        };
        let echoes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        echoes.get(&Self::object_key(kind, object)) == Some(&version)
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
