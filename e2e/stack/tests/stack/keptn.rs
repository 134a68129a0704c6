//! The Keptn metrics operator stand-in: KeptnMetrics valued and Analyses completed from the
//! traffic world, through the API.

use serin_stack::testing as common;

use common::*;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};
use serin_stack::{Scenario, Stack, StackConfig};
use std::path::PathBuf;
use std::time::Duration;

/// A stack with Keptn's CRDs and stand-in, whose world has run 10 s: `podinfo-primary`
/// healthy and the `podinfo` canary failing 30 %, 20 requests/s each.
async fn world() -> (Stack, kube::Client) {
    let crds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/keptn.yaml");
    let stack = Stack::start(StackConfig {
        scenario: Scenario::parse("workloads:\n  readyDelay: 0s\n").unwrap(),
        manual_traffic_clock: true,
        keptn: true,
        crds: vec![crds],
        ..StackConfig::default()
    })
    .await
    .unwrap();
    let client = client(&stack);
    podinfo(&client, "podinfo:6.0.0", "podinfo:6.0.1-faulty").await;
    stack.traffic().reroute();
    for _ in 0..10 {
        stack.traffic().step(Duration::from_secs(1));
    }
    (stack, client)
}

fn api(client: &kube::Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metrics.keptn.sh", "v1beta1", kind),
        plural,
    );
    Api::namespaced_with(client.clone(), "default", &ar)
}

/// Polls `object`'s `pointer` until it is `Some`, for up to 10 s.
async fn eventually(api: &Api<DynamicObject>, name: &str, pointer: &str) -> Value {
    serin_stack::testing::poll::Poll::new(format!("{name}: {pointer}"), Duration::from_secs(10))
        .until(|| async {
            let object = api.get(name).await.unwrap();
            object
                .data
                .pointer(pointer)
                .filter(|v| !v.is_null())
                .cloned()
        })
        .await
}

fn metric(name: &str, query: &str) -> Value {
    json!({"apiVersion": "metrics.keptn.sh/v1beta1", "kind": "KeptnMetric",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"provider": {"name": "world"}, "query": query, "fetchIntervalSeconds": 1,
                 "range": {"interval": "30s"}}})
}

#[tokio::test]
async fn keptn_metrics_get_the_worlds_values() {
    let (stack, client) = world().await;
    create(
        &client,
        metric("canary-success", "request-success-rate{workload=podinfo}"),
    )
    .await;
    create(
        &client,
        metric("apex", "request-success-rate{service=podinfo}"),
    )
    .await;
    create(
        &client,
        metric("quiet", "request-success-rate{workload=nothing}"),
    )
    .await;
    create(&client, metric("promql", "sum(rate(x[1m]))")).await;
    let metrics = api(&client, "KeptnMetric", "keptnmetrics");
    assert_eq!(
        eventually(&metrics, "canary-success", "/status/value").await,
        "70"
    );
    assert_eq!(eventually(&metrics, "apex", "/status/value").await, "100");
    let quiet = eventually(&metrics, "quiet", "/status/errMsg").await;
    assert!(quiet.as_str().unwrap().contains("no requests"), "{quiet}");
    assert_eq!(
        metrics.get("quiet").await.unwrap().data["status"]["value"],
        ""
    );
    let promql = eventually(&metrics, "promql", "/status/errMsg").await;
    assert!(
        promql.as_str().unwrap().contains("unknown measure"),
        "{promql}"
    );
    stack.shutdown().await;
}

fn analysis(name: &str, definition: &str, args: Value) -> DynamicObject {
    serde_json::from_value(
        json!({"apiVersion": "metrics.keptn.sh/v1beta1", "kind": "Analysis",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"analysisDefinition": {"name": definition}, "timeframe": {"recent": "30s"},
                 "args": args}}),
    )
    .unwrap()
}

#[tokio::test]
async fn analyses_complete_with_the_definitions_verdict() {
    let (stack, client) = world().await;
    create(
        &client,
        json!({"apiVersion": "metrics.keptn.sh/v1beta1", "kind": "AnalysisValueTemplate",
            "metadata": {"name": "success-rate", "namespace": "default"},
            "spec": {"provider": {"name": "world"},
                     "query": "request-success-rate{workload={{.workload}}}"}}),
    )
    .await;
    create(
        &client,
        json!({"apiVersion": "metrics.keptn.sh/v1beta1", "kind": "AnalysisDefinition",
            "metadata": {"name": "healthy", "namespace": "default"},
            "spec": {"objectives": [{"analysisValueTemplateRef": {"name": "success-rate"},
                                     "target": {"failure": {"lessThan": {"fixedValue": 99}}},
                                     "weight": 1, "keyObjective": true}],
                     "totalScore": {"passPercentage": 100, "warningPercentage": 50}}}),
    )
    .await;
    let analyses = api(&client, "Analysis", "analyses");
    let post = PostParams::default();
    // The orphan (its definition missing) first: any pass that completes a later one has
    // seen it too.
    let run = [
        ("orphan", "missing", json!({"workload": "podinfo"})),
        ("primary", "healthy", json!({"workload": "podinfo-primary"})),
        ("canary", "healthy", json!({"workload": "podinfo"})),
        ("no-arg", "healthy", json!({})),
    ];
    for (name, definition, args) in &run {
        analyses
            .create(&post, &analysis(name, definition, args.clone()))
            .await
            .unwrap();
    }
    assert_eq!(eventually(&analyses, "primary", "/status/pass").await, true);
    let canary = eventually(&analyses, "canary", "/status/pass").await;
    assert_eq!(canary, false);
    let done = analyses.get("canary").await.unwrap();
    assert_eq!(done.data["status"]["state"], "Completed");
    let raw: Value = serde_json::from_str(done.data["status"]["raw"].as_str().unwrap()).unwrap();
    assert_eq!(raw["objectiveResults"][0]["value"], 70.0, "{raw}");
    assert_eq!(eventually(&analyses, "no-arg", "/status/pass").await, false);
    let orphan = analyses.get("orphan").await.unwrap();
    assert!(orphan.data.pointer("/status/state").is_none(), "{orphan:?}");
    stack.shutdown().await;
}
