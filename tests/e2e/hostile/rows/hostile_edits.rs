//! Hostile rows: edits of existing, Ready objects and of their Secrets.

use keymint::keys::sha256_hex;
use keymint_test_support::annotation;
use kube::ResourceExt;
use serde_json::json;

use super::super::model::*;
use crate::table::Kind;

#[rustfmt::skip]
pub(crate) fn rows(t: &mut Table) {
    use Category::HostileEdit as C;
    use Kind::*;
    t.push(row(C, Sak, "serviceAccountName changed to a missing account: the key is revoked", edit(Sak, json!({}), Edit::Spec(json!({"serviceAccountName": "ghost"}))),
        Expect::State(handled("ServiceAccountNotFound", &["spec.serviceAccountName", "ghost"], After::Absent))));
    t.push(row(C, Sak, "serviceAccountName changed to another account: a new key for the new identity", edit(Sak, json!({}), Edit::Spec(json!({"serviceAccountName": "robot2"}))),
        issued_and(|s| {
            if s.status.id == s.before_id { return Err("the key of the previous account was kept".into()); }
            expect_eq("keymint.dev/service-account", s.secret.as_ref().and_then(|x| annotation(x, "keymint.dev/service-account")).as_deref(), Some("robot2"))
        })));
    t.push(row(C, Api, "deletionPolicy Delete -> Retain drops the owner reference, keeps the key", edit(Api, json!({}), Edit::Spec(json!({"deletionPolicy": "Retain"}))),
        issued_and(|s| {
            expect_eq("status.id", &s.status.id, &s.before_id)?;
            expect_eq("owner references", s.secret.as_ref().map(|x| x.owner_references().len()), Some(0))
        })));
    t.push(row(C, Root, "deletionPolicy Retain -> Delete adds the owner reference, keeps the key", edit(Root, json!({"deletionPolicy": "Retain"}), Edit::Spec(json!({"deletionPolicy": "Delete"}))),
        issued_and(|s| {
            expect_eq("status.id", &s.status.id, &s.before_id)?;
            let kinds: Vec<String> = s.secret.as_ref().map(|x| x.owner_references().iter().map(|r| r.kind.clone()).collect()).unwrap_or_default();
            expect_eq("owner reference kinds", kinds, vec!["RootKey".to_string()])
        })));
    let other = format!("APIKey/{}/someone-else", t.ctx.namespace);
    let reclaimed = || ready_and(|s| expect_eq("status.id", &s.status.id, &s.before_id));
    t.push(row(C, Api, "the Secret's keymint.dev/owner edited to another resource's id",
        edit(Api, json!({}), Edit::Secret(json!({"metadata": {"annotations": {"keymint.dev/owner": other}}}))),
        Expect::State(State::Any(vec![handled("SecretConflict", &["spec.secretName", "someone-else"], After::Unchanged), reclaimed()]))));
    t.push(row(C, Api, "the Secret's keymint.dev/owner removed",
        edit(Api, json!({}), Edit::Secret(json!({"metadata": {"annotations": {"keymint.dev/owner": null}}}))),
        Expect::State(State::Any(vec![handled("SecretConflict", &["spec.secretName"], After::Unchanged), reclaimed()]))));
    t.push(row(C, Sak, "the Secret's type changed to Opaque (immutable)", edit(Sak, json!({}), Edit::Secret(json!({"type": "Opaque"}))), refused("type")));
    t.push(row(C, Api, "the Secret's type changed to a service-account token (immutable)", edit(Api, json!({}), Edit::Secret(json!({"type": "kubernetes.io/service-account-token", "metadata": {"annotations": {"kubernetes.io/service-account.name": "default"}}}))), refused("type")));
    t.push(row(C, Sak, "the Secret's managed-by label changed to Helm is put back", edit(Sak, json!({}), Edit::Secret(json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": "Helm"}}}))),
        issued_and(|s| expect_eq("status.id", &s.status.id, &s.before_id))));
    t.push(row(C, Api, "the Secret's owner reference removed is put back", edit(Api, json!({}), Edit::Secret(json!({"metadata": {"ownerReferences": null}}))),
        issued_and(|s| {
            expect_eq("status.id", &s.status.id, &s.before_id)?;
            expect_eq("owner references", s.secret.as_ref().map(|x| x.owner_references().len()), Some(1))
        })));
    // Planting a key: a value keymint did not mint, with its hash recorded so
    // that the tamper check passes. Ready must still mean a keymint token.
    t.push(row(C, Api, "the Secret's key replaced by a planted value with a matching key-sha256",
        edit(Api, json!({}), Edit::Secret(json!({"data": {"key": "aHVudGVyMg=="}, "metadata": {"annotations": {"keymint.dev/key-sha256": sha256_hex("hunter2")}}}))),
        issued()));
    t.push(row(C, Api, "the Secret's keymint.dev/expires-at set beyond what keymint can read: a new key", edit(Api, json!({}), Edit::Secret(json!({"metadata": {"annotations": {"keymint.dev/expires-at": "9999-12-31T23:59:59Z"}}}))),
        issued_and(|s| if s.status.id == s.before_id { Err("the unreadable record was kept".into()) } else { Ok(()) })));
    let foreign_name = t.fixture_name(Api, "foreign");
    t.push(row(C, Api, "secretName of a Ready key changed to another application's Secret", edit(Api, json!({}), Edit::Spec(json!({"secretName": foreign_name}))),
        Expect::State(handled("SecretConflict", &["spec.secretName"], After::Unchanged)))
        .with(Fixture::Secret(None, Box::new(opaque(&foreign_name)))));
    let other_key = t.fixture_name(Sak, "owner");
    t.push(row(C, Api, "secretName of a Ready key changed to a ServiceAccountKey's Secret", edit(Api, json!({}), Edit::Spec(json!({"secretName": other_key}))),
        Expect::State(handled("SecretConflict", &["spec.secretName", "another keymint resource"], After::Unchanged)))
        .with(Fixture::Key(Sak, other_key.clone(), Sak.minimal())));
    t.push(row(C, Root, "secretNamespace of a Ready RootKey changed to kube-system", edit(Root, json!({}), Edit::Spec(json!({"secretNamespace": "kube-system"}))),
        Expect::State(handled("NamespaceNotAllowed", &["spec.secretNamespace"], After::Absent))));
    t.push(row(C, Api, "expiresAt of a never-expiring key set before the epoch", edit(Api, json!({}), Edit::Spec(json!({"expiresAt": "1969-12-31T23:59:59Z"}))),
        Expect::State(handled("InvalidSpec", &["spec.expiresAt"], After::Unchanged))));
    t.push(row(C, Api, "expiresAt of a Ready key set to 9999-12-31T23:59:59Z", edit(Api, json!({}), Edit::Spec(json!({"expiresAt": "9999-12-31T23:59:59Z"}))),
        Expect::RefusedOr("spec.expiresAt", State::Any(vec![handled("InvalidSpec", &["spec.expiresAt"], After::Unchanged), ready_and(|_| Ok(()))]))));
    t.push(row(C, Sak, "serviceAccountName changed to a Cyrillic homoglyph", edit(Sak, json!({}), Edit::Spec(json!({"serviceAccountName": "r\u{43e}bot"}))), refused("spec.serviceAccountName")));
    t.push(row(C, Api, "keymint.dev/rotate-request annotation of 1 MiB", edit(Api, json!({}), Edit::Resource(json!({"metadata": {"annotations": {"keymint.dev/rotate-request": "r".repeat(MIB)}}}))), refused("metadata.annotations")));
    t.push(row(C, Sak, "a forged status sent to the main resource is ignored",
        edit(Sak, json!({}), Edit::Resource(json!({"status": {"id": "FORGED1", "conditions": [{"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": "forged", "lastTransitionTime": "2020-01-01T00:00:00Z"}]}}))),
        issued_and(|s| expect_eq("status.id", &s.status.id, &s.before_id))));
}
