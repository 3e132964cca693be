//! Hostile rows: wrong JSON types for the spec, metadata and each field.

use keymint::api;
use keymint_test_support::label;
use serde_json::{Value, json};

use super::super::model::*;
use crate::table::Kind;

#[rustfmt::skip]
pub(crate) fn rows(t: &mut Table) {
    use Category::WrongType as C;
    use Kind::*;
    let rows: [(Kind, &str, &'static str, Value); 19] = [
        (Api, "secretName a number", "spec.secretName", json!({"secretName": 123})),
        (Sak, "serviceAccountName a list", "spec.serviceAccountName", json!({"serviceAccountName": ["robot"]})),
        (Api, "description a boolean", "spec.description", json!({"description": true})),
        (Root, "format.prefix a number", "spec.format.prefix", json!({"format": {"prefix": 1}})),
        (Api, "permissions an object", "spec.permissions", json!({"permissions": {"read": true}})),
        (Api, "permissions [null]", "spec.permissions", json!({"permissions": [null]})),
        (Api, "permissions a nested list", "spec.permissions", json!({"permissions": [["read"]]})),
        (Sak, "secretTemplate a list", "spec.secretTemplate", json!({"secretTemplate": []})),
        (Api, "secretTemplate.labels a list", "spec.secretTemplate.labels", json!({"secretTemplate": {"labels": ["team=payments"]}})),
        (Root, "annotation value an object", "spec.secretTemplate.annotations", json!({"secretTemplate": {"annotations": {"note": {"a": "b"}}}})),
        (Api, "format a string", "spec.format", json!({"format": "ak"})),
        (Sak, "entropyBits 1e300", "spec.format.entropyBits", json!({"format": {"entropyBits": 1e300}})),
        (Root, "entropyBits -256", "spec.format.entropyBits", json!({"format": {"entropyBits": -256}})),
        (Api, "expiresAt a boolean", "spec.expiresAt", json!({"expiresAt": true})),
        (Sak, "expiresAt an object", "spec.expiresAt", json!({"expiresAt": {"seconds": 1}})),
        (Api, "deletionPolicy a list", "spec.deletionPolicy", json!({"deletionPolicy": ["Retain"]})),
        (Api, "permissions null (required)", "spec.permissions", json!({"permissions": null})),
        (Sak, "serviceAccountName null (required)", "spec.serviceAccountName", json!({"serviceAccountName": null})),
        (Root, "secretNamespace a number", "spec.secretNamespace", json!({"secretNamespace": 8})),
    ];
    for (kind, what, path, patch) in rows {
        t.push(row(C, kind, what, post_spec(kind, patch), refused(path)));
    }
    t.push(row(C, Api, "spec a string", post(json!({"spec": "permissions: [read]"})), refused("spec")));
    t.push(row(C, Sak, "spec a list", post(json!({"spec": []})), refused("spec")));
    t.push(row(C, Api, "spec null", post(json!({"spec": null})), refused("spec")));
    t.push(row(C, Api, "metadata.name a number", post(json!({"metadata": {"name": 5}, "spec": Api.minimal()})), refused("ObjectMeta.name")));
    t.push(row(C, Api, "metadata.labels a list", post(json!({"metadata": {"labels": ["a"]}, "spec": Api.minimal()})), refused("ObjectMeta.labels")));
    t.push(row(C, Api, "entropyBits 2^64", Input::Raw(format!(
        r#"{{"apiVersion":"{}","kind":"APIKey","metadata":{{"name":"@NAME@"}},"spec":{{"permissions":["read"],"format":{{"entropyBits":18446744073709551616}}}}}}"#,
        api::API_VERSION)), refused("spec.format.entropyBits")));
    t.push(row(C, Api, "optional fields null are dropped like missing ones", post_spec(Api, json!({"secretName": null, "description": null, "format": null, "secretTemplate": null, "expiresAt": null})),
        issued_and(|s| expect_eq("stored spec", &s.spec, &json!({"permissions": ["read"]})))));
    t.push(row(C, Api, "entropyBits 256.0 is the integer 256", post_spec(Api, json!({"format": {"entropyBits": 256.0}})),
        issued_and(|s| expect_eq("stored entropyBits", s.spec["format"]["entropyBits"].as_u64(), Some(256)))));
    t.push(row(C, Sak, "label value null", post_spec(Sak, json!({"secretTemplate": {"labels": {"team": null}}})),
        Expect::RefusedOr("spec.secretTemplate.labels", ready_and(|s| expect_eq("label team", s.secret.as_ref().and_then(|x| label(x, "team")), None)))));
}
