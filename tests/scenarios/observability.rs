//! The controller's `/metrics`, `/healthz` and `/readyz`: Flagger's series with Flagger's
//! names and label names (tests/fixtures/flagger-metrics.txt), labelled with the target's
//! name, and a canary's series gone with the Canary.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use serin_core::Phase;

use crate::harness::{self, ControlPlane, World, WorldConfig, deployment, wait_until};

use serin_testkit::LONG;

/// Flagger's families: name → (type, label names in order).
fn flagger_families() -> BTreeMap<String, (String, Vec<String>)> {
    let text = std::fs::read_to_string(serin_testkit::workspace_file(
        "tests/fixtures/flagger-metrics.txt",
    ))
    .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            let labels = parts[2].split(',').map(String::from).collect();
            (parts[0].to_string(), (parts[1].to_string(), labels))
        })
        .collect()
}

/// Samples of the exposition: `(sample name, [(label, value)])`.
fn samples(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, _value) = l.rsplit_once(' ').unwrap();
            let Some((name, labels)) = series.split_once('{') else {
                return (series.to_string(), Vec::new());
            };
            let labels = labels
                .trim_end_matches('}')
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            (name.to_string(), labels)
        })
        .collect()
}

/// The Flagger family a sample belongs to, and the label names it must carry.
fn family_of<'a>(
    families: &'a BTreeMap<String, (String, Vec<String>)>,
    sample: &str,
) -> Option<(&'a str, Vec<String>)> {
    if let Some((name, (_, labels))) = families.get_key_value(sample) {
        return Some((name, labels.clone()));
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        let Some(base) = sample.strip_suffix(suffix) else {
            continue;
        };
        if let Some((name, (kind, labels))) = families.get_key_value(base)
            && kind == "histogram"
        {
            let mut labels = labels.clone();
            if suffix == "_bucket" {
                labels.push("le".into());
            }
            return Some((name, labels));
        }
    }
    None
}

async fn metrics(world: &World) -> String {
    let (status, body) = world.controller_http("/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Runs a promotion then a failed release of `podinfo` under a Canary named differently.
async fn release_twice(world: &World) {
    world.constant_template("constant", 99.0).await;
    world
        .apply(
            &world.deployments(),
            deployment("podinfo", "podinfo:6.0.0", 1),
        )
        .await;
    let mut canary = serin_testkit::canary("podinfo-release")
        .deadline(10)
        .analysis(
            json!({"interval": "1s", "threshold": 1, "iterations": 2, "metrics": [
                {"name": "constant", "templateRef": {"name": "constant"},
                 "thresholdRange": {"min": 1}, "interval": "1m"}
            ]}),
        )
        .build();
    canary["spec"]["targetRef"]["name"] = json!("podinfo");
    world.apply(&world.canaries(), canary).await;
    world
        .wait_phase("podinfo-release", Phase::Initialized, LONG)
        .await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world
        .wait_phase("podinfo-release", Phase::Succeeded, LONG)
        .await;
    world.set_image("podinfo", "app", "podinfo:broken").await;
    world
        .wait_phase("podinfo-release", Phase::Failed, LONG)
        .await;
}

/// A Canary with nothing to do costs the API server nothing: no polling, no status rewrites
/// (the controller's own count of its API requests does not move while it reconciles).
async fn an_idle_canary_makes_no_api_requests(cp: ControlPlane) {
    let world = harness::world(cp).await;
    harness::initialized(&world, "podinfo", 2).await;
    world
        .wait_event("podinfo", "Initialization done!", LONG)
        .await;
    world.assert_idle_makes_no_api_requests().await;
}

async fn controller_metrics_are_flaggers_and_go_with_the_canary(cp: ControlPlane) {
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp)
        .scenario("workloads:\n  readyDelay: 0s\n")
        .prometheus()
        .start()
        .await;
    let families = flagger_families();
    release_twice(&world).await;
    // One controller, so no other writer of the status: a write refused by its precondition
    // (a race with the outbox's removal of delivered announcements) is written again on the
    // fresh copy, never dropped.
    let refused =
        serin_testkit::metric_sum(&metrics(&world).await, "serin_status_writes_refused_total");
    println!("{cp:?}: status writes refused as stale over two releases: {refused}");
    assert_eq!(
        refused, 0.0,
        "status writes dropped with a single controller"
    );

    // Every Flagger family is there (the canary count is refreshed every 10 s), with exactly
    // Flagger's label names, and canary series name the target, not the Canary.
    let complete = |text: &str| {
        let seen: BTreeSet<&str> = samples(text)
            .iter()
            .filter_map(|(name, _)| family_of(&families, name).map(|(f, _)| f))
            .collect();
        seen.len() == families.len()
    };
    wait_until(LONG, "every Flagger family on /metrics", || async {
        complete(&metrics(&world).await)
    })
    .await;
    let text = metrics(&world).await;
    for (name, labels) in samples(&text) {
        if !name.starts_with("flagger_") {
            continue;
        }
        let (_, expected) = family_of(&families, &name)
            .unwrap_or_else(|| panic!("{name} is not one of Flagger's series\n{text}"));
        let got: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(got, expected, "label names of {name}\n{text}");
        for (k, v) in &labels {
            if k == "name" {
                assert_eq!(v, "podinfo", "{name} names the target\n{text}");
            }
        }
    }
    let ns = world.ns();
    let analysis = format!(
        r#"flagger_canary_metric_analysis{{name="podinfo",namespace="{ns}",metric="constant"}} 99"#
    );
    assert!(text.contains(&analysis), "{analysis}\n{text}");
    // serin's own: API requests by method and resource, provider query latency.
    for series in [
        r#"serin_api_requests_total{method="PATCH",resource="canaries"}"#,
        r#"serin_metric_query_duration_seconds_count{provider="prometheus"}"#,
        "serin_reconcile_duration_seconds_count",
    ] {
        assert!(text.contains(series), "{series}\n{text}");
    }
    assert!(
        serin_testkit::metric_sum(&text, "serin_step_lateness_seconds_count") >= 1.0,
        "the analysis steps' lateness is recorded\n{text}"
    );
    // The wakes by the kind that changed: the Canary's creation, the target's new version.
    for kind in ["Canary", "Deployment"] {
        let series = format!(r#"serin_reconcile_triggers_total{{kind="{kind}"}} "#);
        let count: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(count >= 1.0, "{series}\n{text}");
    }
    assert_eq!(world.controller_http("/healthz").await.0, 200);
    assert_eq!(world.controller_http("/readyz").await.0, 200);

    // The Canary goes: its gauges and duration histogram go; the outcome counters stay.
    world.delete_canary("podinfo-release").await;
    wait_until(LONG, "the canary's series removed", || async {
        let text = metrics(&world).await;
        samples(&text).iter().all(|(name, labels)| {
            let per_canary = [
                "flagger_canary_status",
                "flagger_canary_weight",
                "flagger_canary_duration_seconds_count",
                "flagger_canary_metric_analysis",
            ];
            !per_canary.contains(&name.as_str()) || labels.is_empty()
        })
    })
    .await;
    let text = metrics(&world).await;
    assert!(text.contains("flagger_canary_successes_total{"), "{text}");
    assert!(text.contains("flagger_canary_failures_total{"), "{text}");
}

serin_testkit::on_every_control_plane!(
    virtual_time:
    an_idle_canary_makes_no_api_requests,
    ; real_time:
    controller_metrics_are_flaggers_and_go_with_the_canary,
);
