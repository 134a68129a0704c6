//! The user's workloads (the target) and serin's copies of them (the primary): how their
//! readiness is read. The controller turns what it observes here into the engine's
//! [`serin_core::Readiness`].

pub mod readiness;
