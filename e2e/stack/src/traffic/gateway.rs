//! Plays the Gateway API implementation's part that controllers depend on: every HTTPRoute
//! gets `status.parents[]` entries (one per `parentRef`) with `Accepted` and `ResolvedRefs`
//! True at the route's current generation, as a gateway controller would write them. Flagger
//! refuses to read routes whose parents are not Accepted at the current generation.

use crate::store::Store;
use crate::traffic::routing::HTTP_ROUTES;
use serde_json::{Value, json};

/// The controller name written into `status.parents[].controllerName`.
pub const CONTROLLER: &str = "serin-stack.local/gateway-controller";

/// Whether a route's status already accepts every parentRef at its generation.
pub(crate) fn accepted(route: &Value) -> bool {
    let generation = route
        .pointer("/metadata/generation")
        .and_then(Value::as_i64);
    let refs = route
        .pointer("/spec/parentRefs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let parents = route
        .pointer("/status/parents")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    parents.len() == refs.len()
        && refs.iter().all(|r| {
            parents.iter().any(|p| {
                p.get("parentRef") == Some(r)
                    && p.get("conditions")
                        .and_then(Value::as_array)
                        .is_some_and(|cs| {
                            cs.iter().any(|c| {
                                c.get("type").and_then(Value::as_str) == Some("Accepted")
                                    && c.get("status").and_then(Value::as_str) == Some("True")
                                    && c.get("observedGeneration").and_then(Value::as_i64)
                                        == generation
                            })
                        })
            })
        })
}

pub(crate) fn status(route: &Value) -> Value {
    let generation = route
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let now = crate::crud::now();
    let condition = |type_: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": "True", "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": now})
    };
    let parents: Vec<Value> = route
        .pointer("/spec/parentRefs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            json!({"parentRef": r, "controllerName": CONTROLLER, "conditions": [
                condition("Accepted", "Accepted", "Route was valid"),
                condition("ResolvedRefs", "ResolvedRefs", "All references resolved"),
            ]})
        })
        .collect();
    json!({"parents": parents})
}

/// Accepts every HTTPRoute (of a type with a status subresource) not accepted yet.
pub fn accept_routes(store: &Store) {
    let pending: Vec<(std::sync::Arc<crate::registry::ResourceType>, Value)> = {
        let inner = store.lock();
        let Some(rt) = inner.registry.types.get(HTTP_ROUTES).cloned() else {
            return;
        };
        if !rt.status {
            return;
        }
        inner
            .iter_ns(HTTP_ROUTES, None)
            .filter(|r| r.pointer("/metadata/deletionTimestamp").is_none() && !accepted(r))
            .map(|r| (rt.clone(), (**r).clone()))
            .collect()
    };
    for (rt, route) in pending {
        let (ns, name) = crate::store::ns_name(&route);
        // A conflict or a deleted route: the next tick tries again.
        let _ = store.write_status(&rt, &ns, &name, status(&route), "serin-stack-gateway");
    }
}
