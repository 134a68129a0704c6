//! Measures the traffic world at scale: 300 canaried apps (Flagger's layout: 2 Deployments,
//! 3 Services and an Istio VirtualService each) in 10 namespaces, under the istio provider.
//! Prints the cost of one routing pass (`reroute`, which holds the store lock), of one
//! accrual step, of rendering `/traffic/metrics` and its size, and the real Prometheus's
//! start time and scrape duration of that endpoint.
//!
//! `cargo run -p serin-stack --release --example traffic_bench`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use serin_stack::{Scenario, Stack, StackConfig};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAMESPACES: usize = 10;
const APPS: usize = 300;

async fn get(url: &str) -> String {
    let rest = url.trim_start_matches("http://");
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}

fn populate(stack: &Stack) {
    stack
        .create(json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "virtualservices.networking.istio.io"},
            "spec": {"group": "networking.istio.io", "scope": "Namespaced",
                "names": {"plural": "virtualservices", "singular": "virtualservice", "kind": "VirtualService"},
                "versions": [{"name": "v1beta1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}))
        .unwrap();
    for n in 0..NAMESPACES {
        stack
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns-{n}")}}))
            .unwrap();
    }
    for a in 0..APPS {
        let ns = format!("ns-{}", a % NAMESPACES);
        let app = format!("app-{a}");
        for (name, image) in [
            (format!("{app}-primary"), "podinfo:6.0.0"),
            (app.clone(), "podinfo:6.0.1-faulty"),
        ] {
            stack
                .create(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}},
                            "spec": {"containers": [{"name": "app", "image": image}]}}}}))
                .unwrap();
        }
        for (svc, selects) in [
            (app.clone(), format!("{app}-primary")),
            (format!("{app}-primary"), format!("{app}-primary")),
            (format!("{app}-canary"), app.clone()),
        ] {
            stack
                .create(json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": svc, "namespace": ns},
                    "spec": {"selector": {"app": selects}, "ports": [{"port": 9898}]}}))
                .unwrap();
        }
        stack
            .create(
                json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                "metadata": {"name": app, "namespace": ns},
                "spec": {"hosts": [app], "http": [{"route": [
                    {"destination": {"host": format!("{app}-primary")}, "weight": 90},
                    {"destination": {"host": format!("{app}-canary")}, "weight": 10}]}]}}),
            )
            .unwrap();
    }
}

fn time<F: FnMut()>(runs: u32, mut f: F) -> Duration {
    let start = Instant::now();
    for _ in 0..runs {
        f();
    }
    start.elapsed() / runs
}

#[tokio::main]
async fn main() {
    let scenario =
        Scenario::parse("workloads:\n  readyDelay: 0s\ntraffic:\n  provider: istio\n").unwrap();
    let stack = Stack::start(StackConfig {
        scenario: scenario.clone(),
        manual_traffic_clock: true,
        ..StackConfig::default()
    })
    .await
    .unwrap();
    populate(&stack);
    tokio::time::sleep(Duration::from_secs(2)).await; // the simulator makes everything ready
    stack.traffic().reroute();
    let world = stack.traffic();
    let flows = world.describe()["workloads"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    let reroute = time(20, || world.reroute());
    let step = time(20, || world.step(Duration::from_secs(1)));
    let url = format!("{}/traffic/metrics", stack.admin_url().unwrap());
    let mut size = 0;
    let start = Instant::now();
    for _ in 0..10 {
        size = get(&url).await.len();
    }
    let render = start.elapsed() / 10;
    println!(
        "{APPS} apps ({} Deployments, {} Services, {APPS} VirtualServices) in {NAMESPACES} namespaces: {flows} workloads get traffic",
        APPS * 2,
        APPS * 3
    );
    println!("routing pass (reroute): {reroute:.2?}; accrual step: {step:.2?}");
    println!(
        "GET /traffic/metrics: {render:.2?}, {} KiB, {} lines",
        size / 1024,
        get(&url).await.lines().count()
    );
    stack.shutdown().await;

    // The real Prometheus scraping the same world in real time.
    let start = Instant::now();
    let stack = match Stack::start(StackConfig {
        scenario,
        prometheus: true,
        ..StackConfig::default()
    })
    .await
    {
        Ok(s) => s,
        Err(e) => {
            println!("prometheus: not measured ({e:#})");
            return;
        }
    };
    let started = start.elapsed();
    populate(&stack);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let prom = stack.prometheus_url().unwrap();
    let q = |expr: &str| {
        format!(
            "{prom}/api/v1/query?query={}",
            form_urlencoded::byte_serialize(expr.as_bytes()).collect::<String>()
        )
    };
    let value = |body: String| -> String {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"][0]["value"][1]
            .as_str()
            .unwrap_or("none")
            .to_string()
    };
    let scrape = value(
        get(&q(
            "max_over_time(scrape_duration_seconds{job=\"serin-stack\"}[10s])",
        ))
        .await,
    );
    let samples = value(get(&q("scrape_samples_scraped{job=\"serin-stack\"}")).await);
    println!(
        "prometheus: stack with Prometheus ready in {started:.2?}; slowest scrape of the world over 10 s: {scrape} s, {samples} samples per scrape"
    );
    stack.shutdown().await;
}
