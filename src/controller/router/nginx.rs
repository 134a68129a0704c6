//! NGINX ingress: a canary Ingress `<ingressRef>-canary`, a copy of the user's Ingress whose
//! backends point at `<apex>-canary`, that ingress-nginx reads as the canary of the user's
//! Ingress (same host and path) through `<prefix>/canary*` annotations. The user's Ingress is
//! only read, never changed.
//!
//! Weights: `<prefix>/canary-weight` (the primary gets the rest). A/B testing: one header
//! (`canary-by-header` with `-value` or `-pattern`) and/or one cookie (`canary-by-cookie`;
//! NGINX routes to the canary when that cookie's value is `always`), taken from
//! `analysis.match`. NGINX cannot split the matching requests, so any canary weight above 0
//! routes all of them to the canary.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::DynamicObject;
use serde_json::json;
use serin_core::Routes;

use super::capability::{self, Features};
use super::ingress;
use super::live;
use super::{Input, Live, ObjectKey, Router};
use crate::api::Provider;
use crate::api::canary::{HttpMatchRequest, StringMatch};

pub struct Nginx;

const FEATURES: Features = Features {
    ab_testing: true,
    mirroring: false,
    session_affinity: false,
};

/// The A/B annotations (without prefix) for `analysis.match`.
fn match_annotations(
    matches: &[HttpMatchRequest],
) -> Result<BTreeMap<&'static str, String>, String> {
    let mut out = BTreeMap::new();
    for (i, m) in matches.iter().enumerate() {
        let at = format!("spec.analysis.match[{i}]");
        let other = HttpMatchRequest {
            name: m.name.clone(),
            headers: m.headers.clone(),
            ..HttpMatchRequest::default()
        };
        if *m != other {
            return Err(format!(
                "{at}: provider nginx matches requests by one header and one cookie only; \
                 remove the other conditions"
            ));
        }
        for (header, cond) in m.headers.iter().flatten() {
            let at = format!("{at}.headers.{header}");
            let exact = |what: &str| -> Result<String, String> {
                match cond {
                    StringMatch {
                        exact: Some(v),
                        prefix: None,
                        suffix: None,
                        regex: None,
                    } => Ok(v.clone()),
                    _ => Err(format!(
                        "{at}: provider nginx matches {what} by exact value only"
                    )),
                }
            };
            if header.eq_ignore_ascii_case("cookie") {
                if out.contains_key("canary-by-cookie") {
                    return Err(format!("{at}: provider nginx matches one cookie only"));
                }
                out.insert("canary-by-cookie", exact("a cookie")?);
                continue;
            }
            if out.contains_key("canary-by-header") {
                return Err(format!("{at}: provider nginx matches one header only"));
            }
            out.insert("canary-by-header", header.clone());
            match cond {
                StringMatch {
                    regex: Some(pattern),
                    exact: None,
                    prefix: None,
                    suffix: None,
                } => {
                    out.insert("canary-by-header-pattern", pattern.clone());
                }
                _ => {
                    out.insert("canary-by-header-value", exact("headers")?);
                }
            }
        }
    }
    if out.is_empty() {
        return Err(
            "spec.analysis.match: A/B testing on nginx needs a header or cookie condition".into(),
        );
    }
    Ok(out)
}

impl Router for Nginx {
    fn provider(&self) -> Provider {
        Provider::Nginx
    }

    fn objects(&self, input: &Input<'_>) -> Vec<ObjectKey> {
        ingress::objects(input, Provider::Nginx)
    }

    fn render(&self, input: &Input<'_>, live: &Live) -> Result<Vec<DynamicObject>, String> {
        capability::check(Provider::Nginx, FEATURES, input)?;
        let (name, user) = ingress::user(input, live, Provider::Nginx)?;
        let spec = user.data.get("spec").cloned().unwrap_or(json!({}));
        let canary = input.canary_service.as_str();
        let spec = ingress::derive(&spec, input.apex, Some(canary), |path| {
            let mut path = path.clone();
            path["backend"] = ingress::retarget(&path["backend"], canary);
            vec![path]
        })
        .ok_or_else(|| {
            format!(
                "spec.ingressRef: Ingress {name} has no backend for Service {}; point a path \
                 of it at that Service",
                input.apex
            )
        })?;
        let prefix = input.options.nginx_annotations_prefix.as_str();
        // The user's annotations configure NGINX for this host (rewrites, auth, timeouts...):
        // the canary must behave the same, except for the canary settings serin owns.
        let mut annotations = live::copyable(user.annotations());
        annotations.retain(|k, _| !k.starts_with(&format!("{prefix}/canary")));
        annotations.insert(format!("{prefix}/canary"), "true".into());
        // Checked at every weight, so that a match NGINX cannot express is reported before
        // any traffic moves.
        let ab = input.ab_matches().map(match_annotations).transpose()?;
        match ab {
            Some(ab) if input.routes.canary > 0 => {
                for (k, v) in ab {
                    annotations.insert(format!("{prefix}/{k}"), v);
                }
            }
            _ => {
                annotations.insert(
                    format!("{prefix}/canary-weight"),
                    input.routes.canary.to_string(),
                );
            }
        }
        Ok(vec![ingress::canary_object(input, user, spec, annotations)])
    }

    fn read(&self, input: &Input<'_>, live: &Live) -> Result<Option<Routes>, String> {
        let name = ingress::canary_name(input);
        let Some(ingress) = live.get(&format!("Ingress/{name}")) else {
            return Ok(None);
        };
        let prefix = input.options.nginx_annotations_prefix.as_str();
        let annotations = ingress.annotations();
        let get = |k: &str| {
            annotations
                .get(&format!("{prefix}/{k}"))
                .map(String::as_str)
        };
        if get("canary") != Some("true") {
            return Ok(Some(Routes::PRIMARY));
        }
        if ["canary-by-header", "canary-by-cookie"]
            .iter()
            .any(|k| get(k).is_some())
        {
            return Ok(Some(Routes::CANARY));
        }
        let number = |k: &str, default: f64| -> Result<f64, String> {
            get(k).map_or(Ok(default), |v| {
                live::number(&json!(v))
                    .ok_or_else(|| format!("Ingress {name}: {prefix}/{k} is not a number: {v}"))
            })
        };
        // ingress-nginx weighs against `canary-weight-total` (default 100).
        let total = number("canary-weight-total", 100.0)?;
        let canary = number("canary-weight", 0.0)?.min(total);
        live::split_in(&format!("Ingress {name}"), total - canary, canary)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::api::Canary;
    use crate::controller::router::Options;
    use crate::controller::router::fixture::{
        ab_spec, any_split, canary, input, live, object, read_back, render_error,
    };

    fn user_ingress() -> DynamicObject {
        object(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {
                "name": "podinfo", "namespace": "test",
                "labels": {"app": "podinfo", "kustomize.toolkit.fluxcd.io/name": "apps"},
                "annotations": {
                    "nginx.ingress.kubernetes.io/proxy-body-size": "1m",
                    "nginx.ingress.kubernetes.io/canary-weight": "7",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}"
                }
            },
            "spec": {
                "ingressClassName": "nginx",
                "tls": [{"hosts": ["app.example.com"], "secretName": "tls"}],
                "rules": [{"host": "app.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": "podinfo", "port": {"number": 80}}}},
                    {"path": "/other", "pathType": "Prefix",
                     "backend": {"service": {"name": "other", "port": {"number": 80}}}}
                ]}}]
            }
        }))
    }

    fn with_ref(mut spec: serde_json::Value) -> Canary {
        spec["ingressRef"] =
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"});
        canary(spec)
    }

    fn render(
        canary: &Canary,
        routes: Routes,
        options: &Options,
    ) -> Result<Vec<DynamicObject>, String> {
        Nginx.render(&input(canary, routes, options), &live([user_ingress()]))
    }

    #[test]
    fn canary_ingress_carries_the_weight() {
        let canary = with_ref(json!({}));
        let objects = render(&canary, Routes::canary(30), &Options::default()).unwrap();
        insta::assert_yaml_snapshot!(objects);
    }

    #[test]
    fn ab_testing_routes_a_header_and_a_cookie() {
        let canary = with_ref(ab_spec());
        let objects = render(&canary, Routes::CANARY, &Options::default()).unwrap();
        insta::assert_yaml_snapshot!(objects);
    }

    #[test]
    fn ab_testing_by_header_pattern_with_a_custom_prefix() {
        let canary = with_ref(
            json!({"analysis": {"stepWeight": null, "iterations": 10, "match": [
                {"headers": {"user-agent": {"regex": ".*Firefox.*"}}}
            ]}}),
        );
        let options = Options {
            nginx_annotations_prefix: "custom.ingress.kubernetes.io".into(),
            ..Options::default()
        };
        let objects = render(&canary, Routes::CANARY, &options).unwrap();
        insta::assert_yaml_snapshot!(objects[0].annotations());
    }

    #[test]
    fn ab_testing_at_zero_resets_to_weight_zero() {
        let canary = with_ref(ab_spec());
        let options = Options::default();
        let objects = render(&canary, Routes::PRIMARY, &options).unwrap();
        let a = objects[0].annotations();
        assert_eq!(a["nginx.ingress.kubernetes.io/canary-weight"], "0");
        assert!(!a.contains_key("nginx.ingress.kubernetes.io/canary-by-header"));
        let read = Nginx.read(&input(&canary, Routes::PRIMARY, &options), &live(objects));
        assert_eq!(read.unwrap(), Some(Routes::PRIMARY));
    }

    #[test]
    fn errors_name_the_field() {
        let no_ref = canary(json!({}));
        let table: Vec<(Canary, Live, &str)> = vec![
            (
                no_ref,
                live([user_ingress()]),
                "spec.ingressRef: provider nginx",
            ),
            (
                with_ref(json!({})),
                Live::new(),
                "spec.ingressRef: Ingress test/podinfo not found",
            ),
            (
                with_ref(json!({"service": {"name": "elsewhere"}})),
                live([user_ingress()]),
                "spec.ingressRef: Ingress podinfo has no backend for Service",
            ),
            (
                with_ref(json!({"analysis": {"mirror": true}})),
                live([user_ingress()]),
                "spec.analysis.mirror",
            ),
            (
                with_ref(
                    json!({"analysis": {"stepWeight": null, "iterations": 3, "match": [
                    {"headers": {"x-a": {"prefix": "a"}}}]}}),
                ),
                live([user_ingress()]),
                "spec.analysis.match[0].headers.x-a: provider nginx matches headers by exact",
            ),
            (
                with_ref(
                    json!({"analysis": {"stepWeight": null, "iterations": 3, "match": [
                    {"headers": {"x-a": {"exact": "a"}}}, {"headers": {"x-b": {"exact": "b"}}}]}}),
                ),
                live([user_ingress()]),
                "spec.analysis.match[1].headers.x-b: provider nginx matches one header only",
            ),
            (
                with_ref(
                    json!({"analysis": {"stepWeight": null, "iterations": 3, "match": [
                    {"uri": {"prefix": "/api"}}]}}),
                ),
                live([user_ingress()]),
                "spec.analysis.match[0]: provider nginx matches requests by one header",
            ),
        ];
        for (canary, live, expected) in table {
            // Reported at weight 0 too: before any traffic moves.
            for routes in [Routes::PRIMARY, Routes::CANARY] {
                let err = render_error(&Nginx, &canary, routes, &live);
                assert!(err.starts_with(expected), "{err}");
            }
        }
    }

    #[test]
    fn objects_name_the_user_ingress_and_the_canary() {
        let canary = with_ref(json!({}));
        let options = Options::default();
        let keys = Nginx.objects(&input(&canary, Routes::PRIMARY, &options));
        let ids: Vec<_> = keys.iter().map(ObjectKey::id).collect();
        assert_eq!(ids, ["Ingress/podinfo", "Ingress/podinfo-canary"]);
    }

    proptest! {
        #[test]
        fn read_inverts_render(routes in any_split()) {
            let canary = with_ref(json!({}));
            prop_assert_eq!(read_back(&Nginx, &canary, routes, &live([user_ingress()])), Some(routes));
        }

        #[test]
        fn ab_read_inverts_render(canary_gets_all in any::<bool>()) {
            let routes = if canary_gets_all { Routes::CANARY } else { Routes::PRIMARY };
            let canary = with_ref(ab_spec());
            prop_assert_eq!(read_back(&Nginx, &canary, routes, &live([user_ingress()])), Some(routes));
        }
    }
}
