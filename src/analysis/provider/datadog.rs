//! Datadog metrics queries.
//!
//! - v1, as Flagger calls it: `GET <address>/api/v1/query?query=&from=&to=` over a window of
//!   10 x the metric interval (Unix seconds), headers `DD-API-KEY` and `DD-APPLICATION-KEY`.
//!   The value is the newest complete point of the first series: the newest non-null point
//!   before the last bucket, which is usually still filling (else the last bucket). Flagger
//!   reads the oldest point instead, which is data from up to 10 intervals ago and can
//!   predate the canary. Null points are missing buckets, never 0.
//! - v2, when the MetricTemplate carries the annotation [`API_VERSION_ANNOTATION`]` = v2`:
//!   `POST <address>/api/v2/query/scalar` (milliseconds), one query aggregated over the
//!   window (annotation [`AGGREGATOR_ANNOTATION`], default `avg`). A grouped answer with more
//!   than one value is an error: which group should decide is the query's to say.
//!
//! 429 is retried after the reset Datadog names (`X-RateLimit-Reset`, seconds), as long as
//! the retry fits in the check's time budget; otherwise it is an error saying when the limit
//! resets.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Answer, ErrorKind, Http, Query, QueryError, Reading, SecretData, secret_key};
use crate::api::metric_template::MetricTemplateProvider;

const NAME: &str = "datadog";
/// Datadog's US1 site, Flagger's default address.
pub const DEFAULT_ADDRESS: &str = "https://api.datadoghq.com";
/// MetricTemplate annotation selecting the query API: `v1` (default) or `v2`.
pub const API_VERSION_ANNOTATION: &str = "serin.io/datadog-api-version";
/// MetricTemplate annotation naming the v2 aggregator (`avg`, `min`, `max`, `sum`, `last`,
/// ...).
pub const AGGREGATOR_ANNOTATION: &str = "serin.io/datadog-aggregator";
/// Secret keys, as Flagger names them.
pub const API_KEY: &str = "datadog_api_key";
pub const APPLICATION_KEY: &str = "datadog_application_key";

/// Which query API to call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Api {
    V1,
    V2 { aggregator: String },
}

/// A configured Datadog endpoint.
#[derive(Clone)]
pub struct Datadog {
    address: String,
    api_key: String,
    application_key: String,
    api: Api,
}

impl std::fmt::Debug for Datadog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datadog")
            .field("address", &self.address)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl Datadog {
    /// From a MetricTemplate's provider, its annotations and its Secret (both keys required).
    pub fn from_template(
        provider: &MetricTemplateProvider,
        annotations: Option<&std::collections::BTreeMap<String, String>>,
        secret: Option<(&str, &SecretData)>,
    ) -> Result<Datadog, QueryError> {
        let (secret_name, data) = super::required_secret(secret, || {
            format!(
                "datadog needs provider.secretRef: a Secret with `{API_KEY}` and \
                 `{APPLICATION_KEY}`"
            )
        })?;
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).map(|v| v.trim());
        let api = match annotation(API_VERSION_ANNOTATION) {
            None | Some("" | "v1") => Api::V1,
            Some("v2") => Api::V2 {
                aggregator: annotation(AGGREGATOR_ANNOTATION)
                    .filter(|a| !a.is_empty())
                    .unwrap_or("avg")
                    .to_string(),
            },
            Some(other) => {
                return Err(QueryError::config(format!(
                    "annotation {API_VERSION_ANNOTATION}: {other:?} is not v1 or v2"
                )));
            }
        };
        let address = super::template_address(provider)
            .unwrap_or(DEFAULT_ADDRESS)
            .trim_end_matches('/')
            .to_string();
        Ok(Datadog {
            address,
            api_key: secret_key(data, API_KEY, NAME, secret_name)?.to_string(),
            application_key: secret_key(data, APPLICATION_KEY, NAME, secret_name)?.to_string(),
            api,
        })
    }

    /// Runs `query` over the window `now - 10 x interval .. now`, retrying 429s until
    /// `deadline`.
    pub async fn query(&self, http: &Http, query: Query<'_>) -> Result<Reading, QueryError> {
        let (now, from) = (query.now, query.window_start(10));
        loop {
            let request = match &self.api {
                Api::V1 => self
                    .request(http, reqwest::Method::GET, "/api/v1/query")
                    .query(&[
                        ("query", query.text.to_string()),
                        ("from", from.timestamp().to_string()),
                        ("to", now.timestamp().to_string()),
                    ]),
                Api::V2 { aggregator } => self
                    .request(http, reqwest::Method::POST, "/api/v2/query/scalar")
                    .json(&json!({"data": {
                        "type": "scalar_request",
                        "attributes": {
                            "from": from.timestamp_millis(),
                            "to": now.timestamp_millis(),
                            "queries": [{
                                "data_source": "metrics",
                                "name": "query",
                                "query": query.text,
                                "aggregator": aggregator,
                            }],
                            "formulas": [{"formula": "query"}],
                        },
                    }})),
            };
            let answer = http.send(NAME, request).await?;
            if answer.status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                super::wait_for_rate_limit(NAME, &answer, query.deadline).await?;
                continue;
            }
            if !answer.status.is_success() {
                return Err(answer.status_error(NAME));
            }
            return match self.api {
                Api::V1 => read_v1(&answer),
                Api::V2 { .. } => read_v2(&answer),
            };
        }
    }

    /// Provider availability: `GET /api/v1/validate` must answer 200 (the keys are valid).
    pub async fn is_online(&self, http: &Http) -> Result<(), QueryError> {
        let request = self.request(http, reqwest::Method::GET, "/api/v1/validate");
        let answer = http.send(NAME, request).await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(answer.status_error(NAME))
        }
    }

    fn request(&self, http: &Http, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        http.client(false)
            .request(method, format!("{}{path}", self.address))
            .header("Accept", "application/json")
            .header("DD-API-KEY", &self.api_key)
            .header("DD-APPLICATION-KEY", &self.application_key)
    }
}

#[derive(Deserialize)]
struct V1Response {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    series: Option<Vec<V1Series>>,
}

#[derive(Deserialize)]
struct V1Series {
    #[serde(default)]
    pointlist: Vec<Vec<Option<f64>>>,
}

pub(super) fn read_v1(answer: &Answer) -> Result<Reading, QueryError> {
    let response: V1Response = answer.json(NAME)?;
    if response.status.as_deref() == Some("error") {
        return Err(QueryError::new(
            ErrorKind::Query,
            format!(
                "datadog rejected the query: {}",
                response.error.as_deref().unwrap_or("(no message)")
            ),
        ));
    }
    let series = response.series.unwrap_or_default();
    let Some(first) = series.first() else {
        return Ok(Reading::NoData("datadog returned no series".into()));
    };
    if series.len() > 1 {
        tracing::debug!(
            series = series.len(),
            "datadog returned several series; the first is used, as Flagger does"
        );
    }
    if first.pointlist.is_empty() {
        return Ok(Reading::NoData("the series has no points".into()));
    }
    let value_of = |point: &Vec<Option<f64>>| match point.as_slice() {
        [_, Some(v)] => Some(*v),
        _ => None,
    };
    let (last, complete) = first
        .pointlist
        .split_last()
        .map_or((None, &[][..]), |(last, rest)| (Some(last), rest));
    let value = complete
        .iter()
        .rev()
        .find_map(value_of)
        .or_else(|| last.and_then(value_of));
    Ok(match value {
        Some(v) => Reading::Value(v),
        None => Reading::NoData("every point of the series is null".into()),
    })
}

pub(super) fn read_v2(answer: &Answer) -> Result<Reading, QueryError> {
    let response: Value = answer.json(NAME)?;
    let data = response.get("data").unwrap_or(&Value::Null);
    if let Some(errors) = data.get("errors").and_then(Value::as_str)
        && !errors.is_empty()
    {
        return Err(QueryError::new(
            ErrorKind::Query,
            format!("datadog rejected the query: {}", super::remote_text(errors)),
        ));
    }
    let columns = data
        .pointer("/attributes/columns")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let number = columns
        .iter()
        .find(|c| matches!(c.get("type").and_then(Value::as_str), None | Some("number")));
    let Some(number) = number else {
        return Ok(Reading::NoData("datadog returned no number column".into()));
    };
    let values: Vec<f64> = number
        .get("values")
        .and_then(Value::as_array)
        .map(|vs| vs.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    match values.as_slice() {
        [] => Ok(Reading::NoData("datadog returned no values".into())),
        [v] => Ok(Reading::Value(*v)),
        many => Err(QueryError::new(
            ErrorKind::Query,
            format!(
                "datadog returned {} groups; the query must return one value (remove the \
                 `by {{...}}` grouping)",
                many.len()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use std::collections::BTreeMap;

    use serde_json::json;

    use super::super::fixture::{now, replaying};
    use super::*;
    use crate::api::MetricProviderType;
    use serin_stack::testing::fake_http::{FakeServer, Response};

    fn provider(address: &str) -> MetricTemplateProvider {
        super::super::template_at(MetricProviderType::Datadog, address)
    }

    fn keys() -> SecretData {
        super::super::fixture::secret(&[(API_KEY, "api"), (APPLICATION_KEY, "app")])
    }

    fn datadog(address: &str, v2: bool) -> Datadog {
        let annotations = BTreeMap::from([(
            API_VERSION_ANNOTATION.to_string(),
            if v2 { "v2" } else { "v1" }.to_string(),
        )]);
        Datadog::from_template(
            &provider(address),
            Some(&annotations),
            Some(("ns/dd", &keys())),
        )
        .unwrap()
    }

    /// `query` over `interval` with the v1 or v2 API, against a server answering `responses`
    /// in turn (then the last one again), within `budget`.
    async fn ask(
        v2: bool,
        responses: Vec<Response>,
        query: &str,
        interval: Duration,
        budget: Duration,
    ) -> (Result<Reading, QueryError>, FakeServer) {
        let server = replaying(responses).await;
        let http = Http::new(Duration::from_millis(500)).unwrap();
        let reading = datadog(&server.url, v2)
            .query(
                &http,
                Query {
                    text: query,
                    interval,
                    now: now(),
                    deadline: Instant::now() + budget,
                },
            )
            .await;
        (reading, server)
    }

    async fn v1(
        responses: Vec<Response>,
        budget: Duration,
    ) -> (Result<Reading, QueryError>, FakeServer) {
        ask(
            false,
            responses,
            "avg:errors{*}",
            Duration::from_secs(60),
            budget,
        )
        .await
    }

    fn series(points: serde_json::Value) -> Response {
        Response::json(
            200,
            json!({"status": "ok", "series": [{"pointlist": points}]}),
        )
    }

    #[tokio::test]
    async fn v1_reads_the_newest_complete_point_over_ten_intervals_with_both_keys() {
        let (reading, server) = v1(
            vec![series(json!([[1.0, 0.5], [2.0, 0.9]]))],
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(reading, Ok(Reading::Value(0.5)));
        let request = &server.requests()[0];
        assert_eq!(request.path, "/api/v1/query");
        assert_eq!(request.query["query"], "avg:errors{*}");
        assert_eq!(request.query["from"], "1716999400");
        assert_eq!(request.query["to"], "1717000000");
        assert_eq!(request.headers["dd-api-key"], "api");
        assert_eq!(request.headers["dd-application-key"], "app");
    }

    #[tokio::test]
    async fn v1_the_last_bucket_counts_only_without_an_earlier_point() {
        let (reading, _) = v1(
            vec![series(json!([[1.0, 0.1], [2.0, 0.5], [3.0, 0.9]]))],
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(reading, Ok(Reading::Value(0.5)));
        let (reading, _) = v1(vec![series(json!([[1.0, 0.9]]))], Duration::from_secs(5)).await;
        assert_eq!(reading, Ok(Reading::Value(0.9)));
    }

    #[tokio::test]
    async fn v1_null_points_are_skipped_and_all_null_is_no_data() {
        let (reading, _) = v1(
            vec![series(json!([[1.0, null], [2.0, 0.7]]))],
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(reading, Ok(Reading::Value(0.7)));
        let (reading, _) = v1(
            vec![series(json!([
                [1.0, 0.2],
                [2.0, 0.4],
                [3.0, null],
                [4.0, 0.8]
            ]))],
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(reading, Ok(Reading::Value(0.4)));
        let (reading, _) = v1(vec![series(json!([[1.0, null]]))], Duration::from_secs(5)).await;
        assert!(matches!(reading, Ok(Reading::NoData(why)) if why.contains("null")));
        let empty = Response::json(200, json!({"status": "ok", "series": []}));
        let (reading, _) = v1(vec![empty], Duration::from_secs(5)).await;
        assert!(matches!(reading, Ok(Reading::NoData(why)) if why.contains("no series")));
    }

    #[tokio::test]
    async fn v1_uses_the_first_of_several_series() {
        let body = json!({"series": [{"pointlist": [[1.0, 3.0]]}, {"pointlist": [[1.0, 9.0]]}]});
        let (reading, _) = v1(vec![Response::json(200, body)], Duration::from_secs(5)).await;
        assert_eq!(reading, Ok(Reading::Value(3.0)));
    }

    #[tokio::test]
    async fn v1_errors_carry_their_cause() {
        let forbidden = Response::json(403, json!({"errors": ["Forbidden"]}));
        let (reading, _) = v1(vec![forbidden], Duration::from_secs(5)).await;
        let err = reading.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthorized);
        assert!(err.message.contains("Forbidden"), "{err}");
        let html = Response::text(500, "text/html", "<html><title>Oops</title></html>");
        let (reading, _) = v1(vec![html], Duration::from_secs(5)).await;
        let err = reading.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable);
        // Described, not echoed: a proxy's page could carry anything.
        assert!(err.message.contains("an HTML page (text/html"), "{err}");
        assert!(!err.message.contains("Oops"), "{err}");
        let status = Response::json(200, json!({"status": "error", "error": "bad query"}));
        let (reading, _) = v1(vec![status], Duration::from_secs(5)).await;
        assert_eq!(reading.unwrap_err().kind, ErrorKind::Query);
    }

    #[tokio::test]
    async fn v1_429_is_retried_after_the_named_reset_within_the_budget() {
        let limited = Response::json(429, json!({"errors": ["Rate limit reached"]}))
            .with_header("X-RateLimit-Reset", "1")
            .with_header("X-RateLimit-Name", "query");
        let started = Instant::now();
        let (reading, server) = v1(
            vec![limited.clone(), series(json!([[1.0, 2.0]]))],
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(reading, Ok(Reading::Value(2.0)));
        assert_eq!(server.requests().len(), 2);
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn v1_429_beyond_the_budget_is_an_error_naming_the_reset() {
        let limited = Response::json(429, json!({"errors": ["Rate limit reached"]}))
            .with_header("X-RateLimit-Reset", "30");
        let started = Instant::now();
        let (reading, server) = v1(vec![limited], Duration::from_secs(5)).await;
        let err = reading.unwrap_err();
        assert_eq!(err.kind, ErrorKind::RateLimited);
        assert!(err.message.contains("resets in 30s"), "{err}");
        assert_eq!(server.requests().len(), 1);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_hung_server_times_out() {
        let slow = series(json!([[1.0, 2.0]])).delayed(Duration::from_secs(3));
        let (reading, _) = v1(vec![slow], Duration::from_secs(5)).await;
        assert_eq!(reading.unwrap_err().kind, ErrorKind::Timeout);
    }

    async fn v2(body: serde_json::Value) -> (Result<Reading, QueryError>, FakeServer) {
        let responses = vec![Response::json(200, body)];
        ask(
            true,
            responses,
            "sum:errors{*}",
            Duration::from_secs(30),
            Duration::ZERO,
        )
        .await
    }

    #[tokio::test]
    async fn v2_posts_a_scalar_request_and_reads_the_number_column() {
        let body = json!({"data": {"type": "scalar_response", "attributes": {"columns": [
            {"name": "query", "type": "number", "values": [0.0019]}
        ]}}});
        let (reading, server) = v2(body).await;
        assert_eq!(reading, Ok(Reading::Value(0.0019)));
        let request = &server.requests()[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/api/v2/query/scalar");
        let sent: serde_json::Value = serde_json::from_str(&request.body).unwrap();
        let attributes = &sent["data"]["attributes"];
        assert_eq!(attributes["from"], 1_716_999_700_000_i64);
        assert_eq!(attributes["to"], 1_717_000_000_000_i64);
        assert_eq!(attributes["queries"][0]["query"], "sum:errors{*}");
        assert_eq!(attributes["queries"][0]["aggregator"], "avg");
    }

    #[tokio::test]
    async fn v2_nulls_are_no_data_groups_are_an_error_and_errors_are_quoted() {
        let nulls = json!({"data": {"attributes": {"columns": [
            {"name": "query", "type": "number", "values": [null]}
        ]}}});
        assert!(matches!(v2(nulls).await.0, Ok(Reading::NoData(_))));
        let groups = json!({"data": {"attributes": {"columns": [
            {"name": "resource_name", "type": "group", "values": [["a"], ["b"]]},
            {"name": "query", "type": "number", "values": [0.01, 0.08]}
        ]}}});
        let err = v2(groups).await.0.unwrap_err();
        assert!(err.message.contains("2 groups"), "{err}");
        let errors = json!({"data": {"errors": "query exceeded the maximum allowed time range"}});
        let err = v2(errors).await.0.unwrap_err();
        assert!(err.message.contains("maximum allowed"), "{err}");
    }

    #[test]
    fn both_keys_are_required_and_the_api_version_is_checked() {
        let only_api = SecretData::from([(API_KEY.to_string(), "k".to_string())]);
        let err = Datadog::from_template(&provider("http://x"), None, Some(("ns/dd", &only_api)))
            .unwrap_err();
        assert!(err.message.contains(APPLICATION_KEY), "{err}");
        assert!(Datadog::from_template(&provider("http://x"), None, None).is_err());
        let v3 = BTreeMap::from([(API_VERSION_ANNOTATION.to_string(), "v3".to_string())]);
        assert!(
            Datadog::from_template(&provider("http://x"), Some(&v3), Some(("s", &keys()))).is_err()
        );
    }
}
