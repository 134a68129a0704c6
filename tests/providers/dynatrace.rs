//! The Dynatrace provider against the stack's emulator, through `Analyzer::run` as the
//! controller calls it, on the shipped example template: the faulty canary's error rate, no
//! data (no service, null and empty answers), a refused token, 429 with its reset (retried
//! within the budget, else an error), an outage (5xx, a hung server) that holds a `hold`
//! metric instead of failing it.

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
/// Dynatrace emulator.
async fn world() -> (Stack, kube::Client) {
    world_of(StackConfig {
        dynatrace: true,
        ..StackConfig::default()
    })
    .await
}

/// The example template on the emulator, its Secret holding `token`.
async fn template(stack: &Stack, client: &kube::Client, token: &str) {
    let address = stack.dynatrace_url().unwrap();
    example_template(
        client,
        "dynatrace",
        address,
        json!({"dynatrace_token": token}),
    )
    .await;
}

const TOKEN: &str = "dt0c01.SERINSTACK.serin-dt-token";

/// A Canary of `target` checking the example template's error rate (at most 1 %) under
/// `policy`.
fn canary(target: &str, policy: &str) -> Canary {
    providers_stack::canary(
        target,
        json!([{"name": "error-rate", "templateRef": {"name": "dynatrace-error-rate"},
             "thresholdRange": {"max": 1}, "interval": "10s", "noDataPolicy": policy}]),
    )
}

fn analyzer(client: &kube::Client, budget: Duration) -> Analyzer {
    analyzer_within(client, budget)
}

#[tokio::test]
async fn dynatrace_values_no_data_and_faults() {
    let (stack, client) = world().await;
    template(&stack, &client, TOKEN).await;
    let analyzer = analyzer(&client, Duration::from_millis(1500));

    // The faulty canary's 30 % server errors, read from the world.
    let e = run_valued(&analyzer, &canary("podinfo", "fail")).await;
    assert!(near(e.observations[0].value, 30.0), "{e:?}");
    assert_eq!(e.observations[0].verdict, MetricVerdict::Fail);
    assert!(
        matches!(&e.outcome, serin_core::Analysis::Fail(r) if r.starts_with("error-rate 3") && r.ends_with(" > 1")),
        "{:?}",
        e.outcome
    );
    let healthy = run_valued(&analyzer, &canary("podinfo-primary", "fail")).await;
    assert_eq!(healthy.observations[0].value, Some(0.0), "{healthy:?}");
    assert_eq!(healthy.outcome, serin_core::Analysis::Pass);
    assert_eq!(
        analyzer
            .check_availability(&canary("podinfo", "fail"))
            .await,
        Ok(())
    );

    // No service of that name: no series, which is no data.
    let e = analyzer.run(&canary("nobody", "fail"), None).await;
    assert_eq!(e.observations[0].verdict, MetricVerdict::NoData, "{e:?}");
    assert!(message(&e).contains("matched no series"), "{}", message(&e));

    for (mode, verdict, needle) in [
        (FaultMode::NullPoints, MetricVerdict::NoData, "null"),
        (FaultMode::Empty, MetricVerdict::NoData, "no series"),
        (FaultMode::RateLimit, MetricVerdict::Error, "resets in 2s"),
        (FaultMode::Error, MetricVerdict::Error, "503"),
        (
            FaultMode::Hang,
            MetricVerdict::Error,
            "did not answer within 2s",
        ),
    ] {
        stack.dynatrace_faults().set(ProviderFault::new(mode));
        let e = analyzer.run(&canary("podinfo", "fail"), None).await;
        assert_eq!(e.observations[0].verdict, verdict, "{mode:?}: {e:?}");
        assert!(message(&e).contains(needle), "{mode:?}: {}", message(&e));
        stack.dynatrace_faults().clear();
    }

    // Several series: the last is read, as Flagger does (the emulator doubles it).
    stack
        .dynatrace_faults()
        .set(ProviderFault::new(FaultMode::SeveralSeries));
    let e = analyzer.run(&canary("podinfo", "fail"), None).await;
    assert!(near(e.observations[0].value, 60.0), "{e:?}");
    stack.dynatrace_faults().clear();
    stack.shutdown().await;
}

#[tokio::test]
async fn dynatrace_outages_hold_and_a_refused_token_fails() {
    let (stack, client) = world().await;
    template(&stack, &client, TOKEN).await;
    let analyzer = analyzer(&client, Duration::from_millis(1500));
    run_valued(&analyzer, &canary("podinfo", "hold")).await;

    // Down, throttled or hung: the monitoring's outage holds a `hold` metric.
    for mode in [FaultMode::Error, FaultMode::RateLimit, FaultMode::Hang] {
        stack.dynatrace_faults().set(ProviderFault::new(mode));
        let e = analyzer.run(&canary("podinfo", "hold"), None).await;
        assert!(
            matches!(&e.outcome, serin_core::Analysis::Hold(r) if r.contains("waiting for dynatrace")),
            "{mode:?}: {:?}",
            e.outcome
        );
        stack.dynatrace_faults().clear();
    }

    // A token Dynatrace refuses is a misconfiguration: it fails whatever the policy.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), "default");
    secrets
        .delete("dynatrace", &Default::default())
        .await
        .unwrap();
    common::create(
        &client,
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "dynatrace", "namespace": "default"},
            "stringData": {"dynatrace_token": "dt0c01.WRONG"}}),
    )
    .await;
    assert_refused(
        &analyzer,
        &canary("podinfo", "hold"),
        "dynatrace",
        &["401", "Token Authentication failed"],
    )
    .await;
    stack.shutdown().await;
}

#[tokio::test]
async fn dynatrace_429_is_retried_after_the_reset_within_the_budget() {
    let (stack, client) = world().await;
    template(&stack, &client, TOKEN).await;
    let analyzer = analyzer(&client, Duration::from_secs(15));
    run_valued(&analyzer, &canary("podinfo", "fail")).await;
    assert_retried_after_429(
        &analyzer,
        &canary("podinfo", "fail"),
        stack.dynatrace_faults(),
        30.0,
    )
    .await;
    stack.shutdown().await;
}
