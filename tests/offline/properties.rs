#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests over what users hand serin: manifests (any JSON where a Canary's fields
//! go), query templates and durations. Nothing panics, and validation agrees with the
//! controller: a Canary `serin check` accepts becomes a plan, so a spec the check passes can
//! never fail only at runtime.
//!
//! Bounded for CI by `PROPTEST_CASES` (default 256 per property here); a longer run:
//! `PROPTEST_CASES=20000 cargo test --release --test offline properties`.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use serin::analysis::template::{TemplateVars, render};
use serin::api::{Canary, Provider, parse_duration, validate};

/// Field names the validator and planner look at, so random objects reach their branches.
const KEYS: &[&str] = &[
    "interval",
    "threshold",
    "maxWeight",
    "stepWeight",
    "stepWeights",
    "stepWeightPromotion",
    "iterations",
    "metrics",
    "webhooks",
    "alerts",
    "name",
    "thresholdRange",
    "min",
    "max",
    "templateRef",
    "query",
    "noDataPolicy",
    "judge",
    "confidence",
    "minSamples",
    "tolerance",
    "step",
    "worse",
    "match",
    "headers",
    "exact",
    "regex",
    "mirror",
    "mirrorWeight",
    "url",
    "timeout",
    "type",
    "metadata",
    "sessionAffinity",
    "cookieName",
    "maxAge",
    "port",
    "targetPort",
    "gateways",
    "hosts",
    "kind",
    "apiVersion",
    "primaryReadyThreshold",
    "canaryReadyThreshold",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        prop_oneof![
            Just("1m".to_string()),
            Just("30s".to_string()),
            Just("-5s".to_string()),
            Just("{{ target }}".to_string()),
            ".{0,12}",
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

fn base_canary() -> Value {
    serin_testkit::canary("podinfo")
        .namespace("test")
        .provider("istio")
        .without("progressDeadlineSeconds")
        .analysis(
            json!({"interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
            "metrics": [{"name": "request-success-rate", "interval": "1m",
                         "thresholdRange": {"min": 99}}]}),
        )
        .build()
}

/// Where a random value is put into the base Canary.
const PLACES: &[&str] = &[
    "/spec",
    "/spec/analysis",
    "/spec/analysis/metrics",
    "/spec/analysis/metrics/0",
    "/spec/analysis/metrics/0/judge",
    "/spec/analysis/webhooks",
    "/spec/analysis/match",
    "/spec/service",
    "/spec/targetRef",
    "/spec/provider",
    "/spec/analysis/interval",
    "/spec/analysis/stepWeights",
    "/spec/analysis/sessionAffinity",
    "/metadata",
];

fn set(mut object: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match object.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(key.to_string(), value);
        }
        Some(Value::Array(items)) => {
            if let Some(slot) = key.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                *slot = value;
            }
        }
        _ => {}
    }
    object
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    /// Any value anywhere in a Canary: the check reports or accepts, and what it accepts
    /// becomes a plan.
    #[test]
    fn a_canary_the_check_accepts_becomes_a_plan(
        place in prop::sample::select(PLACES),
        value in json_value(),
        provider in prop::sample::select(Provider::all().collect::<Vec<_>>()),
    ) {
        let manifest = set(base_canary(), place, value);
        let Some(checked) = validate::object(&manifest, provider) else {
            return Ok(());
        };
        if checked.problems.is_empty() {
            let canary: Canary = serde_json::from_value(manifest.clone())
                .map_err(|e| TestCaseError::fail(format!("accepted but not a Canary: {e}: {manifest}")))?;
            let plan = serin::canary_plan::from_canary(
                &canary, provider, std::time::Duration::from_secs(1));
            prop_assert!(plan.is_ok(), "accepted by the check, refused by the planner: {:?}: {manifest}", plan.err());
        } else {
            prop_assert!(checked.problems.iter().all(|p| !p.path.is_empty()), "{checked:?}");
        }
    }

    /// Whole random objects of every flagger.app kind.
    #[test]
    fn any_flagger_object_is_checked_without_panicking(
        kind in prop::sample::select(vec!["Canary", "MetricTemplate", "AlertProvider"]),
        spec in json_value(),
        metadata in json_value(),
    ) {
        let mut object = Map::new();
        object.insert("apiVersion".into(), "flagger.app/v1beta1".into());
        object.insert("kind".into(), kind.into());
        object.insert("metadata".into(), metadata);
        object.insert("spec".into(), spec);
        let _ = validate::object(&Value::Object(object), Provider::Kubernetes);
    }

    /// Any query text renders or fails with an error; a text without braces comes back with
    /// its whitespace collapsed and nothing else changed.
    #[test]
    fn templates_render_or_fail_cleanly(text in "(\\{\\{ ?|\\}\\}| ?[a-z.]{0,9} ?|[^{}]{0,12}){0,8}") {
        let vars = TemplateVars {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo".into(),
            interval: "1m".into(),
            ..TemplateVars::default()
        };
        let rendered = render(&text, &vars);
        if !text.contains('{') && !text.contains('}') {
            let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
            prop_assert_eq!(rendered.ok(), Some(collapsed));
        }
    }

    /// Any duration text parses or is refused with a message that quotes it.
    #[test]
    fn durations_parse_or_name_the_value(text in "[-+0-9.a-zµ]{0,12}") {
        if let Err(e) = parse_duration(&text) {
            prop_assert!(e.to_string().contains(&format!("`{text}`")), "{e}");
        }
    }
}
