//! Graphite and InfluxDB templates (the examples' success rates) against the stack's
//! emulators, through `Analyzer::run` as the controller calls it: the faulty canary's value,
//! no data, null points, several series, credentials refused, 429 with and without a retry in
//! the budget, 5xx, a hung and an unreachable server, which of those hold a release under
//! `noDataPolicy: hold` (an outage) or fail it (a misconfiguration), and the judge on
//! Graphite's series.

use std::time::Duration;

use serde_json::{Value, json};
use serin::analysis::Evaluation;
use serin::api::Canary;
use serin::api::canary::MetricVerdict;
use serin_stack::testing as common;
use serin_stack::{FaultMode, ProviderFault, ProviderFaults, Stack, StackConfig};

use super::providers_stack::{analyzer, canary, fault, near, run_valued, world_of};

/// The stack with both emulators (the world of `providers_stack`).
async fn world() -> (Stack, kube::Client) {
    world_of(StackConfig {
        graphite: true,
        influxdb: true,
        ..StackConfig::default()
    })
    .await
}

async fn graphite_template(stack: &Stack, client: &kube::Client, password: &str) {
    secret(
        client,
        "graphite-basic-auth",
        json!({"username": "serin", "password": password}),
    )
    .await;
    template(client, "graphite", stack.graphite_url().unwrap()).await;
}

async fn influxdb_template(stack: &Stack, client: &kube::Client, token: &str) {
    secret(client, "influxdb", json!({"token": token, "org": "serin"})).await;
    template(client, "influxdb", stack.influxdb_url().unwrap()).await;
}

async fn secret(client: &kube::Client, name: &str, data: Value) {
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), "default");
    let _ = secrets.delete(name, &Default::default()).await;
    common::create(
        client,
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "default"}, "stringData": data}),
    )
    .await;
}

/// `examples/metrictemplate-<provider>.yaml` at `address`, in namespace `default` (its
/// Secret created by the callers above, with the emulator's credentials or not).
async fn template(client: &kube::Client, provider: &str, address: &str) {
    let path = format!(
        "{}/examples/metrictemplate-{provider}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut template: Value =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    template["metadata"]["namespace"] = json!("default");
    template["spec"]["provider"]["address"] = json!(address);
    common::create(client, template).await;
}

/// The canary's success rate over 10 s on `provider`'s example template, at least 99 %.
fn success_rate(provider: &str, no_data: &str) -> Canary {
    canary(
        "podinfo",
        json!([{"name": "success-rate",
                "templateRef": {"name": format!("{provider}-request-success-rate")},
                "thresholdRange": {"min": 99}, "interval": "10s", "noDataPolicy": no_data}]),
    )
}

fn message(e: &Evaluation) -> String {
    e.observations[0].message.clone().unwrap_or_default()
}

/// Each fault mode and what the check makes of it: (mode, verdict, text of the message).
async fn each_fault(
    faults: &ProviderFaults,
    run: impl AsyncFn() -> Evaluation,
    cases: &[(FaultMode, MetricVerdict, &str)],
) {
    for (mode, verdict, needle) in cases {
        faults.set(fault(*mode));
        let e = run().await;
        assert_eq!(e.observations[0].verdict, *verdict, "{mode:?}: {e:?}");
        assert!(message(&e).contains(needle), "{mode:?}: {}", message(&e));
        faults.clear();
    }
}

#[tokio::test]
async fn graphite_values_no_data_and_faults() {
    let (stack, client) = world().await;
    graphite_template(&stack, &client, "serin-graphite-password").await;
    let analyzer =
        analyzer(&client, "http://127.0.0.1:1").with_check_budget(Duration::from_millis(1500));
    let checked = success_rate("graphite", "fail");

    // The faulty canary's 70 % success, read from the world.
    let e = run_valued(&analyzer, &checked).await;
    assert!(near(e.observations[0].value, 70.0), "{e:?}");
    assert!(
        matches!(&e.outcome, serin_core::Analysis::Fail(r) if r.starts_with("success-rate 7") && r.ends_with(" < 99")),
        "{:?}",
        e.outcome
    );
    assert_eq!(analyzer.check_availability(&checked).await, Ok(()));

    let faults = stack.graphite_faults();
    let run = async || analyzer.run(&checked, None).await;
    each_fault(
        faults,
        run,
        &[
            (FaultMode::NullPoints, MetricVerdict::NoData, "null"),
            (FaultMode::Empty, MetricVerdict::NoData, "no series"),
            (FaultMode::RateLimit, MetricVerdict::Error, "rate limit"),
            (FaultMode::Error, MetricVerdict::Error, "503"),
            (
                FaultMode::Hang,
                MetricVerdict::Error,
                "did not answer within 2s",
            ),
        ],
    )
    .await;

    // Several series: the last non-null point of the last one (Flagger's), the doubled copy.
    faults.set(fault(FaultMode::SeveralSeries));
    let e = analyzer.run(&checked, None).await;
    assert!(near(e.observations[0].value, 140.0), "{e:?}");
    faults.clear();

    // One 429 (Retry-After: 1) within the budget: retried, and the value comes back.
    faults.set(ProviderFault {
        count: Some(1),
        ..fault(FaultMode::RateLimit)
    });
    let e = analyzer.run(&checked, None).await;
    assert!(near(e.observations[0].value, 70.0), "{e:?}");
    stack.shutdown().await;
}

/// Flagger's Graphite docs write the metric interval in Graphite's syntax (`1min`): it only
/// goes into the query, so serin runs it (a provider reading it as a duration would say so).
#[tokio::test]
async fn a_graphite_interval_in_graphites_own_syntax_runs() {
    let (stack, client) = world().await;
    graphite_template(&stack, &client, "serin-graphite-password").await;
    let analyzer = analyzer(&client, "http://127.0.0.1:1");
    let checked = canary(
        "podinfo",
        json!([{"name": "success-rate",
                "templateRef": {"name": "graphite-request-success-rate"},
                "thresholdRange": {"min": 99}, "interval": "1min", "noDataPolicy": "fail"}]),
    );
    let e = run_valued(&analyzer, &checked).await;
    assert!(near(e.observations[0].value, 70.0), "{e:?}");
}

#[tokio::test]
async fn graphite_outages_hold_and_refused_credentials_fail() {
    let (stack, client) = world().await;
    graphite_template(&stack, &client, "serin-graphite-password").await;
    let analyzer = analyzer(&client, "http://127.0.0.1:1");
    let held = success_rate("graphite", "hold");
    run_valued(&analyzer, &held).await;

    stack.graphite_faults().set(fault(FaultMode::Error));
    let e = analyzer.run(&held, None).await;
    assert!(
        matches!(&e.outcome, serin_core::Analysis::Hold(r) if r.contains("waiting for graphite")),
        "an outage holds: {:?}",
        e.outcome
    );
    stack.graphite_faults().clear();

    // The wrong password: refused, a misconfiguration that fails whatever the policy.
    secret(
        &client,
        "graphite-basic-auth",
        json!({"username": "serin", "password": "wrong"}),
    )
    .await;
    let e = analyzer.run(&held, None).await;
    assert_eq!(e.observations[0].verdict, MetricVerdict::Error, "{e:?}");
    assert!(message(&e).contains("401"), "{}", message(&e));
    assert!(matches!(e.outcome, serin_core::Analysis::Fail(_)), "{e:?}");
    let down = analyzer.check_availability(&held).await.unwrap_err();
    assert!(down.contains("graphite is not available"), "{down}");

    // Nothing listening: an outage too.
    let mut unreachable: Value = serde_json::to_value(
        kube::Api::<serin::api::MetricTemplate>::namespaced(client.clone(), "default")
            .get("graphite-request-success-rate")
            .await
            .unwrap(),
    )
    .unwrap();
    unreachable["metadata"] = json!({"name": "graphite-unreachable", "namespace": "default"});
    unreachable["spec"]["provider"]["address"] = json!("http://127.0.0.1:1");
    unreachable["spec"]["provider"]
        .as_object_mut()
        .unwrap()
        .remove("secretRef");
    common::create(&client, unreachable).await;
    let gone = canary(
        "podinfo",
        json!([{"name": "success-rate", "templateRef": {"name": "graphite-unreachable"},
                "thresholdRange": {"min": 99}, "interval": "10s", "noDataPolicy": "hold"}]),
    );
    let e = analyzer.run(&gone, None).await;
    assert!(
        message(&e).contains("cannot connect to graphite"),
        "{}",
        message(&e)
    );
    assert!(matches!(e.outcome, serin_core::Analysis::Hold(_)), "{e:?}");
    stack.shutdown().await;
}

#[tokio::test]
async fn influxdb_values_no_data_and_faults() {
    let (stack, client) = world().await;
    influxdb_template(&stack, &client, "serin-influxdb-token").await;
    let analyzer =
        analyzer(&client, "http://127.0.0.1:1").with_check_budget(Duration::from_millis(1500));
    let checked = success_rate("influxdb", "fail");

    let e = run_valued(&analyzer, &checked).await;
    assert!(near(e.observations[0].value, 70.0), "{e:?}");
    assert!(
        matches!(&e.outcome, serin_core::Analysis::Fail(r) if r.starts_with("success-rate 7") && r.ends_with(" < 99")),
        "{:?}",
        e.outcome
    );
    assert_eq!(analyzer.check_availability(&checked).await, Ok(()));

    let faults = stack.influxdb_faults();
    let run = async || analyzer.run(&checked, None).await;
    each_fault(
        faults,
        run,
        &[
            (FaultMode::NullPoints, MetricVerdict::NoData, "null"),
            (FaultMode::Empty, MetricVerdict::NoData, "no records"),
            (
                FaultMode::GraphqlError,
                MetricVerdict::Error,
                "answered the query with an error",
            ),
            (FaultMode::RateLimit, MetricVerdict::Error, "rate limit"),
            (FaultMode::Error, MetricVerdict::Error, "503"),
            // Three times the 2 s timeout, as Flagger's 15 s are to its 5 s.
            (
                FaultMode::Hang,
                MetricVerdict::Error,
                "did not answer within 6s",
            ),
        ],
    )
    .await;

    // Several tables: the first record (Flagger's), the real one.
    faults.set(fault(FaultMode::SeveralSeries));
    let e = analyzer.run(&checked, None).await;
    assert!(near(e.observations[0].value, 70.0), "{e:?}");
    faults.clear();

    faults.set(ProviderFault {
        count: Some(1),
        ..fault(FaultMode::RateLimit)
    });
    let e = analyzer.run(&checked, None).await;
    assert!(near(e.observations[0].value, 70.0), "{e:?}");
    stack.shutdown().await;
}

#[tokio::test]
async fn influxdb_refused_tokens_and_rejected_queries_fail_outages_hold() {
    let (stack, client) = world().await;
    influxdb_template(&stack, &client, "serin-influxdb-token").await;
    let analyzer = analyzer(&client, "http://127.0.0.1:1");
    let held = success_rate("influxdb", "hold");
    run_valued(&analyzer, &held).await;

    stack.influxdb_faults().set(fault(FaultMode::Error));
    let e = analyzer.run(&held, None).await;
    assert!(
        matches!(&e.outcome, serin_core::Analysis::Hold(r) if r.contains("waiting for influxdb")),
        "an outage holds: {:?}",
        e.outcome
    );
    stack.influxdb_faults().clear();

    // A query the server rejects (a bucket it does not have): fails whatever the policy.
    let templates = kube::Api::<serin::api::MetricTemplate>::namespaced(client.clone(), "default");
    let mut other: Value = serde_json::to_value(
        templates
            .get("influxdb-request-success-rate")
            .await
            .unwrap(),
    )
    .unwrap();
    other["metadata"] = json!({"name": "influxdb-other-bucket", "namespace": "default"});
    let query = other["spec"]["query"]
        .as_str()
        .unwrap()
        .replace("\"default\"", "\"metrics\"");
    other["spec"]["query"] = json!(query);
    common::create(&client, other).await;
    let rejected = canary(
        "podinfo",
        json!([{"name": "success-rate", "templateRef": {"name": "influxdb-other-bucket"},
                "thresholdRange": {"min": 99}, "interval": "10s", "noDataPolicy": "hold"}]),
    );
    let e = analyzer.run(&rejected, None).await;
    assert!(
        message(&e).contains("could not find bucket"),
        "{}",
        message(&e)
    );
    assert!(matches!(e.outcome, serin_core::Analysis::Fail(_)), "{e:?}");

    // The wrong token: refused, and the provider is reported unavailable.
    secret(
        &client,
        "influxdb",
        json!({"token": "wrong", "org": "serin"}),
    )
    .await;
    let e = analyzer.run(&held, None).await;
    assert!(message(&e).contains("401"), "{}", message(&e));
    assert!(matches!(e.outcome, serin_core::Analysis::Fail(_)), "{e:?}");
    let down = analyzer.check_availability(&held).await.unwrap_err();
    assert!(down.contains("influxdb is not available"), "{down}");
    stack.shutdown().await;
}

#[tokio::test]
async fn the_judge_compares_graphite_series_and_refuses_influxdb() {
    let (stack, client) = world().await;
    graphite_template(&stack, &client, "serin-graphite-password").await;
    influxdb_template(&stack, &client, "serin-influxdb-token").await;
    let analyzer = analyzer(&client, "http://127.0.0.1:1");
    let judged = |provider: &str| {
        canary(
            "podinfo",
            json!([{"name": "success-rate",
                    "templateRef": {"name": format!("{provider}-request-success-rate")},
                    "interval": "20s", "noDataPolicy": "hold",
                    "judge": {"step": "1s", "minSamples": 8, "worse": "lower"}}]),
        )
    };
    // One point a second for each version (`summarize` by the step): the faulty canary's 70 %
    // against the primary's 100 %, once both have eight.
    let graphite = judged("graphite");
    let poll = serin_testkit::Poll::new(Duration::from_secs(30)).every(Duration::from_millis(500));
    let e = loop {
        let e = analyzer.run(&graphite, None).await;
        if !matches!(e.outcome, serin_core::Analysis::Hold(_)) || poll.expired() {
            break e;
        }
        poll.next().await;
    };
    let o = &e.observations[0];
    assert_eq!(o.verdict, MetricVerdict::Fail, "{e:?}");
    assert!(near(o.value, 70.0) && near(o.baseline, 100.0), "{o:?}");
    assert!(
        message(&e).contains("the canary is worse than the primary"),
        "{}",
        message(&e)
    );

    let e = analyzer.run(&judged("influxdb"), None).await;
    assert_eq!(e.observations[0].verdict, MetricVerdict::Error, "{e:?}");
    assert!(
        message(&e).contains("Prometheus and Graphite only"),
        "{}",
        message(&e)
    );
    stack.shutdown().await;
}
