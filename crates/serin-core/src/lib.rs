//! serin's pure domain: phases, the release plan, weight stepping, spec hashing and the
//! engine's `decide()`. Nothing here does I/O or reads a clock: `now` is an argument, so
//! every behaviour is a table test.

pub mod effect;
pub mod engine;
pub mod group;
pub mod hash;
pub mod observation;
pub mod phase;
pub mod plan;
pub mod simulate;
pub mod stats;
pub mod status;
pub mod weights;

pub use effect::{Effect, EventType, Notify, Routes, Severity};
pub use engine::{Decision, Probe, Step, decide, desired_routes};
pub use group::{GroupObservation, Position};
pub use observation::{Analysis, Command, Gate, Observation, Probes, Readiness};
pub use phase::{ConditionStatus, Phase};
pub use plan::{Hooks, Plan, PlanError, Routing, Stepping, Strategy};
pub use status::{Status, WaitingFor};
