//! The `gatewayapi:v1` and `gatewayapi:v1beta1` providers, as Flagger renders them: an HTTPRoute
//! `<apex>` attached to `service.gatewayRefs`, whose weighted rule splits between the
//! `<apex>-primary` and `<apex>-canary` Services.
//!
//! The route is only as good as its parents' acceptance: a Gateway that has not accepted the
//! current generation still routes by the previous one (or not at all), so [`Router::read`]
//! refuses to report a split until every parent has.

mod filters;
mod matches;
#[cfg(test)]
mod tests;

use kube::api::{ApiResource, DynamicObject};
use serde_json::{Map, Value, json};
use serin_core::Routes;

use super::routing_object::{Metadata, key, merge_matches, object, resource, weight};
use super::session_affinity::{COOKIE_HEADER, Cookie, SET_COOKIE_HEADER, StickySpelling, sticky};
use super::{Input, Live, ObjectKey, Router};
use crate::api::Provider;
use crate::api::canary::ParentReference;

/// An HTTPRoute router for one served version of the Gateway API.
pub struct GatewayApi {
    provider: Provider,
}

impl GatewayApi {
    pub const V1: GatewayApi = GatewayApi {
        provider: Provider::GatewayApiV1,
    };
    pub const V1BETA1: GatewayApi = GatewayApi {
        provider: Provider::GatewayApiV1beta1,
    };

    fn http_route(&self) -> ApiResource {
        let version = match self.provider {
            Provider::GatewayApiV1beta1 => "v1beta1",
            _ => "v1",
        };
        resource(GROUP, version, "HTTPRoute", "httproutes")
    }

    /// Flagger's v1beta1 router has no primary cookie; keep routes it would read the same.
    fn primary_cookies(&self) -> bool {
        self.provider != Provider::GatewayApiV1beta1
    }
}

const GROUP: &str = "gateway.networking.k8s.io";
/// The rule filter that copies requests to another backend.
const REQUEST_MIRROR: &str = "RequestMirror";
const RESPONSE_HEADER_MODIFIER: &str = "ResponseHeaderModifier";

impl Router for GatewayApi {
    fn provider(&self) -> Provider {
        self.provider
    }

    fn objects(&self, input: &Input<'_>) -> Vec<ObjectKey> {
        vec![key(self.http_route(), input, input.apex)]
    }

    fn render(&self, input: &Input<'_>, _live: &Live) -> Result<Vec<DynamicObject>, String> {
        let service = &input.canary.spec.service;
        let refs = gateway_refs(input)?;
        let mut spec = json!({
            "parentRefs": serde_json::to_value(refs).map_err(|e| format!("spec.service.gatewayRefs: {e}"))?,
        });
        if let Some(hosts) = service.hosts.as_ref().filter(|h| !h.is_empty()) {
            spec["hostnames"] = json!(hosts);
        }
        spec["rules"] = Value::Array(self.rules(input)?);
        let key = key(self.http_route(), input, input.apex);
        Ok(vec![object(&key, input, Metadata::Apex, spec)])
    }

    fn read(&self, input: &Input<'_>, live: &Live) -> Result<Option<Routes>, String> {
        let Some(route) = live.get(&key(self.http_route(), input, input.apex).id()) else {
            return Ok(None);
        };
        accepted(input, route)?;
        let rules = route
            .data
            .pointer("/spec/rules")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let backends = |rule: &Value| -> Vec<Value> {
            rule.get("backendRefs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let named = |b: &Value, name: &str| b.get("name").and_then(Value::as_str) == Some(name);
        // The last rule to both Services is the weighted one: sticky rules come before it,
        // and A/B's default rule after it goes to the primary only.
        let Some((index, main)) = rules.iter().enumerate().rev().find(|(_, r)| {
            let b = backends(r);
            b.iter().any(|b| named(b, &input.primary_service))
                && b.iter().any(|b| named(b, &input.canary_service))
        }) else {
            return Err(format!(
                "HTTPRoute {} has no rule with backends {} and {}",
                input.apex, input.primary_service, input.canary_service
            ));
        };
        let (mut primary, mut canary) = (0, 0);
        for (i, b) in backends(main).iter().enumerate() {
            let at = || {
                format!(
                    "HTTPRoute {} spec.rules[{index}].backendRefs[{i}]",
                    input.apex
                )
            };
            // Gateway API's default weight is 1.
            if named(b, &input.primary_service) {
                primary = weight(b.get("weight"), 1, &at())?;
            } else if named(b, &input.canary_service) {
                canary = weight(b.get("weight"), 1, &at())?;
            }
        }
        let mirrored = rules
            .iter()
            .filter_map(|r| r.get("filters").and_then(Value::as_array))
            .flatten()
            .any(|f| {
                f.get("type").and_then(Value::as_str) == Some(REQUEST_MIRROR)
                    && f.pointer("/requestMirror/backendRef/name")
                        .and_then(Value::as_str)
                        == Some(input.canary_service.as_str())
            });
        Ok(Some(Routes {
            primary,
            canary,
            mirrored,
        }))
    }
}

fn gateway_refs<'a>(input: &Input<'a>) -> Result<&'a [ParentReference], String> {
    input
        .canary
        .spec
        .service
        .gateway_refs
        .as_deref()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            "spec.service.gatewayRefs: the Gateway API providers need the Gateways the \
             HTTPRoute attaches to"
                .to_string()
        })
}

impl GatewayApi {
    /// The rules, most specific first (Gateway API prefers the match with more header
    /// conditions, so sticky and A/B rules win over the weighted one).
    // Long on purpose: every strategy's rules side by side, so their precedence is read in
    // one place (as Istio's `routes`).
    fn rules(&self, input: &Input<'_>) -> Result<Vec<Value>, String> {
        let service = &input.canary.spec.service;
        let mut base_matches = matches::map(service.r#match.as_deref(), "spec.service.match")?;
        if base_matches.is_empty() {
            base_matches.push(json!({ "path": { "type": "PathPrefix", "value": "/" } }));
        }
        let filters = filters::of(input)?;
        let base = |matches: Vec<Value>, backends: Vec<Value>| {
            let mut rule = Map::new();
            rule.insert("matches".into(), Value::Array(matches));
            if !filters.is_empty() {
                rule.insert("filters".into(), Value::Array(filters.clone()));
            }
            rule.insert("backendRefs".into(), Value::Array(backends));
            if let Some(timeouts) = timeouts(input) {
                rule.insert("timeouts".into(), timeouts);
            }
            rule
        };
        let backend = |name: &str, weight: u32| {
            json!({
                "group": "", "kind": "Service", "name": name,
                "port": service.port, "weight": weight,
            })
        };
        let split = |primary: u32, canary: u32| {
            vec![
                backend(&input.primary_service, primary),
                backend(&input.canary_service, canary),
            ]
        };
        let mut weighted = base(
            base_matches.clone(),
            split(input.routes.primary, input.routes.canary),
        );
        if input.routes.mirrored {
            // Blue/Green mirroring: copies of the primary's requests reach the new version,
            // whose answers are dropped.
            let mirror = json!({
                "type": REQUEST_MIRROR,
                "requestMirror": { "backendRef": {
                    "group": "", "kind": "Service", "name": input.canary_service,
                    "port": service.port,
                }},
            });
            push_filter(&mut weighted, mirror);
        }

        if input.ab_testing {
            let analysis = matches::map(Some(input.required_ab_matches()?), "spec.analysis.match")?;
            weighted.insert(
                "matches".into(),
                Value::Array(merge_matches(&analysis, &base_matches)),
            );
            let default = base(base_matches, vec![backend(&input.primary_service, 100)]);
            return Ok(vec![Value::Object(weighted), Value::Object(default)]);
        }

        let spelling = GatewaySticky {
            base_matches: &base_matches,
            to_canary: split(0, 100),
            to_primary: split(100, 0),
        };
        Ok(sticky(input, self.primary_cookies()).rules(weighted, &spelling))
    }
}

/// Gateway API's spelling of sticky rules: a cookie is matched as a `Cookie` header regex
/// beside `service.match`, and handed out by a response header filter on a backend.
struct GatewaySticky<'a> {
    base_matches: &'a [Value],
    to_canary: Vec<Value>,
    to_primary: Vec<Value>,
}

impl GatewaySticky<'_> {
    fn cookie_matches(&self, cookie: &Cookie) -> Value {
        let header = json!({ "headers": [{
            "type": "RegularExpression", "name": COOKIE_HEADER, "value": cookie.header_regex(),
        }]});
        Value::Array(merge_matches(&[header], self.base_matches))
    }
}

impl StickySpelling for GatewaySticky<'_> {
    fn pinned(
        &self,
        weighted: &Map<String, Value>,
        cookie: &Cookie,
        to_canary: bool,
    ) -> Map<String, Value> {
        let mut pinned = weighted.clone();
        pinned.insert("matches".into(), self.cookie_matches(cookie));
        let backends = if to_canary {
            &self.to_canary
        } else {
            &self.to_primary
        };
        pinned.insert("backendRefs".into(), Value::Array(backends.clone()));
        pinned
    }

    fn hand_out(&self, weighted: &mut Map<String, Value>, index: usize, set_cookie: String) {
        set_cookie_on_backend(weighted, index, set_cookie);
    }

    fn expiring(
        &self,
        weighted: &Map<String, Value>,
        cookie: &Cookie,
        set_cookie: String,
    ) -> Map<String, Value> {
        let mut expire = weighted.clone();
        expire.insert("matches".into(), self.cookie_matches(cookie));
        add_response_header(&mut expire, SET_COOKIE_HEADER, &set_cookie);
        expire
    }
}

fn timeouts(input: &Input<'_>) -> Option<Value> {
    let service = &input.canary.spec.service;
    let mut timeouts = Map::new();
    if let Some(t) = service.timeout.as_deref().filter(|t| !t.is_empty()) {
        timeouts.insert("request".into(), t.into());
    }
    if let Some(t) = service.backend_timeout.as_deref().filter(|t| !t.is_empty()) {
        timeouts.insert("backendRequest".into(), t.into());
    }
    (!timeouts.is_empty()).then_some(Value::Object(timeouts))
}

fn push_filter(rule: &mut Map<String, Value>, filter: Value) {
    if let Some(filters) = rule
        .entry("filters")
        .or_insert_with(|| json!([]))
        .as_array_mut()
    {
        filters.push(filter);
    }
}

/// Adds a response header to a rule, in its ResponseHeaderModifier when it has one: Gateway
/// API allows a filter type only once per rule.
fn add_response_header(rule: &mut Map<String, Value>, name: &str, value: &str) {
    let header = json!({ "name": name, "value": value });
    let existing = rule
        .get_mut("filters")
        .and_then(Value::as_array_mut)
        .and_then(|fs| {
            fs.iter_mut()
                .find(|f| f.get("type").and_then(Value::as_str) == Some(RESPONSE_HEADER_MODIFIER))
        })
        .and_then(|f| f.get_mut("responseHeaderModifier"))
        .and_then(Value::as_object_mut);
    match existing {
        Some(modifier) => {
            if let Some(add) = modifier
                .entry("add")
                .or_insert_with(|| json!([]))
                .as_array_mut()
            {
                add.push(header);
            }
        }
        None => push_filter(
            rule,
            json!({ "type": RESPONSE_HEADER_MODIFIER, "responseHeaderModifier": { "add": [header] } }),
        ),
    }
}

fn set_cookie_on_backend(rule: &mut Map<String, Value>, index: usize, value: String) {
    if let Some(backend) = rule
        .get_mut("backendRefs")
        .and_then(|b| b.get_mut(index))
        .and_then(Value::as_object_mut)
    {
        backend.insert(
            "filters".into(),
            json!([{
                "type": RESPONSE_HEADER_MODIFIER,
                "responseHeaderModifier": { "add": [{ "name": SET_COOKIE_HEADER, "value": value }] },
            }]),
        );
    }
}

/// Every parent the route reports on must have accepted its current generation. Parents that
/// have not reported yet are not waited for (as Flagger): a Gateway controller that never
/// writes status would otherwise block every canary.
///
/// # Errors
/// Names the first parent that has not accepted the route, and why.
fn accepted(input: &Input<'_>, route: &DynamicObject) -> Result<(), String> {
    let generation = route.metadata.generation;
    let parents = route
        .data
        .pointer("/status/parents")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for gateway in gateway_refs(input)? {
        let namespace = gateway.namespace.as_deref().unwrap_or(input.namespace);
        let reported = parents.iter().filter(|p| {
            let r = |f: &str| p.pointer(&format!("/parentRef/{f}"));
            r("name").and_then(Value::as_str) == Some(gateway.name.as_str())
                && r("namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(input.namespace)
                    == namespace
                && gateway
                    .section_name
                    .as_deref()
                    .is_none_or(|s| r("sectionName").and_then(Value::as_str) == Some(s))
                && gateway
                    .port
                    .is_none_or(|port| r("port").and_then(Value::as_i64) == Some(i64::from(port)))
        });
        for parent in reported {
            let refused = |why: String| {
                format!(
                    "HTTPRoute {} is not accepted by Gateway {namespace}/{}: {why}",
                    input.apex, gateway.name
                )
            };
            let condition = parent
                .get("conditions")
                .and_then(Value::as_array)
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c.get("type").and_then(Value::as_str) == Some("Accepted"))
                })
                .ok_or_else(|| refused("no Accepted condition yet".into()))?;
            let field = |f: &str| condition.get(f).and_then(Value::as_str).unwrap_or_default();
            if field("status") != "True" {
                return Err(refused(format!(
                    "Accepted is {} ({}: {})",
                    field("status"),
                    field("reason"),
                    field("message")
                )));
            }
            let observed = condition.get("observedGeneration").and_then(Value::as_i64);
            if let (Some(generation), Some(observed)) = (generation, observed)
                && observed < generation
            {
                return Err(refused(format!(
                    "it accepted generation {observed}, the route is at generation {generation}"
                )));
            }
        }
    }
    Ok(())
}
