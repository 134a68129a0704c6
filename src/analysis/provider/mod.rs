//! Metric providers: the HTTP clients that run one query and say what came back.
//!
//! Every provider answers with a [`Reading`] (a value, or no data and why) or a [`QueryError`]
//! (with its cause). Nothing is ever turned into a silent 0: a null point, a NaN, an empty
//! series or an HTML error page each have their own outcome.

pub mod cloud;
pub mod cloudwatch;
pub mod datadog;
pub mod dynatrace;
pub mod externalmetrics;
pub mod graphite;
pub mod influxdb;
pub mod keptn;
pub mod newrelic;
pub mod prometheus;
pub mod quantity;
pub mod splunk;
pub mod stackdriver;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;

use crate::api::metric_template::MetricTemplateProvider;
use cloudwatch::CloudWatch;
use datadog::Datadog;
use dynatrace::Dynatrace;
use externalmetrics::ExternalMetrics;
use graphite::Graphite;
use influxdb::InfluxDb;
use keptn::Keptn;
use newrelic::NewRelic;
use prometheus::Prometheus;
use splunk::Splunk;
use stackdriver::Stackdriver;

/// One rendered query and the window it covers.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    pub text: &'a str,
    /// The metric's `interval` (Datadog and New Relic ask for this window themselves;
    /// Prometheus queries carry it in their range selectors).
    pub interval: Duration,
    pub now: DateTime<Utc>,
    /// When the check's time budget runs out (a rate-limited provider waits until then).
    pub deadline: Instant,
}

/// A metrics backend as the analysis uses it: one variant per provider, each method a
/// `match` to that provider's own `async fn`s. A new provider is a variant here, an arm in
/// each method, and its construction from its MetricTemplate in
/// `analysis::resolve_template`.
pub enum MetricProvider {
    Prometheus(Prometheus),
    Datadog(Datadog),
    NewRelic(NewRelic),
    Graphite(Graphite),
    InfluxDb(InfluxDb),
    Dynatrace(Dynatrace),
    Splunk(Splunk),
    CloudWatch(CloudWatch),
    Stackdriver(Stackdriver),
    Keptn(Keptn),
    ExternalMetrics(ExternalMetrics),
}

impl Query<'_> {
    /// The start of the window of `intervals` metric intervals that ends at `now` (`now`
    /// itself when the window reaches past the start of time).
    pub fn window_start(&self, intervals: u32) -> DateTime<Utc> {
        let window =
            chrono::Duration::from_std(self.interval * intervals).unwrap_or(chrono::Duration::MAX);
        self.now.checked_sub_signed(window).unwrap_or(self.now)
    }
}

impl MetricProvider {
    /// Runs one query.
    pub async fn query(&self, http: &Http, query: Query<'_>) -> Result<Reading, QueryError> {
        match self {
            MetricProvider::Prometheus(prometheus) => prometheus.query(http, query.text).await,
            MetricProvider::Datadog(datadog) => datadog.query(http, query).await,
            MetricProvider::NewRelic(newrelic) => {
                let Query {
                    text,
                    interval,
                    deadline,
                    ..
                } = query;
                newrelic.query(http, text, interval, deadline).await
            }
            MetricProvider::Graphite(graphite) => {
                graphite.query(http, query.text, query.deadline).await
            }
            MetricProvider::InfluxDb(influxdb) => {
                influxdb.query(http, query.text, query.deadline).await
            }
            MetricProvider::Dynatrace(dynatrace) => dynatrace.query(http, query).await,
            MetricProvider::Splunk(splunk) => splunk.query(http, query).await,
            MetricProvider::CloudWatch(cloudwatch) => cloudwatch.query(http, query).await,
            MetricProvider::Stackdriver(stackdriver) => stackdriver.query(http, query).await,
            MetricProvider::Keptn(keptn) => keptn.query(http, query.text, query.deadline).await,
            MetricProvider::ExternalMetrics(external) => external.query(http, query.text).await,
        }
    }

    /// Whether the provider reads the metric's `interval` as a duration (its query window).
    /// The others only have it written into the query text (`{{ interval }}`), in whatever
    /// syntax the query language has (Graphite's `1min`).
    pub fn reads_interval_as_duration(&self) -> bool {
        !matches!(
            self,
            MetricProvider::Prometheus(_)
                | MetricProvider::Graphite(_)
                | MetricProvider::InfluxDb(_)
                | MetricProvider::Keptn(_)
                | MetricProvider::ExternalMetrics(_)
        )
    }

    /// Whether the backend answers a trivial request (for the initialization step).
    pub async fn is_online(&self, http: &Http) -> Result<(), QueryError> {
        match self {
            MetricProvider::Prometheus(prometheus) => prometheus.is_online(http).await,
            MetricProvider::Datadog(datadog) => datadog.is_online(http).await,
            MetricProvider::NewRelic(newrelic) => newrelic.is_online(http).await,
            MetricProvider::Graphite(graphite) => graphite.is_online(http).await,
            MetricProvider::InfluxDb(influxdb) => influxdb.is_online(http).await,
            MetricProvider::Dynatrace(dynatrace) => dynatrace.is_online(http).await,
            MetricProvider::Splunk(splunk) => splunk.is_online(http).await,
            MetricProvider::CloudWatch(cloudwatch) => cloudwatch.is_online(http).await,
            MetricProvider::Stackdriver(stackdriver) => stackdriver.is_online(http).await,
            MetricProvider::Keptn(keptn) => keptn.is_online(http).await,
            MetricProvider::ExternalMetrics(external) => external.is_online(http).await,
        }
    }

    /// Whether the query keeps its line breaks when rendered: a SignalFlow program's
    /// statements end at them. Every other query is sent on one line.
    pub fn keeps_line_breaks(&self) -> bool {
        matches!(self, MetricProvider::Splunk(_))
    }

    /// Backends with the same key are one server: its availability is checked once. Only a
    /// Prometheus has one (its address): the builtin metrics of a canary all ask the same
    /// server, while every other template is checked on its own (with its own credentials).
    pub fn availability_key(&self) -> Option<String> {
        match self {
            MetricProvider::Prometheus(prometheus) => Some(prometheus.address().to_string()),
            MetricProvider::Datadog(_)
            | MetricProvider::NewRelic(_)
            | MetricProvider::Graphite(_)
            | MetricProvider::InfluxDb(_)
            | MetricProvider::Dynatrace(_)
            | MetricProvider::Splunk(_)
            | MetricProvider::CloudWatch(_)
            | MetricProvider::Stackdriver(_)
            | MetricProvider::Keptn(_)
            | MetricProvider::ExternalMetrics(_) => None,
        }
    }

    /// The query's values at every `step` over `query.interval` up to `query.now`, for the
    /// canary-vs-primary judge (Graphite: the points of the query's one series over the
    /// window; its `{{ interval }}` is the step). Providers that answer single values only
    /// say so.
    pub async fn series(
        &self,
        http: &Http,
        query: Query<'_>,
        step: Duration,
    ) -> Result<Vec<f64>, QueryError> {
        match self {
            MetricProvider::Prometheus(prometheus) => {
                let Query {
                    text,
                    interval,
                    now,
                    ..
                } = query;
                prometheus
                    .query_range(http, text, interval, step, now)
                    .await
            }
            MetricProvider::Graphite(graphite) => {
                let Query {
                    text,
                    interval,
                    now,
                    deadline,
                } = query;
                graphite.series(http, text, interval, now, deadline).await
            }
            MetricProvider::Datadog(_)
            | MetricProvider::NewRelic(_)
            | MetricProvider::Dynatrace(_)
            | MetricProvider::Splunk(_)
            | MetricProvider::CloudWatch(_)
            | MetricProvider::Stackdriver(_)
            | MetricProvider::Keptn(_)
            | MetricProvider::ExternalMetrics(_) => Err(QueryError::config(
                "the judge compares series over time, which serin reads from Prometheus and \
                 Graphite only: use one of those, or thresholds for this metric",
            )),
            MetricProvider::InfluxDb(_) => Err(QueryError::config(
                "the judge compares series over time, which serin reads from Prometheus and \
                 Graphite only (a Flux query sets its own range): use thresholds for this \
                 metric",
            )),
        }
    }
}

/// A MetricTemplate's provider of `type_` at `address` and nothing else: the template of the
/// providers' tests.
#[cfg(test)]
pub(crate) fn template_at(
    type_: crate::api::MetricProviderType,
    address: &str,
) -> crate::api::metric_template::MetricTemplateProvider {
    crate::api::metric_template::MetricTemplateProvider {
        type_,
        address: Some(address.to_string()),
        headers: None,
        secret_ref: None,
        region: None,
        insecure_skip_verify: None,
    }
}

/// What the providers' tests share: answers without a server, a server replaying answers,
/// Secrets, a fixed `now`.
#[cfg(test)]
pub(crate) mod fixture {
    use std::time::{Duration, Instant};

    use chrono::{DateTime, Utc};
    use serin_stack::testing::fake_http::{FakeServer, Response};

    use super::{Answer, Http, Query, SecretData};

    /// An answer as `Http::send` returns it, without a server: the decoding alone.
    pub fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap();
            map.insert(name, value.parse().unwrap());
        }
        Answer {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: body.into(),
        }
    }

    /// A server answering `responses` in turn, then the last one again.
    pub async fn replaying(responses: Vec<Response>) -> FakeServer {
        let responses = std::sync::Mutex::new(responses.into_iter());
        let last = std::sync::Mutex::new(None::<Response>);
        FakeServer::start(move |_| {
            let next = responses.lock().unwrap().next();
            let mut last = last.lock().unwrap();
            if let Some(r) = next {
                *last = Some(r);
            }
            last.clone().unwrap()
        })
        .await
    }

    /// A Secret's decoded data.
    pub fn secret(entries: &[(&str, &str)]) -> SecretData {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    /// The tests' fixed `now`.
    pub fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_717_000_000, 0).unwrap()
    }

    /// The client the tests ask through: a fake server answers well within its 500 ms.
    pub fn http() -> Http {
        Http::new(Duration::from_millis(500)).unwrap()
    }

    /// `text` over a 1-minute interval ending at [`now`], with `budget` left to wait out
    /// rate limits.
    pub fn minute_query(text: &str, budget: Duration) -> Query<'_> {
        Query {
            text,
            interval: Duration::from_secs(60),
            now: now(),
            deadline: Instant::now() + budget,
        }
    }
}

/// What one query returned.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// A single number.
    Value(f64),
    /// The query ran and found nothing to judge; the text says what was seen (empty
    /// series, NaN, only null points, ...).
    NoData(String),
}

/// Why a query could not be answered; the snake_case name is a bounded metric label and
/// event reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum ErrorKind {
    /// The provider is misconfigured: missing address, Secret key, bad header.
    Config,
    /// The connection failed (refused, DNS, TLS).
    Connect,
    /// No answer within the per-request timeout.
    Timeout,
    /// 401 or 403: the credentials were refused.
    Unauthorized,
    /// 429, and the reset came too late for the check's time budget.
    RateLimited,
    /// A 5xx answer: the provider (or a proxy in front of it) is down or overloaded.
    Unavailable,
    /// Any other HTTP error status.
    Status,
    /// The body was not the provider's JSON (an HTML page from a proxy, truncated JSON).
    Decode,
    /// The body was larger than [`MAX_BODY_BYTES`]: a query returning far too many series,
    /// or a hostile endpoint. Reading stops at the limit.
    TooLarge,
    /// The provider understood the request and rejected the query, or the result has a
    /// shape that cannot be judged (a matrix, several rows).
    Query,
}

impl ErrorKind {
    /// Short fixed category, for metric labels and event reasons.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The provider is down rather than misconfigured or refusing the query: it may answer
    /// again without anyone changing anything.
    pub fn is_outage(self) -> bool {
        matches!(
            self,
            ErrorKind::Connect
                | ErrorKind::Timeout
                | ErrorKind::RateLimited
                | ErrorKind::Unavailable
        )
    }
}

/// A failed query, with a message that names the provider and the cause.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    pub kind: ErrorKind,
    pub message: String,
}

impl QueryError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> QueryError {
        QueryError {
            kind,
            message: message.into(),
        }
    }

    pub fn config(message: impl Into<String>) -> QueryError {
        QueryError::new(ErrorKind::Config, message)
    }
}

/// The HTTP clients every provider shares: one verifying TLS, one not (for
/// `insecureSkipVerify`), built once so connections are pooled across checks.
#[derive(Clone, Debug)]
pub struct Http {
    client: reqwest::Client,
    insecure: reqwest::Client,
    /// Per-request timeout (Flagger: 5 s for Prometheus, Datadog and New Relic).
    pub timeout: Duration,
}

/// Flagger's per-request timeout for Prometheus, Datadog and New Relic.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of a provider's answer serin reads. A query judged by serin answers with one
/// number (or, for the judge, one series of a few hundred points): far below this. An
/// endpoint answering more is misconfigured or hostile, and reading it whole would take the
/// controller's memory from every other release.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The longest wait on a provider's rate limit, whatever its headers say: a reset further
/// away fails the check as rate limited (and the next interval tries again).
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

impl Http {
    pub fn new(timeout: Duration) -> anyhow::Result<Http> {
        use anyhow::Context;
        let client = crate::outbound::client_builder()
            .timeout(timeout)
            .build()
            .context("cannot build the metric providers' HTTP client")?;
        let insecure = crate::outbound::client_builder()
            .timeout(timeout)
            .tls_danger_accept_invalid_certs(true)
            .build()
            .context("cannot build the metric providers' HTTP client (insecureSkipVerify)")?;
        Ok(Http {
            client,
            insecure,
            timeout,
        })
    }

    pub fn client(&self, insecure_skip_verify: bool) -> &reqwest::Client {
        if insecure_skip_verify {
            &self.insecure
        } else {
            &self.client
        }
    }

    /// Sends a request and reads the body up to [`MAX_BODY_BYTES`], mapping transport
    /// failures to a [`QueryError`] that names `provider`.
    pub async fn send(
        &self,
        provider: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, QueryError> {
        let (client, request) = request.build_split();
        let request = request.map_err(|e| self.transport_error(provider, &e))?;
        crate::outbound::policy()
            .check_url(request.url())
            .map_err(|refused| QueryError::config(format!("{provider}: {refused}")))?;
        let response = client
            .execute(request)
            .await
            .map_err(|e| self.transport_error(provider, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = read_limited(response, MAX_BODY_BYTES)
            .await
            .map_err(|e| match e {
                LimitedReadError::TooLarge => too_large(provider, status),
                LimitedReadError::Transport(e) => self.transport_error(provider, &e),
            })?;
        Ok(Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    fn transport_error(&self, provider: &str, error: &reqwest::Error) -> QueryError {
        let cause = crate::error_chain(error);
        if error.is_timeout() {
            QueryError::new(
                ErrorKind::Timeout,
                format!(
                    "{provider} did not answer within {}s: {cause}",
                    self.timeout.as_secs_f64()
                ),
            )
        } else if error.is_connect() {
            QueryError::new(
                ErrorKind::Connect,
                format!("cannot connect to {provider}: {cause}"),
            )
        } else if error.is_builder() {
            QueryError::config(format!("invalid {provider} request: {cause}"))
        } else {
            QueryError::new(
                ErrorKind::Connect,
                format!("{provider} request failed: {cause}"),
            )
        }
    }
}

fn too_large(provider: &str, status: StatusCode) -> QueryError {
    QueryError::new(
        ErrorKind::TooLarge,
        format!(
            "{provider} answered {status} with more than {} KiB; serin reads at most that much \
             (does the query select one aggregated series?)",
            MAX_BODY_BYTES / 1024
        ),
    )
}

/// Why [`read_limited`] stopped.
#[derive(Debug)]
pub enum LimitedReadError {
    /// The body (or its announced length) exceeds the limit.
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads a response body chunk by chunk and stops as soon as it passes `limit` bytes, so an
/// endpoint answering gigabytes costs at most `limit` plus one chunk of memory.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, LimitedReadError> {
    let announced = response.content_length().unwrap_or(0);
    if usize::try_from(announced).map_or(true, |n| n > limit) {
        return Err(LimitedReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(LimitedReadError::Transport)?
    {
        if body.len() + chunk.len() > limit {
            return Err(LimitedReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    /// The error for a non-success status: 401/403 are [`ErrorKind::Unauthorized`], 429
    /// [`ErrorKind::RateLimited`], 5xx [`ErrorKind::Unavailable`], the rest
    /// [`ErrorKind::Status`]; the body is described, never quoted.
    pub fn status_error(&self, provider: &str) -> QueryError {
        let kind = match self.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Unauthorized,
            StatusCode::TOO_MANY_REQUESTS => ErrorKind::RateLimited,
            status if status.is_server_error() => ErrorKind::Unavailable,
            _ => ErrorKind::Status,
        };
        QueryError::new(
            kind,
            format!(
                "{provider} answered {} with {}",
                self.status,
                self.describe_body()
            ),
        )
    }

    /// The body as JSON of type `T`, or a [`ErrorKind::Decode`] error that says where the
    /// body departs from `T` and what it looked like. serde's message can quote the body (an
    /// unknown variant, a string of the wrong type), so it is cleaned and cut as any remote
    /// text.
    pub fn json<T: serde::de::DeserializeOwned>(&self, provider: &str) -> Result<T, QueryError> {
        let mut body = serde_json::Deserializer::from_str(&self.body);
        let decoded = serde_path_to_error::deserialize(&mut body)
            .map_err(|e| (e.path().to_string(), e.into_inner()))
            // Data after the value is not JSON either (serde_json::from_str's check).
            .and_then(|value| body.end().map(|()| value).map_err(|e| (".".into(), e)));
        decoded.map_err(|(at, e)| {
            // "." is the whole body: no path worth naming.
            let cause = match at.as_str() {
                "." => remote_text(&e.to_string()),
                at => remote_text(&format!("at {at}: {e}")),
            };
            QueryError::new(
                ErrorKind::Decode,
                format!(
                    "{provider} answered {} with a body that is not its JSON ({cause}): {}",
                    self.status,
                    self.describe_body()
                ),
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// After a 429, sleeps until the rate limit resets when that is before `deadline` (the
/// check's time budget), so the caller can retry; otherwise a [`ErrorKind::RateLimited`]
/// error saying when it resets.
pub async fn wait_for_rate_limit(
    provider: &str,
    answer: &Answer,
    deadline: std::time::Instant,
) -> Result<(), QueryError> {
    let reset = rate_limit_reset(answer);
    let bucket = remote_text(answer.header("x-ratelimit-name").unwrap_or("query"));
    let fits = std::time::Instant::now()
        .checked_add(reset)
        .is_some_and(|at| at <= deadline);
    if !fits {
        return Err(QueryError::new(
            ErrorKind::RateLimited,
            format!(
                "{provider} rate limit {bucket:?} reached; it resets in {}s, after this check's \
                 time budget ({})",
                reset.as_secs_f64(),
                answer.describe_body()
            ),
        ));
    }
    tracing::info!(
        provider,
        bucket,
        reset_seconds = reset.as_secs_f64(),
        "rate limited; retrying after the reset"
    );
    tokio::time::sleep(reset).await;
    Ok(())
}

/// How long a 429 says to wait. `X-RateLimit-Reset` (Datadog) is the number of seconds until
/// the window resets; `Retry-After` (New Relic, proxies) the same in the generic spelling;
/// neither (or garbage): a second. Whatever a header says, the wait is at most
/// [`MAX_RATE_LIMIT_WAIT`]: the value is remote input, and `1e20` or `inf` must neither
/// overflow a duration nor park a check.
fn rate_limit_reset(answer: &Answer) -> Duration {
    ["x-ratelimit-reset", "retry-after"]
        .iter()
        .find_map(|h| answer.header(h).and_then(|v| v.trim().parse::<f64>().ok()))
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(1), |secs| {
            let max = MAX_RATE_LIMIT_WAIT.as_secs_f64();
            // Clamped first, so the conversion cannot fail; MAX on the impossible path
            // still fails the check rather than waiting.
            Duration::try_from_secs_f64(secs.min(max)).unwrap_or(MAX_RATE_LIMIT_WAIT)
        })
}

/// Every reading of a provider's answer from one hostile reply, for the fuzz target
/// (`fuzz/fuzz_targets/provider_answers.rs`): Prometheus instant and range answers, Datadog
/// v1 and v2, New Relic NerdGraph, Graphite's render answer, InfluxDB's annotated CSV,
/// Dynatrace (and its rate-limit reset), a Splunk event stream, CloudWatch, Stackdriver and its
/// token endpoint, the error description and the rate-limit wait. Each must
/// return, never panic, and never quote more than a short excerpt of the body.
#[cfg(feature = "fuzzing")]
pub fn read_every_way(status: u16, headers: &[(&str, &str)], body: &str) -> Vec<String> {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(value),
        ) {
            map.append(name, value);
        }
    }
    let answer = Answer {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        headers: map,
        body: body.to_string(),
    };
    let shown = |r: Result<Reading, QueryError>| match r {
        Ok(reading) => reading.to_string(),
        Err(e) => e.message,
    };
    let mut out = vec![
        shown(prometheus::read_answer(&answer)),
        shown(datadog::read_v1(&answer)),
        shown(datadog::read_v2(&answer)),
        shown(newrelic::read_nerdgraph(&answer)),
        shown(dynatrace::read_answer(&answer)),
        format!(
            "{:?}",
            rate_limit_reset(&dynatrace::reset_in_seconds(&answer, 0))
        ),
        shown(splunk::read_stream(&answer.body)),
        shown(externalmetrics::read_answer(&answer)),
        shown(keptn_reading(&answer.body)),
        answer.describe_body(),
        answer.status_error("fuzz").message,
        format!("{:?}", rate_limit_reset(&answer)),
    ];
    out.push(format!("{:?}", prometheus::read_range(&answer)));
    out.push(shown(graphite::read_value(&answer)));
    out.push(format!("{:?}", graphite::read_series(&answer)));
    out.push(shown(influxdb::read_value(&answer)));
    out.push(format!("{:?}", influxdb::read_online(&answer)));
    out.push(shown(cloudwatch::read_answer(&answer)));
    out.push(cloudwatch::aws_error("fuzz", &answer).message);
    out.push(format!("{:?}", stackdriver::read_page(&answer)));
    out.push(stackdriver::google_error("fuzz", &answer).message);
    out.push(format!(
        "{:?}",
        stackdriver::token::read_token("fuzz", &answer).map(|(_, at)| at)
    ));
    out
}

/// A KeptnMetric read from a hostile body (the fuzz target's view of the Keptn provider).
#[cfg(feature = "fuzzing")]
fn keptn_reading(body: &str) -> Result<Reading, QueryError> {
    let metric = serde_json::from_str(body).unwrap_or_default();
    keptn::read_metric("KeptnMetric fuzz/fuzz", &metric)
}

/// At most this many characters of a provider's own error text are quoted.
const EXCERPT_CHARS: usize = 200;

impl Answer {
    /// What the body was, without echoing it: its content type and size, and for a JSON
    /// body the provider's own error field (`error`, `errors[]`, `message`), cleaned and cut.
    /// A remote answer is never copied raw into status or events: an endpoint could be
    /// anything a tenant points serin at, and its body anything it likes.
    pub fn describe_body(&self) -> String {
        if self.body.trim().is_empty() {
            return "an empty body".into();
        }
        let content_type = self
            .header("content-type")
            .and_then(|v| v.split(';').next())
            .map(|v| remote_text(v.trim()))
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "no content type".into());
        let size = format!("{content_type}, {} bytes", self.body.len());
        if self.body.trim_start().starts_with('<') {
            return format!("an HTML page ({size})");
        }
        match serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| provider_error_field(&v))
        {
            Some(error) => format!("error {:?} ({size})", remote_text(&error)),
            None => format!("a body of {size}"),
        }
    }
}

/// The error message a provider's JSON carries: Prometheus' `error`, Datadog's `errors`
/// (strings), GraphQL's `errors[].message`, or a generic `message`.
fn provider_error_field(body: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("message").and_then(Value::as_str).map(String::from),
        _ => None,
    };
    if let Some(errors) = body.get("errors").and_then(Value::as_array) {
        let all: Vec<String> = errors.iter().take(3).filter_map(text).collect();
        if !all.is_empty() {
            return Some(all.join("; "));
        }
    }
    ["error", "message"]
        .iter()
        .find_map(|k| body.get(*k).and_then(text))
}

/// Remote text made safe to show: printable characters only, whitespace collapsed, at most
/// [`EXCERPT_CHARS`] characters.
pub fn remote_text(text: &str) -> String {
    let printable: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = collapse(&printable);
    if text.chars().count() > EXCERPT_CHARS {
        let cut: String = text.chars().take(EXCERPT_CHARS).collect();
        format!("{cut}...")
    } else {
        text
    }
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decoded values of a Secret, whitespace-trimmed: a key written with `echo` into a file
/// carries a newline that no provider accepts.
pub type SecretData = BTreeMap<String, String>;

/// A required key of a provider's Secret.
pub fn secret_key<'a>(
    secret: &'a SecretData,
    key: &str,
    provider: &str,
    secret_name: &str,
) -> Result<&'a str, QueryError> {
    secret_entry(secret, key, provider, secret_name)
        .ok()
        .filter(|value| !value.is_empty())
        .ok_or_else(|| missing_key(key, provider, secret_name))
}

/// A key a provider's Secret must hold, possibly empty (Flagger's Graphite and InfluxDB
/// read an empty value as no credentials).
pub fn secret_entry<'a>(
    secret: &'a SecretData,
    key: &str,
    provider: &str,
    secret_name: &str,
) -> Result<&'a str, QueryError> {
    secret
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| missing_key(key, provider, secret_name))
}

fn missing_key(key: &str, provider: &str, secret_name: &str) -> QueryError {
    QueryError::config(format!(
        "{provider} Secret {secret_name} has no `{key}` key"
    ))
}

/// A template's address, trimmed; `None` when it has none or only whitespace.
pub fn template_address(provider: &MetricTemplateProvider) -> Option<&str> {
    provider
        .address
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
}

/// `address` as the base of `provider`'s endpoint: an http(s) URL without its query and
/// fragment, `segments` appended to its path (a path prefix is kept, a trailing `/` adds no
/// empty segment).
pub fn endpoint_url(
    provider: &str,
    address: &str,
    segments: &[&str],
) -> Result<reqwest::Url, QueryError> {
    let invalid = |why: String| {
        QueryError::config(format!(
            "{provider} address {:?} is not a valid URL: {why}",
            remote_text(address)
        ))
    };
    let mut url = reqwest::Url::parse(address).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| invalid("it cannot have a path".into()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// A template's address, required: `missing` says what it should be.
pub fn required_address<'a>(
    provider: &'a MetricTemplateProvider,
    missing: &str,
) -> Result<&'a str, QueryError> {
    template_address(provider).ok_or_else(|| QueryError::config(missing))
}

/// A template's Secret, required: `missing` says what it must hold.
pub fn required_secret<'a>(
    secret: Option<(&'a str, &'a SecretData)>,
    missing: impl FnOnce() -> String,
) -> Result<(&'a str, &'a SecretData), QueryError> {
    secret.ok_or_else(|| QueryError::config(missing()))
}

/// A number with the precision a reader needs: two decimals from 1 up, three significant
/// digits below (error ratios like 0.0021 stay readable).
pub fn format_value(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    if value == value.trunc() && value.abs() < 1e15 {
        return format!("{value:.0}");
    }
    let magnitude = value.abs();
    if magnitude >= 1.0 {
        return format!("{value:.2}");
    }
    // -log10 of a positive number below 1 is positive and small, so the cast is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let decimals = (-magnitude.log10()).ceil() as usize + 2;
    format!("{value:.decimals$}")
}

impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reading::Value(v) => f.write_str(&format_value(*v)),
            Reading::NoData(why) => write!(f, "no data ({why})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::answer;
    use super::*;

    #[test]
    fn bodies_are_described_never_echoed() {
        let html = "<html><head><title>secret-token-123</title></head>";
        let described =
            answer(502, &[("content-type", "text/html; charset=utf-8")], html).describe_body();
        assert_eq!(described, "an HTML page (text/html, 50 bytes)");
        let text = answer(500, &[], "instance-id: i-0abc\nami-id: ami-123").describe_body();
        assert_eq!(text, "a body of no content type, 35 bytes");
        assert!(!text.contains("i-0abc"));
        assert_eq!(answer(500, &[], "  \n").describe_body(), "an empty body");
    }

    #[test]
    fn a_providers_own_error_field_is_quoted_clean_and_short() {
        let prom = answer(
            400,
            &[],
            r#"{"status":"error","error":"parse error\u0007 at 1"}"#,
        );
        assert!(
            prom.describe_body()
                .starts_with("error \"parse error at 1\"")
        );
        let dd = answer(403, &[], r#"{"errors":["Forbidden","x"]}"#);
        assert!(dd.describe_body().contains("\"Forbidden; x\""));
        let graphql = answer(200, &[], r#"{"errors":[{"message":"bad NRQL"}]}"#);
        assert!(graphql.describe_body().contains("\"bad NRQL\""));
        let long = format!(r#"{{"error":"{}"}}"#, "y".repeat(5000));
        let described = answer(400, &[], &long).describe_body();
        assert!(described.len() < EXCERPT_CHARS + 60, "{described}");
        assert!(
            answer(400, &[], "{\"data\":1}")
                .describe_body()
                .starts_with("a body of")
        );
    }

    #[test]
    fn a_body_of_the_wrong_shape_names_where_and_quotes_no_more_than_an_excerpt() {
        #[derive(Debug, serde::Deserialize)]
        struct Shape {
            #[allow(dead_code)] // read by serde only: the test is the decode error
            values: Vec<u32>,
        }
        let body = format!(r#"{{"values":[1,"{}"]}}"#, "q".repeat(5000));
        let err = answer(200, &[], &body)
            .json::<Shape>("datadog")
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Decode);
        assert!(err.message.contains("at values[1]: invalid type"), "{err}");
        assert!(err.message.len() < EXCERPT_CHARS + 200, "{err}");
        let err = answer(200, &[], r#"{"values":[]} {}"#)
            .json::<Shape>("datadog")
            .unwrap_err();
        assert!(err.message.contains("(trailing characters"), "{err}");
    }

    #[test]
    fn hostile_rate_limit_headers_are_clamped_not_panics() {
        let wait = |h: &str, v: &str| rate_limit_reset(&answer(429, &[(h, v)], ""));
        for huge in ["1e20", "1e308", "18446744073709551616", "9999999999"] {
            assert_eq!(wait("retry-after", huge), MAX_RATE_LIMIT_WAIT, "{huge}");
            assert_eq!(
                wait("x-ratelimit-reset", huge),
                MAX_RATE_LIMIT_WAIT,
                "{huge}"
            );
        }
        for garbage in ["inf", "NaN", "-5", "soon", ""] {
            assert_eq!(
                wait("retry-after", garbage),
                Duration::from_secs(1),
                "{garbage}"
            );
        }
        assert_eq!(wait("retry-after", "2.5"), Duration::from_millis(2500));
    }

    #[tokio::test]
    async fn a_reset_past_the_budget_fails_at_once_without_panicking() {
        let limited = answer(429, &[("retry-after", "1e20")], "");
        let deadline = Instant::now() + Duration::from_secs(5);
        let started = Instant::now();
        let err = wait_for_rate_limit("datadog", &limited, deadline)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::RateLimited);
        assert!(err.message.contains("resets in 60s"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_gigabyte_answer_is_cut_at_the_limit() {
        use serin_stack::testing::fake_http::flood;
        let http = Http::new(Duration::from_secs(30)).unwrap();
        for announce in [false, true] {
            let url = flood(1024 * 1024 * 1024, announce).await;
            let started = Instant::now();
            let err = http
                .send("prometheus", http.client(false).get(&url))
                .await
                .unwrap_err();
            assert_eq!(err.kind, ErrorKind::TooLarge, "{err}");
            assert!(err.message.contains("1024 KiB"), "{err}");
            // Cut, not read: a gigabyte over loopback would take seconds.
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "announce={announce}"
            );
        }
    }

    #[tokio::test]
    async fn an_answer_within_the_limit_is_read_whole() {
        use serin_stack::testing::fake_http::flood;
        let http = Http::new(Duration::from_secs(30)).unwrap();
        let url = flood(MAX_BODY_BYTES, false).await;
        let answer = http.send("prometheus", http.client(false).get(&url)).await;
        assert_eq!(answer.unwrap().body.len(), MAX_BODY_BYTES);
    }

    #[test]
    fn values_keep_the_precision_a_reader_needs() {
        assert_eq!(format_value(99.0), "99");
        assert_eq!(format_value(69.7), "69.70");
        assert_eq!(format_value(0.0021), "0.00210");
        assert_eq!(format_value(0.5), "0.500");
        assert_eq!(format_value(f64::INFINITY), "inf");
    }

    #[test]
    fn a_missing_or_empty_secret_key_names_the_key() {
        let secret = SecretData::from([("a".to_string(), String::new())]);
        let err = secret_key(&secret, "a", "datadog", "ns/dd").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains("`a`"), "{err}");
        assert!(secret_key(&secret, "b", "datadog", "ns/dd").is_err());
    }
}
