//! Benchmark (ignored by default): many Canaries on one controller. Prints how long it takes
//! to initialize them and to release all of them at once, the controller's CPU time and
//! memory, and the API requests it made per Canary.
//!
//! ```sh
//! cargo test --release --test benchmarks scale:: -- --ignored --nocapture
//! SERIN_SCALE_CANARIES=500 SERIN_SCALE_QPS=1000 cargo test --release --test benchmarks scale:: -- --ignored --nocapture
//! # a realistic cluster: unrelated Deployments, Secrets (some ~1 MiB) and ConfigMaps beside
//! # the Canaries, in namespace `noise`; `opaque` makes the big Secrets Opaque instead of
//! # Helm release records; `beside` puts them in the Canaries' namespace
//! SERIN_SCALE_NOISE=5000,10000,200,5000 cargo test --release --test benchmarks scale:: -- --ignored --nocapture
//! SERIN_SCALE_NOISE=5000,10000,200,5000,opaque cargo test --release --test benchmarks scale:: -- --ignored --nocapture
//! SERIN_SCALE_NOISE=5000,10000,200,5000,beside cargo test --release --test benchmarks scale:: -- --ignored --nocapture
//! # the controller on one worker thread (`--worker-threads 1`)
//! SERIN_SCALE_WORKERS=1 SERIN_SCALE_CANARIES=1000 SERIN_SCALE_QPS=1000 cargo test --release --test benchmarks scale:: -- --ignored --nocapture
//! # where the controller's memory goes: dhat-heap.json, by allocation site
//! SERIN_SCALE_CANARIES=300 cargo test --release --features heap-profile --test benchmarks scale:: -- --ignored --nocapture
//! ```

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use serin::api::Canary;
use serin_core::Phase;
use serin_stack::Stack;
use serin_testkit::{ControlPlane, Poll, WorldConfig, wait_until};

/// (user + system CPU seconds, RSS MiB, peak RSS MiB) of a process, from /proc.
pub(crate) fn usage(pid: u32) -> (f64, f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (cpu, kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

/// API requests the stack has served, per `{verb,resource,code}` (its admin metrics).
async fn request_series(stack: &Stack) -> std::collections::BTreeMap<String, f64> {
    let url = format!("{}/metrics", stack.admin_url().unwrap());
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("serin_stack_requests_total{"))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            Some((series.to_string(), v.parse::<f64>().ok()?))
        })
        .collect()
}

/// The series that grew between two readings, largest growth first.
fn top_series(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> Vec<(f64, String)> {
    let mut grown: Vec<(f64, String)> = after
        .iter()
        .map(|(k, v)| (v - before.get(k).copied().unwrap_or(0.0), k.clone()))
        .filter(|(d, _)| *d > 0.0)
        .collect();
    grown.sort_by(|a, b| b.0.total_cmp(&a.0));
    grown
}

/// Total API requests the stack has served.
async fn requests(stack: &Stack) -> f64 {
    request_series(stack).await.values().sum()
}

async fn count(canaries: &Api<Canary>, phase: Phase) -> usize {
    canaries
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|c| c.status.as_ref().map(|s| s.phase) == Some(phase))
        .count()
}

/// Waits until all `n` canaries are in `phase`: (time taken, list requests this made).
async fn wait_all(
    canaries: &Api<Canary>,
    phase: Phase,
    n: usize,
    timeout: Duration,
) -> (Duration, f64) {
    // Listing every Canary costs the API server more as they grow: poll less often.
    let every = 500 * (n as u64 / 1000).max(1);
    let poll = Poll::new(timeout).every(Duration::from_millis(every));
    let mut polls = 0.0;
    loop {
        polls += 1.0;
        let done = count(canaries, phase).await;
        if done == n {
            return (poll.elapsed(), polls);
        }
        assert!(
            !poll.expired(),
            "{done}/{n} canaries {phase} after {timeout:?}"
        );
        poll.next().await;
    }
}

/// With `--features heap-profile`: stops the controller cleanly so that it writes
/// `dhat-heap.json` (in the working directory) and waits for the file.
async fn write_heap_profile(pid: u32) {
    let file = std::path::Path::new("dhat-heap.json");
    let _ = std::fs::remove_file(file);
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "SIGTERM to the controller");
    // Written in one go at exit: complete once the process has exited (gone, or a zombie
    // its parent, this test, has not reaped).
    let exited = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    };
    let poll = Poll::new(Duration::from_secs(300)).every(Duration::from_secs(1));
    let written = || file.exists() && exited();
    while !written() && !poll.expired() {
        poll.next().await;
    }
    println!("heap profile: {} (open in dh_view.html)", file.display());
}

/// What the benchmark reads of the controller's metrics.
struct StepMetrics {
    /// The step-lateness histogram: (upper bound `le`, cumulative count).
    buckets: Vec<(f64, f64)>,
    /// The sum of all lateness observations.
    sum: f64,
    /// Reconciles run so far.
    reconciles: f64,
    /// Reconciles asked for by watch events so far, by the kind that changed.
    triggers: std::collections::BTreeMap<String, f64>,
}

async fn step_metrics(port: u16) -> StepMetrics {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let mut read = StepMetrics {
        buckets: Vec::new(),
        sum: 0.0,
        reconciles: 0.0,
        triggers: Default::default(),
    };
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        if let Some(le) = series.strip_prefix("serin_step_lateness_seconds_bucket{le=\"") {
            let le = le.trim_end_matches("\"}");
            read.buckets
                .push((le.parse().unwrap_or(f64::INFINITY), value));
        } else if series == "serin_step_lateness_seconds_sum" {
            read.sum = value;
        } else if series == "serin_reconcile_duration_seconds_count" {
            read.reconciles = value;
        } else if let Some(kind) = series.strip_prefix("serin_reconcile_triggers_total{kind=\"") {
            read.triggers
                .insert(kind.trim_end_matches("\"}").to_string(), value);
        }
    }
    read
}

/// Steps observed between two histogram readings, and the bucket bound the `q` quantile
/// falls under (a conservative quantile: the true value is at most this).
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> (f64, f64) {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .zip(before)
        .map(|((le, a), (_, b))| (*le, a - b))
        .collect();
    let total = delta.last().map(|(_, c)| *c).unwrap_or(0.0);
    let bound = delta
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| *le)
        .unwrap_or(f64::NAN);
    (total, bound)
}

/// `SERIN_SCALE_NOISE=deployments,secrets,big_secrets,configmaps[,opaque][,beside]`: objects
/// that have nothing to do with any Canary, created before the controller starts in namespace
/// `noise`, or with `beside` in the Canaries' own. Returns a description for the report.
async fn noise(world: &serin_testkit::World) -> Option<String> {
    let spec = std::env::var("SERIN_SCALE_NOISE").ok()?;
    let parts: Vec<&str> = spec.split(',').collect();
    let n = |i: usize| {
        parts
            .get(i)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let (deployments, secrets, big, configmaps) = (n(0), n(1), n(2), n(3));
    let flags: Vec<&str> = parts.iter().skip(4).copied().collect();
    let big_type = if flags.contains(&"opaque") {
        "Opaque"
    } else {
        "helm.sh/release.v1"
    };
    let ns = if flags.contains(&"beside") {
        world.ns()
    } else {
        "noise"
    };
    if ns != world.ns() {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(world.client.clone());
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        namespaces
            .create(
                &Default::default(),
                &serde_json::from_value(namespace).unwrap(),
            )
            .await
            .unwrap();
    }
    let create = |object: serde_json::Value| async move {
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
            world.client.clone(),
            ns,
            &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                "",
                "v1",
                object["kind"].as_str().unwrap(),
            )),
        );
        let object: kube::api::DynamicObject = serde_json::from_value(object).unwrap();
        api.create(&Default::default(), &object).await.unwrap();
    };
    let deployments_api: Api<Deployment> = Api::namespaced(world.client.clone(), ns);
    for i in 0..deployments {
        let name = format!("other-{i}");
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "other:1"}]}}}});
        deployments_api
            .create(&Default::default(), &serde_json::from_value(d).unwrap())
            .await
            .unwrap();
    }
    // ~1 MiB of base64, as a Helm release record holds.
    let payload = "QUJD".repeat(256 * 1024);
    for i in 0..secrets {
        let (kind, data) = if i < big {
            (big_type, payload.as_str())
        } else {
            ("Opaque", "c2VjcmV0")
        };
        create(json!({"apiVersion": "v1", "kind": "Secret", "type": kind,
            "metadata": {"name": format!("secret-{i}"), "namespace": ns},
            "data": {"release": data}}))
        .await;
    }
    for i in 0..configmaps {
        create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("config-{i}"), "namespace": ns},
            "data": {"app.yaml": "key: value\n".repeat(20)}}))
        .await;
    }
    Some(format!(
        "noise in namespace {ns}: {deployments} Deployments, {secrets} Secrets ({big} of ~1 \
         MiB, {big_type}), {configmaps} ConfigMaps"
    ))
}

// The emulator runs in this process: on one thread it, not serin, bounds 10,000 Canaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
async fn many_canaries() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n: usize = std::env::var("SERIN_SCALE_CANARIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    // The controller's client-side rate limit (Flagger's default 100/s); the figures at the
    // default are bound by it.
    let qps = std::env::var("SERIN_SCALE_QPS").unwrap_or_else(|_| "100".into());
    let iterations: u32 = std::env::var("SERIN_SCALE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    // The controller's `--worker-threads` (0: one per core, its default).
    let workers = std::env::var("SERIN_SCALE_WORKERS").unwrap_or_else(|_| "0".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
        .to_string();
    // No traffic: the Canaries have no metrics, and the traffic world's pass over every
    // Service each second would be the emulator's, not serin's, cost.
    let mut config = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), ControlPlane::Emulator);
    let noise_elsewhere = std::env::var("SERIN_SCALE_NOISE")
        .is_ok_and(|spec| !spec.split(',').any(|flag| flag == "beside"));
    if noise_elsewhere {
        // The noise in namespace `noise`: another namespace, and a controller watching it.
        config = config.whole_cluster();
    }
    let mut world = config
        .scenario("traffic:\n  services: []\n")
        .controller_args(&[
            "--mesh-provider",
            "kubernetes",
            "--port",
            &port,
            "--log-level",
            "warn",
            "--kubeconfig-qps",
            &qps,
            "--worker-threads",
            &workers,
        ])
        .without_controller()
        .start()
        .await;
    let deployments: Api<Deployment> = world.deployments();
    let canaries: Api<Canary> = world.canaries();
    wait_until(Duration::from_secs(30), "the Canary API served", || async {
        canaries.list(&Default::default()).await.is_ok()
    })
    .await;
    let noise = noise(&world).await;

    // The controller with nothing to do (but the noise, if any): its floor.
    world.start_controller(&[]);
    // Its caches (of the noise, if any) synced.
    let ready = format!("http://127.0.0.1:{port}/readyz");
    wait_until(Duration::from_secs(120), "the controller ready", || async {
        reqwest::get(&ready)
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let (_, rss_empty, _) = usage(world.controller_pid().unwrap());
    world.kill_controller();
    let apply = PatchParams::apply("bench").force();
    let deployment = |name: &str, image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": image}]}}}})
    };
    for i in 0..n {
        let name = format!("app-{i}");
        deployments
            .patch(
                &name,
                &apply,
                &Patch::Apply(deployment(&name, "podinfo:6.0.0")),
            )
            .await
            .unwrap();
        let canary = serin_testkit::canary(&name)
            .without("progressDeadlineSeconds")
            .analysis(json!({"interval": "10s", "threshold": 2, "iterations": iterations}))
            .build();
        canaries
            .patch(&name, &apply, &Patch::Apply(canary))
            .await
            .unwrap();
    }

    let before = requests(&world.stack).await;
    world.start_controller(&[]);
    let pid = world.controller_pid().unwrap();
    let (init, polls) = wait_all(&canaries, Phase::Initialized, n, Duration::from_secs(600)).await;
    let (cpu_init, rss_init, _) = usage(pid);
    // The benchmark's own requests (these polls, the metrics reads) are not the controller's.
    let init_requests = requests(&world.stack).await - before - polls - 1.0;

    // Idle: nothing to do but wait for the next step (once the tail of initialization, events
    // queued behind the client's rate limit, is out: every Canary's "Initialization done!").
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(world.client.clone(), world.ns());
    wait_until(
        Duration::from_secs(600),
        "every initialization's event",
        || async {
            let recorded = events.list(&Default::default()).await.map_or(0, |l| {
                l.items
                    .iter()
                    .filter(|e| {
                        e.message
                            .as_deref()
                            .is_some_and(|m| m.starts_with("Initialization done!"))
                    })
                    .count()
            });
            recorded >= n
        },
    )
    .await;
    let (cpu_init_done, _, _) = usage(pid);
    let idle_series = request_series(&world.stack).await;
    let idle_from: f64 = idle_series.values().sum();
    tokio::time::sleep(Duration::from_secs(20)).await; // not a wait: the idle window measured
    let idle_after = request_series(&world.stack).await;
    let idle_requests = idle_after.values().sum::<f64>() - idle_from - 1.0;
    let idle_top = top_series(&idle_series, &idle_after);
    let (cpu_idle, _, _) = usage(pid);

    // Release all of them at once.
    let port: u16 = port.parse().unwrap();
    let before = step_metrics(port).await;
    let release_series = request_series(&world.stack).await;
    let release_from: f64 = release_series.values().sum();
    for i in 0..n {
        let name = format!("app-{i}");
        deployments
            .patch(
                &name,
                &apply,
                &Patch::Apply(deployment(&name, "podinfo:6.0.1")),
            )
            .await
            .unwrap();
    }
    let (release, polls) = wait_all(&canaries, Phase::Succeeded, n, Duration::from_secs(900)).await;
    let release_after = request_series(&world.stack).await;
    let release_requests =
        release_after.values().sum::<f64>() - release_from - polls - n as f64 - 1.0;
    let release_top = top_series(&release_series, &release_after);
    let (cpu_end, rss_end, peak) = usage(pid);
    let after = step_metrics(port).await;
    let (steps, p50) = quantile(&before.buckets, &after.buckets, 0.5);
    let (_, p99) = quantile(&before.buckets, &after.buckets, 0.99);
    if cfg!(feature = "heap-profile") {
        write_heap_profile(pid).await;
    }
    world.kill_controller();

    println!(
        "canaries: {n} (kubernetes provider, {iterations} checks at 10 s each), \
         --kubeconfig-qps {qps}, --worker-threads {workers}"
    );
    if let Some(noise) = &noise {
        println!("{noise}");
    }
    println!("controller RSS with no Canary, once ready (caches synced): {rss_empty:.1} MiB");
    println!(
        "initialization: all Initialized in {:.1} s; controller CPU {:.2} s; RSS {:.1} MiB; \
         {:.1} API requests per canary",
        init.as_secs_f64(),
        cpu_init,
        rss_init,
        init_requests / n as f64
    );
    println!(
        "idle (20 s): controller CPU {:.2} s; {:.2} API requests per canary per minute",
        cpu_idle - cpu_init_done,
        idle_requests / n as f64 * 3.0
    );
    println!(
        "release of all at once: all Succeeded in {:.1} s (ideal {} s + readiness); controller \
         CPU {:.2} s; {:.1} API requests per canary",
        release.as_secs_f64(),
        iterations * 10,
        cpu_end - cpu_idle,
        release_requests / n as f64
    );
    println!(
        "time-gated steps during the release: {steps}; lateness against the due time: \
         p50 <= {p50} s, p99 <= {p99} s (histogram bucket bounds), mean {:.3} s; \
         controller CPU {:.2} ms per step; {:.2} API requests per step (all the release's \
         CPU and requests divided by its time-gated steps)",
        (after.sum - before.sum) / steps.max(1.0),
        (cpu_end - cpu_idle) * 1000.0 / steps.max(1.0),
        release_requests / steps.max(1.0),
    );
    let reconciles = after.reconciles - before.reconciles;
    println!(
        "reconciles during the release: {reconciles} ({:.1} per canary, {:.2} ms of controller \
         CPU each)",
        reconciles / n as f64,
        (cpu_end - cpu_idle) * 1000.0 / reconciles.max(1.0),
    );
    for (kind, count) in &after.triggers {
        let delta = count - before.triggers.get(kind).copied().unwrap_or(0.0);
        if delta > 0.0 {
            println!(
                "  reconciles asked for by {kind} changes: {delta} ({:.1} per canary)",
                delta / n as f64
            );
        }
    }
    for (delta, series) in release_top.iter().take(8) {
        println!("  release requests: {delta} {series}");
    }
    for (delta, series) in idle_top.iter().take(4) {
        println!("  idle requests: {delta} {series}");
    }
    println!("controller RSS at the end {rss_end:.1} MiB, peak {peak:.1} MiB");
    assert!(peak > 0.0, "measured the controller");
}
