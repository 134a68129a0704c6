//! The rule filters from the Canary's service options: header modifiers, URL rewrite, static
//! mirrors and CORS, in Flagger's order.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::api::canary::HeaderOperations;
use crate::controller::router::Input;

/// # Errors
/// An option Gateway API cannot express; the message names the field.
pub fn of(input: &Input<'_>) -> Result<Vec<Value>, String> {
    let service = &input.canary.spec.service;
    let mut filters = Vec::new();
    if let Some(headers) = &service.headers {
        let modifiers = [
            (
                "RequestHeaderModifier",
                "requestHeaderModifier",
                &headers.request,
            ),
            (
                "ResponseHeaderModifier",
                "responseHeaderModifier",
                &headers.response,
            ),
        ];
        for (kind, key, ops) in modifiers {
            if let Some(modifier) = ops.as_ref().and_then(header_modifier) {
                filters.push(json!({ "type": kind, key: modifier }));
            }
        }
    }
    if let Some(rewrite) = &service.rewrite {
        let mut url = Map::new();
        if let Some(authority) = rewrite.authority.as_deref().filter(|a| !a.is_empty()) {
            url.insert("hostname".into(), authority.into());
        }
        if let Some(uri) = rewrite.uri.as_deref().filter(|u| !u.is_empty()) {
            let path = if rewrite.type_.as_deref() == Some("ReplacePrefixMatch") {
                json!({ "type": "ReplacePrefixMatch", "replacePrefixMatch": uri })
            } else {
                json!({ "type": "ReplaceFullPath", "replaceFullPath": uri })
            };
            url.insert("path".into(), path);
        }
        if !url.is_empty() {
            filters.push(json!({ "type": "URLRewrite", "urlRewrite": url }));
        }
    }
    for (i, mirror) in service.mirror.iter().flatten().enumerate() {
        let backend = serde_json::to_value(&mirror.backend_ref)
            .map_err(|e| format!("spec.service.mirror[{i}].backendRef: {e}"))?;
        filters
            .push(json!({ "type": "RequestMirror", "requestMirror": { "backendRef": backend } }));
    }
    if let Some(cors) = &service.cors_policy {
        let mut c = Map::new();
        let lists = [
            ("allowOrigins", &cors.allow_origin),
            ("allowMethods", &cors.allow_methods),
            ("allowHeaders", &cors.allow_headers),
            ("exposeHeaders", &cors.expose_headers),
        ];
        for (key, list) in lists {
            if let Some(list) = list.as_ref().filter(|l| !l.is_empty()) {
                c.insert(key.into(), json!(list));
            }
        }
        if let Some(credentials) = cors.allow_credentials {
            c.insert("allowCredentials".into(), credentials.into());
        }
        if let Some(max_age) = cors.max_age.as_deref().filter(|m| !m.is_empty()) {
            c.insert("maxAge".into(), seconds(max_age)?.into());
        }
        if !c.is_empty() {
            filters.push(json!({ "type": "CORS", "cors": c }));
        }
    }
    Ok(filters)
}

/// Add and set as name/value lists sorted by name (stable renders, no churn), remove as given.
fn header_modifier(ops: &HeaderOperations) -> Option<Value> {
    let pairs = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(name, value)| json!({ "name": name, "value": value }))
            .collect::<Vec<_>>()
    };
    let mut modifier = Map::new();
    if let Some(set) = ops.set.as_ref().filter(|s| !s.is_empty()) {
        modifier.insert("set".into(), pairs(set).into());
    }
    if let Some(add) = ops.add.as_ref().filter(|a| !a.is_empty()) {
        modifier.insert("add".into(), pairs(add).into());
    }
    if let Some(remove) = ops.remove.as_ref().filter(|r| !r.is_empty()) {
        modifier.insert("remove".into(), json!(remove));
    }
    (!modifier.is_empty()).then_some(Value::Object(modifier))
}

/// `corsPolicy.maxAge` (an Istio duration such as `24h`) in whole seconds, as Gateway API's
/// CORS filter takes it.
fn seconds(duration: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "spec.service.corsPolicy.maxAge: `{duration}` is not a duration in whole seconds, \
             minutes or hours (e.g. 86400s, 24h)"
        )
    };
    let (digits, unit) = match duration.as_bytes().last() {
        Some(b's') => (&duration[..duration.len() - 1], 1),
        Some(b'm') => (&duration[..duration.len() - 1], 60),
        Some(b'h') => (&duration[..duration.len() - 1], 3600),
        _ => return Err(invalid()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(invalid)
}
