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
    Up(UpArgs),
    /// Start the whole stack (Prometheus, Datadog, New Relic) with a ready podinfo demo
    /// under load in namespace `test`, and print how to run serin against it.
    Demo {
        /// Directory for the kubeconfig and the demo's Canary manifest.
        #[arg(long, default_value = "/tmp/serin-demo")]
        dir: PathBuf,
        /// The routing objects the traffic world follows, and the Canary's provider.
        #[arg(long, default_value = "kubernetes")]
        mesh_provider: String,
    },
}

/// `serin-stack up`'s options: the stack's configuration, as flags.
#[derive(clap::Args)]
struct UpArgs {
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
    /// Start the Graphite render API emulator; prints `graphite <url>`.
    #[arg(long)]
    graphite: bool,
    /// Start the InfluxDB query API emulator; prints `influxdb <url>`.
    #[arg(long)]
    influxdb: bool,
    /// Start the Dynatrace Metrics API emulator; prints `dynatrace <url>`.
    #[arg(long)]
    dynatrace: bool,
    /// Start the Splunk Observability (SignalFlow) emulator; prints `splunk <url>`.
    #[arg(long)]
    splunk: bool,
    /// Start the CloudWatch API emulator; prints `cloudwatch <url>`.
    #[arg(long)]
    cloudwatch: bool,
    /// Start the Stackdriver emulator and its token endpoints; prints `stackdriver <url>`.
    #[arg(long)]
    stackdriver: bool,
    /// The routing objects the traffic world follows (overrides the scenario's
    /// `traffic.provider`): kubernetes, istio, gatewayapi, linkerd, smi, osm, nginx.
    #[arg(long)]
    mesh_provider: Option<String>,
    /// The API server: `emulator` (in process) or `real` (kube-local: kube-apiserver,
    /// etcd and kube-controller-manager, built by scripts/setup).
    #[arg(long, default_value = "emulator")]
    control_plane: serin_stack::ControlPlane,
}

impl UpArgs {
    fn into_config(self) -> Result<StackConfig> {
        let mut scenario = match self.scenario {
            Some(p) => Scenario::load(&p)?,
            None => Scenario::default(),
        };
        if let Some(p) = self.mesh_provider {
            scenario.traffic.provider = p;
        }
        Ok(StackConfig {
            port: self.port,
            admin_port: Some(self.admin_port),
            kubeconfig: Some(self.kubeconfig),
            token: self.token,
            scenario,
            history: self.history,
            prometheus: self.prometheus,
            datadog: self.datadog,
            newrelic: self.newrelic,
            graphite: self.graphite,
            influxdb: self.influxdb,
            dynatrace: self.dynatrace,
            splunk: self.splunk,
            cloudwatch: self.cloudwatch,
            stackdriver: self.stackdriver,
            control_plane: self.control_plane,
            ..StackConfig::default()
        })
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Up(args) => {
            let config = args.into_config()?;
            let stack = Stack::start(config).await.context("starting the stack")?;
            let term = sigterm()?;
            let mut out = std::io::stdout().lock();
            print_urls(&mut out, &stack)?;
            writeln!(out, "ready")?;
            out.flush()?;
            drop(out);
            wait_for_signal(term).await?;
            stack.shutdown().await;
        }
        Command::Demo { dir, mesh_provider } => demo(dir, mesh_provider).await?,
    }
    Ok(())
}

fn print_urls(out: &mut impl Write, stack: &Stack) -> Result<()> {
    for (name, url) in [
        ("admin", stack.admin_url()),
        ("prometheus", stack.prometheus_url()),
        ("datadog", stack.datadog_url()),
        ("newrelic", stack.newrelic_url()),
        ("graphite", stack.graphite_url()),
        ("influxdb", stack.influxdb_url()),
        ("dynatrace", stack.dynatrace_url()),
        ("splunk", stack.splunk_url()),
        ("cloudwatch", stack.cloudwatch_url()),
        ("stackdriver", stack.stackdriver_url()),
    ] {
        if let Some(url) = url {
            writeln!(out, "{name} {url}")?;
        }
    }
    Ok(())
}

/// Installs the SIGTERM handler: before `ready` is printed, so a client that stops the
/// stack as soon as it reads `ready` gets a clean exit.
fn sigterm() -> Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")
}

async fn wait_for_signal(mut term: tokio::signal::unix::Signal) -> Result<()> {
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
    }
    Ok(())
}

async fn demo(dir: PathBuf, provider: String) -> Result<()> {
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let kubeconfig = dir.join("kubeconfig");
    let mut scenario = Scenario::default();
    scenario.traffic.provider = provider.clone();
    let config = |prometheus| StackConfig {
        kubeconfig: Some(kubeconfig.clone()),
        scenario: scenario.clone(),
        prometheus,
        datadog: true,
        newrelic: true,
        ..StackConfig::default()
    };
    // Without Prometheus installed the demo still runs, with the emulators only.
    let stack = match Stack::start(config(true)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warning: no Prometheus ({e:#}); run scripts/setup to install it");
            Stack::start(config(false))
                .await
                .context("starting the stack")?
        }
    };
    let term = sigterm()?;
    let notes = serin_stack::demo::populate(&stack, &provider)?;
    let canary = dir.join("canary.yaml");
    std::fs::write(&canary, serin_stack::demo::canary_yaml(&stack, &provider))
        .with_context(|| format!("writing {}", canary.display()))?;
    let k = kubeconfig.display();
    let mut out = std::io::stdout().lock();
    writeln!(out, "kubeconfig {k}")?;
    print_urls(&mut out, &stack)?;
    for n in notes {
        writeln!(out, "note: {n}")?;
    }
    let metrics_server = stack.prometheus_url().unwrap_or("http://prometheus:9090");
    let image = serin_stack::demo::IMAGE;
    let next = image.replace("6.0.0", "6.0.1");
    writeln!(
        out,
        "\nA podinfo Deployment and Service in namespace test get {rate} requests/s.\n\
         Run serin against it (in another terminal):\n\n  \
         serin controller --kubeconfig {k} --mesh-provider {provider} --metrics-server {metrics_server}\n\n\
         Then:\n\n  \
         kubectl --kubeconfig {k} apply -f {canary}\n  \
         kubectl --kubeconfig {k} -n test set image deployment/podinfo podinfod={next}          # a healthy release\n  \
         kubectl --kubeconfig {k} -n test set image deployment/podinfo podinfod={next}-faulty   # fails 30 %: rolled back\n  \
         kubectl --kubeconfig {k} -n test get canaries -w\n  \
         curl -s {admin}/traffic                                  # where the requests go\n\n\
         Stop with Ctrl-C.",
        rate = serin_stack::traffic::config::DEFAULT_RATE,
        canary = canary.display(),
        admin = stack.admin_url().unwrap_or_default(),
    )?;
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);
    wait_for_signal(term).await?;
    stack.shutdown().await;
    Ok(())
}
