//! The pod-template annotation that rolls a workload out to a key, and
//! whether a workload has finished rolling out to it.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use sha2::{Digest, Sha256};

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
struct Seen {
    /// The workload controller has seen the current generation.
    current: bool,
    updated: i32,
    available: i32,
    wanted: i32,
    /// The kind's own extra rule (no old Pod left, one revision).
    settled: bool,
}

fn judge(template: &PodTemplateSpec, annotation: &str, key_id: &str, seen: Seen) -> Progress {
    if !carries(template, annotation, key_id) {
        return Progress::NotStarted;
    }
    if seen.current && seen.settled && seen.updated >= seen.wanted && seen.available >= seen.wanted
    {
        Progress::Done
    } else {
        Progress::Rolling {
            updated: seen.updated,
            available: seen.available,
            wanted: seen.wanted,
        }
    }
}

/// The workload controller has observed `generation`.
fn observed(observed_generation: Option<i64>, generation: Option<i64>) -> bool {
    observed_generation.is_some() && observed_generation >= generation
}

/// A Deployment's progress (kubectl's `rollout status` rules).
pub fn deployment_progress(deployment: &Deployment, annotation: &str, key_id: &str) -> Progress {
    let Some(spec) = &deployment.spec else {
        return Progress::NotStarted;
    };
    let status = deployment.status.clone().unwrap_or_default();
    let updated = status.updated_replicas.unwrap_or(0);
    let seen = Seen {
        current: observed(status.observed_generation, deployment.metadata.generation),
        updated,
        available: status.available_replicas.unwrap_or(0),
        wanted: spec.replicas.unwrap_or(1),
        // No Pod of an older ReplicaSet left.
        settled: status.replicas.unwrap_or(0) <= updated,
    };
    judge(&spec.template, annotation, key_id, seen)
}

/// A StatefulSet's progress: every replica on the update revision and ready.
pub fn stateful_set_progress(set: &StatefulSet, annotation: &str, key_id: &str) -> Progress {
    let Some(spec) = &set.spec else {
        return Progress::NotStarted;
    };
    let status = set.status.clone().unwrap_or_default();
    let seen = Seen {
        current: observed(status.observed_generation, set.metadata.generation),
        updated: status.updated_replicas.unwrap_or(0),
        available: status.available_replicas.unwrap_or(0),
        wanted: spec.replicas.unwrap_or(1),
        settled: status.update_revision.is_some()
            && status.update_revision == status.current_revision,
    };
    judge(&spec.template, annotation, key_id, seen)
}

/// A DaemonSet's progress: every scheduled node runs the new Pod, available.
pub fn daemon_set_progress(set: &DaemonSet, annotation: &str, key_id: &str) -> Progress {
    let Some(spec) = &set.spec else {
        return Progress::NotStarted;
    };
    let status = set.status.clone().unwrap_or_default();
    let seen = Seen {
        current: observed(status.observed_generation, set.metadata.generation),
        updated: status.updated_number_scheduled.unwrap_or(0),
        available: status.number_available.unwrap_or(0),
        wanted: status.desired_number_scheduled,
        settled: true,
    };
    judge(&spec.template, annotation, key_id, seen)
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
            // A new Pod is not available (failing readiness).
            (
                Some("NEW"),
                json!({"observedGeneration": 4, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
                false,
            ),
        ];
        for (annotation, status, expected) in rows {
            let progress = deployment_progress(
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
