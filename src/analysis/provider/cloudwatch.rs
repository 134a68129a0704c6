//! Amazon CloudWatch `GetMetricData`, as Flagger calls it.
//!
//! - The query is the JSON array of `MetricDataQuery` objects (metric stats, math expressions,
//!   Metrics Insights), sent as written, over the window `now - 10 x interval .. now`, with
//!   `MaxDatapoints: 20`, newest first (`ScanBy: TimestampDescending`, the API's default).
//! - `provider.region` is required (Flagger: "region not specified"); the endpoint is
//!   `https://monitoring.<region>.amazonaws.com`, or `provider.address` (a serin extension:
//!   Flagger has no address for CloudWatch; a VPC endpoint, or a test's emulator).
//! - Credentials are the controller's, as the AWS SDK finds them (Flagger reads no Secret):
//!   `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, IRSA's web identity,
//!   EKS Pod Identity or ECS container credentials, then the EC2 instance's role
//!   ([`credentials`]). Requests are signed with SigV4 (service `monitoring`) by `aws-sigv4`;
//!   the secret key never leaves the process (a signature is bound to the address' host, so
//!   one sent to another address cannot be replayed against AWS).
//! - The value is the first value (the newest) of the first result, as in Flagger. No result
//!   or no values is no data; a result CloudWatch marks `Forbidden` or `InternalError` is an
//!   error.
//!
//! The request uses the AWS JSON 1.0 protocol CloudWatch serves next to its query protocol
//! (`X-Amz-Target: GraniteServiceVersion20100801.GetMetricData`), so the template's JSON is
//! the request's. Errors are classified by their AWS error code: throttling (`Throttling`,
//! ...) is retried after a second while the check's time budget allows, as the SDK retries
//! it; credentials refused (`SignatureDoesNotMatch`, `InvalidClientTokenId`, `AccessDenied`,
//! ...) are an authorization failure; a 5xx is an outage; any other code is the query's
//! fault.

pub(super) mod credentials;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Deserialize;
use serde_json::{Value, json};

use super::cloud::Cloud;
use super::{Answer, ErrorKind, Http, Query, QueryError, Reading, remote_text};
use crate::api::metric_template::MetricTemplateProvider;
pub use credentials::AwsCredentials;

const NAME: &str = "cloudwatch";
/// The SigV4 service name of CloudWatch.
const SERVICE: &str = "monitoring";
const TARGET: &str = "GraniteServiceVersion20100801.GetMetricData";
const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
/// Flagger's window: 10 metric intervals.
const WINDOW_INTERVALS: u32 = 10;
/// Flagger's `MaxDatapoints`.
const MAX_DATAPOINTS: u32 = 20;

/// A configured CloudWatch region.
#[derive(Clone)]
pub struct CloudWatch {
    region: String,
    endpoint: reqwest::Url,
    cloud: Arc<Cloud>,
}

impl std::fmt::Debug for CloudWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudWatch")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl CloudWatch {
    /// From a MetricTemplate's provider (`region` required, `address` optional) and the
    /// controller's environment.
    pub fn from_template(
        provider: &MetricTemplateProvider,
        cloud: &Arc<Cloud>,
    ) -> Result<CloudWatch, QueryError> {
        let region = provider
            .region
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                QueryError::config(
                    "cloudwatch needs provider.region (the region of the metrics, e.g. us-east-1)",
                )
            })?;
        // The region names the endpoint's host: nothing but a region's characters.
        let valid = region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid || region.len() > 32 {
            return Err(QueryError::config(format!(
                "provider.region {:?} is not an AWS region (e.g. us-east-1)",
                remote_text(region)
            )));
        }
        let address = match provider
            .address
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            Some(address) => address.to_string(),
            None => default_endpoint(region),
        };
        let endpoint = reqwest::Url::parse(&address)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                QueryError::config(format!(
                    "provider.address {:?} is not an http(s) URL",
                    remote_text(&address)
                ))
            })?;
        Ok(CloudWatch {
            region: region.to_string(),
            endpoint,
            cloud: cloud.clone(),
        })
    }

    /// Runs the `MetricDataQuery` array of `query.text` over 10 intervals up to `query.now`,
    /// retrying throttling until the deadline.
    pub async fn query(&self, http: &Http, query: Query<'_>) -> Result<Reading, QueryError> {
        let queries = parse_queries(query.text)?;
        let window = query.interval.saturating_mul(WINDOW_INTERVALS);
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let start = query.now.checked_sub_signed(window).unwrap_or(query.now);
        let body = json!({
            "MetricDataQueries": queries,
            "StartTime": start.timestamp(),
            "EndTime": query.now.timestamp(),
            "MaxDatapoints": MAX_DATAPOINTS,
            "ScanBy": "TimestampDescending",
        });
        let answer = self.get_metric_data(http, &body, query.deadline).await?;
        read_answer(&answer)
    }

    /// Provider availability, as Flagger checks it: an empty `GetMetricData` must be answered
    /// with a client error (a validation error, or throttling: the credentials and the
    /// endpoint work) or data.
    pub async fn is_online(&self, http: &Http) -> Result<(), QueryError> {
        let body = json!({"MetricDataQueries": [], "StartTime": 0, "EndTime": 0});
        match self.get_metric_data(http, &body, Instant::now()).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind, ErrorKind::Query | ErrorKind::RateLimited) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One signed `GetMetricData`, retried after throttling within `deadline`; any other
    /// error status is classified by its AWS error code.
    async fn get_metric_data(
        &self,
        http: &Http,
        body: &Value,
        deadline: Instant,
    ) -> Result<Answer, QueryError> {
        let body = body.to_string();
        loop {
            let credentials = credentials::resolve(&self.cloud, &self.region).await?;
            let request = self.signed(http, &credentials, &body)?;
            let answer = http.send(NAME, request).await?;
            if answer.status.is_success() {
                return Ok(answer);
            }
            let error = aws_error(NAME, &answer);
            if error.kind != ErrorKind::RateLimited {
                return Err(error);
            }
            super::wait_for_rate_limit(NAME, &answer, deadline).await?;
        }
    }

    /// The request with its SigV4 headers.
    fn signed(
        &self,
        http: &Http,
        credentials: &AwsCredentials,
        body: &str,
    ) -> Result<reqwest::RequestBuilder, QueryError> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        use aws_sigv4::sign::v4;
        let identity = aws_credential_types::Credentials::new(
            &credentials.access_key_id,
            &credentials.secret_access_key,
            credentials.session_token.clone(),
            None,
            "serin",
        )
        .into();
        let failed = |e: &dyn std::fmt::Display| {
            QueryError::config(format!("cannot sign the CloudWatch request: {e}"))
        };
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| failed(&e))?
            .into();
        let headers = [("content-type", CONTENT_TYPE), ("x-amz-target", TARGET)];
        // The endpoint was checked to have a host at construction (the signer needs one).
        let signable = SignableRequest::new(
            "POST",
            self.endpoint.as_str(),
            headers.into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| failed(&e))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| failed(&e))?
            .into_parts();
        let mut request = http
            .client(false)
            .post(self.endpoint.clone())
            .header("Content-Type", CONTENT_TYPE)
            .header("X-Amz-Target", TARGET)
            .header("Accept", "application/json")
            .body(body.to_string());
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        Ok(request)
    }
}

/// `https://monitoring.<region>.amazonaws.com` (`.amazonaws.com.cn` in China).
fn default_endpoint(region: &str) -> String {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://{SERVICE}.{region}.{domain}/")
}

/// The template's query: a JSON array of `MetricDataQuery` objects (sent as written).
fn parse_queries(text: &str) -> Result<Vec<Value>, QueryError> {
    let queries: Vec<Value> = serde_json::from_str(text).map_err(|e| {
        QueryError::new(
            ErrorKind::Query,
            format!(
                "the cloudwatch query is not a JSON array of MetricDataQuery objects: {}",
                remote_text(&e.to_string())
            ),
        )
    })?;
    if queries.is_empty() || !queries.iter().all(Value::is_object) {
        return Err(QueryError::new(
            ErrorKind::Query,
            "the cloudwatch query must be a non-empty JSON array of MetricDataQuery objects \
             ({\"Id\": ..., \"MetricStat\": ...} or {\"Id\": ..., \"Expression\": ...})",
        ));
    }
    Ok(queries)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Response {
    #[serde(default)]
    metric_data_results: Vec<MetricDataResult>,
    #[serde(default)]
    messages: Vec<Message>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetricDataResult {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    values: Vec<Option<f64>>,
    #[serde(default)]
    status_code: Option<String>,
    #[serde(default)]
    messages: Vec<Message>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Message {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

/// What the messages of an answer say, cleaned and cut (for a no-data reason).
fn describe<'a>(messages: impl IntoIterator<Item = &'a Message>) -> String {
    let said: Vec<String> = messages
        .into_iter()
        .take(3)
        .map(|m| {
            let code = m.code.as_deref().unwrap_or("?");
            match m.value.as_deref() {
                Some(value) => format!("{code}: {value}"),
                None => code.to_string(),
            }
        })
        .collect();
    remote_text(&said.join("; "))
}

/// The first value of the first result of a `GetMetricData` answer.
pub(super) fn read_answer(answer: &Answer) -> Result<Reading, QueryError> {
    if !answer.status.is_success() {
        return Err(aws_error(NAME, answer));
    }
    // serde would read a struct from a JSON array too: the answer is an object.
    if !answer.body.trim_start().starts_with('{') {
        return Err(QueryError::new(
            ErrorKind::Decode,
            format!(
                "{NAME} answered {} with a body that is not its JSON object: {}",
                answer.status,
                answer.describe_body()
            ),
        ));
    }
    let response: Response = answer.json(NAME)?;
    let Some(first) = response.metric_data_results.first() else {
        let mut why = "cloudwatch returned no MetricDataResults (does a query have \
                       ReturnData true?)"
            .to_string();
        if !response.messages.is_empty() {
            why.push_str(&format!(": {}", describe(&response.messages)));
        }
        return Ok(Reading::NoData(why));
    };
    if response.metric_data_results.len() > 1 {
        tracing::debug!(
            results = response.metric_data_results.len(),
            "cloudwatch returned several results; the first is used, as Flagger does"
        );
    }
    let id = remote_text(first.id.as_deref().unwrap_or("?"));
    match first.status_code.as_deref() {
        Some("Forbidden") => {
            return Err(QueryError::new(
                ErrorKind::Unauthorized,
                format!(
                    "cloudwatch refused result {id} (Forbidden): {}",
                    describe(&first.messages)
                ),
            ));
        }
        Some("InternalError") => {
            return Err(QueryError::new(
                ErrorKind::Unavailable,
                format!(
                    "cloudwatch failed result {id} (InternalError): {}",
                    describe(&first.messages)
                ),
            ));
        }
        _ => {}
    }
    match first.values.first() {
        Some(Some(value)) => Ok(Reading::Value(*value)),
        Some(None) => Ok(Reading::NoData(format!("the newest value of {id} is null"))),
        None => {
            let mut why = format!("result {id} has no values in the window");
            let messages = first.messages.iter().chain(&response.messages);
            if messages.clone().next().is_some() {
                why.push_str(&format!(" ({})", describe(messages)));
            }
            Ok(Reading::NoData(why))
        }
    }
}

/// AWS error codes of throttling.
const THROTTLING: [&str; 8] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
];

/// AWS error codes of refused credentials.
const REFUSED: [&str; 15] = [
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "AccessDenied",
    "AccessDeniedException",
    "NotAuthorized",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "AuthFailure",
    "OptInRequired",
    "InvalidIdentityToken",
];

/// An AWS error answer as a [`QueryError`]: its code (the `x-amzn-query-error` or
/// `x-amzn-errortype` header, the JSON `__type` or `code`, the XML `<Code>`) decides the kind;
/// without one, its status does.
pub(super) fn aws_error(provider: &str, answer: &Answer) -> QueryError {
    let Some((code, message)) = error_code(answer) else {
        return answer.status_error(provider);
    };
    let kind = if THROTTLING.contains(&code.as_str()) || answer.status.as_u16() == 429 {
        ErrorKind::RateLimited
    } else if REFUSED.contains(&code.as_str()) {
        ErrorKind::Unauthorized
    } else if answer.status.is_server_error() {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Query
    };
    let message = match message {
        Some(message) => format!(": {}", remote_text(&message)),
        None => String::new(),
    };
    QueryError::new(
        kind,
        format!(
            "{provider} answered {} {}{message}",
            answer.status,
            remote_text(&code)
        ),
    )
}

/// The AWS error code and message of an answer, when it has a code.
fn error_code(answer: &Answer) -> Option<(String, Option<String>)> {
    // `Code;Sender` (query-compatible JSON) or `Code:http://...`.
    let bare = |raw: &str| {
        let raw = raw.split([';', ':']).next().unwrap_or(raw);
        raw.rsplit('#').next().unwrap_or(raw).trim().to_string()
    };
    let json: Option<Value> = serde_json::from_str(&answer.body).ok();
    let json_field = |names: &[&str]| {
        json.as_ref().and_then(|v| {
            names
                .iter()
                .find_map(|n| v.get(*n).and_then(Value::as_str).map(String::from))
        })
    };
    let message = json_field(&["message", "Message"]).or_else(|| xml_text(&answer.body, "Message"));
    let code = answer
        .header("x-amzn-query-error")
        .or_else(|| answer.header("x-amzn-errortype"))
        .map(bare)
        .or_else(|| json_field(&["__type", "code", "Code"]).map(|c| bare(&c)))
        .or_else(|| xml_text(&answer.body, "Code"))
        .filter(|c| !c.is_empty())?;
    Some((code, message))
}

/// The text of the first `<tag>...</tag>` of an XML body (AWS' query-protocol answers: their
/// errors, STS' credentials), with the five XML entities decoded. Enough for these flat,
/// known documents; not an XML parser.
pub(super) fn xml_text(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = body.find(&open)? + open.len();
    let len = body.get(start..)?.find(&close)?;
    let raw = body.get(start..start + len)?;
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
            .trim()
            .to_string(),
    )
}

#[cfg(test)]
mod tests;
