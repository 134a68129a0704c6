//! Watch streams: newline-delimited JSON events, replayed from the event log then live,
//! filtered by namespace and selectors, with bookmarks, timeouts, streaming-list initial
//! events, 410 Gone for compacted resourceVersions, and fault-injected drops.

use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::{Body, Format, Shared};
use crate::store::{Event, EventType, Inner, Replay};
use crate::table;
use bytes::Bytes;
use futures::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

pub struct WatchParams {
    pub resource_version: Option<String>,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    pub send_initial_events: bool,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub format: Format,
}

struct Filter {
    rt: Arc<ResourceType>,
    version: String,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    format: Format,
}

impl Filter {
    fn matches(&self, o: &Value) -> bool {
        if let Some(ns) = &self.ns
            && o.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns.as_str())
        {
            return false;
        }
        self.labels.matches(o) && self.fields.matches(o)
    }

    /// The event as this watcher must see it, if at all.
    fn view(&self, e: &Event) -> Option<(&'static str, Arc<Value>)> {
        let now = self.matches(&e.object);
        let before = e.previous.as_ref().is_some_and(|p| self.matches(p));
        let kind = match e.kind {
            EventType::Added if now => "ADDED",
            EventType::Modified if now && before => "MODIFIED",
            EventType::Modified if now => "ADDED",
            // Left the selection: the watcher sees it go, with its new state.
            EventType::Modified if before => "DELETED",
            EventType::Deleted if before || now => "DELETED",
            _ => return None,
        };
        Some((kind, e.object.clone()))
    }

    fn line(&self, kind: &str, obj: &Value) -> Bytes {
        let converted = crate::convert::outbound(&self.rt, obj);
        let obj = converted.as_ref().unwrap_or(obj);
        let api_version = self.rt.api_version(&self.version);
        let body = if let Format::Metadata = self.format {
            table::partial_metadata(obj)
        } else if let Format::Table(include) = &self.format {
            let meta = json!({"resourceVersion": obj.pointer("/metadata/resourceVersion")});
            table::table(
                &self.rt,
                &self.version,
                &[Arc::new(obj.clone())],
                meta,
                include,
            )
        } else if obj.get("apiVersion").and_then(Value::as_str) != Some(api_version.as_str()) {
            let mut o = obj.clone();
            o["apiVersion"] = json!(api_version);
            o
        } else {
            return Bytes::from(format!(
                "{{\"type\":\"{kind}\",\"object\":{}}}\n",
                serde_json::to_string(obj).unwrap_or_default()
            ));
        };
        Bytes::from(format!(
            "{{\"type\":\"{kind}\",\"object\":{}}}\n",
            serde_json::to_string(&body).unwrap_or_default()
        ))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(&self.version), "metadata": meta});
        Bytes::from(format!("{{\"type\":\"BOOKMARK\",\"object\":{obj}}}\n"))
    }
}

fn gone(message: &str) -> Bytes {
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "Expired", "code": 410});
    Bytes::from(format!("{{\"type\":\"ERROR\",\"object\":{status}}}\n"))
}

/// Starts a watch and returns its response body.
pub fn start(
    shared: Arc<Shared>,
    rt: Arc<ResourceType>,
    version: String,
    ns: Option<String>,
    p: WatchParams,
) -> Body {
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let filter = Filter {
        rt,
        version,
        ns,
        labels: p.labels,
        fields: p.fields,
        format: p.format,
    };
    // Subscribe and snapshot under one lock so no event falls between them.
    let (live, initial, start_rv) = {
        let inner = shared.store.lock();
        let live = shared.store.subscribe();
        let initial = initial_lines(
            &inner,
            &filter,
            p.resource_version.as_deref(),
            p.send_initial_events,
        );
        (live, initial, inner.rv)
    };
    let mut drop_signal = shared.faults.drop_signal();
    drop_signal.mark_unchanged();
    let drop_after = shared.faults.drop_after();
    let interval = shared.bookmark_interval;
    tokio::spawn(async move {
        shared.watches.fetch_add(1, Ordering::SeqCst);
        run(
            filter,
            tx,
            live,
            initial,
            start_rv,
            p.bookmarks,
            p.timeout,
            interval,
            drop_signal,
            drop_after,
        )
        .await;
        shared.watches.fetch_sub(1, Ordering::SeqCst);
    });
    let body = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    StreamBody::new(body).boxed_unsync()
}

/// What a new watch sends first: the events since the requested resourceVersion (410 Gone
/// when they are no longer kept), or else the matching objects as `ADDED` events, followed,
/// for a streaming list (`send_initial_events`), by the bookmark that ends them.
fn initial_lines(
    inner: &Inner,
    filter: &Filter,
    resource_version: Option<&str>,
    send_initial_events: bool,
) -> Result<Vec<Bytes>, Bytes> {
    let key = filter.rt.key();
    let rv_param = resource_version.filter(|r| !r.is_empty() && *r != "0");
    match (send_initial_events, rv_param) {
        (false, Some(rv)) => match rv.parse::<u64>() {
            Err(_) => Err(gone(&format!("invalid resource version {rv:?}"))),
            Ok(since) => match inner.replay(since, &key) {
                Replay::Gone => Err(gone(&format!(
                    "too old resource version: {since} ({})",
                    inner.rv
                ))),
                Replay::Events(evs) => Ok(evs
                    .iter()
                    .filter_map(|e| filter.view(e).map(|(k, o)| filter.line(k, &o)))
                    .collect()),
            },
        },
        _ => {
            let ns = filter.ns.as_deref();
            let mut lines: Vec<Bytes> = inner
                .iter_ns(&key, ns)
                .filter(|o| filter.matches(o))
                .map(|o| filter.line("ADDED", o))
                .collect();
            if send_initial_events {
                lines.push(filter.bookmark(inner.rv, true));
            }
            Ok(lines)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    filter: Filter,
    tx: mpsc::Sender<Bytes>,
    mut live: broadcast::Receiver<Arc<Event>>,
    initial: Result<Vec<Bytes>, Bytes>,
    start_rv: u64,
    bookmarks: bool,
    timeout: Option<Duration>,
    interval: Duration,
    mut drop_signal: tokio::sync::watch::Receiver<u64>,
    drop_after: u64,
) {
    let mut sent = 0u64;
    let lines = match initial {
        Ok(lines) => lines,
        Err(gone) => {
            let _ = tx.send(gone).await;
            return;
        }
    };
    for l in lines {
        if tx.send(l).await.is_err() {
            return;
        }
        sent += 1;
    }
    let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(86_400 * 365)));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    let mut last_seen = start_rv;
    let mut last_bookmarked = start_rv;
    loop {
        tokio::select! {
            ev = live.recv() => match ev {
                Ok(e) => {
                    if e.rv <= start_rv {
                        continue;
                    }
                    last_seen = e.rv;
                    if e.key != filter.rt.key() {
                        continue;
                    }
                    if let Some((kind, obj)) = filter.view(&e) {
                        if tx.send(filter.line(kind, &obj)).await.is_err() {
                            return;
                        }
                        sent += 1;
                        if drop_after > 0 && sent >= drop_after {
                            return;
                        }
                    }
                }
                // A watcher too slow for the event rate is closed, as the API server does;
                // the client re-watches from its last resourceVersion.
                Err(_) => return,
            },
            _ = tick.tick(), if bookmarks => {
                if last_seen != last_bookmarked {
                    last_bookmarked = last_seen;
                    if tx.send(filter.bookmark(last_seen, false)).await.is_err() {
                        return;
                    }
                }
            }
            _ = &mut deadline => return,
            _ = drop_signal.changed() => return,
            _ = tx.closed() => return,
        }
    }
}
