//! Keptn (`type: keptn`): a KeptnMetric's value, or the verdict of a Keptn Analysis, read
//! through the Kubernetes API with the controller's own client and service account (Keptn
//! keeps both in custom resources of `metrics.keptn.sh/v1beta1`).
//!
//! The query is Flagger's, lower-cased and trimmed:
//! `<keptnmetric|keptnmetrics|analysis|analyses>/<namespace>/<name>[/<timeframe>[/<args>]]`.
//!
//! - `keptnmetric/<namespace>/<name>`: a GET of the KeptnMetric; its `status.value` (a
//!   string, as Keptn writes it) is the value. No value yet (Keptn has not fetched it, or its
//!   provider failed: `status.errMsg` is quoted) is no data, which fails the check under the
//!   default `noDataPolicy` as Flagger's error does. The timeframe and args are ignored, as
//!   in Flagger.
//! - `analysis/<namespace>/<definition>/<timeframe>/<k=v;k=v>`: an Analysis
//!   `<definition>-<6 random characters>` is created in the namespace with
//!   `spec.analysisDefinition.name`, `spec.timeframe.recent` (default `1m`) and `spec.args`
//!   (pairs without exactly one `=` are dropped, as Flagger does), then read until Keptn
//!   sets `status.state: Completed` and `status.pass`: the value is 1 when it passed, else 0.
//!   The wait is bounded by 10 s (Flagger's) and by the check's time budget, whichever ends
//!   first (but at least the request timeout); an Analysis still running then fails the
//!   check as a timeout. The Analysis is deleted afterwards on every path: answered, failed,
//!   timed out, or the check itself dropped (a background delete).
//!
//! Every API request times out after the providers' timeout (5 s). The controller needs
//! `get` on `keptnmetrics` and `create`, `get`, `delete` on `analyses` (`src/rbac.rs`).
//! Availability is not checked (Flagger's answer is always yes): the API server is serin's
//! own, and a missing Keptn shows in the first query's error.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};

use super::{ErrorKind, Http, QueryError, Reading, remote_text};

const GROUP: &str = "metrics.keptn.sh";
const VERSION: &str = "v1beta1";
/// Flagger's bound on waiting for an Analysis.
pub const ANALYSIS_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause between two reads of a running Analysis (Flagger reads every second).
const POLL_MAX: Duration = Duration::from_secs(1);
const POLL_FIRST: Duration = Duration::from_millis(250);

const QUERY_FORMAT: &str = "<keptnmetric|analysis>/<namespace>/<name>[/<timeframe>[/<k=v;k=v>]]";

fn metrics_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "KeptnMetric"),
        "keptnmetrics",
    )
}

fn analysis_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "Analysis"),
        "analyses",
    )
}

/// What a query asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Metric {
        namespace: String,
        name: String,
    },
    Analysis {
        namespace: String,
        definition: String,
        timeframe: String,
        args: BTreeMap<String, String>,
    },
}

/// Keptn through the controller's Kubernetes client.
#[derive(Clone)]
pub struct Keptn {
    client: kube::Client,
}

impl std::fmt::Debug for Keptn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keptn")
    }
}

impl Keptn {
    pub fn new(client: kube::Client) -> Keptn {
        Keptn { client }
    }

    /// Runs one query; an Analysis is waited for until `deadline` (the check's budget) or
    /// [`ANALYSIS_TIMEOUT`], whichever comes first.
    pub async fn query(
        &self,
        http: &Http,
        text: &str,
        deadline: Instant,
    ) -> Result<Reading, QueryError> {
        match parse_query(text)? {
            Target::Metric { namespace, name } => self.metric(http, &namespace, &name).await,
            Target::Analysis {
                namespace,
                definition,
                timeframe,
                args,
            } => {
                let budget = deadline
                    .saturating_duration_since(Instant::now())
                    .max(http.timeout)
                    .min(ANALYSIS_TIMEOUT);
                let analysis = AnalysisRun {
                    api: Api::namespaced_with(
                        self.client.clone(),
                        &namespace,
                        &analysis_resource(),
                    ),
                    namespace,
                    definition,
                    timeout: http.timeout,
                };
                analysis.run(&timeframe, &args, budget).await
            }
        }
    }

    /// Always available, as in Flagger: the API server is the controller's own.
    pub async fn is_online(&self, _http: &Http) -> Result<(), QueryError> {
        Ok(())
    }

    async fn metric(
        &self,
        http: &Http,
        namespace: &str,
        name: &str,
    ) -> Result<Reading, QueryError> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &metrics_resource());
        let what = format!("KeptnMetric {namespace}/{name}");
        let metric = bounded(http.timeout, &what, api.get(name)).await?;
        read_metric(&what, &metric.data)
    }
}

/// One Analysis: created, waited for, deleted.
struct AnalysisRun {
    api: Api<DynamicObject>,
    namespace: String,
    definition: String,
    /// Per request.
    timeout: Duration,
}

impl AnalysisRun {
    async fn run(
        &self,
        timeframe: &str,
        args: &BTreeMap<String, String>,
        budget: Duration,
    ) -> Result<Reading, QueryError> {
        let name = format!("{}-{}", self.definition, random_suffix());
        // Armed before the create: a create that times out may still have happened.
        let mut cleanup = Cleanup {
            api: self.api.clone(),
            name: name.clone(),
            timeout: self.timeout,
            armed: true,
        };
        let result = self.create_and_wait(&name, timeframe, args, budget).await;
        cleanup.now().await;
        result
    }

    async fn create_and_wait(
        &self,
        name: &str,
        timeframe: &str,
        args: &BTreeMap<String, String>,
        budget: Duration,
    ) -> Result<Reading, QueryError> {
        let until = Instant::now() + budget;
        // Without the Analysis's own name: it is gone once the check ends, and a message that
        // stays the same from check to check is one repeated event, not a new one each time.
        let what = format!(
            "Keptn Analysis of AnalysisDefinition {}/{}",
            self.namespace, self.definition
        );
        let analysis = DynamicObject::new(name, &analysis_resource())
            .within(&self.namespace)
            .data(json!({"spec": {
                "analysisDefinition": {"name": self.definition},
                "timeframe": {"recent": timeframe},
                "args": args,
            }}));
        bounded(
            self.timeout,
            &format!("creating {what}"),
            self.api.create(&PostParams::default(), &analysis),
        )
        .await?;
        let mut pause = POLL_FIRST;
        let mut state = String::from("none");
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(QueryError::new(
                    ErrorKind::Timeout,
                    format!(
                        "{what} did not complete within {}s (status.state: {state}); is Keptn's \
                         metrics operator running, and does the AnalysisDefinition exist?",
                        (budget.as_secs_f64() * 10.0).round() / 10.0
                    ),
                ));
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(POLL_MAX);
            let current = bounded(
                self.timeout.min(
                    until
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(100)),
                ),
                &format!("reading {what}"),
                self.api.get(name),
            )
            .await?;
            match read_analysis(&current.data) {
                AnalysisState::Done(passed) => {
                    return Ok(Reading::Value(f64::from(u8::from(passed))));
                }
                AnalysisState::Running(seen) => state = seen,
            }
        }
    }
}

/// Deletes the Analysis: awaited by [`Cleanup::now`], or in the background when the check
/// is dropped before (its task cancelled).
struct Cleanup {
    api: Api<DynamicObject>,
    name: String,
    timeout: Duration,
    armed: bool,
}

impl Cleanup {
    async fn now(&mut self) {
        self.armed = false;
        delete(self.api.clone(), self.name.clone(), self.timeout).await;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(delete(self.api.clone(), self.name.clone(), self.timeout));
        }
    }
}

async fn delete(api: Api<DynamicObject>, name: String, timeout: Duration) {
    match tokio::time::timeout(timeout, api.delete(&name, &DeleteParams::background())).await {
        Ok(Ok(_)) => {}
        // Never created (the create failed), or already gone.
        Ok(Err(kube::Error::Api(status))) if status.code == 404 => {}
        Ok(Err(e)) => tracing::warn!(analysis = %name, "cannot delete the Keptn Analysis: {e}"),
        Err(_) => tracing::warn!(analysis = %name, "deleting the Keptn Analysis timed out"),
    }
}

/// Six lower-case letters and digits, different on every call (Flagger takes six characters
/// of a UUID).
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let mut bits = hasher.finish();
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..6)
        .map(|_| {
            let c = ALPHABET[(bits % ALPHABET.len() as u64) as usize];
            bits /= ALPHABET.len() as u64;
            char::from(c)
        })
        .collect()
}

/// `request`, within `timeout`, its failure named after `what`.
async fn bounded<T>(
    timeout: Duration,
    what: &str,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, QueryError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(api_error(what, e)),
        Err(_) => Err(QueryError::new(
            ErrorKind::Timeout,
            format!(
                "{what}: the Kubernetes API server did not answer within {}s",
                timeout.as_secs_f64()
            ),
        )),
    }
}

/// A Kubernetes API error as a query error: refused (401, 403), not found (Keptn's CRDs or
/// the object missing), throttled, down, or unreachable.
fn api_error(what: &str, error: kube::Error) -> QueryError {
    match error {
        kube::Error::Api(status) => {
            let kind = match status.code {
                401 | 403 => ErrorKind::Unauthorized,
                429 => ErrorKind::RateLimited,
                code if code >= 500 => ErrorKind::Unavailable,
                404 | 409 | 422 | 400 => ErrorKind::Query,
                _ => ErrorKind::Status,
            };
            let hint = match status.code {
                404 => " (are Keptn's metrics.keptn.sh CRDs installed?)",
                401 | 403 => " (does serin's RBAC grant metrics.keptn.sh?)",
                _ => "",
            };
            QueryError::new(
                kind,
                format!(
                    "{what}: the Kubernetes API answered {}: {}{hint}",
                    status.code,
                    remote_text(&status.message)
                ),
            )
        }
        other => QueryError::new(
            ErrorKind::Connect,
            format!(
                "{what}: cannot reach the Kubernetes API: {}",
                remote_text(&crate::error_chain(&other))
            ),
        ),
    }
}

/// A KeptnMetric's `status.value`.
pub(super) fn read_metric(what: &str, metric: &Value) -> Result<Reading, QueryError> {
    let status = metric.get("status");
    let no_value = || {
        let why = status
            .and_then(|s| s.get("errMsg"))
            .and_then(Value::as_str)
            .filter(|m| !m.trim().is_empty())
            .map(|m| format!(" (Keptn: {})", remote_text(m)))
            .unwrap_or_default();
        Ok(Reading::NoData(format!("{what} has no value yet{why}")))
    };
    match status.and_then(|s| s.get("value")) {
        None | Some(Value::Null) => no_value(),
        Some(Value::String(text)) if text.trim().is_empty() => no_value(),
        Some(Value::String(text)) => match text.trim().parse::<f64>() {
            Ok(value) if value.is_nan() => Ok(Reading::NoData(format!("{what} has the value NaN"))),
            Ok(value) => Ok(Reading::Value(value)),
            Err(_) => Err(QueryError::new(
                ErrorKind::Decode,
                format!(
                    "{what} has the value {:?}, which is not a number",
                    remote_text(text)
                ),
            )),
        },
        Some(Value::Number(n)) => n.as_f64().map(Reading::Value).ok_or_else(|| {
            QueryError::new(ErrorKind::Decode, format!("{what}: {n} is not a number"))
        }),
        Some(other) => Err(QueryError::new(
            ErrorKind::Decode,
            format!(
                "{what} has the value {}, which is not a number",
                remote_text(&other.to_string())
            ),
        )),
    }
}

/// Where an Analysis stands.
#[derive(Debug, PartialEq)]
enum AnalysisState {
    /// Completed, with its verdict.
    Done(bool),
    /// Not yet (the state seen, for the timeout's message).
    Running(String),
}

/// Completed with a boolean `pass`, as Flagger waits for; anything else is still running.
fn read_analysis(analysis: &Value) -> AnalysisState {
    let state = analysis.pointer("/status/state").and_then(Value::as_str);
    let pass = analysis.pointer("/status/pass").and_then(Value::as_bool);
    match (state, pass) {
        (Some("Completed"), Some(pass)) => AnalysisState::Done(pass),
        (Some(state), _) => AnalysisState::Running(remote_text(state)),
        (None, _) => AnalysisState::Running("none".into()),
    }
}

/// Reads a query as Flagger does (lower-cased, trimmed, split on `/`), refusing up front what
/// could never name an object.
pub fn parse_query(text: &str) -> Result<Target, QueryError> {
    let text = text.trim().to_lowercase();
    let bad = |why: String| {
        QueryError::config(format!(
            "keptn query {:?}: {why}; the format is {QUERY_FORMAT}",
            remote_text(&text)
        ))
    };
    let parts: Vec<&str> = text.split('/').collect();
    let [kind, namespace, name, rest @ ..] = parts.as_slice() else {
        return Err(bad("fewer than three parts".into()));
    };
    for (what, value, limit) in [("namespace", namespace, 63), ("name", name, 253)] {
        if !is_object_name(value, limit) {
            return Err(bad(format!(
                "the {what} {:?} is not a Kubernetes object name",
                remote_text(value)
            )));
        }
    }
    let (namespace, name) = (namespace.to_string(), name.to_string());
    match *kind {
        "keptnmetric" | "keptnmetrics" => Ok(Target::Metric { namespace, name }),
        "analysis" | "analyses" => {
            let timeframe = rest
                .first()
                .map(|t| t.trim())
                .filter(|t| !t.is_empty())
                .unwrap_or("1m")
                .to_string();
            let args = rest
                .get(1)
                .map(|args| {
                    args.split(';')
                        .filter_map(|pair| {
                            let mut kv = pair.split('=');
                            match (kv.next(), kv.next(), kv.next()) {
                                (Some(k), Some(v), None) => Some((k.to_string(), v.to_string())),
                                _ => None,
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(Target::Analysis {
                namespace,
                definition: name,
                timeframe,
                args,
            })
        }
        other => Err(bad(format!(
            "unknown kind {:?} (keptnmetric or analysis)",
            remote_text(other)
        ))),
    }
}

/// A lower-case RFC 1123 name of at most `limit` characters (dots allowed).
fn is_object_name(name: &str, limit: usize) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    name.len() <= limit
        && edge(name.chars().next())
        && edge(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis(
        namespace: &str,
        definition: &str,
        timeframe: &str,
        args: &[(&str, &str)],
    ) -> Target {
        Target::Analysis {
            namespace: namespace.into(),
            definition: definition.into(),
            timeframe: timeframe.into(),
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn queries_read_as_flagger_reads_them() {
        let metric = |ns: &str, name: &str| Target::Metric {
            namespace: ns.into(),
            name: name.into(),
        };
        for (text, want) in [
            (
                "keptnmetric/default/my-metric",
                metric("default", "my-metric"),
            ),
            (
                "KeptnMetrics/Default/My-Metric\n",
                metric("default", "my-metric"),
            ),
            // The docs' example: a timeframe and args on a KeptnMetric are ignored.
            (
                "keptnmetric/my-namespace/response-time/2m/reporter=destination",
                metric("my-namespace", "response-time"),
            ),
            (
                "analysis/default/my-analysis/5m/foo=bar;bar=foo",
                analysis(
                    "default",
                    "my-analysis",
                    "5m",
                    &[("foo", "bar"), ("bar", "foo")],
                ),
            ),
            (
                "analyses/default/my-analysis",
                analysis("default", "my-analysis", "1m", &[]),
            ),
            (
                "analysis/default/a//x=1",
                analysis("default", "a", "1m", &[("x", "1")]),
            ),
            // Pairs without exactly one `=` are dropped; values are lower-cased with the rest.
            (
                "  analysis/ns/def/30s/A=B;broken;x=y=z;k=  ",
                analysis("ns", "def", "30s", &[("a", "b"), ("k", "")]),
            ),
        ] {
            assert_eq!(parse_query(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn bad_queries_say_why_and_show_the_format() {
        for (text, why) in [
            ("invalid/default", "fewer than three parts"),
            ("", "fewer than three parts"),
            ("invalid/default/my-metric", "unknown kind"),
            ("keptnmetric//m", "namespace"),
            ("keptnmetric/default/", "name"),
            ("keptnmetric/de fault/m", "namespace"),
            ("keptnmetric/default/m?x=1", "name"),
            ("analysis/default/-a", "name"),
        ] {
            let err = parse_query(text).expect_err(text);
            assert_eq!(err.kind, ErrorKind::Config, "{text:?}");
            assert!(err.message.contains(why), "{text:?}: {err}");
            assert!(err.message.contains(QUERY_FORMAT), "{err}");
        }
        let long = format!("keptnmetric/default/{}", "a".repeat(10_000));
        assert!(parse_query(&long).unwrap_err().message.len() < 600);
    }

    #[test]
    fn a_metrics_value_is_its_status_value() {
        let read = |status: Value| read_metric("KeptnMetric d/m", &json!({"status": status}));
        assert_eq!(read(json!({"value": "3.0"})), Ok(Reading::Value(3.0)));
        assert_eq!(read(json!({"value": " 99.5 "})), Ok(Reading::Value(99.5)));
        assert_eq!(read(json!({"value": 7})), Ok(Reading::Value(7.0)));
        assert!(matches!(read(json!({})), Ok(Reading::NoData(_))));
        assert!(matches!(read(json!({"value": ""})), Ok(Reading::NoData(_))));
        assert!(matches!(
            read(json!({"value": "NaN"})),
            Ok(Reading::NoData(_))
        ));
        let failed = read(json!({"errMsg": "prometheus: connection refused\u{7}"}));
        assert!(
            matches!(&failed, Ok(Reading::NoData(why)) if why.contains("(Keptn: prometheus: connection refused)")),
            "{failed:?}"
        );
        assert!(matches!(
            read_metric("KeptnMetric d/m", &json!({})),
            Ok(Reading::NoData(_))
        ));
    }

    #[test]
    fn hostile_metric_values_are_errors_that_quote_little() {
        let read =
            |value: Value| read_metric("KeptnMetric d/m", &json!({"status": {"value": value}}));
        let err = read(json!("x".repeat(100_000))).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Decode);
        assert!(err.message.len() < 400, "{}", err.message.len());
        for value in [
            json!("invalid"),
            json!("1,5"),
            json!({"a": 1}),
            json!([1]),
            json!(true),
        ] {
            assert_eq!(
                read(value.clone()).unwrap_err().kind,
                ErrorKind::Decode,
                "{value}"
            );
        }
    }

    #[test]
    fn an_analysis_is_done_when_completed_with_a_verdict() {
        let read = |status: Value| read_analysis(&json!({"status": status}));
        assert_eq!(
            read(json!({"state": "Completed", "pass": true})),
            AnalysisState::Done(true)
        );
        assert_eq!(
            read(json!({"state": "Completed", "pass": false})),
            AnalysisState::Done(false)
        );
        // Flagger keeps waiting for a verdict.
        assert_eq!(
            read(json!({"state": "Completed"})),
            AnalysisState::Running("Completed".into())
        );
        assert_eq!(
            read(json!({"state": "Progressing", "pass": true})),
            AnalysisState::Running("Progressing".into())
        );
        assert_eq!(read(json!({})), AnalysisState::Running("none".into()));
        assert_eq!(
            read(json!({"state": "Completed", "pass": "true"})),
            AnalysisState::Running("Completed".into())
        );
    }

    #[test]
    fn suffixes_are_six_name_characters_and_differ() {
        let a = random_suffix();
        let b = random_suffix();
        assert_eq!(a.len(), 6);
        assert!(is_object_name(&a, 6), "{a}");
        assert_ne!(a, b);
    }
}
