//! Flagger's event webhooks: every event serin records on a Canary is also POSTed to the
//! Canary's `type: event` webhooks or, when it has none, to the global `--event-webhook`.
//! The body is the webhook payload (`name`, `namespace`, `phase`, `checksum`) whose
//! `metadata` carries `eventMessage`, `eventType` (`Normal` or `Warning`) and `timestamp`
//! (Unix milliseconds, as a string), beside the hook's own metadata keys.
//!
//! Delivery is off the reconcile path: events queue for one sender task, in the order they
//! happened; a slow or failing receiver delays only the deliveries behind it, never a step.
//! Failures are logged (as Flagger does) and the queue is bounded: when it is full, an event
//! is dropped with a warning rather than holding the controller.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use serin_core::EventType;
use tokio::sync::mpsc;

use crate::api::{Canary, HookType, parse_duration};

/// Flagger's timeout for event webhooks without one (and for the global one).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries waiting for the sender before new ones are dropped.
const QUEUE: usize = 1024;

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
        tokio::spawn(deliver(http, rx));
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
                .min(super::webhooks::MAX_CALL_TIME),
            body: body(h.metadata.as_ref()),
        })
        .collect()
}

async fn deliver(http: reqwest::Client, mut rx: mpsc::Receiver<Delivery>) {
    while let Some(d) = rx.recv().await {
        if let Err(refused) = reqwest::Url::parse(&d.url)
            .map_err(|e| e.to_string())
            .and_then(|url| crate::outbound::policy().check_url(&url))
        {
            tracing::warn!(host = host(&d.url), %refused, "event webhook not called");
            continue;
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
}
