//! The metric providers against the stack's Prometheus, Datadog and New Relic, one binary:
//! the analysis in process, `serin analyze` as users run it, and each provider's answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analysis;
mod analyze_cli;
mod providers_stack;
