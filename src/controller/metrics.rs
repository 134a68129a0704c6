//! The metric checks of an analysis step, through the metric providers.

use serin_core::Analysis;

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
    // Flagger's gauge: one series per metric, request-duration in seconds.
    let namespace = canary.metadata.namespace.clone().unwrap_or_default();
    let name = canary.metadata.name.clone().unwrap_or_default();
    for check in &evaluation.checks {
        if let Some(value) = check.gauge_value() {
            let labels = vec![
                ("metric", check.name.clone()),
                ("name", name.clone()),
                ("namespace", namespace.clone()),
            ];
            ctx.telemetry
                .set("flagger_canary_metric_analysis", labels, value);
        }
    }
    (evaluation.outcome, Some(evaluation.observations))
}
