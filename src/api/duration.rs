//! Flagger's durations: a whole number of seconds or minutes, `^[0-9]+(m|s)$` (`30s`, `1m`).

use std::time::Duration;

/// The pattern every duration field must match (analysis interval, metric interval, webhook
/// timeout), as the validator enforces it.
pub const DURATION_PATTERN: &str = "^[0-9]+(m|s)$";

/// The pattern Flagger's CRD declares. It is not anchored at the end (so `1m30s` passes the API
/// server); the CRD keeps it so every object Flagger's API server accepted stays storable,
/// while `serin check` and the controller's validation apply the stricter [`DURATION_PATTERN`].
pub const CRD_DURATION_PATTERN: &str = "^[0-9]+(m|s)";

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(
        "`{0}` is not a duration: use a whole number of seconds or minutes, e.g. `30s` or `1m`"
    )]
    Invalid(String),
    #[error("`{0}` is too large")]
    Overflow(String),
}

/// Parses `30s` / `5m` (`^[0-9]+(m|s)$`) into a [`Duration`].
///
/// # Errors
/// [`DurationError::Invalid`] for anything else (`1m30s`, `500ms`, `1h`, `-1s`, ` 1s`, `s`);
/// [`DurationError::Overflow`] when the number does not fit in `u64` seconds.
pub fn parse_duration(value: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(value.to_owned());
    let (digits, unit) = match value.as_bytes().last() {
        Some(b's') => (&value[..value.len() - 1], 1u64),
        Some(b'm') => (&value[..value.len() - 1], 60u64),
        _ => return Err(invalid()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| DurationError::Overflow(value.to_owned()))?;
    let secs = n
        .checked_mul(unit)
        .ok_or_else(|| DurationError::Overflow(value.to_owned()))?;
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seconds_and_minutes() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("015m"), Ok(Duration::from_secs(900)));
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "", "s", "m", "1", "1h", "1ms", "1m30s", "-1s", " 1s", "1s ", "1.5m", "1S", "١s",
        ] {
            assert!(
                matches!(parse_duration(bad), Err(DurationError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_duration("99999999999999999999999s"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            parse_duration("999999999999999999m"),
            Err(DurationError::Overflow(_))
        ));
    }
}
