//! `serin-stack`: a local stand-in for a Kubernetes cluster, for tests and demos.
//!
//! It serves the Kubernetes REST API on 127.0.0.1 (enough for kube-rs and kubectl), plays
//! the Deployment/DaemonSet controllers and the kubelet, and can inject faults. Its traffic
//! world sends simulated requests where the routing objects say and exports them as the
//! meshes do, for a real Prometheus it can start and for its Datadog, New Relic, Graphite,
//! InfluxDB, Dynatrace, Splunk, CloudWatch, Stackdriver, Keptn and external metrics API emulators. It knows nothing about any particular
//! controller. See `e2e/README.md` for
//! what it emulates.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let stack = serin_stack::Stack::start(serin_stack::StackConfig::default()).await?;
//! println!("kubectl --kubeconfig {} get ns", stack.kubeconfig_path().display());
//! stack.shutdown().await;
//! # Ok(()) }
//! ```

mod admin;
mod apply;
mod clock;
mod cloudwatch;
pub mod control_plane;
mod convert;
mod crd;
mod crud;
mod datadog;
mod defaults;
pub mod demo;
mod discovery;
mod dynatrace;
mod error;
mod external_metrics;
mod faults;
mod fields;
mod gc;
mod graphite;
mod influxdb;
mod jsonpath;
mod keptn;
mod knative;
mod kubeconfig;
mod kubelet;
mod metadata;
mod metric_emulator;
mod mirror;
mod newrelic;
mod openapi;
mod patch;
mod prometheus;
mod protobuf;
mod provider_faults;
mod query_cursor;
mod registry;
mod scale;
mod scenario;
mod schema;
mod selector;
mod server;
mod simulator;
mod splunk;
mod stackdriver;
mod stateful_sets;
mod store;
mod table;
pub mod testing;
pub mod traffic;
mod watch;

pub use cloudwatch::CloudWatchConfig;
pub use control_plane::ControlPlane;
pub use datadog::DatadogConfig;
pub use dynatrace::{DynatraceConfig, service_entity_id};
pub use external_metrics::ExternalMetricsConfig;
pub use faults::{FaultRule, Faults};
pub use graphite::GraphiteConfig;
pub use influxdb::InfluxDbConfig;
pub use newrelic::NewRelicConfig;
pub use provider_faults::{FaultMode, ProviderFault, ProviderFaults};
pub use scenario::{ImageRule, Scenario, Workloads};
pub use splunk::SplunkConfig;
pub use stackdriver::StackdriverConfig;
pub use traffic::world::{WorkloadStats, World};

use anyhow::{Context, Result};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

/// How to start a stack. `Default` gives ephemeral ports, no auth, default workloads.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// API port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Admin port (faults, metrics); `None` disables the admin server, 0 picks a free one.
    pub admin_port: Option<u16>,
    /// Where to write the kubeconfig; `None`: a file in the temp directory, removed on shutdown.
    pub kubeconfig: Option<PathBuf>,
    /// Require `Authorization: Bearer <token>` (written into the kubeconfig).
    pub token: Option<String>,
    pub scenario: Scenario,
    /// Watch events kept for resuming watches; older resourceVersions get 410 Gone.
    pub history: usize,
    /// How often watches that asked for bookmarks get one (when something changed).
    pub bookmark_interval: Duration,
    /// Start a real Prometheus scraping the traffic world (needs the admin server, which
    /// serves the world's metrics).
    pub prometheus: bool,
    /// Start the Datadog API emulator (keys and faults: `scenario.datadog`).
    pub datadog: bool,
    /// Start the New Relic API emulator (account, keys and faults: `scenario.newrelic`).
    pub newrelic: bool,
    /// Start the Graphite render API emulator (credentials and faults: `scenario.graphite`).
    pub graphite: bool,
    /// Start the InfluxDB query API emulator (token, org, bucket and faults:
    /// `scenario.influxdb`).
    pub influxdb: bool,
    /// Start the Dynatrace Metrics API emulator (token and faults: `scenario.dynatrace`).
    pub dynatrace: bool,
    /// Start the Splunk Observability (SignalFlow) emulator (token and faults:
    /// `scenario.splunk`).
    pub splunk: bool,
    /// Start the CloudWatch API emulator (keys, region and faults: `scenario.cloudwatch`).
    pub cloudwatch: bool,
    /// Start the Stackdriver (Cloud Monitoring) emulator and its token endpoints (project,
    /// account and faults: `scenario.stackdriver`).
    pub stackdriver: bool,
    /// The traffic world's time moves only through `Stack::traffic().step(..)`, for
    /// deterministic tests; otherwise it ticks every second.
    pub manual_traffic_clock: bool,
    /// The emulator (default) or a real kube-apiserver and controller manager (kube-local).
    /// Over the real one there is no fault injection, no `token` and no `port`: it has its
    /// own certificates and picks its port.
    pub control_plane: ControlPlane,
    /// YAML files of CustomResourceDefinitions installed at start, before anything watches
    /// (on the real control plane, before the controller manager starts, so its garbage
    /// collector knows their kinds from the beginning).
    pub crds: Vec<PathBuf>,
    /// Real control plane only: serve watches from the API server's watch cache (its
    /// default). Off, watches read etcd directly, so one resumed from a revision
    /// [`Stack::compact`] removed gets 410 Gone, as after etcd compaction in a busy cluster.
    pub watch_cache: bool,
    /// Run a stand-in for Knative Serving (a Revision per Knative Service template, its
    /// readiness after the image's ready delay); needs the Knative CRDs among `crds`.
    pub knative: bool,
    /// Run a stand-in for Keptn's metrics operator (KeptnMetric values and Analysis verdicts
    /// from the traffic world); needs the CRDs of `e2e/crds/keptn.yaml` among `crds`.
    pub keptn: bool,
    /// Start the External Metrics API adapter emulator (token, window and faults:
    /// `scenario.external_metrics`).
    pub external_metrics: bool,
    /// Real control plane only: the process's shared kube-local for these `crds`
    /// ([`control_plane::Shared`]) rather than one of the stack's own. Stacks sharing one
    /// keep apart by `namespace`; compaction and `watch_cache: false` need their own.
    pub shared_control_plane: bool,
    /// The one namespace whose Pods, routing objects, Knative Services and Keptn objects the
    /// stand-ins serve (`None`: every namespace); whoever sets it creates it. Stacks on one
    /// shared control plane each set their own.
    pub namespace: Option<String>,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            port: 0,
            admin_port: Some(0),
            kubeconfig: None,
            token: None,
            scenario: Scenario::default(),
            history: 10_000,
            bookmark_interval: Duration::from_secs(1),
            prometheus: false,
            datadog: false,
            newrelic: false,
            graphite: false,
            influxdb: false,
            dynatrace: false,
            splunk: false,
            cloudwatch: false,
            stackdriver: false,
            manual_traffic_clock: false,
            control_plane: ControlPlane::default(),
            crds: Vec::new(),
            watch_cache: true,
            knative: false,
            keptn: false,
            external_metrics: false,
            shared_control_plane: false,
            namespace: None,
        }
    }
}

/// A running stack. Dropping it stops it too (without waiting).
pub struct Stack {
    url: String,
    admin_url: Option<String>,
    kubeconfig: PathBuf,
    remove_kubeconfig: bool,
    faults: Arc<Faults>,
    store: Arc<store::Store>,
    world: Arc<World>,
    prometheus: Option<prometheus::Prometheus>,
    datadog_url: Option<String>,
    datadog_faults: Arc<ProviderFaults>,
    newrelic_url: Option<String>,
    newrelic_faults: Arc<ProviderFaults>,
    graphite_url: Option<String>,
    graphite_faults: Arc<ProviderFaults>,
    influxdb_url: Option<String>,
    influxdb_faults: Arc<ProviderFaults>,
    dynatrace_url: Option<String>,
    dynatrace_faults: Arc<ProviderFaults>,
    splunk_url: Option<String>,
    splunk_faults: Arc<ProviderFaults>,
    cloudwatch_url: Option<String>,
    cloudwatch_faults: Arc<ProviderFaults>,
    stackdriver_url: Option<String>,
    stackdriver_faults: Arc<ProviderFaults>,
    external_metrics_url: Option<String>,
    external_metrics_faults: Arc<ProviderFaults>,
    stop: signal::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    kube_local: Option<RealApi>,
}

/// The real control plane behind a stack: its own, or the process's shared one.
enum RealApi {
    Own(Box<control_plane::KubeLocal>),
    Shared(Arc<control_plane::Shared>),
}

impl RealApi {
    fn recent_log(&self) -> Vec<String> {
        match self {
            RealApi::Own(kl) => kl.recent_log(),
            RealApi::Shared(shared) => shared.recent_log(),
        }
    }
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("url", &self.url)
            .field("admin_url", &self.admin_url)
            .field("prometheus_url", &self.prometheus_url())
            .finish()
    }
}

impl Stack {
    /// Binds the ports, writes the kubeconfig and starts serving. Must run inside a Tokio
    /// runtime; the stack is usable when this returns.
    pub async fn start(config: StackConfig) -> Result<Stack> {
        let real = config.control_plane == ControlPlane::Real;
        let store = Arc::new(store::Store::new(config.history));
        if !real {
            // The real control plane makes its own.
            create_default_namespaces(&store)?;
        }
        let world = traffic_world(&config, store.clone(), real)?;
        if config.prometheus && config.admin_port.is_none() {
            anyhow::bail!("Prometheus scrapes the admin server's /traffic/metrics: set admin_port");
        }
        let faults = Arc::new(Faults::default());
        faults.add(config.scenario.faults.clone());
        // Bind and write everything that can fail before spawning anything, so a failed
        // start leaves no task behind.
        let listeners = Listeners::bind(&config, real).await?;
        let admin_url = url_of(listeners.admin.as_ref())?;
        let datadog_url = url_of(listeners.datadog.as_ref())?;
        let newrelic_url = url_of(listeners.newrelic.as_ref())?;
        let graphite_url = url_of(listeners.graphite.as_ref())?;
        let influxdb_url = url_of(listeners.influxdb.as_ref())?;
        let dynatrace_url = url_of(listeners.dynatrace.as_ref())?;
        let splunk_url = url_of(listeners.splunk.as_ref())?;
        let cloudwatch_url = url_of(listeners.cloudwatch.as_ref())?;
        let stackdriver_url = url_of(listeners.stackdriver.as_ref())?;
        let external_metrics_url = url_of(listeners.external_metrics.as_ref())?;
        let (kubeconfig, remove_kubeconfig) = kubeconfig_file(&config);
        let api = match real {
            true => ApiServer::start_kube_local(&kubeconfig, &config).await?,
            false => ApiServer::emulator(listeners.api.as_ref(), &kubeconfig, &config)?,
        };
        // Each task that stops with the stack subscribes to `stop` (`serve_on`).
        let (stop, _) = signal::channel(false);
        let mut stack = Stack {
            url: api.url,
            admin_url,
            kubeconfig,
            remove_kubeconfig,
            faults,
            store,
            world,
            prometheus: None,
            datadog_url,
            datadog_faults: provider_faults(config.scenario.datadog.fault.as_ref()),
            newrelic_url,
            newrelic_faults: provider_faults(config.scenario.newrelic.fault.as_ref()),
            graphite_url,
            graphite_faults: provider_faults(config.scenario.graphite.fault.as_ref()),
            influxdb_url,
            influxdb_faults: provider_faults(config.scenario.influxdb.fault.as_ref()),
            dynatrace_url,
            dynatrace_faults: provider_faults(config.scenario.dynatrace.fault.as_ref()),
            splunk_url,
            splunk_faults: provider_faults(config.scenario.splunk.fault.as_ref()),
            cloudwatch_url,
            cloudwatch_faults: provider_faults(config.scenario.cloudwatch.fault.as_ref()),
            stackdriver_url,
            stackdriver_faults: provider_faults(config.scenario.stackdriver.fault.as_ref()),
            external_metrics_url,
            external_metrics_faults: provider_faults(
                config.scenario.external_metrics.fault.as_ref(),
            ),
            stop,
            tasks: Vec::new(),
            kube_local: api.kube_local,
        };
        stack.spawn_servers(listeners, &config);
        match api.client {
            Some(client) => stack.spawn_node_stand_ins(client, &config),
            None => stack.spawn_emulated_controllers(&config.scenario.workloads),
        }
        stack.world.reroute();
        if !config.manual_traffic_clock {
            let world = stack.world.clone();
            stack.tasks.push(tokio::spawn(world.run()));
        }
        if !real {
            for file in &config.crds {
                stack.create_all(file)?;
            }
        }
        if config.knative {
            stack.spawn_knative(&config).await?;
        }
        if config.keptn {
            stack.spawn_keptn(&config).await?;
        }
        // Started last: on failure, dropping `stack` stops everything started so far.
        if config.prometheus
            && let Some(admin) = &stack.admin_url
        {
            let target = admin.trim_start_matches("http://");
            stack.prometheus =
                Some(prometheus::Prometheus::start(target, "/traffic/metrics").await?);
        }
        tracing::info!(url = %stack.url, admin = ?stack.admin_url, prometheus = ?stack.prometheus_url(),
            kubeconfig = %stack.kubeconfig.display(), "serin-stack serving");
        Ok(stack)
    }

    /// Serves each bound port: the emulated API, the admin server, the metric-provider
    /// emulators.
    fn spawn_servers(&mut self, listeners: Listeners, config: &StackConfig) {
        // What the API and admin servers share: the admin server reports the open watches.
        let shared = Arc::new(server::Shared {
            store: self.store.clone(),
            faults: self.faults.clone(),
            token: config.token.clone(),
            bookmark_interval: config.bookmark_interval,
            watches: AtomicI64::new(0),
        });
        if let Some(l) = listeners.api {
            let shared = shared.clone();
            self.serve_on(l, move |req| server::handle(shared.clone(), req));
        }
        if let Some(l) = listeners.admin {
            let admin = Arc::new(admin::State {
                shared: shared.clone(),
                world: self.world.clone(),
                datadog: self.datadog_faults.clone(),
                newrelic: self.newrelic_faults.clone(),
                graphite: self.graphite_faults.clone(),
                influxdb: self.influxdb_faults.clone(),
                dynatrace: self.dynatrace_faults.clone(),
                splunk: self.splunk_faults.clone(),
                cloudwatch: self.cloudwatch_faults.clone(),
                stackdriver: self.stackdriver_faults.clone(),
                external_metrics: self.external_metrics_faults.clone(),
            });
            self.serve_on(l, move |req| admin::handle(admin.clone(), req));
        }
        if let Some(l) = listeners.datadog {
            let dd = Arc::new(datadog::Datadog {
                world: self.world.clone(),
                faults: self.datadog_faults.clone(),
                config: config.scenario.datadog.clone(),
            });
            self.serve_on(l, move |req| datadog::handle(dd.clone(), req));
        }
        if let Some(l) = listeners.newrelic {
            let nr = Arc::new(newrelic::NewRelic {
                world: self.world.clone(),
                faults: self.newrelic_faults.clone(),
                config: config.scenario.newrelic.clone(),
            });
            self.serve_on(l, move |req| newrelic::handle(nr.clone(), req));
        }
        if let Some(l) = listeners.graphite {
            let graphite = Arc::new(graphite::Graphite {
                world: self.world.clone(),
                faults: self.graphite_faults.clone(),
                config: config.scenario.graphite.clone(),
            });
            self.serve_on(l, move |req| graphite::handle(graphite.clone(), req));
        }
        if let Some(l) = listeners.influxdb {
            let influxdb = Arc::new(influxdb::InfluxDb {
                world: self.world.clone(),
                faults: self.influxdb_faults.clone(),
                config: config.scenario.influxdb.clone(),
            });
            self.serve_on(l, move |req| influxdb::handle(influxdb.clone(), req));
        }
        if let Some(l) = listeners.dynatrace {
            let dt = Arc::new(dynatrace::Dynatrace {
                world: self.world.clone(),
                faults: self.dynatrace_faults.clone(),
                config: config.scenario.dynatrace.clone(),
            });
            self.serve_on(l, move |req| dynatrace::handle(dt.clone(), req));
        }
        if let Some(l) = listeners.splunk {
            let sf = Arc::new(splunk::Splunk {
                world: self.world.clone(),
                faults: self.splunk_faults.clone(),
                config: config.scenario.splunk.clone(),
            });
            self.serve_on(l, move |req| splunk::handle(sf.clone(), req));
        }
        if let Some(l) = listeners.cloudwatch {
            let cw = Arc::new(cloudwatch::CloudWatch {
                world: self.world.clone(),
                faults: self.cloudwatch_faults.clone(),
                config: config.scenario.cloudwatch.clone(),
            });
            self.serve_on(l, move |req| cloudwatch::handle(cw.clone(), req));
        }
        if let Some(l) = listeners.stackdriver {
            let sd = Arc::new(stackdriver::Stackdriver::new(
                self.world.clone(),
                self.stackdriver_faults.clone(),
                config.scenario.stackdriver.clone(),
            ));
            self.serve_on(l, move |req| stackdriver::handle(sd.clone(), req));
        }
        if let Some(l) = listeners.external_metrics {
            let em = Arc::new(external_metrics::ExternalMetrics {
                world: self.world.clone(),
                faults: self.external_metrics_faults.clone(),
                config: config.scenario.external_metrics.clone(),
            });
            self.serve_on(l, move |req| external_metrics::handle(em.clone(), req));
        }
    }

    /// Serves `listener` with `handler` until the stack stops.
    fn serve_on<F, Fut>(&mut self, listener: TcpListener, handler: F)
    where
        F: Fn(hyper::Request<Incoming>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<hyper::Response<server::Body>, std::convert::Infallible>>
            + Send
            + 'static,
    {
        let stop = self.stop.subscribe();
        self.tasks
            .push(tokio::spawn(serve(listener, stop, handler)));
    }

    /// On the emulator the stack plays the controllers too: the garbage collector, and the
    /// Deployment and DaemonSet controllers with their kubelets (the simulator), and the
    /// StatefulSet controller with its pods (`stateful_sets`).
    fn spawn_emulated_controllers(&mut self, workloads: &Workloads) {
        self.tasks.push(tokio::spawn(gc::run(self.store.clone())));
        self.tasks.push(tokio::spawn(simulator::run(
            self.store.clone(),
            workloads.clone(),
        )));
        self.tasks.push(tokio::spawn(stateful_sets::run(
            self.store.clone(),
            workloads.clone(),
        )));
    }

    /// The real controllers need only the nodes' part played (the kubelet stand-in), and
    /// the traffic world a mirror of what it reads.
    fn spawn_node_stand_ins(&mut self, client: kube::Client, config: &StackConfig) {
        let workloads = config.scenario.workloads.clone();
        let kubelet_client = client.clone();
        let namespace = config.namespace.clone();
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = kubelet::run(kubelet_client, workloads, namespace).await {
                tracing::error!("kubelet stand-in stopped: {e:#}");
            }
        }));
        let provider = self.world.provider();
        self.tasks.push(tokio::spawn(mirror::run(
            client,
            self.store.clone(),
            provider,
            config.namespace.clone(),
        )));
    }

    /// Runs the Knative Serving stand-in against this stack's API server.
    async fn spawn_knative(&mut self, config: &StackConfig) -> Result<()> {
        let client = self.client().await?;
        let workloads = config.scenario.workloads.clone();
        let namespace = config.namespace.clone();
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = knative::run(client, workloads, namespace).await {
                tracing::error!("Knative Serving stand-in stopped: {e:#}");
            }
        }));
        Ok(())
    }

    /// Runs the Keptn metrics operator stand-in against this stack's API server.
    async fn spawn_keptn(&mut self, config: &StackConfig) -> Result<()> {
        let client = self.client().await?;
        let world = self.world.clone();
        let namespace = config.namespace.clone();
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = keptn::run(client, world, namespace).await {
                tracing::error!("Keptn stand-in stopped: {e:#}");
            }
        }));
        Ok(())
    }

    /// Which API server this stack runs.
    pub fn control_plane(&self) -> ControlPlane {
        match self.kube_local {
            Some(_) => ControlPlane::Real,
            None => ControlPlane::Emulator,
        }
    }

    /// A client of this stack's API server, from its kubeconfig (TLS and client
    /// certificate on the real control plane).
    pub async fn client(&self) -> Result<kube::Client> {
        client_for(&self.kubeconfig).await
    }

    /// The API server URL, e.g. `http://127.0.0.1:34567`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin server URL, if it runs.
    pub fn admin_url(&self) -> Option<&str> {
        self.admin_url.as_deref()
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Compacts the history of changes: a watch resumed from an earlier resourceVersion gets
    /// 410 Gone and must list again. The emulator drops its watch event history; the real
    /// control plane compacts etcd at its current revision (watches resumed through its watch
    /// cache are not refused until that cache's own window has passed: start it with
    /// `watch_cache: false`).
    pub async fn compact(&self) -> Result<()> {
        match &self.kube_local {
            Some(RealApi::Own(kl)) => kl.compact().await,
            Some(RealApi::Shared(_)) => {
                anyhow::bail!(
                    "a shared control plane is not compacted: start the stack with its own"
                )
            }
            None => {
                self.store.lock().compact(0);
                Ok(())
            }
        }
    }

    /// The API server's own last log lines: kube-local's stderr on the real control plane
    /// (the emulator logs through `tracing` in the test's process, so it has none).
    pub fn recent_log(&self) -> Vec<String> {
        match &self.kube_local {
            Some(real) => real.recent_log(),
            None => Vec::new(),
        }
    }

    /// Fault rules, watch drops and request counters.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Creates an object (any registered kind, by `apiVersion` and `kind`) as a client's
    /// POST would, in `metadata.namespace` (default `default` for namespaced kinds).
    /// Creating a CRD registers its kind at once.
    pub fn create(&self, obj: serde_json::Value) -> Result<serde_json::Value> {
        if self.kube_local.is_some() {
            anyhow::bail!(
                "Stack::create writes the emulator's store: use a client on the real control plane"
            );
        }
        let api_version = obj["apiVersion"]
            .as_str()
            .context("apiVersion is required")?
            .to_string();
        let kind = obj["kind"]
            .as_str()
            .context("kind is required")?
            .to_string();
        let (group, version) = api_version
            .rsplit_once('/')
            .unwrap_or(("", api_version.as_str()));
        let rt = self
            .store
            .lock()
            .registry
            .types
            .values()
            .find(|t| {
                t.group == group && t.kind == kind && t.serves(version) && t.storage.is_none()
            })
            .cloned()
            .with_context(|| format!("no resource for {api_version} {kind}"))?;
        let ns = match rt.namespaced {
            true => obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string(),
            false => String::new(),
        };
        let opts = crud::WriteOpts {
            manager: "serin-stack".into(),
            ..Default::default()
        };
        self.store
            .create(&rt, version, &ns, obj, &opts)
            .map_err(|e| anyhow::anyhow!("creating {kind}: {}", e.message))
    }

    /// Creates every object of a multi-document YAML file, as `create` does.
    fn create_all(&self, file: &Path) -> Result<()> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for document in serde_norway::Deserializer::from_str(&text) {
            let obj: serde_json::Value = serde::Deserialize::deserialize(document)
                .with_context(|| format!("parsing {}", file.display()))?;
            if obj.is_object() {
                self.create(obj)
                    .with_context(|| format!("creating from {}", file.display()))?;
            }
        }
        Ok(())
    }

    /// The traffic world: per-workload request counts, and the manual clock.
    pub fn traffic(&self) -> &World {
        &self.world
    }

    /// The URL of the Prometheus the stack started (`StackConfig::prometheus`).
    pub fn prometheus_url(&self) -> Option<&str> {
        self.prometheus.as_ref().map(|p| p.url())
    }

    /// The Datadog emulator's URL (`StackConfig::datadog`).
    pub fn datadog_url(&self) -> Option<&str> {
        self.datadog_url.as_deref()
    }

    /// The Datadog emulator's fault mode.
    pub fn datadog_faults(&self) -> &ProviderFaults {
        &self.datadog_faults
    }

    /// The New Relic emulator's URL (`StackConfig::newrelic`).
    pub fn newrelic_url(&self) -> Option<&str> {
        self.newrelic_url.as_deref()
    }

    /// The New Relic emulator's fault mode.
    pub fn newrelic_faults(&self) -> &ProviderFaults {
        &self.newrelic_faults
    }

    /// The Graphite emulator's URL (`StackConfig::graphite`).
    pub fn graphite_url(&self) -> Option<&str> {
        self.graphite_url.as_deref()
    }

    /// The Graphite emulator's fault mode.
    pub fn graphite_faults(&self) -> &ProviderFaults {
        &self.graphite_faults
    }

    /// The InfluxDB emulator's URL (`StackConfig::influxdb`).
    pub fn influxdb_url(&self) -> Option<&str> {
        self.influxdb_url.as_deref()
    }

    /// The InfluxDB emulator's fault mode.
    pub fn influxdb_faults(&self) -> &ProviderFaults {
        &self.influxdb_faults
    }

    /// The Dynatrace emulator's URL (`StackConfig::dynatrace`).
    pub fn dynatrace_url(&self) -> Option<&str> {
        self.dynatrace_url.as_deref()
    }

    /// The Dynatrace emulator's fault mode.
    pub fn dynatrace_faults(&self) -> &ProviderFaults {
        &self.dynatrace_faults
    }

    /// The Splunk emulator's URL (`StackConfig::splunk`): its API and its SignalFlow stream.
    pub fn splunk_url(&self) -> Option<&str> {
        self.splunk_url.as_deref()
    }

    /// The Splunk emulator's fault mode.
    pub fn splunk_faults(&self) -> &ProviderFaults {
        &self.splunk_faults
    }

    /// The CloudWatch emulator's URL (`StackConfig::cloudwatch`).
    pub fn cloudwatch_url(&self) -> Option<&str> {
        self.cloudwatch_url.as_deref()
    }

    /// The CloudWatch emulator's fault mode.
    pub fn cloudwatch_faults(&self) -> &ProviderFaults {
        &self.cloudwatch_faults
    }

    /// The Stackdriver emulator's URL (`StackConfig::stackdriver`): its query API, `/token`
    /// (a service-account key's `token_uri`) and the metadata server's token path.
    pub fn stackdriver_url(&self) -> Option<&str> {
        self.stackdriver_url.as_deref()
    }

    /// The Stackdriver emulator's fault mode.
    pub fn stackdriver_faults(&self) -> &ProviderFaults {
        &self.stackdriver_faults
    }

    /// The External Metrics API adapter emulator's URL (`StackConfig::external_metrics`).
    pub fn external_metrics_url(&self) -> Option<&str> {
        self.external_metrics_url.as_deref()
    }

    /// The External Metrics API adapter emulator's fault mode.
    pub fn external_metrics_faults(&self) -> &ProviderFaults {
        &self.external_metrics_faults
    }

    /// Stops serving and closes every connection (watches end).
    pub async fn shutdown(mut self) {
        if let Some(p) = self.prometheus.take() {
            p.stop().await;
        }
        if let Some(RealApi::Own(kl)) = self.kube_local.take() {
            (*kl).stop().await;
        }
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        if self.remove_kubeconfig {
            let _ = std::fs::remove_file(&self.kubeconfig);
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        if self.remove_kubeconfig {
            let _ = std::fs::remove_file(&self.kubeconfig);
        }
    }
}

/// Creates the namespaces that exist in every cluster.
fn create_default_namespaces(store: &store::Store) -> Result<()> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let rt = store
            .lock()
            .registry
            .lookup("", "v1", "namespaces")
            .cloned()
            .context("namespaces type missing")?;
        let body = serde_json::json!({"metadata": {"name": ns}});
        let opts = crud::WriteOpts {
            manager: "serin-stack".into(),
            ..Default::default()
        };
        store
            .create(&rt, "v1", "", body, &opts)
            .map_err(|e| anyhow::anyhow!("creating namespace {ns}: {}", e.message))?;
    }
    Ok(())
}

/// The traffic world of the scenario, reading `store`.
fn traffic_world(config: &StackConfig, store: Arc<store::Store>, real: bool) -> Result<Arc<World>> {
    let world = World::new(
        store,
        config.scenario.traffic.clone(),
        config.manual_traffic_clock,
        config.datadog
            || config.newrelic
            || config.graphite
            || config.influxdb
            || config.dynatrace
            || config.splunk
            || config.cloudwatch
            || config.stackdriver
            || config.external_metrics
            || config.keptn,
    )
    .map_err(|e| anyhow::anyhow!("scenario: {e}"))?;
    // Over the real control plane the mirror accepts HTTPRoutes through the API.
    Ok(Arc::new(if real { world.without_gateway() } else { world }))
}

/// The ports of the servers the stack runs in its own process, bound before anything is
/// spawned; `None` for a server it does not run.
struct Listeners {
    /// The emulated API (not over the real control plane, which serves its own).
    api: Option<TcpListener>,
    admin: Option<TcpListener>,
    datadog: Option<TcpListener>,
    newrelic: Option<TcpListener>,
    graphite: Option<TcpListener>,
    influxdb: Option<TcpListener>,
    dynatrace: Option<TcpListener>,
    splunk: Option<TcpListener>,
    cloudwatch: Option<TcpListener>,
    stackdriver: Option<TcpListener>,
    external_metrics: Option<TcpListener>,
}

impl Listeners {
    async fn bind(config: &StackConfig, real: bool) -> Result<Listeners> {
        Ok(Listeners {
            api: bind((!real).then_some(config.port), |port| {
                format!("binding API port {port}")
            })
            .await?,
            admin: bind(config.admin_port, |port| {
                format!("binding admin port {port}")
            })
            .await?,
            datadog: bind(config.datadog.then_some(0), |_| {
                "binding the Datadog emulator's port".to_string()
            })
            .await?,
            newrelic: bind(config.newrelic.then_some(0), |_| {
                "binding the New Relic emulator's port".to_string()
            })
            .await?,
            graphite: bind(config.graphite.then_some(0), |_| {
                "binding the Graphite emulator's port".to_string()
            })
            .await?,
            influxdb: bind(config.influxdb.then_some(0), |_| {
                "binding the InfluxDB emulator's port".to_string()
            })
            .await?,
            dynatrace: bind(config.dynatrace.then_some(0), |_| {
                "binding the Dynatrace emulator's port".to_string()
            })
            .await?,
            splunk: bind(config.splunk.then_some(0), |_| {
                "binding the Splunk emulator's port".to_string()
            })
            .await?,
            cloudwatch: bind(config.cloudwatch.then_some(0), |_| {
                "binding the CloudWatch emulator's port".to_string()
            })
            .await?,
            stackdriver: bind(config.stackdriver.then_some(0), |_| {
                "binding the Stackdriver emulator's port".to_string()
            })
            .await?,
            external_metrics: bind(config.external_metrics.then_some(0), |_| {
                "binding the External Metrics API adapter's port".to_string()
            })
            .await?,
        })
    }
}

/// Binds `port` on 127.0.0.1 (0: a free one), or nothing when there is no port; `what`
/// names the port in an error.
async fn bind(port: Option<u16>, what: impl FnOnce(u16) -> String) -> Result<Option<TcpListener>> {
    let Some(port) = port else { return Ok(None) };
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| what(port))?;
    Ok(Some(listener))
}

/// The `http://` URL of a bound listener.
fn url_of(listener: Option<&TcpListener>) -> Result<Option<String>> {
    match listener {
        Some(l) => Ok(Some(format!("http://{}", l.local_addr()?))),
        None => Ok(None),
    }
}

/// Where the kubeconfig goes, and whether it is the stack's own temp file (removed at the
/// end).
fn kubeconfig_file(config: &StackConfig) -> (PathBuf, bool) {
    match &config.kubeconfig {
        Some(p) => (p.clone(), false),
        None => {
            static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let file = format!("serin-stack-{}-{n}.kubeconfig", std::process::id());
            (std::env::temp_dir().join(file), true)
        }
    }
}

/// The API server a stack serves, its kubeconfig written.
struct ApiServer {
    url: String,
    /// The real control plane, and a client of it; `None` on the emulator.
    kube_local: Option<RealApi>,
    client: Option<kube::Client>,
}

impl ApiServer {
    /// The emulator, to be served on `listener`.
    fn emulator(
        listener: Option<&TcpListener>,
        kubeconfig: &Path,
        config: &StackConfig,
    ) -> Result<ApiServer> {
        let url = url_of(listener)?.unwrap_or_default();
        kubeconfig::write(kubeconfig, &url, config.token.as_deref())?;
        Ok(ApiServer {
            url,
            kube_local: None,
            client: None,
        })
    }

    /// kube-local, started and ready, with the stack's CRDs installed.
    async fn start_kube_local(kubeconfig: &Path, config: &StackConfig) -> Result<ApiServer> {
        if config.shared_control_plane {
            return ApiServer::shared_kube_local(kubeconfig, config).await;
        }
        let kl =
            control_plane::KubeLocal::start(kubeconfig, &config.crds, config.watch_cache).await?;
        let client = client_for(kubeconfig).await?;
        Ok(ApiServer {
            url: kl.url().to_string(),
            kube_local: Some(RealApi::Own(Box::new(kl))),
            client: Some(client),
        })
    }

    /// The process's shared kube-local, its admin kubeconfig copied to the stack's.
    async fn shared_kube_local(kubeconfig: &Path, config: &StackConfig) -> Result<ApiServer> {
        if !config.watch_cache {
            anyhow::bail!("watch_cache: false needs a control plane of the stack's own");
        }
        let shared = control_plane::Shared::get(&config.crds).await?;
        std::fs::copy(shared.kubeconfig(), kubeconfig).with_context(|| {
            format!("copying the shared kubeconfig to {}", kubeconfig.display())
        })?;
        let client = client_for(kubeconfig).await?;
        Ok(ApiServer {
            url: shared.url().to_string(),
            kube_local: Some(RealApi::Shared(shared)),
            client: Some(client),
        })
    }
}

/// A metric-provider emulator's faults, with the scenario's fault active from the start.
fn provider_faults(from_scenario: Option<&ProviderFault>) -> Arc<ProviderFaults> {
    let faults = Arc::new(ProviderFaults::default());
    if let Some(f) = from_scenario {
        faults.set(f.clone());
    }
    faults
}

async fn client_for(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .context("kubeconfig")?;
    kube::Client::try_from(config).context("API client")
}

async fn serve<F, Fut>(listener: TcpListener, mut stop: signal::Receiver<bool>, handler: F)
where
    F: Fn(hyper::Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<hyper::Response<server::Body>, std::convert::Infallible>>
        + Send
        + 'static,
{
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let conn =
                http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(handler));
            tokio::select! {
                _ = conn => {}
                _ = stop.changed() => {}
            }
        });
    }
}
