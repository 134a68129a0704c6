//! Dynatrace metric queries, as Flagger makes them: the Metrics API v2,
//! `GET <address>/api/v2/metrics/query?metricSelector=<query>&resolution=Inf&from=&to=`
//! (milliseconds) over a window of 10 x the metric interval, header
//! `Authorization: Api-Token <dynatrace_token>`.
//!
//! With `resolution=Inf` each series has one value, aggregated over the whole window. As in
//! Flagger, the value is the first value of the last series of the first result (a selector
//! that splits by a dimension returns one series per value of it; the query should aggregate
//! them, `:splitBy()`). An empty result, no series, no values or a null value is no data:
//! Flagger decodes a null value as 0, a silent 0 serin does not copy.
//!
//! A 429 is retried within the check's time budget after the reset Dynatrace names: its
//! `X-RateLimit-Reset` is a Unix timestamp in microseconds (not the seconds to wait that
//! Datadog sends), or `Retry-After` when a proxy sends that. A rejected selector (400, 404)
//! quotes Dynatrace's message and constraint violations.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;

use super::{
    Answer, ErrorKind, Http, Query, QueryError, Reading, SecretData, remote_text, secret_key,
};
use crate::api::metric_template::MetricTemplateProvider;

const NAME: &str = "dynatrace";
/// The Secret key of the API token, as Flagger names it.
pub const TOKEN_KEY: &str = "dynatrace_token";
/// Flagger asks for 10 metric intervals.
const WINDOW_INTERVALS: u32 = 10;

/// A configured Dynatrace environment.
#[derive(Clone)]
pub struct Dynatrace {
    address: String,
    token: String,
}

impl std::fmt::Debug for Dynatrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dynatrace")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Dynatrace {
    /// From a MetricTemplate's provider (the address is required, as in Flagger) and its
    /// Secret (`dynatrace_token`).
    pub fn from_template(
        provider: &MetricTemplateProvider,
        secret: Option<(&str, &SecretData)>,
    ) -> Result<Dynatrace, QueryError> {
        let address = super::required_address(
            provider,
            "dynatrace needs provider.address: the environment's URL, e.g. \
             https://<environment-id>.live.dynatrace.com",
        )?
        .trim_end_matches('/')
        .to_string();
        let (secret_name, data) = super::required_secret(secret, || {
            format!(
                "dynatrace needs provider.secretRef: a Secret with `{TOKEN_KEY}` (an API token \
                 with the metrics.read scope)"
            )
        })?;
        Ok(Dynatrace {
            address,
            token: secret_key(data, TOKEN_KEY, NAME, secret_name)?.to_string(),
        })
    }

    /// Runs the metric selector over `now - 10 x interval .. now`, retrying 429s until
    /// `deadline`.
    pub async fn query(&self, http: &Http, query: Query<'_>) -> Result<Reading, QueryError> {
        let (now, from) = (query.now, query.window_start(WINDOW_INTERVALS));
        loop {
            let request = self.request(http, "/api/v2/metrics/query").query(&[
                ("metricSelector", query.text.to_string()),
                ("resolution", "Inf".to_string()),
                ("from", from.timestamp_millis().to_string()),
                ("to", now.timestamp_millis().to_string()),
            ]);
            let answer = http.send(NAME, request).await?;
            if answer.status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                super::wait_for_rate_limit(
                    NAME,
                    &reset_in_seconds(&answer, now_micros()),
                    query.deadline,
                )
                .await?;
                continue;
            }
            if !answer.status.is_success() {
                return Err(status_error(&answer));
            }
            return read_answer(&answer);
        }
    }

    /// Provider availability, as Flagger checks it: `GET /api/v2/metrics?pageSize=1` must
    /// answer 200 (the address is Dynatrace's and the token is accepted).
    pub async fn is_online(&self, http: &Http) -> Result<(), QueryError> {
        let request = self
            .request(http, "/api/v2/metrics")
            .query(&[("pageSize", "1")]);
        let answer = http.send(NAME, request).await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(status_error(&answer))
        }
    }

    fn request(&self, http: &Http, path: &str) -> reqwest::RequestBuilder {
        http.client(false)
            .get(format!("{}{path}", self.address))
            .header("Accept", "application/json")
            .header("Authorization", format!("Api-Token {}", self.token))
    }
}

fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// The 429 as the shared rate-limit wait reads it: Dynatrace's `X-RateLimit-Reset` (when the
/// limit resets, in microseconds since the epoch) turned into `Retry-After` seconds (rounded
/// up). A `Retry-After` already there wins; a reset in the past, or garbage, leaves neither
/// header (the shared wait then waits a second). Whatever the value, the shared wait caps it.
pub(super) fn reset_in_seconds(answer: &Answer, now_micros: u128) -> Answer {
    let mut headers = answer.headers.clone();
    let reset = headers
        .remove("x-ratelimit-reset")
        .and_then(|v| v.to_str().ok().and_then(|v| v.trim().parse::<f64>().ok()));
    // Microseconds of today fit an f64 well enough for a wait in seconds.
    #[allow(clippy::cast_precision_loss)]
    let now = now_micros as f64;
    let seconds = reset
        .filter(|r| r.is_finite() && *r > now)
        .map(|r| ((r - now) / 1e6).ceil());
    if let Some(seconds) = seconds
        && !headers.contains_key("retry-after")
        && let Ok(value) = reqwest::header::HeaderValue::from_str(&format!("{seconds:.0}"))
    {
        headers.insert("retry-after", value);
    }
    Answer {
        status: answer.status,
        headers,
        body: answer.body.clone(),
    }
}

/// A non-success answer: a rejected selector (400, 404) with Dynatrace's own words, the rest
/// as every provider classifies it.
fn status_error(answer: &Answer) -> QueryError {
    if !matches!(answer.status.as_u16(), 400 | 404) {
        return answer.status_error(NAME);
    }
    let body: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    let error = body.get("error").unwrap_or(&Value::Null);
    let mut said: Vec<String> = error
        .get("message")
        .and_then(Value::as_str)
        .map(String::from)
        .into_iter()
        .collect();
    if let Some(violations) = error.get("constraintViolations").and_then(Value::as_array) {
        said.extend(violations.iter().take(3).filter_map(|v| {
            let message = v.get("message").and_then(Value::as_str)?;
            Some(match v.get("path").and_then(Value::as_str) {
                Some(path) => format!("{path}: {message}"),
                None => message.to_string(),
            })
        }));
    }
    let said = match said.is_empty() {
        true => answer.describe_body(),
        false => format!("{:?}", remote_text(&said.join("; "))),
    };
    let what = match answer.status.as_u16() {
        404 => {
            "dynatrace knows no such metric or endpoint (is provider.address the environment's URL?)"
        }
        _ => "dynatrace rejected the metric selector",
    };
    QueryError::new(
        ErrorKind::Query,
        format!("{what} ({}): {said}", answer.status),
    )
}

#[derive(Deserialize)]
struct QueryResponse {
    #[serde(default)]
    result: Option<Vec<MetricResult>>,
}

#[derive(Deserialize)]
struct MetricResult {
    #[serde(default)]
    data: Option<Vec<MetricSeries>>,
}

#[derive(Deserialize)]
struct MetricSeries {
    #[serde(default)]
    values: Option<Vec<Option<f64>>>,
}

/// The value of a 200 answer: the first value of the last series of the first result.
pub(super) fn read_answer(answer: &Answer) -> Result<Reading, QueryError> {
    let response: QueryResponse = answer.json(NAME)?;
    let results = response.result.unwrap_or_default();
    let Some(first) = results.first() else {
        return Ok(Reading::NoData("dynatrace returned no result".into()));
    };
    let series = first.data.as_deref().unwrap_or_default();
    let Some(last) = series.last() else {
        return Ok(Reading::NoData(
            "the metric selector matched no series in the window".into(),
        ));
    };
    if series.len() > 1 {
        tracing::debug!(
            series = series.len(),
            "dynatrace returned several series; the last is used, as Flagger does"
        );
    }
    Ok(match last.values.as_deref().unwrap_or_default().first() {
        None => Reading::NoData("the series has no values".into()),
        Some(None) => Reading::NoData("the series' value is null".into()),
        Some(Some(value)) => Reading::Value(*value),
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::super::fixture::{answer, http, minute_query, replaying};
    use super::*;
    use crate::api::MetricProviderType;
    use serin_stack::testing::fake_http::{FakeServer, Response};

    fn provider(address: &str) -> MetricTemplateProvider {
        super::super::template_at(MetricProviderType::Dynatrace, address)
    }

    fn token() -> SecretData {
        super::super::fixture::secret(&[(TOKEN_KEY, "dt0c01.token")])
    }

    /// The selector over a 1-minute interval against a server answering `responses` in turn
    /// (then the last again), within `budget`.
    async fn ask(
        responses: Vec<Response>,
        budget: Duration,
    ) -> (Result<Reading, QueryError>, FakeServer) {
        let server = replaying(responses).await;
        let dynatrace =
            Dynatrace::from_template(&provider(&server.url), Some(("ns/dt", &token()))).unwrap();
        let selector = "builtin:service.response.time:splitBy():percentile(95)";
        let reading = dynatrace
            .query(&http(), minute_query(selector, budget))
            .await;
        (reading, server)
    }

    fn series(values: Value) -> Response {
        Response::json(
            200,
            json!({"totalCount": 1, "nextPageKey": null, "resolution": "Inf", "result": [
                {"metricId": "builtin:service.response.time", "data": [
                    {"dimensions": [], "dimensionMap": {}, "timestamps": [1], "values": values}
                ]}
            ]}),
        )
    }

    #[tokio::test]
    async fn asks_for_one_value_over_ten_intervals_with_the_api_token() {
        let (reading, server) = ask(vec![series(json!([1.11111]))], Duration::ZERO).await;
        assert_eq!(reading, Ok(Reading::Value(1.11111)));
        let request = &server.requests()[0];
        assert_eq!(request.path, "/api/v2/metrics/query");
        assert_eq!(
            request.query["metricSelector"],
            "builtin:service.response.time:splitBy():percentile(95)"
        );
        assert_eq!(request.query["resolution"], "Inf");
        assert_eq!(request.query["from"], "1716999400000");
        assert_eq!(request.query["to"], "1717000000000");
        assert_eq!(request.headers["authorization"], "Api-Token dt0c01.token");
    }

    #[test]
    fn the_first_value_of_the_last_series_is_read_as_flagger_does() {
        let body = json!({"result": [
            {"data": [{"values": [1.0]}, {"values": [2.0, 3.0]}]},
            {"data": [{"values": [9.0]}]}
        ]});
        let read = read_answer(&answer(200, &[], &body.to_string()));
        assert_eq!(read, Ok(Reading::Value(2.0)));
    }

    #[test]
    fn nothing_to_read_is_no_data_never_zero() {
        for (body, why) in [
            (json!({"result": []}), "no result"),
            (json!({"result": null}), "no result"),
            (json!({}), "no result"),
            (json!({"result": [{"data": []}]}), "no series"),
            (json!({"result": [{"data": null}]}), "no series"),
            (json!({"result": [{"data": [{"values": []}]}]}), "no values"),
            (json!({"result": [{"data": [{"values": [null]}]}]}), "null"),
            (
                json!({"result": [{"data": [{"values": [null, 4.0]}]}]}),
                "null",
            ),
        ] {
            let read = read_answer(&answer(200, &[], &body.to_string()));
            assert!(
                matches!(&read, Ok(Reading::NoData(w)) if w.contains(why)),
                "{body}: {read:?}"
            );
        }
    }

    #[test]
    fn hostile_bodies_are_decode_errors_that_quote_no_more_than_an_excerpt() {
        let huge = "7".repeat(5000);
        for body in [
            r#"{"result": [{"data": [{"values": ["1.5"]}]}]}"#.to_string(),
            r#"{"result": [{"data": [{"values": [NaN]}]}]}"#.to_string(),
            r#"{"result": {"data": []}}"#.to_string(),
            r#"{"result": [{"data": [{"values": [1e999]}]}]}"#.to_string(),
            format!(r#"{{"result": [{{"data": [{{"values": ["{huge}"]}}]}}]}}"#),
            "<html><title>login</title></html>".to_string(),
            "{\"result\": [".to_string(),
        ] {
            let err = read_answer(&answer(200, &[], &body)).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Decode, "{body}: {err}");
            assert!(err.message.len() < 600, "{err}");
            assert!(!err.message.contains(&huge[..300]), "{err}");
        }
    }

    #[tokio::test]
    async fn errors_carry_their_cause() {
        let refused = Response::json(
            401,
            json!({"error": {"code": 401, "message": "Token Authentication failed"}}),
        );
        let err = ask(vec![refused], Duration::ZERO).await.0.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthorized);
        assert!(err.message.contains("Token Authentication failed"), "{err}");
        let rejected = Response::json(
            400,
            json!({"error": {"code": 400, "message": "Constraints violated.",
                "constraintViolations": [{"path": "metricSelector",
                    "message": "Token `)` at position 12 is not expected"}]}}),
        );
        let err = ask(vec![rejected], Duration::ZERO).await.0.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query);
        assert!(
            err.message
                .contains("Constraints violated.; metricSelector: Token `)` at position 12"),
            "{err}"
        );
        let unknown = Response::json(
            404,
            json!({"error": {"code": 404, "message": "The metric key builtin:nope could not be found"}}),
        );
        let err = ask(vec![unknown], Duration::ZERO).await.0.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query);
        assert!(
            err.message.contains("builtin:nope could not be found"),
            "{err}"
        );
        assert!(err.message.contains("provider.address"), "{err}");
        let html = Response::text(502, "text/html", "<html><title>Bad gateway</title></html>");
        let err = ask(vec![html], Duration::ZERO).await.0.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable);
        assert!(err.message.contains("an HTML page"), "{err}");
        assert!(!err.message.contains("Bad gateway"), "{err}");
        let slow = series(json!([1.0])).delayed(Duration::from_secs(3));
        let err = ask(vec![slow], Duration::ZERO).await.0.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
    }

    #[test]
    fn the_reset_in_microseconds_becomes_seconds_to_wait() {
        let now: u128 = 1_717_000_000_000_000;
        let reset = |v: &str| {
            let a = reset_in_seconds(&answer(429, &[("x-ratelimit-reset", v)], ""), now);
            (
                a.header("retry-after").map(String::from),
                a.header("x-ratelimit-reset").map(String::from),
            )
        };
        assert_eq!(reset("1717000002000000"), (Some("2".into()), None));
        assert_eq!(reset("1717000000000001"), (Some("1".into()), None));
        for past_or_garbage in ["1717000000000000", "5", "soon", "NaN", "-1", "inf"] {
            assert_eq!(reset(past_or_garbage), (None, None), "{past_or_garbage}");
        }
        let far = reset("1e300").0.unwrap();
        assert!(
            far.len() > 200,
            "a huge wait, capped by the shared wait: {far}"
        );
        let proxy = answer(
            429,
            &[
                ("retry-after", "7"),
                ("x-ratelimit-reset", "1717000002000000"),
            ],
            "",
        );
        assert_eq!(
            reset_in_seconds(&proxy, now).header("retry-after"),
            Some("7")
        );
    }

    #[tokio::test]
    async fn a_429_is_retried_after_the_reset_within_the_budget() {
        let at = |secs: u128| (now_micros() + secs * 1_000_000).to_string();
        let limited = Response::json(
            429,
            json!({"error": {"code": 429, "message": "Too Many Requests"}}),
        )
        .with_header("X-RateLimit-Reset", &at(1));
        let started = Instant::now();
        let (reading, server) =
            ask(vec![limited, series(json!([42.0]))], Duration::from_secs(5)).await;
        assert_eq!(reading, Ok(Reading::Value(42.0)));
        assert_eq!(server.requests().len(), 2);
        assert!(started.elapsed() < Duration::from_secs(4));

        let far = Response::json(
            429,
            json!({"error": {"code": 429, "message": "Too Many Requests"}}),
        )
        .with_header("X-RateLimit-Reset", &at(30));
        let (reading, server) = ask(vec![far], Duration::from_secs(5)).await;
        let err = reading.unwrap_err();
        assert_eq!(err.kind, ErrorKind::RateLimited);
        assert!(err.message.contains("resets in 30s"), "{err}");
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn a_huge_answer_is_cut_at_the_limit() {
        let url = serin_stack::testing::fake_http::flood(64 * 1024 * 1024, false).await;
        let http = Http::new(Duration::from_secs(30)).unwrap();
        let dynatrace =
            Dynatrace::from_template(&provider(&url), Some(("ns/dt", &token()))).unwrap();
        let err = dynatrace
            .query(&http, minute_query("m", Duration::ZERO))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::TooLarge, "{err}");
    }

    #[test]
    fn the_address_and_the_token_are_required() {
        let err = Dynatrace::from_template(
            &MetricTemplateProvider {
                address: None,
                ..provider("x")
            },
            Some(("ns/dt", &token())),
        )
        .unwrap_err();
        assert!(err.message.contains("provider.address"), "{err}");
        let err =
            Dynatrace::from_template(&provider("https://x.live.dynatrace.com/"), None).unwrap_err();
        assert!(err.message.contains(TOKEN_KEY), "{err}");
        let err =
            Dynatrace::from_template(&provider("https://x"), Some(("ns/dt", &SecretData::new())))
                .unwrap_err();
        assert!(err.message.contains(TOKEN_KEY), "{err}");
        let ok = Dynatrace::from_template(
            &provider(" https://x.live.dynatrace.com/ "),
            Some(("ns/dt", &token())),
        )
        .unwrap();
        assert_eq!(ok.address, "https://x.live.dynatrace.com");
    }
}
