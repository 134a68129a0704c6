//! Judging a metric's value against its thresholds, and a reading without data against the
//! metric's no-data policy.
//!
//! Bounds come from `thresholdRange` (both inclusive) when set, else from the deprecated
//! `threshold`: a minimum for `request-success-rate`, a maximum for everything else, as in
//! Flagger. `request-duration` values are whole milliseconds (Flagger truncates them).

use crate::analysis::builtin::Builtin;
use crate::analysis::provider::format_value;
use crate::api::canary::{CanaryMetric, NoDataPolicy};

/// Accepted range of a metric.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bounds {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Bounds {
    /// The bounds of `metric`; `builtin` is set when it runs as a builtin metric.
    pub fn of(metric: &CanaryMetric, builtin: Option<Builtin>) -> Bounds {
        if let Some(range) = &metric.threshold_range {
            return Bounds {
                min: range.min,
                max: range.max,
            };
        }
        match (metric.threshold, builtin) {
            (None, _) => Bounds::default(),
            (Some(t), Some(Builtin::RequestSuccessRate)) => Bounds {
                min: Some(t),
                max: None,
            },
            (Some(t), _) => Bounds {
                min: None,
                max: Some(t),
            },
        }
    }

    /// `min..=max`, e.g. `>= 99`, `<= 500`, `[1, 5]`, `any`.
    pub fn describe(&self, unit: &str) -> String {
        match (self.min, self.max) {
            (None, None) => "any".into(),
            (Some(min), None) => format!(">= {}{unit}", format_value(min)),
            (None, Some(max)) => format!("<= {}{unit}", format_value(max)),
            (Some(min), Some(max)) => {
                format!("[{}{unit}, {}{unit}]", format_value(min), format_value(max))
            }
        }
    }
}

/// Unit suffix shown after values of a metric.
pub fn unit(builtin: Option<Builtin>) -> &'static str {
    match builtin {
        Some(Builtin::RequestSuccessRate) => "%",
        Some(Builtin::RequestDuration) => "ms",
        None => "",
    }
}

/// The value that is judged and shown: `request-duration` in whole milliseconds, and no
/// negative zero (a query like `1 - x` yields `-0`, which reads as a bug in `kubectl get`).
pub fn normalize(value: f64, builtin: Option<Builtin>) -> f64 {
    let value = match builtin {
        Some(Builtin::RequestDuration) if value.is_finite() => value.trunc(),
        _ => value,
    };
    // Nine decimals are more than any threshold needs, and `30.000000000000004` (float noise
    // of a division) reads as a bug in `kubectl get`.
    let value = if value.is_finite() && value.abs() < 1e9 {
        (value * 1e9).round() / 1e9
    } else {
        value
    };
    if value == 0.0 { 0.0 } else { value }
}

/// `Ok` when `value` is within `bounds`; otherwise the reason, in Flagger's words (event
/// texts that alert rules and dashboards match): `success rate 69.17% < 99%`, `request
/// duration 1.515s > 500ms`, `<metric> 5.2 > 5`. NaN and infinities (a division by zero, a
/// quantile in the `+Inf` bucket) are never within bounds, whatever the bounds.
pub fn judge(
    name: &str,
    value: f64,
    bounds: Bounds,
    builtin: Option<Builtin>,
) -> Result<(), String> {
    let (label, show): (&str, fn(f64) -> String) = match builtin {
        Some(Builtin::RequestSuccessRate) => ("success rate", |v| format!("{}%", format_value(v))),
        Some(Builtin::RequestDuration) => ("request duration", go_duration_ms),
        None => (name, format_value),
    };
    if !value.is_finite() {
        return Err(format!(
            "{label} is {}, not a finite number",
            format_value(value)
        ));
    }
    if let Some(min) = bounds.min
        && value < min
    {
        return Err(format!("{label} {} < {}", show(value), show(min)));
    }
    if let Some(max) = bounds.max
        && value > max
    {
        return Err(format!("{label} {} > {}", show(value), show(max)));
    }
    Ok(())
}

/// Milliseconds as Go prints a `time.Duration`: `500ms`, `1.515s`, `1m30s`, `0s`.
pub fn go_duration_ms(ms: f64) -> String {
    if ms == 0.0 {
        return "0s".into();
    }
    let sign = if ms < 0.0 { "-" } else { "" };
    let ms = ms.abs();
    if ms < 1000.0 {
        return format!("{sign}{}ms", format_value(ms));
    }
    let total_secs = ms / 1000.0;
    let hours = (total_secs / 3600.0).floor();
    let minutes = ((total_secs - hours * 3600.0) / 60.0).floor();
    let secs = total_secs - hours * 3600.0 - minutes * 60.0;
    // Seconds with up to three decimals, trailing zeros dropped, as Go does.
    let secs = format!("{:.3}", secs);
    let secs = secs.trim_end_matches('0').trim_end_matches('.');
    match (hours > 0.0, minutes > 0.0 || hours > 0.0) {
        (true, _) => format!("{sign}{hours}h{minutes}m{secs}s"),
        (false, true) => format!("{sign}{minutes}m{secs}s"),
        (false, false) => format!("{sign}{secs}s"),
    }
}

/// What a check means for the step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    Pass,
    /// Counts a failed check.
    Fail(String),
    /// Waits without counting (no data under the `hold` policy).
    Hold(String),
}

/// The outcome of a reading without data under the metric's policy.
pub fn no_data(metric: &CanaryMetric, reason: String) -> CheckOutcome {
    match metric.no_data_policy() {
        NoDataPolicy::Fail => CheckOutcome::Fail(reason),
        NoDataPolicy::Hold => CheckOutcome::Hold(reason),
        NoDataPolicy::Pass => CheckOutcome::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::canary::CanaryThresholdRange;

    fn metric(threshold: Option<f64>, range: Option<(Option<f64>, Option<f64>)>) -> CanaryMetric {
        CanaryMetric {
            name: "m".into(),
            threshold,
            threshold_range: range.map(|(min, max)| CanaryThresholdRange { min, max }),
            ..CanaryMetric::default()
        }
    }

    #[test]
    fn legacy_threshold_is_a_minimum_only_for_the_success_rate() {
        let m = metric(Some(99.0), None);
        assert_eq!(
            Bounds::of(&m, Some(Builtin::RequestSuccessRate)),
            Bounds {
                min: Some(99.0),
                max: None
            }
        );
        assert_eq!(
            Bounds::of(&m, Some(Builtin::RequestDuration)),
            Bounds {
                min: None,
                max: Some(99.0)
            }
        );
        assert_eq!(
            Bounds::of(&m, None),
            Bounds {
                min: None,
                max: Some(99.0)
            }
        );
        assert_eq!(Bounds::of(&metric(None, None), None), Bounds::default());
    }

    #[test]
    fn threshold_range_wins_over_threshold() {
        let m = metric(Some(1.0), Some((Some(5.0), Some(10.0))));
        assert_eq!(
            Bounds::of(&m, Some(Builtin::RequestSuccessRate)),
            Bounds {
                min: Some(5.0),
                max: Some(10.0)
            }
        );
    }

    #[test]
    fn bounds_are_inclusive_and_reasons_name_value_and_bound() {
        let b = Bounds {
            min: Some(99.0),
            max: Some(100.0),
        };
        let sr = Some(Builtin::RequestSuccessRate);
        assert_eq!(judge("sr", 99.0, b, sr), Ok(()));
        assert_eq!(judge("sr", 100.0, b, sr), Ok(()));
        // Flagger's words, which alert rules match: `Halt podinfo.test advancement success
        // rate 69.70% < 99%`.
        assert_eq!(
            judge("request-success-rate", 69.7, b, sr),
            Err("success rate 69.70% < 99%".into())
        );
        let d = Bounds {
            min: None,
            max: Some(500.0),
        };
        assert_eq!(
            judge(
                "request-duration",
                1515.0,
                d,
                Some(Builtin::RequestDuration)
            ),
            Err("request duration 1.515s > 500ms".into())
        );
        assert_eq!(
            judge(
                "error-rate",
                5.25,
                Bounds {
                    min: None,
                    max: Some(5.0)
                },
                None
            ),
            Err("error-rate 5.25 > 5".into())
        );
        assert!(judge("x", f64::NAN, Bounds::default(), None).is_err());
        assert_eq!(
            judge(
                "x",
                f64::INFINITY,
                Bounds {
                    min: Some(1.0),
                    max: None
                },
                None
            ),
            Err("x is inf, not a finite number".into())
        );
        assert_eq!(judge("x", 1e9, Bounds::default(), None), Ok(()));
    }

    #[test]
    fn milliseconds_print_as_go_durations() {
        for (ms, go) in [
            (0.0, "0s"),
            (500.0, "500ms"),
            (1515.0, "1.515s"),
            (2000.0, "2s"),
            (90_000.0, "1m30s"),
            (60_000.0, "1m0s"),
            (3_723_004.0, "1h2m3.004s"),
        ] {
            assert_eq!(go_duration_ms(ms), go, "{ms}");
        }
    }

    #[test]
    fn durations_are_truncated_to_milliseconds() {
        assert_eq!(normalize(500.9, Some(Builtin::RequestDuration)), 500.0);
        assert_eq!(normalize(99.9, Some(Builtin::RequestSuccessRate)), 99.9);
        assert!(normalize(-0.0, None).is_sign_positive(), "no negative zero");
        assert_eq!(normalize(30.000000000000004, None), 30.0);
        assert!(normalize(f64::NAN, None).is_nan());
    }

    #[test]
    fn no_data_follows_the_policy() {
        let mut m = metric(None, None);
        assert!(matches!(no_data(&m, "r".into()), CheckOutcome::Fail(_)));
        m.no_data_policy = Some(NoDataPolicy::Hold);
        assert_eq!(no_data(&m, "r".into()), CheckOutcome::Hold("r".into()));
        m.no_data_policy = Some(NoDataPolicy::Pass);
        assert_eq!(no_data(&m, "r".into()), CheckOutcome::Pass);
    }

    #[test]
    fn ranges_describe_themselves() {
        assert_eq!(
            Bounds {
                min: Some(99.0),
                max: None
            }
            .describe("%"),
            ">= 99%"
        );
        assert_eq!(
            Bounds {
                min: Some(1.0),
                max: Some(2.5)
            }
            .describe(""),
            "[1, 2.50]"
        );
        assert_eq!(Bounds::default().describe("ms"), "any");
    }
}
