//! Flagger's builtin queries (reference: flagger.md section 4.2), run unchanged in the real
//! Prometheus the stack starts, return the configured success rate and latency within 5 %.
//! Needs the `prometheus` binary (`scripts/setup` installs it).

use serin_stack::testing as common;

use common::poll::Poll;
use common::*;
use serde_json::{Value, json};
use serin_stack::{Scenario, Stack, StackConfig};
use std::time::Duration;

async fn start(provider: &str) -> Stack {
    let scenario = Scenario::parse(&format!(
        "workloads:\n  readyDelay: 0s\ntraffic:\n  provider: {provider}\n  services:\n    - name: podinfo\n      rate: 50\n"
    ))
    .unwrap();
    Stack::start(StackConfig {
        scenario,
        prometheus: true,
        ..StackConfig::default()
    })
    .await
    .unwrap()
}

/// Runs an instant query (whitespace collapsed, as Flagger sends it) until it has a value.
async fn query(prometheus: &str, q: &str) -> f64 {
    let q = q.split_whitespace().collect::<Vec<_>>().join(" ");
    let url = format!("{prometheus}/api/v1/query?query={}", enc(&q));
    Poll::new(format!("a value for {q}"), Duration::from_secs(30))
        .every(Duration::from_millis(500))
        .until(|| async {
            let (code, _, body) = http("GET", &url, &[], "").await;
            assert_eq!(code, 200, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            v["data"]["result"][0]["value"][1]
                .as_str()
                .map(|s| s.parse::<f64>().unwrap())
                .filter(|x| x.is_finite())
                .ok_or(body)
        })
        .await
}

/// Asserts that query `q` answers `want` (within 5 %).
async fn assert_query(prometheus: &str, q: &str, want: f64, what: &str) {
    assert_near(query(prometheus, q).await, want, what);
}

#[tokio::test]
async fn builtin_queries_istio_and_app_metrics() {
    // The apex splits 50/50 between a healthy primary and a canary failing 30 % (the
    // default `faulty` rule); both answer in 50 ms (the default latency).
    let stack = start("istio").await;
    let prom = stack.prometheus_url().unwrap().to_string();
    let c = client(&stack);
    podinfo_split_by_istio(&c, "podinfo:6.0.0", "podinfo:6.0.1-faulty").await;

    let (ns, target, i) = ("default", "podinfo", "1m");
    let istio_rate = |t: &str| {
        format!(
            r#"sum(rate(istio_requests_total{{reporter="destination", destination_workload_namespace="{ns}",
            destination_workload=~"{t}", response_code!~"5.*"}}[{i}]))
            / sum(rate(istio_requests_total{{reporter="destination", destination_workload_namespace="{ns}",
            destination_workload=~"{t}"}}[{i}])) * 100"#
        )
    };
    assert_query(
        &prom,
        &istio_rate(target),
        70.0,
        "istio success rate, canary",
    )
    .await;
    assert_query(
        &prom,
        &istio_rate("podinfo-primary"),
        100.0,
        "istio success rate, primary",
    )
    .await;
    let istio_duration = format!(
        r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{reporter="destination",
        destination_workload_namespace="{ns}", destination_workload=~"{target}"}}[{i}])) by (le))"#
    );
    assert_query(&prom, &istio_duration, 50.0, "istio P99 ms").await;

    // The kubernetes/gatewayapi observer: the app's histogram, pods of the target only
    // (`podinfo-primary-...` pods do not match the pattern).
    let pods = format!("{target}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)");
    let app_rate = format!(
        r#"sum(rate(http_request_duration_seconds_count{{kubernetes_namespace="{ns}", kubernetes_pod_name=~"{pods}", status!~"5.*"}}[{i}]))
        / sum(rate(http_request_duration_seconds_count{{kubernetes_namespace="{ns}", kubernetes_pod_name=~"{pods}"}}[{i}])) * 100"#
    );
    assert_query(&prom, &app_rate, 70.0, "app success rate").await;
    let app_duration = format!(
        r#"histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{{kubernetes_namespace="{ns}",
        kubernetes_pod_name=~"{pods}"}}[{i}])) by (le))"#
    );
    assert_near(
        query(&prom, &app_duration).await * 1000.0,
        50.0,
        "app P99 ms",
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn builtin_queries_linkerd() {
    let stack = start("linkerd").await;
    let prom = stack.prometheus_url().unwrap().to_string();
    let c = client(&stack);
    podinfo(&c, "podinfo:6.0.0", "podinfo:6.0.1-faulty").await;
    podinfo_split_by_smi(&c, "500m", "500m").await;
    let (ns, target, i) = ("default", "podinfo", "1m");
    let linkerd_rate = format!(
        r#"sum(rate(response_total{{namespace="{ns}", deployment=~"{target}", classification!="failure", direction="inbound"}}[{i}]))
        / sum(rate(response_total{{namespace="{ns}", deployment=~"{target}", direction="inbound"}}[{i}])) * 100"#
    );
    assert_query(&prom, &linkerd_rate, 70.0, "linkerd success rate").await;
    let linkerd_duration = format!(
        r#"histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{{namespace="{ns}", deployment=~"{target}",
        direction="inbound"}}[{i}])) by (le))"#
    );
    assert_query(&prom, &linkerd_duration, 50.0, "linkerd P99 ms").await;

    stack.shutdown().await;
}

#[tokio::test]
async fn builtin_queries_nginx() {
    // A canary Ingress at weight 40 in front of a slow canary (the default `slow` rule:
    // 1.5 s, no errors) and a healthy primary.
    let stack = start("nginx").await;
    let prom = stack.prometheus_url().unwrap().to_string();
    let c = client(&stack);
    podinfo(&c, "podinfo:6.0.0", "podinfo:6.0.2-slow").await;
    // The canary Ingress first: once the main one exists, every request goes through both.
    create(&c, canary_ingress(&[("canary-weight", "40")])).await;
    create(&c, ingress("podinfo", "podinfo", json!({}))).await;
    let (ns, ing, i) = ("default", "podinfo", "1m");
    let rate = format!(
        r#"sum(rate(nginx_ingress_controller_requests{{namespace="{ns}", ingress="{ing}", canary!="", status!~"5.*"}}[{i}]))
        / sum(rate(nginx_ingress_controller_requests{{namespace="{ns}", ingress="{ing}", canary!=""}}[{i}])) * 100"#
    );
    assert_query(&prom, &rate, 100.0, "nginx success rate of the canary").await;
    let duration = format!(
        r#"sum(rate(nginx_ingress_controller_response_duration_seconds_sum{{namespace="{ns}", ingress="{ing}", canary!=""}}[{i}]))
        / sum(rate(nginx_ingress_controller_response_duration_seconds_count{{namespace="{ns}", ingress="{ing}", canary!=""}}[{i}])) * 1000"#
    );
    assert_query(
        &prom,
        &duration,
        1500.0,
        "nginx average ms of the slow canary",
    )
    .await;
    // The share of requests the canary got, from the same counters: weight 40.
    let share = format!(
        r#"sum(rate(nginx_ingress_controller_requests{{namespace="{ns}", ingress="{ing}", canary!=""}}[{i}]))
        / sum(rate(nginx_ingress_controller_requests{{namespace="{ns}", ingress="{ing}"}}[{i}])) * 100"#
    );
    assert_query(&prom, &share, 40.0, "canary share through the ingress").await;
    stack.shutdown().await;
}
