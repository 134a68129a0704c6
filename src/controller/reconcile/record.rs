//! Record: the status write, then what the step tells the world (events, alerts,
//! post-rollout hooks, metrics), and the condition and event of a Canary serin cannot run.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use serin_core::{ConditionStatus, Effect, EventType, Notify, Phase, Plan, Step};

use crate::api::{Canary, CanaryStatus};
use crate::controller::apply::MANAGER;
use crate::controller::caches::lean::{Lean, Meta};
use crate::controller::context::Context;
use crate::controller::error::{Error, Reason};
use crate::controller::notify::alerts;
use crate::controller::notify::outbox::{self, Deliveries};
use crate::controller::probes::webhooks::{self, Call};
use crate::controller::reconcile::conditions;
use crate::controller::runtime::telemetry::Outcome;

use super::BLOCKED_RETRY;
use super::decide::Answered;
use super::observe::current_status;
use super::session::Cookies;
use crate::workload::configs::Tracked;

/// Every reconcile's duration; Flagger's `flagger_canary_duration_seconds` for those of a
/// canary under analysis (not of a deleted one: its series are gone).
pub(super) fn record_duration(canary: &Canary, ctx: &Context, took: Duration) {
    let seconds = took.as_secs_f64();
    ctx.telemetry.reconciled(seconds);
    let analysing = canary.status.as_ref().is_some_and(|s| s.phase.is_active());
    if analysing && canary.metadata.deletion_timestamp.is_none() {
        let namespace = canary.namespace().unwrap_or_default();
        ctx.telemetry
            .duration(&namespace, &canary.spec.target_ref.name, seconds);
    }
}

pub(super) async fn write_status(
    canary: &Canary,
    ctx: &Context,
    status: &CanaryStatus,
) -> Result<(), Error> {
    let namespace = canary.namespace().unwrap_or_default();
    // Only the answer's resourceVersion is read (see `lean::Meta`).
    let api: Api<Meta<Canary>> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = canary.name_any();
    // After any removal of announcements in flight, and conditional on what it produced.
    let _turn = ctx.written.writing(&canary.uid().unwrap_or_default()).await;
    let mut body = json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": "Canary",
        "status": status,
    });
    // The apply is conditional on the copy the step was decided on, so that a status another
    // writer changed meanwhile (a deposed or a new leader) is not overwritten unseen.
    if let Some(version) = decided_on(canary, ctx) {
        body["metadata"] = json!({"resourceVersion": version});
    }
    let params = PatchParams::apply(MANAGER).force();
    let written = match api.patch_status(&name, &params, &Patch::Apply(&body)).await {
        Ok(written) => written,
        Err(e) => {
            let refused = Error::status_write(e);
            if !matches!(refused, Error::Stale(_)) {
                return Err(refused);
            }
            // The step's effects are applied already, and the status must record them
            // (left unrecorded, routes the step set would read as drift and be undone) unless
            // another writer changed the status: only then is the step decided again. A spec
            // edit, or serin's own outbox taking delivered announcements out, leaves it as
            // decided on.
            // The object, not its status subresource: serin's RBAC reads Canaries, and only
            // writes their status.
            let whole: Api<Lean<Canary>> = Api::namespaced(ctx.client.clone(), &namespace);
            let fresh = whole
                .get(&name)
                .await
                .map_err(|e| Error::kube("read Canary", e))?;
            if !same_apart_from_announcements(fresh.0.status.clone(), current_status(canary, ctx)) {
                return Err(refused);
            }
            body["metadata"] = json!({"resourceVersion": fresh.resource_version()});
            api.patch_status(&name, &params, &Patch::Apply(&body))
                .await
                .map_err(Error::status_write)?
        }
    };
    if let (Some(uid), Some(version)) = (
        canary.uid(),
        written
            .resource_version()
            .and_then(|v| v.parse::<u64>().ok()),
    ) {
        ctx.written.record(&uid, version, status.clone());
    }
    Ok(())
}

/// Whether the live status is the one a step was decided on, but for the announcements (which
/// serin's outbox takes out in the background once delivered).
fn same_apart_from_announcements(live: Option<CanaryStatus>, decided_on: CanaryStatus) -> bool {
    let without = |mut s: CanaryStatus| {
        s.announcements = None;
        s
    };
    without(live.unwrap_or_default()) == without(decided_on)
}

/// The resourceVersion a step is decided on: the cached Canary's, or that of serin's own
/// later status write when the cache has not caught up with it (`current_status` then
/// decides on that write's status, so the same copy). `None` when neither is known.
fn decided_on(canary: &Canary, ctx: &Context) -> Option<String> {
    let cached = canary.resource_version();
    let cached_version = cached.as_deref().and_then(|v| v.parse::<u64>().ok());
    let written = canary
        .uid()
        .and_then(|uid| ctx.written.newer_than(&uid, cached_version));
    match written {
        Some((version, _)) => Some(version.to_string()),
        None => cached,
    }
}

/// After the status is written: the announcements it holds (a transition's events and
/// alerts, and any a killed predecessor left undelivered) or, for a step that changed
/// nothing (a wait repeating itself), its events and alerts directly; the post-rollout
/// webhooks, then the Prometheus gauges and outcome counters.
pub(super) async fn after_status(
    canary: &Canary,
    ctx: &Context,
    plan: &Plan,
    step: &Step,
    checksum: &str,
    written: &CanaryStatus,
    transition: bool,
) {
    outbox::deliver(canary, ctx, plan, written).await;
    if !transition {
        tell_directly(canary, ctx, plan, step, written).await;
    }
    if step
        .effects
        .contains(&Effect::Webhooks(Notify::PostRollout))
    {
        post_rollout(canary, ctx, step, checksum).await;
    }
    record_outcome(canary, ctx, plan, step);
}

/// The events and alerts of a step that is not a transition: best effort, as they repeat
/// at the next look anyway.
async fn tell_directly(
    canary: &Canary,
    ctx: &Context,
    plan: &Plan,
    step: &Step,
    written: &CanaryStatus,
) {
    for effect in &step.effects {
        match effect {
            Effect::Event { kind, message } => ctx.events.publish(canary, *kind, message).await,
            Effect::Alert { severity, message } => {
                let alert = alerts::content::alert(
                    canary,
                    plan,
                    &step.status,
                    written.metrics.as_deref(),
                    ctx.config.cluster_name.as_deref(),
                    *severity,
                    message,
                );
                let routes = canary
                    .spec
                    .analysis()
                    .map(|a| a.alerts())
                    .unwrap_or_default();
                ctx.alerts.send(alert, routes);
            }
            _ => {}
        }
    }
}

/// Post-rollout webhooks: informational, each result an event.
async fn post_rollout(canary: &Canary, ctx: &Context, step: &Step, checksum: &str) {
    let at = Call {
        canary,
        phase: step.status.phase,
        checksum,
    };
    for (hook, outcome) in webhooks::notify(&ctx.http, at).await {
        let (kind, message) = match outcome {
            Ok(()) => (
                EventType::Normal,
                format!("Post-rollout check {hook} passed"),
            ),
            Err(reason) => (
                EventType::Warning,
                format!("Post-rollout check {hook} failed {reason}"),
            ),
        };
        ctx.events.publish(canary, kind, &message).await;
    }
}

/// `flagger_canary_status` and, when a release ends, `flagger_canary_total`.
fn record_outcome(canary: &Canary, ctx: &Context, plan: &Plan, step: &Step) {
    let namespace = canary.namespace().unwrap_or_default();
    let target = &canary.spec.target_ref.name;
    let code = match step.status.phase {
        Phase::Progressing => 0,
        Phase::Failed => 2,
        _ => 1,
    };
    ctx.telemetry.status(&namespace, target, code);
    let entered =
        |p: Phase| step.status.phase == p && canary.status.as_ref().map(|s| s.phase) != Some(p);
    let outcome = |outcome| {
        let status = match plan.skip_analysis {
            true => "skipped",
            false => "completed",
        };
        ctx.telemetry
            .outcome(&namespace, target, outcome, plan.strategy.label(), status);
    };
    if entered(Phase::Succeeded)
        && step
            .effects
            .iter()
            .any(|e| matches!(e, Effect::ScaleTargetToZero))
    {
        outcome(Outcome::Promoted);
    }
    if entered(Phase::Failed) && canary.status.as_ref().is_some_and(|s| s.phase.is_active()) {
        outcome(Outcome::Failed);
    }
}

/// At initialization: can the metric providers be reached? Only reported, never blocking
/// (a provider may come up after the workload), as Flagger does.
pub(super) async fn announce_metric_providers(canary: &Canary, ctx: &Context) {
    let has_metrics = canary
        .spec
        .analysis()
        .is_some_and(|a| !a.metrics().is_empty());
    if !has_metrics {
        return;
    }
    match ctx.analyzer.check_availability(canary).await {
        Ok(()) => {
            let message = "all the metrics providers are available!";
            ctx.events.publish(canary, EventType::Normal, message).await;
        }
        Err(reason) => {
            let message = format!("metrics provider unavailable: {reason}");
            ctx.events
                .publish(canary, EventType::Warning, &message)
                .await;
        }
    }
}

/// A Canary serin cannot run: a `Ready=False` condition and one Warning event per new
/// problem, both naming the field. Other Canaries are not affected.
pub(super) async fn blocked(
    canary: &Canary,
    ctx: &Context,
    reason: Reason,
    message: &str,
) -> Result<Action, Error> {
    let reason = reason.as_str();
    let now = ctx.config.clock.now();
    let mut status = current_status(canary, ctx);
    let mut list = status.conditions.take().unwrap_or_default();
    let changed = conditions::set(
        &mut list,
        conditions::READY,
        ConditionStatus::False,
        reason,
        message,
        now,
    );
    if status.phase == Phase::New {
        conditions::promoted(
            &mut list,
            Phase::New,
            canary.spec.target_ref.kind.as_str(),
            now,
        );
    }
    status.conditions = Some(list);
    if changed {
        tracing::warn!(reason, message, "canary blocked");
        write_status(canary, ctx, &status).await?;
        ctx.events
            .publish(canary, EventType::Warning, message)
            .await;
    }
    Ok(Action::requeue(BLOCKED_RETRY))
}

/// The status to write after a step: the engine's status over the last written one, with
/// the step's announcements, the tracked configs, the metrics of the analysis and the gates'
/// answers, the session cookies and the conditions.
#[allow(clippy::too_many_arguments)] // each is one part of the status; a struct would only rename them
pub(super) fn next_status(
    canary: &Canary,
    current: &CanaryStatus,
    step: &Step,
    tracked: &Tracked,
    answered: Answered,
    cookies: &Cookies,
    target_kind: &str,
    deliveries: &Deliveries,
    now: DateTime<Utc>,
) -> CanaryStatus {
    let transition = outbox::is_transition(step, current);
    let mut next = current.clone();
    next.record(&step.status);
    outbox::record(
        &mut next,
        &canary.uid().unwrap_or_default(),
        deliveries,
        outbox::next_transition_id(now),
        outbox::of_step(step).filter(|_| transition),
    );
    let mut history = next.history.take().unwrap_or_default();
    super::history::record(
        &mut history,
        current.phase,
        &step.status,
        &step.effects,
        now,
    );
    next.history = (!history.is_empty()).then_some(history);
    next.tracked_configs = (!tracked.checksums.is_empty()).then(|| tracked.checksums.clone());
    next.observed_generation = canary.metadata.generation;
    for (gate, reason) in &answered.gates {
        next.record_gate(gate.as_str(), reason.as_deref(), now);
    }
    if let Some(mut observations) = answered.metrics {
        let started = next
            .history
            .as_ref()
            .and_then(|h| h.last())
            .map(|r| r.started);
        for o in &mut observations {
            let previous = current.metrics.iter().flatten().find(|p| p.name == o.name);
            o.carry_analyses(previous, started);
        }
        next.metrics = Some(observations);
    }
    cookies.record(&mut next);
    let mut list = next.conditions.take().unwrap_or_default();
    conditions::promoted(&mut list, step.status.phase, target_kind, now);
    conditions::set(
        &mut list,
        conditions::READY,
        ConditionStatus::True,
        "Reconciled",
        "",
        now,
    );
    next.conditions = Some(list);
    next
}
