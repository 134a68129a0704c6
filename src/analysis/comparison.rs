//! A metric with a `judge`: its query run for the canary and for the primary over the
//! metric's window, one sample per step, and the two samples judged (see `judge`).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::builtin::Builtin;
use super::judge::{self, Judgement, Settings};
use super::provider::{Query, QueryError};
use super::template::{self, TemplateVars};
use super::thresholds::{self, CheckOutcome};
use super::{Analyzer, MetricCheck, Resolved};
use crate::api::canary::{
    CanaryMetric, JudgeTest, JudgedSamples, MetricJudge, MetricVerdict, Worse,
};
use crate::api::parse_duration;

/// Everything one comparison needs.
pub(super) struct At<'a> {
    pub metric: &'a CanaryMetric,
    pub judge: &'a MetricJudge,
    pub resolved: &'a Resolved,
    pub vars: &'a TemplateVars,
    /// The metric's `interval`: the window both samples cover.
    pub window: Duration,
    pub now: DateTime<Utc>,
    pub deadline: Instant,
    /// How often the release's judged metrics are asked: each check's share of `confidence`.
    pub checks: serin_core::stats::Checks,
}

impl<'a> At<'a> {
    /// The judge's settings for this check; `worse` unless the spec says otherwise.
    pub fn settings(&self, worse: Worse) -> Settings {
        Settings::of(self.judge, worse, self.checks)
    }

    /// `text` run over the window, at the check's time and within its deadline.
    pub fn query(&self, text: &'a str) -> Query<'a> {
        Query {
            text,
            interval: self.window,
            now: self.now,
            deadline: self.deadline,
        }
    }
}

/// The two queries, rendered with `{{ interval }}` = the step, and the primary's with
/// `{{ target }}` = `<target>-primary` unless the template names a `baselineQuery`.
pub(super) fn queries(at: &At<'_>, step: &str) -> Result<(String, String), QueryError> {
    let query = &at.resolved.query;
    let baseline = at.resolved.baseline_query.as_ref();
    if baseline.is_none() && !selects_by_target(query) {
        return Err(QueryError::config(
            "judge: this query does not select the canary's workload by `{{ target }}` (this \
             provider's builtin selects the canary's route), so the primary's series cannot \
             be derived from it: reference a MetricTemplate with a `baselineQuery`",
        ));
    }
    let mut canary = at.vars.clone();
    canary.interval = step.to_string();
    let mut primary = canary.clone();
    primary.target = format!("{}-primary", at.vars.target);
    let render = |text: &str, vars: &TemplateVars| {
        template::render(text, vars).map_err(|e| QueryError::config(e.to_string()))
    };
    Ok((
        render(query, &canary)?,
        render(baseline.unwrap_or(query), &primary)?,
    ))
}

/// Whether the query picks the canary's pods by `{{ target }}` (so `<target>-primary` picks
/// the primary's), rather than by a route or Service named after the canary.
fn selects_by_target(query: &str) -> bool {
    let compact: String = query.chars().filter(|c| !c.is_whitespace()).collect();
    compact.contains("{{target}}") && !compact.contains("{{target}}-canary")
}

/// The builtins' samples on the scale the judge compares: `request-success-rate` as the
/// error rate (so the tolerance is relative to the primary's errors, not to ~100 %).
fn scale(builtin: Option<Builtin>, raw: Vec<f64>) -> Vec<f64> {
    match builtin {
        Some(Builtin::RequestSuccessRate) => raw.into_iter().map(|v| 100.0 - v).collect(),
        _ => raw
            .into_iter()
            .map(|v| thresholds::normalize(v, builtin))
            .collect(),
    }
}

impl Analyzer {
    pub(super) async fn compare(&self, mut result: MetricCheck, at: At<'_>) -> MetricCheck {
        let step_text = at
            .judge
            .step
            .as_deref()
            .unwrap_or(MetricJudge::DEFAULT_STEP);
        let step = match parse_duration(step_text) {
            Ok(step) if !step.is_zero() => step,
            Ok(_) => return result.failed(&QueryError::config("judge.step: must be above 0")),
            Err(e) => return result.failed(&QueryError::config(format!("judge.step: {e}"))),
        };
        let settings = at.settings(Worse::Higher);
        if settings.test == JudgeTest::Counts {
            return self.compare_counts(result, at, settings).await;
        }
        let (canary_query, primary_query) = match queries(&at, step_text) {
            Ok(q) => q,
            Err(e) => return result.failed(&e),
        };
        result.query = Some(canary_query.clone());
        let backend = &at.resolved.backend;
        let sent = std::time::Instant::now();
        let (canary, primary) = futures::join!(
            backend.series(&self.http, at.query(&canary_query), step),
            backend.series(&self.http, at.query(&primary_query), step)
        );
        result.latency = Some(sent.elapsed());
        let (canary, primary) = match (canary, primary) {
            (Ok(c), Ok(p)) => (c, p),
            (Err(e), _) | (_, Err(e)) => return result.query_failed(at.metric, &e),
        };
        let builtin = at.resolved.builtin;
        let (canary, primary) = (scale(builtin, canary), scale(builtin, primary));
        let settings = match builtin {
            // Compared as an error rate: higher is worse, whatever the spec says.
            Some(Builtin::RequestSuccessRate) => Settings {
                worse: Worse::Higher,
                ..at.settings(Worse::Higher)
            },
            _ => at.settings(Worse::Higher),
        };
        result.observation.threshold_min = None;
        result.observation.threshold_max = None;
        let judged = judge::judge(&canary, &primary, &settings);
        let error_rate = builtin == Some(Builtin::RequestSuccessRate);
        // Shown as the metric's own values: a success rate, not the error rate judged.
        let shown = |v: f64| if error_rate { 100.0 - v } else { v };
        result.observation.samples = Some(JudgedSamples::of(&canary, &primary, shown));
        result.verdict(at.metric, judged, settings.min_samples, error_rate)
    }
}

impl MetricCheck {
    /// The check's outcome from a judgement; `error_rate`: the judgement is of error rates in
    /// percent, reported as the success rates they come from.
    pub(super) fn verdict(
        mut self,
        metric: &CanaryMetric,
        judged: Judgement,
        need: usize,
        error_rate: bool,
    ) -> MetricCheck {
        let (summary, failed) = match judged {
            Judgement::NotEnough { canary, primary } => {
                let reason = format!(
                    "not enough samples to judge {}: canary {canary}, primary {primary}, \
                     need {need} each",
                    self.name
                );
                return self.without_data(metric, reason);
            }
            Judgement::Pass(s) => (s, false),
            Judgement::Fail(s) => (s, true),
        };
        let back = |v: f64| match error_rate {
            true => 100.0 - v,
            false => v,
        };
        self.observation.value = Some(back(summary.canary_mean)).filter(|v| v.is_finite());
        self.observation.baseline = Some(back(summary.primary_mean)).filter(|v| v.is_finite());
        self.observation.p_value = Some(summary.p_value);
        let label = match error_rate {
            true => format!("{} (as error rate %)", self.name),
            false => self.name.clone(),
        };
        let described = summary.describe(&label);
        if failed {
            let reason = format!("the canary is worse than the primary: {described}");
            self.observation.verdict = MetricVerdict::Fail;
            self.observation.message = Some(reason.clone());
            self.outcome = CheckOutcome::Fail(reason);
        } else {
            self.observation.verdict = MetricVerdict::Pass;
            self.observation.message = Some(described);
            self.outcome = CheckOutcome::Pass;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::selects_by_target;

    #[test]
    fn a_query_selecting_the_workload_by_target_can_be_turned_to_the_primary() {
        assert!(selects_by_target(
            r#"rate(x{pod=~"{{ target }}-[0-9a-z]+"}[1m])"#
        ));
        assert!(selects_by_target(r#"rate(x{workload="{{target}}"}[1m])"#));
        // Kuma's and Gloo's builtins name the canary's route, not its pods.
        assert!(!selects_by_target(
            r#"x{service=~"{{ target }}-canary_{{ namespace }}"}"#
        ));
        assert!(!selects_by_target(r#"x{service="{{ service }}"}"#));
    }
}
