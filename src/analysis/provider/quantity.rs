//! Kubernetes quantities (`1500m`, `2Ki`, `1e3`, `12`) as numbers: the value of an external
//! metric is one (`ExternalMetricValue.value`).
//!
//! The grammar is the API server's: an optional sign, digits with at most one decimal point
//! (at least one digit), then one suffix: none, a decimal SI prefix (`n`, `u`, `m`, `k`, `M`,
//! `G`, `T`, `P`, `E`), a binary one (`Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei`), or a decimal
//! exponent (`e3`, `E-2`). Nothing else is accepted: no spaces, no `inf` or `NaN`, no hex, no
//! unit after the suffix (`1kb`). A value too large for a float is refused rather than read
//! as infinity.

/// Why a text is not a quantity; the message quotes no more than the caller decides to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QuantityError(&'static str);

/// The longest quantity read: the API server's own canonical forms are far shorter, and a
/// megabyte of digits is an answer to refuse, not to scan.
const MAX_LEN: usize = 128;

/// The quantity's value.
pub fn parse(text: &str) -> Result<f64, QuantityError> {
    if text.is_empty() {
        return Err(QuantityError("empty"));
    }
    if text.len() > MAX_LEN {
        return Err(QuantityError("longer than any quantity"));
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let number_len = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    if !number.bytes().any(|b| b.is_ascii_digit()) {
        return Err(QuantityError("no digits before the suffix"));
    }
    if number.matches('.').count() > 1 {
        return Err(QuantityError("more than one decimal point"));
    }
    let scale = scale(suffix)?;
    // Only digits and one point, checked above: the standard parser reads exactly that.
    let magnitude: f64 = number
        .parse()
        .map_err(|_| QuantityError("not a decimal number"))?;
    let value = match scale {
        // Zero times any power is zero (`0e999` would otherwise be 0 × inf).
        _ if magnitude == 0.0 => 0.0,
        // Divided by an exact power of ten rather than multiplied by an inexact one, so
        // `1500m` is exactly 1.5.
        Scale::Decimal(exponent) if exponent < 0 => {
            magnitude / 10f64.powi(exponent.saturating_neg())
        }
        Scale::Decimal(exponent) => magnitude * 10f64.powi(exponent),
        Scale::Binary(power) => magnitude * 1024f64.powi(power),
    };
    if !value.is_finite() {
        return Err(QuantityError("too large"));
    }
    Ok(if text.starts_with('-') { -value } else { value })
}

/// What a suffix multiplies the number by: a power of ten or of 1024.
#[derive(Clone, Copy)]
enum Scale {
    Decimal(i32),
    Binary(i32),
}

fn scale(suffix: &str) -> Result<Scale, QuantityError> {
    Ok(match suffix {
        "" => Scale::Decimal(0),
        "n" => Scale::Decimal(-9),
        "u" => Scale::Decimal(-6),
        "m" => Scale::Decimal(-3),
        "k" => Scale::Decimal(3),
        "M" => Scale::Decimal(6),
        "G" => Scale::Decimal(9),
        "T" => Scale::Decimal(12),
        "P" => Scale::Decimal(15),
        // Alone, `E` is exa; followed by digits it starts an exponent (below).
        "E" => Scale::Decimal(18),
        "Ki" => Scale::Binary(1),
        "Mi" => Scale::Binary(2),
        "Gi" => Scale::Binary(3),
        "Ti" => Scale::Binary(4),
        "Pi" => Scale::Binary(5),
        "Ei" => Scale::Binary(6),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E']).ok_or(QuantityError(
                "unknown suffix (one of n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, \
                 or an exponent e<N>)",
            ))?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QuantityError("the exponent is not a whole number"));
            }
            // A huge exponent saturates: the value is then infinite (refused by the caller)
            // or zero.
            let saturated = match exponent.starts_with('-') {
                true => i32::MIN,
                false => i32::MAX,
            };
            Scale::Decimal(exponent.parse().unwrap_or(saturated))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_servers_forms_read_as_numbers() {
        for (text, want) in [
            ("12", 12.0),
            ("1500m", 1.5),
            ("-250m", -0.25),
            ("+3", 3.0),
            ("0.5", 0.5),
            (".5", 0.5),
            ("5.", 5.0),
            ("2k", 2000.0),
            ("1M", 1e6),
            ("3G", 3e9),
            ("1E", 1e18),
            ("1Ki", 1024.0),
            ("1.5Mi", 1.5 * 1024.0 * 1024.0),
            ("2Gi", 2.0 * 1024f64.powi(3)),
            ("100n", 1e-7),
            ("7u", 7e-6),
            ("1e3", 1000.0),
            ("1E3", 1000.0),
            ("25e-1", 2.5),
            ("1e+2", 100.0),
            ("0", 0.0),
            ("1e-400", 0.0),
            ("0e99999", 0.0),
            ("1e-99999999999", 0.0),
        ] {
            let got = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!((got - want).abs() <= want.abs() * 1e-12, "{text}: {got}");
        }
        // Exact where the API server's canonical forms are exact.
        for (text, want) in [("1500m", 1.5), ("99500m", 99.5), ("100m", 0.1)] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        for text in [
            "", " 1", "1 ", "abc", "m", "1kb", "1.2.3", "--1", "+-1", "1e", "1e+", "1e1.5", "1ee3",
            "inf", "NaN", "-inf", "0x10", "1_000", "1,5", "1Kii", "1K", "1mi", ".", "+", "1e99999",
            "9e400",
        ] {
            let err = parse(text).expect_err(text);
            assert!(!err.to_string().is_empty(), "{text}");
        }
        let long = "1".repeat(1_000_000);
        assert_eq!(parse(&long), Err(QuantityError("longer than any quantity")));
    }
}
