#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `Analyzer::run` end to end: MetricTemplates and Secrets read from the API emulator
//! (serin-stack), queries answered by scripted Prometheus, Datadog and New Relic servers.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use serin::analysis::Analyzer;
use serin::api::canary::MetricVerdict;
use serin::api::{Canary, MetricTemplate, Provider};
use serin_stack::testing::fake_http::{FakeServer, Response};

struct World {
    stack: serin_stack::Stack,
    client: kube::Client,
}

async fn world() -> World {
    let stack = serin_stack::Stack::start(serin_stack::StackConfig::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(kube::Config::new(stack.url().parse().unwrap())).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in serin::api::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["test", "monitoring"] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
    }
    World { stack, client }
}

impl World {
    async fn create<K>(&self, namespace: &str, object: Value)
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        api.create(
            &PostParams::default(),
            &serde_json::from_value(object).unwrap(),
        )
        .await
        .unwrap();
    }

    fn analyzer(&self, prometheus: &str) -> Analyzer {
        Analyzer::new(self.client.clone(), prometheus.to_string(), Provider::Istio)
            .unwrap()
            .with_timeout(Duration::from_secs(2))
            .unwrap()
    }
}

fn vector(value: Option<&str>) -> Response {
    let result: Vec<Value> = value
        .map(|v| json!({"metric": {}, "value": [1.0, v]}))
        .into_iter()
        .collect();
    Response::json(
        200,
        json!({"status": "success", "data": {"resultType": "vector", "result": result}}),
    )
}

/// A Prometheus whose answers depend on the metric name in the query.
async fn prometheus(success_rate: &'static str) -> FakeServer {
    FakeServer::start(move |request| {
        let query = request.query.get("query").cloned().unwrap_or_default();
        if query.contains("istio_requests_total") {
            vector(Some(success_rate))
        } else if query.contains("istio_request_duration_milliseconds_bucket") {
            vector(Some("120.7"))
        } else if query == "vector(1)" {
            vector(Some("1"))
        } else {
            vector(None)
        }
    })
    .await
}

fn canary(metrics: Value) -> Canary {
    serin_testkit::canary("podinfo")
        .namespace("test")
        .without("provider")
        .without("progressDeadlineSeconds")
        .analysis(json!({"interval": "10s", "threshold": 2, "stepWeight": 10, "metrics": metrics}))
        .parse()
}

#[tokio::test]
async fn builtins_templates_and_the_hold_policy_in_one_run() {
    let world = world().await;
    let prom = prometheus("99.5").await;
    let datadog = FakeServer::start(|request| match request.path.as_str() {
        "/api/v1/query" => Response::json(200, json!({"series": [{"pointlist": [[1.0, 0.25]]}]})),
        _ => Response::json(200, json!({"valid": true})),
    })
    .await;
    let newrelic =
        FakeServer::start(|_| Response::json(200, json!({"results": [{"result": 0.5}]}))).await;

    // Templates in another namespace, with their Secrets next to them.
    world
        .create::<Secret>(
            "monitoring",
            json!({"metadata": {"name": "dd"}, "stringData": {
                "datadog_api_key": "api-1", "datadog_application_key": "app-1"}}),
        )
        .await;
    world
        .create::<Secret>(
            "monitoring",
            json!({"metadata": {"name": "nr"}, "stringData": {
                "newrelic_account_id": "42", "newrelic_query_key": "qk"}}),
        )
        .await;
    world
        .create::<MetricTemplate>("monitoring", json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "dd-errors"},
            "spec": {"provider": {"type": "datadog", "address": datadog.url, "secretRef": {"name": "dd"}},
                     "query": "sum:errors{service:{{ target }},env:{{ variables.env }}}"}
        }))
        .await;
    world
        .create::<MetricTemplate>("monitoring", json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "nr-errors"},
            "spec": {"provider": {"type": "newrelic", "address": newrelic.url, "secretRef": {"name": "nr"}},
                     "query": "SELECT percentage(count(*), WHERE error IS true) AS result FROM Transaction WHERE appName = '{{ name }}'"}
        }))
        .await;
    world
        .create::<MetricTemplate>(
            "test",
            json!({
                "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
                "metadata": {"name": "queue-depth"},
                "spec": {"provider": {"type": "prometheus"},
                         "query": "sum(queue_depth{namespace=\"{{ namespace }}\"})"}
            }),
        )
        .await;

    let canary = canary(json!([
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
        {"name": "request-duration", "threshold": 500},
        {"name": "dd-errors", "templateRef": {"name": "dd-errors", "namespace": "monitoring"},
         "templateVariables": {"env": "prod"}, "thresholdRange": {"max": 1}, "interval": "30s"},
        {"name": "nr-errors", "templateRef": {"name": "nr-errors", "namespace": "monitoring"},
         "thresholdRange": {"max": 1}, "interval": "2m"},
        {"name": "queue-depth", "templateRef": {"name": "queue-depth"},
         "thresholdRange": {"max": 100}, "noDataPolicy": "hold"}
    ]));
    let analyzer = world.analyzer(&prom.url);
    let evaluation = analyzer.run(&canary, None).await;

    let verdicts: Vec<_> = evaluation
        .observations
        .iter()
        .map(|o| (o.name.as_str(), o.value, o.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("request-success-rate", Some(99.5), MetricVerdict::Pass),
            ("request-duration", Some(120.0), MetricVerdict::Pass),
            ("dd-errors", Some(0.25), MetricVerdict::Pass),
            ("nr-errors", Some(0.5), MetricVerdict::Pass),
            ("queue-depth", None, MetricVerdict::NoData),
        ]
    );
    match &evaluation.outcome {
        serin_core::Analysis::Hold(reason) => {
            assert!(reason.contains("queue-depth"), "{reason}");
            assert!(reason.contains("no values found"), "{reason}");
        }
        other => panic!("expected Hold, got {other:?}"),
    }
    assert_eq!(evaluation.observations[0].threshold_min, Some(99.0));
    assert_eq!(evaluation.observations[1].threshold_max, Some(500.0));
    assert_eq!(evaluation.checks[1].gauge_value(), Some(0.12));

    // The queries as rendered and sent.
    let dd = &datadog.requests()[0];
    assert_eq!(dd.query["query"], "sum:errors{service:podinfo,env:prod}");
    assert_eq!(dd.headers["dd-api-key"], "api-1");
    let from: i64 = dd.query["from"].parse().unwrap();
    let to: i64 = dd.query["to"].parse().unwrap();
    assert_eq!(to - from, 300, "10 x the 30s interval");
    let nr = &newrelic.requests()[0];
    assert_eq!(nr.path, "/v1/accounts/42/query");
    assert!(nr.query["nrql"].ends_with("appName = 'podinfo' SINCE 120 seconds ago"));
    let sr_query = evaluation.checks[0].query.as_deref().unwrap();
    assert!(sr_query.contains("destination_workload_namespace=\"test\""));
    assert!(sr_query.contains("[1m]"));

    // Availability: Prometheus vector(1), Datadog /api/v1/validate, a New Relic query.
    assert_eq!(analyzer.check_availability(&canary).await, Ok(()));
    assert!(
        datadog
            .requests()
            .iter()
            .any(|r| r.path == "/api/v1/validate")
    );
    world.stack.shutdown().await;
}

#[tokio::test]
async fn a_faulty_version_fails_with_the_value_and_the_range() {
    let world = world().await;
    let prom = prometheus("69.7").await;
    let canary = canary(json!([
        {"name": "request-success-rate", "threshold": 99},
        {"name": "request-duration", "thresholdRange": {"max": 500}}
    ]));
    let evaluation = world.analyzer(&prom.url).run(&canary, None).await;
    assert_eq!(
        evaluation.outcome,
        serin_core::Analysis::Fail("success rate 69.70% < 99%".into())
    );
    assert_eq!(evaluation.observations[0].verdict, MetricVerdict::Fail);
    assert_eq!(evaluation.observations[1].verdict, MetricVerdict::Pass);
    world.stack.shutdown().await;
}

#[tokio::test]
async fn no_data_fails_by_default_and_names_the_target() {
    let world = world().await;
    let prom = FakeServer::start(|_| vector(Some("NaN"))).await;
    let canary = canary(json!([{"name": "request-success-rate", "thresholdRange": {"min": 99}}]));
    let evaluation = world.analyzer(&prom.url).run(&canary, None).await;
    match &evaluation.outcome {
        serin_core::Analysis::Fail(reason) => assert!(
            reason.starts_with(
                "no values found for prometheus metric request-success-rate probably \
                 podinfo.test is not receiving traffic"
            ),
            "{reason}"
        ),
        other => panic!("expected Fail, got {other:?}"),
    }
    assert_eq!(evaluation.observations[0].verdict, MetricVerdict::NoData);
    world.stack.shutdown().await;
}

/// A provider that is down holds the release under `hold` and `pass` (never a pass on
/// missing data) and fails a check under `fail`, as Flagger; a query the provider refuses
/// (a 400: the query is wrong) fails whatever the policy.
#[tokio::test]
async fn a_provider_outage_holds_under_hold_and_pass_and_fails_under_fail() {
    let world = world().await;
    let down = FakeServer::start(|_| Response::text(503, "text/html", "<html>down</html>")).await;
    let refused = FakeServer::start(|_| {
        Response::json(
            400,
            json!({"status": "error", "errorType": "bad_data", "error": "parse error"}),
        )
    })
    .await;
    let unreachable = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for (address, policy, holds) in [
        (down.url.as_str(), "hold", true),
        (down.url.as_str(), "pass", true),
        (down.url.as_str(), "fail", false),
        (unreachable.as_str(), "hold", true),
        (refused.url.as_str(), "hold", false),
    ] {
        let canary = canary(json!([{"name": "request-success-rate",
            "thresholdRange": {"min": 99}, "noDataPolicy": policy}]));
        let evaluation = world.analyzer(address).run(&canary, None).await;
        let case = format!("{address} under {policy}: {:?}", evaluation.outcome);
        match (&evaluation.outcome, holds) {
            (serin_core::Analysis::Hold(reason), true) => {
                assert!(
                    reason.contains(&format!("noDataPolicy {policy}: waiting for prometheus")),
                    "{case}"
                );
            }
            (serin_core::Analysis::Fail(reason), false) => {
                assert!(reason.contains("metric query failed"), "{case}");
            }
            _ => panic!("{case}"),
        }
        assert_eq!(
            evaluation.observations[0].verdict,
            MetricVerdict::Error,
            "{case}"
        );
    }
    world.stack.shutdown().await;
}

#[tokio::test]
async fn missing_templates_secrets_and_variables_are_errors_that_say_which() {
    let world = world().await;
    let prom = prometheus("100").await;
    world
        .create::<MetricTemplate>("test", json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "needs-secret"},
            "spec": {"provider": {"type": "datadog", "secretRef": {"name": "absent"}}, "query": "x"}
        }))
        .await;
    world
        .create::<MetricTemplate>("test", json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "needs-variable"},
            "spec": {"provider": {"type": "prometheus"}, "query": "x{a=\"{{ variables.app }}\"}"}
        }))
        .await;
    let canary = canary(json!([
        {"name": "gone", "templateRef": {"name": "gone"}},
        {"name": "needs-secret", "templateRef": {"name": "needs-secret"}},
        {"name": "needs-variable", "templateRef": {"name": "needs-variable"}},
        {"name": "nothing"}
    ]));
    let evaluation = world.analyzer(&prom.url).run(&canary, None).await;
    let messages: Vec<String> = evaluation
        .observations
        .iter()
        .map(|o| {
            assert_eq!(o.verdict, MetricVerdict::Error, "{o:?}");
            o.message.clone().unwrap()
        })
        .collect();
    assert!(
        messages[0].contains("MetricTemplate test/gone"),
        "{}",
        messages[0]
    );
    assert!(
        messages[1].contains("Secret test/absent"),
        "{}",
        messages[1]
    );
    assert!(messages[2].contains("variables.app"), "{}", messages[2]);
    assert!(
        messages[3].contains("no usable metrics template"),
        "{}",
        messages[3]
    );
    assert!(
        matches!(&evaluation.outcome, serin_core::Analysis::Fail(r) if r.contains("gone")),
        "{:?}",
        evaluation.outcome
    );
    world.stack.shutdown().await;
}

#[tokio::test]
async fn availability_names_the_provider_that_is_down() {
    let world = world().await;
    let prom = prometheus("100").await;
    let datadog =
        FakeServer::start(|_| Response::json(403, json!({"errors": ["Forbidden"]}))).await;
    world
        .create::<Secret>(
            "test",
            json!({"metadata": {"name": "dd"}, "stringData": {
                "datadog_api_key": "a", "datadog_application_key": "b"}}),
        )
        .await;
    world
        .create::<MetricTemplate>("test", json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "dd"},
            "spec": {"provider": {"type": "datadog", "address": datadog.url, "secretRef": {"name": "dd"}},
                     "query": "x"}
        }))
        .await;
    let canary = canary(json!([
        {"name": "request-success-rate", "thresholdRange": {"min": 99}},
        {"name": "dd", "templateRef": {"name": "dd"}, "interval": "1m"}
    ]));
    let err = world
        .analyzer(&prom.url)
        .check_availability(&canary)
        .await
        .unwrap_err();
    assert!(err.contains("metric dd: datadog is not available"), "{err}");
    assert!(err.contains("403"), "{err}");
    world.stack.shutdown().await;
}

#[tokio::test]
async fn templates_and_secrets_come_from_the_caches_when_given() {
    let world = world().await;
    let datadog = FakeServer::start(|_| {
        Response::json(200, json!({"series": [{"pointlist": [[1.0, 0.5]]}]}))
    })
    .await;
    // Only in the caches: the cluster has neither, so a GET would fail the check.
    let template: MetricTemplate = serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
        "metadata": {"name": "cached", "namespace": "test"},
        "spec": {"provider": {"type": "datadog", "address": datadog.url, "secretRef": {"name": "dd"}},
                 "query": "avg:x{*}"}
    }))
    .unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "dd", "namespace": "test"},
        "stringData": {"datadog_api_key": "cached-key", "datadog_application_key": "b"}
    }))
    .unwrap();
    let (templates, mut template_writer) = kube::runtime::reflector::store();
    template_writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(template));
    let (secrets, mut secret_writer) = kube::runtime::reflector::store();
    secret_writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(secret));

    let prom = prometheus("100").await;
    let canary = canary(json!([
        {"name": "cached", "templateRef": {"name": "cached"}, "thresholdRange": {"max": 1}, "interval": "1m"}
    ]));
    let uncached = world.analyzer(&prom.url).run(&canary, None).await;
    assert_eq!(uncached.observations[0].verdict, MetricVerdict::Error);
    let cached = world
        .analyzer(&prom.url)
        .with_caches(templates, secrets)
        .run(&canary, None)
        .await;
    assert_eq!(cached.outcome, serin_core::Analysis::Pass, "{cached:?}");
    assert_eq!(cached.observations[0].value, Some(0.5));
    assert_eq!(datadog.requests()[0].headers["dd-api-key"], "cached-key");
    world.stack.shutdown().await;
}

#[tokio::test]
async fn knative_builtins_read_the_latest_created_revision() {
    let world = world().await;
    let crds: Api<CustomResourceDefinition> = Api::all(world.client.clone());
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "services.serving.knative.dev"},
            "spec": {"group": "serving.knative.dev", "scope": "Namespaced",
                "names": {"plural": "services", "singular": "service", "kind": "Service"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}}}]}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("serving.knative.dev", "v1", "Service"),
        "services",
    );
    let services: Api<kube::api::DynamicObject> =
        Api::namespaced_with(world.client.clone(), "test", &resource);
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "serving.knative.dev/v1", "kind": "Service",
                "metadata": {"name": "podinfo", "namespace": "test"},
                "spec": {}, "status": {"latestCreatedRevisionName": "podinfo-00002"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let prom = FakeServer::start(|_| vector(Some("100"))).await;
    let mut canary =
        canary(json!([{"name": "request-success-rate", "thresholdRange": {"min": 99}}]));
    canary.spec.provider = Some(Provider::Knative);
    // As `serin analyze` does; the controller passes the revision it read with the target.
    let analyzer = world.analyzer(&prom.url);
    let route = analyzer.knative_route(&canary).await;
    assert_eq!(route.as_deref(), Some("podinfo-00002"));
    let evaluation = analyzer.run(&canary, route.as_deref()).await;
    assert_eq!(
        evaluation.outcome,
        serin_core::Analysis::Pass,
        "{evaluation:?}"
    );
    let query = evaluation.checks[0].query.as_deref().unwrap();
    assert!(
        query.contains("envoy_cluster_name=~\"test/podinfo-00002\""),
        "{query}"
    );
    world.stack.shutdown().await;
}

/// The judge's level comes from the Canary's own analysis: 10 steps (stepWeight 10), one
/// judged metric, `threshold` 2 or 5. 90 errors against 50 in 10,000 requests each (p ≈
/// 0.0029) pass a check at threshold 2 (level 2 × 0.01 / 11 ≈ 0.0018) and fail one at
/// threshold 5 (5 × 0.01 / 14 ≈ 0.0036).
#[tokio::test]
async fn the_judge_spreads_the_confidence_over_the_canarys_own_checks() {
    let world = world().await;
    // Rates per second over the 1m window: 10,000 requests per version.
    let prom = FakeServer::start(|request| {
        let query = request.query.get("query").cloned().unwrap_or_default();
        let primary = query.contains("podinfo-primary");
        let rate = match (query.contains("response_code!~"), primary) {
            (true, false) => (10_000.0 - 90.0) / 60.0,
            (true, true) => (10_000.0 - 50.0) / 60.0,
            (false, _) => 10_000.0 / 60.0,
        };
        vector(Some(&rate.to_string()))
    })
    .await;
    let metrics = json!([{"name": "request-success-rate", "interval": "1m",
                          "judge": {"test": "counts", "minSamples": 100}}]);
    let analyzer = world.analyzer(&prom.url);
    for (threshold, outcome, level) in [
        (2, MetricVerdict::Pass, "fails below 0.0018"),
        (5, MetricVerdict::Fail, "fails below 0.0036"),
    ] {
        let mut canary = canary(metrics.clone());
        canary.spec.analysis.as_mut().unwrap().threshold = Some(threshold);
        let evaluation = analyzer.run(&canary, None).await;
        let observed = &evaluation.observations[0];
        assert_eq!(observed.verdict, outcome, "{observed:?}");
        let message = observed.message.as_deref().unwrap_or_default();
        assert!(message.contains("p = 0.0029"), "{message}");
        assert!(message.contains(level), "{message}");
    }
    world.stack.shutdown().await;
}
