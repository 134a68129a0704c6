//! serin: a progressive-delivery controller for Kubernetes that speaks Flagger's API.
//!
//! - [`analysis`]: metric checks (Prometheus, Datadog, New Relic, Graphite, InfluxDB), templates, builtin metrics.
//! - [`api`]: the `flagger.app/v1beta1` types (Canary, MetricTemplate, AlertProvider), their
//!   CRDs and the offline validator.
//! - [`cli`]: the `serin` command line, one module per subcommand.
//! - [`controller`]: `serin controller`, the reconcile loop and the I/O of each effect.
//! - [`http_server`]: what the controller's telemetry server and the load tester share.
//! - [`plan`]: a Canary spec turned into the engine's release plan.
//! - [`workload`]: readiness of Deployments and DaemonSets, read the way Flagger reads it.

pub mod analysis;
pub mod api;
pub mod canary_plan;
pub mod cli;
pub mod clock;
pub mod controller;
pub mod dashboard;
pub mod http_server;
pub mod loadtester;
pub mod outbound;
pub mod rbac;
pub mod workload;

/// An error and its causes on one line, each said once: some errors show only the outermost
/// message (reqwest's "error sending request", the cause further down), others already end
/// with their cause's (kube's reading a kubeconfig), which a plain `{:#}` would repeat.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = anyhow::Error::new(io)
            .context("reading /k: no such file")
            .context("--kubeconfig /k: cannot read");
        assert_eq!(
            error_chain(error.as_ref()),
            "--kubeconfig /k: cannot read: reading /k: no such file"
        );
        let plain = anyhow::anyhow!("refused").context("calling the API");
        assert_eq!(error_chain(plain.as_ref()), "calling the API: refused");
    }
}
