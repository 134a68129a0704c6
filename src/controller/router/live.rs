//! Reading live objects that others wrote: the weights a routing object expresses (as JSON,
//! since serin links no provider's Rust types), and the metadata of a user's object worth
//! copying onto the object serin derives from it.

use std::collections::BTreeMap;

use serde_json::Value;
use serin_core::Routes;

use super::{Input, ORIGINAL_CONFIGURATION};

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

/// The routes `object` (named in errors) holds, from each Service's weight in it.
///
/// # Errors
/// As [`split`], with the object named.
pub fn routes_read(
    input: &Input<'_>,
    object: &str,
    weight_of: impl Fn(&str) -> f64,
) -> Result<Option<Routes>, String> {
    let primary = weight_of(&input.primary_service);
    split_in(object, primary, weight_of(&input.canary_service))
}

/// The routes `object` (named in errors) holds, from the primary's and the canary's weights.
///
/// # Errors
/// As [`split`], with the object named.
pub fn split_in(object: &str, primary: f64, canary: f64) -> Result<Option<Routes>, String> {
    split(primary, canary)
        .map(Some)
        .map_err(|e| format!("{object}: {e}"))
}
