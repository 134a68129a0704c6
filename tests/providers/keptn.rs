//! The keptn provider through `Analyzer::run`, against the stack's Keptn stand-in (on the API
//! emulator; the release scenarios run it on both control planes): a KeptnMetric's value and
//! its absence, Analyses that pass, fail or never complete (bounded, and deleted every time),
//! a query serin cannot read, the API refusing or failing the reads.

use serin_stack::testing as common;

use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::{Value, json};
use serin::analysis::{Analyzer, Evaluation};
use serin::api::canary::MetricVerdict;
use serin::api::{Canary, Provider};
use serin_stack::{FaultRule, Stack, StackConfig};

/// A stack with Keptn's CRDs and stand-in whose world has run 10 s at 50 requests/s, split
/// 50/50 between a healthy `podinfo-primary` and a `podinfo` canary failing 30 %; serin's
/// CRDs; a KeptnMetric per workload's success rate, one with no traffic, and an
/// AnalysisDefinition `healthy` (success rate of the `workload` argument at least 99).
async fn world() -> (Stack, kube::Client) {
    let (stack, client) = super::providers_stack::world_of(StackConfig {
        manual_traffic_clock: true,
        keptn: true,
        crds: vec![format!("{}/e2e/crds/keptn.yaml", env!("CARGO_MANIFEST_DIR")).into()],
        ..StackConfig::default()
    })
    .await;
    stack.traffic().reroute();
    for _ in 0..10 {
        stack.traffic().step(Duration::from_secs(1));
    }
    for (name, workload) in [
        ("canary-success", "podinfo"),
        ("primary-success", "podinfo-primary"),
        ("quiet", "nothing"),
    ] {
        common::create(
            &client,
            json!({"apiVersion": "metrics.keptn.sh/v1beta1", "kind": "KeptnMetric",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"provider": {"name": "world"}, "fetchIntervalSeconds": 1,
                         "query": format!("request-success-rate{{workload={workload}}}"),
                         "range": {"interval": "1m"}}}),
        )
        .await;
    }
    common::create(
        &client,
        json!({"apiVersion": "metrics.keptn.sh/v1beta1", "kind": "AnalysisValueTemplate",
            "metadata": {"name": "success-rate", "namespace": "default"},
            "spec": {"provider": {"name": "world"},
                     "query": "request-success-rate{workload={{.workload}}}"}}),
    )
    .await;
    common::create(
        &client,
        json!({"apiVersion": "metrics.keptn.sh/v1beta1", "kind": "AnalysisDefinition",
            "metadata": {"name": "healthy", "namespace": "default"},
            "spec": {"objectives": [{"analysisValueTemplateRef": {"name": "success-rate"},
                                     "target": {"failure": {"lessThan": {"fixedValue": 99}}}}],
                     "totalScore": {"passPercentage": 100, "warningPercentage": 50}}}),
    )
    .await;
    // The stand-in has fetched the metrics.
    let metrics = keptn_api(&client, "KeptnMetric", "keptnmetrics");
    serin_testkit::wait_until(Duration::from_secs(10), "KeptnMetrics fetched", || {
        let metrics = metrics.clone();
        async move {
            let list = metrics.list(&ListParams::default()).await.unwrap();
            list.items
                .iter()
                .all(|m| m.data.pointer("/status/lastUpdated").is_some())
        }
    })
    .await;
    (stack, client)
}

fn keptn_api(client: &kube::Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metrics.keptn.sh", "v1beta1", kind),
        plural,
    );
    Api::namespaced_with(client.clone(), "default", &ar)
}

/// A keptn MetricTemplate `name` running `query`.
async fn template(client: &kube::Client, name: &str, query: &str) {
    common::create(
        client,
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"provider": {"type": "keptn"}, "query": query}}),
    )
    .await;
}

/// A Canary whose metrics are `(template, min)`, each named after its template.
fn canary(metrics: &[(&str, f64)]) -> Canary {
    canary_with(metrics, "fail")
}

/// The same, with this `noDataPolicy`.
fn canary_with(metrics: &[(&str, f64)], no_data_policy: &str) -> Canary {
    let metrics: Vec<Value> = metrics
        .iter()
        .map(|(name, min)| {
            json!({"name": name, "templateRef": {"name": name},
                   "thresholdRange": {"min": min}, "interval": "1m",
                   "noDataPolicy": no_data_policy})
        })
        .collect();
    serin_testkit::canary("podinfo")
        .provider("istio")
        .without("progressDeadlineSeconds")
        .analysis(json!({"interval": "10s", "threshold": 2, "stepWeight": 10, "metrics": metrics}))
        .parse()
}

fn analyzer(client: &kube::Client, budget: Duration) -> Analyzer {
    Analyzer::new(
        client.clone(),
        "http://127.0.0.1:1".to_string(),
        Provider::Istio,
    )
    .unwrap()
    .with_timeout(Duration::from_secs(2))
    .unwrap()
    .with_check_budget(budget)
}

fn message(e: &Evaluation, i: usize) -> String {
    e.observations[i].message.clone().unwrap_or_default()
}

#[tokio::test]
async fn keptn_metrics_values_no_data_and_bad_queries() {
    let (stack, client) = world().await;
    for (name, query) in [
        ("canary", "keptnmetric/default/canary-success"),
        // Flagger's reading: lower-cased, and a timeframe and args ignored.
        (
            "primary",
            "KeptnMetric/Default/Primary-Success/2m/reporter=destination\n",
        ),
        ("quiet", "keptnmetric/default/quiet"),
        ("absent", "keptnmetric/default/no-such-metric"),
        ("short", "keptnmetric/default"),
        ("kind", "prometheus/default/canary-success"),
    ] {
        template(&client, name, query).await;
    }
    let analyzer = analyzer(&client, Duration::from_secs(3));
    let canary = canary(&[
        ("canary", 99.0),
        ("primary", 99.0),
        ("quiet", 99.0),
        ("absent", 99.0),
        ("short", 99.0),
        ("kind", 99.0),
    ]);
    let e = analyzer.run(&canary, None).await;
    let o = &e.observations;
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
    assert_eq!(o[2].verdict, MetricVerdict::NoData, "{o:?}");
    assert!(
        message(&e, 2).contains("KeptnMetric default/quiet has no value yet (Keptn: no requests"),
        "{}",
        message(&e, 2)
    );
    assert_eq!(o[3].verdict, MetricVerdict::Error, "{o:?}");
    assert!(message(&e, 3).contains("404"), "{}", message(&e, 3));
    assert_eq!(e.checks[3].error_kind, Some("query"));
    for i in [4, 5] {
        assert_eq!(o[i].verdict, MetricVerdict::Error, "{o:?}");
        assert_eq!(e.checks[i].error_kind, Some("config"), "{:?}", e.checks[i]);
        assert!(
            message(&e, i).contains("the format is <keptnmetric|analysis>"),
            "{}",
            message(&e, i)
        );
    }
    assert!(
        matches!(&e.outcome, serin_core::Analysis::Fail(r) if r.contains("canary") && r.contains("70")),
        "{:?}",
        e.outcome
    );
    assert_eq!(analyzer.check_availability(&canary).await, Ok(()));
    stack.shutdown().await;
}

#[tokio::test]
async fn analyses_pass_fail_or_time_out_and_are_always_deleted() {
    let (stack, client) = world().await;
    template(
        &client,
        "passes",
        "analysis/default/healthy/1m/workload=podinfo-primary",
    )
    .await;
    template(
        &client,
        "fails",
        "analysis/default/healthy/1m/workload=podinfo",
    )
    .await;
    template(&client, "never", "analysis/default/not-defined").await;
    let analyzer = analyzer(&client, Duration::from_secs(3));
    let started = Instant::now();
    let e = analyzer
        .run(
            &canary(&[("passes", 1.0), ("fails", 1.0), ("never", 1.0)]),
            None,
        )
        .await;
    let o = &e.observations;
    assert_eq!(
        (o[0].value, o[0].verdict),
        (Some(1.0), MetricVerdict::Pass),
        "{o:?}"
    );
    assert_eq!(
        (o[1].value, o[1].verdict),
        (Some(0.0), MetricVerdict::Fail),
        "{o:?}"
    );
    assert_eq!(o[2].verdict, MetricVerdict::Error, "{o:?}");
    assert_eq!(e.checks[2].error_kind, Some("timeout"));
    assert!(
        message(&e, 2).contains(
            "Keptn Analysis of AnalysisDefinition default/not-defined did not complete within 3s (status.state: none)"
        ),
        "{}",
        message(&e, 2)
    );
    // Bounded by the check's budget (3 s here), not Flagger's 10 s.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // Every Analysis was deleted, the one that never completed too.
    let analyses = keptn_api(&client, "Analysis", "analyses");
    let left = analyses.list(&ListParams::default()).await.unwrap().items;
    assert!(left.is_empty(), "{left:?}");
    assert!(
        e.checks.iter().all(|c| c.provider == "keptn"),
        "{:?}",
        e.checks
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn the_api_refusing_or_failing_the_reads() {
    let (stack, client) = world().await;
    template(&client, "canary", "keptnmetric/default/canary-success").await;
    let analyzer = analyzer(&client, Duration::from_secs(3));
    let check = canary(&[("canary", 99.0)]);
    let held = canary_with(&[("canary", 99.0)], "hold");
    for (status, kind, needle) in [
        (
            403,
            "unauthorized",
            "does serin's RBAC grant metrics.keptn.sh?",
        ),
        // (kube's client retries a 503 itself until the request's timeout.)
        (500, "unavailable", "answered 500"),
    ] {
        stack.faults().add(vec![FaultRule {
            verb: "get".into(),
            resource: "keptnmetrics".into(),
            error_rate: 1.0,
            status,
            ..FaultRule::default()
        }]);
        let e = analyzer.run(&check, None).await;
        assert_eq!(e.observations[0].verdict, MetricVerdict::Error, "{e:?}");
        assert_eq!(e.checks[0].error_kind, Some(kind), "{e:?}");
        assert!(message(&e, 0).contains(needle), "{}", message(&e, 0));
        assert!(
            matches!(e.outcome, serin_core::Analysis::Fail(_)),
            "{:?}",
            e.outcome
        );
        // An outage holds a metric under noDataPolicy hold; refused credentials do not.
        let e = analyzer.run(&held, None).await;
        match status {
            500 => assert!(
                matches!(e.outcome, serin_core::Analysis::Hold(_)),
                "{:?}",
                e.outcome
            ),
            _ => assert!(
                matches!(e.outcome, serin_core::Analysis::Fail(_)),
                "{:?}",
                e.outcome
            ),
        }
        stack.faults().clear();
    }
    let e = analyzer.run(&check, None).await;
    assert_eq!(e.observations[0].value, Some(70.0), "{e:?}");
    stack.shutdown().await;
}

#[tokio::test]
async fn an_analysis_is_deleted_when_its_check_is_dropped_midway() {
    let (stack, client) = world().await;
    template(&client, "never", "analysis/default/not-defined").await;
    let analyzer = analyzer(&client, Duration::from_secs(10));
    let check = canary(&[("never", 1.0)]);
    let running = tokio::spawn(async move { analyzer.run(&check, None).await });
    let analyses = keptn_api(&client, "Analysis", "analyses");
    let count = || {
        let analyses = analyses.clone();
        async move {
            analyses
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len()
        }
    };
    serin_testkit::wait_until(Duration::from_secs(10), "the Analysis created", || async {
        count().await == 1
    })
    .await;
    // The reconcile that ran the check is gone (a controller shutting down, a cancelled
    // background probe): the Analysis must not outlive it.
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    serin_testkit::wait_until(Duration::from_secs(10), "the Analysis deleted", || async {
        count().await == 0
    })
    .await;
    stack.shutdown().await;
}
