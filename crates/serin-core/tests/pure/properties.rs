//! Properties that hold for any valid plan and any sequence of observations.

use crate::common;

use chrono::TimeDelta;
use common::{run, t};
use proptest::prelude::*;
use serin_core::{
    Analysis, Command, Effect, Gate, Hooks, Observation, Phase, Plan, Probe, Probes, Readiness,
    Routes, Routing, Status, Stepping,
};

fn stepping() -> impl Strategy<Value = Stepping> {
    prop_oneof![
        (1u32..=100, 1u32..=100)
            .prop_map(|(step, max_weight)| Stepping::Linear { step, max_weight }),
        proptest::collection::btree_set(1u32..=100, 1..6).prop_map(|set| Stepping::List {
            weights: set.into_iter().collect()
        }),
    ]
}

fn strategy() -> impl Strategy<Value = serin_core::Strategy> {
    prop_oneof![
        (stepping(), any::<bool>())
            .prop_map(|(stepping, mirror)| serin_core::Strategy::Canary { stepping, mirror }),
        (1u32..5).prop_map(|iterations| serin_core::Strategy::AbTesting { iterations }),
        (1u32..5, any::<bool>()).prop_map(|(iterations, mirror)| serin_core::Strategy::BlueGreen {
            iterations,
            mirror
        }),
    ]
}

fn hooks() -> impl Strategy<Value = Hooks> {
    proptest::array::uniform6(any::<bool>()).prop_map(|h| Hooks {
        confirm_rollout: h[0],
        pre_rollout: h[1],
        confirm_traffic_increase: h[2],
        confirm_promotion: h[3],
        rollback: h[4],
        post_rollout: h[5],
    })
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        strategy(),
        any::<bool>(),
        1u32..6,
        0u32..60,
        hooks(),
        any::<bool>(),
        1i64..120,
    )
        .prop_map(
            |(strategy, selector, threshold, swp, hooks, skip, interval)| {
                let mut plan = Plan::example(Stepping::Linear {
                    step: 10,
                    max_weight: 100,
                });
                plan.routing =
                    if selector && matches!(strategy, serin_core::Strategy::BlueGreen { .. }) {
                        Routing::ServiceSelector
                    } else {
                        Routing::Weighted
                    };
                plan.strategy = strategy;
                plan.threshold = threshold;
                plan.step_weight_promotion = swp;
                plan.hooks = hooks;
                plan.skip_analysis = skip;
                plan.interval = TimeDelta::seconds(interval);
                plan.progress_deadline = TimeDelta::seconds(300);
                plan
            },
        )
}

fn readiness() -> impl Strategy<Value = Readiness> {
    prop_oneof![
        6 => Just(Readiness::Ready),
        1 => Just(Readiness::NotReady("rolling".into())),
        1 => Just(Readiness::Failed("ProgressDeadlineExceeded".into())),
        1 => Just(Readiness::Missing),
    ]
}

fn gate() -> impl Strategy<Value = Gate> {
    prop_oneof![4 => Just(Gate::Open), 1 => Just(Gate::closed("no"))]
}

fn analysis() -> impl Strategy<Value = Analysis> {
    prop_oneof![
        5 => Just(Analysis::Pass),
        2 => Just(Analysis::Fail("metric out of range".into())),
        1 => Just(Analysis::Hold("no data".into())),
    ]
}

/// Mostly no command; sometimes a person's (`serin promote|abort|retry`).
fn command() -> impl Strategy<Value = Option<Command>> {
    prop_oneof![
        12 => Just(None),
        1 => Just(Some(Command::Promote)),
        1 => Just(Some(Command::Abort)),
        1 => Just(Some(Command::Retry)),
    ]
}

/// One observation and how long after the previous one it comes.
fn observation() -> impl Strategy<Value = (Observation, i64)> {
    (
        readiness(),
        readiness(),
        prop_oneof![6 => Just("v2"), 1 => Just("v1"), 1 => Just("v3")],
        (gate(), any::<bool>(), gate(), analysis(), gate(), gate()),
        (0i64..200, command()),
    )
        .prop_map(
            |(target, primary, rev, (cr, rb, pre, an, cti, cp), (dt, command))| {
                let probes = Probes {
                    confirm_rollout: Some(cr),
                    rollback: Some(rb),
                    pre_rollout: Some(pre),
                    analysis: Some(an),
                    confirm_traffic_increase: Some(cti),
                    confirm_promotion: Some(cp),
                };
                let obs = Observation {
                    target,
                    primary,
                    revision: rev.to_string(),
                    deleting: false,
                    deletion_requested_at: None,
                    probes,
                    command,
                    queued: None,
                    group: None,
                };
                (obs, dt)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn invariants_hold_for_any_plan_and_observations(
        plan in plan(),
        observations in proptest::collection::vec(observation(), 1..60),
    ) {
        prop_assume!(plan.check().is_ok());
        let mut status = Status {
            phase: Phase::Initialized,
            last_applied_spec: Some("v1".into()),
            last_promoted_spec: Some("v1".into()),
            last_transition_time: Some(t(0)),
            ..Status::default()
        };
        let mut now = 0i64;
        for (obs, dt) in observations {
            now += dt;
            let r = run(&plan, &status, &obs, t(now));
            let prev = status.clone();
            let next = &r.step.status;

            for effect in &r.step.effects {
                if let Effect::SetRoutes(routes) = effect {
                    // Weights stay within 0..=100 and sum to 100.
                    prop_assert!(routes.primary <= 100 && routes.canary <= 100);
                    prop_assert_eq!(routes.primary + routes.canary, 100);
                    // No traffic, not even a mirror, to a canary that is not ready.
                    if !obs.target.is_ready() {
                        prop_assert_eq!(routes.canary, 0);
                        prop_assert!(!routes.mirrored);
                    }
                }
            }
            prop_assert!(next.canary_weight <= 100);

            // No promotion unless the latest checks passed, or a person said so.
            let asked = obs.command == Some(Command::Promote);
            if r.has(&Effect::Promote) && prev.phase.is_active() && !plan.skip_analysis && !asked {
                if plan.has_checks && r.probes.contains(&Probe::Analysis) {
                    prop_assert_eq!(obs.probes.analysis.clone(), Some(Analysis::Pass));
                }
                if r.probes.contains(&Probe::ConfirmPromotion) {
                    prop_assert_eq!(obs.probes.confirm_promotion.clone(), Some(Gate::Open));
                }
                prop_assert!(r.probes.contains(&Probe::Analysis)
                    || !plan.has_checks
                    || prev.phase == Phase::Progressing
                        && matches!(plan.strategy, serin_core::Strategy::BlueGreen { .. }),
                    "promotion without an analysis in {:?}", prev.phase);
            }

            // Reaching the failed-checks threshold routes all traffic to the primary.
            if matches!(prev.phase, Phase::Progressing | Phase::WaitingPromotion)
                && r.event_with("failed checks threshold reached")
            {
                prop_assert_eq!(next.phase, Phase::Failed);
                prop_assert_eq!(r.routes(), Some(Routes::PRIMARY));
                let routes = r.position(|e| matches!(e, Effect::SetRoutes(_)));
                let scale = r.position(|e| *e == Effect::ScaleTargetToZero);
                prop_assert!(routes < scale);
            }

            // Every decision after initialization declares the routes.
            prop_assert!(r.routes().is_some());
            // Failed checks only grow within a release.
            if next.phase == prev.phase && prev.phase == Phase::Progressing
                && next.last_applied_spec == prev.last_applied_spec {
                prop_assert!(next.failed_checks >= prev.failed_checks);
            }
            prop_assert!(r.step.requeue > TimeDelta::zero());
            status = r.step.status;
        }
    }

    #[test]
    fn every_valid_plan_finishes_its_happy_path(plan in plan()) {
        prop_assume!(plan.check().is_ok());
        let sim = serin_core::simulate::happy_path(&plan).unwrap();
        prop_assert_eq!(sim.steps.last().map(|s| s.phase), Some(Phase::Succeeded));
        if let serin_core::Strategy::Canary { stepping, .. } = &plan.strategy
            && !plan.skip_analysis
        {
            {
                let max = serin_core::weights::max_weight(stepping);
                let top = sim.steps.iter().map(|s| s.canary_weight).max().unwrap_or(0);
                prop_assert_eq!(top, max, "maxWeight is reached and never exceeded");
            }
        }
    }
}
