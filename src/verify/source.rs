//! Where the ring comes from and how a new one replaces the old: a mounted
//! file polled for changes, or a kube watch on the ring's one Secret. Both
//! hand bytes to a [`Publisher`], which parses them and swaps the current
//! `Arc<Keyring>` whole: a request keeps the ring it started with, and a
//! document that fails to parse leaves the last good ring in place.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{info, warn};

use super::metrics::VerifyMetrics;
use crate::keyring::{DOCUMENT_DATA_KEY, DocumentError, Keyring, MAX_DOCUMENT_BYTES};

/// How often file mode looks at the file by default. The kubelet updates a
/// mounted Secret by swapping a `..data` symlink, so no inotify event on
/// the file's path can be relied on; a stat per second costs nothing.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// File mode re-reads the file at least every this many polls even when
/// its metadata looks unchanged (a rewrite within the same mtime tick and
/// with the same length would otherwise be missed).
const FORCED_READ_EVERY: u32 = 30;

/// A handle on the current ring: cheap to clone, each clone sees every swap.
#[derive(Clone, Debug)]
pub struct RingHandle {
    rx: watch::Receiver<Option<Arc<Keyring>>>,
}

impl RingHandle {
    /// A handle on a ring that never changes (tests, or a service that
    /// loads once).
    pub fn fixed(ring: Keyring) -> RingHandle {
        let (tx, rx) = watch::channel(Some(Arc::new(ring)));
        // The value stays readable after the sender is gone.
        drop(tx);
        RingHandle { rx }
    }

    /// Polls the file at `path` every `interval` on the current tokio
    /// runtime, reloading when it changes, until every clone of the handle
    /// is dropped. Until the file first parses, [`RingHandle::current`] is `None`.
    pub fn watch_file(path: impl Into<PathBuf>, interval: Duration) -> RingHandle {
        let (publisher, handle) = Publisher::new(Arc::new(VerifyMetrics::default()));
        let (stop, shutdown) = watch::channel(false);
        let path = path.into();
        tokio::spawn(async move {
            poll_file(path, interval, publisher, shutdown).await;
            // Held until here: a dropped sender would read as a shutdown.
            drop(stop);
        });
        handle
    }

    /// The ring loaded now (`None` before any ring loaded). Hold the `Arc`
    /// for the whole of one request.
    pub fn current(&self) -> Option<Arc<Keyring>> {
        self.rx.borrow().clone()
    }

    pub fn is_loaded(&self) -> bool {
        self.rx.borrow().is_some()
    }

    /// Waits until a ring is loaded (returns at once if one is).
    pub async fn loaded(&mut self) -> Option<Arc<Keyring>> {
        self.rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|ring| ring.clone())
    }
}

/// Reads a ring document file (at most [`MAX_DOCUMENT_BYTES`]) and loads it.
pub fn load_file(path: &Path) -> Result<Keyring, LoadError> {
    let bytes = read_capped(path)?;
    Keyring::from_bytes(&bytes).map_err(LoadError::Document)
}

/// Why a ring could not be loaded. Never quotes the document.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the ring file: {0}")]
    Io(#[from] std::io::Error),
    #[error("the document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error(transparent)]
    Document(DocumentError),
}

fn read_capped(path: &Path) -> Result<Vec<u8>, LoadError> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    // One byte over the limit is enough to know it is too large.
    file.take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(LoadError::TooLarge);
    }
    Ok(bytes)
}

/// What the source last showed the publisher, so an unchanged state is
/// neither reloaded nor logged and counted again on every poll.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Content([u8; 32]),
    Absent(Absence),
}

/// Why a source has no document to offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absence {
    /// The file or Secret does not exist.
    Missing,
    /// The file exists but cannot be read (permissions, a directory, ...).
    Unreadable(std::io::ErrorKind),
    /// The Secret has no `keyring.json` data key.
    NoDataKey,
    /// Larger than [`MAX_DOCUMENT_BYTES`].
    TooLarge,
}

impl std::fmt::Display for Absence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Absence::Missing => write!(f, "not found"),
            Absence::Unreadable(kind) => write!(f, "unreadable ({kind})"),
            Absence::NoDataKey => write!(f, "no {DOCUMENT_DATA_KEY} data key"),
            Absence::TooLarge => write!(f, "larger than {MAX_DOCUMENT_BYTES} bytes"),
        }
    }
}

/// What offering a source's state did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Same as last time: nothing done.
    Unchanged,
    /// A new ring with this many members is current.
    Loaded { members: usize },
    /// The document was refused; the last good ring (if any) stays.
    Refused(DocumentError),
    /// No document; the last good ring (if any) stays.
    Absent(Absence),
}

/// The writing side of a [`RingHandle`]: decides what replaces the ring.
pub struct Publisher {
    tx: watch::Sender<Option<Arc<Keyring>>>,
    metrics: Arc<VerifyMetrics>,
    last_seen: Option<Seen>,
    /// Where the ring comes from, for log lines.
    origin: String,
}

impl Publisher {
    /// A publisher with no ring yet, and the handle readers use.
    pub fn new(metrics: Arc<VerifyMetrics>) -> (Publisher, RingHandle) {
        let (tx, rx) = watch::channel(None);
        (
            Publisher {
                tx,
                metrics,
                last_seen: None,
                origin: String::new(),
            },
            RingHandle { rx },
        )
    }

    fn with_origin(mut self, origin: String) -> Publisher {
        self.origin = origin;
        self
    }

    fn has_ring(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// Offers a document's bytes: loads them if they differ from what was
    /// last seen and parse; else keeps the current ring.
    pub fn offer(&mut self, bytes: &[u8]) -> Offer {
        let seen = Seen::Content(Sha256::digest(bytes).into());
        if self.last_seen.as_ref() == Some(&seen) {
            return Offer::Unchanged;
        }
        self.last_seen = Some(seen);
        match Keyring::from_bytes(bytes) {
            Ok(ring) => {
                let members = ring.len();
                let document = ring.document();
                info!(
                    origin = %self.origin,
                    ring = %format_args!("{}/{}", document.ring.namespace, document.ring.name),
                    members,
                    updated_at = %document.updated_at,
                    "loaded the key ring"
                );
                self.metrics.loaded(&ring);
                self.tx.send_replace(Some(Arc::new(ring)));
                Offer::Loaded { members }
            }
            Err(error) => {
                self.metrics.reload_failed();
                if self.has_ring() {
                    warn!(origin = %self.origin, %error, "refused the key ring document; keeping the last good ring");
                } else {
                    warn!(origin = %self.origin, %error, "refused the key ring document; no ring loaded yet");
                }
                Offer::Refused(error)
            }
        }
    }

    /// The source has no document. Before any ring loads this is waiting,
    /// not a failure; after, the last good ring stays and it is counted.
    pub fn absent(&mut self, absence: Absence) -> Offer {
        let seen = Seen::Absent(absence);
        if self.last_seen.as_ref() == Some(&seen) {
            return Offer::Unchanged;
        }
        self.last_seen = Some(seen);
        if self.has_ring() {
            self.metrics.reload_failed();
            warn!(origin = %self.origin, reason = %absence, "the key ring document is gone; keeping the last good ring");
        } else if absence == Absence::Missing {
            info!(origin = %self.origin, "waiting for the key ring document");
        } else {
            self.metrics.reload_failed();
            warn!(origin = %self.origin, reason = %absence, "cannot read the key ring document; no ring loaded yet");
        }
        Offer::Absent(absence)
    }

    fn offer_read(&mut self, read: Result<Vec<u8>, LoadError>) -> Offer {
        match read {
            Ok(bytes) => self.offer(&bytes),
            Err(LoadError::TooLarge) => self.absent(Absence::TooLarge),
            Err(LoadError::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => {
                self.absent(Absence::Missing)
            }
            Err(LoadError::Io(error)) => self.absent(Absence::Unreadable(error.kind())),
            Err(LoadError::Document(error)) => Offer::Refused(error),
        }
    }

    /// Offers a Secret's `keyring.json`.
    pub fn offer_secret(&mut self, secret: &Secret) -> Offer {
        match secret
            .data
            .as_ref()
            .and_then(|data| data.get(DOCUMENT_DATA_KEY))
        {
            Some(bytes) if bytes.0.len() > MAX_DOCUMENT_BYTES => self.absent(Absence::TooLarge),
            Some(bytes) => self.offer(&bytes.0),
            None => self.absent(Absence::NoDataKey),
        }
    }
}

/// What identifies a file's version cheaply: a kubelet swap or a rewrite
/// changes at least one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    // Follows symlinks: the kubelet's `..data` swap shows as a new inode.
    let metadata = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        len: metadata.len(),
        modified: metadata.modified().ok(),
        inode: metadata.ino(),
    })
}

/// File mode: looks at `path` every `interval` until `shutdown` or until
/// every handle is dropped.
pub async fn poll_file(
    path: PathBuf,
    interval: Duration,
    publisher: Publisher,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut publisher = publisher.with_origin(path.display().to_string());
    let mut last: Option<Fingerprint> = None;
    let mut polls_since_read = 0u32;
    loop {
        let now = fingerprint(&path);
        polls_since_read += 1;
        if now.is_none() || now != last || polls_since_read >= FORCED_READ_EVERY {
            polls_since_read = 0;
            let reading = path.clone();
            let read = tokio::task::spawn_blocking(move || read_capped(&reading))
                .await
                .unwrap_or_else(|_| Err(LoadError::Io(std::io::Error::other("read task failed"))));
            publisher.offer_read(read);
            last = now;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = publisher.tx.closed() => return,
        }
    }
}

/// Watch mode: a watch on the one Secret `name` in `namespace` (a field
/// selector, so `get`/`list`/`watch` on that Secret by `resourceNames`
/// suffice), until `shutdown`.
pub async fn watch_secret(
    client: kube::Client,
    namespace: String,
    name: String,
    publisher: Publisher,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut publisher = publisher.with_origin(format!("secret {namespace}/{name}"));
    let api: kube::Api<Secret> = kube::Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    // Whether the current (re-)list found the Secret; if not, it is missing.
    let mut listed = false;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match event {
            Some(Ok(Event::Init)) => listed = false,
            Some(Ok(Event::InitApply(secret) | Event::Apply(secret))) => {
                listed = true;
                publisher.offer_secret(&secret);
            }
            Some(Ok(Event::InitDone)) => {
                if !listed {
                    publisher.absent(Absence::Missing);
                }
            }
            Some(Ok(Event::Delete(_))) => {
                publisher.absent(Absence::Missing);
            }
            // kube_runtime's watcher errors carry an API status or a decode
            // position, never an object's body.
            Some(Err(error)) => warn!(%error, "watching the key ring Secret"),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::{Issuer, Member, MemberKind, MemberState, RingDocument, RingRef};

    fn document(keys: &[&str]) -> Vec<u8> {
        let members = keys
            .iter()
            .enumerate()
            .map(|(index, key)| Member {
                id: format!("K{index}"),
                sha256: crate::keys::sha256_hex(key),
                kind: MemberKind::ApiKey,
                issuer: Issuer {
                    namespace: Some("client".into()),
                    name: "billing".into(),
                    service_account: None,
                },
                permissions: vec!["read".into()],
                not_before: "2026-01-01T00:00:00Z".into(),
                expires_at: None,
                state: MemberState::Current,
            })
            .collect();
        RingDocument::new(
            RingRef {
                namespace: "svc".into(),
                name: "ring".into(),
            },
            "2026-01-01T00:00:00Z".into(),
            members,
        )
        .to_bytes()
    }

    #[test]
    fn a_bad_document_keeps_the_last_good_ring_and_is_counted_once() {
        let metrics = Arc::new(VerifyMetrics::default());
        let (mut publisher, handle) = Publisher::new(metrics.clone());
        assert_eq!(
            publisher.absent(Absence::Missing),
            Offer::Absent(Absence::Missing)
        );
        assert!(!handle.is_loaded());
        let good = document(&["a", "b"]);
        assert_eq!(publisher.offer(&good), Offer::Loaded { members: 2 });
        assert_eq!(publisher.offer(&good), Offer::Unchanged);
        let before = handle.current().expect("loaded");
        assert!(matches!(publisher.offer(b"{oops"), Offer::Refused(_)));
        assert_eq!(publisher.offer(b"{oops"), Offer::Unchanged);
        let after = handle.current().expect("still loaded");
        assert!(Arc::ptr_eq(&before, &after), "the last good ring stays");
        assert_eq!(
            publisher.absent(Absence::Missing),
            Offer::Absent(Absence::Missing)
        );
        assert!(handle.is_loaded());
        let text = metrics.encode().expect("encode");
        assert!(
            text.contains("keymint_verify_reload_failures_total 2"),
            "{text}"
        );
        assert!(text.contains("keymint_verify_ring_loads_total 1"), "{text}");
        assert!(text.contains("keymint_verify_ring_members 2"), "{text}");
        // The same good bytes after a failure load again.
        assert_eq!(publisher.offer(&good), Offer::Loaded { members: 2 });
    }

    #[test]
    fn a_request_keeps_the_ring_it_started_with() {
        let (mut publisher, handle) = Publisher::new(Arc::new(VerifyMetrics::default()));
        publisher.offer(&document(&["a"]));
        let held = handle.current().expect("loaded");
        publisher.offer(&document(&["a", "b"]));
        assert_eq!(held.len(), 1);
        assert_eq!(handle.current().map(|r| r.len()), Some(2));
    }

    #[tokio::test]
    async fn file_mode_loads_reloads_and_survives_a_bad_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keyring.json");
        let handle = RingHandle::watch_file(&path, Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!handle.is_loaded());
        std::fs::write(&path, document(&["a", "b"])).expect("write");
        let wait = |want: usize| {
            let handle = handle.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while handle.current().map(|r| r.len()) != Some(want) {
                    assert!(tokio::time::Instant::now() < deadline, "no ring of {want}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        wait(2).await;
        std::fs::write(&path, b"not json").expect("write");
        std::fs::write(&path, document(&["a"])).expect("write");
        wait(1).await;
        assert!(load_file(&path).is_ok());
    }

    fn secret(resource_version: &str, bytes: Option<Vec<u8>>) -> serde_json::Value {
        let mut secret = Secret::default();
        secret.metadata.name = Some("ring".into());
        secret.metadata.namespace = Some("svc".into());
        secret.metadata.resource_version = Some(resource_version.into());
        secret.data = bytes.map(|bytes| {
            [(
                DOCUMENT_DATA_KEY.to_string(),
                k8s_openapi::ByteString(bytes),
            )]
            .into_iter()
            .collect()
        });
        let mut value = serde_json::to_value(secret).expect("secret");
        value["apiVersion"] = "v1".into();
        value["kind"] = "Secret".into();
        value
    }

    async fn wait_for(handle: &RingHandle, members: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while handle.current().map(|r| r.len()) != Some(members) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no ring of {members}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Watch mode against a mocked API server: one Secret by field
    /// selector, listed then watched; a change swaps the ring, a deletion
    /// keeps the last good one.
    #[tokio::test]
    async fn watch_mode_follows_the_one_secret() {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, mut api) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let metrics = Arc::new(VerifyMetrics::default());
        let (publisher, handle) = Publisher::new(metrics.clone());
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(watch_secret(
            client,
            "svc".into(),
            "ring".into(),
            publisher,
            shutdown,
        ));
        let reply = |body: Vec<u8>| {
            Response::builder()
                .body(Body::from(body))
                .expect("response")
        };

        let (request, respond) = api.next_request().await.expect("the list");
        assert_eq!(request.uri().path(), "/api/v1/namespaces/svc/secrets");
        let query = request.uri().query().unwrap_or("").to_string();
        assert!(
            query.contains("fieldSelector=metadata.name%3Dring"),
            "{query}"
        );
        assert!(!query.contains("watch=true"), "{query}");
        let list = serde_json::json!({
            "apiVersion": "v1", "kind": "SecretList", "metadata": {"resourceVersion": "1"},
            "items": [secret("1", Some(document(&["a"])))]
        });
        respond.send_response(reply(serde_json::to_vec(&list).expect("list")));
        wait_for(&handle, 1).await;

        let (request, respond) = api.next_request().await.expect("the watch");
        let query = request.uri().query().unwrap_or("").to_string();
        assert!(query.contains("watch=true"), "{query}");
        assert!(
            query.contains("fieldSelector=metadata.name%3Dring"),
            "{query}"
        );
        let mut events = Vec::new();
        for (kind, object) in [
            ("MODIFIED", secret("2", Some(document(&["a", "b"])))),
            ("MODIFIED", secret("3", Some(b"{not a ring".to_vec()))),
            ("DELETED", secret("4", None)),
        ] {
            serde_json::to_writer(
                &mut events,
                &serde_json::json!({"type": kind, "object": object}),
            )
            .expect("event");
            events.push(b'\n');
        }
        respond.send_response(reply(events));
        wait_for(&handle, 2).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !metrics
            .encode()
            .expect("encode")
            .contains("keymint_verify_reload_failures_total 2")
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "both failures counted"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            handle.current().map(|r| r.len()),
            Some(2),
            "the last good ring stays"
        );
        let _ = stop.send(true);
        task.await.expect("the watch task ends on shutdown");
    }
}
