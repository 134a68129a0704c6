//! Conformance of the emulator through kubectl, an independent client.
//! kubectl must be installed: these tests fail (not skip) without it.

use serde_json::Value;
use serin_stack::testing::poll::Poll;
use serin_stack::{Scenario, Stack, StackConfig};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const MANIFESTS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
              replicas: {type: integer}
          status:
            type: object
            properties:
              replicas: {type: integer}
---
apiVersion: example.com/v1
kind: Gadget
metadata:
  name: g1
spec:
  size: 2
  replicas: 1
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: podinfo:6.0.0
        env:
        - {name: A, value: "1"}
"#;

struct Kubectl {
    kubeconfig: PathBuf,
    /// kubectl caches discovery per host:port for hours; a port reused by a later stack
    /// must not see this one's types.
    cache: tempfile::TempDir,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args);
        c
    }

    fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.command(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap_or_else(|e| {
            panic!("kubectl is required for these tests and could not be started: {e}")
        });
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl and returns stdout, failing the test with stderr if it fails.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_stdin(args, None)
    }

    fn ok_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run_with_stdin(args, stdin);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\nstdout: {stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
}

async fn start() -> (Stack, Kubectl) {
    let scenario = Scenario::parse("workloads:\n  readyDelay: 200ms\n").unwrap();
    let stack = Stack::start(StackConfig {
        scenario,
        ..StackConfig::default()
    })
    .await
    .unwrap();
    let kubectl = Kubectl {
        kubeconfig: stack.kubeconfig_path().to_path_buf(),
        cache: tempfile::tempdir().unwrap(),
    };
    (stack, kubectl)
}

/// kubectl blocks; run it off the runtime's workers so the stack keeps serving.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_and_wait() {
    let (stack, k) = start().await;
    blocking(move || {
        // Like against a real API server, kubectl maps and validates every document before
        // applying any, so objects of a CRD created in the same file need a second apply.
        // The first run creates the CRD and fails on the Gadget.
        let first = k.run_with_stdin(&["apply", "-f", "-"], Some(MANIFESTS));
        let stdout = String::from_utf8_lossy(&first.stdout);
        assert!(
            stdout.contains(
                "customresourcedefinition.apiextensions.k8s.io/gadgets.example.com created"
            ),
            "{stdout}"
        );
        assert!(!first.status.success());
        k.ok(&[
            "wait",
            "--for=condition=established",
            "crd/gadgets.example.com",
            "--timeout=10s",
        ]);
        let second = k.ok_stdin(&["apply", "-f", "-"], Some(MANIFESTS));
        assert!(second.contains("gadget.example.com/g1 created"), "{second}");
        assert!(second.contains("deployment.apps/web"), "{second}");

        k.ok(&[
            "wait",
            "--for=condition=available",
            "deployment/web",
            "--timeout=10s",
        ]);
        let d = k.json(&["get", "deployment", "web"]);
        assert_eq!(d["status"]["readyReplicas"], 2);
        assert_eq!(d["metadata"]["generation"], 1);

        let list = k.json(&["get", "gadgets"]);
        assert_eq!(list["items"][0]["metadata"]["name"], "g1");
        let yaml = k.ok(&["get", "gd", "g1", "-o", "yaml"]);
        assert!(
            yaml.contains("kind: Gadget") && yaml.contains("size: 2"),
            "{yaml}"
        );
        let table = k.ok(&["get", "gadgets"]);
        let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["NAME", "SIZE", "AGE"]);
        assert!(table.lines().nth(1).unwrap().starts_with("g1"), "{table}");

        let pods = k.run_with_stdin(&["get", "pods"], None);
        assert!(pods.status.success());
        assert!(String::from_utf8_lossy(&pods.stderr).contains("No resources found"));

        let missing = k.run_with_stdin(&["get", "configmap", "nope"], None);
        assert!(!missing.status.success());
        assert!(
            String::from_utf8_lossy(&missing.stderr)
                .contains("Error from server (NotFound): configmaps \"nope\" not found")
        );

        let ssa = k.ok_stdin(&["apply", "--server-side", "-f", "-"], Some(MANIFESTS));
        assert!(ssa.contains("serverside-applied"), "{ssa}");
    })
    .await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_label_annotate_scale_delete() {
    let (stack, k) = start().await;
    blocking(move || {
        k.run_with_stdin(&["apply", "-f", "-"], Some(MANIFESTS));
        k.ok(&["wait", "--for=condition=established", "crd/gadgets.example.com", "--timeout=10s"]);
        k.ok_stdin(&["apply", "-f", "-"], Some(MANIFESTS));

        // Strategic merge (kubectl's default): env merges by name.
        k.ok(&["patch", "deployment", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","env":[{"name":"B","value":"2"}]}]}}}}"#]);
        let d = k.json(&["get", "deployment", "web"]);
        let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env.as_array().unwrap().len(), 2, "{env}");
        assert_eq!(d["metadata"]["generation"], 2);

        k.ok(&["patch", "deployment", "web", "--type", "merge", "-p", r#"{"spec":{"paused":false}}"#]);
        k.ok(&["patch", "deployment", "web", "--type", "json", "-p", r#"[{"op":"replace","path":"/spec/replicas","value":3}]"#]);
        assert_eq!(k.json(&["get", "deployment", "web"])["spec"]["replicas"], 3);
        let bad = k.run_with_stdin(&["patch", "gadget", "g1", "--type", "merge", "-p", r#"{"spec":{"size":0}}"#], None);
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).contains("spec.size"), "{}", String::from_utf8_lossy(&bad.stderr));
        let strategic_cr = k.run_with_stdin(&["patch", "gadget", "g1", "-p", r#"{"spec":{"size":3}}"#], None);
        assert!(!strategic_cr.status.success(), "strategic merge patch of a custom resource must be rejected");

        k.ok(&["label", "deployment", "web", "tier=front"]);
        k.ok(&["annotate", "deployment", "web", "note=hello"]);
        let d = k.json(&["get", "deployment", "web"]);
        assert_eq!(d["metadata"]["labels"]["tier"], "front");
        assert_eq!(d["metadata"]["annotations"]["note"], "hello");
        let selected = k.json(&["get", "deployments", "-l", "tier=front"]);
        assert_eq!(selected["items"].as_array().unwrap().len(), 1);

        k.ok(&["scale", "deployment", "web", "--replicas=5"]);
        assert_eq!(k.json(&["get", "deployment", "web"])["spec"]["replicas"], 5);
        k.ok(&["scale", "gadget", "g1", "--replicas=4"]);
        assert_eq!(k.json(&["get", "gadget", "g1"])["spec"]["replicas"], 4);
        k.ok(&["wait", "--for=jsonpath={.status.readyReplicas}=5", "deployment/web", "--timeout=10s"]);

        k.ok(&["delete", "gadget", "g1"]);
        k.ok(&["delete", "deployment", "web"]);
        assert!(!k.run_with_stdin(&["get", "deployment", "web"], None).status.success());
        k.ok(&["delete", "crd", "gadgets.example.com"]);
        let gone = k.run_with_stdin(&["get", "gadgets"], None);
        assert!(!gone.status.success());
    })
    .await;
    stack.shutdown().await;
}

/// kubectl's generator subcommands send protobuf bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_generators() {
    let (stack, k) = start().await;
    blocking(move || {
        k.ok(&["create", "namespace", "team"]);
        k.ok(&team(&["create", "configmap", "cfg", "--from-literal=a=b"]));
        k.ok(&team(&[
            "create",
            "secret",
            "generic",
            "pw",
            "--from-literal=password=hunter2",
        ]));
        k.ok(&team(&[
            "create",
            "deployment",
            "api",
            "--image=podinfo:6.0.0",
            "--replicas=2",
            "--port=9898",
        ]));
        k.ok(&team(&[
            "create",
            "service",
            "clusterip",
            "api",
            "--tcp=80:9898",
        ]));
        k.ok(&team(&["create", "serviceaccount", "robot"]));
        assert_eq!(
            k.json(&team(&["get", "configmap", "cfg"]))["data"]["a"],
            "b"
        );
        assert_eq!(
            k.json(&team(&["get", "secret", "pw"]))["data"]["password"],
            "aHVudGVyMg=="
        );
        the_generated_deployment_is_defaulted(&k.json(&team(&["get", "deployment", "api"])));
        let svc = k.json(&team(&["get", "service", "api"]));
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 9898);
        assert!(
            svc["spec"]["clusterIP"]
                .as_str()
                .unwrap()
                .starts_with("10.96.")
        );
        k.ok(&team(&[
            "wait",
            "--for=condition=available",
            "deployment/api",
            "--timeout=10s",
        ]));
        k.ok(&["delete", "namespace", "team"]);
        assert!(
            !k.run_with_stdin(&["get", "namespace", "team"], None)
                .status
                .success()
        );
    })
    .await;
    stack.shutdown().await;
}

/// `args` in namespace `team`.
fn team<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [&["-n", "team"], args].concat()
}

/// What `kubectl create deployment` sent, with the defaults the API server applies.
fn the_generated_deployment_is_defaulted(d: &Value) {
    assert_eq!(d["spec"]["replicas"], 2);
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "podinfo:6.0.0");
    assert_eq!(container["ports"][0]["containerPort"], 9898);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    // Defaults as the API server applies them.
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    assert_eq!(container["terminationMessagePolicy"], "File");
    assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(
        d["spec"]["template"]["metadata"]["creationTimestamp"],
        Value::Null
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch() {
    let (stack, k) = start().await;
    let mut child = k
        .command(&["get", "configmaps", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl is required for these tests");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // kubectl lists, then watches from the list's resourceVersion: once its watch has reached
    // the stack, whatever is created next is bound to show.
    Poll::new(
        "kubectl's watch to reach the stack",
        Duration::from_secs(10),
    )
    .until(|| async { stack.faults().requests("watch", "configmaps") >= 1 })
    .await;
    let seen = blocking(move || {
        // `kubectl create configmap` would send protobuf (answered 415); `create -f` sends JSON.
        k.ok_stdin(
            &["create", "-f", "-"],
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\ndata:\n  a: b\n"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while !seen.iter().any(|l: &String| l.starts_with("watched")) {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        seen
    })
    .await;
    assert!(
        seen.iter().any(|l| l.starts_with("watched")),
        "kubectl get -w printed {seen:?}"
    );
    stack.shutdown().await;
}
