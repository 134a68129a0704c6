//! Release groups: the engine's transitions for a member, given how far the other members are
//! (`Observation::group`).

use crate::common::*;
use serin_core::*;

/// `podinfo` in group `shop`, with the other members at these positions.
fn in_group(revision: &str, members: &[(&str, Position)]) -> Observation {
    let mut obs = Observation::ready(revision);
    obs.group = Some(GroupObservation {
        name: "shop".into(),
        failed: None,
        members: members.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
    });
    obs
}

fn at_weight(phase: Phase, weight: u32) -> Status {
    let mut s = status(phase, "v2");
    s.canary_weight = weight;
    s
}

#[test]
fn a_member_a_step_ahead_holds_without_analysing() {
    let plan = canary_plan();
    let s = at_weight(Phase::Progressing, 20);
    let r = run(
        &plan,
        &s,
        &in_group("v2", &[("cart", Position::Step(0))]),
        t(60),
    );
    assert_eq!(r.phase(), Phase::Progressing);
    assert_eq!(
        r.step.status.canary_weight, 20,
        "no step while cart is behind"
    );
    assert!(
        r.probes.is_empty(),
        "no analysis while holding: {:?}",
        r.probes
    );
    assert_eq!(
        r.events(),
        ["Halt podinfo.test advancement waiting for cart of release group shop (step 0)"]
    );
    assert_eq!(
        r.step.status.last_step_time, s.last_step_time,
        "the step stays due: taken as soon as cart catches up"
    );
    assert_eq!(r.routes(), Some(Routes::canary(20)));
}

#[test]
fn a_member_level_with_the_others_steps() {
    let plan = canary_plan();
    let s = at_weight(Phase::Progressing, 20);
    let members = [("cart", Position::Step(1)), ("api", Position::Ready)];
    let r = run(&plan, &s, &in_group("v2", &members), t(60));
    assert_eq!(r.probes, vec![Probe::Analysis]);
    assert_eq!(r.step.status.canary_weight, 40);
}

#[test]
fn a_member_whose_last_check_passed_waits_for_the_others_analysing_on() {
    let plan = canary_plan();
    let s = at_weight(Phase::Progressing, 50);
    let r = run(
        &plan,
        &s,
        &in_group("v2", &[("cart", Position::Step(3))]),
        t(60),
    );
    assert_eq!(r.probes, vec![Probe::Analysis], "its own last check ran");
    assert_eq!(r.phase(), Phase::WaitingPromotion);
    assert!(!r.has(&Effect::Promote));
    assert!(r.event_with("Halt podinfo.test promotion waiting for cart of release group shop"));
    assert_eq!(r.routes(), Some(Routes::canary(50)));

    // Still waiting: the analysis runs again each interval, and a failure counts.
    let waiting = r.step.status;
    let mut obs = in_group("v2", &[("cart", Position::Step(3))]);
    obs.probes.analysis = Some(Analysis::Fail("error rate 7% > 1%".into()));
    let r = run(&plan, &waiting, &obs, t(120));
    assert_eq!(r.probes, vec![Probe::Analysis]);
    assert_eq!(r.step.status.failed_checks, 1);
}

#[test]
fn the_last_member_ready_promotes_and_the_waiting_ones_follow_without_analysis() {
    let plan = canary_plan();
    let s = at_weight(Phase::Progressing, 50);
    let r = run(
        &plan,
        &s,
        &in_group("v2", &[("cart", Position::Ready)]),
        t(60),
    );
    assert_eq!(r.phase(), Phase::Promoting);
    assert!(r.has(&Effect::Promote));

    let waiting = at_weight(Phase::WaitingPromotion, 50);
    let r = run(
        &plan,
        &waiting,
        &in_group("v2", &[("cart", Position::Promoting)]),
        t(61),
    );
    assert!(r.probes.is_empty(), "decided by the group: {:?}", r.probes);
    assert_eq!(r.phase(), Phase::Promoting);
    assert!(r.has(&Effect::Promote));
}

#[test]
fn a_failed_member_rolls_every_other_member_back() {
    let plan = canary_plan();
    for phase in [Phase::Progressing, Phase::WaitingPromotion] {
        let s = at_weight(phase, 40);
        let mut obs = in_group("v2", &[]);
        obs.group.as_mut().unwrap().failed = Some("cart".into());
        obs.target = Readiness::NotReady("0 of 2 updated".into());
        let r = run(&plan, &s, &obs, t(60));
        assert_eq!(r.phase(), Phase::Failed, "from {phase:?}");
        assert!(r.has(&Effect::ScaleTargetToZero));
        assert_eq!(r.routes(), Some(Routes::PRIMARY));
        assert!(r.event_with(
            "Rolling back podinfo.test: the release of cart, in the same release group shop, failed"
        ));
        assert_eq!(r.alerts().first().map(|a| a.0), Some(Severity::Error));
    }
}

#[test]
fn a_member_without_analysis_waits_for_the_group_too() {
    let mut plan = canary_plan();
    plan.skip_analysis = true;
    let s = at_weight(Phase::Progressing, 0);
    let r = run(
        &plan,
        &s,
        &in_group("v2", &[("cart", Position::Step(1))]),
        t(1),
    );
    assert_eq!(r.phase(), Phase::WaitingPromotion);
    assert!(!r.has(&Effect::Promote));
    let r = run(
        &plan,
        &s,
        &in_group("v2", &[("cart", Position::Ready)]),
        t(1),
    );
    assert_eq!(r.phase(), Phase::Promoting);
}

#[test]
fn a_blue_green_member_routes_all_traffic_only_once_the_group_is_ready() {
    let plan = Plan {
        strategy: Strategy::BlueGreen {
            iterations: 2,
            mirror: false,
        },
        ..canary_plan()
    };
    let mut s = status(Phase::Progressing, "v2");
    s.iterations = 2;
    let r = run(
        &plan,
        &s,
        &in_group("v2", &[("cart", Position::Step(2))]),
        t(60),
    );
    assert_eq!(r.phase(), Phase::WaitingPromotion);
    assert_eq!(r.routes(), Some(Routes::PRIMARY));
    let waiting = r.step.status;
    let r = run(
        &plan,
        &waiting,
        &in_group("v2", &[("cart", Position::Promoting)]),
        t(61),
    );
    assert_eq!(r.step.status.iterations, 3);
    assert_eq!(
        r.routes(),
        Some(Routes::CANARY),
        "all traffic to the new version first"
    );
}

#[test]
fn without_a_group_nothing_changes() {
    let plan = canary_plan();
    let s = at_weight(Phase::Progressing, 50);
    let r = run(&plan, &s, &Observation::ready("v2"), t(60));
    assert_eq!(r.phase(), Phase::Promoting);
}
