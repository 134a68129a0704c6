//! A Google Cloud Monitoring (Stackdriver) emulator answering MQL from the traffic world, and
//! the two places a client gets its access token from:
//!
//! - `POST /token`: the OAuth 2.0 token endpoint of a service-account key (its `token_uri`):
//!   `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and an RS256 JWT `assertion`,
//!   whose signature is checked against the configured public key (by default the TEST-ONLY
//!   key in `tests/fixtures/`), its `iss` against the account, its `aud` against this
//!   endpoint's URL, its lifetime (an hour at most, not expired); refusals are Google's
//!   (`400 invalid_grant`, "Invalid JWT Signature.", ...);
//! - `GET /computeMetadata/v1/instance/service-accounts/default/token` with
//!   `Metadata-Flavor: Google`: the metadata server's token (GKE Workload Identity);
//! - `POST /v3/projects/<project>/timeSeries:query` (`{"query": MQL, "pageToken"}`) with a
//!   token from either: `401 UNAUTHENTICATED` without one, `403 PERMISSION_DENIED` for
//!   another project or a token without a monitoring scope, `400 INVALID_ARGUMENT` for MQL
//!   outside the subset ([`mql`]), else `QueryTimeSeriesResponse` JSON.
//!
//! Data: resource type `k8s_container`, Istio's metrics as Cloud Monitoring holds them (one
//! request per simulated request): `istio.io/service/server/request_count` (INT64, DELTA) and
//! `istio.io/service/server/response_latencies` (DISTRIBUTION, DELTA, ms). Metric labels:
//! `destination_service_name` (the Service addressed), `destination_service_namespace`,
//! `destination_workload_name` and `destination_canonical_service_name` (the workload),
//! `destination_workload_namespace`, `response_code` (INT64), `request_protocol` (`http`);
//! resource labels: `project_id`, `location`, `cluster_name`, `namespace_name`, `pod_name`,
//! `container_name` (`istio-proxy`). An unknown label is an `INVALID_ARGUMENT`; an unknown
//! metric or resource type has no time series.
//!
//! Points: every `every` (default: the alignment window, else 1m), aligned to the epoch,
//! each over the alignment window before it (`align delta|rate(window)`, default the
//! period), within `within` (default 1h) of now, newest first; a window without requests has
//! no point. Without a `group_by`, one time series per label set; `group_by [labels]` sums
//! counts (`sum`, `aggregate`, `mean` and `count` across the grouped series) and merges
//! latencies (`percentile(value.response_latencies, p)`, `mean`; `aggregate` answers a
//! distribution); `filter_ratio_by [labels], pred` is the share of the requests `pred`
//! selects (DOUBLE). Counts of `delta` are INT64, of `rate` DOUBLE per second.
//!
//! Faults (`provider_faults`): `rate-limit` is `429 RESOURCE_EXHAUSTED`; `error` a 5xx HTML
//! page from the front end; `hang` never answers; `empty` answers no time series;
//! `null-points` time series without points; `several-series` a second time series.

pub mod mql;

use crate::provider_faults::{FaultMode, ProviderFault, ProviderFaults};
use crate::server::{Body, full, json_response};
use crate::traffic::latency::mixture_quantile;
use crate::traffic::world::{Sample, World};
use base64::Engine;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use mql::{Aligner, Cmp, Operand, Pred, Query, Reduce, Reducer};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The TEST-ONLY public key of `tests/fixtures/stackdriver-TEST-ONLY-service-account-key.json`.
pub const TEST_PUBLIC_KEY: &str =
    include_str!("../../../../tests/fixtures/stackdriver-TEST-ONLY-public-key.pem");

const TOKEN_PATH: &str = "/token";
const METADATA_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
const TOKEN_LIFETIME: u64 = 3599;
/// Scopes a token must carry to read Cloud Monitoring.
const MONITORING_SCOPES: [&str; 3] = [
    "https://www.googleapis.com/auth/monitoring.read",
    "https://www.googleapis.com/auth/monitoring",
    "https://www.googleapis.com/auth/cloud-platform",
];

/// The scenario's `stackdriver` section: the project and the service account it knows.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StackdriverConfig {
    #[serde(default = "default_project")]
    pub project: String,
    /// The account whose JWTs the token endpoint accepts.
    #[serde(default = "default_client_email")]
    pub client_email: String,
    /// Its public key (PEM, `RSA PUBLIC KEY`).
    #[serde(default = "default_public_key")]
    pub public_key: String,
    #[serde(default)]
    pub fault: Option<ProviderFault>,
}

impl Default for StackdriverConfig {
    fn default() -> Self {
        StackdriverConfig {
            project: default_project(),
            client_email: default_client_email(),
            public_key: default_public_key(),
            fault: None,
        }
    }
}

fn default_project() -> String {
    "serin-test-project".into()
}

fn default_client_email() -> String {
    "serin-test@serin-test-project.iam.gserviceaccount.com".into()
}

fn default_public_key() -> String {
    TEST_PUBLIC_KEY.into()
}

pub struct Stackdriver {
    pub world: Arc<World>,
    pub faults: Arc<ProviderFaults>,
    pub config: StackdriverConfig,
    /// Issued tokens: their expiry and scopes.
    pub tokens: Mutex<HashMap<String, (SystemTime, String)>>,
    pub issued: AtomicU64,
}

impl Stackdriver {
    pub fn new(world: Arc<World>, faults: Arc<ProviderFaults>, config: StackdriverConfig) -> Self {
        Stackdriver {
            world,
            faults,
            config,
            tokens: Mutex::new(HashMap::new()),
            issued: AtomicU64::new(0),
        }
    }

    fn issue(&self, scopes: &str) -> Value {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let token = format!("ya29.serin-stack-{n}-{:016x}", fastrand::u64(..));
        let expires = SystemTime::now() + Duration::from_secs(TOKEN_LIFETIME);
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), (expires, scopes.to_string()));
        json!({"access_token": token, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"})
    }
}

/// A Google API error.
fn google_error(code: u16, status: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({"error": {"code": code, "message": message, "status": status}}),
    )
}

fn oauth_error(error: &str, description: &str) -> Response<Body> {
    json_response(
        400,
        &json!({"error": error, "error_description": description}),
    )
}

pub async fn handle(
    sd: Arc<Stackdriver>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let host = header("host").unwrap_or_default();
    let authorization = header("authorization");
    let flavor = header("metadata-flavor");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(google_error(
                400,
                "INVALID_ARGUMENT",
                &format!("reading the body: {e}"),
            ));
        }
    };
    let resp = match (method.as_str(), path.as_str()) {
        ("POST", TOKEN_PATH) => token(&sd, &format!("http://{host}{TOKEN_PATH}"), &body),
        ("GET", METADATA_PATH) => {
            if flavor.as_deref() != Some("Google") {
                full(
                    403,
                    "text/html",
                    "Missing required header: Metadata-Flavor\n",
                )
            } else {
                let mut r = json_response(200, &sd.issue(MONITORING_SCOPES[2]));
                if let Ok(v) = "Google".parse() {
                    r.headers_mut().insert("metadata-flavor", v);
                }
                r
            }
        }
        ("POST", p) => match p
            .strip_prefix("/v3/projects/")
            .and_then(|rest| rest.strip_suffix("/timeSeries:query"))
        {
            Some(project) => query(&sd, project, authorization.as_deref(), &body).await,
            None => google_error(404, "NOT_FOUND", "Not found"),
        },
        _ => google_error(404, "NOT_FOUND", "Not found"),
    };
    Ok(resp)
}

/// The token endpoint: a JWT bearer grant, checked as Google checks it.
fn token(sd: &Stackdriver, audience: &str, body: &[u8]) -> Response<Body> {
    let form: BTreeMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return oauth_error("unsupported_grant_type", "Invalid grant_type: ");
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    let claims = match verify_jwt(assertion, &sd.config.public_key) {
        Ok(claims) => claims,
        Err(why) => return oauth_error("invalid_grant", why),
    };
    if claims["iss"].as_str() != Some(sd.config.client_email.as_str()) {
        return oauth_error("invalid_grant", "Invalid grant: account not found");
    }
    if claims["aud"].as_str() != Some(audience) {
        return oauth_error("invalid_grant", "Invalid JWT: Failed audience check.");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return oauth_error("invalid_grant", "Invalid JWT: iat and exp are required.");
    };
    if exp <= now || iat > now + 60 || exp - iat > 3600 {
        return oauth_error(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
             timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    let scopes = claims["scope"].as_str().unwrap_or_default();
    json_response(200, &sd.issue(scopes))
}

/// The claims of an RS256 JWT signed by `public_key` (PKCS#1 PEM).
fn verify_jwt(jwt: &str, public_key: &str) -> Result<Value, &'static str> {
    let b64 = |part: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .ok()
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err("Invalid JWT: not a JWS of three parts.");
    };
    let header: Value = b64(header)
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or("Invalid JWT header.")?;
    if header["alg"] != "RS256" {
        return Err("Invalid JWT: the algorithm must be RS256.");
    }
    let der = pem_der(public_key, "RSA PUBLIC KEY").ok_or("The account has no usable key.")?;
    let signature = b64(signature).ok_or("Invalid JWT Signature.")?;
    let signed = jwt
        .rsplit_once('.')
        .map(|(input, _)| input)
        .unwrap_or_default();
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, der)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "Invalid JWT Signature.")?;
    b64(claims)
        .and_then(|c| serde_json::from_slice(&c).ok())
        .ok_or("Invalid JWT claims.")
}

/// The DER of a PEM block of `label`.
fn pem_der(pem: &str, label: &str) -> Option<Vec<u8>> {
    let body = pem
        .split(&format!("-----BEGIN {label}-----"))
        .nth(1)?
        .split(&format!("-----END {label}-----"))
        .next()?;
    let text: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

async fn query(
    sd: &Stackdriver,
    project: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Response<Body> {
    let token = authorization.and_then(|a| a.strip_prefix("Bearer "));
    let scopes = token.and_then(|t| {
        let tokens = sd.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(t)
            .filter(|(expires, _)| *expires > SystemTime::now())
            .map(|(_, scopes)| scopes.clone())
    });
    let Some(scopes) = scopes else {
        return google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential.",
        );
    };
    if !scopes
        .split_whitespace()
        .any(|s| MONITORING_SCOPES.contains(&s))
    {
        return google_error(
            403,
            "PERMISSION_DENIED",
            "Request had insufficient authentication scopes.",
        );
    }
    if project != sd.config.project {
        return google_error(
            403,
            "PERMISSION_DENIED",
            &format!(
                "Permission monitoring.timeSeries.list denied (or the resource may not \
                 exist) on projects/{project}."
            ),
        );
    }
    let fault = sd.faults.take();
    if let Some(f) = &fault {
        match f.mode {
            FaultMode::RateLimit => {
                return google_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Quota exceeded for quota metric 'Time series queries' of service \
                     'monitoring.googleapis.com'.",
                );
            }
            FaultMode::Error => {
                let code = f.status.unwrap_or(503);
                return full(
                    code,
                    "text/html",
                    format!("<html><body><h1>{code}. That's an error.</h1></body></html>\n"),
                );
            }
            FaultMode::Hang => {
                tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
                return google_error(504, "DEADLINE_EXCEEDED", "Deadline exceeded");
            }
            _ => {}
        }
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return google_error(400, "INVALID_ARGUMENT", &format!("Invalid JSON: {e}")),
    };
    let text = request["query"].as_str().unwrap_or_default();
    if text.trim().is_empty() {
        return google_error(400, "INVALID_ARGUMENT", "Query is empty.");
    }
    let parsed = match mql::parse(text) {
        Ok(q) => q,
        Err(e) => return google_error(400, "INVALID_ARGUMENT", &format!("Line 1, {e}")),
    };
    let now = sd.world.unix(sd.world.now());
    match answer(&sd.world, &parsed, &sd.config.project, now) {
        Ok(mut answer) => {
            if let Some(mode) = fault.map(|f| f.mode) {
                series_fault(mode, &mut answer);
            }
            json_response(200, &answer)
        }
        Err(e) => google_error(400, "INVALID_ARGUMENT", &e),
    }
}

/// What a fault mode does to an answer.
fn series_fault(mode: FaultMode, answer: &mut Value) {
    let Some(obj) = answer.as_object_mut() else {
        return;
    };
    match mode {
        FaultMode::Empty => {
            obj.remove("timeSeriesData");
        }
        FaultMode::NullPoints => {
            let series = obj
                .entry("timeSeriesData")
                .or_insert_with(|| json!([{"labelValues": []}]));
            if let Some(all) = series.as_array_mut() {
                for s in all {
                    if let Some(s) = s.as_object_mut() {
                        s.remove("pointData");
                    }
                }
            }
        }
        FaultMode::SeveralSeries => {
            if let Some(all) = obj.get_mut("timeSeriesData").and_then(Value::as_array_mut)
                && let Some(first) = all.first().cloned()
            {
                let mut second = first;
                if let Some(points) = second["pointData"].as_array_mut() {
                    for p in points {
                        if let Some(d) = p["values"][0]["doubleValue"].as_f64() {
                            p["values"][0]["doubleValue"] = json!(d * 2.0);
                        }
                    }
                }
                all.push(second);
            }
        }
        _ => {}
    }
}

const REQUEST_COUNT: &str = "istio.io/service/server/request_count";
const RESPONSE_LATENCIES: &str = "istio.io/service/server/response_latencies";

/// A label's value: a string, or an INT64.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Label {
    Str(String),
    Int(i64),
}

impl Label {
    fn json(&self) -> Value {
        match self {
            Label::Str(s) => json!({"stringValue": s}),
            Label::Int(i) => json!({"int64Value": i.to_string()}),
        }
    }

    fn value_type(&self) -> &'static str {
        match self {
            Label::Str(_) => "STRING",
            Label::Int(_) => "INT64",
        }
    }
}

const LABELS: [&str; 13] = [
    "metric.destination_service_name",
    "metric.destination_service_namespace",
    "metric.destination_workload_name",
    "metric.destination_workload_namespace",
    "metric.destination_canonical_service_name",
    "metric.response_code",
    "metric.request_protocol",
    "resource.project_id",
    "resource.location",
    "resource.cluster_name",
    "resource.namespace_name",
    "resource.pod_name",
    "resource.container_name",
];

/// The full name of a label as written (`metric.x`, `resource.x`, or bare `x`).
fn label_name(written: &str) -> Result<&'static str, String> {
    LABELS
        .iter()
        .copied()
        .find(|l| *l == written)
        .or_else(|| {
            LABELS
                .iter()
                .copied()
                .find(|l| l.split_once('.').is_some_and(|(_, bare)| bare == written))
        })
        .ok_or_else(|| format!("column '{written}' is not found in the table"))
}

fn label(s: &Sample, name: &str, project: &str) -> Label {
    let str = |v: &str| Label::Str(v.to_string());
    match name {
        "metric.destination_service_name" => str(&s.service),
        "metric.destination_service_namespace"
        | "metric.destination_workload_namespace"
        | "resource.namespace_name" => str(&s.backend.namespace),
        "metric.destination_workload_name" | "metric.destination_canonical_service_name" => {
            str(&s.backend.workload)
        }
        "metric.response_code" => Label::Int(i64::from(s.code)),
        "metric.request_protocol" => str("http"),
        "resource.project_id" => str(project),
        "resource.location" => str("us-central1-a"),
        "resource.cluster_name" => str("serin-stack"),
        "resource.pod_name" => str(&s.backend.pod),
        _ => str("istio-proxy"),
    }
}

fn matches(p: &Pred, s: &Sample, project: &str) -> Result<bool, String> {
    Ok(match p {
        Pred::And(a, b) => matches(a, s, project)? && matches(b, s, project)?,
        Pred::Or(a, b) => matches(a, s, project)? || matches(b, s, project)?,
        Pred::Not(a) => !matches(a, s, project)?,
        Pred::Cmp(a, cmp, b) => {
            let value = |o: &Operand| -> Result<Label, String> {
                Ok(match o {
                    Operand::Label(l) => label(s, label_name(l)?, project),
                    Operand::Str(v) => Label::Str(v.clone()),
                    Operand::Num(n) => Label::Int(*n as i64),
                })
            };
            let (a, b) = (value(a)?, value(b)?);
            let text = |l: &Label| match l {
                Label::Str(s) => s.clone(),
                Label::Int(i) => i.to_string(),
            };
            match cmp {
                Cmp::Matches | Cmp::NotMatches => {
                    let re = regex::Regex::new(&format!("^(?:{})$", text(&b)))
                        .map_err(|e| format!("invalid regular expression: {e}"))?;
                    re.is_match(&text(&a)) == (*cmp == Cmp::Matches)
                }
                _ => {
                    let order = match (&a, &b) {
                        (Label::Int(x), Label::Int(y)) => x.cmp(y),
                        _ => text(&a).cmp(&text(&b)),
                    };
                    match cmp {
                        Cmp::Eq => order.is_eq(),
                        Cmp::Ne => order.is_ne(),
                        Cmp::Lt => order.is_lt(),
                        Cmp::Le => order.is_le(),
                        Cmp::Gt => order.is_gt(),
                        _ => order.is_ge(),
                    }
                }
            }
        }
    })
}

/// Every label a predicate names must exist (MQL refuses unknown columns).
fn check_labels(p: &Pred) -> Result<(), String> {
    match p {
        Pred::And(a, b) | Pred::Or(a, b) => check_labels(a).and(check_labels(b)),
        Pred::Not(a) => check_labels(a),
        Pred::Cmp(a, _, b) => [a, b].iter().try_for_each(|o| match o {
            Operand::Label(l) => label_name(l).map(|_| ()),
            _ => Ok(()),
        }),
    }
}

/// One window's requests of one output series: per input series, its count; the requests
/// the ratio's predicate selects; the latencies.
#[derive(Default)]
struct Acc {
    per_series: BTreeMap<Vec<Label>, f64>,
    selected: f64,
    latencies: Vec<(f64, crate::traffic::latency::Latency)>,
}

/// The most points one time series may have (the emulator's bound on a query's cost).
const MAX_POINTS: f64 = 10_000.0;

/// The `QueryTimeSeriesResponse` of `q` at `now` (Unix seconds).
fn answer(world: &World, q: &Query, project: &str, now: f64) -> Result<Value, String> {
    let metric = q.metric.as_deref().unwrap_or_default();
    let latencies = metric == RESPONSE_LATENCIES;
    // Labels of the output series.
    let (grouped, ratio): (Vec<&'static str>, Option<&Pred>) = match &q.reduce {
        None => (LABELS.to_vec(), None),
        Some(Reduce::GroupBy(labels, _)) => (
            labels
                .iter()
                .map(|l| label_name(l))
                .collect::<Result<_, _>>()?,
            None,
        ),
        Some(Reduce::FilterRatioBy(labels, pred)) => (
            labels
                .iter()
                .map(|l| label_name(l))
                .collect::<Result<_, _>>()?,
            Some(pred),
        ),
    };
    for f in &q.filters {
        check_labels(f)?;
    }
    if let Some(pred) = ratio {
        check_labels(pred)?;
    }
    let reducer = match &q.reduce {
        Some(Reduce::GroupBy(_, Some((name, r)))) => Some((name.clone(), *r)),
        _ => None,
    };
    if latencies && ratio.is_some() {
        return Err("filter_ratio_by takes a count metric, not a distribution".into());
    }
    if let Some((_, r)) = &reducer {
        let fits = match r {
            Reducer::Percentile(_) => latencies,
            Reducer::Sum | Reducer::Count => !latencies,
            Reducer::Mean | Reducer::Aggregate => true,
        };
        if !fits {
            return Err(format!("reducer {r:?} does not apply to {metric}"));
        }
    }
    let (aligner, window) = q.align.unwrap_or((Aligner::Delta, q.every.unwrap_or(60.0)));
    let period = q.every.unwrap_or(window);
    let within = q.within.unwrap_or(3600.0);
    if within / period > MAX_POINTS {
        return Err(format!(
            "the query asks for more than {MAX_POINTS} points per time series"
        ));
    }
    let newest = (now / period).floor() * period;
    let ends: Vec<f64> = (0..)
        .map(|k| newest - f64::from(k) * period)
        .take_while(|t| *t > now - within)
        .collect();
    let known = q.resource == "k8s_container" && (metric == REQUEST_COUNT || latencies);
    // Group key -> end time -> accumulated requests.
    let mut groups: BTreeMap<Vec<Label>, BTreeMap<i64, Acc>> = BTreeMap::new();
    let oldest = ends.last().copied().unwrap_or(newest) - window;
    let samples = if known {
        world.samples(world.from_unix(oldest), world.from_unix(now))
    } else {
        Vec::new()
    };
    for (sec, s) in samples {
        let unix = world.unix(sec as f64);
        let mut selected = true;
        for f in &q.filters {
            selected = selected && matches(f, &s, project)?;
        }
        if !selected || s.requests <= 0.0 {
            continue;
        }
        let key: Vec<Label> = grouped.iter().map(|l| label(&s, l, project)).collect();
        let series: Vec<Label> = LABELS.iter().map(|l| label(&s, l, project)).collect();
        let chosen = match ratio {
            Some(pred) => matches(pred, &s, project)?,
            None => false,
        };
        for end in &ends {
            if unix >= end - window && unix < *end {
                let acc = groups
                    .entry(key.clone())
                    .or_default()
                    .entry(*end as i64)
                    .or_default();
                *acc.per_series.entry(series.clone()).or_default() += s.requests;
                if chosen {
                    acc.selected += s.requests;
                }
                acc.latencies.push((s.requests, s.latency));
            }
        }
    }
    let (value_type, kind, unit) = match (&reducer, ratio, aligner) {
        (_, Some(_), _) => ("DOUBLE", "GAUGE", "10^2.%"),
        (Some((_, Reducer::Percentile(_) | Reducer::Mean)), _, _) if latencies => {
            ("DOUBLE", "GAUGE", "ms")
        }
        (Some((_, Reducer::Count)), _, _) => ("INT64", "GAUGE", "1"),
        (Some((_, Reducer::Mean)), _, _) => ("DOUBLE", "GAUGE", "1"),
        _ if latencies => ("DISTRIBUTION", "DELTA", "ms"),
        (_, _, Aligner::Rate) => ("DOUBLE", "GAUGE", "1/s"),
        _ => ("INT64", "DELTA", "1"),
    };
    let column = match (&reducer, ratio) {
        (Some((name, _)), _) => name.clone(),
        (None, Some(_)) => "value_request_count_ratio".into(),
        (None, None) if latencies => "value.response_latencies".into(),
        (None, None) => "value.request_count".into(),
    };
    let value_of = |acc: &Acc| -> Option<Value> {
        let total: f64 = acc.per_series.values().sum();
        let per = |count: f64| match aligner {
            Aligner::Delta => count,
            Aligner::Rate => count / window,
        };
        let int = |n: f64| json!({"int64Value": (n.round() as i64).to_string()});
        let double = |n: f64| json!({"doubleValue": n});
        Some(match (&reducer, ratio) {
            (_, Some(_)) => double(acc.selected / total),
            (Some((_, Reducer::Percentile(p))), _) => {
                double(mixture_quantile(&acc.latencies, p / 100.0)? * 1000.0)
            }
            (Some((_, Reducer::Mean)), _) if latencies => double(
                acc.latencies
                    .iter()
                    .map(|(n, l)| n * l.mean() * 1000.0)
                    .sum::<f64>()
                    / total,
            ),
            (Some((_, Reducer::Mean)), _) => {
                double(per(total) / acc.per_series.len().max(1) as f64)
            }
            (Some((_, Reducer::Count)), _) => int(acc.per_series.len() as f64),
            _ if latencies => json!({"distributionValue": {
                "count": (total.round() as i64).to_string(),
                "mean": acc.latencies.iter().map(|(n, l)| n * l.mean() * 1000.0).sum::<f64>() / total,
            }}),
            _ => match aligner {
                Aligner::Delta => int(total),
                Aligner::Rate => double(per(total)),
            },
        })
    };
    let rfc3339 = |t: f64| {
        chrono::DateTime::from_timestamp(t as i64, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let mut data: Vec<Value> = Vec::new();
    for (key, points) in &groups {
        let point_data: Vec<Value> = points
            .iter()
            .rev()
            .filter_map(|(end, acc)| {
                let value = value_of(acc)?;
                Some(json!({"values": [value], "timeInterval": {
                    "startTime": rfc3339(*end as f64 - window),
                    "endTime": rfc3339(*end as f64),
                }}))
            })
            .collect();
        if point_data.is_empty() {
            continue;
        }
        data.push(json!({
            "labelValues": key.iter().map(Label::json).collect::<Vec<_>>(),
            "pointData": point_data,
        }));
    }
    let label_descriptors: Vec<Value> = grouped
        .iter()
        .map(|name| {
            let value_type = if *name == "metric.response_code" {
                Label::Int(0).value_type()
            } else {
                Label::Str(String::new()).value_type()
            };
            json!({"key": name, "valueType": value_type})
        })
        .collect();
    let mut answer = json!({"timeSeriesDescriptor": {
        "labelDescriptors": label_descriptors,
        "pointDescriptors": [{"key": column, "valueType": value_type, "metricKind": kind, "unit": unit}],
    }});
    if !data.is_empty() {
        answer["timeSeriesData"] = json!(data);
    }
    Ok(answer)
}
