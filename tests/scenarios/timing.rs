//! Measured: how fast a target change is picked up, and how close a release runs to its
//! ideal duration (steps × interval). Figures are printed (`--nocapture` / nextest output).

use std::time::{Duration, Instant};

use serin_core::Phase;

use crate::harness::{ControlPlane, WorldConfig, initialized};

async fn reaction_time_and_release_overhead_of_a_five_step_release(cp: ControlPlane) {
    // A cluster of its own: what is measured is serin's overhead, not the queue of a
    // controller manager shared with the other scenarios' rollouts.
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp)
        .whole_cluster()
        .start()
        .await;
    let steps = 5u32;
    initialized(&world, "podinfo", steps).await;

    let changed = Instant::now();
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world
        .wait_phase("podinfo", Phase::Progressing, Duration::from_secs(10))
        .await;
    let reaction = changed.elapsed();
    world
        .wait_phase("podinfo", Phase::Succeeded, Duration::from_secs(60))
        .await;
    let total = changed.elapsed();

    let ideal = Duration::from_secs(u64::from(steps));
    let ratio = total.as_secs_f64() / ideal.as_secs_f64();
    println!(
        "target change -> Progressing: {:.0} ms; release: {:.2} s for {steps} steps x 1 s \
         (ideal {:.0} s, ratio {ratio:.2})",
        reaction.as_secs_f64() * 1000.0,
        total.as_secs_f64(),
        ideal.as_secs_f64(),
    );
    assert!(
        reaction < Duration::from_secs(1),
        "reaction {reaction:?} over the 1 s goal"
    );
    // Steps run once per interval; the rest (scale-up, promotion, drain) is bounded by
    // readiness, so a release takes the ideal time plus a few seconds, not multiples of it.
    assert!(
        ratio < 3.0,
        "release took {total:?} for an ideal of {ideal:?}"
    );
}

serin_testkit::on_every_control_plane!(reaction_time_and_release_overhead_of_a_five_step_release,);
