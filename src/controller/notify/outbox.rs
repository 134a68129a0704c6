//! The outbox of events and alerts. A transition's events and alerts are written into the
//! Canary's status together with the transition (`status.announcements`: an [`Announcement`]
//! per transition id), then delivered, then removed from the status. So a controller killed
//! between the status write and the delivery delivers them after its restart, and event
//! names derive from the transition id, so an event delivered twice is recorded once. An
//! alert is sent again only if the controller dies after sending it and before removing it
//! from the status (the time of one status patch); it is never lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use serin_core::{Effect, EventType, Phase, Plan, Severity, Step};

use crate::api::canary::{Announcement, PendingAlert, PendingEvent};
use crate::api::{Canary, CanaryStatus};
use crate::controller::context::{Context, WrittenStatuses};
use crate::controller::notify::alerts;
use crate::controller::runtime::ids;

/// Transitions whose announcements a status keeps at most; older ones are dropped (they
/// could not be delivered for that many steps).
pub const MAX_PENDING: usize = 16;
/// How long this process remembers a delivered transition.
const REMEMBER: Duration = Duration::from_secs(3600);
/// How often the transitions older than [`REMEMBER`] are forgotten. Not on every claim: with
/// thousands of Canaries the map holds tens of thousands of transitions, and a pass over
/// them per claim made every step's cost grow with the number of Canaries.
const FORGET_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Delivering,
    /// The alerts are sent; the events may still be on their way.
    AlertsSent,
    /// An event could not be written: the next reconcile delivers the events again (the
    /// alerts are sent already).
    Retry,
    Delivered,
}

/// The transitions (`uid/id`) this process is delivering or has delivered: each is
/// delivered once per process, and a delivered one is left out of the next status write
/// even when removing it from the status failed. Also bounds the removals in flight.
#[derive(Clone, Debug)]
pub struct Deliveries {
    states: Arc<Mutex<States>>,
    /// The outbox's client is not rate-limited; without a bound, thousands of Canaries
    /// stepping together would open a connection each for their removals.
    removals: Arc<tokio::sync::Semaphore>,
}

/// Each transition's state and when it was set.
#[derive(Debug)]
struct States {
    map: HashMap<String, (State, Instant)>,
    forgotten: Instant,
}

impl Default for States {
    fn default() -> Self {
        States {
            map: HashMap::new(),
            forgotten: Instant::now(),
        }
    }
}

impl States {
    fn forget_old(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.forgotten) < FORGET_EVERY {
            return;
        }
        self.map
            .retain(|_, (_, at)| now.duration_since(*at) < REMEMBER);
        self.forgotten = now;
    }
}

impl Default for Deliveries {
    fn default() -> Self {
        Deliveries {
            states: Arc::default(),
            removals: Arc::new(tokio::sync::Semaphore::new(REMOVALS_IN_FLIGHT)),
        }
    }
}

impl Deliveries {
    /// Takes `key` for delivery: `Some(whether its alerts are still to send)`, or `None`
    /// when it is being or has been delivered already.
    fn claim(&self, key: &str) -> Option<bool> {
        let mut states = self.states.lock().ok()?;
        states.forget_old();
        let map = &mut states.map;
        let send_alerts = match map.get(key) {
            None => true,
            Some((State::Retry, _)) => false,
            Some(_) => return None,
        };
        map.insert(key.to_string(), (State::Delivering, Instant::now()));
        Some(send_alerts)
    }

    fn set(&self, key: &str, state: State) {
        if let Ok(mut states) = self.states.lock() {
            states.map.insert(key.to_string(), (state, Instant::now()));
        }
    }

    fn delivered(&self, key: &str) {
        self.set(key, State::Delivered);
    }

    fn state(&self, key: &str) -> Option<State> {
        self.states.lock().ok()?.map.get(key).map(|(s, _)| *s)
    }
}

/// A transition id: the step's time in hexadecimal nanoseconds, fixed width, so ids sort by
/// time and are valid in an event's name.
pub fn transition_id(now: DateTime<Utc>) -> String {
    format!("{:016x}", now.timestamp_nanos_opt().unwrap_or_default())
}

/// The id of a transition happening `now` (see [`ids::unique_nanos`]): two transitions of one
/// Canary in the same tick of the clock would otherwise share their events' names, and the
/// second's events would be taken for the first's, delivered already.
pub fn next_transition_id(now: DateTime<Utc>) -> String {
    format!("{:016x}", ids::unique_nanos(now))
}

/// Whether the step changes the release (phase, weight, iterations, failed checks, ...):
/// only a transition's events and alerts go through the status. A step that changes
/// nothing repeats a wait, and its events fold into the first one's count.
pub fn is_transition(step: &Step, before: &CanaryStatus) -> bool {
    step.status != before.engine()
}

/// The step's events and alerts, if it has any.
pub fn of_step(step: &Step) -> Option<Announcement> {
    let (mut events, mut alerts) = (Vec::new(), Vec::new());
    for effect in &step.effects {
        match effect {
            Effect::Event { kind, message } => events.push(PendingEvent {
                type_: event_type_name(*kind).into(),
                message: message.clone(),
            }),
            Effect::Alert { severity, message } => alerts.push(PendingAlert {
                severity: severity_name(*severity).into(),
                message: message.clone(),
            }),
            _ => {}
        }
    }
    let a = Announcement {
        events: non_empty(events),
        alerts: non_empty(alerts),
    };
    (a.events.is_some() || a.alerts.is_some()).then_some(a)
}

/// Adds `new` under `id` to the status's announcements, leaving out what this process has
/// delivered (whole transitions, or their alerts) and keeping the newest [`MAX_PENDING`]:
/// a status computed from a copy older than a removal must not bring it back.
pub fn record(
    status: &mut CanaryStatus,
    uid: &str,
    deliveries: &Deliveries,
    id: String,
    new: Option<Announcement>,
) {
    let mut pending: BTreeMap<String, Announcement> =
        status.announcements.take().unwrap_or_default();
    pending.retain(|id, a| match deliveries.state(&key(uid, id)) {
        Some(State::Delivered) => false,
        Some(State::AlertsSent | State::Retry) => {
            a.alerts = None;
            a.events.is_some()
        }
        _ => a.events.is_some() || a.alerts.is_some(),
    });
    if let Some(new) = new {
        pending.insert(id, new);
    }
    while pending.len() > MAX_PENDING {
        if let Some((dropped, _)) = pending.pop_first() {
            tracing::warn!(transition = dropped, "undelivered announcements dropped");
        }
    }
    status.announcements = (!pending.is_empty()).then_some(pending);
}

/// Drops what partial removals leave behind (a transition with neither events nor alerts, an
/// empty map): nothing pending, as when absent. Left in the status read back, it would differ
/// from every status computed from it (which leaves it out), and each reconcile of an idle
/// Canary would write the status again.
pub fn tidy(status: &mut CanaryStatus) {
    if let Some(pending) = &mut status.announcements {
        pending.retain(|_, a| a.events.is_some() || a.alerts.is_some());
        if pending.is_empty() {
            status.announcements = None;
        }
    }
}

/// Whether `next` differs from `current` by more than delivered transitions left out: those
/// alone are not worth a status write (an API request per step) while the release writes its
/// status again soon, which drops them. A Canary at rest writes none: left there (its
/// removal failed, or the process that delivered it died first), a delivered transition
/// would stay in the status for good, so dropping it is worth one write.
pub fn worth_writing(next: &CanaryStatus, current: &CanaryStatus) -> bool {
    let empty = BTreeMap::new();
    let (n, c) = (
        next.announcements.as_ref().unwrap_or(&empty),
        current.announcements.as_ref().unwrap_or(&empty),
    );
    let only_dropped = n.iter().all(|(id, a)| c.get(id) == Some(a));
    if !only_dropped {
        return true;
    }
    let strip = |s: &CanaryStatus| CanaryStatus {
        announcements: None,
        ..s.clone()
    };
    let dropped = n.len() != c.len();
    strip(next) != strip(current) || (dropped && !writes_again_soon(next.phase))
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn key(uid: &str, id: &str) -> String {
    format!("{uid}/{id}")
}

/// Delivers the written status's announcements not delivered by this process yet. Alerts
/// first, as they are the part that cannot be sent twice without being seen twice; then the
/// events (named after the transition, so recording one again is a no-op); once the alerts
/// are sent (or given up), one patch in the background removes the whole transition, or
/// only its alerts when an event could not be written (the events are retried).
pub async fn deliver(canary: &Canary, ctx: &Context, plan: &Plan, status: &CanaryStatus) {
    let Some(pending) = &status.announcements else {
        return;
    };
    let uid = canary.uid().unwrap_or_default();
    let api: Api<Canary> =
        Api::namespaced(ctx.outbox.clone(), &canary.namespace().unwrap_or_default());
    for (id, announcement) in pending {
        let key = key(&uid, id);
        let Some(send_alerts) = ctx.deliveries.claim(&key) else {
            continue;
        };
        let sent: Vec<_> = announcement
            .alerts
            .iter()
            .flatten()
            .filter(|_| send_alerts)
            .map(|a| send_alert(canary, ctx, plan, status, a))
            .collect();
        let mut recorded = true;
        for (i, event) in announcement.events.iter().flatten().enumerate() {
            let name = format!("{}.{id}.{i}", canary.name_any());
            let kind = match event.type_.as_str() {
                "Warning" => EventType::Warning,
                _ => EventType::Normal,
            };
            recorded &= ctx
                .events
                .publish_named(canary, kind, &event.message, &name)
                .await;
        }
        let removal = Removal {
            api: api.clone(),
            name: canary.name_any(),
            uid: uid.clone(),
            id: id.clone(),
            written: ctx.written.clone(),
        };
        let deliveries = ctx.deliveries.clone();
        let left_to_next_write = announcement.alerts.is_none() && writes_again_soon(status.phase);
        tokio::spawn(async move {
            let had_alerts = !sent.is_empty();
            for alert in sent {
                // An error only means the alert was dropped or given up: it is done.
                let _ = alert.await;
            }
            if recorded {
                // One removal for the whole transition, alerts included (while it is in
                // flight a status write keeps the events, not the sent alerts); none for a
                // transition without alerts while the next step's status write (one interval
                // away) leaves it out anyway: delivered again after a restart, its events
                // already exist (their names say so) and nothing is seen twice.
                if !left_to_next_write {
                    deliveries.set(&key, State::AlertsSent);
                    removal.run(&deliveries.removals, None).await;
                }
                deliveries.delivered(&key);
            } else {
                // The events are retried; the alerts are done and must not be sent again.
                deliveries.set(&key, State::Retry);
                if had_alerts {
                    removal.run(&deliveries.removals, Some("alerts")).await;
                }
            }
        });
    }
}

/// Phases in which the status is written again within an interval (the next step), so a
/// delivered transition need not be removed on its own.
fn writes_again_soon(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Progressing | Phase::Promoting | Phase::Finalising
    )
}

fn send_alert(
    canary: &Canary,
    ctx: &Context,
    plan: &Plan,
    status: &CanaryStatus,
    pending: &PendingAlert,
) -> tokio::sync::oneshot::Receiver<()> {
    let alert = alerts::content::alert(
        canary,
        plan,
        &status.engine(),
        status.metrics.as_deref(),
        ctx.config.cluster_name.as_deref(),
        severity(&pending.severity),
        &pending.message,
    );
    let routes = canary
        .spec
        .analysis()
        .map(|a| a.alerts())
        .unwrap_or_default();
    ctx.alerts.send_tracked(alert, routes)
}

/// The removal of one delivered transition from a Canary's status.
struct Removal {
    api: Api<Canary>,
    name: String,
    uid: String,
    id: String,
    /// The removal changes the Canary's resourceVersion: recorded, so the next status write
    /// is not decided on (and refused for) the copy before it.
    written: WrittenStatuses,
}

impl Removal {
    /// Removes the transition (or just its `part`) from the status. A JSON patch `remove`:
    /// unlike a merge patch it cannot bring back an entry another process removed meanwhile
    /// (it fails instead, which means done). Retried a few times: a transition left in the
    /// status of a Canary that writes no more status would be delivered again after a
    /// restart.
    async fn run(&self, removals: &tokio::sync::Semaphore, part: Option<&str>) {
        let id = self.id.as_str();
        let path = match part {
            Some(part) => format!("/status/announcements/{id}/{part}"),
            None => format!("/status/announcements/{id}"),
        };
        let patch: json_patch::Patch =
            match serde_json::from_value(json!([{"op": "remove", "path": path}])) {
                Ok(patch) => patch,
                Err(e) => {
                    tracing::warn!(error = %e, transition = id, "invalid removal of announcements");
                    return;
                }
            };
        for wait in REMOVE_RETRIES {
            let Ok(slot) = removals.acquire().await else {
                return;
            };
            let removed = self.remove(&patch).await;
            drop(slot);
            match removed {
                Ok(()) => return,
                // The Canary, or the entry, is gone already.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 422 => return,
                Err(e) => {
                    tracing::debug!(error = %e, transition = id, "could not remove delivered announcements; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        // The next status write leaves it out (it is delivered); only a restart before then
        // would deliver it again.
        tracing::warn!(
            transition = id,
            "could not remove delivered announcements from the status"
        );
    }

    /// One attempt, in this Canary's turn among serin's status writers (see `writing`): the
    /// version it produces is recorded before a step's write may follow.
    async fn remove(&self, patch: &json_patch::Patch) -> kube::Result<()> {
        let _turn = self.written.writing(&self.uid).await;
        let canary = self
            .api
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Json::<()>(patch.clone()),
            )
            .await?;
        let version = canary.resource_version().and_then(|v| v.parse().ok());
        if let (Some(version), Some(status)) = (version, canary.status) {
            self.written.record(&self.uid, version, status);
        }
        Ok(())
    }
}

/// Removals in flight at once.
const REMOVALS_IN_FLIGHT: usize = 16;

/// Waits between attempts to remove a delivered transition from the status.
const REMOVE_RETRIES: [Duration; 5] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

fn event_type_name(kind: EventType) -> &'static str {
    match kind {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warn => "warn",
        Severity::Error => "error",
    }
}

fn severity(name: &str) -> Severity {
    match name {
        "error" => Severity::Error,
        "warn" => Severity::Warn,
        _ => Severity::Info,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serin_core::Status;

    fn step(effects: Vec<Effect>) -> Step {
        Step {
            status: Status::default(),
            effects,
            requeue: chrono::TimeDelta::seconds(1),
            command_done: false,
            late: None,
        }
    }

    fn announcement(message: &str) -> Announcement {
        Announcement {
            events: Some(vec![PendingEvent {
                type_: "Normal".into(),
                message: message.into(),
            }]),
            alerts: None,
        }
    }

    #[test]
    fn a_step_announces_its_events_and_alerts_and_nothing_else() {
        let effects = vec![
            Effect::Event {
                kind: EventType::Warning,
                message: "Canary failed! Scaling down podinfo.test".into(),
            },
            Effect::ScaleTargetToZero,
            Effect::Alert {
                severity: Severity::Error,
                message: "Failed checks threshold reached 2".into(),
            },
        ];
        let a = of_step(&step(effects)).unwrap();
        let (events, alerts) = (a.events.unwrap(), a.alerts.unwrap());
        assert_eq!(events[0].type_, "Warning");
        assert_eq!(alerts[0].severity, "error");
        assert_eq!(severity(&alerts[0].severity), Severity::Error);
        assert_eq!(of_step(&step(vec![Effect::ScaleTargetToZero])), None);
    }

    #[test]
    fn delivered_transitions_leave_the_status_and_at_most_sixteen_stay() {
        let deliveries = Deliveries::default();
        let mut status = CanaryStatus::default();
        for i in 0..20u32 {
            let id = transition_id(DateTime::from_timestamp(i64::from(i), 0).unwrap());
            record(&mut status, "u", &deliveries, id, Some(announcement("x")));
        }
        let pending = status.announcements.clone().unwrap();
        assert_eq!(pending.len(), MAX_PENDING);
        // The oldest went first.
        let first = transition_id(DateTime::from_timestamp(4, 0).unwrap());
        assert_eq!(pending.keys().next(), Some(&first));

        for id in pending.keys() {
            assert_eq!(deliveries.claim(&key("u", id)), Some(true));
            assert_eq!(deliveries.claim(&key("u", id)), None, "claimed twice");
            deliveries.delivered(&key("u", id));
        }
        let last = transition_id(DateTime::from_timestamp(99, 0).unwrap());
        record(&mut status, "u", &deliveries, last.clone(), None);
        assert_eq!(status.announcements, None);
        record(
            &mut status,
            "u",
            &deliveries,
            last.clone(),
            Some(announcement("y")),
        );
        assert_eq!(
            status.announcements.unwrap().keys().collect::<Vec<_>>(),
            [&last]
        );
    }

    #[test]
    fn a_transition_whose_alerts_are_sent_keeps_only_its_events() {
        let deliveries = Deliveries::default();
        let mut status = CanaryStatus::default();
        let mut a = announcement("Canary failed!");
        a.alerts = Some(vec![PendingAlert {
            severity: "error".into(),
            message: "Failed checks threshold reached 2".into(),
        }]);
        record(&mut status, "u", &deliveries, "01".into(), Some(a));
        assert_eq!(deliveries.claim(&key("u", "01")), Some(true));
        deliveries.set(&key("u", "01"), State::AlertsSent);
        // A status computed from a copy written before the alerts were removed.
        record(&mut status, "u", &deliveries, "02".into(), None);
        let pending = status.announcements.unwrap();
        assert_eq!(pending["01"].alerts, None, "{pending:?}");
        assert_eq!(pending["01"].events.as_ref().map(Vec::len), Some(1));
        // An event failed: claimed again, for the events only.
        deliveries.set(&key("u", "01"), State::Retry);
        assert_eq!(deliveries.claim(&key("u", "01")), Some(false));
        assert_eq!(deliveries.claim(&key("u", "01")), None);
    }

    #[test]
    fn transitions_in_one_tick_of_the_clock_get_distinct_ids_in_order() {
        let now = DateTime::from_timestamp(4_000_000_000, 0).unwrap();
        let (a, b) = (next_transition_id(now), next_transition_id(now));
        assert!(a < b, "{a} then {b}");
        let later = now + chrono::TimeDelta::seconds(1);
        assert_eq!(next_transition_id(later), transition_id(later));
    }

    #[test]
    fn transition_ids_sort_by_time() {
        let a = transition_id(DateTime::from_timestamp(1, 999).unwrap());
        let b = transition_id(DateTime::from_timestamp(2, 0).unwrap());
        assert!(a < b && a.len() == b.len(), "{a} {b}");
    }

    #[test]
    fn tidy_drops_emptied_transitions_and_an_empty_map() {
        let mut status = CanaryStatus {
            announcements: Some(BTreeMap::from([
                ("a".to_string(), Announcement::default()),
                ("b".to_string(), announcement("kept")),
            ])),
            ..CanaryStatus::default()
        };
        tidy(&mut status);
        let kept: Vec<_> = status
            .announcements
            .iter()
            .flatten()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(kept, ["b"]);

        let mut emptied = CanaryStatus {
            announcements: Some(BTreeMap::from([("a".to_string(), Announcement::default())])),
            ..CanaryStatus::default()
        };
        tidy(&mut emptied);
        assert_eq!(emptied.announcements, None);
        let mut empty = CanaryStatus {
            announcements: Some(BTreeMap::new()),
            ..CanaryStatus::default()
        };
        tidy(&mut empty);
        assert_eq!(empty.announcements, None);
    }

    #[test]
    fn dropping_delivered_transitions_alone_is_not_worth_a_write() {
        let two = Some(BTreeMap::from([
            ("a".to_string(), announcement("first")),
            ("b".to_string(), announcement("second")),
        ]));
        let current = CanaryStatus {
            phase: Phase::Progressing,
            announcements: two.clone(),
            ..CanaryStatus::default()
        };
        let dropped_one = CanaryStatus {
            announcements: Some(BTreeMap::from([("b".to_string(), announcement("second"))])),
            ..current.clone()
        };
        assert!(!worth_writing(&dropped_one, &current));
        let dropped_all = CanaryStatus {
            announcements: None,
            ..current.clone()
        };
        assert!(!worth_writing(&dropped_all, &current));

        let added = CanaryStatus {
            announcements: Some(BTreeMap::from([("c".to_string(), announcement("new"))])),
            ..current.clone()
        };
        assert!(worth_writing(&added, &current), "a new transition");
        let changed = CanaryStatus {
            iterations: 1,
            ..dropped_one.clone()
        };
        assert!(worth_writing(&changed, &current), "anything else changed");
        let entry_changed = CanaryStatus {
            announcements: Some(BTreeMap::from([
                ("a".to_string(), announcement("first")),
                ("b".to_string(), announcement("second, changed")),
            ])),
            ..current.clone()
        };
        assert!(
            worth_writing(&entry_changed, &current),
            "an entry that changed is written"
        );

        // At rest no later write would drop them: dropping is worth a write then, and
        // nothing is worth one once they are gone.
        for phase in [Phase::Succeeded, Phase::Failed, Phase::Initialized] {
            let at_rest = CanaryStatus {
                phase,
                ..current.clone()
            };
            let dropped = CanaryStatus {
                announcements: None,
                ..at_rest.clone()
            };
            assert!(worth_writing(&dropped, &at_rest), "{phase}");
            assert!(!worth_writing(&dropped, &dropped), "{phase}");
        }
    }
}
