//! Benchmark (ignored by default): how fast serin picks up a new revision (target change →
//! `Progressing`), and how close a release runs to its ideal duration (steps × interval),
//! with the time spent in each phase, over a series of releases of one Canary on the
//! emulator. Phases are read by polling the Canary every 10 ms.
//!
//! ```sh
//! cargo build --release && cargo test --release --test benchmarks release_timing:: -- --ignored --nocapture
//! # detection latency over 100 releases of one step each
//! SERIN_TIMING_RELEASES=100 SERIN_TIMING_STEPS=1 cargo test --release --test benchmarks release_timing:: -- --ignored --nocapture
//! # pods that take 1 s to become ready, as the scenario suites' simulator
//! SERIN_TIMING_READY_DELAY=1s cargo test --release --test benchmarks release_timing:: -- --ignored --nocapture
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use serin_core::Phase;
use serin_testkit::{ControlPlane, Poll, World, WorldConfig, deployment};

fn var(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.into())
}

/// One release: each phase it went through and when it was first seen, from the target
/// change, ending with `Succeeded`.
async fn release(world: &World, image: &str) -> Vec<(Phase, Duration)> {
    // Looks every 10 ms: the phases' times are the measurement.
    let changed = Poll::new(Duration::from_secs(300)).every(Duration::from_millis(10));
    world.set_image("podinfo", "app", image).await;
    let mut seen: Vec<(Phase, Duration)> = Vec::new();
    loop {
        let phase = world.phase("podinfo").await;
        // Before Progressing the Canary still shows the last release's phase.
        let started = !seen.is_empty();
        let last = seen.last().map(|(p, _)| *p);
        if (started || phase == Phase::Progressing) && last != Some(phase) {
            seen.push((phase, changed.elapsed()));
        }
        if started && phase == Phase::Succeeded {
            return seen;
        }
        if phase == Phase::Failed || changed.expired() {
            panic!("release of {image} ended {phase:?}: {seen:?}",);
        }
        changed.next().await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn detection_latency_and_release_overhead() {
    let releases: usize = var("SERIN_TIMING_RELEASES", "10").parse().unwrap();
    let steps: u32 = var("SERIN_TIMING_STEPS", "10").parse().unwrap();
    let ready_delay = var("SERIN_TIMING_READY_DELAY", "0s");
    let mut args = serin_testkit::controller_args();
    if let Some(i) = args.iter().position(|a| a == "--log-level") {
        args[i + 1] = "info".into();
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), ControlPlane::Emulator)
        .scenario(&format!("workloads:\n  readyDelay: {ready_delay}\n"))
        .controller_args(&args)
        .start()
        .await;
    world
        .apply(&world.deployments(), deployment("podinfo", "podinfo:1", 2))
        .await;
    world
        .apply(
            &world.canaries(),
            serin_testkit::canary("podinfo")
                .without("progressDeadlineSeconds")
                .analysis(json!({"interval": "1s", "threshold": 1, "iterations": steps}))
                .build(),
        )
        .await;
    world
        .wait_phase("podinfo", Phase::Initialized, Duration::from_secs(60))
        .await;

    let requests_before =
        world.stack.faults().total_requests() - world.stack.faults().requests("get", "canaries");
    let mut detection = Vec::new();
    let mut totals = Vec::new();
    let mut in_phase: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in 0..releases {
        let seen = release(&world, &format!("podinfo:{}", r + 2)).await;
        let at = |phase: Phase| seen.iter().find(|(p, _)| *p == phase).map(|(_, t)| *t);
        if let Some(t) = at(Phase::Progressing) {
            detection.push(t.as_secs_f64());
        }
        totals.push(seen.last().unwrap().1.as_secs_f64());
        for pair in seen.windows(2) {
            let spent = (pair[1].1 - pair[0].1).as_secs_f64();
            in_phase
                .entry(format!("{:?}", pair[0].0))
                .or_default()
                .push(spent);
        }
    }
    // The stack counts every client: take out the benchmark's own polls (GETs of the
    // Canary; serin reads Canaries from its watch) and its one patch per release.
    let polls = world.stack.faults().requests("get", "canaries");
    let requests = world.stack.faults().total_requests() - requests_before;
    let serin = requests.saturating_sub(polls + releases as u64);
    detection.sort_by(f64::total_cmp);
    totals.sort_by(f64::total_cmp);
    let ideal = f64::from(steps);
    println!(
        "{releases} releases of {steps} steps x 1 s, pods ready after {ready_delay} \
         (release build: {})",
        !cfg!(debug_assertions)
    );
    println!(
        "target change -> Progressing: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} samples)",
        percentile(&detection, 0.5) * 1000.0,
        percentile(&detection, 0.99) * 1000.0,
        detection.last().copied().unwrap_or_default() * 1000.0,
        detection.len()
    );
    println!(
        "release: p50 {:.2} s, min {:.2} s, max {:.2} s; ideal {ideal:.0} s, ratio p50 {:.2}",
        percentile(&totals, 0.5),
        totals[0],
        totals.last().unwrap(),
        percentile(&totals, 0.5) / ideal
    );
    println!(
        "API requests by serin per release: {:.1}",
        serin as f64 / releases as f64
    );
    for (phase, spent) in &mut in_phase {
        spent.sort_by(f64::total_cmp);
        println!(
            "  in {phase}: p50 {:.2} s, max {:.2} s",
            percentile(spent, 0.5),
            spent.last().unwrap()
        );
    }
}
