#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The providers against the local stack's real Prometheus (scraping the traffic world) and its
//! Datadog emulator, through `Analyzer::run` as the controller calls it: values, no data, NaN
//! and null points, several series, matrix, credentials refused, 429 with reset, 5xx with an
//! HTML body, a hung server. Needs the `prometheus` binary (`scripts/setup` installs it).

// The stack's own test helpers (podinfo layout, CRDs, object creation), shared rather than
// copied.
use serin_stack::testing as common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serin::analysis::{Analyzer, Evaluation};
use serin::api::canary::MetricVerdict;
use serin::api::{Canary, Provider};
use serin_stack::{FaultMode, ProviderFault, Scenario, Stack, StackConfig};
use serin_testkit::Poll;

/// A stack whose world sends 50 requests/s to the `podinfo` apex, split 50/50 by a
/// VirtualService between a healthy `podinfo-primary` and a `podinfo` canary failing 30 %.
async fn world(prometheus: bool, datadog: bool, newrelic: bool) -> (Stack, kube::Client) {
    world_of(StackConfig {
        prometheus,
        datadog,
        newrelic,
        ..StackConfig::default()
    })
    .await
}

/// The same world, with the servers `config` starts (its scenario is this world's).
pub(super) async fn world_of(config: StackConfig) -> (Stack, kube::Client) {
    let scenario = Scenario::parse(
        "workloads:\n  readyDelay: 0s\ntraffic:\n  provider: istio\n  services:\n    - name: podinfo\n      rate: 50\n",
    )
    .unwrap();
    let stack = Stack::start(StackConfig { scenario, ..config })
        .await
        .unwrap();
    let client = common::client(&stack);
    for crd in serin::api::crds() {
        common::create(&client, serde_json::to_value(&crd).unwrap()).await;
    }
    common::podinfo_split_by_istio(&client, "podinfo:6.0.0", "podinfo:6.0.1-faulty").await;
    (stack, client)
}

pub(super) fn canary(target: &str, metrics: Value) -> Canary {
    let mut canary = serin_testkit::canary("podinfo")
        .provider("istio")
        .without("progressDeadlineSeconds")
        .analysis(json!({"interval": "10s", "threshold": 2, "stepWeight": 10, "metrics": metrics}))
        .build();
    canary["spec"]["targetRef"]["name"] = json!(target);
    serde_json::from_value(canary).unwrap()
}

pub(super) fn analyzer(client: &kube::Client, prometheus: &str) -> Analyzer {
    Analyzer::new(client.clone(), prometheus.to_string(), Provider::Istio)
        .unwrap()
        .with_timeout(Duration::from_secs(2))
        .unwrap()
}

/// Runs until the first metric has a value (Prometheus needs a few scrapes), at most 30 s.
async fn run_until_valued(analyzer: &Analyzer, canary: &Canary) -> Evaluation {
    let poll = Poll::new(Duration::from_secs(30)).every(Duration::from_millis(500));
    loop {
        let evaluation = analyzer.run(canary, None).await;
        if evaluation.observations[0].value.is_some() {
            return evaluation;
        }
        assert!(!poll.expired(), "no value: {:?}", evaluation.observations);
        poll.next().await;
    }
}

pub(super) fn near(got: Option<f64>, want: f64) -> bool {
    got.is_some_and(|g| (g - want).abs() <= want * 0.05)
}

/// An analyzer without Prometheus whose checks may take `budget` (a rate-limited provider
/// waits within it).
pub(super) fn analyzer_within(client: &kube::Client, budget: Duration) -> Analyzer {
    analyzer(client, "http://127.0.0.1:1").with_check_budget(budget)
}

/// A check refused by the provider (a wrong token): an error naming `needles`, failing the
/// analysis whatever the policy, and the provider reported unavailable.
pub(super) async fn assert_refused(
    analyzer: &Analyzer,
    canary: &Canary,
    provider: &str,
    needles: &[&str],
) {
    let e = analyzer.run(canary, None).await;
    assert_eq!(e.observations[0].verdict, MetricVerdict::Error, "{e:?}");
    let text = message(&e);
    assert!(needles.iter().all(|n| text.contains(n)), "{text}");
    assert!(
        matches!(&e.outcome, serin_core::Analysis::Fail(_)),
        "{:?}",
        e.outcome
    );
    let down = analyzer.check_availability(canary).await.unwrap_err();
    assert!(
        down.contains(&format!("{provider} is not available")),
        "{down}"
    );
}

/// One 429 (`faults`), waited out within the check's budget: the value `want` read after at
/// least a second.
pub(super) async fn assert_retried_after_429(
    analyzer: &Analyzer,
    canary: &Canary,
    faults: &serin_stack::ProviderFaults,
    want: f64,
) {
    faults.set(ProviderFault {
        count: Some(1),
        ..ProviderFault::new(FaultMode::RateLimit)
    });
    let started = std::time::Instant::now();
    let e = analyzer.run(canary, None).await;
    assert!(near(e.observations[0].value, want), "{e:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited for the rate limit's reset"
    );
}

/// The first metric's message.
pub(super) fn message(e: &Evaluation) -> String {
    e.observations[0].message.clone().unwrap_or_default()
}

/// `examples/metrictemplate-<provider>.yaml` in namespace `default` at `address`, and its
/// Secret (named `provider`) holding `secret`.
pub(super) async fn example_template(
    client: &kube::Client,
    provider: &str,
    address: &str,
    secret: Value,
) {
    common::create(
        client,
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": provider, "namespace": "default"}, "stringData": secret}),
    )
    .await;
    let path = format!(
        "{}/examples/metrictemplate-{provider}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut template: Value =
        serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    template["metadata"]["namespace"] = json!("default");
    template["spec"]["provider"]["address"] = json!(address);
    common::create(client, template).await;
}

#[tokio::test]
async fn builtins_on_real_prometheus_pass_the_primary_and_fail_the_faulty_canary() {
    let (stack, client) = world(true, false, false).await;
    let analyzer = analyzer(&client, stack.prometheus_url().unwrap());
    let metrics = json!([
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "1m"}
    ]);

    let healthy = run_until_valued(&analyzer, &canary("podinfo-primary", metrics.clone())).await;
    assert_eq!(
        healthy.outcome,
        serin_core::Analysis::Pass,
        "{:?}",
        healthy.observations
    );
    assert!(near(healthy.observations[0].value, 100.0), "{healthy:?}");
    assert!(near(healthy.observations[1].value, 50.0), "{healthy:?}");

    let faulty = run_until_valued(&analyzer, &canary("podinfo", metrics)).await;
    assert!(near(faulty.observations[0].value, 70.0), "{faulty:?}");
    assert_eq!(faulty.observations[0].verdict, MetricVerdict::Fail);
    match &faulty.outcome {
        serin_core::Analysis::Fail(reason) => {
            assert!(reason.starts_with("success rate 7"), "{reason}");
            assert!(reason.ends_with("% < 99%"), "{reason}");
        }
        other => panic!("expected Fail, got {other:?}"),
    }

    // Availability: vector(1) answers 1.
    assert_eq!(
        analyzer
            .check_availability(&canary("podinfo", json!([{"name": "request-duration"}])))
            .await,
        Ok(())
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn prometheus_templates_empty_nan_series_and_matrix() {
    let (stack, client) = world(true, false, false).await;
    let prometheus = stack.prometheus_url().unwrap().to_string();
    let template = |name: &str, query: &str| {
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"provider": {"type": "prometheus", "address": prometheus}, "query": query}})
    };
    for (name, query) in [
        (
            "requests",
            "sum(rate(istio_requests_total{destination_workload=\"{{ target }}\"}[{{ interval }}]))",
        ),
        ("absent", "sum(rate(no_such_metric_total[{{ interval }}]))"),
        (
            "nan",
            "sum(rate(istio_requests_total[{{ interval }}])) * 0 / 0",
        ),
        (
            "per-workload",
            "sort(sum by (destination_workload) (rate(istio_requests_total[{{ interval }}])))",
        ),
        ("matrix", "istio_requests_total[{{ interval }}]"),
    ] {
        common::create(&client, template(name, query)).await;
    }
    let metrics: Vec<Value> = ["requests", "absent", "nan", "per-workload", "matrix"]
        .iter()
        .map(|n| json!({"name": n, "templateRef": {"name": n}, "interval": "30s"}))
        .collect();
    // The analyzer's default Prometheus is unreachable: templates use their own address.
    let analyzer = analyzer(&client, "http://127.0.0.1:1");
    let evaluation = run_until_valued(&analyzer, &canary("podinfo", json!(metrics))).await;
    let o = &evaluation.observations;
    // A rate over a window Prometheus has only just started filling: any positive value.
    assert!(o[0].value.is_some_and(|v| v > 0.0), "{o:?}");
    assert_eq!(o[1].verdict, MetricVerdict::NoData, "{o:?}");
    assert!(
        o[1].message.as_deref().unwrap().contains("no series"),
        "{o:?}"
    );
    assert_eq!(o[2].verdict, MetricVerdict::NoData, "{o:?}");
    assert!(o[2].message.as_deref().unwrap().contains("NaN"), "{o:?}");
    // Several series (one per workload): the last one is used, as Flagger does.
    assert_eq!(o[3].verdict, MetricVerdict::Pass, "{o:?}");
    assert!(o[3].value.is_some_and(|v| v > 0.0), "{o:?}");
    assert_eq!(o[4].verdict, MetricVerdict::Error, "{o:?}");
    assert!(o[4].message.as_deref().unwrap().contains("matrix"), "{o:?}");
    assert!(matches!(
        &evaluation.outcome,
        serin_core::Analysis::Fail(r) if r.contains("absent")
    ));
    stack.shutdown().await;
}

/// The canary's error rate in percent (v1 arithmetic).
const ERROR_RATE: &str = "sum:trace.http.request.errors{service:{{ target }},kube_namespace:{{ namespace }}}.as_count() / sum:trace.http.request.hits{service:{{ target }},kube_namespace:{{ namespace }}}.as_count() * 100";

/// A Datadog MetricTemplate `dd-error-rate` (v1 unless `v2`) running `query`, with its Secret
/// holding `api_key`.
async fn datadog_template(
    stack: &Stack,
    client: &kube::Client,
    api_key: &str,
    v2: bool,
    query: &str,
) {
    let annotations = if v2 {
        json!({"serin.io/datadog-api-version": "v2", "serin.io/datadog-aggregator": "avg"})
    } else {
        json!({})
    };
    common::create(
        client,
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "datadog", "namespace": "default"},
            "stringData": {"datadog_api_key": api_key,
                           "datadog_application_key": "serin-dd-application-key"}}),
    )
    .await;
    common::create(
        client,
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "dd-error-rate", "namespace": "default", "annotations": annotations},
            "spec": {"provider": {"type": "datadog", "address": stack.datadog_url().unwrap(),
                                  "secretRef": {"name": "datadog"}},
                     "query": query}}),
    )
    .await;
}

fn dd_canary() -> Canary {
    canary(
        "podinfo",
        json!([{"name": "error-rate", "templateRef": {"name": "dd-error-rate"},
                "thresholdRange": {"max": 1}, "interval": "10s"}]),
    )
}

/// Waits for the world to have sent some requests, then runs the Datadog check once.
async fn dd_run(analyzer: &Analyzer) -> Evaluation {
    let poll = Poll::new(Duration::from_secs(10)).every(Duration::from_millis(300));
    loop {
        let e = analyzer.run(&dd_canary(), None).await;
        if e.observations[0].value.is_some() || poll.expired() {
            return e;
        }
        poll.next().await;
    }
}

pub(super) fn fault(mode: FaultMode) -> ProviderFault {
    ProviderFault::new(mode)
}

#[tokio::test]
async fn datadog_emulator_values_no_data_and_faults() {
    let (stack, client) = world(false, true, false).await;
    datadog_template(&stack, &client, "serin-dd-api-key", false, ERROR_RATE).await;
    let analyzer =
        analyzer(&client, "http://127.0.0.1:1").with_check_budget(Duration::from_secs(3));

    // The faulty canary's 30 % errors, read from the world.
    let e = dd_run(&analyzer).await;
    assert!(near(e.observations[0].value, 30.0), "{e:?}");
    assert_eq!(e.observations[0].verdict, MetricVerdict::Fail);
    assert!(
        matches!(&e.outcome, serin_core::Analysis::Fail(r) if r.starts_with("error-rate 3") && r.ends_with(" > 1")),
        "{:?}",
        e.outcome
    );
    assert_eq!(analyzer.check_availability(&dd_canary()).await, Ok(()));

    let message = |e: &Evaluation| e.observations[0].message.clone().unwrap_or_default();
    for (mode, verdict, needle) in [
        (FaultMode::NullPoints, MetricVerdict::NoData, "null"),
        (FaultMode::Empty, MetricVerdict::NoData, "no series"),
        (FaultMode::RateLimit, MetricVerdict::Error, "resets in 10s"),
        (FaultMode::Error, MetricVerdict::Error, "503"),
        (
            FaultMode::Hang,
            MetricVerdict::Error,
            "did not answer within 2s",
        ),
    ] {
        stack.datadog_faults().set(fault(mode));
        let e = analyzer.run(&dd_canary(), None).await;
        assert_eq!(e.observations[0].verdict, verdict, "{mode:?}: {e:?}");
        assert!(message(&e).contains(needle), "{mode:?}: {}", message(&e));
        stack.datadog_faults().clear();
    }

    // Several series: the first is used (Flagger), and it is a number.
    stack.datadog_faults().set(fault(FaultMode::SeveralSeries));
    let e = analyzer.run(&dd_canary(), None).await;
    assert!(e.observations[0].value.is_some(), "{e:?}");
    stack.datadog_faults().clear();
    stack.shutdown().await;
}

#[tokio::test]
async fn datadog_429_is_retried_after_the_reset_within_the_budget() {
    let (stack, client) = world(false, true, false).await;
    datadog_template(&stack, &client, "serin-dd-api-key", false, ERROR_RATE).await;
    let analyzer =
        analyzer(&client, "http://127.0.0.1:1").with_check_budget(Duration::from_secs(15));
    dd_run(&analyzer).await;
    stack.datadog_faults().set(ProviderFault {
        count: Some(1),
        ..fault(FaultMode::RateLimit)
    });
    let started = Instant::now();
    let e = analyzer.run(&dd_canary(), None).await;
    assert!(near(e.observations[0].value, 30.0), "{e:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "waited for the reset"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn datadog_refused_keys_and_the_v2_api() {
    let (stack, client) = world(false, true, false).await;
    // v2 takes one metric query (no arithmetic): the canary's errors, averaged.
    let errors =
        "sum:trace.http.request.errors{service:{{ target }},kube_namespace:{{ namespace }}}";
    datadog_template(&stack, &client, "wrong-key", true, errors).await;
    let analyzer = analyzer(&client, "http://127.0.0.1:1");
    let e = analyzer.run(&dd_canary(), None).await;
    assert_eq!(e.observations[0].verdict, MetricVerdict::Error, "{e:?}");
    assert!(
        e.observations[0]
            .message
            .as_deref()
            .unwrap()
            .contains("403"),
        "{e:?}"
    );
    let down = analyzer.check_availability(&dd_canary()).await.unwrap_err();
    assert!(down.contains("datadog is not available"), "{down}");

    // The right key, on the v2 scalar API.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), "default");
    secrets
        .delete("datadog", &Default::default())
        .await
        .unwrap();
    common::create(
        &client,
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "datadog", "namespace": "default"},
            "stringData": {"datadog_api_key": "serin-dd-api-key",
                           "datadog_application_key": "serin-dd-application-key"}}),
    )
    .await;
    let e = dd_run(&analyzer).await;
    assert!(e.observations[0].value.is_some_and(|v| v > 0.0), "{e:?}");
    stack.shutdown().await;
}

/// A New Relic MetricTemplate `nr-error-rate` (the ready-made APM error rate) and its Secret:
/// `key` is `newrelic_query_key` (Insights) or `newrelic_api_key` (NerdGraph).
async fn newrelic_template(stack: &Stack, client: &kube::Client, key: (&str, &str)) {
    common::create(
        client,
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "newrelic", "namespace": "default"},
            "stringData": {"newrelic_account_id": "1234567", key.0: key.1}}),
    )
    .await;
    let mut template = ready_made("newrelic/apm.yaml", "newrelic-apm-error-rate");
    template["metadata"]["name"] = json!("nr-error-rate");
    template["spec"]["provider"]["address"] = json!(stack.newrelic_url().unwrap());
    common::create(client, template).await;
}

/// A template of `metrics-templates/<file>`, in namespace `default`.
fn ready_made(file: &str, name: &str) -> Value {
    let path = format!("{}/metrics-templates/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut template: Value = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|t: &Value| t["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {path}"));
    template["metadata"]["namespace"] = json!("default");
    template
}

fn nr_canary() -> Canary {
    canary(
        "podinfo",
        json!([{"name": "error-rate", "templateRef": {"name": "nr-error-rate"},
                "thresholdRange": {"max": 1}, "interval": "30s"}]),
    )
}

/// Runs `canary` until its first metric has a value (the world needs a moment), at most 10 s.
pub(super) async fn run_valued(analyzer: &Analyzer, canary: &Canary) -> Evaluation {
    let poll = Poll::new(Duration::from_secs(10)).every(Duration::from_millis(300));
    loop {
        let e = analyzer.run(canary, None).await;
        if e.observations[0].value.is_some() || poll.expired() {
            return e;
        }
        poll.next().await;
    }
}

#[tokio::test]
async fn newrelic_insights_values_no_data_and_faults() {
    let (stack, client) = world(false, false, true).await;
    newrelic_template(
        &stack,
        &client,
        ("newrelic_query_key", "serin-nr-query-key"),
    )
    .await;
    let analyzer =
        analyzer(&client, "http://127.0.0.1:1").with_check_budget(Duration::from_millis(1500));

    let e = run_valued(&analyzer, &nr_canary()).await;
    assert!(near(e.observations[0].value, 30.0), "{e:?}");
    assert!(
        matches!(&e.outcome, serin_core::Analysis::Fail(r) if r.starts_with("error-rate 3") && r.ends_with(" > 1")),
        "{:?}",
        e.outcome
    );
    assert_eq!(analyzer.check_availability(&nr_canary()).await, Ok(()));

    let message = |e: &Evaluation| e.observations[0].message.clone().unwrap_or_default();
    for (mode, verdict, needle) in [
        (FaultMode::NullPoints, MetricVerdict::NoData, "null"),
        (FaultMode::Empty, MetricVerdict::NoData, "no rows"),
        (FaultMode::SeveralSeries, MetricVerdict::Error, "rows"),
        (FaultMode::RateLimit, MetricVerdict::Error, "rate limit"),
        (FaultMode::Error, MetricVerdict::Error, "503"),
        (
            FaultMode::Hang,
            MetricVerdict::Error,
            "did not answer within 2s",
        ),
    ] {
        stack.newrelic_faults().set(fault(mode));
        let e = analyzer.run(&nr_canary(), None).await;
        assert_eq!(e.observations[0].verdict, verdict, "{mode:?}: {e:?}");
        assert!(message(&e).contains(needle), "{mode:?}: {}", message(&e));
        stack.newrelic_faults().clear();
    }

    // One 429 (Retry-After: 1) within the budget: retried, and the value comes back.
    stack.newrelic_faults().set(ProviderFault {
        count: Some(1),
        ..fault(FaultMode::RateLimit)
    });
    let e = analyzer.run(&nr_canary(), None).await;
    assert!(near(e.observations[0].value, 30.0), "{e:?}");
    stack.shutdown().await;
}

#[tokio::test]
async fn newrelic_nerdgraph_values_refused_keys_and_graphql_errors() {
    let (stack, client) = world(false, false, true).await;
    newrelic_template(&stack, &client, ("newrelic_api_key", "NRAK-SERINSTACK")).await;
    let analyzer = analyzer(&client, "http://127.0.0.1:1");
    let e = run_valued(&analyzer, &nr_canary()).await;
    assert!(near(e.observations[0].value, 30.0), "{e:?}");

    stack.newrelic_faults().set(fault(FaultMode::GraphqlError));
    let e = analyzer.run(&nr_canary(), None).await;
    assert_eq!(e.observations[0].verdict, MetricVerdict::Error, "{e:?}");
    assert!(
        e.observations[0]
            .message
            .as_deref()
            .unwrap()
            .contains("NerdGraph error"),
        "{e:?}"
    );
    stack.newrelic_faults().clear();

    // A wrong key: refused, and the provider is reported unavailable.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), "default");
    secrets
        .delete("newrelic", &Default::default())
        .await
        .unwrap();
    common::create(
        &client,
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "newrelic", "namespace": "default"},
            "stringData": {"newrelic_account_id": "1234567", "newrelic_api_key": "NRAK-WRONG"}}),
    )
    .await;
    let e = analyzer.run(&nr_canary(), None).await;
    assert_eq!(e.observations[0].verdict, MetricVerdict::Error, "{e:?}");
    let down = analyzer.check_availability(&nr_canary()).await.unwrap_err();
    assert!(down.contains("newrelic is not available"), "{down}");
    stack.shutdown().await;
}

#[tokio::test]
async fn ready_made_apm_templates_read_the_faulty_canary() {
    let (stack, client) = world(false, true, true).await;
    newrelic_template(
        &stack,
        &client,
        ("newrelic_query_key", "serin-nr-query-key"),
    )
    .await;
    datadog_template(&stack, &client, "serin-dd-api-key", false, ERROR_RATE).await;
    for (file, name, address) in [
        (
            "datadog/apm.yaml",
            "datadog-apm-error-rate",
            stack.datadog_url(),
        ),
        (
            "datadog/apm.yaml",
            "datadog-apm-latency",
            stack.datadog_url(),
        ),
        (
            "newrelic/apm.yaml",
            "newrelic-apm-latency-p99",
            stack.newrelic_url(),
        ),
    ] {
        let mut template = ready_made(file, name);
        template["spec"]["provider"]["address"] = json!(address.unwrap());
        common::create(&client, template).await;
    }
    let canary = canary(
        "podinfo",
        json!([
            {"name": "dd-errors", "templateRef": {"name": "datadog-apm-error-rate"},
             "thresholdRange": {"max": 1}, "interval": "10s"},
            {"name": "dd-latency", "templateRef": {"name": "datadog-apm-latency"},
             "thresholdRange": {"max": 500}, "interval": "10s"},
            {"name": "nr-errors", "templateRef": {"name": "nr-error-rate"},
             "thresholdRange": {"max": 1}, "interval": "30s"},
            {"name": "nr-latency", "templateRef": {"name": "newrelic-apm-latency-p99"},
             "thresholdRange": {"max": 500}, "interval": "30s"}
        ]),
    );
    let analyzer = analyzer(&client, "http://127.0.0.1:1");
    let e = run_valued(&analyzer, &canary).await;
    let o = &e.observations;
    assert!(near(o[0].value, 30.0), "{o:?}");
    assert!(near(o[1].value, 50.0), "{o:?}");
    assert!(near(o[2].value, 30.0), "{o:?}");
    assert!(
        o[3].value.is_some_and(|v| (50.0..500.0).contains(&v)),
        "{o:?}"
    );
    assert_eq!(
        o.iter().map(|o| o.verdict).collect::<Vec<_>>(),
        [
            MetricVerdict::Fail,
            MetricVerdict::Pass,
            MetricVerdict::Fail,
            MetricVerdict::Pass
        ]
    );
    stack.shutdown().await;
}
