//! An Amazon CloudWatch API emulator answering `GetMetricData` from the traffic world, over
//! the AWS JSON 1.0 protocol (`POST /`, `X-Amz-Target:
//! GraniteServiceVersion20100801.GetMetricData`, `Content-Type: application/x-amz-json-1.0`;
//! the query protocol is not served).
//!
//! Every request must carry a valid SigV4 signature ([`sigv4`]) for the configured access key,
//! secret, session token (when one is configured) and region, service `monitoring`; otherwise
//! the answer is AWS' (`403 InvalidClientTokenId`, `403 SignatureDoesNotMatch`, ...).
//!
//! Metrics: the world's requests, published as an application publishes custom metrics
//! (`PutMetricData` or the embedded metric format), in any namespace outside `AWS/`; one
//! datapoint per simulated request:
//! - `RequestCount` (`Count`): 1;
//! - `ErrorCount` (`Count`): 1 for a 5xx, 0 otherwise (`Sum` is the errors, `Average` the
//!   error ratio);
//! - `Latency` (`Milliseconds`): the request's latency (`Average`, `pNN`, `Sum`).
//!
//! Each is published with these dimension sets, and a query matches only a set exactly (as
//! CloudWatch does): `{appName: <workload>.<namespace>}` (Flagger's documented example),
//! `{Namespace, Workload}`, `{Namespace, Service}`. Statistics: `Sum`, `SampleCount`,
//! `Average`, `pNN`/`pNN.N` (`Minimum` and `Maximum` of counts); periods 1, 5, 10, 30 or a
//! multiple of 60 seconds, aligned to the epoch; a `Unit` other than the metric's matches
//! nothing. Expressions: the arithmetic of [`math`] over other queries' ids (`FILL(x, v)`
//! included); Metrics Insights (`SELECT ...`) is refused. Values come newest first
//! (`ScanBy`), at most `MaxDatapoints` per result (`PartialData` beyond, without a
//! `NextToken`); a timestamp without data has no value.
//!
//! Faults (`provider_faults`): `rate-limit` is `400 Throttling`; `error` a 5xx HTML page from
//! the load balancer in front; `hang` never answers; `empty` answers results without values;
//! `null-points` answers no results at all; `several-series` adds a second result.

pub mod math;
pub mod sigv4;

use crate::metric_emulator::{self, Emulator};
use crate::provider_faults::{FaultMode, ProviderFault};
use crate::server::{Body, full};
use crate::traffic::latency::mixture_quantile;
use crate::traffic::world::{Sample, World};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use math::{Expr, Series, Val};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

const TARGET: &str = "GraniteServiceVersion20100801.GetMetricData";
const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// The scenario's `cloudwatch` section: the credentials and region the emulator accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudWatchConfig {
    #[serde(default = "default_access_key_id")]
    pub access_key_id: String,
    #[serde(default = "default_secret_access_key")]
    pub secret_access_key: String,
    /// When set, requests must carry it (`X-Amz-Security-Token`), as temporary credentials.
    #[serde(default)]
    pub session_token: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub fault: Option<ProviderFault>,
}

impl Default for CloudWatchConfig {
    fn default() -> Self {
        CloudWatchConfig {
            access_key_id: default_access_key_id(),
            secret_access_key: default_secret_access_key(),
            session_token: None,
            region: default_region(),
            fault: None,
        }
    }
}

fn default_access_key_id() -> String {
    "AKIASERINSTACKTEST01".into()
}

fn default_secret_access_key() -> String {
    "serin-stack-cloudwatch-TEST-ONLY-secret".into()
}

fn default_region() -> String {
    "us-east-1".into()
}

pub type CloudWatch = Emulator<CloudWatchConfig>;

/// An AWS JSON error answer, with the query-compatible error header.
fn aws_error(status: u16, code: &str, message: &str) -> Response<Body> {
    let mut r = full(
        status,
        CONTENT_TYPE,
        json!({"__type": code, "message": message}).to_string(),
    );
    if let Ok(v) = format!("{code};Sender").parse() {
        r.headers_mut().insert("x-amzn-query-error", v);
    }
    r
}

fn invalid(message: &str) -> Response<Body> {
    aws_error(400, "InvalidParameterValue", message)
}

pub async fn handle(
    cw: Arc<CloudWatch>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(invalid(&format!("reading the body: {e}"))),
    };
    let signed = sigv4::Signed {
        method: &method,
        path: &path,
        query: &query,
        headers: &headers,
        body: &body,
        now: chrono::Utc::now(),
    };
    let keys = sigv4::Keys {
        access_key_id: &cw.config.access_key_id,
        secret_access_key: &cw.config.secret_access_key,
        session_token: cw.config.session_token.as_deref(),
        region: &cw.config.region,
        service: "monitoring",
    };
    if let Err(refused) = sigv4::verify(&signed, &keys) {
        return Ok(aws_error(403, refused.code, &refused.message));
    }
    let target = headers
        .iter()
        .find(|(n, _)| n == "x-amz-target")
        .map(|(_, v)| v.as_str());
    if method != "POST" || target != Some(TARGET) {
        return Ok(aws_error(
            400,
            "UnknownOperationException",
            "The emulator serves GetMetricData over the AWS JSON 1.0 protocol only",
        ));
    }
    let fault = cw.faults.take();
    if let Some(r) = transport_fault(fault.as_ref()).await {
        return Ok(r);
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return Ok(aws_error(
            400,
            "SerializationException",
            "The request body is not JSON",
        ));
    };
    Ok(
        match get_metric_data(&cw.world, &request, fault.map(|f| f.mode)) {
            Ok(answer) => full(200, CONTENT_TYPE, answer.to_string()),
            Err(message) => invalid(&message),
        },
    )
}

async fn transport_fault(fault: Option<&ProviderFault>) -> Option<Response<Body>> {
    metric_emulator::transport_fault_titled(
        fault,
        "Service Unavailable",
        || aws_error(400, "Throttling", "Rate exceeded"),
        || aws_error(504, "GatewayTimeout", "Gateway Timeout"),
    )
    .await
}

/// A query's statistic over one metric.
struct MetricStat {
    namespace: String,
    metric: String,
    dimensions: BTreeMap<String, String>,
    period: i64,
    stat: String,
    unit: Option<String>,
}

/// One query of the request.
enum Query {
    Stat(MetricStat),
    Expression(Expr),
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn get_metric_data(
    world: &World,
    request: &Value,
    mode: Option<FaultMode>,
) -> Result<Value, String> {
    let queries = request["MetricDataQueries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if queries.is_empty() {
        return Err("The parameter MetricDataQueries is required and must not be empty.".into());
    }
    let (Some(start), Some(end)) = (number(&request["StartTime"]), number(&request["EndTime"]))
    else {
        return Err("The parameters StartTime and EndTime are required.".into());
    };
    if start >= end {
        return Err("The parameter StartTime must be less than the parameter EndTime.".into());
    }
    let max = request["MaxDatapoints"]
        .as_u64()
        .map_or(100_800, |m| m as usize);
    let ascending = request["ScanBy"].as_str() == Some("TimestampAscending");
    let mut parsed: Vec<(String, Query, Value)> = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let id = q["Id"].as_str().unwrap_or_default().to_string();
        let valid_id = id.starts_with(|c: char| c.is_ascii_lowercase())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_id {
            return Err(format!(
                "The value {id:?} for parameter MetricDataQueries.member.{}.Id is not valid: \
                 it must start with a lowercase letter",
                i + 1
            ));
        }
        let query = if let Some(expression) = q["Expression"].as_str() {
            if expression
                .trim_start()
                .to_ascii_uppercase()
                .starts_with("SELECT")
            {
                return Err("Metrics Insights queries are not emulated".into());
            }
            Query::Expression(
                math::parse(expression).map_err(|e| format!("Error in expression '{id}': {e}"))?,
            )
        } else if q["MetricStat"].is_object() {
            Query::Stat(metric_stat(&q["MetricStat"], i + 1)?)
        } else {
            return Err(format!(
                "MetricDataQueries.member.{}: exactly one of MetricStat and Expression is required",
                i + 1
            ));
        };
        parsed.push((id, query, q.clone()));
    }
    // Every statistic's series, then the expressions over them (in dependency order).
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    for (id, query, _) in &parsed {
        if let Query::Stat(stat) = query {
            series.insert(id.clone(), stat_series(world, stat, start, end)?);
        }
    }
    let timestamps: Vec<i64> = {
        let mut all: Vec<i64> = series.values().flat_map(|s| s.keys().copied()).collect();
        all.sort_unstable();
        all.dedup();
        all
    };
    for _ in 0..parsed.len() {
        for (id, query, _) in &parsed {
            let Query::Expression(e) = query else {
                continue;
            };
            if series.contains_key(id) {
                continue;
            }
            let mut needs = Vec::new();
            math::ids(e, &mut needs);
            if let Some(unknown) = needs
                .iter()
                .find(|n| !parsed.iter().any(|(other, _, _)| other == *n))
            {
                return Err(format!(
                    "Error in expression '{id}': Unrecognized id: {unknown}"
                ));
            }
            if needs.iter().all(|n| series.contains_key(n)) {
                let value = math::eval(e, &|n: &str| series.get(n).cloned(), &timestamps)
                    .map_err(|e| format!("Error in expression '{id}': {e}"))?;
                let s = match value {
                    Val::Series(s) => s,
                    Val::Scalar(x) => timestamps.iter().map(|t| (*t, x)).collect(),
                };
                series.insert(id.clone(), s);
            }
        }
    }
    let mut results: Vec<Value> = Vec::new();
    for (id, _, q) in &parsed {
        if q["ReturnData"].as_bool() == Some(false) {
            continue;
        }
        let Some(s) = series.get(id) else {
            return Err(format!("Error in expression '{id}': circular reference"));
        };
        let mut points: Vec<(i64, f64)> = s
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(t, v)| (*t, *v))
            .collect();
        if !ascending {
            points.reverse();
        }
        let partial = points.len() > max;
        points.truncate(max);
        let label = q["Label"].as_str().map(String::from).unwrap_or_else(|| {
            q["MetricStat"]["Metric"]["MetricName"]
                .as_str()
                .unwrap_or(id)
                .to_string()
        });
        results.push(json!({
            "Id": id,
            "Label": label,
            "Timestamps": points.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            "Values": points.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            "StatusCode": if partial { "PartialData" } else { "Complete" },
        }));
    }
    match mode {
        Some(FaultMode::Empty) => {
            for r in &mut results {
                r["Timestamps"] = json!([]);
                r["Values"] = json!([]);
            }
        }
        Some(FaultMode::NullPoints) => results.clear(),
        Some(FaultMode::SeveralSeries) => {
            let mut second = results.first().cloned().unwrap_or_else(
                || json!({"Id": "fault", "Timestamps": [0], "Values": [1.0], "StatusCode": "Complete"}),
            );
            second["Id"] = json!("fault_series_1");
            if let Some(values) = second["Values"].as_array_mut() {
                for v in values {
                    *v = json!(v.as_f64().unwrap_or(1.0) * 2.0);
                }
            }
            results.push(second);
        }
        _ => {}
    }
    Ok(json!({"MetricDataResults": results, "Messages": []}))
}

fn metric_stat(v: &Value, member: usize) -> Result<MetricStat, String> {
    let at = |field: &str| format!("MetricDataQueries.member.{member}.MetricStat.{field}");
    let metric = &v["Metric"];
    let namespace = metric["Namespace"]
        .as_str()
        .ok_or_else(|| format!("The parameter {} is required.", at("Metric.Namespace")))?;
    let name = metric["MetricName"]
        .as_str()
        .ok_or_else(|| format!("The parameter {} is required.", at("Metric.MetricName")))?;
    let mut dimensions = BTreeMap::new();
    for d in metric["Dimensions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let (Some(n), Some(v)) = (d["Name"].as_str(), d["Value"].as_str()) else {
            return Err(format!(
                "{}: each needs Name and Value",
                at("Metric.Dimensions")
            ));
        };
        dimensions.insert(n.to_string(), v.to_string());
    }
    let period = v["Period"]
        .as_i64()
        .ok_or_else(|| format!("The parameter {} is required.", at("Period")))?;
    if !(matches!(period, 1 | 5 | 10 | 30) || (period > 0 && period % 60 == 0)) {
        return Err(format!(
            "The parameter {} must be 1, 5, 10, 30 or a multiple of 60.",
            at("Period")
        ));
    }
    let stat = v["Stat"]
        .as_str()
        .ok_or_else(|| format!("The parameter {} is required.", at("Stat")))?
        .to_string();
    let percentile = stat
        .strip_prefix('p')
        .and_then(|p| p.parse::<f64>().ok())
        .is_some_and(|q| (0.0..=100.0).contains(&q));
    let known = matches!(
        stat.as_str(),
        "SampleCount" | "Sum" | "Average" | "Minimum" | "Maximum"
    );
    if !(known || percentile) {
        return Err(format!(
            "The value {stat} for parameter {} is not valid.",
            at("Stat")
        ));
    }
    Ok(MetricStat {
        namespace: namespace.to_string(),
        metric: name.to_string(),
        dimensions,
        period,
        stat,
        unit: v["Unit"].as_str().map(String::from),
    })
}

/// The dimension sets each metric is published with.
const DIMENSION_SETS: [&[&str]; 3] = [
    &["appName"],
    &["Namespace", "Workload"],
    &["Namespace", "Service"],
];

fn dimension(s: &Sample, name: &str) -> Option<String> {
    Some(match name {
        "appName" => format!("{}.{}", s.backend.workload, s.backend.namespace),
        "Namespace" => s.backend.namespace.clone(),
        "Workload" => s.backend.workload.clone(),
        "Service" => s.service.clone(),
        _ => return None,
    })
}

/// Per bucket: the samples of the metric's datapoints.
fn stat_series(world: &World, stat: &MetricStat, start: f64, end: f64) -> Result<Series, String> {
    let unit = match stat.metric.as_str() {
        "RequestCount" | "ErrorCount" => "Count",
        "Latency" => "Milliseconds",
        _ => return Ok(Series::new()),
    };
    let published = DIMENSION_SETS.iter().any(|set| {
        set.len() == stat.dimensions.len() && set.iter().all(|d| stat.dimensions.contains_key(*d))
    });
    if stat.namespace.starts_with("AWS/")
        || !published
        || stat.unit.as_deref().is_some_and(|u| u != unit)
    {
        return Ok(Series::new());
    }
    let period = stat.period as f64;
    let first = (start / period).floor() * period;
    let mut buckets: BTreeMap<i64, Vec<Sample>> = BTreeMap::new();
    for (sec, s) in world.samples(world.from_unix(first), world.from_unix(end)) {
        let unix = world.unix(sec as f64);
        if unix < first || unix >= end {
            continue;
        }
        let matches = stat
            .dimensions
            .iter()
            .all(|(k, v)| dimension(&s, k).as_deref() == Some(v.as_str()));
        if matches && s.requests > 0.0 {
            let bucket = ((unix / period).floor() * period) as i64;
            buckets.entry(bucket).or_default().push(s);
        }
    }
    let mut out = Series::new();
    for (t, samples) in buckets {
        if let Some(v) = statistic(&stat.metric, &stat.stat, &samples)? {
            out.insert(t, v);
        }
    }
    Ok(out)
}

/// One statistic of one bucket's datapoints.
fn statistic(metric: &str, stat: &str, samples: &[Sample]) -> Result<Option<f64>, String> {
    let count: f64 = samples.iter().map(|s| s.requests).sum();
    let errors: f64 = samples
        .iter()
        .filter(|s| s.code >= 500)
        .map(|s| s.requests)
        .sum();
    let latency_ms = || {
        samples
            .iter()
            .map(|s| s.requests * s.latency.mean() * 1000.0)
            .sum::<f64>()
    };
    if count <= 0.0 {
        return Ok(None);
    }
    let unsupported = || Err(format!("The statistic {stat} of {metric} is not emulated"));
    Ok(Some(match (metric, stat) {
        (_, "SampleCount") => count,
        ("RequestCount", "Sum") => count,
        ("RequestCount", "Average" | "Minimum" | "Maximum") => 1.0,
        ("ErrorCount", "Sum") => errors,
        ("ErrorCount", "Average") => errors / count,
        ("ErrorCount", "Minimum") => f64::from(u8::from(errors >= count)),
        ("ErrorCount", "Maximum") => f64::from(u8::from(errors > 0.0)),
        ("Latency", "Sum") => latency_ms(),
        ("Latency", "Average") => latency_ms() / count,
        ("Latency", p) if p.starts_with('p') => {
            let Ok(q) = p[1..].parse::<f64>() else {
                return Err(format!("The statistic {stat} is not valid"));
            };
            if !(0.0..=100.0).contains(&q) {
                return Err(format!("The statistic {stat} is not valid"));
            }
            let parts: Vec<_> = samples.iter().map(|s| (s.requests, s.latency)).collect();
            match mixture_quantile(&parts, q / 100.0) {
                Some(secs) => secs * 1000.0,
                None => return Ok(None),
            }
        }
        (_, "Sum" | "Average" | "Minimum" | "Maximum") => return unsupported(),
        (_, p) if p.starts_with('p') => return unsupported(),
        _ => return Err(format!("The statistic {stat} is not valid")),
    }))
}
