//! Durations in the grammar of Go's `time.ParseDuration`: `1m`, `90s`, `1h30m`, `1.5h`, `500ms`.
//!
//! A duration is an optional sign and a sequence of decimal numbers, each with an optional fraction
//! and a unit (`ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`), such as `2h45m30.5s`, `.5s` or `1.s`; a
//! bare `0` (also `+0`, `-0`) needs no unit. Unlike Go, the arithmetic is exact (`0.1s` is 100 ms,
//! `1.5m` is 90 s; a fraction is cut to whole nanoseconds, and digits after its 24th are ignored),
//! and a negative duration is refused: no flag of the toolkit means anything by one. The largest
//! duration is Go's, 2562047h47m16.854775807s.

use std::time::Duration;

/// The largest duration, in nanoseconds: Go's, `i64::MAX`.
const MAX_NANOS: u64 = (1 << 63) - 1;

/// Digits of a fraction that count: `10^24` times the longest unit still fits in a `u128`.
const FRACTION_DIGITS: usize = 24;

/// Why a duration text is not understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason} (examples: 1m, 90s, 1h30m, 1.5h, 500ms)")]
pub struct DurationError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: DurationReason,
}

/// What is wrong with a duration text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationReason {
    /// Nothing was given.
    #[error("empty")]
    Empty,
    /// A number was expected (at the end, or before the text shown).
    #[error("expected a number at {at:?}")]
    ExpectedNumber {
        /// The rest of the text from where the number should be.
        at: String,
    },
    /// A number has no unit.
    #[error("missing unit after {number:?} (units: ns, us, µs, ms, s, m, h)")]
    MissingUnit {
        /// The number.
        number: String,
    },
    /// A unit is none of the known ones.
    #[error("unknown unit {unit:?} (units: ns, us, µs, ms, s, m, h)")]
    UnknownUnit {
        /// The unit as given.
        unit: String,
    },
    /// The duration is longer than Go's largest.
    #[error("too large (at most 2562047h47m16.854775807s)")]
    TooLarge,
    /// The duration is negative.
    #[error("must not be negative")]
    Negative,
}

/// Parses a duration in Go's `time.ParseDuration` grammar (see the module documentation).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let fail = |reason| DurationError {
        text: text.to_owned(),
        reason,
    };
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(fail(DurationReason::Empty));
    }
    let mut total: u64 = 0;
    loop {
        let (whole, after) = split_digits(rest);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => split_digits(after),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(fail(DurationReason::ExpectedNumber { at: rest.to_owned() }));
        }
        let unit_length = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_length);
        let unit_nanos = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                let number = &rest[..rest.len() - after.len()];
                return Err(fail(DurationReason::MissingUnit {
                    number: number.to_owned(),
                }));
            }
            _ => {
                return Err(fail(DurationReason::UnknownUnit {
                    unit: unit.to_owned(),
                }));
            }
        };
        total = nanos(whole, fraction, unit_nanos)
            .and_then(|part| total.checked_add(part))
            .filter(|total| *total <= MAX_NANOS)
            .ok_or_else(|| fail(DurationReason::TooLarge))?;
        if after.is_empty() {
            break;
        }
        rest = after;
    }
    if negative && total > 0 {
        return Err(fail(DurationReason::Negative));
    }
    Ok(Duration::from_nanos(total))
}

/// The leading ASCII digits of `text`, and the rest.
fn split_digits(text: &str) -> (&str, &str) {
    text.split_at(text.bytes().take_while(u8::is_ascii_digit).count())
}

/// `whole.fraction` times `unit` nanoseconds, cut to whole nanoseconds; `None` above
/// [`MAX_NANOS`]. Both texts hold ASCII digits only.
fn nanos(whole: &str, fraction: &str, unit: u64) -> Option<u64> {
    let digit = |byte: u8| u128::from(byte - b'0');
    let whole = whole.bytes().try_fold(0_u128, |value, byte| {
        value
            .checked_mul(10)
            .map(|value| value + digit(byte))
            .filter(|value| *value <= u128::from(MAX_NANOS))
    })?;
    let (numerator, scale) = fraction
        .bytes()
        .take(FRACTION_DIGITS)
        .fold((0_u128, 1_u128), |(numerator, scale), byte| {
            (numerator * 10 + digit(byte), scale * 10)
        });
    let unit = u128::from(unit);
    // At most (2^63 - 1) * 3.6e12 + 3.6e12: far below u128::MAX.
    let nanos = whole * unit + numerator * unit / scale;
    u64::try_from(nanos).ok().filter(|nanos| *nanos <= MAX_NANOS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: u64 = 1;
    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;

    fn parsed(text: &str) -> Result<u64, DurationReason> {
        parse_duration(text)
            .map(|duration| u64::try_from(duration.as_nanos()).unwrap())
            .map_err(|error| error.reason)
    }

    /// The valid examples of Go's own tests of `time.ParseDuration` (the non-negative ones).
    #[test]
    fn go_examples_parse_to_the_same_value() {
        let table: &[(&str, u64)] = &[
            ("0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("+5s", 5 * S),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600 * MS),
            ("5.s", 5 * S),
            (".5s", 500 * MS),
            ("1.0s", S),
            ("1.00s", S),
            ("1.004s", S + 4 * MS),
            ("1.0040s", S + 4 * MS),
            ("100.00100s", 100 * S + MS),
            ("10ns", 10 * NS),
            ("11us", 11 * US),
            ("12µs", 12 * US),
            ("12μs", 12 * US),
            ("13ms", 13 * MS),
            ("14s", 14 * S),
            ("15m", 15 * M),
            ("16h", 16 * H),
            ("3h30m", 3 * H + 30 * M),
            ("10.5s4m", 4 * M + 10 * S + 500 * MS),
            ("1h2m3s4ms5us6ns", H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS),
            ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
            ("52763797000ns", 52_763_797_000 * NS),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", MAX_NANOS),
            ("9223372036854775.807us", MAX_NANOS),
            ("9223372036s854ms775us807ns", MAX_NANOS),
            ("0.100000000000000000000h", 6 * M),
            ("0.830103483285477580700h", 49 * M + 48 * S + 372_539_827 * NS),
        ];
        for (text, nanos) in table {
            assert_eq!(parsed(text), Ok(*nanos), "{text}");
        }
    }

    #[test]
    fn fractions_are_exact() {
        assert_eq!(parsed("1.5m"), Ok(90 * S));
        assert_eq!(parsed("0.1s"), Ok(100 * MS));
        assert_eq!(parsed("1.5h"), Ok(90 * M));
        assert_eq!(parsed("2h45m30.5s"), Ok(2 * H + 45 * M + 30 * S + 500 * MS));
        assert_eq!(parsed("0.000000001s"), Ok(NS));
        assert_eq!(parsed("0.0000000019s"), Ok(NS), "cut to whole nanoseconds");
        // Go's floating point rounds this one up to 20m; exactly it is one nanosecond less.
        assert_eq!(parsed("0.3333333333333333333h"), Ok(20 * M - NS));
        assert_eq!(parsed("1.000000000000000000000000000009s"), Ok(S));
        assert_eq!(parsed("2562047h47m16.854775807s"), Ok(MAX_NANOS));
    }

    #[test]
    fn malformed_durations_say_why() {
        let expected = |at: &str| Err(DurationReason::ExpectedNumber { at: at.to_owned() });
        assert_eq!(parsed(""), Err(DurationReason::Empty));
        for text in ["-", "+", "s", ".", "-.", ".s", "+.s", "\u{85}\u{85}", " 1s"] {
            let at = text.trim_start_matches(['-', '+']);
            assert_eq!(parsed(text), expected(at), "{text:?}");
        }
        assert_eq!(parsed("1s."), expected("."));
        for (text, number) in [("3", "3"), ("1h30", "30"), ("0.0", "0.0"), ("1.5.5s", "1.5")] {
            let missing = Err(DurationReason::MissingUnit {
                number: number.to_owned(),
            });
            assert_eq!(parsed(text), missing, "{text}");
        }
        for (text, unit) in [
            ("1d", "d"),
            ("5 minutes", " minutes"),
            ("2H", "H"),
            ("1sec", "sec"),
        ] {
            let unknown = Err(DurationReason::UnknownUnit {
                unit: unit.to_owned(),
            });
            assert_eq!(parsed(text), unknown, "{text}");
        }
    }

    #[test]
    fn durations_beyond_gos_limit_are_too_large() {
        for text in [
            "9223372036854775808ns",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            "2562048h",
            "2562047h47m16.854775808s",
            "99999999999999999999999999999999999999999h",
            "-9223372036854775808ns",
        ] {
            assert_eq!(parsed(text), Err(DurationReason::TooLarge), "{text}");
        }
    }

    #[test]
    fn negative_durations_are_refused() {
        for text in ["-5s", "-2m3.4s", "-1ns", "-.5s"] {
            assert_eq!(parsed(text), Err(DurationReason::Negative), "{text}");
        }
        let error = parse_duration("-5s").unwrap_err().to_string();
        assert_eq!(
            error,
            "invalid duration \"-5s\": must not be negative (examples: 1m, 90s, 1h30m, 1.5h, 500ms)"
        );
        assert_eq!(parsed("-0s"), Ok(0));
    }
}
