//! The managed Secrets as keymint found them when it started: each one's
//! metadata and the SHA-256 of its data values (never the values). After a
//! restart, the first reconcile of an up-to-date key is decided from its
//! view instead of a read of its Secret; anything else reads it as before.
//!
//! A view is only trusted while nothing says the Secret changed: the Secret
//! watch drops it at the first version that differs, the reconcile that uses
//! it consumes it, and a key that needs any write reads its Secret first. A
//! change the watch has not yet delivered wakes the key again when it is,
//! and that reconcile reads the Secret: a tampered Secret is never missed.
//!
//! Views are held as JSON in one buffer, indexed by a keyed hash of the
//! Secret's namespace and name, and parsed when taken. One buffer rather
//! than an allocation per view: the caches are filled while the views are
//! held, and allocations interleaved with theirs kept the freed views'
//! pages resident for good (a restart at 10,000 keys stayed 18 MiB above a
//! fresh start). The buffer goes back to the system once the last view is
//! taken; views no reconcile took are dropped after [`VIEW_LIFETIME`].

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta};
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::FIELD_MANAGER;
use super::lenient::Parsed;
use super::secret::{self, DataDigests};

/// A startup list longer than this is cut short: the views only save reads.
const LOAD_LIMIT: Duration = Duration::from_secs(30);
/// Secrets per page where the list is paged (a page is held whole).
const PAGE_SIZE: u32 = 50;
/// A keymint Secret's view is 1 to 3 KiB as JSON (more with a large
/// template); a Secret past this is read instead.
const MAX_VIEW_BYTES: usize = 16 * 1024;
/// All views together (about 100,000 keys' worth); Secrets listed past this
/// are read: anyone may label Secrets, and the views only save reads.
const MAX_VIEWS_BYTES: usize = 256 * 1024 * 1024;
/// keymint writes four data values; a Secret with many more is read.
const MAX_VIEW_DATA_ENTRIES: usize = 16;
/// Views not taken by then (Secrets no up-to-date key claims: a blocked
/// key's, a deleted key's) are dropped: by then every key has had its first
/// reconcile, and a later one reads its Secret.
pub const VIEW_LIFETIME: Duration = Duration::from_secs(120);

/// A Secret without its values.
#[derive(Serialize, Deserialize)]
pub struct KnownSecret {
    pub secret: Secret,
    pub data: DataDigests,
}

/// Where a view's JSON lies in the buffer, and a hash of the version it is of.
#[derive(Clone, Copy)]
struct HeldView {
    start: usize,
    end: usize,
    resource_version: u64,
}

#[derive(Default)]
struct Views {
    /// By the keyed hash of (namespace, name). The hash keys are random per
    /// process, so no tenant can make two Secrets collide on purpose; a view
    /// whose Secret is not the one asked for is never used.
    by_secret: HashMap<u64, HeldView>,
    buffer: Vec<u8>,
    hasher: RandomState,
    loaded_at: Option<Instant>,
}

#[derive(Default)]
pub struct KnownSecrets {
    views: Mutex<Views>,
}

impl KnownSecrets {
    /// Lists the managed Secrets of each scope (`None`: all namespaces),
    /// keeping a view of each: as a streaming list (one Secret at a time)
    /// where the API server has them, else paged. The first error ends a
    /// scope's list: the views only save reads, and the controllers wait.
    pub async fn load(&self, client: &kube::Client, scopes: &[Option<String>], labels: &str) {
        let started = std::time::Instant::now();
        self.lock().loaded_at = Some(started);
        for scope in scopes {
            let api: Api<Parsed<Secret>> = match scope {
                Some(namespace) => Api::namespaced(client.clone(), namespace),
                None => Api::all(client.clone()),
            };
            let streaming = watcher::Config::default().labels(labels).streaming_lists();
            let paged = watcher::Config::default()
                .labels(labels)
                .page_size(PAGE_SIZE);
            for config in [streaming, paged] {
                let left = LOAD_LIMIT.saturating_sub(started.elapsed());
                match tokio::time::timeout(left, self.list(api.clone(), config)).await {
                    Ok(Ok(())) => break,
                    Ok(Err(error)) => warn!(%error, "startup list of managed Secrets"),
                    Err(_) => {
                        warn!(
                            "startup list of managed Secrets cut short; keys not listed read their Secret"
                        );
                        return;
                    }
                }
            }
        }
        info!(
            secrets = self.len(),
            seconds = started.elapsed().as_secs_f64(),
            "managed Secrets listed"
        );
    }

    async fn list(
        &self,
        api: Api<Parsed<Secret>>,
        config: watcher::Config,
    ) -> Result<(), watcher::Error> {
        let mut events = std::pin::pin!(watcher::watcher(api, config));
        while let Some(event) = events.next().await {
            match event? {
                watcher::Event::InitApply(Parsed::Ok(found)) => self.keep(found),
                watcher::Event::InitDone => return Ok(()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Keeps the view of one listed Secret; its values are wiped here. Only
    /// a Secret that looks like keymint's own gets one, and only a small
    /// one: anyone may label a Secret, and the views must not let a tenant
    /// make the operator hold large objects (such Secrets are simply read).
    pub fn keep(&self, mut found: Secret) {
        let data = DataDigests::of(&found);
        secret::wipe(&mut found);
        found.data = None;
        found.string_data = None;
        // Only keymint's own entries are ever read (its owned fields).
        if let Some(entries) = found.metadata.managed_fields.as_mut() {
            entries.retain(|entry| entry.manager.as_deref() == Some(FIELD_MANAGER));
        }
        let signed = found
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(secret::RECORD_SIGNATURE));
        if found.type_.as_deref() != Some(secret::SECRET_TYPE)
            || !signed
            || data.values.len() > MAX_VIEW_DATA_ENTRIES
        {
            return;
        }
        let mut views = self.lock();
        let views = &mut *views;
        let metadata = &found.metadata;
        let (Some(namespace), Some(name)) = (&metadata.namespace, &metadata.name) else {
            return;
        };
        let key = views.key(namespace, name);
        let resource_version = views.version(metadata);
        let start = views.buffer.len();
        let view = KnownSecret {
            secret: found,
            data,
        };
        let written = serde_json::to_writer(&mut views.buffer, &view);
        let end = views.buffer.len();
        if written.is_err() || end - start > MAX_VIEW_BYTES || end > MAX_VIEWS_BYTES {
            views.buffer.truncate(start);
            return;
        }
        let held = HeldView {
            start,
            end,
            resource_version,
        };
        views.by_secret.insert(key, held);
    }

    /// The view of a Secret, consumed: it serves one reconcile at most.
    /// Taking the last one hands the memory of the views back.
    pub fn take(&self, namespace: &str, name: &str) -> Option<KnownSecret> {
        // The JSON is copied out and parsed after the lock is released:
        // every reconcile and the Secret watch take this lock.
        let (json, emptied) = {
            let mut views = self.lock();
            if views.by_secret.is_empty() {
                return None;
            }
            let key = views.key(namespace, name);
            let json = views
                .by_secret
                .remove(&key)
                .and_then(|held| views.buffer.get(held.start..held.end).map(<[u8]>::to_vec));
            (json, views.release_if_empty())
        };
        if emptied {
            super::memory::release_free_memory();
        }
        // keymint wrote this JSON itself: it parses; if not, the Secret is read.
        let view: KnownSecret = serde_json::from_slice(&json?).ok()?;
        let metadata = &view.secret.metadata;
        let its_own = metadata.namespace.as_deref() == Some(namespace)
            && metadata.name.as_deref() == Some(name);
        its_own.then_some(view)
    }

    /// The Secret watch saw this version: a view of another version goes.
    /// True if a view of this very version is held: the watch brings
    /// nothing the startup list did not (every key's first reconcile, woken
    /// by its own watch, judges that view), so it need not wake the key. A
    /// key woken a second time would find its view taken and read the Secret.
    pub fn seen(&self, metadata: &ObjectMeta) -> bool {
        let mut views = self.lock();
        if views.by_secret.is_empty() {
            return false;
        }
        let (Some(namespace), Some(name)) = (&metadata.namespace, &metadata.name) else {
            return false;
        };
        let key = views.key(namespace, name);
        let version = views.version(metadata);
        let Some(view) = views.by_secret.get(&key) else {
            return false;
        };
        if view.resource_version == version {
            return true;
        }
        views.by_secret.remove(&key);
        views.release_if_empty();
        false
    }

    /// Drops every view once they are older than `lifetime`.
    pub fn expire(&self, lifetime: Duration) {
        let mut views = self.lock();
        if views.loaded_at.is_some_and(|at| at.elapsed() >= lifetime) {
            views.by_secret.clear();
            views.release_if_empty();
        }
    }

    pub fn len(&self) -> usize {
        self.lock().by_secret.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Views> {
        // A panic elsewhere never leaves a half-written map (each change is
        // one insert or remove): the views stay usable.
        self.views
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Views {
    /// Where the view of the Secret `namespace/name` is filed.
    fn key(&self, namespace: &str, name: &str) -> u64 {
        self.hasher.hash_one((namespace, name))
    }

    /// The version a view is of, as it is kept.
    fn version(&self, metadata: &ObjectMeta) -> u64 {
        self.hasher.hash_one(metadata.resource_version.as_deref())
    }

    /// Frees the table and the buffer once no view is left; true if it did.
    fn release_if_empty(&mut self) -> bool {
        if !self.by_secret.is_empty()
            || (self.by_secret.capacity() == 0 && self.buffer.capacity() == 0)
        {
            return false;
        }
        self.by_secret = HashMap::new();
        self.buffer = Vec::new();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn listed(rv: &str) -> Secret {
        let mut found: Secret = serde_json::from_value(json!({
            "metadata": {"name": "billing", "namespace": "team", "resourceVersion": rv,
                "annotations": {"keymint.dev/record-signature": "s"},
                "managedFields": [
                    {"manager": "keymint", "operation": "Apply", "apiVersion": "v1"},
                    {"manager": "kubectl-edit", "operation": "Update", "apiVersion": "v1"}]},
            "type": "keymint.dev/key"
        }))
        .expect("secret");
        found.data = Some([("key".to_string(), ByteString(b"ak_x".to_vec()))].into());
        found
    }

    fn meta(rv: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some("billing".into()),
            namespace: Some("team".into()),
            resource_version: Some(rv.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_view_holds_digests_not_values_and_serves_once() {
        let known = KnownSecrets::default();
        known.keep(listed("7"));
        let view = known.take("team", "billing").expect("view");
        assert_eq!(view.secret.data, None);
        assert_eq!(
            view.data.values.get("key"),
            Some(&crate::keys::sha256_hex("ak_x"))
        );
        let managers: Vec<_> = view
            .secret
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|e| e.manager.as_deref())
            .collect();
        assert_eq!(managers, ["keymint"]);
        assert!(known.take("team", "billing").is_none(), "consumed");
    }

    #[test]
    fn only_small_secrets_that_look_like_keymints_get_a_view() {
        let known = KnownSecrets::default();
        let mut opaque = listed("7");
        opaque.type_ = Some("Opaque".into());
        known.keep(opaque);
        let mut unsigned = listed("7");
        unsigned.metadata.annotations = None;
        known.keep(unsigned);
        let mut large = listed("7");
        large
            .metadata
            .annotations
            .get_or_insert_default()
            .insert("team.example/notes".into(), "x".repeat(MAX_VIEW_BYTES));
        known.keep(large);
        let mut wide = listed("7");
        wide.data = Some(
            (0..=MAX_VIEW_DATA_ENTRIES)
                .map(|i| (format!("k{i}"), ByteString(vec![1])))
                .collect(),
        );
        known.keep(wide);
        assert!(known.is_empty(), "each of these is read, not viewed");
        known.keep(listed("7"));
        assert_eq!(known.len(), 1);
    }

    #[test]
    fn a_view_goes_once_the_watch_sees_another_version() {
        let known = KnownSecrets::default();
        known.keep(listed("7"));
        assert!(known.seen(&meta("7")), "the listed version is known");
        assert_eq!(known.len(), 1, "the same version keeps its view");
        assert!(!known.seen(&meta("8")), "another version is news");
        assert!(
            known.is_empty(),
            "a changed Secret is read, not judged by its view"
        );
    }

    #[test]
    fn views_no_reconcile_took_expire() {
        let known = KnownSecrets::default();
        known.lock().loaded_at = Some(Instant::now());
        known.keep(listed("7"));
        known.expire(Duration::from_secs(60));
        assert_eq!(known.len(), 1, "young views stay");
        known.expire(Duration::ZERO);
        assert!(known.is_empty());
        assert!(known.take("team", "billing").is_none());
    }

    #[test]
    fn the_last_view_taken_frees_the_buffer_and_a_view_serves_only_its_own_secret() {
        let known = KnownSecrets::default();
        known.keep(listed("7"));
        let mut other = listed("3");
        other.metadata.name = Some("reports".into());
        known.keep(other);
        assert!(known.take("team", "nothing").is_none());
        assert!(known.take("other-team", "billing").is_none());
        assert_eq!(known.len(), 2);
        let view = known.take("team", "reports").expect("view");
        assert_eq!(view.secret.metadata.resource_version.as_deref(), Some("3"));
        assert!(known.lock().buffer.capacity() > 0, "one view left");
        assert!(known.take("team", "billing").is_some());
        assert_eq!(known.lock().buffer.capacity(), 0, "nothing held");
    }
}
