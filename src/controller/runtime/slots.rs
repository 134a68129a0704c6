//! Release slots: `--max-progressing` (in the cluster, or in what this controller watches) and
//! `--max-progressing-per-namespace`. A release that would start while as many others are
//! progressing waits in `Waiting` with `status.waitingFor: concurrency`, and the waiting
//! releases take free slots in the order they began to wait: one team's mass release cannot
//! starve the others, and a cluster-wide change (a shared ConfigMap) is rolled out a few
//! releases at a time.
//!
//! The count comes from the Canary cache, corrected by the statuses this process wrote last
//! (the cache may not show them yet) and by the slots it granted in the last moments (a
//! release granted a slot is progressing as soon as its status is written). A release takes
//! its slot when the engine starts it (after any confirm-rollout approval, so a release
//! waiting for a person holds none); the check and the grant happen under one lock, so two
//! reconciles running at once cannot both take the last slot.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::Stream;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use serin_core::{Command, Phase, Status, WaitingFor};
use tokio::sync::mpsc;

use crate::api::Canary;
use crate::controller::context::Context;

/// How long a granted slot counts before the status must show the release progressing (it
/// is written in the same reconcile; a write that failed gives the slot back after this).
const GRANT_HOLDS: Duration = Duration::from_secs(30);

/// The limits: 0 means none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub progressing: u32,
    pub per_namespace: u32,
}

impl Limits {
    fn any(self) -> bool {
        self.progressing > 0 || self.per_namespace > 0
    }
}

/// Releases woken at once when a slot frees, at most (more wait for their interval).
const WAKES: usize = 1024;

/// Slots granted by this process, by Canary uid: (namespace, when); and where to send the
/// releases to look at again when one frees.
#[derive(Debug, Default)]
pub struct Slots {
    granted: Mutex<HashMap<String, (String, Instant)>>,
    wake: Mutex<Option<mpsc::Sender<ObjectRef<Canary>>>>,
}

impl Slots {
    /// The releases waiting for a slot to look at again now that one is free (see
    /// [`freed`]); the controller reconciles what this yields. Called once.
    pub fn wakes(&self) -> impl Stream<Item = ObjectRef<Canary>> + Send + 'static {
        let (tx, rx) = mpsc::channel(WAKES);
        if let Ok(mut wake) = self.wake.lock() {
            *wake = Some(tx);
        }
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
    }
}

/// A release moved from `from` to `to`: when that ends it (it is no longer progressing), the
/// releases waiting for a slot are looked at again now, not at their next interval.
pub fn freed(ctx: &Context, from: Phase, to: Phase) {
    if !ctx.config.concurrency.any() || !active(from) || active(to) {
        return;
    }
    let Ok(wake) = ctx.slots.wake.lock() else {
        return;
    };
    let Some(tx) = wake.as_ref() else {
        return;
    };
    for c in ctx.stores.canaries.state() {
        let queued = c.status.as_ref().is_some_and(|s| {
            s.phase == Phase::Waiting
                && s.waiting_for.as_deref() == Some(WaitingFor::Concurrency.as_str())
        });
        if queued {
            // Full: the interval's requeue looks at it anyway.
            let _ = tx.try_send(ObjectRef::from_obj(&*c));
        }
    }
}

/// The phases of a release in progress: each holds a slot.
fn active(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting | Phase::Finalising
    )
}

/// One Canary as the count sees it.
struct Seen {
    uid: String,
    namespace: String,
    active: bool,
    /// Between releases (or waiting to start one).
    at_rest: bool,
    /// Waiting for a slot since (with its name, to order ties).
    queued_since: Option<(DateTime<Utc>, String, String)>,
}

/// Why `canary` could not start its release now (`None`: it could, or it is not starting
/// one), for the observation: a look, which takes no slot (the release may still wait for an
/// approval). [`claim`] takes it when the release starts.
pub fn queued(
    canary: &Canary,
    status: &Status,
    revision: &str,
    command: Option<Command>,
    ctx: &Context,
) -> Option<String> {
    if !ctx.config.concurrency.any() || !starting(status, revision, command) {
        return None;
    }
    check(canary, status, ctx, false)
}

/// Takes a slot for the release `canary` is starting from `status`, or says why none is
/// free: checked and taken under one lock, so two releases starting at once cannot both
/// take the last one.
pub fn claim(canary: &Canary, status: &Status, ctx: &Context) -> Option<String> {
    if !ctx.config.concurrency.any() {
        return None;
    }
    check(canary, status, ctx, true)
}

/// Whether a step from `from` to `to` starts a release (and so needs a slot).
pub fn starts_release(from: Phase, to: Phase) -> bool {
    at_rest(from) && to == Phase::Progressing
}

/// Between releases, or waiting to start one: the phases a release starts from.
fn at_rest(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Initialized | Phase::Succeeded | Phase::Failed | Phase::Waiting
    )
}

fn check(canary: &Canary, status: &Status, ctx: &Context, take: bool) -> Option<String> {
    let limits = ctx.config.concurrency;
    let uid = canary.uid()?;
    let namespace = canary.namespace().unwrap_or_default();
    let me = match status.waiting_for {
        Some(WaitingFor::Concurrency) => status
            .last_transition_time
            .map(|t| (t, namespace.clone(), canary.name_any())),
        // Not queued yet: behind every release that is.
        _ => None,
    };
    let Ok(mut granted) = ctx.slots.granted.lock() else {
        return None;
    };
    let seen = snapshot(ctx, &uid);
    // A grant ends when its release shows as started (it counts by its phase from then on,
    // and no longer once it is over), or after a while if it never started.
    granted.retain(|u, (_, at)| {
        at.elapsed() < GRANT_HOLDS && !seen.iter().any(|s| s.uid == *u && !s.at_rest)
    });
    let active: HashSet<(&str, &str)> = seen
        .iter()
        .filter(|s| s.active)
        .map(|s| (s.uid.as_str(), s.namespace.as_str()))
        .chain(
            granted
                .iter()
                .filter(|(u, _)| **u != uid)
                .map(|(u, (ns, _))| (u.as_str(), ns.as_str())),
        )
        .collect();
    let ahead = |s: &&Seen| match (&s.queued_since, &me) {
        (Some(theirs), Some(mine)) => theirs < mine,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let in_cluster = (active.len(), seen.iter().filter(ahead).count());
    let in_namespace = (
        active.iter().filter(|(_, ns)| *ns == namespace).count(),
        seen.iter()
            .filter(|s| s.namespace == namespace)
            .filter(ahead)
            .count(),
    );
    let full =
        |(active, ahead): (usize, usize), limit: u32| limit > 0 && active + ahead >= limit as usize;
    let why = if full(in_cluster, limits.progressing) {
        Some(format!(
            "{} of {} releases progressing (--max-progressing), {} waiting ahead",
            in_cluster.0, limits.progressing, in_cluster.1
        ))
    } else if full(in_namespace, limits.per_namespace) {
        Some(format!(
            "{} of {} releases progressing in {namespace} (--max-progressing-per-namespace), \
             {} waiting ahead",
            in_namespace.0, limits.per_namespace, in_namespace.1
        ))
    } else {
        None
    };
    if why.is_none() && take {
        granted.insert(uid, (namespace, Instant::now()));
    }
    why
}

/// Whether the engine would start a release from this status: a revision neither released
/// nor promoted yet, a release waiting to start, or `serin retry` of a failed one.
fn starting(status: &Status, revision: &str, command: Option<Command>) -> bool {
    let promoted = status.last_promoted_spec.as_deref();
    if !at_rest(status.phase) || promoted.is_none() || promoted == Some(revision) {
        return false;
    }
    status.phase == Phase::Waiting
        || status.last_applied_spec.as_deref() != Some(revision)
        || (status.phase == Phase::Failed && command == Some(Command::Retry))
}

/// Every other Canary's phase and place in the queue, from the cache or, where this process
/// wrote a later status, from that.
fn snapshot(ctx: &Context, me: &str) -> Vec<Seen> {
    ctx.stores
        .canaries
        .state()
        .iter()
        .filter_map(|c| {
            let uid = c.uid()?;
            if uid == me {
                return None;
            }
            let cached_version = c
                .resource_version()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let status = match ctx.written.newer_than(&uid, Some(cached_version)) {
                Some((_, written)) => written,
                None => c.status.clone().unwrap_or_default(),
            };
            let active = active(status.phase);
            let at_rest = at_rest(status.phase);
            let namespace = c.namespace().unwrap_or_default();
            let queued_since = (status.phase == Phase::Waiting
                && status.waiting_for.as_deref() == Some(WaitingFor::Concurrency.as_str()))
            .then_some(status.last_transition_time)
            .flatten()
            .map(|t| (t, namespace.clone(), c.name_any()));
            Some(Seen {
                uid,
                namespace,
                active,
                at_rest,
                queued_since,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_rest(phase: Phase, applied: &str, promoted: &str) -> Status {
        Status {
            phase,
            last_applied_spec: Some(applied.into()),
            last_promoted_spec: Some(promoted.into()),
            ..Status::default()
        }
    }

    #[test]
    fn only_a_release_about_to_start_needs_a_slot() {
        use Phase::*;
        let cases = [
            (at_rest(Succeeded, "a", "a"), "b", None, true),
            (at_rest(Succeeded, "a", "a"), "a", None, false),
            (at_rest(Initialized, "a", "a"), "b", None, true),
            (at_rest(Failed, "b", "a"), "b", None, false),
            (at_rest(Failed, "b", "a"), "b", Some(Command::Retry), true),
            (at_rest(Waiting, "a", "a"), "b", None, true),
            // Back to the promoted revision: the engine cancels, nothing starts.
            (at_rest(Waiting, "b", "a"), "a", None, false),
            (at_rest(Progressing, "b", "a"), "c", None, false),
            (
                Status {
                    phase: Initializing,
                    ..Status::default()
                },
                "a",
                None,
                false,
            ),
        ];
        for (status, revision, command, want) in cases {
            assert_eq!(
                starting(&status, revision, command),
                want,
                "{status:?} {revision} {command:?}"
            );
        }
    }
}
