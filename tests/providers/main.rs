//! The metric providers against the stack's Prometheus, Datadog, New Relic, Graphite,
//! InfluxDB, Dynatrace, Splunk, CloudWatch, Stackdriver, Keptn and external metrics, one binary: the analysis in process, `serin analyze` as
//! users run it, and each
//! provider's answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analysis;
mod analyze_cli;
mod cloud_providers;
mod dynatrace;
mod externalmetrics;
mod graphite_influxdb;
mod keptn;
mod providers_stack;
mod splunk;
