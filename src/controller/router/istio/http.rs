//! The `http` routes of the VirtualService: the weighted route, and around it the A/B and
//! session-affinity routes.

use serde_json::{Map, Value, json};

use super::{destination, host_of};
use crate::api::canary::{HttpMatchRequest, StringMatch};
use crate::controller::router::Input;
use crate::controller::router::routing_object::merge_matches;
use crate::controller::router::session_affinity::{
    COOKIE_HEADER, Cookie, SET_COOKIE_HEADER, StickySpelling, sticky,
};

/// Flagger's name for the route that pins cookie holders, kept so a VirtualService Flagger
/// wrote reads the same.
const STICKY_ROUTE: &str = "sticky-route";
const STICKY_PRIMARY_ROUTE: &str = "sticky-primary-route";

/// The routes, in Istio's order of precedence (first match wins).
///
/// # Errors
/// A match condition Istio cannot express (the message names the field).
// Long on purpose: the routes in precedence order, each strategy's arm beside the others so
// the order is visible in one place.
pub fn routes(input: &Input<'_>) -> Result<Vec<Value>, String> {
    let service = &input.canary.spec.service;
    let base_match = matches(service.r#match.as_deref(), "spec.service.match")?;
    let base = base_route(input, &base_match);
    let weighted_to = |primary: u32, canary: u32| {
        json!([
            destination(input, &input.primary_service, primary),
            destination(input, &input.canary_service, canary),
        ])
    };
    let mut weighted = base.clone();
    weighted.insert(
        "route".into(),
        weighted_to(input.routes.primary, input.routes.canary),
    );
    if input.routes.mirrored {
        mirror(input, &mut weighted);
    }

    if input.ab_testing {
        // Requests matching analysis.match follow the split; all others stay on the primary.
        let analysis = matches(Some(input.required_ab_matches()?), "spec.analysis.match")?;
        weighted.insert(
            "match".into(),
            Value::Array(merge_matches(&analysis, &base_match)),
        );
        let mut default = base;
        default.insert(
            "route".into(),
            json!([destination(input, &input.primary_service, 100)]),
        );
        return Ok(vec![Value::Object(weighted), Value::Object(default)]);
    }

    let spelling = IstioSticky {
        base: &base,
        base_match: &base_match,
        to_canary: weighted_to(0, 100),
        to_primary: weighted_to(100, 0),
    };
    Ok(sticky(input, true).rules(weighted, &spelling))
}

/// Istio's spelling of sticky routes: a cookie is matched as a `cookie` header regex beside
/// `service.match`, and handed out by a response header on a destination.
struct IstioSticky<'a> {
    base: &'a Map<String, Value>,
    base_match: &'a [Value],
    to_canary: Value,
    to_primary: Value,
}

impl IstioSticky<'_> {
    fn cookie_match(&self, cookie: &Cookie) -> Value {
        Value::Array(merge_matches(
            &[json!({ "headers": { COOKIE_HEADER: { "regex": cookie.header_regex() } } })],
            self.base_match,
        ))
    }
}

impl StickySpelling for IstioSticky<'_> {
    fn pinned(
        &self,
        _weighted: &Map<String, Value>,
        cookie: &Cookie,
        to_canary: bool,
    ) -> Map<String, Value> {
        let (name, route) = if to_canary {
            (STICKY_ROUTE, &self.to_canary)
        } else {
            (STICKY_PRIMARY_ROUTE, &self.to_primary)
        };
        let mut pinned = named(name, self.base);
        pinned.insert("match".into(), self.cookie_match(cookie));
        pinned.insert("route".into(), route.clone());
        pinned
    }

    fn hand_out(&self, weighted: &mut Map<String, Value>, index: usize, set_cookie: String) {
        set_cookie_on_destination(weighted, index, set_cookie);
    }

    fn expiring(
        &self,
        weighted: &Map<String, Value>,
        cookie: &Cookie,
        set_cookie: String,
    ) -> Map<String, Value> {
        // Same routing as the weighted route, plus a response header that expires the
        // cookie, so holders stop being told apart once the run is over.
        let mut expire = named(STICKY_ROUTE, weighted);
        expire.insert("match".into(), self.cookie_match(cookie));
        add_response_header(&mut expire, SET_COOKIE_HEADER, set_cookie);
        expire
    }
}

/// A copy of `route` named `name` (first, so it reads first).
fn named(name: &str, route: &Map<String, Value>) -> Map<String, Value> {
    let mut named = Map::new();
    named.insert("name".into(), name.into());
    named.extend(route.clone());
    named
}

/// What every route shares: `service.match` and the request options.
fn base_route(input: &Input<'_>, base_match: &[Value]) -> Map<String, Value> {
    let service = &input.canary.spec.service;
    let mut route = Map::new();
    if !base_match.is_empty() {
        route.insert("match".into(), Value::Array(base_match.to_vec()));
    }
    if let Some(rewrite) = &service.rewrite {
        // `type` is Gateway API's; Istio's HTTPRewrite has only uri and authority.
        let mut r = Map::new();
        if let Some(uri) = rewrite.uri.as_deref().filter(|u| !u.is_empty()) {
            r.insert("uri".into(), uri.into());
        }
        if let Some(authority) = rewrite.authority.as_deref().filter(|a| !a.is_empty()) {
            r.insert("authority".into(), authority.into());
        }
        if !r.is_empty() {
            route.insert("rewrite".into(), Value::Object(r));
        }
    }
    if let Some(timeout) = service.timeout.as_deref().filter(|t| !t.is_empty()) {
        route.insert("timeout".into(), timeout.into());
    }
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value.filter(|v| v.as_object().is_some_and(|o| !o.is_empty())) {
            route.insert(name.into(), value);
        }
    };
    put("retries", to_value(&service.retries));
    put("corsPolicy", to_value(&service.cors_policy));
    put("headers", to_value(&service.headers));
    route
}

fn to_value<T: serde::Serialize>(value: &Option<T>) -> Option<Value> {
    value.as_ref().and_then(|v| serde_json::to_value(v).ok())
}

/// Copies of the primary's requests go to the canary; their responses are dropped.
fn mirror(input: &Input<'_>, route: &mut Map<String, Value>) {
    route.insert("mirror".into(), host_of(input, &input.canary_service));
    let weight = input
        .canary
        .spec
        .analysis()
        .and_then(|a| a.mirror_weight)
        .filter(|w| *w > 0);
    // Without mirrorWeight Istio mirrors everything.
    if let Some(weight) = weight {
        route.insert(
            "mirrorPercentage".into(),
            json!({ "value": f64::from(weight) }),
        );
    }
}

fn set_cookie_on_destination(route: &mut Map<String, Value>, index: usize, value: String) {
    if let Some(dest) = route
        .get_mut("route")
        .and_then(|r| r.get_mut(index))
        .and_then(Value::as_object_mut)
    {
        dest.insert(
            "headers".into(),
            json!({ "response": { "add": { SET_COOKIE_HEADER: value } } }),
        );
    }
}

fn add_response_header(route: &mut Map<String, Value>, name: &str, value: String) {
    let headers = route.entry("headers").or_insert_with(|| json!({}));
    if let Some(add) = headers
        .as_object_mut()
        .map(|h| h.entry("response").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
        .map(|r| r.entry("add").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
    {
        add.insert(name.into(), value.into());
    }
}

/// Match conditions as Istio's HTTPMatchRequest.
///
/// # Errors
/// A `suffix` string match: Flagger's type has it, Istio's does not.
fn matches(conditions: Option<&[HttpMatchRequest]>, field: &str) -> Result<Vec<Value>, String> {
    let conditions = conditions.unwrap_or_default();
    let mut out = Vec::with_capacity(conditions.len());
    for (i, m) in conditions.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let singles = [
            ("uri", &m.uri),
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ];
        for (name, s) in singles {
            check(s.as_ref(), &format!("{at}.{name}"))?;
        }
        let maps = [
            ("headers", &m.headers),
            ("withoutHeaders", &m.without_headers),
            ("queryParams", &m.query_params),
        ];
        for (name, map) in maps {
            for (k, s) in map.iter().flatten() {
                check(Some(s), &format!("{at}.{name}.{k}"))?;
            }
        }
        out.push(serde_json::to_value(m).map_err(|e| format!("{at}: {e}"))?);
    }
    Ok(out)
}

fn check(s: Option<&StringMatch>, at: &str) -> Result<(), String> {
    if s.is_some_and(|s| s.suffix.is_some()) {
        return Err(format!(
            "{at}: Istio has no suffix match; use regex (e.g. `.*{}`)",
            s.and_then(|s| s.suffix.as_deref()).unwrap_or_default()
        ));
    }
    Ok(())
}
