//! A person's commands, without editing the spec (so Flux and Argo CD do not revert them):
//! `serin promote|abort|retry NAME` set the command annotation on the Canary, `serin pause`
//! the paused one. The controller feeds a command to one decision, then records it as an
//! event naming who asked (when the API server told the CLI) and clears it, once it was
//! carried out or cannot act in the Canary's phase (a promote waits for readiness); the clear is
//! guarded by the value, so a command written meanwhile is not lost. A command re-applied
//! after a crash before the clear does nothing more: each acts only in the phase it changes.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serin_core::{Command, EventType, Phase};

use crate::api::Canary;
use crate::controller::context::Context;

/// `promote`, `abort` or `retry`; consumed by the controller.
pub const COMMAND: &str = "serin.flagger.app/command";
/// Who set the command or the pause (the API's user name), when known.
pub const REQUESTED_BY: &str = "serin.flagger.app/requested-by";
/// `"true"`: the Canary is held where it is, as with `spec.suspend`.
pub const PAUSED: &str = "serin.flagger.app/paused";

/// The command annotation as found on the Canary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requested {
    pub raw: String,
    pub command: Option<Command>,
    pub by: Option<String>,
}

/// The command on `canary`, unless serin already cleared it and the cache has not caught up
/// (resourceVersions compared as the etcd revisions they are, as for status writes).
pub fn requested(canary: &Canary, ctx: &Context) -> Option<Requested> {
    let cached = canary
        .resource_version()
        .and_then(|v| v.parse::<u64>().ok());
    let cleared = ctx
        .commands_cleared
        .lock()
        .ok()
        .and_then(|c| c.get(&canary.uid().unwrap_or_default()).copied());
    if let (Some(cached), Some(cleared)) = (cached, cleared)
        && cached < cleared
    {
        return None;
    }
    on(canary)
}

fn on(canary: &Canary) -> Option<Requested> {
    let annotations = canary.annotations();
    let raw = annotations.get(COMMAND)?.clone();
    Some(Requested {
        command: Command::parse(&raw),
        raw,
        by: annotations.get(REQUESTED_BY).cloned(),
    })
}

pub fn paused(canary: &Canary) -> bool {
    canary
        .annotations()
        .get(PAUSED)
        .is_some_and(|v| v == "true")
}

/// Whether the decision at `phase` settled the command: carried out, or unable to act in
/// this phase. A promote waiting for the canary to be ready is not settled: kept.
pub fn settled(requested: &Requested, phase: Phase, step: &serin_core::Step) -> bool {
    match requested.command {
        Some(c) => !c.applies_in(phase) || step.command_done,
        None => true,
    }
}

/// The event recording a command the decision at `phase` was given.
pub fn event(requested: &Requested, phase: Phase) -> (EventType, String) {
    let who = requested
        .by
        .as_deref()
        .map(|b| format!(" by {b}"))
        .unwrap_or_default();
    match requested.command {
        Some(c) if c.applies_in(phase) => (
            EventType::Normal,
            format!("serin {} requested{who}", c.as_str()),
        ),
        Some(c) => (
            EventType::Warning,
            format!(
                "serin {} requested{who} does nothing in phase {}: {}",
                c.as_str(),
                phase.as_str(),
                match c {
                    Command::Retry => "only a failed release can be retried",
                    Command::Promote | Command::Abort => "no release is running",
                }
            ),
        ),
        None => (
            EventType::Warning,
            format!(
                "{COMMAND}: unknown command {:?}{who}; use promote, abort or retry",
                requested.raw
            ),
        ),
    }
}

/// Records and clears a command after the decision that used it.
pub async fn consume(canary: &Canary, ctx: &Context, requested: &Requested, phase: Phase) {
    let (kind, message) = event(requested, phase);
    ctx.events.publish(canary, kind, &message).await;
    let api: Api<Canary> =
        Api::namespaced(ctx.client.clone(), &canary.namespace().unwrap_or_default());
    let path = |key: &str| format!("/metadata/annotations/{}", key.replace('/', "~1"));
    // `requested-by` stays: every command sets or clears it along with the command.
    let ops = vec![
        serde_json::json!({"op": "test", "path": path(COMMAND), "value": requested.raw}),
        serde_json::json!({"op": "remove", "path": path(COMMAND)}),
    ];
    let patch: json_patch::Patch = match serde_json::from_value(serde_json::Value::Array(ops)) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("clearing {COMMAND}: {e}");
            return;
        }
    };
    let result = api
        .patch(
            &canary.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await;
    match result {
        Ok(written) => {
            let version = written
                .resource_version()
                .and_then(|v| v.parse::<u64>().ok());
            if let (Some(v), Some(uid), Ok(mut cleared)) =
                (version, canary.uid(), ctx.commands_cleared.lock())
            {
                cleared.insert(uid, v);
            }
        }
        // A changed value (a new command) fails the test: it is the next reconcile's.
        Err(e) => {
            tracing::debug!(error = %e, command = %requested.raw, "command annotation not cleared")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str, by: Option<&str>) -> Requested {
        Requested {
            raw: raw.into(),
            command: Command::parse(raw),
            by: by.map(String::from),
        }
    }

    #[test]
    fn events_say_what_was_asked_by_whom_and_whether_it_acted() {
        let table = [
            (
                req("promote", Some("alice")),
                Phase::Progressing,
                EventType::Normal,
                "serin promote requested by alice",
            ),
            (
                req("abort", None),
                Phase::WaitingPromotion,
                EventType::Normal,
                "serin abort requested",
            ),
            (
                req("retry", None),
                Phase::Succeeded,
                EventType::Warning,
                "serin retry requested does nothing in phase Succeeded: only a failed release can be retried",
            ),
            (
                req("abort", Some("bob")),
                Phase::Initialized,
                EventType::Warning,
                "serin abort requested by bob does nothing in phase Initialized: no release is running",
            ),
            (
                req("rollback", None),
                Phase::Progressing,
                EventType::Warning,
                "serin.flagger.app/command: unknown command \"rollback\"; use promote, abort or retry",
            ),
        ];
        for (requested, phase, kind, message) in table {
            assert_eq!(event(&requested, phase), (kind, message.to_string()));
        }
    }
}
