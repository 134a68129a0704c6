//! The Dynatrace emulator: the Metrics API v2 answered from the traffic world, the token
//! checked, every fault mode produced.

use serin_stack::testing as common;

use common::*;
use serde_json::{Value, json};
use serin_stack::{FaultMode, ProviderFault, Stack, StackConfig, service_entity_id};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TOKEN: (&str, &str) = (
    "Authorization",
    "Api-Token dt0c01.SERINSTACK.serin-dt-token",
);

/// A stack whose world has run 10 s: `podinfo-primary` healthy and the `podinfo` canary
/// failing 30 %, 20 requests/s each.
async fn world() -> Stack {
    podinfo_world(StackConfig {
        dynatrace: true,
        ..StackConfig::default()
    })
    .await
}

/// `metricSelector` over the last 10 minutes (and a minute ahead) at `resolution`.
async fn query(
    stack: &Stack,
    selector: &str,
    resolution: &str,
) -> (u16, Vec<(String, String)>, Value) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let url = format!(
        "{}/api/v2/metrics/query?metricSelector={}&resolution={resolution}&from={}&to={}",
        stack.dynatrace_url().unwrap(),
        enc(selector),
        now - 600_000,
        now + 60_000
    );
    let (code, headers, body) = http("GET", &url, &[TOKEN], "").await;
    (
        code,
        headers,
        serde_json::from_str(&body).unwrap_or(json!(body)),
    )
}

/// The values of the last series of the first result (where Flagger reads).
fn values(v: &Value) -> Vec<Option<f64>> {
    let data = v["result"][0]["data"].as_array().unwrap();
    data.last().unwrap()["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(Value::as_f64)
        .collect()
}

fn service(name: &str) -> String {
    format!(
        "filter(in(\"dt.entity.service\",entitySelector(\"type(SERVICE),entityName.equals(~\"{name}~\")\")))"
    )
}

#[tokio::test]
async fn the_token_is_required() {
    let stack = world().await;
    let dt = stack.dynatrace_url().unwrap();
    let list = format!("{dt}/api/v2/metrics?pageSize=1");
    let (code, _, body) = http("GET", &list, &[], "").await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("Missing authorization parameter"), "{body}");
    let (code, _, body) = http("GET", &list, &[("Authorization", "Api-Token wrong")], "").await;
    assert_eq!(code, 401);
    assert!(body.contains("Token Authentication failed"), "{body}");
    let (code, _, body) = http("GET", &list, &[TOKEN], "").await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["metrics"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["nextPageKey"].is_string(), "{v}");
}

#[tokio::test]
async fn builtin_service_metrics_answer_from_the_world() {
    let stack = world().await;
    // Flagger's request: one value over the window.
    let rate = format!(
        "builtin:service.errors.server.rate:{}:splitBy():avg",
        service("podinfo")
    );
    let (code, _, v) = query(&stack, &rate, "Inf").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["resolution"], "Inf");
    assert_eq!(v["result"][0]["metricId"], rate.as_str());
    let got = values(&v);
    assert_eq!(got.len(), 1, "{v}");
    assert!((got[0].unwrap() - 30.0).abs() < 1e-6, "{v}");
    assert_eq!(v["result"][0]["data"][0]["dimensions"], json!([]));
    // The primary, by its entity ID (bare arguments, as in Flagger's example).
    let id = service_entity_id("default", "podinfo-primary");
    let (_, _, v) = query(
        &stack,
        &format!("builtin:service.errors.server.rate:filter(eq(dt.entity.service,{id}))"),
        "Inf",
    )
    .await;
    assert_eq!(values(&v), vec![Some(0.0)], "{v}");
    assert_eq!(
        v["result"][0]["data"][0]["dimensionMap"]["dt.entity.service"],
        id.as_str()
    );
    // A success rate as a metric expression.
    let success = format!(
        "builtin:service.errors.server.successCount:{f}:splitBy():sum / builtin:service.requestCount.total:{f}:splitBy():sum * 100",
        f = service("podinfo")
    );
    let (_, _, v) = query(&stack, &success, "Inf").await;
    assert!((values(&v)[0].unwrap() - 70.0).abs() < 1e-6, "{v}");
    // Counts: 20/s for 10 s.
    let (_, _, v) = query(
        &stack,
        &format!(
            "builtin:service.requestCount.total:{}",
            service("podinfo-primary")
        ),
        "Inf",
    )
    .await;
    assert!((values(&v)[0].unwrap() - 200.0).abs() < 1e-6, "{v}");
    // Latency in microseconds: the default 50 ms, fixed, so every percentile is 50 ms.
    for aggregation in ["avg", "median", "percentile(99)", "max"] {
        let (_, _, v) = query(
            &stack,
            &format!(
                "builtin:service.response.time:{}:{aggregation}",
                service("podinfo")
            ),
            "Inf",
        )
        .await;
        assert!(
            (values(&v)[0].unwrap() - 50_000.0).abs() < 1.0,
            "{aggregation}: {v}"
        );
    }
    // One series per service without splitBy(), with names on request.
    let (_, _, v) = query(&stack, "builtin:service.requestCount.total:names", "Inf").await;
    let data = v["result"][0]["data"].as_array().unwrap();
    let names: Vec<&Value> = data
        .iter()
        .map(|d| &d["dimensionMap"]["dt.entity.service.name"])
        .collect();
    assert_eq!(names.len(), 2, "{v}");
    assert!(names.contains(&&json!("podinfo")) && names.contains(&&json!("podinfo-primary")));
    // Buckets of a minute: the values are there, in one or two buckets.
    let (_, _, v) = query(&stack, &rate, "1m").await;
    assert_eq!(v["resolution"], "1m");
    let points: Vec<f64> = values(&v).into_iter().flatten().collect();
    assert!(
        !points.is_empty() && points.iter().all(|p| (p - 30.0).abs() < 1e-6),
        "{v}"
    );
}

#[tokio::test]
async fn no_data_and_refused_selectors() {
    let stack = world().await;
    let (code, _, v) = query(
        &stack,
        &format!("builtin:service.errors.server.rate:{}", service("nobody")),
        "Inf",
    )
    .await;
    assert_eq!(
        (code, v["result"][0]["data"].clone()),
        (200, json!([])),
        "{v}"
    );
    let (code, _, v) = query(&stack, "builtin:host.cpu.usage", "Inf").await;
    assert_eq!(code, 404, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("builtin:host.cpu.usage")
    );
    for bad in [
        "builtin:service.response.time:filter(",
        "builtin:service.errors.server.rate:percentile(90)",
        "builtin:service.response.time:splitBy(\"k8s.namespace.name\")",
    ] {
        let (code, _, v) = query(&stack, bad, "Inf").await;
        assert_eq!(code, 400, "{bad}: {v}");
        assert_eq!(v["error"]["message"], "Constraints violated.", "{v}");
        assert_eq!(
            v["error"]["constraintViolations"][0]["path"],
            "metricSelector"
        );
    }
    let (code, _, _) = query(&stack, "builtin:service.requestCount.total", "10s").await;
    assert_eq!(code, 400, "the resolution is at least a minute");
}

#[tokio::test]
async fn fault_modes() {
    let stack = world().await;
    let rate = format!(
        "builtin:service.errors.server.rate:{}:splitBy()",
        service("podinfo")
    );
    let set = |mode, status, count| {
        stack.dynatrace_faults().set(ProviderFault {
            mode,
            status,
            count,
        });
    };
    set(FaultMode::NullPoints, None, None);
    let (_, _, v) = query(&stack, &rate, "Inf").await;
    assert_eq!(values(&v), vec![None], "{v}");

    set(FaultMode::Empty, None, None);
    let (code, _, v) = query(&stack, &rate, "Inf").await;
    assert_eq!((code, v["result"][0]["data"].clone()), (200, json!([])));

    set(FaultMode::SeveralSeries, None, None);
    let (_, _, v) = query(&stack, &rate, "Inf").await;
    let data = v["result"][0]["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{v}");
    assert!(
        (values(&v)[0].unwrap() - 60.0).abs() < 1e-6,
        "the last series is doubled: {v}"
    );

    set(FaultMode::RateLimit, None, None);
    let (code, headers, v) = query(&stack, &rate, "Inf").await;
    assert_eq!(code, 429, "{v}");
    let reset: u128 = headers
        .iter()
        .find(|(k, _)| k == "x-ratelimit-reset")
        .map(|(_, v)| v.parse().unwrap())
        .expect("x-ratelimit-reset");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros();
    assert!(
        reset > now && reset < now + 10_000_000,
        "microseconds: {reset}"
    );

    let admin = stack.admin_url().unwrap();
    let (code, _, _) = http(
        "POST",
        &format!("{admin}/dynatrace/fault"),
        &[],
        "mode: error\nstatus: 502\ncount: 1\n",
    )
    .await;
    assert_eq!(code, 200);
    let (code, headers, _) = query(&stack, &rate, "Inf").await;
    assert_eq!(code, 502);
    assert!(headers.contains(&("content-type".into(), "text/html".into())));
    let (code, _, _) = query(&stack, &rate, "Inf").await;
    assert_eq!(code, 200, "count: 1 applies to one request only");

    set(FaultMode::Hang, None, None);
    let hung = tokio::time::timeout(Duration::from_secs(1), query(&stack, &rate, "Inf")).await;
    assert!(hung.is_err(), "a hanging emulator answered: {hung:?}");
    let (code, _, _) = http("DELETE", &format!("{admin}/dynatrace/fault"), &[], "").await;
    assert_eq!(code, 200);
    let (code, _, _) = query(&stack, &rate, "Inf").await;
    assert_eq!(code, 200);
}
