//! Metric providers stopped mid-analysis: Prometheus (behind a TCP switch that refuses and
//! cuts connections), Datadog and New Relic (their emulators answering 503). With
//! `noDataPolicy: hold` no release advances, fails a check or is promoted while its provider
//! is down; each resumes and is promoted once it answers again; a release whose provider
//! never returns fails at its progress deadline. (Under the default `fail`, an outage counts
//! failed checks and rolls the release back, as Flagger: `tests/providers/analysis.rs`.)

use std::time::Duration;

use serde_json::{Value, json};
use serin::api::canary::MetricVerdict;
use serin_core::Phase;
use serin_stack::testing::switch::Switch;
use serin_stack::{FaultMode, ProviderFault};
use serin_testkit::LONG;
use serin_testkit::{ControlPlane, Poll, World, WorldConfig, deployment};

/// How long the providers stay down: several analysis intervals.
const OUTAGE: Duration = Duration::from_secs(12);

fn metric(provider: &str, prometheus: &str) -> (Value, Option<String>) {
    let hold = |m: Value| {
        let mut m = m;
        m["noDataPolicy"] = json!("hold");
        m
    };
    match provider {
        "datadog" => (
            hold(
                json!({"name": "error-rate", "templateRef": {"name": "datadog-apm-error-rate"},
                "thresholdRange": {"max": 1}, "interval": "5s"}),
            ),
            None,
        ),
        "newrelic" => (
            hold(
                json!({"name": "error-rate", "templateRef": {"name": "newrelic-apm-error-rate"},
                "thresholdRange": {"max": 1}, "interval": "5s"}),
            ),
            None,
        ),
        _ => (
            hold(
                json!({"name": "request-success-rate", "thresholdRange": {"min": 99},
                "interval": "10s"}),
            ),
            Some(prometheus.to_string()),
        ),
    }
}

fn canary(name: &str, metric: Value, metrics_server: Option<String>, deadline: u32) -> Value {
    let mut c = serin_testkit::canary(name)
        .deadline(deadline)
        .analysis(json!({"interval": "2s", "threshold": 2, "iterations": 5, "metrics": [metric]}));
    if let Some(address) = metrics_server {
        c = c.spec("metricsServer", json!(address));
    }
    c.build()
}

/// `(phase, iterations, failed checks)` of a Canary.
async fn progress(world: &World, name: &str) -> (Phase, i32, i32) {
    let s = world.canary(name).await.status.unwrap_or_default();
    (s.phase, s.iterations, s.failed_checks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_outages_hold_releases_until_the_provider_returns() {
    // (Canary, provider); `gone` loses its Prometheus for good.
    let cases = [
        ("prom", "prometheus"),
        ("dd", "datadog"),
        ("nr", "newrelic"),
        ("gone", "prometheus"),
    ];
    let mut scenario = String::from(
        "workloads:\n  readyDelay: 0s\ntraffic:\n  provider: kubernetes\n  services:\n",
    );
    for (name, _) in cases {
        for service in [name.to_string(), format!("{name}-canary")] {
            scenario.push_str(&format!("    - name: {service}\n      rate: 20\n"));
        }
    }
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), ControlPlane::Emulator)
        .scenario(&scenario)
        .prometheus()
        .saas()
        .start()
        .await;
    world.saas_templates().await;
    let target = world
        .stack
        .prometheus_url()
        .unwrap()
        .trim_start_matches("http://");
    let prometheus = Switch::start(target).await;
    let lost = Switch::start(target).await;
    for (name, provider) in cases {
        let (address, deadline) = match name {
            "gone" => (&lost.url, 20),
            _ => (&prometheus.url, 120),
        };
        let (metric, server) = metric(provider, address);
        world
            .apply(&world.deployments(), deployment(name, "podinfo:1", 1))
            .await;
        world
            .apply(&world.canaries(), canary(name, metric, server, deadline))
            .await;
    }
    for (name, _) in cases {
        world.wait_phase(name, Phase::Initialized, LONG).await;
        world.set_image(name, "app", "podinfo:2").await;
    }
    for (name, _) in cases {
        world.wait_iterations(name, 1).await;
    }

    // Everything goes down.
    prometheus.set_up(false);
    lost.set_up(false);
    let down = ProviderFault {
        mode: FaultMode::Error,
        status: Some(503),
        count: None,
    };
    world.stack.datadog_faults().set(down.clone());
    world.stack.newrelic_faults().set(down);
    // A step already past its query may still finish: read the progress once every release
    // has held on a query that failed since (its status says so, and a Canary's reconciles
    // run one at a time, so that step is over).
    for (name, _) in cases {
        world
            .wait_canary(
                name,
                "a check held on the outage",
                Duration::from_secs(60),
                |c| {
                    c.status
                        .as_ref()
                        .and_then(|s| s.metrics.as_ref()?.first().map(|m| m.verdict))
                        == Some(MetricVerdict::Error)
                },
            )
            .await;
    }
    let mut held = Vec::new();
    for (name, _) in cases {
        held.push(progress(&world, name).await);
    }
    // Looks through the whole outage: its length is the test's.
    let outage = Poll::new(OUTAGE).every(Duration::from_millis(500));
    while !outage.expired() {
        for (i, (name, _)) in cases.iter().enumerate() {
            let now = progress(&world, name).await;
            if *name == "gone" && now.0 == Phase::Failed {
                continue;
            }
            assert_eq!(now, held[i], "{name} moved during the outage",);
        }
        outage.next().await;
    }
    for (name, _) in cases {
        let status = world.canary(name).await.status.unwrap_or_default();
        let observed = status.metrics.unwrap_or_default();
        let m = observed.first().unwrap();
        assert_eq!(m.verdict, MetricVerdict::Error, "{name}: {m:?}");
        assert!(
            m.message
                .as_deref()
                .unwrap_or_default()
                .contains("waiting for"),
            "{name}: {m:?}"
        );
    }
    println!(
        "outage: {} s with no step, failed check or promotion",
        OUTAGE.as_secs()
    );

    // Back, except `gone`'s.
    prometheus.set_up(true);
    world.stack.datadog_faults().clear();
    world.stack.newrelic_faults().clear();
    for (name, _) in &cases[..3] {
        world.wait_phase(name, Phase::Succeeded, LONG).await;
    }
    let gone = world.wait_phase("gone", Phase::Failed, LONG).await;
    assert!(
        world
            .events("gone")
            .await
            .iter()
            .any(|e| e.contains("Progress deadline exceeded")),
        "{:?}",
        gone.status
    );
    println!(
        "outage: prometheus, datadog and newrelic releases promoted once back; the one without a provider failed at its deadline"
    );
}
