//! Benchmark (ignored by default): `serin dashboard` with many Canaries. Prints the time to
//! its first snapshot and the snapshot's size, the page's first render in headless Chromium,
//! how long a change takes to show on the page, and the dashboard's memory.
//!
//! ```sh
//! cargo test --release --test benchmarks dashboard:: -- --ignored --nocapture
//! SERIN_DASHBOARD_CANARIES=200 cargo test --test benchmarks dashboard:: -- --ignored --nocapture
//! ```
//!
//! The Canaries are written with a status of their own (a release at weight 20 with two
//! metrics and one release in its history) and no controller, so that what is measured is
//! the dashboard alone.

use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use serin::api::Canary;
use serin_testkit::browser::Browser;
use serin_testkit::dashboard::Dashboard;
use serin_testkit::http::EventStream;
use serin_testkit::{ControlPlane, Poll, WorldConfig};

/// A status as a running release has it, at `weight`.
fn status(weight: u32) -> Value {
    json!({"status": {"phase": "Progressing", "canaryWeight": weight, "failedChecks": 0,
        "iterations": 0, "lastTransitionTime": "2026-12-07T08:00:00Z",
        "metrics": [
            {"name": "request-success-rate", "value": 99.5, "thresholdMin": 99.0,
             "verdict": "pass", "time": "2026-12-07T08:00:00Z"},
            {"name": "request-duration", "value": 120.0, "thresholdMax": 500.0,
             "verdict": "pass", "time": "2026-12-07T08:00:00Z"}],
        "history": [{"revision": "v2:abc", "outcome": "Progressing",
                     "started": "2026-12-07T07:59:00Z"}]}})
}

#[tokio::test]
#[ignore = "benchmark: prints figures; see the module's documentation"]
async fn dashboard_with_many_canaries() {
    let n: usize = std::env::var("SERIN_DASHBOARD_CANARIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), ControlPlane::Emulator)
        .scenario("traffic:\n  services: []\n")
        .without_controller()
        .start()
        .await;
    let canaries: Api<Canary> = world.canaries();
    let apply = PatchParams::apply("bench").force();
    for i in 0..n {
        let name = format!("app-{i}");
        let canary = serin_testkit::canary(&name).iterations(10).build();
        canaries
            .patch(&name, &apply, &Patch::Apply(canary))
            .await
            .unwrap();
        canaries
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status(20)))
            .await
            .unwrap();
    }

    let started = Instant::now();
    let dashboard = Dashboard::start(
        env!("CARGO_BIN_EXE_serin"),
        world.stack.kubeconfig_path(),
        &["-n", world.ns()],
    )
    .await;
    let mut stream = EventStream::open(&format!("{}/api/stream", dashboard.url)).await;
    let first = stream.next(Duration::from_secs(120)).await;
    let first_snapshot = started.elapsed();
    let rows = serde_json::from_str::<Value>(&first).unwrap()["rows"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(rows, n, "every Canary in the first snapshot");
    let pid = dashboard.pid().unwrap();
    let (_, rss_listed, _) = crate::scale::usage(pid);

    let browser = Browser::start().await;
    browser.open(&format!("{}/", dashboard.url)).await;
    let poll = Poll::new(Duration::from_secs(120));
    let first_render = loop {
        let shown = browser
            .run(
                "return [document.body.dataset.firstRender || null, \
                  document.querySelectorAll('#canaries tbody tr').length];",
            )
            .await;
        if let (Some(ms), Some(count)) = (shown[0].as_str(), shown[1].as_u64())
            && count as usize == n
        {
            break ms.parse::<f64>().unwrap();
        }
        assert!(!poll.expired(), "the page did not show {n} rows: {shown}");
        poll.next().await;
    };

    // A change to one Canary, until the page shows it.
    let changed = Instant::now();
    canaries
        .patch_status("app-0", &PatchParams::default(), &Patch::Merge(status(40)))
        .await
        .unwrap();
    let shown = format!(
        "const r = document.querySelector('tr[data-canary=\"{}/app-0\"] td[data-weight]'); \
         return r ? r.dataset.weight : null;",
        world.ns()
    );
    let poll = Poll::new(Duration::from_secs(60)).every(Duration::from_millis(20));
    while browser.run(&shown).await != "40" {
        assert!(!poll.expired(), "the change did not show");
        poll.next().await;
    }
    let update = changed.elapsed();
    let (cpu, rss, peak) = crate::scale::usage(pid);
    browser.close().await;

    println!("dashboard with {n} Canaries (each with a status: 2 metrics, 1 release):");
    println!(
        "  first snapshot {:.2} s after start ({} KiB of JSON); first render in Chromium {:.0} ms after the page began to load",
        first_snapshot.as_secs_f64(),
        first.len() / 1024,
        first_render
    );
    println!(
        "  a change to one Canary shown on the page after {:.0} ms",
        update.as_secs_f64() * 1000.0
    );
    println!(
        "  dashboard RSS {rss_listed:.1} MiB once listed, {rss:.1} MiB after (peak {peak:.1} MiB); CPU {cpu:.2} s"
    );
}
