//! The metric providers against the stack's Prometheus, Datadog, New Relic, Graphite,
//! InfluxDB, Dynatrace, Splunk, CloudWatch and Stackdriver, one binary: the analysis in process, `serin analyze` as
//! users run it, and each
//! provider's answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analysis;
mod analyze_cli;
mod cloud_providers;
mod dynatrace;
mod graphite_influxdb;
mod providers_stack;
mod splunk;
