//! What the table-driven suites (`api_validation`, `hostile`) share: the
//! three kinds as table rows name them, a test's namespace and the names it
//! gives objects (and their clean-up), JSON merge of a row's patch onto a
//! minimal spec, and the check that the API server refused a row naming the
//! row's field.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use keymint::api::{ApiKey, RootKey, ServiceAccountKey};
use keymint_test_support::{OPERATOR_NAMESPACE, ROOT_KEY_NAMESPACE, WAIT, eventually};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject};
use kube::core::Status;
use kube::{CustomResourceExt, ResourceExt};
use serde_json::{Value, json};

/// The three kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Root,
    Sak,
    Api,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Root, Kind::Sak, Kind::Api];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Root => "RootKey",
            Kind::Sak => "ServiceAccountKey",
            Kind::Api => "APIKey",
        }
    }

    pub fn resource(self) -> ApiResource {
        match self {
            Kind::Root => ApiResource::erase::<RootKey>(&()),
            Kind::Sak => ApiResource::erase::<ServiceAccountKey>(&()),
            Kind::Api => ApiResource::erase::<ApiKey>(&()),
        }
    }

    pub fn crd(self) -> Value {
        let crd = match self {
            Kind::Root => RootKey::crd(),
            Kind::Sak => ServiceAccountKey::crd(),
            Kind::Api => ApiKey::crd(),
        };
        serde_json::to_value(crd).expect("CRD serialises")
    }

    pub fn plural(self) -> String {
        self.resource().plural
    }

    pub fn namespaced(self) -> bool {
        self != Kind::Root
    }

    /// The smallest valid spec of the kind.
    pub fn minimal(self) -> Value {
        match self {
            Kind::Root => json!({}),
            Kind::Sak => json!({"serviceAccountName": "robot"}),
            Kind::Api => json!({"permissions": ["read"]}),
        }
    }

    /// The key prefix keymint gives the kind's keys by default.
    pub fn default_prefix(self) -> &'static str {
        match self {
            Kind::Root => "rk",
            Kind::Sak => "sak",
            Kind::Api => "ak",
        }
    }

    /// Whether keymint's own type reads `object`, as the operator's watch must.
    pub fn readable(self, object: &Value) -> Result<(), String> {
        let object = object.clone();
        match self {
            Kind::Root => serde_json::from_value::<RootKey>(object).map(drop),
            Kind::Sak => serde_json::from_value::<ServiceAccountKey>(object).map(drop),
            Kind::Api => serde_json::from_value::<ApiKey>(object).map(drop),
        }
        .map_err(|e| e.to_string())
    }
}

/// A table test's client and namespace. RootKeys are cluster-scoped: their
/// names (and so their Secrets' names) start with the namespace's.
pub struct Ctx {
    pub client: kube::Client,
    pub namespace: String,
}

impl Ctx {
    /// The API of `kind`: in the test's namespace, or cluster-wide for RootKeys.
    pub fn api(&self, kind: Kind) -> Api<DynamicObject> {
        let resource = kind.resource();
        if kind.namespaced() {
            Api::namespaced_with(self.client.clone(), &self.namespace, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        }
    }

    /// The name an object of `kind` gets for the test's `name`.
    pub fn object_name(&self, kind: Kind, name: &str) -> String {
        if kind.namespaced() {
            name.to_string()
        } else {
            format!("{}-{name}", self.namespace)
        }
    }

    /// Names this test gave cluster-wide objects and their Secrets.
    fn mine(&self, name: &str) -> bool {
        name.starts_with(&format!("{}-", self.namespace))
    }

    /// Deletes this test's RootKeys and waits until they are gone, then the
    /// Secrets they left in the shared namespaces (`deletionPolicy: Retain`),
    /// then the test's namespace.
    pub async fn clean_up(&self) {
        let roots = self.api(Kind::Root);
        let names = |list: Vec<String>| -> Vec<String> {
            list.into_iter().filter(|n| self.mine(n)).collect()
        };
        let listed = roots
            .list(&Default::default())
            .await
            .expect("list RootKeys");
        for name in names(listed.items.iter().map(ResourceExt::name_any).collect()) {
            let _ = roots.delete(&name, &DeleteParams::default()).await;
        }
        eventually("this test's RootKeys to be gone", WAIT, || async {
            let listed = roots
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let left = names(listed.items.iter().map(ResourceExt::name_any).collect());
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        })
        .await;
        for namespace in [OPERATOR_NAMESPACE, ROOT_KEY_NAMESPACE] {
            let secrets = Api::<Secret>::namespaced(self.client.clone(), namespace);
            eventually(
                &format!("Secrets of this test's RootKeys in {namespace} to be gone"),
                WAIT,
                || async {
                    let listed = secrets
                        .list(&Default::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    let left = names(listed.items.iter().map(ResourceExt::name_any).collect());
                    for name in &left {
                        let _ = secrets.delete(name, &DeleteParams::default()).await;
                    }
                    if left.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("{left:?}"))
                    }
                },
            )
            .await;
        }
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.namespace, &DeleteParams::default())
            .await;
    }
}

/// `patch` applied to `base` as a JSON merge patch (RFC 7386): `null` removes.
pub fn merged(base: &Value, patch: &Value) -> Value {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            let mut out = base.clone();
            for (key, value) in patch {
                if value.is_null() {
                    out.remove(key);
                } else {
                    let next = merged(out.get(key).unwrap_or(&Value::Null), value);
                    out.insert(key.clone(), next);
                }
            }
            Value::Object(out)
        }
        (_, patch) => patch.clone(),
    }
}

/// A string no longer than a readable failure line.
pub fn short(text: &str) -> String {
    const MAX: usize = 400;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head}... ({} bytes)", text.len())
    }
}

/// Whether the error cause `field` is `path` or inside it.
pub fn names_field(field: &str, path: &str) -> bool {
    field == path
        || field
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// The API server's refusal in `result` (an error otherwise).
pub fn refusal<T>(result: &Result<T, kube::Error>) -> Result<&Status, String> {
    match result {
        Ok(_) => Err("accepted".into()),
        Err(kube::Error::Api(status)) => Ok(status),
        Err(other) => Err(format!("not an API error: {}", short(&other.to_string()))),
    }
}

/// Checks that `status` has one of `codes` and a message naming `path`; with
/// `causes`, a 422's causes must name `path` and no other field, so every row
/// is invalid in exactly the way it says.
pub fn check_refused(
    status: &Status,
    codes: &[u16],
    path: &str,
    causes: bool,
) -> Result<(), String> {
    let message = short(&status.message);
    if !codes.contains(&status.code) {
        return Err(format!(
            "HTTP {} (expected {codes:?}): {message}",
            status.code
        ));
    }
    if !status.message.contains(path) {
        return Err(format!(
            "HTTP {}: message does not name {path}: {message}",
            status.code
        ));
    }
    if causes && status.code == 422 {
        let fields: Vec<&str> = status
            .details
            .iter()
            .flat_map(|d| d.causes.iter())
            .map(|c| c.field.as_str())
            .filter(|f| !f.is_empty() && *f != "<nil>")
            .collect();
        if fields.is_empty() || fields.iter().any(|f| !names_field(f, path)) {
            return Err(format!(
                "causes name {fields:?}, not just {path}: {message}"
            ));
        }
    }
    Ok(())
}
