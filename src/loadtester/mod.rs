//! `serin loadtester`: a counterpart of Flagger's `flagger-loadtester`, the service Flagger's
//! docs and users' Canaries call from webhooks. `POST /` runs the task in the webhook's
//! metadata (`type: cmd`, the default, `bash`, or `helm`/`helmv3`/`kubectl`, run with those
//! binaries when they are on the PATH; `cmd`, `logCmdOutput`, `returnCmdOutput`);
//! `/gate/*` and `/rollback/*` are manual gates per canary for `confirm-*` and `rollback`
//! hooks; `/healthz`; `/metrics`.
//!
//! Anyone who reaches it can send it anything, so every read and every wait is bounded
//! ([`Limits`]): request bodies (413 above the limit), the time to send the headers and the
//! body, the connections served at once (503 beyond them), the commands running at once
//! (503), and a failing `accept()` backs off instead of spinning. With a gate token, the
//! requests that change a gate must carry it; checking a gate, as Flagger's webhooks do, needs
//! none. The routes are axum's; connections are served as the controller's telemetry's are
//! (`crate::http_server`).

pub mod gates;
pub mod hey;
pub mod tasks;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONNECTION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body, Bytes};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http_server::{self, Backoff, Listener};
use gates::{Gates, Kind};
use tasks::{Refusal, Runner};

/// Flagger's webhook payload, as far as the load tester reads it.
#[derive(Debug, Default, Deserialize)]
pub struct Payload {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// The bounds of the HTTP server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The largest request body read; a larger one is answered 413. A webhook payload is a
    /// few hundred bytes.
    pub max_body: usize,
    /// The longest a client may take to send a request's headers, and the longest an idle
    /// connection is kept: a client that opens connections and sends nothing cannot hold them.
    pub header_read_timeout: Duration,
    /// The longest a client may take to send a request's body (408 after it).
    pub body_read_timeout: Duration,
    /// Connections served at once (HTTP/1: at most one request each).
    pub max_connections: usize,
    /// Connections beyond `max_connections` answered 503 at once; beyond these too, a new
    /// connection is closed unanswered, so a flood costs a bounded amount of memory.
    pub max_refused: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body: 1024 * 1024,
            header_read_timeout: http_server::HEADER_READ_TIMEOUT,
            body_read_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_refused: 32,
        }
    }
}

/// How an accepted connection is handled: served, or answered 503 (`busy`); the permit
/// counts it until it closes.
struct Admission {
    busy: bool,
    _permit: OwnedSemaphorePermit,
}

pub struct LoadTester {
    pub gates: Gates,
    pub runner: Arc<Runner>,
    /// Only canaries of namespaces matching it may use the load tester.
    pub namespaces: Option<regex::Regex>,
    /// When set, changing a gate needs `Authorization: Bearer <token>`.
    gate_token: Option<String>,
    limits: Limits,
    connections: Arc<Semaphore>,
    refused: Arc<Semaphore>,
    requests: AtomicU64,
}

type Reply = (StatusCode, String);

/// What a request with a webhook's payload asks, by its path.
#[derive(Clone, Copy, Debug)]
enum Action {
    /// `/`: run the task in the payload's metadata.
    Task,
    /// `/gate/check`, `/rollback/check`.
    Check(Kind),
    /// `/gate/open`, `/gate/close`, `/rollback/open`, `/rollback/close`: what a gate token
    /// protects.
    Set(Kind, bool),
}

/// Compares in a time that depends only on the lengths, so that the answer's timing does not
/// tell a caller how much of a guessed token was right.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

impl LoadTester {
    pub fn new(runner: Runner, namespaces: Option<regex::Regex>) -> LoadTester {
        let limits = Limits::default();
        LoadTester {
            gates: Gates::default(),
            runner: Arc::new(runner),
            namespaces,
            gate_token: None,
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            refused: Arc::new(Semaphore::new(limits.max_refused)),
            limits,
            requests: AtomicU64::new(0),
        }
    }

    /// Requires `token` (when `Some`) to change a gate.
    pub fn with_gate_token(mut self, token: Option<String>) -> LoadTester {
        self.gate_token = token;
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> LoadTester {
        self.connections = Arc::new(Semaphore::new(limits.max_connections));
        self.refused = Arc::new(Semaphore::new(limits.max_refused));
        self.limits = limits;
        self
    }

    /// Serves until the process ends.
    pub async fn serve<L: Listener>(self: Arc<Self>, mut listener: L) {
        let (routes, busy) = (self.router(), self.busy());
        let mut backoff = Backoff::new();
        loop {
            let stream = http_server::accept(&mut listener, &mut backoff, "load tester").await;
            let admission = match self.connections.clone().try_acquire_owned() {
                Ok(permit) => Admission {
                    busy: false,
                    _permit: permit,
                },
                Err(_) => match self.refused.clone().try_acquire_owned() {
                    Ok(permit) => Admission {
                        busy: true,
                        _permit: permit,
                    },
                    Err(_) => {
                        tracing::debug!("load tester: too many connections, one closed");
                        continue;
                    }
                },
            };
            let (router, keep_alive) = match admission.busy {
                true => (busy.clone(), false),
                false => (routes.clone(), true),
            };
            let timeout = self.limits.header_read_timeout;
            let served =
                http_server::serve_connection(stream, router, timeout, keep_alive, "load tester");
            tokio::spawn(async move {
                served.await;
                // The connection counts against the limits until it closes.
                drop(admission);
            });
        }
    }

    /// The routes of Flagger's load tester. Every method is answered alike, as in Flagger's.
    fn router(self: &Arc<Self>) -> Router {
        let act = |action| -> MethodRouter<Arc<LoadTester>> {
            any(
                move |State(tester): State<Arc<LoadTester>>, request: Request| async move {
                    tester.act(action, request).await
                },
            )
        };
        let count = |State(tester): State<Arc<LoadTester>>, request: Request| async move {
            tester.requests.fetch_add(1, Ordering::Relaxed);
            request
        };
        Router::new()
            .route("/healthz", any(|| async { (StatusCode::OK, "OK") }))
            .route(
                "/metrics",
                any(|State(tester): State<Arc<LoadTester>>| async move { tester.metrics() }),
            )
            .route("/gate/approve", any(|| async { (StatusCode::OK, "OK") }))
            .route(
                "/gate/halt",
                any(|| async { (StatusCode::FORBIDDEN, "Forbidden") }),
            )
            .route("/", act(Action::Task))
            .route("/gate/check", act(Action::Check(Kind::Approval)))
            .route("/gate/open", act(Action::Set(Kind::Approval, true)))
            .route("/gate/close", act(Action::Set(Kind::Approval, false)))
            .route("/rollback/check", act(Action::Check(Kind::Rollback)))
            .route("/rollback/open", act(Action::Set(Kind::Rollback, true)))
            .route("/rollback/close", act(Action::Set(Kind::Rollback, false)))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
            .layer(axum::middleware::map_request_with_state(
                self.clone(),
                count,
            ))
            .with_state(self.clone())
    }

    /// What a connection beyond `max_connections` is served: 503 to every request, and the
    /// connection closed after it.
    fn busy(&self) -> Router {
        let text = format!(
            "the load tester is serving {} connections, its most: retry later",
            self.limits.max_connections
        );
        Router::new().fallback(move || async move {
            let close = [(CONNECTION, HeaderValue::from_static("close"))];
            (StatusCode::SERVICE_UNAVAILABLE, close, text)
        })
    }

    /// Answers a request with a webhook's payload: its body read within the limits, then
    /// [`LoadTester::answer`].
    async fn act(&self, action: Action, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let (status, text) = match self.read_body(body).await {
            Ok(body) => {
                let authorization = parts.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
                self.answer(action, parts.uri.path(), authorization, &body)
                    .await
            }
            Err(refused) => refused,
        };
        let mut response = (status, text).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }

    /// The request body, at most `max_body` bytes and within `body_read_timeout`.
    async fn read_body<B>(&self, body: B) -> Result<Bytes, Reply>
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let max = self.limits.max_body;
        let too_large = || {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than the load tester reads ({max} bytes)"),
            )
        };
        // A declared length over the limit is refused before a byte of it is read.
        if body.size_hint().lower() > max as u64 {
            return Err(too_large());
        }
        let read = Limited::new(body, max).collect();
        match tokio::time::timeout(self.limits.body_read_timeout, read).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
            Ok(Err(e)) => Err((
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )),
            Err(_) => Err((
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {}s",
                    self.limits.body_read_timeout.as_secs()
                ),
            )),
        }
    }

    /// Answers `action` for the request to `path` with this body; `authorization` is its
    /// `Authorization` header.
    async fn answer(
        &self,
        action: Action,
        path: &str,
        authorization: Option<&[u8]>,
        body: &[u8],
    ) -> Reply {
        if let Some(token) = &self.gate_token
            && matches!(action, Action::Set(..))
        {
            let given = authorization.and_then(|a| a.strip_prefix(b"Bearer "));
            if !given.is_some_and(|g| same_token(g, token.as_bytes())) {
                let message = format!(
                    "{path} changes a gate: it needs the load tester's gate token as `Authorization: Bearer <token>`"
                );
                return (StatusCode::UNAUTHORIZED, message);
            }
        }
        let payload: Payload = match serde_json::from_slice(body) {
            Ok(p) => p,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("payload: {e}")),
        };
        if let Some(re) = &self.namespaces
            && !re.is_match(&payload.namespace)
        {
            let message = format!(
                "namespace {} may not use this load tester",
                payload.namespace
            );
            return (StatusCode::FORBIDDEN, message);
        }
        let (name, ns) = (payload.name.as_str(), payload.namespace.as_str());
        match action {
            Action::Task => self.task(&payload).await,
            Action::Check(kind) => match self.gates.is_open(kind, name, ns) {
                true => (StatusCode::OK, "Approved".to_string()),
                false => (StatusCode::FORBIDDEN, "Forbidden".to_string()),
            },
            Action::Set(kind, open) => {
                self.gates.set(kind, name, ns, open);
                (StatusCode::ACCEPTED, String::new())
            }
        }
    }

    async fn task(&self, payload: &Payload) -> Reply {
        let Some(metadata) = &payload.metadata else {
            return (
                StatusCode::BAD_REQUEST,
                "metadata not found in payload".into(),
            );
        };
        let Some(cmd) = metadata.get("cmd").filter(|c| !c.trim().is_empty()) else {
            return (StatusCode::BAD_REQUEST, "metadata.cmd not found".into());
        };
        let flag = |k: &str| metadata.get(k).is_some_and(|v| v == "true");
        let canary = format!("{}.{}", payload.name, payload.namespace);
        let outcome = match metadata.get("type").map(String::as_str).unwrap_or("cmd") {
            "cmd" => {
                return match self.runner.start(&canary, cmd, flag("logCmdOutput")) {
                    Ok(_) => (StatusCode::ACCEPTED, String::new()),
                    Err(e) => refusal(e),
                };
            }
            "bash" => self.runner.run("bash", cmd).await,
            // Flagger runs both with the `helm` binary (Helm 3).
            "helm" | "helmv3" => self.runner.exec("helm", cmd).await,
            "kubectl" => self.runner.exec("kubectl", cmd).await,
            other => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!(
                        "metadata.type {other:?} is not supported: use cmd, bash, helm, helmv3 \
                         or kubectl"
                    ),
                );
            }
        };
        blocking(&canary, cmd, &flag, outcome)
    }

    fn metrics(&self) -> String {
        format!(
            "# HELP serin_loadtester_requests_total Requests served.\n\
             # TYPE serin_loadtester_requests_total counter\n\
             serin_loadtester_requests_total {}\n",
            self.requests.load(Ordering::Relaxed)
        )
    }
}

/// The answer to a task run to the end (`bash`, `helm`, `kubectl`), as Flagger's load tester
/// answers: 200 (with the output when `returnCmdOutput` is set), or 500 with the output.
fn blocking(
    canary: &str,
    cmd: &str,
    flag: &dyn Fn(&str) -> bool,
    outcome: Result<tasks::Outcome, Refusal>,
) -> Reply {
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => return refusal(e),
    };
    if flag("logCmdOutput") || !outcome.ok {
        tracing::info!(canary, cmd, ok = outcome.ok, output = %outcome.output, "task finished");
    }
    match outcome.ok {
        true if flag("returnCmdOutput") => (StatusCode::OK, outcome.output),
        true => (StatusCode::OK, String::new()),
        false => (StatusCode::INTERNAL_SERVER_ERROR, outcome.output),
    }
}

fn refusal(e: Refusal) -> Reply {
    match e {
        Refusal::Invalid(_) => (StatusCode::BAD_REQUEST, e.to_string()),
        Refusal::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// An HTTP client for tests: reqwest is built without a crypto provider of its own, and a
/// test run of only this module has nothing else install one (`serin loadtester` does at start).
#[cfg(test)]
pub(crate) fn test_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use axum::http::Request;
    use http_body_util::Full;
    use tokio::net::{TcpListener, TcpStream};
    use tower::ServiceExt;

    use super::*;
    use crate::http_server::tests::{Failing, assert_backed_off, exchange};

    impl LoadTester {
        /// Sends a request to `path` with this `Authorization` header and body through the
        /// routes, as a connection would, and reads the answer.
        async fn route(
            self: &Arc<Self>,
            path: &str,
            authorization: Option<&[u8]>,
            body: &[u8],
        ) -> Reply {
            let mut request = Request::post(path);
            if let Some(authorization) = authorization {
                request = request.header(AUTHORIZATION, authorization);
            }
            let request = request.body(axum::body::Body::from(body.to_vec())).unwrap();
            let response = self.router().oneshot(request).await.unwrap();
            let status = response.status();
            let text = axum::body::to_bytes(response.into_body(), usize::MAX);
            (
                status,
                String::from_utf8(text.await.unwrap().to_vec()).unwrap(),
            )
        }
    }

    fn tester() -> LoadTester {
        LoadTester::new(
            Runner::new(Duration::from_secs(5), crate::loadtester::test_client()),
            None,
        )
    }

    fn payload(metadata: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"name": "podinfo", "namespace": "test",
            "phase": "Progressing", "metadata": metadata}))
        .unwrap()
    }

    #[tokio::test]
    async fn gates_and_tasks_answer_as_flaggers_load_tester() {
        let t = Arc::new(tester());
        let body = payload(serde_json::json!({}));
        assert_eq!(
            t.route("/gate/check", None, &body).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            t.route("/gate/open", None, &body).await.0,
            StatusCode::ACCEPTED
        );
        assert_eq!(
            t.route("/gate/check", None, &body).await,
            (StatusCode::OK, "Approved".into())
        );
        assert_eq!(
            t.route("/rollback/check", None, &body).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(t.route("/gate/approve", None, b"").await.0, StatusCode::OK);
        assert_eq!(
            t.route("/gate/halt", None, b"").await.0,
            StatusCode::FORBIDDEN
        );

        let bash = |cmd: &str, ret: bool| {
            payload(serde_json::json!({"type": "bash", "cmd": cmd,
                "returnCmdOutput": ret.to_string()}))
        };
        assert_eq!(
            t.route("/", None, &bash("echo ok", true)).await,
            (StatusCode::OK, "ok\n".into())
        );
        assert_eq!(
            t.route("/", None, &bash("exit 1", false)).await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let cmd = payload(serde_json::json!({"cmd": "true"}));
        assert_eq!(t.route("/", None, &cmd).await.0, StatusCode::ACCEPTED);
        // `kubectl` (installed wherever serin is built) with the command as its arguments.
        let kubectl = |cmd: &str| {
            payload(serde_json::json!({"type": "kubectl", "cmd": cmd, "returnCmdOutput": "true"}))
        };
        let (status, output) = t.route("/", None, &kubectl("version --client")).await;
        assert_eq!(status, StatusCode::OK, "{output}");
        assert!(output.contains("Client Version"), "{output}");
        let (status, output) = t.route("/", None, &kubectl("no-such-command")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{output}");
        let (status, output) = t
            .route(
                "/",
                None,
                &payload(serde_json::json!({"type": "concord", "cmd": "test"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(output.contains("helm, helmv3 or kubectl"), "{output}");
        assert_eq!(
            t.route("/", None, &payload(serde_json::Value::Null))
                .await
                .0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn other_namespaces_are_refused() {
        let t = Arc::new(LoadTester::new(
            Runner::new(Duration::from_secs(5), crate::loadtester::test_client()),
            Some(regex::Regex::new("^prod-").unwrap()),
        ));
        let body = payload(serde_json::json!({}));
        assert_eq!(
            t.route("/gate/open", None, &body).await.0,
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn hostile_hey_lines_are_answered_400_naming_the_flag() {
        let t = Arc::new(tester());
        for (line, flag) in [
            ("hey -t inf http://127.0.0.1:1/", "-t inf"),
            ("hey -q 1e-300 http://127.0.0.1:1/", "-q 1e-300"),
            ("hey -z 1e300h http://127.0.0.1:1/", "-z 1e300h"),
            ("hey -c 1e12 http://127.0.0.1:1/", "-c 1e12"),
            ("hey -n -1 http://127.0.0.1:1/", "-n -1"),
        ] {
            let (status, text) = t
                .route("/", None, &payload(serde_json::json!({"cmd": line})))
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{line}: {text}");
            assert!(text.contains(flag), "{line}: {text}");
        }
    }

    #[tokio::test]
    async fn with_a_gate_token_only_changing_a_gate_needs_it() {
        let t = Arc::new(tester().with_gate_token(Some("s3cret".into())));
        let body = payload(serde_json::json!({}));
        for path in [
            "/gate/open",
            "/gate/close",
            "/rollback/open",
            "/rollback/close",
        ] {
            for auth in [
                None,
                Some(&b"Bearer wrong"[..]),
                Some(b"Bearer s3cre"),
                Some(b"s3cret"),
                Some(b"Basic s3cret"),
            ] {
                let (status, text) = t.route(path, auth, &body).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {auth:?}");
                assert!(text.contains("Authorization: Bearer"), "{text}");
            }
        }
        assert!(!t.gates.is_open(Kind::Approval, "podinfo", "test"));
        // Flagger's webhooks only check, and carry no token.
        assert_eq!(
            t.route("/gate/check", None, &body).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            t.route("/rollback/check", None, &body).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(t.route("/gate/approve", None, b"").await.0, StatusCode::OK);
        let token = Some(&b"Bearer s3cret"[..]);
        assert_eq!(
            t.route("/gate/open", token, &body).await.0,
            StatusCode::ACCEPTED
        );
        assert_eq!(t.route("/gate/check", None, &body).await.0, StatusCode::OK);
        assert_eq!(
            t.route("/rollback/open", token, &body).await.0,
            StatusCode::ACCEPTED
        );
        assert_eq!(
            t.route("/rollback/check", None, &body).await.0,
            StatusCode::OK
        );
        assert_eq!(
            t.route("/gate/close", token, &body).await.0,
            StatusCode::ACCEPTED
        );
        assert_eq!(
            t.route("/gate/check", None, &body).await.0,
            StatusCode::FORBIDDEN
        );
        // Without a token configured, anyone may change a gate, as in Flagger's load tester.
        assert_eq!(
            Arc::new(tester()).route("/gate/open", None, &body).await.0,
            StatusCode::ACCEPTED
        );
        assert!(same_token(b"abc", b"abc"));
        assert!(
            !same_token(b"abd", b"abc") && !same_token(b"ab", b"abc") && !same_token(b"", b"abc")
        );
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_413() {
        let t = tester();
        let small = Full::new(Bytes::from_static(b"{}"));
        assert_eq!(t.read_body(small).await, Ok(Bytes::from_static(b"{}")));
        // A declared size over the limit, and chunks of no declared size that pass it.
        let declared = Full::new(Bytes::from(vec![b' '; 1024 * 1024 + 1]));
        let chunks = http_body_util::StreamBody::new(futures::stream::iter((0..20).map(|_| {
            Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(vec![b' '; 64 * 1024])))
        })));
        for refused in [t.read_body(declared).await, t.read_body(chunks).await] {
            let (status, text) = refused.unwrap_err();
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
            assert!(text.contains("1048576 bytes"), "{text}");
        }
        let exactly = Full::new(Bytes::from(vec![b' '; 1024 * 1024]));
        assert_eq!(t.read_body(exactly).await.map(|b| b.len()), Ok(1024 * 1024));
    }

    /// Serves `t` on a free port of 127.0.0.1.
    async fn serving(t: LoadTester) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        (address, tokio::spawn(Arc::new(t).serve(listener)))
    }

    const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";

    #[tokio::test]
    async fn over_http_large_bodies_silent_clients_and_missing_tokens_are_answered() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let t = tester()
            .with_limits(limits)
            .with_gate_token(Some("s3cret".into()));
        let (address, server) = serving(t).await;

        let mut stream = TcpStream::connect(address).await.unwrap();
        let answer = exchange(
            &mut stream,
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2097152\r\n\r\n{",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

        // Sends nothing: closed once the header read timeout passes.
        let mut silent = TcpStream::connect(address).await.unwrap();
        assert_eq!(exchange(&mut silent, "").await, "");
        // Half a request line is no better.
        let mut slow = TcpStream::connect(address).await.unwrap();
        let answer = exchange(&mut slow, "GET /heal").await;
        assert!(!answer.contains("200 OK"), "{answer}");

        let mut stream = TcpStream::connect(address).await.unwrap();
        let body = r#"{"name":"podinfo","namespace":"test"}"#;
        let open = format!(
            "POST /gate/open HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let answer = exchange(&mut stream, &open).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(
            answer.to_lowercase().contains("www-authenticate: bearer"),
            "{answer}"
        );
        let mut stream = TcpStream::connect(address).await.unwrap();
        let authorized = open.replacen("\r\n\r\n", "\r\nauthorization: Bearer s3cret\r\n\r\n", 1);
        let answer = exchange(&mut stream, &authorized).await;
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
        server.abort();
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_answered_503_then_closed() {
        let limits = Limits {
            max_connections: 1,
            max_refused: 1,
            ..Limits::default()
        };
        let (address, server) = serving(tester().with_limits(limits)).await;
        // Takes the one slot: the server accepts connections in the order they were made.
        let held = TcpStream::connect(address).await.unwrap();
        let mut refused = TcpStream::connect(address).await.unwrap();
        let answer = exchange(&mut refused, HEALTHZ).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("retry later"), "{answer}");
        // With the refusal slot also taken, a connection is closed unanswered.
        let idle_refused = TcpStream::connect(address).await.unwrap();
        let mut dropped = TcpStream::connect(address).await.unwrap();
        assert_eq!(exchange(&mut dropped, "").await, "");
        drop((held, idle_refused));
        // Once the held connection is gone, its slot serves again.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut stream = TcpStream::connect(address).await.unwrap();
            let answer = exchange(&mut stream, HEALTHZ).await;
            if answer.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{answer}");
            tokio::task::yield_now().await;
        }
        server.abort();
    }

    #[tokio::test]
    async fn a_full_runner_answers_503() {
        let runner =
            Runner::new(Duration::from_secs(5), crate::loadtester::test_client()).with_max_tasks(0);
        let t = Arc::new(LoadTester::new(runner, None));
        for metadata in [
            serde_json::json!({"cmd": "true"}),
            serde_json::json!({"type": "bash", "cmd": "true"}),
        ] {
            let (status, text) = t.route("/", None, &payload(metadata)).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
            assert!(text.contains("retry later"), "{text}");
        }
    }

    #[tokio::test]
    async fn failing_accepts_back_off_instead_of_spinning() {
        let (failing, calls) = Failing::new();
        let server = tokio::spawn(Arc::new(tester()).serve(failing));
        assert_backed_off(calls).await;
        server.abort();
    }

    #[tokio::test]
    async fn unknown_paths_are_not_found_whatever_the_body() {
        let t = Arc::new(tester());
        let body = payload(serde_json::json!({}));
        for (path, body) in [
            ("/nope", &body[..]),
            ("/gate", b"not json"),
            ("/gate/open/x", b""),
        ] {
            assert_eq!(
                t.route(path, None, body).await,
                (StatusCode::NOT_FOUND, "not found".into()),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_answered_413_by_every_route_that_reads_one() {
        let t = Arc::new(tester());
        let large = vec![b' '; 1024 * 1024 + 1];
        for path in ["/", "/gate/check", "/gate/open", "/rollback/close"] {
            let (status, text) = t.route(path, None, &large).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {text}");
        }
        assert!(!t.gates.is_open(Kind::Approval, "podinfo", "test"));
    }

    #[tokio::test]
    async fn requests_are_counted_in_the_metrics() {
        let t = Arc::new(tester());
        t.route("/healthz", None, b"").await;
        t.route("/nope", None, b"").await;
        let (status, text) = t.route("/metrics", None, b"").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains("serin_loadtester_requests_total 3\n"),
            "{text}"
        );
    }
}
