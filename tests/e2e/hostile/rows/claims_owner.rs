//! Hostile rows: labels and annotations that claim another owner (keymint,
//! Argo CD, Kubernetes, kubectl) or forge keymint's record.

use keymint_test_support::{annotation, label};
use serde_json::json;

use super::super::model::*;
use crate::table::Kind;

#[rustfmt::skip]
pub(crate) fn rows(t: &mut Table) {
    use Category::ClaimsOwner as C;
    use Kind::*;
    let (labels, annotations) = ("spec.secretTemplate.labels", "spec.secretTemplate.annotations");
    let template = |kind: Kind, map: &str, key: &str, value: &str| spec(kind, json!({"secretTemplate": {map: {key: value}}}));
    t.push(row(C, Api, "annotation keymint.dev/owner naming another resource", template(Api, "annotations", "keymint.dev/owner", "APIKey/kube-system/admin"), refused(annotations)));
    t.push(row(C, Sak, "label keymint.dev/owner", template(Sak, "labels", "keymint.dev/owner", "x"), refused(labels)));
    t.push(row(C, Api, "annotation keymint.dev/key-sha256 (forging the record)", template(Api, "annotations", "keymint.dev/key-sha256", &"0".repeat(64)), refused(annotations)));
    t.push(row(C, Root, "annotation kubectl.kubernetes.io/last-applied-configuration", template(Root, "annotations", "kubectl.kubernetes.io/last-applied-configuration", "{}"), refused(annotations)));
    t.push(row(C, Api, "annotation kubernetes.io/service-account.uid", template(Api, "annotations", "kubernetes.io/service-account.uid", "1234"), refused(annotations)));
    t.push(row(C, Api, "label argocd.argoproj.io/secret-type: cluster (Argo CD would read it as a cluster)", template(Api, "labels", "argocd.argoproj.io/secret-type", "cluster"), refused(labels)));
    t.push(row(C, Sak, "annotation argocd.argoproj.io/sync-options", template(Sak, "annotations", "argocd.argoproj.io/sync-options", "Prune=false"), refused(annotations)));
    t.push(row(C, Api, "label under a subdomain, sub.argocd.argoproj.io/x", template(Api, "labels", "sub.argocd.argoproj.io/x", "y"), refused(labels)));
    // Not reserved by the contract: copied, and harmless while the Secret says
    // app.kubernetes.io/managed-by: keymint (Helm adopts only its own).
    let copied = |key: &'static str, value: &'static str, is_label: bool| move |s: &Snapshot| {
        let secret = s.secret.as_ref().ok_or("no Secret")?;
        let found = if is_label { label(secret, key) } else { annotation(secret, key) };
        expect_eq(key, found.as_deref(), Some(value))
    };
    t.push(row(C, Api, "label helm.sh/chart is copied (not reserved)", template(Api, "labels", "helm.sh/chart", "billing-1.0.0"), issued_and(copied("helm.sh/chart", "billing-1.0.0", true))));
    t.push(row(C, Sak, "annotations meta.helm.sh/release-name and -namespace are copied (not reserved)", spec(Sak, json!({"secretTemplate": {"annotations": {"meta.helm.sh/release-name": "billing", "meta.helm.sh/release-namespace": "billing"}}})),
        issued_and(copied("meta.helm.sh/release-name", "billing", false))));
    t.push(row(C, Root, "label kustomize.toolkit.fluxcd.io/name is copied (not reserved)", template(Root, "labels", "kustomize.toolkit.fluxcd.io/name", "infra"), issued_and(copied("kustomize.toolkit.fluxcd.io/name", "infra", true))));
    t.push(row(C, Api, "label app.kubernetes.io/Managed-By (case variant) is a different key", template(Api, "labels", "app.kubernetes.io/Managed-By", "Helm"), issued_and(copied("app.kubernetes.io/Managed-By", "Helm", true))));
    t.push(row(C, Api, "the resource's own labels and annotations claiming an owner are not copied to the Secret",
        meta(Api, json!({
            "labels": {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "other-app", "argocd.argoproj.io/instance": "other-app"},
            "annotations": {"keymint.dev/owner": "APIKey/kube-system/admin", "argocd.argoproj.io/tracking-id": "other-app:/Secret:kube-system/admin"},
        }), json!({})),
        issued_and(|s| {
            let secret = s.secret.as_ref().ok_or("no Secret")?;
            for key in ["app.kubernetes.io/instance", "argocd.argoproj.io/instance"] {
                expect_eq(key, label(secret, key), None)?;
            }
            expect_eq("argocd.argoproj.io/tracking-id", annotation(secret, "argocd.argoproj.io/tracking-id"), None)
        })));
    t.push(row(C, Api, "secretName shaped like a service-account token's still gets a keymint.dev/key Secret", spec(Api, json!({"secretName": "default-token-x7k2p"})), issued()));
}
