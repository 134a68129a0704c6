//! Flagger's durations: what Go's `time.ParseDuration` accepts (`30s`, `1m30s`, `500ms`,
//! `1.5h`), since Flagger parses them with it, within its CRD's pattern `^[0-9]+(m|s)`: the
//! value starts with a whole number of minutes or seconds (`1m30s`, `90s` and `500ms` pass
//! Flagger's API server; `1h` and `1.5m` do not).
//!
//! This is the one duration parser of the controller and the CLI. It is serin's own rather
//! than `kube::core::Duration`'s, which reads the same syntax through `f64` and
//! `std::time::Duration::mul_f64`: that panics on a value too large for a `Duration`
//! (`99999999999999999999999m`, which the CRD's pattern lets through), rounds away
//! nanoseconds of long durations, and accepts signs Go refuses (`-+5s`). A manifest must
//! never crash the controller, so every digit here is checked integer arithmetic.

use std::time::Duration;

/// The pattern Flagger's CRD declares on every duration field (analysis interval, metric
/// interval, webhook timeout). Not anchored at the end, so `1m30s` and `500ms` match.
pub const CRD_DURATION_PATTERN: &str = "^[0-9]+(m|s)";

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(
        "`{0}` is not a duration: write a number with a unit, e.g. `30s`, `1m` or `1m30s` (units ns, us, ms, s, m, h)"
    )]
    Invalid(String),
    #[error("`{0}` has an unknown unit `{1}`: use ns, us, ms, s, m or h")]
    UnknownUnit(String, String),
    #[error(
        "`{0}` does not start with a whole number of minutes or seconds, as the CRD's pattern ^[0-9]+(m|s) requires (Flagger's too): write e.g. `60m` for `1h`, `90s` for `1.5m`"
    )]
    Pattern(String),
    #[error("`{0}` is negative")]
    Negative(String),
    #[error("`{0}` is too large")]
    Overflow(String),
}

/// Parses a duration field: Go's syntax, within the CRD's pattern, not negative.
///
/// # Errors
/// A [`DurationError`] naming what is wrong with `value`.
pub fn parse_duration(value: &str) -> Result<Duration, DurationError> {
    let d = parse_go_duration(value)?;
    if !matches_crd_pattern(value) {
        return Err(DurationError::Pattern(value.to_owned()));
    }
    Ok(d)
}

/// Whether `value` passes Flagger's CRD pattern ([`CRD_DURATION_PATTERN`]): digits, then `m`
/// or `s`, whatever comes after. A metric's `interval` only has to pass it: a Graphite
/// template writes it into its query in Graphite's own syntax (`-1min`).
pub fn matches_crd_pattern(value: &str) -> bool {
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && matches!(value.as_bytes().get(digits), Some(b'm' | b's'))
}

/// Go's `time.ParseDuration`: `[+-]?([0-9]*(\.[0-9]*)?[a-zµμ]+)+` or `0`, units ns, us (µs,
/// μs), ms, s, m, h. Negative values are refused: no field of a Canary can be negative.
///
/// # Errors
/// [`DurationError::Invalid`], [`DurationError::UnknownUnit`], [`DurationError::Negative`],
/// [`DurationError::Overflow`].
pub fn parse_go_duration(value: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(value.to_owned());
    let (negative, mut rest) = match value.as_bytes().first() {
        Some(b'-') => (true, &value[1..]),
        Some(b'+') => (false, &value[1..]),
        _ => (false, value),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, next) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(invalid()),
            other => return Err(DurationError::UnknownUnit(value.to_owned(), other.into())),
        };
        let overflow = || DurationError::Overflow(value.to_owned());
        let whole: u128 = match int {
            "" => 0,
            digits => digits.parse().map_err(|_| overflow())?,
        };
        let mut part = whole.checked_mul(scale).ok_or_else(overflow)?;
        // Fractional digits beyond the nanosecond are dropped, as Go does.
        let mut unit_frac = scale;
        for digit in frac.bytes() {
            unit_frac /= 10;
            if unit_frac == 0 {
                break;
            }
            part += u128::from(digit - b'0') * unit_frac;
        }
        total = total.checked_add(part).ok_or_else(overflow)?;
        rest = next;
    }
    if negative && total > 0 {
        return Err(DurationError::Negative(value.to_owned()));
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| DurationError::Overflow(value.to_owned()))?;
    // Go's durations are an i64 of nanoseconds: about 292 years.
    if total > i64::MAX as u128 {
        return Err(DurationError::Overflow(value.to_owned()));
    }
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_flaggers_api_server_and_go_accept() {
        for (text, want) in [
            ("30s", Duration::from_secs(30)),
            ("1m", Duration::from_secs(60)),
            ("0s", Duration::ZERO),
            ("015m", Duration::from_secs(900)),
            ("90s", Duration::from_secs(90)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", Duration::from_millis(500)),
            ("2m0.5s", Duration::from_millis(120_500)),
            ("10s250ms", Duration::from_millis(10_250)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn go_syntax_in_full() {
        for (text, want) in [
            ("1h", Duration::from_secs(3600)),
            ("1.5h", Duration::from_secs(5400)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("+5s", Duration::from_secs(5)),
            ("0", Duration::ZERO),
            ("-0s", Duration::ZERO),
            ("1us", Duration::from_micros(1)),
            ("1µs", Duration::from_micros(1)),
            ("1μs", Duration::from_micros(1)),
            ("3ns", Duration::from_nanos(3)),
            ("1.0000000009s", Duration::from_secs(1)),
            ("1h2m3s4ms5us6ns", Duration::new(3723, 4_005_006)),
        ] {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_either_refuses_naming_why() {
        for bad in ["", "s", "1", ".s", "1..5s", " 1s", "+", "-", "ms"] {
            assert!(
                matches!(parse_duration(bad), Err(DurationError::Invalid(_))),
                "{bad:?}: {:?}",
                parse_duration(bad)
            );
        }
        assert!(matches!(
            parse_duration("5sec"),
            Err(DurationError::UnknownUnit(_, u)) if u == "sec"
        ));
        assert!(matches!(
            parse_duration("1S"),
            Err(DurationError::UnknownUnit(..))
        ));
        assert!(matches!(
            parse_duration("1s "),
            Err(DurationError::UnknownUnit(..))
        ));
        for outside_pattern in ["1h", "1.5m", "0.5s", "2h30m"] {
            assert!(
                matches!(
                    parse_duration(outside_pattern),
                    Err(DurationError::Pattern(_))
                ),
                "{outside_pattern}"
            );
        }
        assert!(matches!(
            parse_duration("-1s"),
            Err(DurationError::Negative(_))
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999s"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            parse_duration("3000000h"),
            Err(DurationError::Overflow(_))
        ));
    }
}
