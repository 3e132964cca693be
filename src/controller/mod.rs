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
        self.echoes
            .record_recent(kind, resource, std::time::Instant::now());
    }

    /// Whether this key resource event is the echo of keymint's own status
    /// write: the reconcile that wrote it already acted on that version.
    pub fn is_own_status(&self, kind: &str, resource: &ObjectMeta) -> bool {
        self.echoes.is_echo(kind, resource)
    }

    /// Whether this cached key resource predates keymint's own last status
    /// write: its cache has not caught up yet (the watch event of the write
    /// is still on its way), so its status is not what the server holds.
    pub fn is_status_behind(&self, kind: &str, resource: &ObjectMeta) -> bool {
        self.echoes
            .is_behind(kind, resource, std::time::Instant::now())
    }
}

/// The resourceVersion each object had after keymint's last write to it, by
/// a hash of its kind, namespace and name (16 bytes an object). A
/// resourceVersion names one write in the whole cluster, so a hash collision
/// can only make an echo look new (one extra reconcile) or a cached object
/// look behind (a short wait), never hide a change. The hasher's keys are
/// drawn per process: names cannot be crafted to collide.
#[derive(Default)]
struct Echoes {
    versions: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
    /// keymint's status writes of the last [`CATCH_UP`], with when: a cache
    /// is waited for only that long (a watch that does not deliver, after
    /// an outage say, must never hold a key back). Pruned as it grows.
    recent: std::sync::Mutex<std::collections::HashMap<u64, (u64, std::time::Instant)>>,
    hasher: std::hash::RandomState,
}

/// How long a cache is given to deliver keymint's own status write.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);
/// Recent writes held before the old ones are pruned.
const RECENT_PRUNE_AT: usize = 1024;

impl Echoes {
    fn object_key(&self, kind: &str, object: &ObjectMeta) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = self.hasher.build_hasher();
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
            let key = self.object_key(kind, object);
            let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
            versions.insert(key, version);
        }
    }

    fn recorded(&self, kind: &str, object: &ObjectMeta) -> Option<u64> {
        let key = self.object_key(kind, object);
        let versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        versions.get(&key).copied()
    }

    fn is_echo(&self, kind: &str, object: &ObjectMeta) -> bool {
        Self::version(object).is_some_and(|version| self.recorded(kind, object) == Some(version))
    }

    /// Notes keymint's status write for [`Echoes::is_behind`].
    fn record_recent(&self, kind: &str, object: &ObjectMeta, now: std::time::Instant) {
        let Some(version) = Self::version(object) else {
            return;
        };
        let key = self.object_key(kind, object);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= RECENT_PRUNE_AT {
            recent.retain(|_, (_, at)| now.duration_since(*at) < CATCH_UP);
            recent.shrink_to(RECENT_PRUNE_AT);
        }
        recent.insert(key, (version, now));
    }

    /// The object is older than keymint's own status write of the last
    /// [`CATCH_UP`] (etcd's revisions only grow, and a write by anyone else
    /// comes later still).
    fn is_behind(&self, kind: &str, object: &ObjectMeta, now: std::time::Instant) -> bool {
        let Some(cached) = Self::version(object) else {
            return false;
        };
        let key = self.object_key(kind, object);
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .get(&key)
            .is_some_and(|(written, at)| cached < *written && now.duration_since(*at) < CATCH_UP)
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

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::Echoes;

    fn meta(namespace: &str, name: &str, version: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            resource_version: Some(version.into()),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_version_older_than_keymints_last_write_is_behind_and_only_that_one_an_echo() {
        let echoes = Echoes::default();
        let written = std::time::Instant::now();
        echoes.record("APIKey", &meta("team", "billing", "20"));
        echoes.record_recent("APIKey", &meta("team", "billing", "20"), written);
        let judged = |version| {
            let object = meta("team", "billing", version);
            (
                echoes.is_behind("APIKey", &object, written),
                echoes.is_echo("APIKey", &object),
            )
        };
        assert_eq!(judged("19"), (true, false));
        assert_eq!(judged("20"), (false, true));
        // Someone else's later write.
        assert_eq!(judged("21"), (false, false));
        // Not a number: never behind, never an echo.
        assert_eq!(judged("x"), (false, false));
        // Another object, another kind: nothing recorded for them.
        assert!(!echoes.is_behind("APIKey", &meta("team", "other", "1"), written));
        assert!(!echoes.is_behind("Secret", &meta("team", "billing", "1"), written));
        assert!(!echoes.is_behind("APIKey", &meta("other", "billing", "1"), written));
        // A cache that has not caught up within CATCH_UP is no longer waited for.
        let later = written + super::CATCH_UP;
        assert!(!echoes.is_behind("APIKey", &meta("team", "billing", "19"), later));
    }
}
