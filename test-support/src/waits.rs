//! Reading a key's state (its Ready condition, its Events, its Secret's
//! fields) and polling with a deadline until it is as a test expects: never a
//! sleep that hopes.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use keymint::api::KeyStatus;
use keymint_testenv::eventually;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::cluster::WAIT;

/// A keymint kind: it has a [`KeyStatus`].
pub trait HasStatus {
    fn key_status(&self) -> Option<&KeyStatus>;
}

macro_rules! has_status {
    ($($kind:ty),*) => {$(
        impl HasStatus for $kind {
            fn key_status(&self) -> Option<&KeyStatus> {
                self.status.as_ref()
            }
        }
    )*};
}
has_status!(
    keymint::api::ApiKey,
    keymint::api::RootKey,
    keymint::api::ServiceAccountKey
);

/// The Ready condition, if any.
pub fn ready_condition<K: HasStatus>(object: &K) -> Option<&Condition> {
    object
        .key_status()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
}

/// The Ready condition's (status, reason), if any.
pub fn ready_of<K: HasStatus>(object: &K) -> Option<(String, String)> {
    ready_condition(object).map(|c| (c.status.clone(), c.reason.clone()))
}

/// The Ready condition's message ("" when there is none).
pub fn ready_message<K: HasStatus>(object: &K) -> String {
    ready_condition(object)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Whether the status is for the object's current generation.
pub fn is_current<K: HasStatus + Resource>(object: &K) -> bool {
    object.key_status().and_then(|s| s.observed_generation) == object.meta().generation
}

/// Polls until `check` accepts the object (observedGeneration current), and returns it.
pub async fn wait_for<K, F>(api: &Api<K>, name: &str, what: &str, check: F) -> K
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + HasStatus,
    F: Fn(&K) -> bool,
{
    eventually(&format!("{name}: {what}"), WAIT, || {
        let api = api.clone();
        let check = &check;
        async move {
            let object = api.get(name).await.map_err(|e| e.to_string())?;
            if is_current(&object) && check(&object) {
                Ok(object)
            } else {
                Err(format!("{:?}", object.key_status()))
            }
        }
    })
    .await
}

/// Waits for Ready=True with a current observedGeneration.
pub async fn wait_ready<K>(api: &Api<K>, name: &str) -> K
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + HasStatus,
{
    wait_for(api, name, "Ready=True", |o| {
        ready_of(o).is_some_and(|(s, _)| s == "True")
    })
    .await
}

/// Waits for Ready with the given status and reason.
pub async fn wait_reason<K>(api: &Api<K>, name: &str, status: &str, reason: &str) -> K
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + HasStatus,
{
    wait_for(api, name, &format!("Ready={status}/{reason}"), |o| {
        ready_of(o) == Some((status.to_string(), reason.to_string()))
    })
    .await
}

/// `data.<key>` of a Secret, as text.
pub fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

/// An annotation of any object.
pub fn annotation<K: Resource>(object: &K, key: &str) -> Option<String> {
    object.annotations().get(key).cloned()
}

/// A label of any object.
pub fn label<K: Resource>(object: &K, key: &str) -> Option<String> {
    object.labels().get(key).cloned()
}

/// Events (events.k8s.io) about the object named `name` in `namespace`.
pub async fn events_for(client: &kube::Client, namespace: &str, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// Waits for an Event with `reason` about `name`.
pub async fn wait_event(client: &kube::Client, namespace: &str, name: &str, reason: &str) -> Event {
    eventually(&format!("event {reason} for {name}"), WAIT, || async move {
        let events = events_for(client, namespace, name).await;
        events
            .iter()
            .find(|e| e.reason.as_deref() == Some(reason))
            .cloned()
            .ok_or_else(|| {
                format!(
                    "{:?}",
                    events.iter().map(|e| e.reason.clone()).collect::<Vec<_>>()
                )
            })
    })
    .await
}

/// Waits for a Warning Event with `reason` about `name`.
pub async fn wait_warning(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    reason: &str,
) -> Event {
    let event = wait_event(client, namespace, name, reason).await;
    assert_eq!(
        event.type_.as_deref(),
        Some("Warning"),
        "{reason} is a Warning Event"
    );
    event
}

/// Waits until `name` no longer exists (`what` says why it should go).
pub async fn wait_gone<K>(api: &Api<K>, name: &str, what: &str)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    eventually(what, WAIT, || async {
        match api.get_opt(name).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err(format!("{name} still there")),
        }
    })
    .await
}

/// Polls `check` every 100 ms until it returns `Ok`, or returns the last
/// observation after `timeout` instead of panicking (for tests that collect
/// every failure and report them together).
pub async fn within<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => {
                return Err(format!("{what}: not within {timeout:?}; last: {last}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Checks `check` every 200 ms for `duration`; panics at the first failure
/// (a state that must not change).
pub async fn holds_for<F, Fut>(what: &str, duration: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + duration;
    loop {
        if let Err(observed) = check().await {
            panic!("{what} no longer holds: {observed}");
        }
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
