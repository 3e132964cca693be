//! Hostile rows: durations at the edges of their range (fractions below a
//! nanosecond, more digits than a number holds).

use serde_json::json;

use super::super::model::*;
use crate::table::Kind;

#[rustfmt::skip]
pub(crate) fn rows(t: &mut Table) {
    use Category::Duration as C;
    use Kind::*;
    let refused_rows: [(Kind, &str, &'static str, &str); 21] = [
        (Api, "validFor with 20 digits of hours", "spec.validFor", "99999999999999999999h"),
        (Sak, "validFor 2562048h, just over Go's int64 nanoseconds", "spec.validFor", "2562048h"),
        (Root, "validFor i64::MAX nanoseconds (292 years)", "spec.validFor", "9223372036854775807ns"),
        (Api, "gracePeriod i64::MAX+1 nanoseconds (overflow)", "spec.gracePeriod", "9223372036854775808ns"),
        (Api, "renewBefore 2^64 seconds (overflow)", "spec.renewBefore", "18446744073709551616s"),
        (Sak, "validFor overflowing only in the sum of its parts", "spec.validFor", "2562047h2562047h"),
        (Api, "validFor over the cap only in the sum of its parts", "spec.validFor", "876000h876000h"),
        (Root, "renewBefore -0s", "spec.renewBefore", "-0s"),
        (Api, "validFor with a plus sign", "spec.validFor", "+1h"),
        (Sak, "validFor 0h0m0s", "spec.validFor", "0h0m0s"),
        (Api, "validFor 0.5s (under 1s)", "spec.validFor", "0.5s"),
        (Api, "validFor in exponent notation 1e3s", "spec.validFor", "1e3s"),
        (Root, "gracePeriod in exponent notation 1E3s", "spec.gracePeriod", "1E3s"),
        (Sak, "validFor unit-less fraction 1.5", "spec.validFor", "1.5"),
        (Api, "gracePeriod bare 0 (Go accepts it, the contract does not)", "spec.gracePeriod", "0"),
        (Api, "validFor 1h-30m", "spec.validFor", "1h-30m"),
        (Sak, "renewBefore with a space, 1h 30m", "spec.renewBefore", "1h 30m"),
        (Api, "validFor with a trailing newline", "spec.validFor", "1h\n"),
        (Root, "validFor in ISO 8601, PT1H", "spec.validFor", "PT1H"),
        (Api, "validFor .5h", "spec.validFor", ".5h"),
        (Api, "validFor in uppercase, 1H", "spec.validFor", "1H"),
    ];
    for (kind, what, path, value) in refused_rows {
        let field = path.trim_start_matches("spec.");
        t.push(row(C, kind, what, spec(kind, json!({field: value})), refused(path)));
    }
    t.push(row(C, Api, "validFor with 23 fraction digits, 0.99999999999999999999999h", spec(Api, json!({"validFor": "0.99999999999999999999999h"})),
        issued_and(|s| match lifetime(s) {
            Some(3599 | 3600) => Ok(()),
            other => Err(format!("lifetime {other:?}s, wanted just under 1h")),
        })));
    t.push(row(C, Sak, "gracePeriod below a nanosecond, 0.0000000001ns", spec(Sak, json!({"gracePeriod": "0.0000000001ns"})), issued()));
}
