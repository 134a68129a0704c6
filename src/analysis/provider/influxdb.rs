//! InfluxDB Flux queries, as Flagger's InfluxDB 2.x client sends them.
//!
//! `POST <address>/api/v2/query?org=<org>` with `Authorization: Token <token>` and the JSON
//! body `{"query": <flux>, "type": "flux", "dialect": {"annotations": ["datatype", "group",
//! "default"], "delimiter": ",", "header": true}}`; the answer is annotated CSV. With a Secret,
//! it must hold `token` and `org` (Flagger's keys); without one, no token is sent and `org` is
//! empty. Each request may take 15 s (Flagger's), three times the other providers' timeout.
//!
//! The value is the `_value` of the first record of the first table (Flagger's choice), a
//! `double`, or a `long`/`unsignedLong` (a `count()`), which Flagger refuses. An empty
//! `_value` (null) or NaN is no data, and so is an answer without any record (Flagger reads it
//! as 0). A Flux error in the body (a table with an `error` column, which InfluxDB sends with
//! status 200 when the query fails while running) is an error, as is a record without a
//! `_value` column, a `_value` of another type, or a body that is not annotated CSV.
//!
//! Flux needs its line breaks only to end `//` comments, so the query's comments are removed
//! before it is rendered ([`without_comments`]): serin joins a query's lines, and a comment
//! would otherwise swallow the rest of the query.
//!
//! A 429 (InfluxDB Cloud's plan limits) is retried after its `Retry-After` within the check's
//! time budget, as for Datadog and New Relic.

use std::time::Instant;

use reqwest::Url;
use serde_json::{Value, json};

use super::{Answer, ErrorKind, Http, QueryError, Reading, SecretData, remote_text};
use crate::api::metric_template::MetricTemplateProvider;

const NAME: &str = "influxdb";
/// Secret keys, as Flagger names them.
pub const TOKEN: &str = "token";
pub const ORG: &str = "org";
/// The query of the availability check: it needs a valid token and organization, and no
/// particular bucket (Flagger reads two hours of a bucket named `default`, which must exist).
const ONLINE_QUERY: &str = "buckets() |> limit(n: 1)";
/// How much longer than the other providers an InfluxDB request may take (Flagger: 15 s
/// against 5 s).
const TIMEOUT_FACTOR: u32 = 3;

/// A configured InfluxDB endpoint.
#[derive(Clone)]
pub struct InfluxDb {
    /// `<address>/api/v2/query?org=<org>`.
    query_url: Url,
    /// Empty: no `Authorization` header.
    token: String,
}

impl std::fmt::Debug for InfluxDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxDb")
            .field("query_url", &self.query_url.as_str())
            .field("token", &!self.token.is_empty())
            .finish_non_exhaustive()
    }
}

impl InfluxDb {
    /// From a MetricTemplate's provider (an address is required) and its Secret, which must
    /// hold `token` and `org` when the template names one.
    pub fn from_template(
        provider: &MetricTemplateProvider,
        secret: Option<(&str, &SecretData)>,
    ) -> Result<InfluxDb, QueryError> {
        let address = super::required_address(
            provider,
            "influxdb needs provider.address: the InfluxDB URL (e.g. \
             http://influxdb.monitoring:8086)",
        )?;
        let (token, org) = match secret {
            None => (String::new(), String::new()),
            Some((secret_name, data)) => {
                let key = |key: &str, what: &str| {
                    super::secret_entry(data, key, NAME, secret_name)
                        .map(str::to_string)
                        .map_err(|e| QueryError::config(format!("{} ({what})", e.message)))
                };
                (
                    key(TOKEN, "the API token")?,
                    key(ORG, "the organization's name")?,
                )
            }
        };
        Ok(InfluxDb {
            query_url: query_url(address, &org)?,
            token,
        })
    }

    /// Runs `flux` and reads the first record's `_value`, retrying 429s until `deadline`.
    pub async fn query(
        &self,
        http: &Http,
        flux: &str,
        deadline: Instant,
    ) -> Result<Reading, QueryError> {
        let answer = self.post(http, flux, deadline).await?;
        read_value(&answer)
    }

    /// Provider availability: a query listing the organization's buckets must be answered.
    pub async fn is_online(&self, http: &Http) -> Result<(), QueryError> {
        let answer = self.post(http, ONLINE_QUERY, Instant::now()).await?;
        first_record(&answer).map(|_| ())
    }

    async fn post(&self, http: &Http, flux: &str, deadline: Instant) -> Result<Answer, QueryError> {
        let timeout = http.timeout.saturating_mul(TIMEOUT_FACTOR);
        // The shared clients, with this provider's longer timeout (also in its messages).
        let http = Http {
            timeout,
            ..http.clone()
        };
        let body = json!({
            "query": flux,
            "type": "flux",
            "dialect": {
                "annotations": ["datatype", "group", "default"],
                "delimiter": ",",
                "header": true,
            },
        });
        loop {
            let mut request = http
                .client(false)
                .post(self.query_url.clone())
                .timeout(timeout)
                .header("Accept", "application/csv")
                .json(&body);
            if !self.token.is_empty() {
                request = request.header("Authorization", format!("Token {}", self.token));
            }
            let answer = http.send(NAME, request).await?;
            if answer.status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                super::wait_for_rate_limit(NAME, &answer, deadline).await?;
                continue;
            }
            if !answer.status.is_success() {
                return Err(status_error(&answer));
            }
            return Ok(answer);
        }
    }
}

/// `<address>/api/v2/query?org=<org>`, the address' path kept (the client appends
/// `api/v2/` to it).
fn query_url(address: &str, org: &str) -> Result<Url, QueryError> {
    let mut url = super::endpoint_url(NAME, address, &["api", "v2", "query"])?;
    url.query_pairs_mut().append_pair("org", org);
    Ok(url)
}

/// InfluxDB answers a query it rejects (a Flux compilation error, an unknown bucket or
/// organization) with 400 or 404 and a JSON `{"code", "message"}`: the query's error, quoted.
/// Any other status is described as for every provider.
fn status_error(answer: &Answer) -> QueryError {
    let rejected = matches!(answer.status.as_u16(), 400 | 404 | 422);
    let message = serde_json::from_str::<Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(remote_text));
    match (rejected, message) {
        (true, Some(message)) => QueryError::new(
            ErrorKind::Query,
            format!("influxdb rejected the query ({}): {message}", answer.status),
        ),
        _ => answer.status_error(NAME),
    }
}

/// A column of an annotated CSV table.
#[derive(Clone, Debug, Default)]
struct Column {
    name: String,
    datatype: String,
    default: String,
}

/// A record: its table's columns and its cells.
type Record = (Vec<Column>, Vec<String>);

fn decode_error(answer: &Answer, why: &str) -> QueryError {
    QueryError::new(
        ErrorKind::Decode,
        format!(
            "influxdb answered {} with a body that is not annotated CSV ({why}): {}",
            answer.status,
            answer.describe_body()
        ),
    )
}

/// The first record of the answer: its columns and cells; `None` when the answer holds no
/// record. Read as InfluxDB's client reads annotated CSV: each table opens with annotation
/// rows (`#datatype` required), then a header row; a header whose first column is `error`
/// opens an error table, whose next row is the query's error.
fn first_record(answer: &Answer) -> Result<Option<Record>, QueryError> {
    let mut columns: Option<Vec<Column>> = None;
    let mut in_annotations = false;
    let mut has_datatype = false;
    let mut named = false;
    let mut error_table = false;
    for row in Csv::new(&answer.body) {
        let row = row.map_err(|why| decode_error(answer, why))?;
        if row.len() <= 1 {
            continue;
        }
        let first = row[0].as_str();
        if first.starts_with('#') {
            if !in_annotations {
                // A new table.
                columns = Some(vec![Column::default(); row.len() - 1]);
                in_annotations = true;
                has_datatype = false;
                named = false;
                error_table = false;
            }
        } else {
            in_annotations = false;
        }
        let Some(table) = columns.as_mut() else {
            return Err(decode_error(answer, NO_ANNOTATIONS));
        };
        if row.len() - 1 != table.len() {
            return Err(decode_error(
                answer,
                &format!(
                    "a row of {} columns in a table of {}",
                    row.len() - 1,
                    table.len()
                ),
            ));
        }
        let cells = &row[1..];
        match first {
            "#datatype" => {
                has_datatype = true;
                for (c, v) in table.iter_mut().zip(cells) {
                    c.datatype = v.clone();
                }
            }
            "#default" => {
                for (c, v) in table.iter_mut().zip(cells) {
                    c.default = v.clone();
                }
            }
            "" if !named => {
                if !has_datatype {
                    return Err(decode_error(answer, "no #datatype annotation"));
                }
                named = true;
                error_table = cells.first().is_some_and(|n| n == "error");
                for (c, v) in table.iter_mut().zip(cells) {
                    c.name = v.clone();
                }
            }
            "" if error_table => {
                let message = cells.first().filter(|m| !m.is_empty());
                let reference = cells.get(1).filter(|r| !r.is_empty());
                return Err(QueryError::new(
                    ErrorKind::Query,
                    format!(
                        "influxdb answered the query with an error: {}{}",
                        remote_text(message.map_or("unknown query error", String::as_str)),
                        reference.map_or(String::new(), |r| format!(
                            " (reference {})",
                            remote_text(r)
                        ))
                    ),
                ));
            }
            "" => return Ok(Some((table.clone(), cells.to_vec()))),
            // Other annotations (`#group`) say nothing the value needs.
            _ => {}
        }
    }
    // Single-cell lines (an HTML page, plain text) are no CSV row at all.
    if columns.is_none() && !answer.body.trim().is_empty() {
        return Err(decode_error(answer, NO_ANNOTATIONS));
    }
    Ok(None)
}

const NO_ANNOTATIONS: &str = "no annotation row";

/// The first record's `_value`.
pub(super) fn read_value(answer: &Answer) -> Result<Reading, QueryError> {
    let Some((columns, cells)) = first_record(answer)? else {
        return Ok(Reading::NoData("the query returned no records".into()));
    };
    let Some((column, cell)) = columns.iter().zip(&cells).find(|(c, _)| c.name == "_value") else {
        return Err(QueryError::new(
            ErrorKind::Query,
            format!(
                "the query's first record has no `_value` column (columns {:?}): end the query \
                 with the value in `_value` (an aggregate, or map(fn: (r) => ({{_value: ...}})))",
                columns
                    .iter()
                    .filter(|c| !c.name.is_empty())
                    .take(10)
                    .map(|c| remote_text(&c.name))
                    .collect::<Vec<_>>()
            ),
        ));
    };
    let text = if cell.is_empty() {
        &column.default
    } else {
        cell
    };
    if text.is_empty() {
        return Ok(Reading::NoData(
            "the first record's `_value` is null".into(),
        ));
    }
    let number = match column.datatype.as_str() {
        "double" => text.parse::<f64>().ok(),
        "long" => text.parse::<i64>().ok().map(|v| v as f64),
        "unsignedLong" => text.parse::<u64>().ok().map(|v| v as f64),
        "string"
        | "boolean"
        | "duration"
        | "base64Binary"
        | "dateTime:RFC3339"
        | "dateTime:RFC3339Nano" => {
            return Err(QueryError::new(
                ErrorKind::Query,
                format!(
                    "the first record's `_value` is a {} ({:?}), not a number",
                    column.datatype,
                    remote_text(text)
                ),
            ));
        }
        other => {
            return Err(decode_error(
                answer,
                &format!("unknown data type {:?}", remote_text(other)),
            ));
        }
    };
    match number {
        Some(v) if v.is_nan() => Ok(Reading::NoData("the first record's `_value` is NaN".into())),
        Some(v) => Ok(Reading::Value(v)),
        None => Err(decode_error(
            answer,
            &format!(
                "`_value` {:?} is not a {}",
                remote_text(text),
                column.datatype
            ),
        )),
    }
}

/// The rows of a CSV text (RFC 4180: quoted cells may hold commas, quotes doubled, line
/// breaks), lazily, so reading stops at the first record.
struct Csv<'a> {
    text: &'a str,
}

impl<'a> Csv<'a> {
    fn new(text: &'a str) -> Csv<'a> {
        Csv { text }
    }
}

impl Iterator for Csv<'_> {
    type Item = Result<Vec<String>, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.text.is_empty() {
            return None;
        }
        let mut row = Vec::new();
        let mut cell = String::new();
        let mut quoted = false;
        let mut chars = self.text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek().is_some_and(|(_, n)| *n == '"') => {
                    cell.push('"');
                    chars.next();
                }
                (true, '"') => quoted = false,
                (true, c) => cell.push(c),
                (false, '"') if cell.is_empty() => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut cell)),
                (false, '\n') => {
                    row.push(std::mem::take(&mut cell));
                    self.text = &self.text[i + 1..];
                    return Some(Ok(row));
                }
                (false, '\r') if chars.peek().is_some_and(|(_, n)| *n == '\n') => {}
                (false, c) => cell.push(c),
            }
        }
        self.text = "";
        if quoted {
            return Some(Err("an unterminated quoted cell"));
        }
        row.push(cell);
        Some(Ok(row))
    }
}

/// `query` without its Flux `//` comments (to the end of their line), strings and regular
/// expression literals left whole.
pub fn without_comments(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut chars = query.chars().peekable();
    // The last character outside strings, regexes, comments and spaces: a `/` after `=~`,
    // `!~`, `(`, `,`, `:`, `[` or `{` opens a regular expression, elsewhere it divides.
    let mut last = ' ';
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push(c);
                while let Some(s) = chars.next() {
                    out.push(s);
                    match s {
                        '\\' => out.extend(chars.next()),
                        '"' => break,
                        _ => {}
                    }
                }
                last = '"';
            }
            '/' if chars.peek() == Some(&'/') => {
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if matches!(last, '~' | '(' | ',' | ':' | '[' | '{' | '=') => {
                out.push(c);
                while let Some(s) = chars.next() {
                    out.push(s);
                    match s {
                        '\\' => out.extend(chars.next()),
                        '/' | '\n' => break,
                        _ => {}
                    }
                }
                last = '/';
            }
            c => {
                out.push(c);
                if !c.is_whitespace() {
                    last = c;
                }
            }
        }
    }
    out
}

/// The availability and value readings of one answer, for the fuzz target.
#[cfg(feature = "fuzzing")]
pub(super) fn read_online(answer: &Answer) -> Result<(), QueryError> {
    first_record(answer).map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::MetricProviderType;
    use serin_stack::testing::fake_http::{FakeServer, Response};

    fn provider(address: &str) -> MetricTemplateProvider {
        super::super::template_at(MetricProviderType::Influxdb, address)
    }

    fn secret() -> SecretData {
        super::super::fixture::secret(&[(TOKEN, "tok"), (ORG, "my org")])
    }

    fn influx(address: &str) -> InfluxDb {
        InfluxDb::from_template(&provider(address), Some(("ns/influx", &secret()))).unwrap()
    }

    fn answer(body: &str) -> Answer {
        super::super::fixture::answer(200, &[], body)
    }

    /// Flagger's own test table: two records, the first's `_value` is 1.4.
    const TABLE: &str = "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string,string\r\n\
#group,false,false,true,true,false,false,true,true,true,true\r\n\
#default,_result,,,,,,,,,\r\n\
,result,table,_start,_stop,_time,_value,_field,_measurement,a,b\r\n\
,,0,2020-02-17T22:19:49.747562847Z,2020-02-18T22:19:49.747562847Z,2020-02-18T10:34:08.135814545Z,1.4,f,test,1,adsfasdf\r\n\
,,0,2020-02-17T22:19:49.747562847Z,2020-02-18T22:19:49.747562847Z,2020-02-18T22:08:44.850214724Z,6.6,f,test,1,adsfasdf\r\n\
\r\n";

    /// One table of one record whose `_value` is `value`, of `datatype`.
    fn single(datatype: &str, value: &str) -> String {
        format!(
            "#datatype,string,long,{datatype}\n#group,false,false,false\n#default,_result,,\n\
             ,result,table,_value\n,,0,{value}\n"
        )
    }

    #[tokio::test]
    async fn posts_flux_with_the_token_and_org_and_reads_the_first_record() {
        let server = FakeServer::start(|_| Response::text(200, "text/csv", TABLE)).await;
        let http = Http::new(Duration::from_millis(500)).unwrap();
        let flux = "from(bucket: \"default\") |> range(start: -2h)";
        let reading = influx(&format!("{}/influx/", server.url))
            .query(&http, flux, Instant::now())
            .await;
        assert_eq!(reading, Ok(Reading::Value(1.4)));
        let request = &server.requests()[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/influx/api/v2/query");
        assert_eq!(request.query["org"], "my org");
        assert_eq!(request.headers["authorization"], "Token tok");
        let sent: Value = serde_json::from_str(&request.body).unwrap();
        assert_eq!(sent["query"], flux);
        assert_eq!(sent["type"], "flux");
        assert_eq!(
            sent["dialect"]["annotations"],
            json!(["datatype", "group", "default"])
        );
    }

    #[test]
    fn numbers_nulls_and_nan() {
        let read = |datatype: &str, value: &str| read_value(&answer(&single(datatype, value)));
        assert_eq!(read("double", "0.25"), Ok(Reading::Value(0.25)));
        assert_eq!(read("long", "42"), Ok(Reading::Value(42.0)));
        assert_eq!(read("unsignedLong", "7"), Ok(Reading::Value(7.0)));
        assert_eq!(read("double", "+Inf"), Ok(Reading::Value(f64::INFINITY)));
        assert!(matches!(read("double", ""), Ok(Reading::NoData(why)) if why.contains("null")));
        assert!(matches!(read("double", "NaN"), Ok(Reading::NoData(why)) if why.contains("NaN")));
        // An empty cell takes the column's default.
        let defaulted = "#datatype,string,long,double\n#group,false,false,false\n#default,_result,,3.5\n,result,table,_value\n,,0,\n";
        assert_eq!(read_value(&answer(defaulted)), Ok(Reading::Value(3.5)));
    }

    #[test]
    fn no_records_is_no_data_never_zero() {
        for body in [
            "",
            "\r\n",
            "#datatype,string,long,double\n#group,false,false,false\n#default,_result,,\n,result,table,_value\n\r\n",
        ] {
            assert!(
                matches!(read_value(&answer(body)), Ok(Reading::NoData(why)) if why.contains("no records")),
                "{body:?}"
            );
        }
    }

    #[test]
    fn an_error_table_is_the_querys_error() {
        let body = "#datatype,string,string\n#group,true,true\n#default,,\n,error,reference\n,\"runtime error @3:6-3:40: filter: type conflict, bool != string\",897\n";
        let err = read_value(&answer(body)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query);
        assert!(
            err.message.contains(
                "runtime error @3:6-3:40: filter: type conflict, bool != string (reference 897)"
            ),
            "{err}"
        );
    }

    #[test]
    fn hostile_answers_are_errors_that_quote_no_more_than_an_excerpt() {
        let long = "q".repeat(10_000);
        let cases: Vec<(String, ErrorKind, &str)> = vec![
            (
                single("string", "up"),
                ErrorKind::Query,
                "a string (\"up\"), not a number",
            ),
            (single("boolean", "true"), ErrorKind::Query, "a boolean"),
            (
                single("double", "1.2.3"),
                ErrorKind::Decode,
                "\"1.2.3\" is not a double",
            ),
            (single("long", "1.5"), ErrorKind::Decode, "is not a long"),
            (
                single("float128", "1"),
                ErrorKind::Decode,
                "unknown data type",
            ),
            (single("string", &long), ErrorKind::Query, "..."),
            (
                ",result,table,_value\n,,0,1\n".into(),
                ErrorKind::Decode,
                "no annotation row",
            ),
            (
                "#group,false,false,false\n,result,table,_value\n,,0,1\n".into(),
                ErrorKind::Decode,
                "no #datatype",
            ),
            (
                "#datatype,string,long,double\n,result,table,_value\n,,0,1,9\n".into(),
                ErrorKind::Decode,
                "a row of 4 columns in a table of 3",
            ),
            (
                "#datatype,string,long,double\n,result,table,\"_value\n".into(),
                ErrorKind::Decode,
                "unterminated",
            ),
            (
                "#datatype,string,long,double\n,result,table,_time\n,,0,1\n".into(),
                ErrorKind::Query,
                "no `_value` column",
            ),
            (
                "<html><body>Sign in</body></html>".into(),
                ErrorKind::Decode,
                "HTML page",
            ),
        ];
        for (body, kind, needle) in cases {
            let err = read_value(&answer(&body)).unwrap_err();
            assert_eq!(err.kind, kind, "{body:.80}: {err}");
            assert!(err.message.contains(needle), "{body:.80}: {err}");
            assert!(err.message.len() < 700, "{}", err.message.len());
        }
    }

    #[test]
    fn quoted_cells_hold_commas_quotes_and_line_breaks() {
        let rows: Vec<Vec<String>> = Csv::new("a,\"b,\"\"c\"\"\nd\",e\r\n,\n")
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [vec!["a", "b,\"c\"\nd", "e"], vec!["", ""]]
                .map(|r| r.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        );
    }

    /// A query against a server answering `response`, with a 200 ms timeout.
    async fn ask(response: Response) -> Result<Reading, QueryError> {
        let http = Http::new(Duration::from_millis(200)).unwrap();
        let server = FakeServer::start(move |_| response.clone()).await;
        influx(&server.url).query(&http, "x", Instant::now()).await
    }

    #[tokio::test]
    async fn http_errors_carry_their_cause() {
        let unauthorized = Response::json(
            401,
            json!({"code": "unauthorized", "message": "unauthorized access"}),
        );
        let err = ask(unauthorized).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthorized);
        assert!(err.message.contains("unauthorized access"), "{err}");
        let invalid = Response::json(
            400,
            json!({"code": "invalid", "message": "compilation failed: error @1:1-1:2: undefined identifier x"}),
        );
        let err = ask(invalid).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Query);
        assert!(err.message.contains("undefined identifier x"), "{err}");
        let err = ask(Response::text(503, "text/html", "<html>down</html>"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable);
        // 15 s in Flagger, at its 5 s default: three times the configured timeout.
        let slow = Response::text(200, "text/csv", TABLE).delayed(Duration::from_millis(450));
        assert_eq!(ask(slow).await, Ok(Reading::Value(1.4)));
        let hung = Response::text(200, "text/csv", TABLE).delayed(Duration::from_secs(3));
        let err = ask(hung).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert!(err.message.contains("within 0.6s"), "{err}");
    }

    #[tokio::test]
    async fn a_429_is_retried_after_retry_after_within_the_budget() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let server = FakeServer::start(move |_| {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                Response::json(
                    429,
                    json!({"code": "too many requests", "message": "query limit"}),
                )
                .with_header("Retry-After", "0.2")
            } else {
                Response::text(200, "text/csv", TABLE)
            }
        })
        .await;
        let http = Http::new(Duration::from_millis(500)).unwrap();
        let db = influx(&server.url);
        let err = db.query(&http, "x", Instant::now()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::RateLimited, "{err}");
        let later = Instant::now() + Duration::from_secs(2);
        assert_eq!(db.query(&http, "x", later).await, Ok(Reading::Value(1.4)));
    }

    #[tokio::test]
    async fn online_when_the_buckets_are_listed() {
        let server = FakeServer::start(|_| Response::text(200, "text/csv", "\r\n")).await;
        let http = Http::new(Duration::from_millis(500)).unwrap();
        assert_eq!(influx(&server.url).is_online(&http).await, Ok(()));
        let sent: Value = serde_json::from_str(&server.requests()[0].body).unwrap();
        assert_eq!(sent["query"], ONLINE_QUERY);
        let refused =
            FakeServer::start(|_| Response::json(401, json!({"code": "unauthorized"}))).await;
        assert!(influx(&refused.url).is_online(&http).await.is_err());
    }

    #[test]
    fn the_secret_needs_token_and_org_and_without_one_nothing_is_sent() {
        let no_org = SecretData::from([(TOKEN.to_string(), "t".to_string())]);
        let err =
            InfluxDb::from_template(&provider("http://i"), Some(("ns/i", &no_org))).unwrap_err();
        assert!(err.message.contains("`org`"), "{err}");
        let no_token = SecretData::from([(ORG.to_string(), "o".to_string())]);
        let err =
            InfluxDb::from_template(&provider("http://i"), Some(("ns/i", &no_token))).unwrap_err();
        assert!(err.message.contains("`token`"), "{err}");
        let anonymous = InfluxDb::from_template(&provider("http://i:8086"), None).unwrap();
        assert!(anonymous.token.is_empty());
        assert_eq!(
            anonymous.query_url.as_str(),
            "http://i:8086/api/v2/query?org="
        );
        let mut no_address = provider("");
        no_address.address = None;
        assert!(InfluxDb::from_template(&no_address, None).is_err());
        assert!(InfluxDb::from_template(&provider("not a url"), None).is_err());
    }

    #[test]
    fn comments_go_strings_and_regexes_stay() {
        let flux = "from(bucket: \"a//b\") // the bucket\n  |> filter(fn: (r) => r.url =~ /^https?:\\/\\// and r.x != \"//\") // keep\n  |> map(fn: (r) => ({_value: r.a / r.b}))";
        assert_eq!(
            without_comments(flux),
            "from(bucket: \"a//b\") \n  |> filter(fn: (r) => r.url =~ /^https?:\\/\\// and r.x != \"//\") \n  |> map(fn: (r) => ({_value: r.a / r.b}))"
        );
        assert_eq!(without_comments("a // b"), "a ");
        assert_eq!(
            without_comments("\"unterminated // x"),
            "\"unterminated // x"
        );
    }
}
