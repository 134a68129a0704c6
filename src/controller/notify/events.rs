//! Kubernetes events on Canaries, as Flagger records them: reason `Synced`, the message is the
//! information. kube-runtime's `Recorder` folds events by reason, which would turn every
//! message of a release into one event; serin folds only repeats of the same message (bumping
//! `count`), so `kubectl describe canary` reads like Flagger's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use serin_core::EventType;
use tokio::sync::Mutex;

use crate::api::Canary;
use crate::controller::caches::lean::Meta;
use crate::controller::notify::event_webhooks::EventHooks;

/// Flagger's reason for every canary event; existing event filters key on it.
pub const REASON: &str = "Synced";
/// `source.component` and `reportingComponent` of serin's events.
pub const COMPONENT: &str = "serin";

/// Repeats of a message on the same Canary fold into one event for this long.
const FOLD_FOR: chrono::TimeDelta = chrono::TimeDelta::minutes(10);
/// How often entries past [`FOLD_FOR`] are dropped.
const FORGET_EVERY_SECONDS: i64 = 60;

/// A message recorded on a Canary (its uid, type and text), by a 64-bit fingerprint: the
/// fold table holds an entry per message of every Canary for [`FOLD_FOR`], and with the
/// strings themselves it was about 3 KiB per Canary after a release. Two messages that
/// collide (odds about 10^-10 for a hundred thousand messages in ten minutes) would share
/// an event's count, nothing worse.
type Key = u64;

fn key(uid: &str, warning: bool, message: &str) -> Key {
    fingerprint((uid, warning, message))
}

/// A fixed-key 64-bit hash: the same in every run, so nothing depends on a process's seed.
fn fingerprint(value: impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::hash::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The event a message was first recorded as (in the Canary's namespace).
#[derive(Clone, Debug)]
struct Seen {
    name: Box<str>,
    count: i32,
    first: chrono::DateTime<Utc>,
    /// Fingerprints of the names of the transitions' events counted in it (at most
    /// [`NAMES_KEPT`]): the outbox delivering one again must not count it twice.
    named: Vec<u64>,
}

fn name_print(name: &str) -> u64 {
    fingerprint(name)
}

/// How many transition events' names a folded event remembers.
const NAMES_KEPT: usize = 16;

/// What to do with an event whose message was recorded lately.
enum Fold {
    /// Count it in the existing event (name, count).
    Count(Box<str>, i32),
    /// This transition's event is counted in it already.
    Counted,
}

/// Publishes events; shared by every reconcile.
pub struct Events {
    client: Client,
    seen: Mutex<HashMap<Key, Seen>>,
    /// When old entries of `seen` were last dropped (Unix seconds).
    forgotten: AtomicI64,
    hooks: Option<EventHooks>,
    clock: crate::clock::Clock,
}

impl Events {
    /// `hooks`: where events are also POSTed (Flagger's event webhooks); `None` in tests.
    pub fn new(client: Client, hooks: Option<EventHooks>) -> Events {
        Events {
            client,
            seen: Mutex::new(HashMap::new()),
            forgotten: AtomicI64::new(0),
            hooks,
            clock: crate::clock::Clock::System,
        }
    }

    /// Takes the events' times from `clock` instead of the system's.
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Events {
        self.clock = clock;
        self
    }

    /// Records an event on `canary` and logs it. Failures are logged, never returned: an
    /// event that cannot be written must not stop a release.
    pub async fn publish(&self, canary: &Canary, kind: EventType, message: &str) {
        self.publish_as(canary, kind, message, None).await;
    }

    /// As [`Events::publish`], naming a new event `name`: an event of that name already
    /// recorded (by this process before a restart) is not recorded again. False when the
    /// event could not be written.
    pub async fn publish_named(
        &self,
        canary: &Canary,
        kind: EventType,
        message: &str,
        name: &str,
    ) -> bool {
        self.publish_as(canary, kind, message, Some(name)).await
    }

    async fn publish_as(
        &self,
        canary: &Canary,
        kind: EventType,
        message: &str,
        name: Option<&str>,
    ) -> bool {
        let warning = kind == EventType::Warning;
        if warning {
            tracing::warn!(event = message, "canary event");
        } else {
            tracing::info!(event = message, "canary event");
        }
        if let Some(hooks) = &self.hooks {
            hooks.send(canary, kind, message);
        }
        match self.write(canary, warning, message, name).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not record event");
                false
            }
        }
    }

    async fn write(
        &self,
        canary: &Canary,
        warning: bool,
        message: &str,
        name: Option<&str>,
    ) -> kube::Result<()> {
        let now = self.clock.now();
        let key = key(
            canary.uid().as_deref().unwrap_or_default(),
            warning,
            message,
        );
        let counted = match self.fold(key, name, now).await {
            Some(Fold::Counted) => true,
            Some(Fold::Count(name, count)) => {
                let namespace = canary.namespace().unwrap_or_default();
                self.count(&name, &namespace, count, now).await?
            }
            None => false,
        };
        if counted {
            return Ok(());
        }
        let named = name.is_some();
        let name = self.create(canary, warning, message, name, now).await?;
        let named = if named {
            vec![name_print(&name)]
        } else {
            Vec::new()
        };
        let seen = Seen {
            name: name.into_boxed_str(),
            count: 1,
            first: now,
            named,
        };
        self.seen.lock().await.insert(key, seen);
        Ok(())
    }

    /// Folds the event into the same one recorded within [`FOLD_FOR`], if any. The lock only
    /// guards the fold table; the API calls run outside it so that the events of many
    /// Canaries are written concurrently. A named event (a transition's, from the outbox)
    /// folds too, as client-go's recorder folds Flagger's, but delivering it again must not
    /// count it twice.
    async fn fold(&self, key: Key, name: Option<&str>, now: DateTime<Utc>) -> Option<Fold> {
        let mut seen = self.seen.lock().await;
        // Old entries are dropped once a minute, not on every event (thousands of Canaries
        // keep thousands of entries); one past its time does not fold.
        let last = self.forgotten.load(Ordering::Relaxed);
        if now.timestamp() - last >= FORGET_EVERY_SECONDS {
            self.forgotten.store(now.timestamp(), Ordering::Relaxed);
            seen.retain(|_, s| now - s.first < FOLD_FOR);
        }
        seen.get_mut(&key)
            .filter(|s| now - s.first < FOLD_FOR)
            .map(|s| fold(s, name))
    }

    /// Sets the folded event's count: `false` when the event is gone (the cluster's event TTL
    /// deleted it) and a new one is to be written.
    async fn count(
        &self,
        name: &str,
        namespace: &str,
        count: i32,
        now: DateTime<Utc>,
    ) -> kube::Result<bool> {
        // The answer is not read (see `lean::Meta`).
        let api: Api<Meta<Event>> = Api::namespaced(self.client.clone(), namespace);
        let patch = json!({"count": count, "lastTimestamp": now});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates the event (`name`, or one derived from the Canary's and the time) in the
    /// Canary's namespace: its name.
    async fn create(
        &self,
        canary: &Canary,
        warning: bool,
        message: &str,
        name: Option<&str>,
        now: DateTime<Utc>,
    ) -> kube::Result<String> {
        let namespace = canary.namespace().unwrap_or_default();
        let name = name.map(String::from).unwrap_or_else(|| {
            format!(
                "{}.{:x}",
                canary.name_any(),
                crate::controller::runtime::ids::unique_nanos(now)
            )
        });
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: reference(canary),
            reason: Some(REASON.into()),
            message: Some(message.to_string()),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            count: Some(1),
            first_timestamp: Some(Time(timestamp(now))),
            last_timestamp: Some(Time(timestamp(now))),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: None,
            }),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(COMPONENT.into()),
            ..Event::default()
        };
        // The answer is not read: its metadata only (see `lean::Meta`). `Api::create` would
        // decode the answer as the type it sends, so the request is made here.
        let body = serde_json::to_vec(&event).map_err(kube::Error::SerdeError)?;
        let request = kube::core::Request::new(Event::url_path(&(), Some(&namespace)))
            .create(&PostParams::default(), body)
            .map_err(kube::Error::BuildRequest)?;
        match self.client.request::<Meta<Event>>(request).await {
            // Recorded before a restart: once is enough.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            other => {
                other?;
            }
        }
        Ok(name)
    }
}

/// Counts one more of `seen`'s message in it, unless it is the transition event `name`
/// counted already.
fn fold(seen: &mut Seen, name: Option<&str>) -> Fold {
    if let Some(name) = name {
        let print = name_print(name);
        if *seen.name == *name || seen.named.contains(&print) {
            return Fold::Counted;
        }
        if seen.named.len() == NAMES_KEPT {
            seen.named.remove(0);
        }
        seen.named.push(print);
    }
    seen.count += 1;
    Fold::Count(seen.name.clone(), seen.count)
}

fn reference(canary: &Canary) -> ObjectReference {
    ObjectReference {
        api_version: Some(Canary::api_version(&()).into_owned()),
        kind: Some(Canary::kind(&()).into_owned()),
        name: canary.metadata.name.clone(),
        namespace: canary.metadata.namespace.clone(),
        uid: canary.metadata.uid.clone(),
        resource_version: canary.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

fn timestamp(at: DateTime<Utc>) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::from_microsecond(at.timestamp_micros())
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(name: &str) -> Seen {
        Seen {
            name: name.into(),
            count: 1,
            first: Utc::now(),
            named: vec![name_print(name)],
        }
    }

    #[test]
    fn a_repeated_message_counts_once_per_transition_delivered() {
        let mut s = seen("podinfo.a");
        assert!(matches!(fold(&mut s, None), Fold::Count(_, 2)));
        // Another transition with the same message: counted in the first event.
        match fold(&mut s, Some("podinfo.b")) {
            Fold::Count(name, count) => assert_eq!((&*name, count), ("podinfo.a", 3)),
            Fold::Counted => panic!("a new transition was not counted"),
        }
        // The outbox delivering either transition again counts nothing.
        assert!(matches!(fold(&mut s, Some("podinfo.b")), Fold::Counted));
        assert!(matches!(fold(&mut s, Some("podinfo.a")), Fold::Counted));
        assert_eq!(s.count, 3);
    }

    #[test]
    fn a_message_folds_only_with_itself_on_the_same_canary_and_type() {
        let k = key("uid-1", false, "Advance podinfo.test canary weight 20");
        assert_eq!(
            k,
            key("uid-1", false, "Advance podinfo.test canary weight 20")
        );
        assert_ne!(
            k,
            key("uid-2", false, "Advance podinfo.test canary weight 20")
        );
        assert_ne!(
            k,
            key("uid-1", true, "Advance podinfo.test canary weight 20")
        );
        assert_ne!(
            k,
            key("uid-1", false, "Advance podinfo.test canary weight 40")
        );
        // The parts are told apart, not run together.
        assert_ne!(key("ab", false, "c"), key("a", false, "bc"));
    }

    #[test]
    fn the_names_remembered_are_bounded() {
        let mut s = seen("first");
        for i in 0..100 {
            fold(&mut s, Some(&format!("t{i}")));
        }
        assert_eq!(s.named.len(), NAMES_KEPT);
        assert_eq!(s.count, 101);
    }
}
