//! The user's workloads (the target) and serin's copies of them (the primary): how the primary
//! is rendered from the target, and how readiness is read into the engine's
//! [`serin_core::Readiness`]. A StatefulSet has no copy: it is released in place
//! (`stateful_set`).

pub mod configs;
pub mod keda;
pub mod knative;
pub mod primary;
pub mod readiness;
pub mod services;
pub mod stateful_set;
