//! Objects as raw JSON: requests that bypass the typed client, for objects it
//! cannot parse (a poisoned `managedFields` time), their paths, and the fields
//! tests read from them.

use http::Method;
use k8s_openapi::ByteString;
use serde_json::{Value, json};

const GROUP_PATH: &str = "/apis/keymint.dev/v1alpha1";

pub fn secret_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/secrets/{name}")
}

pub fn account_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}")
}

/// The path of a keymint object (`namespace` `None`: cluster-scoped).
pub fn key_path(plural: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace) => format!("{GROUP_PATH}/namespaces/{namespace}/{plural}/{name}"),
        None => format!("{GROUP_PATH}/{plural}/{name}"),
    }
}

/// One request with an optional `(content type, body)`; the answer as JSON
/// (`null` when it is not JSON).
pub async fn raw_request(
    client: &kube::Client,
    method: Method,
    path: &str,
    body: Option<(&str, &Value)>,
) -> Result<Value, kube::Error> {
    let mut builder = http::Request::builder().method(method).uri(path);
    let bytes = match body {
        Some((content_type, body)) => {
            builder = builder.header(http::header::CONTENT_TYPE, content_type);
            serde_json::to_vec(body).expect("a JSON body serialises")
        }
        None => Vec::new(),
    };
    let request = builder.body(bytes).expect("request");
    let text = client.request_text(request).await?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The object (or list) at `path` as JSON, `None` when it does not exist.
pub async fn raw_get(client: &kube::Client, path: &str) -> Result<Option<Value>, String> {
    match raw_request(client, Method::GET, path, None).await {
        Ok(value) => Ok(Some(value)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(error) => Err(format!("GET {path}: {error}")),
    }
}

/// A JSON merge patch of the object at `path`; the object after it.
pub async fn raw_merge(client: &kube::Client, path: &str, patch: &Value) -> Value {
    raw_request(
        client,
        Method::PATCH,
        path,
        Some(("application/merge-patch+json", patch)),
    )
    .await
    .unwrap_or_else(|e| panic!("merge patch {path}: {e}"))
}

/// `data.<field>` of a raw Secret, decoded.
pub fn raw_data(secret: &Value, field: &str) -> Option<Vec<u8>> {
    serde_json::from_value::<ByteString>(secret.get("data")?.get(field)?.clone())
        .ok()
        .map(|b| b.0)
}

/// `data.<field>` of a raw Secret, decoded, when it is UTF-8.
pub fn raw_text(secret: &Value, field: &str) -> Option<String> {
    String::from_utf8(raw_data(secret, field)?).ok()
}

pub fn raw_annotation(object: &Value, key: &str) -> Option<String> {
    object["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_string)
}

/// `(status, reason)` of a raw object's Ready condition.
pub fn raw_ready(object: &Value) -> Option<(String, String)> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// A time past the end of what `jiff::Timestamp` (and so `k8s_openapi`'s
/// `Time`) reads: a `managedFields` entry with it makes the object unreadable
/// to typed clients.
pub const POISON_TIME: &str = "9999-12-31T23:59:59Z";

/// Whether `object` has `manager`'s poisoned `managedFields` entry.
pub fn is_poisoned(object: &Value, manager: &str) -> bool {
    object["metadata"]["managedFields"]
        .as_array()
        .is_some_and(|entries| {
            entries.iter().any(|e| {
                e["manager"].as_str() == Some(manager) && e["time"].as_str() == Some(POISON_TIME)
            })
        })
}

/// Appends a `managedFields` entry of `manager` dated [`POISON_TIME`] to the
/// object at `path` (unless it is there already), checks that the API server
/// kept it, and returns the object.
pub async fn poison(client: &kube::Client, path: &str, manager: &str) -> Value {
    let object = raw_get(client, path)
        .await
        .expect("read before poisoning")
        .unwrap_or_else(|| panic!("{path} exists"));
    if is_poisoned(&object, manager) {
        return object;
    }
    let mut entries = object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    entries.push(json!({
        "manager": manager, "operation": "Update", "apiVersion": object["apiVersion"],
        "time": POISON_TIME, "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:labels": {}}}
    }));
    let patched = raw_merge(
        client,
        path,
        &json!({"metadata": {"managedFields": entries}}),
    )
    .await;
    assert!(
        is_poisoned(&patched, manager),
        "the API server kept the poisoned entry on {path}: {}",
        patched["metadata"]["managedFields"]
    );
    patched
}
