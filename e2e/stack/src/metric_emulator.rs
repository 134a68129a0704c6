//! What the metric-provider emulators (Datadog, New Relic, Graphite, InfluxDB, Dynatrace,
//! Splunk, CloudWatch, Stackdriver, and the External Metrics adapter) do alike: their state,
//! the faults that replace an answer (a 429 in the provider's own words, a proxy's 5xx page,
//! a hang), the units of their durations, and the arithmetic of their query languages on
//! keyed series (`a / b` point by point, series joined on their keys).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::Response;

use crate::provider_faults::{FaultMode, ProviderFault, ProviderFaults};
use crate::server::{Body, full};
use crate::traffic::world::World;

/// An emulator's state: the world it answers from, its faults, its section of the scenario.
pub struct Emulator<C> {
    pub world: Arc<World>,
    pub faults: Arc<ProviderFaults>,
    pub config: C,
}

/// The answer of a fault that replaces the provider's: `rate_limited` for a 429 (each
/// provider's own body and headers), a proxy's HTML page for a 5xx (`status`, default 503),
/// `timed_out` once a hang ends (never, until the stack stops). `None`: no such fault.
pub async fn transport_fault(
    fault: Option<&ProviderFault>,
    rate_limited: impl FnOnce() -> Response<Body>,
    timed_out: impl FnOnce() -> Response<Body>,
) -> Option<Response<Body>> {
    transport_fault_titled(fault, SERVER_ERROR, rate_limited, timed_out).await
}

/// As [`transport_fault`], the 5xx page titled `title` after its code (CloudWatch's and the
/// External Metrics adapter's say "Service Unavailable").
pub async fn transport_fault_titled(
    fault: Option<&ProviderFault>,
    title: &str,
    rate_limited: impl FnOnce() -> Response<Body>,
    timed_out: impl FnOnce() -> Response<Body>,
) -> Option<Response<Body>> {
    let f = fault?;
    match f.mode {
        FaultMode::RateLimit => Some(rate_limited()),
        FaultMode::Error => Some(proxy_page(f.status.unwrap_or(503), title)),
        FaultMode::Hang => {
            // The connection task is cancelled when the stack stops.
            tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
            Some(timed_out())
        }
        _ => None,
    }
}

const SERVER_ERROR: &str = "Server Error";

/// A 5xx as a proxy in front of the API sends it: an HTML page.
pub fn server_error(code: u16) -> Response<Body> {
    proxy_page(code, SERVER_ERROR)
}

/// A proxy's HTML page for `code`, titled `title` after the code.
fn proxy_page(code: u16, title: &str) -> Response<Body> {
    full(
        code,
        "text/html",
        format!("<html><body><h1>{code} {title}</h1></body></html>\n"),
    )
}

/// `response` with `headers` added.
pub fn with_headers(
    mut response: Response<Body>,
    headers: &[(&'static str, &str)],
) -> Response<Body> {
    for (name, value) in headers {
        if let Ok(v) = value.parse() {
            response.headers_mut().insert(*name, v);
        }
    }
    response
}

/// Seconds in a unit of the durations SignalFlow (Splunk) and MQL (Stackdriver) write
/// (`5m`, `1h`): `ms`, `s`, `m`, `h`, `d`, `w`.
pub fn duration_unit_secs(unit: &str) -> Option<f64> {
    Some(match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "w" => 604_800.0,
        _ => return None,
    })
}

/// Series by key (tags or dimensions), one value per bucket (`None`: null).
pub type Keyed<K> = BTreeMap<Vec<K>, Vec<Option<f64>>>;

/// An operand of a query's arithmetic: a number or series.
pub enum Operand<K> {
    Scalar(f64),
    Series(Keyed<K>),
}

/// `a op b` (`+`, `-`, `*`, anything else divides) on two points: null when either is, or
/// for a division by zero.
pub fn apply(op: char, a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    match op {
        '+' => Some(a + b),
        '-' => Some(a - b),
        '*' => Some(a * b),
        _ => (b != 0.0).then(|| a / b),
    }
}

/// Every point of every series through `f`.
pub fn map_points<K: Ord>(series: Keyed<K>, f: impl Fn(Option<f64>) -> Option<f64>) -> Keyed<K> {
    series
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().map(&f).collect()))
        .collect()
}

/// `a op b` point by point on two sets of series: a side of one series without a key
/// applies to every series of the other; otherwise series join on their keys.
pub fn join<K: Ord + Clone>(a: &Keyed<K>, op: char, b: &Keyed<K>) -> Keyed<K> {
    let single = |s: &Keyed<K>| s.len() == 1 && s.keys().next().is_some_and(Vec::is_empty);
    let mut out = Keyed::new();
    for (ka, va) in a {
        for (kb, vb) in b {
            if ka == kb || single(a) || single(b) {
                let key = if ka.is_empty() {
                    kb.clone()
                } else {
                    ka.clone()
                };
                let v = va.iter().zip(vb).map(|(x, y)| apply(op, *x, *y)).collect();
                out.insert(key, v);
            }
        }
    }
    out
}

/// `a op b` on two operands: a number applies to every point of the series of the other
/// side; two numbers give NaN where undefined.
pub fn combine<K: Ord + Clone>(a: Operand<K>, op: char, b: Operand<K>) -> Operand<K> {
    match (a, b) {
        (Operand::Scalar(x), Operand::Scalar(y)) => {
            Operand::Scalar(apply(op, Some(x), Some(y)).unwrap_or(f64::NAN))
        }
        (Operand::Scalar(x), Operand::Series(s)) => {
            Operand::Series(map_points(s, |v| apply(op, Some(x), v)))
        }
        (Operand::Series(s), Operand::Scalar(y)) => {
            Operand::Series(map_points(s, |v| apply(op, v, Some(y))))
        }
        (Operand::Series(a), Operand::Series(b)) => Operand::Series(join(&a, op, &b)),
    }
}
