//! A Dynatrace Metrics API v2 emulator answering from the traffic world:
//! `GET /api/v2/metrics?pageSize=N` (the metric list, Flagger's availability check) and
//! `GET /api/v2/metrics/query?metricSelector=&resolution=&from=&to=`, both with
//! `Authorization: Api-Token <token>`.
//!
//! Every workload version of the world is one service entity: `dt.entity.service` is
//! `SERVICE-` and 16 hex digits of its namespace and name, its name (entity selectors,
//! `:names`) the workload's name. Builtin service metrics, with their default aggregation:
//! - `builtin:service.requestCount.total`: requests (`value`; `sum`, `avg`, `min`, `max` over
//!   the per-second counts, `count` the seconds with requests);
//! - `builtin:service.errors.server.count`: requests answered 5xx, and
//!   `builtin:service.errors.server.successCount` the others (as the request count);
//! - `builtin:service.errors.server.rate`: percent of requests answered 5xx (`avg` over the
//!   bucket's requests; `min`, `max` over the per-second rates, `count`);
//! - `builtin:service.response.time`: latency in microseconds (`avg`, request-weighted;
//!   `median`, `percentile(n)` of the versions' latency distributions; `min`, `max` of the
//!   per-second means; `count` the requests, `sum` their total time).
//!
//! Any other key is a 404; a selector outside the subset of [`selector`] a 400
//! (`Constraints violated.`). `resolution=Inf` aggregates the whole window into one value
//! (timestamp `to`); `Nm`, `Nh`, `Nd` (at least 1 minute, as Dynatrace) or a number of points
//! make buckets (default `1m`). `from` and `to` are milliseconds or `now[-N(s|m|h|d)]`
//! (default: the last 2 hours). Series without a value in the window are left out; none at
//! all is `data: []`. Faults (see `provider_faults`) apply to queries, after the token check.

pub mod selector;

use crate::metric_emulator::{self, Emulator, Operand, combine, with_headers};
use crate::provider_faults::{FaultMode, ProviderFault};
use crate::server::{Body, json_response, query_pairs};
use crate::traffic::latency::{Latency, mixture_quantile};
use crate::traffic::world::{Sample, World};
use hyper::body::Incoming;
use hyper::{Request, Response};
use selector::{Aggregation, Cond, Criterion, Expr, Selector, Transform};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The scenario's `dynatrace` section: the API token the emulator accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DynatraceConfig {
    #[serde(default = "default_token")]
    pub token: String,
    /// A fault active from the start.
    #[serde(default)]
    pub fault: Option<ProviderFault>,
}

impl Default for DynatraceConfig {
    fn default() -> Self {
        DynatraceConfig {
            token: default_token(),
            fault: None,
        }
    }
}

fn default_token() -> String {
    "dt0c01.SERINSTACK.serin-dt-token".into()
}

pub type Dynatrace = Emulator<DynatraceConfig>;

/// Dynatrace's error body.
fn error(code: u16, message: &str) -> Response<Body> {
    json_response(code, &json!({"error": {"code": code, "message": message}}))
}

/// A 400 naming the parameter at fault, as Dynatrace words it.
fn violation(parameter: &str, message: &str) -> Response<Body> {
    json_response(
        400,
        &json!({"error": {"code": 400, "message": "Constraints violated.",
            "constraintViolations": [{"path": parameter, "message": message,
                "parameterLocation": "QUERY", "location": null}]}}),
    )
}

pub async fn handle(
    dt: Arc<Dynatrace>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let params: BTreeMap<String, String> = query_pairs(req.uri());
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    match authorization {
        None => return Ok(error(401, "Missing authorization parameter.")),
        Some(a) if a != format!("Api-Token {}", dt.config.token) => {
            return Ok(error(401, "Token Authentication failed"));
        }
        Some(_) => {}
    }
    let resp = match (req.method().as_str(), path.as_str()) {
        ("GET", "/api/v2/metrics") => metric_list(&params),
        ("GET", "/api/v2/metrics/query") => {
            let fault = dt.faults.take();
            if let Some(r) = transport_fault(fault.as_ref()).await {
                return Ok(r);
            }
            query(&dt.world, &params, fault.map(|f| f.mode))
        }
        _ => error(404, "HTTP 404 Not Found"),
    };
    Ok(resp)
}

/// Faults that replace the answer: 429, 5xx, hanging.
async fn transport_fault(fault: Option<&ProviderFault>) -> Option<Response<Body>> {
    let rate_limited = || {
        // Dynatrace names the reset as a Unix timestamp in microseconds.
        let reset = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(RATE_LIMIT_RESET)
            .as_micros();
        with_headers(
            error(429, "Too Many Requests"),
            &[
                ("x-ratelimit-limit", "50"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset.to_string()),
            ],
        )
    };
    metric_emulator::transport_fault(fault, rate_limited, || error(504, "Gateway Timeout")).await
}

/// How far away a `rate-limit` fault's reset is.
pub const RATE_LIMIT_RESET: Duration = Duration::from_secs(2);

/// What a metric key measures.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Measure {
    Requests,
    Errors,
    Successes,
    ErrorRate,
    ResponseTime,
}

/// Key, display name, unit, measure.
const METRICS: [(&str, &str, &str, Measure); 5] = [
    (
        "builtin:service.requestCount.total",
        "Request count",
        "Count",
        Measure::Requests,
    ),
    (
        "builtin:service.errors.server.count",
        "Failure count (server side errors)",
        "Count",
        Measure::Errors,
    ),
    (
        "builtin:service.errors.server.successCount",
        "Success count (server side)",
        "Count",
        Measure::Successes,
    ),
    (
        "builtin:service.errors.server.rate",
        "Failure rate (server side errors)",
        "Percent",
        Measure::ErrorRate,
    ),
    (
        "builtin:service.response.time",
        "Response time",
        "MicroSecond",
        Measure::ResponseTime,
    ),
];

fn metric_list(params: &BTreeMap<String, String>) -> Response<Body> {
    let page = params
        .get("pageSize")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(100)
        .max(1);
    let metrics: Vec<Value> = METRICS
        .iter()
        .take(page)
        .map(|(key, name, unit, _)| {
            json!({"metricId": key, "displayName": name, "description": "", "unit": unit})
        })
        .collect();
    let next = (page < METRICS.len()).then(|| format!("serin-page-{page}"));
    json_response(
        200,
        &json!({"totalCount": METRICS.len(), "nextPageKey": next, "metrics": metrics}),
    )
}

/// The entity ID of a workload version's service: stable across runs (FNV-1a).
pub fn service_entity_id(namespace: &str, workload: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes().chain([b'/']).chain(workload.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("SERVICE-{h:016X}")
}

const ENTITY: &str = "dt.entity.service";
const ENTITY_NAME: &str = "dt.entity.service.name";

fn dimension(s: &Sample, key: &str) -> Option<String> {
    match key {
        ENTITY => Some(service_entity_id(&s.backend.namespace, &s.backend.workload)),
        ENTITY_NAME => Some(s.backend.workload.clone()),
        _ => None,
    }
}

fn matches(c: &Cond, s: &Sample) -> bool {
    match c {
        Cond::Compare(f, key, v) => {
            let d = dimension(s, key);
            match (f.as_str(), d) {
                ("ne", d) => d.as_deref() != Some(v.as_str()),
                (_, None) => false,
                ("eq", Some(d)) => d == *v,
                ("prefix", Some(d)) => d.starts_with(v.as_str()),
                ("suffix", Some(d)) => d.ends_with(v.as_str()),
                (_, Some(d)) => d.contains(v.as_str()),
            }
        }
        Cond::In(key, criteria) => key == ENTITY && criteria.iter().all(|c| entity_matches(c, s)),
        Cond::Exists(key) => dimension(s, key).is_some(),
        Cond::And(cs) => cs.iter().all(|c| matches(c, s)),
        Cond::Or(cs) => cs.iter().any(|c| matches(c, s)),
        Cond::Not(c) => !matches(c, s),
    }
}

fn entity_matches(c: &Criterion, s: &Sample) -> bool {
    let name = &s.backend.workload;
    match c {
        Criterion::Type(t) => t.eq_ignore_ascii_case("SERVICE"),
        Criterion::Id(ids) => {
            let id = service_entity_id(&s.backend.namespace, name);
            ids.contains(&id)
        }
        Criterion::NameContains(n) => name.to_lowercase().contains(&n.to_lowercase()),
        Criterion::NameEquals(n) => name == n,
        Criterion::NameStartsWith(n) => name.to_lowercase().starts_with(&n.to_lowercase()),
    }
}

/// A query's time buckets: the start of the first, their length and count, in Unix
/// seconds; Inf is one bucket of the whole window.
#[derive(Debug, Clone, Copy)]
struct Buckets {
    start: f64,
    step: f64,
    count: usize,
    inf: bool,
}

impl Buckets {
    fn new(resolution: &str, from: f64, to: f64) -> Result<Buckets, String> {
        let range = to - from;
        let step = match resolution.trim() {
            "Inf" | "inf" => {
                return Ok(Buckets {
                    start: from,
                    step: range,
                    count: 1,
                    inf: true,
                });
            }
            r if r.chars().all(|c| c.is_ascii_digit()) && !r.is_empty() => {
                let points: f64 = r.parse().map_err(|_| format!("invalid resolution {r}"))?;
                (range / points.max(1.0) / 60.0).ceil().max(1.0) * 60.0
            }
            r => {
                let secs = duration_secs(r).ok_or_else(|| format!("invalid resolution {r}"))?;
                if secs < 60.0 {
                    return Err(format!(
                        "the resolution {r} is below the minimum of 1 minute"
                    ));
                }
                secs
            }
        };
        let start = (from / step).floor() * step;
        let count = ((to - start) / step).ceil().clamp(1.0, 100_000.0) as usize;
        Ok(Buckets {
            start,
            step,
            count,
            inf: false,
        })
    }

    /// The bucket of a second starting at `unix`.
    fn index(&self, unix: f64) -> usize {
        if self.inf {
            return 0;
        }
        ((unix - self.start) / self.step).floor().max(0.0) as usize
    }

    /// Timestamps in milliseconds: each bucket's end (Inf: `to`).
    fn timestamps(&self, to: f64) -> Vec<i64> {
        if self.inf {
            return vec![(to * 1000.0) as i64];
        }
        (1..=self.count)
            .map(|i| ((self.start + i as f64 * self.step) * 1000.0) as i64)
            .collect()
    }
}

/// `30s`, `5m`, `2h`, `1d` in seconds.
fn duration_secs(text: &str) -> Option<f64> {
    let (n, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: f64 = n.parse().ok()?;
    let per = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    };
    Some(n * per)
}

/// A timestamp parameter: milliseconds, or `now` minus a duration; Unix seconds.
fn parse_time(text: &str, now: f64) -> Option<f64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<f64>() {
        return ms.is_finite().then_some(ms / 1000.0);
    }
    let rest = text.strip_prefix("now")?;
    if rest.is_empty() {
        return Some(now);
    }
    Some(now - duration_secs(rest.strip_prefix('-')?)?)
}

/// What one second of one series held.
#[derive(Default, Clone)]
struct Second {
    requests: f64,
    errors: f64,
    latency: Vec<(f64, Latency)>,
}

impl Second {
    fn mean_latency(&self) -> Option<f64> {
        let n: f64 = self.latency.iter().map(|(n, _)| n).sum();
        (n > 0.0).then(|| self.latency.iter().map(|(n, l)| n * l.mean()).sum::<f64>() / n)
    }
}

/// Dimensions of a series (key, value), in order.
type Key = Vec<(String, String)>;
/// Values by bucket, per series.
type Series = BTreeMap<Key, Vec<Option<f64>>>;

type Val = Operand<(String, String)>;

/// Why a query cannot be answered: the response to send.
struct Refusal(Box<Response<Body>>);

fn bad_selector(message: impl Into<String>) -> Refusal {
    Refusal(Box::new(violation("metricSelector", &message.into())))
}

fn query(
    world: &World,
    params: &BTreeMap<String, String>,
    mode: Option<FaultMode>,
) -> Response<Body> {
    let Some(text) = params
        .get("metricSelector")
        .filter(|s| !s.trim().is_empty())
    else {
        return violation("metricSelector", "must not be empty");
    };
    let now = world.unix(world.now());
    let from = match params.get("from") {
        None => Some(now - 7200.0),
        Some(f) => parse_time(f, now),
    };
    let to = match params.get("to") {
        None => Some(now),
        Some(t) => parse_time(t, now),
    };
    let (Some(from), Some(to)) = (from, to) else {
        return violation(
            "from",
            "from and to must be timestamps in milliseconds or now-<duration>",
        );
    };
    if to <= from {
        return violation("from", "from must be before to");
    }
    let resolution = params.get("resolution").map_or("1m", String::as_str);
    let buckets = match Buckets::new(resolution, from, to) {
        Ok(b) => b,
        Err(e) => return violation("resolution", &e),
    };
    let expr = match selector::parse(text) {
        Ok(e) => e,
        Err(e) => {
            return violation(
                "metricSelector",
                &format!("Metric selector parse error: {e}"),
            );
        }
    };
    let samples: Vec<(f64, Sample)> = world
        .samples(world.from_unix(from), world.from_unix(to))
        .into_iter()
        .map(|(sec, s)| (world.unix(sec as f64), s))
        .filter(|(unix, _)| unix + 1.0 > from && *unix < to)
        .collect();
    let series = match eval(&expr, &samples, buckets) {
        Ok(Val::Series(series)) => series,
        Ok(Val::Scalar(x)) => Series::from([(Key::new(), vec![Some(x); buckets.count])]),
        Err(Refusal(response)) => return *response,
    };
    let timestamps = buckets.timestamps(to);
    let mut data: Vec<Value> = series
        .into_iter()
        .filter(|(_, values)| values.iter().any(Option::is_some))
        .map(|(key, values)| series_json(&key, &timestamps, &values))
        .collect();
    if let Some(mode) = mode {
        data_fault(mode, &mut data, &timestamps);
    }
    json_response(
        200,
        &json!({"totalCount": 1, "nextPageKey": null,
            "resolution": if buckets.inf { "Inf".to_string() } else { format!("{}m", buckets.step / 60.0) },
            "result": [{"metricId": text, "dataPointCountRatio": 1.0e-6,
                "dimensionCountRatio": 1.0e-5, "data": data}]}),
    )
}

fn series_json(key: &[(String, String)], timestamps: &[i64], values: &[Option<f64>]) -> Value {
    let map: serde_json::Map<String, Value> =
        key.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    json!({"dimensions": key.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        "dimensionMap": map, "timestamps": timestamps, "values": values})
}

/// What a fault mode does to the answer's series.
fn data_fault(mode: FaultMode, data: &mut Vec<Value>, timestamps: &[i64]) {
    let one = |value: Option<f64>| series_json(&[], timestamps, &vec![value; timestamps.len()]);
    match mode {
        FaultMode::Empty => data.clear(),
        FaultMode::NullPoints => {
            if data.is_empty() {
                data.push(one(None));
            }
            for s in data.iter_mut() {
                if let Some(vs) = s["values"].as_array_mut() {
                    vs.iter_mut().for_each(|v| *v = Value::Null);
                }
            }
        }
        FaultMode::SeveralSeries => {
            let base = data.first().cloned().unwrap_or_else(|| one(Some(1.0)));
            data.clear();
            for (i, factor) in [(0, 1.0), (1, 2.0)] {
                let mut s = base.clone();
                s["dimensions"] = json!([format!("series-{i}")]);
                s["dimensionMap"] = json!({"fault": format!("series-{i}")});
                if let Some(vs) = s["values"].as_array_mut() {
                    for v in vs {
                        *v = v.as_f64().map_or(Value::Null, |x| json!(x * factor));
                    }
                }
                data.push(s);
            }
        }
        _ => {}
    }
}

fn eval(e: &Expr, samples: &[(f64, Sample)], buckets: Buckets) -> Result<Val, Refusal> {
    Ok(match e {
        Expr::Number(n) => Val::Scalar(*n),
        Expr::Neg(x) => combine(Val::Scalar(0.0), '-', eval(x, samples, buckets)?),
        Expr::Bin(a, op, b) => combine(eval(a, samples, buckets)?, *op, eval(b, samples, buckets)?),
        Expr::Selector(s) => Val::Series(metric(s, samples, buckets)?),
    })
}

/// One metric selector's series.
fn metric(s: &Selector, samples: &[(f64, Sample)], buckets: Buckets) -> Result<Series, Refusal> {
    let Some(&(_, _, _, measure)) = METRICS.iter().find(|m| m.0 == s.key) else {
        return Err(Refusal(Box::new(error(
            404,
            &format!("The metric key {} could not be found", s.key),
        ))));
    };
    let mut names = false;
    let mut split: Option<Vec<String>> = None;
    let mut aggregation = None;
    let mut default = None;
    let mut filters = Vec::new();
    for t in &s.transforms {
        match t {
            Transform::Filter(c) => filters.push(c),
            Transform::SplitBy(dims) => split = Some(dims.clone()),
            Transform::Names => names = true,
            Transform::Default(v) => default = Some(*v),
            Transform::Aggregate(a) => aggregation = Some(*a),
        }
    }
    let dims = split.unwrap_or_else(|| vec![ENTITY.to_string()]);
    if let Some(d) = dims.iter().find(|d| *d != ENTITY && *d != ENTITY_NAME) {
        return Err(bad_selector(format!(
            "The dimension key {d} is not defined for {}",
            s.key
        )));
    }
    let aggregation = aggregation.unwrap_or(match measure {
        Measure::Requests | Measure::Errors | Measure::Successes => Aggregation::Value,
        Measure::ErrorRate | Measure::ResponseTime => Aggregation::Avg,
    });
    let allowed = match (measure, aggregation) {
        (Measure::ResponseTime, _) => !matches!(aggregation, Aggregation::Value),
        (Measure::ErrorRate, a) => {
            matches!(
                a,
                Aggregation::Avg | Aggregation::Min | Aggregation::Max | Aggregation::Count
            )
        }
        (_, a) => !matches!(a, Aggregation::Median | Aggregation::Percentile(_)),
    };
    if !allowed {
        return Err(bad_selector(format!(
            "The aggregation {} is not supported by the metric {}",
            aggregation.name(),
            s.key
        )));
    }
    // Series → bucket → second → what it held.
    type Seconds = BTreeMap<i64, Second>;
    let mut acc: BTreeMap<Key, Vec<Seconds>> = BTreeMap::new();
    for (unix, sample) in samples {
        if !filters.iter().all(|c| matches(c, sample)) {
            continue;
        }
        let mut key: Key = Vec::new();
        for d in &dims {
            if names && d == ENTITY {
                key.push((ENTITY_NAME.to_string(), sample.backend.workload.clone()));
            }
            key.push((d.clone(), dimension(sample, d).unwrap_or_default()));
        }
        let slots = acc
            .entry(key)
            .or_insert_with(|| vec![Seconds::new(); buckets.count]);
        let Some(bucket) = slots.get_mut(buckets.index(*unix)) else {
            continue;
        };
        let second = bucket.entry(*unix as i64).or_default();
        second.requests += sample.requests;
        if sample.code >= 500 {
            second.errors += sample.requests;
        }
        second.latency.push((sample.requests, sample.latency));
    }
    Ok(acc
        .into_iter()
        .map(|(key, slots)| {
            let values = slots
                .iter()
                .map(|seconds| value(measure, aggregation, seconds).or(default))
                .collect();
            (key, values)
        })
        .collect())
}

/// One bucket's value of one series.
fn value(
    measure: Measure,
    aggregation: Aggregation,
    seconds: &BTreeMap<i64, Second>,
) -> Option<f64> {
    let seconds: Vec<&Second> = seconds.values().filter(|s| s.requests > 0.0).collect();
    if seconds.is_empty() {
        return None;
    }
    let n = seconds.len() as f64;
    let requests: f64 = seconds.iter().map(|s| s.requests).sum();
    let errors: f64 = seconds.iter().map(|s| s.errors).sum();
    let per_second: Vec<f64> = seconds
        .iter()
        .filter_map(|s| match measure {
            Measure::Requests => Some(s.requests),
            Measure::Errors => Some(s.errors),
            Measure::Successes => Some(s.requests - s.errors),
            Measure::ErrorRate => Some(s.errors / s.requests * 100.0),
            Measure::ResponseTime => s.mean_latency().map(|l| l * 1e6),
        })
        .collect();
    let extreme = |pick: fn(f64, f64) -> f64| per_second.iter().copied().reduce(pick);
    let latency = || -> Vec<(f64, Latency)> {
        seconds
            .iter()
            .flat_map(|s| s.latency.iter().copied())
            .collect()
    };
    let total_time: f64 = seconds
        .iter()
        .flat_map(|s| s.latency.iter())
        .map(|(n, l)| n * l.mean())
        .sum();
    match (measure, aggregation) {
        (_, Aggregation::Min) => extreme(f64::min),
        (_, Aggregation::Max) => extreme(f64::max),
        (Measure::ResponseTime, Aggregation::Count) => Some(requests),
        (_, Aggregation::Count) => Some(n),
        (Measure::ErrorRate, _) => Some(errors / requests * 100.0),
        (Measure::ResponseTime, Aggregation::Avg) => Some(total_time / requests * 1e6),
        (Measure::ResponseTime, Aggregation::Sum) => Some(total_time * 1e6),
        (Measure::ResponseTime, Aggregation::Median) => {
            mixture_quantile(&latency(), 0.5).map(|l| l * 1e6)
        }
        (Measure::ResponseTime, Aggregation::Percentile(p)) => {
            mixture_quantile(&latency(), p / 100.0).map(|l| l * 1e6)
        }
        (_, Aggregation::Avg) => Some(per_second.iter().sum::<f64>() / n),
        _ => Some(per_second.iter().sum()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_ids_are_stable_and_distinct() {
        let id = service_entity_id("default", "podinfo");
        assert_eq!(id, service_entity_id("default", "podinfo"));
        assert_ne!(id, service_entity_id("default", "podinfo-primary"));
        assert_ne!(id, service_entity_id("test", "podinfo"));
        assert!(id.starts_with("SERVICE-") && id.len() == 24, "{id}");
    }

    #[test]
    fn buckets_and_times() {
        let b = Buckets::new("Inf", 100.0, 700.0).unwrap();
        assert_eq!((b.count, b.index(650.0)), (1, 0));
        assert_eq!(b.timestamps(700.0), vec![700_000]);
        let b = Buckets::new("1m", 100.0, 700.0).unwrap();
        assert_eq!((b.start, b.count), (60.0, 11));
        assert_eq!(b.index(125.0), 1);
        let b = Buckets::new("5", 0.0, 600.0).unwrap();
        assert_eq!(b.step, 120.0);
        assert!(Buckets::new("10s", 0.0, 600.0).is_err());
        assert!(Buckets::new("soon", 0.0, 600.0).is_err());
        assert_eq!(parse_time("now-5m", 1000.0), Some(700.0));
        assert_eq!(parse_time("1717000000000", 0.0), Some(1_717_000_000.0));
        assert_eq!(parse_time("yesterday", 0.0), None);
    }
}
