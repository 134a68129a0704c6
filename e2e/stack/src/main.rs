//! `serin-stack up`: runs the local stack until SIGTERM or SIGINT.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serin_stack::{Scenario, Stack, StackConfig};
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "serin-stack",
    about = "Local Kubernetes API emulator and workload simulator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the stack on 127.0.0.1; prints `admin <url>` (and `prometheus <url>`, ...) then
    /// `ready` on stdout.
    Up {
        /// Where to write the kubeconfig.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// API port (0: a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Admin port for faults and metrics (0: a free one).
        #[arg(long, default_value_t = 0)]
        admin_port: u16,
        /// Scenario file (YAML): workload behaviour and faults.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Require this bearer token.
        #[arg(long)]
        token: Option<String>,
        /// Watch events retained for resuming watches.
        #[arg(long, default_value_t = 10_000)]
        history: usize,
        /// Start a real Prometheus scraping the traffic world; prints `prometheus <url>`.
        #[arg(long)]
        prometheus: bool,
        /// Start the Datadog API emulator; prints `datadog <url>`.
        #[arg(long)]
        datadog: bool,
        /// Start the New Relic API emulator; prints `newrelic <url>`.
        #[arg(long)]
        newrelic: bool,
        /// The routing objects the traffic world follows (overrides the scenario's
        /// `traffic.provider`): kubernetes, istio, gatewayapi, linkerd, smi, osm, nginx.
        #[arg(long)]
        mesh_provider: Option<String>,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let Command::Up {
        kubeconfig,
        port,
        admin_port,
        scenario,
        token,
        history,
        prometheus,
        datadog,
        newrelic,
        mesh_provider,
    } = Cli::parse().command;
    let mut scenario = match scenario {
        Some(p) => Scenario::load(&p)?,
        None => Scenario::default(),
    };
    if let Some(p) = mesh_provider {
        scenario.traffic.provider = p;
    }
    let config = StackConfig {
        port,
        admin_port: Some(admin_port),
        kubeconfig: Some(kubeconfig),
        token,
        scenario,
        history,
        prometheus,
        datadog,
        newrelic,
        ..StackConfig::default()
    };
    let stack = Stack::start(config).await.context("starting the stack")?;
    let mut out = std::io::stdout().lock();
    if let Some(admin) = stack.admin_url() {
        writeln!(out, "admin {admin}")?;
    }
    if let Some(url) = stack.prometheus_url() {
        writeln!(out, "prometheus {url}")?;
    }
    if let Some(url) = stack.datadog_url() {
        writeln!(out, "datadog {url}")?;
    }
    if let Some(url) = stack.newrelic_url() {
        writeln!(out, "newrelic {url}")?;
    }
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
    }
    stack.shutdown().await;
    Ok(())
}
