//! Building and reading the untyped routing objects the routers write.
//!
//! Routing kinds come from many CRDs whose Rust types serin does not link, so routers build
//! `DynamicObject`s from JSON and read weights back from JSON here.

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;
use serin_core::Routes;

use super::{Input, ORIGINAL_CONFIGURATION, ObjectKey};
use crate::workload::services::FLUX_OPT_OUT;

/// The API resource of a routing kind; the plural is given, never guessed.
pub fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// The key of a namespaced object in the Canary's namespace.
pub fn key(resource: &ApiResource, input: &Input<'_>, name: &str) -> ObjectKey {
    ObjectKey {
        resource: resource.clone(),
        namespace: Some(input.namespace.to_string()),
        name: name.to_string(),
    }
}

/// A routing object serin owns: apiVersion/kind, name, namespace (`None` for cluster-scoped
/// kinds), the apex labels and annotations of `service.apex`, and Flux's opt-out annotations
/// so that a Flux reconcile does not undo the weights serin sets.
pub fn owned(
    resource: &ApiResource,
    namespace: Option<&str>,
    name: &str,
    input: &Input<'_>,
    data: Value,
) -> DynamicObject {
    let mut object = DynamicObject::new(name, resource).data(data);
    object.metadata.namespace = namespace.map(str::to_string);
    let apex = input.canary.spec.service.apex.as_ref();
    let mut labels = apex.and_then(|a| a.labels.clone()).unwrap_or_default();
    let mut annotations = apex.and_then(|a| a.annotations.clone()).unwrap_or_default();
    labels.retain(|k, _| !is_flux_key(k));
    annotations.retain(|k, _| !is_flux_key(k));
    for (k, v) in FLUX_OPT_OUT {
        annotations.insert(k.to_string(), v.to_string());
    }
    if !labels.is_empty() {
        object.metadata.labels = Some(labels);
    }
    object.metadata.annotations = Some(annotations);
    object
}

/// Keys Flux sets on the objects it applies: never copied onto objects serin owns, where
/// they would make Flux adopt (and prune) them.
pub fn is_flux_key(key: &str) -> bool {
    key.contains("toolkit.fluxcd.io")
}

/// Annotations of a user object worth copying onto the object serin derives from it:
/// everything except Flux's, kubectl's last-applied state and serin's own bookkeeping.
pub fn copyable(annotations: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    annotations
        .iter()
        .filter(|(k, _)| {
            !is_flux_key(k)
                && k.as_str() != "kubectl.kubernetes.io/last-applied-configuration"
                && k.as_str() != ORIGINAL_CONFIGURATION
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A weight as a number: JSON integers, floats, and strings such as Kubernetes quantities
/// (`"50"`, `"500m"`), which SMI v1alpha1 uses.
pub fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let s = s.trim();
            match s.strip_suffix('m') {
                Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
                None => s.parse::<f64>().ok(),
            }
        }
        _ => None,
    }
    .filter(|n| n.is_finite() && *n >= 0.0)
}

/// The split two relative weights express, as percentages. Providers treat weights as
/// relative (Traefik, SMI quantities), and someone may have edited them by hand, so the
/// canary's share is rounded to a whole percent.
///
/// # Errors
/// Both weights are 0: no traffic is routed at all, which is not a split.
pub fn split(primary: f64, canary: f64) -> Result<Routes, String> {
    let total = primary + canary;
    if total <= 0.0 {
        return Err("both the primary and the canary weight are 0".into());
    }
    let share = (canary * 100.0 / total).round();
    // `share` is within 0..=100 by construction.
    Ok(Routes::canary(share.clamp(0.0, 100.0) as u32))
}
