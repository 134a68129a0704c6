//! The Graphite emulator: the render API answered from the traffic world, basic auth checked,
//! every fault mode produced.

use serin_stack::testing as common;

use common::*;
use serde_json::{Value, json};
use serin_stack::{FaultMode, ProviderFault, Stack, StackConfig};
use std::time::Duration;

/// `serin:serin-graphite-password`.
const AUTH: (&str, &str) = (
    "Authorization",
    "Basic c2VyaW46c2VyaW4tZ3JhcGhpdGUtcGFzc3dvcmQ=",
);

/// A stack whose world has run 10 s: `podinfo-primary` healthy behind the apex and the
/// `podinfo` canary failing 30 % behind `podinfo-canary`, 20 requests/s each.
async fn world() -> Stack {
    podinfo_world(StackConfig {
        graphite: true,
        ..StackConfig::default()
    })
    .await
}

/// `GET /render` of `params` (`format=json` added), with `headers`.
async fn render(
    stack: &Stack,
    params: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Value) {
    let url = format!(
        "{}/render?format=json&{params}",
        stack.graphite_url().unwrap()
    );
    let (code, headers, body) = http("GET", &url, headers, "").await;
    (
        code,
        headers,
        serde_json::from_str(&body).unwrap_or(json!(body)),
    )
}

fn target(t: &str) -> String {
    format!("target={}&from=-1min", enc(t))
}

/// The non-null values of series `i`.
fn values(v: &Value, i: usize) -> Vec<f64> {
    v[i]["datapoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p[0].as_f64())
        .collect()
}

/// Flagger's documented success rate (percent of non-5xx), for `app`.
fn success_rate(app: &str) -> String {
    let timer = format!("stats.timers.httpServerRequests.app.{app}.exception.*.method.*");
    format!(
        "asPercent(sumSeries({timer}.outcome.{{CLIENT_ERROR,INFORMATIONAL,REDIRECTION,SUCCESS}}.status.*.uri.*.count), sumSeries({timer}.outcome.*.status.*.uri.*.count))"
    )
}

#[tokio::test]
async fn basic_auth_is_required() {
    let stack = world().await;
    let (code, headers, _) = render(&stack, &target("x.y"), &[]).await;
    assert_eq!(code, 401);
    assert!(headers.contains(&("www-authenticate".into(), "Basic realm=\"graphite\"".into())));
    let wrong = ("Authorization", "Basic c2VyaW46d3Jvbmc=");
    assert_eq!(render(&stack, &target("x.y"), &[wrong]).await.0, 401);
    let (code, _, v) = render(&stack, &target("x.y"), &[AUTH]).await;
    assert_eq!((code, v), (200, json!([])));
}

#[tokio::test]
async fn render_answers_from_the_world() {
    let stack = world().await;
    let (code, _, v) = render(&stack, &target(&success_rate("podinfo")), &[AUTH]).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    let rates = values(&v, 0);
    assert!(rates.len() >= 8, "{v}");
    for r in &rates {
        assert!((r - 70.0).abs() < 1e-6, "{rates:?}");
    }
    // The second being flushed is null, as statsd has not written it yet.
    let points = v[0]["datapoints"].as_array().unwrap();
    assert_eq!(points.last().unwrap()[0], Value::Null, "{v}");
    let (_, _, v) = render(&stack, &target(&success_rate("podinfo-primary")), &[AUTH]).await;
    assert!(
        values(&v, 0).iter().all(|r| (r - 100.0).abs() < 1e-6),
        "{v}"
    );

    // Counts add up to what the world sent: 20/s for 10 s.
    let count = "sumSeries(stats.timers.httpServerRequests.app.podinfo-primary.*.*.*.*.*.*.status.*.uri.root.count)";
    let (_, _, v) = render(&stack, &target(count), &[AUTH]).await;
    let total: f64 = values(&v, 0).iter().sum();
    assert!((total - 200.0).abs() < 1e-6, "{total}");
    // summarize by the minute: one bucket (or two across a minute boundary) of the same.
    let (_, _, v) = render(
        &stack,
        &target(&format!("summarize({count}, '1min', 'sum')")),
        &[AUTH],
    )
    .await;
    assert!(
        (values(&v, 0).iter().sum::<f64>() - 200.0).abs() < 1e-6,
        "{v}"
    );
    assert_eq!(v[0]["datapoints"][0][1].as_i64().unwrap() % 60, 0, "{v}");
    // Latency: the default 50 ms.
    let mean = "averageSeries(stats.timers.httpServerRequests.app.podinfo.*.*.*.*.*.*.status.200.uri.root.mean)";
    let (_, _, v) = render(&stack, &target(mean), &[AUTH]).await;
    assert!(values(&v, 0).iter().all(|m| (m - 50.0).abs() < 1e-6), "{v}");
    // A pattern: one series per match, named by its path; aliasByNode names them shorter.
    let per_status = "aliasByNode(stats.timers.httpServerRequests.app.podinfo.*.*.*.*.*.*.status.*.uri.root.count, 4, 12)";
    let (_, _, v) = render(&stack, &target(per_status), &[AUTH]).await;
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["target"].as_str().unwrap())
        .collect();
    // In name order: outcome SERVER_ERROR before SUCCESS.
    assert_eq!(names, ["podinfo.500", "podinfo.200"]);
    // No data: a path nobody writes.
    let (code, _, v) = render(&stack, &target("sumSeries(nobody.writes.this)"), &[AUTH]).await;
    assert_eq!((code, v), (200, json!([])));
    // Several targets, `until`, Unix times.
    let (code, _, v) = render(
        &stack,
        &format!("{}&target=x.y&until=now", target(count)),
        &[AUTH],
    )
    .await;
    assert_eq!((code, v.as_array().unwrap().len()), (200, 1), "{v}");
}

#[tokio::test]
async fn bad_requests_say_why() {
    let stack = world().await;
    for (params, needle) in [
        (target("sumSeries(a.b"), "invalid target"),
        (target("movingMedian(a.b, 5)"), "unknown function"),
        (format!("{}&from=yesterday", target("a.b")), "invalid time"),
        (target("summarize(a.b, 'soon')"), "summarize"),
    ] {
        let (code, _, v) = render(&stack, &params, &[AUTH]).await;
        assert_eq!(code, 400, "{params}: {v}");
        assert!(v.as_str().unwrap().contains(needle), "{params}: {v}");
    }
    let url = format!(
        "{}/render?format=png&target=a.b",
        stack.graphite_url().unwrap()
    );
    assert_eq!(http("GET", &url, &[AUTH], "").await.0, 400);
}

#[tokio::test]
async fn fault_modes() {
    let stack = world().await;
    let rate = target(&success_rate("podinfo"));
    let set = |mode| stack.graphite_faults().set(ProviderFault::new(mode));

    set(FaultMode::NullPoints);
    let (_, _, v) = render(&stack, &rate, &[AUTH]).await;
    assert!(
        !v[0]["datapoints"].as_array().unwrap().is_empty() && values(&v, 0).is_empty(),
        "{v}"
    );

    set(FaultMode::Empty);
    assert_eq!(render(&stack, &rate, &[AUTH]).await.2, json!([]));

    set(FaultMode::SeveralSeries);
    let (_, _, v) = render(&stack, &rate, &[AUTH]).await;
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_ne!(values(&v, 0), values(&v, 1));

    set(FaultMode::RateLimit);
    let (code, headers, _) = render(&stack, &rate, &[AUTH]).await;
    assert_eq!(code, 429);
    assert!(
        headers.contains(&("retry-after".into(), "1".into())),
        "{headers:?}"
    );

    // Set through the admin server, as a test in another process would.
    let admin = stack.admin_url().unwrap();
    let (code, _, _) = http(
        "POST",
        &format!("{admin}/graphite/fault"),
        &[],
        "mode: error\nstatus: 502\ncount: 1\n",
    )
    .await;
    assert_eq!(code, 200);
    let (code, headers, _) = render(&stack, &rate, &[AUTH]).await;
    assert_eq!(code, 502);
    assert!(headers.contains(&("content-type".into(), "text/html".into())));
    assert_eq!(
        render(&stack, &rate, &[AUTH]).await.0,
        200,
        "count: 1 applies to one request only"
    );

    set(FaultMode::Hang);
    let hung = tokio::time::timeout(Duration::from_secs(1), render(&stack, &rate, &[AUTH])).await;
    assert!(hung.is_err(), "a hanging emulator answered: {hung:?}");
    let (code, _, _) = http("DELETE", &format!("{admin}/graphite/fault"), &[], "").await;
    assert_eq!(code, 200);
    assert_eq!(render(&stack, &rate, &[AUTH]).await.0, 200);
}
