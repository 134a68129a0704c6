//! A New Relic API emulator answering NRQL from the traffic world (reference: peers.md
//! section 6.3): the Insights query API (`GET /v1/accounts/{id}/query?nrql=...`, header
//! `X-Query-Key`) and NerdGraph (`POST /graphql`, header `API-Key`,
//! `actor { account(id) { nrql(query) { results } } }`).
//!
//! Event type `Transaction`: one event per simulated request, with `appName`,
//! `k8s.deploymentName` or `k8s.daemonsetName` (the workload), `k8s.namespaceName` and
//! `namespaceName`, `k8s.podName` and `host`, `httpResponseCode` and `response.status`
//! (strings, as the APM agents report them), `http.statusCode` (number), `error` (true for
//! 5xx), `duration` (seconds; in conditions, the version's mean latency), `request.method`
//! (`GET`), `request.uri` (`/`), `transactionType` (`Web`). Other event types have no events.

pub mod nrql;

use crate::metric_emulator::{self, Emulator, server_error, with_headers};
use crate::provider_faults::{FaultMode, ProviderFault};
use crate::server::{Body, json_response};
use crate::traffic::latency::mixture_quantile;
use crate::traffic::world::{Sample, World};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use nrql::{Expr, Func, Query};
use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

/// The scenario's `newrelic` section: the account and keys the emulator accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewRelicConfig {
    #[serde(default = "default_account")]
    pub account_id: u64,
    /// Insights query key (`X-Query-Key`).
    #[serde(default = "default_query_key")]
    pub query_key: String,
    /// NerdGraph user key (`API-Key`).
    #[serde(default = "default_api_key")]
    pub api_key: String,
    #[serde(default)]
    pub fault: Option<ProviderFault>,
}

impl Default for NewRelicConfig {
    fn default() -> Self {
        NewRelicConfig {
            account_id: default_account(),
            query_key: default_query_key(),
            api_key: default_api_key(),
            fault: None,
        }
    }
}

fn default_account() -> u64 {
    1234567
}

fn default_query_key() -> String {
    "serin-nr-query-key".into()
}

fn default_api_key() -> String {
    "NRAK-SERINSTACK".into()
}

pub type NewRelic = Emulator<NewRelicConfig>;

/// One evaluated SELECT item: its key in the Insights API and in NerdGraph, and its value.
struct Column {
    insights_key: String,
    nerdgraph_key: String,
    value: Value,
}

pub async fn handle(
    nr: Arc<NewRelic>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().as_str().to_string();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let insights = path
        .strip_prefix("/v1/accounts/")
        .and_then(|rest| rest.strip_suffix("/query"))
        .map(String::from);
    let resp = match (method.as_str(), insights) {
        ("GET", Some(account)) => {
            if header("x-query-key").as_deref() != Some(nr.config.query_key.as_str()) {
                return Ok(json_response(401, &json!({"error": "Invalid query key"})));
            }
            if account != nr.config.account_id.to_string() {
                return Ok(json_response(
                    403,
                    &json!({"error": format!("Account {account} is not accessible with this key")}),
                ));
            }
            let fault = nr.faults.take();
            if let Some(r) = transport_fault(fault.as_ref(), false).await {
                return Ok(r);
            }
            let nrql = form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
                .find(|(k, _)| k == "nrql")
                .map(|(_, v)| v.into_owned());
            match nrql {
                None => json_response(400, &json!({"error": "The nrql parameter is required"})),
                Some(q) => insights_query(&nr.world, &q, fault.map(|f| f.mode)),
            }
        }
        ("POST", None) if path == "/graphql" => {
            if header("api-key").as_deref() != Some(nr.config.api_key.as_str()) {
                return Ok(json_response(
                    401,
                    &json!({"errors": [{"message": "Invalid or missing API key", "extensions": {"errorClass": "UNAUTHORIZED"}}]}),
                ));
            }
            let fault = nr.faults.take();
            if let Some(r) = transport_fault(fault.as_ref(), true).await {
                return Ok(r);
            }
            match req.into_body().collect().await {
                Ok(b) => nerdgraph(&nr, &b.to_bytes(), fault.map(|f| f.mode)),
                Err(e) => json_response(
                    400,
                    &json!({"errors": [{"message": format!("reading body: {e}")}]}),
                ),
            }
        }
        _ => json_response(404, &json!({"error": "Not found"})),
    };
    Ok(resp)
}

async fn transport_fault(fault: Option<&ProviderFault>, graphql: bool) -> Option<Response<Body>> {
    let f = fault?;
    // The Insights API has no GraphQL errors: there it is a plain server error.
    if f.mode == FaultMode::GraphqlError && !graphql {
        return Some(server_error(f.status.unwrap_or(500)));
    }
    metric_emulator::transport_fault(
        Some(f),
        || {
            let limited = json_response(429, &json!({"error": "Too many requests, retry later"}));
            with_headers(limited, &[("retry-after", "1")])
        },
        || json_response(504, &json!({"error": "Gateway Timeout"})),
    )
    .await
}

fn attr(s: &Sample, name: &str) -> Option<nrql::Value> {
    use nrql::Value as V;
    Some(match name {
        "appName" => V::Str(s.backend.workload.clone()),
        "k8s.deploymentName" if !s.backend.daemonset => V::Str(s.backend.workload.clone()),
        "k8s.daemonsetName" if s.backend.daemonset => V::Str(s.backend.workload.clone()),
        "k8s.namespaceName" | "namespaceName" => V::Str(s.backend.namespace.clone()),
        "k8s.podName" | "host" => V::Str(s.backend.pod.clone()),
        "httpResponseCode" | "response.status" => V::Str(s.code.to_string()),
        "http.statusCode" => V::Num(f64::from(s.code)),
        "error" => V::Bool(s.code >= 500),
        "duration" => V::Num(s.latency.mean()),
        "request.method" => V::Str("GET".into()),
        "request.uri" => V::Str("/".into()),
        "transactionType" => V::Str("Web".into()),
        _ => return None,
    })
}

fn num_key(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{}", p as i64)
    } else {
        p.to_string()
    }
}

/// A function's value over events: a number (or null), or percentiles by key.
enum FVal {
    Num(Option<f64>),
    Percentiles(BTreeMap<String, Option<f64>>),
}

fn func(f: &Func, events: &[&Sample]) -> Result<FVal, String> {
    let n = |es: &[&Sample]| es.iter().map(|s| s.requests).sum::<f64>();
    Ok(match f {
        Func::Count(None) => FVal::Num(Some(n(events))),
        Func::Count(Some(a)) => FVal::Num(Some(
            events
                .iter()
                .filter(|s| attr(s, a).is_some())
                .map(|s| s.requests)
                .sum(),
        )),
        Func::Average(a) | Func::Sum(a) => {
            let mut total = 0.0;
            let mut count = 0.0;
            for s in events {
                let v = if a == "duration" {
                    Some(s.latency.mean())
                } else {
                    match attr(s, a) {
                        Some(nrql::Value::Num(x)) => Some(x),
                        _ => None,
                    }
                };
                if let Some(v) = v {
                    total += v * s.requests;
                    count += s.requests;
                }
            }
            match f {
                Func::Sum(_) => FVal::Num(Some(total)),
                _ => FVal::Num((count > 0.0).then(|| total / count)),
            }
        }
        Func::Percentile(a, ps) => {
            if a != "duration" {
                return Err(format!("percentile({a}) is not emulated (only duration)"));
            }
            let parts: Vec<_> = events.iter().map(|s| (s.requests, s.latency)).collect();
            FVal::Percentiles(
                ps.iter()
                    .map(|p| (num_key(*p), mixture_quantile(&parts, p / 100.0)))
                    .collect(),
            )
        }
        Func::Percentage(inner, c) => {
            let subset: Vec<&Sample> = events
                .iter()
                .copied()
                .filter(|s| nrql::matches(c, &|a| attr(s, a)))
                .collect();
            match (func(inner, &subset)?, func(inner, events)?) {
                (FVal::Num(Some(part)), FVal::Num(Some(all))) if all != 0.0 => {
                    FVal::Num(Some(100.0 * part / all))
                }
                _ => FVal::Num(None),
            }
        }
        Func::Filter(inner, c) => {
            let subset: Vec<&Sample> = events
                .iter()
                .copied()
                .filter(|s| nrql::matches(c, &|a| attr(s, a)))
                .collect();
            func(inner, &subset)?
        }
    })
}

fn expr(e: &Expr, events: &[&Sample]) -> Result<Option<f64>, String> {
    Ok(match e {
        Expr::Number(n) => Some(*n),
        Expr::Neg(x) => expr(x, events)?.map(|v| -v),
        Expr::Func(f) => match func(f, events)? {
            FVal::Num(v) => v,
            FVal::Percentiles(m) => m.into_values().next().flatten(),
        },
        Expr::Bin(a, op, b) => match (expr(a, events)?, expr(b, events)?) {
            (Some(x), Some(y)) => match op {
                '+' => Some(x + y),
                '-' => Some(x - y),
                '*' => Some(x * y),
                _ => (y != 0.0).then(|| x / y),
            },
            _ => None,
        },
    })
}

fn func_names(f: &Func) -> (String, String) {
    match f {
        Func::Count(_) => ("count".into(), "count".into()),
        Func::Average(a) => ("average".into(), format!("average.{a}")),
        Func::Sum(a) => ("sum".into(), format!("sum.{a}")),
        Func::Percentile(a, _) => ("percentiles".into(), format!("percentile.{a}")),
        Func::Percentage(..) => ("percentage".into(), "percentage".into()),
        Func::Filter(..) => ("filter".into(), "filter".into()),
    }
}

fn columns(q: &Query, events: &[&Sample]) -> Result<Vec<Column>, String> {
    q.items
        .iter()
        .map(|item| {
            let (ik, nk, value) = match &item.expr {
                Expr::Func(f) => {
                    let (ik, nk) = func_names(f);
                    let v = match func(f, events)? {
                        FVal::Num(v) => json!(v),
                        FVal::Percentiles(m) => json!(m),
                    };
                    (ik, nk, v)
                }
                e => ("result".into(), "result".into(), json!(expr(e, events)?)),
            };
            let (ik, nk) = match &item.alias {
                Some(a) => (a.clone(), a.clone()),
                None => (ik, nk),
            };
            Ok(Column {
                insights_key: ik,
                nerdgraph_key: nk,
                value,
            })
        })
        .collect()
}

/// Evaluated rows: `(facet value, columns)`, one row without FACET; for `SELECT *`, the
/// events instead.
struct Answer {
    rows: Vec<(Option<String>, Vec<Column>)>,
    raw: Option<Vec<Value>>,
    events: f64,
    begin: f64,
    end: f64,
}

fn evaluate(world: &World, nrql_text: &str) -> Result<(Query, Answer), String> {
    let q = nrql::parse(nrql_text)?;
    let now = world.now();
    let (from, to) = (now - q.since, now - q.until);
    let timed: Vec<(u64, Sample)> = if q.event_type == "Transaction" {
        world
            .samples(from, to)
            .into_iter()
            .filter(|(sec, _)| (*sec as f64) >= from.floor() && (*sec as f64) < to)
            .collect()
    } else {
        Vec::new()
    };
    if q.select_all {
        // One event per workload version, second and status code (not one per request).
        let raw: Vec<Value> = timed
            .iter()
            .filter(|(_, s)| q.filter.as_ref().is_none_or(|c| nrql::matches(c, &|a| attr(s, a))))
            .take(q.limit.unwrap_or(100))
            .map(|(sec, s)| {
                json!({"timestamp": (world.unix(*sec as f64) * 1000.0) as i64,
                    "appName": s.backend.workload, "k8s.namespaceName": s.backend.namespace,
                    "k8s.podName": s.backend.pod, "httpResponseCode": s.code.to_string(),
                    "duration": s.latency.mean(), "error": s.code >= 500, "serin.requests": s.requests})
            })
            .collect();
        let total = raw.len() as f64;
        return Ok((
            q,
            Answer {
                rows: Vec::new(),
                raw: Some(raw),
                events: total,
                begin: world.unix(from),
                end: world.unix(to),
            },
        ));
    }
    let samples: Vec<Sample> = timed.into_iter().map(|(_, s)| s).collect();
    let events: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            q.filter
                .as_ref()
                .is_none_or(|c| nrql::matches(c, &|a| attr(s, a)))
        })
        .collect();
    let total: f64 = events.iter().map(|s| s.requests).sum();
    let rows = match &q.facet {
        None => vec![(None, columns(&q, &events)?)],
        Some(f) => {
            let mut groups: BTreeMap<String, Vec<&Sample>> = BTreeMap::new();
            for s in &events {
                let key = attr(s, f).map(|v| v.text()).unwrap_or_default();
                groups.entry(key).or_default().push(s);
            }
            let mut g: Vec<(String, Vec<&Sample>)> = groups.into_iter().collect();
            // Largest groups first, as New Relic orders facets by default.
            g.sort_by(|a, b| {
                let n = |x: &[&Sample]| x.iter().map(|s| s.requests).sum::<f64>();
                n(&b.1).total_cmp(&n(&a.1))
            });
            g.truncate(q.limit.unwrap_or(10));
            g.into_iter()
                .map(|(k, es)| Ok((Some(k), columns(&q, &es)?)))
                .collect::<Result<_, String>>()?
        }
    };
    Ok((
        q,
        Answer {
            rows,
            raw: None,
            events: total,
            begin: world.unix(from),
            end: world.unix(to),
        },
    ))
}

/// Applies the data-shaping faults to rows of JSON objects.
fn shape(rows: &mut Vec<Value>, mode: Option<FaultMode>) {
    match mode {
        Some(FaultMode::Empty) => rows.clear(),
        Some(FaultMode::NullPoints) => {
            for r in rows.iter_mut() {
                if let Some(m) = r.as_object_mut() {
                    m.iter_mut()
                        .filter(|(k, _)| k.as_str() != "facet")
                        .for_each(|(_, v)| *v = Value::Null);
                }
            }
        }
        Some(FaultMode::SeveralSeries) => {
            let Some(first) = rows.first().cloned() else {
                return;
            };
            let mut second = first.clone();
            if let Some(m) = second.as_object_mut() {
                for v in m.values_mut() {
                    if let Some(x) = v.as_f64() {
                        *v = json!(x * 2.0);
                    }
                }
            }
            *rows = vec![first, second];
        }
        _ => {}
    }
}

fn insights_query(world: &World, nrql_text: &str, mode: Option<FaultMode>) -> Response<Body> {
    let (q, a) = match evaluate(world, nrql_text) {
        Ok(x) => x,
        Err(e) => return json_response(400, &json!({"error": format!("NRQL Syntax Error: {e}")})),
    };
    let to_results = |cols: &[Column]| -> Vec<Value> {
        cols.iter()
            .map(|c| {
                let mut m = Map::new();
                m.insert(c.insights_key.clone(), c.value.clone());
                Value::Object(m)
            })
            .collect()
    };
    let mut messages = Vec::new();
    if a.events == 0.0 {
        messages.push("No events found -- do you have the correct event type and time range?");
    }
    let metadata = json!({
        "eventTypes": [q.event_type], "eventType": q.event_type, "openEnded": q.until == 0.0,
        "beginTimeMillis": (a.begin * 1000.0) as i64, "endTimeMillis": (a.end * 1000.0) as i64,
        "beginTime": rfc3339(a.begin), "endTime": rfc3339(a.end),
        "rawSince": format!("{} SECONDS AGO", q.since), "rawUntil": if q.until == 0.0 { "NOW".to_string() } else { format!("{} SECONDS AGO", q.until) },
        "messages": messages, "facet": q.facet,
        "contents": q.items.iter().map(|i| json!({"function": if i.alias.is_some() { "alias" } else { "expression" }, "alias": i.alias})).collect::<Vec<_>>(),
    });
    let stats = json!({"inspectedCount": a.events.round() as i64, "omittedCount": 0,
        "matchCount": a.events.round() as i64, "wallClockTime": 1});
    let body = if let Some(raw) = a.raw {
        json!({"results": [{"events": raw}], "performanceStats": stats, "metadata": metadata})
    } else if q.facet.is_some() {
        let mut facets: Vec<Value> = a
            .rows
            .iter()
            .map(|(k, cols)| json!({"name": k, "results": to_results(cols)}))
            .collect();
        shape(&mut facets, mode.filter(|m| *m == FaultMode::Empty));
        json!({"facets": facets, "performanceStats": stats, "metadata": metadata})
    } else {
        let mut results = a
            .rows
            .first()
            .map(|(_, cols)| to_results(cols))
            .unwrap_or_default();
        shape(&mut results, mode);
        json!({"results": results, "performanceStats": stats, "metadata": metadata})
    };
    json_response(200, &body)
}

fn rfc3339(unix: f64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn graphql_error(message: &str, class: &str) -> Response<Body> {
    json_response(
        200,
        &json!({"errors": [{"message": message, "path": ["actor", "account", "nrql"],
            "extensions": {"errorClass": class}}],
            "data": {"actor": {"account": {"nrql": null}}}}),
    )
}

/// Resolves `$var` from the variables, or parses a literal.
fn argument(raw: &str, vars: &Value) -> Option<Value> {
    match raw.strip_prefix('$') {
        Some(name) => vars.get(name).cloned(),
        None => serde_json::from_str(raw).ok(),
    }
}

fn nerdgraph(nr: &NewRelic, body: &[u8], mode: Option<FaultMode>) -> Response<Body> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return json_response(400, &json!({"errors": [{"message": "invalid JSON body"}]}));
    };
    let doc = v["query"].as_str().unwrap_or_default();
    let vars = &v["variables"];
    let (Ok(account_re), Ok(nrql_re)) = (
        Regex::new(r"account\s*\(\s*id\s*:\s*(\$\w+|\d+)\s*\)"),
        Regex::new(r#"nrql\s*\(\s*query\s*:\s*(\$\w+|"(?:[^"\\]|\\.)*")"#),
    ) else {
        return json_response(500, &json!({"errors": [{"message": "internal error"}]}));
    };
    let account = account_re
        .captures(doc)
        .and_then(|c| c.get(1))
        .and_then(|m| argument(m.as_str(), vars));
    let nrql_text = nrql_re
        .captures(doc)
        .and_then(|c| c.get(1))
        .and_then(|m| argument(m.as_str(), vars));
    let (Some(account), Some(Value::String(nrql_text))) = (account, nrql_text) else {
        return json_response(
            200,
            &json!({"errors": [{"message": "the emulator answers actor { account(id: ...) { nrql(query: ...) { results } } } only",
                "extensions": {"errorClass": "INVALID_INPUT"}}]}),
        );
    };
    if !doc.contains("actor") || !doc.contains("results") {
        return json_response(
            200,
            &json!({"errors": [{"message": "expected a selection of actor.account.nrql.results"}]}),
        );
    }
    let account_id = account
        .as_u64()
        .or_else(|| account.as_str().and_then(|s| s.parse().ok()));
    if account_id != Some(nr.config.account_id) {
        return json_response(
            200,
            &json!({"errors": [{"message": format!("Account {account} not found or not authorized"),
                "path": ["actor", "account"], "extensions": {"errorClass": "FORBIDDEN"}}],
                "data": {"actor": {"account": null}}}),
        );
    }
    if mode == Some(FaultMode::GraphqlError) {
        return graphql_error("NRDB query timed out", "TIMEOUT");
    }
    let (q, a) = match evaluate(&nr.world, &nrql_text) {
        Ok(x) => x,
        Err(e) => return graphql_error(&format!("NRQL Syntax Error: {e}"), "INVALID_INPUT"),
    };
    if let Some(raw) = a.raw {
        return json_response(
            200,
            &json!({"data": {"actor": {"account": {"nrql": {"results": raw}}}}}),
        );
    }
    let mut rows: Vec<Value> = a
        .rows
        .iter()
        .map(|(facet, cols)| {
            let mut m = Map::new();
            if let (Some(f), Some(attr_name)) = (facet, &q.facet) {
                m.insert("facet".into(), json!(f));
                m.insert(attr_name.clone(), json!(f));
            }
            for c in cols {
                m.insert(c.nerdgraph_key.clone(), c.value.clone());
            }
            Value::Object(m)
        })
        .collect();
    shape(&mut rows, mode);
    json_response(
        200,
        &json!({"data": {"actor": {"account": {"nrql": {"results": rows}}}}}),
    )
}
