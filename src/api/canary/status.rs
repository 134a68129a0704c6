//! `Canary.status`: Flagger's fields (the durable state of a release) plus serin's additive
//! `observedGeneration` and `metrics`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serin_core::Phase;

use crate::api::common::{Condition, conditions_schema};

/// At most this many entries in `status.metrics` (one per metric of the analysis).
pub const STATUS_METRICS_MAX: usize = 64;

/// Observed state of a Canary. Written after every step, so a restarted controller resumes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::api::common::tidy_enums)]
pub struct CanaryStatus {
    /// Phase of the release: Initializing, Initialized, Waiting, Progressing,
    /// WaitingPromotion, Promoting, Finalising, Succeeded, Failed, Terminating, Terminated.
    #[serde(default)]
    pub phase: Phase,
    /// Failed checks of the current analysis.
    #[serde(default)]
    pub failed_checks: i32,
    /// Traffic weight (percent) routed to the new version.
    #[serde(default)]
    pub canary_weight: i32,
    /// Checks run so far (A/B testing, Blue/Green).
    #[serde(default)]
    pub iterations: i32,
    /// Checksums of the ConfigMaps and Secrets the target uses, by `configmap/<name>` or
    /// `secret/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_configs: Option<BTreeMap<String, String>>,
    /// Hash of the target's pod template seen last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_spec: Option<String>,
    /// Hash of the pod template the primary runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_spec: Option<String>,
    /// Change fence of the target's revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tracked_revision: Option<String>,
    /// When the status was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<DateTime<Utc>>,
    /// Session affinity cookie (`name=value`) of the current run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_cookie: Option<String>,
    /// Primary session affinity cookie (`name=value`) of the current run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_session_affinity_cookie: Option<String>,
    /// Session affinity cookie of the previous run, expired by the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_session_affinity_cookie: Option<String>,
    /// Conditions of this canary; `Promoted` follows the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Option<Vec<Condition>>,
    /// serin extension: traffic is mirrored to the canary. The routing serin declares follows
    /// from the status, never from what the mesh reports, so it survives restarts and drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrored: Option<bool>,
    /// serin extension: when the last time-gated step (analysis, gate check) ran; the next is
    /// due one analysis interval later, however often the controller wakes up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step_time: Option<DateTime<Utc>>,
    /// serin extension: what a `Waiting` release waits for when it is not an approval:
    /// `concurrency`, a release slot (the controller's `--max-progressing` or
    /// `--max-progressing-per-namespace`); releases take free slots in the order they began
    /// to wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// serin extension: the pod template hashes promoted before `lastPromotedSpec`, oldest
    /// first: as many as `analysis.rollbackWindow` keeps. A target set back to one of them is
    /// promoted again without analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20))]
    pub promoted_before: Option<Vec<String>>,
    /// serin extension: the `metadata.generation` of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// serin extension: the last value observed for each metric of the analysis, with its
    /// threshold and verdict (at most 64 entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub metrics: Option<Vec<MetricObservation>>,
    /// serin extension: the events and alerts of recent transitions not yet known to be
    /// delivered, by transition id. Written with the transition and removed once delivered,
    /// so a controller killed in between delivers them after its restart; event names derive
    /// from the id, so an event is never recorded twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announcements: Option<BTreeMap<String, Announcement>>,
    /// serin extension: the Canary's last releases, oldest first (at most 10): what each
    /// released, when it started and ended, and how. Kept in the status because events expire
    /// (an hour by default) while a release's outcome is wanted for longer, and a status field
    /// needs no object or permission beyond the Canary's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 10))]
    pub history: Option<Vec<ReleaseRecord>>,
    /// serin extension: each gate's last answer, by webhook type (`confirm-rollout`,
    /// `confirm-traffic-increase`, `confirm-promotion`, `pre-rollout`): open or closed, since
    /// when, and why closed. Written when a gate opens or closes (or says another reason),
    /// not at every look, so a gate held closed costs no write of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<BTreeMap<String, GateState>>,
}

/// Characters of a closed gate's reason kept in `status.gates`.
pub const GATE_REASON_CHARS: usize = 256;

/// serin extension: a gate's last answer in `status.gates`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateState {
    pub open: bool,
    /// Since when it has answered so.
    pub since: DateTime<Utc>,
    /// Which webhook said no, and why (at most 256 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl CanaryStatus {
    /// Records a gate's answer at `now`; `reason`: `None` when open.
    pub fn record_gate(&mut self, gate: &str, reason: Option<&str>, now: DateTime<Utc>) {
        let reason: Option<String> =
            reason.map(|r| match r.char_indices().nth(GATE_REASON_CHARS) {
                Some((at, _)) => format!("{}…", &r[..at]),
                None => r.to_string(),
            });
        let gates = self.gates.get_or_insert_with(BTreeMap::new);
        let open = reason.is_none();
        match gates.get_mut(gate) {
            Some(state) if state.open == open => state.reason = reason,
            _ => {
                gates.insert(
                    gate.to_string(),
                    GateState {
                        open,
                        since: now,
                        reason,
                    },
                );
            }
        }
    }
}

/// serin extension: one release in `status.history`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRecord {
    /// The released revision's hash (as `lastAppliedSpec`).
    pub revision: String,
    /// `Progressing` while it runs, then `Succeeded`, `Failed`, or `Superseded` (a newer
    /// revision restarted the release).
    pub outcome: String,
    /// When the release began (the new revision was detected).
    pub started: DateTime<Utc>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<DateTime<Utc>>,
    /// Why it failed: the rollback's event (at most 512 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// serin extension: what one transition tells people.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Announcement {
    /// Kubernetes events on the Canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<PendingEvent>>,
    /// Alerts to the Canary's alert providers (or the global notifier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<PendingAlert>>,
}

/// serin extension: an event to record.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingEvent {
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    pub message: String,
}

/// serin extension: an alert to send.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingAlert {
    /// `info`, `warn` or `error`.
    pub severity: String,
    pub message: String,
}

impl CanaryStatus {
    /// The part of the status the engine decides on.
    pub fn engine(&self) -> serin_core::Status {
        let count = |n: i32| n.max(0).unsigned_abs();
        serin_core::Status {
            phase: self.phase,
            failed_checks: count(self.failed_checks),
            canary_weight: count(self.canary_weight).min(100),
            iterations: count(self.iterations),
            mirrored: self.mirrored.unwrap_or(false),
            last_applied_spec: self.last_applied_spec.clone(),
            last_promoted_spec: self.last_promoted_spec.clone(),
            last_transition_time: self.last_transition_time,
            last_step_time: self.last_step_time,
            waiting_for: self
                .waiting_for
                .as_deref()
                .and_then(serin_core::WaitingFor::parse),
            promoted_before: self.promoted_before.clone().unwrap_or_default(),
        }
    }

    /// Records the engine's next status, keeping everything the engine does not own
    /// (conditions, tracked configs, cookies, metric observations).
    pub fn record(&mut self, next: &serin_core::Status) {
        let signed = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        self.phase = next.phase;
        self.failed_checks = signed(next.failed_checks);
        self.canary_weight = signed(next.canary_weight);
        self.iterations = signed(next.iterations);
        self.mirrored = next.mirrored.then_some(true);
        self.last_applied_spec = next.last_applied_spec.clone();
        self.last_promoted_spec = next.last_promoted_spec.clone();
        self.last_transition_time = next.last_transition_time;
        self.last_step_time = next.last_step_time;
        self.waiting_for = next.waiting_for.map(|w| w.as_str().to_string());
        self.promoted_before =
            (!next.promoted_before.is_empty()).then(|| next.promoted_before.clone());
    }
}

/// serin extension: the last observation of one metric check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricObservation {
    /// Name of the metric, as in `spec.analysis.metrics[].name`.
    pub name: String,
    /// Value returned by the query; absent when the query returned no data or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Minimum accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_min: Option<f64>,
    /// Maximum accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_max: Option<f64>,
    /// With a judge: the primary's mean over the same window (`value` is the canary's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// With a judge: the one-sided Mann-Whitney U test's p-value (canary worse than primary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Outcome of the check: pass, fail, noData or error.
    pub verdict: MetricVerdict,
    /// Why the check failed or had no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the value was observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    /// This release's analyses of the metric, oldest first, this one included (the last 30),
    /// so the release can be charted from the status alone: by `serin report` and by a
    /// dashboard started mid-release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 30))]
    pub analyses: Option<Vec<MetricAnalysis>>,
    /// With a judge: the samples this analysis compared, on the metric's scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<JudgedSamples>,
}

/// At most this many analyses per metric in `status.metrics[].analyses`.
pub const METRIC_ANALYSES_MAX: usize = 30;

/// At most this many samples a side in `status.metrics[].samples`: a longer series is
/// thinned to evenly spaced samples (a chart has no room for more).
pub const JUDGED_SAMPLES_MAX: usize = 60;

/// serin extension: one analysis of a metric in `status.metrics[].analyses`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricAnalysis {
    pub time: DateTime<Utc>,
    /// The value observed (with a judge, the canary's mean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// With a judge: the primary's mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// With a judge: the test's p-value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    pub verdict: MetricVerdict,
}

/// serin extension: what a judge compared in its last analysis (at most 60 samples a side).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JudgedSamples {
    /// The canary's samples over the window, oldest first.
    #[schemars(length(max = 60))]
    pub canary: Vec<f64>,
    /// The primary's samples over the same window.
    #[schemars(length(max = 60))]
    pub primary: Vec<f64>,
}

impl JudgedSamples {
    /// Both sides as `shown` maps them, each thinned to at most [`JUDGED_SAMPLES_MAX`]
    /// evenly spaced samples; values that are not finite (a provider's NaN) are left out, as
    /// JSON cannot hold them.
    pub fn of(canary: &[f64], primary: &[f64], shown: impl Fn(f64) -> f64) -> JudgedSamples {
        let side = |values: &[f64]| -> Vec<f64> {
            let finite: Vec<f64> = values
                .iter()
                .map(|v| shown(*v))
                .filter(|v| v.is_finite())
                .collect();
            let n = finite.len();
            if n <= JUDGED_SAMPLES_MAX {
                return finite;
            }
            (0..JUDGED_SAMPLES_MAX)
                .map(|i| finite[i * n / JUDGED_SAMPLES_MAX])
                .collect()
        };
        JudgedSamples {
            canary: side(canary),
            primary: side(primary),
        }
    }
}

impl MetricAnalysis {
    fn of(o: &MetricObservation, time: DateTime<Utc>) -> MetricAnalysis {
        MetricAnalysis {
            time,
            value: o.value,
            baseline: o.baseline,
            p_value: o.p_value,
            verdict: o.verdict,
        }
    }
}

impl MetricObservation {
    /// Takes over `previous`'s analyses (the last observation of the same metric) that belong
    /// to the release started at `release_started`, adds this one, and keeps the last
    /// [`METRIC_ANALYSES_MAX`]. A `previous` written before `analyses` existed counts as
    /// its own one analysis.
    pub fn carry_analyses(
        &mut self,
        previous: Option<&MetricObservation>,
        release_started: Option<DateTime<Utc>>,
    ) {
        let in_release = |t: DateTime<Utc>| release_started.is_none_or(|s| t >= s);
        let mut analyses = match previous {
            Some(p) => match (&p.analyses, p.time) {
                (Some(a), _) => a.clone(),
                (None, Some(time)) => vec![MetricAnalysis::of(p, time)],
                (None, None) => Vec::new(),
            },
            None => Vec::new(),
        };
        analyses.retain(|a| in_release(a.time));
        if let Some(time) = self.time.filter(|t| in_release(*t)) {
            // The same analysis written twice (a retried status write) counts once.
            analyses.retain(|a| a.time < time);
            analyses.push(MetricAnalysis::of(self, time));
        }
        let excess = analyses.len().saturating_sub(METRIC_ANALYSES_MAX);
        analyses.drain(..excess);
        self.analyses = (!analyses.is_empty()).then_some(analyses);
    }

    /// `name value range` for people: `request-success-rate 99.50 >= 99`, `latency no data
    /// <= 500`, `errors 3.00 in 0..5`.
    pub fn summary(&self) -> String {
        let value = self
            .value
            .map_or("no data".to_string(), |v| format!("{v:.2}"));
        let range = match (self.threshold_min, self.threshold_max) {
            (Some(min), Some(max)) => format!(" in {min}..{max}"),
            (Some(min), None) => format!(" >= {min}"),
            (None, Some(max)) => format!(" <= {max}"),
            (None, None) => String::new(),
        };
        format!("{} {value}{range}", self.name)
    }
}

/// Outcome of one metric check.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MetricVerdict {
    Pass,
    Fail,
    NoData,
    Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_status_round_trips_through_the_crd_status() {
        let t = DateTime::<Utc>::from_timestamp(1_700_000_000, 0);
        let engine = serin_core::Status {
            phase: Phase::Progressing,
            failed_checks: 2,
            canary_weight: 40,
            iterations: 1,
            mirrored: true,
            last_applied_spec: Some("v2:abc".into()),
            last_promoted_spec: Some("v2:def".into()),
            last_transition_time: t,
            last_step_time: t,
            waiting_for: Some(serin_core::WaitingFor::Concurrency),
            promoted_before: vec!["v1:abc".into()],
        };
        let mut status = CanaryStatus {
            tracked_configs: Some(BTreeMap::from([("configmap/a".into(), "01".into())])),
            ..CanaryStatus::default()
        };
        status.record(&engine);
        assert_eq!(status.engine(), engine);
        assert!(
            status.tracked_configs.is_some(),
            "fields the engine does not own are kept"
        );
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["mirrored"], true);
        assert_eq!(json["waitingFor"], "concurrency");
        assert_eq!(json["canaryWeight"], 40);
        let back: CanaryStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back.engine(), engine);
    }

    #[test]
    fn flagger_status_without_extensions_reads_as_not_mirrored() {
        let status: CanaryStatus = serde_json::from_value(serde_json::json!({
            "phase": "Progressing", "canaryWeight": 30, "failedChecks": -1
        }))
        .unwrap();
        let engine = status.engine();
        assert!(!engine.mirrored);
        assert_eq!(engine.canary_weight, 30);
        assert_eq!(engine.failed_checks, 0);
        assert_eq!(engine.last_step_time, None);
    }

    fn observed(second: u32, value: f64, verdict: MetricVerdict) -> MetricObservation {
        MetricObservation {
            name: "error-rate".into(),
            value: Some(value),
            threshold_min: None,
            threshold_max: Some(1.0),
            baseline: None,
            p_value: None,
            verdict,
            message: None,
            time: Some(at(second)),
            analyses: None,
            samples: None,
        }
    }

    fn at(second: u32) -> DateTime<Utc> {
        use chrono::TimeZone;
        Utc.with_ymd_and_hms(2026, 12, 7, 8, 0, second).unwrap()
    }

    fn values(o: &MetricObservation) -> Vec<(u32, Option<f64>)> {
        use chrono::Timelike;
        o.analyses
            .iter()
            .flatten()
            .map(|a| (a.time.second(), a.value))
            .collect()
    }

    #[test]
    fn each_observation_carries_the_analyses_of_its_release() {
        let started = Some(at(0));
        // A status written before `analyses` existed: its observation is one analysis.
        let legacy = observed(1, 0.1, MetricVerdict::Pass);
        let mut second = observed(2, 0.3, MetricVerdict::Fail);
        second.carry_analyses(Some(&legacy), started);
        assert_eq!(values(&second), [(1, Some(0.1)), (2, Some(0.3))]);
        assert_eq!(
            second.analyses.as_ref().unwrap()[1].verdict,
            MetricVerdict::Fail
        );
        // The same analysis written again counts once.
        let mut again = observed(2, 0.3, MetricVerdict::Fail);
        again.carry_analyses(Some(&second), started);
        assert_eq!(values(&again), values(&second));
        // A new release starts without the last release's analyses.
        let mut next = observed(9, 0.5, MetricVerdict::Pass);
        next.carry_analyses(Some(&second), Some(at(5)));
        assert_eq!(values(&next), [(9, Some(0.5))]);
        // A metric first seen now.
        let mut first = observed(3, 0.2, MetricVerdict::Pass);
        first.carry_analyses(None, started);
        assert_eq!(values(&first), [(3, Some(0.2))]);
    }

    #[test]
    fn analyses_are_bounded_to_the_latest() {
        let mut last: Option<MetricObservation> = None;
        for second in 0..(METRIC_ANALYSES_MAX as u32 + 10) {
            let mut o = observed(second, f64::from(second), MetricVerdict::Pass);
            o.carry_analyses(last.as_ref(), Some(at(0)));
            last = Some(o);
        }
        let kept = values(last.as_ref().unwrap());
        assert_eq!(kept.len(), METRIC_ANALYSES_MAX);
        assert_eq!(kept.last(), Some(&(39, Some(39.0))));
        assert_eq!(kept.first(), Some(&(10, Some(10.0))));
    }

    #[test]
    fn judged_samples_are_finite_bounded_and_evenly_thinned() {
        let long: Vec<f64> = (0..240).map(f64::from).collect();
        let s = JudgedSamples::of(&long, &[1.0, f64::NAN, 3.0], |v| 100.0 - v);
        assert_eq!(s.canary.len(), JUDGED_SAMPLES_MAX);
        assert_eq!(s.canary[..3], [100.0, 96.0, 92.0], "every fourth, mapped");
        assert_eq!(s.primary, [99.0, 97.0], "NaN left out");
        let json = serde_json::to_value(&s).unwrap();
        let back: JudgedSamples = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn a_gate_keeps_the_time_it_opened_or_closed() {
        let mut status = CanaryStatus::default();
        status.record_gate("confirm-promotion", Some("approve 403"), at(1));
        status.record_gate("confirm-promotion", Some("approve 403"), at(2));
        let closed = status.gates.as_ref().unwrap()["confirm-promotion"].clone();
        assert_eq!((closed.open, closed.since), (false, at(1)));
        status.record_gate("confirm-promotion", Some(&"x".repeat(1000)), at(3));
        let longer = status.gates.as_ref().unwrap()["confirm-promotion"].clone();
        assert_eq!(longer.since, at(1), "still closed, another reason");
        assert_eq!(
            longer.reason.unwrap().chars().count(),
            GATE_REASON_CHARS + 1
        );
        status.record_gate("confirm-promotion", None, at(4));
        let open = status.gates.as_ref().unwrap()["confirm-promotion"].clone();
        assert_eq!((open.open, open.since, open.reason), (true, at(4), None));
    }
}
