//! Wires three `kube::runtime::Controller`s to the one engine: each watches its
//! kind and the Secrets keymint manages (label-selected, so the operator never
//! caches other applications' Secrets); ServiceAccountKeys also watch
//! ServiceAccounts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Controller, Error as ControllerError};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::engine::{error_policy, reconcile};
use super::holders::{self, Holders, KindCache, RolloutContext, ScopeHolders};
use super::lenient::{MetaOnly, Parsed};
use super::owner::OwnerId;
use super::ring::{self, RingContext};
use super::secret::{MANAGED_BY, MANAGED_BY_LABEL, OWNER};
use super::{Context, KeyResource};
use crate::api::{ApiKey, KeyRing, RootKey, ServiceAccountKey};
use crate::rollout;

const FORGET_INTERVAL: Duration = Duration::from_secs(15);

/// Where namespaced resources are watched: everywhere, or in listed namespaces.
#[derive(Debug, Clone)]
pub enum Scope {
    AllNamespaces,
    Namespaces(Vec<String>),
}

fn managed_secrets_label() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// Objects per LIST page. Pages are fetched one after another and a
/// controller starts only once its list is whole: at 10,000 keys pages of 50
/// made a restart take 4.6 s, pages of 100 take 2.6 s (bench, big round). A
/// page is held whole while it is parsed, and a tenant's objects can be large
/// (annotations up to 256 KiB): in `untrusted_bounds` an operator restarted
/// among 300 such APIKeys peaks at 61 MiB with pages of 50, 129 MiB with 100,
/// 221 MiB with 250, against the chart's limit of 256 MiB. (Streamed lists,
/// one object at a time, were tried: on a loaded machine one watch now and
/// then never finished its first list, so its controller never started and
/// the operator did not stop on SIGTERM,
/// `chart::operator_works_with_exactly_the_charts_service_account`. The
/// startup list of managed Secrets streams: it gives up after 30 s.)
const PAGE_SIZE: u32 = 100;

fn managed_secrets() -> watcher::Config {
    paged().labels(&managed_secrets_label())
}

fn paged() -> watcher::Config {
    watcher::Config::default().page_size(PAGE_SIZE)
}

/// The controller of one key kind, its cache filled by its own watch, which
/// triggers a reconcile for every change except the echo of keymint's own
/// status write (the reconcile that wrote it acted on that very version).
fn key_controller<K: KeyResource>(
    ctx: &Arc<Context>,
    api: Api<Parsed<K>>,
) -> Controller<Parsed<K>> {
    let writer = reflector::store::Writer::default();
    let reader = writer.as_reader();
    let ctx = ctx.clone();
    let trigger = reflector::reflector(writer, watcher::watcher(api, paged()))
        .applied_objects()
        .try_filter(move |key| {
            futures::future::ready(!ctx.is_own_status(&K::kind(&()), key.meta()))
        });
    Controller::for_stream(trigger, reader)
}

/// Maps a managed Secret back to its resource, by the controller owner
/// reference and by the owner annotation: an edit of either still wakes the
/// real owner. Only resources in the Secret's own namespace (or RootKeys) are
/// ever named: a Secret in one namespace never makes keymint look at another.
fn owner_of<K: KeyResource>(secret: &MetaOnly<Secret>) -> Vec<ObjectRef<Parsed<K>>> {
    let mut owners: Vec<ObjectRef<Parsed<K>>> = secret
        .owner_references()
        .iter()
        .filter(|r| r.controller == Some(true) && r.kind == K::kind(&()))
        .map(|r| {
            // A cluster-scoped owner (RootKey) has no namespace.
            let owner = ObjectRef::new(&r.name);
            match (K::kind(&()) == "RootKey", secret.namespace()) {
                (false, Some(namespace)) => owner.within(&namespace),
                _ => owner,
            }
        })
        .collect();
    let annotated = secret
        .annotations()
        .get(OWNER)
        .and_then(|owner| owner.parse::<OwnerId>().ok())
        .filter(|owner| owner.kind == K::kind(&()))
        .and_then(|owner| match owner.namespace {
            None => Some(ObjectRef::new(&owner.name)),
            Some(namespace) if secret.namespace().as_deref() == Some(namespace.as_str()) => {
                Some(ObjectRef::new(&owner.name).within(&namespace))
            }
            Some(_) => None,
        });
    owners.extend(annotated.filter(|parsed| !owners.contains(parsed)));
    owners
}

/// The mapper for a controller's Secret watch: the Secret's owner, except for
/// the echo of keymint's own write (already reconciled).
fn secret_owners<K: KeyResource>(
    ctx: &Arc<Context>,
) -> impl Fn(MetaOnly<Secret>) -> Vec<ObjectRef<Parsed<K>>> + Send + Sync + 'static {
    let ctx = ctx.clone();
    move |secret| {
        if is_news(&ctx, &secret) {
            owner_of::<K>(&secret)
        } else {
            Vec::new()
        }
    }
}

/// Notes the version the Secret watch delivered; false for the echo of
/// keymint's own write (already reconciled) and for a version the startup
/// list already showed (judged by the key's first reconcile).
fn is_news(ctx: &Context, secret: &MetaOnly<Secret>) -> bool {
    let listed = ctx.known.seen(&secret.metadata);
    !listed && !ctx.is_own_write(&secret.metadata)
}

/// The mapper of a namespace scope's one Secret watch, which serves both of
/// its controllers (one list and one stream of events, not two): an APIKey
/// owner is returned, a ServiceAccountKey owner woken through `account_keys`.
fn api_and_account_key_owners(
    ctx: &Arc<Context>,
    account_keys: mpsc::UnboundedSender<ObjectRef<Parsed<ServiceAccountKey>>>,
) -> impl Fn(MetaOnly<Secret>) -> Vec<ObjectRef<Parsed<ApiKey>>> + Send + Sync + 'static {
    let ctx = ctx.clone();
    move |secret| {
        if !is_news(&ctx, &secret) {
            return Vec::new();
        }
        for owner in owner_of::<ServiceAccountKey>(&secret) {
            // Fails only once that controller has stopped.
            let _ = account_keys.unbounded_send(owner);
        }
        owner_of::<ApiKey>(&secret)
    }
}

/// How long a ring waits for more changes before it rewrites its document.
const RING_DEBOUNCE: Duration = Duration::from_millis(500);

/// Reconciles in flight per controller: each holds an API connection.
const CONCURRENCY: u16 = 40;

async fn drive<K: KeyResource>(
    controller: Controller<Parsed<K>>,
    ctx: Arc<Context>,
    shutdown: watch::Receiver<bool>,
) {
    let results = controller
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(stopped(shutdown.clone()))
        .run(reconcile::<K>, error_policy::<K>, ctx);
    log_until_stopped(K::kind(&()).into_owned(), results, shutdown, STOP_GRACE).await;
}

/// Logs one result of a controller's stream: reconciles at debug (their
/// failures are reported on the object), stream errors at WARN.
fn log_result<K: Resource, E: std::error::Error, Q: std::error::Error>(
    controller: &str,
    result: Result<(ObjectRef<K>, kube::runtime::controller::Action), ControllerError<E, Q>>,
) {
    match result {
        Ok((object, _)) => debug!(controller, object = %object, "reconciled"),
        Err(ControllerError::ReconcilerFailed(error, object)) => {
            debug!(controller, object = %object, %error, "reconcile failed")
        }
        Err(error) => warn!(controller, %error, "controller stream error"),
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// How long a controller has after the shutdown to finish its reconciles in
/// flight (each a few API calls) before it is dropped.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Logs a controller's results until the stream ends, as its graceful
/// shutdown makes it do once its reconciles in flight are done; or `grace`
/// ([`STOP_GRACE`]) after `shutdown`, whatever it is doing. kube-runtime
/// holds a controller's runner until its cache's first list is done, even in
/// a graceful shutdown, so an operator signalled while a list was still
/// running never exited (`operator_process`, 4 runs in 28 under load, one
/// signalled 0.2 s after it became the leader). Dropping a reconcile midway
/// is a crash, which `fault_crash` proves safe: each write is whole, and the
/// next start resumes.
async fn log_until_stopped<K, E, Q>(
    controller: String,
    results: impl futures::Stream<
        Item = Result<(ObjectRef<K>, kube::runtime::controller::Action), ControllerError<E, Q>>,
    >,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) where
    K: Resource,
    E: std::error::Error + 'static,
    Q: std::error::Error + 'static,
{
    let forced = async move {
        stopped(shutdown).await;
        tokio::time::sleep(grace).await;
    };
    let mut results = std::pin::pin!(results.take_until(forced));
    while let Some(result) = results.next().await {
        log_result(&controller, result);
    }
    if results.is_stopped() {
        warn!(
            controller,
            seconds = grace.as_secs_f64(),
            "controller did not stop within its grace after the shutdown (a first list still running?): dropped"
        );
    } else {
        debug!(controller, "controller stopped");
    }
}

/// Runs every controller until `shutdown` turns true.
pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: watch::Receiver<bool>) {
    let client = ctx.client.clone();
    let namespaces: Vec<Option<String>> = match &scope {
        Scope::AllNamespaces => vec![None],
        Scope::Namespaces(list) => list.iter().cloned().map(Some).collect(),
    };
    // Before any reconcile: an up-to-date key after a restart is then
    // confirmed from its view, without a read of its Secret.
    let mut listed = namespaces.clone();
    if !listed.contains(&None) {
        for namespace in &ctx.settings.root_key_namespaces {
            if !listed.contains(&Some(namespace.clone())) {
                listed.push(Some(namespace.clone()));
            }
        }
    }
    // (Up to 30 s on a slow server: a shutdown meanwhile ends the wait.)
    let labels = managed_secrets_label();
    tokio::select! {
        () = ctx.known.load(&client, &listed, &labels) => {}
        () = stopped(shutdown.clone()) => return,
    }
    let mut tasks: Vec<futures::future::BoxFuture<'static, ()>> = Vec::new();
    let mut listers: Vec<OwnerLister> = Vec::new();

    // RootKeys are cluster-scoped; their Secrets live in the allowed namespaces.
    let (wake_root_key, woken_root_keys) = mpsc::unbounded();
    let mut root_keys = key_controller(&ctx, Api::<Parsed<RootKey>>::all(client.clone()))
        .reconcile_on(woken_root_keys);
    for namespace in &ctx.settings.root_key_namespaces {
        root_keys = root_keys.watches(
            namespaced_api::<MetaOnly<Secret>>(&client, Some(namespace)),
            managed_secrets(),
            secret_owners::<RootKey>(&ctx),
        );
    }
    listers.push(lister(root_keys.store()));
    tasks.push(Box::pin(drive(root_keys, ctx.clone(), shutdown.clone())));

    let mut api_key_stores = Vec::new();
    let mut account_key_stores = Vec::new();
    let mut wake_api_keys = Vec::new();
    let mut wake_account_keys = Vec::new();
    let mut workloads = Workloads::default();
    let mut scopes = Vec::new();
    for namespace in &namespaces {
        let (wake_api_key, woken_api_keys) = mpsc::unbounded();
        let (wake_account_key, woken_account_keys) = mpsc::unbounded();
        wake_api_keys.push(wake_api_key);
        wake_account_keys.push(wake_account_key.clone());
        scopes.push(ScopeHolders {
            namespace: namespace.clone(),
            deployments: workloads.deployments.add(&client, namespace.as_deref()),
            stateful_sets: workloads.stateful_sets.add(&client, namespace.as_deref()),
            daemon_sets: workloads.daemon_sets.add(&client, namespace.as_deref()),
        });
        let namespace = namespace.as_deref();
        let api_keys = key_controller(&ctx, namespaced_api::<Parsed<ApiKey>>(&client, namespace))
            .reconcile_on(woken_api_keys)
            .watches(
                namespaced_api::<MetaOnly<Secret>>(&client, namespace),
                managed_secrets(),
                api_and_account_key_owners(&ctx, wake_account_key),
            );
        let api_key_store = api_keys.store();
        api_key_stores.push(api_key_store.clone());
        let api_keys = api_keys.watches(
            namespaced_api::<Parsed<KeyRing>>(&client, None),
            paged(),
            keys_naming(api_key_store),
        );
        listers.push(lister(api_keys.store()));
        tasks.push(Box::pin(drive(api_keys, ctx.clone(), shutdown.clone())));

        let account_keys = key_controller(
            &ctx,
            namespaced_api::<Parsed<ServiceAccountKey>>(&client, namespace),
        )
        .reconcile_on(woken_account_keys);
        let store = account_keys.store();
        account_key_stores.push(store.clone());
        listers.push(lister(store.clone()));
        let account_keys = account_keys
            .watches(
                namespaced_api::<Parsed<KeyRing>>(&client, None),
                paged(),
                keys_naming(store.clone()),
            )
            .watches(
                namespaced_api::<MetaOnly<ServiceAccount>>(&client, namespace),
                paged(),
                move |account| {
                    let account_namespace = account.namespace();
                    let account_name = account.name_any();
                    store
                        .state()
                        .into_iter()
                        .filter(|key| {
                            key.ok().is_some_and(|key| {
                                key.namespace() == account_namespace
                                    && key.spec.service_account_name == account_name
                            })
                        })
                        .map(|key| ObjectRef::from_obj(&*key))
                        .collect::<Vec<_>>()
                },
            );
        tasks.push(Box::pin(drive(account_keys, ctx.clone(), shutdown.clone())));
    }
    ctx.pacing.set_waker(line_waker(
        namespaces.clone(),
        wake_root_key,
        wake_api_keys.clone(),
        wake_account_keys.clone(),
    ));
    let holders = Arc::new(Holders::new(scopes));
    // The engine reads the consumers' caches through the context.
    let _ = ctx.holders.set(holders.clone());
    let rollout_context = Arc::new(RolloutContext {
        ctx: ctx.clone(),
        holders,
        api_keys: api_key_stores.clone(),
        account_keys: account_key_stores.clone(),
        wake_api_keys,
        wake_account_keys,
        started: Default::default(),
    });
    workloads.drive(&rollout_context, &shutdown, &mut tasks);
    let ring_context = Arc::new(RingContext {
        ctx: ctx.clone(),
        api_keys: api_key_stores,
        account_keys: account_key_stores,
    });
    for namespace in namespaces {
        tasks.push(Box::pin(drive_rings(
            client.clone(),
            namespace,
            ring_context.clone(),
            shutdown.clone(),
        )));
    }
    tasks.push(Box::pin(forget_deleted(ctx.clone(), listers, shutdown)));
    futures::future::join_all(tasks).await;
    debug!("every controller stopped");
}

/// Wakes a key first in its namespace's line (by its owner id) through the
/// controller of its kind and watch scope.
fn line_waker(
    scopes: Vec<Option<String>>,
    root_keys: mpsc::UnboundedSender<ObjectRef<Parsed<RootKey>>>,
    api_keys: Vec<mpsc::UnboundedSender<ObjectRef<Parsed<ApiKey>>>>,
    account_keys: Vec<mpsc::UnboundedSender<ObjectRef<Parsed<ServiceAccountKey>>>>,
) -> super::pacing::Waker {
    Box::new(move |object| {
        let Ok(owner) = object.parse::<OwnerId>() else {
            return;
        };
        let Some(namespace) = owner.namespace else {
            if owner.kind == RootKey::kind(&()) {
                let _ = root_keys.unbounded_send(ObjectRef::new(&owner.name));
            }
            return;
        };
        let Some(scope) = scopes
            .iter()
            .position(|scope| scope.as_deref().is_none_or(|scope| scope == namespace))
        else {
            return;
        };
        // A send fails only once the controller has stopped.
        if owner.kind == ApiKey::kind(&()) {
            if let Some(wake) = api_keys.get(scope) {
                let _ = wake.unbounded_send(ObjectRef::new(&owner.name).within(&namespace));
            }
        } else if owner.kind == ServiceAccountKey::kind(&())
            && let Some(wake) = account_keys.get(scope)
        {
            let _ = wake.unbounded_send(ObjectRef::new(&owner.name).within(&namespace));
        }
    })
}

/// The keys of a store that name a ring: a ring's change wakes them (their
/// Ready condition says whether the ring takes them).
fn keys_naming<K: KeyResource>(
    store: Store<Parsed<K>>,
) -> impl Fn(Parsed<KeyRing>) -> Vec<ObjectRef<Parsed<K>>> + Send + Sync + 'static {
    move |ring| {
        let ring_namespace = ring.namespace().unwrap_or_default();
        let ring_name = ring.name_any();
        store
            .state()
            .into_iter()
            .filter(|key| {
                key.ok().is_some_and(|key| {
                    ring::named_rings(&key.namespace().unwrap_or_default(), key.key_rings())
                        .iter()
                        .any(|(namespace, name)| *namespace == ring_namespace && *name == ring_name)
                })
            })
            .map(|key| ObjectRef::from_obj(&*key))
            .collect()
    }
}

/// The KeyRing controller of one watch scope: rings wake on their keys, their
/// own Secret, and namespace label changes (selectors).
async fn drive_rings(
    client: kube::Client,
    namespace: Option<String>,
    rc: Arc<RingContext>,
    shutdown: watch::Receiver<bool>,
) {
    let client = &client;
    let namespace = namespace.as_deref();
    let rings = Controller::new(
        namespaced_api::<Parsed<KeyRing>>(client, namespace),
        paged(),
    );
    let ring_store = rings.store();
    let selector_rings = move |_namespace: MetaOnly<Namespace>| {
        ring_store
            .state()
            .into_iter()
            .filter(|ring| {
                ring.ok().is_some_and(|ring| {
                    matches!(
                        ring::allowed_from(ring),
                        crate::keyring::AllowedFrom::Selector(_)
                    )
                })
            })
            .map(|ring| ObjectRef::from_obj(&*ring))
            .collect::<Vec<_>>()
    };
    let results = rings
        // Keys in the same watch scope (all namespaces, or this one).
        .watches(
            namespaced_api::<Parsed<ApiKey>>(client, namespace),
            paged(),
            |key| ring::rings_of(&key),
        )
        .watches(
            namespaced_api::<Parsed<ServiceAccountKey>>(client, namespace),
            paged(),
            |key| ring::rings_of(&key),
        )
        .watches(
            namespaced_api::<MetaOnly<Secret>>(client, namespace),
            paged().labels(ring::RING_LABEL),
            |secret| {
                secret
                    .owner_references()
                    .iter()
                    .filter(|r| r.controller == Some(true) && r.kind == "KeyRing")
                    .filter_map(|r| {
                        secret
                            .namespace()
                            .map(|namespace| ObjectRef::new(&r.name).within(&namespace))
                    })
                    .collect::<Vec<_>>()
            },
        )
        .watches(
            Api::<MetaOnly<Namespace>>::all(client.clone()),
            paged(),
            selector_rings,
        )
        // A burst of key changes (a rollout of many keys, a storm of
        // rotations) becomes one document write; a leak does not wait for
        // this (the key's own reconcile revokes it in its rings).
        .with_config(
            kube::runtime::controller::Config::default()
                .debounce(RING_DEBOUNCE)
                .concurrency(CONCURRENCY),
        )
        .graceful_shutdown_on(stopped(shutdown.clone()))
        .run(ring::reconcile, ring::error_policy, rc);
    log_until_stopped("KeyRing".into(), results, shutdown, STOP_GRACE).await;
}

/// How long a consumer waits for more of its keys to change before keymint
/// writes its pod template: a burst of rotations is one rollout.
const ROLLOUT_DEBOUNCE: Duration = Duration::from_secs(2);

/// The rollout controllers of one workload kind, one per watch scope, built
/// before the key controllers so their caches can be handed to the engine.
struct KindControllers<W: rollout::Workload>(Vec<Controller<Parsed<W>>>);

impl<W: rollout::Workload> Default for KindControllers<W> {
    fn default() -> Self {
        KindControllers(Vec::new())
    }
}

impl<W> KindControllers<W>
where
    W: rollout::Workload + super::lenient::Trim + serde::de::DeserializeOwned,
{
    fn add(&mut self, client: &kube::Client, namespace: Option<&str>) -> KindCache<W> {
        let (nudge, nudged) = mpsc::unbounded();
        let (listed_tx, listed) = watch::channel(false);
        let writer = reflector::store::Writer::default();
        let store = writer.as_reader();
        let api = namespaced_api::<Parsed<W>>(client, namespace);
        let trigger = reflector::reflector(writer, watcher::watcher(api, paged()))
            .inspect_ok(move |event| mark_listed(event, &listed_tx))
            .applied_objects();
        let controller = Controller::for_stream(trigger, store.clone()).reconcile_on(nudged);
        self.0.push(controller);
        KindCache {
            store,
            nudge,
            listed,
        }
    }

    fn drive(
        self,
        rc: &Arc<RolloutContext>,
        shutdown: &watch::Receiver<bool>,
        tasks: &mut Vec<futures::future::BoxFuture<'static, ()>>,
    ) {
        for controller in self.0 {
            let results = controller
                .with_config(
                    kube::runtime::controller::Config::default()
                        .debounce(ROLLOUT_DEBOUNCE)
                        .concurrency(CONCURRENCY),
                )
                .graceful_shutdown_on(stopped(shutdown.clone()))
                .run(
                    holders::reconcile::<W>,
                    holders::error_policy::<W>,
                    rc.clone(),
                );
            let controller = format!("consumer {}", W::kind(&()));
            tasks.push(Box::pin(log_until_stopped(
                controller,
                results,
                shutdown.clone(),
                STOP_GRACE,
            )));
        }
    }
}

/// Marks a workload cache as listed once its first list is done. (Not
/// `Store::wait_until_ready`: its controller already waits on that, and
/// kube-runtime wakes only one of several waiters, so the other hung, and
/// with it the consumers' assessment and the operator's shutdown.)
fn mark_listed<W: Clone>(event: &watcher::Event<W>, listed: &watch::Sender<bool>) {
    if matches!(event, watcher::Event::InitDone) {
        listed.send_replace(true);
    }
}

/// The rollout controllers of the three workload kinds.
#[derive(Default)]
struct Workloads {
    deployments: KindControllers<Deployment>,
    stateful_sets: KindControllers<StatefulSet>,
    daemon_sets: KindControllers<DaemonSet>,
}

impl Workloads {
    fn drive(
        self,
        rc: &Arc<RolloutContext>,
        shutdown: &watch::Receiver<bool>,
        tasks: &mut Vec<futures::future::BoxFuture<'static, ()>>,
    ) {
        self.deployments.drive(rc, shutdown, tasks);
        self.stateful_sets.drive(rc, shutdown, tasks);
        self.daemon_sets.drive(rc, shutdown, tasks);
    }
}

/// Lists the owner ids of the resources a controller's cache holds.
type OwnerLister = Box<dyn Fn() -> Vec<String> + Send + Sync>;

fn lister<K: KeyResource>(store: Store<Parsed<K>>) -> OwnerLister {
    Box::new(move || {
        store
            .state()
            .iter()
            .map(|key| OwnerId::of(&K::kind(&()), key.meta()).to_string())
            .collect()
    })
}

/// Deleted resources are never reconciled again, so the metrics and the
/// backoff state forget them by comparing with the caches now and then (a
/// tenant creating and deleting resources cannot grow them), startup views
/// no reconcile took go; then the memory freed since the last tick goes back
/// to the system.
async fn forget_deleted(
    ctx: Arc<Context>,
    listers: Vec<OwnerLister>,
    shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(FORGET_INTERVAL);
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let present: HashSet<String> = listers.iter().flat_map(|list| list()).collect();
                ctx.metrics.retain_keys(&present);
                ctx.pacing.retain(&present);
                ctx.known.expire(super::known::VIEW_LIFETIME);
                super::memory::release_free_memory();
            }
            _ = &mut stop => {
                debug!("forget loop stopped");
                return;
            }
        }
    }
}

fn namespaced_api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Secret watches ask for labelled Secrets only, and their metadata
    /// only: the operator never caches another application's Secret nor any
    /// key.
    #[test]
    fn secret_watches_are_label_selected_and_metadata_only() {
        let config = managed_secrets();
        assert_eq!(
            config.label_selector.as_deref(),
            Some("app.kubernetes.io/managed-by=keymint")
        );
        assert!(<MetaOnly<Secret> as Resource>::metadata_api());
        assert!(<MetaOnly<ServiceAccount> as Resource>::metadata_api());
        assert_eq!(config.page_size, Some(PAGE_SIZE));
    }

    /// One result of the test controller's stream.
    type TestResult = Result<
        (
            ObjectRef<Parsed<Deployment>>,
            kube::runtime::controller::Action,
        ),
        ControllerError<std::io::Error, watcher::Error>,
    >;

    /// A controller whose cache never finished its first list: kube-runtime
    /// would wait for that list even after the shutdown.
    fn still_listing(
        shutdown: &watch::Receiver<bool>,
    ) -> (
        reflector::store::Writer<Parsed<Deployment>>,
        impl futures::Stream<Item = TestResult> + use<>,
    ) {
        let writer = reflector::store::Writer::<Parsed<Deployment>>::default();
        let trigger = futures::stream::pending::<Result<Parsed<Deployment>, watcher::Error>>();
        let results = Controller::for_stream(trigger, writer.as_reader())
            .graceful_shutdown_on(stopped(shutdown.clone()))
            .run(
                |_, _: Arc<()>| async {
                    Ok::<_, std::io::Error>(kube::runtime::controller::Action::await_change())
                },
                |_, _, _| kube::runtime::controller::Action::await_change(),
                Arc::new(()),
            );
        // The writer is returned so that the store stays unready, not dropped.
        (writer, results)
    }

    /// Signalled while a first list was still running, a controller stops
    /// after its grace; its graceful shutdown alone never ends.
    #[tokio::test]
    async fn a_controller_still_listing_stops_within_its_grace_after_the_shutdown() {
        let (stop, shutdown) = watch::channel(false);
        let (_writer, alone) = still_listing(&shutdown);
        let (_other_writer, bounded) = still_listing(&shutdown);
        let grace = Duration::from_millis(300);
        let bounded = tokio::spawn(log_until_stopped(
            "test".into(),
            bounded,
            shutdown.clone(),
            grace,
        ));
        stop.send(true).expect("receivers");
        let within = Duration::from_secs(5);
        let stopped = tokio::time::timeout(within, bounded).await;
        assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
        let waited = Duration::from_secs(1);
        let alone = tokio::time::timeout(waited, alone.for_each(|_| async {})).await;
        assert!(
            alone.is_err(),
            "the graceful shutdown alone ended the controller"
        );
    }

    /// The rollout controller waits on its store while the consumers' caches
    /// wait to be listed: both go on once the first list is done.
    #[tokio::test]
    async fn a_workload_cache_is_listed_while_its_controller_waits_on_the_store() {
        let writer = reflector::store::Writer::<Parsed<Deployment>>::default();
        let store = writer.as_reader();
        let (listed_tx, mut listed) = watch::channel(false);
        let controller_waits = tokio::spawn(async move { store.wait_until_ready().await });
        let cache_waits = tokio::spawn(async move { listed.wait_for(|done| *done).await.is_ok() });
        tokio::task::yield_now().await;
        let events = futures::stream::iter([
            Ok::<_, watcher::Error>(watcher::Event::Init),
            Ok(watcher::Event::InitDone),
        ]);
        let mut trigger = std::pin::pin!(
            reflector::reflector(writer, events).inspect_ok(move |e| mark_listed(e, &listed_tx))
        );
        while trigger.next().await.is_some() {}
        let within = Duration::from_secs(5);
        let controller = tokio::time::timeout(within, controller_waits).await;
        assert!(matches!(controller, Ok(Ok(Ok(())))), "{controller:?}");
        let cache = tokio::time::timeout(within, cache_waits).await;
        assert!(matches!(cache, Ok(Ok(true))), "{cache:?}");
    }

    #[test]
    fn the_line_wakes_a_key_through_the_controller_of_its_kind_and_scope() {
        let (root, mut roots) = mpsc::unbounded();
        let (api_a, mut woken_a) = mpsc::unbounded();
        let (api_b, mut woken_b) = mpsc::unbounded();
        let (accounts_b, mut woken_accounts_b) = mpsc::unbounded();
        let (accounts_a, _) = mpsc::unbounded();
        let wake = line_waker(
            vec![Some("a".into()), Some("b".into())],
            root,
            vec![api_a, api_b],
            vec![accounts_a, accounts_b],
        );
        wake("APIKey/b/billing");
        wake("ServiceAccountKey/b/worker");
        wake("RootKey/admin");
        wake("APIKey/elsewhere/x");
        wake("not an owner");
        assert_eq!(
            woken_b.try_recv().ok(),
            Some(ObjectRef::new("billing").within("b"))
        );
        assert_eq!(
            woken_accounts_b.try_recv().ok(),
            Some(ObjectRef::new("worker").within("b"))
        );
        assert_eq!(roots.try_recv().ok(), Some(ObjectRef::new("admin")));
        assert!(woken_a.try_recv().is_err(), "nothing for scope a");
        assert!(woken_b.try_recv().is_err(), "one wake each");
    }

    #[test]
    fn a_secret_never_names_a_resource_in_another_namespace() {
        let secret: MetaOnly<Secret> = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "namespace": "a",
                "annotations": {"keymint.dev/owner": "APIKey/b/victim"}}
        }))
        .expect("metadata");
        assert!(owner_of::<ApiKey>(&secret).is_empty());
        let own: MetaOnly<Secret> = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "namespace": "a",
                "annotations": {"keymint.dev/owner": "APIKey/a/mine"}}
        }))
        .expect("metadata");
        assert_eq!(
            owner_of::<ApiKey>(&own),
            vec![ObjectRef::new("mine").within("a")]
        );
    }
}
