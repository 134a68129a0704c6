//! The Canaries the dashboard shows, kept by one watch (the user's own, so their RBAC
//! applies), and their rows pushed to every open page as server-sent events: a page never
//! polls and never reloads to see a release move.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use chrono::Utc;
use futures::StreamExt;
use kube::Api;
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use tokio::sync::watch;

use crate::api::Canary;
use crate::cli::status::{Row, row};

/// How long the stream waits after a change for the next one: a burst of changes (a
/// release's status write and its events) is sent once.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// A comment this often keeps proxies from closing a quiet stream, and shows the server
/// when the page has gone.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Characters of a watch error shown on the page.
const ERROR_CHARS: usize = 300;

/// The watched Canaries, and a counter bumped at each change.
#[derive(Clone)]
pub struct Live {
    pub canaries: Store<Canary>,
    changes: watch::Receiver<u64>,
    error: Arc<Mutex<Option<String>>>,
}

/// What a page receives at each change.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub rows: Vec<DashboardRow>,
    /// Why the Canaries cannot be listed (permission, an API server down), when they cannot.
    pub error: Option<String>,
}

/// One Canary's row: `serin status`'s, and how long it has been in its phase.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DashboardRow {
    #[serde(flatten)]
    pub row: Row,
    pub in_phase_seconds: Option<i64>,
}

impl Live {
    /// Starts watching `api`'s Canaries.
    pub fn start(api: Api<Canary>) -> Live {
        let (canaries, writer) = reflector::store();
        let (tx, changes) = watch::channel(0u64);
        let error = Arc::new(Mutex::new(None));
        let seen = error.clone();
        let events = reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .for_each(move |event| {
                let failure = event.err().map(|e| super::cut(&e.to_string(), ERROR_CHARS));
                if let Ok(mut slot) = seen.lock() {
                    *slot = failure;
                }
                tx.send_modify(|n| *n = n.wrapping_add(1));
                futures::future::ready(())
            });
        tokio::spawn(events);
        Live {
            canaries,
            changes,
            error,
        }
    }

    /// The rows now, sorted by namespace and name.
    pub fn snapshot(&self) -> Snapshot {
        let now = Utc::now();
        let mut rows: Vec<DashboardRow> = self
            .canaries
            .state()
            .iter()
            .map(|c| DashboardRow {
                row: row(c, now),
                in_phase_seconds: c
                    .status
                    .as_ref()
                    .and_then(|s| s.last_transition_time)
                    .map(|t| (now - t).num_seconds().max(0)),
            })
            .collect();
        rows.sort_by(|a, b| (&a.row.namespace, &a.row.name).cmp(&(&b.row.namespace, &b.row.name)));
        let error = self.error.lock().ok().and_then(|e| e.clone());
        Snapshot { rows, error }
    }

    /// A `text/event-stream` body: the snapshot now, then after every change (a comment
    /// when nothing changed for a while). Produced as the page reads it: a slow page holds
    /// one message, not a queue, and a page that is gone drops the stream.
    pub fn events(&self) -> Body {
        let start = Stream {
            live: self.clone(),
            changes: self.changes.clone(),
            first: true,
        };
        let stream = futures::stream::unfold(start, |mut s| async move {
            let message = s.next().await?;
            Some((Ok::<_, std::convert::Infallible>(message), s))
        });
        Body::from_stream(stream)
    }
}

/// Where one page's stream stands.
struct Stream {
    live: Live,
    changes: watch::Receiver<u64>,
    first: bool,
}

impl Stream {
    /// The next message; `None` when the watch has ended.
    async fn next(&mut self) -> Option<Bytes> {
        if std::mem::take(&mut self.first) {
            // The first snapshot waits for the first list: an empty table would say "no
            // Canaries" when they are only not listed yet (a failing list shows its error).
            let listed = self.live.canaries.wait_until_ready();
            let _ = tokio::time::timeout(super::FIRST_LIST, listed).await;
            return Some(self.snapshot());
        }
        match tokio::time::timeout(HEARTBEAT, self.changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return None,
            // A quiet stream still sends a comment now and then, so a page that is gone is
            // noticed (the write fails) and proxies keep the connection.
            Err(_) => return Some(Bytes::from_static(b": ping\n\n")),
        }
        tokio::time::sleep(DEBOUNCE).await;
        self.changes.borrow_and_update();
        Some(self.snapshot())
    }

    fn snapshot(&self) -> Bytes {
        match serde_json::to_string(&self.live.snapshot()) {
            Ok(json) => Bytes::from(format!("data: {json}\n\n")),
            Err(_) => Bytes::from_static(b": no snapshot\n\n"),
        }
    }
}
