//! Hostile rows: unicode tricks (confusable letters, invisible and control
//! characters) in names, prefixes, permissions and templates.

use keymint_test_support::annotation;
use serde_json::json;

use super::super::model::*;
use crate::table::Kind;

#[rustfmt::skip]
pub(crate) fn rows(t: &mut Table) {
    use Category::Unicode as C;
    use Kind::*;
    let names: [(&str, Kind, &str); 7] = [
        ("Cyrillic а (U+0430) homoglyph", Api, "billing-\u{430}pi"),
        ("zero-width joiner", Api, "bill\u{200d}ing"),
        ("right-to-left override U+202E", Sak, "\u{202e}yek-gnillib"),
        ("fullwidth letters", Root, "\u{ff42}\u{ff49}\u{ff4c}\u{ff4c}"),
        ("NUL", Api, "billing\u{0}"),
        ("trailing newline", Sak, "billing\n"),
        ("BEL control character", Root, "bill\u{7}ing"),
    ];
    for (what, kind, name) in names {
        t.push(row(C, kind, format!("metadata.name with {what}"), post_meta(kind, json!({"name": name})), refused("metadata.name")));
    }
    let secret_names: [(&str, Kind, &str); 5] = [
        ("Cyrillic е (U+0435)", Api, "billing-k\u{435}y"),
        ("zero-width space", Sak, "billing\u{200b}key"),
        ("right-to-left override", Root, "\u{202e}yek"),
        ("fullwidth letters", Api, "\u{ff4b}\u{ff45}\u{ff59}"),
        ("NUL", Api, "key\u{0}"),
    ];
    for (what, kind, name) in secret_names {
        t.push(row(C, kind, format!("secretName with {what}"), spec(kind, json!({"secretName": name})), refused("spec.secretName")));
    }
    t.push(row(C, Sak, "serviceAccountName with Cyrillic о (U+043E)", spec(Sak, json!({"serviceAccountName": "r\u{43e}bot"})), refused("spec.serviceAccountName")));
    t.push(row(C, Sak, "serviceAccountName with a zero-width joiner", spec(Sak, json!({"serviceAccountName": "ro\u{200d}bot"})), refused("spec.serviceAccountName")));
    t.push(row(C, Sak, "serviceAccountName with a trailing NUL", spec(Sak, json!({"serviceAccountName": "robot\u{0}"})), refused("spec.serviceAccountName")));
    t.push(row(C, Api, "prefix with Cyrillic а", spec(Api, json!({"format": {"prefix": "\u{430}k"}})), refused("spec.format.prefix")));
    t.push(row(C, Root, "prefix in fullwidth letters", spec(Root, json!({"format": {"prefix": "\u{ff52}\u{ff4b}"}})), refused("spec.format.prefix")));
    t.push(row(C, Api, "permission with Cyrillic а", spec(Api, json!({"permissions": ["re\u{430}d"]})), refused("spec.permissions")));
    t.push(row(C, Api, "permission with a zero-width joiner", spec(Api, json!({"permissions": ["read\u{200d}"]})), refused("spec.permissions")));
    t.push(row(C, Api, "permission with a right-to-left override", spec(Api, json!({"permissions": ["\u{202e}etirw"]})), refused("spec.permissions")));
    t.push(row(C, Root, "secretNamespace with Cyrillic е", spec(Root, json!({"secretNamespace": "keymint-syst\u{435}m"})), refused("spec.secretNamespace")));
    t.push(row(C, Sak, "reserved label key spelt with Cyrillic е", spec(Sak, json!({"secretTemplate": {"labels": {"kubern\u{435}tes.io/service-account.name": "default"}}})), refused("spec.secretTemplate.labels")));
    t.push(row(C, Api, "label value with a right-to-left override", spec(Api, json!({"secretTemplate": {"labels": {"role": "\u{202e}nimda"}}})), refused("spec.secretTemplate.labels")));
    t.push(row(C, Root, "label value with a zero-width joiner", spec(Root, json!({"secretTemplate": {"labels": {"team": "pay\u{200d}ments"}}})), refused("spec.secretTemplate.labels")));
    t.push(row(C, Api, "annotation key with a zero-width space", spec(Api, json!({"secretTemplate": {"annotations": {"example.com/ow\u{200b}ner": "x"}}})), refused("spec.secretTemplate.annotations")));
    let values = json!({
        "example.com/rtl": "\u{202e}nimda\u{202c}",
        "example.com/zwj": "a\u{200d}b\u{200b}c",
        "example.com/emoji": "\u{1F511}\u{1F468}\u{200d}\u{1F4BB}",
        "example.com/nul": "before\u{0}after",
        "example.com/control": "bell\u{7}tab\tnewline\n",
        "example.com/homoglyph": "\u{430}dmin",
    });
    let sent = values.clone();
    t.push(row(C, Api, "annotation values with RTL override, ZWJ, emoji, NUL and control characters are copied verbatim", spec(Api, json!({"secretTemplate": {"annotations": values}})),
        issued_and(move |s| {
            let secret = s.secret.as_ref().ok_or("no Secret")?;
            for (key, value) in sent.as_object().expect("map") {
                expect_eq(key, annotation(secret, key), value.as_str().map(str::to_string))?;
            }
            Ok(())
        })));
    let description = "\u{202e}tropxe gnillib\u{202c} \u{200d}\u{1F511} nul\u{0} bell\u{7} \u{430}dmin";
    t.push(row(C, Api, "description with RTL override, ZWJ, NUL, BEL and homoglyphs is copied verbatim", spec(Api, json!({"description": description})),
        issued_and(move |s| expect_eq("keymint.dev/description", s.secret.as_ref().and_then(|x| annotation(x, "keymint.dev/description")), Some(description.to_string())))));
    t.push(row(C, Sak, "the resource's own label value with Cyrillic а", meta(Sak, json!({"labels": {"team": "p\u{430}yments"}}), json!({})), refused("metadata.labels")));
    t.push(row(C, Api, "the resource's own annotation key with a zero-width joiner", meta(Api, json!({"annotations": {"example.com/no\u{200d}te": "x"}}), json!({})), refused("metadata.annotations")));
    t.push(row(C, Api, "validFor with a fullwidth digit", spec(Api, json!({"validFor": "\u{ff11}h"})), refused("spec.validFor")));
    t.push(row(C, Sak, "gracePeriod with Cyrillic һ (U+04BB) for h", spec(Sak, json!({"gracePeriod": "1\u{4bb}"})), refused("spec.gracePeriod")));
    t.push(row(C, Root, "expiresAt with fullwidth digits", spec(Root, json!({"expiresAt": "\u{ff12}\u{ff10}\u{ff13}\u{ff10}-01-01T00:00:00Z"})), refused("spec.expiresAt")));
    t.push(row(C, Api, "deletionPolicy with Cyrillic е", spec(Api, json!({"deletionPolicy": "R\u{435}tain"})), refused("spec.deletionPolicy")));
    t.push(row(C, Api, "gracePeriod with both micro signs (U+00B5, U+03BC), as Go allows", spec(Api, json!({"gracePeriod": "1\u{b5}s1\u{3bc}s"})), issued()));
}
