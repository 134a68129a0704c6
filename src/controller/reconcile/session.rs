//! Session affinity: the cookies a run pins users with, and the routing input carrying them.

use serin_core::{Phase, Plan, Routes, Strategy};

use crate::api::{Canary, CanaryStatus};
use crate::controller::context::Context;
use crate::controller::router::Input;
use crate::workload::primary::PRIMARY_SUFFIX;

pub(super) fn route_input<'a>(
    canary: &'a Canary,
    ctx: &'a Context,
    plan: &Plan,
    namespace: &'a str,
    routes: Routes,
    cookies: &'a Cookies,
) -> Input<'a> {
    let apex = canary.spec.service_name();
    Input {
        canary,
        namespace,
        apex,
        primary_service: format!("{apex}{PRIMARY_SUFFIX}"),
        canary_service: format!("{apex}-canary"),
        routes,
        ab_testing: matches!(plan.strategy, Strategy::AbTesting { .. }),
        canary_cookie: cookies.canary.as_deref(),
        primary_cookie: cookies.primary.as_deref(),
        options: &ctx.config.router,
    }
}

/// Session affinity cookies (`name=value`) of the current run, kept in the status so every
/// step and every restart pins users the same way. A run gets fresh values; the previous
/// run's canary cookie is kept so routers can expire it.
#[derive(Debug, Default)]
pub(super) struct Cookies {
    canary: Option<String>,
    primary: Option<String>,
    previous: Option<String>,
}

impl Cookies {
    pub(super) fn next(
        canary: &Canary,
        current: &CanaryStatus,
        next: &serin_core::Status,
    ) -> Cookies {
        let Some(affinity) = canary
            .spec
            .analysis()
            .and_then(|a| a.session_affinity.as_ref())
        else {
            return Cookies::default();
        };
        let running = matches!(
            next.phase,
            Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting | Phase::Finalising
        );
        if !running {
            // The run is over: its cookie becomes the previous one, to be expired.
            return Cookies {
                canary: None,
                primary: current.primary_session_affinity_cookie.clone(),
                previous: current
                    .session_affinity_cookie
                    .clone()
                    .or_else(|| current.previous_session_affinity_cookie.clone()),
            };
        }
        let fresh = |name: &str| {
            format!(
                "{name}={}",
                crate::controller::runtime::ids::fresh(canary, 10)
            )
        };
        // A primary cookie only when the Canary names one (Flagger's behaviour).
        let primary = affinity.primary_cookie_name.as_deref().map(|name| {
            current
                .primary_session_affinity_cookie
                .clone()
                .unwrap_or_else(|| fresh(name))
        });
        Cookies {
            canary: current
                .session_affinity_cookie
                .clone()
                .or_else(|| Some(fresh(&affinity.cookie_name))),
            primary,
            previous: current.previous_session_affinity_cookie.clone(),
        }
    }

    pub(super) fn record(&self, status: &mut CanaryStatus) {
        status.session_affinity_cookie = self.canary.clone();
        status.primary_session_affinity_cookie = self.primary.clone();
        status.previous_session_affinity_cookie = self.previous.clone();
    }
}
