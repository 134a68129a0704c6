//! The metric checks of an analysis step, through the metric providers.

use serin_core::Analysis;

use crate::api::Canary;
use crate::api::canary::MetricObservation;
use crate::controller::context::Context;

/// Runs the canary's metric checks once. `None` observations: the canary has no metrics.
pub async fn evaluate(
    _ctx: &Context,
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
    // Never pass a check that was not run.
    let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
    (
        Analysis::Fail(format!(
            "metric checks {names:?} cannot run: this serin build has no metric providers"
        )),
        None,
    )
}
