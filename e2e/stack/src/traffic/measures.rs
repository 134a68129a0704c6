//! Named measures of the traffic world over a recent window, for the stand-ins that answer
//! metric queries by name rather than in a query language of their own (the Keptn stand-in
//! and the External Metrics API adapter).
//!
//! A measure is asked for in one namespace, over the requests the world's workloads answered
//! in the last `window` (from the per-second history), restricted by a label selector over
//! each request's labels: `workload` (the Deployment or DaemonSet that answered) and `service`
//! (the Service addressed). Measures:
//!
//! | Name | Value |
//! |---|---|
//! | `request-success-rate` | percent of requests answered without a 5xx |
//!
//! No request in the window is no value. Any other name is unknown (the callers answer it as
//! their real counterparts do: an error).

use crate::selector::LabelSelector;
use crate::traffic::world::{Sample, World};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// The measures answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    RequestSuccessRate,
}

impl Measure {
    pub fn parse(name: &str) -> Option<Measure> {
        match name {
            "request-success-rate" => Some(Measure::RequestSuccessRate),
            _ => None,
        }
    }

    pub fn names() -> &'static str {
        "request-success-rate"
    }
}

/// What a measure sums over a set of requests.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    requests: f64,
    errors: f64,
}

impl Tally {
    fn add(&mut self, sample: &Sample) {
        self.requests += sample.requests;
        if sample.code >= 500 {
            self.errors += sample.requests;
        }
    }

    fn value(&self, measure: Measure) -> Option<f64> {
        if self.requests <= 0.0 {
            return None;
        }
        Some(match measure {
            Measure::RequestSuccessRate => 100.0 * (self.requests - self.errors) / self.requests,
        })
    }
}

/// The measure per workload of `namespace` that answered matching requests in the last
/// `window`, by workload name.
pub fn per_workload(
    world: &World,
    namespace: &str,
    measure: Measure,
    selector: &LabelSelector,
    window: Duration,
) -> BTreeMap<String, f64> {
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    for sample in matching(world, namespace, selector, window) {
        tallies
            .entry(sample.backend.workload.clone())
            .or_default()
            .add(&sample);
    }
    tallies
        .into_iter()
        .filter_map(|(workload, tally)| tally.value(measure).map(|v| (workload, v)))
        .collect()
}

/// The measure over every matching request of `namespace` in the last `window`.
pub fn overall(
    world: &World,
    namespace: &str,
    measure: Measure,
    selector: &LabelSelector,
    window: Duration,
) -> Option<f64> {
    let mut tally = Tally::default();
    for sample in matching(world, namespace, selector, window) {
        tally.add(&sample);
    }
    tally.value(measure)
}

fn matching(
    world: &World,
    namespace: &str,
    selector: &LabelSelector,
    window: Duration,
) -> Vec<Sample> {
    let now = world.now();
    world
        .samples(now - window.as_secs_f64(), now)
        .into_iter()
        .map(|(_, sample)| sample)
        .filter(|s| s.backend.namespace == namespace)
        .filter(|s| {
            let labels = json!({"metadata": {"labels": {
                "workload": s.backend.workload, "service": s.service}}});
            selector.matches(&labels)
        })
        .collect()
}
