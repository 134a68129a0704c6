//! New Relic NRQL queries. The query gets `SINCE <interval seconds> seconds ago` appended, as
//! Flagger does, and is sent to one of two APIs depending on the Secret:
//!
//! - `newrelic_query_key` (Flagger's): the Insights query API,
//!   `GET <address>/v1/accounts/<newrelic_account_id>/query?nrql=...`, header `X-Query-Key`
//!   (address default `https://insights-api.newrelic.com`);
//! - `newrelic_api_key` instead (a User key, `NRAK-...`): NerdGraph, `POST <address>/graphql`,
//!   header `API-Key` (address default `https://api.newrelic.com`). NerdGraph answers errors
//!   with HTTP 200 and an `errors` array, which is checked first.
//!
//! A 429 is retried after its `Retry-After` within the check's time budget, as for Datadog.
//! Both return rows. Exactly one row is expected; its value is the `result` column (Flagger's
//! shape, `... AS result`) or, when the row has a single column, that column. A null value or
//! no row is no data; several rows (a FACET) are an error.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::{Answer, ErrorKind, Http, QueryError, Reading, SecretData, secret_key};
use crate::api::metric_template::MetricTemplateProvider;

const NAME: &str = "newrelic";
pub const INSIGHTS_ADDRESS: &str = "https://insights-api.newrelic.com";
pub const NERDGRAPH_ADDRESS: &str = "https://api.newrelic.com";
/// Secret keys: Flagger's two, and serin's User key for NerdGraph.
pub const ACCOUNT_ID: &str = "newrelic_account_id";
pub const QUERY_KEY: &str = "newrelic_query_key";
pub const API_KEY: &str = "newrelic_api_key";

const NERDGRAPH_QUERY: &str = "query($accountId: Int!, $nrql: Nrql!) { actor { account(id: \
                               $accountId) { nrql(query: $nrql) { results } } } }";

#[derive(Clone)]
enum Credential {
    Insights { query_key: String },
    NerdGraph { api_key: String },
}

/// A configured New Relic account.
#[derive(Clone)]
pub struct NewRelic {
    address: String,
    account_id: String,
    credential: Credential,
}

impl std::fmt::Debug for NewRelic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let api = match self.credential {
            Credential::Insights { .. } => "insights",
            Credential::NerdGraph { .. } => "nerdgraph",
        };
        f.debug_struct("NewRelic")
            .field("address", &self.address)
            .field("account_id", &self.account_id)
            .field("api", &api)
            .finish_non_exhaustive()
    }
}

impl NewRelic {
    pub fn from_template(
        provider: &MetricTemplateProvider,
        secret: Option<(&str, &SecretData)>,
    ) -> Result<NewRelic, QueryError> {
        let (secret_name, data) = super::required_secret(secret, || {
            format!(
                "newrelic needs provider.secretRef: a Secret with `{ACCOUNT_ID}` and \
                 `{QUERY_KEY}` (Insights API) or `{API_KEY}` (NerdGraph)"
            )
        })?;
        let account_id = secret_key(data, ACCOUNT_ID, NAME, secret_name)?.to_string();
        let has = |key: &str| data.get(key).is_some_and(|v| !v.is_empty());
        let credential = if has(QUERY_KEY) {
            Credential::Insights {
                query_key: data[QUERY_KEY].clone(),
            }
        } else if has(API_KEY) {
            if account_id.parse::<i64>().is_err() {
                return Err(QueryError::config(format!(
                    "newrelic Secret {secret_name}: `{ACCOUNT_ID}` must be a number for NerdGraph"
                )));
            }
            Credential::NerdGraph {
                api_key: data[API_KEY].clone(),
            }
        } else {
            return Err(QueryError::config(format!(
                "newrelic Secret {secret_name} has neither `{QUERY_KEY}` nor `{API_KEY}`"
            )));
        };
        let default = match credential {
            Credential::Insights { .. } => INSIGHTS_ADDRESS,
            Credential::NerdGraph { .. } => NERDGRAPH_ADDRESS,
        };
        let address = super::template_address(provider)
            .unwrap_or(default)
            .trim_end_matches('/')
            .to_string();
        Ok(NewRelic {
            address,
            account_id,
            credential,
        })
    }

    /// Runs `nrql` over the last `interval`, retrying 429s until `deadline`.
    pub async fn query(
        &self,
        http: &Http,
        nrql: &str,
        interval: Duration,
        deadline: Instant,
    ) -> Result<Reading, QueryError> {
        let nrql = format!("{nrql} SINCE {} seconds ago", interval.as_secs());
        self.run(http, &nrql, deadline).await
    }

    /// Provider availability: a trivial NRQL query must be answered.
    pub async fn is_online(&self, http: &Http) -> Result<(), QueryError> {
        let query = "SELECT count(*) FROM Metric SINCE 1 minute ago";
        match self.run(http, query, Instant::now()).await {
            Ok(_) => Ok(()),
            // Answered, just not with one row: the account and key work.
            Err(e) if e.kind == ErrorKind::Query => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn run(&self, http: &Http, nrql: &str, deadline: Instant) -> Result<Reading, QueryError> {
        loop {
            let answer = self.send(http, nrql).await?;
            if answer.status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                super::wait_for_rate_limit(NAME, &answer, deadline).await?;
                continue;
            }
            return match self.credential {
                Credential::Insights { .. } => {
                    if !answer.status.is_success() {
                        return Err(answer.status_error(NAME));
                    }
                    let body: Value = answer.json(NAME)?;
                    read_rows(body.get("results"))
                }
                Credential::NerdGraph { .. } => read_nerdgraph(&answer),
            };
        }
    }

    async fn send(&self, http: &Http, nrql: &str) -> Result<Answer, QueryError> {
        match &self.credential {
            Credential::Insights { query_key } => {
                let request = http
                    .client(false)
                    .get(format!(
                        "{}/v1/accounts/{}/query",
                        self.address, self.account_id
                    ))
                    .header("Accept", "application/json")
                    .header("X-Query-Key", query_key)
                    .query(&[("nrql", nrql)]);
                http.send(NAME, request).await
            }
            Credential::NerdGraph { api_key } => {
                // Checked at construction: NerdGraph wants the account as an Int.
                let account: i64 = self.account_id.parse().unwrap_or_default();
                let request = http
                    .client(false)
                    .post(format!("{}/graphql", self.address))
                    .header("API-Key", api_key)
                    .json(&json!({
                        "query": NERDGRAPH_QUERY,
                        "variables": {"accountId": account, "nrql": nrql},
                    }));
                http.send(NAME, request).await
            }
        }
    }
}

pub(super) fn read_nerdgraph(answer: &Answer) -> Result<Reading, QueryError> {
    let body: Value = match answer.json(NAME) {
        Ok(body) => body,
        Err(_) if !answer.status.is_success() => return Err(answer.status_error(NAME)),
        Err(e) => return Err(e),
    };
    if let Some(errors) = body.get("errors").and_then(Value::as_array)
        && !errors.is_empty()
    {
        let messages: Vec<String> = errors
            .iter()
            .map(|e| {
                let message = e.get("message").and_then(Value::as_str).unwrap_or("?");
                match e.pointer("/extensions/errorClass").and_then(Value::as_str) {
                    Some(class) => format!("{message} ({class})"),
                    None => message.to_string(),
                }
            })
            .collect();
        let auth = errors.iter().any(|e| {
            e.pointer("/extensions/errorClass")
                .and_then(Value::as_str)
                .is_some_and(|c| c.contains("AUTH") || c.contains("FORBIDDEN"))
        });
        let kind = if auth || matches!(answer.status.as_u16(), 401 | 403) {
            ErrorKind::Unauthorized
        } else {
            ErrorKind::Query
        };
        return Err(QueryError::new(
            kind,
            format!(
                "newrelic NerdGraph error: {}",
                super::remote_text(&messages.join("; "))
            ),
        ));
    }
    if !answer.status.is_success() {
        return Err(answer.status_error(NAME));
    }
    read_rows(body.pointer("/data/actor/account/nrql/results"))
}

fn read_rows(results: Option<&Value>) -> Result<Reading, QueryError> {
    let rows = results.and_then(Value::as_array).ok_or_else(|| {
        QueryError::new(ErrorKind::Decode, "newrelic answer has no `results` array")
    })?;
    match rows.as_slice() {
        [] => Ok(Reading::NoData("the query returned no rows".into())),
        [row] => read_row(row),
        many => Err(QueryError::new(
            ErrorKind::Query,
            format!(
                "the query returned {} rows (a FACET?); it must return one",
                many.len()
            ),
        )),
    }
}

fn read_row(row: &Value) -> Result<Reading, QueryError> {
    let empty = Map::new();
    let columns = row.as_object().unwrap_or(&empty);
    let (column, value) = match columns.get("result") {
        Some(value) => ("result".to_string(), value),
        None => match columns.iter().collect::<Vec<_>>().as_slice() {
            [(name, value)] => (super::remote_text(name), *value),
            [] => return Ok(Reading::NoData("the row is empty".into())),
            _ => {
                return Err(QueryError::new(
                    ErrorKind::Query,
                    format!(
                        "the row has columns {:?} and none is `result`; alias the value with \
                         `AS result`",
                        columns
                            .keys()
                            .take(10)
                            .map(|k| super::remote_text(k))
                            .collect::<Vec<_>>()
                    ),
                ));
            }
        },
    };
    match value {
        Value::Null => Ok(Reading::NoData(format!("`{column}` is null"))),
        Value::Number(n) => n.as_f64().map(Reading::Value).ok_or_else(|| {
            QueryError::new(ErrorKind::Decode, format!("`{column}` {n} is not a number"))
        }),
        other => Err(QueryError::new(
            ErrorKind::Query,
            format!(
                "`{column}` is {}, not a number",
                super::remote_text(&other.to_string())
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
        super::super::template_at(MetricProviderType::Newrelic, address)
    }

    fn secret(key: &str, value: &str) -> SecretData {
        SecretData::from([
            (ACCOUNT_ID.to_string(), "1234".to_string()),
            (key.to_string(), value.to_string()),
        ])
    }

    /// `nrql` over `interval`, with the Secret's `key`, against a server answering `response`.
    async fn ask(
        response: Response,
        (key, value): (&str, &str),
        nrql: &str,
        interval: Duration,
    ) -> (Result<Reading, QueryError>, FakeServer) {
        let server = FakeServer::start(move |_| response.clone()).await;
        let http = Http::new(Duration::from_millis(500)).unwrap();
        let secret = secret(key, value);
        let nr = NewRelic::from_template(&provider(&server.url), Some(("ns/nr", &secret))).unwrap();
        let reading = nr.query(&http, nrql, interval, Instant::now()).await;
        (reading, server)
    }

    async fn insights(response: Response) -> (Result<Reading, QueryError>, FakeServer) {
        let nrql = "SELECT percentage(count(*), WHERE error IS false) AS result FROM Transaction";
        ask(response, (QUERY_KEY, "qk"), nrql, Duration::from_secs(60)).await
    }

    #[tokio::test]
    async fn insights_reads_result_and_appends_since() {
        let (reading, server) =
            insights(Response::json(200, json!({"results": [{"result": 99.5}]}))).await;
        assert_eq!(reading, Ok(Reading::Value(99.5)));
        let request = &server.requests()[0];
        assert_eq!(request.path, "/v1/accounts/1234/query");
        assert_eq!(request.headers["x-query-key"], "qk");
        assert!(
            request.query["nrql"].ends_with("FROM Transaction SINCE 60 seconds ago"),
            "{}",
            request.query["nrql"]
        );
    }

    #[tokio::test]
    async fn insights_null_and_no_rows_are_no_data_facets_an_error() {
        let (reading, _) =
            insights(Response::json(200, json!({"results": [{"average": null}]}))).await;
        assert!(matches!(reading, Ok(Reading::NoData(why)) if why.contains("null")));
        let (reading, _) = insights(Response::json(200, json!({"results": []}))).await;
        assert!(matches!(reading, Ok(Reading::NoData(_))));
        let (reading, _) = insights(Response::json(
            200,
            json!({"results": [{"result": 1}, {"result": 2}]}),
        ))
        .await;
        assert!(reading.unwrap_err().message.contains("2 rows"));
        let (reading, _) = insights(Response::json(
            200,
            json!({"results": [{"average.duration": 0.25}]}),
        ))
        .await;
        assert_eq!(reading, Ok(Reading::Value(0.25)));
    }

    #[tokio::test]
    async fn insights_errors_carry_their_cause() {
        let (reading, _) =
            insights(Response::json(401, json!({"error": "Invalid query key"}))).await;
        let err = reading.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthorized);
        assert!(err.message.contains("Invalid query key"), "{err}");
        let (reading, _) = insights(Response::text(503, "text/html", "<html>down</html>")).await;
        assert_eq!(reading.unwrap_err().kind, ErrorKind::Unavailable);
        let (reading, _) = insights(Response::text(200, "text/html", "<html>login</html>")).await;
        assert_eq!(reading.unwrap_err().kind, ErrorKind::Decode);
        let slow = Response::json(200, json!({"results": [{"result": 1}]}))
            .delayed(Duration::from_secs(3));
        let (reading, _) = insights(slow).await;
        assert_eq!(reading.unwrap_err().kind, ErrorKind::Timeout);
    }

    #[tokio::test]
    async fn a_429_is_retried_after_retry_after_within_the_budget() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let server = FakeServer::start(move |_| {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                Response::json(429, json!({"error": "Too many requests"}))
                    .with_header("Retry-After", "0.2")
            } else {
                Response::json(200, json!({"results": [{"result": 2.5}]}))
            }
        })
        .await;
        let http = Http::new(Duration::from_millis(500)).unwrap();
        let nr = NewRelic::from_template(
            &provider(&server.url),
            Some(("ns/nr", &secret(QUERY_KEY, "qk"))),
        )
        .unwrap();
        let soon = Instant::now() + Duration::from_millis(100);
        let err = nr
            .query(&http, "SELECT 1", Duration::from_secs(60), soon)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::RateLimited, "{err}");
        assert!(err.message.contains("resets in 0.2s"), "{err}");
        let later = Instant::now() + Duration::from_secs(2);
        let reading = nr
            .query(&http, "SELECT 1", Duration::from_secs(60), later)
            .await;
        assert_eq!(reading, Ok(Reading::Value(2.5)));
        assert_eq!(server.requests().len(), 2);
    }

    async fn nerdgraph(body: serde_json::Value) -> (Result<Reading, QueryError>, FakeServer) {
        let nrql = "SELECT 1 AS result FROM Transaction";
        let response = Response::json(200, body);
        ask(response, (API_KEY, "NRAK-x"), nrql, Duration::from_secs(30)).await
    }

    #[tokio::test]
    async fn nerdgraph_posts_graphql_with_the_api_key() {
        let (reading, server) = nerdgraph(json!({"data": {"actor": {"account": {"nrql": {
            "results": [{"result": 0.5}]
        }}}}}))
        .await;
        assert_eq!(reading, Ok(Reading::Value(0.5)));
        let request = &server.requests()[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/graphql");
        assert_eq!(request.headers["api-key"], "NRAK-x");
        let sent: serde_json::Value = serde_json::from_str(&request.body).unwrap();
        assert_eq!(sent["variables"]["accountId"], 1234);
        assert_eq!(
            sent["variables"]["nrql"],
            "SELECT 1 AS result FROM Transaction SINCE 30 seconds ago"
        );
    }

    #[tokio::test]
    async fn nerdgraph_errors_with_status_200_are_errors() {
        let (reading, _) = nerdgraph(json!({
            "errors": [{"message": "NRQL Syntax Error", "extensions": {"errorClass": "INVALID_INPUT"}}],
            "data": {"actor": {"account": {"nrql": null}}}
        }))
        .await;
        let err = reading.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query);
        assert!(err.message.contains("NRQL Syntax Error"), "{err}");
        let (reading, _) = nerdgraph(json!({
            "errors": [{"message": "Invalid API key", "extensions": {"errorClass": "UNAUTHORIZED"}}]
        }))
        .await;
        assert_eq!(reading.unwrap_err().kind, ErrorKind::Unauthorized);
    }

    #[test]
    fn the_secret_must_name_the_account_and_a_key() {
        let no_key = SecretData::from([(ACCOUNT_ID.to_string(), "1".to_string())]);
        let err =
            NewRelic::from_template(&provider("http://x"), Some(("ns/nr", &no_key))).unwrap_err();
        assert!(err.message.contains(QUERY_KEY), "{err}");
        let no_account = SecretData::from([(QUERY_KEY.to_string(), "k".to_string())]);
        assert!(NewRelic::from_template(&provider("http://x"), Some(("s", &no_account))).is_err());
    }
}
