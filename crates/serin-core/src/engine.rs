//! `decide()`: one step of a Canary's release, as a pure function.
//!
//! The controller calls `decide(plan, status, observation, now)`. The answer is either a
//! [`Probe`] to run first (a webhook gate or the analysis, which have side effects and must
//! only run when the state machine gets to them) or a [`Step`]: the next status, the effects
//! to apply in order, and when to decide again. The controller runs the probe, records its
//! result in `observation.probes` and calls `decide` again with the same inputs; since
//! `decide` is pure, the second call walks the same path and gets one probe further.
//!
//! Timing. Flagger runs one tick per analysis interval and spends a whole interval on each
//! bookkeeping phase. serin runs time-gated steps (an analysis, a weight step, a gate check)
//! at most once per interval, measured from `status.lastStepTime`, and everything else
//! (initialization, starting a release, promotion, finalising) as soon as readiness allows.
//! The controller may wake up at any time (watch events, its own status writes): a step that
//! is not due yet returns the same status and the time left.
//!
//! Deviations from Flagger 1.44's known quirks, each decided here:
//! - Every rollback path alerts at error severity, including progress-deadline rollbacks
//!   (Flagger's alerting branch for those is unreachable).
//! - The progress deadline bounds every wait on readiness (initialization, analysis,
//!   promotion, finalising, deletion) and every no-data hold. Approval gates (confirm-*) are
//!   explicit human waits and are not bounded; they hold no extra capacity (the target is not
//!   scaled up before confirm-rollout passes).
//! - `status.canaryWeight` is not zeroed in WaitingPromotion: it is the weight the canary
//!   still receives.
//! - A canary that is not ready receives no traffic: routes fall back to the primary while it
//!   is not ready, and return to the recorded weight when it is.
//! - skipAnalysis promotes through Promoting/Finalising so the target is scaled down only
//!   after the primary is ready (Flagger scales down at once; its FAQ accepts the gap).
//! - A target reverted to the promoted revision during a release cancels the release
//!   (Flagger would analyse and "promote" the old revision again).
//! - A failed initialization leaves the target serving and routing untouched.
//! - Deletion hands traffic to the target only once it is ready (never in the step that
//!   scales it up from zero); a target not ready by the progress deadline leaves
//!   the primary serving, orphaned so the garbage collector keeps it.

// `Err` carries the early answer of a decision (one per call, moved, never copied around),
// so its size does not matter; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::Phase;
use crate::effect::{Effect, EventType, Notify, Routes, Severity};
use crate::observation::{Analysis, Command, Gate, Observation, Readiness};
use crate::plan::{Plan, Routing, Stepping, Strategy};
use crate::status::{Status, WaitingFor};
use crate::weights;

/// Something with side effects the engine needs the outcome of before it can decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Probe {
    ConfirmRollout,
    Rollback,
    PreRollout,
    /// Rollout webhooks, then metric checks.
    Analysis,
    ConfirmTrafficIncrease,
    ConfirmPromotion,
}

/// The outcome of a decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    pub status: Status,
    pub effects: Vec<Effect>,
    /// Decide again after this long (sooner if something changes).
    #[serde(serialize_with = "ser_seconds")]
    pub requeue: TimeDelta,
    /// The observation's command was carried out (a promote waiting for readiness is not
    /// yet: the controller keeps it for a later decision).
    #[serde(skip)]
    pub command_done: bool,
    /// A time-gated step (an analysis or a promotion step) ran this long after it was due:
    /// how far the controller is behind its canaries.
    #[serde(skip)]
    pub late: Option<TimeDelta>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Decision {
    Probe(Probe),
    Step(Step),
}

fn ser_seconds<S: serde::Serializer>(d: &TimeDelta, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.num_milliseconds() as f64 / 1000.0)
}

/// Longest wait between two looks at a workload that is rolling out. The controller also
/// watches workloads, so this is only the fallback.
const POLL: TimeDelta = TimeDelta::seconds(5);
/// Longest time between routing all traffic back to the primary and scaling the canary down,
/// so the mesh has converged before the canary's pods go away.
const DRAIN: TimeDelta = TimeDelta::seconds(10);

/// Decides the next step of a release. Pure: same inputs, same answer.
pub fn decide(plan: &Plan, status: &Status, obs: &Observation, now: DateTime<Utc>) -> Decision {
    let mut tick = Tick {
        plan,
        obs,
        now,
        prev: status,
        next: status.clone(),
        effects: Vec::new(),
        command_done: false,
        late: None,
    };
    match tick.run() {
        Ok(step) | Err(step) => step,
    }
}

/// The traffic split the recorded status implies, or `None` before initialization and
/// during deletion (routing is not serin's to set then).
pub fn desired_routes(plan: &Plan, status: &Status, canary_ready: bool) -> Option<Routes> {
    status.last_promoted_spec.as_ref()?;
    let mirror = Routes {
        primary: 100,
        canary: 0,
        mirrored: true,
    };
    let routes = match status.phase {
        Phase::New | Phase::Initializing | Phase::Terminating | Phase::Terminated => {
            return None;
        }
        _ if plan.routing == Routing::ServiceSelector => Routes::PRIMARY,
        Phase::Progressing | Phase::WaitingPromotion => match &plan.strategy {
            Strategy::Canary { .. } if status.mirrored => mirror,
            Strategy::Canary { .. } => Routes::canary(status.canary_weight),
            Strategy::AbTesting { .. } if status.iterations >= 1 => Routes::CANARY,
            Strategy::AbTesting { .. } => Routes::PRIMARY,
            Strategy::BlueGreen { .. } if status.mirrored => mirror,
            Strategy::BlueGreen { iterations, .. } if status.iterations > *iterations => {
                Routes::CANARY
            }
            Strategy::BlueGreen { .. } => Routes::PRIMARY,
        },
        Phase::Promoting | Phase::Finalising | Phase::Failed => {
            Routes::canary(status.canary_weight)
        }
        Phase::Initialized | Phase::Waiting | Phase::Succeeded => Routes::PRIMARY,
    };
    let canary_gets_traffic = routes.canary > 0 || routes.mirrored;
    Some(if canary_gets_traffic && !canary_ready {
        Routes::PRIMARY
    } else {
        routes
    })
}

/// `Err` carries an early answer (a probe, or a step decided before the end).
type Flow = Result<Decision, Decision>;

struct Tick<'a> {
    plan: &'a Plan,
    obs: &'a Observation,
    now: DateTime<Utc>,
    prev: &'a Status,
    next: Status,
    effects: Vec<Effect>,
    command_done: bool,
    late: Option<TimeDelta>,
}

/// Gets a probe's result, or returns early asking the controller to run it.
/// A flow that ended the step, whichever way: for the steps that return `Result<(), Decision>`.
fn ended(flow: Flow) -> Decision {
    flow.unwrap_or_else(|decision| decision)
}

macro_rules! probe {
    ($tick:expr, $field:ident, $probe:expr) => {
        match &$tick.obs.probes.$field {
            Some(result) => result.clone(),
            None => return Err(Decision::Probe($probe)),
        }
    };
}

impl Tick<'_> {
    fn run(&mut self) -> Flow {
        // What a release waits for holds for one decision: `detect` says it again.
        self.next.waiting_for = None;
        if self.obs.deleting {
            return self.terminate();
        }
        if self.plan.suspend {
            self.event(
                EventType::Normal,
                "skipping canary run as object is suspended".into(),
            );
            return self.done(self.plan.interval);
        }
        match self.prev.phase {
            Phase::New | Phase::Initializing => self.initialize(),
            Phase::Initialized | Phase::Succeeded | Phase::Failed | Phase::Waiting => self.detect(),
            Phase::Progressing | Phase::WaitingPromotion => self.analyse(),
            Phase::Promoting => self.shift_to_primary(),
            Phase::Finalising => self.finalise(),
            // Only reachable with `deleting` set; without it there is nothing to do.
            Phase::Terminating | Phase::Terminated => self.done(self.plan.interval),
        }
    }

    // ----- phases -------------------------------------------------------------------------

    fn initialize(&mut self) -> Flow {
        self.next.phase = Phase::Initializing;
        self.effects.push(Effect::EnsurePrimary);
        let ready = self.plan.skip_analysis || self.obs.primary.is_ready();
        if !ready {
            let reason = readiness_reason(&self.obs.primary, "primary");
            if let Readiness::Failed(_) = self.obs.primary {
                return self.fail_initialization(reason);
            }
            if self.deadline_exceeded() {
                return self.fail_initialization(format!(
                    "{reason}: progress deadline of {}s exceeded",
                    self.plan.progress_deadline.num_seconds()
                ));
            }
            if self.prev.phase == Phase::New {
                // Flagger's words and type, which alert rules match: `podinfo-primary.test
                // not ready: waiting for rollout to finish: ...`. A primary not there yet is
                // the one this step creates (`EnsurePrimary`), not a missing object.
                let waiting = match &self.obs.primary {
                    Readiness::Missing => "waiting for rollout to finish: creating it".to_string(),
                    Readiness::NotReady(r) | Readiness::Failed(r) => r.clone(),
                    Readiness::Ready => reason,
                };
                let primary = match self.plan.in_place() {
                    true => self.plan.target.clone(),
                    false => primary_name(&self.plan.target),
                };
                self.event(
                    EventType::Warning,
                    format!("{primary} not ready: {waiting}"),
                );
            }
            return self.done(self.poll());
        }
        let revision = Some(self.obs.revision.clone());
        self.next = Status {
            phase: Phase::Initialized,
            last_applied_spec: revision.clone(),
            last_promoted_spec: revision,
            ..Status::default()
        };
        self.effects.push(Effect::ScaleTargetToZero);
        self.event(
            EventType::Normal,
            format!("Initialization done! {}", self.plan.canary),
        );
        let msg = format!(
            "New {} detected, initialization completed.",
            self.plan.target_kind
        );
        self.alert(Severity::Info, msg);
        self.done(self.plan.interval)
    }

    /// The primary never became ready: leave the target serving and routing untouched.
    fn fail_initialization(&mut self, reason: String) -> Flow {
        self.next.phase = Phase::Failed;
        self.next.last_applied_spec = Some(self.obs.revision.clone());
        let msg = format!("Initialization of {} failed: {reason}", self.plan.canary);
        self.event(EventType::Warning, msg.clone());
        self.alert(Severity::Error, msg);
        self.done(self.plan.interval)
    }

    /// Initialized, Succeeded, Failed, Waiting: is there a new revision to release?
    fn detect(&mut self) -> Flow {
        let revision = &self.obs.revision;
        let applied = self.prev.last_applied_spec.as_ref() == Some(revision);
        let promoted = self.prev.last_promoted_spec.as_ref() == Some(revision);

        if self.prev.last_promoted_spec.is_none() {
            // Initialization failed earlier. A new target revision retries it.
            if applied {
                return self.done(self.plan.interval);
            }
            // Promote creates or updates the primary from the new target revision.
            self.next.phase = Phase::Initializing;
            self.next.last_applied_spec = Some(revision.clone());
            self.effects.push(Effect::Promote);
            let msg = format!(
                "New revision detected for {}, retrying initialization",
                self.plan.target
            );
            self.event(EventType::Normal, msg);
            return self.done(self.poll());
        }
        if promoted {
            // Nothing new, or the target was put back to what the primary runs: no analysis.
            if self.prev.phase == Phase::Waiting || (self.prev.phase == Phase::Failed && !applied) {
                return self.cancel_release();
            }
            return self.done(self.plan.interval);
        }
        let retry = self.obs.command == Some(Command::Retry) && self.prev.phase == Phase::Failed;
        self.command_done = retry;
        if applied && self.prev.phase != Phase::Waiting && !retry {
            // The revision was released (or failed) already. Re-applying a failed spec does
            // not retry it: `serin retry`, or a change of the pod template, does.
            return self.done(self.plan.interval);
        }

        // A release slot before the approval: a release that cannot start yet asks no one.
        if let Some(reason) = &self.obs.queued {
            self.next.phase = Phase::Waiting;
            self.next.waiting_for = Some(WaitingFor::Concurrency);
            if self.prev.waiting_for != Some(WaitingFor::Concurrency) {
                let msg = format!(
                    "Halt {} advancement waiting for a release slot: {reason}",
                    self.plan.canary
                );
                self.event(EventType::Normal, msg);
            }
            return self.done(self.plan.interval);
        }
        if self.plan.hooks.confirm_rollout {
            if self.prev.phase == Phase::Waiting && !self.step_due(self.plan.interval) {
                return self.not_due(self.plan.interval);
            }
            self.next.last_step_time = Some(self.now);
            let gate = probe!(self, confirm_rollout, Probe::ConfirmRollout);
            if let Err(mute_alert) = self.announce_gate(gate, "Confirm-rollout", "approval") {
                if self.prev.phase != Phase::Waiting && !mute_alert {
                    self.alert(Severity::Warn, "Canary is waiting for approval.".into());
                }
                self.next.phase = Phase::Waiting;
                return self.done(self.plan.interval);
            }
        }

        self.next = self.fresh_run();
        self.effects.push(Effect::ScaleTargetUp);
        let msg = format!("New revision detected! Scaling up {}", self.plan.target);
        self.event(EventType::Normal, msg);
        if self.is_rollback() {
            let msg = format!(
                "Rolling back {} to revision {}, promoted before: promoting it without analysis \
                 (rollbackWindow)",
                self.plan.target, self.obs.revision
            );
            self.event(EventType::Normal, msg.clone());
            self.alert(Severity::Warn, msg);
            return self.done(self.poll());
        }
        let msg = "New revision detected, progressing canary analysis.";
        self.alert(Severity::Info, msg.into());
        self.done(self.poll())
    }

    /// The revision being released is one promoted before the current one, within the
    /// rollback window: it is promoted again without analysis.
    fn is_rollback(&self) -> bool {
        self.plan.rollback_window > 0
            && self.prev.last_promoted_spec.as_ref() != Some(&self.obs.revision)
            && self.prev.promoted_before.contains(&self.obs.revision)
    }

    /// The revisions promoted before `promoted`, once it replaces the current one: the
    /// current one last, each once, at most the rollback window's.
    fn promoted_before(&self, promoted: Option<&String>) -> Vec<String> {
        let window = self.plan.rollback_window as usize;
        let mut before: Vec<String> = self.prev.promoted_before.clone();
        if let Some(current) = &self.prev.last_promoted_spec {
            before.retain(|r| r != current);
            before.push(current.clone());
        }
        before.retain(|r| Some(r) != promoted);
        let excess = before.len().saturating_sub(window);
        before.drain(..excess);
        before
    }

    /// Progressing and WaitingPromotion: readiness, gates, analysis, then one strategy step.
    fn analyse(&mut self) -> Flow {
        let revision = &self.obs.revision;
        if self.prev.last_applied_spec.as_ref() != Some(revision) {
            if self.prev.last_promoted_spec.as_ref() == Some(revision) {
                return self.cancel_release();
            }
            let msg = format!(
                "New revision detected! Restarting analysis for {}",
                self.plan.target
            );
            self.event(EventType::Normal, msg);
            self.next = self.fresh_run();
            return self.done(self.poll());
        }

        if self.obs.command == Some(Command::Abort) {
            self.command_done = true;
            let msg = format!("Rolling back {} aborted by a person", self.plan.canary);
            self.event(EventType::Warning, msg);
            self.alert(Severity::Warn, "Canary aborted by a person".into());
            return self.roll_back();
        }
        if let Some(member) = self.obs.group.as_ref().and_then(|g| g.failed.as_ref()) {
            let group = self.obs.group.as_ref().map_or("", |g| g.name.as_str());
            let msg = format!(
                "Rolling back {}: the release of {member}, in the same release group {group}, failed",
                self.plan.canary
            );
            return self.roll_back_because(msg);
        }
        self.await_primary_or_roll_back()?;
        self.await_canary_or_roll_back()?;

        if self.plan.skip_analysis || self.is_rollback() {
            self.await_group_promotion()?;
            return self.start_promotion();
        }
        if self.obs.command == Some(Command::Promote) {
            self.command_done = true;
            let msg = format!(
                "Promoting {} now, as a person asked: the remaining steps are skipped",
                self.plan.canary
            );
            self.event(EventType::Normal, msg);
            return self.start_promotion();
        }
        let group_promotes = self.prev.phase == Phase::WaitingPromotion
            && self.obs.group.as_ref().is_some_and(|g| g.promoting());
        if group_promotes {
            // Another member promotes: every member's analysis had passed its last step
            // when it did, so this one follows without analysing again.
            self.take_step(self.plan.interval);
        } else {
            if !self.step_due(self.plan.interval) {
                return self.not_due(self.plan.interval);
            }
            self.hold_for_group()?;
            self.take_step(self.plan.interval);

            if self.plan.hooks.rollback && probe!(self, rollback, Probe::Rollback) {
                let msg = format!("Rolling back {} manual webhook invoked", self.plan.canary);
                self.event(EventType::Warning, msg);
                self.alert(Severity::Warn, "Rolling back manual webhook invoked".into());
                return self.roll_back();
            }
            if self.prev.failed_checks >= self.plan.threshold {
                // The threshold was lowered while checks had already failed.
                return self.roll_back_on_threshold();
            }

            self.check_step()?;
        }
        match self.plan.strategy.clone() {
            Strategy::Canary { stepping, mirror } => self.advance_canary(&stepping, mirror),
            Strategy::AbTesting { iterations } => {
                if self.prev.iterations < iterations {
                    return self.advance_iteration(iterations);
                }
                self.confirm_promotion(100)
            }
            Strategy::BlueGreen { iterations, mirror } => {
                self.advance_blue_green(iterations, mirror)
            }
        }
    }

    /// The step's checks: the pre-rollout webhooks on the first step, the analysis (metrics
    /// and rollout webhooks) on the others. `Err` ends the step (a failed check, or a hold).
    fn check_step(&mut self) -> Result<(), Decision> {
        let first_step =
            self.prev.canary_weight == 0 && self.prev.iterations == 0 && !self.prev.mirrored;
        if first_step {
            let msg = format!("Starting canary analysis for {}", self.plan.target);
            self.event(EventType::Normal, msg);
            if self.plan.hooks.pre_rollout {
                match probe!(self, pre_rollout, Probe::PreRollout) {
                    Gate::Open => {
                        let msg = format!("Pre-rollout check for {} passed", self.plan.canary);
                        self.event(EventType::Normal, msg);
                    }
                    Gate::Closed { reason, .. } => {
                        let reason = format!("pre-rollout check failed: {reason}");
                        return Err(ended(self.fail_check(reason)));
                    }
                }
            }
        } else if self.plan.has_checks {
            match probe!(self, analysis, Probe::Analysis) {
                Analysis::Pass => {}
                Analysis::Fail(reason) => return Err(ended(self.fail_check(reason))),
                Analysis::Hold(reason) => {
                    if self.deadline_exceeded() {
                        let msg = format!(
                            "Progress deadline exceeded for {}: no metric data for {}s ({reason})",
                            self.plan.canary,
                            self.plan.progress_deadline.num_seconds()
                        );
                        return Err(ended(self.roll_back_because(msg)));
                    }
                    let msg = halt_message(&self.plan.canary, &reason);
                    self.event(EventType::Warning, msg);
                    return Err(ended(self.done(self.plan.interval)));
                }
            }
        }
        Ok(())
    }

    /// Canary strategy: the next weight (or mirroring first), promotion at the maximum.
    fn advance_canary(&mut self, stepping: &Stepping, mirror: bool) -> Flow {
        let weight = self.prev.canary_weight;
        if weight >= self.plan.max_weight() {
            return self.confirm_promotion(weight);
        }
        if !self.prev.mirrored {
            self.confirm_traffic_increase()?;
        }
        if mirror && weight == 0 && !self.prev.mirrored {
            self.next.mirrored = true;
            let msg = format!("Starting traffic mirroring for {}", self.plan.canary);
            self.event(EventType::Normal, msg);
            return self.done(self.plan.interval);
        }
        let next = weights::next_weight(stepping, weight);
        self.next.canary_weight = next;
        self.next.mirrored = false;
        let msg = format!("Advance {} canary weight {next}", self.plan.canary);
        self.event(EventType::Normal, msg);
        self.done(self.plan.interval)
    }

    /// Blue/green: the iterations (mirrored if asked), one interval with all traffic on the
    /// new version where routing is weighted, then promotion.
    fn advance_blue_green(&mut self, iterations: u32, mirror: bool) -> Flow {
        let weighted = self.plan.routing == Routing::Weighted;
        if self.prev.iterations < iterations {
            if mirror && weighted && !self.prev.mirrored {
                self.next.mirrored = true;
            }
            return self.advance_iteration(iterations);
        }
        if self.prev.iterations == iterations && weighted {
            // One more interval with all traffic on the new version before promotion.
            self.gate_promotion()?;
            let msg = if self.prev.mirrored {
                "Stop traffic mirroring and route all traffic to canary"
            } else {
                "Routing all traffic to canary"
            };
            self.event(EventType::Normal, msg.into());
            self.next.mirrored = false;
            self.next.iterations = iterations + 1;
            self.next.phase = Phase::Progressing;
            return self.done(self.plan.interval);
        }
        if weighted {
            // The gate passed on the previous step.
            self.start_promotion()
        } else {
            // kubernetes provider: no routing to switch, promote right away.
            self.confirm_promotion(0)
        }
    }

    fn advance_iteration(&mut self, total: u32) -> Flow {
        self.next.iterations = self.prev.iterations + 1;
        let msg = format!(
            "Advance {} canary iteration {}/{total}",
            self.plan.canary, self.next.iterations
        );
        self.event(EventType::Normal, msg);
        self.done(self.plan.interval)
    }

    /// Promoting: wait for the primary's rolling update, then move traffic back to it.
    fn shift_to_primary(&mut self) -> Flow {
        self.await_primary_or_fail_promotion()?;
        if self.plan.routing == Routing::ServiceSelector || self.plan.step_weight_promotion == 0 {
            if self.plan.routing == Routing::Weighted {
                self.event(EventType::Normal, "Routing all traffic to primary".into());
            }
            return self.enter_finalising();
        }
        if !self.step_due(self.plan.interval) {
            return self.not_due(self.plan.interval);
        }
        self.take_step(self.plan.interval);
        let primary = (100 - self.prev.canary_weight.min(100))
            .saturating_add(self.plan.step_weight_promotion)
            .min(100);
        self.next.canary_weight = 100 - primary;
        let msg = format!("Advance {} primary weight {primary}", self.plan.canary);
        self.event(EventType::Normal, msg);
        if primary == 100 {
            return self.enter_finalising();
        }
        self.done(self.plan.interval)
    }

    fn enter_finalising(&mut self) -> Flow {
        self.next.canary_weight = 0;
        self.next.phase = Phase::Finalising;
        self.next.last_step_time = Some(self.now);
        self.done(self.drain())
    }

    /// Finalising: all traffic is on the primary; scale the canary down and finish.
    fn finalise(&mut self) -> Flow {
        self.await_primary_or_fail_promotion()?;
        if !self.step_due(self.drain()) {
            return self.not_due(self.drain());
        }
        self.next.phase = Phase::Succeeded;
        self.next.canary_weight = 0;
        self.next.iterations = 0;
        self.next.mirrored = false;
        let rollback = self.is_rollback();
        self.next.promoted_before = self.promoted_before(self.prev.last_applied_spec.as_ref());
        self.next.last_promoted_spec = self.prev.last_applied_spec.clone();
        self.effects.push(Effect::ScaleTargetToZero);
        if self.plan.hooks.post_rollout {
            self.effects.push(Effect::Webhooks(Notify::PostRollout));
        }
        if rollback {
            let msg = format!(
                "Promotion completed! {} rolled back to revision {} without analysis",
                self.plan.target, self.obs.revision
            );
            self.event(EventType::Normal, msg);
            let msg = "Rollback to a revision promoted before completed, without analysis.";
            self.alert(Severity::Info, msg.into());
        } else if self.plan.skip_analysis {
            let msg = format!(
                "Promotion completed! Canary analysis was skipped for {}",
                self.plan.target
            );
            self.event(EventType::Normal, msg);
            let msg = "Canary analysis was skipped, promotion finished.";
            self.alert(Severity::Info, msg.into());
        } else {
            let msg = format!("Promotion completed! Scaling down {}", self.plan.target);
            self.event(EventType::Normal, msg);
            let msg = "Canary analysis completed successfully, promotion finished.";
            self.alert(Severity::Info, msg.into());
        }
        self.done(self.plan.interval)
    }

    /// Deletion (the finalizer): Terminating until the target serves again, then Terminated.
    /// The user's service must never be left with nothing ready behind it, so traffic moves
    /// to the target only once it is ready; a target that does not become ready by the
    /// progress deadline leaves the primary serving, orphaned so the garbage collector keeps
    /// it, and the user is told what to clean up.
    fn terminate(&mut self) -> Flow {
        let first = self.prev.phase != Phase::Terminating && self.prev.phase != Phase::Terminated;
        if first {
            self.next.phase = Phase::Terminating;
            let msg = format!("Terminating canary {}", self.plan.canary);
            self.event(EventType::Normal, msg);
        }
        if self.obs.target.is_ready() {
            // Scaling up again is a no-op on a ready target; it resumes a paused autoscaler.
            self.effects.push(Effect::ScaleTargetUp);
            self.effects.push(Effect::Revert);
            self.next.phase = Phase::Terminated;
            self.effects.push(Effect::RemoveFinalizer);
            let msg = format!("Terminated canary {}", self.plan.canary);
            self.event(EventType::Normal, msg);
            return self.done(self.poll());
        }
        // Only an initialized Canary has moved traffic to a primary; before that the target
        // kept serving and the primary carries nothing.
        let primary_serves =
            self.prev.last_promoted_spec.is_some() && self.obs.primary != Readiness::Missing;
        let give_up = !first && self.hand_back_overdue();
        if !give_up {
            self.effects.push(Effect::ScaleTargetUp);
            if primary_serves {
                // Whatever split the release had, the unready target gets no traffic.
                self.effects.push(Effect::SetRoutes(Routes::PRIMARY));
            }
            return self.done(self.poll());
        }
        let reason = readiness_reason(&self.obs.target, "target");
        let msg = if primary_serves {
            self.effects.push(Effect::SetRoutes(Routes::PRIMARY));
            self.effects.push(Effect::OrphanPrimary);
            let primary = primary_name(&self.plan.target);
            format!(
                "Canary deleted but {target} is not ready within {deadline}s ({reason}): kept \
                 {primary} serving and routing on it, no longer owned by the Canary; delete \
                 {primary} and its Services once {target} serves",
                target = self.plan.target,
                deadline = self.plan.progress_deadline.num_seconds(),
            )
        } else {
            // A finalizer that never goes away blocks the namespace's deletion: give up
            // loudly rather than forever (nothing else serves that could be kept).
            format!(
                "Revert of {} did not complete within {}s ({reason}); removing the finalizer anyway",
                self.plan.target,
                self.plan.progress_deadline.num_seconds()
            )
        };
        self.event(EventType::Warning, msg.clone());
        self.alert(Severity::Error, msg);
        self.next.phase = Phase::Terminated;
        self.effects.push(Effect::RemoveFinalizer);
        self.done(self.poll())
    }

    /// Whether waiting for the target to serve again has taken longer than the progress
    /// deadline, counted from the deletion. Without its time: from the last transition, and
    /// an earlier `Terminated` counts as having given up already. (With it, a `Terminated`
    /// whose finalizer removal failed is no sign of giving up: that decision may have found
    /// the target ready, which it may no longer be.)
    fn hand_back_overdue(&self) -> bool {
        match self.obs.deletion_requested_at {
            Some(at) => self.now - at > self.plan.progress_deadline,
            None => self.prev.phase == Phase::Terminated || self.deadline_exceeded(),
        }
    }

    // ----- gates and checks ---------------------------------------------------------------

    /// Records a gate's outcome as an event. `Err(mute_alert)` when the gate is closed.
    fn announce_gate(&mut self, gate: Gate, check: &str, waiting_for: &str) -> Result<(), bool> {
        match gate {
            Gate::Open => {
                let msg = format!("{check} check for {} passed", self.plan.canary);
                self.event(EventType::Normal, msg);
                Ok(())
            }
            Gate::Closed { reason, mute_alert } => {
                let msg = format!(
                    "Halt {} advancement waiting for {waiting_for} {reason}",
                    self.plan.canary
                );
                self.event(EventType::Warning, msg);
                Err(mute_alert)
            }
        }
    }

    fn confirm_traffic_increase(&mut self) -> Result<(), Decision> {
        if !self.plan.hooks.confirm_traffic_increase || self.prev.phase != Phase::Progressing {
            return Ok(());
        }
        let gate = probe!(
            self,
            confirm_traffic_increase,
            Probe::ConfirmTrafficIncrease
        );
        match self.announce_gate(
            gate,
            "Confirm-traffic-increase",
            "traffic increase approval",
        ) {
            Ok(()) => Ok(()),
            Err(mute_alert) => {
                if !mute_alert {
                    let msg = "Canary traffic increase is waiting for approval.";
                    self.alert(Severity::Warn, msg.into());
                }
                Err(self.step(self.plan.interval))
            }
        }
    }

    /// A member of a release group that is ahead of another by a step waits for it.
    fn hold_for_group(&mut self) -> Result<(), Decision> {
        let Some(group) = &self.obs.group else {
            return Ok(());
        };
        let mine = crate::group::position(self.plan, self.prev);
        let Some((member, at)) = group.behind(mine) else {
            return Ok(());
        };
        let msg = format!(
            "Halt {} advancement waiting for {member} of release group {} ({at})",
            self.plan.canary, group.name
        );
        self.event(EventType::Normal, msg);
        Err(self.step(self.plan.interval))
    }

    /// A member of a release group promotes once every member's analysis has passed its
    /// last step: until then it waits in WaitingPromotion, its analysis still running.
    fn await_group_promotion(&mut self) -> Result<(), Decision> {
        let Some(group) = &self.obs.group else {
            return Ok(());
        };
        let Some((member, at)) = group.not_ready() else {
            return Ok(());
        };
        let msg = format!(
            "Halt {} promotion waiting for {member} of release group {} ({at})",
            self.plan.canary, group.name
        );
        self.event(EventType::Normal, msg);
        self.next.phase = Phase::WaitingPromotion;
        Err(self.step(self.plan.interval))
    }

    /// Runs the release group's and the confirm-promotion gates; a closed one moves to
    /// WaitingPromotion.
    fn gate_promotion(&mut self) -> Result<(), Decision> {
        self.await_group_promotion()?;
        if !self.plan.hooks.confirm_promotion {
            return Ok(());
        }
        let gate = probe!(self, confirm_promotion, Probe::ConfirmPromotion);
        match self.announce_gate(gate, "Confirm-promotion", "promotion approval") {
            Ok(()) => Ok(()),
            Err(mute_alert) => {
                if self.prev.phase != Phase::WaitingPromotion && !mute_alert {
                    let msg = "Canary promotion is waiting for approval.";
                    self.alert(Severity::Warn, msg.into());
                }
                self.next.phase = Phase::WaitingPromotion;
                Err(self.step(self.plan.interval))
            }
        }
    }

    /// Confirm-promotion, then promote. `routed` is the canary weight the routes carry now.
    fn confirm_promotion(&mut self, routed: u32) -> Flow {
        self.gate_promotion()?;
        self.next.canary_weight = routed;
        self.start_promotion()
    }

    fn start_promotion(&mut self) -> Flow {
        if self.plan.skip_analysis || self.is_rollback() {
            // Nothing was analysed; the canary may never have had traffic.
            self.next.canary_weight = 0;
        } else if matches!(self.plan.strategy, Strategy::BlueGreen { .. })
            && self.plan.routing == Routing::Weighted
        {
            self.next.canary_weight = 100;
        }
        self.next.phase = Phase::Promoting;
        self.next.mirrored = false;
        self.next.last_step_time = None;
        self.effects.push(Effect::Promote);
        let msg = if self.plan.in_place() {
            format!(
                "Releasing every pod of {} to the new revision",
                self.plan.target
            )
        } else {
            format!(
                "Copying {} template spec to {}",
                self.plan.target,
                primary_name(&self.plan.target)
            )
        };
        self.event(EventType::Normal, msg);
        self.done(self.poll())
    }

    fn fail_check(&mut self, reason: String) -> Flow {
        self.next.failed_checks = self.prev.failed_checks + 1;
        let msg = halt_message(&self.plan.canary, &reason);
        self.event(EventType::Warning, msg);
        if self.next.failed_checks >= self.plan.threshold {
            return self.roll_back_on_threshold();
        }
        self.done(self.plan.interval)
    }

    // ----- readiness ----------------------------------------------------------------------

    fn await_primary_or_roll_back(&mut self) -> Result<(), Decision> {
        let obs = self.obs;
        self.await_ready("primary", &obs.primary, Self::roll_back_because)
    }

    /// During the analysis the canary runs: while waiting for it, it is scaled up again (a
    /// no-op when it is), so a release whose rollback was cut short after scaling the target
    /// down, but before its status was written, does not wait on a canary nobody starts;
    /// the step is then decided again.
    fn await_canary_or_roll_back(&mut self) -> Result<(), Decision> {
        let obs = self.obs;
        let waits = !obs.target.is_ready()
            && !matches!(obs.target, Readiness::Failed(_))
            && !self.deadline_exceeded();
        if waits {
            self.effects.push(Effect::ScaleTargetUp);
        }
        self.await_ready("canary", &obs.target, Self::roll_back_because)
    }

    fn await_primary_or_fail_promotion(&mut self) -> Result<(), Decision> {
        let obs = self.obs;
        self.await_ready("primary", &obs.primary, Self::fail_promotion)
    }

    /// `Ok` when the workload is ready. Otherwise waits for it, or ends the release with
    /// `fail` when it will not become ready or the progress deadline has passed.
    fn await_ready(
        &mut self,
        which: &str,
        readiness: &Readiness,
        fail: fn(&mut Self, String) -> Flow,
    ) -> Result<(), Decision> {
        if readiness.is_ready() {
            return Ok(());
        }
        let reason = readiness_reason(readiness, which);
        if matches!(readiness, Readiness::Failed(_)) {
            return Err(flatten(fail(self, reason)));
        }
        if self.deadline_exceeded() {
            let msg = format!(
                "Progress deadline exceeded for {}: {reason}",
                self.plan.canary
            );
            return Err(flatten(fail(self, msg)));
        }
        Err(self.step(self.poll()))
    }

    // ----- endings --------------------------------------------------------------------------

    fn roll_back_on_threshold(&mut self) -> Flow {
        let n = self.plan.threshold;
        let msg = format!(
            "Rolling back {} failed checks threshold reached {n}",
            self.plan.canary
        );
        self.event(EventType::Warning, msg);
        self.alert(
            Severity::Error,
            format!("Failed checks threshold reached {n}"),
        );
        self.roll_back()
    }

    /// Rollback with its reason as a Warning event and an error alert.
    fn roll_back_because(&mut self, reason: String) -> Flow {
        self.event(EventType::Warning, reason.clone());
        self.alert(Severity::Error, reason);
        self.roll_back()
    }

    /// All traffic to the primary, the canary scaled to zero, phase Failed. The counters
    /// start again from zero, as Flagger writes a failed release's status (its FailedChecks
    /// column reads 0); the failed checks are in the events and `status.metrics`.
    fn roll_back(&mut self) -> Flow {
        let msg = format!("Canary failed! Scaling down {}", self.plan.target);
        self.event(EventType::Warning, msg);
        self.next.phase = Phase::Failed;
        self.next.canary_weight = 0;
        self.next.iterations = 0;
        self.next.failed_checks = 0;
        self.next.mirrored = false;
        self.effects.push(Effect::ScaleTargetToZero);
        if self.plan.hooks.post_rollout {
            self.effects.push(Effect::Webhooks(Notify::PostRollout));
        }
        self.done(self.plan.interval)
    }

    /// The primary's rolling update failed after the canary passed its analysis: keep the
    /// canary serving (it is the version that passed), as Flagger 1.44 does.
    fn fail_promotion(&mut self, reason: String) -> Flow {
        let msg = format!(
            "Promotion of {} failed, primary not ready: {reason}",
            self.plan.canary
        );
        self.event(EventType::Warning, msg);
        let msg = format!("Promotion failed, primary not ready: {reason}");
        self.alert(Severity::Error, msg);
        self.next.phase = Phase::Failed;
        self.next.canary_weight = 100;
        self.next.mirrored = false;
        if self.plan.hooks.post_rollout {
            self.effects.push(Effect::Webhooks(Notify::PostRollout));
        }
        self.done(self.plan.interval)
    }

    /// The target went back to the promoted revision: nothing to release.
    fn cancel_release(&mut self) -> Flow {
        let msg = format!(
            "{} is back at the promoted revision; release cancelled, no analysis needed",
            self.plan.target
        );
        self.event(EventType::Normal, msg);
        let was_running = self.prev.phase.is_active() && self.prev.phase != Phase::Waiting;
        self.next.phase = Phase::Succeeded;
        self.next.canary_weight = 0;
        self.next.iterations = 0;
        self.next.mirrored = false;
        self.next.last_applied_spec = Some(self.obs.revision.clone());
        if was_running || self.prev.phase == Phase::Failed {
            self.effects.push(Effect::ScaleTargetToZero);
        }
        self.done(self.plan.interval)
    }

    // ----- helpers --------------------------------------------------------------------------

    /// The status of a run of the observed revision starting now (analysis from step zero).
    fn fresh_run(&self) -> Status {
        Status {
            phase: Phase::Progressing,
            last_applied_spec: Some(self.obs.revision.clone()),
            last_promoted_spec: self.prev.last_promoted_spec.clone(),
            last_transition_time: self.prev.last_transition_time,
            last_step_time: None,
            promoted_before: self.prev.promoted_before.clone(),
            ..Status::default()
        }
    }

    fn event(&mut self, kind: EventType, message: String) {
        self.effects.push(Effect::Event { kind, message });
    }

    fn alert(&mut self, severity: Severity, message: String) {
        self.effects.push(Effect::Alert { severity, message });
    }

    fn poll(&self) -> TimeDelta {
        POLL.min(self.plan.interval)
    }

    fn drain(&self) -> TimeDelta {
        DRAIN.min(self.plan.interval)
    }

    fn step_due(&self, period: TimeDelta) -> bool {
        match self.prev.last_step_time {
            None => true,
            Some(t) => self.now >= t + period,
        }
    }

    /// Starts a step that was due `period` after the last one: records its time and how late
    /// it runs.
    fn take_step(&mut self, period: TimeDelta) {
        if let Some(t) = self.prev.last_step_time {
            self.late = Some((self.now - (t + period)).max(TimeDelta::zero()));
        }
        self.next.last_step_time = Some(self.now);
    }

    /// Nothing to do until the next step is due.
    fn not_due(&mut self, period: TimeDelta) -> Flow {
        let due = self.prev.last_step_time.map_or(self.now, |t| t + period);
        let wait = (due - self.now).max(TimeDelta::milliseconds(1));
        self.done(wait)
    }

    /// The release has made no progress for longer than the progress deadline.
    fn deadline_exceeded(&self) -> bool {
        match self.prev.last_transition_time {
            Some(t) => self.now - t > self.plan.progress_deadline,
            None => false,
        }
    }

    fn step(&mut self, requeue: TimeDelta) -> Decision {
        flatten(self.done(requeue))
    }

    /// Finishes the tick: progress bookkeeping, routes, requeue.
    fn done(&mut self, requeue: TimeDelta) -> Flow {
        let prev = self.prev;
        let mut next = self.next.clone();
        let mut effects = std::mem::take(&mut self.effects);
        let progressed = next.phase != prev.phase
            || next.canary_weight != prev.canary_weight
            || next.iterations != prev.iterations
            || next.failed_checks != prev.failed_checks
            || next.mirrored != prev.mirrored
            || next.last_transition_time.is_none();
        if progressed {
            next.last_transition_time = Some(self.now);
        }
        if let Some(routes) = desired_routes(self.plan, &next, self.obs.target.is_ready()) {
            // Routes move before the canary is scaled down, never after.
            let at = effects
                .iter()
                .position(|e| *e == Effect::ScaleTargetToZero)
                .unwrap_or(effects.len());
            effects.insert(at, Effect::SetRoutes(routes));
        }
        Err(Decision::Step(Step {
            status: next,
            effects,
            requeue,
            command_done: self.command_done,
            late: self.late,
        }))
    }
}

fn flatten(flow: Flow) -> Decision {
    match flow {
        Ok(d) | Err(d) => d,
    }
}

fn readiness_reason(readiness: &Readiness, which: &str) -> String {
    match readiness {
        Readiness::Missing => format!("{which} workload not found"),
        Readiness::NotReady(r) => format!("{which} not ready: {r}"),
        Readiness::Failed(r) => format!("{which} not ready: {r}"),
        Readiness::Ready => format!("{which} ready"),
    }
}

/// `<name>.<ns>` → `<name>-primary.<ns>`.
/// A failed or held check's Warning event, in Flagger's words, which alert rules and
/// dashboards match: `Halt podinfo.test advancement success rate 69.17% < 99%`, but
/// `Halt advancement no values found for ...` when the query found nothing.
fn halt_message(canary: &str, reason: &str) -> String {
    if reason.starts_with("no values found") {
        format!("Halt advancement {reason}")
    } else {
        format!("Halt {canary} advancement {reason}")
    }
}

fn primary_name(target: &str) -> String {
    match target.split_once('.') {
        Some((name, ns)) => format!("{name}-primary.{ns}"),
        None => format!("{target}-primary"),
    }
}
