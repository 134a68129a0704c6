//! Prometheus (and anything speaking its HTTP API: Thanos, Mimir, Cortex, VictoriaMetrics):
//! an instant query, `GET <address>/api/v1/query?query=...`, without a `time` parameter so the
//! server's now is used, as Flagger does.
//!
//! reqwest directly rather than prometheus-http-query: Flagger's reading of a result (the last
//! vector series wins, a matrix is an error, NaN is no data) and errors that quote a proxy's
//! HTML page need the raw response anyway, and the per-request timeout and per-request
//! headers come from the shared client.
//!
//! The answer is decoded into typed shapes (`Envelope`, `Data` by `resultType`); a body
//! of any other shape is a decode error. Result shapes:
//! - vector: each series' value is parsed and the last one wins (Flagger's loop); no series
//!   or a NaN value is no data;
//! - scalar: its value (Flagger cannot decode this shape; there is no reason to refuse it);
//! - matrix: an error, the query has a range selector where an instant value is wanted (a
//!   range query, for the judge, wants exactly this shape);
//! - string: an error.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{Answer, ErrorKind, Http, QueryError, Reading, SecretData};
use crate::api::metric_template::MetricTemplateProvider;

const NAME: &str = "prometheus";

/// How requests authenticate, from the template's Secret.
#[derive(Clone, PartialEq, Eq)]
enum Auth {
    Bearer(String),
    Basic { username: String, password: String },
}

// Credentials never reach logs or events through Debug.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}:***)"),
        }
    }
}

/// A configured Prometheus endpoint.
#[derive(Clone, Debug)]
pub struct Prometheus {
    /// Base URL without a trailing slash; a path prefix (`/prometheus`) is kept.
    address: String,
    headers: HeaderMap,
    auth: Option<Auth>,
    insecure_skip_verify: bool,
}

impl Prometheus {
    /// An endpoint without credentials or headers (builtin metrics, inline queries).
    pub fn new(address: &str) -> Result<Prometheus, QueryError> {
        Ok(Prometheus {
            address: base_url(address)?,
            headers: HeaderMap::new(),
            auth: None,
            insecure_skip_verify: false,
        })
    }

    /// The endpoint a MetricTemplate names: its address (else `default_address`, the
    /// controller's `--metrics-server`), headers, `insecureSkipVerify`, and credentials from
    /// its Secret: `token` (Bearer), or `username` and `password` (basic).
    pub fn from_template(
        provider: &MetricTemplateProvider,
        secret: Option<(&str, &SecretData)>,
        default_address: &str,
    ) -> Result<Prometheus, QueryError> {
        let address = provider
            .address
            .as_deref()
            .filter(|a| !a.trim().is_empty())
            .unwrap_or(default_address);
        let mut prometheus = Prometheus::new(address)?;
        prometheus.insecure_skip_verify = provider.insecure_skip_verify == Some(true);
        for (name, values) in provider.headers.iter().flatten() {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
                QueryError::config(format!("invalid prometheus header name {name:?}: {e}"))
            })?;
            for value in values {
                let value = HeaderValue::from_str(value).map_err(|e| {
                    QueryError::config(format!("invalid value of prometheus header {name}: {e}"))
                })?;
                prometheus.headers.append(header.clone(), value);
            }
        }
        if let Some((secret_name, data)) = secret {
            prometheus.auth = auth_from_secret(secret_name, data)?;
        }
        Ok(prometheus)
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Runs an instant query. The headers are copied into each request (Flagger appended the
    /// auth header to the cached template's map, growing it every tick).
    pub async fn query(&self, http: &Http, query: &str) -> Result<Reading, QueryError> {
        let answer = self.get(http, "query", &[("query", query)]).await?;
        read_answer(&answer)
    }

    /// Runs a range query: one value per `step` over `[end - window, end]`, the points of a
    /// single series (NaN points left out: a ratio over a second without requests).
    pub async fn query_range(
        &self,
        http: &Http,
        query: &str,
        window: std::time::Duration,
        step: std::time::Duration,
        end: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<f64>, QueryError> {
        let end_secs = end.timestamp_millis() as f64 / 1000.0;
        let start = format!("{:.3}", end_secs - window.as_secs_f64());
        let end = format!("{end_secs:.3}");
        let step = format!("{:.3}", step.as_secs_f64().max(0.001));
        let params = [
            ("query", query),
            ("start", &start),
            ("end", &end),
            ("step", &step),
        ];
        let answer = self.get(http, "query_range", &params).await?;
        read_range(&answer)
    }

    /// GET `/api/v1/<endpoint>` with the template's headers and credentials.
    async fn get(
        &self,
        http: &Http,
        endpoint: &str,
        params: &[(&str, &str)],
    ) -> Result<Answer, QueryError> {
        let url = format!("{}/api/v1/{endpoint}", self.address);
        let mut request = http
            .client(self.insecure_skip_verify)
            .get(&url)
            .headers(self.headers.clone())
            .query(params);
        request = match &self.auth {
            Some(Auth::Bearer(token)) => request.bearer_auth(token),
            Some(Auth::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
            None => request,
        };
        http.send(NAME, request).await
    }

    /// Provider availability: `vector(1)` must answer exactly 1 (Flagger's `IsOnline`).
    pub async fn is_online(&self, http: &Http) -> Result<(), QueryError> {
        match self.query(http, "vector(1)").await? {
            Reading::Value(1.0) => Ok(()),
            other => Err(QueryError::new(
                ErrorKind::Query,
                format!(
                    "prometheus at {} answered vector(1) with {other}, not 1",
                    self.address
                ),
            )),
        }
    }
}

fn base_url(address: &str) -> Result<String, QueryError> {
    let trimmed = address.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(trimmed)
        .map_err(|e| QueryError::config(format!("invalid prometheus address {address:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(QueryError::config(format!(
            "invalid prometheus address {address:?}: the scheme must be http or https"
        )));
    }
    Ok(trimmed.to_string())
}

fn auth_from_secret(secret_name: &str, data: &SecretData) -> Result<Option<Auth>, QueryError> {
    let get = |key: &str| data.get(key).filter(|v| !v.is_empty());
    if let Some(token) = get("token") {
        return Ok(Some(Auth::Bearer(token.clone())));
    }
    match (get("username"), get("password")) {
        (Some(username), Some(password)) => Ok(Some(Auth::Basic {
            username: username.clone(),
            password: password.clone(),
        })),
        (None, None) => Err(QueryError::config(format!(
            "prometheus Secret {secret_name} has neither `token` nor `username` and `password`"
        ))),
        (Some(_), None) => Err(QueryError::config(format!(
            "prometheus Secret {secret_name} has `username` but no `password`"
        ))),
        (None, Some(_)) => Err(QueryError::config(format!(
            "prometheus Secret {secret_name} has `password` but no `username`"
        ))),
    }
}

/// The API envelope: `{"status": "success", "data": ...}`, or `{"status": "error",
/// "errorType": ..., "error": ...}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    status: Status,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Status {
    Success,
    /// `error`, and anything else a server says: only `success` carries a result.
    #[serde(other)]
    Error,
}

/// A query's `data`: the result, typed by its `resultType`. An unknown `resultType` is not
/// Prometheus' API, so it fails to decode like any other foreign body.
#[derive(Deserialize, strum::IntoStaticStr)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
enum Data {
    /// An instant vector: one sample per series.
    Vector(Vec<InstantSeries>),
    /// A single sample without labels (`scalar(...)`, a number literal).
    Scalar(Sample),
    /// A range vector: the points of each series.
    Matrix(Vec<RangeSeries>),
    /// A string literal: nothing to judge, so its content is not read.
    String(IgnoredAny),
}

/// One series of a vector; its labels (`metric`) are not read.
#[derive(Deserialize)]
struct InstantSeries {
    value: Sample,
}

/// One series of a matrix; a series without `values` has no points.
#[derive(Deserialize)]
struct RangeSeries {
    #[serde(default)]
    values: Vec<Sample>,
}

/// `[<unix time>, "<value>"]`. The time is not read (a value is judged, not when it was
/// taken), so any JSON there is accepted, as before the types; the value must be a string.
#[derive(Deserialize)]
#[serde(from = "(IgnoredAny, SampleValue)")]
struct Sample {
    value: f64,
}

impl From<(IgnoredAny, SampleValue)> for Sample {
    fn from((_, SampleValue(value)): (IgnoredAny, SampleValue)) -> Sample {
        Sample { value }
    }
}

/// Prometheus writes sample values as strings, so that "NaN", "+Inf" and "-Inf" survive JSON.
/// A value beyond f64 ("1e999") reads as an infinity, as Prometheus' own parser does.
struct SampleValue(f64);

impl<'de> Deserialize<'de> for SampleValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<SampleValue, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse::<f64>().map(SampleValue).map_err(|e| {
            // The text is remote: shown cleaned and cut, as every quote of an answer.
            serde::de::Error::custom(format!(
                "sample value {:?} is not a number: {e}",
                super::remote_text(&text)
            ))
        })
    }
}

/// Reads an instant query's answer the way the module doc says.
pub(super) fn read_answer(answer: &Answer) -> Result<Reading, QueryError> {
    match read_data(answer)? {
        Data::Vector(series) => Ok(read_vector(&series)),
        Data::Scalar(Sample { value }) if value.is_nan() => {
            Ok(Reading::NoData("the scalar is NaN".into()))
        }
        Data::Scalar(Sample { value }) => Ok(Reading::Value(value)),
        Data::Matrix(_) => Err(QueryError::new(
            ErrorKind::Query,
            "prometheus returned a matrix (a range vector): the query must return one instant \
             value; wrap the range selector in rate(), sum_over_time() or similar",
        )),
        other @ Data::String(_) => Err(QueryError::new(
            ErrorKind::Query,
            format!(
                "prometheus returned a {} result; the query must return a number",
                <&str>::from(&other)
            ),
        )),
    }
}

/// Reads a range query's answer: the points of its one series, NaN points left out. No
/// series is an empty sample, several are an error (the judge compares one series per
/// version).
pub(super) fn read_range(answer: &Answer) -> Result<Vec<f64>, QueryError> {
    let series = match read_data(answer)? {
        Data::Matrix(series) => series,
        other => {
            return Err(QueryError::new(
                ErrorKind::Query,
                format!(
                    "prometheus returned a {} result to a range query",
                    <&str>::from(&other)
                ),
            ));
        }
    };
    match series.as_slice() {
        [] => Ok(Vec::new()),
        [one] => Ok(one
            .values
            .iter()
            .map(|sample| sample.value)
            .filter(|v| !v.is_nan())
            .collect()),
        many => Err(QueryError::new(
            ErrorKind::Query,
            format!(
                "the query returned {} series; the judge compares one series per version: \
                 aggregate it (sum, histogram_quantile ... by (le))",
                many.len()
            ),
        )),
    }
}

/// The envelope's `data`, or the error the answer carries.
fn read_data(answer: &Answer) -> Result<Data, QueryError> {
    // Prometheus itself answers 400/422/503 with a JSON envelope naming the error; proxies in
    // front of it answer with anything, so an unreadable body falls back to the status.
    let envelope: Envelope = match answer.json(NAME) {
        Ok(envelope) => envelope,
        Err(decode) if answer.status.is_success() => return Err(decode),
        Err(_) => return Err(answer.status_error(NAME)),
    };
    if envelope.status != Status::Success {
        return Err(api_error(answer, &envelope));
    }
    if !answer.status.is_success() {
        return Err(answer.status_error(NAME));
    }
    envelope.data.ok_or_else(|| {
        QueryError::new(
            ErrorKind::Decode,
            "prometheus answered success without `data`",
        )
    })
}

/// The error an `error` envelope names: its kind from the HTTP status (a 2xx or 4xx is the
/// query's fault, a 5xx the server's), its text Prometheus' own, cleaned and cut.
fn api_error(answer: &Answer, envelope: &Envelope) -> QueryError {
    let kind = if answer.status.is_success() || answer.status.is_client_error() {
        match answer.status.as_u16() {
            401 | 403 => ErrorKind::Unauthorized,
            429 => ErrorKind::RateLimited,
            _ => ErrorKind::Query,
        }
    } else {
        ErrorKind::Unavailable
    };
    QueryError::new(
        kind,
        format!(
            "prometheus answered {} {}: {}",
            answer.status,
            super::remote_text(envelope.error_type.as_deref().unwrap_or("error")),
            super::remote_text(envelope.error.as_deref().unwrap_or("(no message)"))
        ),
    )
}

/// Flagger's reading of a vector: the last series wins; no series, or a NaN, is no data.
fn read_vector(series: &[InstantSeries]) -> Reading {
    match series.last().map(|s| s.value.value) {
        None => Reading::NoData("the query returned no series".into()),
        Some(v) if v.is_nan() => Reading::NoData("the value is NaN".into()),
        Some(v) => {
            if series.len() > 1 {
                tracing::debug!(
                    series = series.len(),
                    "prometheus returned several series; the last one is used, as Flagger does"
                );
            }
            Reading::Value(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use serin_stack::testing::fake_http::{FakeServer, Response};

    fn vector(values: &[&str]) -> serde_json::Value {
        let result: Vec<_> = values
            .iter()
            .enumerate()
            .map(
                |(i, v)| json!({"metric": {"pod": format!("p{i}")}, "value": [1_717_000_000.1, v]}),
            )
            .collect();
        json!({"status": "success", "data": {"resultType": "vector", "result": result}})
    }

    async fn run(response: Response) -> Result<Reading, QueryError> {
        let server = FakeServer::start(move |_| response.clone()).await;
        let http = Http::new(Duration::from_millis(500)).unwrap();
        Prometheus::new(&server.url)
            .unwrap()
            .query(&http, "up")
            .await
    }

    #[tokio::test]
    async fn a_vector_value_is_read() {
        let reading = run(Response::json(200, vector(&["99.5"]))).await;
        assert_eq!(reading, Ok(Reading::Value(99.5)));
    }

    #[tokio::test]
    async fn the_last_of_several_series_wins_as_in_flagger() {
        let reading = run(Response::json(200, vector(&["1", "2", "3.5"]))).await;
        assert_eq!(reading, Ok(Reading::Value(3.5)));
    }

    #[tokio::test]
    async fn empty_vector_and_nan_are_no_data_never_zero() {
        assert!(matches!(
            run(Response::json(200, vector(&[]))).await,
            Ok(Reading::NoData(why)) if why.contains("no series")
        ));
        assert!(matches!(
            run(Response::json(200, vector(&["NaN"]))).await,
            Ok(Reading::NoData(why)) if why.contains("NaN")
        ));
    }

    #[tokio::test]
    async fn infinities_are_values() {
        let reading = run(Response::json(200, vector(&["+Inf"]))).await;
        assert_eq!(reading, Ok(Reading::Value(f64::INFINITY)));
    }

    #[tokio::test]
    async fn a_scalar_is_read_and_a_matrix_is_an_error() {
        let scalar =
            json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "42"]}});
        assert_eq!(
            run(Response::json(200, scalar)).await,
            Ok(Reading::Value(42.0))
        );
        let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {}, "values": [[1, "1"], [2, "1"]]}
        ]}});
        let err = run(Response::json(200, matrix)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query);
        assert!(err.message.contains("matrix"), "{err}");
    }

    #[tokio::test]
    async fn api_errors_quote_prometheus_message() {
        let body = json!({"status": "error", "errorType": "bad_data", "error": "parse error: unexpected )"});
        let err = run(Response::json(400, body)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query);
        assert!(err.message.contains("bad_data"), "{err}");
        assert!(err.message.contains("unexpected )"), "{err}");
        let body = json!({"status": "error", "errorType": "timeout", "error": "query timed out"});
        let err = run(Response::json(503, body)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable);
        assert!(err.message.contains("query timed out"), "{err}");
    }

    #[tokio::test]
    async fn auth_failures_and_proxy_pages_are_errors_with_their_cause() {
        let err = run(Response::text(401, "text/plain", "Unauthorized"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthorized);
        let err = run(Response::text(403, "text/plain", "denied"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthorized);
        let page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
        let err = run(Response::text(502, "text/html", page))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable);
        assert!(err.message.contains("502 Bad Gateway"), "{err}");
        // A 200 with an HTML body (a login page) is not a Prometheus answer.
        let err = run(Response::text(200, "text/html", page))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Decode);
        assert!(err.message.contains("HTML page"), "{err}");
    }

    #[tokio::test]
    async fn a_hung_server_times_out() {
        let slow = Response::json(200, vector(&["1"])).delayed(Duration::from_secs(3));
        let started = std::time::Instant::now();
        let err = run(slow).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        let http = Http::new(Duration::from_millis(500)).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let err = Prometheus::new(&url)
            .unwrap()
            .query(&http, "up")
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Connect);
    }

    #[tokio::test]
    async fn the_request_carries_query_headers_and_credentials_each_time() {
        let server = FakeServer::start(|_| Response::json(200, vector(&["1"]))).await;
        let provider = MetricTemplateProvider {
            headers: Some(BTreeMap::from([(
                "X-Scope-OrgID".to_string(),
                vec!["tenant-a".to_string()],
            )])),
            ..super::super::template_at(
                crate::api::MetricProviderType::Prometheus,
                &format!("{}/prom/", server.url),
            )
        };
        let secret = SecretData::from([("token".to_string(), "s3cret".to_string())]);
        let prometheus =
            Prometheus::from_template(&provider, Some(("ns/prom", &secret)), "http://unused")
                .unwrap();
        let http = Http::new(Duration::from_secs(2)).unwrap();
        for _ in 0..2 {
            prometheus.query(&http, "sum(rate(x[1m]))").await.unwrap();
        }
        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        for request in &requests {
            assert_eq!(request.path, "/prom/api/v1/query");
            assert_eq!(request.query["query"], "sum(rate(x[1m]))");
            assert_eq!(request.headers["authorization"], "Bearer s3cret");
            assert_eq!(request.headers["x-scope-orgid"], "tenant-a");
            assert!(!request.query.contains_key("time"));
        }
    }

    /// An answer as `send` returns it, without a server: the decoding alone.
    fn answer(status: u16, body: &str) -> Answer {
        super::super::fixture::answer(status, &[], body)
    }

    fn success(data: serde_json::Value) -> Answer {
        answer(200, &json!({"status": "success", "data": data}).to_string())
    }

    fn matrix(series: serde_json::Value) -> Answer {
        success(json!({"resultType": "matrix", "result": series}))
    }

    #[test]
    fn each_result_shape_reads_as_an_instant_answer() {
        assert_eq!(
            read_answer(&answer(200, &vector(&["7", "8"]).to_string())),
            Ok(Reading::Value(8.0))
        );
        let scalar = success(json!({"resultType": "scalar", "result": [1.5, "3"]}));
        assert_eq!(read_answer(&scalar), Ok(Reading::Value(3.0)));
        let nan = success(json!({"resultType": "scalar", "result": [1.5, "NaN"]}));
        assert!(matches!(read_answer(&nan), Ok(Reading::NoData(why)) if why.contains("NaN")));
        let err = read_answer(&matrix(json!([{"metric": {}, "values": [[1, "1"]]}])));
        assert!(
            matches!(err, Err(e) if e.kind == ErrorKind::Query && e.message.contains("matrix"))
        );
        let string = success(json!({"resultType": "string", "result": [1, "hello"]}));
        let err = read_answer(&string).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query);
        assert!(err.message.contains("a string result"), "{err}");
    }

    #[test]
    fn a_range_answer_is_the_points_of_one_series_without_nan() {
        let one = matrix(json!([{"metric": {"a": "b"}, "values": [
            [1, "1.5"], [2, "NaN"], [3, "+Inf"], [4, "-2"]
        ]}]));
        assert_eq!(read_range(&one), Ok(vec![1.5, f64::INFINITY, -2.0]));
        assert_eq!(read_range(&matrix(json!([]))), Ok(vec![]));
        // A series without points (only `histograms`, say) has no points to compare.
        assert_eq!(read_range(&matrix(json!([{"metric": {}}]))), Ok(vec![]));
        let two = matrix(json!([{"values": [[1, "1"]]}, {"values": [[1, "2"]]}]));
        let err = read_range(&two).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query);
        assert!(err.message.contains("returned 2 series"), "{err}");
        let err = read_range(&answer(200, &vector(&["1"]).to_string())).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query);
        assert!(
            err.message.contains("a vector result to a range query"),
            "{err}"
        );
    }

    #[test]
    fn special_and_huge_values_read_as_prometheus_means_them() {
        let value = |v: &str| read_answer(&answer(200, &vector(&[v]).to_string()));
        assert_eq!(value("+Inf"), Ok(Reading::Value(f64::INFINITY)));
        assert_eq!(value("-Inf"), Ok(Reading::Value(f64::NEG_INFINITY)));
        assert_eq!(value("1e999"), Ok(Reading::Value(f64::INFINITY)));
        assert_eq!(value("-0"), Ok(Reading::Value(0.0)));
        assert!(matches!(value("NaN"), Ok(Reading::NoData(_))));
        // The time is not read: a huge or odd one does not matter.
        for time in ["1e999", "18446744073709551616123", "\"yesterday\"", "null"] {
            let body = format!(
                r#"{{"status":"success","data":{{"resultType":"scalar","result":[{time},"4"]}}}}"#
            );
            assert_eq!(
                read_answer(&answer(200, &body)),
                Ok(Reading::Value(4.0)),
                "{time}"
            );
        }
    }

    /// Bodies that are JSON, but not Prometheus' answer: each is a decode error naming where
    /// it departs, never a panic, a 0 or a quote of more than an excerpt.
    #[test]
    fn hostile_shapes_are_decode_errors() {
        let long = "x".repeat(10_000);
        let cases = [
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,2]}]}}"#,
                "value",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1]}]}}"#,
                "size 2",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1",2]}]}}"#,
                "trailing",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{}}]}}"#,
                "`value`",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":{"value":[1,"1"]}}}"#,
                "sequence",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":null}}"#,
                "null",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector"}}"#,
                "`result`",
            ),
            (
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"abc"]}}"#,
                "not a number",
            ),
            (
                r#"{"status":"success","data":{"resultType":"scalar","result":[1," 1"]}}"#,
                "not a number",
            ),
            (
                r#"{"status":"success","data":{"resultType":7,"result":[]}}"#,
                "data",
            ),
            (
                r#"{"status":"success","data":{"result":[]}}"#,
                "`resultType`",
            ),
            (
                r#"{"status":"success","data":{"resultType":"histogram","result":[]}}"#,
                "unknown variant",
            ),
            (r#"{"status":"success","data":[]}"#, "data"),
            (r#"{"status":"success"}"#, "without `data`"),
            (
                r#"{"data":{"resultType":"scalar","result":[1,"1"]}}"#,
                "`status`",
            ),
            (
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}} trailing"#,
                "trailing",
            ),
            (r#"[]"#, "not its JSON"),
        ];
        for (body, says) in cases {
            let err = read_answer(&answer(200, body)).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Decode, "{body}: {err}");
            assert!(err.message.contains(says), "{body}: {err}");
        }
        // Remote text in serde's message (an unknown variant, a bad value) is cut.
        for body in [
            format!(r#"{{"status":"success","data":{{"resultType":"{long}","result":[]}}}}"#),
            format!(
                r#"{{"status":"success","data":{{"resultType":"scalar","result":[1,"{long}"]}}}}"#
            ),
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"value":[1,"1"],"{long}":1}},1]}}}}"#
            ),
        ] {
            let err = read_answer(&answer(200, &body)).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Decode);
            assert!(
                err.message.len() < 600,
                "{} bytes: {err}",
                err.message.len()
            );
        }
        // Nesting deeper than serde_json's recursion limit is an error, not a stack overflow;
        // under a string result (not read) it is skipped without recursion.
        let nested = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let deep = |shape: &str| {
            let body = format!(
                r#"{{"status":"success","data":{{"result":{nested},"resultType":"{shape}"}}}}"#
            );
            read_answer(&answer(200, &body))
        };
        assert_eq!(deep("vector").unwrap_err().kind, ErrorKind::Decode);
        assert!(deep("string").is_err());
        let first =
            format!(r#"{{"status":"success","data":{{"resultType":"string","result":{nested}}}}}"#);
        assert_eq!(
            read_answer(&answer(200, &first)).unwrap_err().kind,
            ErrorKind::Query
        );
    }

    #[test]
    fn error_envelopes_keep_their_kind_and_a_clean_short_message() {
        let error = |status, body: &str| read_answer(&answer(status, body)).unwrap_err();
        let err = error(
            422,
            r#"{"status":"error","errorType":"execution","error":"many-to-many"}"#,
        );
        assert_eq!(err.kind, ErrorKind::Query);
        assert!(err.message.contains("execution: many-to-many"), "{err}");
        let err = error(429, r#"{"status":"error"}"#);
        assert_eq!(err.kind, ErrorKind::RateLimited);
        assert!(err.message.contains("error: (no message)"), "{err}");
        // Any status but success is an error, even with a 200.
        let err = error(200, r#"{"status":"partial","error":"half"}"#);
        assert_eq!(err.kind, ErrorKind::Query);
        let hostile = json!({"status": "error", "errorType": "x\u{7}y", "error": "z".repeat(9000)});
        let err = error(400, &hostile.to_string());
        assert!(err.message.contains("x y"), "{err}");
        assert!(err.message.len() < 600, "{} bytes", err.message.len());
        // A success envelope under an error status is the status' error.
        let err = error(500, &vector(&["1"]).to_string());
        assert_eq!(err.kind, ErrorKind::Unavailable);
        // A foreign body under an error status says the status, not the decoding.
        let err = error(503, r#"{"status":"success","data":{"resultType":"nope"}}"#);
        assert_eq!(err.kind, ErrorKind::Unavailable);
        assert!(!err.message.contains("nope"), "{err}");
    }

    #[test]
    fn basic_auth_needs_both_keys() {
        let both = SecretData::from([
            ("username".to_string(), "u".to_string()),
            ("password".to_string(), "p".to_string()),
        ]);
        assert!(matches!(
            auth_from_secret("s", &both),
            Ok(Some(Auth::Basic { .. }))
        ));
        let half = SecretData::from([("username".to_string(), "u".to_string())]);
        let err = auth_from_secret("ns/s", &half).unwrap_err();
        assert!(err.message.contains("no `password`"), "{err}");
        assert!(auth_from_secret("s", &SecretData::new()).is_err());
    }

    #[test]
    fn addresses_must_be_http_urls() {
        assert!(Prometheus::new("prometheus:9090").is_err());
        assert!(Prometheus::new("not a url").is_err());
        assert_eq!(
            Prometheus::new("http://p:9090/").unwrap().address(),
            "http://p:9090"
        );
    }
}
