//! Each metric's values over the release, one point per analysis, read from
//! `status.metrics[].analyses` (which the controller keeps for the release it runs), so a
//! report or a dashboard started mid-release charts every analysis since the release began.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::api::canary::{JudgedSamples, MetricObservation, MetricVerdict};

/// One analysis' observation of a metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub time: DateTime<Utc>,
    pub value: Option<f64>,
    pub passed: bool,
    /// A judged metric's primary side over the same window, and the test's p-value.
    pub baseline: Option<f64>,
    pub p_value: Option<f64>,
}

/// One metric over the release.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub points: Vec<Point>,
    /// The accepted range of the last analysis.
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// With a judge: what its last analysis compared.
    pub samples: Option<JudgedSamples>,
}

/// Every metric's series in the release started at `release_started` (the last observation
/// of an earlier release, left in the status until this one's first analysis, is not in it).
pub fn of(
    metrics: &[MetricObservation],
    release_started: Option<DateTime<Utc>>,
) -> BTreeMap<String, Series> {
    let in_release = |t: DateTime<Utc>| release_started.is_none_or(|s| t >= s);
    let mut all = BTreeMap::new();
    for m in metrics {
        let points: Vec<Point> = match &m.analyses {
            Some(analyses) => analyses
                .iter()
                .filter(|a| in_release(a.time))
                .map(|a| Point {
                    time: a.time,
                    value: a.value,
                    passed: a.verdict == MetricVerdict::Pass,
                    baseline: a.baseline,
                    p_value: a.p_value,
                })
                .collect(),
            // Written by a controller that kept no analyses: the last one alone.
            None => m
                .time
                .filter(|t| in_release(*t))
                .map(|time| Point {
                    time,
                    value: m.value,
                    passed: m.verdict == MetricVerdict::Pass,
                    baseline: m.baseline,
                    p_value: m.p_value,
                })
                .into_iter()
                .collect(),
        };
        if points.is_empty() {
            continue;
        }
        let samples = m.samples.clone().filter(|_| m.time.is_some_and(in_release));
        all.insert(
            m.name.clone(),
            Series {
                points,
                min: m.threshold_min,
                max: m.threshold_max,
                samples,
            },
        );
    }
    all
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn metrics(observations: serde_json::Value) -> Vec<MetricObservation> {
        serde_json::from_value(observations).unwrap()
    }

    fn at(second: u32) -> String {
        format!("2026-12-07T08:00:{second:02}Z")
    }

    fn started(second: u32) -> Option<DateTime<Utc>> {
        Some(at(second).parse().unwrap())
    }

    #[test]
    fn a_point_per_analysis_of_the_current_release() {
        let m = metrics(json!([{
            "name": "error-rate", "value": 0.2, "thresholdMax": 1.0, "verdict": "pass",
            "time": at(3),
            "analyses": [
                {"time": at(1), "value": 0.1, "verdict": "pass"},
                {"time": at(2), "value": 3.5, "verdict": "fail"},
                {"time": at(3), "value": 0.2, "verdict": "pass"}
            ]
        }]));
        let series = &of(&m, started(0))["error-rate"];
        let values: Vec<(Option<f64>, bool)> =
            series.points.iter().map(|p| (p.value, p.passed)).collect();
        assert_eq!(
            values,
            [(Some(0.1), true), (Some(3.5), false), (Some(0.2), true)]
        );
        assert_eq!(series.max, Some(1.0));
        // A release started after them: none of these analyses is in it.
        assert!(of(&m, started(5)).is_empty());
        assert_eq!(of(&m, started(2))["error-rate"].points.len(), 2);
    }

    #[test]
    fn a_status_without_analyses_shows_its_last_observation() {
        let m = metrics(json!([{
            "name": "latency", "value": 0.9, "baseline": 0.4, "pValue": 0.01, "verdict": "pass",
            "time": at(4), "samples": {"canary": [0.8, 1.0], "primary": [0.4]}
        }]));
        let series = &of(&m, started(0))["latency"];
        assert_eq!(series.points.len(), 1);
        assert_eq!(series.points[0].baseline, Some(0.4));
        assert_eq!(series.samples.as_ref().unwrap().canary, [0.8, 1.0]);
    }
}
