//! Hostile rows: huge `secretTemplate` maps (many, long or multi-byte labels
//! and annotations).

use keymint_test_support::{annotation, label};
use serde_json::json;

use super::super::model::*;
use crate::table::{Kind, short};

#[rustfmt::skip]
pub(crate) fn rows(t: &mut Table) {
    use Category::HugeTemplate as C;
    use Kind::*;
    t.push(row(C, Api, "10000 labels", spec(Api, json!({"secretTemplate": {"labels": entries(10_000, |i| format!("l{i}"), |_| "v".into())}})), refused("spec.secretTemplate.labels")));
    t.push(row(C, Sak, "300 annotations of 4096 characters (1.2 MiB)", spec(Sak, json!({"secretTemplate": {"annotations": entries(300, |i| format!("a{i}"), |_| "a".repeat(4096))}})), refused("spec.secretTemplate.annotations")));
    let key = |i: usize| format!("{}/{}{i:02}", "p".repeat(253), "n".repeat(61));
    let annotations = entries(32, key, |i| format!("{i:02}{}", "v".repeat(4094)));
    let sent = annotations.clone();
    t.push(row(C, Api, "32 annotations of 4096 characters with 317-character keys", spec(Api, json!({"secretTemplate": {"annotations": annotations}})),
        issued_and(move |s| {
            let secret = s.secret.as_ref().ok_or("no Secret")?;
            for (key, value) in sent.as_object().expect("map") {
                if annotation(secret, key).as_deref() != value.as_str() {
                    return Err(format!("annotation {} missing or different", short(key)));
                }
            }
            Ok(())
        })));
    let labels = entries(64, key, |i| format!("{i:02}{}", "v".repeat(61)));
    let sent = labels.clone();
    t.push(row(C, Root, "64 labels of 63 characters with 317-character keys", spec(Root, json!({"secretTemplate": {"labels": labels}})),
        issued_and(move |s| {
            let secret = s.secret.as_ref().ok_or("no Secret")?;
            let found = sent.as_object().expect("map").iter().filter(|(k, v)| label(secret, k).as_deref() == v.as_str()).count();
            expect_eq("template labels on the Secret", found, 64)
        })));
    // maxLength counts characters; the API server's 256 KiB limit on a
    // Secret's annotations counts bytes.
    t.push(row(C, Api, "32 annotations of 4096 four-byte characters (512 KiB)", spec(Api, json!({"secretTemplate": {"annotations": entries(32, |i| format!("example.com/e{i}"), |_| "\u{1F511}".repeat(4096))}})),
        Expect::RefusedOr("spec.secretTemplate.annotations", handled("InvalidSpec", &["spec.secretTemplate.annotations"], After::Absent))));
    t.push(row(C, Sak, "32 annotations of 4096 two-byte characters (256 KiB of values)", spec(Sak, json!({"secretTemplate": {"annotations": entries(32, |i| format!("example.com/e{i}"), |_| "é".repeat(4096))}})),
        Expect::RefusedOr("spec.secretTemplate.annotations", handled("InvalidSpec", &["spec.secretTemplate.annotations"], After::Absent))));
    t.push(row(C, Api, "label with an empty key", spec(Api, json!({"secretTemplate": {"labels": {"": "v"}}})), refused("spec.secretTemplate.labels")));
}
