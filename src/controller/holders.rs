//! The holder side, with I/O: the caches of Deployments, StatefulSets and
//! DaemonSets; the assessment of a key's consumers that the engine uses to
//! release the previous key; and the rollout controller, which sets
//! keymint's pod-template annotations on a workload for every key feeding
//! it, by server-side apply as keymint's own field manager, once per burst
//! (the controller is debounced) and at most `max_rollouts_per_namespace`
//! workloads rolling per namespace. The decisions are in [`crate::rollout`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;
use tracing::{debug, info};

use super::lenient::{Parsed, Trim};
use super::{Context, Error, FIELD_MANAGER, KeyResource, Result};
use crate::api::{
    ApiKey, Consumer, ConsumerKind, ConsumerState, ConsumerStatus, ServiceAccountKey,
};
use crate::rollout::{
    self, Assessment, Candidate, Feed, Workload, annotation_key, references_secret,
};

/// Workload metadata keymint never reads: annotations (a last-applied
/// configuration can be large) and managedFields. Labels stay (selectors).
macro_rules! trim_workload {
    ($($kind:ty),*) => {$(
        impl Trim for $kind {
            fn trim(metadata: &mut ObjectMeta) {
                metadata.managed_fields = None;
                metadata.annotations = None;
            }
        }
    )*};
}
trim_workload!(Deployment, StatefulSet, DaemonSet);

/// One workload kind's cache in one watch scope, and the channel that asks
/// its rollout controller to look at a workload.
pub struct KindCache<W: Workload> {
    pub store: Store<Parsed<W>>,
    pub nudge: UnboundedSender<ObjectRef<Parsed<W>>>,
    /// Turns true once the store has its first full list.
    pub listed: tokio::sync::watch::Receiver<bool>,
}

/// The three kinds' caches of one watch scope (all namespaces, or one).
pub struct ScopeHolders {
    pub namespace: Option<String>,
    pub deployments: KindCache<Deployment>,
    pub stateful_sets: KindCache<StatefulSet>,
    pub daemon_sets: KindCache<DaemonSet>,
}

/// Every scope's caches.
pub struct Holders {
    scopes: Vec<ScopeHolders>,
}

/// What one key needs assessed.
pub struct KeyFeed<'a> {
    pub namespace: &'a str,
    pub secret_name: &'a str,
    pub annotation: &'a str,
    pub key_id: &'a str,
    pub consumers: &'a [Consumer],
}

impl Holders {
    pub fn new(scopes: Vec<ScopeHolders>) -> Self {
        Holders { scopes }
    }

    /// Every cache has its first full list: before that, a missing workload
    /// proves nothing.
    fn listed(&self) -> bool {
        self.scopes.iter().all(|scope| {
            *scope.deployments.listed.borrow()
                && *scope.stateful_sets.listed.borrow()
                && *scope.daemon_sets.listed.borrow()
        })
    }

    fn scope(&self, namespace: &str) -> Option<&ScopeHolders> {
        self.scopes
            .iter()
            .find(|scope| scope.namespace.as_deref().is_none_or(|n| n == namespace))
    }

    /// What the key's consumers run; None while the caches are loading or
    /// outside every watch scope.
    pub fn assess(&self, feed: &KeyFeed<'_>) -> Option<Assessment> {
        if !self.listed() {
            return None;
        }
        let scope = self.scope(feed.namespace)?;
        let mut candidates = candidates_of(&scope.deployments, feed);
        candidates.extend(candidates_of(&scope.stateful_sets, feed));
        candidates.extend(candidates_of(&scope.daemon_sets, feed));
        Some(rollout::assess(feed.consumers, &candidates))
    }

    /// Asks the rollout controllers to look at the consumers that do not
    /// carry the key's current id yet.
    pub fn nudge(&self, namespace: &str, statuses: &[ConsumerStatus]) {
        let Some(scope) = self.scope(namespace) else {
            return;
        };
        for status in statuses
            .iter()
            .filter(|s| s.state == ConsumerState::Pending)
        {
            let name = status.name.as_str();
            // A closed channel means the controllers are stopping.
            let _ = match status.kind {
                ConsumerKind::Deployment => scope
                    .deployments
                    .nudge
                    .unbounded_send(ObjectRef::new(name).within(namespace))
                    .is_ok(),
                ConsumerKind::StatefulSet => scope
                    .stateful_sets
                    .nudge
                    .unbounded_send(ObjectRef::new(name).within(namespace))
                    .is_ok(),
                ConsumerKind::DaemonSet => scope
                    .daemon_sets
                    .nudge
                    .unbounded_send(ObjectRef::new(name).within(namespace))
                    .is_ok(),
            };
        }
    }

    /// Workloads of `namespace` whose latest keymint template has not
    /// finished rolling out, as the caches see them.
    fn rolling_in(&self, namespace: &str) -> BTreeSet<Rolling> {
        let Some(scope) = self.scope(namespace) else {
            return BTreeSet::new();
        };
        let mut rolling = rolling_of(&scope.deployments, namespace);
        rolling.extend(rolling_of(&scope.stateful_sets, namespace));
        rolling.extend(rolling_of(&scope.daemon_sets, namespace));
        rolling
    }
}

/// A workload rolling out: its kind and name.
type Rolling = (ConsumerKind, String);

/// The workloads of one kind in the key's namespace that its consumers name.
fn candidates_of<W: Workload>(cache: &KindCache<W>, feed: &KeyFeed<'_>) -> Vec<Candidate> {
    if !feed.consumers.iter().any(|c| c.kind == W::KIND) {
        return Vec::new();
    }
    cache
        .store
        .state()
        .iter()
        .filter_map(|workload| workload.ok())
        .filter(|workload| workload.meta().namespace.as_deref() == Some(feed.namespace))
        .filter_map(|workload| {
            let (name, labels) = (workload.name_any(), workload.labels());
            feed.consumers
                .iter()
                .any(|c| rollout::selects(c, W::KIND, &name, labels))
                .then(|| (workload, name, labels.clone()))
        })
        .map(|(workload, name, labels)| Candidate {
            kind: W::KIND,
            name,
            labels,
            holder: workload
                .template()
                .and_then(|t| t.spec.as_ref())
                .is_some_and(|spec| !references_secret(spec, feed.secret_name).is_empty()),
            key_id: rollout::template_annotations(workload)
                .get(feed.annotation)
                .cloned(),
            progress: rollout::progress(workload, feed.annotation, feed.key_id),
        })
        .collect()
}

fn carries_keymint_annotation<W: Workload>(workload: &W) -> bool {
    rollout::template_annotations(workload)
        .keys()
        .any(|key| key.starts_with(rollout::template::ANNOTATION_PREFIX))
}

fn rolling_of<W: Workload>(cache: &KindCache<W>, namespace: &str) -> BTreeSet<Rolling> {
    cache
        .store
        .state()
        .iter()
        .filter_map(|workload| workload.ok())
        .filter(|w| w.meta().namespace.as_deref() == Some(namespace))
        .filter(|w| carries_keymint_annotation(*w) && !rollout::rolled_out(*w))
        .map(|w| (W::KIND, w.name_any()))
        .collect()
}

/// Shared state of the rollout controllers.
pub struct RolloutContext {
    pub ctx: Arc<Context>,
    pub holders: Arc<Holders>,
    pub api_keys: Vec<Store<Parsed<ApiKey>>>,
    pub account_keys: Vec<Store<Parsed<ServiceAccountKey>>>,
    /// Wakes the key controllers (same order as the stores).
    pub wake_api_keys: Vec<UnboundedSender<ObjectRef<Parsed<ApiKey>>>>,
    pub wake_account_keys: Vec<UnboundedSender<ObjectRef<Parsed<ServiceAccountKey>>>>,
    /// Rollouts keymint started lately, by namespace: the caches show a
    /// write only after its watch event, and many workloads decide at once
    /// after a burst. Deciding and writing under the namespace's lock,
    /// counting these too, keeps its limit; one namespace's slow write never
    /// holds up another's.
    pub started: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Started>>>>,
}

/// A namespace's rollouts started lately, with when.
pub type Started = HashMap<Rolling, Instant>;

impl RolloutContext {
    /// The lock of `namespace`'s recent starts (namespaces with none left and
    /// no one holding their lock are forgotten).
    fn starts_in(&self, namespace: &str) -> Arc<tokio::sync::Mutex<Started>> {
        let mut all = self.started.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|_, starts| {
            Arc::strong_count(starts) > 1
                || starts
                    .try_lock()
                    .is_ok_and(|s| s.values().any(|at| at.elapsed() < START_MEMORY))
        });
        all.entry(namespace.to_string()).or_default().clone()
    }
}

/// How long a rollout keymint started counts as rolling without the caches'
/// word (far longer than a watch event takes).
const START_MEMORY: Duration = Duration::from_secs(10);

/// A workload held back by its namespace's rollout limit looks again after this.
const HELD_BACK_REQUEUE: Duration = Duration::from_secs(5);
/// Nothing to do: look again now and then (the key controllers also nudge).
const IDLE_REQUEUE: Duration = Duration::from_secs(300);

/// The keys of `stores` in `namespace` that name the workload, with the
/// feed of each whose Secret the pod template reads; wakes them all (their
/// status reports this workload).
fn keys_feeding<K: KeyResource, W: Workload>(
    stores: &[Store<Parsed<K>>],
    wakers: &[UnboundedSender<ObjectRef<Parsed<K>>>],
    workload: &W,
) -> Vec<Feed> {
    let namespace = workload.meta().namespace.clone().unwrap_or_default();
    let name = workload.name_any();
    let labels = workload.labels().clone();
    let pod_spec = workload.template().and_then(|t| t.spec.as_ref());
    let mut feeds = Vec::new();
    for (store, waker) in stores.iter().zip(wakers) {
        for key in store.state() {
            let Some(key) = key.ok() else { continue };
            if key.meta().namespace.as_deref() != Some(namespace.as_str())
                || !key
                    .consumers()
                    .iter()
                    .any(|c| rollout::selects(c, W::KIND, &name, &labels))
            {
                continue;
            }
            let _ = waker.unbounded_send(ObjectRef::new(&key.name_any()).within(&namespace));
            let secret_name = key.common().secret_name(&key.name_any()).to_string();
            let reads =
                pod_spec.is_some_and(|spec| !references_secret(spec, &secret_name).is_empty());
            let id = key.key_status().and_then(|s| s.id.clone());
            if let (true, Some(key_id)) = (reads, id) {
                feeds.push(Feed {
                    annotation: annotation_key(&K::kind(&()), &namespace, &key.name_any()),
                    key_id,
                });
            }
        }
    }
    feeds
}

/// Sets every feeding key's id on the workload's pod template, if one differs.
pub async fn reconcile<W>(workload: Arc<Parsed<W>>, rc: Arc<RolloutContext>) -> Result<Action>
where
    W: Workload,
{
    let Some(workload) = workload.ok() else {
        return Ok(Action::await_change());
    };
    let mut feeds = keys_feeding(&rc.api_keys, &rc.wake_api_keys, workload);
    feeds.extend(keys_feeding(
        &rc.account_keys,
        &rc.wake_account_keys,
        workload,
    ));
    let current = rollout::template_annotations(workload);
    let Some(wanted) = rollout::wanted_annotations(&current, &feeds) else {
        return Ok(Action::requeue(IDLE_REQUEUE));
    };
    let namespace = workload.meta().namespace.clone().unwrap_or_default();
    let name = workload.name_any();
    let already_rolling = carries_keymint_annotation(workload) && !rollout::rolled_out(workload);
    let starts = rc.starts_in(&namespace);
    let mut started = starts.lock().await;
    started.retain(|_, at| at.elapsed() < START_MEMORY);
    let this = (W::KIND, name.clone());
    let mut rolling = rc.holders.rolling_in(&namespace);
    rolling.extend(started.keys().cloned());
    rolling.remove(&this);
    let elsewhere = rolling.len();
    let limit = rc.ctx.settings.max_rollouts_per_namespace;
    if !rollout::may_start(elsewhere, limit, already_rolling) {
        debug!(workload = %name, namespace, elsewhere, "rollout held back by the namespace's limit");
        return Ok(Action::requeue(HELD_BACK_REQUEUE));
    }
    apply_template_annotations::<W>(&rc.ctx, &namespace, &name, &wanted).await?;
    started.insert(this, Instant::now());
    drop(started);
    rc.ctx.metrics.rollout_triggered(W::KIND.as_str());
    let changed: Vec<&str> = feeds
        .iter()
        .filter(|feed| current.get(&feed.annotation) != Some(&feed.key_id))
        .map(|feed| feed.key_id.as_str())
        .collect();
    info!(kind = %W::KIND, workload = %name, namespace, key_ids = ?changed, "consumer rolled out to new key");
    Ok(Action::requeue(IDLE_REQUEUE))
}

/// Server-side apply of the pod-template annotations as keymint: only these
/// fields are keymint's, so a GitOps tool applying the workload's manifest
/// (client- or server-side) neither reverts them nor sees them as drift.
async fn apply_template_annotations<W: Workload>(
    ctx: &Context,
    namespace: &str,
    name: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<()> {
    let patch = json!({
        "apiVersion": W::api_version(&()),
        "kind": W::kind(&()),
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {"metadata": {"annotations": annotations}}},
    });
    let api = Api::<MetaOnlyWorkload<W>>::namespaced(ctx.client.clone(), namespace);
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(Error::from)
}

/// The answer to the apply is read as metadata only.
type MetaOnlyWorkload<W> = super::lenient::MetaOnly<W>;

pub fn error_policy<W: Workload>(
    _workload: Arc<Parsed<W>>,
    error: &Error,
    rc: Arc<RolloutContext>,
) -> Action {
    debug!(%error, "consumer rollout failed; retrying");
    rc.ctx
        .metrics
        .reconcile_failed(&W::kind(&()), error.category());
    Action::requeue(HELD_BACK_REQUEUE)
}
