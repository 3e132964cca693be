//! Reading objects that tenants can write, without trusting them.
//!
//! kube-client logs the whole body of a response it cannot parse (at WARN),
//! and one object that fails to parse fails its whole LIST page or watch. A
//! tenant can make any object unparseable for k8s-openapi's types, e.g. with a
//! `managedFields` entry whose `time` is past what `jiff` can represent. So
//! every type keymint reads from the API server is parsed here, leniently:
//!
//! - [`MetaOnly`]: metadata-only requests (the API server leaves out `data`),
//!   for the watches on Secrets and ServiceAccounts and for write responses;
//!   only the fields keymint uses are kept.
//! - [`Parsed`]: a whole object, for the key kinds and for the one Secret a
//!   reconcile reads. It never fails to parse: an object that does not fit its
//!   type becomes [`Parsed::Unreadable`], reported for that object alone.
//!
//! `managedFields` times are never parsed; `managedFields` are dropped
//! altogether except on the Secret keymint writes, where server-side apply's
//! field ownership is read from them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::marker::PhantomData;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    FieldsV1, ManagedFieldsEntry, OwnerReference, Time,
};
use kube::Resource;
use kube::api::ObjectMeta;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// What of an object's metadata is kept after reading it.
pub trait Trim {
    /// Removes from freshly read metadata what keymint never uses, so a
    /// tenant's huge labels or annotations are not cached.
    fn trim(metadata: &mut ObjectMeta);
}

/// The metadata fields keymint may read, each parsed on its own so that one
/// odd value costs only that value.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawMeta {
    name: Option<String>,
    generate_name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    creation_timestamp: Option<String>,
    deletion_timestamp: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<Value>>,
    finalizers: Option<Vec<String>>,
    managed_fields: Option<Vec<RawManagedFields>>,
}

/// A `managedFields` entry without its `time`, which keymint never needs.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawManagedFields {
    manager: Option<String>,
    operation: Option<String>,
    api_version: Option<String>,
    fields_type: Option<String>,
    fields_v1: Option<Value>,
    subresource: Option<String>,
}

/// Deserialises into `T`, or `None` for any value that does not fit.
fn parse_or_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

/// Metadata read leniently: never fails for any JSON object.
#[derive(Deserialize, Default)]
struct LenientMeta(#[serde(deserialize_with = "parse_or_none")] Option<RawMeta>);

impl RawMeta {
    fn into_object_meta(self) -> ObjectMeta {
        let time = |text: Option<String>| text.and_then(|t| t.parse::<Timestamp>().ok()).map(Time);
        // A deletion mark that cannot be read still means "terminating".
        let deletion_timestamp = self
            .deletion_timestamp
            .map(|t| Time(t.parse::<Timestamp>().unwrap_or(Timestamp::UNIX_EPOCH)));
        ObjectMeta {
            name: self.name,
            generate_name: self.generate_name,
            namespace: self.namespace,
            uid: self.uid,
            resource_version: self.resource_version,
            generation: self.generation,
            creation_timestamp: time(self.creation_timestamp),
            deletion_timestamp,
            labels: self.labels,
            annotations: self.annotations,
            owner_references: self.owner_references.map(|refs| {
                refs.into_iter()
                    .filter_map(|r| serde_json::from_value::<OwnerReference>(r).ok())
                    .collect()
            }),
            finalizers: self.finalizers,
            managed_fields: self.managed_fields.map(|entries| {
                entries
                    .into_iter()
                    .map(|e| ManagedFieldsEntry {
                        manager: e.manager,
                        operation: e.operation,
                        api_version: e.api_version,
                        fields_type: e.fields_type,
                        fields_v1: e.fields_v1.map(FieldsV1),
                        subresource: e.subresource,
                        time: None,
                    })
                    .collect()
            }),
            ..Default::default()
        }
    }
}

fn read_meta(value: Option<Value>) -> ObjectMeta {
    value
        .and_then(|v| serde_json::from_value::<LenientMeta>(v).ok())
        .and_then(|m| m.0)
        .unwrap_or_default()
        .into_object_meta()
}

/// An object of kind `K` of which only the metadata is read (and requested:
/// the API server answers with `PartialObjectMetadata`).
pub struct MetaOnly<K> {
    pub metadata: ObjectMeta,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for MetaOnly<K> {
    fn clone(&self) -> Self {
        MetaOnly {
            metadata: self.metadata.clone(),
            _kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for MetaOnly<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaOnly")
            .field("name", &self.metadata.name)
            .field("namespace", &self.metadata.namespace)
            .finish()
    }
}

/// Annotations a metadata-only object keeps: the one naming keymint's owner.
const META_ONLY_ANNOTATIONS: [&str; 1] = [super::secret::OWNER];

impl<'de, K> Deserialize<'de> for MetaOnly<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Envelope {
            #[serde(default)]
            metadata: LenientMeta,
        }
        let envelope = Envelope::deserialize(deserializer)?;
        let mut metadata = envelope.metadata.0.unwrap_or_default().into_object_meta();
        metadata.managed_fields = None;
        metadata.labels = None;
        if let Some(annotations) = metadata.annotations.as_mut() {
            annotations.retain(|key, _| META_ONLY_ANNOTATIONS.contains(&key.as_str()));
        }
        Ok(MetaOnly {
            metadata,
            _kind: PhantomData,
        })
    }
}

/// `Resource` for a wrapper of `K`: the same kind, group, version and URL.
macro_rules! resource_of_wrapped_kind {
    ($wrapper:ident, metadata_api = $metadata_api:expr, |$self_:ident| $meta:expr, $meta_mut:expr) => {
        impl<K: Resource> Resource for $wrapper<K> {
            type DynamicType = K::DynamicType;
            type Scope = K::Scope;

            fn metadata_api() -> bool {
                $metadata_api
            }
            fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
                K::kind(dt)
            }
            fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
                K::group(dt)
            }
            fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
                K::version(dt)
            }
            fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
                K::plural(dt)
            }
            fn meta(&$self_) -> &ObjectMeta {
                $meta
            }
            fn meta_mut(&mut $self_) -> &mut ObjectMeta {
                $meta_mut
            }
        }
    };
}

resource_of_wrapped_kind!(
    MetaOnly,
    metadata_api = true,
    |self| &self.metadata,
    &mut self.metadata
);

/// A whole object read leniently.
// The readable case is the common one: boxing it would cost every object.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Parsed<K> {
    Ok(K),
    /// The object does not fit its type. `error` names the field (a JSON
    /// path) and says what was expected; it never quotes the value.
    Unreadable {
        metadata: ObjectMeta,
        error: String,
    },
}

impl<K> Parsed<K> {
    pub fn ok(&self) -> Option<&K> {
        match self {
            Parsed::Ok(object) => Some(object),
            Parsed::Unreadable { .. } => None,
        }
    }

    pub fn into_ok(self) -> Option<K> {
        match self {
            Parsed::Ok(object) => Some(object),
            Parsed::Unreadable { .. } => None,
        }
    }
}

/// Where in the object parsing failed, and what kind of mismatch: serde's
/// own message can quote the offending value, so only its category is kept.
fn describe(error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    use serde_json::error::Category;
    let what = match error.inner().classify() {
        Category::Data => "has a value of the wrong type or out of range",
        Category::Syntax | Category::Eof => "is not valid JSON",
        Category::Io => "could not be read",
    };
    format!("{} {what}", error.path())
}

fn parse_body<K: serde::de::DeserializeOwned>(body: &Value) -> Result<K, String> {
    serde_path_to_error::deserialize(body).map_err(|e| describe(&e))
}

impl<'de, K> Deserialize<'de> for Parsed<K>
where
    K: Resource + Trim + serde::de::DeserializeOwned,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut body = Map::<String, Value>::deserialize(deserializer)?;
        let mut metadata = read_meta(body.remove("metadata"));
        K::trim(&mut metadata);
        // The object's own metadata is replaced by the lenient one below.
        body.insert("metadata".into(), Value::Object(Map::new()));
        let mut body = Value::Object(body);
        let parsed = match parse_body::<K>(&body) {
            Ok(object) => Ok(object),
            // The status is keymint's own projection and is rewritten by the
            // next reconcile: an unreadable one is dropped rather than losing
            // the object.
            Err(error)
                if body
                    .as_object_mut()
                    .and_then(|b| b.remove("status"))
                    .is_some() =>
            {
                parse_body::<K>(&body).map_err(|_| error)
            }
            Err(error) => Err(error),
        };
        wipe_strings(&mut body);
        Ok(match parsed {
            Ok(mut object) => {
                *object.meta_mut() = metadata;
                Parsed::Ok(object)
            }
            Err(error) => Parsed::Unreadable { metadata, error },
        })
    }
}

/// The raw body can hold a Secret's data: overwrite its strings before it is
/// dropped, as the Secret itself is after use.
fn wipe_strings(value: &mut Value) {
    use zeroize::Zeroize;
    match value {
        Value::String(text) => text.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe_strings),
        Value::Object(map) => map.values_mut().for_each(wipe_strings),
        _ => {}
    }
}

resource_of_wrapped_kind!(
    Parsed,
    metadata_api = false,
    |self| match self {
        Parsed::Ok(object) => object.meta(),
        Parsed::Unreadable { metadata, .. } => metadata,
    },
    match self {
        Parsed::Ok(object) => object.meta_mut(),
        Parsed::Unreadable { metadata, .. } => metadata,
    }
);

/// The Secret keymint reads back keeps everything: its record is in the
/// annotations and its field ownership in `managedFields`.
impl Trim for k8s_openapi::api::core::v1::Secret {
    fn trim(_metadata: &mut ObjectMeta) {}
}

/// For a key resource only its rotate request is read from the annotations
/// (recorded by hash when long, see the engine), and labels never.
pub fn trim_key_resource(metadata: &mut ObjectMeta) {
    metadata.managed_fields = None;
    metadata.labels = None;
    if let Some(annotations) = metadata.annotations.as_mut() {
        annotations.retain(|key, _| {
            key == crate::api::ROTATE_REQUEST_ANNOTATION
                || key == crate::api::COMPROMISED_ANNOTATION
        });
        for value in annotations.values_mut() {
            *value = super::engine::rotate_request_record(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiKey;
    use k8s_openapi::api::core::v1::Secret;
    use serde_json::json;

    fn poisoned_meta() -> Value {
        json!({
            "name": "k", "namespace": "team", "uid": "u1", "resourceVersion": "7",
            "creationTimestamp": "2026-11-23T10:00:00Z",
            "labels": {"app.kubernetes.io/managed-by": "keymint", "big": "x"},
            "annotations": {"keymint.dev/owner": "APIKey/team/k", "other": "y"},
            "managedFields": [
                {"manager": "keymint", "operation": "Apply", "apiVersion": "v1",
                 "time": "2026-11-23T10:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:data": {"f:key": {}}}},
                {"manager": "mallory", "operation": "Update", "apiVersion": "v1",
                 "time": "9999-12-31T23:59:59Z", "fieldsType": "FieldsV1", "fieldsV1": {}}
            ]
        })
    }

    #[test]
    fn k8s_openapi_cannot_read_the_poisoned_time_but_lenient_types_can() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": poisoned_meta(),
            "type": "keymint.dev/key", "data": {"key": "YWtfeA=="}});
        assert!(serde_json::from_value::<Secret>(secret.clone()).is_err());

        let parsed: Parsed<Secret> = serde_json::from_value(secret.clone()).expect("never fails");
        let secret_read = parsed.into_ok().expect("readable");
        assert_eq!(secret_read.metadata.name.as_deref(), Some("k"));
        let managers: Vec<_> = secret_read
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .map(|e| (e.manager.clone(), e.time.clone()))
            .collect();
        assert_eq!(
            managers,
            vec![
                (Some("keymint".into()), None),
                (Some("mallory".into()), None)
            ]
        );
        assert_eq!(secret_read.data.expect("data")["key"].0, b"ak_x".to_vec());

        let meta: MetaOnly<Secret> = serde_json::from_value(secret).expect("never fails");
        assert_eq!(meta.metadata.resource_version.as_deref(), Some("7"));
        assert!(meta.metadata.managed_fields.is_none() && meta.metadata.labels.is_none());
        assert_eq!(
            meta.metadata.annotations.expect("owner kept"),
            BTreeMap::from([("keymint.dev/owner".to_string(), "APIKey/team/k".to_string())])
        );
    }

    #[test]
    fn metadata_of_any_shape_still_gives_an_object() {
        for metadata in [
            json!(null),
            json!(7),
            json!("x"),
            json!({"name": 3}),
            json!([]),
        ] {
            let meta: MetaOnly<Secret> =
                serde_json::from_value(json!({"metadata": metadata})).expect("never fails");
            assert!(meta.metadata.name.is_none());
        }
        let meta: MetaOnly<Secret> = serde_json::from_value(json!({
            "metadata": {"name": "n", "ownerReferences": [7, {"apiVersion": "v1", "kind": "K", "name": "o", "uid": "u"}],
                         "deletionTimestamp": "9999-12-31T23:59:59Z"}
        }))
        .expect("never fails");
        assert_eq!(meta.metadata.owner_references.expect("refs").len(), 1);
        assert!(
            meta.metadata.deletion_timestamp.is_some(),
            "still terminating"
        );
    }

    fn api_key(spec: Value, status: Option<Value>) -> Value {
        let mut object = json!({"apiVersion": "keymint.dev/v1alpha1", "kind": "APIKey",
            "metadata": poisoned_meta(), "spec": spec});
        if let Some(status) = status {
            object["status"] = status;
        }
        object
    }

    #[test]
    fn a_key_resource_keeps_only_what_the_engine_reads() {
        let mut object = api_key(json!({"permissions": ["read"]}), None);
        object["metadata"]["annotations"]["keymint.dev/rotate-request"] = json!("x".repeat(5000));
        let parsed: Parsed<ApiKey> = serde_json::from_value(object).expect("never fails");
        let key = parsed.into_ok().expect("readable");
        assert!(key.metadata.managed_fields.is_none() && key.metadata.labels.is_none());
        let annotations = key.metadata.annotations.expect("annotations");
        assert_eq!(annotations.len(), 1);
        assert!(annotations["keymint.dev/rotate-request"].starts_with("sha256:"));
    }

    #[test]
    fn an_unreadable_status_is_dropped_and_an_unreadable_spec_is_reported_by_path() {
        let object = api_key(
            json!({"permissions": ["read"]}),
            Some(json!({"createdAt": "9999-12-31T23:59:59Z"})),
        );
        let parsed: Parsed<ApiKey> = serde_json::from_value(object).expect("never fails");
        let key = parsed.into_ok().expect("readable without its status");
        assert!(key.status.is_none());

        let object = api_key(json!({"permissions": "not-a-list-SECRETVALUE"}), None);
        let parsed: Parsed<ApiKey> = serde_json::from_value(object).expect("never fails");
        match parsed {
            Parsed::Unreadable { metadata, error } => {
                assert_eq!(metadata.name.as_deref(), Some("k"));
                assert!(error.contains("spec.permissions"), "{error}");
                assert!(!error.contains("SECRETVALUE"), "{error}");
            }
            Parsed::Ok(_) => panic!("a string is not a list"),
        }
    }
}
