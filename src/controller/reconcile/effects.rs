//! Apply: the I/O of a step's effects on workloads, Services and routing objects (each write
//! idempotent, see `controller::apply`), in the order the engine gave them.

use serin_core::{Effect, EventType, Plan, Routes, Status, desired_routes};

use super::session::{Cookies, route_input};
use crate::controller::apply::Scope;
use crate::controller::error::Error;
use crate::controller::router::{Input, Router};

/// What the effects of one step work with.
pub(super) struct EffectsAt<'a> {
    pub scope: &'a Scope<'a>,
    pub router: &'a dyn Router,
    pub plan: &'a Plan,
    /// The status the step was decided from.
    pub status: &'a Status,
    pub canary_ready: bool,
    pub cookies: &'a Cookies,
}

pub(super) async fn apply_effects(at: &EffectsAt<'_>, effects: &[Effect]) -> Result<(), Error> {
    let scope = at.scope;
    for effect in effects {
        match effect {
            Effect::EnsurePrimary => scope.ensure_primary().await?,
            Effect::Promote => scope.promote().await?,
            Effect::ScaleTargetToZero => scope.scale_target_to_zero().await?,
            Effect::ScaleTargetUp => scope.scale_target_up().await?,
            Effect::SetRoutes(routes) => set_routes(at, *routes).await?,
            Effect::Revert => {
                scope.revert().await?;
                if scope.canary.spec.revert_on_deletion() {
                    let input = all_to_primary(at);
                    scope.routing().restore_routing(at.router, &input).await?;
                }
            }
            Effect::OrphanPrimary => {
                let input = all_to_primary(at);
                scope.orphan_primary(at.router, &input).await?;
            }
            Effect::Event { .. }
            | Effect::Alert { .. }
            | Effect::Webhooks(_)
            | Effect::RemoveFinalizer => {}
        }
    }
    Ok(())
}

/// The generated Services, then the split; routing edited by hand is put back and reported.
/// A StatefulSet under analysis first gets the canary's share of pods for the weight.
async fn set_routes(at: &EffectsAt<'_>, routes: Routes) -> Result<(), Error> {
    let (scope, plan) = (at.scope, at.plan);
    if scope.in_analysis {
        scope.update_pods_for_weight(routes.canary).await?;
    }
    scope.ensure_services().await?;
    let input = route_input(
        scope.canary,
        scope.ctx,
        plan,
        scope.namespace,
        routes,
        at.cookies,
    );
    let recorded = desired_routes(plan, at.status, at.canary_ready);
    let outcome = scope.routing().route(at.router, &input, recorded).await?;
    // Reported at once, not after the status write like the step's own events: the repair is
    // done, so a retry after a later failure finds nothing to report, and the event would be
    // lost.
    if let Some(found) = outcome.drift {
        let message = format!(
            "Routing of {} was changed outside serin (primary {}%, canary {}%); restored to \
             primary {}%, canary {}%",
            plan.canary, found.primary, found.canary, routes.primary, routes.canary
        );
        scope
            .ctx
            .events
            .publish(scope.canary, EventType::Warning, &message)
            .await;
    }
    let target = &scope.canary.spec.target_ref.name;
    scope
        .ctx
        .telemetry
        .weights(scope.namespace, target, routes.primary, routes.canary);
    Ok(())
}

/// The routing input with all traffic on the primary (a hand-back or an orphaned primary).
fn all_to_primary<'a>(at: &EffectsAt<'a>) -> Input<'a> {
    let scope = at.scope;
    route_input(
        scope.canary,
        scope.ctx,
        at.plan,
        scope.namespace,
        Routes::PRIMARY,
        at.cookies,
    )
}
