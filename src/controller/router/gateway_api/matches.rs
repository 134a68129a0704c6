//! `service.match` and `analysis.match` (Istio-shaped HTTPMatchRequests, as in Flagger's API)
//! as Gateway API HTTPRouteMatches.
//!
//! Gateway API matches path, method, headers and query parameters; the Istio-only conditions
//! (scheme, authority, ports, source labels, ...) are left out, as Flagger does, so a Canary
//! written for Flagger keeps rendering.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::api::canary::{HttpMatchRequest, StringMatch};

/// # Errors
/// A condition Gateway API cannot express; the message names the field under `field`.
pub fn map(conditions: Option<&[HttpMatchRequest]>, field: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for (i, m) in conditions.unwrap_or_default().iter().enumerate() {
        let at = format!("{field}[{i}]");
        let mut rule = Map::new();
        if let Some(uri) = &m.uri {
            let (kind, value) = if let Some(r) = &uri.regex {
                ("RegularExpression", r)
            } else if let Some(e) = &uri.exact {
                ("Exact", e)
            } else if let Some(p) = &uri.prefix {
                ("PathPrefix", p)
            } else {
                return Err(format!(
                    "{at}.uri: Gateway API matches paths by exact, prefix or regex only"
                ));
            };
            rule.insert("path".into(), json!({ "type": kind, "value": value }));
        }
        if let Some(method) = &m.method {
            let exact = method.exact.as_ref().ok_or_else(|| {
                format!("{at}.method: Gateway API matches methods by exact value only")
            })?;
            rule.insert("method".into(), exact.as_str().into());
        }
        if let Some(headers) = by_name(m.headers.as_ref(), &format!("{at}.headers"))? {
            rule.insert("headers".into(), headers);
        }
        if let Some(params) = by_name(m.query_params.as_ref(), &format!("{at}.queryParams"))? {
            rule.insert("queryParams".into(), params);
        }
        if !rule.is_empty() {
            out.push(Value::Object(rule));
        }
    }
    Ok(out)
}

/// Header or query parameter conditions: exact or regex, in name order.
fn by_name(
    conditions: Option<&BTreeMap<String, StringMatch>>,
    at: &str,
) -> Result<Option<Value>, String> {
    let Some(conditions) = conditions.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(conditions.len());
    for (name, m) in conditions {
        let (kind, value) = if let Some(e) = &m.exact {
            ("Exact", e)
        } else if let Some(r) = &m.regex {
            ("RegularExpression", r)
        } else {
            return Err(format!(
                "{at}.{name}: Gateway API matches by exact value or regex only"
            ));
        };
        out.push(json!({ "type": kind, "name": name, "value": value }));
    }
    Ok(Some(Value::Array(out)))
}
