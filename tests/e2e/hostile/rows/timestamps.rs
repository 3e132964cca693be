//! Hostile rows: `expiresAt` at and past the edges of what keymint and the API
//! server can represent (before the epoch, year 10000, leap seconds).

use keymint_test_support::annotation;
use serde_json::json;

use super::super::model::*;
use crate::table::Kind;

#[rustfmt::skip]
pub(crate) fn rows(t: &mut Table) {
    use Category::Timestamp as C;
    use Kind::*;
    let past = |kind: Kind, what: &str, at: &str| row(C, kind, what, spec(kind, json!({"expiresAt": at})),
        Expect::State(handled("InvalidSpec", &["spec.expiresAt"], After::Absent)));
    t.push(past(Api, "expiresAt 1969-12-31T23:59:59Z, before the epoch", "1969-12-31T23:59:59Z"));
    t.push(past(Sak, "expiresAt 0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"));
    t.push(past(Root, "expiresAt at the epoch", "1970-01-01T00:00:00Z"));
    t.push(past(Api, "expiresAt in year 0000", "0000-01-01T00:00:00Z"));
    t.push(row(C, Api, "expiresAt before the epoch with validFor 1h: the key lives 1h", spec(Api, json!({"expiresAt": "1969-12-31T23:59:59Z", "validFor": "1h"})),
        issued_and(|s| expect_eq("lifetime", lifetime(s), Some(3600)))));
    t.push(row(C, Api, "expiresAt in year 10000", spec(Api, json!({"expiresAt": "10000-01-01T00:00:00Z"})), refused("spec.expiresAt")));
    // Year 9999 but beyond what keymint's timestamp type holds
    // (9999-12-30T22:00:00Z): refused, or read and handled, never stored unreadable.
    t.push(row(C, Sak, "expiresAt 9999-12-31T23:59:59Z, the last second of 9999", spec(Sak, json!({"expiresAt": "9999-12-31T23:59:59Z"})),
        Expect::RefusedOr("spec.expiresAt", State::Any(vec![handled("InvalidSpec", &["spec.expiresAt"], After::Absent), ready_and(|_| Ok(()))]))));
    t.push(row(C, Api, "expiresAt 9999-12-30T23:00:00-02:00, year 10000 in UTC", spec(Api, json!({"expiresAt": "9999-12-30T23:00:00-02:00"})),
        Expect::RefusedOr("spec.expiresAt", State::Any(vec![handled("InvalidSpec", &["spec.expiresAt"], After::Absent), ready_and(|_| Ok(()))]))));
    t.push(row(C, Root, "expiresAt 9999-12-30T00:00:00Z: Ready with that expiry", spec(Root, json!({"expiresAt": "9999-12-30T00:00:00Z"})),
        issued_and(|s| {
            expect_eq("status.expiresAt", expires_at(s).as_deref(), Some("9999-12-30T00:00:00Z"))?;
            expect_eq("keymint.dev/expires-at", s.secret.as_ref().and_then(|x| annotation(x, "keymint.dev/expires-at")).as_deref(), Some("9999-12-30T00:00:00Z"))
        })));
    t.push(row(C, Api, "expiresAt on a leap second, 2016-12-31T23:59:60Z", spec(Api, json!({"expiresAt": "2016-12-31T23:59:60Z"})),
        Expect::RefusedOr("spec.expiresAt", handled("InvalidSpec", &["spec.expiresAt"], After::Absent))));
    t.push(row(C, Sak, "expiresAt with offset +25:00", spec(Sak, json!({"expiresAt": "2030-01-01T00:00:00+25:00"})), refused("spec.expiresAt")));
    t.push(row(C, Api, "expiresAt with offset minutes 60", spec(Api, json!({"expiresAt": "2030-01-01T00:00:00+05:60"})), refused("spec.expiresAt")));
    t.push(row(C, Api, "expiresAt with lowercase t and z", spec(Api, json!({"expiresAt": "2030-01-01t00:00:00z"})),
        Expect::RefusedOr("spec.expiresAt", ready_and(|s| expect_eq("status.expiresAt", expires_at(s).as_deref(), Some("2030-01-01T00:00:00Z"))))));
    t.push(row(C, Root, "expiresAt with offset -00:00: Ready, expiry in UTC", spec(Root, json!({"expiresAt": "2030-01-01T00:00:00-00:00"})),
        issued_and(|s| expect_eq("status.expiresAt", expires_at(s).as_deref(), Some("2030-01-01T00:00:00Z")))));
    t.push(row(C, Api, "expiresAt with nine zero fraction digits and offset -23:59", spec(Api, json!({"expiresAt": "2030-01-01T00:00:00.000000000-23:59"})),
        issued_and(|s| expect_eq("status.expiresAt", expires_at(s).as_deref(), Some("2030-01-01T23:59:00Z")))));
    let refused_rows: [(Kind, &str, &str); 5] = [
        (Api, "expiresAt with an expanded year +002030", "+002030-01-01T00:00:00Z"),
        (Sak, "expiresAt without zero padding", "2030-1-1T0:0:0Z"),
        (Api, "expiresAt with a comma before the fraction", "2030-01-01T00:00:00,5Z"),
        (Api, "expiresAt without seconds", "2030-01-01T00:00Z"),
        (Root, "expiresAt February 29 of a common year", "2027-02-29T00:00:00Z"),
    ];
    for (kind, what, at) in refused_rows {
        t.push(row(C, kind, what, spec(kind, json!({"expiresAt": at})), refused("spec.expiresAt")));
    }
}
