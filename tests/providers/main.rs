//! The metric providers against the stack's Prometheus, Datadog, New Relic, External Metrics
//! API adapter and Keptn stand-in, one binary: the analysis in process, `serin analyze` as
//! users run it, and each provider's answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analysis;
mod analyze_cli;
mod externalmetrics;
mod keptn;
mod providers_stack;
