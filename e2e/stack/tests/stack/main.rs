//! serin-stack's own tests, one binary: the `serin-stack up` command line, the API
//! emulator's conformance through kube-rs and kubectl, the traffic world's split, Flagger's
//! builtin queries in a real Prometheus, and the Datadog, New Relic, Graphite, InfluxDB,
//! Dynatrace, Splunk, CloudWatch, Stackdriver, Keptn and external metrics
//! emulators.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;
mod cloudwatch;
mod datadog;
mod dynatrace;
mod external_metrics;
mod graphite;
mod influxdb;
mod keptn;
mod kube_conformance;
mod kubectl_conformance;
mod newrelic;
mod prometheus;
mod splunk;
mod stackdriver;
mod traffic;
