//! A target that disappears mid-release (deleted, or the Canary renamed to one that does not
//! exist): the canary side of the split has no pods behind it any more.

use serin_core::{EventType, Plan, Routes};

use super::observe::current_status;
use super::session::{Cookies, route_input};
use crate::api::Canary;
use crate::controller::apply::routes::Routing;
use crate::controller::context::Context;
use crate::controller::error::Error;
use crate::controller::router::Router;

/// Routes all traffic to the primary when the live split still gives the missing target a
/// share, and says so once (the next look finds the split on the primary). The Canary then
/// waits, `TargetNotFound`, for its target; the release resumes when it is back.
pub(super) async fn route_to_primary(
    canary: &Canary,
    ctx: &Context,
    plan: &Plan,
    router: &dyn Router,
    namespace: &str,
) -> Result<(), Error> {
    let status = current_status(canary, ctx).engine();
    // Before initialization routing is not serin's; a Knative target is its own routing
    // object, gone with it.
    if status.last_promoted_spec.is_none() || canary.spec.is_knative_target() {
        return Ok(());
    }
    let cookies = Cookies::default();
    let input = route_input(canary, ctx, plan, namespace, Routes::PRIMARY, &cookies);
    let routing = Routing { ctx, canary };
    let Some(live) = routing.live_routes(router, &input).await? else {
        return Ok(());
    };
    if live.canary == 0 && !live.mirrored {
        return Ok(());
    }
    routing.route(router, &input, Some(live)).await?;
    let message = format!(
        "{target} not found: routed all traffic to {target_name}-primary (the canary had \
         {share}%{mirror}); the release goes on when {target} exists again",
        target = plan.target,
        target_name = canary.spec.target_ref.name,
        share = live.canary,
        mirror = if live.mirrored { " and a mirror" } else { "" },
    );
    ctx.events
        .publish(canary, EventType::Warning, &message)
        .await;
    Ok(())
}
