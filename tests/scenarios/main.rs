//! Scenario tests: the `serin controller` binary against the local stack (serin-stack), with
//! 1 s analysis intervals. Each test starts its own stack and controller.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alerts;
mod caches;
mod cli;
mod control;
mod harness;
mod hostile;
mod inputs;
mod knative;
mod lifecycle;
mod observability;
mod routing;
mod targets;
mod timing;
mod webhooks;
