//! One row per rule: a valid base object, one change, the paths that must be reported.

use serde_json::{Value, json};

use super::*;

fn base_canary() -> Value {
    json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, "targetPort": "http"},
            "analysis": {
                "interval": "1m",
                "threshold": 5,
                "maxWeight": 50,
                "stepWeight": 10,
                "metrics": [
                    {"name": "request-success-rate", "interval": "1m",
                     "thresholdRange": {"min": 99}},
                    {"name": "latency", "templateRef": {"name": "latency"},
                     "thresholdRange": {"max": 500}}
                ],
                "webhooks": [
                    {"name": "load-test", "url": "http://flagger-loadtester.test/",
                     "timeout": "5s", "metadata": {"cmd": "hey http://podinfo-canary:9898/"}}
                ],
                "alerts": [
                    {"name": "on-call", "severity": "error", "providerRef": {"name": "slack"}}
                ]
            }
        }
    })
}

/// A change to the base object: set (or, with `Value::Null` as the value, remove) the field
/// at a JSON pointer.
type Edit = (&'static str, Value);

fn apply(mut value: Value, edits: &[Edit]) -> Value {
    for (pointer, new) in edits {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = value.pointer_mut(parent).unwrap();
        match (parent, new) {
            (Value::Object(obj), Value::Null) => {
                obj.remove(key);
            }
            (Value::Object(obj), v) => {
                obj.insert(key.to_owned(), v.clone());
            }
            (Value::Array(items), v) => items[key.parse::<usize>().unwrap()] = v.clone(),
            _ => panic!("bad pointer {pointer}"),
        }
    }
    value
}

fn paths(value: &Value) -> Vec<String> {
    let checked = object(value, Provider::Istio).expect("a flagger.app object");
    checked.problems.into_iter().map(|p| p.path).collect()
}

#[test]
fn cross_namespace_references_are_listed_for_the_multi_tenant_guard() {
    let same: crate::api::Canary = serde_json::from_value(base_canary()).unwrap();
    assert!(super::cross_namespace_refs(&same).is_empty());
    let mut v = base_canary();
    v["spec"]["analysis"]["metrics"][1]["templateRef"]["namespace"] = json!("shared");
    v["spec"]["analysis"]["metrics"][0]["templateRef"] = json!({"name": "x", "namespace": "test"});
    v["spec"]["analysis"]["alerts"][0]["providerRef"]["namespace"] = json!("ops");
    v["spec"]["upstreamRef"] = json!({"apiVersion": "gloo.solo.io/v1", "kind": "Upstream", "name": "u", "namespace": "gloo"});
    let c: crate::api::Canary = serde_json::from_value(v).unwrap();
    let paths: Vec<String> = super::cross_namespace_refs(&c)
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(
        paths,
        [
            "spec.upstreamRef.namespace",
            "spec.analysis.metrics[1].templateRef.namespace",
            "spec.analysis.alerts[0].providerRef.namespace"
        ]
    );
}

#[test]
fn the_base_objects_are_valid() {
    assert_eq!(paths(&base_canary()), Vec::<String>::new());
}

#[test]
fn canary_rules() {
    let knative_target = (
        "/spec/targetRef",
        json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "podinfo"}),
    );
    let rows: Vec<(&str, Vec<Edit>, Vec<&str>)> = vec![
        // required fields
        (
            "no targetRef",
            vec![("/spec/targetRef", Value::Null)],
            vec!["spec.targetRef"],
        ),
        (
            "no targetRef.name",
            vec![("/spec/targetRef/name", Value::Null)],
            vec!["spec.targetRef.name"],
        ),
        (
            "no targetRef.kind",
            vec![("/spec/targetRef/kind", Value::Null)],
            vec!["spec.targetRef.kind"],
        ),
        (
            "no targetRef.apiVersion",
            vec![("/spec/targetRef/apiVersion", Value::Null)],
            vec!["spec.targetRef.apiVersion"],
        ),
        (
            "no service.port",
            vec![("/spec/service/port", Value::Null)],
            vec!["spec.service.port"],
        ),
        // the Istio traffic policy: typed as Flagger types it, its oneOfs checked
        (
            "a valid traffic policy",
            vec![(
                "/spec/service/trafficPolicy",
                json!({"loadBalancer": {"simple": "LEAST_REQUEST"}, "tls": {"mode": "ISTIO_MUTUAL"},
                       "outlierDetection": {"consecutive5xxErrors": 5}}),
            )],
            vec![],
        ),
        (
            "an unknown TLS mode",
            vec![(
                "/spec/service/trafficPolicy",
                json!({"tls": {"mode": "MUTUALLY"}}),
            )],
            vec!["spec.service.trafficPolicy.tls.mode"],
        ),
        (
            "a load balancer both simple and hashing",
            vec![(
                "/spec/service/trafficPolicy",
                json!({"loadBalancer": {"simple": "RANDOM", "consistentHash": {"useSourceIp": true}}}),
            )],
            vec!["spec.service.trafficPolicy.loadBalancer"],
        ),
        (
            "a consistent hash of nothing",
            vec![(
                "/spec/service/trafficPolicy",
                json!({"loadBalancer": {"consistentHash": {"minimumRingSize": 8}}}),
            )],
            vec!["spec.service.trafficPolicy.loadBalancer.consistentHash"],
        ),
        (
            "no analysis",
            vec![("/spec/analysis", Value::Null)],
            vec!["spec.analysis"],
        ),
        // wrong types
        (
            "port as a string",
            vec![("/spec/service/port", json!("http"))],
            vec!["spec.service.port"],
        ),
        (
            "targetPort as a bool",
            vec![("/spec/service/targetPort", json!(true))],
            vec!["spec.service.targetPort"],
        ),
        // enums
        (
            "targetRef.kind ReplicaSet",
            vec![("/spec/targetRef/kind", json!("ReplicaSet"))],
            vec!["spec.targetRef.kind"],
        ),
        (
            "unknown provider",
            vec![("/spec/provider", json!("envoy"))],
            vec!["spec.provider"],
        ),
        (
            "unknown webhook type",
            vec![("/spec/analysis/webhooks/0/type", json!("pre-promotion"))],
            vec!["spec.analysis.webhooks[0].type"],
        ),
        (
            "unknown alert severity",
            vec![("/spec/analysis/alerts/0/severity", json!("critical"))],
            vec!["spec.analysis.alerts[0].severity"],
        ),
        (
            "unknown sameSite",
            vec![(
                "/spec/analysis/sessionAffinity",
                json!({"cookieName": "c", "sameSite": "Loose"}),
            )],
            vec!["spec.analysis.sessionAffinity.sameSite"],
        ),
        // unknown fields
        (
            "misspelt field",
            vec![("/spec/analysis/stepweight", json!(5))],
            vec!["spec.analysis.stepweight"],
        ),
        // durations
        (
            "interval in hours",
            vec![("/spec/analysis/interval", json!("1h"))],
            vec!["spec.analysis.interval"],
        ),
        (
            "metric interval in ms (Go's syntax, within the CRD's pattern)",
            vec![("/spec/analysis/metrics/1/interval", json!("500ms"))],
            vec![],
        ),
        (
            "compound webhook timeout",
            vec![("/spec/analysis/webhooks/0/timeout", json!("1m30s"))],
            vec![],
        ),
        (
            "compound analysis interval",
            vec![("/spec/analysis/interval", json!("1m30s"))],
            vec![],
        ),
        (
            "metric interval in Graphite's syntax (the CRD's pattern)",
            vec![("/spec/analysis/metrics/1/interval", json!("1min"))],
            vec![],
        ),
        (
            "metric interval without a unit",
            vec![("/spec/analysis/metrics/1/interval", json!("30"))],
            vec!["spec.analysis.metrics[1].interval"],
        ),
        (
            "webhook timeout with an unknown unit",
            vec![("/spec/analysis/webhooks/0/timeout", json!("5sec"))],
            vec!["spec.analysis.webhooks[0].timeout"],
        ),
        // one-of
        (
            "iterations and stepWeight",
            vec![("/spec/analysis/iterations", json!(10))],
            vec!["spec.analysis"],
        ),
        (
            "stepWeight and stepWeights",
            vec![("/spec/analysis/stepWeights", json!([10, 20]))],
            vec!["spec.analysis"],
        ),
        (
            "no strategy",
            vec![("/spec/analysis/stepWeight", Value::Null)],
            vec!["spec.analysis"],
        ),
        (
            "no strategy with skipAnalysis is fine",
            vec![
                ("/spec/analysis/stepWeight", Value::Null),
                ("/spec/skipAnalysis", json!(true)),
            ],
            vec![],
        ),
        // match
        (
            "match without iterations",
            vec![(
                "/spec/analysis/match",
                json!([{"headers": {"x-canary": {"exact": "insider"}}}]),
            )],
            vec!["spec.analysis.match"],
        ),
        (
            "match with iterations is A/B testing",
            vec![
                ("/spec/analysis/stepWeight", Value::Null),
                ("/spec/analysis/iterations", json!(10)),
                (
                    "/spec/analysis/match",
                    json!([{"headers": {"x-canary": {"exact": "insider"}}}]),
                ),
            ],
            vec![],
        ),
        // weights
        (
            "stepWeights not increasing",
            vec![
                ("/spec/analysis/stepWeight", Value::Null),
                ("/spec/analysis/stepWeights", json!([10, 50, 30])),
            ],
            vec!["spec.analysis.stepWeights"],
        ),
        (
            "stepWeights over 100",
            vec![
                ("/spec/analysis/stepWeight", Value::Null),
                ("/spec/analysis/stepWeights", json!([10, 50, 150])),
            ],
            vec!["spec.analysis.stepWeights"],
        ),
        (
            "stepWeights with 0",
            vec![
                ("/spec/analysis/stepWeight", Value::Null),
                ("/spec/analysis/stepWeights", json!([0, 50])),
            ],
            vec!["spec.analysis.stepWeights"],
        ),
        (
            "maxWeight over 100",
            vec![("/spec/analysis/maxWeight", json!(120))],
            vec!["spec.analysis.maxWeight"],
        ),
        (
            "maxWeight 0",
            vec![("/spec/analysis/maxWeight", json!(0))],
            vec!["spec.analysis.maxWeight"],
        ),
        (
            "stepWeight over 100",
            vec![("/spec/analysis/stepWeight", json!(101))],
            vec!["spec.analysis.stepWeight"],
        ),
        // metrics
        (
            "metric without template or query",
            vec![("/spec/analysis/metrics/1/templateRef", Value::Null)],
            vec!["spec.analysis.metrics[1]"],
        ),
        (
            "metric with an inline query is fine",
            vec![
                ("/spec/analysis/metrics/1/templateRef", Value::Null),
                ("/spec/analysis/metrics/1/query", json!("up")),
            ],
            vec![],
        ),
        (
            "inverted threshold range",
            vec![(
                "/spec/analysis/metrics/1/thresholdRange",
                json!({"min": 10, "max": 1}),
            )],
            vec!["spec.analysis.metrics[1].thresholdRange"],
        ),
        (
            "duplicate metric names",
            vec![(
                "/spec/analysis/metrics/1/name",
                json!("request-success-rate"),
            )],
            vec!["spec.analysis.metrics[1].name"],
        ),
        (
            "unknown noDataPolicy",
            vec![("/spec/analysis/metrics/1/noDataPolicy", json!("ignore"))],
            vec!["spec.analysis.metrics[1].noDataPolicy"],
        ),
        // session affinity
        (
            "same cookie names",
            vec![(
                "/spec/analysis/sessionAffinity",
                json!({"cookieName": "c", "primaryCookieName": "c"}),
            )],
            vec!["spec.analysis.sessionAffinity.primaryCookieName"],
        ),
        // providers
        (
            "nginx without ingressRef",
            vec![("/spec/provider", json!("nginx"))],
            vec!["spec.ingressRef"],
        ),
        (
            "skipper without ingressRef",
            vec![("/spec/provider", json!("skipper"))],
            vec!["spec.ingressRef"],
        ),
        (
            "nginx with ingressRef",
            vec![
                ("/spec/provider", json!("nginx")),
                (
                    "/spec/ingressRef",
                    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"}),
                ),
            ],
            vec![],
        ),
        (
            "apisix without routeRef",
            vec![("/spec/provider", json!("apisix"))],
            vec!["spec.routeRef"],
        ),
        (
            "gatewayapi without gatewayRefs",
            vec![("/spec/provider", json!("gatewayapi:v1"))],
            vec!["spec.service.gatewayRefs"],
        ),
        (
            "gatewayapi with empty gatewayRefs",
            vec![
                ("/spec/provider", json!("gatewayapi:v1beta1")),
                ("/spec/service/gatewayRefs", json!([])),
            ],
            vec!["spec.service.gatewayRefs"],
        ),
        (
            "knative target with the default provider",
            vec![knative_target.clone()],
            vec!["spec.provider"],
        ),
        (
            "knative target with provider knative",
            vec![knative_target.clone(), ("/spec/provider", json!("knative"))],
            vec![],
        ),
        (
            "knative target without spec.service (Flagger's CRD does not require it)",
            vec![
                knative_target.clone(),
                ("/spec/provider", json!("knative")),
                ("/spec/service", Value::Null),
            ],
            vec![],
        ),
        (
            "deployment target without spec.service",
            vec![("/spec/service", Value::Null)],
            vec!["spec.service.port"],
        ),
        (
            "knative target with an autoscaler",
            vec![
                knative_target.clone(),
                ("/spec/provider", json!("knative")),
                (
                    "/spec/autoscalerRef",
                    json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"}),
                ),
            ],
            vec!["spec.autoscalerRef"],
        ),
        (
            "knative provider with a Deployment",
            vec![("/spec/provider", json!("knative"))],
            vec!["spec.targetRef"],
        ),
        // webhooks
        (
            "webhook url without scheme",
            vec![(
                "/spec/analysis/webhooks/0/url",
                json!("flagger-loadtester.test/"),
            )],
            vec!["spec.analysis.webhooks[0].url"],
        ),
        // several at once
        (
            "several problems",
            vec![
                ("/spec/targetRef/kind", json!("ReplicaSet")),
                ("/spec/analysis/interval", json!("1h")),
                ("/spec/provider", json!("nginx")),
            ],
            vec![
                "spec.targetRef.kind",
                "spec.analysis.interval",
                "spec.ingressRef",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (name, edits, expected) in rows {
        let got = paths(&apply(base_canary(), &edits));
        let mut got_sorted = got.clone();
        got_sorted.sort();
        let mut expected: Vec<String> = expected.into_iter().map(String::from).collect();
        expected.sort();
        if got_sorted != expected {
            failures.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_deprecated_canary_analysis_alias_is_read() {
    let mut canary = base_canary();
    let analysis = canary["spec"]
        .as_object_mut()
        .unwrap()
        .remove("analysis")
        .unwrap();
    canary["spec"]["canaryAnalysis"] = analysis;
    assert_eq!(paths(&canary), Vec::<String>::new());
    canary["spec"]["canaryAnalysis"]["interval"] = json!("1h");
    assert_eq!(paths(&canary), ["spec.canaryAnalysis.interval"]);
}

#[test]
fn the_default_provider_is_an_input() {
    let checked = object(&base_canary(), Provider::Nginx).unwrap();
    let got: Vec<_> = checked.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(got, ["spec.ingressRef"]);
}

#[test]
fn messages_list_the_allowed_values() {
    let canary = apply(
        base_canary(),
        &[("/spec/targetRef/kind", json!("ReplicaSet"))],
    );
    let checked = object(&canary, Provider::Istio).unwrap();
    assert_eq!(checked.kind, "Canary");
    assert_eq!(checked.name, "podinfo");
    assert_eq!(
        checked.problems[0].to_string(),
        "spec.targetRef.kind: `ReplicaSet` is not allowed; use one of: DaemonSet, Deployment, Service, StatefulSet"
    );
    let webhook = apply(
        base_canary(),
        &[("/spec/analysis/webhooks/0/type", json!("x"))],
    );
    let message = &object(&webhook, Provider::Istio).unwrap().problems[0].message;
    assert!(
        message.contains("confirm-rollout") && message.contains("\"\""),
        "{message}"
    );
}

fn base_template() -> Value {
    json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": "latency"},
        "spec": {
            "provider": {"type": "prometheus", "address": "http://prometheus:9090"},
            "query": "histogram_quantile(0.99, sum(rate(x[{{ interval }}])) by (le))"
        }
    })
}

fn base_alert_provider() -> Value {
    json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "AlertProvider",
        "metadata": {"name": "slack"},
        "spec": {"type": "slack", "channel": "alerts", "address": "https://hooks.slack.com/x"}
    })
}

#[test]
fn metric_template_and_alert_provider_rules() {
    let rows: Vec<(&str, Value, Vec<&str>)> = vec![
        ("template ok", base_template(), vec![]),
        (
            "template with Go text/template actions",
            apply(
                base_template(),
                &[(
                    "/spec/query",
                    json!(
                        "sum(rate(x{ns=\"{{ .Namespace }}\"}[{{ interval }}])) {{ if true }}> 0{{ end }}"
                    ),
                )],
            ),
            vec!["spec.query", "spec.query", "spec.query"],
        ),
        (
            "template with variables and filters only",
            apply(
                base_template(),
                &[(
                    "/spec/query",
                    json!(
                        "rate(x{app=\"{{ target }}\",env=\"{{ variables.env }}\"}[{{ interval }}])"
                    ),
                )],
            ),
            vec![],
        ),
        (
            "template without provider type",
            apply(base_template(), &[("/spec/provider/type", Value::Null)]),
            vec!["spec.provider.type"],
        ),
        (
            "template with unknown provider type",
            apply(
                base_template(),
                &[("/spec/provider/type", json!("elasticsearch"))],
            ),
            vec!["spec.provider.type"],
        ),
        (
            "template without query",
            apply(base_template(), &[("/spec/query", Value::Null)]),
            vec!["spec.query"],
        ),
        ("alert provider ok", base_alert_provider(), vec![]),
        (
            "alert provider with a secretRef",
            apply(
                base_alert_provider(),
                &[
                    ("/spec/address", Value::Null),
                    ("/spec/secretRef", json!({"name": "s"})),
                ],
            ),
            vec![],
        ),
        (
            "alert provider without type",
            apply(base_alert_provider(), &[("/spec/type", Value::Null)]),
            vec!["spec.type"],
        ),
        (
            "alert provider with unknown type",
            apply(base_alert_provider(), &[("/spec/type", json!("pagerduty"))]),
            vec!["spec.type"],
        ),
        (
            "alert provider without address or secretRef",
            apply(base_alert_provider(), &[("/spec/address", Value::Null)]),
            vec!["spec"],
        ),
    ];
    for (name, value, expected) in rows {
        assert_eq!(paths(&value), expected, "{name}");
    }
}

#[test]
fn dispatch_on_api_version_and_kind() {
    let deployment =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}});
    assert_eq!(object(&deployment, Provider::Istio), None);
    assert_eq!(object(&json!({"kind": "Canary"}), Provider::Istio), None);
    assert_eq!(object(&json!("scalar"), Provider::Istio), None);

    let unknown =
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canaryy", "metadata": {"name": "x"}});
    assert_eq!(paths(&unknown), ["kind"]);

    let old = apply(
        base_canary(),
        &[("/apiVersion", json!("flagger.app/v1alpha3"))],
    );
    assert_eq!(paths(&old), ["apiVersion"]);

    let no_name = apply(base_canary(), &[("/metadata/name", Value::Null)]);
    let checked = object(&no_name, Provider::Istio).unwrap();
    assert_eq!(checked.name, "<unnamed>");
    assert_eq!(checked.problems[0].path, "metadata.name");

    let no_spec = apply(base_canary(), &[("/spec", Value::Null)]);
    assert_eq!(paths(&no_spec), ["spec"]);
}

#[test]
fn garbage_never_panics() {
    let weird = [
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "spec": "text"}),
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "spec": [1, 2]}),
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "spec": {"analysis": [], "service": {"port": 1e300}}}),
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": 5, "spec": {"targetRef": null, "service": {"port": -1, "targetPort": {"a": 1}}, "analysis": {"metrics": [null, 5, {"name": 1}], "stepWeights": ["a", null]}}}),
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate", "spec": {"provider": {"type": 5, "headers": {"a": "b"}}}}),
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider", "spec": null}),
        json!({"apiVersion": 5, "kind": []}),
    ];
    for value in weird {
        if let Some(checked) = object(&value, Provider::Istio) {
            assert!(!checked.problems.is_empty(), "{value}");
        }
    }
}

#[test]
fn a_release_group_is_named_as_a_label_value() {
    let path = "metadata.annotations[serin.flagger.app/release-group]";
    for (group, problems) in [
        ("shop", vec![]),
        ("checkout.v2_eu-1", vec![]),
        ("", vec![path]),
        ("-shop", vec![path]),
        ("shop team", vec![path]),
        (&"g".repeat(64)[..], vec![path]),
    ] {
        let annotations = json!({"serin.flagger.app/release-group": group});
        let canary = apply(base_canary(), &[("/metadata/annotations", annotations)]);
        assert_eq!(paths(&canary), problems, "{group:?}");
    }
}
