//! The External Metrics API adapter emulator: the documented request shape answered from the
//! traffic world, the token checked, every fault mode produced.

use serin_stack::testing as common;

use common::*;
use serde_json::{Value, json};
use serin_stack::{FaultMode, ProviderFault, Stack, StackConfig};
use std::time::Duration;

const TOKEN: &str = "Bearer serin-external-metrics-token";

/// A stack whose world has run 10 s: `podinfo-primary` healthy behind the apex and the
/// `podinfo` canary failing 30 % behind `podinfo-canary`, 20 requests/s each.
async fn world() -> Stack {
    podinfo_world(StackConfig {
        external_metrics: true,
        ..StackConfig::default()
    })
    .await
}

async fn get(stack: &Stack, path: &str, token: &str) -> (u16, Vec<(String, String)>, Value) {
    let url = format!(
        "{}/apis/external.metrics.k8s.io/v1beta1/namespaces/{path}",
        stack.external_metrics_url().unwrap()
    );
    let (code, headers, body) = http("GET", &url, &[("Authorization", token)], "").await;
    let body = serde_json::from_str(&body).unwrap_or(json!(body));
    (code, headers, body)
}

fn values(list: &Value) -> Vec<(String, String)> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["metricLabels"]["workload"].as_str().unwrap().to_string(),
                i["value"].as_str().unwrap_or("null").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn values_per_workload_as_quantities_with_selectors_and_errors() {
    let stack = world().await;
    let (code, _, all) = get(&stack, "default/request-success-rate", TOKEN).await;
    assert_eq!(code, 200, "{all}");
    assert_eq!(all["kind"], "ExternalMetricValueList");
    assert_eq!(
        values(&all),
        [
            ("podinfo".to_string(), "70".to_string()),
            ("podinfo-primary".to_string(), "100".to_string())
        ]
    );
    let item = &all["items"][0];
    assert_eq!(item["metricName"], "request-success-rate");
    assert_eq!(item["window"], 60);
    assert!(item["timestamp"].as_str().unwrap().ends_with('Z'), "{item}");

    let (_, _, one) = get(
        &stack,
        "default/request-success-rate?labelSelector=workload%3Dpodinfo-primary",
        TOKEN,
    )
    .await;
    assert_eq!(values(&one), [("podinfo-primary".into(), "100".into())]);
    let (_, _, by_service) = get(
        &stack,
        "default/request-success-rate?labelSelector=service%3Dpodinfo-canary",
        TOKEN,
    )
    .await;
    assert_eq!(values(&by_service), [("podinfo".into(), "70".into())]);
    let (code, _, quiet) = get(&stack, "kube-system/request-success-rate", TOKEN).await;
    assert_eq!((code, quiet["items"].clone()), (200, json!([])));

    let (code, _, refused) = get(&stack, "default/request-success-rate", "Bearer nope").await;
    assert_eq!(
        (code, refused["reason"].as_str()),
        (401, Some("Unauthorized"))
    );
    let (code, _, unknown) = get(&stack, "default/queue-length", TOKEN).await;
    assert_eq!((code, unknown["kind"].as_str()), (404, Some("Status")));
    assert!(
        unknown["message"]
            .as_str()
            .unwrap()
            .contains("request-success-rate"),
        "{unknown}"
    );
    let (code, _, bad) = get(
        &stack,
        "default/request-success-rate?labelSelector=a%20in%20(b",
        TOKEN,
    )
    .await;
    assert_eq!((code, bad["reason"].as_str()), (400, Some("BadRequest")));
    stack.shutdown().await;
}

#[tokio::test]
async fn every_fault_mode() {
    let stack = world().await;
    let path = "default/request-success-rate?labelSelector=workload%3Dpodinfo";
    let once = |mode| ProviderFault {
        count: Some(1),
        ..ProviderFault::new(mode)
    };
    stack.external_metrics_faults().set(once(FaultMode::Empty));
    assert_eq!(get(&stack, path, TOKEN).await.2["items"], json!([]));
    stack
        .external_metrics_faults()
        .set(once(FaultMode::SeveralSeries));
    assert_eq!(
        values(&get(&stack, path, TOKEN).await.2),
        [
            ("podinfo".to_string(), "70".to_string()),
            ("podinfo".to_string(), "140".to_string())
        ]
    );
    stack
        .external_metrics_faults()
        .set(once(FaultMode::NullPoints));
    assert_eq!(
        get(&stack, path, TOKEN).await.2["items"][0]["value"],
        Value::Null
    );
    stack
        .external_metrics_faults()
        .set(once(FaultMode::RateLimit));
    let (code, headers, _) = get(&stack, path, TOKEN).await;
    assert_eq!(code, 429);
    assert!(
        headers.contains(&("retry-after".into(), "1".into())),
        "{headers:?}"
    );
    stack.external_metrics_faults().set(ProviderFault {
        status: Some(502),
        ..once(FaultMode::Error)
    });
    let (code, _, body) = get(&stack, path, TOKEN).await;
    assert_eq!(code, 502);
    assert!(body.as_str().unwrap().starts_with("<html>"), "{body}");
    stack.external_metrics_faults().set(once(FaultMode::Hang));
    let hung = tokio::time::timeout(Duration::from_millis(300), get(&stack, path, TOKEN)).await;
    assert!(hung.is_err(), "a hung adapter answered");
    // The counted faults ran out: answers are back to normal.
    assert_eq!(
        values(&get(&stack, path, TOKEN).await.2),
        [("podinfo".to_string(), "70".to_string())]
    );
    stack.shutdown().await;
}
