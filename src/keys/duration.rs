//! Go-style durations (`2160h`, `90m`, `1h30m`, `1.5h`, `300ms`, `0s`) as
//! the CRD's `validFor`, `renewBefore` and `gracePeriod` take them.
//!
//! The accepted grammar is a strict subset of Go's `time.ParseDuration`
//! (which the API server's CEL `duration()` uses):
//!
//! ```text
//! duration = part { part }
//! part     = digits [ "." digits ] unit
//! digits   = "0"…"9" { "0"…"9" }
//! unit     = "h" | "m" | "s" | "ms" | "us" | "µs" (U+00B5) | "μs" (U+03BC) | "ns"
//! ```
//!
//! Unlike Go it refuses a sign (`-1h`, `+1h`), a bare `0`, and a decimal
//! point without digits on both sides (`.5h`, `1.h`), and it caps the value
//! at [`MAX_DURATION`]. [`DURATION_PATTERN`] is the same grammar as a regex;
//! the cap is the only thing the pattern cannot express.

use std::time::Duration;

/// ECMA-262 (and RE2) regex for the CRD's OpenAPI `pattern`: accepts exactly
/// the strings [`parse_duration`] accepts, except that it cannot check
/// [`MAX_DURATION`]. The two micro signs are U+00B5 and U+03BC, as in Go.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(h|m|s|ms|us|µs|μs|ns))+$";

/// Largest accepted duration: 876000h (100 years of 365 days).
pub const MAX_DURATION: Duration = Duration::from_secs(876_000 * 3600);

/// [`MAX_DURATION`] in Go form, for messages and a CEL rule such as
/// `duration(self) <= duration('876000h')`.
pub const MAX_DURATION_STR: &str = "876000h";

const UNITS_HINT: &str = "use h, m, s, ms, us or ns";

/// Why a duration string was refused. Messages quote the input (durations
/// are not secret) and say what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string is empty.
    #[error("duration is empty; write e.g. 90m, 1h30m or 2160h")]
    Empty,
    /// The string starts with `-`.
    #[error("{0:?} is negative; durations must be zero or positive")]
    Negative(String),
    /// The string contains whitespace.
    #[error("{0:?} contains whitespace; write e.g. 1h30m with no spaces")]
    Whitespace(String),
    /// A unit or decimal point is not preceded by a number (`h`, `.5h`,
    /// `+1h`).
    #[error("{0:?} is not a duration: each part must be a number followed by a unit, e.g. 1h30m")]
    MissingNumber(String),
    /// A decimal point is not followed by a digit (`1.h`).
    #[error("{0:?} has a decimal point with no digits after it; write e.g. 1.5h")]
    MissingFraction(String),
    /// A number is not followed by a unit (`10`, `0`, `1h30`).
    #[error("{0:?} has a number without a unit; {UNITS_HINT} (e.g. 0s, 90m)")]
    MissingUnit(String),
    /// The unit is not one of Go's (`1d`, `3x`).
    #[error("{input:?} has an unknown unit {unit:?}; {UNITS_HINT}{hint}", hint = unit_hint(.unit))]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unrecognised unit.
        unit: String,
    },
    /// The value is larger than [`MAX_DURATION`].
    #[error("{0:?} is longer than the maximum of {MAX_DURATION_STR} (100 years)")]
    TooLong(String),
}

fn unit_hint(unit: &str) -> &'static str {
    match unit {
        "d" | "day" | "days" => " (for days use hours, e.g. 24h)",
        "w" | "wk" | "week" | "weeks" => " (for weeks use hours, e.g. 168h)",
        "y" | "yr" | "year" | "years" => " (for years use hours, e.g. 8760h)",
        "M" | "mo" => " (for months use hours, e.g. 720h)",
        _ => "",
    }
}

/// Nanoseconds per unit, for Go's unit names.
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3600 * 1_000_000_000,
        _ => return None,
    })
}

/// Parses a duration in the grammar of the module docs.
///
/// Fractions are exact down to the nanosecond (truncated below it), e.g.
/// `1.5h` is 5400s and `0.1s` is 100ms.
///
/// # Errors
///
/// A [`DurationError`] naming the problem.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    const MAX_NANOS: u128 = MAX_DURATION.as_nanos();
    // Beyond 18 fraction digits the contribution is below 1e-18 of an hour,
    // far under a nanosecond, so further digits are checked but ignored.
    const MAX_FRACTION_DIGITS: usize = 18;

    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.chars().any(char::is_whitespace) {
        return Err(DurationError::Whitespace(s.to_owned()));
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative(s.to_owned()));
    }
    let too_long = || DurationError::TooLong(s.to_owned());

    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let (int_digits, after) = split_digits(rest);
        if int_digits.is_empty() {
            return Err(DurationError::MissingNumber(s.to_owned()));
        }
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(after_dot) => {
                let (frac, after) = split_digits(after_dot);
                if frac.is_empty() {
                    return Err(DurationError::MissingFraction(s.to_owned()));
                }
                (frac, after)
            }
            None => ("", after),
        };
        // Like Go, the unit is everything up to the next digit or '.'.
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(s.to_owned()));
        }
        let per_unit = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            input: s.to_owned(),
            unit: unit.to_owned(),
        })?;

        let mut int: u128 = 0;
        for d in int_digits.bytes() {
            // Clamped just over the cap, so the arithmetic below cannot
            // overflow; the cap is reported once the whole string has parsed,
            // so a malformed string gets its real error (as the pattern sees it).
            int = (int * 10 + u128::from(d - b'0')).min(MAX_NANOS + 1);
        }
        let (mut frac, mut scale) = (0u128, 1u128);
        for d in frac_digits.bytes().take(MAX_FRACTION_DIGITS) {
            frac = frac * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        total = (total + int * per_unit + frac * per_unit / scale).min(MAX_NANOS + 1);
        rest = after;
    }
    if total > MAX_NANOS {
        return Err(too_long());
    }
    // total <= MAX_NANOS, so the seconds fit in u64 and the casts are exact.
    let secs = (total / 1_000_000_000) as u64;
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Splits off the leading ASCII digits.
fn split_digits(s: &str) -> (&str, &str) {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    s.split_at(n)
}

/// Formats whole seconds the way Go's `Duration.String` does: `0s`, `45s`,
/// `5m0s`, `1h30m0s`, `2160h0m0s`. Sub-second parts are truncated. The
/// result parses back with [`parse_duration`]. For messages only.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn pattern() -> regex::Regex {
        regex::Regex::new(DURATION_PATTERN).expect("test input is valid")
    }

    const ACCEPTED: &[(&str, Duration)] = &[
        ("0s", Duration::ZERO),
        ("0h", Duration::ZERO),
        ("00m", Duration::ZERO),
        ("45s", Duration::from_secs(45)),
        ("90m", Duration::from_secs(5400)),
        ("1h30m", Duration::from_secs(5400)),
        ("1h30m15s", Duration::from_secs(5415)),
        ("2160h", Duration::from_secs(2160 * 3600)),
        ("1.5h", Duration::from_secs(5400)),
        ("0.5m", Duration::from_secs(30)),
        ("1.0s", Duration::from_secs(1)),
        ("300ms", Duration::from_millis(300)),
        ("1500ms", Duration::from_millis(1500)),
        ("1.5ms", Duration::from_micros(1500)),
        ("10us", Duration::from_micros(10)),
        ("10\u{b5}s", Duration::from_micros(10)),
        ("10\u{3bc}s", Duration::from_micros(10)),
        ("7ns", Duration::from_nanos(7)),
        ("0.1s", Duration::from_millis(100)),
        ("0.0000000001s", Duration::ZERO),
        (
            "0.123456789123456789123s",
            Duration::from_nanos(123_456_789),
        ),
        ("1h1h", Duration::from_secs(7200)),
        ("30m1h", Duration::from_secs(5400)),
        ("1h0m0s", Duration::from_secs(3600)),
        ("1s500ms", Duration::from_millis(1500)),
        ("0001h", Duration::from_secs(3600)),
        ("876000h", MAX_DURATION),
        ("875999h60m", MAX_DURATION),
    ];

    #[test]
    fn accepts_go_forms() {
        for &(input, want) in ACCEPTED {
            assert_eq!(parse_duration(input), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn rejects_with_specific_errors() {
        use DurationError::*;
        let o = |s: &str| s.to_owned();
        let cases: Vec<(&str, DurationError)> = vec![
            ("", Empty),
            ("-1h", Negative(o("-1h"))),
            ("-0s", Negative(o("-0s"))),
            ("+1h", MissingNumber(o("+1h"))),
            ("1 h", Whitespace(o("1 h"))),
            (" 1h", Whitespace(o(" 1h"))),
            ("1h ", Whitespace(o("1h "))),
            ("1h\n", Whitespace(o("1h\n"))),
            ("1h\t30m", Whitespace(o("1h\t30m"))),
            ("h", MissingNumber(o("h"))),
            (".5h", MissingNumber(o(".5h"))),
            ("1h.5m", MissingNumber(o("1h.5m"))),
            ("1.h", MissingFraction(o("1.h"))),
            ("1.", MissingFraction(o("1."))),
            ("1..5h", MissingFraction(o("1..5h"))),
            ("1.5.5h", MissingUnit(o("1.5.5h"))),
            ("0", MissingUnit(o("0"))),
            ("10", MissingUnit(o("10"))),
            ("1h30", MissingUnit(o("1h30"))),
            (
                "1d",
                UnknownUnit {
                    input: o("1d"),
                    unit: o("d"),
                },
            ),
            (
                "3x",
                UnknownUnit {
                    input: o("3x"),
                    unit: o("x"),
                },
            ),
            (
                "1H",
                UnknownUnit {
                    input: o("1H"),
                    unit: o("H"),
                },
            ),
            (
                "1hr",
                UnknownUnit {
                    input: o("1hr"),
                    unit: o("hr"),
                },
            ),
            (
                "1h-30m",
                UnknownUnit {
                    input: o("1h-30m"),
                    unit: o("h-"),
                },
            ),
            (
                "1_000h",
                UnknownUnit {
                    input: o("1_000h"),
                    unit: o("_"),
                },
            ),
            ("P1D", MissingNumber(o("P1D"))),
            ("876000h1ns", TooLong(o("876000h1ns"))),
            ("876001h", TooLong(o("876001h"))),
            (
                "1000000000000000000000000000000000000000h",
                TooLong(o("1000000000000000000000000000000000000000h")),
            ),
            (
                "9223372036854775807ns1h",
                TooLong(o("9223372036854775807ns1h")),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn error_messages_say_what_is_wrong() {
        let msg = |s: &str| parse_duration(s).unwrap_err().to_string();
        assert_eq!(
            msg("3x"),
            r#""3x" has an unknown unit "x"; use h, m, s, ms, us or ns"#
        );
        assert_eq!(
            msg("1d"),
            r#""1d" has an unknown unit "d"; use h, m, s, ms, us or ns (for days use hours, e.g. 24h)"#
        );
        assert_eq!(
            msg("-5m"),
            r#""-5m" is negative; durations must be zero or positive"#
        );
        assert!(msg("").contains("empty"));
        assert!(msg("1 h").contains("whitespace"));
        assert!(msg("10").contains("without a unit"));
        assert!(msg("999999h").contains("876000h"));
    }

    #[test]
    fn pattern_agrees_with_parser_on_table() {
        let re = pattern();
        for &(input, _) in ACCEPTED {
            assert!(re.is_match(input), "pattern should accept {input:?}");
        }
        for input in [
            "", "-1h", "+1h", "1 h", "1h\n", "h", ".5h", "1.h", "1.", "0", "10", "1h30", "1d",
            "3x", "1H", "1hr", "1_000h", "P1D", "1.5.5h", "1h.5m", "μ", "1μ", "1sm",
        ] {
            assert!(!re.is_match(input), "pattern should reject {input:?}");
            assert!(
                parse_duration(input).is_err(),
                "parser should reject {input:?}"
            );
        }
        // The cap is the one thing the pattern cannot see.
        assert!(re.is_match("876001h"));
    }

    #[test]
    fn format_known_values() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(secs(45)), "45s");
        assert_eq!(format_duration(secs(300)), "5m0s");
        assert_eq!(format_duration(secs(5400)), "1h30m0s");
        assert_eq!(format_duration(secs(3601)), "1h0m1s");
        assert_eq!(format_duration(secs(2160 * 3600)), "2160h0m0s");
        assert_eq!(format_duration(Duration::from_millis(1999)), "1s");
    }

    /// Strings made of duration-ish pieces, so that both valid and nearly
    /// valid inputs are common.
    fn durationish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[0-9]{1,3}",
            Just(".".to_owned()),
            "(h|m|s|ms|us|ns|\u{b5}s|\u{3bc}s)",
            "(d|x|H|-|\\+| |_|\u{3bc}|\u{b5})",
        ];
        prop::collection::vec(piece, 0..8).prop_map(|v| v.concat())
    }

    proptest! {
        /// The pattern and the parser accept the same strings, apart from
        /// values over the cap.
        #[test]
        fn pattern_agrees_with_parser(s in durationish()) {
            let parsed = parse_duration(&s);
            let matched = pattern().is_match(&s);
            match parsed {
                Ok(_) => prop_assert!(matched, "parser accepted {:?}, pattern did not", s),
                Err(DurationError::TooLong(_)) => prop_assert!(matched),
                Err(e) => prop_assert!(!matched, "pattern accepted {:?}, parser said {}", s, e),
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn format_round_trips(s in 0u64..=MAX_DURATION.as_secs()) {
            let d = secs(s);
            let text = format_duration(d);
            prop_assert!(pattern().is_match(&text));
            prop_assert_eq!(parse_duration(&text), Ok(d));
        }

        #[test]
        fn h_m_s_compose(h in 0u64..1000, m in 0u64..1000, s in 0u64..1000) {
            prop_assert_eq!(
                parse_duration(&format!("{h}h{m}m{s}s")),
                Ok(secs(h * 3600 + m * 60 + s))
            );
        }
    }
}
