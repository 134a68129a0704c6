//! One reconcile of one Canary: observe (from the caches) → decide (the pure engine, running
//! the probes it asks for) → apply the effects → write the status → publish events.
//!
//! The status is the only memory of a release. Effects are applied before it is written and
//! are idempotent, so a process killed anywhere in between redoes the same step on restart;
//! events and alerts are written into the status with the step and go out only after it is
//! written, so they are neither sent for a step that did not happen nor lost for one that
//! did (`controller::notify::outbox`).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use kube::runtime::controller::Action;
use serin_core::{Effect, EventType, Phase, Plan, Step};
use tracing::Instrument;

use crate::api::Canary;
use crate::canary_plan;
use crate::controller::apply::{Scope, primary_drift};
use crate::controller::context::Context;
use crate::controller::error::{Error, Reason};
use crate::controller::notify::outbox;
use crate::controller::router::{self, Router};

pub mod background;
pub mod commands;
pub mod conditions;
mod decide;
mod effects;
mod finalizer;
pub mod group;
pub mod history;
mod lost_target;
mod observe;
mod record;
mod session;
pub mod target;
#[cfg(test)]
mod tests;

use decide::{decide_step, webhook_checksum};
use effects::{EffectsAt, apply_effects};
use finalizer::{add_finalizer, let_go_keeping_primary, remove_finalizer};
use observe::{Observed, is_stale, is_stale_primary, observe, target_not_found};
use record::{
    after_status, announce_metric_providers, blocked, next_status, record_duration, write_status,
};
use session::Cookies;
use target::Target;

/// Flagger's finalizer name, so Canaries move between the two controllers.
pub const FINALIZER: &str = "finalizer.flagger.app";
/// How often a blocked Canary is looked at again (watches usually wake it sooner).
pub(super) const BLOCKED_RETRY: Duration = Duration::from_secs(30);
/// Probes per decision: one per gate and the analysis. More means a bug in the engine.
pub(super) const MAX_PROBES: usize = 8;

pub async fn reconcile(canary: Arc<Canary>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "canary",
        namespace = canary.namespace().unwrap_or_default(),
        name = canary.name_any()
    );
    let started = std::time::Instant::now();
    let _in_flight = ctx.telemetry.progress.begin();
    let result = contained(
        run(&canary, &ctx).instrument(span.clone()),
        RECONCILE_DEADLINE,
    )
    .instrument(span.clone())
    .await
    .map_err(Error::needing_a_human);
    record_duration(&canary, &ctx, started.elapsed());
    match result {
        Err(Error::Blocked { reason, message }) => {
            ctx.telemetry.reconcile_error(reason.as_str());
            blocked(&canary, &ctx, reason, &message)
                .instrument(span)
                .await
        }
        Ok(action) => {
            ctx.retries.reset(&canary.uid().unwrap_or_default());
            Ok(action)
        }
        other => other,
    }
}

/// The longest one reconcile may run: two of the longest hook calls. Beyond it the reconcile
/// is cancelled and retried, so that no Canary holds one of the controller's reconcile slots
/// (shared by every Canary) indefinitely.
pub(crate) const RECONCILE_DEADLINE: Duration =
    Duration::from_secs(2 * crate::controller::probes::webhooks::MAX_CALL_TIME.as_secs());

/// Runs one reconcile so that nothing in it can take the controller down or hold it: a panic
/// becomes this Canary's `Blocked` error with reason `InternalError` (a condition, a Warning
/// event and `serin_reconcile_errors_total{reason="InternalError"}`), and a reconcile past
/// `deadline` is cancelled. The Controller polls every reconcile in one task, so an
/// uncaught panic would end the releases of every Canary in the cluster.
async fn contained<F>(reconcile: F, deadline: Duration) -> Result<Action, Error>
where
    F: std::future::Future<Output = Result<Action, Error>>,
{
    use futures::FutureExt;
    let guarded = std::panic::AssertUnwindSafe(reconcile).catch_unwind();
    match tokio::time::timeout(deadline, guarded).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            let what = crate::analysis::provider::remote_text(&what);
            tracing::error!(panic = %what, "reconcile panicked; contained to this Canary");
            Err(Error::Blocked {
                reason: Reason::InternalError,
                message: format!(
                    "serin hit an internal error reconciling this Canary ({what}); the other \
                     Canaries are unaffected and this one is retried. Please report it with \
                     the controller's log"
                ),
            })
        }
        Err(_) => Err(Error::Deadline(deadline)),
    }
}

/// How soon a step whose status write was refused as stale is decided again.
const STALE_RETRY: Duration = Duration::from_millis(200);

/// Requeue policy for transient errors: per Canary, 1 s doubling to 5 minutes while the
/// errors go on (reset by the next reconcile that completes).
pub fn error_policy(canary: Arc<Canary>, error: &Error, ctx: Arc<Context>) -> Action {
    if let Error::Stale(_) = error {
        ctx.telemetry.stale_write();
        // Not a failure: the watch brings the newer copy within moments.
        tracing::debug!(
            namespace = canary.namespace().unwrap_or_default(),
            name = canary.name_any(),
            error = %error,
            "status decided on a stale copy; deciding again"
        );
        return Action::requeue(STALE_RETRY);
    }
    ctx.telemetry.reconcile_error(error.label());
    let delay = ctx.retries.next(&canary.uid().unwrap_or_default());
    tracing::warn!(
        namespace = canary.namespace().unwrap_or_default(),
        name = canary.name_any(),
        error = %error,
        kind = error.label(),
        retry_in = ?delay,
        "reconcile failed; retrying"
    );
    Action::requeue(delay)
}

/// What the spec and the annotations ask of this reconcile, before anything is read.
struct Intent {
    plan: Plan,
    requested: Option<commands::Requested>,
    router: Box<dyn Router>,
    deleting: bool,
}

async fn run(canary: &Arc<Canary>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let namespace = canary.namespace().unwrap_or_default();
    if !ctx.stores.ready() || !ctx.stores.cover(&namespace) {
        tracing::debug!("caches have not listed this namespace yet; retrying");
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    // A release group's members decide one at a time, each seeing the others' last writes.
    let _group = ctx.groups.lock(canary).await;
    let intent = match intent(canary, ctx, &namespace).await? {
        ControlFlow::Continue(intent) => intent,
        ControlFlow::Break(done) => return Ok(done),
    };
    let now = ctx.config.clock.now();
    let command = intent.requested.as_ref().and_then(|r| r.command);
    match observe(canary, ctx, &intent.plan, &namespace, now, command).await? {
        Some(seen) => step(canary, ctx, &intent, &namespace, seen, now).await,
        None => without_target(canary, ctx, &intent, &namespace).await,
    }
}

/// Both the target and its primary are gone. Deleting: nothing is left to hand back to, and
/// keeping the primary would leave what the user deleted running. Otherwise the routes go to
/// the primary's name and the Canary is blocked until its target is back.
async fn without_target(
    canary: &Canary,
    ctx: &Context,
    intent: &Intent,
    namespace: &str,
) -> Result<Action, Error> {
    if intent.deleting {
        return remove_finalizer(canary, ctx).await;
    }
    let router = intent.router.as_ref();
    lost_target::route_to_primary(canary, ctx, &intent.plan, router, namespace).await?;
    Err(target_not_found(canary, namespace))
}

/// One step of an observed Canary: decide it, apply its effects, write the status, tell people.
async fn step(
    canary: &Arc<Canary>,
    ctx: &Arc<Context>,
    intent: &Intent,
    namespace: &str,
    seen: Observed,
    now: DateTime<Utc>,
) -> Result<Action, Error> {
    let Observed {
        target,
        primary,
        selector,
        tracked,
        current,
        status,
        mut obs,
    } = seen;
    let plan = &intent.plan;

    // What to do.
    let checksum = webhook_checksum(&tracked, &obs.revision);
    let route = target.route();
    let decided = decide_step(ctx, canary, plan, &status, &mut obs, now, &checksum, route).await;
    let (step, answered) = match decided {
        Ok(decided) => decided,
        Err(retry) => return Ok(retry),
    };
    tracing::debug!(phase = %step.status.phase, effects = step.effects.len(), "decided");

    // Do it.
    let cookies = Cookies::next(canary, &current, &step.status);
    let scope = Scope {
        ctx,
        canary,
        namespace,
        target: &target,
        primary: primary.as_ref(),
        selector: selector.as_ref(),
        tracked: &tracked,
        in_analysis: matches!(
            step.status.phase,
            Phase::Progressing | Phase::WaitingPromotion
        ),
        partition_set: Default::default(),
    };
    let at = EffectsAt {
        scope: &scope,
        router: intent.router.as_ref(),
        plan,
        status: &status,
        canary_ready: obs.target.is_ready(),
        cookies: &cookies,
    };
    apply_effects(&at, &step.effects).await?;
    if !intent.deleting {
        repair_primary(&scope, &step).await?;
        roll_back_in_place(&scope, &step).await?;
    }

    // Remember it.
    let next = next_status(
        canary,
        &current,
        &step,
        &tracked,
        answered,
        &cookies,
        target.kind(),
        &ctx.deliveries,
        now,
    );
    if outbox::worth_writing(&next, &current) {
        write_status(canary, ctx, &next).await?;
        crate::controller::runtime::slots::freed(ctx, status.phase, step.status.phase);
    }
    if let Some(late) = step.late {
        ctx.telemetry.step_late(late.as_seconds_f64());
    }

    // Tell it.
    tell(canary, ctx, intent, &step, &status, &checksum, &next).await;
    if step.effects.contains(&Effect::RemoveFinalizer) {
        return remove_finalizer(canary, ctx).await;
    }
    Ok(Action::requeue(
        step.requeue.to_std().unwrap_or(Duration::from_secs(1)),
    ))
}

/// After the status is written: the step's events, alerts and metrics, the providers'
/// availability at initialization, and the command annotation once carried out.
async fn tell(
    canary: &Canary,
    ctx: &Context,
    intent: &Intent,
    step: &Step,
    before: &serin_core::Status,
    checksum: &str,
    next: &crate::api::CanaryStatus,
) {
    let plan = &intent.plan;
    let (was, transition) = (before.phase, step.status != *before);
    after_status(canary, ctx, plan, step, checksum, next, transition).await;
    if step.status.phase == Phase::Initialized && was.is_initial() && !plan.skip_analysis {
        announce_metric_providers(canary, ctx).await;
    }
    if let Some(requested) = intent
        .requested
        .as_ref()
        .filter(|r| commands::settled(r, was, step))
    {
        commands::consume(canary, ctx, requested, was).await;
    }
}

/// The finalizer, the plan from the spec, the commands and the router: `Break(action)` when
/// the reconcile ends here (a deleted Canary already released, or a spec that became
/// invalid while being deleted).
async fn intent(
    canary: &Canary,
    ctx: &Context,
    namespace: &str,
) -> Result<ControlFlow<Action, Intent>, Error> {
    let deleting = canary.metadata.deletion_timestamp.is_some();
    let has_finalizer = canary.finalizers().iter().any(|f| f == FINALIZER);
    if deleting && !has_finalizer {
        ctx.telemetry
            .forget(namespace, &canary.spec.target_ref.name);
        return Ok(ControlFlow::Break(Action::await_change()));
    }
    if !deleting && !has_finalizer {
        add_finalizer(canary, ctx).await?;
    }
    let mut plan = match canary_plan::from_canary(
        canary,
        ctx.config.mesh_provider,
        ctx.config.min_interval,
    ) {
        Ok(plan) => plan,
        // The hand-back needs routing, not the analysis: a Canary edited into an invalid
        // analysis and then deleted is handed back as a valid one would be.
        Err(problems) if deleting => match canary_plan::for_deletion(
            canary,
            ctx.config.mesh_provider,
            ctx.config.min_interval,
        ) {
            Ok(plan) => {
                let problems = describe(&problems);
                tracing::warn!(%problems, "deleted with an invalid spec; handing back by its routing");
                plan
            }
            Err(still) => {
                let why = format!("with an invalid spec ({})", describe(&still));
                return let_go_keeping_primary(canary, ctx, namespace, &why)
                    .await
                    .map(ControlFlow::Break);
            }
        },
        Err(problems) => return Err(blocked_by(Reason::InvalidSpec, &problems)),
    };
    // `serin pause` holds the Canary as `spec.suspend` does; a command waits until resumed.
    plan.suspend |= commands::paused(canary);
    let requested = commands::requested(canary, ctx).filter(|_| !plan.suspend && !deleting);
    if ctx.config.no_cross_namespace_refs && !deleting {
        let problems = crate::api::validate::cross_namespace_refs(canary);
        if !problems.is_empty() {
            return Err(blocked_by(Reason::CrossNamespaceRef, &problems));
        }
    }
    let provider = canary.spec.provider_or(ctx.config.mesh_provider);
    let router = router::for_provider(provider).map_err(|message| Error::Blocked {
        reason: Reason::ProviderNotSupported,
        message,
    })?;
    Ok(ControlFlow::Continue(Intent {
        plan,
        requested,
        router,
        deleting,
    }))
}

/// The primary runs what was promoted: a hand edit of its template is put back (unless this
/// step rewrote the primary anyway, or the cache has not seen serin's last write).
async fn repair_primary(scope: &Scope<'_>, step: &Step) -> Result<(), Error> {
    let rewritten = step
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Promote | Effect::EnsurePrimary));
    if rewritten {
        return Ok(());
    }
    let Some(p) = scope.primary else {
        return Ok(());
    };
    if is_stale_primary(scope.ctx, p) {
        return Ok(());
    }
    let Some(promoted) = primary_drift::drifted(p) else {
        return Ok(());
    };
    let name = scope.restore_primary_template(p, promoted).await?;
    let message = format!("{name} was changed outside serin; the promoted template is restored");
    scope
        .ctx
        .events
        .publish(scope.canary, EventType::Warning, &message)
        .await;
    Ok(())
}

/// A StatefulSet between releases runs no pod on a revision that was not promoted: after a
/// rollback, once its controller has seen the partition raised, the pods still on the new
/// revision are deleted and recreated on the current one (`apply::stateful_set`). Looked at
/// on every step at rest, so a deletion that failed or came too early is done at the next.
async fn roll_back_in_place(scope: &Scope<'_>, step: &Step) -> Result<(), Error> {
    let Target::StatefulSet(s) = scope.target else {
        return Ok(());
    };
    let at_rest = matches!(
        step.status.phase,
        Phase::Initialized | Phase::Succeeded | Phase::Failed
    );
    if !at_rest || is_stale(scope.ctx, scope.target) {
        return Ok(());
    }
    scope.roll_back_pods(s).await
}

/// The spec's problems as one `Blocked` error: each as `field: what to do`.
pub(super) fn blocked_by(reason: Reason, problems: &[crate::api::validate::Problem]) -> Error {
    let message = describe(problems);
    Error::Blocked { reason, message }
}

/// The spec's problems in one line: each as `field: what to do`.
fn describe(problems: &[crate::api::validate::Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}
