//! Hostile rows: `secretName`s and names that point at other applications'
//! Secrets, other namespaces and another key's Secret.

use k8s_openapi::api::core::v1::Secret;
use keymint_test_support::{OPERATOR_NAMESPACE, ROOT_KEY_NAMESPACE};
use kube::ResourceExt;
use serde_json::json;

use super::super::model::*;
use crate::table::{Kind, merged};

#[rustfmt::skip]
pub(crate) fn rows(t: &mut Table) {
    use Category::ForeignTarget as C;
    use Kind::*;
    let conflict = |names: &[&str]| Expect::State(handled("SecretConflict", &[&["spec.secretName"][..], names].concat(), After::Unchanged));
    let foreign = |what: &str, kind: Kind, secret: Secret, namespace: Option<String>| {
        let name = secret.name_any();
        let spec = match &namespace {
            Some(ns) if kind == Root => json!({"secretName": name, "secretNamespace": ns}),
            _ => json!({"secretName": name}),
        };
        row(C, kind, what, Input::Apply { spec: merged(&kind.minimal(), &spec), metadata: json!({}) }, conflict(&[]))
            .with(Fixture::Secret(namespace, Box::new(secret)))
    };
    let helm_opaque = secret("billing-db", "Opaque",
        &[("app.kubernetes.io/managed-by", "Helm")],
        &[("meta.helm.sh/release-name", "billing".into()), ("meta.helm.sh/release-namespace", "billing".into())],
        &[("password", "hunter2")]);
    t.push(foreign("secretName of a Helm-managed Opaque Secret", Api, helm_opaque, None));
    let token = secret("robot-token", "kubernetes.io/service-account-token", &[],
        &[("kubernetes.io/service-account.name", "default".into())], &[("token", "eyJhbGciOi.x.y")]);
    t.push(foreign("secretName of a service-account-token Secret", Sak, token, None));
    let release = secret("sh.helm.release.v1.x.v1", "helm.sh/release.v1",
        &[("owner", "helm"), ("name", "x"), ("status", "deployed"), ("version", "1")], &[], &[("release", "H4sIAAAAAAAA")]);
    t.push(foreign("secretName of a Helm release Secret sh.helm.release.v1.x.v1", Api, release, None));
    let in_operator_ns = t.fixture_name(Root, "foreign");
    t.push(foreign("RootKey secretName of another application's Secret in the operator's namespace", Root, opaque(&in_operator_ns), Some(OPERATOR_NAMESPACE.into())));
    let in_roots_ns = t.fixture_name(Root, "foreign");
    t.push(foreign("RootKey secretName of another application's Secret in keymint-roots", Root, opaque(&in_roots_ns), Some(ROOT_KEY_NAMESPACE.into())));
    t.push(foreign("secretName of a dockerconfigjson Secret", Api,
        secret("registry", "kubernetes.io/dockerconfigjson", &[], &[], &[(".dockerconfigjson", r#"{"auths":{}}"#)]), None));
    t.push(foreign("secretName of a TLS Secret", Sak,
        secret("ingress-tls", "kubernetes.io/tls", &[], &[], &[("tls.crt", "crt"), ("tls.key", "key")]), None));
    t.push(foreign("secretName of a Secret typed keymint.dev/key with no owner annotation", Api,
        secret("typed-only", "keymint.dev/key", &[], &[], &[("key", "ak_planted")]), None));
    let own = format!("APIKey/{}/{}", t.ctx.namespace, t.next_name(Api));
    t.push(foreign("secretName of an Opaque Secret whose owner annotation forges this resource", Api,
        secret("forged-owner", "Opaque", &[], &[("keymint.dev/owner", own)], &[("key", "ak_planted")]), None));
    let ghost = format!("APIKey/{}/ghost", t.ctx.namespace);
    t.push(foreign("secretName of a keymint-labelled Secret of a resource that does not exist", Sak,
        secret("ghost-key", "keymint.dev/key", &[("app.kubernetes.io/managed-by", "keymint")], &[("keymint.dev/owner", ghost)], &[("key", "ak_ghost")]), None));
    // A Secret of the resource's type and with its owner annotation, planted
    // before the resource exists, carrying Argo CD's tracking label: keymint
    // did not write it, so it is not keymint's.
    let own = format!("APIKey/{}/{}", t.ctx.namespace, t.next_name(Api));
    t.push(foreign("secretName of a planted Secret forging this resource's owner annotation and type, tracked by Argo CD", Api,
        secret("planted", "keymint.dev/key", &[("app.kubernetes.io/instance", "argo-app")], &[("keymint.dev/owner", own)], &[("key", "ak_planted")]), None));
    t.push(foreign("secretName of a Secret whose owner annotation is 64 KiB", Api,
        secret("long-owner", "Opaque", &[], &[("keymint.dev/owner", "o".repeat(64 * KIB))], &[("key", "x")]), None));
    // The message says whose it is without quoting the other Secret's annotations.
    let keys: [(Kind, Kind, &str); 3] = [(Api, Sak, "another keymint resource"), (Sak, Api, "another keymint resource"), (Root, Root, "another keymint resource")];
    for (kind, other, names) in keys {
        let other_name = t.fixture_name(other, "owner");
        t.push(row(C, kind, format!("secretName of a {}'s Secret", other.name()), spec(kind, json!({"secretName": other_name})), conflict(&[names]))
            .with(Fixture::Key(other, other_name.clone(), other.minimal())));
    }
    let not_allowed = |what: &str, namespace: &str| row(C, Root, what, spec(Root, json!({"secretNamespace": namespace})),
        Expect::State(handled("NamespaceNotAllowed", &["spec.secretNamespace"], After::Absent)));
    t.push(not_allowed("RootKey secretNamespace kube-system", "kube-system"));
    t.push(not_allowed("RootKey secretNamespace default", "default"));
    let own_namespace = t.ctx.namespace.clone();
    t.push(not_allowed("RootKey secretNamespace of an ordinary namespace", &own_namespace));
    let missing: String = format!("missing-{}", t.ctx.namespace).chars().take(63).collect();
    t.push(not_allowed("RootKey secretNamespace that does not exist", &missing));
    t.push(row(C, Api, "secretName with a namespace, kube-system/default-token", spec(Api, json!({"secretName": "kube-system/default-token"})), refused("spec.secretName")));
    t.push(row(C, Api, "secretName with a relative path", spec(Api, json!({"secretName": "../kube-system/x"})), refused("spec.secretName")));
    t.push(row(C, Sak, "serviceAccountName of another namespace's account, kube-system/default", spec(Sak, json!({"serviceAccountName": "kube-system/default"})), refused("spec.serviceAccountName")));
    t.push(row(C, Api, "metadata.namespace kube-system in a request to the test's namespace", post(json!({"metadata": {"namespace": "kube-system"}, "spec": Api.minimal()})), refused("namespace")));
}
