//! A Graphite render API emulator answering from the traffic world (the render API as
//! graphite-web documents it): `GET /render?target=...&from=...&until=...&format=json` (also
//! `POST` with the parameters as a form), behind HTTP basic auth (`username`/`password` of the
//! scenario's `graphite` section; both empty: none).
//!
//! Series: the statsd timers Micrometer's `http.server.requests` writes through a statsd
//! exporter, one per workload and status code, at one point per second (a retention of
//! `1s:1h`, so `from` is clamped to the last hour; the second still being flushed is null):
//!
//! ```text
//! stats.timers.httpServerRequests.app.<workload>.exception.None.method.GET
//!     .outcome.<SUCCESS|CLIENT_ERROR|SERVER_ERROR|...>.status.<code>.uri.root.<leaf>
//! ```
//!
//! Leaves: `count` (requests in the second), `count_ps` (per second), `sum`, `mean`, `median`,
//! `upper_90`, `upper_99` (milliseconds). Flagger's documented success rate,
//! `asPercent(sumSeries(...outcome.{CLIENT_ERROR,INFORMATIONAL,REDIRECTION,SUCCESS}...count),
//! sumSeries(...outcome.*...count))`, reads the world's.
//!
//! Targets (see `target`): path patterns with `*`, `?`, `[...]`, `{a,b}`; `sumSeries` (`sum`),
//! `averageSeries` (`avg`), `maxSeries`, `minSeries`, `divideSeries`, `asPercent`, `scale`,
//! `offset`, `summarize` (`sum`, `avg`, `max`, `min`, `last`; the interval quoted or not),
//! `alias`, `aliasByNode`, `transformNull`, `keepLastValue`. `from`/`until`: `-5min`,
//! `-30s`, `-1h`, `-1d`, `now`, `now-5min`, Unix seconds (defaults `-24h` and `now`).
//! `noNullPoints=true` drops null points. Any other `format` than `json` is refused.

pub mod target;

use crate::metric_emulator::{self, Emulator, with_headers};
use crate::provider_faults::{FaultMode, ProviderFault};
use crate::server::{Body, full, json_response, query_pairs};
use crate::traffic::latency::{Latency, mixture_quantile};
use crate::traffic::world::World;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use target::{Arg, Expr};

/// Seconds of data the emulator keeps (the world's history).
const RETENTION_SECS: i64 = 3600;
/// Graphite's default `from`.
const DEFAULT_FROM_SECS: i64 = 24 * 3600;

/// The scenario's `graphite` section: the credentials the emulator accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphiteConfig {
    #[serde(default = "default_username")]
    pub username: String,
    #[serde(default = "default_password")]
    pub password: String,
    /// A fault active from the start.
    #[serde(default)]
    pub fault: Option<ProviderFault>,
}

impl Default for GraphiteConfig {
    fn default() -> Self {
        GraphiteConfig {
            username: default_username(),
            password: default_password(),
            fault: None,
        }
    }
}

fn default_username() -> String {
    "serin".into()
}

fn default_password() -> String {
    "serin-graphite-password".into()
}

pub type Graphite = Emulator<GraphiteConfig>;

/// A rendered series: its name and one value per `step` seconds from `start` (Unix).
#[derive(Debug, Clone, PartialEq)]
struct Series {
    name: String,
    start: i64,
    step: i64,
    values: Vec<Option<f64>>,
}

fn bad_request(message: &str) -> Response<Body> {
    full(400, "text/plain", format!("Bad Request: {message}\n"))
}

pub async fn handle(
    graphite: Arc<Graphite>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().as_str().to_string();
    if path != "/render" || !matches!(method.as_str(), "GET" | "POST") {
        return Ok(full(404, "text/html", "<h1>Not Found</h1>\n"));
    }
    if !authorized(&graphite.config, &req) {
        let mut r = full(
            401,
            "text/html",
            "<html><head><title>401 Authorization Required</title></head></html>\n",
        );
        if let Ok(v) = "Basic realm=\"graphite\"".parse() {
            r.headers_mut().insert("www-authenticate", v);
        }
        return Ok(r);
    }
    let mut params: Vec<(String, String)> = query_pairs(req.uri());
    if method == "POST" {
        match req.into_body().collect().await {
            Ok(b) => params.extend(form_urlencoded::parse(&b.to_bytes()).into_owned()),
            Err(e) => return Ok(bad_request(&format!("reading the body: {e}"))),
        }
    }
    let fault = graphite.faults.take();
    if let Some(r) = transport_fault(fault.as_ref()).await {
        return Ok(r);
    }
    Ok(render(&graphite.world, &params, fault.map(|f| f.mode)))
}

fn authorized(config: &GraphiteConfig, req: &Request<Incoming>) -> bool {
    if config.username.is_empty() && config.password.is_empty() {
        return true;
    }
    let expected = format!(
        "Basic {}",
        base64(format!("{}:{}", config.username, config.password).as_bytes())
    );
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected)
}

/// Standard base64 with padding (the basic auth header).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Faults that replace the answer: 429 (a hosted Graphite's rate limit), 5xx, hanging.
async fn transport_fault(fault: Option<&ProviderFault>) -> Option<Response<Body>> {
    metric_emulator::transport_fault(
        fault,
        || {
            let limited = full(
                429,
                "text/plain",
                "Too Many Requests: rate limit exceeded\n",
            );
            with_headers(limited, &[("retry-after", "1")])
        },
        || full(504, "text/html", "<h1>Gateway Timeout</h1>\n"),
    )
    .await
}

fn render(world: &World, params: &[(String, String)], mode: Option<FaultMode>) -> Response<Body> {
    let param = |k: &str| {
        params
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.trim().to_string())
    };
    match param("format").as_deref() {
        Some("json") => {}
        other => {
            return bad_request(&format!(
                "format {other:?}: the emulator renders format=json only"
            ));
        }
    }
    let now = world.unix(world.now()).floor() as i64;
    let from = match param("from").map(|f| at_time(&f, now)) {
        None => now - DEFAULT_FROM_SECS,
        Some(Ok(t)) => t,
        Some(Err(e)) => return bad_request(&e),
    };
    let until = match param("until").map(|u| at_time(&u, now)) {
        None => now,
        Some(Ok(t)) => t,
        Some(Err(e)) => return bad_request(&e),
    };
    let retained = |t: i64| t.clamp(now - RETENTION_SECS, now);
    let data = Data::read(world, retained(from), retained(until), now);
    let mut out: Vec<Series> = Vec::new();
    for (_, target) in params.iter().filter(|(k, _)| k == "target") {
        let expr = match target::parse(target) {
            Ok(e) => e,
            Err(e) => return bad_request(&format!("invalid target {target:?}: {e}")),
        };
        match eval(&data, &expr) {
            Ok(Val::Series(s)) => out.extend(s),
            Ok(_) => return bad_request(&format!("target {target:?} is not a series")),
            Err(e) => return bad_request(&e),
        }
    }
    if let Some(mode) = mode {
        fault_series(mode, &mut out, &data);
    }
    let no_nulls = param("noNullPoints").is_some_and(|v| v == "true");
    let body: Vec<Value> = out
        .iter()
        .map(|s| {
            let points: Vec<Value> = s
                .values
                .iter()
                .enumerate()
                .filter(|(_, v)| !(no_nulls && v.is_none()))
                .map(|(i, v)| json!([v.filter(|x| x.is_finite()), s.start + i as i64 * s.step]))
                .collect();
            json!({"target": s.name, "tags": {"name": s.name}, "datapoints": points})
        })
        .collect();
    json_response(200, &Value::Array(body))
}

/// What a data-shaping fault does to the answer.
fn fault_series(mode: FaultMode, out: &mut Vec<Series>, data: &Data) {
    let one = |value: Option<f64>| Series {
        name: "fault".into(),
        start: data.start,
        step: 1,
        values: vec![value; data.len().max(1)],
    };
    match mode {
        FaultMode::Empty => out.clear(),
        FaultMode::NullPoints => {
            if out.is_empty() {
                out.push(one(None));
            }
            for s in out.iter_mut() {
                s.values.iter_mut().for_each(|v| *v = None);
            }
        }
        FaultMode::SeveralSeries => {
            let base = out.first().cloned().unwrap_or_else(|| one(Some(1.0)));
            let mut doubled = base.clone();
            doubled.name = format!("{}.fault-series-1", base.name);
            doubled
                .values
                .iter_mut()
                .for_each(|v| *v = v.map(|x| x * 2.0));
            *out = vec![base, doubled];
        }
        _ => {}
    }
}

/// A `from`/`until` value in Unix seconds: `now`, `-5min`, `now-1h`, or Unix seconds.
fn at_time(text: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Ok(unix) = text.parse::<i64>() {
        return Ok(unix);
    }
    let offset = text.strip_prefix("now").unwrap_or(text);
    let (sign, amount) = match offset.as_bytes().first() {
        Some(b'-') => (-1, &offset[1..]),
        Some(b'+') => (1, &offset[1..]),
        _ => {
            return Err(format!(
                "invalid time {text:?} (the emulator takes now, -5min, now-1h or Unix seconds)"
            ));
        }
    };
    interval_secs(amount)
        .map(|s| now + sign * s)
        .map_err(|e| format!("invalid time {text:?}: {e}"))
}

/// An interval string (`30s`, `5min`, `1m`, `1h`, `1d`, `1w`) in seconds.
fn interval_secs(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = text.split_at(digits);
    let n: i64 = n.parse().map_err(|_| format!("{text:?} has no number"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let secs = match unit.as_str() {
        u if u.starts_with("mon") => 30 * 86400,
        u if u.starts_with("min") || u == "m" => 60,
        u if u.starts_with('s') => 1,
        u if u.starts_with('h') => 3600,
        u if u.starts_with('d') => 86400,
        u if u.starts_with('w') => 7 * 86400,
        u if u.starts_with('y') => 365 * 86400,
        _ => return Err(format!("{text:?} has no unit (s, min, h, d, w)")),
    };
    if n <= 0 || n > 10 * 365 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(n * secs)
}

/// One second of one series path: requests and their latencies.
#[derive(Default, Clone)]
struct Second {
    requests: f64,
    parts: Vec<(f64, Latency)>,
}

/// The world's requests over the window, per series path and second.
struct Data {
    /// First point (Unix seconds) and one past the last.
    start: i64,
    end: i64,
    paths: BTreeMap<String, BTreeMap<i64, Second>>,
}

const LEAVES: [&str; 7] = [
    "count", "count_ps", "sum", "mean", "median", "upper_90", "upper_99",
];

impl Data {
    /// Points from `from` to `until` included; the second being flushed (`now`) is null.
    /// Every series written during the retention is there, with null points where it had no
    /// requests (as whisper files outlive their traffic).
    fn read(world: &World, from: i64, until: i64, now: i64) -> Data {
        let end = (until + 1).max(from);
        let mut paths: BTreeMap<String, BTreeMap<i64, Second>> = BTreeMap::new();
        let retained = world.from_unix((now - RETENTION_SECS) as f64);
        for (sec, s) in world.samples(retained, world.from_unix(now as f64)) {
            let unix = world.unix(sec as f64).floor() as i64;
            let outcome = match s.code {
                100..=199 => "INFORMATIONAL",
                200..=299 => "SUCCESS",
                300..=399 => "REDIRECTION",
                400..=499 => "CLIENT_ERROR",
                _ => "SERVER_ERROR",
            };
            let path = format!(
                "stats.timers.httpServerRequests.app.{}.exception.None.method.GET.outcome.{outcome}.status.{}.uri.root",
                s.backend.workload, s.code
            );
            let seconds = paths.entry(path).or_default();
            if unix < from || unix >= end.min(now) {
                continue;
            }
            let second = seconds.entry(unix).or_default();
            second.requests += s.requests;
            second.parts.push((s.requests, s.latency));
        }
        Data {
            start: from,
            end,
            paths,
        }
    }

    fn len(&self) -> usize {
        usize::try_from(self.end - self.start).unwrap_or(0)
    }

    /// Every series a path pattern matches, in name order.
    fn fetch(&self, pattern: &str) -> Result<Vec<Series>, String> {
        let nodes: Vec<regex::Regex> = pattern
            .split('.')
            .map(|n| regex::Regex::new(&target::node_regex(n)))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("invalid pattern {pattern:?}: {e}"))?;
        let mut out = Vec::new();
        for (path, seconds) in &self.paths {
            for leaf in LEAVES {
                let name = format!("{path}.{leaf}");
                let parts: Vec<&str> = name.split('.').collect();
                if parts.len() != nodes.len()
                    || !parts.iter().zip(&nodes).all(|(p, re)| re.is_match(p))
                {
                    continue;
                }
                let values = (self.start..self.end)
                    .map(|t| seconds.get(&t).and_then(|s| leaf_value(leaf, s)))
                    .collect();
                out.push(Series {
                    name,
                    start: self.start,
                    step: 1,
                    values,
                });
            }
        }
        Ok(out)
    }
}

fn leaf_value(leaf: &str, s: &Second) -> Option<f64> {
    if s.requests <= 0.0 {
        return None;
    }
    let ms = |secs: f64| secs * 1000.0;
    let mean = s.parts.iter().map(|(n, l)| n * l.mean()).sum::<f64>() / s.requests;
    match leaf {
        "count" | "count_ps" => Some(s.requests),
        "sum" => Some(ms(mean * s.requests)),
        "mean" => Some(ms(mean)),
        "median" => mixture_quantile(&s.parts, 0.5).map(ms),
        "upper_90" => mixture_quantile(&s.parts, 0.9).map(ms),
        _ => mixture_quantile(&s.parts, 0.99).map(ms),
    }
}

/// An evaluated argument (strings and bools are read from the expression itself).
enum Val {
    Series(Vec<Series>),
    Number(f64),
    Other,
}

fn eval(data: &Data, e: &Expr) -> Result<Val, String> {
    Ok(match e {
        Expr::Path(p) => Val::Series(data.fetch(p)?),
        Expr::Number(n) => Val::Number(*n),
        Expr::Str(_) | Expr::Bool(_) => Val::Other,
        Expr::Call { name, args } => Val::Series(call(data, name, args)?),
    })
}

/// The series of an argument (a path or a call).
fn series_arg(data: &Data, name: &str, arg: Option<&Arg>) -> Result<Vec<Series>, String> {
    match arg.map(|a| eval(data, &a.expr)).transpose()? {
        Some(Val::Series(s)) => Ok(s),
        _ => Err(format!("{name}: a series argument is expected")),
    }
}

/// A positional argument `i` or the keyword `key`.
fn arg<'a>(args: &'a [Arg], i: usize, key: &str) -> Option<&'a Arg> {
    args.iter()
        .find(|a| a.name.as_deref() == Some(key))
        .or_else(|| args.get(i).filter(|a| a.name.is_none()))
}

fn number_arg(data: &Data, name: &str, a: Option<&Arg>) -> Result<Option<f64>, String> {
    match a.map(|a| eval(data, &a.expr)).transpose()? {
        None => Ok(None),
        Some(Val::Number(n)) => Ok(Some(n)),
        Some(_) => Err(format!("{name}: a number argument is expected")),
    }
}

/// A string argument; a bare word (`1min`, as Flagger's documented query writes
/// `{{interval}}`) is taken as its text.
fn string_arg(a: Option<&Arg>) -> Option<String> {
    a.map(|a| match &a.expr {
        Expr::Str(s) | Expr::Path(s) => s.clone(),
        _ => a.text.clone(),
    })
}

fn call(data: &Data, name: &str, args: &[Arg]) -> Result<Vec<Series>, String> {
    let text = |from: usize| {
        args.iter()
            .skip(from)
            .map(|a| a.text.clone())
            .collect::<Vec<_>>()
            .join(",")
    };
    let all_series = || -> Result<Vec<Series>, String> {
        let mut all = Vec::new();
        for a in args {
            all.extend(series_arg(data, name, Some(a))?);
        }
        Ok(all)
    };
    let map = |list: Vec<Series>, f: &dyn Fn(Option<f64>) -> Option<f64>, label: String| {
        list.into_iter()
            .map(|s| Series {
                name: format!("{name}({}{label})", s.name),
                values: s.values.iter().map(|v| f(*v)).collect(),
                ..s
            })
            .collect::<Vec<_>>()
    };
    let extra = |from: usize| {
        let t = text(from);
        if t.is_empty() { t } else { format!(",{t}") }
    };
    Ok(match name {
        "sumSeries" | "sum" | "averageSeries" | "avg" | "maxSeries" | "minSeries" => {
            let list = all_series()?;
            if list.is_empty() {
                return Ok(Vec::new());
            }
            let reduce: fn(&[f64]) -> f64 = match name {
                "sumSeries" | "sum" => |xs| xs.iter().sum(),
                "averageSeries" | "avg" => |xs| xs.iter().sum::<f64>() / xs.len() as f64,
                "maxSeries" => |xs| xs.iter().copied().fold(f64::MIN, f64::max),
                _ => |xs| xs.iter().copied().fold(f64::MAX, f64::min),
            };
            let combined = combine(&list, |xs| (!xs.is_empty()).then(|| reduce(xs)))?;
            vec![Series {
                name: format!("{name}({})", text(0)),
                ..combined
            }]
        }
        "divideSeries" => {
            let dividends = series_arg(data, name, args.first())?;
            let divisor = series_arg(data, name, args.get(1))?;
            let divisor = match divisor.as_slice() {
                [] => None,
                [one] => Some(one),
                _ => return Err("divideSeries: the divisor must be exactly one series".into()),
            };
            dividends
                .into_iter()
                .map(|s| {
                    let values = s
                        .values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| {
                            let d = divisor.and_then(|d| d.values.get(i).copied().flatten());
                            match (v, d) {
                                (Some(v), Some(d)) if d != 0.0 => Some(v / d),
                                _ => None,
                            }
                        })
                        .collect();
                    Series {
                        name: format!("divideSeries({},{})", s.name, text(1)),
                        values,
                        ..s
                    }
                })
                .collect()
        }
        "asPercent" => {
            let list = series_arg(data, name, args.first())?;
            if list.is_empty() {
                return Ok(Vec::new());
            }
            let total: Vec<Option<f64>> = match arg(args, 1, "total")
                .map(|a| eval(data, &a.expr))
                .transpose()?
            {
                None => combine(&list, |xs| (!xs.is_empty()).then(|| xs.iter().sum()))?.values,
                Some(Val::Number(n)) => vec![Some(n); list[0].values.len()],
                Some(Val::Series(t)) => match t.as_slice() {
                    [] => vec![None; list[0].values.len()],
                    [one] => one.values.clone(),
                    _ => return Err("asPercent: the total must be one series or a number".into()),
                },
                Some(_) => return Err("asPercent: the total must be a series or a number".into()),
            };
            list.into_iter()
                .map(|s| {
                    let values = s
                        .values
                        .iter()
                        .zip(&total)
                        .map(|(v, t)| match (v, t) {
                            (Some(v), Some(t)) if *t != 0.0 => Some(v / t * 100.0),
                            _ => None,
                        })
                        .collect();
                    Series {
                        name: format!("asPercent({}{})", s.name, extra(1)),
                        values,
                        ..s
                    }
                })
                .collect()
        }
        "scale" | "offset" => {
            let list = series_arg(data, name, args.first())?;
            let n = number_arg(data, name, args.get(1))?
                .ok_or_else(|| format!("{name}: a number is expected"))?;
            let scale = name == "scale";
            map(
                list,
                &|v| v.map(|x| if scale { x * n } else { x + n }),
                extra(1),
            )
        }
        "transformNull" => {
            let list = series_arg(data, name, args.first())?;
            let default = number_arg(data, name, arg(args, 1, "default"))?.unwrap_or(0.0);
            map(list, &|v| Some(v.unwrap_or(default)), extra(1))
        }
        "keepLastValue" => {
            let list = series_arg(data, name, args.first())?;
            let limit = number_arg(data, name, arg(args, 1, "limit"))?.unwrap_or(f64::INFINITY);
            list.into_iter()
                .map(|s| {
                    let (mut last, mut gap) = (None, 0.0);
                    let values = s
                        .values
                        .iter()
                        .map(|v| match v {
                            Some(x) => {
                                (last, gap) = (Some(*x), 0.0);
                                Some(*x)
                            }
                            None => {
                                gap += 1.0;
                                last.filter(|_| gap <= limit)
                            }
                        })
                        .collect();
                    Series {
                        name: format!("keepLastValue({}{})", s.name, extra(1)),
                        values,
                        ..s
                    }
                })
                .collect()
        }
        "alias" => {
            let list = series_arg(data, name, args.first())?;
            let new = string_arg(args.get(1)).ok_or("alias: a name is expected")?;
            list.into_iter()
                .map(|s| Series {
                    name: new.clone(),
                    ..s
                })
                .collect()
        }
        "aliasByNode" => {
            let list = series_arg(data, name, args.first())?;
            let nodes: Vec<i64> = args
                .iter()
                .skip(1)
                .map(|a| match a.expr {
                    Expr::Number(n) => Ok(n as i64),
                    _ => Err("aliasByNode: node numbers are expected".to_string()),
                })
                .collect::<Result<_, _>>()?;
            list.into_iter()
                .map(|s| {
                    let parts: Vec<&str> = s.name.split('.').collect();
                    let len = parts.len() as i64;
                    let picked: Vec<&str> = nodes
                        .iter()
                        .filter_map(|n| {
                            let i = if *n < 0 { len + n } else { *n };
                            usize::try_from(i).ok().and_then(|i| parts.get(i).copied())
                        })
                        .collect();
                    Series {
                        name: picked.join("."),
                        ..s
                    }
                })
                .collect()
        }
        "summarize" => {
            let list = series_arg(data, name, args.first())?;
            let interval = string_arg(arg(args, 1, "intervalString"))
                .ok_or("summarize: an interval is expected")?;
            let secs = interval_secs(&interval).map_err(|e| format!("summarize: {e}"))?;
            let func = string_arg(arg(args, 2, "func")).unwrap_or_else(|| "sum".into());
            let align = matches!(
                arg(args, 3, "alignToFrom").map(|a| &a.expr),
                Some(Expr::Bool(true))
            );
            list.into_iter()
                .map(|s| summarize(s, secs, &func, align))
                .collect::<Result<_, _>>()?
        }
        other => return Err(format!("unknown function {other:?} (not emulated)")),
    })
}

/// The point-by-point combination of series of one step (their non-null values at each
/// point; `f` of none must be `None`).
fn combine(list: &[Series], f: impl Fn(&[f64]) -> Option<f64>) -> Result<Series, String> {
    let first = list.first().ok_or("no series")?;
    if list
        .iter()
        .any(|s| s.step != first.step || s.start != first.start)
    {
        return Err(
            "series of different steps cannot be combined: summarize after combining".into(),
        );
    }
    let len = list.iter().map(|s| s.values.len()).min().unwrap_or(0);
    let values = (0..len)
        .map(|i| {
            let xs: Vec<f64> = list.iter().filter_map(|s| s.values[i]).collect();
            f(&xs)
        })
        .collect();
    Ok(Series {
        name: String::new(),
        start: first.start,
        step: first.step,
        values,
    })
}

/// Buckets of `secs` (aligned to the epoch, or to the series' start), each the `func` of its
/// non-null points, or null.
fn summarize(s: Series, secs: i64, func: &str, align_to_from: bool) -> Result<Series, String> {
    let start = if align_to_from {
        s.start
    } else {
        s.start - s.start.rem_euclid(secs)
    };
    let end = s.start + s.values.len() as i64 * s.step;
    let buckets = usize::try_from((end - start + secs - 1) / secs).unwrap_or(0);
    let mut grouped: Vec<Vec<f64>> = vec![Vec::new(); buckets];
    for (i, v) in s.values.iter().enumerate() {
        let t = s.start + i as i64 * s.step;
        if let (Some(v), Ok(b)) = (v, usize::try_from((t - start) / secs))
            && let Some(bucket) = grouped.get_mut(b)
        {
            bucket.push(*v);
        }
    }
    let reduce = |xs: &Vec<f64>| -> Result<Option<f64>, String> {
        if xs.is_empty() {
            return Ok(None);
        }
        Ok(Some(match func {
            "sum" | "total" => xs.iter().sum(),
            "avg" | "average" => xs.iter().sum::<f64>() / xs.len() as f64,
            "max" => xs.iter().copied().fold(f64::MIN, f64::max),
            "min" => xs.iter().copied().fold(f64::MAX, f64::min),
            "last" => xs.last().copied().unwrap_or_default(),
            other => return Err(format!("summarize: function {other:?} is not emulated")),
        }))
    };
    let values = grouped.iter().map(reduce).collect::<Result<_, _>>()?;
    Ok(Series {
        name: format!("summarize({}, \"{secs}s\", \"{func}\")", s.name),
        start,
        step: secs,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_basic_credentials() {
        assert_eq!(base64(b"user:secret"), "dXNlcjpzZWNyZXQ=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn times_and_intervals() {
        assert_eq!(at_time("-5min", 1000), Ok(700));
        assert_eq!(at_time("now-1h", 10_000), Ok(6400));
        assert_eq!(at_time("now", 5), Ok(5));
        assert_eq!(at_time("1700000000", 5), Ok(1_700_000_000));
        assert!(at_time("yesterday", 5).is_err());
        assert_eq!(interval_secs("1m"), Ok(60));
        assert_eq!(interval_secs("30s"), Ok(30));
        assert_eq!(interval_secs("2hours"), Ok(7200));
        assert!(interval_secs("0s").is_err() && interval_secs("5").is_err());
    }

    fn series(start: i64, values: &[Option<f64>]) -> Series {
        Series {
            name: "a".into(),
            start,
            step: 1,
            values: values.to_vec(),
        }
    }

    #[test]
    fn summarize_buckets_align_to_the_epoch() {
        let s = series(8, &[Some(1.0), Some(2.0), None, Some(4.0), None, None]);
        let out = summarize(s.clone(), 5, "sum", false).unwrap();
        assert_eq!((out.start, out.step), (5, 5));
        assert_eq!(out.values, [Some(3.0), Some(4.0)]);
        let out = summarize(s, 5, "avg", true).unwrap();
        assert_eq!(out.start, 8);
        assert_eq!(out.values, [Some(7.0 / 3.0), None]);
    }

    #[test]
    fn combined_points_skip_nulls() {
        let a = series(0, &[Some(1.0), None, None]);
        let b = series(0, &[Some(2.0), Some(5.0), None]);
        let sum = combine(&[a, b], |xs| (!xs.is_empty()).then(|| xs.iter().sum())).unwrap();
        assert_eq!(sum.values, [Some(3.0), Some(5.0), None]);
    }
}
