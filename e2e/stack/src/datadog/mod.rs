//! A Datadog API emulator answering from the traffic world (reference: peers.md section
//! 6.2): `GET /api/v1/validate`, `GET /api/v1/query`, `POST /api/v2/query/scalar`.
//!
//! Metrics (one "request" is one simulated request of the world):
//! - `trace.http.request.hits`, `istio.mesh.request.count`: requests
//! - `trace.http.request.errors`: requests answered 5xx
//! - `trace.http.request.duration`: mean latency in seconds
//!
//! Tags: `service`, `kube_deployment`, `kube_daemon_set`, `destination_workload` (the
//! workload); `kube_namespace`, `destination_workload_namespace`,
//! `destination_service_namespace`; `kube_service`, `destination_service_name` (the Service
//! addressed); `http.status_code`, `response_code`; `pod_name`; `reporter` (always
//! `destination`). Unknown metrics have no data; an unknown tag never matches.

pub mod query;

use crate::metric_emulator::{self, Emulator, Operand, combine, with_headers};
use crate::provider_faults::{FaultMode, ProviderFault};
use crate::server::{Body, json_response, query_pairs};
use crate::traffic::world::{Sample, World};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use query::{Expr, MetricQuery, glob};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

/// The scenario's `datadog` section: the keys the emulator accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatadogConfig {
    #[serde(default = "default_api_key")]
    pub api_key: String,
    #[serde(default = "default_app_key")]
    pub application_key: String,
    /// A fault active from the start.
    #[serde(default)]
    pub fault: Option<ProviderFault>,
}

impl Default for DatadogConfig {
    fn default() -> Self {
        DatadogConfig {
            api_key: default_api_key(),
            application_key: default_app_key(),
            fault: None,
        }
    }
}

fn default_api_key() -> String {
    "serin-dd-api-key".into()
}

fn default_app_key() -> String {
    "serin-dd-application-key".into()
}

pub type Datadog = Emulator<DatadogConfig>;

fn errors(code: u16, msg: &str) -> Response<Body> {
    json_response(code, &json!({"errors": [msg]}))
}

/// Group key: `tag:value` strings; values per bucket.
type Groups = BTreeMap<Vec<String>, Vec<Option<f64>>>;

type Val = Operand<String>;

pub async fn handle(
    dd: Arc<Datadog>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().as_str().to_string();
    let params: BTreeMap<String, String> = query_pairs(req.uri());
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let api_ok = header("dd-api-key").as_deref() == Some(dd.config.api_key.as_str());
    let app_ok =
        header("dd-application-key").as_deref() == Some(dd.config.application_key.as_str());
    let resp = match (method.as_str(), path.as_str()) {
        ("GET", "/api/v1/validate") => {
            if api_ok {
                json_response(200, &json!({"valid": true}))
            } else {
                errors(403, "Forbidden")
            }
        }
        ("GET", "/api/v1/query") | ("POST", "/api/v2/query/scalar") => {
            if !(api_ok && app_ok) {
                return Ok(errors(403, "Forbidden"));
            }
            let v2 = path.starts_with("/api/v2");
            let fault = dd.faults.take();
            if let Some(r) = transport_fault(fault.as_ref(), v2).await {
                return Ok(r);
            }
            let mode = fault.map(|f| f.mode);
            if v2 {
                match req.into_body().collect().await {
                    Ok(b) => scalar(&dd.world, &b.to_bytes(), mode),
                    Err(e) => errors(400, &format!("reading body: {e}")),
                }
            } else {
                timeseries(&dd.world, &params, mode)
            }
        }
        _ => errors(404, "Not found"),
    };
    Ok(resp)
}

/// Faults that replace the answer: 429, 5xx, hanging.
async fn transport_fault(fault: Option<&ProviderFault>, v2: bool) -> Option<Response<Body>> {
    let rate_limited = || {
        let limited = errors(
            429,
            "Rate limit of 100 requests in 60 seconds reached. Please try again later.",
        );
        let name = if v2 { "query_scalar_public" } else { "query" };
        with_headers(
            limited,
            &[
                ("x-ratelimit-limit", "100"),
                ("x-ratelimit-period", "60"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "10"),
                ("x-ratelimit-name", name),
            ],
        )
    };
    metric_emulator::transport_fault(fault, rate_limited, || errors(504, "Gateway Timeout")).await
}

/// The rollup interval: the smallest of these giving at most 150 points.
fn interval_for(range: f64) -> f64 {
    const STEPS: &[f64] = &[
        1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
        14400.0, 43200.0, 86400.0,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| range / s <= 150.0)
        .unwrap_or(86400.0)
}

/// The world's samples in `[from, to)` (Unix seconds), by bucket.
struct Window {
    start: f64,
    interval: f64,
    buckets: Vec<Vec<Sample>>,
}

impl Window {
    fn new(world: &World, from: f64, to: f64) -> Window {
        let interval = interval_for((to - from).max(1.0));
        let start = (from / interval).floor() * interval;
        let n = (((to - start) / interval).ceil() as usize).clamp(1, 100_000);
        let mut buckets = vec![Vec::new(); n];
        for (sec, s) in world.samples(world.from_unix(from), world.from_unix(to)) {
            let unix = world.unix(sec as f64);
            if unix + 1.0 <= from || unix >= to {
                continue;
            }
            let i = ((unix - start) / interval).floor().max(0.0) as usize;
            if let Some(b) = buckets.get_mut(i) {
                b.push(s);
            }
        }
        Window {
            start,
            interval,
            buckets,
        }
    }
}

fn tag(s: &Sample, key: &str) -> Option<String> {
    Some(match key {
        "service" | "destination_workload" => s.backend.workload.clone(),
        "kube_deployment" if !s.backend.daemonset => s.backend.workload.clone(),
        "kube_daemon_set" if s.backend.daemonset => s.backend.workload.clone(),
        "kube_namespace" | "destination_workload_namespace" | "destination_service_namespace" => {
            s.backend.namespace.clone()
        }
        "kube_service" | "destination_service_name" => s.service.clone(),
        "http.status_code" | "response_code" => s.code.to_string(),
        "pod_name" => s.backend.pod.clone(),
        "reporter" => "destination".into(),
        _ => return None,
    })
}

fn in_scope(m: &MetricQuery, s: &Sample) -> bool {
    m.scope.iter().all(|(neg, k, v)| {
        let hit = tag(s, k).is_some_and(|t| glob(v, &t));
        hit != *neg
    })
}

fn leaf(w: &Window, m: &MetricQuery) -> Groups {
    #[derive(Clone, Copy, Default)]
    struct Acc {
        requests: f64,
        errors: f64,
        latency: f64,
    }
    let known = matches!(
        m.metric.as_str(),
        "trace.http.request.hits"
            | "istio.mesh.request.count"
            | "trace.http.request.errors"
            | "trace.http.request.duration"
    );
    let mut acc: BTreeMap<Vec<String>, Vec<Option<Acc>>> = BTreeMap::new();
    if !known {
        return Groups::new();
    }
    for (i, bucket) in w.buckets.iter().enumerate() {
        for s in bucket.iter().filter(|s| in_scope(m, s)) {
            let key: Vec<String> =
                m.by.iter()
                    .map(|t| format!("{t}:{}", tag(s, t).unwrap_or_else(|| "n/a".into())))
                    .collect();
            let slots = acc
                .entry(key)
                .or_insert_with(|| vec![None; w.buckets.len()]);
            if let Some(slot) = slots.get_mut(i) {
                let a = slot.get_or_insert_with(Acc::default);
                a.requests += s.requests;
                if s.code >= 500 {
                    a.errors += s.requests;
                }
                a.latency += s.requests * s.latency.mean();
            }
        }
    }
    let per = if m.as_rate { w.interval } else { 1.0 };
    acc.into_iter()
        .map(|(k, slots)| {
            let vals = slots
                .into_iter()
                .map(|a| {
                    let a = a?;
                    match m.metric.as_str() {
                        "trace.http.request.errors" => Some(a.errors / per),
                        "trace.http.request.duration" => {
                            (a.requests > 0.0).then(|| a.latency / a.requests)
                        }
                        _ => Some(a.requests / per),
                    }
                })
                .collect();
            (k, vals)
        })
        .collect()
}

fn eval(e: &Expr, resolve: &dyn Fn(&Expr) -> Result<Val, String>) -> Result<Val, String> {
    Ok(match e {
        Expr::Number(n) => Val::Scalar(*n),
        Expr::Neg(x) => combine(Val::Scalar(0.0), '-', eval(x, resolve)?),
        Expr::Bin(a, op, b) => combine(eval(a, resolve)?, *op, eval(b, resolve)?),
        leaf => resolve(leaf)?,
    })
}

fn first_metric(e: &Expr) -> Option<&MetricQuery> {
    match e {
        Expr::Metric(m) => Some(m),
        Expr::Neg(x) => first_metric(x),
        Expr::Bin(a, _, b) => first_metric(a).or_else(|| first_metric(b)),
        _ => None,
    }
}

fn timeseries(
    world: &World,
    params: &BTreeMap<String, String>,
    mode: Option<FaultMode>,
) -> Response<Body> {
    let num = |k: &str| params.get(k).and_then(|v| v.trim().parse::<f64>().ok());
    let (Some(q), Some(from), Some(to)) = (params.get("query"), num("from"), num("to")) else {
        return errors(400, "The query, from and to parameters are required");
    };
    if to <= from {
        return errors(400, "from must be before to");
    }
    let expr = match query::parse(q) {
        Ok(e) => e,
        Err(e) => return errors(400, &format!("Error parsing query: {e}")),
    };
    let w = Window::new(world, from, to);
    let val = eval(&expr, &|e| match e {
        Expr::Metric(m) => Ok(Val::Series(leaf(&w, m))),
        _ => Err("names are only allowed in v2 formulas".into()),
    });
    let groups = match val {
        Ok(Val::Series(g)) => g,
        Ok(Val::Scalar(x)) => Groups::from([(Vec::new(), vec![Some(x); w.buckets.len()])]),
        Err(e) => return errors(400, &format!("Error parsing query: {e}")),
    };
    let m = first_metric(&expr);
    let mut series: Vec<Value> = Vec::new();
    for (key, vals) in &groups {
        let points: Vec<(f64, Option<f64>)> = vals
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| ((w.start + i as f64 * w.interval) * 1000.0, Some(v))))
            .collect();
        if points.is_empty() {
            continue;
        }
        series.push(series_json(q, m, key, &points, w.interval));
    }
    if let Some(mode) = mode {
        series_fault(mode, &mut series, &|value| {
            series_json(q, m, &[], &[(w.start * 1000.0, value)], w.interval)
        });
    }
    json_response(
        200,
        &json!({
            "status": "ok", "res_type": "time_series", "resp_version": 1, "query": q,
            "from_date": (from * 1000.0) as i64, "to_date": (to * 1000.0) as i64,
            "group_by": m.map(|m| m.by.clone()).unwrap_or_default(),
            "message": "", "series": series,
        }),
    )
}

/// What a fault mode does to a v1 answer's series. `one_point` makes a series of one point
/// for a fault that needs a series where the query found none.
fn series_fault(
    mode: FaultMode,
    series: &mut Vec<Value>,
    one_point: &dyn Fn(Option<f64>) -> Value,
) {
    match mode {
        FaultMode::Empty => series.clear(),
        FaultMode::NullPoints => {
            if series.is_empty() {
                series.push(one_point(None));
            }
            for s in series.iter_mut() {
                if let Some(pl) = s["pointlist"].as_array_mut() {
                    for p in pl {
                        p[1] = Value::Null;
                    }
                }
            }
        }
        FaultMode::SeveralSeries => {
            let base = series
                .first()
                .cloned()
                .unwrap_or_else(|| one_point(Some(1.0)));
            series.clear();
            for (i, factor) in [(0, 1.0), (1, 2.0)] {
                let mut s = base.clone();
                s["tag_set"] = json!([format!("fault:series-{i}")]);
                s["scope"] = json!(format!(
                    "{},fault:series-{i}",
                    base["scope"].as_str().unwrap_or("*")
                ));
                if let Some(pl) = s["pointlist"].as_array_mut() {
                    for p in pl {
                        p[1] = p[1]
                            .as_f64()
                            .map(|v| json!(v * factor))
                            .unwrap_or(Value::Null);
                    }
                }
                series.push(s);
            }
        }
        _ => {}
    }
}

fn series_json(
    q: &str,
    m: Option<&MetricQuery>,
    key: &[String],
    points: &[(f64, Option<f64>)],
    interval: f64,
) -> Value {
    let metric = m.map(|m| m.metric.clone()).unwrap_or_default();
    let mut scope: Vec<String> = m
        .map(|m| m.scope_text.clone())
        .filter(|s| !s.is_empty())
        .into_iter()
        .collect();
    scope.extend(key.iter().cloned());
    let start = points.first().map(|p| p.0).unwrap_or_default();
    let end = points.last().map(|p| p.0).unwrap_or_default() + interval * 1000.0 - 1.0;
    json!({
        "metric": metric, "display_name": metric, "expression": q,
        "scope": if scope.is_empty() { "*".to_string() } else { scope.join(",") },
        "tag_set": key, "aggr": m.and_then(|m| m.aggr.clone()), "query_index": 0,
        "interval": interval as i64, "length": points.len(),
        "start": start as i64, "end": end as i64, "unit": null, "attributes": {},
        "pointlist": points.iter().map(|(t, v)| json!([t, v])).collect::<Vec<_>>(),
    })
}

/// `POST /api/v2/query/scalar`: each query reduced over the window by its aggregator, then
/// the formulas (or the queries themselves) as columns.
fn scalar(world: &World, body: &[u8], mode: Option<FaultMode>) -> Response<Body> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return errors(400, "Invalid JSON body");
    };
    let attrs = &v["data"]["attributes"];
    let (Some(from), Some(to)) = (attrs["from"].as_f64(), attrs["to"].as_f64()) else {
        return errors(
            400,
            "data.attributes.from and to (milliseconds) are required",
        );
    };
    if to <= from {
        return errors(400, "from must be before to");
    }
    let w = Window::new(world, from / 1000.0, to / 1000.0);
    let answer = reduce_queries(&w, attrs).and_then(|(reduced, group_tags)| {
        let numbers = number_columns(&reduced, attrs)?;
        Ok(scalar_columns(&numbers, &group_tags, mode))
    });
    match answer {
        Ok(columns) => json_response(
            200,
            &json!({"data": {"type": "scalar_response", "attributes": {"columns": columns}}}),
        ),
        Err(message) => errors(400, &message),
    }
}

/// Each query of the request reduced over the window by its aggregator, by query name; and
/// the tags the first query groups by.
fn reduce_queries(
    w: &Window,
    attrs: &Value,
) -> Result<(BTreeMap<String, Groups>, Vec<String>), String> {
    let mut reduced: BTreeMap<String, Groups> = BTreeMap::new();
    let mut group_tags: Vec<String> = Vec::new();
    for q in attrs["queries"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = q["name"].as_str().unwrap_or("query").to_string();
        let text = q["query"].as_str().unwrap_or_default();
        let m = match query::parse(text) {
            Ok(Expr::Metric(m)) => m,
            Ok(_) => {
                return Err(format!(
                    "Error parsing query {name}: a metric query is expected"
                ));
            }
            Err(e) => return Err(format!("Error parsing query {name}: {e}")),
        };
        if group_tags.is_empty() {
            group_tags = m.by.clone();
        }
        let aggr = q["aggregator"].as_str().unwrap_or("avg");
        let mut out = Groups::new();
        for (k, vals) in leaf(w, &m) {
            let xs: Vec<f64> = vals.into_iter().flatten().collect();
            out.insert(k, vec![aggregate(aggr, &xs)?]);
        }
        reduced.insert(name, out);
    }
    Ok((reduced, group_tags))
}

/// One value from a group's points; none without points (whatever the aggregator).
fn aggregate(aggr: &str, xs: &[f64]) -> Result<Option<f64>, String> {
    Ok(match aggr {
        _ if xs.is_empty() => None,
        "sum" => Some(xs.iter().sum()),
        "avg" | "mean" => Some(xs.iter().sum::<f64>() / xs.len() as f64),
        "min" => xs.iter().copied().reduce(f64::min),
        "max" => xs.iter().copied().reduce(f64::max),
        "last" => xs.last().copied(),
        other => return Err(format!("unsupported aggregator {other:?}")),
    })
}

/// The number columns of the answer: one per formula, evaluated over the reduced queries,
/// or the reduced queries themselves without formulas.
fn number_columns(
    reduced: &BTreeMap<String, Groups>,
    attrs: &Value,
) -> Result<Vec<(String, Groups)>, String> {
    let formulas: Vec<String> = attrs["formulas"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(|f| f["formula"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut columns: Vec<(String, Groups)> = Vec::new();
    if formulas.is_empty() {
        columns.extend(reduced.clone());
    }
    for f in &formulas {
        let expr = query::parse(f).map_err(|e| format!("Error parsing formula {f:?}: {e}"))?;
        let val = eval(&expr, &|e| match e {
            Expr::Name(n) => reduced
                .get(n)
                .cloned()
                .map(Val::Series)
                .ok_or_else(|| format!("unknown query name {n:?}")),
            _ => Err("formulas refer to queries by name".into()),
        })?;
        match val {
            Val::Series(g) => columns.push((f.clone(), g)),
            Val::Scalar(x) => {
                columns.push((f.clone(), Groups::from([(Vec::new(), vec![Some(x)])])))
            }
        }
    }
    Ok(columns)
}

/// The answer's columns: one `group` column per tag grouped by (when any group has tags),
/// then the number columns, one row per group; as the fault mode changes them.
fn scalar_columns(
    numbers: &[(String, Groups)],
    group_tags: &[String],
    mode: Option<FaultMode>,
) -> Vec<Value> {
    let mut keys: Vec<Vec<String>> = numbers
        .iter()
        .flat_map(|(_, g)| g.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    let mut columns: Vec<Value> = Vec::new();
    if keys.iter().any(|k| !k.is_empty()) {
        for (i, t) in group_tags.iter().enumerate() {
            let vals: Vec<Value> = keys
                .iter()
                .map(|k| {
                    let v = k
                        .get(i)
                        .and_then(|kv| kv.split_once(':'))
                        .map(|(_, v)| v)
                        .unwrap_or("n/a");
                    json!([v])
                })
                .collect();
            columns.push(json!({"name": t, "type": "group", "values": vals}));
        }
    }
    for (name, g) in numbers {
        let vals: Vec<Value> = keys
            .iter()
            .map(|k| json!(g.get(k).and_then(|v| v.first().copied().flatten())))
            .collect();
        columns
            .push(json!({"name": name, "type": "number", "values": vals, "meta": {"unit": null}}));
    }
    let first_name = numbers.first().map(|(n, _)| n.clone()).unwrap_or_default();
    match mode {
        Some(mode) => scalar_fault(mode, columns, first_name),
        None => columns,
    }
}

/// What a fault mode does to a v2 answer's columns; `name` names the first number column.
fn scalar_fault(mode: FaultMode, mut columns: Vec<Value>, name: String) -> Vec<Value> {
    match mode {
        FaultMode::Empty => {
            vec![json!({"name": name, "type": "number", "values": [], "meta": {"unit": null}})]
        }
        FaultMode::NullPoints => {
            for c in &mut columns {
                if c["type"] == "number"
                    && let Some(vs) = c["values"].as_array_mut()
                {
                    if vs.is_empty() {
                        vs.push(Value::Null);
                    }
                    vs.iter_mut().for_each(|v| *v = Value::Null);
                }
            }
            columns
        }
        FaultMode::SeveralSeries => {
            let first = columns
                .iter()
                .find(|c| c["type"] == "number")
                .and_then(|c| c["values"][0].as_f64())
                .unwrap_or(1.0);
            vec![
                json!({"name": "fault", "type": "group", "values": [["series-0"], ["series-1"]]}),
                json!({"name": name, "type": "number", "values": [first, first * 2.0], "meta": {"unit": null}}),
            ]
        }
        _ => columns,
    }
}
