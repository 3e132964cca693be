//! The pod-template annotation that rolls a workload out to a key, and
//! whether a workload has finished rolling out to it.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use crate::api::ConsumerKind;

/// Where a workload is in rolling out to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The pod template does not carry the key id yet.
    NotStarted,
    /// The template carries it; not every replica runs it and is available.
    Rolling {
        updated: i32,
        available: i32,
        wanted: i32,
    },
    /// Every replica runs the template with the key id, is available, and no
    /// Pod of an older revision is left.
    Done,
}

/// The pod-template annotation for the key of `kind/name`
/// (`keymint.dev/key-<8 hex of its SHA-256>`): deterministic, within the
/// 63-character limit of an annotation name whatever the resource's name,
/// and one per key resource, so two keys feeding one workload never share it.
pub fn annotation_key(kind: &str, namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{kind}/{namespace}/{name}").as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("keymint.dev/key-{hex}")
}

fn carries(template: &PodTemplateSpec, annotation: &str, key_id: &str) -> bool {
    template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(annotation))
        .is_some_and(|id| id == key_id)
}

/// What a workload's status says, in the terms all three kinds share.
pub struct Seen {
    /// The workload controller has seen the current generation.
    current: bool,
    updated: i32,
    available: i32,
    wanted: i32,
    /// The kind's own extra rule (no old Pod left, one revision).
    settled: bool,
}

impl Seen {
    fn finished(&self) -> bool {
        self.current && self.settled && self.updated >= self.wanted && self.available >= self.wanted
    }
}

/// The workload controller has observed `generation`.
fn observed(observed_generation: Option<i64>, generation: Option<i64>) -> bool {
    observed_generation.is_some() && observed_generation >= generation
}

/// A workload kind keymint rolls out, read through its own status rules.
pub trait Workload:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: ConsumerKind;

    fn template(&self) -> Option<&PodTemplateSpec>;

    /// What its status says (None without a spec).
    fn seen(&self) -> Option<Seen>;
}

/// The pod-template annotations of a workload (empty if none).
pub fn template_annotations<W: Workload>(workload: &W) -> BTreeMap<String, String> {
    workload
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default()
}

/// Where `workload` is in rolling out to `key_id` under `annotation`.
pub fn progress<W: Workload>(workload: &W, annotation: &str, key_id: &str) -> Progress {
    let (Some(template), Some(seen)) = (workload.template(), workload.seen()) else {
        return Progress::NotStarted;
    };
    if !carries(template, annotation, key_id) {
        Progress::NotStarted
    } else if seen.finished() {
        Progress::Done
    } else {
        Progress::Rolling {
            updated: seen.updated,
            available: seen.available,
            wanted: seen.wanted,
        }
    }
}

/// Whether the workload's latest template has rolled out completely
/// (whatever it carries): a workload that has not is still rolling.
pub fn rolled_out<W: Workload>(workload: &W) -> bool {
    workload.seen().is_none_or(|seen| seen.finished())
}

/// A Deployment (kubectl's `rollout status` rules, and no terminating Pod
/// left: a Pod of the old ReplicaSet that is shutting down still holds the
/// old key).
impl Workload for Deployment {
    const KIND: ConsumerKind = ConsumerKind::Deployment;

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|spec| &spec.template)
    }

    fn seen(&self) -> Option<Seen> {
        let spec = self.spec.as_ref()?;
        let status = self.status.clone().unwrap_or_default();
        let updated = status.updated_replicas.unwrap_or(0);
        Some(Seen {
            current: observed(status.observed_generation, self.metadata.generation),
            updated,
            available: status.available_replicas.unwrap_or(0),
            wanted: spec.replicas.unwrap_or(1),
            settled: status.replicas.unwrap_or(0) <= updated
                && status.terminating_replicas.unwrap_or(0) == 0,
        })
    }
}

/// A StatefulSet: every replica on the update revision and available.
impl Workload for StatefulSet {
    const KIND: ConsumerKind = ConsumerKind::StatefulSet;

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|spec| &spec.template)
    }

    fn seen(&self) -> Option<Seen> {
        let spec = self.spec.as_ref()?;
        let status = self.status.clone().unwrap_or_default();
        Some(Seen {
            current: observed(status.observed_generation, self.metadata.generation),
            updated: status.updated_replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
            wanted: spec.replicas.unwrap_or(1),
            settled: status.update_revision.is_some()
                && status.update_revision == status.current_revision,
        })
    }
}

/// A DaemonSet: every scheduled node runs the new Pod, available.
impl Workload for DaemonSet {
    const KIND: ConsumerKind = ConsumerKind::DaemonSet;

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|spec| &spec.template)
    }

    fn seen(&self) -> Option<Seen> {
        self.spec.as_ref()?;
        let status = self.status.clone().unwrap_or_default();
        Some(Seen {
            current: observed(status.observed_generation, self.metadata.generation),
            updated: status.updated_number_scheduled.unwrap_or(0),
            available: status.number_available.unwrap_or(0),
            wanted: status.desired_number_scheduled,
            settled: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(annotation: Option<&str>, status: serde_json::Value) -> Deployment {
        let annotations = annotation.map(|id| json!({"keymint.dev/key-x": id}));
        serde_json::from_value(json!({
            "metadata": {"name": "d", "generation": 4},
            "spec": {"replicas": 2, "selector": {}, "template": {"metadata": {"annotations": annotations}}},
            "status": status,
        }))
        .expect("a Deployment")
    }

    #[test]
    fn a_deployment_is_done_only_when_every_replica_runs_the_key_and_no_old_pod_is_left() {
        let done = json!({"observedGeneration": 4, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
        let rows = [
            (None, done.clone(), false),
            (Some("OLD"), done.clone(), false),
            (Some("NEW"), done, true),
            // The controller has not seen the new template yet.
            (
                Some("NEW"),
                json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
                false,
            ),
            // An old Pod is still there (surge).
            (
                Some("NEW"),
                json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 3}),
                false,
            ),
            // An old Pod is still shutting down (and may still send the old key).
            (
                Some("NEW"),
                json!({"observedGeneration": 4, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "terminatingReplicas": 1}),
                false,
            ),
            // A new Pod is not available (failing readiness).
            (
                Some("NEW"),
                json!({"observedGeneration": 4, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
                false,
            ),
        ];
        for (annotation, status, expected) in rows {
            let progress = progress(
                &deployment(annotation, status.clone()),
                "keymint.dev/key-x",
                "NEW",
            );
            assert_eq!(
                progress == Progress::Done,
                expected,
                "{annotation:?} {status}: {progress:?}"
            );
        }
    }

    #[test]
    fn the_annotation_is_deterministic_bounded_and_one_per_key_resource() {
        let long = "a".repeat(253);
        let key = annotation_key("APIKey", "team", &long);
        assert_eq!(key, annotation_key("APIKey", "team", &long));
        assert!(key.len() - "keymint.dev/".len() <= 63);
        assert_ne!(key, annotation_key("APIKey", "team", "other"));
        assert_ne!(key, annotation_key("ServiceAccountKey", "team", &long));
    }
}
