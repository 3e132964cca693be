//! Hostile rows: unknown fields in spec, metadata and nested objects.

use keymint::api;
use serde_json::{Value, json};

use super::super::model::*;
use crate::table::Kind;

#[rustfmt::skip]
pub(crate) fn rows(t: &mut Table) {
    use Category::UnknownField as C;
    use Kind::*;
    let with = |kind: Kind, extra: Value| post(with_nulls(&json!({"spec": kind.minimal()}), &extra));
    t.push(row(C, Api, "top-level data (as in a Secret)", with(Api, json!({"data": {"key": "YWtfYXR0YWNrZXI="}})), refused("data")));
    t.push(row(C, Sak, "metadata.owner", with(Sak, json!({"metadata": {"owner": "someone"}})), refused("metadata.owner")));
    t.push(row(C, Root, "spec.format.prefixes", with(Root, json!({"spec": {"format": {"prefixes": ["rk"]}}})), refused("spec.format.prefixes")));
    t.push(row(C, Api, "spec.secretTemplate.type asking for a service-account token", with(Api, json!({"spec": {"secretTemplate": {"type": "kubernetes.io/service-account-token"}}})), refused("spec.secretTemplate.type")));
    t.push(row(C, Sak, "spec.secretTemplate.data", with(Sak, json!({"spec": {"secretTemplate": {"data": {"key": "ak_attacker"}}}})), refused("spec.secretTemplate.data")));
    t.push(row(C, Api, "spec.type", with(Api, json!({"spec": {"type": "kubernetes.io/service-account-token"}})), refused("spec.type")));
    t.push(row(C, Root, "spec.ownerReferences", with(Root, json!({"spec": {"ownerReferences": [{"kind": "Namespace", "name": "kube-system"}]}})), refused("spec.ownerReferences")));
    t.push(row(C, Api, "spec.SecretName (miscased)", with(Api, json!({"spec": {"SecretName": "x"}})), refused("spec.SecretName")));
    t.push(row(C, Api, "spec.secretNamespace on an APIKey (a RootKey-only field)", with(Api, json!({"spec": {"secretNamespace": "kube-system"}})), refused("spec.secretNamespace")));
    t.push(row(C, Sak, "spec.secretNamespace on a ServiceAccountKey", with(Sak, json!({"spec": {"secretNamespace": "kube-system"}})), refused("spec.secretNamespace")));
    t.push(row(C, Sak, "spec.permissions on a ServiceAccountKey", with(Sak, json!({"spec": {"permissions": ["admin"]}})), refused("spec.permissions")));
    t.push(row(C, Root, "spec.serviceAccountName on a RootKey", with(Root, json!({"spec": {"serviceAccountName": "default"}})), refused("spec.serviceAccountName")));
    t.push(row(C, Api, "duplicate secretName in the JSON", Input::Raw(format!(
        r#"{{"apiVersion":"{}","kind":"APIKey","metadata":{{"name":"@NAME@"}},"spec":{{"permissions":["read"],"secretName":"a","secretName":"b"}}}}"#,
        api::API_VERSION)), refused("secretName")));
    t.push(row(C, Api, "kind ApiKey (miscased)", post(json!({"kind": "ApiKey", "spec": Api.minimal()})), refused("kind")));
    t.push(row(C, Api, "spec.secretTemplate.type sent without strict validation is pruned: the Secret stays keymint.dev/key",
        Input::Post { manifest: json!({"spec": {"permissions": ["read"], "secretTemplate": {"type": "kubernetes.io/service-account-token", "labels": {"team": "a"}}}}), strict: false },
        issued_and(|s| expect_eq("stored secretTemplate", &s.spec["secretTemplate"], &json!({"labels": {"team": "a"}})))));
    let forged = json!({"id": "FORGED1", "keySHA256": "0".repeat(64), "conditions": [{"type": "Ready", "status": "True", "reason": "KeyIssued", "message": "forged", "lastTransitionTime": "2020-01-01T00:00:00Z"}]});
    t.push(row(C, Api, "status sent with the object on create is ignored", with(Api, json!({"status": forged})),
        issued_and(|s| if s.status.id.as_deref() == Some("FORGED1") { Err("the forged status.id was kept".into()) } else { Ok(()) })));
}
