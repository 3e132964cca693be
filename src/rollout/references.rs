//! Whether a pod template reads a Secret, and how.

use k8s_openapi::api::core::v1::PodSpec;

/// How a pod template reads the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `env[].valueFrom.secretKeyRef` of a container (by name).
    Env { container: String },
    /// `envFrom[].secretRef` of a container.
    EnvFrom { container: String },
    /// A `secret` volume.
    Volume { volume: String },
    /// A `projected` volume with a `secret` source.
    Projected { volume: String },
}

/// Every way `spec` reads the Secret `secret` (init and regular containers).
pub fn references_secret(spec: &PodSpec, secret: &str) -> Vec<Reference> {
    let mut found = Vec::new();
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for container in containers {
        let env = container.env.iter().flatten();
        if env
            .filter_map(|var| var.value_from.as_ref()?.secret_key_ref.as_ref())
            .any(|r| r.name == secret)
        {
            found.push(Reference::Env {
                container: container.name.clone(),
            });
        }
        let env_from = container.env_from.iter().flatten();
        if env_from
            .filter_map(|source| source.secret_ref.as_ref())
            .any(|r| r.name == secret)
        {
            found.push(Reference::EnvFrom {
                container: container.name.clone(),
            });
        }
    }
    for volume in spec.volumes.iter().flatten() {
        if volume
            .secret
            .as_ref()
            .is_some_and(|source| source.secret_name.as_deref() == Some(secret))
        {
            found.push(Reference::Volume {
                volume: volume.name.clone(),
            });
        }
        let projected = volume.projected.as_ref().and_then(|p| p.sources.as_ref());
        if projected
            .into_iter()
            .flatten()
            .filter_map(|source| source.secret.as_ref())
            .any(|s| s.name == secret)
        {
            found.push(Reference::Projected {
                volume: volume.name.clone(),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).expect("a PodSpec")
    }

    #[test]
    fn every_way_of_reading_a_secret_is_found_and_nothing_else() {
        let rows = [
            (
                serde_json::json!({"containers": [{"name": "app", "env": [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "api-key", "key": "key"}}}]}]}),
                vec![Reference::Env {
                    container: "app".into(),
                }],
            ),
            (
                serde_json::json!({"containers": [{"name": "app", "envFrom": [{"secretRef": {"name": "api-key"}}]}]}),
                vec![Reference::EnvFrom {
                    container: "app".into(),
                }],
            ),
            (
                serde_json::json!({"containers": [{"name": "app"}], "initContainers": [{"name": "init", "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "api-key", "key": "key"}}}]}]}),
                vec![Reference::Env {
                    container: "init".into(),
                }],
            ),
            (
                serde_json::json!({"containers": [{"name": "app"}], "volumes": [{"name": "creds", "secret": {"secretName": "api-key"}}]}),
                vec![Reference::Volume {
                    volume: "creds".into(),
                }],
            ),
            (
                serde_json::json!({"containers": [{"name": "app"}], "volumes": [{"name": "all", "projected": {"sources": [{"secret": {"name": "api-key"}}]}}]}),
                vec![Reference::Projected {
                    volume: "all".into(),
                }],
            ),
            // Another Secret, a ConfigMap of the same name: not a holder.
            (
                serde_json::json!({"containers": [{"name": "app", "envFrom": [{"configMapRef": {"name": "api-key"}}, {"secretRef": {"name": "other"}}]}],
                               "volumes": [{"name": "c", "configMap": {"name": "api-key"}}]}),
                vec![],
            ),
        ];
        for (value, expected) in rows {
            assert_eq!(
                references_secret(&spec(value.clone()), "api-key"),
                expected,
                "{value}"
            );
        }
    }
}
