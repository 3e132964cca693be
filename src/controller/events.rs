//! Publishing Events (`events.k8s.io/v1`): one create per Event, nothing kept.
//!
//! kube-runtime's `Recorder` keeps every Event it wrote for six minutes, to
//! count repeats into a series, and sweeps that cache on every publish under
//! one lock: with 10,000 new keys that is tens of MiB held and a pass over
//! 10,000 entries per Event. keymint's Event budgets ([`super::pacing`])
//! already bound repeats of one reason for one object, so an Event is simply
//! created.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
pub use kube::runtime::events::EventType;

/// Longest object name kept in an Event's name (a name is at most 253
/// characters, and the suffix needs room).
const MAX_NAME_PREFIX: usize = 200;

/// Who the Events are from: `reportingController` and `reportingInstance`.
#[derive(Clone)]
pub struct Publisher {
    client: kube::Client,
    controller: String,
    instance: String,
}

impl Publisher {
    pub fn new(client: kube::Client, controller: &str, instance: Option<String>) -> Self {
        Publisher {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or_else(|| controller.to_string()),
        }
    }

    /// The Event as it is created (pure: the tests read it).
    pub fn event(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
        action: &str,
        now: Timestamp,
    ) -> Event {
        let object = regarding.name.as_deref().unwrap_or(&self.controller);
        let prefix: String = object.chars().take(MAX_NAME_PREFIX).collect();
        Event {
            metadata: ObjectMeta {
                // Unique enough: the nanosecond plus a random part for Events
                // of one object published in the same nanosecond.
                name: Some(format!(
                    "{prefix}.{:x}{:04x}",
                    now.as_nanosecond(),
                    rand::random::<u16>()
                )),
                namespace: regarding.namespace.clone(),
                ..Default::default()
            },
            action: Some(action.to_string()),
            reason: Some(reason.to_string()),
            note: Some(note.to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_string(),
            ),
            ..Default::default()
        }
    }

    /// Creates the Event in the namespace of the object it is about (the
    /// default namespace for a cluster-scoped one, as kubectl shows them).
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
        action: &str,
    ) -> Result<(), kube::Error> {
        let mut event = self.event(regarding, type_, reason, note, action, Timestamp::now());
        let namespace = event
            .metadata
            .namespace
            .get_or_insert_with(|| "default".to_string())
            .clone();
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}
