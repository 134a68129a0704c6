//! Test fixtures shared by the routers' tests: a Canary, the `Input` built from it the way
//! the controller builds it, and live objects keyed as the controller keys them.

use kube::ResourceExt;
use kube::api::DynamicObject;
use proptest::prelude::*;
use serde_json::{Value, json};
use serin_core::Routes;

use super::{Input, Live, Options, Router};
use crate::api::{Canary, DeploymentStrategy};

/// A Canary `podinfo` in namespace `test`, with `spec` merged over a minimal spec (objects
/// merge key by key, anything else replaces).
pub fn canary(spec: Value) -> Canary {
    let mut base = json!({
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10}
    });
    merge(&mut base, spec);
    serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": base,
    }))
    .unwrap()
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p,
    }
}

/// The A/B analysis of the docs: a header and a cookie.
pub fn ab_spec() -> Value {
    json!({"analysis": {"stepWeight": null, "iterations": 10, "match": [
        {"headers": {"x-canary": {"exact": "insider"}}},
        {"headers": {"cookie": {"exact": "canary"}}}
    ]}})
}

/// The Input the controller would build for `canary` and `routes`.
pub fn input<'a>(canary: &'a Canary, routes: Routes, options: &'a Options) -> Input<'a> {
    Input {
        canary,
        namespace: "test",
        apex: canary.spec.service_name(),
        primary_service: format!("{}-primary", canary.spec.service_name()),
        canary_service: format!("{}-canary", canary.spec.service_name()),
        routes,
        ab_testing: canary.spec.strategy() == DeploymentStrategy::AbTesting,
        canary_cookie: None,
        primary_cookie: None,
        options,
    }
}

/// Live objects keyed like the controller keys them (`kind/name`).
pub fn live(objects: impl IntoIterator<Item = DynamicObject>) -> Live {
    objects
        .into_iter()
        .map(|o| {
            let kind = o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
            (format!("{kind}/{}", o.name_any()), o)
        })
        .collect()
}

/// A live object from its full JSON (apiVersion, kind, metadata, ...).
pub fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

/// Any split a run can ask for: primary + canary = 100, not mirrored.
pub fn any_split() -> impl Strategy<Value = Routes> {
    (0u32..=100).prop_map(Routes::canary)
}

/// What `router` reads back from its own render of `canary` at `routes` over the `user`'s
/// objects: every router must read back what it rendered.
pub fn read_back(
    router: &dyn Router,
    canary: &Canary,
    routes: Routes,
    user: &Live,
) -> Option<Routes> {
    let options = Options::default();
    let input = input(canary, routes, &options);
    let objects = router.render(&input, user).unwrap();
    router.read(&input, &live(objects)).unwrap()
}

/// Asserts that `router` refuses the Canary of each `(spec, expected)` of `table` at the
/// canary's full weight with an error that starts with `expected`.
pub fn assert_render_errors(router: &dyn Router, table: &[(Value, &str)]) {
    for (spec, expected) in table {
        let canary = canary(spec.clone());
        let err = render_error(router, &canary, Routes::CANARY, &Live::new());
        assert!(err.starts_with(expected), "{err}");
    }
}

/// The error of `router`'s render of `canary` at `routes` over `live` objects.
pub fn render_error(router: &dyn Router, canary: &Canary, routes: Routes, live: &Live) -> String {
    let options = Options::default();
    router
        .render(&input(canary, routes, &options), live)
        .unwrap_err()
}
