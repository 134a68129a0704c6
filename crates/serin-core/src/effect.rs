//! What a decision asks the controller to do, in order.

use serde::Serialize;

/// The desired traffic split. For A/B testing the split applies to requests matching
/// `analysis.match`; all other requests go to the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Routes {
    pub primary: u32,
    pub canary: u32,
    /// Mirror a copy of the primary's traffic to the canary.
    pub mirrored: bool,
}

impl Routes {
    pub const PRIMARY: Routes = Routes {
        primary: 100,
        canary: 0,
        mirrored: false,
    };
    pub const CANARY: Routes = Routes {
        primary: 0,
        canary: 100,
        mirrored: false,
    };

    pub fn canary(weight: u32) -> Routes {
        let canary = weight.min(100);
        Routes {
            primary: 100 - canary,
            canary,
            mirrored: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum EventType {
    Normal,
    Warning,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warn,
    Error,
}

/// Webhooks that are fired for their side effect; their result does not gate anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Notify {
    PostRollout,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "effect")]
pub enum Effect {
    /// Create the primary workload from the target if it does not exist.
    EnsurePrimary,
    /// Make the primary run the target's template (creating it if missing), with the
    /// tracked configs and the autoscaler copied too.
    Promote,
    /// Scale the target to zero and pause its autoscaler.
    ScaleTargetToZero,
    /// Scale the target up (from zero) and resume its autoscaler.
    ScaleTargetUp,
    /// Apply the traffic split. Emitted on every decision: routing is declared, not stepped,
    /// so a drifted routing object is put back.
    SetRoutes(Routes),
    /// A Kubernetes event on the Canary. Flagger records every event with reason `Synced`;
    /// serin keeps that so existing event filters keep working.
    Event {
        kind: EventType,
        message: String,
    },
    Alert {
        severity: Severity,
        message: String,
    },
    /// Fire webhooks of this type with the phase of the new status.
    Webhooks(Notify),
    /// Deletion: hand the application back to the target (the apex Service selects its pods,
    /// taken-over routing objects get their original spec back with revertOnDeletion).
    /// Only emitted once the target is ready: it is the step that moves live traffic.
    Revert,
    /// Deletion with a target that did not become ready: the primary, its configs and
    /// autoscaler, the apex and `-primary` Services and the routing objects lose serin's owner
    /// reference, so garbage collection of the Canary leaves the user's service served by the
    /// primary. The user deletes them once the target serves.
    OrphanPrimary,
    /// The revert is complete (or the primary was kept): remove serin's finalizer.
    RemoveFinalizer,
}
