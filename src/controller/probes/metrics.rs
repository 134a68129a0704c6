//! The metric checks of an analysis step, through the metric providers.

use serin_core::Analysis;

use crate::analysis::MetricCheck;
use crate::api::Canary;
use crate::api::canary::MetricObservation;
use crate::controller::context::Context;

/// Runs the canary's metric checks once. `None` observations: the canary has no metrics.
pub async fn evaluate(
    ctx: &Context,
    canary: &Canary,
    route: Option<&str>,
) -> (Analysis, Option<Vec<MetricObservation>>) {
    let metrics = canary
        .spec
        .analysis()
        .map(|a| a.metrics())
        .unwrap_or_default();
    if metrics.is_empty() {
        return (Analysis::Pass, None);
    }
    let evaluation = ctx.analyzer.run(canary, route).await;
    let namespace = canary.metadata.namespace.as_deref().unwrap_or_default();
    let target = &canary.spec.target_ref.name;
    for (metric, value) in analysis_series(&evaluation.checks) {
        ctx.telemetry
            .metric_analysis(namespace, target, &metric, value);
    }
    for check in &evaluation.checks {
        if let Some(latency) = check.latency {
            ctx.telemetry
                .metric_query(&check.provider, latency.as_secs_f64(), check.error_kind);
        }
    }
    (evaluation.outcome, Some(evaluation.observations))
}

/// Flagger's `flagger_canary_metric_analysis` values of a step: one per metric with a value,
/// request-duration in seconds (the series are labelled with the target's name, as all of
/// Flagger's canary series are, not the Canary's).
fn analysis_series(checks: &[MetricCheck]) -> Vec<(String, f64)> {
    checks
        .iter()
        .filter_map(|check| Some((check.name.clone(), check.gauge_value()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::builtin::Builtin;
    use crate::analysis::thresholds::{Bounds, CheckOutcome};
    use crate::api::canary::MetricVerdict;

    #[test]
    fn durations_are_seconds_and_checks_without_a_value_have_no_series() {
        let check = |name: &str, builtin, value| MetricCheck {
            name: name.into(),
            provider: "prometheus".into(),
            query: None,
            bounds: Bounds::default(),
            unit: "",
            builtin,
            observation: MetricObservation {
                name: name.into(),
                value,
                threshold_min: None,
                threshold_max: None,
                baseline: None,
                p_value: None,
                verdict: MetricVerdict::Pass,
                message: None,
                time: None,
                analyses: None,
                samples: None,
            },
            outcome: CheckOutcome::Pass,
            error_kind: None,
            latency: None,
        };
        let series = analysis_series(&[
            check(
                "request-duration",
                Some(Builtin::RequestDuration),
                Some(1500.0),
            ),
            check("errors", None, None),
        ]);
        assert_eq!(series, [("request-duration".to_string(), 1.5)]);
    }
}
