//! The CloudWatch emulator: `GetMetricData` answered from the traffic world, signatures and
//! parameters checked, every fault mode produced.

use serin_stack::testing as common;

use common::*;
use serde_json::{Value, json};
use serin_stack::{CloudWatchConfig, FaultMode, ProviderFault, Stack, StackConfig};
use std::time::{SystemTime, UNIX_EPOCH};

/// A stack whose world has run 10 s: `podinfo-primary` healthy behind the apex and the
/// `podinfo` canary failing 30 % behind `podinfo-canary`, 20 requests/s each.
async fn world() -> Stack {
    podinfo_world(StackConfig {
        cloudwatch: true,
        ..StackConfig::default()
    })
    .await
}

/// `queries` over the last 10 minutes, signed with `secret`.
async fn get(stack: &Stack, queries: Value, secret: &str) -> (u16, Vec<(String, String)>, Value) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = json!({"MetricDataQueries": queries, "StartTime": now - 600, "EndTime": now + 60})
        .to_string();
    send(stack, &body, secret).await
}

async fn send(stack: &Stack, body: &str, secret: &str) -> (u16, Vec<(String, String)>, Value) {
    let url = stack.cloudwatch_url().unwrap();
    let signed = cloudwatch_signed(url, body, secret);
    // The client adds Host itself (the same value as signed).
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .filter(|(n, _)| n != "host")
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let (code, headers, body) = http("POST", &format!("{url}/"), &headers, body).await;
    (
        code,
        headers,
        serde_json::from_str(&body).unwrap_or(json!(body)),
    )
}

fn secret() -> String {
    CloudWatchConfig::default().secret_access_key
}

fn stat(id: &str, metric: &str, dimensions: Value, stat: &str) -> Value {
    json!({"Id": id, "MetricStat": {"Metric": {"Namespace": "MyApp", "MetricName": metric,
        "Dimensions": dimensions}, "Period": 60, "Stat": stat}})
}

fn app(name: &str) -> Value {
    json!([{"Name": "appName", "Value": name}])
}

fn values(v: &Value, result: usize) -> Vec<f64> {
    v["MetricDataResults"][result]["Values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn statistics_and_math_answer_the_worlds_requests() {
    let stack = world().await;
    let mut errors = stat("m1", "ErrorCount", app("podinfo.default"), "Sum");
    errors["ReturnData"] = json!(false);
    let mut requests = stat("m2", "RequestCount", app("podinfo.default"), "Sum");
    requests["ReturnData"] = json!(false);
    let (code, _, v) = get(
        &stack,
        json!([
            {"Id": "e1", "Expression": "100 * m1 / m2", "Label": "ErrorRate"},
            errors, requests,
            stat("ratio", "ErrorCount", app("podinfo.default"), "Average"),
            stat("count", "RequestCount", json!([{"Name": "Namespace", "Value": "default"},
                {"Name": "Workload", "Value": "podinfo-primary"}]), "SampleCount"),
            stat("p99", "Latency", app("podinfo-primary.default"), "p99"),
            stat("mean", "Latency", app("podinfo-primary.default"), "Average"),
        ]),
        &secret(),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let results = v["MetricDataResults"].as_array().unwrap();
    assert_eq!(results.len(), 5, "ReturnData false is left out: {v}");
    assert_eq!(results[0]["Label"], "ErrorRate");
    assert_eq!(results[0]["StatusCode"], "Complete");
    assert!(values(&v, 0).iter().all(|x| (x - 30.0).abs() < 0.01), "{v}");
    assert!(values(&v, 1).iter().all(|x| (x - 0.3).abs() < 0.001), "{v}");
    let count: f64 = values(&v, 2).iter().sum();
    assert!((count - 200.0).abs() < 1.0, "10 s at 20 requests/s: {v}");
    let (p99, mean) = (values(&v, 3)[0], values(&v, 4)[0]);
    assert!(mean > 10.0 && p99 >= mean, "{v}");
    // Newest first, one timestamp per value.
    let stamps = results[2]["Timestamps"].as_array().unwrap();
    assert_eq!(stamps.len(), values(&v, 2).len());
    assert!(
        stamps.windows(2).all(|w| w[0].as_i64() > w[1].as_i64()),
        "{v}"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn only_published_dimension_sets_units_and_namespaces_match() {
    let stack = world().await;
    let mut seconds = stat("unit", "RequestCount", app("podinfo.default"), "Sum");
    seconds["MetricStat"]["Unit"] = json!("Seconds");
    let mut aws = stat("aws", "RequestCount", app("podinfo.default"), "Sum");
    aws["MetricStat"]["Metric"]["Namespace"] = json!("AWS/ApplicationELB");
    let (code, _, v) = get(
        &stack,
        json!([
            stat(
                "partial",
                "RequestCount",
                json!([{"Name": "Workload", "Value": "podinfo"}]),
                "Sum"
            ),
            stat("nobody", "RequestCount", app("nobody.default"), "Sum"),
            stat("unknown", "Requests", app("podinfo.default"), "Sum"),
            seconds,
            aws,
        ]),
        &secret(),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    for i in 0..5 {
        assert!(values(&v, i).is_empty(), "result {i}: {v}");
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn invalid_requests_are_refused_as_cloudwatch_refuses_them() {
    let stack = world().await;
    let mut bad_period = stat("m1", "RequestCount", app("podinfo.default"), "Sum");
    bad_period["MetricStat"]["Period"] = json!(7);
    for (queries, needle) in [
        (json!([bad_period]), "Period"),
        (json!([stat("M1", "RequestCount", app("x"), "Sum")]), "Id"),
        (
            json!([{"Id": "q", "Expression": "SELECT AVG(CPUUtilization) FROM \"AWS/EC2\""}]),
            "Metrics Insights",
        ),
        (
            json!([{"Id": "e1", "Expression": "m9 * 2"}]),
            "Unrecognized id",
        ),
        (
            json!([stat("m1", "RequestCount", app("x"), "Median")]),
            "not valid",
        ),
        (json!([]), "MetricDataQueries"),
    ] {
        let (code, headers, v) = get(&stack, queries, &secret()).await;
        assert_eq!(code, 400, "{v}");
        assert_eq!(v["__type"], "InvalidParameterValue", "{v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
        assert!(
            headers
                .iter()
                .any(|(n, val)| n == "x-amzn-query-error" && val == "InvalidParameterValue;Sender"),
            "{headers:?}"
        );
    }
    let (code, _, v) = send(
        &stack,
        r#"{"MetricDataQueries": [], "StartTime": 5, "EndTime": 5}"#,
        &secret(),
    )
    .await;
    assert_eq!(code, 400, "{v}");
    stack.shutdown().await;
}

#[tokio::test]
async fn requests_are_refused_without_a_valid_signature() {
    let stack = world().await;
    let queries = json!([stat("m1", "RequestCount", app("podinfo.default"), "Sum")]);
    let (code, _, v) = get(&stack, queries.clone(), "not-the-secret").await;
    assert_eq!(code, 403, "{v}");
    assert_eq!(v["__type"], "SignatureDoesNotMatch");
    let url = stack.cloudwatch_url().unwrap();
    let (code, _, body) = http(
        "POST",
        &format!("{url}/"),
        &[(
            "X-Amz-Target",
            "GraniteServiceVersion20100801.GetMetricData",
        )],
        "{}",
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("MissingAuthenticationToken"), "{body}");
    let mut signed = cloudwatch_signed(url, "{}", &secret());
    for (name, value) in &mut signed {
        if name == "authorization" {
            *value = value.replace("AKIASERINSTACKTEST01", "AKIAUNKNOWN");
        }
    }
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .filter(|(n, _)| n != "host")
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let (code, _, body) = http("POST", &format!("{url}/"), &headers, "{}").await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("InvalidClientTokenId"), "{body}");
    stack.shutdown().await;
}

#[tokio::test]
async fn every_fault_mode_is_produced() {
    let stack = world().await;
    let queries = json!([stat("m1", "RequestCount", app("podinfo.default"), "Sum")]);
    let set = |mode| stack.cloudwatch_faults().set(ProviderFault::new(mode));

    set(FaultMode::RateLimit);
    let (code, _, v) = get(&stack, queries.clone(), &secret()).await;
    assert_eq!(
        (code, v["__type"].as_str()),
        (400, Some("Throttling")),
        "{v}"
    );
    stack.cloudwatch_faults().set(ProviderFault {
        status: Some(502),
        ..ProviderFault::new(FaultMode::Error)
    });
    let (code, _, v) = get(&stack, queries.clone(), &secret()).await;
    assert_eq!(code, 502);
    assert!(v.as_str().unwrap().contains("<html>"));
    set(FaultMode::Empty);
    let (_, _, v) = get(&stack, queries.clone(), &secret()).await;
    assert!(values(&v, 0).is_empty(), "{v}");
    set(FaultMode::NullPoints);
    let (_, _, v) = get(&stack, queries.clone(), &secret()).await;
    assert_eq!(v["MetricDataResults"], json!([]), "{v}");
    set(FaultMode::SeveralSeries);
    let (_, _, v) = get(&stack, queries.clone(), &secret()).await;
    assert_eq!(v["MetricDataResults"].as_array().unwrap().len(), 2, "{v}");
    stack.cloudwatch_faults().clear();
    let (code, _, _) = get(&stack, queries, &secret()).await;
    assert_eq!(code, 200);
    stack.shutdown().await;
}
