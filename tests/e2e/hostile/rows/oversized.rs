//! Hostile rows: oversized strings, every length-limited field past its limit
//! up to 1 MiB.

use keymint_test_support::annotation;
use serde_json::json;

use super::super::model::*;
use crate::table::Kind;

#[rustfmt::skip]
pub(crate) fn rows(t: &mut Table) {
    use Category::Oversized as C;
    use Kind::*;
    let mib = |c: &str| c.repeat(MIB);
    t.push(row(C, Api, "expiresAt 36 characters (10 fraction digits and an offset)", spec(Api, json!({"expiresAt": "2030-01-01T00:00:00.1234567890+00:00"})), refused("spec.expiresAt")));
    t.push(row(C, Root, "expiresAt 1 MiB", spec(Root, json!({"expiresAt": format!("2030-01-01T00:00:00.{}Z", "0".repeat(MIB))})), refused("spec.expiresAt")));
    t.push(row(C, Sak, "validFor 1 MiB", spec(Sak, json!({"validFor": "1h".repeat(MIB / 2)})), refused("spec.validFor")));
    t.push(row(C, Api, "renewBefore 33 characters that parse as 1s", spec(Api, json!({"renewBefore": format!("{}1s", "0".repeat(31))})), refused("spec.renewBefore")));
    t.push(row(C, Root, "gracePeriod 1 MiB of digits", spec(Root, json!({"gracePeriod": format!("{}h", "9".repeat(MIB))})), refused("spec.gracePeriod")));
    t.push(row(C, Api, "secretName 1 MiB", spec(Api, json!({"secretName": mib("a")})), refused("spec.secretName")));
    t.push(row(C, Sak, "format.prefix 1 MiB", spec(Sak, json!({"format": {"prefix": mib("a")}})), refused("spec.format.prefix")));
    t.push(row(C, Root, "secretNamespace 1 MiB", spec(Root, json!({"secretNamespace": mib("a")})), refused("spec.secretNamespace")));
    t.push(row(C, Sak, "serviceAccountName 1 MiB", spec(Sak, json!({"serviceAccountName": mib("a")})), refused("spec.serviceAccountName")));
    t.push(row(C, Api, "permission 1 MiB", spec(Api, json!({"permissions": [mib("a")]})), refused("spec.permissions")));
    t.push(row(C, Api, "description 1 MiB", spec(Api, json!({"description": mib("a")})), refused("spec.description")));
    t.push(row(C, Api, "description 1025 two-byte characters", spec(Api, json!({"description": "é".repeat(1025)})), refused("spec.description")));
    let emoji = "\u{1F511}".repeat(1024);
    t.push(row(C, Api, "description 1024 four-byte characters (4 KiB) is within maxLength", spec(Api, json!({"description": emoji})),
        issued_and(move |s| expect_eq("keymint.dev/description", s.secret.as_ref().and_then(|x| annotation(x, "keymint.dev/description")), Some(emoji.clone())))));
    t.push(row(C, Sak, "label value 1 MiB", spec(Sak, json!({"secretTemplate": {"labels": {"team": mib("a")}}})), refused("spec.secretTemplate.labels")));
    t.push(row(C, Root, "label key 318 characters", spec(Root, json!({"secretTemplate": {"labels": {format!("{}/{}", "a".repeat(254), "b".repeat(63)): "v"}}})), refused("spec.secretTemplate.labels")));
    // By POST: an apply patch is YAML, and a key this long is not even YAML.
    t.push(row(C, Api, "label key 1 MiB", post_spec(Api, json!({"secretTemplate": {"labels": {mib("a"): "v"}}})), refused("spec.secretTemplate.labels")));
    t.push(row(C, Sak, "annotation key 318 characters", spec(Sak, json!({"secretTemplate": {"annotations": {format!("{}/{}", "a".repeat(254), "b".repeat(63)): "v"}}})), refused("spec.secretTemplate.annotations")));
    t.push(row(C, Api, "annotation value 1 MiB", spec(Api, json!({"secretTemplate": {"annotations": {"note": mib("a")}}})), refused("spec.secretTemplate.annotations")));
    t.push(row(C, Api, "annotation value 4097 two-byte characters", spec(Api, json!({"secretTemplate": {"annotations": {"note": "é".repeat(4097)}}})), refused("spec.secretTemplate.annotations")));
    // Kubernetes caps a label or annotation key's prefix at 253 characters;
    // a key within the schema's 317 characters can still be refused on the Secret.
    t.push(row(C, Api, "label key with a 254-character prefix (the Secret could not carry it)", spec(Api, json!({"secretTemplate": {"labels": {format!("{}/x", "a".repeat(254)): "v"}}})),
        Expect::RefusedOr("spec.secretTemplate.labels", handled("InvalidSpec", &["spec.secretTemplate.labels"], After::Absent))));
    t.push(row(C, Sak, "annotation key with a 300-character prefix (the Secret could not carry it)", spec(Sak, json!({"secretTemplate": {"annotations": {format!("{}/x", "a".repeat(300)): "v"}}})),
        Expect::RefusedOr("spec.secretTemplate.annotations", handled("InvalidSpec", &["spec.secretTemplate.annotations"], After::Absent))));
    t.push(row(C, Api, "metadata.name 254 characters", post_meta(Api, json!({"name": "a".repeat(254)})), refused("metadata.name")));
    t.push(row(C, Root, "metadata.name 1 MiB", post_meta(Root, json!({"name": mib("a")})), refused("metadata.name")));
    t.push(row(C, Api, "the resource's own annotations 300 KiB", meta(Api, json!({"annotations": {"example.com/blob": "a".repeat(300 * KIB)}}), json!({})), refused("metadata.annotations")));
    t.push(row(C, Sak, "the resource's own label value 64 characters", meta(Sak, json!({"labels": {"team": "a".repeat(64)}}), json!({})), refused("metadata.labels")));
    t.push(row(C, Api, "a 4 MiB request body", spec(Api, json!({"description": "a".repeat(4 * MIB)})), Expect::TooLarge));
    // The rotate-request annotation is copied to the Secret (as
    // keymint.dev/rotate-request-handled): a value the resource may carry can
    // be one the Secret may not.
    t.push(row(C, Api, "keymint.dev/rotate-request annotation of 200 KiB with a full secretTemplate",
        meta(Api, json!({"annotations": {"keymint.dev/rotate-request": "r".repeat(200 * KIB)}}),
            json!({"secretTemplate": {"annotations": entries(32, |i| format!("example.com/note-{i}"), |_| "n".repeat(4096))}})),
        Expect::RefusedOr("metadata.annotations", State::Any(vec![
            handled("InvalidSpec", &["keymint.dev/rotate-request"], After::Absent),
            ready_and(|_| Ok(())),
        ]))));
}
