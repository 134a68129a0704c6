//! The canary Ingress that the Ingress-based providers (nginx, skipper) derive from the
//! user's Ingress: the same host, TLS and class, with only the routes to the apex Service.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject};
use serde_json::{Value, json};

use super::routing_object::Metadata;
use super::{Input, Live, ObjectKey, live, routing_object};
use crate::api::Provider;

/// `networking.k8s.io/v1` Ingress.
pub fn resource() -> ApiResource {
    routing_object::resource("networking.k8s.io", "v1", "Ingress", "ingresses")
}

/// The user's Ingress, from `spec.ingressRef`, which `provider` routes through.
pub fn user_ref<'a>(input: &'a Input<'_>, provider: Provider) -> Result<&'a str, String> {
    input
        .canary
        .spec
        .ingress_ref
        .as_ref()
        .map(|r| r.name.as_str())
        .ok_or_else(|| {
            format!(
                "spec.ingressRef: provider {provider} routes through an Ingress; set ingressRef \
                 to the Ingress that serves the apex Service"
            )
        })
}

/// `<ingressRef>-canary`, the Ingress serin owns.
/// The objects of an ingress router: the user's Ingress (read) and the canary Ingress.
pub fn objects(input: &Input<'_>, provider: Provider) -> Vec<ObjectKey> {
    let mut keys = Vec::new();
    if let Ok(name) = user_ref(input, provider) {
        keys.push(routing_object::key(resource(), input, name));
    }
    keys.push(routing_object::key(resource(), input, &canary_name(input)));
    keys
}

/// The user's Ingress (by `spec.ingressRef`), which the canary Ingress is derived from.
pub fn user<'i, 'l>(
    input: &'i Input<'_>,
    live: &'l Live,
    provider: Provider,
) -> Result<(&'i str, &'l DynamicObject), String> {
    let name = user_ref(input, provider)?;
    let user = live.get(&format!("Ingress/{name}")).ok_or_else(|| {
        format!(
            "spec.ingressRef: Ingress {}/{name} not found; create it or fix the name",
            input.namespace
        )
    })?;
    Ok((name, user))
}

pub fn canary_name(input: &Input<'_>) -> String {
    match &input.canary.spec.ingress_ref {
        Some(r) => format!("{}-canary", r.name),
        // Without ingressRef the controller still fetches this name, so that `render` is
        // reached and reports the missing field.
        None => format!("{}-canary", input.apex),
    }
}

/// Whether an Ingress backend is the Service `name`.
fn serves(backend: Option<&Value>, name: &str) -> bool {
    backend.and_then(|b| b.pointer("/service/name")) == Some(&json!(name))
}

/// A copy of `backend` pointed at the Service `to` (same port).
pub fn retarget(backend: &Value, to: &str) -> Value {
    let mut backend = backend.clone();
    backend["service"]["name"] = json!(to);
    backend
}

/// The user's Ingress `spec` reduced to what serves `apex`: every path whose backend is the
/// apex Service becomes the paths `paths` makes of it; other paths, and rules left without
/// paths, are dropped, so the canary Ingress never claims another Service's routes. A
/// default backend serving the apex is pointed at `default_to` when given, else dropped.
/// `None` when nothing in the Ingress serves the apex.
pub fn derive(
    spec: &Value,
    apex: &str,
    default_to: Option<&str>,
    paths: impl Fn(&Value) -> Vec<Value>,
) -> Option<Value> {
    let mut out = spec.clone();
    let object = out.as_object_mut()?;
    let mut found = false;
    match (object.remove("defaultBackend"), default_to) {
        (Some(backend), Some(to)) if serves(Some(&backend), apex) => {
            object.insert("defaultBackend".into(), retarget(&backend, to));
            found = true;
        }
        _ => {}
    }
    if let Some(rules) = object.get_mut("rules").and_then(Value::as_array_mut) {
        rules.retain_mut(|rule| {
            let Some(list) = rule
                .pointer_mut("/http/paths")
                .and_then(Value::as_array_mut)
            else {
                return false;
            };
            let kept: Vec<Value> = list
                .iter()
                .filter(|p| serves(p.get("backend"), apex))
                .flat_map(&paths)
                .collect();
            *list = kept;
            !list.is_empty()
        });
        found |= !rules.is_empty();
    }
    found.then_some(out)
}

/// The canary Ingress: `spec` and `annotations`, labelled as the user's Ingress is (but for
/// Flux's labels, which would make Flux prune it).
pub fn canary_object(
    input: &Input<'_>,
    user: &DynamicObject,
    spec: Value,
    annotations: BTreeMap<String, String>,
) -> DynamicObject {
    let mut labels = user.labels().clone();
    labels.retain(|k, _| !live::is_flux_key(k));
    let key = routing_object::key(resource(), input, &canary_name(input));
    let mut object = routing_object::object(&key, input, Metadata::Apex, spec);
    object.annotations_mut().extend(annotations);
    if !labels.is_empty() {
        object.labels_mut().extend(labels);
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_apex_routes() {
        let spec = json!({
            "defaultBackend": {"service": {"name": "other", "port": {"number": 80}}},
            "rules": [
                {"host": "a", "http": {"paths": [
                    {"path": "/", "backend": {"service": {"name": "app", "port": {"number": 80}}}},
                    {"path": "/x", "backend": {"service": {"name": "other", "port": {"number": 80}}}}
                ]}},
                {"host": "b", "http": {"paths": [
                    {"path": "/", "backend": {"service": {"name": "other", "port": {"number": 80}}}}
                ]}}
            ]
        });
        let derived = derive(&spec, "app", Some("app-canary"), |p| {
            vec![json!({"path": p["path"], "backend": retarget(&p["backend"], "app-canary")})]
        })
        .unwrap();
        assert_eq!(
            derived,
            json!({"rules": [{"host": "a", "http": {"paths": [
                {"path": "/", "backend": {"service": {"name": "app-canary", "port": {"number": 80}}}}
            ]}}]})
        );
        assert_eq!(derive(&spec, "nothing", None, |p| vec![p.clone()]), None);
    }
}
