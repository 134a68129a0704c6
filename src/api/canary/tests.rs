//! Round trips of full Flagger manifests, and Flagger's defaults and strategy selection.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;

/// A Canary using every spec field Flagger defines, plus a full status.
fn full_canary() -> Value {
    // JSON (a subset of YAML), as `kubectl get -o json` prints it.
    serde_json::from_str(
        r#"{
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "provider": "istio",
                "metricsServer": "http://prometheus.istio-system:9090",
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "autoscalerRef": {
                    "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": "podinfo",
                    "primaryScalerQueries": {"prom": "sum(rate(x{app=\"podinfo-primary\"}[1m]))"},
                    "primaryScalerReplicas": {"minReplicas": 2, "maxReplicas": 10}
                },
                "ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"},
                "routeRef": {"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute", "name": "podinfo"},
                "upstreamRef": {"apiVersion": "gloo.solo.io/v1", "kind": "Upstream", "name": "podinfo", "namespace": "gloo"},
                "service": {
                    "name": "podinfo", "port": 9898, "portName": "http", "targetPort": 9898,
                    "appProtocol": "http", "trafficDistribution": "PreferClose",
                    "portDiscovery": true, "headless": false, "timeout": "30s", "backendTimeout": "10s",
                    "meshName": "global", "backends": ["backend.test"],
                    "hosts": ["app.example.com"], "delegation": false,
                    "gateways": ["public-gateway.istio-system.svc.cluster.local"],
                    "gatewayRefs": [{"name": "gw", "namespace": "istio-ingress", "sectionName": "https", "port": 443,
                                     "group": "gateway.networking.k8s.io", "kind": "Gateway"}],
                    "match": [{"uri": {"prefix": "/"}, "method": {"exact": "GET"},
                               "headers": {"x-user": {"regex": ".*"}}, "withoutHeaders": {"x-bot": {"exact": "1"}},
                               "queryParams": {"q": {"suffix": "x"}}, "port": 80, "ignoreUriCase": true,
                               "sourceLabels": {"app": "web"}, "sourceNamespace": "web", "gateways": ["mesh"],
                               "name": "all", "scheme": {"exact": "https"}, "authority": {"prefix": "app"}}],
                    "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "gateway-error,connect-failure"},
                    "rewrite": {"uri": "/", "authority": "app", "type": "ReplacePrefixMatch"},
                    "mirror": [{"backendRef": {"name": "shadow", "port": 9898, "group": "", "kind": "Service", "namespace": "test"}}],
                    "headers": {"request": {"add": {"x-a": "1"}, "set": {"x-b": "2"}, "remove": ["x-c"]},
                                "response": {"add": {"x-d": "1"}}},
                    "corsPolicy": {"allowOrigin": ["example.com"], "allowOrigins": [{"exact": "https://example.com"}],
                                   "allowMethods": ["GET"], "allowHeaders": ["x-a"], "exposeHeaders": ["x-b"],
                                   "maxAge": "24h", "allowCredentials": false},
                    "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"},
                                      "loadBalancer": {"consistentHash": {"httpCookie": {"name": "u", "ttl": "0s"}}},
                                      "connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}},
                    "apex": {"labels": {"a": "1"}, "annotations": {"b": "2"}},
                    "primary": {"labels": {"c": "3"}},
                    "canary": {"annotations": {"d": "4"}},
                    "unmanagedMetadata": {"annotations": ["e"], "labels": ["f"]}
                },
                "analysis": {
                    "interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
                    "stepWeightPromotion": 25, "mirror": false, "mirrorWeight": 50,
                    "primaryReadyThreshold": 90, "canaryReadyThreshold": 80,
                    "sessionAffinity": {"cookieName": "canary", "primaryCookieName": "primary", "domain": "example.com",
                                        "httpOnly": true, "maxAge": 3600, "partitioned": false, "path": "/",
                                        "sameSite": "Lax", "secure": true},
                    "metrics": [
                        {"name": "request-success-rate", "interval": "1m", "thresholdRange": {"min": 99.0}},
                        {"name": "latency", "templateRef": {"name": "latency", "namespace": "istio-system"},
                         "templateVariables": {"q": "0.99"}, "thresholdRange": {"max": 500.5}, "noDataPolicy": "hold"},
                        {"name": "legacy", "query": "up", "threshold": 1.5}
                    ],
                    "webhooks": [
                        {"name": "gate", "type": "confirm-rollout", "url": "http://loadtester/gate/approve"},
                        {"name": "load", "type": "", "url": "http://loadtester/", "timeout": "5s", "retries": 2,
                         "muteAlert": true, "disableTLS": true, "metadata": {"cmd": "hey -z 1m http://podinfo-canary/"}}
                    ],
                    "alerts": [{"name": "oncall", "severity": "error", "providerRef": {"name": "slack", "namespace": "flagger"}}]
                },
                "progressDeadlineSeconds": 120,
                "skipAnalysis": false,
                "revertOnDeletion": true,
                "suspend": false
            },
            "status": {
                "phase": "Progressing", "failedChecks": 1, "canaryWeight": 20, "iterations": 0,
                "trackedConfigs": {"configmap/podinfo": "abc"},
                "lastAppliedSpec": "h1", "lastPromotedSpec": "h0", "lastTrackedRevision": "r1",
                "lastTransitionTime": "2026-01-01T10:00:00Z",
                "sessionAffinityCookie": "canary=x", "primarySessionAffinityCookie": "primary=y",
                "previousSessionAffinityCookie": "canary=w",
                "conditions": [{"type": "Promoted", "status": "Unknown", "reason": "Progressing",
                                "message": "New revision detected, progressing canary analysis.",
                                "lastUpdateTime": "2026-01-01T10:00:00Z", "lastTransitionTime": "2026-01-01T09:00:00Z"}],
                "observedGeneration": 3,
                "metrics": [{"name": "latency", "value": 120.5, "thresholdMax": 500.5, "verdict": "pass",
                             "time": "2026-01-01T10:00:00Z"}]
            }
        }"#,
    )
    .unwrap()
}

#[test]
fn a_full_flagger_canary_round_trips_without_losing_fields() {
    let original = full_canary();
    let canary: Canary = serde_json::from_value(original.clone()).unwrap();
    let back = serde_json::to_value(&canary).unwrap();
    assert_eq!(back, original);

    // Through YAML too, as `kubectl apply -f` files are written.
    let yaml = serde_norway::to_string(&canary).unwrap();
    let from_yaml: Canary = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(from_yaml, canary);
}

#[test]
fn the_full_canary_is_valid() {
    let problems = crate::api::validate::object(&full_canary(), Provider::Istio)
        .unwrap()
        .problems;
    assert_eq!(problems, vec![]);
}

#[test]
fn every_provider_name_round_trips() {
    for provider in Provider::all() {
        let json = serde_json::to_value(provider).unwrap();
        assert_eq!(json, provider.as_str());
        assert_eq!(provider.as_str().parse::<Provider>(), Ok(provider));
    }
    assert!(
        "envoy"
            .parse::<Provider>()
            .unwrap_err()
            .contains("gatewayapi:v1")
    );
}

fn spec(analysis: Value) -> CanarySpec {
    serde_json::from_value(json!({
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": analysis,
    }))
    .unwrap()
}

#[test]
fn flagger_defaults() {
    let s = spec(json!({}));
    let a = s.analysis().unwrap();
    assert_eq!(
        a.interval(FLAGGER_MIN_INTERVAL),
        Ok(Duration::from_secs(60))
    );
    assert_eq!(a.threshold(), 1);
    assert_eq!(a.max_weight(), 100);
    assert_eq!(a.primary_ready_threshold(), 100);
    assert_eq!(a.canary_ready_threshold(), 100);
    assert_eq!(a.step_weight_promotion(), 0);
    assert_eq!(s.progress_deadline_seconds(), 600);
    assert_eq!(s.service_name(), "podinfo");
    assert_eq!(s.service.port_name(), "http");
    assert_eq!(
        s.service.target_port(),
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(9898)
    );
    assert_eq!(s.provider_or(Provider::Linkerd), Provider::Linkerd);
    assert!(!s.skip_analysis());
    assert!(!s.is_suspended());

    let affinity: SessionAffinity = serde_json::from_value(json!({"cookieName": "c"})).unwrap();
    assert_eq!(affinity.max_age(), 86_400);
    let hook: CanaryWebhook =
        serde_json::from_value(json!({"name": "h", "url": "http://x/", "type": ""})).unwrap();
    assert_eq!(hook.hook_type(), HookType::Rollout);
    let metric: CanaryMetric = serde_json::from_value(json!({"name": "m"})).unwrap();
    assert_eq!(metric.no_data_policy(), NoDataPolicy::Fail);
}

#[test]
fn explicit_values_win_over_defaults() {
    let s = spec(json!({"interval": "5s", "threshold": 0, "maxWeight": 30,
                        "primaryReadyThreshold": 50}));
    let a = s.analysis().unwrap();
    // Raised to the controller's minimum.
    assert_eq!(
        a.interval(FLAGGER_MIN_INTERVAL),
        Ok(Duration::from_secs(10))
    );
    assert_eq!(
        a.interval(Duration::from_secs(1)),
        Ok(Duration::from_secs(5))
    );
    assert_eq!(a.threshold(), 1, "threshold <= 0 means 1");
    assert_eq!(a.max_weight(), 30);
    assert_eq!(a.primary_ready_threshold(), 50);
    assert!(
        spec(json!({"interval": "1h"}))
            .analysis()
            .unwrap()
            .interval(Duration::ZERO)
            .is_err()
    );
    // With stepWeights the last weight is the maximum, capped at 100.
    assert_eq!(
        spec(json!({"stepWeights": [1, 2, 10, 80]}))
            .analysis()
            .unwrap()
            .max_weight(),
        80
    );
    assert_eq!(
        spec(json!({"stepWeights": [1, 200]}))
            .analysis()
            .unwrap()
            .max_weight(),
        100
    );
}

#[test]
fn strategy_selection() {
    let ab = spec(json!({"iterations": 10, "match": [{"headers": {"x": {"exact": "y"}}}]}));
    assert_eq!(ab.strategy(), DeploymentStrategy::AbTesting);
    assert_eq!(
        spec(json!({"iterations": 10})).strategy(),
        DeploymentStrategy::BlueGreen
    );
    assert_eq!(
        spec(json!({"iterations": 10, "match": []})).strategy(),
        DeploymentStrategy::BlueGreen
    );
    assert_eq!(
        spec(json!({"stepWeight": 10})).strategy(),
        DeploymentStrategy::Canary
    );
    assert_eq!(
        spec(json!({"stepWeight": 10, "match": [{"headers": {"x": {"exact": "y"}}}]})).strategy(),
        DeploymentStrategy::Canary
    );
    assert_eq!(
        spec(json!({"iterations": 0})).strategy(),
        DeploymentStrategy::Canary
    );
    assert_eq!(DeploymentStrategy::AbTesting.as_str(), "ab-testing");
}

#[test]
fn the_deprecated_alias_is_used_when_analysis_is_absent() {
    let mut s = spec(json!({"stepWeight": 5}));
    let analysis = s.analysis.take();
    s.canary_analysis = analysis;
    assert_eq!(s.analysis().and_then(|a| a.step_weight), Some(5));
    s.canary_analysis = None;
    assert!(
        s.skip_analysis(),
        "no analysis at all means skip, as in Flagger"
    );
}

#[test]
fn knative_targets() {
    let mut s = spec(json!({}));
    assert!(!s.is_knative_target());
    s.target_ref = serde_json::from_value(
        json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "podinfo"}),
    )
    .unwrap();
    assert!(s.is_knative_target());
}
