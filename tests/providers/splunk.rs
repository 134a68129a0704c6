//! The Splunk provider against the stack's emulator, through `Analyzer::run` as the
//! controller calls it, on the shipped example template (a SignalFlow program of three
//! statements): the faulty canary's success rate, no data (no service, null and empty
//! answers), several series, a refused token, 429 (retried within the budget, else an error),
//! an outage (5xx, a hung server) that holds a `hold` metric instead of failing it.

use std::time::Duration;

use serde_json::json;
use serin::analysis::Analyzer;
use serin::api::Canary;
use serin::api::canary::MetricVerdict;
use serin_stack::testing as common;
use serin_stack::{FaultMode, ProviderFault, Stack, StackConfig};

use super::providers_stack::{
    self, analyzer_within, assert_refused, assert_retried_after_429, example_template, message,
    near, run_valued, world_of,
};

/// The stack of `providers_stack` (the faulty canary behind an Istio split) with the
/// Splunk emulator.
async fn world() -> (Stack, kube::Client) {
    world_of(StackConfig {
        splunk: true,
        ..StackConfig::default()
    })
    .await
}

/// The example template on the emulator, its Secret holding `token`.
async fn template(stack: &Stack, client: &kube::Client, token: &str) {
    let address = stack.splunk_url().unwrap();
    example_template(client, "splunk", address, json!({"sf_token_key": token})).await;
}

const TOKEN: &str = "serin-sf-token";

/// A Canary of `target` checking the example template's success rate (at least 99 %) under
/// `policy`.
fn canary(target: &str, policy: &str) -> Canary {
    providers_stack::canary(
        target,
        json!([{"name": "success-rate", "templateRef": {"name": "splunk-success-rate"},
             "thresholdRange": {"min": 99}, "interval": "10s", "noDataPolicy": policy}]),
    )
}

fn analyzer(client: &kube::Client, budget: Duration) -> Analyzer {
    analyzer_within(client, budget)
}

#[tokio::test]
async fn splunk_values_no_data_and_faults() {
    let (stack, client) = world().await;
    template(&stack, &client, TOKEN).await;
    let analyzer = analyzer(&client, Duration::from_millis(1500));

    // The faulty canary's 70 % success, read from the world.
    let e = run_valued(&analyzer, &canary("podinfo", "fail")).await;
    assert!(near(e.observations[0].value, 70.0), "{e:?}");
    assert_eq!(e.observations[0].verdict, MetricVerdict::Fail);
    assert!(
        matches!(&e.outcome, serin_core::Analysis::Fail(r) if r.starts_with("success-rate 7") && r.ends_with(" < 99")),
        "{:?}",
        e.outcome
    );
    let healthy = run_valued(&analyzer, &canary("podinfo-primary", "fail")).await;
    assert_eq!(healthy.observations[0].value, Some(100.0), "{healthy:?}");
    assert_eq!(healthy.outcome, serin_core::Analysis::Pass);
    assert_eq!(
        analyzer
            .check_availability(&canary("podinfo", "fail"))
            .await,
        Ok(())
    );

    // No service of that name: the program publishes nothing, which is no data.
    let e = analyzer.run(&canary("nobody", "fail"), None).await;
    assert_eq!(e.observations[0].verdict, MetricVerdict::NoData, "{e:?}");
    assert!(
        message(&e).contains("published no values"),
        "{}",
        message(&e)
    );

    for (mode, verdict, needle) in [
        (FaultMode::NullPoints, MetricVerdict::NoData, "null"),
        (
            FaultMode::Empty,
            MetricVerdict::NoData,
            "published no values",
        ),
        (
            FaultMode::SeveralSeries,
            MetricVerdict::Error,
            "2 time series",
        ),
        (FaultMode::RateLimit, MetricVerdict::Error, "rate limit"),
        (FaultMode::Error, MetricVerdict::Error, "503"),
        (
            FaultMode::Hang,
            MetricVerdict::Error,
            "did not answer within 2s",
        ),
    ] {
        stack.splunk_faults().set(ProviderFault::new(mode));
        let e = analyzer.run(&canary("podinfo", "fail"), None).await;
        assert_eq!(e.observations[0].verdict, verdict, "{mode:?}: {e:?}");
        assert!(message(&e).contains(needle), "{mode:?}: {}", message(&e));
        stack.splunk_faults().clear();
    }

    stack.shutdown().await;
}

#[tokio::test]
async fn splunk_outages_hold_and_a_refused_token_fails() {
    let (stack, client) = world().await;
    template(&stack, &client, TOKEN).await;
    let analyzer = analyzer(&client, Duration::from_millis(1500));
    run_valued(&analyzer, &canary("podinfo", "hold")).await;

    // Down, throttled or hung: the monitoring's outage holds a `hold` metric.
    for mode in [FaultMode::Error, FaultMode::RateLimit, FaultMode::Hang] {
        stack.splunk_faults().set(ProviderFault::new(mode));
        let e = analyzer.run(&canary("podinfo", "hold"), None).await;
        assert!(
            matches!(&e.outcome, serin_core::Analysis::Hold(r) if r.contains("waiting for splunk")),
            "{mode:?}: {:?}",
            e.outcome
        );
        stack.splunk_faults().clear();
    }

    // A token Splunk refuses is a misconfiguration: it fails whatever the policy.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), "default");
    secrets.delete("splunk", &Default::default()).await.unwrap();
    common::create(
        &client,
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "splunk", "namespace": "default"},
            "stringData": {"sf_token_key": "wrong"}}),
    )
    .await;
    assert_refused(
        &analyzer,
        &canary("podinfo", "hold"),
        "splunk",
        &["401", "Unauthorized"],
    )
    .await;
    stack.shutdown().await;
}

#[tokio::test]
async fn splunk_429_is_retried_after_retry_after_within_the_budget() {
    let (stack, client) = world().await;
    template(&stack, &client, TOKEN).await;
    let analyzer = analyzer(&client, Duration::from_secs(15));
    run_valued(&analyzer, &canary("podinfo", "fail")).await;
    assert_retried_after_429(
        &analyzer,
        &canary("podinfo", "fail"),
        stack.splunk_faults(),
        70.0,
    )
    .await;
    stack.shutdown().await;
}
