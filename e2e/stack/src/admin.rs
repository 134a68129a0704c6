//! The admin server: fault control and metrics, on its own port.
//!
//! - `GET /metrics`: Prometheus text (`serin_stack_requests_total{verb,resource,code}`, ...)
//! - `GET /faults`: the active rules (JSON)
//! - `POST /faults`: adds rules; body YAML or JSON, a list of rules or one rule, in the
//!   scenario file's `faults` format
//! - `DELETE /faults`: removes all rules and the watch-drop setting
//! - `POST /watches/drop`: closes every open watch now; `?afterEvents=N` instead makes
//!   watches close after sending N events (0 turns it off)
//! - `GET /traffic`: the traffic world's split (requests/s per workload) and totals (JSON)
//! - `GET /traffic/metrics`: the world's telemetry in Prometheus text (what Prometheus scrapes)
//! - `GET|POST|DELETE /datadog/fault`, `/newrelic/fault`, `/graphite/fault`,
//!   `/influxdb/fault`, `/dynatrace/fault`, `/splunk/fault`, `/cloudwatch/fault`, `/stackdriver/fault`, `/cloudwatch/fault`, `/stackdriver/fault`, `/externalmetrics/fault`: that metric-provider emulator's
//!   fault mode (`{mode, status, count}`, see `provider_faults`)
//! - `POST /compact`: drops the watch event history, so watches from older
//!   resourceVersions get 410 Gone

use crate::faults::FaultRule;
use crate::provider_faults::{ProviderFault, ProviderFaults};
use crate::server::{Body, Shared, full, json_response};
use crate::traffic::world::World;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What the admin server works on.
pub struct State {
    pub shared: Arc<Shared>,
    pub world: Arc<World>,
    pub datadog: Arc<ProviderFaults>,
    pub newrelic: Arc<ProviderFaults>,
    pub graphite: Arc<ProviderFaults>,
    pub influxdb: Arc<ProviderFaults>,
    pub dynatrace: Arc<ProviderFaults>,
    pub splunk: Arc<ProviderFaults>,
    pub cloudwatch: Arc<ProviderFaults>,
    pub stackdriver: Arc<ProviderFaults>,
    pub external_metrics: Arc<ProviderFaults>,
}

pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let shared = &state.shared;
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let resp = match (method.as_str(), path.as_str()) {
        ("GET", "/metrics") => {
            let objects = shared.store.lock().object_count();
            let watches = shared.watches.load(Ordering::SeqCst);
            full(
                200,
                "text/plain; version=0.0.4",
                shared.faults.metrics(objects, watches),
            )
        }
        ("GET", "/faults") => {
            let rules: Vec<Value> = shared
                .faults
                .rules()
                .iter()
                .map(|r| {
                    json!({"verb": r.verb, "resource": r.resource, "errorRate": r.error_rate, "status": r.status,
                        "latencyMs": r.latency.map(|d| d.as_millis() as u64), "conflicts": r.conflicts})
                })
                .collect();
            json_response(200, &json!(rules))
        }
        ("POST", "/faults") => match req.into_body().collect().await {
            Ok(b) => match parse_rules(&b.to_bytes()) {
                Ok(rules) => {
                    let n = rules.len();
                    shared.faults.add(rules);
                    json_response(200, &json!({"added": n}))
                }
                Err(e) => full(400, "text/plain", format!("invalid fault rules: {e}\n")),
            },
            Err(e) => full(400, "text/plain", format!("reading body: {e}\n")),
        },
        ("GET", "/traffic") => json_response(200, &state.world.describe()),
        ("GET", "/traffic/metrics") => full(
            200,
            "text/plain; version=0.0.4",
            crate::traffic::telemetry::render(&state.world.series(), state.world.provider()),
        ),
        ("GET" | "POST" | "DELETE", "/datadog/fault") => {
            provider_fault(&state.datadog, &method, req).await
        }
        ("GET" | "POST" | "DELETE", "/newrelic/fault") => {
            provider_fault(&state.newrelic, &method, req).await
        }
        ("GET" | "POST" | "DELETE", "/graphite/fault") => {
            provider_fault(&state.graphite, &method, req).await
        }
        ("GET" | "POST" | "DELETE", "/influxdb/fault") => {
            provider_fault(&state.influxdb, &method, req).await
        }
        ("GET" | "POST" | "DELETE", "/dynatrace/fault") => {
            provider_fault(&state.dynatrace, &method, req).await
        }
        ("GET" | "POST" | "DELETE", "/splunk/fault") => {
            provider_fault(&state.splunk, &method, req).await
        }
        ("GET" | "POST" | "DELETE", "/cloudwatch/fault") => {
            provider_fault(&state.cloudwatch, &method, req).await
        }
        ("GET" | "POST" | "DELETE", "/stackdriver/fault") => {
            provider_fault(&state.stackdriver, &method, req).await
        }
        ("GET" | "POST" | "DELETE", "/externalmetrics/fault") => {
            provider_fault(&state.external_metrics, &method, req).await
        }
        ("DELETE", "/faults") => {
            shared.faults.clear();
            json_response(200, &json!({"cleared": true}))
        }
        ("POST", "/watches/drop") => {
            let after = form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "afterEvents")
                .and_then(|(_, v)| v.parse::<u64>().ok());
            match after {
                Some(n) => shared.faults.drop_watches_after(n),
                None => shared.faults.drop_watches(),
            }
            json_response(
                200,
                &json!({"dropped": after.is_none(), "afterEvents": after}),
            )
        }
        ("POST", "/compact") => {
            shared.store.lock().compact(0);
            json_response(200, &json!({"compacted": true}))
        }
        _ => full(404, "text/plain", "not found\n"),
    };
    Ok(resp)
}

fn parse_rules(bytes: &[u8]) -> anyhow::Result<Vec<FaultRule>> {
    let v: Value = serde_norway::from_slice(bytes)?;
    Ok(match v {
        Value::Array(_) => serde_json::from_value(v)?,
        Value::Object(ref m) if m.contains_key("faults") => {
            serde_json::from_value(m["faults"].clone())?
        }
        other => vec![serde_json::from_value(other)?],
    })
}

/// `GET` shows, `POST` sets (YAML or JSON `{mode, status, count}`), `DELETE` clears the
/// fault of a metric-provider emulator.
async fn provider_fault(
    faults: &ProviderFaults,
    method: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    match method {
        "GET" => json_response(200, &json!({"fault": faults.get()})),
        "DELETE" => {
            faults.clear();
            json_response(200, &json!({"fault": null}))
        }
        _ => match req.into_body().collect().await {
            Ok(b) => match serde_norway::from_slice::<ProviderFault>(&b.to_bytes()) {
                Ok(f) => {
                    faults.set(f.clone());
                    json_response(200, &json!({"fault": f}))
                }
                Err(e) => full(400, "text/plain", format!("invalid fault: {e}\n")),
            },
            Err(e) => full(400, "text/plain", format!("reading body: {e}\n")),
        },
    }
}
