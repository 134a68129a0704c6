//! Splunk Observability (SignalFx) queries: the template's query is a SignalFlow program,
//! run as Flagger runs it, over `now - 10 x the metric interval .. now` with `immediate`, with
//! the token of the Secret's `sf_token_key`, and read as Flagger reads it: every published
//! value of the computation, nulls dropped; none is no data, values of more than one time
//! series are an error, else the last value (the newest).
//!
//! Flagger runs the program over SignalFlow's WebSocket API (its Go client). serin uses the
//! same API's documented HTTP form, one request per computation:
//! `POST <stream>/v2/signalflow/execute?start=&stop=&immediate=true` (milliseconds), header
//! `X-SF-Token`, the program as the `text/plain` body; the answer is a stream of Server-Sent
//! Events (`control-message`, `metadata`, `data`, `error`, ...). serin reads it chunk by chunk
//! until `END_OF_CHANNEL`, at most [`MAX_BODY_BYTES`](super::MAX_BODY_BYTES) and within the
//! request timeout; a stream that stops before `END_OF_CHANNEL` is an incomplete answer (an
//! outage), an `error` message or a `CHANNEL_ABORT` a rejected program.
//!
//! The address is the realm's API, as in Flagger (`https://api.<realm>.signalfx.com`); the
//! stream endpoint is the same host with its `api.` label turned into `stream.`
//! (`wss://stream.<realm>.signalfx.com` works too, `ws`/`wss` read as `http`/`https`).
//! Flagger replaces the first `api` anywhere in the address, and the first `http` with `ws`;
//! serin replaces only a leading `api.` host label, so a proxy named `myapi.example.com` stays
//! itself. The availability check is Flagger's: `GET <api>/v2/metric?limit=1` must answer
//! 200.
//!
//! The query is rendered keeping its line breaks (SignalFlow statements end at them), where
//! other providers' queries are sent on one line.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeSet;

use super::{
    Answer, ErrorKind, Http, LimitedReadError, MAX_BODY_BYTES, Query, QueryError, Reading,
    SecretData, remote_text, secret_key,
};
use crate::api::metric_template::MetricTemplateProvider;

const NAME: &str = "splunk";
/// The Secret key of the access token, as Flagger names it.
pub const TOKEN_KEY: &str = "sf_token_key";
/// Flagger asks for 10 metric intervals.
const WINDOW_INTERVALS: u32 = 10;

/// A configured Splunk Observability realm.
#[derive(Clone)]
pub struct Splunk {
    /// `https://api.<realm>...`: the availability check.
    api: String,
    /// `https://stream.<realm>...`: SignalFlow.
    stream: String,
    token: String,
}

impl std::fmt::Debug for Splunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Splunk")
            .field("api", &self.api)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl Splunk {
    /// From a MetricTemplate's provider (the address is required, as in Flagger) and its
    /// Secret (`sf_token_key`).
    pub fn from_template(
        provider: &MetricTemplateProvider,
        secret: Option<(&str, &SecretData)>,
    ) -> Result<Splunk, QueryError> {
        let address = super::required_address(
            provider,
            "splunk needs provider.address: the realm's API, e.g. \
             https://api.<realm>.signalfx.com",
        )?;
        let (api, stream) = endpoints(address)?;
        let (secret_name, data) = super::required_secret(secret, || {
            format!(
                "splunk needs provider.secretRef: a Secret with `{TOKEN_KEY}` (an access token \
                 with the API scope)"
            )
        })?;
        Ok(Splunk {
            api,
            stream,
            token: secret_key(data, TOKEN_KEY, NAME, secret_name)?.to_string(),
        })
    }

    /// Runs the SignalFlow program over `now - 10 x interval .. now`, retrying 429s until
    /// `deadline`.
    pub async fn query(&self, http: &Http, query: Query<'_>) -> Result<Reading, QueryError> {
        let (now, start) = (query.now, query.window_start(WINDOW_INTERVALS));
        loop {
            let request = http
                .client(false)
                .post(format!("{}/v2/signalflow/execute", self.stream))
                .query(&[
                    ("start", start.timestamp_millis().to_string()),
                    ("stop", now.timestamp_millis().to_string()),
                    ("immediate", "true".to_string()),
                ])
                .header("X-SF-Token", &self.token)
                .header("Content-Type", "text/plain")
                .header("Accept", "text/event-stream")
                .body(query.text.to_string());
            match execute(http, request).await? {
                Ok(reading) => return Ok(reading),
                Err(refused) if refused.status == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                    super::wait_for_rate_limit(NAME, &refused, query.deadline).await?;
                }
                Err(refused) => return Err(status_error(&refused)),
            }
        }
    }

    /// Provider availability, as Flagger checks it: `GET <api>/v2/metric?limit=1` must
    /// answer 200.
    pub async fn is_online(&self, http: &Http) -> Result<(), QueryError> {
        let request = http
            .client(false)
            .get(format!("{}/v2/metric", self.api))
            .query(&[("limit", "1")])
            .header("Accept", "application/json")
            .header("X-SF-Token", &self.token);
        let answer = http.send(NAME, request).await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(status_error(&answer))
        }
    }
}

/// The realm's API and stream base URLs from a template's address (see the module
/// documentation).
pub(super) fn endpoints(address: &str) -> Result<(String, String), QueryError> {
    let address = address.trim().trim_end_matches('/');
    let invalid = |why: &str| {
        QueryError::config(format!(
            "splunk provider.address {:?} {why}: use the realm's API, e.g. \
             https://api.<realm>.signalfx.com",
            remote_text(address)
        ))
    };
    let (scheme, rest) = address
        .split_once("://")
        .ok_or_else(|| invalid("has no scheme"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "http",
        "https" | "wss" => "https",
        _ => return Err(invalid("is not http(s) or ws(s)")),
    };
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (&authority[..=userinfo.len()], host),
        None => ("", authority),
    };
    if host.is_empty() || host.starts_with(':') {
        return Err(invalid("has no host"));
    }
    let label = |host: &str, prefix: &str| {
        host.get(..prefix.len())
            .filter(|p| p.eq_ignore_ascii_case(prefix))
            .map(|_| host[prefix.len()..].to_string())
    };
    let (api, stream) = if let Some(realm) = label(host, "api.") {
        (host.to_string(), format!("stream.{realm}"))
    } else if let Some(realm) = label(host, "stream.") {
        (format!("api.{realm}"), host.to_string())
    } else {
        (host.to_string(), host.to_string())
    };
    let url = |host: &str| format!("{scheme}://{userinfo}{host}{path}");
    Ok((url(&api), url(&stream)))
}

/// Sends the execute request: the reading of its event stream, or the answer of a refused
/// request (read whole, bounded) for the caller to classify.
async fn execute(
    http: &Http,
    request: reqwest::RequestBuilder,
) -> Result<Result<Reading, Answer>, QueryError> {
    let (client, request) = request.build_split();
    let request = request.map_err(|e| http.transport_error(NAME, &e))?;
    crate::outbound::policy()
        .check_url(request.url())
        .map_err(|refused| QueryError::config(format!("{NAME}: {refused}")))?;
    let mut response = client
        .execute(request)
        .await
        .map_err(|e| http.transport_error(NAME, &e))?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let streams = content_type.is_none_or(|t| t == "text/event-stream");
    if !status.is_success() || !streams {
        let headers = response.headers().clone();
        let body = super::read_limited(response, MAX_BODY_BYTES)
            .await
            .map_err(|e| match e {
                LimitedReadError::TooLarge => super::too_large(NAME, status),
                LimitedReadError::Transport(e) => http.transport_error(NAME, &e),
            })?;
        let answer = Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        if status.is_success() {
            // A proxy's login page, or JSON: not SignalFlow's event stream.
            return Err(QueryError::new(
                ErrorKind::Decode,
                format!(
                    "splunk answered {status} with {}, not an event stream",
                    answer.describe_body()
                ),
            ));
        }
        return Ok(Err(answer));
    }
    let mut events = EventStream::default();
    let mut read = 0usize;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| http.transport_error(NAME, &e))?
    {
        read = read.saturating_add(chunk.len());
        if read > MAX_BODY_BYTES {
            return Err(super::too_large(NAME, status));
        }
        if events.feed(&chunk)? {
            // The computation is over: the connection is dropped with the response.
            break;
        }
    }
    events.finish().map(Ok)
}

/// A non-success answer: a rejected program (400) quotes Splunk's message, the rest as every
/// provider classifies it.
fn status_error(answer: &Answer) -> QueryError {
    if answer.status == reqwest::StatusCode::BAD_REQUEST {
        return QueryError::new(
            ErrorKind::Query,
            format!(
                "splunk rejected the program ({}): {}",
                answer.status,
                answer.describe_body()
            ),
        );
    }
    answer.status_error(NAME)
}

/// The whole text of an event stream, read as a finished answer (for tests and the fuzz
/// target; the client reads the same way chunk by chunk).
#[cfg(any(test, feature = "fuzzing"))]
pub(super) fn read_stream(text: &str) -> Result<Reading, QueryError> {
    let mut events = EventStream::default();
    events.feed(text.as_bytes())?;
    events.finish()
}

/// What a SignalFlow event stream said so far.
#[derive(Default)]
struct EventStream {
    /// The current line, up to its end.
    line: Vec<u8>,
    /// The event being read: its type and data lines.
    event: String,
    data: String,
    /// `END_OF_CHANNEL`, `CHANNEL_ABORT` or an `error` message was read.
    over: bool,
    /// Why the computation failed (an abort or an error message).
    failure: Option<QueryError>,
    /// Non-null values read, and the last of them.
    values: usize,
    last: Option<f64>,
    /// Null values read.
    nulls: usize,
    /// Time series that published a non-null value.
    series: BTreeSet<String>,
}

/// One `data` message: a batch of values of one logical timestamp.
#[derive(Deserialize)]
struct DataMessage {
    #[serde(default)]
    data: Option<Vec<Datum>>,
}

#[derive(Deserialize)]
struct Datum {
    #[serde(rename = "tsId")]
    ts_id: String,
    #[serde(default)]
    value: Option<f64>,
}

impl EventStream {
    /// Reads more of the stream; true once the computation is over (what follows is not
    /// read).
    fn feed(&mut self, bytes: &[u8]) -> Result<bool, QueryError> {
        for &byte in bytes {
            if self.over {
                break;
            }
            if byte == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.line_read(&line)?;
            } else {
                self.line.push(byte);
            }
        }
        Ok(self.over)
    }

    /// One line of the stream (Server-Sent Events: `field: value`, a blank line ends an
    /// event, `:` a comment).
    fn line_read(&mut self, line: &[u8]) -> Result<(), QueryError> {
        let line = String::from_utf8_lossy(line);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if line.is_empty() {
            return self.dispatch();
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            // Comments (empty field), `id`, `retry` and anything else.
            _ => {}
        }
        Ok(())
    }

    /// The event read so far, now that it ended.
    fn dispatch(&mut self) -> Result<(), QueryError> {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return Ok(());
        }
        match event.as_str() {
            "data" => self.data_message(&data),
            "control-message" => {
                self.control_message(&data);
                Ok(())
            }
            "error" => {
                self.failure = Some(program_error(&data));
                self.over = true;
                Ok(())
            }
            // `metadata`, `message` (information), `event`, `expired-tsid`: nothing the
            // value depends on.
            _ => Ok(()),
        }
    }

    fn data_message(&mut self, data: &str) -> Result<(), QueryError> {
        let message: DataMessage = serde_json::from_str(data).map_err(|e| {
            QueryError::new(
                ErrorKind::Decode,
                format!(
                    "splunk sent a data message that is not SignalFlow's JSON ({}; {} bytes)",
                    remote_text(&e.to_string()),
                    data.len()
                ),
            )
        })?;
        for datum in message.data.unwrap_or_default() {
            match datum.value {
                Some(value) => {
                    self.values += 1;
                    self.last = Some(value);
                    self.series.insert(datum.ts_id);
                }
                None => self.nulls += 1,
            }
        }
        Ok(())
    }

    fn control_message(&mut self, data: &str) {
        let message: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        match message.get("event").and_then(Value::as_str) {
            Some("END_OF_CHANNEL") => self.over = true,
            Some("CHANNEL_ABORT") => {
                let info = message.get("abortInfo").unwrap_or(&Value::Null);
                let text = |key: &str| info.get(key).and_then(Value::as_str).map(remote_text);
                let why = text("sf_job_abortReason")
                    .or_else(|| text("sf_job_abortState"))
                    .unwrap_or_else(|| "no reason given".into());
                self.failure = Some(QueryError::new(
                    ErrorKind::Query,
                    format!("splunk aborted the computation: {why}"),
                ));
                self.over = true;
            }
            _ => {}
        }
    }

    /// The reading, once the stream ended (or the computation did).
    fn finish(mut self) -> Result<Reading, QueryError> {
        if !self.over {
            // What a stream cut short left: its last line and event, as if they had ended.
            let line = std::mem::take(&mut self.line);
            if !line.is_empty() {
                self.line_read(&line)?;
            }
            self.dispatch()?;
        }
        if let Some(failure) = self.failure {
            return Err(failure);
        }
        if !self.over {
            return Err(QueryError::new(
                ErrorKind::Connect,
                "splunk's event stream ended before the computation did (no END_OF_CHANNEL): \
                 the answer is incomplete",
            ));
        }
        match (self.last, self.series.len()) {
            (None, _) if self.nulls > 0 => Ok(Reading::NoData(format!(
                "every value the program published is null ({} null values)",
                self.nulls
            ))),
            (None, _) => Ok(Reading::NoData(
                "the program published no values in the window".into(),
            )),
            (Some(_), n) if n > 1 => Err(QueryError::new(
                ErrorKind::Query,
                format!(
                    "the program published {n} time series; it must publish exactly one \
                     (aggregate them, e.g. with .sum() or .mean(), and publish one stream)"
                ),
            )),
            (Some(value), _) => Ok(Reading::Value(value)),
        }
    }
}

/// An `error` message of the stream: the computation could not run the program.
fn program_error(data: &str) -> QueryError {
    let message: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let mut said: Vec<String> = message
        .get("message")
        .and_then(Value::as_str)
        .map(String::from)
        .into_iter()
        .collect();
    if let Some(errors) = message.get("errors").and_then(Value::as_array) {
        let codes: Vec<String> = errors
            .iter()
            .take(3)
            .filter_map(|e| {
                let code = e.get("code").and_then(Value::as_str)?;
                Some(
                    match e.pointer("/context/message").and_then(Value::as_str) {
                        Some(detail) => format!("{code}: {detail}"),
                        None => code.to_string(),
                    },
                )
            })
            .collect();
        said.extend(codes);
    }
    let said = match said.is_empty() {
        true => format!("an error message of {} bytes", data.len()),
        false => format!("{:?}", remote_text(&said.join("; "))),
    };
    QueryError::new(
        ErrorKind::Query,
        format!("splunk could not run the program: {said}"),
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::super::fixture::{http, minute_query, replaying};
    use super::*;
    use crate::api::MetricProviderType;
    use serin_stack::testing::fake_http::{FakeServer, Response};

    fn provider(address: &str) -> MetricTemplateProvider {
        super::super::template_at(MetricProviderType::Splunk, address)
    }

    fn token() -> SecretData {
        super::super::fixture::secret(&[(TOKEN_KEY, "sf-token")])
    }

    /// Server-Sent Events of `(event, data)` pairs, each data split over lines as SignalFlow
    /// pretty-prints it.
    fn events(list: &[(&str, Value)]) -> String {
        let mut out = String::new();
        for (event, data) in list {
            out.push_str(&format!("event: {event}\n"));
            for line in serde_json::to_string_pretty(data).unwrap().lines() {
                out.push_str(&format!("data: {line}\n"));
            }
            out.push('\n');
        }
        out
    }

    fn control(event: &str) -> (&'static str, Value) {
        ("control-message", json!({"event": event, "timestampMs": 1}))
    }

    fn data(points: Value) -> (&'static str, Value) {
        ("data", json!({"data": points, "logicalTimestampMs": 1}))
    }

    /// A whole computation: start, the data messages, the end.
    fn computation(batches: &[Value]) -> String {
        let mut list = vec![
            control("STREAM_START"),
            (
                "control-message",
                json!({"event": "JOB_START", "handle": "H", "timestampMs": 1}),
            ),
            (
                "metadata",
                json!({"tsId": "AAAA", "properties": {"sf_metric": "m"}}),
            ),
        ];
        list.extend(batches.iter().map(|b| data(b.clone())));
        list.push(control("END_OF_CHANNEL"));
        events(&list)
    }

    async fn ask(
        responses: Vec<Response>,
        budget: Duration,
    ) -> (Result<Reading, QueryError>, FakeServer) {
        let server = replaying(responses).await;
        let splunk =
            Splunk::from_template(&provider(&server.url), Some(("ns/sf", &token()))).unwrap();
        let program = "A = data('m').sum()\nA.publish()";
        let reading = splunk.query(&http(), minute_query(program, budget)).await;
        (reading, server)
    }

    fn stream(text: String) -> Response {
        Response::text(200, "text/event-stream", &text)
    }

    #[tokio::test]
    async fn runs_the_program_over_ten_intervals_and_reads_the_last_value() {
        let body = computation(&[
            json!([{"tsId": "AAAA", "value": 1.0}]),
            json!([{"tsId": "AAAA", "value": null}]),
            json!([{"tsId": "AAAA", "value": 3.5}]),
            json!([{"tsId": "AAAA", "value": null}]),
        ]);
        let (reading, server) = ask(vec![stream(body)], Duration::ZERO).await;
        assert_eq!(reading, Ok(Reading::Value(3.5)));
        let request = &server.requests()[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v2/signalflow/execute");
        assert_eq!(request.query["start"], "1716999400000");
        assert_eq!(request.query["stop"], "1717000000000");
        assert_eq!(request.query["immediate"], "true");
        assert_eq!(request.headers["x-sf-token"], "sf-token");
        assert_eq!(request.headers["content-type"], "text/plain");
        assert_eq!(request.body, "A = data('m').sum()\nA.publish()");
    }

    #[test]
    fn no_values_null_values_and_several_series() {
        let read = |batches: &[Value]| read_stream(&computation(batches));
        assert!(matches!(read(&[]), Ok(Reading::NoData(w)) if w.contains("no values")));
        assert!(
            matches!(read(&[json!([{"tsId": "A", "value": null}])]), Ok(Reading::NoData(w)) if w.contains("null"))
        );
        let several = read(&[json!([{"tsId": "A", "value": 1.0}, {"tsId": "B", "value": 2.0}])]);
        let err = several.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query);
        assert!(err.message.contains("2 time series"), "{err}");
        // Several series of which one only has values: that one is the answer (Flagger
        // counts the series of non-null values).
        let one = read(&[json!([{"tsId": "A", "value": 1.0}, {"tsId": "B", "value": null}])]);
        assert_eq!(one, Ok(Reading::Value(1.0)));
    }

    #[test]
    fn errors_aborts_and_a_stream_cut_short() {
        let error = events(&[
            control("STREAM_START"),
            (
                "error",
                json!({"error": 400, "errorType": "ANALYTICS_PROGRAM_NAME_ERROR",
                "message": "Unknown identifier \u{7}'dat'",
                "errors": [{"code": "ANALYTICS_PROGRAM_NAME_ERROR", "context": {"identifier": "dat"}}]}),
            ),
        ]);
        let err = read_stream(&error).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query);
        assert!(
            err.message
                .contains("Unknown identifier 'dat'; ANALYTICS_PROGRAM_NAME_ERROR"),
            "{err}"
        );
        let abort = events(&[(
            "control-message",
            json!({"event": "CHANNEL_ABORT", "abortInfo": {"sf_job_abortReason": "too many time series", "sf_job_abortState": "ABORTED"}}),
        )]);
        let err = read_stream(&abort).unwrap_err();
        assert!(err.message.contains("too many time series"), "{err}");
        let full = computation(&[json!([{"tsId": "A", "value": 1.0}])]);
        let cut = &full[..full.find("END_OF_CHANNEL").unwrap() - 30];
        let err = read_stream(cut).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Connect, "{err}");
        assert!(err.kind.is_outage());
        // Whatever follows the end is not read.
        let after = format!("{full}event: data\ndata: not json\n\n");
        assert_eq!(read_stream(&after), Ok(Reading::Value(1.0)));
    }

    #[test]
    fn hostile_streams_are_errors_that_quote_no_more_than_an_excerpt() {
        let huge = "8".repeat(5000);
        for batch in [
            json!([{"tsId": "A", "value": "1.5"}]),
            json!([{"tsId": 7, "value": 1.5}]),
            json!([{"value": 1.5}]),
            json!({"tsId": "A"}),
            json!([{"tsId": "A", "value": huge}]),
        ] {
            let err = read_stream(&computation(std::slice::from_ref(&batch))).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Decode, "{batch}: {err}");
            assert!(err.message.len() < 600, "{err}");
            assert!(!err.message.contains(&huge[..300]), "{err}");
        }
        for text in [
            "event: data\ndata: {\"data\": [{\"tsId\": \"A\", \"value\": NaN}]}\n\n".to_string(),
            "event: data\ndata: {\"data\": [{\"tsId\": \"A\", \"value\": 1e999}]}\n\n".to_string(),
            format!("event: data\ndata: {huge}\n\n"),
        ] {
            let err = read_stream(&text).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Decode, "{err}");
            assert!(!err.message.contains(&huge[..300]), "{err}");
        }
        // Not an event stream at all: nothing ends it.
        for text in ["<html><title>login</title></html>", "", "\r\n\r\n", "data:"] {
            let err = read_stream(text).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Connect, "{text}: {err}");
        }
        // CRLF line ends, comments, unknown fields and events are read past.
        let crlf = ": hi\r\nretry: 5\r\nevent: data\r\ndata: {\"data\": [{\"tsId\": \"A\", \"value\": 2}]}\r\n\r\nevent: surprise\r\ndata: {}\r\n\r\nevent: control-message\r\ndata: {\"event\": \"END_OF_CHANNEL\"}\r\n\r\n";
        assert_eq!(read_stream(crlf), Ok(Reading::Value(2.0)));
    }

    #[tokio::test]
    async fn refusals_carry_their_cause() {
        let refused = Response::json(401, json!({"code": 401, "message": "Unauthorized"}));
        let err = ask(vec![refused], Duration::ZERO).await.0.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthorized);
        assert!(err.message.contains("Unauthorized"), "{err}");
        let rejected = Response::json(400, json!({"code": 400, "message": "Invalid start time"}));
        let err = ask(vec![rejected], Duration::ZERO).await.0.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query);
        assert!(err.message.contains("Invalid start time"), "{err}");
        let html = Response::text(503, "text/html", "<html><title>down</title></html>");
        let err = ask(vec![html], Duration::ZERO).await.0.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable);
        let login = Response::text(200, "text/html", "<html><title>SSO login</title></html>");
        let err = ask(vec![login], Duration::ZERO).await.0.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Decode);
        assert!(err.message.contains("not an event stream"), "{err}");
        assert!(!err.message.contains("SSO"), "{err}");
        let slow = stream(computation(&[])).delayed(Duration::from_secs(3));
        let err = ask(vec![slow], Duration::ZERO).await.0.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
    }

    #[tokio::test]
    async fn a_429_is_retried_within_the_budget() {
        let limited = Response::json(429, json!({"code": 429, "message": "Too Many Requests"}))
            .with_header("Retry-After", "1");
        let ok = stream(computation(&[json!([{"tsId": "A", "value": 5.0}])]));
        let (reading, server) = ask(vec![limited.clone(), ok], Duration::from_secs(5)).await;
        assert_eq!(reading, Ok(Reading::Value(5.0)));
        assert_eq!(server.requests().len(), 2);
        let (reading, _) = ask(vec![limited], Duration::ZERO).await;
        assert_eq!(reading.unwrap_err().kind, ErrorKind::RateLimited);
    }

    #[tokio::test]
    async fn a_huge_stream_is_cut_at_the_limit() {
        // Announced (no content type: read as a stream) or not (JSON: read as a refusal).
        for announce in [true, false] {
            let url = serin_stack::testing::fake_http::flood(64 * 1024 * 1024, announce).await;
            let http = Http::new(Duration::from_secs(30)).unwrap();
            let splunk = Splunk::from_template(&provider(&url), Some(("ns/sf", &token()))).unwrap();
            let started = Instant::now();
            let err = splunk
                .query(&http, minute_query("x", Duration::ZERO))
                .await
                .unwrap_err();
            assert_eq!(err.kind, ErrorKind::TooLarge, "{announce}: {err}");
            assert!(started.elapsed() < Duration::from_secs(10));
        }
    }

    #[test]
    fn the_stream_endpoint_is_the_realms_api_host_renamed() {
        let both = |a: &str| endpoints(a).unwrap();
        assert_eq!(
            both("https://api.us1.signalfx.com"),
            (
                "https://api.us1.signalfx.com".to_string(),
                "https://stream.us1.signalfx.com".to_string()
            )
        );
        assert_eq!(
            both("wss://stream.eu0.signalfx.com/"),
            (
                "https://api.eu0.signalfx.com".to_string(),
                "https://stream.eu0.signalfx.com".to_string()
            )
        );
        assert_eq!(
            both("http://127.0.0.1:8080"),
            (
                "http://127.0.0.1:8080".to_string(),
                "http://127.0.0.1:8080".to_string()
            )
        );
        assert_eq!(both("https://myapi.corp/sfx").1, "https://myapi.corp/sfx");
        assert_eq!(
            both("https://u:p@API.us1.signalfx.com:443").1,
            "https://u:p@stream.us1.signalfx.com:443"
        );
        for bad in [
            "api.us1.signalfx.com",
            "ftp://api.x",
            "https://",
            "https://:80/x",
        ] {
            assert_eq!(endpoints(bad).unwrap_err().kind, ErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn the_address_and_the_token_are_required() {
        let none = MetricTemplateProvider {
            address: None,
            ..provider("x")
        };
        let err = Splunk::from_template(&none, Some(("ns/sf", &token()))).unwrap_err();
        assert!(err.message.contains("provider.address"), "{err}");
        let err = Splunk::from_template(&provider("https://api.x"), None).unwrap_err();
        assert!(err.message.contains(TOKEN_KEY), "{err}");
    }
}
