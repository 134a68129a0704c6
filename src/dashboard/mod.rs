//! `serin dashboard`: a web page of the Canaries on `127.0.0.1`, live, with the buttons of
//! `serin promote|abort|retry|pause|resume`. It acts with the user's kubeconfig, so their RBAC
//! applies: reading needs `list` and `watch` on Canaries (and `list` on events for a Canary's
//! page); a button needs `patch` on the Canary, and the API server's refusal is shown as it
//! is. Everything it serves is in the binary: no network beyond the API server.
//!
//! - `GET /`: the overview (`pages::overview`), filled and kept current from `/api/stream`;
//! - `GET /canaries/{ns}/{name}`: one Canary, with the release report's sections;
//! - `GET /canaries/{ns}/{name}/sections`: those sections alone, fetched again on a change;
//! - `GET /api/stream`: server-sent events, the rows of every Canary at each change;
//! - `POST /api/canaries/{ns}/{name}/{action}`: a button (see `guard` for who may press it).

mod guard;
mod live;
mod now;
mod pages;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::api::{Canary, Provider};
use crate::cli::control::Action;

pub use guard::BUTTON_HEADER;
pub use live::Live;

/// Characters of the API server's answer shown for a refused button.
const ANSWER_CHARS: usize = 1000;

/// What the dashboard serves from.
pub struct Dashboard {
    pub client: kube::Client,
    pub live: Live,
    /// For a Canary page's planned steps, as `serin plan` takes them.
    pub mesh_provider: Provider,
    pub min_interval: Duration,
}

/// The dashboard's routes, for requests to `127.0.0.1:port`.
pub fn router(dashboard: Arc<Dashboard>, port: u16) -> Router {
    Router::new()
        .route("/", get(|| async { html(pages::overview()) }))
        .route(
            "/assets/dashboard.js",
            get(|| async { asset("text/javascript", pages::SCRIPT) }),
        )
        .route(
            "/assets/dashboard.css",
            get(|| async { asset("text/css", pages::STYLE) }),
        )
        .route("/api/stream", get(stream))
        .route("/canaries/{namespace}/{name}", get(canary_page))
        .route(
            "/canaries/{namespace}/{name}/sections",
            get(canary_sections),
        )
        .route("/api/canaries/{namespace}/{name}/{action}", post(press))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .with_state(dashboard)
        .layer(axum::middleware::from_fn_with_state(
            guard::Own { port },
            guard::check,
        ))
}

fn html(body: String) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

async fn stream(State(d): State<Arc<Dashboard>>) -> Response {
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
        (CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    (headers, d.live.events()).into_response()
}

/// How long a page waits for the watch's first list (a page opened as the dashboard starts).
pub(crate) const FIRST_LIST: Duration = Duration::from_secs(10);

/// The Canary in the watch's cache, once the watch has listed the Canaries.
async fn cached(d: &Dashboard, namespace: &str, name: &str) -> Option<Canary> {
    let _ = tokio::time::timeout(FIRST_LIST, d.live.canaries.wait_until_ready()).await;
    let key = kube::runtime::reflector::ObjectRef::new(name).within(namespace);
    d.live.canaries.get(&key).map(|c| (*c).clone())
}

async fn canary_page(
    State(d): State<Arc<Dashboard>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    match sections_of(&d, &namespace, &name).await {
        Some(sections) => html(pages::canary(&namespace, &name, &sections)),
        None => not_found(&d, &namespace, &name),
    }
}

async fn canary_sections(
    State(d): State<Arc<Dashboard>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    match sections_of(&d, &namespace, &name).await {
        Some(sections) => html(sections),
        None => not_found(&d, &namespace, &name),
    }
}

/// The release report's sections of a Canary, with a note when its events cannot be read.
async fn sections_of(d: &Dashboard, namespace: &str, name: &str) -> Option<String> {
    let canary = cached(d, namespace, name).await?;
    let (report, unread) =
        crate::cli::report::report_of(&d.client, &canary, d.mesh_provider, d.min_interval).await;
    let waiting_for = crate::cli::status::row(&canary, chrono::Utc::now()).waiting_for;
    let mut sections = now::section(&d.client, &canary, &waiting_for).await;
    sections.push_str(&crate::cli::report::html::sections(&report));
    if let Some(e) = unread {
        let note = format!(
            "The events could not be read: {}",
            cut(&e.to_string(), ANSWER_CHARS)
        );
        sections.insert_str(0, &format!("<p class=\"warn\">{}</p>", pages::esc(&note)));
    }
    Some(sections)
}

fn not_found(d: &Dashboard, namespace: &str, name: &str) -> Response {
    let mut text = format!("no Canary {namespace}/{name} among those this dashboard watches");
    if let Some(error) = d.live.snapshot().error {
        text.push_str(&format!(" (its watch fails: {error})"));
    }
    (StatusCode::NOT_FOUND, text).into_response()
}

/// A button: the same annotation as the command line's, with the user's credentials. The
/// answer is text for the page: what happens next, or the API server's refusal as it said it.
async fn press(
    State(d): State<Arc<Dashboard>>,
    Path((namespace, name, action)): Path<(String, String, String)>,
) -> Response {
    let Some(act) = Action::parse(&action) else {
        let text = "the buttons are promote, abort, retry, pause and resume";
        return (StatusCode::NOT_FOUND, text).into_response();
    };
    let canaries: Api<Canary> = Api::namespaced(d.client.clone(), &namespace);
    let patch = act.patch(&d.client).await;
    match canaries
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => (
            StatusCode::OK,
            format!("{namespace}/{name}: {}", act.done()),
        )
            .into_response(),
        Err(kube::Error::Api(e)) => {
            let status = StatusCode::from_u16(e.code).unwrap_or(StatusCode::BAD_GATEWAY);
            let text = format!(
                "the API server refused ({}): {}",
                e.code,
                cut(&e.message, ANSWER_CHARS)
            );
            (status, text).into_response()
        }
        Err(e) => {
            let text = format!(
                "cannot reach the API server: {}",
                cut(&e.to_string(), ANSWER_CHARS)
            );
            (StatusCode::BAD_GATEWAY, text).into_response()
        }
    }
}

/// At most `chars` characters of `text` (a remote answer, shown on a page).
fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}
