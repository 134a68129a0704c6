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
) -> (Analysis, Option<Vec<MetricObservation>>) {
    let metrics = canary
        .spec
        .analysis()
        .map(|a| a.metrics())
        .unwrap_or_default();
    if metrics.is_empty() {
        return (Analysis::Pass, None);
    }
    let evaluation = ctx.analyzer.run(canary).await;
    for (labels, value) in analysis_series(canary, &evaluation.checks) {
        ctx.telemetry
            .set("flagger_canary_metric_analysis", labels, value);
    }
    (evaluation.outcome, Some(evaluation.observations))
}

/// Flagger's `flagger_canary_metric_analysis` series of a step: one per metric with a value,
/// request-duration in seconds, labelled with the target's name (as all of Flagger's canary
/// series are), not the Canary's.
fn analysis_series(
    canary: &Canary,
    checks: &[MetricCheck],
) -> Vec<(Vec<(&'static str, String)>, f64)> {
    let namespace = canary.metadata.namespace.clone().unwrap_or_default();
    let name = canary.spec.target_ref.name.clone();
    checks
        .iter()
        .filter_map(|check| {
            let value = check.gauge_value()?;
            let labels = vec![
                ("metric", check.name.clone()),
                ("name", name.clone()),
                ("namespace", namespace.clone()),
            ];
            Some((labels, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::builtin::Builtin;
    use crate::analysis::check::{Bounds, Effect};
    use crate::api::canary::MetricVerdict;

    #[test]
    fn series_are_labelled_with_the_target_and_durations_are_seconds() {
        let canary: Canary = serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "web-release", "namespace": "test"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898}}
        }))
        .unwrap();
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
                verdict: MetricVerdict::Pass,
                message: None,
                time: None,
            },
            effect: Effect::Pass,
            error_kind: None,
        };
        let series = analysis_series(
            &canary,
            &[
                check(
                    "request-duration",
                    Some(Builtin::RequestDuration),
                    Some(1500.0),
                ),
                check("errors", None, None),
            ],
        );
        assert_eq!(
            series,
            [(
                vec![
                    ("metric", "request-duration".to_string()),
                    ("name", "podinfo".to_string()),
                    ("namespace", "test".to_string())
                ],
                1.5
            )]
        );
    }
}
