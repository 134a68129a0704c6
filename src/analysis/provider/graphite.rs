//! Graphite render API queries, as Flagger sends them.
//!
//! The MetricTemplate's query is the render API's URL parameters, not a bare target:
//! `target=<expression>[&from=-5min][&until=now]...`. serin sends
//! `GET <address>/render?<those parameters>&format=json` (`format` forced to `json`; the
//! parameters decoded and re-encoded, so `+` in a query is a space, as in Flagger), with HTTP
//! basic auth from the Secret's `username` and `password` when both are set. Without `from`,
//! Graphite's own default applies (the last 24 hours).
//!
//! The answer is a list of series, each `{"target": name, "datapoints": [[value, timestamp],
//! ...]}`; a value may be a number, `null` or a number in a string. The value of the check is
//! the last non-null point of the answer, across every series in order (Flagger's choice:
//! with several series, the last one that has a point). No series, or only null (or NaN)
//! points, is no data.
//!
//! The judge (`series`) sends the same parameters with `from` and `until` set to the metric's
//! window (Unix seconds) and compares the non-null points of the one series the query must
//! return; `{{ interval }}` is then the judge's step, so `summarize(..., '{{ interval }}',
//! 'avg')` gives one sample per step.
//!
//! A 429 (a hosted Graphite behind a rate limit) is retried after its `Retry-After` within the
//! check's time budget, as for Datadog and New Relic.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::Url;
use serde_json::Value;

use super::{Answer, ErrorKind, Http, QueryError, Reading, SecretData, remote_text};
use crate::api::metric_template::MetricTemplateProvider;

const NAME: &str = "graphite";
/// Secret keys, as Flagger names them.
pub const USERNAME: &str = "username";
pub const PASSWORD: &str = "password";

/// A configured Graphite endpoint.
#[derive(Clone)]
pub struct Graphite {
    /// `<address>/render`, without parameters.
    render: Url,
    /// Basic auth, when the Secret holds a non-empty username and password.
    credentials: Option<(String, String)>,
    insecure_skip_verify: bool,
}

impl std::fmt::Debug for Graphite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graphite")
            .field("render", &self.render.as_str())
            .field("basic_auth", &self.credentials.is_some())
            .finish_non_exhaustive()
    }
}

/// One series of a render answer: its name and its points' values (`None`: null or NaN).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

impl Graphite {
    /// From a MetricTemplate's provider (an address is required) and its Secret: when the
    /// template names one, it must hold `username` and `password` (either may be empty, then
    /// no credentials are sent), as in Flagger.
    pub fn from_template(
        provider: &MetricTemplateProvider,
        secret: Option<(&str, &SecretData)>,
    ) -> Result<Graphite, QueryError> {
        let address = super::required_address(
            provider,
            "graphite needs provider.address: the Graphite web URL (e.g. \
             http://graphite.monitoring)",
        )?;
        let render = render_url(address)?;
        let credentials = match secret {
            None => None,
            Some((secret_name, data)) => {
                let key = |key: &str| super::secret_entry(data, key, NAME, secret_name);
                let (username, password) = (key(USERNAME)?, key(PASSWORD)?);
                (!username.is_empty() && !password.is_empty())
                    .then(|| (username.to_string(), password.to_string()))
            }
        };
        Ok(Graphite {
            render,
            credentials,
            insecure_skip_verify: provider.insecure_skip_verify.unwrap_or(false),
        })
    }

    /// Runs the render query and reads the last non-null point, retrying 429s until
    /// `deadline`.
    pub async fn query(
        &self,
        http: &Http,
        query: &str,
        deadline: Instant,
    ) -> Result<Reading, QueryError> {
        let url = self.url(query, None)?;
        let answer = self.render(http, url, deadline).await?;
        read_value(&answer)
    }

    /// The non-null points of the one series the query returns over `window` up to `now`,
    /// for the judge.
    pub async fn series(
        &self,
        http: &Http,
        query: &str,
        window: Duration,
        now: DateTime<Utc>,
        deadline: Instant,
    ) -> Result<Vec<f64>, QueryError> {
        let until = now.timestamp();
        let seconds = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
        let from = until.saturating_sub(seconds);
        let url = self.url(query, Some((from, until)))?;
        let answer = self.render(http, url, deadline).await?;
        read_series(&answer)
    }

    /// Provider availability: the render API answers `target=test` (with a value or none),
    /// as Flagger's `IsOnline`.
    pub async fn is_online(&self, http: &Http) -> Result<(), QueryError> {
        let url = self.url("target=test", None)?;
        let answer = self.render(http, url, Instant::now()).await?;
        read_render(&answer).map(|_| ())
    }

    /// The render URL of `query`'s parameters, `format=json`, and `from`/`until` when given.
    fn url(&self, query: &str, window: Option<(i64, i64)>) -> Result<Url, QueryError> {
        let mut params = parameters(query)?;
        if !params.contains_key("target") {
            return Err(QueryError::config(format!(
                "graphite query {:?} has no `target=` parameter: a Graphite query is the \
                 render API's parameters, `target=<expression>[&from=-5min]`",
                remote_text(query)
            )));
        }
        params.insert("format".into(), vec!["json".into()]);
        if let Some((from, until)) = window {
            params.insert("from".into(), vec![from.to_string()]);
            params.insert("until".into(), vec![until.to_string()]);
        }
        let mut url = self.render.clone();
        {
            let mut pairs = url.query_pairs_mut();
            pairs.clear();
            for (key, values) in &params {
                for value in values {
                    pairs.append_pair(key, value);
                }
            }
        }
        Ok(url)
    }

    /// GETs `url`, waiting out 429s within `deadline`; any other non-success status is an
    /// error.
    async fn render(&self, http: &Http, url: Url, deadline: Instant) -> Result<Answer, QueryError> {
        loop {
            let mut request = http
                .client(self.insecure_skip_verify)
                .get(url.clone())
                .header("Accept", "application/json");
            if let Some((username, password)) = &self.credentials {
                request = request.basic_auth(username, Some(password));
            }
            let answer = http.send(NAME, request).await?;
            if answer.status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                super::wait_for_rate_limit(NAME, &answer, deadline).await?;
                continue;
            }
            if !answer.status.is_success() {
                return Err(answer.status_error(NAME));
            }
            return Ok(answer);
        }
    }
}

/// `<address>/render`: the address' path kept (a Graphite behind a path prefix), its own
/// parameters dropped.
fn render_url(address: &str) -> Result<Url, QueryError> {
    super::endpoint_url(NAME, address, &["render"])
}

/// The query's URL parameters, decoded (`+` is a space, `%XX` a byte), by name in name order,
/// each name's values in the order written: Go's `url.Values`, as Flagger re-encodes them.
fn parameters(query: &str) -> Result<std::collections::BTreeMap<String, Vec<String>>, QueryError> {
    let parsed = Url::parse(&format!("http://query.invalid/?{query}")).map_err(|e| {
        QueryError::config(format!(
            "graphite query {:?} is not URL parameters: {e}",
            remote_text(query)
        ))
    })?;
    let mut params: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (key, value) in parsed.query_pairs() {
        if !key.is_empty() {
            params
                .entry(key.into_owned())
                .or_default()
                .push(value.into_owned());
        }
    }
    Ok(params)
}

fn decode_error(answer: &Answer, why: &str) -> QueryError {
    QueryError::new(
        ErrorKind::Decode,
        format!(
            "graphite answered {} with a body that is not a render answer ({why}): {}",
            answer.status,
            answer.describe_body()
        ),
    )
}

/// Every series of a render answer, with each point's value; an answer of another shape (not
/// a list of series, a point that is not `[value, timestamp]`, a value that is not a number)
/// is an error, as in Flagger.
pub(super) fn read_render(answer: &Answer) -> Result<Vec<Series>, QueryError> {
    let body: Value = answer.json(NAME)?;
    let Value::Array(targets) = body else {
        return Err(decode_error(answer, "not a list of series"));
    };
    targets
        .iter()
        .enumerate()
        .map(|(i, target)| {
            let Value::Object(target) = target else {
                return Err(decode_error(
                    answer,
                    &format!("series {i} is not an object"),
                ));
            };
            let name = match target.get("target") {
                Some(Value::String(name)) => remote_text(name),
                None | Some(Value::Null) => String::new(),
                Some(_) => {
                    return Err(decode_error(
                        answer,
                        &format!("series {i}: `target` is not a string"),
                    ));
                }
            };
            let points = match target.get("datapoints") {
                None | Some(Value::Null) => &[][..],
                Some(Value::Array(points)) => points.as_slice(),
                Some(_) => {
                    return Err(decode_error(
                        answer,
                        &format!("series {i}: `datapoints` is not a list"),
                    ));
                }
            };
            let values = points
                .iter()
                .enumerate()
                .map(|(j, point)| {
                    point_value(point).map_err(|why| {
                        decode_error(answer, &format!("series {i}, point {j}: {why}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Series { name, values })
        })
        .collect()
}

/// A point `[value, timestamp]`: the value (`None` for null and NaN); the timestamp is only
/// checked (a number, a string of digits, or null), as Flagger does.
fn point_value(point: &Value) -> Result<Option<f64>, String> {
    let Some([value, timestamp]) = point.as_array().map(Vec::as_slice) else {
        return Err("not a [value, timestamp] pair".into());
    };
    match timestamp {
        Value::Null | Value::Number(_) => {}
        Value::String(s) if s.parse::<i64>().is_ok() => {}
        _ => return Err("the timestamp is not a number".into()),
    }
    let value = match value {
        Value::Null => None,
        Value::Number(n) => n.as_f64(),
        Value::String(s) => Some(
            s.trim()
                .parse::<f64>()
                .map_err(|_| format!("the value {:?} is not a number", remote_text(s)))?,
        ),
        _ => return Err("the value is not a number".into()),
    };
    Ok(value.filter(|v| !v.is_nan()))
}

/// The last non-null point of the answer, across its series in order (Flagger's choice).
pub(super) fn read_value(answer: &Answer) -> Result<Reading, QueryError> {
    let series = read_render(answer)?;
    if series.len() > 1 {
        tracing::debug!(
            series = series.len(),
            "graphite returned several series; the last non-null point of the last one with \
             points is used, as Flagger does"
        );
    }
    let value = series
        .iter()
        .rev()
        .find_map(|s| s.values.iter().rev().find_map(|v| *v));
    Ok(match (value, series.len()) {
        (Some(v), _) => Reading::Value(v),
        (None, 0) => Reading::NoData("graphite returned no series".into()),
        (None, n) => Reading::NoData(format!(
            "every point of the {n} series graphite returned is null"
        )),
    })
}

/// The non-null points of the one series with points, for the judge; none is an empty
/// sample (the judge then says there are not enough).
pub(super) fn read_series(answer: &Answer) -> Result<Vec<f64>, QueryError> {
    let series = read_render(answer)?;
    let with_points: Vec<&Series> = series
        .iter()
        .filter(|s| s.values.iter().any(Option::is_some))
        .collect();
    match with_points.as_slice() {
        [] => Ok(Vec::new()),
        [one] => Ok(one.values.iter().flatten().copied().collect()),
        many => Err(QueryError::new(
            ErrorKind::Query,
            format!(
                "the query returned {} series with points; the judge compares one series \
                 per version: aggregate them (sumSeries, asPercent, ...)",
                many.len()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::MetricProviderType;
    use serin_stack::testing::fake_http::{FakeServer, Response};

    fn provider(address: &str) -> MetricTemplateProvider {
        super::super::template_at(MetricProviderType::Graphite, address)
    }

    fn credentials() -> SecretData {
        super::super::fixture::secret(&[(USERNAME, "user"), (PASSWORD, "secret")])
    }

    fn graphite(address: &str) -> Graphite {
        Graphite::from_template(&provider(address), Some(("ns/graphite", &credentials()))).unwrap()
    }

    fn answer(status: u16, body: &str) -> Answer {
        super::super::fixture::answer(status, &[], body)
    }

    /// `query` against a server answering `response`.
    async fn ask(response: Response, query: &str) -> (Result<Reading, QueryError>, FakeServer) {
        let server = FakeServer::start(move |_| response.clone()).await;
        let http = Http::new(Duration::from_millis(500)).unwrap();
        let reading = graphite(&server.url)
            .query(&http, query, Instant::now())
            .await;
        (reading, server)
    }

    const QUERY: &str = "target=summarize( asPercent( sumSeries(a.{x,y}.count), sumSeries(a.*.count) \
                         ), 1min, 'avg')&from=-5min";

    #[tokio::test]
    async fn sends_the_query_as_parameters_with_format_json_and_basic_auth() {
        let body = json!([{"target": "x", "datapoints": [[10, 1], [75.5, 2], [null, 3]]}]);
        let (reading, server) = ask(Response::json(200, body), QUERY).await;
        assert_eq!(reading, Ok(Reading::Value(75.5)));
        let request = &server.requests()[0];
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/render");
        assert_eq!(request.query["format"], "json");
        assert_eq!(request.query["from"], "-5min");
        assert_eq!(
            request.query["target"],
            "summarize( asPercent( sumSeries(a.{x,y}.count), sumSeries(a.*.count) ), 1min, 'avg')"
        );
        // "user:secret"
        assert_eq!(request.headers["authorization"], "Basic dXNlcjpzZWNyZXQ=");
    }

    #[test]
    fn the_address_path_is_kept_and_the_query_re_encoded_in_name_order() {
        let g = graphite("https://metrics.example.com/graphite/?x=1");
        let url = g
            .url("target=a.b+c&format=raw&target=d.%2A&from=-1h", None)
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://metrics.example.com/graphite/render?format=json&from=-1h&target=a.b+c&target=d.*"
        );
        let judged = g.url("target=x&from=-5min", Some((100, 160))).unwrap();
        assert_eq!(
            judged.query(),
            Some("format=json&from=100&target=x&until=160")
        );
        let err = g.url("sumSeries(a.b)", None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains("no `target=`"), "{err}");
    }

    #[test]
    fn the_last_non_null_point_of_the_last_series_with_points_is_the_value() {
        let body = json!([
            {"target": "a", "datapoints": [[1, 1], [2, 2]]},
            {"target": "b", "datapoints": [[3, 1], [null, 2]]},
            {"target": "c", "datapoints": [[null, 1]]}
        ]);
        assert_eq!(
            read_value(&answer(200, &body.to_string())),
            Ok(Reading::Value(3.0))
        );
        // Values as strings, timestamps as strings or null (Flagger reads them).
        let strings = r#"[{"target": "a", "datapoints": [["4.5", "1700000000"], ["NaN", null]]}]"#;
        assert_eq!(read_value(&answer(200, strings)), Ok(Reading::Value(4.5)));
    }

    #[test]
    fn no_series_and_null_or_nan_points_are_no_data() {
        assert!(matches!(
            read_value(&answer(200, "[]")),
            Ok(Reading::NoData(why)) if why.contains("no series")
        ));
        let nulls = r#"[{"target": "a", "datapoints": [[null, 1], ["nan", 2]]}, {"target": "b"}]"#;
        assert!(matches!(
            read_value(&answer(200, nulls)),
            Ok(Reading::NoData(why)) if why.contains("2 series") && why.contains("null")
        ));
    }

    #[test]
    fn hostile_answers_are_errors_that_quote_no_more_than_an_excerpt() {
        let long = "z".repeat(10_000);
        let cases = [
            ("{\"target\": \"a\"}", "not a list of series"),
            ("[\"a\"]", "series 0 is not an object"),
            (
                "[{\"target\": 5, \"datapoints\": []}]",
                "`target` is not a string",
            ),
            (
                "[{\"datapoints\": {\"a\": 1}}]",
                "`datapoints` is not a list",
            ),
            (
                "[{\"datapoints\": [[1]]}]",
                "series 0, point 0: not a [value, timestamp]",
            ),
            (
                "[{\"datapoints\": [[1, 2, 3]]}]",
                "not a [value, timestamp]",
            ),
            (
                "[{\"datapoints\": [[true, 1]]}]",
                "the value is not a number",
            ),
            ("[{\"datapoints\": [[{}, 1]]}]", "the value is not a number"),
            (
                "[{\"datapoints\": [[\"12abc\", 1]]}]",
                "\"12abc\" is not a number",
            ),
            (
                "[{\"datapoints\": [[1, \"yesterday\"]]}]",
                "the timestamp is not a number",
            ),
            (
                "[{\"datapoints\": [[1, [1]]]}]",
                "the timestamp is not a number",
            ),
            ("[{\"datapoints\": [[1e999, 1]]}]", "not its JSON"),
            ("<html><body>login</body></html>", "HTML page"),
            ("[", "not its JSON"),
        ];
        for (body, needle) in cases {
            let err = read_value(&answer(200, body)).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Decode, "{body}: {err}");
            assert!(err.message.contains(needle), "{body}: {err}");
        }
        let huge = format!("[{{\"datapoints\": [[\"{long}\", 1]]}}]");
        let err = read_value(&answer(200, &huge)).unwrap_err();
        assert!(err.message.len() < 600, "{}", err.message.len());
        // A huge series name is cut, never echoed whole.
        let named = format!("[{{\"target\": \"{long}\", \"datapoints\": [[1, 1]]}}]");
        assert_eq!(
            read_render(&answer(200, &named)).unwrap()[0].name.len(),
            203
        );
    }

    #[test]
    fn the_judge_reads_the_one_series_with_points() {
        let one = r#"[{"target": "a", "datapoints": [[1, 1], [null, 2], [3, 3]]}, {"target": "b", "datapoints": [[null, 1]]}]"#;
        assert_eq!(read_series(&answer(200, one)), Ok(vec![1.0, 3.0]));
        assert_eq!(read_series(&answer(200, "[]")), Ok(vec![]));
        let two = r#"[{"datapoints": [[1, 1]]}, {"datapoints": [[2, 1]]}]"#;
        let err = read_series(&answer(200, two)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query);
        assert!(err.message.contains("2 series"), "{err}");
    }

    #[tokio::test]
    async fn errors_carry_their_cause() {
        let (reading, _) = ask(
            Response::text(401, "text/html", "<html>401 Authorization Required</html>"),
            QUERY,
        )
        .await;
        let err = reading.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");
        let (reading, _) = ask(
            Response::text(400, "text/plain", "Bad Request: unknown function foo"),
            QUERY,
        )
        .await;
        let err = reading.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Status, "{err}");
        assert!(!err.message.contains("foo"), "described, not echoed: {err}");
        let (reading, _) = ask(
            Response::text(502, "text/html", "<html>bad gateway</html>"),
            QUERY,
        )
        .await;
        let err = reading.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
        assert!(err.kind.is_outage());
        let slow = Response::json(200, json!([])).delayed(Duration::from_secs(3));
        let (reading, _) = ask(slow, QUERY).await;
        assert_eq!(reading.unwrap_err().kind, ErrorKind::Timeout);
        let http = Http::new(Duration::from_millis(500)).unwrap();
        let refused = graphite("http://127.0.0.1:1")
            .query(&http, QUERY, Instant::now())
            .await;
        assert_eq!(refused.unwrap_err().kind, ErrorKind::Connect);
    }

    #[tokio::test]
    async fn a_429_is_retried_after_retry_after_within_the_budget() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let server = FakeServer::start(move |_| {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                Response::text(429, "text/plain", "Too Many Requests")
                    .with_header("Retry-After", "0.2")
            } else {
                Response::json(200, json!([{"target": "a", "datapoints": [[2.5, 1]]}]))
            }
        })
        .await;
        let http = Http::new(Duration::from_millis(500)).unwrap();
        let g = graphite(&server.url);
        let err = g.query(&http, QUERY, Instant::now()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::RateLimited, "{err}");
        assert!(err.message.contains("resets in 0.2s"), "{err}");
        let later = Instant::now() + Duration::from_secs(2);
        assert_eq!(g.query(&http, QUERY, later).await, Ok(Reading::Value(2.5)));
        assert_eq!(server.requests().len(), 2);
    }

    #[tokio::test]
    async fn online_when_target_test_is_answered_even_without_points() {
        let server = FakeServer::start(|_| Response::json(200, json!([]))).await;
        let http = Http::new(Duration::from_millis(500)).unwrap();
        assert_eq!(graphite(&server.url).is_online(&http).await, Ok(()));
        let request = &server.requests()[0];
        assert_eq!(request.query["target"], "test");
        assert_eq!(request.query["format"], "json");
        let down = FakeServer::start(|_| Response::text(500, "text/plain", "error")).await;
        assert!(graphite(&down.url).is_online(&http).await.is_err());
    }

    #[test]
    fn the_secret_must_hold_both_keys_and_empty_values_send_no_credentials() {
        let only_user = SecretData::from([(USERNAME.to_string(), "u".to_string())]);
        let err =
            Graphite::from_template(&provider("http://g"), Some(("ns/g", &only_user))).unwrap_err();
        assert!(err.message.contains("`password`"), "{err}");
        let empty = SecretData::from([
            (USERNAME.to_string(), String::new()),
            (PASSWORD.to_string(), String::new()),
        ]);
        let g = Graphite::from_template(&provider("http://g"), Some(("ns/g", &empty))).unwrap();
        assert!(g.credentials.is_none());
        assert!(Graphite::from_template(&provider("http://g"), None).is_ok());
        let mut no_address = provider("");
        no_address.address = None;
        assert!(Graphite::from_template(&no_address, None).is_err());
        for bad in [":::", "ftp://g", "mailto:a@b"] {
            let err = Graphite::from_template(&provider(bad), None).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Config, "{bad}");
        }
    }
}
