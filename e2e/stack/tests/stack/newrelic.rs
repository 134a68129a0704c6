//! The New Relic emulator: the Insights query API and NerdGraph answer NRQL from the traffic
//! world, reject bad credentials, and produce every fault mode.

use serin_stack::testing as common;

use common::*;
use serde_json::{Value, json};
use serin_stack::{FaultMode, ProviderFault, Stack, StackConfig};
use std::time::Duration;

const QUERY_KEY: (&str, &str) = ("X-Query-Key", "serin-nr-query-key");
const API_KEY: (&str, &str) = ("API-Key", "NRAK-SERINSTACK");

/// The podinfo world (`podinfo_world`) with the New Relic emulator.
async fn world() -> Stack {
    podinfo_world(StackConfig {
        newrelic: true,
        ..StackConfig::default()
    })
    .await
}

async fn insights(
    stack: &Stack,
    account: &str,
    nrql: &str,
    key: (&str, &str),
) -> (u16, Vec<(String, String)>, Value) {
    let url = format!(
        "{}/v1/accounts/{account}/query?nrql={}",
        stack.newrelic_url().unwrap(),
        enc(nrql)
    );
    let (code, h, body) = http("GET", &url, &[key, ("Accept", "application/json")], "").await;
    (code, h, serde_json::from_str(&body).unwrap_or(json!(body)))
}

async fn nerdgraph(stack: &Stack, body: Value, key: (&str, &str)) -> (u16, Value) {
    let url = format!("{}/graphql", stack.newrelic_url().unwrap());
    let (code, _, body) = http(
        "POST",
        &url,
        &[key, ("Content-Type", "application/json")],
        &body.to_string(),
    )
    .await;
    (code, serde_json::from_str(&body).unwrap_or(json!(body)))
}

fn graphql(nrql: &str) -> Value {
    json!({"query": "query($accountId: Int!, $nrql: Nrql!, $timeout: Seconds) { actor { account(id: $accountId) { nrql(query: $nrql, timeout: $timeout) { results } } } }",
        "variables": {"accountId": 1234567, "nrql": nrql, "timeout": 10}})
}

/// Flagger's form: the template's query plus ` SINCE <interval> seconds ago`.
const ERROR_PCT: &str = "SELECT filter(count(*), WHERE httpResponseCode >= 500) / count(*) * 100 \
    FROM Transaction WHERE appName = 'podinfo' SINCE 60 seconds ago";

#[tokio::test]
async fn insights_api() {
    let stack = world().await;
    let (code, _, v) = insights(&stack, "1234567", ERROR_PCT, QUERY_KEY).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["results"].as_array().unwrap().len(), 1, "{v}");
    assert!(
        (v["results"][0]["result"].as_f64().unwrap() - 30.0).abs() < 1e-6,
        "{v}"
    );
    assert_eq!(v["metadata"]["eventType"], "Transaction");

    let (_, _, v) = insights(
        &stack,
        "1234567",
        "SELECT average(duration) FROM Transaction WHERE appName = 'podinfo-primary'",
        QUERY_KEY,
    )
    .await;
    assert!(
        (v["results"][0]["average"].as_f64().unwrap() - 0.05).abs() < 1e-9,
        "{v}"
    );
    // No events: a null row and New Relic's message.
    let (_, _, v) = insights(
        &stack,
        "1234567",
        "SELECT average(duration) FROM Transaction WHERE appName = 'nobody'",
        QUERY_KEY,
    )
    .await;
    assert_eq!(v["results"], json!([{"average": null}]));
    assert!(
        v["metadata"]["messages"][0]
            .as_str()
            .unwrap()
            .starts_with("No events found")
    );

    // Flagger's availability check, and raw events.
    let (code, _, v) = insights(&stack, "1234567", "SELECT * FROM Metric", QUERY_KEY).await;
    assert_eq!((code, v["results"].clone()), (200, json!([{"events": []}])));
    let (_, _, v) = insights(
        &stack,
        "1234567",
        "SELECT * FROM Transaction WHERE appName = 'podinfo' LIMIT 5",
        QUERY_KEY,
    )
    .await;
    let events = v["results"][0]["events"].as_array().unwrap();
    assert_eq!(events.len(), 5, "{v}");
    assert!(events.iter().all(|e| e["appName"] == "podinfo"));

    let (code, _, _) = insights(&stack, "1234567", ERROR_PCT, ("X-Query-Key", "wrong")).await;
    assert_eq!(code, 401);
    let (code, _, _) = insights(&stack, "7654321", ERROR_PCT, QUERY_KEY).await;
    assert_eq!(code, 403);
    let (code, _, v) = insights(
        &stack,
        "1234567",
        "SELEC count(*) FROM Transaction",
        QUERY_KEY,
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        v["error"].as_str().unwrap().contains("NRQL Syntax Error"),
        "{v}"
    );
}

#[tokio::test]
async fn nerdgraph_nrql() {
    let stack = world().await;
    let (code, v) = nerdgraph(
        &stack,
        graphql("FROM Transaction SELECT percentage(count(*), WHERE httpResponseCode != 500) AS successRate WHERE appName = 'podinfo' SINCE 5 minutes ago"),
        API_KEY,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let rows = &v["data"]["actor"]["account"]["nrql"]["results"];
    assert!(
        (rows[0]["successRate"].as_f64().unwrap() - 70.0).abs() < 1e-6,
        "{v}"
    );

    // Inline literals, several functions, their default keys.
    let body = json!({"query": r#"{ actor { account(id: 1234567) { nrql(query: "SELECT count(*), percentile(duration, 99) FROM Transaction WHERE appName = 'podinfo-primary'") { results } } } }"#});
    let (_, v) = nerdgraph(&stack, body, API_KEY).await;
    let row = &v["data"]["actor"]["account"]["nrql"]["results"][0];
    assert!((row["count"].as_f64().unwrap() - 200.0).abs() < 1e-6, "{v}");
    assert!(
        (row["percentile.duration"]["99"].as_f64().unwrap() - 0.05).abs() < 1e-6,
        "{v}"
    );

    let (_, v) = nerdgraph(
        &stack,
        graphql("SELECT count(*) FROM Transaction FACET appName"),
        API_KEY,
    )
    .await;
    let rows = v["data"]["actor"]["account"]["nrql"]["results"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rows.len(), 2, "{v}");
    assert!(
        rows.iter()
            .any(|r| r["facet"] == "podinfo" && r["appName"] == "podinfo")
    );

    // Credentials and account; NRQL errors come back as GraphQL errors with HTTP 200.
    let (code, v) = nerdgraph(
        &stack,
        graphql("SELECT count(*) FROM Transaction"),
        ("API-Key", "NRAK-WRONG"),
    )
    .await;
    assert_eq!(code, 401, "{v}");
    assert_eq!(v["errors"][0]["extensions"]["errorClass"], "UNAUTHORIZED");
    let mut other = graphql("SELECT count(*) FROM Transaction");
    other["variables"]["accountId"] = json!(42);
    let (code, v) = nerdgraph(&stack, other, API_KEY).await;
    assert_eq!(
        (code, v["errors"][0]["extensions"]["errorClass"].clone()),
        (200, json!("FORBIDDEN"))
    );
    let (code, v) = nerdgraph(&stack, graphql("SELECT count(*) FORM Transaction"), API_KEY).await;
    assert_eq!(code, 200);
    assert_eq!(
        v["errors"][0]["extensions"]["errorClass"], "INVALID_INPUT",
        "{v}"
    );
    assert_eq!(v["data"]["actor"]["account"]["nrql"], Value::Null);
}

#[tokio::test]
async fn fault_modes() {
    let stack = world().await;
    let set = |mode| stack.newrelic_faults().set(ProviderFault::new(mode));
    let rows = |v: &Value| v["data"]["actor"]["account"]["nrql"]["results"].clone();

    set(FaultMode::NullPoints);
    let (_, _, v) = insights(&stack, "1234567", ERROR_PCT, QUERY_KEY).await;
    assert_eq!(v["results"], json!([{"result": null}]));
    let (_, v) = nerdgraph(&stack, graphql(ERROR_PCT), API_KEY).await;
    assert_eq!(rows(&v), json!([{"result": null}]));

    set(FaultMode::Empty);
    let (_, _, v) = insights(&stack, "1234567", ERROR_PCT, QUERY_KEY).await;
    assert_eq!(v["results"], json!([]));

    set(FaultMode::SeveralSeries);
    let (_, v) = nerdgraph(&stack, graphql(ERROR_PCT), API_KEY).await;
    let r = rows(&v);
    assert_eq!(r.as_array().unwrap().len(), 2);
    assert_ne!(r[0], r[1]);

    set(FaultMode::RateLimit);
    let (code, headers, _) = insights(&stack, "1234567", ERROR_PCT, QUERY_KEY).await;
    assert_eq!(code, 429);
    assert!(headers.contains(&("retry-after".into(), "1".into())));

    set(FaultMode::GraphqlError);
    let (code, v) = nerdgraph(&stack, graphql(ERROR_PCT), API_KEY).await;
    assert_eq!(code, 200);
    assert_eq!(v["errors"][0]["extensions"]["errorClass"], "TIMEOUT", "{v}");
    let (code, _, _) = insights(&stack, "1234567", ERROR_PCT, QUERY_KEY).await;
    assert_eq!(code, 500, "the Insights API has no GraphQL errors");

    let admin = stack.admin_url().unwrap();
    let (code, _, _) = http(
        "POST",
        &format!("{admin}/newrelic/fault"),
        &[],
        r#"{"mode": "error", "status": 503, "count": 1}"#,
    )
    .await;
    assert_eq!(code, 200);
    let (code, headers, _) = insights(&stack, "1234567", ERROR_PCT, QUERY_KEY).await;
    assert_eq!(code, 503);
    assert!(headers.contains(&("content-type".into(), "text/html".into())));
    let (code, _, _) = insights(&stack, "1234567", ERROR_PCT, QUERY_KEY).await;
    assert_eq!(code, 200);

    set(FaultMode::Hang);
    let hung = tokio::time::timeout(
        Duration::from_secs(1),
        nerdgraph(&stack, graphql(ERROR_PCT), API_KEY),
    )
    .await;
    assert!(hung.is_err(), "a hanging emulator answered");
    let (code, _, _) = http("DELETE", &format!("{admin}/newrelic/fault"), &[], "").await;
    assert_eq!(code, 200);
    let (code, v) = nerdgraph(&stack, graphql(ERROR_PCT), API_KEY).await;
    assert_eq!(code, 200);
    assert!(
        (rows(&v)[0]["result"].as_f64().unwrap() - 30.0).abs() < 1e-6,
        "{v}"
    );
}
