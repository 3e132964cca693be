//! Helpers for the CRD schemas: shared patterns, CEL string quoting and the
//! schemars transform that keeps optional fields non-nullable.

use schemars::Schema;
use serde_json::{Value, json};

/// DNS-1123 subdomain (Secret and ServiceAccount names); at most 253 characters.
pub const DNS1123_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// DNS-1123 label (namespace names); at most 63 characters.
pub const DNS1123_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// RFC 3339 date-time with an explicit offset, at most nanosecond precision.
///
/// The API server's `format: date-time` check is looser (any character before
/// the fraction, any number of fraction digits, offsets up to `+99:99`); this
/// pattern keeps what it admits parseable by `jiff::Timestamp` (hence by
/// `k8s_openapi`'s `Time`), so that a stored object always deserialises.
pub const RFC3339_PATTERN: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$";

/// Quotes `text` as a single-quoted CEL string literal.
pub fn cel_str(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('\'');
    for c in text.chars() {
        if c == '\\' || c == '\'' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}

/// A schema from a JSON object literal (`json!({...})`); anything else gives
/// the empty schema, which the golden test would refuse as untyped.
pub fn object_schema(value: Value) -> Schema {
    match value {
        Value::Object(object) => Schema::from(object),
        _ => Schema::default(),
    }
}

/// schemars transform for a struct's schema: its optional properties accept
/// no `null`.
///
/// schemars lets every `Option` field be `null`, and kube's CRD generator
/// turns that into `nullable: true`. A nullable field that is sent as `null` is
/// stored as `null`, so `has(self.field)` is true in CEL rules while the value
/// is unusable. Without `nullable` the API server drops such a `null` before
/// validation, which is what an absent optional field means.
pub fn no_nullable(schema: &mut Schema) {
    let Some(Value::Object(properties)) = schema.get_mut("properties") else {
        return;
    };
    for property in properties.values_mut() {
        strip_null(property);
    }
}

fn strip_null(property: &mut Value) {
    let Value::Object(object) = property else {
        return;
    };
    object.remove("nullable");
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            object.insert("type".into(), only);
        }
    }
    // `Option<T>` of a schema without a plain `type` becomes
    // `anyOf: [T, {type: null}]`: keep T and this property's own keywords.
    let Some(Value::Array(any_of)) = object.get("anyOf") else {
        return;
    };
    let non_null: Vec<&Value> = any_of.iter().filter(|s| !is_null_schema(s)).collect();
    if non_null.len() + 1 != any_of.len() || non_null.len() != 1 {
        return;
    }
    let Some(Value::Object(inner)) = non_null.first().map(|s| (*s).clone()) else {
        return;
    };
    object.remove("anyOf");
    for (key, value) in inner {
        object.entry(key).or_insert(value);
    }
}

fn is_null_schema(schema: &Value) -> bool {
    match schema {
        Value::Object(object) => {
            object.get("type") == Some(&Value::String("null".into()))
                || (object.get("nullable") == Some(&Value::Bool(true))
                    && object.get("enum") == Some(&Value::Array(vec![Value::Null])))
                || object.get("const") == Some(&Value::Null)
        }
        _ => false,
    }
}

/// A label selector schema with bounded sizes (the upstream type's schema has
/// none): at most 16 labels, 16 expressions of 16 values each.
pub fn bounded_label_selector(description: &str, match_labels: &str) -> Schema {
    object_schema(json!({
        "type": "object",
        "description": description,
        "properties": {
            "matchLabels": {
                "description": match_labels,
                "type": "object",
                "maxProperties": 16,
                "additionalProperties": {"type": "string", "maxLength": 63},
            },
            "matchExpressions": {
                "description": "Label requirements, at most 16.",
                "type": "array",
                "maxItems": 16,
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {"description": "The label key.", "type": "string", "maxLength": 317},
                        "operator": {"description": "In, NotIn, Exists or DoesNotExist.", "type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                        "values": {
                            "description": "Values for In and NotIn, at most 16.",
                            "type": "array",
                            "maxItems": 16,
                            "items": {"type": "string", "maxLength": 63},
                        },
                    },
                },
            },
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cel_quoting() {
        assert_eq!(cel_str(r"a\.b'c"), r"'a\\.b\'c'");
    }

    #[test]
    fn strips_null() {
        let mut schema = Schema::try_from(serde_json::json!({
            "type": "object",
            "properties": {
                "a": {"type": ["string", "null"], "maxLength": 3},
                "b": {"description": "d", "anyOf": [{"type": "object", "properties": {}}, {"type": "null"}]},
                "c": {"type": "integer"},
            }
        }))
        .expect("object");
        no_nullable(&mut schema);
        assert_eq!(
            schema.as_value(),
            &serde_json::json!({
                "type": "object",
                "properties": {
                    "a": {"type": "string", "maxLength": 3},
                    "b": {"description": "d", "type": "object", "properties": {}},
                    "c": {"type": "integer"},
                }
            })
        );
    }
}
