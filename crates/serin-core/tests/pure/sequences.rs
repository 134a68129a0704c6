//! Exact step sequences of whole releases (Flagger's weight stepping, promotion and finalising), from the happy-path
//! simulator that `serin plan` prints.

use serin_core::simulate::happy_path;
use serin_core::*;

/// Canary weights while Progressing, in order, without repeats.
fn canary_weights(plan: &Plan) -> Vec<u32> {
    let sim = happy_path(plan).unwrap();
    let mut out: Vec<u32> = Vec::new();
    for s in sim.steps.iter().filter(|s| s.phase == Phase::Progressing) {
        if s.canary_weight > 0 && out.last() != Some(&s.canary_weight) {
            out.push(s.canary_weight);
        }
    }
    out
}

fn phases(plan: &Plan) -> Vec<Phase> {
    let sim = happy_path(plan).unwrap();
    let mut out: Vec<Phase> = Vec::new();
    for s in &sim.steps {
        if out.last() != Some(&s.phase) {
            out.push(s.phase);
        }
    }
    out
}

#[test]
fn step_weight_with_max_weight_is_capped() {
    let plan = Plan::example(Stepping::Linear {
        step: 20,
        max_weight: 50,
    });
    assert_eq!(canary_weights(&plan), vec![20, 40, 50]);
    assert_eq!(
        phases(&plan),
        vec![
            Phase::Progressing,
            Phase::Promoting,
            Phase::Finalising,
            Phase::Succeeded
        ]
    );
}

#[test]
fn step_weights_are_followed_exactly() {
    let plan = Plan::example(Stepping::List {
        weights: vec![1, 2, 10, 80],
    });
    assert_eq!(canary_weights(&plan), vec![1, 2, 10, 80]);
    let plan = Plan::example(Stepping::Linear {
        step: 50,
        max_weight: 100,
    });
    assert_eq!(canary_weights(&plan), vec![50, 100]);
}

#[test]
fn minimum_duration_counts_one_interval_per_analysed_step() {
    // Detection and the first step happen at once; 20 -> 40 -> 50 -> promote take three
    // intervals; promotion and finalising wait only for readiness and the drain time.
    let plan = Plan::example(Stepping::Linear {
        step: 20,
        max_weight: 50,
    });
    let sim = happy_path(&plan).unwrap();
    assert_eq!(sim.min_duration_seconds, 3 * 60 + 10);
}

#[test]
fn canary_mirroring_mirrors_first_then_steps() {
    let mut plan = Plan::example(Stepping::Linear {
        step: 50,
        max_weight: 100,
    });
    plan.strategy = Strategy::Canary {
        stepping: Stepping::Linear {
            step: 50,
            max_weight: 100,
        },
        mirror: true,
    };
    let sim = happy_path(&plan).unwrap();
    let progressing: Vec<(u32, bool)> = sim
        .steps
        .iter()
        .filter(|s| s.phase == Phase::Progressing)
        .map(|s| (s.canary_weight, s.mirrored))
        .collect();
    assert!(progressing.contains(&(0, true)));
    let first_weight = progressing.iter().position(|(w, _)| *w == 50).unwrap();
    let mirror = progressing.iter().position(|(_, m)| *m).unwrap();
    assert!(mirror < first_weight);
    assert_eq!(canary_weights(&plan), vec![50, 100]);
}

#[test]
fn blue_green_iterations_then_full_switch() {
    let mut plan = Plan::example(Stepping::Linear {
        step: 10,
        max_weight: 100,
    });
    plan.strategy = Strategy::BlueGreen {
        iterations: 3,
        mirror: false,
    };
    let sim = happy_path(&plan).unwrap();
    let iterations: Vec<u32> = sim
        .steps
        .iter()
        .filter(|s| s.phase == Phase::Progressing)
        .map(|s| s.iterations)
        .collect();
    assert_eq!(iterations, vec![0, 1, 2, 3, 4]);
    let switch = sim.steps.iter().find(|s| s.iterations == 4).unwrap();
    assert_eq!((switch.primary_weight, switch.canary_weight), (0, 100));
    let promoting = sim
        .steps
        .iter()
        .find(|s| s.phase == Phase::Promoting)
        .unwrap();
    assert_eq!(promoting.canary_weight, 100);
}

#[test]
fn ab_testing_iterations() {
    let mut plan = Plan::example(Stepping::Linear {
        step: 10,
        max_weight: 100,
    });
    plan.strategy = Strategy::AbTesting { iterations: 2 };
    let sim = happy_path(&plan).unwrap();
    let advances: Vec<&String> = sim
        .steps
        .iter()
        .flat_map(|s| s.events.iter())
        .filter(|e| e.contains("canary iteration"))
        .collect();
    assert_eq!(advances.len(), 2);
    assert!(advances[1].ends_with("2/2"));
}

#[test]
fn step_weight_promotion_sequence() {
    let mut plan = Plan::example(Stepping::Linear {
        step: 50,
        max_weight: 100,
    });
    plan.step_weight_promotion = 40;
    let sim = happy_path(&plan).unwrap();
    let primary: Vec<u32> = sim
        .steps
        .iter()
        .filter(|s| s.phase == Phase::Promoting || s.phase == Phase::Finalising)
        .map(|s| s.primary_weight)
        .collect();
    assert_eq!(primary, vec![0, 40, 80, 100]);
}

#[test]
fn probes_are_asked_in_flagger_order() {
    let mut plan = Plan::example(Stepping::Linear {
        step: 50,
        max_weight: 50,
    });
    plan.hooks = Hooks {
        confirm_rollout: true,
        pre_rollout: true,
        confirm_traffic_increase: true,
        confirm_promotion: true,
        rollback: true,
        post_rollout: true,
    };
    let sim = happy_path(&plan).unwrap();
    let probes: Vec<Probe> = sim.steps.iter().flat_map(|s| s.probes.clone()).collect();
    assert_eq!(
        probes,
        vec![
            Probe::ConfirmRollout,
            Probe::Rollback,
            Probe::PreRollout,
            Probe::ConfirmTrafficIncrease,
            Probe::Rollback,
            Probe::Analysis,
            Probe::ConfirmPromotion,
        ]
    );
}

/// How many times a passing release is analysed: once per weight step for a canary (the
/// check at the top weight promotes it); once per iteration for A/B, and once more for
/// blue/green (the check before the full switch). The judge spreads its confidence over these.
#[test]
fn analyses_before_promotion() {
    let linear = |step, max_weight| Plan::example(Stepping::Linear { step, max_weight });
    let strategy = |strategy| Plan {
        strategy,
        ..linear(10, 50)
    };
    let cases = [
        (linear(10, 50), 5),
        (linear(20, 50), 3),
        (
            Plan::example(Stepping::List {
                weights: vec![1, 5, 25, 50],
            }),
            4,
        ),
        (
            strategy(Strategy::BlueGreen {
                iterations: 6,
                mirror: false,
            }),
            7,
        ),
        (strategy(Strategy::AbTesting { iterations: 10 }), 10),
    ];
    for (plan, want) in cases {
        let sim = happy_path(&plan).unwrap();
        let counted = sim
            .steps
            .iter()
            .flat_map(|s| &s.probes)
            .filter(|p| **p == Probe::Analysis)
            .count();
        assert_eq!(sim.analyses, want, "{:?}", plan.strategy);
        assert_eq!(counted as u32, want, "{:?}", plan.strategy);
    }
}
