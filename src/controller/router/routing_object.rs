//! Building blocks every routing object shares: the resource it is, and the metadata serin puts
//! on it (the apex custom metadata and the Flux opt-out annotations).

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject};
use serde_json::Value;

use super::{Input, ObjectKey};
use crate::workload::services::FLUX_OPT_OUT;

/// The resource of a namespaced routing kind.
pub fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The key of the object `name` of `resource` in the canary's namespace.
pub fn key(resource: ApiResource, input: &Input<'_>, name: &str) -> ObjectKey {
    ObjectKey {
        resource,
        namespace: Some(input.namespace.to_string()),
        name: name.to_string(),
    }
}

/// Which metadata an object carries besides the Flux opt-out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metadata {
    /// The apex's routing object: `service.apex` labels and annotations, as for the apex
    /// Service, so dashboards and policies that select on them keep working.
    Apex,
    /// A helper object (e.g. a DestinationRule): the Flux opt-out only.
    Plain,
}

/// A rendered object: `spec` and the metadata serin owns, nothing else, so server-side apply
/// leaves every other field to its manager.
pub fn object(
    key: &ObjectKey,
    input: &Input<'_>,
    metadata: Metadata,
    spec: Value,
) -> DynamicObject {
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    if metadata == Metadata::Apex
        && let Some(apex) = &input.canary.spec.service.apex
    {
        labels.extend(apex.labels.clone().unwrap_or_default());
        annotations.extend(apex.annotations.clone().unwrap_or_default());
    }
    // Flux would put the object back to its Git state at every sync; these keys tell it not to.
    for (k, v) in FLUX_OPT_OUT {
        annotations.insert(k.to_string(), v.to_string());
    }
    let mut object = DynamicObject::new(&key.name, &key.resource).data(serde_json::json!({
        "spec": spec
    }));
    object.metadata.namespace.clone_from(&key.namespace);
    if !labels.is_empty() {
        object.metadata.labels = Some(labels);
    }
    object.metadata.annotations = Some(annotations);
    object
}

/// Whether `host` names the Service `name` of namespace `ns` (short, namespaced or fully
/// qualified), as a mesh resolves it.
pub fn is_service_host(host: &str, name: &str, ns: &str) -> bool {
    host == name
        || host
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.strip_prefix(ns))
            .is_some_and(|rest| rest.is_empty() || rest == ".svc" || rest == ".svc.cluster.local")
}

/// A weight read from a live object: a non-negative integer, `default` when absent.
///
/// # Errors
/// The value is not an integer between 0 and 100 (`at` names where it was read).
pub fn weight(value: Option<&Value>, default: u32, at: &str) -> Result<u32, String> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .and_then(|w| u32::try_from(w).ok())
            .ok_or_else(|| format!("{at}: weight {v} is not a non-negative integer")),
    }
}

/// Match fields that hold conditions by name.
const BY_NAME: [&str; 4] = ["headers", "withoutHeaders", "queryParams", "sourceLabels"];

/// Match conditions of a route: each analysis condition on top of each base condition, so an
/// A/B or sticky route only ever narrows what the base route serves. Conditions by name
/// (headers, query parameters, source labels: maps in Istio, lists of `name`d entries in
/// Gateway API) add up, the analysis winning on the same name; any other field the analysis
/// condition sets replaces the base's. With no base, the analysis conditions.
///
/// (Flagger replaces the base's headers outright, which lets an A/B route catch requests the
/// base route would not serve.)
pub fn merge_matches(analysis: &[Value], base: &[Value]) -> Vec<Value> {
    if base.is_empty() {
        return analysis.to_vec();
    }
    let mut merged = Vec::with_capacity(analysis.len() * base.len());
    for a in analysis {
        for b in base {
            let mut m = b.clone();
            if let (Some(m), Some(a)) = (m.as_object_mut(), a.as_object()) {
                for (k, v) in a {
                    let by_name = BY_NAME.contains(&k.as_str());
                    let combined = match (m.get(k), v) {
                        (Some(Value::Object(base)), Value::Object(add)) if by_name => {
                            let mut both = base.clone();
                            both.extend(add.clone());
                            Value::Object(both)
                        }
                        (Some(Value::Array(base)), Value::Array(add)) if by_name => {
                            let name = |e: &Value| e.get("name").cloned();
                            let mut both: Vec<Value> = base
                                .iter()
                                .filter(|e| {
                                    !add.iter().any(|n| name(n).is_some() && name(n) == name(e))
                                })
                                .cloned()
                                .collect();
                            both.extend(add.iter().cloned());
                            Value::Array(both)
                        }
                        _ => v.clone(),
                    };
                    m.insert(k.clone(), combined);
                }
            }
            merged.push(m);
        }
    }
    merged
}

/// The path prefix a route serves: `service.match[0].uri.prefix`, else `/`.
pub fn path_prefix<'a>(input: &'a Input<'_>) -> &'a str {
    input
        .canary
        .spec
        .service
        .r#match
        .as_ref()
        .and_then(|m| m.first())
        .and_then(|m| m.uri.as_ref())
        .and_then(|u| u.prefix.as_deref())
        .unwrap_or("/")
}

/// For providers that match on request headers only: an `analysis.match` entry with any
/// other condition is an error naming it (`at`) rather than a condition silently dropped.
pub fn headers_only(
    at: &str,
    m: &crate::api::canary::HttpMatchRequest,
    provider: &str,
) -> Result<(), String> {
    let headers_only = crate::api::canary::HttpMatchRequest {
        name: m.name.clone(),
        headers: m.headers.clone(),
        ..Default::default()
    };
    if *m != headers_only {
        return Err(format!(
            "{at}: provider {provider} matches request headers only; remove the other conditions"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_hosts_in_every_spelling() {
        for host in ["a", "a.ns", "a.ns.svc", "a.ns.svc.cluster.local"] {
            assert!(is_service_host(host, "a", "ns"), "{host}");
        }
        for host in ["ab", "a.other", "a.ns.svc.example.com", "b.ns"] {
            assert!(!is_service_host(host, "a", "ns"), "{host}");
        }
    }

    #[test]
    fn analysis_conditions_narrow_every_base_condition() {
        // Istio: conditions by name are maps.
        let analysis = [
            json!({"headers": {"x": {"exact": "1"}, "y": {"regex": "3|4"}}}),
            json!({"queryParams": {"q": {"exact": "1"}}, "uri": {"exact": "/api/v2"}}),
        ];
        let base = [
            json!({"uri": {"prefix": "/api"}, "headers": {"y": {"exact": "2"}, "z": {"exact": "5"}}}),
        ];
        assert_eq!(
            merge_matches(&analysis, &base),
            vec![
                json!({"uri": {"prefix": "/api"},
                       "headers": {"y": {"regex": "3|4"}, "z": {"exact": "5"}, "x": {"exact": "1"}}}),
                json!({"uri": {"exact": "/api/v2"}, "headers": {"y": {"exact": "2"}, "z": {"exact": "5"}},
                       "queryParams": {"q": {"exact": "1"}}}),
            ]
        );
        assert_eq!(merge_matches(&analysis, &[]), analysis.to_vec());
        // Gateway API: lists of named entries.
        let analysis =
            [json!({"headers": [{"name": "x", "value": "1"}, {"name": "y", "value": "3"}]})];
        let base = [
            json!({"path": {"value": "/"}, "headers": [{"name": "y", "value": "2"}, {"name": "z", "value": "5"}]}),
        ];
        assert_eq!(
            merge_matches(&analysis, &base),
            vec![json!({"path": {"value": "/"}, "headers": [
                {"name": "z", "value": "5"}, {"name": "x", "value": "1"}, {"name": "y", "value": "3"}
            ]})]
        );
    }
}

/// Canaries and inputs for the routers' tests.
#[cfg(test)]
pub mod fixture {
    use serde_json::{Value, json};
    use serin_core::Routes;

    use crate::api::Canary;
    use crate::controller::router::{Input, Live, Options, Router};

    /// The podinfo Canary of Flagger's docs in namespace `test`, with `patch` merged into
    /// its spec (JSON merge patch).
    pub fn canary(patch: Value) -> Canary {
        let mut spec = json!({
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10, "maxWeight": 50}
        });
        merge(&mut spec, patch);
        serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": spec,
        }))
        .unwrap()
    }

    /// JSON merge patch (RFC 7386).
    fn merge(target: &mut Value, patch: Value) {
        match (target, patch) {
            (Value::Object(t), Value::Object(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(&k);
                    } else {
                        merge(t.entry(k).or_insert(Value::Null), v);
                    }
                }
            }
            (t, p) => *t = p,
        }
    }

    pub fn input<'a>(canary: &'a Canary, options: &'a Options, routes: Routes) -> Input<'a> {
        let apex = canary.spec.service_name();
        Input {
            canary,
            namespace: "test",
            apex,
            primary_service: format!("{apex}-primary"),
            canary_service: format!("{apex}-canary"),
            routes,
            ab_testing: false,
            canary_cookie: None,
            primary_cookie: None,
            options,
        }
    }

    pub fn split(canary: u32, mirrored: bool) -> Routes {
        Routes {
            mirrored,
            ..Routes::canary(canary)
        }
    }

    /// Asserts that `router` refuses the Canary of each case (`canary` of its patch, in an
    /// A/B run or not) with an error that starts with the field the case names.
    pub fn assert_names_field(
        router: &dyn Router,
        canary: fn(Value) -> Canary,
        cases: &[(Value, bool, &str)],
    ) {
        let options = Options::default();
        for (patch, ab_testing, field) in cases {
            let canary = canary(patch.clone());
            let mut input = input(&canary, &options, Routes::CANARY);
            input.ab_testing = *ab_testing;
            let err = router.render(&input, &Live::new()).unwrap_err();
            assert!(err.starts_with(&format!("{field}:")), "{patch}: {err}");
        }
    }
}
