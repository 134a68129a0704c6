//! The Kubernetes External Metrics API (`type: externalmetrics`, Flagger 1.43+): the value an
//! adapter (KEDA, the Datadog cluster agent, prometheus-adapter, ...) serves for HPAs.
//!
//! The query is `[<namespace>/]<metric>[?labelSelector=<url-encoded selector>]` (namespace
//! `default` when left out or empty; more than one `/`, or no metric name, is an error), read
//! as Flagger reads it: the path and the `labelSelector` parameter are URL-decoded. It becomes
//! `GET /apis/external.metrics.k8s.io/v1beta1/namespaces/<namespace>/<metric>?labelSelector=...`
//!
//! - with `provider.address`: on that address (the adapter itself), with
//!   `insecureSkipVerify`, and `Authorization: Bearer <token>` when the template's Secret has
//!   a `token`;
//! - without it: on the Kubernetes API server (which forwards to the adapter registered as
//!   the APIService), through the controller's own client and service account. Flagger would
//!   send a Secret's `token` to the API server instead; serin's client carries its own
//!   credentials, so a `token` without an `address` is refused as a configuration error
//!   rather than silently not used.
//!
//! Each request times out after the providers' timeout (5 s, Flagger's) and reads at most
//! [`MAX_BODY_BYTES`](super::MAX_BODY_BYTES). The answer is an `ExternalMetricValueList`: its
//! first item's `value`, a Kubernetes quantity (`1500m` is 1.5), is the metric's value, as in
//! Flagger; no items is no data; a value that is not a quantity is an error.

use std::time::Duration;

use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::Value;

use super::{Answer, ErrorKind, Http, QueryError, Reading, SecretData, remote_text};
use crate::api::metric_template::MetricTemplateProvider;

const NAME: &str = "externalmetrics";
const API_PATH: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces";

/// Where the External Metrics API is asked.
#[derive(Clone)]
enum Server {
    /// An adapter's own address, with an optional bearer token.
    Adapter {
        address: String,
        token: Option<String>,
        insecure_skip_verify: bool,
    },
    /// The Kubernetes API server, through the controller's client.
    ApiServer(kube::Client),
}

/// A configured External Metrics API.
#[derive(Clone)]
pub struct ExternalMetrics {
    server: Server,
}

// The token never reaches logs or events through Debug.
impl std::fmt::Debug for ExternalMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.server {
            Server::Adapter { address, token, .. } => f
                .debug_struct("ExternalMetrics")
                .field("address", address)
                .field("token", &token.as_ref().map(|_| "***"))
                .finish(),
            Server::ApiServer(_) => f.write_str("ExternalMetrics(kubernetes API server)"),
        }
    }
}

/// A parsed query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricQuery {
    pub namespace: String,
    pub metric: String,
    /// The label selector as written, decoded; `None` when the query has none.
    pub label_selector: Option<String>,
}

impl ExternalMetrics {
    /// The API a MetricTemplate names: its `address` (else the Kubernetes API server through
    /// `kube`), `insecureSkipVerify`, and `token` from its Secret.
    pub fn from_template(
        provider: &MetricTemplateProvider,
        secret: Option<(&str, &SecretData)>,
        kube: &kube::Client,
    ) -> Result<ExternalMetrics, QueryError> {
        let token = secret
            .and_then(|(_, data)| data.get("token"))
            .filter(|t| !t.is_empty())
            .cloned();
        let address = provider
            .address
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty());
        let server = match address {
            Some(address) => Server::Adapter {
                address: base_url(address)?,
                token,
                insecure_skip_verify: provider.insecure_skip_verify == Some(true),
            },
            None if token.is_some() => {
                let secret_name = secret.map_or("", |(name, _)| name);
                return Err(QueryError::config(format!(
                    "externalmetrics Secret {secret_name} has a `token`, which serin sends only \
                     to provider.address: set the adapter's address, or remove the token to ask \
                     the Kubernetes API server with serin's own service account"
                )));
            }
            None => Server::ApiServer(kube.clone()),
        };
        Ok(ExternalMetrics { server })
    }

    /// Runs one query: the first item's value.
    pub async fn query(&self, http: &Http, text: &str) -> Result<Reading, QueryError> {
        let query = parse_query(text)?;
        let answer = self.get(http, &query).await?;
        if !answer.status.is_success() {
            return Err(answer.status_error(NAME));
        }
        read_answer(&answer)
    }

    /// Whether the API answers, asking for Flagger's `dummy-metric` in `kube-system`. Any
    /// answer means it is there (an adapter answers an unknown metric with an error of its
    /// own), except credentials refused (401, 403) and a gateway or the API server's
    /// aggregation layer saying the adapter is unavailable (502, 503, 504).
    pub async fn is_online(&self, http: &Http) -> Result<(), QueryError> {
        let query = MetricQuery {
            namespace: "kube-system".into(),
            metric: "dummy-metric".into(),
            label_selector: None,
        };
        let answer = self.get(http, &query).await?;
        match answer.status.as_u16() {
            401 | 403 | 502 | 503 | 504 => Err(answer.status_error(NAME)),
            _ => Ok(()),
        }
    }

    async fn get(&self, http: &Http, query: &MetricQuery) -> Result<Answer, QueryError> {
        let path_and_query = path_and_query(query)?;
        match &self.server {
            Server::Adapter {
                address,
                token,
                insecure_skip_verify,
            } => {
                let mut request = http
                    .client(*insecure_skip_verify)
                    .get(format!("{address}{path_and_query}"))
                    .header("Accept", "application/json");
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                http.send(NAME, request).await
            }
            Server::ApiServer(client) => {
                let sent = through_api_server(client, &path_and_query);
                tokio::time::timeout(http.timeout, sent)
                    .await
                    .unwrap_or_else(|_| Err(timed_out(http.timeout)))
            }
        }
    }
}

fn timed_out(timeout: Duration) -> QueryError {
    QueryError::new(
        ErrorKind::Timeout,
        format!(
            "the Kubernetes API server did not answer the external metrics request within {}s",
            timeout.as_secs_f64()
        ),
    )
}

/// GETs `path_and_query` with the controller's client, reading at most
/// [`super::MAX_BODY_BYTES`] of the answer (it comes from the adapter, forwarded).
async fn through_api_server(
    client: &kube::Client,
    path_and_query: &str,
) -> Result<Answer, QueryError> {
    let request = http::Request::get(path_and_query)
        .header(http::header::ACCEPT, "application/json")
        .body(kube::client::Body::empty())
        .map_err(|e| QueryError::config(format!("invalid external metrics request: {e}")))?;
    let response = client.send(request).await.map_err(|e| {
        QueryError::new(
            ErrorKind::Connect,
            format!(
                "cannot reach the Kubernetes API server for external metrics: {}",
                crate::error_chain(&e)
            ),
        )
    })?;
    let (parts, mut body) = response.into_parts();
    let too_large = || super::too_large(NAME, parts.status);
    let announced = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if usize::try_from(announced).map_or(true, |n| n > super::MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            QueryError::new(
                ErrorKind::Connect,
                format!(
                    "the external metrics answer was cut: {}",
                    crate::error_chain(&e)
                ),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > super::MAX_BODY_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// `/apis/external.metrics.k8s.io/v1beta1/namespaces/<ns>/<metric>[?labelSelector=...]`,
/// each part encoded.
fn path_and_query(query: &MetricQuery) -> Result<String, QueryError> {
    let mut url = reqwest::Url::parse("http://external-metrics.invalid")
        .map_err(|e| QueryError::config(format!("external metrics URL: {e}")))?;
    {
        let mut segments = url
            .path_segments_mut()
            .map_err(|()| QueryError::config("external metrics URL has no path"))?;
        segments.extend(API_PATH.trim_start_matches('/').split('/'));
        segments.push(&query.namespace);
        segments.push(&query.metric);
    }
    if let Some(selector) = &query.label_selector {
        url.query_pairs_mut().append_pair("labelSelector", selector);
    }
    Ok(match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    })
}

fn base_url(address: &str) -> Result<String, QueryError> {
    let trimmed = address.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(trimmed).map_err(|e| {
        QueryError::config(format!("invalid externalmetrics address {address:?}: {e}"))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(QueryError::config(format!(
            "invalid externalmetrics address {address:?}: the scheme must be http or https"
        )));
    }
    Ok(trimmed.to_string())
}

const QUERY_FORMAT: &str = "[<namespace>/]<metric>[?labelSelector=<url-encoded selector>]";

/// Reads `[<namespace>/]<metric>[?labelSelector=...]` as Flagger does (a URL path and query),
/// surrounding whitespace aside (a YAML block scalar ends with a newline).
pub fn parse_query(text: &str) -> Result<MetricQuery, QueryError> {
    let text = text.trim();
    let bad = |why: &str| {
        QueryError::config(format!(
            "externalmetrics query {:?}: {why}; the format is {QUERY_FORMAT}",
            remote_text(text)
        ))
    };
    if text.chars().any(char::is_control) {
        return Err(bad("control characters"));
    }
    // The fragment is not part of the query (a URL's `#...`).
    let text = text.split('#').next().unwrap_or_default();
    let (path, params) = text.split_once('?').unwrap_or((text, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (namespace, metric) = match parts.as_slice() {
        [metric] => ("", *metric),
        [namespace, metric] => (*namespace, *metric),
        _ => return Err(bad("more than one `/`")),
    };
    let namespace = percent_decode(namespace).ok_or_else(|| bad("invalid %-escape"))?;
    let metric = percent_decode(metric).ok_or_else(|| bad("invalid %-escape"))?;
    if metric.is_empty() {
        return Err(bad("no metric name"));
    }
    if !is_dns_label(&namespace) && !namespace.is_empty() {
        return Err(bad("the namespace is not a valid namespace name"));
    }
    let label_selector = form_pairs(params)
        .into_iter()
        .find(|(key, _)| key == "labelSelector")
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty());
    Ok(MetricQuery {
        namespace: match namespace.is_empty() {
            true => "default".into(),
            false => namespace,
        },
        metric,
        label_selector,
    })
}

/// `key=value&...`, decoded as a URL's query (`+` is a space).
fn form_pairs(params: &str) -> Vec<(String, String)> {
    let Ok(url) = reqwest::Url::parse(&format!("http://q.invalid/?{params}")) else {
        return Vec::new();
    };
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `%XX` escapes decoded; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A namespace name: an RFC 1123 label.
fn is_dns_label(name: &str) -> bool {
    name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// `ExternalMetricValueList`: only what is read. `items` must be there (the API always sends
/// it, `null` when empty), so a JSON answer from something else is not taken for no data.
#[derive(Deserialize)]
struct ValueList {
    // Through a function, so a missing `items` is an error (serde defaults a plain Option).
    #[serde(deserialize_with = "nullable")]
    items: Option<Vec<Item>>,
}

fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<Item>>, D::Error> {
    Option::deserialize(d)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    #[serde(default)]
    metric_name: Option<String>,
    value: Value,
}

/// The first item's value, as Flagger reads it.
pub(super) fn read_answer(answer: &Answer) -> Result<Reading, QueryError> {
    let list: ValueList = answer.json(NAME)?;
    let items = list.items.unwrap_or_default();
    let Some(first) = items.first() else {
        return Ok(Reading::NoData(
            "the external metrics API returned no items".into(),
        ));
    };
    let name = remote_text(first.metric_name.as_deref().unwrap_or("?"));
    let value = match &first.value {
        Value::String(text) => super::quantity::parse(text).map_err(|e| {
            QueryError::new(
                ErrorKind::Decode,
                format!(
                    "external metric {name} has the value {:?}, which is not a Kubernetes \
                     quantity: {e}",
                    remote_text(text)
                ),
            )
        })?,
        // A quantity is always a string on the wire; a plain number means the same.
        Value::Number(n) => n.as_f64().ok_or_else(|| {
            QueryError::new(
                ErrorKind::Decode,
                format!("external metric {name}: {n} is not a number"),
            )
        })?,
        other => {
            return Err(QueryError::new(
                ErrorKind::Decode,
                format!(
                    "external metric {name} has the value {}, which is not a Kubernetes quantity",
                    remote_text(&other.to_string())
                ),
            ));
        }
    };
    Ok(Reading::Value(value))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::MetricProviderType;
    use serin_stack::testing::fake_http::{FakeServer, Response};

    fn query(namespace: &str, metric: &str, selector: Option<&str>) -> MetricQuery {
        MetricQuery {
            namespace: namespace.into(),
            metric: metric.into(),
            label_selector: selector.map(String::from),
        }
    }

    #[test]
    fn queries_read_as_flagger_reads_them() {
        for (text, want) in [
            (
                "default/myMetric?labelSelector=label1%3Dvalue1",
                query("default", "myMetric", Some("label1=value1")),
            ),
            ("default/myMetric", query("default", "myMetric", None)),
            ("/metric_only", query("default", "metric_only", None)),
            ("metric_only", query("default", "metric_only", None)),
            (
                "webapp/job-success-rate?labelSelector=env%3Dproduction%2Cteam+in+%28a%29\n",
                query(
                    "webapp",
                    "job-success-rate",
                    Some("env=production,team in (a)"),
                ),
            ),
            (
                "datadog/datadogmetric@istio-system:mesh-requests",
                query("datadog", "datadogmetric@istio-system:mesh-requests", None),
            ),
            ("ns/m?other=1&labelSelector=", query("ns", "m", None)),
        ] {
            assert_eq!(parse_query(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn bad_queries_say_why_and_show_the_format() {
        for (text, why) in [
            ("", "no metric name"),
            ("/", "no metric name"),
            ("namespaceonly/", "no metric name"),
            ("namespace/metric/extra", "more than one `/`"),
            ("Not_A_Namespace/m", "namespace"),
            ("ns/m%zz", "%-escape"),
            ("ns/m\u{7}", "control characters"),
        ] {
            let err = parse_query(text).expect_err(text);
            assert_eq!(err.kind, ErrorKind::Config, "{text:?}");
            assert!(err.message.contains(why), "{text:?}: {err}");
            assert!(err.message.contains(QUERY_FORMAT), "{err}");
        }
    }

    #[test]
    fn the_path_encodes_each_part() {
        let q = query("ns", "a b#c", Some("app=x,env!=y"));
        assert_eq!(
            path_and_query(&q).unwrap(),
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/a%20b%23c?labelSelector=app%3Dx%2Cenv%21%3Dy"
        );
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            headers: Default::default(),
            body: body.into(),
        }
    }

    #[test]
    fn the_first_items_quantity_is_the_value() {
        let list =
            |items: Value| json!({"kind": "ExternalMetricValueList", "items": items}).to_string();
        let read = |body: &str| read_answer(&answer(200, body));
        assert_eq!(
            read(&list(
                json!([{"metricName": "m", "value": "1500m"}, {"value": "7"}])
            )),
            Ok(Reading::Value(1.5))
        );
        assert_eq!(
            read(&list(json!([{"value": "2k"}]))),
            Ok(Reading::Value(2000.0))
        );
        assert_eq!(read(&list(json!([{"value": 3}]))), Ok(Reading::Value(3.0)));
        assert!(matches!(read(&list(json!([]))), Ok(Reading::NoData(_))));
        assert!(matches!(read(&list(json!(null))), Ok(Reading::NoData(_))));
    }

    #[test]
    fn hostile_answers_are_errors_that_quote_little() {
        let read = |body: String| read_answer(&answer(200, &body)).unwrap_err();
        let garbage = format!("{}kb", "9".repeat(5000));
        let err = read(json!({"items": [{"metricName": "m", "value": garbage}]}).to_string());
        assert_eq!(err.kind, ErrorKind::Decode);
        assert!(err.message.contains("not a Kubernetes quantity"), "{err}");
        assert!(err.message.len() < 500, "{}", err.message.len());
        for body in [
            json!({"items": [{"value": "NaN"}]}).to_string(),
            json!({"items": [{"value": "1e999"}]}).to_string(),
            json!({"items": [{"value": null}]}).to_string(),
            json!({"items": [{"value": {"a": 1}}]}).to_string(),
            json!({"items": [{"metricName": "m"}]}).to_string(),
            json!({"items": "x"}).to_string(),
            json!({"kind": "Status"}).to_string(),
            "<html>login</html>".to_string(),
            String::new(),
        ] {
            assert_eq!(read(body.clone()).kind, ErrorKind::Decode, "{body}");
        }
    }

    async fn adapter(
        response: Response,
        token: Option<&str>,
        text: &str,
    ) -> (Result<Reading, QueryError>, FakeServer) {
        let server = FakeServer::start(move |_| response.clone()).await;
        let http = Http::new(Duration::from_millis(500)).unwrap();
        let provider = super::super::template_at(MetricProviderType::Externalmetrics, &server.url);
        let secret = token.map(|t| SecretData::from([("token".to_string(), t.to_string())]));
        let kube = offline_client();
        let em =
            ExternalMetrics::from_template(&provider, secret.as_ref().map(|s| ("ns/em", s)), &kube)
                .unwrap();
        (em.query(&http, text).await, server)
    }

    /// A client of nothing: the adapter tests never reach it.
    fn offline_client() -> kube::Client {
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap()
    }

    #[tokio::test]
    async fn the_adapter_is_asked_with_the_token_and_the_selector() {
        let body = json!({"items": [{"metricName": "rps", "value": "250m"}]});
        let (reading, server) = adapter(
            Response::json(200, body),
            Some("t0k"),
            "web/rps?labelSelector=app%3Dweb",
        )
        .await;
        assert_eq!(reading, Ok(Reading::Value(0.25)));
        let request = &server.requests()[0];
        assert_eq!(
            request.path,
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/web/rps"
        );
        assert_eq!(request.query["labelSelector"], "app=web");
        assert_eq!(request.headers["authorization"], "Bearer t0k");
    }

    #[tokio::test]
    async fn refusals_outages_and_hangs_have_their_kinds() {
        let status =
            json!({"kind": "Status", "status": "Failure", "message": "forbidden: no", "code": 403});
        let (reading, _) = adapter(Response::json(403, status), None, "m").await;
        let err = reading.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthorized);
        assert!(err.message.contains("forbidden: no"), "{err}");
        let (reading, _) = adapter(
            Response::text(503, "text/html", "<html>x</html>"),
            None,
            "m",
        )
        .await;
        assert_eq!(reading.unwrap_err().kind, ErrorKind::Unavailable);
        let slow = Response::json(200, json!({"items": []})).delayed(Duration::from_secs(3));
        let (reading, _) = adapter(slow, None, "m").await;
        assert_eq!(reading.unwrap_err().kind, ErrorKind::Timeout);
    }

    #[tokio::test]
    async fn a_token_without_an_address_is_refused() {
        let provider = crate::api::metric_template::MetricTemplateProvider {
            address: None,
            ..super::super::template_at(MetricProviderType::Externalmetrics, "")
        };
        let secret = SecretData::from([("token".to_string(), "t".to_string())]);
        let err =
            ExternalMetrics::from_template(&provider, Some(("ns/em", &secret)), &offline_client())
                .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains("provider.address"), "{err}");
        assert!(ExternalMetrics::from_template(&provider, None, &offline_client()).is_ok());
    }

    #[tokio::test]
    async fn through_the_api_server_the_controllers_client_asks() {
        let server = FakeServer::start(|_| {
            Response::json(200, json!({"items": [{"metricName": "q", "value": "42"}]}))
        })
        .await;
        let kube = kube::Client::try_from(kube::Config::new(server.url.parse().unwrap())).unwrap();
        let provider = crate::api::metric_template::MetricTemplateProvider {
            address: None,
            ..super::super::template_at(MetricProviderType::Externalmetrics, "")
        };
        let em = ExternalMetrics::from_template(&provider, None, &kube).unwrap();
        let http = Http::new(Duration::from_millis(500)).unwrap();
        let reading = em.query(&http, "queue/q?labelSelector=a%3Db").await;
        assert_eq!(reading, Ok(Reading::Value(42.0)));
        let request = &server.requests()[0];
        assert_eq!(
            request.path,
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/queue/q"
        );
        assert_eq!(request.query["labelSelector"], "a=b");
        assert!(em.is_online(&http).await.is_ok());
    }

    #[tokio::test]
    async fn through_the_api_server_a_flood_is_cut() {
        use serin_stack::testing::fake_http::flood;
        let url = flood(64 * 1024 * 1024, false).await;
        let base = url.trim_end_matches('/').to_string();
        let kube = kube::Client::try_from(kube::Config::new(base.parse().unwrap())).unwrap();
        let em = ExternalMetrics {
            server: Server::ApiServer(kube),
        };
        let http = Http::new(Duration::from_secs(10)).unwrap();
        let err = em.query(&http, "m").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::TooLarge, "{err}");
    }

    #[tokio::test]
    async fn online_unless_refused_or_unavailable() {
        let http = Http::new(Duration::from_millis(500)).unwrap();
        for (status, online) in [
            (200, true),
            (404, true),
            (500, true),
            (403, false),
            (503, false),
        ] {
            let server = FakeServer::start(move |_| {
                Response::json(status, json!({"kind": "Status", "message": "m"}))
            })
            .await;
            let provider =
                super::super::template_at(MetricProviderType::Externalmetrics, &server.url);
            let em = ExternalMetrics::from_template(&provider, None, &offline_client()).unwrap();
            assert_eq!(em.is_online(&http).await.is_ok(), online, "{status}");
            assert_eq!(
                server.requests()[0].path,
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/kube-system/dummy-metric"
            );
        }
        let provider =
            super::super::template_at(MetricProviderType::Externalmetrics, "http://127.0.0.1:1");
        let em = ExternalMetrics::from_template(&provider, None, &offline_client()).unwrap();
        assert_eq!(
            em.is_online(&http).await.unwrap_err().kind,
            ErrorKind::Connect
        );
    }
}
