//! Test harness: runs `decide` to a step, answering every probe the engine asks for with
//! the result the test set in `obs.probes`, or a pass when the test set none.
#![allow(dead_code)]
use chrono::{DateTime, TimeDelta, Utc};
use serin_core::*;

pub fn t(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(365) + TimeDelta::seconds(secs)
}

pub struct Run {
    pub step: Step,
    pub probes: Vec<Probe>,
}

impl Run {
    pub fn phase(&self) -> Phase {
        self.step.status.phase
    }
    pub fn routes(&self) -> Option<Routes> {
        self.step.effects.iter().find_map(|e| match e {
            Effect::SetRoutes(r) => Some(*r),
            _ => None,
        })
    }
    pub fn has(&self, effect: &Effect) -> bool {
        self.step.effects.contains(effect)
    }
    pub fn position(&self, pred: impl Fn(&Effect) -> bool) -> Option<usize> {
        self.step.effects.iter().position(pred)
    }
    pub fn events(&self) -> Vec<&str> {
        self.step
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Event { message, .. } => Some(message.as_str()),
                _ => None,
            })
            .collect()
    }
    pub fn event_with(&self, needle: &str) -> bool {
        self.events().iter().any(|m| m.contains(needle))
    }
    pub fn alerts(&self) -> Vec<(Severity, &str)> {
        self.step
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Alert { severity, message } => Some((*severity, message.as_str())),
                _ => None,
            })
            .collect()
    }
}

pub fn run(plan: &Plan, status: &Status, obs: &Observation, now: DateTime<Utc>) -> Run {
    let mut obs = obs.clone();
    let given = std::mem::take(&mut obs.probes);
    let mut probes = Vec::new();
    for _ in 0..16 {
        match decide(plan, status, &obs, now) {
            Decision::Step(step) => return Run { step, probes },
            Decision::Probe(p) => {
                assert!(!probes.contains(&p), "probe {p:?} asked twice");
                probes.push(p);
                let o = &mut obs.probes;
                match p {
                    Probe::ConfirmRollout => {
                        o.confirm_rollout =
                            Some(given.confirm_rollout.clone().unwrap_or(Gate::Open))
                    }
                    Probe::Rollback => o.rollback = Some(given.rollback.unwrap_or(false)),
                    Probe::PreRollout => {
                        o.pre_rollout = Some(given.pre_rollout.clone().unwrap_or(Gate::Open))
                    }
                    Probe::Analysis => {
                        o.analysis = Some(given.analysis.clone().unwrap_or(Analysis::Pass))
                    }
                    Probe::ConfirmTrafficIncrease => {
                        o.confirm_traffic_increase =
                            Some(given.confirm_traffic_increase.clone().unwrap_or(Gate::Open))
                    }
                    Probe::ConfirmPromotion => {
                        o.confirm_promotion =
                            Some(given.confirm_promotion.clone().unwrap_or(Gate::Open))
                    }
                }
            }
        }
    }
    panic!("decide asked for more than 16 probes");
}

pub fn canary_plan() -> Plan {
    Plan::example(Stepping::Linear {
        step: 20,
        max_weight: 50,
    })
}

/// A canary in `phase`, initialized with "v1" promoted and `applied` as the last seen
/// revision, last progress and last step at t(0).
pub fn status(phase: Phase, applied: &str) -> Status {
    Status {
        phase,
        last_applied_spec: Some(applied.into()),
        last_promoted_spec: Some("v1".into()),
        last_transition_time: Some(t(0)),
        last_step_time: Some(t(0)),
        ..Status::default()
    }
}

/// A fixture scipy wrote (`scripts/fixtures/*.py`): scipy's version and the cases.
#[derive(serde::Deserialize)]
pub struct ScipyFixture<C> {
    pub scipy_version: String,
    pub cases: Vec<C>,
}

/// Reads `tests/pure/fixtures/<file>`.
pub fn scipy_fixture<C: serde::de::DeserializeOwned>(file: &str) -> ScipyFixture<C> {
    let path = format!("{}/tests/pure/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}
