#![allow(clippy::unwrap_used, clippy::expect_used)]
//! CloudWatch and Stackdriver against the stack's emulators, through `Analyzer::run` as the
//! controller calls it: the faulty canary's value read from the traffic world, no data,
//! credentials refused (a wrong AWS secret, a service-account key Google does not know),
//! throttling (retried within the budget, an error beyond it), an outage (a 5xx page, a hung
//! server), and each provider's credentials as a Flagger user has them (the controller's AWS
//! environment; the Secret's `project` and `serviceAccountKey`, or the metadata server).

use serin_stack::testing as common;

use std::time::Duration;

use serde_json::{Value, json};
use serin::analysis::provider::cloud::Cloud;
use serin::analysis::{Analyzer, Evaluation};
use serin::api::canary::MetricVerdict;
use serin::api::{Canary, Provider};
use serin_stack::{
    CloudWatchConfig, FaultMode, ProviderFault, Stack, StackConfig, StackdriverConfig,
};
use serin_testkit::Poll;

/// 50 requests/s to the `podinfo` apex, split 50/50 between a healthy `podinfo-primary` and a
/// `podinfo` canary failing 30 %; the CloudWatch or the Stackdriver emulator.
async fn world(cloudwatch: bool, stackdriver: bool) -> (Stack, kube::Client) {
    let (stack, client) = super::providers_stack::world_of(StackConfig {
        cloudwatch,
        stackdriver,
        ..StackConfig::default()
    })
    .await;
    (stack, client)
}

fn canary(metrics: Value) -> Canary {
    let canary = serin_testkit::canary("podinfo")
        .provider("istio")
        .without("progressDeadlineSeconds")
        .analysis(json!({"interval": "10s", "threshold": 2, "stepWeight": 10, "metrics": metrics}))
        .build();
    serde_json::from_value(canary).unwrap()
}

fn analyzer(client: &kube::Client, cloud: Cloud, budget: Duration) -> Analyzer {
    Analyzer::new(client.clone(), "http://127.0.0.1:1".into(), Provider::Istio)
        .unwrap()
        .with_timeout(Duration::from_secs(2))
        .unwrap()
        .with_check_budget(budget)
        .with_cloud(cloud)
}

/// Runs `canary` until its first metric has a value (the emulators' windows fill as the
/// world runs), at most 20 s.
async fn run_valued(analyzer: &Analyzer, canary: &Canary) -> Evaluation {
    let poll = Poll::new(Duration::from_secs(20)).every(Duration::from_millis(300));
    loop {
        let e = analyzer.run(canary, None).await;
        if e.observations[0].value.is_some() || poll.expired() {
            return e;
        }
        poll.next().await;
    }
}

fn near(got: Option<f64>, want: f64) -> bool {
    got.is_some_and(|g| (g - want).abs() <= want * 0.1)
}

fn message(e: &Evaluation) -> String {
    e.observations[0].message.clone().unwrap_or_default()
}

fn fault(mode: FaultMode) -> ProviderFault {
    ProviderFault::new(mode)
}

async fn template(client: &kube::Client, name: &str, provider: Value, query: &str) {
    common::create(
        client,
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"provider": provider, "query": query}}),
    )
    .await;
}

fn metric(template: &str, max: f64, interval: &str) -> Value {
    json!({"name": template, "templateRef": {"name": template},
           "thresholdRange": {"max": max}, "interval": interval})
}

/// Flagger's documented CloudWatch query: the canary's errors per request in percent.
fn cloudwatch_error_rate(metric_name: &str) -> String {
    let stat = |id: &str, name: &str| {
        json!({"Id": id, "ReturnData": false, "MetricStat": {
            "Metric": {"Namespace": "MyKubernetesCluster", "MetricName": name,
                       "Dimensions": [{"Name": "appName", "Value": "{{ target }}.{{ namespace }}"}]},
            "Period": 10, "Stat": "Sum", "Unit": "Count"}})
    };
    json!([
        {"Id": "e1", "Expression": "100 * m1 / m2", "Label": "ErrorRate"},
        stat("m1", metric_name),
        stat("m2", "RequestCount"),
    ])
    .to_string()
}

fn aws_env(secret: &str) -> Cloud {
    let keys = CloudWatchConfig::default();
    Cloud::with_vars([
        ("AWS_ACCESS_KEY_ID", keys.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
    ])
    .unwrap()
}

#[tokio::test]
async fn cloudwatch_emulator_values_no_data_refused_keys_throttling_and_outages() {
    let (stack, client) = world(true, false).await;
    let provider = |region: &str| json!({"type": "cloudwatch", "region": region, "address": stack.cloudwatch_url().unwrap()});
    template(
        &client,
        "cw-errors",
        provider("us-east-1"),
        &cloudwatch_error_rate("ErrorCount"),
    )
    .await;
    template(
        &client,
        "cw-absent",
        provider("us-east-1"),
        &cloudwatch_error_rate("NoSuchMetric"),
    )
    .await;
    template(
        &client,
        "cw-elsewhere",
        provider("eu-west-1"),
        &cloudwatch_error_rate("ErrorCount"),
    )
    .await;
    let errors = canary(json!([metric("cw-errors", 1.0, "10s")]));
    let secret = CloudWatchConfig::default().secret_access_key;
    let analyzer = analyzer(&client, aws_env(&secret), Duration::from_millis(1500));

    // The faulty canary's 30 % errors, read from the world, signed with the controller's keys.
    let e = run_valued(&analyzer, &errors).await;
    assert!(near(e.observations[0].value, 30.0), "{e:?}");
    assert!(
        matches!(&e.outcome, serin_core::Analysis::Fail(r) if r.starts_with("cw-errors ") && r.ends_with(" > 1")),
        "{:?}",
        e.outcome
    );
    assert_eq!(analyzer.check_availability(&errors).await, Ok(()));

    // No such metric: the expression has no values.
    let e = analyzer
        .run(&canary(json!([metric("cw-absent", 1.0, "10s")])), None)
        .await;
    assert_eq!(e.observations[0].verdict, MetricVerdict::NoData, "{e:?}");
    assert!(message(&e).contains("e1 has no values"), "{}", message(&e));

    // Signed for another region: refused.
    let e = analyzer
        .run(&canary(json!([metric("cw-elsewhere", 1.0, "10s")])), None)
        .await;
    assert!(
        message(&e).contains("SignatureDoesNotMatch"),
        "{}",
        message(&e)
    );

    for (mode, verdict, needle) in [
        (FaultMode::Empty, MetricVerdict::NoData, "no values"),
        (
            FaultMode::NullPoints,
            MetricVerdict::NoData,
            "no MetricDataResults",
        ),
        (FaultMode::RateLimit, MetricVerdict::Error, "rate limit"),
        (FaultMode::Error, MetricVerdict::Error, "503"),
        (
            FaultMode::Hang,
            MetricVerdict::Error,
            "did not answer within 2s",
        ),
    ] {
        stack.cloudwatch_faults().set(fault(mode));
        let e = analyzer.run(&errors, None).await;
        assert_eq!(e.observations[0].verdict, verdict, "{mode:?}: {e:?}");
        assert!(message(&e).contains(needle), "{mode:?}: {}", message(&e));
        stack.cloudwatch_faults().clear();
    }

    // Throttled once, within the budget: retried after a second.
    stack.cloudwatch_faults().set(ProviderFault {
        count: Some(1),
        ..fault(FaultMode::RateLimit)
    });
    let patient = self::analyzer(&client, aws_env(&secret), Duration::from_secs(5));
    let e = patient.run(&errors, None).await;
    assert!(near(e.observations[0].value, 30.0), "{e:?}");

    // A wrong secret: the signature does not match, and the provider is unavailable.
    let wrong = self::analyzer(&client, aws_env("not-the-secret"), Duration::from_secs(1));
    let e = wrong.run(&errors, None).await;
    assert_eq!(e.observations[0].verdict, MetricVerdict::Error, "{e:?}");
    assert!(
        message(&e).contains("403 Forbidden SignatureDoesNotMatch"),
        "{}",
        message(&e)
    );
    let down = wrong.check_availability(&errors).await.unwrap_err();
    assert!(down.contains("cloudwatch is not available"), "{down}");
    stack.shutdown().await;
}

/// The canary's share of 5xx responses over 10 s windows (Istio on GKE).
fn mql_error_ratio(workload: &str) -> String {
    format!(
        "fetch k8s_container\n\
         | metric 'istio.io/service/server/request_count'\n\
         | filter metric.destination_workload_name == '{workload}'\n    \
             && metric.destination_workload_namespace == '{{{{ namespace }}}}'\n\
         | align delta(10s)\n\
         | every 10s\n\
         | within 1m\n\
         | filter_ratio_by [], metric.response_code >= 500"
    )
}

/// Flagger's documented MQL: the canary's 99th percentile latency in ms.
const MQL_LATENCY: &str = "fetch k8s_container
| metric 'istio.io/service/server/response_latencies'
| filter
    (metric.destination_service_name == '{{ service }}-canary'
    && metric.destination_service_namespace == '{{ namespace }}')
| align delta(10s)
| every 10s
| group_by [],
    [value_response_latencies_percentile:
      percentile(value.response_latencies, 99)]";

/// A Secret `gcp-<name>` with the project and `key`, and its template.
async fn stackdriver_template(
    stack: &Stack,
    client: &kube::Client,
    name: &str,
    project: &str,
    key: Option<String>,
    query: &str,
) {
    let mut data = json!({"project": project});
    if let Some(key) = key {
        data["serviceAccountKey"] = json!(key);
    }
    common::create(
        client,
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("gcp-{name}"), "namespace": "default"},
            "stringData": data}),
    )
    .await;
    let mut provider = json!({"type": "stackdriver", "secretRef": {"name": format!("gcp-{name}")}});
    if key_in_secret(&data) {
        provider["address"] = json!(stack.stackdriver_url().unwrap());
    }
    template(client, name, provider, query).await;
}

fn key_in_secret(data: &Value) -> bool {
    data.get("serviceAccountKey").is_some()
}

#[tokio::test]
async fn stackdriver_emulator_values_no_data_refused_keys_throttling_and_outages() {
    let (stack, client) = world(false, true).await;
    let url = stack.stackdriver_url().unwrap().to_string();
    let project = StackdriverConfig::default().project;
    let key = || Some(common::stackdriver_key(&format!("{url}/token")));
    stackdriver_template(
        &stack,
        &client,
        "sd-errors",
        &project,
        key(),
        &mql_error_ratio("{{ target }}"),
    )
    .await;
    stackdriver_template(&stack, &client, "sd-latency", &project, key(), MQL_LATENCY).await;
    stackdriver_template(
        &stack,
        &client,
        "sd-quiet",
        &project,
        key(),
        &mql_error_ratio("nobody"),
    )
    .await;
    stackdriver_template(
        &stack,
        &client,
        "sd-bad-mql",
        &project,
        key(),
        "fetch k8s_container | frobnicate",
    )
    .await;
    stackdriver_template(
        &stack,
        &client,
        "sd-other-project",
        "someone-elses",
        key(),
        MQL_LATENCY,
    )
    .await;
    let unknown = Some(common::stackdriver_unknown_key(&format!("{url}/token")));
    stackdriver_template(
        &stack,
        &client,
        "sd-unknown-key",
        &project,
        unknown,
        MQL_LATENCY,
    )
    .await;
    let no_env = || Cloud::with_vars(Vec::<(String, String)>::new()).unwrap();
    let analyzer = analyzer(&client, no_env(), Duration::from_millis(1500));

    // The faulty canary's 30 % errors, and its latency, read from the world.
    let errors = canary(json!([metric("sd-errors", 0.01, "1m")]));
    let e = run_valued(&analyzer, &errors).await;
    assert!(near(e.observations[0].value, 0.3), "{e:?}");
    assert_eq!(e.observations[0].verdict, MetricVerdict::Fail, "{e:?}");
    assert_eq!(analyzer.check_availability(&errors).await, Ok(()));
    let latency = canary(json!([metric("sd-latency", 500.0, "1m")]));
    let e = run_valued(&analyzer, &latency).await;
    assert!(
        e.observations[0]
            .value
            .is_some_and(|v| (20.0..500.0).contains(&v)),
        "{e:?}"
    );
    assert_eq!(e.observations[0].verdict, MetricVerdict::Pass, "{e:?}");

    for (name, verdict, needle) in [
        ("sd-quiet", MetricVerdict::NoData, "no time series"),
        ("sd-bad-mql", MetricVerdict::Error, "INVALID_ARGUMENT"),
        (
            "sd-other-project",
            MetricVerdict::Error,
            "PERMISSION_DENIED",
        ),
        (
            "sd-unknown-key",
            MetricVerdict::Error,
            "invalid_grant: Invalid JWT Signature.",
        ),
    ] {
        let e = analyzer
            .run(&canary(json!([metric(name, 1.0, "1m")])), None)
            .await;
        assert_eq!(e.observations[0].verdict, verdict, "{name}: {e:?}");
        assert!(message(&e).contains(needle), "{name}: {}", message(&e));
    }
    let refused = canary(json!([metric("sd-unknown-key", 1.0, "1m")]));
    let down = analyzer.check_availability(&refused).await.unwrap_err();
    assert!(down.contains("stackdriver is not available"), "{down}");

    for (mode, verdict, needle) in [
        (FaultMode::Empty, MetricVerdict::NoData, "no time series"),
        (FaultMode::NullPoints, MetricVerdict::NoData, "no points"),
        (FaultMode::RateLimit, MetricVerdict::Error, "Quota exceeded"),
        (FaultMode::Error, MetricVerdict::Error, "503"),
        (
            FaultMode::Hang,
            MetricVerdict::Error,
            "did not answer within 2s",
        ),
    ] {
        stack.stackdriver_faults().set(fault(mode));
        let e = analyzer.run(&errors, None).await;
        assert_eq!(e.observations[0].verdict, verdict, "{mode:?}: {e:?}");
        assert!(message(&e).contains(needle), "{mode:?}: {}", message(&e));
        stack.stackdriver_faults().clear();
    }

    // Throttled once, within the budget: retried after a second.
    stack.stackdriver_faults().set(ProviderFault {
        count: Some(1),
        ..fault(FaultMode::RateLimit)
    });
    let patient = self::analyzer(&client, no_env(), Duration::from_secs(5));
    let e = patient.run(&errors, None).await;
    assert!(near(e.observations[0].value, 0.3), "{e:?}");

    // No key in the Secret: the controller's own identity, from the metadata server
    // (GKE Workload Identity), sent to the address the controller allows.
    stackdriver_template(
        &stack,
        &client,
        "sd-ambient",
        &project,
        None,
        &mql_error_ratio("{{ target }}"),
    )
    .await;
    let host = url.trim_start_matches("http://").to_string();
    let gke = Cloud::with_vars([
        ("GCE_METADATA_HOST", host),
        ("SERIN_STACKDRIVER_ADDRESS", url.clone()),
    ])
    .unwrap();
    let workload_identity = self::analyzer(&client, gke, Duration::from_secs(1));
    let ambient = canary(json!([metric("sd-ambient", 0.01, "1m")]));
    let e = run_valued(&workload_identity, &ambient).await;
    assert!(near(e.observations[0].value, 0.3), "{e:?}");
    stack.shutdown().await;
}
