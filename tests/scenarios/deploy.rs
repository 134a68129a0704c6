//! The install: the chart, the plain manifests and the kustomize overlays in `deploy/`, with
//! RBAC exactly as `src/rbac.rs` lists it. Rendered by a real Helm (built from its Go module by
//! `scripts/setup`), installed on the real control plane, and a controller holding only the
//! chart's service account completes a release through each covered provider.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use serin_core::Phase;
use serin_stack::testing::fake_http::{FakeServer, Response};
use serin_testkit::LONG;
use serin_testkit::{ControlPlane, WorldConfig, workspace_file};

fn helm() -> PathBuf {
    serin_testkit::helm_binary()
}

fn run(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn chart() -> String {
    workspace_file("deploy/chart/serin").display().to_string()
}

fn rendered() -> Vec<Value> {
    rendered_with(&[]).unwrap()
}

/// `helm template` of the chart into `serin-system` with `--set` values `sets`: its objects,
/// or Helm's error.
fn rendered_with(sets: &[&str]) -> Result<Vec<Value>, String> {
    let chart = chart();
    let mut args = vec!["template", "serin", &chart, "--namespace", "serin-system"];
    args.extend(KUBE_VERSION);
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = Command::new(helm()).args(&args).output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8(out.stdout)
        .unwrap()
        .split("\n---")
        .filter_map(|doc| serde_norway::from_str::<Value>(doc).ok())
        .filter(|v| v.is_object())
        .collect())
}

/// `helm template` renders for Kubernetes 1.20 unless told, below the chart's `kubeVersion`.
const KUBE_VERSION: [&str; 2] = ["--kube-version", "1.25.0"];

fn read(relative: &str) -> String {
    std::fs::read_to_string(workspace_file(relative)).unwrap()
}

#[test]
fn generated_install_files_match_the_code_and_the_chart() {
    let fix = "regenerate with scripts/render-manifests";
    for (name, text) in serin::rbac::files() {
        assert_eq!(
            read(&format!("deploy/chart/serin/files/{name}")),
            text,
            "the chart's RBAC rules ({name}) drifted from src/rbac.rs: {fix}"
        );
    }
    assert_eq!(
        read("deploy/chart/serin/crds/crds.yaml"),
        read("crds/crds.yaml"),
        "the chart's CRDs drifted from crds/: {fix}"
    );
    let manifests = read("deploy/manifests/serin.yaml");
    let body = run(
        &helm(),
        &[
            "template",
            "serin",
            &chart(),
            "--namespace",
            "serin-system",
            "--include-crds",
            KUBE_VERSION[0],
            KUBE_VERSION[1],
        ],
    );
    assert!(
        manifests.ends_with(&body),
        "deploy/manifests/serin.yaml drifted from the chart: {fix}"
    );
}

/// `(group, resource, verb, name)` of each permission (name empty: every object).
type Grants = BTreeSet<(String, String, String, String)>;

fn grants(rules: &[Value]) -> Grants {
    let mut out = Grants::new();
    for rule in rules {
        let names: Vec<String> = match rule["resourceNames"].as_array() {
            Some(names) => names.iter().map(|n| n.as_str().unwrap().into()).collect(),
            None => vec![String::new()],
        };
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    for name in &names {
                        let s = |v: &Value| v.as_str().unwrap().to_string();
                        out.insert((s(group), s(resource), s(verb), name.clone()));
                    }
                }
            }
        }
    }
    out
}

fn code_grants(rules: &[serin::rbac::Rule]) -> Grants {
    let rules: Vec<Value> = rules
        .iter()
        .map(|r| {
            let mut rule =
                json!({"apiGroups": [r.api_group], "resources": r.resources, "verbs": r.verbs});
            if !r.resource_names.is_empty() {
                rule["resourceNames"] = json!(r.resource_names);
            }
            rule
        })
        .collect();
    grants(&rules)
}

fn assert_same(what: &str, granted: &Grants, needed: &Grants) {
    let more: Vec<_> = granted.difference(needed).collect();
    let less: Vec<_> = needed.difference(granted).collect();
    assert!(
        more.is_empty() && less.is_empty(),
        "{what}:\nmore: {more:?}\nless: {less:?}"
    );
}

/// Every setting that changes the RBAC: cluster-wide or namespaced, config tracking on or
/// off, leader election on or off. Each renders exactly the rules src/rbac.rs lists for it,
/// in the scope it names: the watched namespaces, and the Lease in serin's own namespace.
#[test]
fn the_chart_grants_exactly_what_the_code_uses() {
    for namespace in ["", "team-a"] {
        for tracking in [true, false] {
            for leader in [false, true] {
                let sets = [
                    format!("namespace={namespace}"),
                    format!("configTracking.enabled={tracking}"),
                    format!("leaderElection.enabled={leader}"),
                ];
                let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
                let what = format!("{sets:?}");
                let docs = rendered_with(&sets).unwrap();
                let roles: Vec<&Value> = docs
                    .iter()
                    .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
                    .collect();
                let watched_kind = if namespace.is_empty() {
                    "ClusterRole"
                } else {
                    "Role"
                };
                let watched = roles
                    .iter()
                    .find(|r| r["metadata"]["name"] == "serin")
                    .unwrap_or_else(|| panic!("{what}: the role of the watched namespaces"));
                assert_eq!(watched["kind"], watched_kind, "{what}");
                if !namespace.is_empty() {
                    assert_eq!(watched["metadata"]["namespace"], namespace, "{what}");
                    // Nothing cluster-wide: the CRDs (crds/, not templates) are installed by
                    // Helm, not granted to serin.
                    assert!(
                        !docs
                            .iter()
                            .any(|d| d["kind"].as_str().is_some_and(|k| k.starts_with("Cluster"))),
                        "{what}: a namespaced install renders no ClusterRole or binding"
                    );
                }
                let binding = docs
                    .iter()
                    .find(|d| d["kind"] == format!("{watched_kind}Binding"))
                    .unwrap_or_else(|| panic!("{what}: a {watched_kind}Binding"));
                assert_eq!(binding["roleRef"]["kind"], watched_kind, "{what}");
                assert_eq!(
                    binding["subjects"][0]["namespace"], "serin-system",
                    "{what}"
                );
                assert_same(
                    &what,
                    &grants(watched["rules"].as_array().unwrap()),
                    &code_grants(&serin::rbac::rules(tracking)),
                );
                let lease_role = roles
                    .iter()
                    .find(|r| r["metadata"]["name"] == "serin-leader-election");
                match (leader, lease_role) {
                    (false, None) => {}
                    (true, Some(role)) => {
                        assert_eq!(role["kind"], "Role", "{what}");
                        assert_eq!(role["metadata"]["namespace"], "serin-system", "{what}");
                        assert_same(
                            &what,
                            &grants(role["rules"].as_array().unwrap()),
                            &code_grants(serin::rbac::LEADER_ELECTION),
                        );
                    }
                    (_, role) => panic!("{what}: leader election Role {role:?}"),
                }
                // And nothing beyond: no wildcard, no delete, no escalation verbs; but for
                // two grants of metric providers and one of StatefulSet rollbacks. An
                // external metric is a resource of its own (named after the metric), so the
                // External Metrics API is granted with a wildcard, read-only (`list`, as
                // Kubernetes grants its HPA controller); the Keptn Analyses serin creates
                // per check, it deletes; and a StatefulSet is rolled back by deleting its
                // pods on the failed revision (recreated by its controller on the current).
                for role in &roles {
                    for (group, resource, verb, _) in grants(role["rules"].as_array().unwrap()) {
                        let metric_provider = matches!(
                            (group.as_str(), resource.as_str(), verb.as_str()),
                            ("external.metrics.k8s.io", "*", "list")
                                | ("metrics.keptn.sh", "analyses", "delete")
                                | ("", "pods", "delete")
                        );
                        if metric_provider {
                            continue;
                        }
                        assert!(resource != "*" && verb != "*", "{resource} {verb}");
                        assert!(
                            ![
                                "delete",
                                "deletecollection",
                                "escalate",
                                "bind",
                                "impersonate"
                            ]
                            .contains(&verb.as_str())
                        );
                    }
                }
            }
        }
    }
}

/// Two replicas without leader election would both act on every Canary: the chart refuses.
#[test]
fn the_chart_refuses_several_replicas_without_leader_election() {
    let refused = rendered_with(&["replicas=2"]).unwrap_err();
    assert!(
        refused.contains("replicas=2 needs leader election")
            && refused.contains("leaderElection.enabled=true"),
        "{refused}"
    );
    let replicas = |docs: Vec<Value>| {
        docs.into_iter()
            .find(|d| d["kind"] == "Deployment")
            .unwrap()["spec"]["replicas"]
            .clone()
    };
    assert_eq!(replicas(rendered_with(&["replicas=1"]).unwrap()), 1);
    let elected = rendered_with(&["replicas=2", "leaderElection.enabled=true"]).unwrap();
    assert_eq!(replicas(elected), 2);
}

/// With leader election the chart rolls replicas one by one (the Lease keeps one active) and
/// a PodDisruptionBudget keeps a drain from taking them all; a single replica without it is
/// recreated (two must never run at once) and has no budget to block drains.
#[test]
fn replicas_with_leader_election_roll_and_have_a_disruption_budget() {
    let find = |docs: &[Value], kind: &str| docs.iter().find(|d| d["kind"] == kind).cloned();
    let elected = rendered_with(&["leaderElection.enabled=true"]).unwrap();
    let deployment = find(&elected, "Deployment").unwrap();
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    let budget = find(&elected, "PodDisruptionBudget").expect("a PodDisruptionBudget");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let single = rendered();
    let deployment = find(&single, "Deployment").unwrap();
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    assert!(find(&single, "PodDisruptionBudget").is_none());
    let one = rendered_with(&[
        "leaderElection.enabled=true",
        "leaderElection.replicaCount=1",
    ]);
    assert!(find(&one.unwrap(), "PodDisruptionBudget").is_none());
}

/// A shard of a cluster's Canaries: the chart passes the selector and its own Lease name,
/// and grants that Lease (not the default one).
#[test]
fn a_shard_runs_with_its_selector_and_its_own_lease() {
    let docs = rendered_with(&[
        "leaderElection.enabled=true",
        "leaderElection.id=serin-payments",
        "canarySelector=shard=payments",
        "maxProgressing=3",
    ])
    .unwrap();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    for arg in [
        "--canary-selector=shard=payments",
        "--leader-election-id=serin-payments",
        "--max-progressing=3",
    ] {
        assert!(args.as_array().unwrap().contains(&json!(arg)), "{args}");
    }
    let role = docs
        .iter()
        .find(|d| {
            d["kind"] == "Role"
                && d["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .ends_with("-leader-election")
        })
        .unwrap();
    assert_eq!(role["rules"][0]["resourceNames"], json!(["serin-payments"]));
}

#[test]
fn the_pod_runs_as_a_restricted_non_root_user() {
    let deployment = rendered()
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
}

fn canary(name: &str, provider: &str) -> Value {
    let stepped = json!({"interval": "1s", "threshold": 2, "stepWeight": 50, "maxWeight": 50});
    let canary = serin_testkit::canary(name).provider(provider);
    let canary = match provider {
        "kubernetes" => canary.iterations(2),
        "gatewayapi:v1" => canary.analysis(stepped).spec(
            "service",
            json!({"port": 9898, "gatewayRefs": [{"name": "public"}]}),
        ),
        "nginx" | "skipper" => canary.analysis(stepped).spec(
            "ingressRef",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": name}),
        ),
        "apisix" => canary.analysis(stepped).spec(
            "routeRef",
            json!({"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute", "name": name}),
        ),
        "knative" => canary.analysis(stepped).without("service").spec(
            "targetRef",
            json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": name}),
        ),
        _ => canary.analysis(stepped),
    };
    canary.build()
}

/// Objects a provider's Canary names, which the user owns: an Ingress, an ApisixRoute, the
/// Knative Service itself.
fn user_objects(name: &str, provider: &str) -> Vec<Value> {
    match provider {
        "nginx" | "skipper" => vec![
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name},
            "spec": {"rules": [{"host": "app.example.com", "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": name, "port": {"number": 9898}}}}]}}]}}),
        ],
        "apisix" => vec![
            json!({"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
            "metadata": {"name": name},
            "spec": {"http": [{"name": "rule", "match": {"paths": ["/*"]},
                "backends": [{"serviceName": name, "servicePort": 9898}]}]}}),
        ],
        "knative" => vec![knative_service(name, "podinfo:6.0.0")],
        _ => vec![],
    }
}

fn knative_service(name: &str, image: &str) -> Value {
    json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{"image": image}]}}}})
}

/// Every provider the scenario suites release through.
const PROVIDERS: [&str; 14] = [
    "kubernetes",
    "istio",
    "gatewayapi:v1",
    "linkerd",
    "nginx",
    "contour",
    "traefik",
    "osm",
    "kuma",
    "gloo",
    "appmesh:v1beta2",
    "skipper",
    "apisix",
    "knative",
];

/// Helm installs the chart, the kustomize overlays and the plain manifests are accepted, and
/// a controller with only the chart's service account releases through each provider.
#[tokio::test]
async fn installed_from_the_chart_it_releases_with_only_its_own_permissions() {
    if !serin_testkit::selected(ControlPlane::Real) {
        return;
    }
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), ControlPlane::Real)
        .knative()
        .without_controller()
        // Whole-cluster: Helm installs serin (ClusterRoles, bindings) into serin-system.
        .whole_cluster()
        .start()
        .await;
    let admin = world.stack.kubeconfig_path().display().to_string();
    // The overlays and the plain manifests are checked before the chart is installed: applied
    // over the chart's leader-elected Deployment (RollingUpdate), a Recreate strategy would
    // meet the chart's rollingUpdate field, which server-side apply leaves to its owner.
    run(
        Path::new("kubectl"),
        &[
            "--kubeconfig",
            &admin,
            "create",
            "namespace",
            "serin-system",
        ],
    );
    for overlay in ["istio", "linkerd", "nginx", "gatewayapi"] {
        let dir = workspace_file(&format!("deploy/kustomize/overlays/{overlay}"));
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "kubectl kustomize {} | kubectl --kubeconfig {admin} apply --server-side --force-conflicts --dry-run=server -f -",
                dir.display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{overlay}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let manifests = workspace_file("deploy/manifests/serin.yaml")
        .display()
        .to_string();
    run(
        Path::new("kubectl"),
        &[
            "--kubeconfig",
            &admin,
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "-f",
            &manifests,
        ],
    );

    run(
        &helm(),
        &[
            "install",
            "serin",
            &chart(),
            "--namespace",
            "serin-system",
            "--create-namespace",
            // The controller below runs with leader election: the chart grants the Lease
            // only then.
            "--set",
            "leaderElection.enabled=true",
            "--kubeconfig",
            &admin,
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = world.service_account_kubeconfig("serin-system", "serin", dir.path());
    let args = serin_testkit::controller_args();
    let mut controller =
        serin_testkit::Controller::new(Path::new(env!("CARGO_BIN_EXE_serin")), &kubeconfig, args);
    // With leader election, as the chart runs it: its Lease rights are part of the check.
    controller.start(&[
        "--enable-leader-election",
        "--leader-election-namespace",
        "serin-system",
    ]);
    for provider in PROVIDERS {
        let name = format!("app-{}", provider.replace(':', "-"));
        for object in user_objects(&name, provider) {
            world.create(object).await;
        }
        let mut d = deployment(&name);
        if provider != "knative" {
            world.apply(&world.deployments(), d.clone()).await;
        }
        world
            .apply(&world.canaries(), canary(&name, provider))
            .await;
        world.wait_phase(&name, Phase::Initialized, LONG).await;
        if provider == "knative" {
            let services = world.dynamic("serving.knative.dev/v1", "Service");
            let patch = json!({"spec": {"template": {"spec": {"containers": [{"image": "podinfo:6.0.1"}]}}}});
            world.merge(&services, &name, patch).await;
        } else {
            d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("podinfo:6.0.1");
            world.apply(&world.deployments(), d).await;
        }
    }
    for provider in PROVIDERS {
        let name = format!("app-{}", provider.replace(':', "-"));
        world
            .wait_canary(
                &name,
                &format!("{provider}: Succeeded"),
                Duration::from_secs(90),
                |c| {
                    c.status
                        .as_ref()
                        .is_some_and(|s| s.phase == Phase::Succeeded)
                },
            )
            .await;
    }
    // Every provider's Canary idle: its routing objects come from watches the chart's
    // permissions allow, and nothing unchanged is applied again.
    controller
        .assert_idle_makes_no_api_requests(PROVIDERS.len())
        .await;
    let logs = controller.logs(100_000);
    let forbidden: Vec<&str> = logs.lines().filter(|l| l.contains("forbidden")).collect();
    assert!(forbidden.is_empty(), "{forbidden:#?}");
}

/// Whether `kubectl auth can-i` allows `subject` `request` (e.g. `["list", "secrets", "-A"]`).
fn can_i(admin: &str, subject: &str, request: &[&str]) -> bool {
    let out = Command::new("kubectl")
        .args(["--kubeconfig", admin, "auth", "can-i", "--as", subject])
        .args(request)
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    match answer.split_whitespace().next() {
        Some("yes") => true,
        Some("no") => false,
        _ => panic!(
            "kubectl auth can-i {request:?}: {answer} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `helm install` of the chart as `release` into `namespace` with `--set` values `sets`.
fn helm_install(admin: &str, release: &str, namespace: &str, sets: &[&str]) {
    let chart = chart();
    let mut args = vec![
        "install",
        release,
        &chart,
        "--namespace",
        namespace,
        "--create-namespace",
        "--kubeconfig",
        admin,
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    run(&helm(), &args);
}

/// Asserts what `subject` may and may not do, each `(allowed, request)`. The allowed ones are
/// waited for first: RBAC reaches the authorizer shortly after the install, and a refusal
/// seen before is no proof.
async fn assert_grants(admin: &str, subject: &str, checks: &[(bool, &[&str])]) {
    for (_, request) in checks.iter().filter(|(allowed, _)| *allowed) {
        serin_testkit::wait_until(
            Duration::from_secs(30),
            &format!("{subject} may {request:?}"),
            || async { can_i(admin, subject, request) },
        )
        .await;
    }
    for (allowed, request) in checks {
        assert_eq!(
            can_i(admin, subject, request),
            *allowed,
            "{subject} {request:?}"
        );
    }
}

/// Least privilege on the real control plane, asked of its authorizer for the chart's
/// service accounts: no Secret listing without config tracking, the Lease only in serin's own
/// namespace, a namespaced install confined to its namespace. Then a controller holding only
/// the config-tracking-off grants releases without a refusal.
#[tokio::test]
async fn the_chart_grants_each_setting_only_what_it_uses() {
    if !serin_testkit::selected(ControlPlane::Real) {
        return;
    }
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), ControlPlane::Real)
        // Keptn's CRDs, so that `kubectl auth can-i` knows their resources.
        .keptn()
        .without_controller()
        // Whole-cluster: Helm installs serin (ClusterRoles, bindings) into three namespaces
        // of its own, and a namespaced install into team-a.
        .whole_cluster()
        .start()
        .await;
    let admin = world.stack.kubeconfig_path().display().to_string();
    let ns = world.ns();

    // Config tracking off, leader election on.
    helm_install(
        &admin,
        "serin",
        "serin-system",
        &[
            "configTracking.enabled=false",
            "leaderElection.enabled=true",
        ],
    );
    let lease = format!("leases/{}", serin::controller::runtime::leader::LEASE);
    assert_grants(
        &admin,
        "system:serviceaccount:serin-system:serin",
        &[
            // Credentials: the Secret a MetricTemplate or AlertProvider names, one GET.
            (true, &["get", "secrets", "-n", ns]),
            (false, &["list", "secrets", "-A"]),
            (false, &["watch", "secrets", "-A"]),
            (false, &["list", "secrets", "-n", ns]),
            (false, &["patch", "secrets", "-n", ns]),
            // Its own Lease, in its own namespace.
            (true, &["get", &lease, "-n", "serin-system"]),
            (true, &["patch", &lease, "-n", "serin-system"]),
            (true, &["watch", &lease, "-n", "serin-system"]),
            (true, &["create", "leases", "-n", "serin-system"]),
            (false, &["patch", "leases/other", "-n", "serin-system"]),
            (false, &["patch", "leases", "-n", "kube-node-lease"]),
            (false, &["get", "leases", "-n", "kube-node-lease"]),
            (false, &["patch", &lease, "-n", "kube-system"]),
            (false, &["list", "leases", "-A"]),
            // The rest is unchanged: cluster-wide.
            (true, &["list", "deployments.apps", "-A"]),
            // The keptn metric provider: a KeptnMetric read, an Analysis created, read and
            // deleted, nothing more. (An external metric is no resource kubectl can resolve
            // without an adapter registered as an APIService.)
            (true, &["get", "keptnmetrics.metrics.keptn.sh", "-n", ns]),
            (false, &["patch", "keptnmetrics.metrics.keptn.sh", "-n", ns]),
            (true, &["create", "analyses.metrics.keptn.sh", "-n", ns]),
            (true, &["delete", "analyses.metrics.keptn.sh", "-n", ns]),
            (
                false,
                &["delete", "analysisdefinitions.metrics.keptn.sh", "-n", ns],
            ),
        ],
    )
    .await;

    // Config tracking on (the default): the Secret cache, and no Lease at all.
    helm_install(&admin, "tracking", "serin-tracking", &[]);
    assert_grants(
        &admin,
        "system:serviceaccount:serin-tracking:tracking-serin",
        &[
            (true, &["list", "secrets", "-A"]),
            (true, &["watch", "secrets", "-A"]),
            (false, &["get", "leases", "-n", "serin-tracking"]),
        ],
    )
    .await;

    // A namespaced install: Roles in the watched namespace, nothing cluster-wide.
    run(
        Path::new("kubectl"),
        &["--kubeconfig", &admin, "create", "namespace", "team-a"],
    );
    helm_install(&admin, "team", "serin-team", &["namespace=team-a"]);
    assert_grants(
        &admin,
        "system:serviceaccount:serin-team:team-serin",
        &[
            (true, &["list", "deployments.apps", "-n", "team-a"]),
            (
                true,
                &["patch", "canaries.flagger.app/status", "-n", "team-a"],
            ),
            (false, &["list", "deployments.apps", "-n", ns]),
            (false, &["list", "deployments.apps", "-A"]),
            (false, &["list", "canaries.flagger.app", "-n", ns]),
            (false, &["get", "secrets", "-n", ns]),
        ],
    )
    .await;
    let cluster_wide = run(
        Path::new("kubectl"),
        &[
            "--kubeconfig",
            &admin,
            "get",
            "clusterroles,clusterrolebindings",
            "-l",
            "app.kubernetes.io/instance=team",
            "-o",
            "name",
        ],
    );
    assert_eq!(
        cluster_wide.trim(),
        "",
        "a namespaced install is granted nothing cluster-wide"
    );

    // The controller with only those grants and config tracking off: it never asks to list
    // or watch Secrets (the old Secret cache would be refused, and say so in its log).
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = world.service_account_kubeconfig("serin-system", "serin", dir.path());
    let mut controller = serin_testkit::Controller::new(
        Path::new(env!("CARGO_BIN_EXE_serin")),
        &kubeconfig,
        serin_testkit::controller_args(),
    );
    controller.start(&[
        "--enable-config-tracking=false",
        "--secret-label",
        "serin.io/credentials=true",
        "--enable-leader-election",
        "--leader-election-namespace",
        "serin-system",
    ]);
    let name = "untracked";
    world.apply(&world.deployments(), deployment(name)).await;
    world
        .apply(&world.canaries(), canary(name, "kubernetes"))
        .await;
    world.wait_phase(name, Phase::Initialized, LONG).await;
    world.set_image(name, "app", "podinfo:6.0.1").await;
    world.wait_phase(name, Phase::Succeeded, LONG).await;

    // Provider credentials, read with a GET: a Secret without the opt-in label is refused,
    // naming the Secret and the label; a labelled one is used.
    let datadog = FakeServer::start(|_| Response::json(200, json!({"valid": true}))).await;
    for (secret, labels, key) in [
        ("unlabelled", json!({}), "unlabelled-key"),
        (
            "labelled",
            json!({"serin.io/credentials": "true"}),
            "labelled-key",
        ),
    ] {
        world
            .create(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": secret, "labels": labels},
                "stringData": {"datadog_api_key": key, "datadog_application_key": "app"}}))
            .await;
        world
            .create(
                json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
                "metadata": {"name": secret},
                "spec": {"provider": {"type": "datadog", "address": datadog.url,
                    "secretRef": {"name": secret}}, "query": "avg:errors{*}"}}),
            )
            .await;
        let name = format!("with-{secret}");
        world.apply(&world.deployments(), deployment(&name)).await;
        let mut c = canary(&name, "kubernetes");
        c["spec"]["analysis"]["metrics"] = json!([{"name": "errors",
            "templateRef": {"name": secret}, "thresholdRange": {"max": 1}, "interval": "1m"}]);
        world.apply(&world.canaries(), c).await;
    }
    world
        .wait_event(
            "with-unlabelled",
            &format!("Secret {ns}/unlabelled lacks the label serin.io/credentials=true"),
            Duration::from_secs(60),
        )
        .await;
    world
        .wait_event(
            "with-labelled",
            "all the metrics providers are available",
            Duration::from_secs(60),
        )
        .await;
    let keys: Vec<String> = datadog
        .requests()
        .iter()
        .filter_map(|r| r.headers.get("dd-api-key").cloned())
        .collect();
    assert!(
        keys.iter().all(|k| k == "labelled-key") && !keys.is_empty(),
        "only the labelled Secret's key is sent: {keys:?}"
    );
    // Every provider's Canary idle: its routing objects come from watches the chart's
    // permissions allow, and nothing unchanged is applied again.
    controller
        .assert_idle_makes_no_api_requests(PROVIDERS.len())
        .await;
    let logs = controller.logs(100_000);
    assert!(!logs.contains("forbidden"), "{}", controller.logs(60));
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "podinfo:6.0.0",
                    "ports": [{"containerPort": 9898, "name": "http"}]}]}
            }
        }
    })
}

/// The image cannot be built here (no container runtime): its essentials are checked instead,
/// the ones hadolint and a security review would flag.
#[test]
fn the_dockerfile_builds_a_static_binary_onto_a_non_root_base() {
    let text = read("Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .copied()
        .collect();
    assert_eq!(
        froms.len(),
        3,
        "a build stage, the load tester's and the runtime stage (last: the default): {froms:?}"
    );
    for from in &froms {
        let image = from.split_whitespace().nth(1).unwrap();
        assert!(
            image.contains(':') && !image.ends_with(":latest"),
            "pinned tag: {from}"
        );
    }
    assert!(
        froms[0].contains("alpine"),
        "musl: a static binary: {}",
        froms[0]
    );
    assert!(
        froms[2].contains("distroless/static") && froms[2].contains("nonroot"),
        "{}",
        froms[2]
    );
    // The load tester's tools, each download checked against its published checksum.
    assert!(froms[1].ends_with("AS loadtester"), "{}", froms[1]);
    let loadtester = text
        .split("\nFROM ")
        .find(|stage| stage.contains("AS loadtester"))
        .unwrap();
    assert_eq!(
        loadtester.matches("sha256sum -c").count(),
        2,
        "{loadtester}"
    );
    assert!(
        loadtester.contains("\nUSER 65532:65532"),
        "non-root: {loadtester}"
    );
    assert!(
        text.contains("cargo build --release --locked"),
        "reproducible build"
    );
    let last_stage = text.rsplit("\nFROM ").next().unwrap();
    let user = last_stage
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER in the runtime stage");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric uid");
    assert_ne!(uid, 0, "not root");
    let entrypoint = last_stage
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    assert!(
        serde_json::from_str::<Vec<String>>(entrypoint).is_ok(),
        "exec form: {entrypoint}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("ADD ")),
        "COPY, not ADD"
    );
    // Flagger's chart probes with `exec: wget ...` (tests/offline/flagger_probes.rs runs it).
    assert!(
        text.contains("ln -s serin /out/wget") && last_stage.contains("/out/ /usr/local/bin/"),
        "wget linked to serin in the image"
    );
    let ignore = read(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "the build context skips target/"
    );
}

/// The dashboard is valid Grafana JSON whose queries name only series serin exports.
#[test]
fn the_grafana_dashboard_queries_serins_series() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/serin.json")).unwrap();
    use serin::controller::runtime::telemetry::{Outcome, Telemetry};
    // One series of every family, so that each is rendered.
    let t = Telemetry::new();
    t.info("0", "istio");
    t.canaries(&[("test".to_string(), 1)].into_iter().collect());
    t.status("test", "podinfo", 1);
    t.weights("test", "podinfo", 100, 0);
    t.duration("test", "podinfo", 0.1);
    t.metric_analysis("test", "podinfo", "errors", 1.0);
    t.outcome("test", "podinfo", Outcome::Promoted, "canary", "completed");
    t.outcome("test", "podinfo", Outcome::Failed, "canary", "completed");
    t.reconcile_error("Conflict");
    t.alert("slack", "delivered");
    t.reconciled(0.1);
    t.step_late(0.1);
    t.triggers("Deployment").inc();
    let exported: BTreeSet<String> = t
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("flagger_") || w.starts_with("serin_"))
                .collect();
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                assert!(
                    exported.contains(name) || exported.contains(family),
                    "{name} is not exported by serin (exported: {exported:?})"
                );
            }
        }
    }
}

/// The policies of deploy/policies on the real API server: the ValidatingAdmissionPolicy
/// refuses a MetricTemplate aimed at the metadata endpoint, naming the allowed backends, and
/// admits one aimed at an allowed backend and one without an address; the egress
/// NetworkPolicy is a valid object.
#[tokio::test]
async fn the_shipped_policies_restrict_metric_template_addresses_and_egress() {
    if !serin_testkit::selected(ControlPlane::Real) {
        return;
    }
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), ControlPlane::Real)
        .without_controller()
        // Whole-cluster: it installs a ValidatingAdmissionPolicy (cluster-scoped) and creates
        // serin-system.
        .whole_cluster()
        .start()
        .await;
    let ns = world.ns();
    let admin = world.stack.kubeconfig_path().display().to_string();
    let kubectl = Path::new("kubectl");
    let policies = workspace_file("deploy/policies/metrictemplate-addresses.yaml");
    run(
        kubectl,
        &[
            "--kubeconfig",
            &admin,
            "apply",
            "-f",
            &policies.display().to_string(),
        ],
    );
    let egress = workspace_file("deploy/policies/egress-networkpolicy.yaml");
    run(
        kubectl,
        &[
            "--kubeconfig",
            &admin,
            "create",
            "namespace",
            "serin-system",
        ],
    );
    run(
        kubectl,
        &[
            "--kubeconfig",
            &admin,
            "apply",
            "--dry-run=server",
            "-f",
            &egress.display().to_string(),
        ],
    );

    let template = |name: &str, address: Option<&str>| {
        let mut provider = json!({"type": "prometheus"});
        if let Some(address) = address {
            provider["address"] = address.into();
        }
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
               "metadata": {"name": name, "namespace": ns},
               "spec": {"provider": provider, "query": "vector(1)"}})
    };
    let create = |object: Value| {
        let mut child = Command::new("kubectl")
            .args(["--kubeconfig", &admin, "create", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(object.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // The API server starts enforcing a new policy once it has compiled it.
    let poll = serin_testkit::Poll::new(LONG).every(Duration::from_millis(300));
    let mut attempt = 0;
    let refusal = loop {
        let (created, stderr) = create(template(
            &format!("metadata-{attempt}"),
            Some("http://169.254.169.254/latest/meta-data"),
        ));
        if !created {
            break stderr;
        }
        attempt += 1;
        assert!(!poll.expired(), "the policy was never enforced");
        poll.next().await;
    };
    assert!(
        refusal.contains("serin-metrictemplate-addresses"),
        "{refusal}"
    );
    assert!(
        refusal.contains("http://prometheus.monitoring:9090"),
        "{refusal}"
    );
    let (created, stderr) = create(template(
        "prometheus",
        Some("http://prometheus.monitoring:9090/"),
    ));
    assert!(created, "{stderr}");
    let (created, stderr) = create(template("default-address", None));
    assert!(created, "{stderr}");
}
