//! Each metric's values over the release, one point per analysis, gathered by the dashboard as
//! it watches: `status.metrics` holds each check's last observation only, so the dashboard
//! keeps the ones it saw (since it started) for a Canary's charts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use crate::api::Canary;

/// Points kept per metric: the latest.
const POINTS: usize = 60;
/// Metrics kept per Canary.
const METRICS: usize = 20;

/// One analysis' observation of a metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub time: DateTime<Utc>,
    pub value: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub passed: bool,
    /// A judged metric's primary side over the same window, and the test's p-value.
    pub baseline: Option<f64>,
    pub p_value: Option<f64>,
}

/// The points per Canary (by uid) and metric, of the release each Canary runs.
#[derive(Debug, Default)]
pub struct Series(Mutex<HashMap<String, Kept>>);

/// One Canary's series, and the release they belong to.
#[derive(Debug, Default)]
struct Kept {
    release: Option<DateTime<Utc>>,
    metrics: BTreeMap<String, Vec<Point>>,
}

impl Series {
    /// Takes in `canary`'s last observations: a point per metric observed later than its last.
    pub fn observe(&self, canary: &Canary) {
        let (Some(uid), Some(status)) = (canary.uid(), canary.status.as_ref()) else {
            return;
        };
        let release = status
            .history
            .as_ref()
            .and_then(|h| h.last())
            .map(|r| r.started);
        let Ok(mut all) = self.0.lock() else {
            return;
        };
        let kept = all.entry(uid).or_default();
        if kept.release != release {
            // A new release: its charts start empty.
            *kept = Kept {
                release,
                metrics: BTreeMap::new(),
            };
        }
        for m in status.metrics.iter().flatten() {
            let Some(time) = m.time else { continue };
            // The previous release's last observation stays in the status until the first
            // analysis of this one replaces it.
            if release.is_some_and(|started| time < started) {
                continue;
            }
            if !kept.metrics.contains_key(&m.name) && kept.metrics.len() >= METRICS {
                continue;
            }
            let points = kept.metrics.entry(m.name.clone()).or_default();
            if points.last().is_some_and(|p| p.time >= time) {
                continue;
            }
            points.push(Point {
                time,
                value: m.value,
                min: m.threshold_min,
                max: m.threshold_max,
                passed: m.verdict == crate::api::canary::MetricVerdict::Pass,
                baseline: m.baseline,
                p_value: m.p_value,
            });
            let excess = points.len().saturating_sub(POINTS);
            points.drain(..excess);
        }
    }

    /// A deleted Canary's series go with it.
    pub fn forget(&self, canary: &Canary) {
        if let (Some(uid), Ok(mut all)) = (canary.uid(), self.0.lock()) {
            all.remove(&uid);
        }
    }

    /// `canary`'s series, by metric name.
    pub fn of(&self, canary: &Canary) -> BTreeMap<String, Vec<Point>> {
        let uid = canary.uid().unwrap_or_default();
        self.0
            .lock()
            .ok()
            .and_then(|all| all.get(&uid).map(|c| c.metrics.clone()))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn canary(started: &str, observations: serde_json::Value) -> Canary {
        serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "u-1"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                     "service": {"port": 9898}},
            "status": {"phase": "Progressing",
                       "history": [{"revision": "r", "outcome": "Progressing", "started": started}],
                       "metrics": observations}
        }))
        .unwrap()
    }

    fn observation(second: u32, value: f64) -> serde_json::Value {
        json!({"name": "error-rate", "value": value, "thresholdMax": 1.0, "verdict": "pass",
               "time": format!("2026-12-07T08:00:{second:02}Z")})
    }

    #[test]
    fn one_point_per_analysis_of_the_current_release() {
        let series = Series::default();
        let first = "2026-12-07T07:59:00Z";
        for (second, value) in [(1, 0.1), (1, 0.1), (2, 0.3), (3, 0.2)] {
            series.observe(&canary(first, json!([observation(second, value)])));
        }
        let points = &series.of(&canary(first, json!([])))["error-rate"];
        let values: Vec<Option<f64>> = points.iter().map(|p| p.value).collect();
        assert_eq!(
            values,
            [Some(0.1), Some(0.3), Some(0.2)],
            "the same analysis once"
        );
        assert_eq!(points[0].max, Some(1.0));

        // The next release starts its charts afresh, without the last release's observation.
        let next = "2026-12-07T08:00:05Z";
        series.observe(&canary(next, json!([observation(3, 0.2)])));
        assert!(series.of(&canary(next, json!([]))).is_empty());
        series.observe(&canary(next, json!([observation(9, 0.5)])));
        assert_eq!(series.of(&canary(next, json!([])))["error-rate"].len(), 1);
        series.forget(&canary(next, json!([])));
        assert!(series.of(&canary(next, json!([]))).is_empty());
    }

    #[test]
    fn bounded_per_metric() {
        let series = Series::default();
        for minute in 0..(POINTS as u32 + 10) {
            let o = json!({"name": "m", "value": 1.0, "verdict": "pass",
                           "time": format!("2026-12-07T{:02}:{:02}:00Z", minute / 60, minute % 60)});
            series.observe(&canary("2026-12-07T00:00:00Z", json!([o])));
        }
        assert_eq!(
            series.of(&canary("2026-12-07T00:00:00Z", json!([])))["m"].len(),
            POINTS
        );
    }
}
