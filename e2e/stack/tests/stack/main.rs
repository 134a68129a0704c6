//! serin-stack's own tests, one binary: the `serin-stack up` command line, the API
//! emulator's conformance through kube-rs and kubectl, the traffic world's split, Flagger's
//! builtin queries in a real Prometheus, the Datadog and New Relic emulators, the External
//! Metrics API adapter and the Keptn stand-in.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;
mod datadog;
mod external_metrics;
mod keptn;
mod kube_conformance;
mod kubectl_conformance;
mod newrelic;
mod prometheus;
mod traffic;
