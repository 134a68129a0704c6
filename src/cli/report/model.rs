//! What a release report shows, gathered from the Canary, its events and its plan: pure, so
//! both renderers and their tests start from the same values.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use serin_core::simulate::SimStep;

use crate::api::Canary;
use crate::api::canary::{MetricObservation, ReleaseRecord};

/// Events shown, the latest.
pub const EVENTS_SHOWN: usize = 200;
/// Characters of one event message shown.
const MESSAGE_CHARS: usize = 500;

/// One Canary's release, as a report shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub name: String,
    pub namespace: String,
    pub target: String,
    pub phase: String,
    pub canary_weight: i32,
    pub iterations: i32,
    pub failed_checks: i32,
    pub threshold: u32,
    pub revision: Option<String>,
    pub promoted: Option<String>,
    /// The planned steps (`serin plan`'s simulation); empty when the spec does not plan.
    pub planned: Vec<Planned>,
    /// The events, oldest first.
    pub events: Vec<Moment>,
    /// The canary's weight after each event that set one.
    pub weights: Vec<(DateTime<Utc>, u32)>,
    pub metrics: Vec<MetricObservation>,
    pub history: Vec<ReleaseRecord>,
    pub generated: DateTime<Utc>,
}

/// One planned step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub at_seconds: i64,
    pub phase: String,
    pub canary_weight: u32,
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moment {
    pub time: Option<DateTime<Utc>>,
    pub warning: bool,
    pub message: String,
    pub count: i32,
}

impl Report {
    /// Each metric over the release the report is of (the last in `history`).
    pub fn series(&self) -> std::collections::BTreeMap<String, super::series::Series> {
        let started = self.history.last().map(|r| r.started);
        super::series::of(&self.metrics, started)
    }

    /// From the Canary, its events (any order, others' filtered out) and its planned steps.
    pub fn new(
        canary: &Canary,
        events: Vec<Event>,
        planned: &[SimStep],
        generated: DateTime<Utc>,
    ) -> Report {
        let status = canary.status.clone().unwrap_or_default();
        let target = &canary.spec.target_ref;
        let events = moments(canary, events);
        Report {
            name: canary.name_any(),
            namespace: canary.namespace().unwrap_or_default(),
            target: format!("{}/{}", target.kind.as_str(), target.name),
            phase: status.phase.as_str().to_string(),
            canary_weight: status.canary_weight,
            iterations: status.iterations,
            failed_checks: status.failed_checks,
            threshold: canary.spec.analysis().map_or(0, |a| a.threshold()),
            revision: status.last_applied_spec.clone(),
            promoted: status.last_promoted_spec.clone(),
            planned: planned.iter().map(Planned::from).collect(),
            weights: weights(&events),
            events,
            metrics: status.metrics.clone().unwrap_or_default(),
            history: status.history.clone().unwrap_or_default(),
            generated,
        }
    }
}

impl Report {
    /// The summary's rows: what is released, where the release stands.
    pub fn summary(&self) -> [(&'static str, String); 7] {
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        [
            ("Target", self.target.clone()),
            ("Phase", self.phase.clone()),
            ("Canary weight", format!("{}%", self.canary_weight)),
            ("Iterations", self.iterations.to_string()),
            (
                "Failed checks",
                format!("{} of {}", self.failed_checks, self.threshold),
            ),
            ("Revision", or_dash(&self.revision)),
            ("Promoted revision", or_dash(&self.promoted)),
        ]
    }
}

impl From<&SimStep> for Planned {
    fn from(step: &SimStep) -> Planned {
        Planned {
            at_seconds: step.at_seconds,
            phase: step.phase.as_str().to_string(),
            canary_weight: step.canary_weight,
        }
    }
}

/// The Canary's own events, oldest first, the latest [`EVENTS_SHOWN`], messages bounded.
fn moments(canary: &Canary, events: Vec<Event>) -> Vec<Moment> {
    let uid = canary.uid();
    let mut moments: Vec<Moment> = events
        .into_iter()
        .filter(|e| e.involved_object.kind.as_deref() == Some("Canary"))
        .filter(|e| uid.is_none() || e.involved_object.uid == uid)
        .map(|e| Moment {
            time: event_time(&e),
            warning: e.type_.as_deref() == Some("Warning"),
            message: e
                .message
                .unwrap_or_default()
                .chars()
                .take(MESSAGE_CHARS)
                .collect(),
            count: e.count.unwrap_or(1).max(1),
        })
        .collect();
    moments.sort_by_key(|m| m.time);
    let excess = moments.len().saturating_sub(EVENTS_SHOWN);
    moments.drain(..excess);
    moments
}

/// When an event last happened: `lastTimestamp`, else `eventTime`, else its creation.
fn event_time(e: &Event) -> Option<DateTime<Utc>> {
    let jiff = e
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
    DateTime::from_timestamp_micros(jiff.as_microsecond())
}

/// The weights the events name (`... canary weight 20`), and 0 when a release ends.
fn weights(events: &[Moment]) -> Vec<(DateTime<Utc>, u32)> {
    events
        .iter()
        .filter_map(|m| {
            let time = m.time?;
            let weight = weight_in(&m.message).or_else(|| ends_release(&m.message).then_some(0));
            weight.map(|w| (time, w))
        })
        .collect()
}

fn weight_in(message: &str) -> Option<u32> {
    let (_, after) = message.split_once("canary weight ")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|w| *w <= 100)
}

fn ends_release(message: &str) -> bool {
    message.starts_with("Promotion completed!") || message.starts_with("Canary failed!")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    pub(crate) fn canary() -> Canary {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "u-1"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"interval": "1m", "threshold": 2, "stepWeight": 50, "maxWeight": 50}
            },
            "status": {"phase": "Succeeded", "lastAppliedSpec": "v2:aa", "lastPromotedSpec": "v2:aa",
                "metrics": [{"name": "error-rate", "value": 0.5, "thresholdMax": 1.0, "verdict": "pass"}],
                "history": [{"revision": "v2:aa", "outcome": "Succeeded",
                    "started": "2026-12-07T10:00:00Z", "ended": "2026-12-07T10:03:00Z"}]}
        }))
        .unwrap()
    }

    pub(crate) fn event(second: i64, warning: bool, message: &str, uid: &str) -> Event {
        let at = k8s_openapi::jiff::Timestamp::from_second(1_796_637_600 + second).unwrap();
        Event {
            involved_object: ObjectReference {
                kind: Some("Canary".into()),
                uid: Some(uid.into()),
                ..ObjectReference::default()
            },
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            message: Some(message.into()),
            last_timestamp: Some(Time(at)),
            ..Event::default()
        }
    }

    /// Fails naming the first of `expected` that `text` lacks.
    pub(crate) fn assert_contains_all(text: &str, expected: &[&str]) {
        for e in expected {
            assert!(text.contains(e), "{e:?} in\n{text}");
        }
    }

    pub(crate) fn report() -> Report {
        let events = vec![
            event(
                120,
                false,
                "Promotion completed! Scaling down podinfo.test",
                "u-1",
            ),
            event(
                0,
                false,
                "New revision detected! Scaling up podinfo.test",
                "u-1",
            ),
            event(60, false, "Advance podinfo.test canary weight 50", "u-1"),
            event(30, true, "another Canary's event", "u-2"),
        ];
        Report::new(&canary(), events, &[], DateTime::UNIX_EPOCH)
    }

    #[test]
    fn events_are_the_canarys_own_in_order_and_weights_follow_them() {
        let report = report();
        let messages: Vec<&str> = report.events.iter().map(|m| m.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "New revision detected! Scaling up podinfo.test",
                "Advance podinfo.test canary weight 50",
                "Promotion completed! Scaling down podinfo.test"
            ]
        );
        let weights: Vec<u32> = report.weights.iter().map(|(_, w)| *w).collect();
        assert_eq!(weights, [50, 0]);
        assert_eq!(
            (report.threshold, report.target.as_str()),
            (2, "Deployment/podinfo")
        );
        assert_eq!(report.history.len(), 1);
    }

    #[test]
    fn hostile_events_are_bounded() {
        let long = "x".repeat(10_000);
        let many: Vec<Event> = (0..1000).map(|i| event(i, false, &long, "u-1")).collect();
        let report = Report::new(&canary(), many, &[], DateTime::UNIX_EPOCH);
        assert_eq!(report.events.len(), EVENTS_SHOWN);
        assert!(
            report
                .events
                .iter()
                .all(|m| m.message.len() == MESSAGE_CHARS)
        );
        assert_eq!(weight_in("canary weight 1000"), None);
    }
}
