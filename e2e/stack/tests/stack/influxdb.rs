//! The InfluxDB emulator: Flux answered from the traffic world in annotated CSV, the token and
//! organization checked, InfluxDB's errors, every fault mode produced.

use serin_stack::testing as common;

use common::*;
use serde_json::{Value, json};
use serin_stack::{FaultMode, ProviderFault, Stack, StackConfig};
use std::time::Duration;

const TOKEN: (&str, &str) = ("Authorization", "Token serin-influxdb-token");

/// A stack whose world has run 10 s: `podinfo-primary` healthy behind the apex and the
/// `podinfo` canary failing 30 % behind `podinfo-canary`, 20 requests/s each.
async fn world() -> Stack {
    podinfo_world(StackConfig {
        influxdb: true,
        ..StackConfig::default()
    })
    .await
}

/// POSTs `flux` as Flagger's client does, to `?org=<org>`, with `headers`.
async fn query_as(
    stack: &Stack,
    org: &str,
    flux: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let url = format!(
        "{}/api/v2/query?org={}",
        stack.influxdb_url().unwrap(),
        enc(org)
    );
    let body = json!({"query": flux, "type": "flux",
        "dialect": {"annotations": ["datatype", "group", "default"], "delimiter": ",", "header": true}});
    let mut headers = headers.to_vec();
    headers.push(("Content-Type", "application/json"));
    http("POST", &url, &headers, &body.to_string()).await
}

async fn query(stack: &Stack, flux: &str) -> (u16, String) {
    let (code, _, body) = query_as(stack, "serin", flux, &[TOKEN]).await;
    (code, body)
}

/// The cells of every data row of an annotated CSV answer, by column name.
fn records(csv: &str) -> Vec<Vec<(String, String)>> {
    let mut names: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut header_next = false;
    for line in csv.split("\r\n") {
        let cells: Vec<String> = line.split(',').map(str::to_string).collect();
        if line.is_empty() {
            continue;
        } else if line.starts_with('#') {
            header_next = true;
        } else if header_next {
            names = cells;
            header_next = false;
        } else {
            out.push(names.iter().cloned().zip(cells).collect());
        }
    }
    out
}

fn first_value(csv: &str) -> Option<f64> {
    let records = records(csv);
    let record = records.first()?;
    record.iter().find(|(k, _)| k == "_value")?.1.parse().ok()
}

/// The canary's (`workload`) success rate over the last minute.
fn success_rate(workload: &str) -> String {
    format!(
        r#"from(bucket: "default")
  |> range(start: -1m)
  |> filter(fn: (r) => r._measurement == "http_requests" and r.namespace == "default" and r.workload == "{workload}")
  |> filter(fn: (r) => r._field == "requests" or r._field == "errors")
  |> group(columns: ["_start", "_field"])
  |> sum()
  |> pivot(rowKey: ["_start"], columnKey: ["_field"], valueColumn: "_value")
  |> map(fn: (r) => ({{_value: 100.0 * (r.requests - r.errors) / r.requests}}))"#
    )
}

#[tokio::test]
async fn the_token_and_organization_are_required() {
    let stack = world().await;
    let buckets = "buckets()";
    let (code, _, body) = query_as(&stack, "serin", buckets, &[]).await;
    assert_eq!(code, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "unauthorized"
    );
    let wrong = ("Authorization", "Token wrong");
    assert_eq!(query_as(&stack, "serin", buckets, &[wrong]).await.0, 401);
    let (code, _, body) = query_as(&stack, "other", buckets, &[TOKEN]).await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body.contains("organization name \\\"other\\\" not found"),
        "{body}"
    );
    let (code, _, body) = query_as(&stack, "", buckets, &[TOKEN]).await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = query(&stack, "buckets() |> limit(n: 1)").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(records(&body).len(), 1, "{body}");
    let (code, _, body) = http(
        "GET",
        &format!("{}/health", stack.influxdb_url().unwrap()),
        &[],
        "",
    )
    .await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn flux_answers_from_the_world() {
    let stack = world().await;
    let (code, body) = query(&stack, &success_rate("podinfo")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("#datatype,string,long,"), "{body}");
    assert!((first_value(&body).unwrap() - 70.0).abs() < 1e-6, "{body}");
    let (_, body) = query(&stack, &success_rate("podinfo-primary")).await;
    assert!((first_value(&body).unwrap() - 100.0).abs() < 1e-6, "{body}");

    // Requests add up to what the world sent: 20/s for 10 s.
    let requests = r#"from(bucket: "default") |> range(start: -1h)
        |> filter(fn: (r) => r._field == "requests" and r.workload == "podinfo-primary")
        |> group() |> sum()"#;
    let (_, body) = query(&stack, requests).await;
    assert!((first_value(&body).unwrap() - 200.0).abs() < 1e-6, "{body}");
    // Latency: the default 50 ms.
    let latency = r#"from(bucket: "default") |> range(start: -1h)
        |> filter(fn: (r) => r._field == "duration_ms" and r.workload == "podinfo") // mean per second
        |> group() |> mean() |> yield(name: "latency")"#;
    let (_, body) = query(&stack, latency).await;
    assert!((first_value(&body).unwrap() - 50.0).abs() < 1e-6, "{body}");
    assert!(body.contains("#default,latency,"), "{body}");
    // Flagger's documented shape: count() of the 5xx points is a long.
    let count = r#"from(bucket: "default") |> range(start: -2h)
        |> filter(fn: (r) => r["_measurement"] == "http_requests")
        |> filter(fn: (r) => r["workload"] == "podinfo" and r["status"] == "500" and r._field == "errors")
        |> count() |> yield(name: "count")"#;
    let (_, body) = query(&stack, count).await;
    assert!(
        body.starts_with("#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,long,"),
        "{body}"
    );
    // No data: no table, an empty answer.
    let (code, body) = query(&stack, &success_rate("nobody")).await;
    assert_eq!((code, body.as_str()), (200, "\r\n"));
}

#[tokio::test]
async fn errors_as_influxdb_answers_them() {
    let stack = world().await;
    let json = |body: &str| serde_json::from_str::<Value>(body).unwrap();
    let (code, body) = query(
        &stack,
        "from(bucket: \"default\") |> range(start: -1m) |> nope()",
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(json(&body)["code"], "invalid");
    let (code, body) = query(&stack, "from(bucket: \"metrics\") |> range(start: -1m)").await;
    assert_eq!(code, 404, "{body}");
    assert!(
        json(&body)["message"]
            .as_str()
            .unwrap()
            .contains("could not find bucket")
    );
    let (code, body) = query(&stack, "from(bucket: \"default\")").await;
    assert_eq!(code, 400, "{body}");
    // A failure while running: an error table, status 200.
    let (code, body) = query(
        &stack,
        "from(bucket: \"default\") |> range(start: -1m) |> map(fn: (r) => ({_value: r._value * 2}))",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(",error,reference\r\n"), "{body}");
    assert!(body.contains("type error"), "{body}");
}

#[tokio::test]
async fn fault_modes() {
    let stack = world().await;
    let rate = success_rate("podinfo");
    let set = |mode| stack.influxdb_faults().set(ProviderFault::new(mode));

    set(FaultMode::NullPoints);
    let (_, body) = query(&stack, &rate).await;
    assert_eq!(records(&body).len(), 1, "{body}");
    assert_eq!(first_value(&body), None, "{body}");

    set(FaultMode::Empty);
    assert_eq!(query(&stack, &rate).await.1, "\r\n");

    set(FaultMode::SeveralSeries);
    let (_, body) = query(&stack, &rate).await;
    let values: Vec<f64> = records(&body)
        .iter()
        .filter_map(|r| r.iter().find(|(k, _)| k == "_value")?.1.parse().ok())
        .collect();
    assert_eq!(values.len(), 2, "{body}");
    assert!(
        (values[0] - 70.0).abs() < 1e-6 && (values[1] - 140.0).abs() < 1e-6,
        "{body}"
    );

    set(FaultMode::GraphqlError);
    let (code, body) = query(&stack, &rate).await;
    assert_eq!(code, 200);
    assert!(body.contains(",error,reference\r\n"), "{body}");

    set(FaultMode::RateLimit);
    let (code, headers, body) = query_as(&stack, "serin", &rate, &[TOKEN]).await;
    assert_eq!(code, 429, "{body}");
    assert!(
        headers.contains(&("retry-after".into(), "1".into())),
        "{headers:?}"
    );

    // Set through the admin server, as a test in another process would.
    let admin = stack.admin_url().unwrap();
    let (code, _, _) = http(
        "POST",
        &format!("{admin}/influxdb/fault"),
        &[],
        "mode: error\nstatus: 502\ncount: 1\n",
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(query(&stack, &rate).await.0, 502);
    assert_eq!(
        query(&stack, &rate).await.0,
        200,
        "count: 1 applies to one request only"
    );

    set(FaultMode::Hang);
    let hung = tokio::time::timeout(Duration::from_secs(1), query(&stack, &rate)).await;
    assert!(hung.is_err(), "a hanging emulator answered: {hung:?}");
    let (code, _, _) = http("DELETE", &format!("{admin}/influxdb/fault"), &[], "").await;
    assert_eq!(code, 200);
    assert_eq!(query(&stack, &rate).await.0, 200);
}
