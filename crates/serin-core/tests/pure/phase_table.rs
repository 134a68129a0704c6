//! One test per row of the phase transition table (Flagger's phases and their transitions), plus the cases where
//! serin deliberately differs from Flagger.

use crate::common;

use chrono::TimeDelta;
use common::*;
use serin_core::*;

fn ready(rev: &str) -> Observation {
    Observation::ready(rev)
}

#[test]
fn new_canary_creates_the_primary_and_touches_no_routing() {
    let plan = canary_plan();
    let mut obs = ready("v1");
    obs.primary = Readiness::Missing;
    let r = run(&plan, &Status::default(), &obs, t(0));
    assert_eq!(r.phase(), Phase::Initializing);
    assert!(r.has(&Effect::EnsurePrimary));
    assert_eq!(r.routes(), None, "no routing before the primary is ready");
    assert!(!r.has(&Effect::ScaleTargetToZero));
    // In Flagger's words and type, and not "not found" for the primary this step creates.
    assert!(r.has(&Effect::Event {
        kind: EventType::Warning,
        message:
            "podinfo-primary.test not ready: waiting for rollout to finish: creating it".into(),
    }));

    obs.primary = Readiness::NotReady("waiting for rollout to finish: 0 of 2 ...".into());
    let r = run(&plan, &Status::default(), &obs, t(0));
    assert_eq!(
        r.events(),
        ["podinfo-primary.test not ready: waiting for rollout to finish: 0 of 2 ..."]
    );
}

#[test]
fn initializing_with_ready_primary_becomes_initialized() {
    let plan = canary_plan();
    let status = Status {
        phase: Phase::Initializing,
        last_transition_time: Some(t(0)),
        ..Status::default()
    };
    let r = run(&plan, &status, &ready("v1"), t(3));
    assert_eq!(r.phase(), Phase::Initialized);
    assert_eq!(r.step.status.last_applied_spec.as_deref(), Some("v1"));
    assert_eq!(r.step.status.last_promoted_spec.as_deref(), Some("v1"));
    let routes = r.position(|e| matches!(e, Effect::SetRoutes(_))).unwrap();
    let scale = r.position(|e| *e == Effect::ScaleTargetToZero).unwrap();
    assert!(
        routes < scale,
        "apex must point at the primary before the target scales down"
    );
    assert_eq!(r.routes(), Some(Routes::PRIMARY));
    assert!(r.event_with("Initialization done! podinfo.test"));
    assert_eq!(
        r.alerts(),
        vec![(
            Severity::Info,
            "New Deployment detected, initialization completed."
        )]
    );
}

#[test]
fn initializing_waits_for_the_primary_then_fails_after_the_deadline() {
    let plan = canary_plan();
    let status = Status {
        phase: Phase::Initializing,
        last_transition_time: Some(t(0)),
        ..Status::default()
    };
    let mut obs = ready("v1");
    obs.primary = Readiness::NotReady("1 of 2 updated replicas available".into());
    let r = run(&plan, &status, &obs, t(30));
    assert_eq!(r.phase(), Phase::Initializing);
    assert!(r.step.requeue <= TimeDelta::seconds(5));

    let r = run(&plan, &status, &obs, t(601));
    assert_eq!(r.phase(), Phase::Failed);
    assert_eq!(
        r.routes(),
        None,
        "a failed initialization leaves routing alone"
    );
    assert!(
        !r.has(&Effect::ScaleTargetToZero),
        "the target keeps serving"
    );
    assert_eq!(r.alerts()[0].0, Severity::Error);
}

#[test]
fn failed_initialization_is_retried_by_a_new_target_revision() {
    let plan = canary_plan();
    let status = Status {
        phase: Phase::Failed,
        last_applied_spec: Some("v1".into()),
        last_transition_time: Some(t(0)),
        ..Status::default()
    };
    let r = run(&plan, &status, &ready("v1"), t(60));
    assert_eq!(r.phase(), Phase::Failed, "same revision: nothing to retry");
    let r = run(&plan, &status, &ready("v2"), t(60));
    assert_eq!(r.phase(), Phase::Initializing);
    assert!(r.has(&Effect::Promote));
}

#[test]
fn new_revision_starts_a_release_from_initialized_succeeded_or_failed() {
    let plan = canary_plan();
    for phase in [Phase::Initialized, Phase::Succeeded, Phase::Failed] {
        let mut status = status(phase, "v1");
        status.failed_checks = 3;
        let r = run(&plan, &status, &ready("v2"), t(1));
        assert_eq!(r.phase(), Phase::Progressing, "from {phase}");
        assert!(r.has(&Effect::ScaleTargetUp));
        assert_eq!(r.step.status.failed_checks, 0);
        assert_eq!(r.step.status.canary_weight, 0);
        assert_eq!(r.step.status.last_applied_spec.as_deref(), Some("v2"));
        assert!(r.event_with("New revision detected! Scaling up podinfo.test"));
        assert_eq!(r.routes(), Some(Routes::PRIMARY));
    }
}

#[test]
fn unchanged_revision_does_nothing() {
    let plan = canary_plan();
    for phase in [Phase::Initialized, Phase::Succeeded] {
        let r = run(&plan, &status(phase, "v1"), &ready("v1"), t(1));
        assert_eq!(r.phase(), phase);
        assert!(r.probes.is_empty());
        assert!(!r.has(&Effect::ScaleTargetUp));
    }
}

#[test]
fn failed_release_is_not_retried_by_reapplying_the_same_spec() {
    let plan = canary_plan();
    let r = run(&plan, &status(Phase::Failed, "v2"), &ready("v2"), t(100));
    assert_eq!(r.phase(), Phase::Failed);
    let r = run(&plan, &status(Phase::Failed, "v2"), &ready("v3"), t(100));
    assert_eq!(r.phase(), Phase::Progressing, "a changed template retries");
}

#[test]
fn confirm_rollout_gate_waits_then_proceeds() {
    let mut plan = canary_plan();
    plan.hooks.confirm_rollout = true;
    let mut obs = ready("v2");
    obs.probes.confirm_rollout = Some(Gate::closed("approval pending"));
    let r = run(&plan, &status(Phase::Succeeded, "v1"), &obs, t(60));
    assert_eq!(r.probes, vec![Probe::ConfirmRollout]);
    assert_eq!(r.phase(), Phase::Waiting);
    assert!(
        !r.has(&Effect::ScaleTargetUp),
        "nothing scales up before approval"
    );
    assert_eq!(
        r.alerts(),
        vec![(Severity::Warn, "Canary is waiting for approval.")]
    );

    let waiting = r.step.status.clone();
    // Not due again before one interval.
    let r = run(&plan, &waiting, &ready("v2"), t(70));
    assert!(r.probes.is_empty());
    assert_eq!(r.phase(), Phase::Waiting);
    // Still closed: stays Waiting, no second alert.
    let r = run(&plan, &waiting, &obs, t(121));
    assert_eq!(r.phase(), Phase::Waiting);
    assert!(r.alerts().is_empty());
    // Muted hooks do not alert.
    obs.probes.confirm_rollout = Some(Gate::Closed {
        reason: "x".into(),
        mute_alert: true,
    });
    let r = run(&plan, &status(Phase::Succeeded, "v1"), &obs, t(60));
    assert!(r.alerts().is_empty());
    // Approved.
    let r = run(&plan, &waiting, &ready("v2"), t(121));
    assert_eq!(r.phase(), Phase::Progressing);
    assert!(r.has(&Effect::ScaleTargetUp));
}

#[test]
fn a_release_without_a_slot_waits_its_turn_then_starts() {
    let mut plan = canary_plan();
    plan.hooks.confirm_rollout = true;
    let mut queued = ready("v2");
    queued.queued = Some("2 of 2 releases progressing".into());
    let r = run(&plan, &status(Phase::Succeeded, "v1"), &queued, t(60));
    assert_eq!(r.phase(), Phase::Waiting);
    assert_eq!(r.step.status.waiting_for, Some(WaitingFor::Concurrency));
    assert!(r.probes.is_empty(), "no approval asked before a slot");
    assert!(!r.has(&Effect::ScaleTargetUp), "nothing scales up");
    assert_eq!(r.routes(), Some(Routes::PRIMARY));
    assert_eq!(
        r.events(),
        ["Halt podinfo.test advancement waiting for a release slot: 2 of 2 releases progressing"]
    );
    assert_eq!(
        r.step.status.last_transition_time,
        Some(t(60)),
        "its place in line"
    );
    assert_eq!(r.step.status.last_applied_spec.as_deref(), Some("v1"));

    // Still no slot: no second event, the place in line kept.
    let waiting = r.step.status.clone();
    let r = run(&plan, &waiting, &queued, t(120));
    assert_eq!(r.phase(), Phase::Waiting);
    assert!(r.events().is_empty());
    assert_eq!(r.step.status.last_transition_time, Some(t(60)));

    // A slot: on to the approval, then the release; waiting for a slot is over.
    let mut free = ready("v2");
    free.probes.confirm_rollout = Some(Gate::Open);
    let r = run(&plan, &waiting, &free, t(180));
    assert_eq!(r.phase(), Phase::Progressing);
    assert!(r.has(&Effect::ScaleTargetUp));
    assert_eq!(r.step.status.waiting_for, None);
}

#[test]
fn a_queued_release_reverted_to_the_promoted_spec_is_cancelled() {
    let plan = canary_plan();
    let mut waiting = status(Phase::Waiting, "v1");
    waiting.waiting_for = Some(WaitingFor::Concurrency);
    let r = run(&plan, &waiting, &ready("v1"), t(60));
    assert_eq!(r.phase(), Phase::Succeeded);
    assert_eq!(r.step.status.waiting_for, None);
}

#[test]
fn waiting_canary_reverted_to_the_promoted_spec_cancels() {
    let mut plan = canary_plan();
    plan.hooks.confirm_rollout = true;
    let r = run(&plan, &status(Phase::Waiting, "v1"), &ready("v1"), t(60));
    assert_eq!(r.phase(), Phase::Succeeded);
    assert!(r.probes.is_empty());
}

#[test]
fn first_analysis_step_runs_pre_rollout_then_steps() {
    let mut plan = canary_plan();
    plan.hooks.pre_rollout = true;
    let mut s = status(Phase::Progressing, "v2");
    s.last_step_time = None;
    let r = run(&plan, &s, &ready("v2"), t(5));
    assert_eq!(r.probes, vec![Probe::PreRollout]);
    assert!(r.event_with("Starting canary analysis for podinfo.test"));
    assert_eq!(r.step.status.canary_weight, 20);
    assert_eq!(r.routes(), Some(Routes::canary(20)));
    assert!(r.event_with("Advance podinfo.test canary weight 20"));
}

#[test]
fn pre_rollout_failure_counts_a_failed_check() {
    let mut plan = canary_plan();
    plan.hooks.pre_rollout = true;
    let mut obs = ready("v2");
    obs.probes.pre_rollout = Some(Gate::closed("load tester down"));
    let r = run(&plan, &status(Phase::Progressing, "v2"), &obs, t(60));
    assert_eq!(r.step.status.failed_checks, 1);
    assert_eq!(r.step.status.canary_weight, 0);
    assert_eq!(r.phase(), Phase::Progressing);
}

#[test]
fn analysis_steps_are_time_gated() {
    let plan = canary_plan();
    let mut s = status(Phase::Progressing, "v2");
    s.canary_weight = 20;
    let r = run(&plan, &s, &ready("v2"), t(30));
    assert!(
        r.probes.is_empty(),
        "no analysis before the interval has passed"
    );
    assert_eq!(r.step.status, s);
    assert_eq!(r.step.requeue, TimeDelta::seconds(30));
    assert_eq!(
        r.routes(),
        Some(Routes::canary(20)),
        "routes are re-asserted anyway"
    );
    let r = run(&plan, &s, &ready("v2"), t(60));
    assert_eq!(r.probes, vec![Probe::Analysis]);
    assert_eq!(r.step.status.canary_weight, 40);
}

#[test]
fn a_step_says_how_late_it_ran_against_its_due_time() {
    let plan = canary_plan();
    let mut s = status(Phase::Progressing, "v2");
    s.canary_weight = 20;
    let not_due = run(&plan, &s, &ready("v2"), t(30));
    assert_eq!(not_due.step.late, None, "no step ran");
    let on_time = run(&plan, &s, &ready("v2"), t(60));
    assert_eq!(on_time.step.late, Some(TimeDelta::zero()));
    let late = run(&plan, &s, &ready("v2"), t(63));
    assert_eq!(late.step.late, Some(TimeDelta::seconds(3)));

    s.last_step_time = None;
    let first = run(&plan, &s, &ready("v2"), t(63));
    assert_eq!(first.step.late, None, "the first step has no due time");
    assert_eq!(first.step.status.canary_weight, 40);

    let mut promoting = status(Phase::Promoting, "v2");
    promoting.canary_weight = 50;
    let mut promotion_plan = canary_plan();
    promotion_plan.step_weight_promotion = 25;
    let r = run(&promotion_plan, &promoting, &ready("v2"), t(61));
    assert_eq!(
        r.step.late,
        Some(TimeDelta::seconds(1)),
        "promotion steps too"
    );
}

#[test]
fn new_revision_during_analysis_restarts_it() {
    let plan = canary_plan();
    for phase in [Phase::Progressing, Phase::WaitingPromotion] {
        let mut s = status(phase, "v2");
        s.canary_weight = 40;
        s.failed_checks = 2;
        let r = run(&plan, &s, &ready("v3"), t(10));
        assert_eq!(r.phase(), Phase::Progressing);
        assert_eq!(r.step.status.canary_weight, 0);
        assert_eq!(r.step.status.failed_checks, 0);
        assert_eq!(r.step.status.last_applied_spec.as_deref(), Some("v3"));
        assert_eq!(r.routes(), Some(Routes::PRIMARY));
        assert!(r.event_with("Restarting analysis for podinfo.test"));
    }
}

#[test]
fn rollback_to_the_promoted_spec_during_analysis_runs_no_analysis() {
    let plan = canary_plan();
    let mut s = status(Phase::Progressing, "v2");
    s.canary_weight = 40;
    let r = run(&plan, &s, &ready("v1"), t(60));
    assert!(r.probes.is_empty());
    assert_eq!(r.phase(), Phase::Succeeded);
    assert_eq!(r.routes(), Some(Routes::PRIMARY));
    assert!(r.has(&Effect::ScaleTargetToZero));
    assert!(!r.has(&Effect::Promote));
}

#[test]
fn failed_checks_reaching_the_threshold_roll_back_at_once() {
    let plan = canary_plan(); // threshold 5
    let mut s = status(Phase::Progressing, "v2");
    s.canary_weight = 40;
    s.failed_checks = 4;
    let mut obs = ready("v2");
    obs.probes.analysis = Some(Analysis::Fail("request-success-rate 91.2 < 99".into()));
    let r = run(&plan, &s, &obs, t(60));
    assert_eq!(r.phase(), Phase::Failed);
    assert!(r.event_with("Rolling back podinfo.test failed checks threshold reached 5"));
    // Back to zero as Flagger writes a failed release's status.
    assert_eq!(r.step.status.failed_checks, 0);
    assert_eq!(r.step.status.canary_weight, 0);
    assert_eq!(r.routes(), Some(Routes::PRIMARY));
    let routes = r.position(|e| matches!(e, Effect::SetRoutes(_))).unwrap();
    let scale = r.position(|e| *e == Effect::ScaleTargetToZero).unwrap();
    assert!(routes < scale);
    assert!(r.event_with("Rolling back podinfo.test failed checks threshold reached 5"));
    assert!(r.event_with("Canary failed! Scaling down podinfo.test"));
    assert!(
        r.alerts()
            .contains(&(Severity::Error, "Failed checks threshold reached 5"))
    );
}

#[test]
fn a_failed_check_below_the_threshold_halts_the_step() {
    let plan = canary_plan();
    let mut s = status(Phase::Progressing, "v2");
    s.canary_weight = 20;
    let mut obs = ready("v2");
    obs.probes.analysis = Some(Analysis::Fail("success rate 69.17% < 99%".into()));
    let r = run(&plan, &s, &obs, t(60));
    assert_eq!(r.phase(), Phase::Progressing);
    assert_eq!(r.step.status.failed_checks, 1);
    assert_eq!(r.step.status.canary_weight, 20);
    // Exactly Flagger's text, which alert rules and dashboards match.
    assert!(r.event_with("Halt podinfo.test advancement success rate 69.17% < 99%"));
}

#[test]
fn a_check_without_data_halts_in_flaggers_words() {
    let plan = canary_plan();
    let mut s = status(Phase::Progressing, "v2");
    s.canary_weight = 20;
    let mut obs = ready("v2");
    let reason = "no values found for prometheus metric request-success-rate probably \
                  podinfo.test is not receiving traffic: the query returned no series";
    obs.probes.analysis = Some(Analysis::Fail(reason.into()));
    let r = run(&plan, &s, &obs, t(60));
    assert_eq!(r.step.status.failed_checks, 1);
    assert!(r.event_with(&format!("Halt advancement {reason}")));
}

#[test]
fn lowered_threshold_rolls_back_on_the_next_step() {
    let mut plan = canary_plan();
    plan.threshold = 2;
    let mut s = status(Phase::Progressing, "v2");
    s.canary_weight = 20;
    s.failed_checks = 3;
    let r = run(&plan, &s, &ready("v2"), t(60));
    assert_eq!(r.phase(), Phase::Failed);
}

#[test]
fn canary_progress_deadline_rolls_back_with_an_alert() {
    let plan = canary_plan();
    let mut s = status(Phase::Progressing, "v2");
    s.canary_weight = 20;
    let mut obs = ready("v2");
    obs.target = Readiness::NotReady("0 of 2 updated replicas available".into());
    let r = run(&plan, &s, &obs, t(100));
    assert_eq!(r.phase(), Phase::Progressing, "waits within the deadline");
    assert_eq!(
        r.routes(),
        Some(Routes::PRIMARY),
        "no traffic to an unready canary"
    );
    assert_eq!(
        r.step.status.canary_weight, 20,
        "the recorded weight is kept"
    );
    assert!(
        r.has(&Effect::ScaleTargetUp),
        "a canary scaled down by a rollback cut short is started again"
    );
    let r = run(&plan, &s, &obs, t(601));
    assert_eq!(r.phase(), Phase::Failed);
    assert!(
        !r.has(&Effect::ScaleTargetUp),
        "a rollback scales the canary down, not up"
    );
    assert!(
        r.alerts()
            .iter()
            .any(|(s, m)| *s == Severity::Error && m.contains("deadline"))
    );

    obs.target = Readiness::Failed("ProgressDeadlineExceeded".into());
    let r = run(&plan, &s, &obs, t(100));
    assert_eq!(
        r.phase(),
        Phase::Failed,
        "a failed rollout rolls back at once"
    );
}

#[test]
fn primary_failure_during_analysis_rolls_back() {
    let plan = canary_plan();
    let mut obs = ready("v2");
    obs.primary = Readiness::Failed("ProgressDeadlineExceeded".into());
    let r = run(&plan, &status(Phase::Progressing, "v2"), &obs, t(60));
    assert_eq!(r.phase(), Phase::Failed);
}

#[test]
fn rollback_webhook_rolls_back() {
    let mut plan = canary_plan();
    plan.hooks.rollback = true;
    let mut s = status(Phase::Progressing, "v2");
    s.canary_weight = 40;
    let mut obs = ready("v2");
    obs.probes.rollback = Some(true);
    let r = run(&plan, &s, &obs, t(60));
    assert_eq!(r.probes, vec![Probe::Rollback]);
    assert_eq!(r.phase(), Phase::Failed);
    assert!(r.event_with("Rolling back podinfo.test manual webhook invoked"));
    assert!(
        r.alerts()
            .contains(&(Severity::Warn, "Rolling back manual webhook invoked"))
    );
}

#[test]
fn canary_at_max_weight_promotes_after_confirm_promotion() {
    let mut plan = canary_plan();
    plan.hooks.confirm_promotion = true;
    let mut s = status(Phase::Progressing, "v2");
    s.canary_weight = 50;
    let r = run(&plan, &s, &ready("v2"), t(60));
    assert_eq!(r.probes, vec![Probe::Analysis, Probe::ConfirmPromotion]);
    assert_eq!(r.phase(), Phase::Promoting);
    assert!(r.has(&Effect::Promote));
    assert!(r.event_with("Copying podinfo.test template spec to podinfo-primary.test"));
    assert_eq!(
        r.routes(),
        Some(Routes::canary(50)),
        "traffic stays until the primary is ready"
    );
}

#[test]
fn a_target_released_in_place_is_promoted_without_a_copy() {
    let mut plan = canary_plan();
    plan.target_kind = "StatefulSet".into();
    let mut s = status(Phase::Progressing, "v2");
    s.canary_weight = 50;
    let r = run(&plan, &s, &ready("v2"), t(60));
    assert_eq!(r.phase(), Phase::Promoting);
    assert!(r.has(&Effect::Promote));
    assert!(r.event_with("Releasing every pod of podinfo.test to the new revision"));
    assert!(!r.event_with("Copying"));
    // Initializing: the target itself is what must be ready, not a `-primary` copy.
    let mut obs = ready("v1");
    obs.primary = Readiness::NotReady("waiting for rollout to finish".into());
    let r = run(&plan, &status(Phase::New, ""), &obs, t(60));
    assert!(r.event_with("podinfo.test not ready: waiting for rollout to finish"));
    assert!(!r.event_with("podinfo-primary"));
}

#[test]
fn closed_confirm_promotion_waits_and_keeps_analysing() {
    let mut plan = canary_plan();
    plan.hooks.confirm_promotion = true;
    let mut s = status(Phase::Progressing, "v2");
    s.canary_weight = 50;
    let mut obs = ready("v2");
    obs.probes.confirm_promotion = Some(Gate::closed("not yet"));
    let r = run(&plan, &s, &obs, t(60));
    assert_eq!(r.phase(), Phase::WaitingPromotion);
    assert_eq!(
        r.step.status.canary_weight, 50,
        "serin keeps the routed weight"
    );
    assert!(
        r.alerts()
            .contains(&(Severity::Warn, "Canary promotion is waiting for approval."))
    );

    let waiting = r.step.status.clone();
    let r = run(&plan, &waiting, &ready("v2"), t(120));
    assert_eq!(r.phase(), Phase::Promoting);

    let mut failing = obs.clone();
    failing.probes.analysis = Some(Analysis::Fail("bad".into()));
    let mut w = waiting.clone();
    w.failed_checks = 4;
    let r = run(&plan, &w, &failing, t(120));
    assert_eq!(
        r.phase(),
        Phase::Failed,
        "the threshold still applies while waiting"
    );
}

#[test]
fn confirm_traffic_increase_holds_the_weight_without_failing() {
    let mut plan = canary_plan();
    plan.hooks.confirm_traffic_increase = true;
    let mut s = status(Phase::Progressing, "v2");
    s.canary_weight = 20;
    let mut obs = ready("v2");
    obs.probes.confirm_traffic_increase = Some(Gate::closed("hold"));
    let r = run(&plan, &s, &obs, t(60));
    assert_eq!(r.phase(), Phase::Progressing);
    assert_eq!(r.step.status.canary_weight, 20);
    assert_eq!(r.step.status.failed_checks, 0);
    assert!(r.alerts().contains(&(
        Severity::Warn,
        "Canary traffic increase is waiting for approval."
    )));
}

#[test]
fn ab_testing_promotes_after_its_iterations() {
    let mut plan = canary_plan();
    plan.strategy = Strategy::AbTesting { iterations: 3 };
    let mut s = status(Phase::Progressing, "v2");
    s.iterations = 2;
    let r = run(&plan, &s, &ready("v2"), t(60));
    assert_eq!(r.step.status.iterations, 3);
    assert_eq!(
        r.routes(),
        Some(Routes::CANARY),
        "matching requests go to the canary"
    );
    assert!(r.event_with("Advance podinfo.test canary iteration 3/3"));
    let r = run(&plan, &r.step.status, &ready("v2"), t(120));
    assert_eq!(r.phase(), Phase::Promoting);
    assert!(r.has(&Effect::Promote));
}

#[test]
fn blue_green_routes_all_traffic_to_the_canary_for_one_interval_then_promotes() {
    let mut plan = canary_plan();
    plan.strategy = Strategy::BlueGreen {
        iterations: 2,
        mirror: true,
    };
    let mut s = status(Phase::Progressing, "v2");
    s.last_step_time = None;
    let r = run(&plan, &s, &ready("v2"), t(1));
    assert_eq!(r.step.status.iterations, 1);
    assert!(r.step.status.mirrored);
    assert_eq!(
        r.routes(),
        Some(Routes {
            primary: 100,
            canary: 0,
            mirrored: true
        })
    );
    let r = run(&plan, &r.step.status, &ready("v2"), t(61));
    assert_eq!(r.step.status.iterations, 2);
    let r = run(&plan, &r.step.status, &ready("v2"), t(121));
    assert_eq!(r.step.status.iterations, 3);
    assert_eq!(r.routes(), Some(Routes::CANARY));
    assert!(r.event_with("Stop traffic mirroring and route all traffic to canary"));
    let r = run(&plan, &r.step.status, &ready("v2"), t(181));
    assert_eq!(r.phase(), Phase::Promoting);
    assert_eq!(r.step.status.canary_weight, 100);
}

#[test]
fn kubernetes_provider_blue_green_never_routes_production_traffic_to_the_canary() {
    let mut plan = canary_plan();
    plan.routing = Routing::ServiceSelector;
    plan.strategy = Strategy::BlueGreen {
        iterations: 1,
        mirror: true,
    };
    let mut s = status(Phase::Progressing, "v2");
    s.iterations = 1;
    let r = run(&plan, &s, &ready("v2"), t(60));
    assert_eq!(r.phase(), Phase::Promoting, "no extra switch interval");
    assert_eq!(r.routes(), Some(Routes::PRIMARY));
    let r = run(&plan, &r.step.status, &ready("v2"), t(61));
    assert_eq!(r.phase(), Phase::Finalising);
    assert!(!r.event_with("Routing all traffic to primary"));
}

#[test]
fn promoting_waits_for_the_primary_rollout() {
    let plan = canary_plan();
    let mut s = status(Phase::Promoting, "v2");
    s.canary_weight = 50;
    let mut obs = ready("v2");
    obs.primary = Readiness::NotReady("rolling".into());
    let r = run(&plan, &s, &obs, t(5));
    assert_eq!(r.phase(), Phase::Promoting);
    assert_eq!(r.routes(), Some(Routes::canary(50)));
    let r = run(&plan, &s, &ready("v2"), t(5));
    assert_eq!(r.phase(), Phase::Finalising);
    assert_eq!(r.routes(), Some(Routes::PRIMARY));
    assert!(r.event_with("Routing all traffic to primary"));
}

#[test]
fn step_weight_promotion_shifts_traffic_back_gradually() {
    let mut plan = canary_plan();
    plan.step_weight_promotion = 30;
    let mut s = status(Phase::Promoting, "v2");
    s.canary_weight = 50;
    s.last_step_time = None;
    let mut seen = Vec::new();
    let mut now = 0;
    while s.phase == Phase::Promoting {
        let r = run(&plan, &s, &ready("v2"), t(now));
        seen.push(r.routes().unwrap().primary);
        s = r.step.status;
        now += 60;
    }
    assert_eq!(seen, vec![80, 100]);
    assert_eq!(s.phase, Phase::Finalising);
}

#[test]
fn failed_promotion_keeps_the_canary_serving() {
    let plan = canary_plan();
    for phase in [Phase::Promoting, Phase::Finalising] {
        let mut s = status(phase, "v2");
        s.canary_weight = 50;
        let mut obs = ready("v2");
        obs.primary = Readiness::Failed("ProgressDeadlineExceeded".into());
        let r = run(&plan, &s, &obs, t(60));
        assert_eq!(r.phase(), Phase::Failed);
        assert_eq!(r.step.status.canary_weight, 100);
        assert_eq!(r.routes(), Some(Routes::CANARY));
        assert!(!r.has(&Effect::ScaleTargetToZero));
        assert!(
            r.alerts()[0]
                .1
                .starts_with("Promotion failed, primary not ready")
        );
    }
}

#[test]
fn finalising_scales_down_and_succeeds() {
    let mut plan = canary_plan();
    plan.hooks.post_rollout = true;
    let mut s = status(Phase::Finalising, "v2");
    s.last_step_time = Some(t(0));
    let r = run(&plan, &s, &ready("v2"), t(2));
    assert_eq!(r.phase(), Phase::Finalising, "drains before scaling down");
    let r = run(&plan, &s, &ready("v2"), t(10));
    assert_eq!(r.phase(), Phase::Succeeded);
    assert!(r.has(&Effect::ScaleTargetToZero));
    assert!(r.has(&Effect::Webhooks(Notify::PostRollout)));
    assert_eq!(r.step.status.last_promoted_spec.as_deref(), Some("v2"));
    assert!(r.event_with("Promotion completed! Scaling down podinfo.test"));
}

#[test]
fn skip_analysis_promotes_without_probes() {
    let mut plan = canary_plan();
    plan.skip_analysis = true;
    let mut s = status(Phase::Progressing, "v2");
    s.last_step_time = None;
    let r = run(&plan, &s, &ready("v2"), t(1));
    assert!(r.probes.is_empty());
    assert_eq!(r.phase(), Phase::Promoting);
    assert!(r.has(&Effect::Promote));
    assert_eq!(r.routes(), Some(Routes::PRIMARY));
    let sim = simulate::happy_path(&plan).unwrap();
    let last = sim.steps.last().unwrap();
    assert!(
        last.events
            .iter()
            .any(|e| e.contains("Canary analysis was skipped"))
    );
}

#[test]
fn suspend_does_nothing() {
    let mut plan = canary_plan();
    plan.suspend = true;
    let mut s = status(Phase::Progressing, "v2");
    s.canary_weight = 20;
    let r = run(&plan, &s, &ready("v3"), t(600));
    assert_eq!(r.step.status, s);
    assert!(r.probes.is_empty());
    assert!(r.event_with("skipping canary run as object is suspended"));
}

#[test]
fn no_data_hold_counts_no_failure_until_the_deadline() {
    let plan = canary_plan();
    let mut s = status(Phase::Progressing, "v2");
    s.canary_weight = 20;
    let mut obs = ready("v2");
    obs.probes.analysis = Some(Analysis::Hold("no values for request-success-rate".into()));
    let r = run(&plan, &s, &obs, t(60));
    assert_eq!(r.phase(), Phase::Progressing);
    assert_eq!(r.step.status.failed_checks, 0);
    assert_eq!(r.step.status.canary_weight, 20);
    assert_eq!(
        r.step.status.last_transition_time,
        Some(t(0)),
        "a hold is not progress"
    );
    let r = run(&plan, &s, &obs, t(660));
    assert_eq!(r.phase(), Phase::Failed);
}

#[test]
fn deletion_reverts_then_removes_the_finalizer() {
    let plan = canary_plan();
    let mut obs = ready("v1");
    obs.deleting = true;
    obs.target = Readiness::NotReady("scaling up".into());
    let r = run(&plan, &status(Phase::Succeeded, "v1"), &obs, t(1));
    assert_eq!(r.phase(), Phase::Terminating);
    assert!(r.has(&Effect::ScaleTargetUp));
    assert!(
        !r.has(&Effect::Revert),
        "traffic moves to the target only once it is ready"
    );
    assert_eq!(
        r.routes(),
        Some(Routes::PRIMARY),
        "the primary keeps serving"
    );
    let terminating = r.step.status.clone();
    let r = run(&plan, &terminating, &obs, t(2));
    assert_eq!(r.phase(), Phase::Terminating);
    assert!(!r.has(&Effect::Revert));
    assert!(!r.has(&Effect::RemoveFinalizer));
    obs.target = Readiness::Ready;
    let r = run(&plan, &terminating, &obs, t(3));
    assert_eq!(r.phase(), Phase::Terminated);
    let revert = r.position(|e| *e == Effect::Revert).unwrap();
    let release = r.position(|e| *e == Effect::RemoveFinalizer).unwrap();
    assert!(revert < release, "handed back before serin lets go");
    assert!(!r.has(&Effect::OrphanPrimary));
}

#[test]
fn deletion_with_a_ready_target_hands_back_at_once() {
    let plan = canary_plan();
    let mut obs = ready("v2");
    obs.deleting = true;
    let mut s = status(Phase::Progressing, "v2");
    s.canary_weight = 20;
    let r = run(&plan, &s, &obs, t(1));
    assert_eq!(r.phase(), Phase::Terminated);
    assert!(r.has(&Effect::Revert));
    assert!(r.has(&Effect::RemoveFinalizer));
}

/// The apex selector (Effect::Revert) never moves in the step that scales the target up: the
/// target is not ready yet in that step, whatever the phase the Canary is deleted in.
#[test]
fn deletion_never_moves_traffic_to_a_target_that_is_not_ready() {
    let plan = canary_plan();
    let unready = [
        Readiness::NotReady("podinfo.test is scaled to zero".into()),
        Readiness::NotReady("1 of 2 updated replicas available".into()),
        Readiness::Failed("ProgressDeadlineExceeded".into()),
        Readiness::Missing,
    ];
    for phase in Phase::ALL {
        for target in &unready {
            let mut obs = ready("v2");
            obs.deleting = true;
            obs.target = target.clone();
            for now in [t(1), t(30)] {
                let r = run(&plan, &status(phase, "v2"), &obs, now);
                assert!(
                    !r.has(&Effect::Revert),
                    "{phase:?} with target {target:?} at {now}: {:?}",
                    r.step.effects
                );
            }
        }
    }
}

#[test]
fn deletion_with_a_target_that_never_becomes_ready_keeps_the_primary_serving() {
    let plan = canary_plan();
    let mut obs = ready("v2");
    obs.deleting = true;
    obs.target = Readiness::NotReady("0 of 2 updated replicas available".into());
    let mut s = status(Phase::Progressing, "v2");
    s.canary_weight = 20;
    let r = run(&plan, &s, &obs, t(1));
    assert_eq!(r.phase(), Phase::Terminating);
    assert_eq!(r.routes(), Some(Routes::PRIMARY));
    let terminating = r.step.status.clone();

    // Past the progress deadline (600 s) counted from the deletion, not from the release.
    let r = run(&plan, &terminating, &obs, t(700));
    assert_eq!(r.phase(), Phase::Terminated);
    assert!(!r.has(&Effect::Revert), "the selector stays on the primary");
    assert_eq!(r.routes(), Some(Routes::PRIMARY));
    let orphan = r.position(|e| *e == Effect::OrphanPrimary).unwrap();
    let release = r.position(|e| *e == Effect::RemoveFinalizer).unwrap();
    assert!(
        orphan < release,
        "the primary is kept before the Canary (and with it the garbage collector) lets go"
    );
    assert!(
        r.step.effects.iter().any(|e| matches!(
            e,
            Effect::Event { kind: EventType::Warning, message }
                if message.contains("kept podinfo-primary.test serving")
                    && message.contains("0 of 2 updated replicas available")
                    && message.contains("delete podinfo-primary.test")
        )),
        "{:?}",
        r.events()
    );
    assert!(r.alerts().iter().any(|(s, _)| *s == Severity::Error));

    // A later look (the finalizer removal not seen yet) keeps the primary the same way.
    let r = run(&plan, &r.step.status, &obs, t(701));
    assert!(r.has(&Effect::OrphanPrimary));
    assert!(!r.has(&Effect::Revert));
    assert!(r.has(&Effect::RemoveFinalizer));
}

#[test]
fn deletion_before_initialization_lets_go_without_keeping_a_primary() {
    let plan = canary_plan();
    let mut obs = ready("v1");
    obs.deleting = true;
    obs.target = Readiness::NotReady("1 of 2 updated replicas available".into());
    obs.primary = Readiness::NotReady("0 of 2 updated replicas available".into());
    let s = Status {
        phase: Phase::Initializing,
        last_transition_time: Some(t(0)),
        ..Status::default()
    };
    let r = run(&plan, &s, &obs, t(1));
    assert_eq!(r.phase(), Phase::Terminating);
    assert_eq!(r.routes(), None, "routing was never serin's");
    let r = run(&plan, &r.step.status, &obs, t(700));
    assert_eq!(r.phase(), Phase::Terminated);
    assert!(!r.has(&Effect::OrphanPrimary));
    assert!(r.has(&Effect::RemoveFinalizer));
    assert!(r.event_with("removing the finalizer anyway"));
}

// ----- a person's commands (`serin promote|abort|retry`) -----------------------------------

#[test]
fn commands_act_in_their_phases_only() {
    use Command::*;
    // (command, phase, expected next phase, an effect it must have, an event it must have)
    let table: [(Command, Phase, Phase, Option<Effect>, &str); 7] = [
        (
            Abort,
            Phase::Progressing,
            Phase::Failed,
            Some(Effect::ScaleTargetToZero),
            "Rolling back podinfo.test aborted by a person",
        ),
        (
            Abort,
            Phase::WaitingPromotion,
            Phase::Failed,
            Some(Effect::ScaleTargetToZero),
            "aborted by a person",
        ),
        (
            Promote,
            Phase::Progressing,
            Phase::Promoting,
            Some(Effect::Promote),
            "Promoting podinfo.test now, as a person asked",
        ),
        (
            Promote,
            Phase::WaitingPromotion,
            Phase::Promoting,
            Some(Effect::Promote),
            "as a person asked",
        ),
        (
            Retry,
            Phase::Failed,
            Phase::Progressing,
            Some(Effect::ScaleTargetUp),
            "New revision detected! Scaling up podinfo.test",
        ),
        // Nothing to act on: the decision is the one without the command.
        (Retry, Phase::Succeeded, Phase::Succeeded, None, ""),
        (Promote, Phase::Succeeded, Phase::Succeeded, None, ""),
    ];
    for (command, phase, next, effect, event) in table {
        let mut plan = canary_plan();
        plan.hooks.confirm_promotion = true;
        let mut s = status(phase, "v2");
        s.canary_weight = 10;
        s.last_step_time = Some(t(59));
        if phase == Phase::Succeeded {
            s.last_promoted_spec = Some("v2".into());
        }
        let mut obs = ready("v2");
        obs.command = Some(command);
        assert_eq!(
            command.applies_in(phase),
            effect.is_some(),
            "{command:?} in {phase:?}"
        );
        let r = run(&plan, &s, &obs, t(60));
        assert_eq!(r.phase(), next, "{command:?} in {phase:?}");
        assert_eq!(
            r.step.command_done,
            effect.is_some(),
            "{command:?} in {phase:?}"
        );
        if let Some(effect) = effect {
            assert!(
                r.has(&effect),
                "{command:?} in {phase:?}: {:?}",
                r.step.effects
            );
            assert!(
                r.event_with(event),
                "{command:?} in {phase:?}: {:?}",
                r.events()
            );
        }
    }
}

#[test]
fn promote_keeps_the_readiness_checks() {
    let plan = canary_plan();
    let s = status(Phase::Progressing, "v2");
    let mut obs = ready("v2");
    obs.target = Readiness::NotReady("waiting for rollout to finish".into());
    obs.command = Some(Command::Promote);
    let r = run(&plan, &s, &obs, t(60));
    assert_eq!(r.phase(), Phase::Progressing);
    assert!(!r.has(&Effect::Promote));
    assert!(!r.step.command_done, "kept for when the canary is ready");
}

#[test]
fn abort_does_not_wait_for_the_interval_or_readiness() {
    let plan = canary_plan();
    let mut s = status(Phase::Progressing, "v2");
    s.last_step_time = Some(t(59));
    let mut obs = ready("v2");
    obs.target = Readiness::NotReady("waiting for rollout to finish".into());
    obs.command = Some(Command::Abort);
    let r = run(&plan, &s, &obs, t(60));
    assert_eq!(r.phase(), Phase::Failed);
    assert!(
        r.alerts()
            .contains(&(Severity::Warn, "Canary aborted by a person"))
    );
}

/// Runs `revision`'s release from `status` to its end with every probe passing; returns the
/// final status, the time it ended, and every run's probes and events.
fn release(
    plan: &Plan,
    mut status: Status,
    revision: &str,
    mut now: i64,
) -> (Status, i64, Vec<Probe>, Vec<String>) {
    let (mut probes, mut events) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        now += 60;
        let r = run(plan, &status, &ready(revision), t(now));
        probes.extend(r.probes.iter().copied());
        events.extend(r.events().iter().map(|e| e.to_string()));
        status = r.step.status;
        if matches!(status.phase, Phase::Succeeded | Phase::Failed) {
            return (status, now, probes, events);
        }
    }
    panic!("{revision} did not end: {status:?}");
}

#[test]
fn a_revision_promoted_before_is_promoted_again_without_analysis() {
    let mut plan = canary_plan();
    plan.rollback_window = 2;
    let s = status(Phase::Succeeded, "v1");
    let (s, now, probes, _) = release(&plan, s, "v2", 0);
    assert!(probes.contains(&Probe::Analysis), "v2 is new: analysed");
    assert_eq!(s.promoted_before, ["v1"]);
    let (s, now, _, _) = release(&plan, s, "v3", now);
    assert_eq!(s.promoted_before, ["v1", "v2"]);
    assert_eq!(s.last_promoted_spec.as_deref(), Some("v3"));

    // Back to v2: promoted at once, no probe, routing never leaves the primary.
    let r = run(&plan, &s, &ready("v2"), t(now + 60));
    assert_eq!(r.phase(), Phase::Progressing);
    assert!(r.event_with("Rolling back podinfo.test to revision v2, promoted before"));
    assert_eq!(r.alerts()[0].0, Severity::Warn);
    let (rolled, now, probes, events) = release(&plan, r.step.status, "v2", now + 60);
    assert!(probes.is_empty(), "{probes:?}");
    assert_eq!(rolled.phase, Phase::Succeeded);
    assert_eq!(rolled.last_promoted_spec.as_deref(), Some("v2"));
    assert_eq!(rolled.promoted_before, ["v1", "v3"]);
    assert!(
        events.iter().all(|e| !e.contains("canary weight")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.contains("podinfo.test rolled back to revision v2 without analysis"))
    );

    // v1 is still within the window of two; a third promotion pushes it out.
    let (s, now, _, _) = release(&plan, rolled, "v4", now);
    assert_eq!(s.promoted_before, ["v3", "v2"]);
    let (_, _, probes, _) = release(&plan, s, "v1", now);
    assert!(
        probes.contains(&Probe::Analysis),
        "v1 left the window: analysed"
    );
}

#[test]
fn without_a_rollback_window_every_revision_is_analysed() {
    let plan = canary_plan();
    let (s, now, _, _) = release(&plan, status(Phase::Succeeded, "v1"), "v2", 0);
    assert!(s.promoted_before.is_empty());
    let (_, _, probes, _) = release(&plan, s, "v1", now);
    assert!(probes.contains(&Probe::Analysis));
}

/// A decision found the target ready and wrote `Terminated`, but the finalizer's removal was
/// refused (the Canary changed meanwhile); by the next look the target is not ready (a
/// rollout). Within the deadline, counted from the deletion, that is no reason to give up:
/// traffic goes back to the primary and serin waits, as it did before.
#[test]
fn a_terminated_canary_whose_target_is_no_longer_ready_waits_within_the_deadline() {
    let plan = canary_plan();
    let mut obs = ready("v1");
    obs.deleting = true;
    obs.deletion_requested_at = Some(t(0));
    obs.target = Readiness::NotReady("0 out of 2 new replicas have been updated".into());
    let mut s = status(Phase::Terminated, "v1");
    s.last_transition_time = Some(t(1));
    let r = run(&plan, &s, &obs, t(2));
    assert!(!r.has(&Effect::OrphanPrimary), "{:?}", r.step.effects);
    assert!(!r.has(&Effect::RemoveFinalizer));
    assert!(r.has(&Effect::ScaleTargetUp));
    assert_eq!(r.routes(), Some(Routes::PRIMARY));
    // Past the deadline since the deletion: the primary is kept, and serin lets go.
    let r = run(&plan, &s, &obs, t(601));
    assert!(r.has(&Effect::OrphanPrimary));
    assert!(r.has(&Effect::RemoveFinalizer));
    // Ready again in time: handed back.
    let r = run(&plan, &s, &ready_deleting(), t(3));
    assert!(r.has(&Effect::Revert) && r.has(&Effect::RemoveFinalizer));
}

fn ready_deleting() -> Observation {
    let mut obs = ready("v1");
    obs.deleting = true;
    obs.deletion_requested_at = Some(t(0));
    obs
}
