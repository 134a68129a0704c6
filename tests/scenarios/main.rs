//! Scenario tests: the controller against the local stack (serin-stack), with 1 s analysis
//! intervals. Each test starts its own stack and controller; on the emulator most run in
//! virtual time with the controller in process, the rest run the `serin` binary in real time
//! (crates/serin-testkit/README.md says which and why). One binary, so that
//! the suites' long releases overlap instead of each suite waiting on its slowest one:
//! `cargo test --test scenarios mesh::` runs one suite, `... real::` one back-end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alerts;
mod caches;
mod chaos;
mod cli;
mod control;
mod dashboard;
mod deploy;
mod fairness;
mod groups;
mod harness;
mod hostile;
mod inputs;
mod knative;
mod lifecycle;
mod mesh;
mod metrics;
mod observability;
mod real_control_plane;
mod report;
mod rollback;
mod routing;
mod stateful_sets;
mod targets;
mod timing;
mod webhooks;
