//! `serin controller`: the long-running process. Flags follow Flagger's names (with two
//! dashes) so a Flagger deployment's arguments carry over.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kube::Config;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tracing_subscriber::EnvFilter;

use crate::api::Provider;
use crate::cli::plan::parse_min_interval;
use crate::clock::Clock;
use crate::controller::runtime::throttle::ThrottleLayer;
use crate::controller::runtime::{leader, telemetry};
use crate::controller::{self};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Kubeconfig file; without it, $KUBECONFIG, ~/.kube/config, then the in-cluster config.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The API server's address, in place of the kubeconfig's (Flagger's `-master`).
    #[arg(long, value_name = "URL")]
    pub master: Option<String>,
    /// Flagger's kubeconfig of a separate mesh cluster: serin writes routing objects to the
    /// cluster of --kubeconfig, so it refuses to start with another file here rather than
    /// write them to the wrong cluster. Empty, or the same file as --kubeconfig, is accepted.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig_service_mesh: Option<PathBuf>,
    /// Provider for Canaries without `spec.provider`.
    #[arg(long, value_name = "PROVIDER", default_value = "istio")]
    pub mesh_provider: Provider,
    /// Prometheus address for the builtin metrics.
    #[arg(long, value_name = "URL", default_value = "http://prometheus:9090")]
    pub metrics_server: String,
    /// Watch only this namespace (default: all).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Candidate selector label keys, in order of preference.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "app,name,app.kubernetes.io/name"
    )]
    pub selector_labels: Vec<String>,
    /// Track ConfigMaps and Secrets the target uses: a change of their data starts a release.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub enable_config_tracking: bool,
    /// Label and annotation prefixes copied to primary objects (`*`: all).
    #[arg(long, value_delimiter = ',')]
    pub include_label_prefix: Vec<String>,
    /// Annotation prefix of the NGINX ingress controller.
    #[arg(long, default_value = "nginx.ingress.kubernetes.io")]
    pub ingress_annotations_prefix: String,
    /// `ingressClassName` of generated Contour HTTPProxies.
    #[arg(long)]
    pub ingress_class: Option<String>,
    /// Sustained API requests per second the client may make.
    #[arg(long, default_value_t = 100.0)]
    pub kubeconfig_qps: f64,
    /// Burst of API requests above the sustained rate.
    #[arg(long, default_value_t = 250)]
    pub kubeconfig_burst: u32,
    /// Canaries reconciled at once (each reconcile makes its API requests one after the
    /// other). Bounds the controller's connections to the API server, and with them its
    /// memory when thousands of Canaries step together; 0 = unbounded.
    #[arg(long, default_value_t = 32)]
    pub max_concurrent_reconciles: u16,
    /// Threads that run the controller's work; 0 = one per CPU the process may use (its
    /// cgroup's CPU limit counts). One thread saves the hand-offs between threads and bounds
    /// the controller to one core.
    #[arg(long, default_value_t = 0)]
    pub worker_threads: u16,
    /// debug, info, warn or error (or a tracing filter such as `serin=debug,kube=info`).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Port of the /metrics and /healthz endpoint (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Shortest accepted analysis interval; shorter ones are raised to it.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_min_interval)]
    pub min_analysis_interval: Duration,
    /// URL receiving every Canary event (Flagger's event webhook payload) of Canaries that
    /// have no `type: event` webhook of their own.
    #[arg(long, env = "EVENT_WEBHOOK_URL", value_name = "URL")]
    pub event_webhook: Option<String>,
    /// Refuse Canaries whose upstreamRef, metric templateRef or alert providerRef names
    /// another namespace (multi-tenant clusters).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub no_cross_namespace_refs: bool,
    /// Slack incoming-webhook (or chat.postMessage) URL of the global notifier, which gets
    /// the alerts of Canaries without `analysis.alerts`.
    #[arg(long, env = "SLACK_URL", value_name = "URL", hide_env_values = true)]
    pub slack_url: Option<String>,
    /// Bearer token for the Slack URL (chat.postMessage).
    #[arg(
        long,
        env = "SLACK_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub slack_token: Option<String>,
    /// Slack channel of the global notifier (default `general`).
    #[arg(long, value_name = "CHANNEL")]
    pub slack_channel: Option<String>,
    /// Slack user name of the global notifier.
    #[arg(long, value_name = "NAME", default_value = "flagger")]
    pub slack_user: String,
    /// HTTP(S) proxy for the Slack URL.
    #[arg(long, env = "SLACK_PROXY_URL", value_name = "URL")]
    pub slack_proxy_url: Option<String>,
    /// Microsoft Teams webhook URL of the global notifier (takes precedence over Slack).
    #[arg(long, env = "MSTEAMS_URL", value_name = "URL", hide_env_values = true)]
    pub msteams_url: Option<String>,
    /// HTTP(S) proxy for the Teams URL.
    #[arg(long, env = "MSTEAMS_PROXY_URL", value_name = "URL")]
    pub msteams_proxy_url: Option<String>,
    /// Name of this cluster, sent as a `Cluster` field in every alert.
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// Reconcile only the Canaries whose labels match this selector (`shard=a`,
    /// `team in (payments,search)`): several controllers, each with its own selector and
    /// `--leader-election-id`, share one cluster's Canaries.
    #[arg(long, value_name = "SELECTOR")]
    pub canary_selector: Option<String>,
    /// At most this many releases progress at once among the Canaries this controller
    /// reconciles; the others wait (`status.waitingFor: concurrency`) and start in the order
    /// they began to wait. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_progressing: u32,
    /// The same limit in each namespace. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_progressing_per_namespace: u32,
    /// Only the replica holding a Lease reconciles; the others wait to take over.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub enable_leader_election: bool,
    /// Namespace of the leader election Lease (default: `POD_NAMESPACE`, else `default`).
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader election Lease: one per set of replicas (per `--canary-selector`
    /// shard).
    #[arg(long, value_name = "NAME", default_value = crate::controller::runtime::leader::LEASE)]
    pub leader_election_id: String,
    /// How long the Lease holds without renewal: a replica that dies is replaced within it.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_min_interval)]
    pub leader_election_lease_duration: Duration,
    /// Destinations serin may call for metrics, webhooks and alerts: host names
    /// (`prometheus.monitoring`), wildcards (`*.datadoghq.com`) or CIDRs (`10.0.0.0/8`),
    /// comma-separated. Unset: any destination except link-local and metadata addresses.
    #[arg(
        long,
        env = "SERIN_OUTBOUND_ALLOW",
        value_delimiter = ',',
        value_name = "HOST|CIDR"
    )]
    pub outbound_allow: Vec<crate::outbound::Allowed>,
    /// Also call link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10,
    /// fd00:ec2::254, metadata.google.internal), refused by default: they hand out the
    /// node's credentials.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub outbound_allow_link_local: bool,
    /// A label (`KEY=VALUE`, or `KEY` for any value) a Secret must carry to be used as a
    /// MetricTemplate's or AlertProvider's credentials, e.g. `serin.io/credentials=true`:
    /// then a tenant cannot have serin send an unrelated Secret of theirs to an address they
    /// chose. Unset: any Secret the template or provider names.
    #[arg(long, env = "SERIN_SECRET_LABEL", value_name = "KEY[=VALUE]")]
    pub secret_label: Option<crate::analysis::secret::RequiredLabel>,
    /// Flagger flags given that have no effect on serin: one note each at start.
    #[arg(skip)]
    pub flagger_notes: Vec<String>,
}

impl ControllerArgs {
    /// The arguments of `serin controller WORDS...` (Flagger's spellings included), as the
    /// command line would parse them: for running the controller in process.
    pub fn parse_words(words: &[String]) -> anyhow::Result<ControllerArgs> {
        let line = ["serin", "controller"].into_iter().map(Into::into);
        let line = line.chain(words.iter().map(Into::into)).collect();
        let (line, notes) = crate::cli::flagger_flags::normalize(line);
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(line)?;
        match cli.command {
            crate::cli::Command::Controller(mut args) => {
                args.flagger_notes = notes;
                Ok(*args)
            }
            _ => anyhow::bail!("not the controller's arguments"),
        }
    }
}

pub fn run(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    init_logging(&args)?;
    for note in &args.flagger_notes {
        tracing::info!("{note}");
    }
    refuse_a_separate_mesh_cluster(&args)?;
    crate::outbound::install(crate::outbound::Policy {
        allow: args.outbound_allow.clone(),
        allow_link_local: args.outbound_allow_link_local,
    });
    crate::analysis::secret::require_label(args.secret_label.clone());
    let runtime = runtime(args.worker_threads)?;
    runtime.block_on(serve(args, Clock::System, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// The async runtime: `worker_threads` threads (`--worker-threads`), or one per CPU at 0.
fn runtime(worker_threads: u16) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if worker_threads > 0 {
        runtime.worker_threads(usize::from(worker_threads));
    }
    runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Flagger's `-kubeconfig-service-mesh` puts routing objects in another cluster; serin would
/// write them beside the workloads, where the mesh never reads them.
fn refuse_a_separate_mesh_cluster(args: &ControllerArgs) -> anyhow::Result<()> {
    match &args.kubeconfig_service_mesh {
        Some(mesh) if !mesh.as_os_str().is_empty() && Some(mesh) != args.kubeconfig.as_ref() => {
            anyhow::bail!(
                "--kubeconfig-service-mesh {}: serin writes routing objects to the cluster of \
                 --kubeconfig and does not support a separate mesh cluster; remove the flag, \
                 or give it the same file as --kubeconfig",
                mesh.display()
            )
        }
        _ => Ok(()),
    }
}

fn init_logging(args: &ControllerArgs) -> anyhow::Result<()> {
    let directive = match args.log_level.as_str() {
        level @ ("trace" | "debug" | "info" | "warn" | "error") => {
            format!("{level},hyper=warn,rustls=warn,tower=warn,kube_client=warn,kube_runtime=warn")
        }
        "warning" => "warn".to_string(),
        custom => custom.to_string(),
    };
    let filter = EnvFilter::try_new(&directive)
        .with_context(|| format!("--log-level {:?} is not a level or filter", args.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

async fn clients(
    args: &ControllerArgs,
    telemetry: &Arc<telemetry::Telemetry>,
) -> anyhow::Result<controller::Clients> {
    if args.kubeconfig_qps.is_nan() || args.kubeconfig_qps <= 0.0 || args.kubeconfig_burst == 0 {
        anyhow::bail!("--kubeconfig-qps and --kubeconfig-burst must be positive");
    }
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}: cannot read", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("--kubeconfig {}: invalid", path.display()))?
        }
        None => Config::infer()
            .await
            .context("no cluster configuration found: pass --kubeconfig or run in a cluster")?,
    };
    if let Some(master) = args.master.as_deref().filter(|m| !m.is_empty()) {
        config.cluster_url = master
            .parse()
            .with_context(|| format!("--master {master:?} is not a URL"))?;
    }
    config.read_timeout = Some(Duration::from_secs(300));
    // Named in the API server's audit log and metrics as client-go programs are (kube-rs
    // sends no User-Agent of its own).
    config.headers.push((
        hyper::header::USER_AGENT,
        hyper::header::HeaderValue::from_static(concat!("serin/", env!("CARGO_PKG_VERSION"))),
    ));
    let builder = |config: Config| {
        kube::client::ClientBuilder::try_from(config).context("cannot build the Kubernetes client")
    };
    let throttle = ThrottleLayer::new(args.kubeconfig_qps, args.kubeconfig_burst);
    let count = telemetry::api_requests::CountLayer::new(telemetry.clone());
    Ok(controller::Clients {
        outbox: builder(config.clone())?.with_layer(&count).build(),
        api: builder(config)?
            .with_layer(&throttle)
            .with_layer(&count)
            .build(),
    })
}

/// The controller in the caller's runtime until `shutdown` resolves: what `serin controller`
/// runs after setting up logging and the process-wide policies (outbound destinations, the
/// Secrets' label). Tests run it in process with [`Clock::Runtime`] under paused time.
// Long on purpose: the start-up sequence (client, telemetry, health, leader election,
// controller, shutdown) read top to bottom in the order it happens.
pub async fn serve(
    args: ControllerArgs,
    clock: Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let telemetry = Arc::new(telemetry::Telemetry::new());
    let clients = clients(&args, &telemetry).await?;
    let client = clients.api.clone();
    let version = client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API")?;
    check_canary_selector(&client, &args).await?;
    telemetry.info(env!("CARGO_PKG_VERSION"), args.mesh_provider.as_str());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], args.port)))
        .await
        .with_context(|| format!("--port {}: cannot listen", args.port))?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(args.port);
    let health = Arc::new(telemetry::server::Health::default());
    tokio::spawn(telemetry::server::serve(
        listener,
        telemetry.clone(),
        health.clone(),
    ));
    tracing::info!(
        kubernetes = %format!("{}.{}", version.major, version.minor),
        mesh_provider = %args.mesh_provider,
        namespace = args.namespace.as_deref().unwrap_or("<all>"),
        port,
        "serin controller starting"
    );
    let config = controller::Config {
        mesh_provider: args.mesh_provider,
        metrics_server: args.metrics_server.clone(),
        namespace: args.namespace.clone(),
        canary_selector: args
            .canary_selector
            .clone()
            .filter(|s| !s.trim().is_empty()),
        concurrency: crate::controller::runtime::slots::Limits {
            progressing: args.max_progressing,
            per_namespace: args.max_progressing_per_namespace,
        },
        selector_labels: args.selector_labels.clone(),
        config_tracking: args.enable_config_tracking,
        include_label_prefixes: args.include_label_prefix.clone(),
        min_interval: args.min_analysis_interval,
        max_concurrent_reconciles: args.max_concurrent_reconciles,
        router: crate::controller::router::Options {
            nginx_annotations_prefix: args.ingress_annotations_prefix.clone(),
            ingress_class: args.ingress_class.clone(),
        },
        event_webhook: args.event_webhook.clone(),
        no_cross_namespace_refs: args.no_cross_namespace_refs,
        cluster_name: args.cluster_name.clone().filter(|c| !c.is_empty()),
        notifier: crate::controller::notify::alerts::GlobalFlags {
            slack_url: args.slack_url.clone(),
            slack_token: args.slack_token.clone(),
            slack_channel: args.slack_channel.clone(),
            slack_user: args.slack_user.clone(),
            slack_proxy_url: args.slack_proxy_url.clone(),
            msteams_url: args.msteams_url.clone(),
            msteams_proxy_url: args.msteams_proxy_url.clone(),
        },
        clock,
    };
    let Some(election) = election(&args) else {
        return controller::run(clients, config, telemetry, health, shutdown).await;
    };
    health.set_follower(true);
    let mut leadership = tokio::select! {
        leadership = leader::acquire(client.clone(), &election) => leadership?,
        () = shutdown.clone() => return Ok(()),
    };
    health.set_follower(false);
    // Losing the Lease stops the controller, then the process exits.
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let flag = lost.clone();
    let keeper = tokio::spawn(async move {
        tokio::select! {
            () = leadership.lost() => {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = lost_tx.send(());
                leadership.abandon().await;
            }
            _ = release_rx => leadership.release().await,
        }
    });
    // A signal finishes the in-flight reconciles; a lost Lease cancels them at once (the
    // controller's future, which polls every reconcile, is dropped): a deposed leader must
    // not go on writing while the new one acts, however long its webhooks take.
    let running = controller::run(clients, config, telemetry, health, shutdown);
    tokio::select! {
        result = running => result?,
        _ = lost_rx => {}
    }
    if lost.load(std::sync::atomic::Ordering::SeqCst) {
        anyhow::bail!(
            "lost the leader election Lease; in-flight reconciles cancelled, exiting so that \
             only the new leader acts"
        );
    }
    let _ = release_tx.send(());
    let _ = keeper.await;
    Ok(())
}

/// A `--canary-selector` the API server cannot parse would fail every list of the Canary
/// watch, retried forever with nothing reconciled: refused at start instead, by the API
/// server's own parser (one list of at most one Canary).
async fn check_canary_selector(client: &kube::Client, args: &ControllerArgs) -> anyhow::Result<()> {
    let Some(selector) = args
        .canary_selector
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    else {
        return Ok(());
    };
    let canaries: kube::Api<crate::api::Canary> = match &args.namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    };
    let params = kube::api::ListParams::default().labels(selector).limit(1);
    match canaries.list_metadata(&params).await {
        Err(kube::Error::Api(e)) if e.code == 400 => anyhow::bail!(
            "--canary-selector {selector:?}: not a label selector the API server accepts ({}); \
             write it as `key=value`, `key!=value`, `key in (a,b)` or `key`, comma-separated",
            e.message
        ),
        // Anything else (RBAC, a slow API server) shows in the watch's own errors.
        _ => Ok(()),
    }
}

/// The election, when `--enable-leader-election` asks for one.
fn election(args: &ControllerArgs) -> Option<leader::Election> {
    args.enable_leader_election.then(|| leader::Election {
        namespace: args
            .leader_election_namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into()),
        lease: args.leader_election_id.clone(),
        lease_duration: args.leader_election_lease_duration,
        identity: leader::identity(),
    })
}

/// SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight reconciles");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_sets_the_runtime_s_threads_and_zero_means_one_per_cpu() {
        assert_eq!(runtime(1).unwrap().metrics().num_workers(), 1);
        assert_eq!(runtime(3).unwrap().metrics().num_workers(), 3);
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(runtime(0).unwrap().metrics().num_workers(), cpus);
    }
}
