//! A Splunk Observability (SignalFx) emulator answering SignalFlow from the traffic world:
//! `POST /v2/signalflow/execute?start=&stop=[&resolution=][&immediate=]` (milliseconds; the
//! program as the body) answers the computation as Server-Sent Events, and
//! `GET /v2/metric?limit=N` lists the metrics (Flagger's availability check); both with
//! `X-SF-Token`. The API and stream hosts are one server here.
//!
//! Every simulated request is an APM span of its workload version. Metrics:
//! - `service.request.count`, `traces.count`, `spans.count`: requests;
//! - `service.request.duration.ns.p50` (`.median`), `.p90`, `.p99`: latency percentiles in
//!   nanoseconds, of each time series' requests in each bucket.
//!
//! Dimensions: `sf_service` and `service.name` (the workload), `sf_environment`,
//! `deployment.environment` and `k8s.namespace.name` (its namespace), `sf_error` (`true` for
//! 5xx, else `false`), `http.status_code`, `sf_operation` (`GET /`), `sf_kind` (`SERVER`),
//! `k8s.pod.name`, `k8s.deployment.name` or `k8s.daemonset.name`. A time series is one
//! combination of them; any other metric has none.
//!
//! The program is the subset of [`signalflow`]: statements and variables; `data(metric,
//! filter=, rollup=)` (`sum` (default), `rate`, `average`, `min`, `max`, `count`, `latest`
//! over the bucket's seconds); `filter(dim, value, ...)` (`*` globs) combined with `and`,
//! `or`, `not`; on streams `.sum()`, `.mean()`, `.min()`, `.max()`, `.count()`,
//! `.percentile(pct)` across time series (`by=` dimensions) or, with `over='5m'`, over time
//! per series; `.scale(n)`; `.publish(label, enable=)`; arithmetic between streams (joined
//! on their dimensions; a stream of one series without dimensions applies to every series)
//! and numbers. Anything else stops the computation with an `error` message.
//!
//! The window `start..stop` (cut at the world's now) is cut into buckets of `resolution` (at
//! least 1 s), by default
//! the smallest of 1 s, 5 s, 10 s, 30 s, 1 min, 5 min, 1 h giving at most 360; each bucket
//! with a published value is one `data` message (`logicalTimestampMs` its start). The stream:
//! `STREAM_START`, `JOB_START`, a `JOB_RUNNING_RESOLUTION` message, a `metadata` message per
//! published series, the `data` messages, `END_OF_CHANNEL`; each message's JSON pretty-printed
//! over several `data:` lines. Faults (see `provider_faults`) apply to executions, after the
//! token check.

pub mod signalflow;

use crate::metric_emulator::{self, Emulator, Operand, combine, duration_unit_secs, with_headers};
use crate::provider_faults::{FaultMode, ProviderFault};
use crate::server::{Body, full, json_response, query_pairs};
use crate::traffic::latency::{Latency, mixture_quantile};
use crate::traffic::world::{Sample, World};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use signalflow::{Args, Ast};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

/// The scenario's `splunk` section: the access token the emulator accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SplunkConfig {
    #[serde(default = "default_token")]
    pub token: String,
    /// A fault active from the start.
    #[serde(default)]
    pub fault: Option<ProviderFault>,
}

impl Default for SplunkConfig {
    fn default() -> Self {
        SplunkConfig {
            token: default_token(),
            fault: None,
        }
    }
}

fn default_token() -> String {
    "serin-sf-token".into()
}

pub type Splunk = Emulator<SplunkConfig>;

fn error(code: u16, message: &str) -> Response<Body> {
    json_response(code, &json!({"code": code, "message": message}))
}

pub async fn handle(sf: Arc<Splunk>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().as_str().to_string();
    let params: BTreeMap<String, String> = query_pairs(req.uri());
    let token = req
        .headers()
        .get("x-sf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if token != Some(sf.config.token.as_str()) {
        return Ok(error(401, "Unauthorized"));
    }
    let resp = match (method.as_str(), path.as_str()) {
        ("GET", "/v2/metric") => metric_list(&params),
        ("POST", "/v2/signalflow/execute") => {
            let fault = sf.faults.take();
            if let Some(r) = transport_fault(fault.as_ref()).await {
                return Ok(r);
            }
            match req.into_body().collect().await {
                Ok(b) => {
                    let program = String::from_utf8_lossy(&b.to_bytes()).into_owned();
                    execute(&sf.world, &params, &program, fault.map(|f| f.mode))
                }
                Err(e) => error(400, &format!("reading the program: {e}")),
            }
        }
        _ => error(404, "Not Found"),
    };
    Ok(resp)
}

/// Faults that replace the answer: 429, 5xx, hanging.
async fn transport_fault(fault: Option<&ProviderFault>) -> Option<Response<Body>> {
    metric_emulator::transport_fault(
        fault,
        || with_headers(error(429, "Too Many Requests"), &[("retry-after", "1")]),
        || error(504, "Gateway Timeout"),
    )
    .await
}

const COUNT_METRICS: [&str; 3] = ["service.request.count", "traces.count", "spans.count"];

/// Duration metric, quantile.
const DURATION_METRICS: [(&str, f64); 4] = [
    ("service.request.duration.ns.p50", 0.5),
    ("service.request.duration.ns.median", 0.5),
    ("service.request.duration.ns.p90", 0.9),
    ("service.request.duration.ns.p99", 0.99),
];

fn metric_list(params: &BTreeMap<String, String>) -> Response<Body> {
    let limit = params
        .get("limit")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(50)
        .max(1);
    let all: Vec<(&str, &str)> = COUNT_METRICS
        .iter()
        .map(|m| (*m, "COUNTER"))
        .chain(DURATION_METRICS.iter().map(|(m, _)| (*m, "GAUGE")))
        .collect();
    let results: Vec<Value> = all
        .iter()
        .take(limit)
        .map(|(name, kind)| json!({"name": name, "type": kind, "description": "", "customProperties": {}}))
        .collect();
    json_response(200, &json!({"count": all.len(), "results": results}))
}

/// The dimensions of a sample's time series.
fn dimensions(s: &Sample) -> Key {
    let b = &s.backend;
    let error = if s.code >= 500 { "true" } else { "false" };
    let kind = if b.daemonset {
        "k8s.daemonset.name"
    } else {
        "k8s.deployment.name"
    };
    [
        ("sf_service", b.workload.as_str()),
        ("service.name", b.workload.as_str()),
        ("sf_environment", b.namespace.as_str()),
        ("deployment.environment", b.namespace.as_str()),
        ("k8s.namespace.name", b.namespace.as_str()),
        ("sf_error", error),
        ("http.status_code", &s.code.to_string()),
        ("sf_operation", "GET /"),
        ("sf_kind", "SERVER"),
        ("k8s.pod.name", b.pod.as_str()),
        (kind, b.workload.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Dimensions of a time series (key, value).
type Key = Vec<(String, String)>;
/// Values by bucket, per time series.
type Series = BTreeMap<Key, Vec<Option<f64>>>;

#[derive(Debug, Clone)]
enum Filter {
    Match(String, Vec<String>),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
}

impl Filter {
    fn matches(&self, key: &Key) -> bool {
        match self {
            Filter::Match(dim, values) => key
                .iter()
                .find(|(k, _)| k == dim)
                .is_some_and(|(_, v)| values.iter().any(|p| glob(p, v))),
            Filter::And(a, b) => a.matches(key) && b.matches(key),
            Filter::Or(a, b) => a.matches(key) || b.matches(key),
            Filter::Not(f) => !f.matches(key),
        }
    }
}

/// `*` matches any run of characters.
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            let Some(rest) = s.strip_prefix(head) else {
                return false;
            };
            // The tail may itself hold stars: try every place it could start.
            (0..=rest.len())
                .filter(|i| rest.is_char_boundary(*i))
                .any(|i| glob(tail, &rest[i..]))
        }
    }
}

#[derive(Debug, Clone)]
enum Val {
    Num(f64),
    Str(String),
    Bool(bool),
    None,
    List(Vec<Val>),
    Filter(Filter),
    Stream(Series),
}

impl Val {
    fn kind(&self) -> &'static str {
        match self {
            Val::Num(_) => "a number",
            Val::Str(_) => "a string",
            Val::Bool(_) => "a boolean",
            Val::None => "None",
            Val::List(_) => "a list",
            Val::Filter(_) => "a filter",
            Val::Stream(_) => "a stream",
        }
    }
}

/// Why a program stopped: the error code and message of the stream's `error` message.
struct Failure {
    code: &'static str,
    message: String,
}

fn failure(message: impl Into<String>) -> Failure {
    Failure {
        code: "ANALYTICS_PROGRAM_ERROR",
        message: message.into(),
    }
}

/// The window cut into buckets (Unix seconds).
#[derive(Debug, Clone, Copy)]
struct Buckets {
    start: f64,
    step: f64,
    count: usize,
}

impl Buckets {
    fn new(start: f64, stop: f64, resolution_ms: Option<f64>) -> Buckets {
        const STEPS: [f64; 7] = [1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0];
        let range = (stop - start).max(1.0);
        let step = match resolution_ms {
            Some(ms) if ms.is_finite() && ms >= 1000.0 => (ms / 1000.0).round(),
            _ => STEPS
                .iter()
                .copied()
                .find(|s| range / s <= 360.0)
                .unwrap_or(3600.0),
        };
        let aligned = (start / step).floor() * step;
        let count = ((stop - aligned) / step).ceil().clamp(1.0, 100_000.0) as usize;
        Buckets {
            start: aligned,
            step,
            count,
        }
    }

    fn index(&self, unix: f64) -> usize {
        ((unix - self.start) / self.step).floor().max(0.0) as usize
    }
}

/// A program's run: the window's samples and what it has defined and published.
struct Run<'a> {
    samples: &'a [(f64, Sample)],
    buckets: Buckets,
    vars: BTreeMap<String, Val>,
    published: Vec<(String, Series)>,
}

impl Run<'_> {
    fn statement(&mut self, s: &signalflow::Statement) -> Result<(), Failure> {
        let v = self.eval(&s.expr)?;
        if let Some(name) = &s.assign {
            self.vars.insert(name.clone(), v);
        }
        Ok(())
    }

    fn eval(&mut self, e: &Ast) -> Result<Val, Failure> {
        Ok(match e {
            Ast::Number(n) => Val::Num(*n),
            Ast::Str(s) => Val::Str(s.clone()),
            Ast::Bool(b) => Val::Bool(*b),
            Ast::None => Val::None,
            Ast::Name(n) => self.vars.get(n).cloned().ok_or_else(|| Failure {
                code: "ANALYTICS_PROGRAM_NAME_ERROR",
                message: format!("Unknown identifier '{n}'"),
            })?,
            Ast::List(items) => Val::List(
                items
                    .iter()
                    .map(|i| self.eval(i))
                    .collect::<Result<_, _>>()?,
            ),
            Ast::Call(f, args) => self.call(f, args)?,
            Ast::Method(target, name, args) => {
                let target = self.eval(target)?;
                self.method(target, name, args)?
            }
            Ast::Neg(x) => arith(Val::Num(0.0), '-', self.eval(x)?)?,
            Ast::Bin(a, op, b) => {
                let (a, b) = (self.eval(a)?, self.eval(b)?);
                arith(a, *op, b)?
            }
            Ast::And(a, b) | Ast::Or(a, b) => {
                let (a, b) = (self.eval(a)?, self.eval(b)?);
                match (a, b) {
                    (Val::Filter(a), Val::Filter(b)) => Val::Filter(match e {
                        Ast::And(..) => Filter::And(Box::new(a), Box::new(b)),
                        _ => Filter::Or(Box::new(a), Box::new(b)),
                    }),
                    (a, b) => {
                        return Err(failure(format!(
                            "and/or combine filters, not {} and {}",
                            a.kind(),
                            b.kind()
                        )));
                    }
                }
            }
            Ast::Not(x) => match self.eval(x)? {
                Val::Filter(f) => Val::Filter(Filter::Not(Box::new(f))),
                other => {
                    return Err(failure(format!(
                        "not negates a filter, not {}",
                        other.kind()
                    )));
                }
            },
        })
    }

    fn arg(&mut self, args: &Args, index: usize, name: &str) -> Result<Option<Val>, Failure> {
        args.get(index, name).map(|a| self.eval(a)).transpose()
    }

    fn call(&mut self, f: &str, args: &Args) -> Result<Val, Failure> {
        match f {
            "data" => {
                let Some(Val::Str(metric)) = self.arg(args, 0, "metric")? else {
                    return Err(failure("data() needs a metric name"));
                };
                let filter = match self.arg(args, 1, "filter")? {
                    None | Some(Val::None) => None,
                    Some(Val::Filter(f)) => Some(f),
                    Some(other) => {
                        return Err(failure(format!(
                            "filter= takes a filter, not {}",
                            other.kind()
                        )));
                    }
                };
                let rollup = match self.arg(args, 2, "rollup")? {
                    None | Some(Val::None) => "sum".to_string(),
                    Some(Val::Str(r)) => r,
                    Some(other) => {
                        return Err(failure(format!(
                            "rollup= takes a string, not {}",
                            other.kind()
                        )));
                    }
                };
                Ok(Val::Stream(self.data(&metric, filter.as_ref(), &rollup)?))
            }
            "filter" => {
                let mut values = Vec::new();
                for a in &args.positional {
                    match self.eval(a)? {
                        Val::Str(s) => values.push(s),
                        Val::List(items) => {
                            for i in items {
                                match i {
                                    Val::Str(s) => values.push(s),
                                    other => {
                                        return Err(failure(format!(
                                            "filter() values are strings, not {}",
                                            other.kind()
                                        )));
                                    }
                                }
                            }
                        }
                        other => {
                            return Err(failure(format!(
                                "filter() takes strings, not {}",
                                other.kind()
                            )));
                        }
                    }
                }
                if values.len() < 2 {
                    return Err(failure("filter() needs a dimension and at least one value"));
                }
                let dim = values.remove(0);
                Ok(Val::Filter(Filter::Match(dim, values)))
            }
            other => Err(Failure {
                code: "ANALYTICS_PROGRAM_NAME_ERROR",
                message: format!("Unknown function '{other}'"),
            }),
        }
    }

    /// The time series of `metric` in each bucket.
    fn data(&self, metric: &str, filter: Option<&Filter>, rollup: &str) -> Result<Series, Failure> {
        let quantile = DURATION_METRICS
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, q)| *q);
        if quantile.is_none() && !COUNT_METRICS.contains(&metric) {
            return Ok(Series::new());
        }
        if !matches!(
            rollup,
            "sum" | "rate" | "average" | "min" | "max" | "count" | "latest"
        ) {
            return Err(failure(format!("Unknown rollup '{rollup}'")));
        }
        // Time series → bucket → second → (requests, latency parts).
        type Seconds = BTreeMap<i64, (f64, Vec<(f64, Latency)>)>;
        let mut acc: BTreeMap<Key, Vec<Seconds>> = BTreeMap::new();
        for (unix, s) in self.samples {
            let key = dimensions(s);
            if filter.is_some_and(|f| !f.matches(&key)) {
                continue;
            }
            let slots = acc
                .entry(key)
                .or_insert_with(|| vec![Seconds::new(); self.buckets.count]);
            if let Some(bucket) = slots.get_mut(self.buckets.index(*unix)) {
                let second = bucket.entry(*unix as i64).or_default();
                second.0 += s.requests;
                second.1.push((s.requests, s.latency));
            }
        }
        let step = self.buckets.step;
        Ok(acc
            .into_iter()
            .map(|(key, slots)| {
                let values = slots
                    .iter()
                    .map(|seconds| {
                        let seconds: Vec<&(f64, Vec<(f64, Latency)>)> =
                            seconds.values().filter(|s| s.0 > 0.0).collect();
                        if seconds.is_empty() {
                            return None;
                        }
                        if let Some(q) = quantile {
                            let parts: Vec<(f64, Latency)> =
                                seconds.iter().flat_map(|s| s.1.iter().copied()).collect();
                            return mixture_quantile(&parts, q).map(|l| l * 1e9);
                        }
                        let counts: Vec<f64> = seconds.iter().map(|s| s.0).collect();
                        let sum: f64 = counts.iter().sum();
                        Some(match rollup {
                            "rate" => sum / step,
                            "average" => sum / counts.len() as f64,
                            "min" => counts.iter().copied().fold(f64::INFINITY, f64::min),
                            "max" => counts.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                            "count" => counts.len() as f64,
                            "latest" => counts.last().copied().unwrap_or_default(),
                            _ => sum,
                        })
                    })
                    .collect();
                (key, values)
            })
            .collect())
    }

    fn method(&mut self, target: Val, name: &str, args: &Args) -> Result<Val, Failure> {
        let Val::Stream(stream) = target else {
            return Err(failure(format!(
                ".{name}() applies to a stream, not {}",
                target.kind()
            )));
        };
        match name {
            "sum" | "mean" | "min" | "max" | "count" | "percentile" => {
                let pct = match name {
                    "percentile" => match self.arg(args, 0, "pct")? {
                        Some(Val::Num(p)) if (0.0..=100.0).contains(&p) => Some(p),
                        _ => return Err(failure(".percentile() needs pct between 0 and 100")),
                    },
                    _ => None,
                };
                let by = self.arg(args, 9, "by")?;
                let over = self.arg(args, 9, "over")?;
                match (by, over) {
                    (_, Some(Val::Str(over))) => {
                        let secs = duration_secs(&over)
                            .ok_or_else(|| failure(format!("over='{over}' is not a duration")))?;
                        let n = ((secs / self.buckets.step).ceil() as usize).max(1);
                        Ok(Val::Stream(over_time(stream, name, pct, n)))
                    }
                    (by, None) => {
                        let by: Vec<String> = match by {
                            None | Some(Val::None) => Vec::new(),
                            Some(Val::Str(d)) => vec![d],
                            Some(Val::List(ds)) => ds
                                .into_iter()
                                .map(|d| match d {
                                    Val::Str(d) => Ok(d),
                                    other => Err(failure(format!(
                                        "by= takes dimension names, not {}",
                                        other.kind()
                                    ))),
                                })
                                .collect::<Result<_, _>>()?,
                            Some(other) => {
                                return Err(failure(format!(
                                    "by= takes dimension names, not {}",
                                    other.kind()
                                )));
                            }
                        };
                        Ok(Val::Stream(across(
                            stream,
                            name,
                            pct,
                            &by,
                            self.buckets.count,
                        )))
                    }
                    (_, Some(other)) => Err(failure(format!(
                        "over= takes a duration such as '5m', not {}",
                        other.kind()
                    ))),
                }
            }
            "scale" => match self.arg(args, 0, "multiplier")? {
                Some(Val::Num(m)) => arith(Val::Stream(stream), '*', Val::Num(m)),
                _ => Err(failure(".scale() needs a number")),
            },
            "publish" => {
                let label = match self.arg(args, 0, "label")? {
                    Some(Val::Str(l)) => l,
                    _ => format!("stream{}", self.published.len()),
                };
                let enabled = !matches!(self.arg(args, 1, "enable")?, Some(Val::Bool(false)));
                if enabled {
                    self.published.push((label, stream.clone()));
                }
                Ok(Val::Stream(stream))
            }
            other => Err(Failure {
                code: "ANALYTICS_PROGRAM_NAME_ERROR",
                message: format!("Unknown method '{other}'"),
            }),
        }
    }
}

/// `5s`, `1m`, `2h`, `1d` in seconds.
fn duration_secs(text: &str) -> Option<f64> {
    let text = text.trim();
    let (n, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: f64 = n.parse().ok()?;
    Some(n * duration_unit_secs(unit)?)
}

/// One value from several (`sum`, `mean`, `min`, `max`, `count`, `percentile`); none without
/// values.
fn reduce(name: &str, pct: Option<f64>, values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    Some(match name {
        "sum" => values.iter().sum(),
        "mean" => values.iter().sum::<f64>() / n,
        "min" => values.iter().copied().fold(f64::INFINITY, f64::min),
        "max" => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        "count" => n,
        _ => {
            let mut sorted = values.to_vec();
            sorted.sort_by(f64::total_cmp);
            let rank = (pct.unwrap_or(50.0) / 100.0 * n).ceil().max(1.0) as usize;
            sorted.get(rank - 1).copied().unwrap_or_default()
        }
    })
}

/// An aggregation across time series, per bucket, grouped by the `by` dimensions.
fn across(stream: Series, name: &str, pct: Option<f64>, by: &[String], count: usize) -> Series {
    let mut groups: BTreeMap<Key, Vec<Vec<f64>>> = BTreeMap::new();
    for (key, values) in stream {
        let group: Key = by
            .iter()
            .filter_map(|d| key.iter().find(|(k, _)| k == d).cloned())
            .collect();
        let slots = groups
            .entry(group)
            .or_insert_with(|| vec![Vec::new(); count]);
        for (slot, v) in slots.iter_mut().zip(values) {
            if let Some(v) = v {
                slot.push(v);
            }
        }
    }
    groups
        .into_iter()
        .map(|(key, slots)| (key, slots.iter().map(|vs| reduce(name, pct, vs)).collect()))
        .collect()
}

/// A transformation over the last `n` buckets, per time series.
fn over_time(stream: Series, name: &str, pct: Option<f64>, n: usize) -> Series {
    stream
        .into_iter()
        .map(|(key, values)| {
            let out = (0..values.len())
                .map(|i| {
                    let window: Vec<f64> = values
                        .get(i.saturating_sub(n - 1)..=i)
                        .unwrap_or_default()
                        .iter()
                        .flatten()
                        .copied()
                        .collect();
                    reduce(name, pct, &window)
                })
                .collect();
            (key, out)
        })
        .collect()
}

fn arith(a: Val, o: char, b: Val) -> Result<Val, Failure> {
    let (a, b) = match (a, b) {
        (Val::Num(x), Val::Num(y)) => (Operand::Scalar(x), Operand::Scalar(y)),
        (Val::Num(x), Val::Stream(s)) => (Operand::Scalar(x), Operand::Series(s)),
        (Val::Stream(s), Val::Num(y)) => (Operand::Series(s), Operand::Scalar(y)),
        (Val::Stream(sa), Val::Stream(sb)) => (Operand::Series(sa), Operand::Series(sb)),
        (a, b) => {
            return Err(failure(format!(
                "'{o}' between {} and {}",
                a.kind(),
                b.kind()
            )));
        }
    };
    Ok(match combine(a, o, b) {
        Operand::Scalar(x) => Val::Num(x),
        Operand::Series(s) => Val::Stream(s),
    })
}

/// A time series ID as SignalFx spells them: 11 characters of base64url.
fn ts_id(label: &str, index: usize, key: &Key) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let text = format!("{label}/{index}/{key:?}");
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..11)
        .map(|i| ALPHABET[((h >> (58 - (6 * i).min(58))) & 63) as usize] as char)
        .collect()
}

/// One Server-Sent Event, its JSON over several `data:` lines as SignalFlow prints it.
fn event(out: &mut String, name: &str, data: &Value) {
    out.push_str("event: ");
    out.push_str(name);
    out.push('\n');
    let text = serde_json::to_string_pretty(data).unwrap_or_else(|_| "{}".into());
    for line in text.lines() {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
}

fn execute(
    world: &World,
    params: &BTreeMap<String, String>,
    program: &str,
    mode: Option<FaultMode>,
) -> Response<Body> {
    let now = world.unix(world.now());
    let ms = |k: &str| params.get(k).and_then(|v| v.trim().parse::<f64>().ok());
    let Some(start) = ms("start").filter(|s| s.is_finite()).map(|s| s / 1000.0) else {
        return error(400, "start (milliseconds) is required by the emulator");
    };
    let stop = ms("stop")
        .filter(|s| s.is_finite())
        .map_or(now, |s| s / 1000.0);
    if stop <= start {
        return error(400, "start must be before stop");
    }
    // What is yet to come is not computed: the window ends now at the latest.
    let stop = stop.min(now).max(start);
    let buckets = Buckets::new(start, stop, ms("resolution"));
    let now_ms = (now * 1000.0) as i64;
    let mut out = String::new();
    event(
        &mut out,
        "control-message",
        &json!({"event": "STREAM_START", "timestampMs": now_ms}),
    );
    let handle = ts_id(program, 0, &Key::new());
    event(
        &mut out,
        "control-message",
        &json!({"event": "JOB_START", "handle": handle, "timestampMs": now_ms}),
    );
    let samples: Vec<(f64, Sample)> = world
        .samples(world.from_unix(start), world.from_unix(stop))
        .into_iter()
        .map(|(sec, s)| (world.unix(sec as f64), s))
        .filter(|(unix, _)| unix + 1.0 > start && *unix < stop)
        .collect();
    let mut run = Run {
        samples: &samples,
        buckets,
        vars: BTreeMap::new(),
        published: Vec::new(),
    };
    let ran = signalflow::parse(program)
        .map_err(|e| Failure {
            code: "ANALYTICS_PROGRAM_SYNTAX_ERROR",
            message: format!("Syntax error: {e}"),
        })
        .and_then(|statements| statements.iter().try_for_each(|s| run.statement(s)));
    if let Err(f) = ran {
        event(
            &mut out,
            "error",
            &json!({"error": 400, "errorType": f.code, "message": f.message,
                "errors": [{"code": f.code, "context": {}}]}),
        );
        return full(200, "text/event-stream", out);
    }
    event(
        &mut out,
        "message",
        &json!({"logicalTimestampMs": (buckets.start * 1000.0) as i64,
            "message": {"messageCode": "JOB_RUNNING_RESOLUTION", "messageLevel": "INFO",
                "contents": {"resolutionMs": (buckets.step * 1000.0) as i64}}}),
    );
    // Published time series: ID, values by bucket.
    let mut series: Vec<(String, Vec<Option<f64>>)> = Vec::new();
    for (index, (label, stream)) in run.published.iter().enumerate() {
        for (key, values) in stream {
            let id = ts_id(label, index, key);
            let mut properties: serde_json::Map<String, Value> =
                key.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            properties.insert("sf_streamLabel".into(), json!(label));
            properties.insert("sf_type".into(), json!("MetricTimeSeries"));
            event(
                &mut out,
                "metadata",
                &json!({"tsId": id, "properties": properties}),
            );
            series.push((id, values.clone()));
        }
    }
    series_fault(mode, &mut series, buckets.count);
    for i in 0..buckets.count {
        let points: Vec<Value> = series
            .iter()
            .filter_map(|(id, values)| match values.get(i) {
                Some(Some(v)) => Some(json!({"tsId": id, "value": v})),
                // Only a fault sends nulls: SignalFlow leaves a series out of a bucket.
                Some(None) if mode == Some(FaultMode::NullPoints) => {
                    Some(json!({"tsId": id, "value": null}))
                }
                _ => None,
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        let at = ((buckets.start + i as f64 * buckets.step) * 1000.0) as i64;
        event(
            &mut out,
            "data",
            &json!({"data": points, "logicalTimestampMs": at, "maxDelayMs": 0}),
        );
    }
    event(
        &mut out,
        "control-message",
        &json!({"event": "END_OF_CHANNEL", "timestampMs": now_ms}),
    );
    full(200, "text/event-stream", out)
}

/// What a fault mode does to the published series.
fn series_fault(
    mode: Option<FaultMode>,
    series: &mut Vec<(String, Vec<Option<f64>>)>,
    count: usize,
) {
    let last_bucket = |v: Option<f64>| {
        let mut values = vec![None; count];
        if let Some(last) = values.last_mut() {
            *last = v;
        }
        values
    };
    match mode {
        Some(FaultMode::Empty) => series.clear(),
        Some(FaultMode::NullPoints) => {
            if series.is_empty() {
                series.push(("AAAAAFAULT0".into(), vec![None; count]));
            }
            for (_, values) in series.iter_mut() {
                values.iter_mut().for_each(|v| *v = None);
            }
        }
        Some(FaultMode::SeveralSeries) => {
            let base = series
                .first()
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| last_bucket(Some(1.0)));
            let doubled = base.iter().map(|v| v.map(|x| x * 2.0)).collect();
            *series = vec![
                ("AAAAAFAULT0".into(), base),
                ("AAAAAFAULT1".into(), doubled),
            ];
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_durations() {
        assert!(glob("podinfo*", "podinfo-primary") && !glob("podinfo", "podinfo-primary"));
        assert!(glob("*info*", "podinfo-primary") && glob("*", ""));
        assert!(!glob("a*b", "ac"));
        assert_eq!(duration_secs("5m"), Some(300.0));
        assert_eq!(duration_secs("30s"), Some(30.0));
        assert_eq!(duration_secs("5"), None);
        assert_eq!(duration_secs("5y"), None);
    }

    #[test]
    fn buckets_fit_the_window() {
        let b = Buckets::new(100.0, 160.0, None);
        assert_eq!((b.step, b.count), (1.0, 60));
        let b = Buckets::new(0.0, 600.0, None);
        assert_eq!(b.step, 5.0);
        let b = Buckets::new(0.0, 600.0, Some(60_000.0));
        assert_eq!((b.step, b.count), (60.0, 10));
        assert_eq!(b.index(119.0), 1);
    }

    #[test]
    fn reductions_over_time_and_across_series() {
        let key = |v: &str| vec![("sf_service".to_string(), v.to_string())];
        let stream = Series::from([
            (key("a"), vec![Some(1.0), None, Some(3.0)]),
            (key("b"), vec![Some(10.0), Some(20.0), None]),
        ]);
        let summed = across(stream.clone(), "sum", None, &[], 3);
        assert_eq!(summed[&Key::new()], vec![Some(11.0), Some(20.0), Some(3.0)]);
        let by = across(stream.clone(), "max", None, &["sf_service".into()], 3);
        assert_eq!(by.len(), 2);
        let over = over_time(stream, "sum", None, 2);
        assert_eq!(over[&key("a")], vec![Some(1.0), Some(1.0), Some(3.0)]);
        assert_eq!(over[&key("b")], vec![Some(10.0), Some(30.0), Some(20.0)]);
        assert_eq!(
            reduce("percentile", Some(50.0), &[4.0, 1.0, 3.0, 2.0]),
            Some(2.0)
        );
        assert_eq!(reduce("mean", None, &[]), None);
    }

    #[test]
    fn ts_ids_look_like_signalfx_ones() {
        let id = ts_id("A", 0, &Key::new());
        assert_eq!(id.len(), 11);
        assert_ne!(id, ts_id("A", 1, &Key::new()));
    }
}
