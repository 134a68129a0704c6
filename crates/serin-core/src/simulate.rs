//! The happy path of a release, step by step: the engine driven with every workload ready at
//! once and every gate and check passing. `serin plan` prints it; tests use it to assert
//! exact weight sequences. Pure, like the engine: time is simulated.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::Phase;
use crate::effect::{Effect, Routes};
use crate::engine::{Decision, Probe, decide};
use crate::observation::{Analysis, Gate, Observation};
use crate::plan::{Plan, PlanError};
use crate::status::Status;

/// One step of the release that changed something.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimStep {
    /// Seconds since the new revision was detected.
    pub at_seconds: i64,
    pub phase: Phase,
    pub canary_weight: u32,
    pub primary_weight: u32,
    pub mirrored: bool,
    pub iterations: u32,
    /// Probes (gates, analysis) run before this step.
    pub probes: Vec<Probe>,
    /// Events recorded at this step.
    pub events: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Simulation {
    pub steps: Vec<SimStep>,
    /// Minimum wall time from detection of a new revision to Succeeded, when every workload
    /// becomes ready instantly.
    pub min_duration_seconds: i64,
    /// Analysis runs (metric checks and rollout webhooks) before promotion: how many times
    /// each judged metric is asked whether the release is worse.
    pub analyses: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("the release did not finish within {0} decisions (stuck in {1})")]
    Stuck(usize, Phase),
}

/// Simulates one release of `plan` from an initialized canary to Succeeded.
pub fn happy_path(plan: &Plan) -> Result<Simulation, SimError> {
    plan.check()?;
    let start = DateTime::<Utc>::UNIX_EPOCH;
    let mut now = start;
    let mut status = Status {
        phase: Phase::Initialized,
        last_applied_spec: Some("v1".into()),
        last_promoted_spec: Some("v1".into()),
        last_transition_time: Some(start - TimeDelta::days(1)),
        ..Status::default()
    };
    let mut routes = Routes::PRIMARY;
    let mut steps = Vec::new();
    let mut analyses = 0;
    const LIMIT: usize = 10_000;
    for _ in 0..LIMIT {
        let mut obs = Observation::ready("v2");
        let mut probes = Vec::new();
        let step = loop {
            match decide(plan, &status, &obs, now) {
                Decision::Probe(p) => {
                    analyses += u32::from(p == Probe::Analysis);
                    probes.push(p);
                    answer(&mut obs, p);
                }
                Decision::Step(step) => break step,
            }
        };
        let events: Vec<String> = step
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Event { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect();
        if let Some(r) = step.effects.iter().find_map(|e| match e {
            Effect::SetRoutes(r) => Some(*r),
            _ => None,
        }) {
            routes = r;
        }
        let changed = step.status.phase != status.phase
            || step.status.canary_weight != status.canary_weight
            || step.status.iterations != status.iterations
            || step.status.mirrored != status.mirrored
            || !events.is_empty();
        if changed {
            steps.push(SimStep {
                at_seconds: (now - start).num_seconds(),
                phase: step.status.phase,
                canary_weight: routes.canary,
                primary_weight: routes.primary,
                mirrored: routes.mirrored,
                iterations: step.status.iterations,
                probes,
                events,
            });
        }
        status = step.status;
        if status.phase == Phase::Succeeded {
            return Ok(Simulation {
                steps,
                min_duration_seconds: (now - start).num_seconds(),
                analyses,
            });
        }
        // Workloads become ready instantly here, and the controller's watch on them wakes it
        // at once: a wait for readiness after a scale-up or a promotion costs nothing.
        let awaits_rollout = step
            .effects
            .iter()
            .any(|e| matches!(e, Effect::ScaleTargetUp | Effect::Promote));
        if !awaits_rollout {
            now += step.requeue;
        }
    }
    Err(SimError::Stuck(LIMIT, status.phase))
}

fn answer(obs: &mut Observation, probe: Probe) {
    let p = &mut obs.probes;
    match probe {
        Probe::ConfirmRollout => p.confirm_rollout = Some(Gate::Open),
        Probe::Rollback => p.rollback = Some(false),
        Probe::PreRollout => p.pre_rollout = Some(Gate::Open),
        Probe::Analysis => p.analysis = Some(Analysis::Pass),
        Probe::ConfirmTrafficIncrease => p.confirm_traffic_increase = Some(Gate::Open),
        Probe::ConfirmPromotion => p.confirm_promotion = Some(Gate::Open),
    }
}
