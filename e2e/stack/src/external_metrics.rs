//! An External Metrics API adapter (what KEDA, the Datadog cluster agent or
//! prometheus-adapter serve for HPAs, `external.metrics.k8s.io/v1beta1`), answering from the
//! traffic world on its own port, over plain HTTP, as an adapter reached directly (not
//! through an API server's APIService).
//!
//! `GET /apis/external.metrics.k8s.io/v1beta1/namespaces/<ns>/<metric>[?labelSelector=...]`
//! with `Authorization: Bearer <token>` (the scenario's `externalMetrics.token`, default
//! `serin-external-metrics-token`; wrong or missing: 401 with a `Status`) answers an
//! `ExternalMetricValueList`: one item per workload of `<ns>` that answered matching requests
//! in the last `externalMetrics.window` (default `1m`), sorted by workload name, each with
//! `metricName`, `metricLabels` (`workload`), `timestamp`, `window` (seconds) and `value` as a
//! Kubernetes quantity (`99500m`); none: `items: []`. Metrics are the world's measures
//! (`traffic::measures`: `request-success-rate`), over the requests' labels `workload` and
//! `service`; an unknown metric is a 404 `Status`, a label selector the API would refuse a
//! 400.
//!
//! Faults (`provider_faults`, admin `/externalmetrics/fault`): `empty` (`items: []`),
//! `several-series` (a second item per workload, its value doubled), `null-points` (every
//! `value` null), `rate-limit` (429 `Status`, `Retry-After: 1`), `error` (`status`, default
//! 503, with an HTML body), `hang` (never answers); `graphql-error` has no effect.

use crate::metric_emulator::{self, Emulator, with_headers};
use crate::provider_faults::{FaultMode, ProviderFault};
use crate::scenario::opt_duration_str;
use crate::selector::LabelSelector;
use crate::server::{Body, json_response};
use crate::traffic::measures::{self, Measure};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

const PREFIX: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/";

/// The scenario's `externalMetrics` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMetricsConfig {
    /// The bearer token requests need.
    #[serde(default = "default_token")]
    pub token: String,
    /// The window each value covers (default 1 m).
    #[serde(default, with = "opt_duration_str")]
    pub window: Option<Duration>,
    /// A fault active from the start.
    #[serde(default)]
    pub fault: Option<ProviderFault>,
}

impl Default for ExternalMetricsConfig {
    fn default() -> Self {
        ExternalMetricsConfig {
            token: default_token(),
            window: None,
            fault: None,
        }
    }
}

fn default_token() -> String {
    "serin-external-metrics-token".into()
}

pub type ExternalMetrics = Emulator<ExternalMetricsConfig>;

/// A Kubernetes `Status` answer.
fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}),
    )
}

pub async fn handle(
    em: Arc<ExternalMetrics>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let bearer = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(em.config.token.as_str()) {
        return Ok(status(401, "Unauthorized", "Unauthorized"));
    }
    let target = req
        .uri()
        .path()
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('/'))
        .filter(|(_, metric)| !metric.is_empty() && !metric.contains('/'))
        .map(|(ns, metric)| (decode(ns), decode(metric)));
    let Some((namespace, metric)) = target.filter(|_| req.method() == hyper::Method::GET) else {
        return Ok(status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    };
    let fault = em.faults.take();
    if let Some(answer) = transport_fault(fault.as_ref()).await {
        return Ok(answer);
    }
    let selector = form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let selector = match LabelSelector::parse(&selector) {
        Ok(s) => s,
        Err(e) => {
            return Ok(status(
                400,
                "BadRequest",
                &format!("unable to parse labelSelector: {e}"),
            ));
        }
    };
    let Some(measure) = Measure::parse(&metric) else {
        return Ok(status(
            404,
            "NotFound",
            &format!(
                "no metric {metric} in namespace {namespace} (this adapter serves {})",
                Measure::names()
            ),
        ));
    };
    let window = em.config.window.unwrap_or(Duration::from_secs(60));
    let values = measures::per_workload(&em.world, &namespace, measure, &selector, window);
    let items = items(&metric, values, window, fault.map(|f| f.mode));
    Ok(json_response(
        200,
        &json!({"kind": "ExternalMetricValueList", "apiVersion": "external.metrics.k8s.io/v1beta1",
            "metadata": {}, "items": items}),
    ))
}

fn items(
    metric: &str,
    values: std::collections::BTreeMap<String, f64>,
    window: Duration,
    fault: Option<FaultMode>,
) -> Vec<Value> {
    if fault == Some(FaultMode::Empty) {
        return Vec::new();
    }
    let timestamp = crate::clock::timestamp();
    let item = |workload: &str, value: Value| {
        json!({"metricName": metric, "metricLabels": {"workload": workload},
            "timestamp": timestamp, "window": window.as_secs(), "value": value})
    };
    let mut out = Vec::new();
    for (workload, value) in values {
        let shown = match fault {
            Some(FaultMode::NullPoints) => Value::Null,
            _ => json!(quantity(value)),
        };
        out.push(item(&workload, shown));
        if fault == Some(FaultMode::SeveralSeries) {
            out.push(item(&workload, json!(quantity(value * 2.0))));
        }
    }
    out
}

/// A value as the API server writes a quantity: whole numbers plain, others in thousandths
/// (`99500m`).
pub fn quantity(value: f64) -> String {
    let milli = (value * 1000.0).round();
    if milli % 1000.0 == 0.0 {
        format!("{}", (milli / 1000.0) as i64)
    } else {
        format!("{}m", milli as i64)
    }
}

async fn transport_fault(fault: Option<&ProviderFault>) -> Option<Response<Body>> {
    metric_emulator::transport_fault_titled(
        fault,
        "Service Unavailable",
        || {
            let limited = status(
                429,
                "TooManyRequests",
                "too many requests, please try again later",
            );
            with_headers(limited, &[("retry-after", "1")])
        },
        || status(504, "Timeout", "gateway timeout"),
    )
    .await
}

/// A path segment, `%XX`-decoded (undecodable bytes kept as they are).
fn decode(segment: &str) -> String {
    let mut out = Vec::new();
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_as_the_api_server_writes_quantities() {
        assert_eq!(quantity(100.0), "100");
        assert_eq!(quantity(99.5), "99500m");
        assert_eq!(quantity(70.0000001), "70");
        assert_eq!(quantity(0.25), "250m");
        assert_eq!(quantity(0.0), "0");
    }

    #[test]
    fn path_segments_are_decoded() {
        assert_eq!(decode("a%20b"), "a b");
        assert_eq!(decode("datadogmetric@ns:m"), "datadogmetric@ns:m");
        assert_eq!(decode("bad%zz"), "bad%zz");
    }
}
