//! Decide: the engine's decision, running the probes (webhooks, metric analysis) it asks
//! for in between.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use serin_core::hash::spec_hash;
use serin_core::{Analysis, Gate, Probe, Probes};

use chrono::{DateTime, Utc};
use kube::runtime::controller::Action;
use serin_core::{Decision, Observation, Plan, Status, Step, decide};

use super::background::{Answer, Left, asked_in};
use super::{BLOCKED_RETRY, MAX_PROBES};
use crate::api::canary::MetricObservation;
use crate::api::{Canary, HookType};
use crate::controller::context::Context;
use crate::controller::probes::webhooks::{self, Call};
use crate::controller::runtime::slots;
use crate::workload::configs::Tracked;

/// The webhook payload's `checksum`: the revision and the tracked configs, hashed.
pub(super) fn webhook_checksum(tracked: &Tracked, revision: &str) -> String {
    spec_hash(&json!({"revision": revision}), &tracked.checksums)
}

/// How long a reconcile waits for a probe before leaving it to run in the background
/// (`background`): webhooks and metric queries answer within it as a rule, and a burst of
/// Canaries with hung webhooks (each holding a reconcile slot this long, once) delays the
/// others by a fraction of a second.
const INLINE_BUDGET: Duration = Duration::from_millis(500);
/// How soon a Canary whose probe runs in the background is looked at again.
const BACKGROUND_POLL: Duration = Duration::from_millis(500);

/// Runs one probe to its answer.
async fn ask(ctx: &Context, probe: Probe, at: Call<'_>, route: Option<&str>) -> Answer {
    let http = &ctx.http;
    let gate = |kind| async move { Answer::Gate(webhooks::gate(http, kind, at).await) };
    match probe {
        Probe::ConfirmRollout => gate(HookType::ConfirmRollout).await,
        Probe::PreRollout => gate(HookType::PreRollout).await,
        Probe::ConfirmTrafficIncrease => gate(HookType::ConfirmTrafficIncrease).await,
        Probe::ConfirmPromotion => gate(HookType::ConfirmPromotion).await,
        Probe::Rollback => Answer::Rollback(webhooks::rollback_requested(http, at).await),
        Probe::Analysis => match webhooks::rollout_checks(http, at).await {
            Err(reason) => Answer::Analysis(Analysis::Fail(reason), None),
            Ok(()) => {
                let (outcome, observations) =
                    crate::controller::probes::metrics::evaluate(ctx, at.canary, route).await;
                Answer::Analysis(outcome, observations)
            }
        },
    }
}

/// What the probes of one decision answered, for the status: the metric observations of
/// the analysis, when one ran, and each gate asked (its type, and why closed when it was).
#[derive(Debug, Default)]
pub(super) struct Answered {
    pub metrics: Option<Vec<MetricObservation>>,
    pub gates: Vec<(HookType, Option<String>)>,
}

/// Puts a probe's answer where the engine reads it.
fn record(probe: Probe, answer: Answer, probes: &mut Probes, answered: &mut Answered) {
    let mut gate = |kind: HookType, g: Gate| {
        let reason = match &g {
            Gate::Open => None,
            Gate::Closed { reason, .. } => Some(reason.clone()),
        };
        answered.gates.push((kind, reason));
        Some(g)
    };
    match (probe, answer) {
        (Probe::ConfirmRollout, Answer::Gate(g)) => {
            probes.confirm_rollout = gate(HookType::ConfirmRollout, g);
        }
        (Probe::PreRollout, Answer::Gate(g)) => {
            probes.pre_rollout = gate(HookType::PreRollout, g);
        }
        (Probe::ConfirmTrafficIncrease, Answer::Gate(g)) => {
            probes.confirm_traffic_increase = gate(HookType::ConfirmTrafficIncrease, g);
        }
        (Probe::ConfirmPromotion, Answer::Gate(g)) => {
            probes.confirm_promotion = gate(HookType::ConfirmPromotion, g);
        }
        (Probe::Rollback, Answer::Rollback(asked)) => probes.rollback = Some(asked),
        (Probe::Analysis, Answer::Analysis(outcome, observations)) => {
            probes.analysis = Some(outcome);
            answered.metrics = observations;
        }
        (probe, answer) => {
            tracing::error!(?probe, ?answer, "a probe answered another probe's question");
        }
    }
}

/// The answer to `probe`: from a task left running by an earlier reconcile of the same
/// state, or from a new one awaited for [`INLINE_BUDGET`]. `None`: it runs on, in the
/// background; look again soon.
async fn answer(
    ctx: &Arc<Context>,
    canary: &Arc<Canary>,
    probe: Probe,
    asked: &Asked<'_>,
) -> Option<Answer> {
    let uid = canary.metadata.uid.clone().unwrap_or_default();
    let mut task = match ctx.background.take(&uid, probe, &asked.state) {
        Left::Running => return None,
        Left::Finished(task) => task,
        Left::Nothing => {
            let (ctx, canary) = (ctx.clone(), canary.clone());
            let (phase, checksum) = (asked.phase, asked.checksum.to_string());
            let route = asked.route.map(str::to_string);
            tokio::spawn(async move {
                let at = Call::new(&canary, phase, &checksum);
                ask(&ctx, probe, at, route.as_deref()).await
            })
        }
    };
    match tokio::time::timeout(INLINE_BUDGET, &mut task).await {
        Ok(Ok(answer)) => Some(answer),
        // A probe that panicked: the reconcile's guard reports it on this Canary.
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(_)) => None,
        Err(_) => {
            tracing::debug!(?probe, "probe still running; left in the background");
            ctx.background.leave(&uid, probe, asked.state.clone(), task);
            None
        }
    }
}

/// What a probe is asked about.
struct Asked<'a> {
    phase: serin_core::Phase,
    checksum: &'a str,
    route: Option<&'a str>,
    /// [`asked_in`].
    state: String,
}

/// The engine's step, with the probes it asked for run in between (and what they answered,
/// for the status). `Err`: retry after the returned action, when
/// a probe runs on in the background or the engine asked for more probes than a decision can
/// need (a bug in the engine). `checksum`: the webhooks' payload's; `route`: the analysis'
/// `{{ route }}` when the target names it (a Knative Service's latest revision), read with
/// the target.
#[allow(clippy::too_many_arguments)]
pub(super) async fn decide_step(
    ctx: &Arc<Context>,
    canary: &Arc<Canary>,
    plan: &Plan,
    status: &Status,
    obs: &mut Observation,
    now: DateTime<Utc>,
    checksum: &str,
    route: Option<&str>,
) -> Result<(Step, Answered), Action> {
    let mut answered = Answered::default();
    let mut probes = 0;
    let asked = Asked {
        phase: status.phase,
        checksum,
        route,
        state: asked_in(status, checksum),
    };
    loop {
        match decide(plan, status, obs, now) {
            Decision::Step(step)
                if obs.queued.is_none()
                    && slots::starts_release(status.phase, step.status.phase) =>
            {
                // The release takes its slot now, or waits for one after all.
                match slots::claim(canary, status, ctx) {
                    None => return Ok((step, answered)),
                    Some(why) => obs.queued = Some(why),
                }
            }
            Decision::Step(step) => {
                tracing::debug!(phase = %step.status.phase, effects = step.effects.len(), "decided");
                return Ok((step, answered));
            }
            Decision::Probe(_) if probes >= MAX_PROBES => {
                tracing::error!("the engine asked for too many probes; retrying later");
                return Err(Action::requeue(
                    plan.interval.to_std().unwrap_or(BLOCKED_RETRY),
                ));
            }
            Decision::Probe(probe) => {
                probes += 1;
                let Some(found) = answer(ctx, canary, probe, &asked).await else {
                    return Err(Action::requeue(BACKGROUND_POLL));
                };
                record(probe, found, &mut obs.probes, &mut answered);
            }
        }
    }
}
