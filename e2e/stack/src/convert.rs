//! Field renames between types that share storage. events.k8s.io/v1 Events are stored as
//! core/v1 Events (as the API server does), so `kubectl get events` and `kubectl describe`
//! show what kube-rs's `Recorder` writes. Only top-level fields differ.

use crate::registry::ResourceType;
use serde_json::Value;

/// (events.k8s.io/v1 name, core/v1 name)
const EVENTS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedCount", "count"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedSource", "source"),
    ("reportingController", "reportingComponent"),
];

fn renames(rt: &ResourceType) -> Option<&'static [(&'static str, &'static str)]> {
    (rt.group == "events.k8s.io" && rt.plural == "events").then_some(EVENTS)
}

fn rename(v: &mut Value, pairs: &[(&str, &str)], inbound: bool) {
    let Some(m) = v.as_object_mut() else { return };
    for (api, stored) in pairs {
        let (from, to) = if inbound {
            (api, stored)
        } else {
            (stored, api)
        };
        if let Some(x) = m.remove(*from) {
            m.insert((*to).to_string(), x);
        }
    }
}

/// A request body (object, merge/strategic/apply patch) into the stored shape.
pub fn inbound(rt: &ResourceType, mut v: Value) -> Value {
    if let Some(pairs) = renames(rt) {
        rename(&mut v, pairs, true);
    }
    v
}

/// A JSON patch's paths into the stored shape.
pub fn inbound_json_patch(rt: &ResourceType, mut ops: Value) -> Value {
    let Some(pairs) = renames(rt) else { return ops };
    for op in ops.as_array_mut().into_iter().flatten() {
        for k in ["path", "from"] {
            if let Some(p) = op.get(k).and_then(Value::as_str).map(String::from) {
                op[k] = Value::String(rename_path(&p, pairs, '/'));
            }
        }
    }
    ops
}

/// A field selector's keys into the stored shape.
pub fn inbound_field_selector(rt: &ResourceType, s: &str) -> String {
    let Some(pairs) = renames(rt) else {
        return s.to_string();
    };
    s.split(',')
        .map(|part| rename_path(part, pairs, '.'))
        .collect::<Vec<_>>()
        .join(",")
}

fn rename_path(p: &str, pairs: &[(&str, &str)], sep: char) -> String {
    let lead = if sep == '/' { "/" } else { "" };
    let body = p.strip_prefix(lead).unwrap_or(p);
    let (first, rest) = match body.find([sep, '=', '!']) {
        Some(i) => (&body[..i], &body[i..]),
        None => (body, ""),
    };
    match pairs.iter().find(|(api, _)| *api == first) {
        Some((_, stored)) => format!("{lead}{stored}{rest}"),
        None => p.to_string(),
    }
}

/// A stored object as the requested type shows it.
pub fn outbound(rt: &ResourceType, v: &Value) -> Option<Value> {
    let pairs = renames(rt)?;
    let mut out = v.clone();
    rename(&mut out, pairs, false);
    Some(out)
}
