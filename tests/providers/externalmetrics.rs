//! The externalmetrics provider through `Analyzer::run`, against the stack's External Metrics
//! API adapter (and, without an address, the API server): values as quantities, no data, the
//! token refused, outages, queries serin or the adapter cannot read.

use serin_stack::testing as common;

use std::time::Duration;

use serde_json::{Value, json};
use serin::analysis::{Analyzer, Evaluation};
use serin::api::canary::MetricVerdict;
use serin::api::{Canary, Provider};
use serin_stack::{FaultMode, ProviderFault, Stack, StackConfig};

const TOKEN: &str = "serin-external-metrics-token";

/// A stack with the adapter whose world has run 10 s at 50 requests/s, split 50/50 between a
/// healthy `podinfo-primary` and a `podinfo` canary failing 30 %; serin's CRDs; the Secrets
/// `em` (the adapter's token) and `wrong` (another).
async fn world() -> (Stack, kube::Client) {
    let (stack, client) = super::providers_stack::world_of(StackConfig {
        manual_traffic_clock: true,
        external_metrics: true,
        ..StackConfig::default()
    })
    .await;
    stack.traffic().reroute();
    for _ in 0..10 {
        stack.traffic().step(Duration::from_secs(1));
    }
    for (name, token) in [("em", TOKEN), ("wrong", "not-the-token")] {
        common::create(
            &client,
            json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": "default"},
                "stringData": {"token": token}}),
        )
        .await;
    }
    (stack, client)
}

/// An externalmetrics MetricTemplate `name` running `query` on `address` (none: the API
/// server) with the Secret `secret`.
async fn template(
    client: &kube::Client,
    name: &str,
    query: &str,
    address: Option<&str>,
    secret: Option<&str>,
) {
    let mut provider = json!({"type": "externalmetrics"});
    if let Some(address) = address {
        provider["address"] = json!(address);
    }
    if let Some(secret) = secret {
        provider["secretRef"] = json!({"name": secret});
    }
    common::create(
        client,
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"provider": provider, "query": query}}),
    )
    .await;
}

/// A Canary whose metrics are the templates `names`, each at least 99, under `policy`.
fn canary(names: &[&str], policy: &str) -> Canary {
    let metrics: Vec<Value> = names
        .iter()
        .map(|name| {
            json!({"name": name, "templateRef": {"name": name},
                   "thresholdRange": {"min": 99}, "interval": "1m", "noDataPolicy": policy})
        })
        .collect();
    serin_testkit::canary("podinfo")
        .provider("istio")
        .without("progressDeadlineSeconds")
        .analysis(json!({"interval": "10s", "threshold": 2, "stepWeight": 10, "metrics": metrics}))
        .parse()
}

fn analyzer(client: &kube::Client) -> Analyzer {
    Analyzer::new(
        client.clone(),
        "http://127.0.0.1:1".to_string(),
        Provider::Istio,
    )
    .unwrap()
    .with_timeout(Duration::from_secs(2))
    .unwrap()
    .with_check_budget(Duration::from_secs(3))
}

fn message(e: &Evaluation, i: usize) -> String {
    e.observations[i].message.clone().unwrap_or_default()
}

#[tokio::test]
async fn values_no_data_refusals_and_bad_queries() {
    let (stack, client) = world().await;
    let adapter = stack.external_metrics_url().unwrap().to_string();
    let at = Some(adapter.as_str());
    for (name, query, address, secret) in [
        (
            "canary",
            "default/request-success-rate?labelSelector=workload%3Dpodinfo",
            at,
            Some("em"),
        ),
        (
            "primary",
            "request-success-rate?labelSelector=workload%3Dpodinfo-primary\n",
            at,
            Some("em"),
        ),
        // Both workloads: the first item (podinfo's) is the value, as in Flagger.
        ("first", "default/request-success-rate", at, Some("em")),
        ("quiet", "kube-system/request-success-rate", at, Some("em")),
        ("refused", "default/request-success-rate", at, Some("wrong")),
        ("unknown", "default/queue-length", at, Some("em")),
        (
            "slashes",
            "default/request-success-rate/extra",
            at,
            Some("em"),
        ),
        (
            "selector",
            "default/request-success-rate?labelSelector=a%20in%20(",
            at,
            Some("em"),
        ),
        // Without an address: the API server, which serves no external metrics here.
        ("api-server", "default/request-success-rate", None, None),
        (
            "token-only",
            "default/request-success-rate",
            None,
            Some("em"),
        ),
    ] {
        template(&client, name, query, address, secret).await;
    }
    let analyzer = analyzer(&client);
    let names = [
        "canary",
        "primary",
        "first",
        "quiet",
        "refused",
        "unknown",
        "slashes",
        "selector",
        "api-server",
        "token-only",
    ];
    let e = analyzer.run(&canary(&names, "fail"), None).await;
    let o = &e.observations;
    let kind = |i: usize| e.checks[i].error_kind;
    assert_eq!(
        (o[0].value, o[0].verdict),
        (Some(70.0), MetricVerdict::Fail),
        "{o:?}"
    );
    assert_eq!(
        (o[1].value, o[1].verdict),
        (Some(100.0), MetricVerdict::Pass),
        "{o:?}"
    );
    assert_eq!(o[2].value, Some(70.0), "{o:?}");
    assert_eq!(o[3].verdict, MetricVerdict::NoData, "{o:?}");
    assert!(
        message(&e, 3).contains("returned no items"),
        "{}",
        message(&e, 3)
    );
    assert_eq!(kind(4), Some("unauthorized"), "{}", message(&e, 4));
    assert!(message(&e, 4).contains("401"), "{}", message(&e, 4));
    assert_eq!(kind(5), Some("status"), "{}", message(&e, 5));
    assert!(
        message(&e, 5).contains("no metric queue-length"),
        "{}",
        message(&e, 5)
    );
    assert_eq!(kind(6), Some("config"), "{}", message(&e, 6));
    assert!(
        message(&e, 6).contains("more than one `/`"),
        "{}",
        message(&e, 6)
    );
    assert_eq!(kind(7), Some("status"), "{}", message(&e, 7));
    assert!(message(&e, 7).contains("400"), "{}", message(&e, 7));
    assert_eq!(kind(8), Some("status"), "{}", message(&e, 8));
    assert!(message(&e, 8).contains("404"), "{}", message(&e, 8));
    assert_eq!(kind(9), Some("config"), "{}", message(&e, 9));
    assert!(
        message(&e, 9).contains("provider.address"),
        "{}",
        message(&e, 9)
    );
    assert!(
        matches!(&e.outcome, serin_core::Analysis::Fail(r) if r.contains("canary") && r.contains("70")),
        "{:?}",
        e.outcome
    );
    // Available: the adapter answers (an unknown metric with its own 404); a refused token
    // is not.
    assert_eq!(
        analyzer
            .check_availability(&canary(&["canary"], "fail"))
            .await,
        Ok(())
    );
    let refused = analyzer
        .check_availability(&canary(&["refused"], "fail"))
        .await
        .unwrap_err();
    assert!(
        refused.contains("externalmetrics is not available"),
        "{refused}"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn outages_and_hostile_answers() {
    let (stack, client) = world().await;
    let adapter = stack.external_metrics_url().unwrap().to_string();
    template(
        &client,
        "primary",
        "default/request-success-rate?labelSelector=workload%3Dpodinfo-primary",
        Some(&adapter),
        Some("em"),
    )
    .await;
    let analyzer = analyzer(&client);
    let check = canary(&["primary"], "fail");
    let held = canary(&["primary"], "hold");
    for (mode, kind, needle) in [
        (FaultMode::Error, "unavailable", "503"),
        (FaultMode::Hang, "timeout", "did not answer within 2s"),
        (FaultMode::RateLimit, "rate_limited", "429"),
        (FaultMode::NullPoints, "decode", "not a Kubernetes quantity"),
    ] {
        stack
            .external_metrics_faults()
            .set(ProviderFault::new(mode));
        let e = analyzer.run(&check, None).await;
        assert_eq!(
            e.observations[0].verdict,
            MetricVerdict::Error,
            "{mode:?}: {e:?}"
        );
        assert_eq!(e.checks[0].error_kind, Some(kind), "{mode:?}: {e:?}");
        assert!(
            message(&e, 0).contains(needle),
            "{mode:?}: {}",
            message(&e, 0)
        );
        // An outage holds the release under noDataPolicy hold; a garbled answer fails it.
        let e = analyzer.run(&held, None).await;
        let outage = mode != FaultMode::NullPoints;
        assert_eq!(
            matches!(e.outcome, serin_core::Analysis::Hold(_)),
            outage,
            "{mode:?}: {:?}",
            e.outcome
        );
        stack.external_metrics_faults().clear();
    }
    stack
        .external_metrics_faults()
        .set(ProviderFault::new(FaultMode::Empty));
    let e = analyzer.run(&check, None).await;
    assert_eq!(e.observations[0].verdict, MetricVerdict::NoData, "{e:?}");
    stack.external_metrics_faults().clear();
    let e = analyzer.run(&check, None).await;
    assert_eq!(e.observations[0].value, Some(100.0), "{e:?}");
    assert_eq!(e.outcome, serin_core::Analysis::Pass);
    stack.shutdown().await;
}
