//! `serin loadtester`: a counterpart of Flagger's `flagger-loadtester`, the service Flagger's
//! docs and users' Canaries call from webhooks. `POST /` runs the task in the webhook's
//! metadata (`type: cmd`, the default, or `bash`; `cmd`, `logCmdOutput`, `returnCmdOutput`);
//! `/gate/*` and `/rollback/*` are manual gates per canary for `confirm-*` and `rollback`
//! hooks; `/healthz`; `/metrics`.

pub mod gates;
pub mod hey;
pub mod tasks;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;

use gates::{Gates, Kind};
use tasks::Runner;

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

pub struct LoadTester {
    pub gates: Gates,
    pub runner: Arc<Runner>,
    /// Only canaries of namespaces matching it may use the load tester.
    pub namespaces: Option<regex::Regex>,
    requests: AtomicU64,
}

type Reply = (StatusCode, String);

impl LoadTester {
    pub fn new(runner: Runner, namespaces: Option<regex::Regex>) -> LoadTester {
        LoadTester {
            gates: Gates::default(),
            runner: Arc::new(runner),
            namespaces,
            requests: AtomicU64::new(0),
        }
    }

    /// Serves until the process ends.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let this = this.clone();
                    async move { Ok::<_, Infallible>(this.respond(req).await) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!("load tester connection: {e}");
                }
            });
        }
    }

    async fn respond(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let path = req.uri().path().to_string();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let (status, text) = self.route(&path, &body).await;
        let mut response = Response::new(Full::new(Bytes::from(text)));
        *response.status_mut() = status;
        response
    }

    pub async fn route(&self, path: &str, body: &[u8]) -> Reply {
        match path {
            "/healthz" => return (StatusCode::OK, "OK".into()),
            "/metrics" => return (StatusCode::OK, self.metrics()),
            "/gate/approve" => return (StatusCode::OK, "OK".into()),
            "/gate/halt" => return (StatusCode::FORBIDDEN, "Forbidden".into()),
            _ => {}
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
        let gate = |kind, open| {
            self.gates.set(kind, name, ns, open);
            (StatusCode::ACCEPTED, String::new())
        };
        let check = |kind| match self.gates.is_open(kind, name, ns) {
            true => (StatusCode::OK, "Approved".to_string()),
            false => (StatusCode::FORBIDDEN, "Forbidden".to_string()),
        };
        match path {
            "/" => self.task(&payload).await,
            "/gate/check" => check(Kind::Approval),
            "/gate/open" => gate(Kind::Approval, true),
            "/gate/close" => gate(Kind::Approval, false),
            "/rollback/check" => check(Kind::Rollback),
            "/rollback/open" => gate(Kind::Rollback, true),
            "/rollback/close" => gate(Kind::Rollback, false),
            _ => (StatusCode::NOT_FOUND, "not found".into()),
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
        match metadata.get("type").map(String::as_str).unwrap_or("cmd") {
            "cmd" => match self.runner.start(&canary, cmd, flag("logCmdOutput")) {
                Ok(_) => (StatusCode::ACCEPTED, String::new()),
                Err(e) => (StatusCode::BAD_REQUEST, e),
            },
            "bash" => {
                let outcome = self.runner.shell("bash", cmd).await;
                if flag("logCmdOutput") || !outcome.ok {
                    tracing::info!(canary, cmd, ok = outcome.ok, output = %outcome.output, "bash task finished");
                }
                match outcome.ok {
                    true if flag("returnCmdOutput") => (StatusCode::OK, outcome.output),
                    true => (StatusCode::OK, String::new()),
                    false => (StatusCode::INTERNAL_SERVER_ERROR, outcome.output),
                }
            }
            other => (
                StatusCode::BAD_REQUEST,
                format!("metadata.type {other:?} is not supported: use cmd or bash"),
            ),
        }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn tester() -> LoadTester {
        LoadTester::new(
            Runner::new(Duration::from_secs(5), reqwest::Client::new()),
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
        let t = tester();
        let body = payload(serde_json::json!({}));
        assert_eq!(t.route("/gate/check", &body).await.0, StatusCode::FORBIDDEN);
        assert_eq!(t.route("/gate/open", &body).await.0, StatusCode::ACCEPTED);
        assert_eq!(
            t.route("/gate/check", &body).await,
            (StatusCode::OK, "Approved".into())
        );
        assert_eq!(
            t.route("/rollback/check", &body).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(t.route("/gate/approve", b"").await.0, StatusCode::OK);
        assert_eq!(t.route("/gate/halt", b"").await.0, StatusCode::FORBIDDEN);

        let bash = |cmd: &str, ret: bool| {
            payload(serde_json::json!({"type": "bash", "cmd": cmd,
                "returnCmdOutput": ret.to_string()}))
        };
        assert_eq!(
            t.route("/", &bash("echo ok", true)).await,
            (StatusCode::OK, "ok\n".into())
        );
        assert_eq!(
            t.route("/", &bash("exit 1", false)).await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let cmd = payload(serde_json::json!({"cmd": "true"}));
        assert_eq!(t.route("/", &cmd).await.0, StatusCode::ACCEPTED);
        assert_eq!(
            t.route(
                "/",
                &payload(serde_json::json!({"type": "helm", "cmd": "test"}))
            )
            .await
            .0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            t.route("/", &payload(serde_json::Value::Null)).await.0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn other_namespaces_are_refused() {
        let t = LoadTester::new(
            Runner::new(Duration::from_secs(5), reqwest::Client::new()),
            Some(regex::Regex::new("^prod-").unwrap()),
        );
        let body = payload(serde_json::json!({}));
        assert_eq!(t.route("/gate/open", &body).await.0, StatusCode::FORBIDDEN);
    }
}
