//! Benchmark (ignored by default): the API requests serin makes for one Canary through each
//! router — to initialize it, for one release (`stepWeight: 20`, `maxWeight: 60`, 1 s
//! interval, no metric checks), and over ten idle reconciles afterwards — counted by the controller
//! itself (`serin_api_requests_total{method,resource}`), on both control planes.
//!
//! ```sh
//! cargo test --test benchmarks requests:: -- --ignored --nocapture
//! # one provider, one control plane
//! SERIN_BENCH_PROVIDERS=istio SERIN_BENCH_CONTROL_PLANES=real cargo test --test benchmarks requests:: -- --ignored --nocapture
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use serin_core::Phase;
use serin_testkit::{ControlPlane, LONG, World, WorldConfig, deployment, requests_between};

fn list(key: &str, default: &str) -> Vec<String> {
    std::env::var(key)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(str::to_string)
        .collect()
}

/// Requests by resource (methods summed), for the printout.
fn by_resource(made: &BTreeMap<String, f64>) -> String {
    let mut resources: BTreeMap<String, f64> = BTreeMap::new();
    for (labels, n) in made {
        let resource = labels
            .split("resource=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        *resources.entry(resource.to_string()).or_default() += n;
    }
    resources
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reconciles of the idle Canary the idle figure is counted over.
const IDLE_RECONCILES: f64 = 10.0;

/// Waits for the event `needle`: the announcements of a phase are delivered after it.
async fn announced(world: &World, needle: &str) {
    world.wait_event("podinfo", needle, LONG).await;
}

/// One provider's figures: (initialization, release, idle) request counts.
/// The requests of initialization, the release and the idle window, and the reconciles of the
/// release.
async fn measure(cp: ControlPlane, provider: &str) -> ([BTreeMap<String, f64>; 3], f64) {
    // The traffic world of the provider: it also serves the Gateway API's Gateway `public`.
    let world_provider = provider.split(':').next().unwrap_or(provider);
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp)
        .scenario(&format!(
            "workloads:\n  readyDelay: 0s\ntraffic:\n  provider: {world_provider}\n  services:\n    \
             - name: podinfo\n      rate: 20\n"
        ))
        .routing_crds()
        .mesh_provider(provider)
        .start()
        .await;
    world
        .apply(
            &world.deployments(),
            deployment("podinfo", "podinfo:6.0.0", 2),
        )
        .await;
    if provider == "nginx" {
        let ingresses = kube::Api::<k8s_openapi::api::networking::v1::Ingress>::namespaced(
            world.client.clone(),
            world.ns(),
        );
        world.apply(&ingresses, serin_testkit::apex_ingress()).await;
    }
    let start = world.api_requests().await;
    let canary = serin_testkit::canary("podinfo")
        .routed_by(provider)
        .analysis(json!({"interval": "1s", "threshold": 2, "stepWeight": 20, "maxWeight": 60}))
        .build();
    world.apply(&world.canaries(), canary).await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    announced(&world, "Initialization done!").await;
    let initialized = world.api_requests().await;
    let reconciles_before = world.reconciles().await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    announced(&world, "Promotion completed!").await;
    let released = world.api_requests().await;
    let release_reconciles = world.reconciles().await - reconciles_before;
    // The idle window: ten more reconciles of the idle Canary (one per 1 s interval), each
    // of which would have made its requests by then.
    let reconciled = world.reconciles().await;
    let poll = serin_testkit::Poll::new(LONG).every(Duration::from_millis(200));
    while world.reconciles().await < reconciled + IDLE_RECONCILES {
        assert!(
            !poll.expired(),
            "{IDLE_RECONCILES} idle reconciles within {LONG:?}"
        );
        poll.next().await;
    }
    let idle = world.api_requests().await;
    let requests = [
        requests_between(&start, &initialized),
        requests_between(&initialized, &released),
        requests_between(&released, &idle),
    ];
    (requests, release_reconciles)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn api_requests_per_canary_by_router() {
    let providers = list(
        "SERIN_BENCH_PROVIDERS",
        "istio,gatewayapi:v1,linkerd,nginx,kubernetes",
    );
    let planes = list("SERIN_BENCH_CONTROL_PLANES", "emulator,real");
    println!(
        "| control plane | provider | initialization | release | idle, 10 reconciles | reconciles in the release |"
    );
    println!("|---|---|---|---|---|---|");
    for plane in &planes {
        let cp = match plane.as_str() {
            "real" => ControlPlane::Real,
            _ => ControlPlane::Emulator,
        };
        for provider in &providers {
            let ([init, release, idle], reconciles) = measure(cp, provider).await;
            // `+ 0.0`: an empty sum is -0.0.
            let total = |m: &BTreeMap<String, f64>| m.values().sum::<f64>() + 0.0;
            println!(
                "| {plane} | {provider} | {} | {} | {} | {reconciles} |",
                total(&init),
                total(&release),
                total(&idle)
            );
            println!("  release by resource: {}", by_resource(&release));
            if total(&idle) > 0.0 {
                println!("  idle by resource: {}", by_resource(&idle));
            }
        }
    }
}
