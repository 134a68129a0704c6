//! Flagger's event webhooks: every event serin records on a Canary is also POSTed to the
//! Canary's `type: event` webhooks or, when it has none, to the global `--event-webhook`.
//! The body is the webhook payload (`name`, `namespace`, `phase`, `checksum`) whose
//! `metadata` carries `eventMessage`, `eventType` (`Normal` or `Warning`) and `timestamp`
//! (Unix milliseconds, as a string), beside the hook's own metadata keys.
//!
//! Delivery is off the reconcile path, one queue and one sender task per destination (scheme,
//! host and port), each in the order its events happened: a slow or failing receiver delays
//! only its own deliveries, never another tenant's and never a step. Failures are logged (as
//! Flagger does) and everything is bounded: a full queue drops the event with a warning
//! rather than holding the controller, destinations are capped, and a sender task idle for
//! a while ends.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Value, json};
use serin_core::EventType;
use tokio::sync::mpsc;

use crate::api::{Canary, HookType, parse_duration};

/// Flagger's timeout for event webhooks without one (and for the global one).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries waiting to be routed to their destination's queue.
const QUEUE: usize = 1024;
/// Deliveries waiting for one destination before new ones for it are dropped.
const PER_DESTINATION: usize = 256;
/// Destinations with a sender task at once: each Canary names its own, so this bounds what
/// many Canaries' event webhooks can take.
const MAX_DESTINATIONS: usize = 256;
/// A destination's sender task ends after this long without an event.
const IDLE: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Delivery {
    url: String,
    timeout: Duration,
    body: Value,
}

/// The sending side; cheap to share.
#[derive(Clone, Debug)]
pub struct EventHooks {
    tx: mpsc::Sender<Delivery>,
    global: Option<String>,
}

impl EventHooks {
    /// Starts the sender task. `global`: the `--event-webhook` URL.
    pub fn start(http: reqwest::Client, global: Option<String>) -> EventHooks {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(dispatch(http, rx));
        EventHooks { tx, global }
    }

    /// Queues `message` for the Canary's event webhooks (or the global one).
    pub fn send(&self, canary: &Canary, kind: EventType, message: &str) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        for delivery in deliveries(canary, self.global.as_deref(), kind, message, now_ms) {
            if let Err(e) = self.tx.try_send(delivery) {
                tracing::warn!(error = %e, "event webhook queue full; event not delivered");
            }
        }
    }
}

/// Where an event goes and with what body: pure, so its shape is tested without a server.
fn deliveries(
    canary: &Canary,
    global: Option<&str>,
    kind: EventType,
    message: &str,
    now_ms: i64,
) -> Vec<Delivery> {
    let hooks: Vec<_> = canary
        .spec
        .analysis()
        .map(|a| a.webhooks())
        .unwrap_or_default()
        .iter()
        .filter(|h| h.hook_type() == HookType::Event)
        .collect();
    let event_type = match kind {
        EventType::Warning => "Warning",
        _ => "Normal",
    };
    let body = |hook_metadata: Option<&BTreeMap<String, String>>| {
        let mut metadata: serde_json::Map<String, Value> = hook_metadata
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        metadata.insert("eventMessage".into(), message.into());
        metadata.insert("eventType".into(), event_type.into());
        metadata.insert("timestamp".into(), now_ms.to_string().into());
        json!({
            "name": canary.metadata.name.as_deref().unwrap_or_default(),
            "namespace": canary.metadata.namespace.as_deref().unwrap_or_default(),
            "phase": canary.status.as_ref().map(|s| s.phase).unwrap_or_default().as_str(),
            "checksum": "",
            "metadata": metadata,
        })
    };
    if hooks.is_empty() {
        return global
            .map(|url| Delivery {
                url: url.to_string(),
                timeout: DEFAULT_TIMEOUT,
                body: body(None),
            })
            .into_iter()
            .collect();
    }
    hooks
        .into_iter()
        .map(|h| Delivery {
            url: h.url.clone(),
            timeout: h
                .timeout
                .as_deref()
                .and_then(|t| parse_duration(t).ok())
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_TIMEOUT)
                // Events are sent one after the other: one slow receiver delays the rest.
                .min(crate::controller::probes::webhooks::MAX_CALL_TIME),
            body: body(h.metadata.as_ref()),
        })
        .collect()
}

/// Routes each delivery to its destination's queue, starting the destination's sender task
/// when it has none (or its task ended, idle).
async fn dispatch(http: reqwest::Client, mut rx: mpsc::Receiver<Delivery>) {
    let mut queues: HashMap<String, mpsc::Sender<Delivery>> = HashMap::new();
    while let Some(d) = rx.recv().await {
        let key = destination(&d.url);
        let d = match queues.get(&key) {
            Some(tx) => match tx.try_send(d) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        host = host(&key),
                        "event webhook queue full; event not delivered"
                    );
                    continue;
                }
                Err(mpsc::error::TrySendError::Closed(d)) => d,
            },
            None => d,
        };
        queues.retain(|_, tx| !tx.is_closed());
        if queues.len() >= MAX_DESTINATIONS {
            tracing::warn!(
                host = host(&key),
                "{MAX_DESTINATIONS} event webhook destinations busy; event not delivered"
            );
            continue;
        }
        let (tx, rx) = mpsc::channel(PER_DESTINATION);
        tokio::spawn(deliver(http.clone(), rx));
        // A new queue has room.
        let _ = tx.try_send(d);
        queues.insert(key, tx);
    }
}

/// Scheme, host and port: what a slow receiver is slow for.
fn destination(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| url.to_string())
}

/// One destination's sender: its deliveries in order, until idle.
async fn deliver(http: reqwest::Client, mut rx: mpsc::Receiver<Delivery>) {
    loop {
        match tokio::time::timeout(IDLE, rx.recv()).await {
            Ok(Some(d)) => send(&http, d).await,
            Ok(None) => return,
            Err(_) => {
                // Idle: refuse new deliveries (the dispatcher starts a new task for them),
                // then send what arrived in between.
                rx.close();
                while let Ok(d) = rx.try_recv() {
                    send(&http, d).await;
                }
                return;
            }
        }
    }
}

async fn send(http: &reqwest::Client, d: Delivery) {
    if let Err(refused) = reqwest::Url::parse(&d.url)
        .map_err(|e| e.to_string())
        .and_then(|url| crate::outbound::policy().check_url(&url))
    {
        tracing::warn!(host = host(&d.url), %refused, "event webhook not called");
        return;
    }
    let sent = http
        .post(&d.url)
        .timeout(d.timeout)
        .json(&d.body)
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => {}
        // The URL may hold a secret token: log the host only.
        Ok(r) => {
            tracing::warn!(host = host(&d.url), status = %r.status(), "event webhook refused the event")
        }
        Err(e) => {
            tracing::warn!(host = host(&d.url), error = %e.without_url(), "event webhook unreachable")
        }
    }
}

fn host(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(hooks: Value) -> Canary {
        serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"interval": "1m", "threshold": 5, "iterations": 2, "webhooks": hooks}},
            "status": {"phase": "Progressing"}
        }))
        .unwrap()
    }

    #[test]
    fn the_canarys_event_hooks_get_flaggers_payload() {
        let c = canary(json!([
            {"name": "load", "type": "rollout", "url": "http://tester/"},
            {"name": "events", "type": "event", "url": "http://events/", "timeout": "5s",
             "metadata": {"team": "web", "eventType": "not this"}}
        ]));
        let d = deliveries(
            &c,
            Some("http://global/"),
            EventType::Warning,
            "Halt",
            1_700_000_000_123,
        );
        assert_eq!(d.len(), 1, "only the event hook, not the global one: {d:?}");
        assert_eq!(d[0].url, "http://events/");
        assert_eq!(d[0].timeout, Duration::from_secs(5));
        assert_eq!(
            d[0].body,
            json!({"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": "",
                "metadata": {"team": "web", "eventMessage": "Halt", "eventType": "Warning",
                    "timestamp": "1700000000123"}})
        );
    }

    #[test]
    fn without_event_hooks_the_global_one_gets_it() {
        let c = canary(json!([{"name": "load", "url": "http://tester/"}]));
        let d = deliveries(&c, Some("http://global/"), EventType::Normal, "Advance", 5);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].url, "http://global/");
        assert_eq!(d[0].timeout, DEFAULT_TIMEOUT);
        assert_eq!(d[0].body["metadata"]["eventType"], "Normal");
        assert!(deliveries(&c, None, EventType::Normal, "Advance", 5).is_empty());
    }

    #[tokio::test]
    async fn a_hung_receiver_delays_only_its_own_events() {
        use serin_stack::testing::fake_http::{FakeServer, Response};
        let hung = FakeServer::start(|_| {
            Response::text(200, "text/plain", "").delayed(Duration::from_secs(30))
        })
        .await;
        let fast = FakeServer::start(|_| Response::text(200, "text/plain", "")).await;
        let http = crate::outbound::client_builder().build().unwrap();
        let hooks = EventHooks::start(http, None);
        let slow_canary = canary(json!([{"name": "e", "type": "event", "url": hung.url}]));
        let fast_canary = canary(json!([{"name": "e", "type": "event", "url": fast.url}]));
        for i in 0..3 {
            hooks.send(&slow_canary, EventType::Normal, &format!("slow {i}"));
        }
        for i in 0..3 {
            hooks.send(&fast_canary, EventType::Normal, &format!("fast {i}"));
        }
        let started = std::time::Instant::now();
        while fast.requests().len() < 3 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the fast receiver waited behind the hung one"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let order: Vec<String> = fast
            .requests()
            .iter()
            .map(|r| {
                serde_json::from_str::<Value>(&r.body).unwrap()["metadata"]["eventMessage"]
                    .to_string()
            })
            .collect();
        assert_eq!(order, ["\"fast 0\"", "\"fast 1\"", "\"fast 2\""]);
        assert_eq!(
            hung.requests().len(),
            1,
            "one at a time to the hung receiver"
        );
    }

    #[test]
    fn destinations_are_origins() {
        assert_eq!(destination("http://a:80/x?t=1"), "http://a");
        assert_eq!(destination("https://a:8443/y"), "https://a:8443");
        assert_ne!(destination("http://a/"), destination("http://b/"));
    }
}
