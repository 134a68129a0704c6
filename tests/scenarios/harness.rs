//! A local cluster (serin-stack, in process) with serin's CRDs and the real `serin controller`
//! binary running against it, plus the waits and reads the scenarios share.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::{Value, json};
use serin::api::Canary;
use serin_core::Phase;
use serin_stack::{Stack, StackConfig};

pub const NS: &str = "default";

pub struct World {
    pub stack: Stack,
    pub client: Client,
    controller: Option<Child>,
    logs: tempfile::TempDir,
    starts: usize,
}

impl World {
    /// A stack with the CRDs and a running controller (`--mesh-provider kubernetes`, 1 s
    /// minimum interval).
    pub async fn start() -> World {
        let mut world = World::without_controller().await;
        world.start_controller(&[]);
        world
    }

    pub async fn without_controller() -> World {
        let stack = Stack::start(StackConfig::default()).await.unwrap();
        let kubeconfig = Kubeconfig::read_from(stack.kubeconfig_path()).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap();
        let client = Client::try_from(config).unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in serin::api::crds() {
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        // The API serves a CRD's kind once it is established.
        let canaries: Api<Canary> = Api::namespaced(client.clone(), NS);
        wait_until(Duration::from_secs(10), "Canary CRD served", || async {
            canaries.list(&ListParams::default()).await.is_ok()
        })
        .await;
        World {
            stack,
            client,
            controller: None,
            logs: tempfile::tempdir().unwrap(),
            starts: 0,
        }
    }

    pub fn start_controller(&mut self, extra: &[&str]) {
        self.starts += 1;
        let log = self.log_path(self.starts);
        let err = File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_serin"))
            .args(["controller", "--kubeconfig"])
            .arg(self.stack.kubeconfig_path())
            .args([
                "--mesh-provider",
                "kubernetes",
                "--min-analysis-interval",
                "1s",
                "--port",
                "0",
                "--log-level",
                "debug",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        self.controller = Some(child);
    }

    /// Kills the controller without warning (SIGKILL), as a crashed node would.
    pub fn kill_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.logs.path().join(format!("controller-{n}.log"))
    }

    /// The controller's log (all runs), for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.starts {
            let text = std::fs::read_to_string(self.log_path(n)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- controller run {n} (last 40 lines) ---\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    pub fn canaries(&self) -> Api<Canary> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn daemon_sets(&self) -> Api<DaemonSet> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Server-side applies any object of the typed APIs above.
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
        let start = Instant::now();
        loop {
            let canary = self.canary(name).await;
            if canary.status.as_ref().map(|s| s.phase) == Some(phase) {
                return canary;
            }
            if start.elapsed() > timeout {
                self.fail(name, &format!("phase {phase} not reached in {timeout:?}"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a condition on the Canary.
    pub async fn wait_canary(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        f: impl Fn(&Canary) -> bool,
    ) -> Canary {
        let start = Instant::now();
        loop {
            let canary = self.canary(name).await;
            if f(&canary) {
                return canary;
            }
            if start.elapsed() > timeout {
                self.fail(name, &format!("{what}: not within {timeout:?}"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
            .wait_canary(name, "Ready=False", Duration::from_secs(30), |c| {
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
        panic!(
            "{why}\nstatus: {}\nevents:\n{}\n{}",
            status.unwrap_or_else(|| "<none>".into()),
            self.events(name).await.join("\n"),
            self.logs()
        );
    }

    /// Messages of the events on Canary `name`, oldest first, as `Type: message`.
    pub async fn events(&self, name: &str) -> Vec<String> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), NS);
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

    pub async fn has_event(&self, name: &str, needle: &str) -> bool {
        self.events(name).await.iter().any(|e| e.contains(needle))
    }

    pub async fn wait_event(&self, name: &str, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.has_event(name, needle).await {
            if start.elapsed() > timeout {
                self.fail(
                    name,
                    &format!("no event containing {needle:?} within {timeout:?}"),
                )
                .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

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

    pub async fn set_image(&self, deployment: &str, image: &str) {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
        self.merge_strategic(deployment, patch).await;
    }

    async fn merge_strategic(&self, deployment: &str, patch: Value) {
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

impl Drop for World {
    fn drop(&mut self) {
        self.kill_controller();
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

pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A podinfo-like Deployment (`app: <name>`, container `app`).
pub fn deployment(name: &str, image: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image,
                    "ports": [{"containerPort": 9898, "name": "http"}]}]}
            }
        }
    })
}

/// A `kubernetes`-provider Canary (blue/green) with `iterations` checks at 1 s.
pub fn canary(name: &str, iterations: u32) -> Value {
    json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "provider": "kubernetes",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "progressDeadlineSeconds": 60,
            "service": {"port": 9898},
            "analysis": {"interval": "1s", "threshold": 2, "iterations": iterations}
        }
    })
}

/// Deployment + Canary, waited to `Initialized`.
pub async fn initialized(world: &World, name: &str, iterations: u32) -> Canary {
    world
        .apply(&world.deployments(), deployment(name, "podinfo:6.0.0", 2))
        .await;
    world
        .apply(&world.canaries(), canary(name, iterations))
        .await;
    world
        .wait_phase(name, Phase::Initialized, Duration::from_secs(20))
        .await
}
