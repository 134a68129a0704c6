//! Google Cloud Monitoring (Stackdriver) MQL queries, as Flagger runs them.
//!
//! - The query is Monitoring Query Language, sent as written (its window is its own:
//!   `| within`, else Cloud Monitoring's default) to `QueryTimeSeries` of the Secret's
//!   `project`: `POST <address>/v3/projects/<project>/timeSeries:query` with `{"query": ...}`.
//!   Flagger calls the same method over gRPC; serin calls its REST form. The address is
//!   `https://monitoring.googleapis.com`, or `provider.address` (a serin extension, Flagger has
//!   none) when the template's own `serviceAccountKey` signs in.
//! - The Secret (`provider.secretRef`) holds `project` (required, as in Flagger) and,
//!   optionally, `serviceAccountKey`: a service-account key (JSON), exchanged for an access
//!   token at its `token_uri` (OAuth 2.0 JWT bearer grant, scope `monitoring.read`). Without a
//!   key, the controller's own identity, as Google's Application Default Credentials find it
//!   ([`token`]): the key file `GOOGLE_APPLICATION_CREDENTIALS` names, else the metadata
//!   server (GKE Workload Identity; `GCE_METADATA_HOST` overrides its address). The
//!   controller's token only ever goes to `https://monitoring.googleapis.com` or to the
//!   address the controller's `SERIN_STACKDRIVER_ADDRESS` names: never to an address a
//!   template chose.
//! - The value is the first value of the first point (the newest: Cloud Monitoring returns
//!   points newest first) of the first time series, as in Flagger. A double is read as
//!   Flagger reads it; an INT64 value is read as its number (Flagger reads 0); a NaN is no
//!   data; a distribution, a bool or a string is an error that says to reduce the series to
//!   a number. No time series, or none with a point, is no data.
//!
//! Errors carry Google's status: `INVALID_ARGUMENT` (the MQL) fails the check as the
//! query's; `UNAUTHENTICATED` / `PERMISSION_DENIED` as refused credentials; 429
//! (`RESOURCE_EXHAUSTED`) is retried after its `Retry-After` (else a second) while the check's
//! time budget allows; a 5xx is an outage.

pub(super) mod token;

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::cloud::Cloud;
use super::{Answer, ErrorKind, Http, Query, QueryError, Reading, SecretData, remote_text};
use crate::api::metric_template::MetricTemplateProvider;
use token::Credential;

const NAME: &str = "stackdriver";
/// Cloud Monitoring's API.
pub const DEFAULT_ADDRESS: &str = "https://monitoring.googleapis.com";
/// Secret keys, as Flagger names them.
pub const PROJECT: &str = "project";
pub const SERVICE_ACCOUNT_KEY: &str = "serviceAccountKey";
/// The controller's environment variable naming where its own token may be sent instead of
/// [`DEFAULT_ADDRESS`] (a private endpoint; a test's emulator).
pub const ADDRESS_VAR: &str = "SERIN_STACKDRIVER_ADDRESS";
/// Pages followed while they hold no time series (Flagger's iterator follows them too).
const MAX_PAGES: usize = 5;

/// A configured Cloud Monitoring project.
#[derive(Clone)]
pub struct Stackdriver {
    project: String,
    address: String,
    credential: Credential,
    cloud: Arc<Cloud>,
}

impl std::fmt::Debug for Stackdriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stackdriver")
            .field("project", &self.project)
            .field("address", &self.address)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl Stackdriver {
    /// From a MetricTemplate's provider, its Secret and the controller's environment.
    pub fn from_template(
        provider: &MetricTemplateProvider,
        secret: Option<(&str, &SecretData)>,
        cloud: &Arc<Cloud>,
    ) -> Result<Stackdriver, QueryError> {
        let (secret_name, data) = secret.ok_or_else(|| {
            QueryError::config(format!(
                "stackdriver needs provider.secretRef: a Secret with `{PROJECT}` (and \
                 `{SERVICE_ACCOUNT_KEY}` unless the controller has its own Google identity)"
            ))
        })?;
        let project = super::secret_key(data, PROJECT, NAME, secret_name)?;
        // The project names the request's path: a project ID's characters only (and the
        // `domain:` prefix of the oldest projects).
        let valid = project
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'));
        if !valid || project.len() > 100 {
            return Err(QueryError::config(format!(
                "stackdriver Secret {secret_name}: `{PROJECT}` {:?} is not a project ID",
                remote_text(project)
            )));
        }
        let credential = match data.get(SERVICE_ACCOUNT_KEY).filter(|k| !k.is_empty()) {
            Some(key) => Credential::key(key).map_err(|e| {
                QueryError::config(format!(
                    "stackdriver Secret {secret_name}: `{SERVICE_ACCOUNT_KEY}` {e}"
                ))
            })?,
            None => Credential::Controller,
        };
        let requested = provider
            .address
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| a.trim_end_matches('/').to_string());
        let own = cloud
            .var(ADDRESS_VAR)
            .unwrap_or(DEFAULT_ADDRESS)
            .trim_end_matches('/')
            .to_string();
        let address = match (&credential, requested) {
            (_, None) => own,
            (Credential::Key(_), Some(address)) => address,
            (Credential::Controller, Some(address)) if address == own => address,
            (Credential::Controller, Some(address)) => {
                return Err(QueryError::config(format!(
                    "provider.address {:?}: the controller's own Google credentials are only \
                     sent to {own}; put a `{SERVICE_ACCOUNT_KEY}` in Secret {secret_name} to \
                     query another address",
                    remote_text(&address)
                )));
            }
        };
        reqwest::Url::parse(&address)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                QueryError::config(format!(
                    "stackdriver address {:?} is not an http(s) URL",
                    remote_text(&address)
                ))
            })?;
        Ok(Stackdriver {
            project: project.to_string(),
            address,
            credential,
            cloud: cloud.clone(),
        })
    }

    /// Runs the MQL of `query.text`, retrying 429s until the deadline.
    pub async fn query(&self, http: &Http, query: Query<'_>) -> Result<Reading, QueryError> {
        let mut page_token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut body = json!({"query": query.text});
            if let Some(token) = &page_token {
                body["pageToken"] = json!(token);
            }
            let answer = self.send(http, &body, query.deadline).await?;
            match read_page(&answer)? {
                Page::Reading(reading) => return Ok(reading),
                Page::Next(token) => page_token = Some(token),
            }
        }
        Ok(Reading::NoData(format!(
            "stackdriver returned {MAX_PAGES} pages without a time series"
        )))
    }

    /// Provider availability, as Flagger checks it: an empty query must be refused as
    /// invalid (the credentials and the project work) or answered.
    pub async fn is_online(&self, http: &Http) -> Result<(), QueryError> {
        match self.send(http, &json!({"query": ""}), Instant::now()).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind == ErrorKind::Query => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One `timeSeries:query`, retried after 429s within `deadline`; a refused token is
    /// forgotten, so the next check fetches a new one.
    async fn send(
        &self,
        http: &Http,
        body: &Value,
        deadline: Instant,
    ) -> Result<Answer, QueryError> {
        let url = format!(
            "{}/v3/projects/{}/timeSeries:query",
            self.address, self.project
        );
        loop {
            let token = self.credential.token(&self.cloud, http).await?;
            let request = http
                .client(false)
                .post(&url)
                .bearer_auth(&token.value)
                .header("Accept", "application/json")
                .json(body);
            let answer = http.send(NAME, request).await?;
            if answer.status.is_success() {
                return Ok(answer);
            }
            let error = google_error(NAME, &answer);
            match error.kind {
                ErrorKind::RateLimited => {
                    super::wait_for_rate_limit(NAME, &answer, deadline).await?;
                }
                ErrorKind::Unauthorized => {
                    self.cloud.google.forget(&token.cache_key);
                    return Err(error);
                }
                _ => return Err(error),
            }
        }
    }
}

/// One page of a `timeSeries:query` answer: a reading, or the token of the next page.
#[derive(Debug, PartialEq)]
pub(super) enum Page {
    Reading(Reading),
    Next(String),
}

/// The first value of the first point of the first time series of a page.
pub(super) fn read_page(answer: &Answer) -> Result<Page, QueryError> {
    if !answer.status.is_success() {
        return Err(google_error(NAME, answer));
    }
    let body: Value = answer.json(NAME)?;
    if !body.is_object() {
        return Err(QueryError::new(
            ErrorKind::Decode,
            format!(
                "stackdriver answered with JSON that is not an object: {}",
                answer.describe_body()
            ),
        ));
    }
    let series = body
        .get("timeSeriesData")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let Some(first) = series.first() else {
        if let Some(next) = body
            .get("nextPageToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            return Ok(Page::Next(next.to_string()));
        }
        let mut why = "stackdriver returned no time series".to_string();
        if let Some(errors) = partial_errors(&body) {
            why.push_str(&format!(" (partial errors: {errors})"));
        }
        return Ok(Page::Reading(Reading::NoData(why)));
    };
    if series.len() > 1 {
        tracing::debug!(
            series = series.len(),
            "stackdriver returned several time series; the first is used, as Flagger does"
        );
    }
    let point = first
        .get("pointData")
        .and_then(Value::as_array)
        .and_then(|points| points.first());
    let Some(point) = point else {
        return Ok(Page::Reading(Reading::NoData(
            "the first time series has no points".into(),
        )));
    };
    let Some(value) = point
        .get("values")
        .and_then(Value::as_array)
        .and_then(|values| values.first())
    else {
        return Ok(Page::Reading(Reading::NoData(
            "the newest point has no values".into(),
        )));
    };
    typed_value(value).map(Page::Reading)
}

/// A `TypedValue` as a number: a double (proto3 JSON spells NaN and the infinities as
/// strings) or an INT64 (a decimal string).
fn typed_value(value: &Value) -> Result<Reading, QueryError> {
    let not_a_number = |what: &str| {
        Err(QueryError::new(
            ErrorKind::Query,
            format!(
                "the query's value is {what}, not a number: reduce it to one (e.g. \
                 `percentile(value.response_latencies, 99)` or `mean(...)` in a group_by)"
            ),
        ))
    };
    if let Some(double) = value.get("doubleValue") {
        let number = match double {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => match s.as_str() {
                "NaN" => return Ok(Reading::NoData("the newest point is NaN".into())),
                "Infinity" => Some(f64::INFINITY),
                "-Infinity" => Some(f64::NEG_INFINITY),
                other => other.parse().ok(),
            },
            _ => None,
        };
        return match number {
            Some(n) if n.is_nan() => Ok(Reading::NoData("the newest point is NaN".into())),
            Some(n) => Ok(Reading::Value(n)),
            None => Err(QueryError::new(
                ErrorKind::Decode,
                format!(
                    "doubleValue {} is not a number",
                    remote_text(&double.to_string())
                ),
            )),
        };
    }
    if let Some(int) = value.get("int64Value") {
        let number = match int {
            Value::String(s) => s.trim().parse::<i64>().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        };
        // An INT64 far beyond 2^53 loses precision as a float, as a judge's value may.
        #[allow(clippy::cast_precision_loss)]
        return number.map(|n| Reading::Value(n as f64)).ok_or_else(|| {
            QueryError::new(
                ErrorKind::Decode,
                format!(
                    "int64Value {} is not an integer",
                    remote_text(&int.to_string())
                ),
            )
        });
    }
    if value.get("distributionValue").is_some() {
        return not_a_number("a distribution");
    }
    if value.get("boolValue").is_some() {
        return not_a_number("a bool");
    }
    if value.get("stringValue").is_some() {
        return not_a_number("a string");
    }
    Ok(Reading::NoData("the newest point's value is empty".into()))
}

/// The `partialErrors` of an answer, cleaned and cut.
fn partial_errors(body: &Value) -> Option<String> {
    let errors = body.get("partialErrors").and_then(Value::as_array)?;
    let said: Vec<&str> = errors
        .iter()
        .take(3)
        .filter_map(|e| e.get("message").and_then(Value::as_str))
        .collect();
    (!said.is_empty()).then(|| remote_text(&said.join("; ")))
}

/// A Google API error answer (`{"error": {"code", "message", "status"}}`) as a
/// [`QueryError`]: 400 and 404 are the query's (or the project's) fault, 401 and 403 refused
/// credentials, 429 throttling, 5xx an outage.
pub(super) fn google_error(provider: &str, answer: &Answer) -> QueryError {
    let body: Option<Value> = serde_json::from_str(&answer.body).ok();
    let error = body.as_ref().and_then(|b| b.get("error"));
    let status = error
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        .map(remote_text);
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(remote_text);
    let kind = match answer.status.as_u16() {
        400 | 404 => ErrorKind::Query,
        401 | 403 => ErrorKind::Unauthorized,
        429 => ErrorKind::RateLimited,
        s if s >= 500 => ErrorKind::Unavailable,
        _ => ErrorKind::Status,
    };
    match (status, message) {
        (Some(status), Some(message)) => QueryError::new(
            kind,
            format!("{provider} answered {} {status}: {message}", answer.status),
        ),
        _ => QueryError::new(kind, answer.status_error(provider).message),
    }
}

#[cfg(test)]
mod tests;
