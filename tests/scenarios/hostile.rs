//! Hostile tenants beside an ordinary one, measured (a benchmark: it prints figures, run with
//! `cargo test --test scenarios hostile -- --ignored --nocapture`): a metrics endpoint that
//! answers a gigabyte to every query, a hundred Canaries whose confirm-rollout webhooks never
//! answer, and an inline query template bomb, all at once, on the emulator. It prints the
//! controller's peak memory before and after, how long the bomb took to be refused, and how
//! late the ordinary Canary's steps ran.

use std::time::{Duration, Instant};

use serde_json::json;
use serin_core::Phase;
use serin_stack::testing::fake_http::flood;
use serin_testkit::{Poll, Receiver};

use crate::harness::{ControlPlane, WorldConfig, canary, deployment, ready_condition};

use serin_testkit::LONG;

/// A field of `/proc/<pid>/status` in KiB (VmRSS, VmHWM).
fn kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
#[ignore = "benchmark: prints figures"]
async fn hostile_tenants_beside_an_ordinary_one() {
    let hung_canaries: usize = std::env::var("SERIN_HOSTILE_HUNG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), ControlPlane::Emulator)
        .start()
        .await;
    let pid = world.controller_pid().unwrap();
    let flood = flood(1024 * 1024 * 1024, false).await;
    let hung = Receiver::start(200).await;
    hung.delay_ms
        .store(600_000, std::sync::atomic::Ordering::SeqCst);

    // The tenants: the flooded one, the hung ones, the ordinary one.
    let templates: kube::Api<serin::api::MetricTemplate> =
        kube::Api::namespaced(world.client.clone(), world.ns());
    world
        .apply(
            &templates,
            json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
                   "metadata": {"name": "flood"},
                   "spec": {"provider": {"type": "prometheus", "address": flood},
                            "query": "vector(1)"}}),
        )
        .await;
    let mut names = vec!["podinfo".to_string(), "flooded".to_string()];
    names.extend((0..hung_canaries).map(|i| format!("hung-{i}")));
    for name in &names {
        world
            .apply(&world.deployments(), deployment(name, "podinfo:6.0.0", 1))
            .await;
        let mut c = canary(name).iterations(5).build();
        if name == "flooded" {
            c["spec"]["analysis"]["threshold"] = json!(100);
            c["spec"]["analysis"]["metrics"] = json!([{"name": "flood", "interval": "1m",
                "templateRef": {"name": "flood"}, "thresholdRange": {"min": 0}}]);
        } else if name.starts_with("hung-") {
            c["spec"]["analysis"]["webhooks"] = json!([{"name": "hangs",
                "type": "confirm-rollout", "url": hung.url, "timeout": "5m"}]);
        }
        world.apply(&world.canaries(), c).await;
    }
    for name in &names {
        world.wait_phase(name, Phase::Initialized, LONG).await;
    }
    let rss_before = kib(pid, "VmRSS");
    let peak_before = kib(pid, "VmHWM");

    // Everyone releases at once; the bomb arrives with them.
    for name in names.iter().skip(1) {
        world.set_image(name, "app", "podinfo:6.0.1").await;
    }
    let mut bomb = canary("bomb").iterations(5).build();
    bomb["spec"]["analysis"]["metrics"] = json!([{"name": "bomb", "interval": "1m",
        "query": "{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}{% endfor %}",
        "thresholdRange": {"max": 1}}]);
    let query = bomb["spec"]["analysis"]["metrics"][0]["query"]
        .as_str()
        .unwrap();
    let rendering = Instant::now();
    assert!(serin::analysis::template::check_cost(query).is_err());
    let render_refused = rendering.elapsed();
    world
        .apply(&world.deployments(), deployment("bomb", "podinfo:6.0.0", 1))
        .await;
    let bomb_applied = Instant::now();
    world.apply(&world.canaries(), bomb).await;
    world.wait_blocked("bomb").await;
    let bomb_refused = bomb_applied.elapsed();
    let (_, reason, message) = ready_condition(&world.canary("bomb").await).unwrap();
    assert_eq!(reason, "InvalidSpec", "{message}");
    assert!(message.contains("too costly"), "{message}");

    // The ordinary release, step by step: when did each step run?
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    let started = Instant::now();
    let mut steps: Vec<chrono::DateTime<chrono::Utc>> = Vec::new();
    let poll = Poll::new(LONG).every(Duration::from_millis(100));
    loop {
        let status = world.canary("podinfo").await.status.unwrap_or_default();
        if let Some(at) = status.last_step_time
            && steps.last() != Some(&at)
        {
            steps.push(at);
        }
        if status.phase == Phase::Succeeded {
            break;
        }
        assert!(
            !poll.expired(),
            "podinfo did not succeed: {:?}",
            status.phase
        );
        poll.next().await;
    }
    let released = started.elapsed();
    let gaps: Vec<f64> = steps
        .windows(2)
        .map(|w| (w[1] - w[0]).as_seconds_f64())
        .collect();
    let flooded = world.canary("flooded").await.status.unwrap_or_default();
    let rss_after = kib(pid, "VmRSS");
    let peak_after = kib(pid, "VmHWM");

    println!("hostile tenants beside an ordinary one (emulator, {hung_canaries} hung webhooks):");
    println!(
        "  controller RSS {:.1} -> {:.1} MiB, peak {:.1} -> {:.1} MiB, while a 1 GiB answer was \
         read {} times (flooded Canary: {} failed checks, phase {})",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        peak_before as f64 / 1024.0,
        peak_after as f64 / 1024.0,
        flooded.iterations + flooded.failed_checks,
        flooded.failed_checks,
        flooded.phase,
    );
    println!(
        "  template bomb: rendering refused in {:.1} ms; the Canary Ready=False InvalidSpec {:.0} \
         ms after it was applied (in the burst of releases)",
        render_refused.as_secs_f64() * 1000.0,
        bomb_refused.as_secs_f64() * 1000.0
    );
    println!(
        "  ordinary Canary (1 s interval, 5 iterations): released in {:.1} s; gaps between its \
         steps {:?} s",
        released.as_secs_f64(),
        gaps.iter()
            .map(|g| (g * 100.0).round() / 100.0)
            .collect::<Vec<_>>(),
    );
    // The analysis steps come one interval apart; the last gap (to the promotion) is two by
    // design, hostile tenants or not.
    let (analysis, last) = gaps.split_at(gaps.len().saturating_sub(1));
    assert!(
        analysis.iter().all(|g| *g < 1.5) && last.iter().all(|g| *g < 2.5),
        "a step waited: {gaps:?}"
    );
    assert!(
        peak_after - peak_before < 64 * 1024,
        "peak RSS grew by more than 64 MiB"
    );
}
