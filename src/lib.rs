//! serin: a progressive-delivery controller for Kubernetes that speaks Flagger's API.
//!
//! - [`analysis`]: metric checks (Prometheus, Datadog, New Relic), templates, builtin metrics.
//! - [`api`]: the `flagger.app/v1beta1` types (Canary, MetricTemplate, AlertProvider), their
//!   CRDs and the offline validator.
//! - [`cli`]: the `serin` command line, one module per subcommand.
//! - [`controller`]: `serin controller`, the reconcile loop and the I/O of each effect.
//! - [`plan`]: a Canary spec turned into the engine's release plan.
//! - [`workload`]: readiness of Deployments and DaemonSets, read the way Flagger reads it.

pub mod analysis;
pub mod api;
pub mod canary_plan;
pub mod cli;
pub mod controller;
pub mod loadtester;
pub mod outbound;
pub mod rbac;
pub mod workload;
