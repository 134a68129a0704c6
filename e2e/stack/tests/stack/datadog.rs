//! The Datadog emulator: documented request shapes answered from the traffic world,
//! credentials checked, every fault mode produced.

use serin_stack::testing as common;

use common::*;
use serde_json::{Value, json};
use serin_stack::{FaultMode, ProviderFault, Stack, StackConfig};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KEYS: [(&str, &str); 2] = [
    ("DD-API-KEY", "serin-dd-api-key"),
    ("DD-APPLICATION-KEY", "serin-dd-application-key"),
];

/// The podinfo world (`podinfo_world`) with the Datadog emulator.
async fn world() -> Stack {
    podinfo_world(StackConfig {
        datadog: true,
        ..StackConfig::default()
    })
    .await
}

fn window() -> (u64, u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (now - 600, now + 60)
}

async fn v1(stack: &Stack, q: &str, keys: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Value) {
    let (from, to) = window();
    let url = format!(
        "{}/api/v1/query?from={from}&to={to}&query={}",
        stack.datadog_url().unwrap(),
        enc(q)
    );
    let (code, headers, body) = http("GET", &url, keys, "").await;
    (
        code,
        headers,
        serde_json::from_str(&body).unwrap_or(json!(body)),
    )
}

async fn v2(stack: &Stack, queries: Value, formulas: Value) -> (u16, Vec<(String, String)>, Value) {
    let (from, to) = window();
    let body = json!({"data": {"type": "scalar_request", "attributes": {
        "from": from * 1000, "to": to * 1000, "queries": queries, "formulas": formulas}}});
    let mut headers = KEYS.to_vec();
    headers.push(("Content-Type", "application/json"));
    let url = format!("{}/api/v2/query/scalar", stack.datadog_url().unwrap());
    let (code, h, body) = http("POST", &url, &headers, &body.to_string()).await;
    (code, h, serde_json::from_str(&body).unwrap_or(json!(body)))
}

fn points(v: &Value, series: usize) -> Vec<Option<f64>> {
    v["series"][series]["pointlist"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64())
        .collect()
}

const ERROR_RATE: &str = "sum:trace.http.request.errors{service:podinfo,kube_namespace:default}.as_count() \
    / sum:trace.http.request.hits{service:podinfo,kube_namespace:default}.as_count() * 100";

#[tokio::test]
async fn credentials_are_required() {
    let stack = world().await;
    let dd = stack.datadog_url().unwrap();
    let (code, _, body) = http("GET", &format!("{dd}/api/v1/validate"), &KEYS[..1], "").await;
    assert_eq!((code, body.as_str()), (200, r#"{"valid":true}"#));
    let (code, _, body) = http(
        "GET",
        &format!("{dd}/api/v1/validate"),
        &[("DD-API-KEY", "wrong")],
        "",
    )
    .await;
    assert_eq!((code, body.as_str()), (403, r#"{"errors":["Forbidden"]}"#));
    let (code, _, _) = v1(&stack, ERROR_RATE, &KEYS[..1]).await;
    assert_eq!(code, 403, "the application key is required for queries");
    let (code, _, _) = v1(&stack, ERROR_RATE, &[KEYS[0], ("DD-APPLICATION-KEY", "x")]).await;
    assert_eq!(code, 403);
    let (code, _, body) = v1(&stack, ERROR_RATE, &KEYS).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn v1_query_answers_from_the_world() {
    let stack = world().await;
    let (code, _, v) = v1(&stack, ERROR_RATE, &KEYS).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["res_type"], "time_series");
    assert_eq!(v["series"].as_array().unwrap().len(), 1);
    assert_eq!(v["series"][0]["metric"], "trace.http.request.errors");
    let ps = points(&v, 0);
    assert!(!ps.is_empty());
    for p in &ps {
        assert!((p.unwrap() - 30.0).abs() < 1e-6, "{ps:?}");
    }
    // Flagger's documented shape: 100 - (non-5xx / all) * 100 on the Istio metric.
    let (_, _, v) = v1(
        &stack,
        "100 - (sum:istio.mesh.request.count{reporter:destination,destination_workload:podinfo,!response_code:500}.as_count() \
         / sum:istio.mesh.request.count{reporter:destination,destination_workload:podinfo}.as_count()) * 100",
        &KEYS,
    )
    .await;
    assert!((points(&v, 0)[0].unwrap() - 30.0).abs() < 1e-6, "{v}");
    // Counts add up to what the world sent: 20/s for 10 s.
    let (_, _, v) = v1(
        &stack,
        "sum:trace.http.request.hits{service:podinfo-primary}.as_count()",
        &KEYS,
    )
    .await;
    let total: f64 = points(&v, 0).iter().map(|p| p.unwrap()).sum();
    assert!((total - 200.0).abs() < 1e-6, "{total}");
    // Latency: the default 50 ms.
    let (_, _, v) = v1(
        &stack,
        "avg:trace.http.request.duration{service:podinfo}",
        &KEYS,
    )
    .await;
    assert!((points(&v, 0)[0].unwrap() - 0.05).abs() < 1e-9, "{v}");
    // One series per group.
    let (_, _, v) = v1(
        &stack,
        "sum:trace.http.request.hits{kube_namespace:default} by {kube_deployment}.as_count()",
        &KEYS,
    )
    .await;
    let tags: Vec<&Value> = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["tag_set"])
        .collect();
    assert_eq!(
        tags,
        [
            &json!(["kube_deployment:podinfo"]),
            &json!(["kube_deployment:podinfo-primary"])
        ]
    );
    // No data: an empty series list, as for a metric nobody sends.
    let (code, _, v) = v1(&stack, "sum:nobody.sends.this{*}.as_count()", &KEYS).await;
    assert_eq!((code, v["series"].clone()), (200, json!([])));
    let (code, _, v) = v1(&stack, "sum:x{service:a", &KEYS).await;
    assert_eq!(code, 400);
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("Error parsing query"),
        "{v}"
    );
}

#[tokio::test]
async fn v2_scalar_queries_and_formulas() {
    let stack = world().await;
    let queries = json!([
        {"data_source": "metrics", "name": "a", "query": "sum:trace.http.request.errors{service:podinfo}.as_count()", "aggregator": "sum"},
        {"data_source": "metrics", "name": "b", "query": "sum:trace.http.request.hits{service:podinfo}.as_count()", "aggregator": "sum"}
    ]);
    let (code, _, v) = v2(&stack, queries, json!([{"formula": "a / b * 100"}])).await;
    assert_eq!(code, 200, "{v}");
    let col = &v["data"]["attributes"]["columns"][0];
    assert_eq!(col["name"], "a / b * 100");
    assert_eq!(col["type"], "number");
    assert!(
        (col["values"][0].as_f64().unwrap() - 30.0).abs() < 1e-6,
        "{v}"
    );

    let grouped = json!([{"data_source": "metrics", "name": "query",
        "query": "sum:trace.http.request.errors{kube_namespace:default} by {kube_deployment}.as_count()", "aggregator": "sum"}]);
    let (_, _, v) = v2(&stack, grouped, json!([])).await;
    let cols = &v["data"]["attributes"]["columns"];
    assert_eq!(
        cols[0],
        json!({"name": "kube_deployment", "type": "group", "values": [["podinfo"], ["podinfo-primary"]]})
    );
    assert_eq!(cols[1]["values"], json!([60.0, 0.0]));
}

#[tokio::test]
async fn fault_modes() {
    let stack = world().await;
    let set = |mode, status, count| {
        stack.datadog_faults().set(ProviderFault {
            mode,
            status,
            count,
        });
    };
    set(FaultMode::NullPoints, None, None);
    let (_, _, v) = v1(&stack, ERROR_RATE, &KEYS).await;
    assert!(
        !points(&v, 0).is_empty() && points(&v, 0).iter().all(Option::is_none),
        "{v}"
    );

    set(FaultMode::Empty, None, None);
    let (code, _, v) = v1(&stack, ERROR_RATE, &KEYS).await;
    assert_eq!((code, v["series"].clone()), (200, json!([])));

    set(FaultMode::SeveralSeries, None, None);
    let (_, _, v) = v1(&stack, ERROR_RATE, &KEYS).await;
    assert_eq!(v["series"].as_array().unwrap().len(), 2);
    assert_ne!(points(&v, 0), points(&v, 1));

    set(FaultMode::RateLimit, None, None);
    let (code, headers, v) = v1(&stack, ERROR_RATE, &KEYS).await;
    assert_eq!(code, 429, "{v}");
    for h in [
        "x-ratelimit-limit",
        "x-ratelimit-period",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(
            headers.iter().any(|(k, _)| k == h),
            "missing {h}: {headers:?}"
        );
    }
    assert!(headers.contains(&("x-ratelimit-name".into(), "query".into())));
    let (code, headers, _) = v2(&stack, json!([]), json!([])).await;
    assert_eq!(code, 429);
    assert!(headers.contains(&("x-ratelimit-name".into(), "query_scalar_public".into())));

    // Set through the admin server, as a test in another process would.
    let admin = stack.admin_url().unwrap();
    let (code, _, _) = http(
        "POST",
        &format!("{admin}/datadog/fault"),
        &[],
        "mode: error\nstatus: 502\ncount: 1\n",
    )
    .await;
    assert_eq!(code, 200);
    let (code, headers, v) = v1(&stack, ERROR_RATE, &KEYS).await;
    assert_eq!(code, 502, "{v}");
    assert!(headers.contains(&("content-type".into(), "text/html".into())));
    let (code, _, _) = v1(&stack, ERROR_RATE, &KEYS).await;
    assert_eq!(code, 200, "count: 1 applies to one request only");

    set(FaultMode::Hang, None, None);
    let hung = tokio::time::timeout(Duration::from_secs(1), v1(&stack, ERROR_RATE, &KEYS)).await;
    assert!(hung.is_err(), "a hanging emulator answered: {hung:?}");
    let (code, _, _) = http("DELETE", &format!("{admin}/datadog/fault"), &[], "").await;
    assert_eq!(code, 200);
    let (code, _, _) = v1(&stack, ERROR_RATE, &KEYS).await;
    assert_eq!(code, 200);
}
