//! The Splunk emulator: SignalFlow programs run over the traffic world and answered as
//! Server-Sent Events, the token checked, every fault mode produced.

use serin_stack::testing as common;

use common::*;
use serde_json::Value;
use serin_stack::{FaultMode, ProviderFault, Stack, StackConfig};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TOKEN: (&str, &str) = ("X-SF-Token", "serin-sf-token");

/// A stack whose world has run 10 s: `podinfo-primary` healthy and the `podinfo` canary
/// failing 30 %, 20 requests/s each.
async fn world() -> Stack {
    podinfo_world(StackConfig {
        splunk: true,
        ..StackConfig::default()
    })
    .await
}

/// The events of a stream: (type, data as JSON).
fn events(body: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for block in body.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = String::new();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
                data.push('\n');
            }
        }
        out.push((name, serde_json::from_str(&data).unwrap()));
    }
    out
}

/// Runs `program` over the last 10 minutes (and a minute ahead, which the emulator cuts), at
/// `resolution` milliseconds.
async fn execute(
    stack: &Stack,
    program: &str,
    resolution: u64,
) -> (u16, Vec<(String, String)>, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let url = format!(
        "{}/v2/signalflow/execute?start={}&stop={}&immediate=true&resolution={resolution}",
        stack.splunk_url().unwrap(),
        now - 600_000,
        now + 60_000
    );
    http(
        "POST",
        &url,
        &[TOKEN, ("Content-Type", "text/plain")],
        program,
    )
    .await
}

/// Every published value, in order, with its time series.
fn values(body: &str) -> Vec<(String, Option<f64>)> {
    events(body)
        .into_iter()
        .filter(|(e, _)| e == "data")
        .flat_map(|(_, d)| {
            d["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p["tsId"].as_str().unwrap().to_string(), p["value"].as_f64()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Flagger's documented program: the success rate of `target`.
fn success_rate(target: &str) -> String {
    format!(
        "total = data('traces.count', filter=filter('sf_service', '{target}')).sum().publish(enable=False)\n\
         success = data('traces.count', filter=filter('sf_service', '{target}') and filter('sf_error', 'false')).sum().publish(enable=False)\n\
         ((success/total) * 100).publish()\n"
    )
}

#[tokio::test]
async fn the_token_is_required() {
    let stack = world().await;
    let sf = stack.splunk_url().unwrap();
    let (code, _, body) = http("GET", &format!("{sf}/v2/metric?limit=1"), &[], "").await;
    assert_eq!(code, 401, "{body}");
    let (code, _, body) = http(
        "GET",
        &format!("{sf}/v2/metric?limit=1"),
        &[("X-SF-Token", "wrong")],
        "",
    )
    .await;
    assert_eq!(code, 401, "{body}");
    let (code, _, body) = http("GET", &format!("{sf}/v2/metric?limit=1"), &[TOKEN], "").await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 1, "{v}");
    let (code, _, _) = http(
        "POST",
        &format!("{sf}/v2/signalflow/execute?start=0"),
        &[("X-SF-Token", "wrong")],
        "data('x').publish()",
    )
    .await;
    assert_eq!(code, 401);
}

#[tokio::test]
async fn programs_run_over_the_world() {
    let stack = world().await;
    let (code, headers, body) = execute(&stack, &success_rate("podinfo"), 1000).await;
    assert_eq!(code, 200, "{body}");
    assert!(headers.contains(&("content-type".into(), "text/event-stream".into())));
    let kinds: Vec<String> = events(&body).into_iter().map(|(e, _)| e).collect();
    assert_eq!(kinds.first().map(String::as_str), Some("control-message"));
    assert!(kinds.contains(&"metadata".to_string()), "{kinds:?}");
    let all = events(&body);
    let (last, end) = all.last().unwrap();
    assert_eq!(
        (last.as_str(), end["event"].as_str()),
        ("control-message", Some("END_OF_CHANNEL"))
    );
    // One published series (the ratio; total and success are not published), 70 % at every
    // second of the world's 10.
    let got = values(&body);
    assert_eq!(got.len(), 10, "{body}");
    let series: std::collections::BTreeSet<&String> = got.iter().map(|(id, _)| id).collect();
    assert_eq!(series.len(), 1);
    assert!(
        got.iter().all(|(_, v)| (v.unwrap() - 70.0).abs() < 1e-6),
        "{got:?}"
    );
    // The primary is healthy.
    let (_, _, body) = execute(&stack, &success_rate("podinfo-primary"), 1000).await;
    assert!(
        values(&body).iter().all(|(_, v)| *v == Some(100.0)),
        "{body}"
    );

    // Counts, grouped, over time, and latency.
    let (_, _, body) = execute(
        &stack,
        "data('service.request.count', filter=filter('sf_environment', 'default'), rollup='sum').sum(by=['sf_service']).publish('by service')",
        1000,
    )
    .await;
    let got = values(&body);
    assert_eq!(got.len(), 20, "two series, ten seconds: {body}");
    assert!(
        got.iter().all(|(_, v)| (v.unwrap() - 20.0).abs() < 1e-6),
        "{got:?}"
    );
    let (_, _, body) = execute(
        &stack,
        "A = data('service.request.count', filter=filter('sf_service', 'podinfo*') and not filter('sf_service', 'podinfo-primary')).sum()\n\
         A.sum(over='1m').publish()",
        1000,
    )
    .await;
    let last = values(&body).last().unwrap().1.unwrap();
    assert!(
        (last - 200.0).abs() < 1e-6,
        "the last minute holds the 10 s: {body}"
    );
    let (_, _, body) = execute(
        &stack,
        "data('service.request.duration.ns.p99', filter=filter('sf_service', 'podinfo')).max().scale(0.000001).publish()",
        5000,
    )
    .await;
    let got = values(&body);
    assert!((2..=3).contains(&got.len()), "10 s in 5 s buckets: {body}");
    assert!(
        got.iter().all(|(_, v)| (v.unwrap() - 50.0).abs() < 1e-3),
        "{got:?}"
    );
    // A metric nobody sends: the computation ends without data.
    let (code, _, body) = execute(&stack, "data('nobody.sends.this').sum().publish()", 1000).await;
    assert_eq!(code, 200);
    assert!(values(&body).is_empty(), "{body}");
    assert!(body.contains("END_OF_CHANNEL"));
}

#[tokio::test]
async fn broken_programs_stop_with_an_error_message() {
    let stack = world().await;
    for (program, code) in [
        ("data('x'", "ANALYTICS_PROGRAM_SYNTAX_ERROR"),
        ("dat('x').publish()", "ANALYTICS_PROGRAM_NAME_ERROR"),
        ("A.publish()", "ANALYTICS_PROGRAM_NAME_ERROR"),
        (
            "data('x').rollup().publish()",
            "ANALYTICS_PROGRAM_NAME_ERROR",
        ),
        (
            "(filter('a', 'b') + 1).publish()",
            "ANALYTICS_PROGRAM_ERROR",
        ),
    ] {
        let (status, _, body) = execute(&stack, program, 1000).await;
        assert_eq!(status, 200, "{program}: {body}");
        let all = events(&body);
        let (last, error) = all.last().unwrap();
        assert_eq!(last, "error", "{program}: {body}");
        assert_eq!(error["errors"][0]["code"], code, "{program}: {error}");
        assert!(!body.contains("END_OF_CHANNEL"), "{program}");
    }
    let sf = stack.splunk_url().unwrap();
    let (status, _, _) = http(
        "POST",
        &format!("{sf}/v2/signalflow/execute"),
        &[TOKEN],
        "data('x').publish()",
    )
    .await;
    assert_eq!(status, 400, "start is required");
}

#[tokio::test]
async fn fault_modes() {
    let stack = world().await;
    let program = success_rate("podinfo");
    let set = |mode, status, count| {
        stack.splunk_faults().set(ProviderFault {
            mode,
            status,
            count,
        });
    };
    set(FaultMode::NullPoints, None, None);
    let (_, _, body) = execute(&stack, &program, 1000).await;
    let got = values(&body);
    assert!(
        !got.is_empty() && got.iter().all(|(_, v)| v.is_none()),
        "{body}"
    );

    set(FaultMode::Empty, None, None);
    let (code, _, body) = execute(&stack, &program, 1000).await;
    assert_eq!(code, 200);
    assert!(
        values(&body).is_empty() && body.contains("END_OF_CHANNEL"),
        "{body}"
    );

    set(FaultMode::SeveralSeries, None, None);
    let (_, _, body) = execute(&stack, &program, 1000).await;
    let series: std::collections::BTreeSet<String> =
        values(&body).into_iter().map(|(id, _)| id).collect();
    assert_eq!(series.len(), 2, "{body}");

    set(FaultMode::RateLimit, None, None);
    let (code, headers, _) = execute(&stack, &program, 1000).await;
    assert_eq!(code, 429);
    assert!(
        headers.contains(&("retry-after".into(), "1".into())),
        "{headers:?}"
    );

    let admin = stack.admin_url().unwrap();
    let (code, _, _) = http(
        "POST",
        &format!("{admin}/splunk/fault"),
        &[],
        "mode: error\nstatus: 502\ncount: 1\n",
    )
    .await;
    assert_eq!(code, 200);
    let (code, headers, _) = execute(&stack, &program, 1000).await;
    assert_eq!(code, 502);
    assert!(headers.contains(&("content-type".into(), "text/html".into())));
    let (code, _, _) = execute(&stack, &program, 1000).await;
    assert_eq!(code, 200, "count: 1 applies to one request only");

    set(FaultMode::Hang, None, None);
    let hung = tokio::time::timeout(Duration::from_secs(1), execute(&stack, &program, 1000)).await;
    assert!(hung.is_err(), "a hanging emulator answered: {hung:?}");
    let (code, _, _) = http("DELETE", &format!("{admin}/splunk/fault"), &[], "").await;
    assert_eq!(code, 200);
    let (code, _, _) = execute(&stack, &program, 1000).await;
    assert_eq!(code, 200);
}
