//! Decide: the engine's decision, running the probes (webhooks, metric analysis) it asks
//! for in between.

use serde_json::json;
use serin_core::hash::spec_hash;
use serin_core::{Analysis, Probe, Probes};

use chrono::{DateTime, Utc};
use kube::runtime::controller::Action;
use serin_core::{Decision, Observation, Plan, Status, Step, decide};

use super::{BLOCKED_RETRY, MAX_PROBES};
use crate::api::HookType;
use crate::api::canary::MetricObservation;
use crate::controller::context::Context;
use crate::controller::webhooks::{self, Call};
use crate::workload::configs::Tracked;

/// The webhook payload's `checksum`: the revision and the tracked configs, hashed.
pub(super) fn webhook_checksum(tracked: &Tracked, revision: &str) -> String {
    spec_hash(&json!({"revision": revision}), &tracked.checksums)
}

pub(super) async fn run_probe(
    ctx: &Context,
    probe: Probe,
    at: Call<'_>,
    route: Option<&str>,
    probes: &mut Probes,
    metrics: &mut Option<Vec<crate::api::canary::MetricObservation>>,
) {
    let http = &ctx.http;
    match probe {
        Probe::ConfirmRollout => {
            probes.confirm_rollout = Some(webhooks::gate(http, HookType::ConfirmRollout, at).await);
        }
        Probe::PreRollout => {
            probes.pre_rollout = Some(webhooks::gate(http, HookType::PreRollout, at).await);
        }
        Probe::ConfirmTrafficIncrease => {
            let gate = webhooks::gate(http, HookType::ConfirmTrafficIncrease, at).await;
            probes.confirm_traffic_increase = Some(gate);
        }
        Probe::ConfirmPromotion => {
            let gate = webhooks::gate(http, HookType::ConfirmPromotion, at).await;
            probes.confirm_promotion = Some(gate);
        }
        Probe::Rollback => probes.rollback = Some(webhooks::rollback_requested(http, at).await),
        Probe::Analysis => {
            let outcome = match webhooks::rollout_checks(http, at).await {
                Err(reason) => Analysis::Fail(reason),
                Ok(()) => {
                    let (outcome, observations) =
                        crate::controller::metric_analysis::evaluate(ctx, at.canary, route).await;
                    *metrics = observations;
                    outcome
                }
            };
            probes.analysis = Some(outcome);
        }
    }
}

/// The engine's step, with the probes it asked for run in between (and the metric
/// observations of the analysis, when one ran). `Err`: retry after the returned action, when
/// the engine asked for more probes than a decision can need (a bug in the engine).
/// `call`: the webhooks' payload; `route`: the analysis' `{{ route }}` when the target
/// names it (a Knative Service's latest revision), read with the target.
pub(super) async fn decide_step(
    ctx: &Context,
    plan: &Plan,
    status: &Status,
    obs: &mut Observation,
    now: DateTime<Utc>,
    call: Call<'_>,
    route: Option<&str>,
) -> Result<(Step, Option<Vec<MetricObservation>>), Action> {
    let mut metrics = None;
    let mut probes = 0;
    loop {
        match decide(plan, status, obs, now) {
            Decision::Step(step) => {
                tracing::debug!(phase = %step.status.phase, effects = step.effects.len(), "decided");
                return Ok((step, metrics));
            }
            Decision::Probe(_) if probes >= MAX_PROBES => {
                tracing::error!("the engine asked for too many probes; retrying later");
                return Err(Action::requeue(
                    plan.interval.to_std().unwrap_or(BLOCKED_RETRY),
                ));
            }
            Decision::Probe(probe) => {
                probes += 1;
                run_probe(ctx, probe, call, route, &mut obs.probes, &mut metrics).await;
            }
        }
    }
}
