//! An InfluxDB 2.x query API emulator answering Flux from the traffic world (the API as
//! InfluxDB documents it): `POST /api/v2/query?org=<org>` (or `orgID`) with
//! `Authorization: Token <token>` and a JSON body `{"query", "type": "flux", "dialect"}` (or
//! the Flux itself as `application/vnd.flux`), answered in CSV, annotated as the dialect asks
//! (`datatype`, `group`, `default`); `GET /health`. The scenario's `influxdb` section names the
//! token, the organization and the bucket.
//!
//! The bucket (`default`) holds measurement `http_requests`, one point per second per
//! workload, Service, pod and status code: tags `namespace`, `workload`, `service`, `pod`,
//! `status`; float fields `requests` (requests in the second), `errors` (those answered 5xx)
//! and `duration_ms` (their mean latency). The second still being written has no point.
//! Queries: the Flux subset of `flux` (`from |> range |> filter |> group |> sum |> pivot
//! |> map ...`). A query InfluxDB would refuse before running (a syntax error, an unknown
//! function or bucket) gets its 400 or 404 JSON error; one that fails while running, an
//! error table with status 200.

pub mod flux;

use crate::metric_emulator::{self, Emulator, with_headers};
use crate::provider_faults::{FaultMode, ProviderFault};
use crate::server::{Body, full, json_response, query_pairs};
use crate::traffic::world::World;
use flux::{Failure, Row, Source, Table, Val};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

/// The measurement the world writes.
pub const MEASUREMENT: &str = "http_requests";

/// The scenario's `influxdb` section: the token, organization and bucket the emulator has.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InfluxDbConfig {
    #[serde(default = "default_token")]
    pub token: String,
    #[serde(default = "default_org")]
    pub org: String,
    #[serde(default = "default_bucket")]
    pub bucket: String,
    /// A fault active from the start.
    #[serde(default)]
    pub fault: Option<ProviderFault>,
}

impl Default for InfluxDbConfig {
    fn default() -> Self {
        InfluxDbConfig {
            token: default_token(),
            org: default_org(),
            bucket: default_bucket(),
            fault: None,
        }
    }
}

fn default_token() -> String {
    "serin-influxdb-token".into()
}

fn default_org() -> String {
    "serin".into()
}

fn default_bucket() -> String {
    "default".into()
}

/// The organization's ID (`orgID=`), fixed.
const ORG_ID: &str = "0a1b2c3d4e5f6a7b";

pub type InfluxDb = Emulator<InfluxDbConfig>;

fn error(code: u16, kind: &str, message: &str) -> Response<Body> {
    json_response(code, &json!({"code": kind, "message": message}))
}

pub async fn handle(
    influx: Arc<InfluxDb>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().as_str().to_string();
    match (method.as_str(), path.as_str()) {
        ("GET", "/health") => {
            return Ok(json_response(
                200,
                &json!({"name": "influxdb", "message": "ready for queries and writes",
                    "status": "pass", "checks": [], "version": "v2.7.11"}),
            ));
        }
        ("POST", "/api/v2/query") => {}
        _ => return Ok(error(404, "not found", "path not found")),
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let token = header("authorization").and_then(|a| {
        a.strip_prefix("Token ")
            .or_else(|| a.strip_prefix("Bearer "))
            .map(str::to_string)
    });
    if token.as_deref() != Some(influx.config.token.as_str()) {
        return Ok(error(401, "unauthorized", "unauthorized access"));
    }
    let params: BTreeMap<String, String> = query_pairs(req.uri());
    match (
        params.get("org").filter(|o| !o.is_empty()),
        params.get("orgID").filter(|o| !o.is_empty()),
    ) {
        (None, None) => {
            return Ok(error(400, "invalid", "Please provide either orgID or org"));
        }
        (Some(org), _) if *org != influx.config.org => {
            return Ok(error(
                404,
                "not found",
                &format!("organization name {org:?} not found"),
            ));
        }
        (None, Some(id)) if id != ORG_ID => {
            return Ok(error(404, "not found", "organization not found"));
        }
        _ => {}
    }
    let flux_body = header("content-type").is_some_and(|c| c.starts_with("application/vnd.flux"));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(error(400, "invalid", &format!("reading the body: {e}"))),
    };
    let (query, dialect) = if flux_body {
        (String::from_utf8_lossy(&body).into_owned(), Value::Null)
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) if !matches!(v["type"].as_str(), None | Some("flux")) => {
                return Ok(error(400, "invalid", "the emulator runs Flux queries only"));
            }
            Ok(v) => match v["query"].as_str() {
                Some(q) => (q.to_string(), v["dialect"].clone()),
                None => return Ok(error(400, "invalid", "query is required")),
            },
            Err(e) => {
                return Ok(error(
                    400,
                    "invalid",
                    &format!("failed to decode request body: {e}"),
                ));
            }
        }
    };
    let fault = influx.faults.take();
    if let Some(r) = transport_fault(fault.as_ref()).await {
        return Ok(r);
    }
    Ok(answer(&influx, &query, &dialect, fault.map(|f| f.mode)))
}

/// Faults that replace the answer: 429 (InfluxDB Cloud's plan limits), 5xx, hanging.
async fn transport_fault(fault: Option<&ProviderFault>) -> Option<Response<Body>> {
    metric_emulator::transport_fault(
        fault,
        || {
            let limited = error(
                429,
                "too many requests",
                "org serin has exceeded its plan's query rate limit",
            );
            with_headers(limited, &[("retry-after", "1")])
        },
        || error(504, "unavailable", "gateway timeout"),
    )
    .await
}

fn answer(
    influx: &InfluxDb,
    query: &str,
    dialect: &Value,
    mode: Option<FaultMode>,
) -> Response<Body> {
    let world = &influx.world;
    let now = world.unix(world.now());
    let source = WorldSource {
        world,
        bucket: &influx.config.bucket,
    };
    let annotations: Vec<String> = dialect["annotations"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let header = dialect["header"].as_bool().unwrap_or(true);
    let output = match (mode, flux::run(query, &source, now)) {
        (Some(FaultMode::GraphqlError), _) => {
            return csv_response(error_table(
                "runtime error: the query was cancelled (emulated fault)",
            ));
        }
        (_, Err(Failure::Invalid(e))) => return error(400, "invalid", &e),
        (_, Err(Failure::NotFound(e))) => return error(404, "not found", &e),
        (_, Err(Failure::Runtime(e))) => {
            return csv_response(error_table(&format!("runtime error: {e}")));
        }
        (_, Ok(output)) => output,
    };
    let mut tables = output.tables;
    match mode {
        Some(FaultMode::Empty) => tables.clear(),
        Some(FaultMode::NullPoints) => {
            for t in &mut tables {
                for r in &mut t.rows {
                    r.insert("_value".into(), Val::Null);
                }
            }
        }
        Some(FaultMode::SeveralSeries) => {
            let doubled: Vec<Table> = tables
                .iter()
                .map(|t| t.with_rows(t.rows.iter().map(doubled_value).collect()))
                .collect();
            tables.extend(doubled);
        }
        _ => {}
    }
    csv_response(csv(&output.name, &tables, &annotations, header))
}

/// A row with its `_value` doubled (a second series for `several-series`).
fn doubled_value(row: &Row) -> Row {
    let mut row = row.clone();
    if let Some(v) = row.get_mut("_value") {
        *v = match std::mem::replace(v, Val::Null) {
            Val::Float(f) => Val::Float(f * 2.0),
            Val::Int(i) => Val::Int(i.saturating_mul(2)),
            other => other,
        };
    }
    row
}

fn csv_response(body: String) -> Response<Body> {
    full(200, "text/csv; charset=utf-8", body)
}

/// An error table, as InfluxDB writes a query's failure into the answer.
fn error_table(message: &str) -> String {
    format!(
        "#datatype,string,string\r\n#group,true,true\r\n#default,,\r\n,error,reference\r\n,{},\r\n\r\n",
        quote(message)
    )
}

fn quote(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}

/// The columns of a table in InfluxDB's order: `_start`, `_stop`, `_time`, `_value`, then
/// the others by name.
fn columns(t: &Table) -> Vec<String> {
    let mut all: Vec<String> = t
        .rows
        .iter()
        .flat_map(|r| r.keys().cloned())
        .chain(t.key.iter().cloned())
        .collect();
    all.sort();
    all.dedup();
    let first = ["_start", "_stop", "_time", "_value"];
    let mut out: Vec<String> = first
        .iter()
        .filter(|c| all.iter().any(|a| a == *c))
        .map(|c| c.to_string())
        .collect();
    out.extend(all.into_iter().filter(|c| !first.contains(&c.as_str())));
    out
}

fn datatype(t: &Table, column: &str) -> &'static str {
    let value = t
        .rows
        .iter()
        .filter_map(|r| r.get(column))
        .find(|v| !matches!(v, Val::Null));
    match value {
        Some(Val::Int(_)) => "long",
        Some(Val::Str(_)) => "string",
        Some(Val::Bool(_)) => "boolean",
        Some(Val::Time(_)) => "dateTime:RFC3339",
        Some(Val::Dur(_)) => "duration",
        Some(Val::Float(_)) => "double",
        _ if column == "_value" => "double",
        _ => "string",
    }
}

fn cell(v: Option<&Val>) -> String {
    match v {
        None | Some(Val::Null) => String::new(),
        Some(Val::Float(f)) if f.is_infinite() => {
            if *f > 0.0 { "+Inf" } else { "-Inf" }.to_string()
        }
        Some(Val::Float(f)) => f.to_string(),
        Some(Val::Int(i)) => i.to_string(),
        Some(Val::Bool(b)) => b.to_string(),
        Some(Val::Str(s)) => quote(s),
        Some(Val::Time(t)) => {
            let secs = t.floor();
            let nanos = ((t - secs) * 1e9).round().clamp(0.0, 999_999_999.0) as u32;
            chrono::DateTime::from_timestamp(secs as i64, nanos)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                .unwrap_or_default()
        }
        Some(Val::Dur(d)) => format!("{}ns", (d * 1e9).round() as i64),
        Some(other) => quote(&format!("{other:?}")),
    }
}

/// The tables as annotated CSV, one block (annotations, header, rows) per table; no table is
/// an empty answer.
fn csv(name: &str, tables: &[Table], annotations: &[String], header: bool) -> String {
    let mut out = String::new();
    for (id, t) in tables.iter().enumerate() {
        let cols = columns(t);
        let line = |first: &str, rest: Vec<String>| {
            let mut cells = vec![first.to_string()];
            cells.extend(rest);
            format!("{}\r\n", cells.join(","))
        };
        let want = |a: &str| annotations.iter().any(|x| x == a);
        if want("datatype") {
            let mut types = vec!["string".to_string(), "long".to_string()];
            types.extend(cols.iter().map(|c| datatype(t, c).to_string()));
            out.push_str(&line("#datatype", types));
        }
        if want("group") {
            let mut group = vec!["false".to_string(), "false".to_string()];
            group.extend(cols.iter().map(|c| t.key.contains(c).to_string()));
            out.push_str(&line("#group", group));
        }
        if want("default") {
            let mut defaults = vec![quote(name), String::new()];
            defaults.extend(cols.iter().map(|_| String::new()));
            out.push_str(&line("#default", defaults));
        }
        if header {
            let mut names = vec!["result".to_string(), "table".to_string()];
            names.extend(cols.iter().map(|c| quote(c)));
            out.push_str(&line("", names));
        }
        let result = if want("default") {
            String::new()
        } else {
            quote(name)
        };
        for r in &t.rows {
            let mut cells = vec![result.clone(), id.to_string()];
            cells.extend(cols.iter().map(|c| cell(r.get(c))));
            out.push_str(&line("", cells));
        }
        out.push_str("\r\n");
    }
    if out.is_empty() {
        out.push_str("\r\n");
    }
    out
}

/// A series' tags, by name.
type Tags = Vec<(String, String)>;

/// The bucket as the world wrote it.
struct WorldSource<'a> {
    world: &'a World,
    bucket: &'a str,
}

impl Source for WorldSource<'_> {
    fn read(&self, bucket: &str, start: f64, stop: f64) -> Option<Vec<Table>> {
        if bucket != self.bucket {
            return None;
        }
        let world = self.world;
        let now = world.unix(world.now());
        // Per series (tags) and second: requests, errors, latency sum.
        let mut seconds: BTreeMap<(Tags, u64), (f64, f64, f64)> = BTreeMap::new();
        for (sec, s) in world.samples(world.from_unix(start), world.from_unix(stop)) {
            let time = world.unix(sec as f64);
            // Only whole seconds already written, within the range.
            if time < start || time >= stop || time + 1.0 > now {
                continue;
            }
            let tags = vec![
                ("namespace".to_string(), s.backend.namespace.clone()),
                ("pod".to_string(), s.backend.pod.clone()),
                ("service".to_string(), s.service.clone()),
                ("status".to_string(), s.code.to_string()),
                ("workload".to_string(), s.backend.workload.clone()),
            ];
            let e = seconds.entry((tags, sec)).or_default();
            e.0 += s.requests;
            if s.code >= 500 {
                e.1 += s.requests;
            }
            e.2 += s.requests * s.latency.mean() * 1000.0;
        }
        let mut tables: BTreeMap<(Tags, &str), Vec<Row>> = BTreeMap::new();
        for ((tags, sec), (requests, errors, latency)) in seconds {
            let fields = [
                ("requests", requests),
                ("errors", errors),
                (
                    "duration_ms",
                    if requests > 0.0 {
                        latency / requests
                    } else {
                        0.0
                    },
                ),
            ];
            for (field, value) in fields {
                let mut row: Row = tags
                    .iter()
                    .map(|(k, v)| (k.clone(), Val::Str(v.clone())))
                    .collect();
                row.insert("_time".into(), Val::Time(world.unix(sec as f64)));
                row.insert("_value".into(), Val::Float(value));
                row.insert("_field".into(), Val::Str(field.into()));
                row.insert("_measurement".into(), Val::Str(MEASUREMENT.into()));
                tables.entry((tags.clone(), field)).or_default().push(row);
            }
        }
        Some(
            tables
                .into_values()
                .map(|rows| Table {
                    key: [
                        "_measurement",
                        "_field",
                        "namespace",
                        "pod",
                        "service",
                        "status",
                        "workload",
                    ]
                    .map(String::from)
                    .to_vec(),
                    rows,
                })
                .collect(),
        )
    }

    fn buckets(&self) -> Vec<String> {
        vec![
            self.bucket.to_string(),
            "_monitoring".into(),
            "_tasks".into(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotated_csv_as_the_client_reads_it() {
        let t = Table {
            key: vec!["_field".into()],
            rows: vec![Row::from([
                ("_field".to_string(), Val::Str("a,b".into())),
                ("_value".into(), Val::Float(1.5)),
                ("_time".into(), Val::Time(1_700_000_000.25)),
                ("n".into(), Val::Int(3)),
            ])],
        };
        let all = ["datatype", "group", "default"].map(String::from);
        assert_eq!(
            csv("_result", &[t], &all, true),
            "#datatype,string,long,dateTime:RFC3339,double,string,long\r\n\
             #group,false,false,false,false,true,false\r\n\
             #default,_result,,,,,\r\n\
             ,result,table,_time,_value,_field,n\r\n\
             ,,0,2023-11-14T22:13:20.250Z,1.5,\"a,b\",3\r\n\r\n"
        );
        assert_eq!(csv("_result", &[], &all, true), "\r\n");
        assert_eq!(
            error_table("x, \"y\""),
            "#datatype,string,string\r\n#group,true,true\r\n#default,,\r\n,error,reference\r\n,\"x, \"\"y\"\"\",\r\n\r\n"
        );
    }
}
