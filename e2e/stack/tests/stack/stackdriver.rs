//! The Stackdriver emulator: its token endpoint checking JWTs as Google does, the metadata
//! server's token, MQL answered from the traffic world, every fault mode produced.

use serin_stack::testing as common;

use base64::Engine;
use common::*;
use serde_json::{Value, json};
use serin_stack::{FaultMode, ProviderFault, Scenario, Stack, StackConfig, StackdriverConfig};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A stack whose world has run 30 s: `podinfo-primary` healthy behind the apex and the
/// `podinfo` canary failing 30 % behind `podinfo-canary`, 20 requests/s each.
async fn world() -> Stack {
    let stack = Stack::start(StackConfig {
        scenario: Scenario::parse("workloads:\n  readyDelay: 0s\n").unwrap(),
        manual_traffic_clock: true,
        stackdriver: true,
        ..StackConfig::default()
    })
    .await
    .unwrap();
    podinfo(&client(&stack), "podinfo:6.0.0", "podinfo:6.0.1-faulty").await;
    stack.traffic().reroute();
    for _ in 0..30 {
        stack.traffic().step(Duration::from_secs(1));
    }
    stack
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A JWT of `claims` signed with the TEST key of `key_json`.
fn jwt(key_json: &str, claims: Value) -> String {
    let key: Value = serde_json::from_str(key_json).unwrap();
    let pem = key["private_key"].as_str().unwrap();
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .unwrap();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let input = format!(
        "{}.{}",
        b64(json!({"alg": "RS256", "typ": "JWT"}).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{input}.{}", b64(&signature))
}

fn claims(stack: &Stack) -> Value {
    json!({"iss": StackdriverConfig::default().client_email,
           "scope": "https://www.googleapis.com/auth/monitoring.read",
           "aud": format!("{}/token", stack.stackdriver_url().unwrap()),
           "iat": now(), "exp": now() + 3600})
}

async fn exchange(stack: &Stack, assertion: &str) -> (u16, Value) {
    let url = format!("{}/token", stack.stackdriver_url().unwrap());
    let body = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    );
    let (code, _, body) = http(
        "POST",
        &url,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &body,
    )
    .await;
    (code, serde_json::from_str(&body).unwrap())
}

async fn token(stack: &Stack) -> String {
    let key = stackdriver_key("unused");
    let (code, v) = exchange(stack, &jwt(&key, claims(stack))).await;
    assert_eq!(code, 200, "{v}");
    v["access_token"].as_str().unwrap().to_string()
}

async fn query(stack: &Stack, token: &str, project: &str, mql: &str) -> (u16, Value) {
    let url = format!(
        "{}/v3/projects/{project}/timeSeries:query",
        stack.stackdriver_url().unwrap()
    );
    let auth = format!("Bearer {token}");
    let (code, _, body) = http(
        "POST",
        &url,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &json!({"query": mql}).to_string(),
    )
    .await;
    (code, serde_json::from_str(&body).unwrap_or(json!(body)))
}

const COUNT: &str = "fetch k8s_container | metric 'istio.io/service/server/request_count'";

fn project() -> String {
    StackdriverConfig::default().project
}

#[tokio::test]
async fn the_token_endpoint_checks_signature_account_audience_and_lifetime() {
    let stack = world().await;
    let key = stackdriver_key("unused");
    let base = claims(&stack);
    let mut wrong_account = base.clone();
    wrong_account["iss"] = json!("someone@else.iam.gserviceaccount.com");
    let mut wrong_audience = base.clone();
    wrong_audience["aud"] = json!("https://oauth2.googleapis.com/token");
    let mut too_long = base.clone();
    too_long["exp"] = json!(now() + 7200);
    let mut expired = base.clone();
    expired["exp"] = json!(now() - 10);
    for (assertion, needle) in [
        (
            jwt(&stackdriver_unknown_key("unused"), base.clone()),
            "Invalid JWT Signature.",
        ),
        (jwt(&key, wrong_account), "account not found"),
        (jwt(&key, wrong_audience), "audience"),
        (jwt(&key, too_long), "short-lived"),
        (jwt(&key, expired), "short-lived"),
        ("not.a.jwt".to_string(), "JWT"),
    ] {
        let (code, v) = exchange(&stack, &assertion).await;
        assert_eq!(code, 400, "{v}");
        assert_eq!(v["error"], "invalid_grant", "{v}");
        assert!(
            v["error_description"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    }
    let (code, v) = exchange(&stack, &jwt(&key, base)).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert!(v["expires_in"].as_u64().unwrap() > 3000);
    stack.shutdown().await;
}

#[tokio::test]
async fn the_metadata_server_needs_its_flavor_header() {
    let stack = world().await;
    let url = format!(
        "{}/computeMetadata/v1/instance/service-accounts/default/token",
        stack.stackdriver_url().unwrap()
    );
    let (code, _, _) = http("GET", &url, &[], "").await;
    assert_eq!(code, 403);
    let (code, headers, body) = http("GET", &url, &[("Metadata-Flavor", "Google")], "").await;
    assert_eq!(code, 200, "{body}");
    assert!(headers.contains(&("metadata-flavor".into(), "Google".into())));
    let token: Value = serde_json::from_str(&body).unwrap();
    let (code, v) = query(
        &stack,
        token["access_token"].as_str().unwrap(),
        &project(),
        COUNT,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    stack.shutdown().await;
}

#[tokio::test]
async fn queries_need_a_token_for_the_project_and_valid_mql() {
    let stack = world().await;
    let (code, v) = query(&stack, "ya29.forged", &project(), COUNT).await;
    assert_eq!(
        (code, v["error"]["status"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    let token = token(&stack).await;
    let (code, v) = query(&stack, &token, "someone-elses", COUNT).await;
    assert_eq!(
        (code, v["error"]["status"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );
    for mql in [
        "",
        "fetch k8s_container | frobnicate",
        "fetch k8s_container | filter metric.no_such_label == 'x'",
        "fetch k8s_container | metric 'istio.io/service/server/response_latencies' | group_by [], sum(val())",
    ] {
        let (code, v) = query(&stack, &token, &project(), mql).await;
        assert_eq!(code, 400, "{mql}: {v}");
        assert_eq!(v["error"]["status"], "INVALID_ARGUMENT", "{v}");
    }
    stack.shutdown().await;
}

fn first_values(v: &Value) -> Vec<Value> {
    v["timeSeriesData"][0]["pointData"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| p["values"][0].clone())
        .collect()
}

#[tokio::test]
async fn mql_answers_the_worlds_requests() {
    let stack = world().await;
    let token = token(&stack).await;
    let canary = "metric.destination_workload_name == 'podinfo' && \
                  metric.destination_workload_namespace == 'default'";
    // The canary's error ratio, per 10 s window: 30 %.
    let ratio = format!(
        "{COUNT} | filter {canary} | align delta(10s) | every 10s | within 1m \
         | filter_ratio_by [], metric.response_code >= 500"
    );
    let (code, v) = query(&stack, &token, &project(), &ratio).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["timeSeriesDescriptor"]["pointDescriptors"][0]["valueType"],
        "DOUBLE"
    );
    let ratios = first_values(&v);
    assert!(!ratios.is_empty(), "{v}");
    assert!(
        ratios
            .iter()
            .all(|r| (r["doubleValue"].as_f64().unwrap() - 0.3).abs() < 0.001),
        "{v}"
    );
    // Points newest first.
    let ends: Vec<&str> = v["timeSeriesData"][0]["pointData"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["timeInterval"]["endTime"].as_str().unwrap())
        .collect();
    assert!(ends.windows(2).all(|w| w[0] > w[1]), "{ends:?}");

    // Requests by response code: INT64 counts, one series per code.
    let by_code = format!(
        "{COUNT} | filter {canary} | align delta(10s) | every 10s | within 1m \
         | group_by [metric.response_code], sum(val())"
    );
    let (_, v) = query(&stack, &token, &project(), &by_code).await;
    let series = v["timeSeriesData"].as_array().unwrap();
    assert_eq!(series.len(), 2, "{v}");
    let codes: Vec<&str> = series
        .iter()
        .map(|s| s["labelValues"][0]["int64Value"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["200", "500"]);
    let ok: i64 = first_values(&v)[0]["int64Value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (138..=142).contains(&ok),
        "70 % of 200 requests in 10 s: {v}"
    );

    // Latency: Flagger's percentile query, and the distribution without a reducer.
    let latency = "fetch k8s_container
        | metric 'istio.io/service/server/response_latencies'
        | filter (metric.destination_service_name == 'podinfo-canary'
                  && metric.destination_service_namespace == 'default')
        | align delta(10s) | every 10s
        | group_by [], [p99: percentile(value.response_latencies, 99)]";
    let (_, v) = query(&stack, &token, &project(), latency).await;
    let p99 = first_values(&v)[0]["doubleValue"].as_f64().unwrap();
    assert!(p99 > 10.0 && p99 < 5000.0, "{v}");
    let (_, v) = query(
        &stack,
        &token,
        &project(),
        &latency.replace(
            "[p99: percentile(value.response_latencies, 99)]",
            "aggregate(val())",
        ),
    )
    .await;
    assert!(first_values(&v)[0]["distributionValue"].is_object(), "{v}");

    // Nobody: no time series at all.
    let (code, v) = query(
        &stack,
        &token,
        &project(),
        &format!("{COUNT} | filter metric.destination_workload_name == 'nobody'"),
    )
    .await;
    assert_eq!(code, 200);
    assert!(v.get("timeSeriesData").is_none(), "{v}");
    stack.shutdown().await;
}

#[tokio::test]
async fn every_fault_mode_is_produced() {
    let stack = world().await;
    let token = token(&stack).await;
    let mql = format!("{COUNT} | align delta(10s) | every 10s | group_by [], sum(val())");
    let set = |mode| stack.stackdriver_faults().set(ProviderFault::new(mode));
    set(FaultMode::RateLimit);
    let (code, v) = query(&stack, &token, &project(), &mql).await;
    assert_eq!(
        (code, v["error"]["status"].as_str()),
        (429, Some("RESOURCE_EXHAUSTED"))
    );
    set(FaultMode::Error);
    let (code, v) = query(&stack, &token, &project(), &mql).await;
    assert_eq!(code, 503);
    assert!(v.as_str().unwrap().contains("<html>"));
    set(FaultMode::Empty);
    let (_, v) = query(&stack, &token, &project(), &mql).await;
    assert!(v.get("timeSeriesData").is_none(), "{v}");
    set(FaultMode::NullPoints);
    let (_, v) = query(&stack, &token, &project(), &mql).await;
    assert!(v["timeSeriesData"][0].get("pointData").is_none(), "{v}");
    set(FaultMode::SeveralSeries);
    let (_, v) = query(&stack, &token, &project(), &mql).await;
    assert_eq!(v["timeSeriesData"].as_array().unwrap().len(), 2, "{v}");
    stack.stackdriver_faults().clear();
    let (code, _) = query(&stack, &token, &project(), &mql).await;
    assert_eq!(code, 200);
    stack.shutdown().await;
}
