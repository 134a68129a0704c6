//! A stack, the CRDs and a controller: what every end-to-end scenario starts from.

use crate::controller::Controller;
use crate::wait::Poll;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use serin::api::Canary;
use serin_core::Phase;
use serin_stack::testing::switch::Switch;
use serin_stack::{ControlPlane, Scenario, Stack, StackConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How to build a [`World`]: the defaults are the emulator's default stack, serin's CRDs,
/// and a controller with `--mesh-provider kubernetes --min-analysis-interval 1s`.
pub struct WorldConfig {
    binary: PathBuf,
    pub stack: StackConfig,
    routing_crds: bool,
    controller_args: Vec<String>,
    start_controller: bool,
    api_switch: bool,
    controller_env: Vec<(String, String)>,
    whole_cluster: bool,
}

impl WorldConfig {
    /// `binary`: the test's `env!("CARGO_BIN_EXE_serin")`.
    pub fn new(binary: &str, control_plane: ControlPlane) -> WorldConfig {
        WorldConfig {
            binary: PathBuf::from(binary),
            stack: StackConfig {
                control_plane,
                ..StackConfig::default()
            },
            routing_crds: false,
            start_controller: true,
            controller_args: controller_args(),
            api_switch: false,
            controller_env: Vec::new(),
            whole_cluster: false,
        }
    }

    /// A cluster of the scenario's own, and a controller watching every namespace of it. By
    /// default a scenario works in a namespace of its own ([`World::ns`]), with a controller
    /// confined to it (`--namespace`), and on the real control plane shares the test
    /// process's API server with the other scenarios (`StackConfig::shared_control_plane`:
    /// starting one costs about 4 s of CPU). A scenario whose subject spans namespaces or the
    /// cluster (cross-namespace references, cluster-scoped objects, etcd compaction) asks for
    /// a whole cluster, and says why.
    pub fn whole_cluster(mut self) -> Self {
        self.whole_cluster = true;
        self
    }

    /// The stack's scenario (workloads, traffic), as YAML.
    pub fn scenario(mut self, yaml: &str) -> Self {
        self.stack.scenario = Scenario::parse(yaml).unwrap();
        self
    }

    /// A real Prometheus scraping the traffic world, and `--metrics-server` pointing at it.
    pub fn prometheus(mut self) -> Self {
        self.stack.prometheus = true;
        self
    }

    /// The SaaS metric API emulators: Datadog, New Relic, Dynatrace, Splunk.
    pub fn saas(mut self) -> Self {
        self.stack.datadog = true;
        self.stack.newrelic = true;
        self.stack.dynatrace = true;
        self.stack.splunk = true;
        self
    }

    /// The CloudWatch emulator, and the controller's AWS credentials for it (its environment,
    /// where Flagger takes them from; the scenario's keys: call after [`Self::scenario`]).
    pub fn cloudwatch(mut self) -> Self {
        self.stack.cloudwatch = true;
        let keys = &self.stack.scenario.cloudwatch;
        let env = [
            ("AWS_ACCESS_KEY_ID", keys.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", keys.secret_access_key.clone()),
        ];
        self.controller_env
            .extend(env.into_iter().map(|(k, v)| (k.to_string(), v)));
        self
    }

    /// The Stackdriver emulator (with its token endpoint and metadata server).
    pub fn stackdriver(mut self) -> Self {
        self.stack.stackdriver = true;
        self
    }

    /// Installs `e2e/crds/routing.yaml` (every mesh's and ingress's routing kinds).
    pub fn routing_crds(mut self) -> Self {
        self.routing_crds = true;
        self
    }

    /// Keptn's metrics operator: its CRDs (`e2e/crds/keptn.yaml`) and the stack's stand-in,
    /// which values KeptnMetrics and completes Analyses from the traffic world.
    pub fn keptn(mut self) -> Self {
        self.stack.keptn = true;
        self.stack
            .crds
            .push(crate::workspace_file("e2e/crds/keptn.yaml"));
        self
    }

    /// The stack's External Metrics API adapter (`Stack::external_metrics_url`).
    pub fn external_metrics(mut self) -> Self {
        self.stack.external_metrics = true;
        self
    }

    /// Knative Serving: its CRDs and the stack's stand-in for its controller.
    pub fn knative(mut self) -> Self {
        self.stack.knative = true;
        self.routing_crds()
    }

    /// The controller's `--mesh-provider`.
    pub fn mesh_provider(mut self, provider: &str) -> Self {
        let args = &mut self.controller_args;
        if let Some(i) = args.iter().position(|a| a == "--mesh-provider") {
            args[i + 1] = provider.to_string();
        }
        self
    }

    /// The controller's arguments after `controller --kubeconfig FILE`, replacing the
    /// defaults (`--metrics-server` is still added when the stack runs Prometheus).
    pub fn controller_args(mut self, args: &[&str]) -> Self {
        self.controller_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// The controller is started later, by the test ([`World::start_controller`]).
    pub fn without_controller(mut self) -> Self {
        self.start_controller = false;
        self
    }

    /// The controller reaches the API server through a [`Switch`] ([`World::api_switch`]):
    /// switched off, serin alone loses the API server (its connections refused and cut,
    /// its watches with them) while the test's own client keeps it.
    pub fn api_switch(mut self) -> Self {
        self.api_switch = true;
        self
    }

    pub async fn start(self) -> World {
        World::start(self).await
    }
}

/// A switch between the controller and the API server, and the controller's kubeconfig
/// that points at it.
struct ApiSwitch {
    switch: Switch,
    kubeconfig: tempfile::NamedTempFile,
}

impl ApiSwitch {
    async fn start(stack: &Stack) -> ApiSwitch {
        let authority = |url: &str| url.split_once("://").map_or(url, |(_, a)| a).to_string();
        let api = authority(stack.url());
        let switch = Switch::start(&api).await;
        let text = std::fs::read_to_string(stack.kubeconfig_path()).unwrap();
        let through = text.replace(
            &format!("//{api}"),
            &format!("//{}", authority(&switch.url)),
        );
        assert_ne!(text, through, "the kubeconfig names {api}");
        let kubeconfig = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(kubeconfig.path(), through).unwrap();
        ApiSwitch { switch, kubeconfig }
    }
}

/// A running stack with serin's CRDs, a client, and the controller.
pub struct World {
    pub stack: Stack,
    pub client: Client,
    pub(crate) controller: Controller,
    api_switch: Option<ApiSwitch>,
    ns: String,
    whole_cluster: bool,
}

impl World {
    async fn start(mut config: WorldConfig) -> World {
        let cp = config.stack.control_plane;
        let in_process = crate::virtual_time() && cp == ControlPlane::Emulator;
        assert!(
            !(in_process && config.stack.prometheus),
            "Prometheus is a process of its own, in real time: run this scenario in real time \
             (not under `virtual_time:`)"
        );
        // Installed with the stack, as on a cluster where they have been for long.
        config
            .stack
            .crds
            .push(crate::workspace_file("crds/crds.yaml"));
        if config.routing_crds {
            config
                .stack
                .crds
                .push(crate::workspace_file("e2e/crds/routing.yaml"));
        }
        let ns = scenario_namespace();
        config.stack.namespace = (!config.whole_cluster).then(|| ns.clone());
        config.stack.shared_control_plane =
            cp == ControlPlane::Real && !config.whole_cluster && config.stack.watch_cache;
        for load in config.stack.scenario.traffic.services.iter_mut().flatten() {
            if load.namespace == "default" {
                load.namespace = ns.clone();
            }
        }
        let stack = Stack::start(config.stack)
            .await
            .unwrap_or_else(|e| panic!("starting the {cp} stack: {e:#}"));
        let client = match in_process {
            true => held_client(stack.kubeconfig_path()).await,
            false => stack.client().await.unwrap(),
        };
        create_namespace(&client, &ns).await;
        let mut args = config.controller_args;
        if !config.whole_cluster {
            args.extend(["--namespace".to_string(), ns.clone()]);
        }
        if !args.iter().any(|a| a == "--leader-election-namespace") {
            args.extend(["--leader-election-namespace".to_string(), ns.clone()]);
        }
        if let Some(url) = stack.prometheus_url() {
            args.extend(["--metrics-server".to_string(), url.to_string()]);
        }
        let api_switch = match config.api_switch {
            true => Some(ApiSwitch::start(&stack).await),
            false => None,
        };
        let kubeconfig = match &api_switch {
            Some(s) => s.kubeconfig.path(),
            None => stack.kubeconfig_path(),
        };
        let mut controller =
            Controller::new(&config.binary, kubeconfig, args).with_env(config.controller_env);
        if in_process {
            controller = controller.in_process();
        }
        if config.start_controller {
            controller.start(&[]);
        }
        World {
            stack,
            client,
            controller,
            api_switch,
            ns,
            whole_cluster: config.whole_cluster,
        }
    }
}

async fn create_namespace(client: &Client, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

/// A namespace of the scenario's own, named after its test (`contour-release-12`), unique in
/// the process.
fn scenario_namespace() -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("scenario");
    let name: String = test
        .rsplit("::")
        .next()
        .unwrap_or(test)
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() {
            true => c.to_ascii_lowercase(),
            false => '-',
        })
        .take(40)
        .collect();
    let name = name.trim_matches('-');
    match name.is_empty() || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        true => format!("scenario-{n}"),
        false => format!("{name}-{n}"),
    }
}

/// A client of the stack whose requests hold virtual time (see `virtual_time`).
async fn held_client(kubeconfig: &std::path::Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&crate::virtual_time::HoldLayer)
        .build()
}

/// A failing scenario shows what the controller and the API server were doing: the end of
/// each controller run's log and of kube-local's (`SERIN_TEST_LOG_LINES` lines each).
impl Drop for World {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut out = format!(
            "[{}] the scenario failed\n{}",
            self.control_plane(),
            self.logs()
        );
        let api = self.stack.recent_log();
        if !api.is_empty() {
            out.push_str(&format!("--- kube-local (last {} lines) ---\n", api.len()));
            for line in api {
                out.push_str(&line);
                out.push('\n');
            }
        }
        eprintln!("{out}");
    }
}

impl World {
    /// Starts the controller (again), with `extra` arguments.
    pub fn start_controller(&mut self, extra: &[&str]) {
        self.controller.start(extra);
    }

    /// Whether any of the controller's runs logged `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.controller.all_logs().contains(needle)
    }

    /// The switch between the controller and the API server (`WorldConfig::api_switch`).
    pub fn api_switch(&self) -> &Switch {
        &self
            .api_switch
            .as_ref()
            .expect("WorldConfig::api_switch() was not set")
            .switch
    }

    /// Whether the controller has ended by itself (see [`Controller::exited`]).
    pub fn controller_exited(&mut self) -> bool {
        self.controller.exited()
    }

    /// Kills the controller without warning (SIGKILL), as a crashed node would.
    pub fn kill_controller(&mut self) {
        self.controller.kill();
    }

    /// Runs `serin ARGS --kubeconfig <the stack's>`: `(exit code, stdout, stderr)`.
    pub async fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let _instant = crate::virtual_time::hold();
        let out = tokio::process::Command::new(self.controller.binary())
            .args(args)
            .arg("--kubeconfig")
            .arg(self.stack.kubeconfig_path())
            .output()
            .await
            .unwrap_or_else(|e| panic!("running serin {args:?}: {e}"));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A MetricTemplate `name` whose query, on the stack's Prometheus, always reads `value`
    /// (the world needs [`WorldConfig::prometheus`]).
    pub async fn constant_template(&self, name: &str, value: f64) {
        let address = self
            .stack
            .prometheus_url()
            .expect("a world with Prometheus");
        self.create(json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": name},
            "spec": {"provider": {"type": "prometheus", "address": address},
                     "query": format!("vector({value})")}
        }))
        .await;
    }

    /// A kubeconfig in `dir` for the service account `namespace/name`, with a token from the
    /// TokenRequest API (`kubectl create token`): the stack's API server as another user, whose
    /// RBAC applies (real control plane: the emulator grants everyone everything).
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        dir: &std::path::Path,
    ) -> PathBuf {
        let admin = self.stack.kubeconfig_path().display().to_string();
        let out = std::process::Command::new("kubectl")
            .args([
                "--kubeconfig",
                &admin,
                "create",
                "token",
                name,
                "-n",
                namespace,
            ])
            .args(["--duration", "1h"])
            .output()
            .expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl create token {namespace}/{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let text = std::fs::read_to_string(&admin).expect("the stack's kubeconfig");
        let config: Value = serde_norway::from_str(&text).expect("a kubeconfig");
        let cluster = &config["clusters"][0]["cluster"];
        let kubeconfig = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": name,
            "clusters": [{"name": "local", "cluster": cluster}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": name, "context": {"cluster": "local", "user": name}}],
        });
        let path = dir.join(format!("{namespace}-{name}.kubeconfig"));
        let yaml = serde_norway::to_string(&kubeconfig).expect("YAML");
        std::fs::write(&path, yaml).expect("writing the kubeconfig");
        path
    }

    /// GETs `path` from the controller's metrics and health server: `(status, body)`.
    pub async fn controller_http(&self, path: &str) -> (u16, String) {
        let url = format!("http://127.0.0.1:{}{path}", self.controller.port().await);
        crate::http::request("GET", &url, None).await
    }

    /// The running controller's process id (for benchmarks reading /proc).
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.pid()
    }

    /// The controller's log (the last 40 lines of each run), for failure messages.
    pub fn logs(&self) -> String {
        self.controller.logs(
            std::env::var("SERIN_TEST_LOG_LINES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(40),
        )
    }

    pub fn control_plane(&self) -> ControlPlane {
        self.stack.control_plane()
    }

    /// The scenario's namespace: every object the kit creates is in it, and the controller
    /// watches only it (unless [`WorldConfig::whole_cluster`]).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The world's controller's arguments (the defaults or the config's, confined to the
    /// scenario's namespace), for a second controller beside it ([`Controller::new`]).
    pub fn controller_args(&self) -> Vec<String> {
        self.controller.args().to_vec()
    }

    pub fn canaries(&self) -> Api<Canary> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The Canaries the world's controller watches: the scenario's namespace's, or every
    /// one ([`WorldConfig::whole_cluster`]).
    pub fn watched_canaries(&self) -> Api<Canary> {
        match self.whole_cluster {
            true => Api::all(self.client.clone()),
            false => self.canaries(),
        }
    }

    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn daemon_sets(&self) -> Api<DaemonSet> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn stateful_sets(&self) -> Api<StatefulSet> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The StatefulSet `name`'s pods, by name, with the revision each runs
    /// (`controller-revision-hash`) and whether it is ready.
    pub async fn stateful_set_pods(&self, name: &str) -> BTreeMap<String, (String, bool)> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let list = pods
            .list(&kube::api::ListParams::default().labels(&format!("app={name}")))
            .await
            .unwrap_or_else(|e| panic!("list the pods of {name}: {e}"));
        list.items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let revision = p
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("controller-revision-hash").cloned())
                    .unwrap_or_default();
                let ready = p
                    .status
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                (p.metadata.name.unwrap_or_default(), (revision, ready))
            })
            .collect()
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Server-side applies an object through a typed API (field manager `test`).
    pub async fn apply<K>(&self, api: &Api<K>, object: Value)
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        api.patch(
            &name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
    }

    /// An API of any kind in the scenario's namespace (the plural guessed as English does).
    pub fn dynamic(&self, api_version: &str, kind: &str) -> Api<kube::api::DynamicObject> {
        self.dynamic_in(&self.ns, api_version, kind)
    }

    /// An API of any kind in namespace `ns`.
    pub fn dynamic_in(
        &self,
        ns: &str,
        api_version: &str,
        kind: &str,
    ) -> Api<kube::api::DynamicObject> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let resource = kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(group, version, kind),
            &plural(kind),
        );
        Api::namespaced_with(self.client.clone(), ns, &resource)
    }

    /// The ready-made APM templates (metrics-templates/) pointed at the emulators, with the
    /// emulators' keys in the Secrets they name.
    pub async fn saas_templates(&self) {
        self.create(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "datadog"},
            "stringData": {"datadog_api_key": "serin-dd-api-key",
                           "datadog_application_key": "serin-dd-application-key"}}))
            .await;
        self.create(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "newrelic"},
            "stringData": {"newrelic_account_id": "1234567",
                           "newrelic_query_key": "serin-nr-query-key"}}))
            .await;
        for (file, address) in [
            ("datadog/apm.yaml", self.stack.datadog_url()),
            ("newrelic/apm.yaml", self.stack.newrelic_url()),
        ] {
            let path = crate::workspace_file(&format!("metrics-templates/{file}"));
            let text = std::fs::read_to_string(&path).unwrap();
            for document in serde_norway::Deserializer::from_str(&text) {
                let mut template: Value = serde::Deserialize::deserialize(document).unwrap();
                template["metadata"]["namespace"] = json!(self.ns);
                template["spec"]["provider"]["address"] = json!(address.unwrap());
                self.create(template).await;
            }
        }
    }

    /// Creates any namespaced object by its apiVersion and kind, in its `metadata.namespace`
    /// or, without one, in the scenario's.
    pub async fn create(&self, mut object: Value) {
        let kind = object["kind"].as_str().unwrap().to_string();
        if object["metadata"]["namespace"].is_null() {
            object["metadata"]["namespace"] = json!(self.ns);
        }
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap()
            .to_string();
        let api = self.dynamic_in(&ns, object["apiVersion"].as_str().unwrap(), &kind);
        api.create(
            &PostParams::default(),
            &serde_json::from_value(object).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("create {kind}: {e}"));
    }

    pub async fn merge<K>(&self, api: &Api<K>, name: &str, patch: Value)
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("patch {name}: {e}"));
    }

    pub async fn delete_canary(&self, name: &str) {
        self.canaries()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// Every Canary's phase, by name (`New` before its first status).
    pub async fn phases(&self) -> std::collections::BTreeMap<String, Phase> {
        self.canaries()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|c| {
                let phase = c.status.map(|s| s.phase).unwrap_or(Phase::New);
                (c.metadata.name.unwrap_or_default(), phase)
            })
            .collect()
    }

    pub async fn canary(&self, name: &str) -> Canary {
        self.canaries().get(name).await.unwrap()
    }

    pub async fn phase(&self, name: &str) -> Phase {
        self.canary(name)
            .await
            .status
            .map(|s| s.phase)
            .unwrap_or_default()
    }

    /// Waits for the Canary to reach `phase`; on timeout, fails with the status, the events
    /// and the controller's log.
    pub async fn wait_phase(&self, name: &str, phase: Phase, timeout: Duration) -> Canary {
        self.wait_canary(name, &format!("phase {phase}"), timeout, |c| {
            c.status.as_ref().map(|s| s.phase) == Some(phase)
        })
        .await
    }

    /// Waits for a condition on the Canary.
    pub async fn wait_canary(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        f: impl Fn(&Canary) -> bool,
    ) -> Canary {
        self.look_until(name, Poll::new(timeout), async || {
            let canary = self.canary(name).await;
            match f(&canary) {
                true => Ok(canary),
                false => Err(format!("{what}: not within {timeout:?}")),
            }
        })
        .await
    }

    /// Looks (`look`) until it finds what it waits for, then returns it; once `poll` has
    /// expired, fails with `look`'s last word on what it found instead (and, as `fail` does,
    /// the Canary's status and events).
    async fn look_until<T>(
        &self,
        name: &str,
        poll: Poll,
        mut look: impl AsyncFnMut() -> Result<T, String>,
    ) -> T {
        loop {
            match look().await {
                Ok(found) => return found,
                Err(why) if poll.expired() => self.fail(name, &why).await,
                Err(_) => poll.next().await,
            }
        }
    }

    /// Waits until the controller has acted on the Canary's current spec
    /// (`status.observedGeneration`): a change to the target right after a change to the
    /// Canary may otherwise be seen first, and released by the spec before.
    pub async fn wait_observed(&self, name: &str) -> Canary {
        self.wait_canary(name, "the current spec observed", crate::LONG, |c| {
            let observed = c.status.as_ref().and_then(|s| s.observed_generation);
            observed.is_some() && observed >= c.metadata.generation
        })
        .await
    }

    /// Waits until `status.iterations` reaches `n`.
    pub async fn wait_iterations(&self, name: &str, n: i32) -> Canary {
        self.wait_canary(
            name,
            &format!("iteration {n}"),
            Duration::from_secs(30),
            |c| c.status.as_ref().is_some_and(|s| s.iterations >= n),
        )
        .await
    }

    /// Waits for `Ready=False` and returns its (reason, message).
    pub async fn wait_blocked(&self, name: &str) -> (String, String) {
        let blocked = self
            .wait_canary(name, "Ready=False", crate::LONG, |c| {
                ready_condition(c).is_some_and(|(s, _, _)| s == "False")
            })
            .await;
        let (_, reason, message) = ready_condition(&blocked).unwrap();
        (reason, message)
    }

    pub async fn fail(&self, name: &str, why: &str) -> ! {
        let canary = self.canaries().get_opt(name).await.ok().flatten();
        let status = canary
            .and_then(|c| c.status)
            .map(|s| serde_json::to_string_pretty(&s).unwrap_or_default());
        // The logs follow, from `Drop`.
        panic!(
            "[{}] {why}\nstatus: {}\nevents:\n{}",
            self.control_plane(),
            status.unwrap_or_else(|| "<none>".into()),
            self.events(name).await.join("\n"),
        );
    }

    /// The Canary's Events, oldest first.
    async fn canary_events(&self, name: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let mut events: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .filter(|e| e.involved_object.kind.as_deref() == Some("Canary"))
            .collect();
        events.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        events
    }

    /// The message of each of the Canary's Events, oldest first.
    pub async fn event_messages(&self, name: &str) -> Vec<String> {
        let events = self.canary_events(name).await;
        events.into_iter().filter_map(|e| e.message).collect()
    }

    /// `Type: message` of each of the Canary's Events, oldest first.
    pub async fn events(&self, name: &str) -> Vec<String> {
        self.canary_events(name)
            .await
            .into_iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e.type_.unwrap_or_default(),
                    e.message.unwrap_or_default()
                )
            })
            .collect()
    }

    /// Each event message of the Canary with how often it was recorded (summed over Event
    /// objects and their `count`s), in order of first appearance.
    pub async fn event_counts(&self, name: &str) -> Vec<(String, i32)> {
        let events = self.canary_events(name).await;
        let mut counts: Vec<(String, i32)> = Vec::new();
        for e in events {
            let message = e.message.unwrap_or_default();
            let n = e.count.unwrap_or(1).max(1);
            match counts.iter_mut().find(|(m, _)| *m == message) {
                Some((_, c)) => *c += n,
                None => counts.push((message, n)),
            }
        }
        counts
    }

    /// How often events containing `needle` were recorded (repeats fold into a count).
    pub async fn event_count(&self, name: &str, needle: &str) -> i32 {
        self.event_counts(name)
            .await
            .iter()
            .filter(|(message, _)| message.contains(needle))
            .map(|(_, n)| *n)
            .sum()
    }

    /// Waits until events containing `needle` were recorded at least `n` times, and returns
    /// the count. A barrier instead of a sleep: a repeated event (a gate asked again, a
    /// reconcile under a pause) proves that the controller looked again and held.
    pub async fn wait_event_count(
        &self,
        name: &str,
        needle: &str,
        n: i32,
        timeout: Duration,
    ) -> i32 {
        let poll = Poll::new(timeout).every(Duration::from_millis(100));
        self.look_until(name, poll, async || {
            let count = self.event_count(name, needle).await;
            match count >= n {
                true => Ok(count),
                false => Err(format!(
                    "{needle:?} recorded {count} times, not {n}, within {timeout:?}"
                )),
            }
        })
        .await
    }

    pub async fn has_event(&self, name: &str, needle: &str) -> bool {
        self.events(name).await.iter().any(|e| e.contains(needle))
    }

    pub async fn wait_event(&self, name: &str, needle: &str, timeout: Duration) {
        let poll = Poll::new(timeout).every(Duration::from_millis(100));
        self.look_until(name, poll, async || {
            match self.has_event(name, needle).await {
                true => Ok(()),
                false => Err(format!("no event containing {needle:?} within {timeout:?}")),
            }
        })
        .await
    }

    /// Waits until one of the Canary's event messages satisfies `matches` (`what` says
    /// which, in the failure), and returns them all, oldest first. Events are written after
    /// the status they announce, so a phase seen is not yet its events.
    pub async fn wait_event_where(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let poll = Poll::new(timeout).every(Duration::from_millis(100));
        self.look_until(name, poll, async || {
            let messages = self.event_messages(name).await;
            match messages.iter().any(|m| matches(m)) {
                true => Ok(messages),
                false => Err(format!("no event {what} within {timeout:?}")),
            }
        })
        .await
    }

    /// The first container's image of a Deployment.
    pub async fn image(&self, deployment: &str) -> String {
        let d = self.deployments().get(deployment).await.unwrap();
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    }

    pub async fn replicas(&self, deployment: &str) -> i32 {
        let d = self.deployments().get(deployment).await.unwrap();
        d.spec.unwrap().replicas.unwrap_or(1)
    }

    pub async fn ready_replicas(&self, deployment: &str) -> i32 {
        let d = self.deployments().get(deployment).await.unwrap();
        d.status.and_then(|s| s.ready_replicas).unwrap_or(0)
    }

    /// Sets the image of container `container` of a StatefulSet (strategic merge).
    pub async fn set_stateful_set_image(&self, name: &str, container: &str, image: &str) {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}});
        self.stateful_sets()
            .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .unwrap_or_else(|e| panic!("patch {name}: {e}"));
    }

    /// Sets the image of container `container` of a Deployment (strategic merge, as
    /// `kubectl set image` does).
    pub async fn set_image(&self, deployment: &str, container: &str, image: &str) {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}});
        self.deployments()
            .patch(
                deployment,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
            .unwrap_or_else(|e| panic!("patch {deployment}: {e}"));
    }
}

/// The `Ready` condition: (status, reason, message).
pub fn ready_condition(c: &Canary) -> Option<(String, String, String)> {
    let cond = c
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((
        cond.status.as_str().to_string(),
        cond.reason.clone(),
        cond.message.clone().unwrap_or_default(),
    ))
}

/// The arguments every test controller starts with: `--mesh-provider kubernetes`, a 1 s
/// minimum interval, any free port, debug logs.
pub fn controller_args() -> Vec<String> {
    [
        "--mesh-provider",
        "kubernetes",
        "--min-analysis-interval",
        "1s",
        "--port",
        "0",
        "--log-level",
        "debug",
    ]
    .map(String::from)
    .to_vec()
}

/// The resource name of a kind, by English rules (`Ingress` → `ingresses`).
fn plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    if let Some(stem) = lower.strip_suffix("is") {
        // Analysis, analyses.
        format!("{stem}es")
    } else if lower.ends_with('s') || lower.ends_with('x') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}
