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

use super::series::Series;

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
    /// Each metric's values over the release, as seen by the watch.
    pub series: Arc<Series>,
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
        let series = Arc::new(Series::default());
        let observed = series.clone();
        let events = reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .for_each(move |event| {
                match &event {
                    Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => {
                        observed.observe(c)
                    }
                    Ok(watcher::Event::Delete(c)) => observed.forget(c),
                    _ => {}
                }
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
            series,
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

    /// A `text/event-stream` body: the snapshot now, then after every change.
    pub fn events(&self) -> Body {
        let live = self.clone();
        let mut changes = self.changes.clone();
        let stream = async_stream(move |tx| async move {
            // The first snapshot waits for the first list: an empty table would say "no
            // Canaries" when they are only not listed yet (a failing list shows its error).
            let listed = live.canaries.wait_until_ready();
            let _ = tokio::time::timeout(super::FIRST_LIST, listed).await;
            loop {
                let message = match serde_json::to_string(&live.snapshot()) {
                    Ok(json) => format!("data: {json}\n\n"),
                    Err(_) => ": no snapshot\n\n".into(),
                };
                if tx.send(Bytes::from(message)).await.is_err() {
                    return;
                }
                // A quiet stream still sends a comment now and then: a page that is gone
                // fails the send, and the stream ends.
                loop {
                    match tokio::time::timeout(HEARTBEAT, changes.changed()).await {
                        Ok(Ok(())) => break,
                        Ok(Err(_)) => return,
                        Err(_) => {
                            if tx.send(Bytes::from_static(b": ping\n\n")).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                tokio::time::sleep(DEBOUNCE).await;
                changes.borrow_and_update();
            }
        });
        Body::from_stream(stream.map(Ok::<_, std::convert::Infallible>))
    }
}

/// A stream fed by `produce` through a channel of one message: the producer waits for the
/// page to take each one, so a slow page holds one message, not a growing queue.
fn async_stream<F, Fut>(produce: F) -> impl futures::Stream<Item = Bytes> + Send
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(produce(tx));
    let stream = tokio_stream_of(rx);
    // The producer stops when the page goes (its next send fails), or with the stream.
    StopOnDrop {
        task: Some(task),
        stream,
    }
}

fn tokio_stream_of(
    rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> impl futures::Stream<Item = Bytes> + Send + Unpin {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) }).boxed()
}

/// A stream that aborts its producer task when dropped.
struct StopOnDrop<S> {
    task: Option<tokio::task::JoinHandle<()>>,
    stream: S,
}

impl<S: futures::Stream + Unpin> futures::Stream for StopOnDrop<S> {
    type Item = S::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        self.stream.poll_next_unpin(cx)
    }
}

impl<S> Drop for StopOnDrop<S> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
