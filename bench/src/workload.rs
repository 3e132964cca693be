//! What the benchmark creates and how it watches the outcome: baseline
//! Secrets shaped like keymint's, APIKeys, bounded-concurrency creation, and
//! one watch per kind that time-stamps each object's progress.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use keymint::api::ApiKey;
use keymint::controller::KeyResource;
use keymint::controller::secret::{self as layout, Claim, SecretContent};
use keymint::keys::plan::KeyRecord;
use keymint::keys::signature::SigningKey;
use keymint::keys::{truncate_to_second, try_mint_token, try_new_key_id};
use kube::api::{Api, ListParams, PartialObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::{Result, progress};

/// Label selector of the Secrets keymint manages.
pub fn managed_selector() -> String {
    format!("{}={}", layout::MANAGED_BY_LABEL, layout::MANAGED_BY)
}

pub fn key_name(index: usize) -> String {
    format!("key-{index:05}")
}

/// An APIKey named `key-<index>` with `spec` (permissions are added).
pub fn api_key(namespace: &str, index: usize, spec: &serde_json::Value) -> Result<ApiKey> {
    let mut spec = spec.clone();
    spec["permissions"] = serde_json::json!(["read"]);
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": keymint::api::API_VERSION,
        "kind": "APIKey",
        "metadata": {"name": key_name(index), "namespace": namespace},
        "spec": spec,
    }))?)
}

/// The baseline's Secret: keymint's own layout (the library's
/// `desired_secret`, same data, labels and annotations) for an APIKey with
/// the benchmark's spec; the owner reference keymint adds is replaced by an
/// annotation of the same length, since a reference to an owner that does
/// not exist would have the garbage collector delete the Secret mid-run.
pub struct BaselineSecrets {
    namespace: String,
    padding: String,
}

const PADDING_ANNOTATION: &str = "bench.keymint.dev/padding";

impl BaselineSecrets {
    pub fn new(namespace: &str) -> Result<BaselineSecrets> {
        let reference = OwnerReference {
            api_version: keymint::api::API_VERSION.into(),
            kind: "APIKey".into(),
            name: key_name(0),
            uid: "00000000-0000-0000-0000-000000000000".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let reference_len = serde_json::to_string(&vec![reference])?.len();
        let overhead = PADDING_ANNOTATION.len() + 6;
        Ok(BaselineSecrets {
            namespace: namespace.into(),
            padding: "x".repeat(reference_len.saturating_sub(overhead)),
        })
    }

    pub fn secret(&self, index: usize) -> Result<Secret> {
        Ok(self.key(index)?.secret)
    }

    /// The Secret of key `index` and the record it holds (what the status of
    /// a key issued to it reports).
    pub fn key(&self, index: usize) -> Result<BaselineKey> {
        let name = key_name(index);
        let owner_key = api_key(&self.namespace, index, &serde_json::json!({}))?;
        let token = try_mint_token(owner_key.token_prefix(), owner_key.common().entropy_bits())?;
        let now = truncate_to_second(Timestamp::now());
        let record = KeyRecord {
            id: try_new_key_id()?,
            sha256: token.sha256_hex(),
            created_at: now,
            updated_at: now,
            expires_at: Some(now + jiff::SignedDuration::from_hours(2160)),
            previous: None,
            rotations: 0,
            rotate_request: None,
            bound_uid: None,
            compromise: None,
        };
        let empty = BTreeMap::new();
        let owner = owner_key.owner_id().to_string();
        // Same size as keymint's signed record; the bench never verifies it.
        let signing_key = SigningKey::new(&[0; 32])?;
        let mut secret = layout::desired_secret(&SecretContent {
            claim: Claim {
                owner: &owner,
                owner_uid: "00000000-0000-0000-0000-000000000000",
                namespace: &self.namespace,
                name: &name,
            },
            signing_key: &signing_key,
            record: &record,
            key: token.expose(),
            previous_key: None,
            template_labels: &empty,
            template_annotations: &empty,
            extra_annotations: owner_key.secret_annotations(),
            owner_reference: None,
        });
        secret
            .annotations_mut()
            .insert(PADDING_ANNOTATION.into(), self.padding.clone());
        Ok(BaselineKey { secret, record })
    }
}

/// A baseline Secret and the key record it holds.
pub struct BaselineKey {
    pub secret: Secret,
    pub record: KeyRecord,
}

/// The size of an object as JSON, bytes.
pub fn json_size<T: Serialize>(object: &T) -> usize {
    serde_json::to_vec(object).map(|v| v.len()).unwrap_or(0)
}

/// A creation run.
#[derive(Debug, Clone)]
pub struct Created {
    pub started: Instant,
    pub elapsed: Duration,
    /// When each object's create returned, by index.
    pub done_at: Vec<Instant>,
    pub retries: u64,
}

const CREATE_ATTEMPTS: u32 = 6;

/// Creates `count` objects, `make(i)` for i in 0..count, keeping
/// `concurrency` requests in flight. Transient failures are retried.
pub async fn create_all<K, F>(
    api: &Api<K>,
    count: usize,
    concurrency: usize,
    make: F,
) -> Result<Created>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    F: Fn(usize) -> Result<K>,
{
    let objects = (0..count).map(&make).collect::<Result<Vec<K>>>()?;
    let started = Instant::now();
    let retries = std::sync::atomic::AtomicU64::new(0);
    let mut done_at = vec![started; count];
    let results: Vec<(usize, Instant)> = futures::stream::iter(objects.iter().enumerate())
        .map(|(index, object)| {
            let retries = &retries;
            async move {
                create_one(api, object, retries).await?;
                Ok::<_, crate::Error>((index, Instant::now()))
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    let elapsed = started.elapsed();
    for (index, at) in results {
        done_at[index] = at;
    }
    Ok(Created {
        started,
        elapsed,
        done_at,
        retries: retries.into_inner(),
    })
}

async fn create_one<K>(
    api: &Api<K>,
    object: &K,
    retries: &std::sync::atomic::AtomicU64,
) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match api.create(&PostParams::default(), object).await {
            Ok(_) => return Ok(()),
            // An earlier attempt went through after all.
            Err(kube::Error::Api(status)) if status.code == 409 && attempt > 1 => return Ok(()),
            Err(error) if attempt < CREATE_ATTEMPTS && transient(&error) => {
                retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(error) => {
                return Err(format!(
                    "create {}: {error}",
                    object.meta().name.as_deref().unwrap_or("?")
                )
                .into());
            }
        }
    }
}

/// Runs `request` until it succeeds, retrying transient failures (counted
/// in `retries`) up to [`CREATE_ATTEMPTS`] attempts in all.
pub async fn with_retries<T, F, Fut>(what: &str, retries: &AtomicU64, mut request: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match request().await {
            Ok(value) => return Ok(value),
            Err(error) if attempt < CREATE_ATTEMPTS && transient(&error) => {
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(error) => return Err(format!("{what}: {error}").into()),
        }
    }
}

fn transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// The number of `K` matching `selector` in the API's scope (paginated list).
pub async fn count_objects<K>(api: &Api<K>, selector: Option<&str>) -> Result<usize>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut params = ListParams::default().limit(500);
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    let mut total = 0;
    loop {
        let page = api.list_metadata(&params).await?;
        total += page.items.len();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(total),
        }
    }
}

/// A moment, by the monotonic clock and the wall clock.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub at: Instant,
    pub wall: Timestamp,
}

impl Stamp {
    pub fn now() -> Stamp {
        Stamp {
            at: Instant::now(),
            wall: Timestamp::now(),
        }
    }
}

/// The longest any one wait may take, progress or not.
pub const WAIT_CAP: Duration = Duration::from_secs(25 * 60);

/// Counts a tracker publishes after each event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// The initial list is done: changes from now on are seen.
    pub synced: bool,
    pub seen: usize,
    pub ready: usize,
    pub rotated: usize,
    /// Objects seen rotated more than once.
    pub rotated_twice: usize,
    pub watch_errors: u64,
}

/// What one watch learnt about one object.
pub trait Observation: Default + Send + 'static {
    type Object: Send + 'static;
    /// Folds in a new version of the object seen at `stamp`.
    fn observe(&mut self, object: &Self::Object, stamp: Stamp);
    fn ready(&self) -> bool;
    fn rotated(&self) -> bool;
    fn rotated_twice(&self) -> bool;
}

/// An APIKey's progress as seen in its status.
#[derive(Debug, Clone, Default)]
pub struct KeyProgress {
    /// First seen Ready=True for its current generation.
    pub ready: Option<Stamp>,
    /// First seen Ready with `status.rotations >= 1`.
    pub rotated: Option<Stamp>,
    /// `status.createdAt` when first seen rotated.
    pub rotated_created_at: Option<Timestamp>,
    /// The first key's `status.createdAt` and `status.expiresAt` (seen Ready
    /// with no rotation yet).
    pub first_created_at: Option<Timestamp>,
    pub first_expires_at: Option<Timestamp>,
    pub rotations: i64,
}

impl Observation for KeyProgress {
    type Object = ApiKey;

    fn observe(&mut self, key: &ApiKey, stamp: Stamp) {
        let Some(status) = key.status.as_ref() else {
            return;
        };
        let current = status.observed_generation == key.metadata.generation;
        let ready = current
            && status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready {
            return;
        }
        self.ready.get_or_insert(stamp);
        let rotations = status.rotations.unwrap_or(0);
        if rotations == 0 && self.first_created_at.is_none() {
            self.first_created_at = status.created_at.as_ref().map(|t| t.0);
            self.first_expires_at = status.expires_at.as_ref().map(|t| t.0);
        }
        self.rotations = self.rotations.max(rotations);
        if rotations >= 1 && self.rotated.is_none() {
            self.rotated = Some(stamp);
            self.rotated_created_at = status.created_at.as_ref().map(|t| t.0);
        }
    }

    fn ready(&self) -> bool {
        self.ready.is_some()
    }

    fn rotated(&self) -> bool {
        self.rotated.is_some()
    }

    fn rotated_twice(&self) -> bool {
        self.rotations >= 2
    }
}

/// A managed Secret's progress as seen in its annotations (metadata only).
#[derive(Debug, Clone, Default)]
pub struct SecretProgress {
    pub first_seen: Option<Stamp>,
    /// First seen with `keymint.dev/rotations >= 1`.
    pub rotated: Option<Stamp>,
    /// `keymint.dev/created-at` of the first rotated key seen.
    pub rotated_created_at: Option<Timestamp>,
    pub rotations: u64,
}

impl Observation for SecretProgress {
    type Object = PartialObjectMeta<Secret>;

    fn observe(&mut self, secret: &PartialObjectMeta<Secret>, stamp: Stamp) {
        self.first_seen.get_or_insert(stamp);
        let annotations = secret.annotations();
        let rotations: u64 = annotations
            .get(layout::ROTATIONS)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.rotations = self.rotations.max(rotations);
        if rotations >= 1 && self.rotated.is_none() {
            self.rotated = Some(stamp);
            self.rotated_created_at = annotations
                .get(layout::CREATED_AT)
                .and_then(|v| v.parse().ok());
        }
    }

    fn ready(&self) -> bool {
        self.first_seen.is_some()
    }

    fn rotated(&self) -> bool {
        self.rotated.is_some()
    }

    fn rotated_twice(&self) -> bool {
        self.rotations >= 2
    }
}

/// One watch, folding every event into a per-object [`Observation`].
pub struct Tracker<O: Observation> {
    state: Arc<Mutex<HashMap<String, O>>>,
    counts: watch::Receiver<Counts>,
    task: tokio::task::JoinHandle<()>,
    what: String,
}

impl<O: Observation> Tracker<O>
where
    O::Object: ResourceExt,
{
    fn start<S>(what: &str, stream: S) -> Tracker<O>
    where
        S: Stream<Item = Result<watcher::Event<O::Object>, watcher::Error>> + Send + 'static,
    {
        let state: Arc<Mutex<HashMap<String, O>>> = Arc::default();
        let (publish, counts) = watch::channel(Counts::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut current = Counts::default();
            while let Some(event) = stream.next().await {
                let stamp = Stamp::now();
                match event {
                    Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                        let mut state = shared.lock().unwrap_or_else(|p| p.into_inner());
                        let entry = state.entry(object.name_any());
                        let is_new = matches!(entry, std::collections::hash_map::Entry::Vacant(_));
                        let progress = entry.or_default();
                        let before = (
                            progress.ready(),
                            progress.rotated(),
                            progress.rotated_twice(),
                        );
                        progress.observe(&object, stamp);
                        current.seen += usize::from(is_new);
                        current.ready += usize::from(!before.0 && progress.ready());
                        current.rotated += usize::from(!before.1 && progress.rotated());
                        current.rotated_twice += usize::from(!before.2 && progress.rotated_twice());
                    }
                    Ok(watcher::Event::InitDone) => current.synced = true,
                    Ok(watcher::Event::Init | watcher::Event::Delete(_)) => {}
                    Err(_) => current.watch_errors += 1,
                }
                publish.send_replace(current);
            }
        });
        Tracker {
            state,
            counts,
            task,
            what: what.into(),
        }
    }

    pub fn counts(&self) -> Counts {
        *self.counts.borrow()
    }

    /// Waits until `done` holds, printing progress every 10 s. Gives up
    /// when the counts have not moved for `patience` (slow is measured, stuck
    /// is an error) or after [`WAIT_CAP`] in all.
    pub async fn wait(
        &mut self,
        goal: &str,
        patience: Duration,
        done: impl Fn(&Counts) -> bool,
    ) -> Result<Counts> {
        self.wait_at_most(goal, patience, WAIT_CAP, done).await
    }

    /// [`Tracker::wait`], giving up after `cap` in all.
    pub async fn wait_at_most(
        &mut self,
        goal: &str,
        patience: Duration,
        cap: Duration,
        done: impl Fn(&Counts) -> bool,
    ) -> Result<Counts> {
        let started = Instant::now();
        let mut last_report = started;
        let mut last_move = started;
        let mut last_counts = *self.counts.borrow();
        loop {
            let counts = *self.counts.borrow_and_update();
            if done(&counts) {
                return Ok(counts);
            }
            let now = Instant::now();
            if counts != last_counts {
                last_counts = counts;
                last_move = now;
            }
            if now.duration_since(last_move) >= patience || now.duration_since(started) >= cap {
                return Err(format!(
                    "{}: not {goal} after {:.0} s ({:.0} s without progress); last {counts:?}",
                    self.what,
                    now.duration_since(started).as_secs_f64(),
                    now.duration_since(last_move).as_secs_f64(),
                )
                .into());
            }
            if now.duration_since(last_report) >= Duration::from_secs(10) {
                progress(&format!("  {}: waiting for {goal}: {counts:?}", self.what));
                last_report = now;
            }
            if self.task.is_finished() {
                return Err(format!("{}: the watch ended", self.what).into());
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), self.counts.changed()).await;
        }
    }

    /// What the watch has seen so far (it goes on).
    pub fn snapshot(&self) -> HashMap<String, O>
    where
        O: Clone,
    {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops the watch and returns what it saw.
    pub fn finish(self) -> HashMap<String, O> {
        self.task.abort();
        std::mem::take(&mut *self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Watches the APIKeys in `namespace`.
pub fn track_keys(client: &kube::Client, namespace: &str) -> Tracker<KeyProgress> {
    let api = Api::<ApiKey>::namespaced(client.clone(), namespace);
    Tracker::start(
        &format!("APIKeys in {namespace}"),
        watcher(api, watcher::Config::default()).default_backoff(),
    )
}

/// Watches the metadata of the managed Secrets in `namespace`.
pub fn track_secrets(client: &kube::Client, namespace: &str) -> Tracker<SecretProgress> {
    // A PartialObjectMeta API makes metadata-only requests: no key material
    // crosses the wire for the benchmark.
    let api = Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), namespace);
    Tracker::start(
        &format!("Secrets in {namespace}"),
        watcher(api, watcher::Config::default().labels(&managed_selector())).default_backoff(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_secret_is_shaped_like_keymints() {
        let secrets = BaselineSecrets::new("ns").expect("template");
        let secret = secrets.secret(7).expect("secret");
        assert_eq!(secret.metadata.name.as_deref(), Some("key-00007"));
        assert_eq!(secret.type_.as_deref(), Some(keymint::api::SECRET_TYPE));
        let data = secret.data.as_ref().expect("data");
        assert!(data.contains_key("key") && data.contains_key("id"));
        let annotations = secret.annotations();
        assert!(annotations.contains_key(layout::KEY_ID));
        assert!(annotations.contains_key(PADDING_ANNOTATION));
        assert!(json_size(&secret) > 500);
    }

    #[test]
    fn key_progress_needs_a_current_ready_status() {
        let mut key = api_key("ns", 1, &serde_json::json!({"validFor": "1h"})).expect("key");
        key.metadata.generation = Some(1);
        let mut progress = KeyProgress::default();
        progress.observe(&key, Stamp::now());
        assert!(!progress.ready());
        key.status = Some(
            serde_json::from_value(serde_json::json!({
                "observedGeneration": 1, "rotations": 1, "createdAt": "2030-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "True", "reason": "KeyIssued",
                                "message": "", "lastTransitionTime": "2030-01-01T00:00:00Z"}]
            }))
            .expect("status"),
        );
        progress.observe(&key, Stamp::now());
        assert!(progress.ready() && progress.rotated() && !progress.rotated_twice());
        assert_eq!(
            progress.rotated_created_at.map(|t| t.as_second()),
            Some(
                "2030-01-01T00:00:00Z"
                    .parse::<Timestamp>()
                    .expect("t")
                    .as_second()
            )
        );
    }
}
