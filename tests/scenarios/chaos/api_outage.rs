//! A full API outage mid-release: every request serin makes answers 503 and its watches are
//! cut, then the API server is back. Nothing is decided on what serin could not read or write:
//! no step is taken and nothing is rolled back while the API is down; once it answers again the
//! release resumes and is promoted, each step's event recorded once, and the controller
//! process never exited. Emulator only: its fault injection fails serin's requests alone (the
//! test reads through a client of its own), which the real control plane cannot.

use std::time::Duration;

use serin_core::Phase;
use serin_stack::FaultRule;
use serin_testkit::{ControlPlane, Poll, WorldConfig};

use serin_testkit::LONG;
/// How long the API server is down for serin: thirty analysis intervals, longer than every
/// backoff of its watches and reconciles reaches in between (`SERIN_OUTAGE_SECONDS` for the
/// few minutes of a real outage; the suite keeps it short).
fn outage() -> Duration {
    let seconds = std::env::var("SERIN_OUTAGE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(seconds)
}
const ITERATIONS: u32 = 8;

#[tokio::test]
async fn a_full_api_outage_mid_release_resumes_without_a_wrong_outcome() {
    let mut world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), ControlPlane::Emulator)
        .start()
        .await;
    super::podinfo_release(&world, ITERATIONS).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_iterations("podinfo", 2).await;

    // The outage: every request of serin's refused, every watch cut.
    let faults = world.stack.faults();
    let refused_before = refused(&world);
    faults.add(vec![FaultRule {
        user_agent: "serin/".into(),
        error_rate: 1.0,
        status: 503,
        ..FaultRule::default()
    }]);
    faults.drop_watches();
    let held = world.canary("podinfo").await.status.unwrap_or_default();
    // All through the outage: nothing moves while serin can neither read nor write (at most
    // the step in flight when it began), and nothing fails.
    let poll = Poll::new(outage()).every(Duration::from_millis(500));
    while !poll.expired() {
        let now = world.canary("podinfo").await.status.unwrap_or_default();
        assert!(
            now.iterations <= held.iterations + 1,
            "stepped during the outage: {} -> {}",
            held.iterations,
            now.iterations
        );
        assert_eq!(now.phase, Phase::Progressing);
        assert_eq!(now.failed_checks, 0);
        poll.next().await;
    }
    let outage = poll.elapsed();
    faults.clear();
    assert!(
        refused(&world) > refused_before,
        "serin made no request during the outage"
    );

    // Back: the release resumes and is promoted, each step announced once.
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");
    let ns = world.ns();
    for i in 1..=ITERATIONS {
        let advance = format!("Advance podinfo.{ns} canary iteration {i}/{ITERATIONS}");
        world.wait_event("podinfo", &advance, LONG).await;
        assert_eq!(world.event_count("podinfo", &advance).await, 1, "{advance}");
    }
    let promoted = "Promotion completed! Scaling down";
    world.wait_event("podinfo", promoted, LONG).await;
    assert_eq!(world.event_count("podinfo", promoted).await, 1);
    assert!(!world.has_event("podinfo", "Rolling back").await);
    assert!(
        !world.controller_exited(),
        "the controller exited during the outage"
    );
    println!(
        "api outage: {} of serin's requests refused over {:.1} s at iteration {}; resumed and \
         promoted, every step announced once",
        refused(&world) - refused_before,
        outage.as_secs_f64(),
        held.iterations
    );
}

/// Requests of any client the stack answered 503 (injected, in practice).
fn refused(world: &serin_testkit::World) -> u64 {
    super::answered(world, &[503])
}
