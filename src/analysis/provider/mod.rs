//! Metric providers: the HTTP clients that run one query and say what came back.
//!
//! Every provider answers with a [`Reading`] (a value, or no data and why) or a [`QueryError`]
//! (with its cause). Nothing is ever turned into a silent 0: a null point, a NaN, an empty
//! series or an HTML error page each have their own outcome.

pub mod datadog;
pub mod newrelic;
pub mod prometheus;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use reqwest::StatusCode;

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

/// A metrics backend as the analysis uses it. A new provider implements this and is
/// constructed from its MetricTemplate in `analysis::resolve`; nothing else changes.
pub trait MetricProvider: Send + Sync {
    /// Runs one query.
    fn query<'a>(
        &'a self,
        http: &'a Http,
        query: Query<'a>,
    ) -> BoxFuture<'a, Result<Reading, QueryError>>;

    /// Whether the backend answers a trivial request (for the initialization step).
    fn is_online<'a>(&'a self, http: &'a Http) -> BoxFuture<'a, Result<(), QueryError>>;

    /// Backends with the same key are one server: its availability is checked once.
    fn availability_key(&self) -> Option<String> {
        None
    }

    /// The query's values at every `step` over `query.interval` up to `query.now`, for the
    /// canary-vs-primary judge. Providers that answer single values only say so.
    fn series<'a>(
        &'a self,
        _http: &'a Http,
        _query: Query<'a>,
        _step: Duration,
    ) -> BoxFuture<'a, Result<Vec<f64>, QueryError>> {
        Box::pin(async {
            Err(QueryError::config(
                "the judge compares series over time, which serin reads from Prometheus only: \
                 use a Prometheus MetricTemplate, or thresholds for this metric",
            ))
        })
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

impl Http {
    pub fn new(timeout: Duration) -> anyhow::Result<Http> {
        use anyhow::Context;
        // reqwest is built without a crypto provider of its own; ring is the one kube links.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let user_agent = concat!("serin/", env!("CARGO_PKG_VERSION"));
        let client = reqwest::Client::builder()
            .user_agent(user_agent)
            .timeout(timeout)
            .build()
            .context("cannot build the metric providers' HTTP client")?;
        let insecure = reqwest::Client::builder()
            .user_agent(user_agent)
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

    /// Sends a request and reads the whole body, mapping transport failures to a
    /// [`QueryError`] that names `provider`.
    pub async fn send(
        &self,
        provider: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, QueryError> {
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(provider, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .text()
            .await
            .map_err(|e| self.transport_error(provider, &e))?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    fn transport_error(&self, provider: &str, error: &reqwest::Error) -> QueryError {
        let cause = error_chain(error);
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

/// reqwest's Display shows only the outermost error ("error sending request"); the cause
/// (connection refused, certificate unknown) is further down the chain.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
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
    /// [`ErrorKind::Status`]; the body is quoted
    /// briefly so an HTML page from a proxy does not flood events.
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
                "{provider} answered {}: {}",
                self.status,
                body_excerpt(&self.body)
            ),
        )
    }

    /// The body as JSON of type `T`, or a [`ErrorKind::Decode`] error that says what the
    /// body looked like.
    pub fn json<T: serde::de::DeserializeOwned>(&self, provider: &str) -> Result<T, QueryError> {
        serde_json::from_str(&self.body).map_err(|e| {
            QueryError::new(
                ErrorKind::Decode,
                format!(
                    "{provider} answered {} with a body that is not its JSON ({e}): {}",
                    self.status,
                    body_excerpt(&self.body)
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
    // X-RateLimit-Reset (Datadog) is the number of seconds until the window resets;
    // Retry-After (New Relic, proxies) the same in the generic spelling. Neither: a second.
    let reset = ["x-ratelimit-reset", "retry-after"]
        .iter()
        .find_map(|h| answer.header(h).and_then(|v| v.trim().parse::<f64>().ok()))
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(1), Duration::from_secs_f64);
    let bucket = answer.header("x-ratelimit-name").unwrap_or("query");
    if std::time::Instant::now() + reset > deadline {
        return Err(QueryError::new(
            ErrorKind::RateLimited,
            format!(
                "{provider} rate limit {bucket:?} reached; it resets in {}s, after this check's \
                 time budget: {}",
                reset.as_secs_f64(),
                body_excerpt(&answer.body)
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

/// At most this many characters of a body are quoted in an error.
const EXCERPT_CHARS: usize = 200;

/// A short, single-line view of a response body: an HTML page is named by its title, other
/// text is whitespace-collapsed and cut.
pub fn body_excerpt(body: &str) -> String {
    let trimmed = body.trim_start();
    if trimmed.is_empty() {
        return "(empty body)".into();
    }
    if trimmed.starts_with('<') {
        let lower = trimmed.to_ascii_lowercase();
        let title = lower
            .find("<title>")
            .and_then(|start| {
                let from = start + "<title>".len();
                lower[from..]
                    .find("</title>")
                    .map(|end| trimmed[from..from + end].trim())
            })
            .filter(|t| !t.is_empty());
        return match title {
            Some(t) => format!("an HTML page titled {:?}", collapse(t)),
            None => "an HTML page".into(),
        };
    }
    let text = collapse(trimmed);
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
    match secret.get(key).map(String::as_str) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(QueryError::config(format!(
            "{provider} Secret {secret_name} has no `{key}` key"
        ))),
    }
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
    use super::*;

    #[test]
    fn html_bodies_are_named_by_their_title() {
        let page = "<!DOCTYPE html>\n<html><head><TITLE> 502 Bad\n Gateway </TITLE></head>";
        assert_eq!(
            body_excerpt(page),
            "an HTML page titled \"502 Bad Gateway\""
        );
        assert_eq!(body_excerpt("<html><body>x</body>"), "an HTML page");
    }

    #[test]
    fn long_bodies_are_cut_and_empty_ones_named() {
        let long = "x".repeat(500);
        let excerpt = body_excerpt(&long);
        assert!(excerpt.ends_with("..."));
        assert_eq!(excerpt.len(), EXCERPT_CHARS + 3);
        assert_eq!(body_excerpt("  \n"), "(empty body)");
        assert_eq!(body_excerpt("upstream\n  timeout"), "upstream timeout");
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
