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

/// A Deployment's progress (kubectl's `rollout status` rules).
pub fn deployment_progress(deployment: &Deployment, annotation: &str, key_id: &str) -> Progress {
    let Some(spec) = &deployment.spec else {
        return Progress::NotStarted;
    };
    if !carries(&spec.template, annotation, key_id) {
        return Progress::NotStarted;
    }
    let wanted = spec.replicas.unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let current = status.observed_generation.is_some()
        && status.observed_generation >= deployment.metadata.generation;
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if current && updated >= wanted && available >= wanted && total <= updated {
        Progress::Done
    } else {
        Progress::Rolling {
            updated,
            available,
            wanted,
        }
    }
}

/// A StatefulSet's progress: every replica on the update revision and ready.
pub fn stateful_set_progress(set: &StatefulSet, annotation: &str, key_id: &str) -> Progress {
    let Some(spec) = &set.spec else {
        return Progress::NotStarted;
    };
    if !carries(&spec.template, annotation, key_id) {
        return Progress::NotStarted;
    }
    let wanted = spec.replicas.unwrap_or(1);
    let status = set.status.clone().unwrap_or_default();
    let current = status.observed_generation.is_some()
        && status.observed_generation >= set.metadata.generation;
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let same_revision =
        status.update_revision.is_some() && status.update_revision == status.current_revision;
    if current && same_revision && updated >= wanted && available >= wanted {
        Progress::Done
    } else {
        Progress::Rolling {
            updated,
            available,
            wanted,
        }
    }
}

/// A DaemonSet's progress: every scheduled node runs the new Pod, available.
pub fn daemon_set_progress(set: &DaemonSet, annotation: &str, key_id: &str) -> Progress {
    let Some(spec) = &set.spec else {
        return Progress::NotStarted;
    };
    if !carries(&spec.template, annotation, key_id) {
        return Progress::NotStarted;
    }
    let status = set.status.clone().unwrap_or_default();
    let current = status.observed_generation.is_some()
        && status.observed_generation >= set.metadata.generation;
    let wanted = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let available = status.number_available.unwrap_or(0);
    if current && updated >= wanted && available >= wanted {
        Progress::Done
    } else {
        Progress::Rolling {
            updated,
            available,
            wanted,
        }
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
