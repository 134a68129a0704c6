//! Releases decided by metrics: the `serin controller` binary on the local stack, with the
//! traffic world loading the canary and a real Prometheus scraping it (or the Datadog, New
//! Relic, Graphite and InfluxDB emulators answering from it). Blue/green on the
//! `kubernetes` provider, so the builtin metrics are the app's own (`http` observer).

use std::time::Duration;

use serde_json::{Value, json};
use serin::api::Canary;
use serin::api::canary::MetricVerdict;
use serin_core::Phase;
use serin_testkit::{ControlPlane, LONG, WorldConfig, deployment};

/// The kit's world, with this suite's reads of the one Canary, `podinfo`.
struct World(serin_testkit::World);

impl std::ops::Deref for World {
    type Target = serin_testkit::World;
    fn deref(&self) -> &serin_testkit::World {
        &self.0
    }
}

/// The stack (world loading `podinfo` and `podinfo-canary` at 20 requests/s each, real
/// Prometheus), the CRDs, and the controller with `--metrics-server` on that Prometheus.
async fn world(cp: ControlPlane) -> World {
    world_with(cp, &["podinfo", "podinfo-canary"], false).await
}

/// The stack with load on `services` only: a real Prometheus for the builtin metrics, or the
/// Datadog, New Relic, Dynatrace and Splunk emulators when `saas`; then the CRDs and the
/// controller.
async fn world_with(cp: ControlPlane, services: &[&str], saas: bool) -> World {
    world_with_traffic(cp, services, saas, "").await
}

/// The same, with more of the scenario's `traffic` section (noise, incidents).
async fn world_with_traffic(cp: ControlPlane, services: &[&str], saas: bool, more: &str) -> World {
    let mut scenario = String::from(
        "workloads:\n  readyDelay: 0s\ntraffic:\n  provider: kubernetes\n  services:\n",
    );
    for service in services {
        scenario.push_str(&format!("    - name: {service}\n      rate: 20\n"));
    }
    scenario.push_str(more);
    let config = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp).scenario(&scenario);
    World(
        if saas {
            config.saas()
        } else {
            config.prometheus()
        }
        .start()
        .await,
    )
}

impl World {
    async fn apply(&self, object: Value) {
        match object["kind"].as_str() {
            Some("Deployment") => self.0.apply(&self.deployments(), object).await,
            _ => self.0.apply(&self.canaries(), object).await,
        }
    }

    async fn canary(&self) -> Canary {
        self.0.canary("podinfo").await
    }

    async fn wait_phase(&self, phase: Phase, timeout: Duration) -> Canary {
        self.0.wait_phase("podinfo", phase, timeout).await
    }

    /// The events, once one satisfies `matches`: a rollback's events are written after its
    /// status, so they can come after the phase is seen.
    async fn wait_event_where(&self, what: &str, matches: impl Fn(&str) -> bool) -> Vec<String> {
        self.0
            .wait_event_where("podinfo", what, LONG, matches)
            .await
    }

    async fn set_image(&self, image: &str) {
        self.apply(deployment("podinfo", image, 2)).await;
    }
}

fn canary(metrics: Value) -> Value {
    serin_testkit::canary("podinfo")
        .analysis(json!({"interval": "2s", "threshold": 2, "iterations": 4, "metrics": metrics}))
        .build()
}

/// The builtins, holding while the new pods' first samples reach Prometheus (a scrape per
/// second, and `rate()` needs two) instead of failing the first checks, as Flagger would.
const BUILTINS: &str = r#"[
    {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "15s",
     "noDataPolicy": "hold"},
    {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "15s",
     "noDataPolicy": "hold"}
]"#;

async fn initialized(world: &World, metrics: Value) {
    world.apply(deployment("podinfo", "podinfo:6.0.0", 2)).await;
    world.apply(canary(metrics)).await;
    world.wait_phase(Phase::Initialized, LONG).await;
}

async fn a_healthy_release_is_promoted_on_the_builtin_metrics(cp: ControlPlane) {
    let world = world(cp).await;
    initialized(&world, serde_json::from_str(BUILTINS).unwrap()).await;
    world.set_image("podinfo:6.0.1").await;
    let done = world.wait_phase(Phase::Succeeded, LONG).await;
    let metrics = done
        .status
        .and_then(|s| s.metrics)
        .expect("status.metrics recorded");
    assert_eq!(metrics.len(), 2, "{metrics:?}");
    assert!(
        metrics.iter().all(|m| m.verdict == MetricVerdict::Pass),
        "{metrics:?}"
    );
    assert!(metrics[0].value.is_some_and(|v| v > 99.0), "{metrics:?}");
}

async fn a_faulty_release_is_rolled_back_with_events_naming_the_value(cp: ControlPlane) {
    let world = world(cp).await;
    initialized(&world, serde_json::from_str(BUILTINS).unwrap()).await;
    world.set_image("podinfo:6.0.1-faulty").await;
    let failed = world.wait_phase(Phase::Failed, LONG).await;
    let metrics = failed.status.and_then(|s| s.metrics).unwrap_or_default();
    assert!(
        metrics
            .iter()
            .any(|m| m.name == "request-success-rate" && m.verdict == MetricVerdict::Fail),
        "{metrics:?}"
    );
    let halt = format!("Halt podinfo.{} advancement success rate ", world.ns());
    world
        .wait_event_where("halting on the 30 % errors", |e| {
            e.contains(&halt)
                && e.contains("< 99%")
                && halt_value(e, "success rate").is_some_and(|v| (60.0..90.0).contains(&v))
        })
        .await;
}

async fn a_quiet_service_with_the_hold_policy_waits_instead_of_failing(cp: ControlPlane) {
    let world = world(cp).await;
    // A metric nothing exports: no data at every step.
    initialized(
        &world,
        json!([{"name": "request-success-rate", "thresholdRange": {"min": 99},
                "interval": "15s", "query": "sum(rate(quiet_requests_total[15s]))",
                "noDataPolicy": "hold"}]),
    )
    .await;
    world.set_image("podinfo:6.0.1").await;
    world.wait_phase(Phase::Progressing, LONG).await;
    // The barrier: four held checks (each records the halt again), two more than the
    // threshold: had no data counted as a failed check, the release would have failed.
    world
        .wait_event_count(
            "podinfo",
            "Halt advancement no values found",
            4,
            Duration::from_secs(60),
        )
        .await;
    let canary = world.canary().await;
    let status = canary.status.unwrap();
    assert_eq!(status.phase, Phase::Progressing, "{status:?}");
    assert_eq!(status.failed_checks, 0, "{status:?}");
    let metrics = status.metrics.unwrap_or_default();
    assert_eq!(
        metrics.first().map(|m| m.verdict),
        Some(MetricVerdict::NoData),
        "{metrics:?}"
    );
}

/// Error rates from the ready-made Datadog APM and New Relic APM templates, read from the
/// emulators (which answer from the same traffic world).
fn saas_metrics() -> Value {
    json!([
        {"name": "datadog-error-rate", "templateRef": {"name": "datadog-apm-error-rate"},
         "thresholdRange": {"max": 1}, "interval": "5s", "noDataPolicy": "hold"},
        {"name": "newrelic-error-rate", "templateRef": {"name": "newrelic-apm-error-rate"},
         "thresholdRange": {"max": 1}, "interval": "5s", "noDataPolicy": "hold"}
    ])
}

async fn datadog_and_new_relic_templates_promote_a_healthy_release(cp: ControlPlane) {
    // Only the canary Service is loaded: the target's pods get requests only as the new
    // version, so the providers' windows hold nothing older.
    let world = world_with(cp, &["podinfo-canary"], true).await;
    world.saas_templates().await;
    initialized(&world, saas_metrics()).await;
    world.set_image("podinfo:6.0.1").await;
    let done = world.wait_phase(Phase::Succeeded, LONG).await;
    let metrics = done.status.and_then(|s| s.metrics).unwrap_or_default();
    assert_eq!(
        metrics
            .iter()
            .map(|m| (m.name.as_str(), m.verdict))
            .collect::<Vec<_>>(),
        [
            ("datadog-error-rate", MetricVerdict::Pass),
            ("newrelic-error-rate", MetricVerdict::Pass)
        ],
        "{metrics:?}"
    );
}

async fn datadog_and_new_relic_templates_roll_back_a_faulty_release(cp: ControlPlane) {
    let world = world_with(cp, &["podinfo-canary"], true).await;
    world.saas_templates().await;
    initialized(&world, saas_metrics()).await;
    world.set_image("podinfo:6.0.1-faulty").await;
    let failed = world.wait_phase(Phase::Failed, LONG).await;
    let metrics = failed.status.and_then(|s| s.metrics).unwrap_or_default();
    // A query's window can still hold some of the seconds before the faulty version served
    // (New Relic read 19.2 % once): far above the 1 % threshold is what counts.
    assert!(
        metrics.iter().all(|m| m.verdict == MetricVerdict::Fail
            && m.value.is_some_and(|v| (10.0..40.0).contains(&v))),
        "both providers see the 30 % errors: {metrics:?}"
    );
    world
        .wait_event_where("halting on datadog-error-rate", |e| {
            e.contains("advancement datadog-error-rate ") && e.contains(" > 1")
        })
        .await;
}

/// The stack with load on the canary Service only (as for Datadog and New Relic) and the
/// Graphite and InfluxDB emulators, without Prometheus; the example templates of both
/// (`examples/metrictemplate-{graphite,influxdb}.yaml`) pointed at them, with the emulators'
/// credentials in the Secrets they name.
async fn graphite_and_influxdb_world(cp: ControlPlane) -> World {
    let scenario = "workloads:\n  readyDelay: 0s\ntraffic:\n  provider: kubernetes\n  services:\n    - name: podinfo-canary\n      rate: 20\n";
    let mut config = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp).scenario(scenario);
    config.stack.graphite = true;
    config.stack.influxdb = true;
    let world = World(config.start().await);
    world
        .create(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "graphite-basic-auth"},
            "stringData": {"username": "serin", "password": "serin-graphite-password"}}))
        .await;
    world
        .create(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "influxdb"},
            "stringData": {"token": "serin-influxdb-token", "org": "serin"}}))
        .await;
    for (file, address) in [
        ("graphite", world.stack.graphite_url()),
        ("influxdb", world.stack.influxdb_url()),
    ] {
        let path = serin_testkit::workspace_file(&format!("examples/metrictemplate-{file}.yaml"));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut template: Value = serde_norway::from_str(&text).unwrap();
        template["metadata"]["namespace"] = json!(world.ns());
        template["spec"]["provider"]["address"] = json!(address.unwrap());
        world.create(template).await;
    }
    world
}

/// A metric on the example template of `provider` (`graphite`, `influxdb`): the canary's
/// success rate over 5 s, at least 99 %, holding while the new version has no requests yet.
fn success_rate_on(provider: &str) -> Value {
    json!({"name": format!("{provider}-success-rate"),
           "templateRef": {"name": format!("{provider}-request-success-rate")},
           "thresholdRange": {"min": 99}, "interval": "5s", "noDataPolicy": "hold"})
}

async fn promoted_on(cp: ControlPlane, provider: &str) {
    let world = graphite_and_influxdb_world(cp).await;
    initialized(&world, json!([success_rate_on(provider)])).await;
    world.set_image("podinfo:6.0.1").await;
    let done = world.wait_phase(Phase::Succeeded, LONG).await;
    let metrics = done.status.and_then(|s| s.metrics).unwrap_or_default();
    assert!(
        metrics.len() == 1
            && metrics[0].verdict == MetricVerdict::Pass
            && metrics[0].value.is_some_and(|v| v > 99.0),
        "{metrics:?}"
    );
}

async fn a_graphite_template_promotes_a_healthy_release(cp: ControlPlane) {
    promoted_on(cp, "graphite").await;
}

async fn an_influxdb_template_promotes_a_healthy_release(cp: ControlPlane) {
    promoted_on(cp, "influxdb").await;
}

async fn graphite_and_influxdb_templates_roll_back_a_faulty_release(cp: ControlPlane) {
    let world = graphite_and_influxdb_world(cp).await;
    let metrics = json!([success_rate_on("graphite"), success_rate_on("influxdb")]);
    initialized(&world, metrics).await;
    world.set_image("podinfo:6.0.1-faulty").await;
    let failed = world.wait_phase(Phase::Failed, LONG).await;
    let metrics = failed.status.and_then(|s| s.metrics).unwrap_or_default();
    // A window can still hold a second before the faulty version served: far below 99 %
    // is what counts.
    assert!(
        metrics.len() == 2
            && metrics.iter().all(|m| m.verdict == MetricVerdict::Fail
                && m.value.is_some_and(|v| (60.0..90.0).contains(&v))),
        "both providers see the 30 % errors: {metrics:?}"
    );
    world
        .wait_event_where("halting on the graphite success rate's 30 % errors", |e| {
            e.contains("< 99")
                && halt_value(e, "graphite-success-rate").is_some_and(|v| (60.0..90.0).contains(&v))
        })
        .await;
}

/// The builtin success rate judged against the primary: 15 samples of 3 s each over 45 s,
/// holding until both versions have 10.
fn judged_success_rate() -> Value {
    judged_success_rate_at(0.98)
}

fn judged_success_rate_at(confidence: f64) -> Value {
    json!([{"name": "request-success-rate", "interval": "45s", "noDataPolicy": "hold",
            "judge": {"step": "3s", "minSamples": 10, "confidence": confidence,
                      "tolerance": 0.1}}])
}

/// The release under a judge: a long enough deadline for the samples to accrue.
async fn judged_release(world: &World, image: &str) {
    judged_release_with(world, image, judged_success_rate()).await;
}

async fn judged_release_with(world: &World, image: &str, metrics: Value) {
    world.apply(deployment("podinfo", "podinfo:6.0.0", 2)).await;
    let mut spec = canary(metrics);
    spec["spec"]["progressDeadlineSeconds"] = json!(240);
    world.apply(spec).await;
    world.wait_phase(Phase::Initialized, LONG).await;
    world.set_image(image).await;
}

/// An incident that hits both versions (5 % errors, noisy traffic): the threshold of 99 %
/// would fail the release; the judge sees no difference between the versions.
async fn an_incident_on_both_versions_is_not_blamed_on_the_canary(cp: ControlPlane) {
    let incident = "  noise: {seed: 7}\n  incidents:\n    - match: podinfo\n      start: 0s\n      duration: 30m\n      errorRate: 0.05\n";
    let world = world_with_traffic(cp, &["podinfo", "podinfo-canary"], false, incident).await;
    // Two identical versions are failed by chance in `1 - confidence` of releases: that is
    // what the confidence means. At 0.98 one clean-clone run saw canary 7.1 % vs primary
    // 3.3 % errors (p = 0.0021 under a bound of 0.008); 0.999 makes it one release in 1,000.
    judged_release_with(&world, "podinfo:6.0.1", judged_success_rate_at(0.999)).await;
    let done = world
        .wait_phase(Phase::Succeeded, Duration::from_secs(200))
        .await;
    let metrics = done.status.and_then(|s| s.metrics).unwrap_or_default();
    let m = &metrics[0];
    assert_eq!(m.verdict, MetricVerdict::Pass, "{metrics:?}");
    assert!(
        m.value.is_some_and(|v| v < 99.0),
        "the canary is below the usual threshold: {m:?}"
    );
    assert!(
        m.baseline.is_some_and(|v| v < 99.0),
        "so is the primary: {m:?}"
    );
    // Pass means the p-value stayed above the judge's bound; by how much is chance (the
    // two versions' noisy counts once gave p = 0.016 against a bound of 0.008).
    assert!(m.p_value.is_some(), "{m:?}");
}

/// A canary with 30 % errors beside a healthy primary: rolled back, the p-value and both
/// means in the status.
async fn a_canary_worse_than_its_primary_is_rolled_back_by_the_judge(cp: ControlPlane) {
    let noise = "  noise: {seed: 11}\n";
    let world = world_with_traffic(cp, &["podinfo", "podinfo-canary"], false, noise).await;
    judged_release(&world, "podinfo:6.0.1-faulty").await;
    let m = rolled_back_by_the_judge(&world, 55.0..85.0, 99.0, &[]).await;
    // The samples the judge compared, in the status for the charts: on the metric's own scale
    // (success rates), the canary's mean as the status says.
    let samples = m.samples.clone().expect("the judged samples");
    assert!(
        samples.canary.len() >= 10 && samples.primary.len() >= 10,
        "{samples:?}"
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!((55.0..85.0).contains(&mean(&samples.canary)), "{samples:?}");
    assert!(mean(&samples.primary) > 99.0, "{samples:?}");
    let analyses = m.analyses.clone().unwrap_or_default();
    assert!(
        analyses
            .last()
            .is_some_and(|a| a.verdict == MetricVerdict::Fail),
        "the failing analysis is the last of the release's: {analyses:?}"
    );
}

/// Waits for the rollback, then checks the judged metric: failed with p < 0.02, the canary's
/// success rate in `canary`, the primary's above `primary`, and an event saying the canary is
/// worse that also holds each of `also`.
async fn rolled_back_by_the_judge(
    world: &World,
    canary: std::ops::Range<f64>,
    primary: f64,
    also: &[&str],
) -> serin::api::canary::MetricObservation {
    let failed = world
        .wait_phase(Phase::Failed, Duration::from_secs(200))
        .await;
    let metrics = failed.status.and_then(|s| s.metrics).unwrap_or_default();
    let m = &metrics[0];
    assert_eq!(m.verdict, MetricVerdict::Fail, "{metrics:?}");
    assert!(m.p_value.is_some_and(|p| p < 0.02), "{m:?}");
    assert!(m.value.is_some_and(|v| canary.contains(&v)), "{m:?}");
    assert!(m.baseline.is_some_and(|v| v > primary), "{m:?}");
    world
        .wait_event_where("saying the canary is worse than the primary", |e| {
            e.contains("the canary is worse than the primary") && also.iter().all(|a| e.contains(a))
        })
        .await;
    m.clone()
}

/// Errors in bursts (60 % during 3 s of every 15 s: 12 % on average) beside a healthy primary,
/// judged with `test: counts` (every error and request of the window): rolled back, the
/// success rates and the p-value in the status, the verdict in an event. The bursts are strong
/// enough that a window which catches only one of them (a loaded machine delays the steps)
/// still fails the canary: at 30 % one burst gave 7 errors in 336 requests, p = 0.011.
async fn errors_in_bursts_are_counted_and_rolled_back_by_the_judge(cp: ControlPlane) {
    let bursts = "  noise: {seed: 13}\n  images:\n    - match: bursty\n      errorRate: 0.6\n      intermittent: {period: 15s, duty: 0.2}\n";
    let world = world_with_traffic(cp, &["podinfo", "podinfo-canary"], false, bursts).await;
    let counted = json!([{"name": "request-success-rate", "interval": "45s",
        "noDataPolicy": "hold", "judge": {"test": "counts", "minSamples": 200}}]);
    judged_release_with(&world, "podinfo:6.0.1-bursty", counted).await;
    // The canary's share of burst time in its window varies with when its pods started: 12 %
    // errors on average, 21.5 % once on a window of 298 requests; 60 % at most (all burst).
    rolled_back_by_the_judge(&world, 40.0..99.0, 99.9, &["as error rate", " errors in "]).await;
}

/// The shipped example template of `provider` (`examples/metrictemplate-<provider>.yaml`)
/// pointed at the stack's emulator, in the test namespace, next to its Secret holding the
/// emulator's token; and the metric that checks it (over 5 s, holding until data comes).
async fn example_template(world: &World, provider: &str) -> Value {
    let (address, token, metric) = match provider {
        "dynatrace" => (
            world.stack.dynatrace_url(),
            json!({"dynatrace_token": "dt0c01.SERINSTACK.serin-dt-token"}),
            json!({"name": "dynatrace-error-rate", "templateRef": {"name": "dynatrace-error-rate"},
                   "thresholdRange": {"max": 1}, "interval": "5s", "noDataPolicy": "hold"}),
        ),
        _ => (
            world.stack.splunk_url(),
            json!({"sf_token_key": "serin-sf-token"}),
            json!({"name": "splunk-success-rate", "templateRef": {"name": "splunk-success-rate"},
                   "thresholdRange": {"min": 99}, "interval": "5s", "noDataPolicy": "hold"}),
        ),
    };
    world
        .create(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": provider}, "stringData": token}))
        .await;
    let file = serin_testkit::workspace_file(&format!("examples/metrictemplate-{provider}.yaml"));
    let mut template: Value =
        serde_norway::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    template["metadata"]["namespace"] = json!(world.ns());
    template["spec"]["provider"]["address"] = json!(address.unwrap());
    world.create(template).await;
    json!([metric])
}

/// A release of `image` decided by `provider`'s example template; the Canary as it ended
/// (`phase`).
async fn released_on_example_template(
    cp: ControlPlane,
    provider: &str,
    image: &str,
    phase: Phase,
) -> (World, Canary) {
    // Only the canary Service is loaded, as for Datadog and New Relic above.
    let world = world_with(cp, &["podinfo-canary"], true).await;
    let metrics = example_template(&world, provider).await;
    initialized(&world, metrics).await;
    world.set_image(image).await;
    let done = world.wait_phase(phase, LONG).await;
    (world, done)
}

async fn dynatrace_template_promotes_a_healthy_release(cp: ControlPlane) {
    let (_, done) =
        released_on_example_template(cp, "dynatrace", "podinfo:6.0.1", Phase::Succeeded).await;
    let metrics = done.status.and_then(|s| s.metrics).unwrap_or_default();
    assert_eq!(
        metrics
            .iter()
            .map(|m| (m.name.as_str(), m.verdict, m.value))
            .collect::<Vec<_>>(),
        [("dynatrace-error-rate", MetricVerdict::Pass, Some(0.0))],
        "{metrics:?}"
    );
}

async fn dynatrace_template_rolls_back_a_faulty_release(cp: ControlPlane) {
    let (world, failed) =
        released_on_example_template(cp, "dynatrace", "podinfo:6.0.1-faulty", Phase::Failed).await;
    // Flagger's window is 10 intervals, aggregated: it can still hold seconds of the old
    // version behind the canary Service (18 % once on the real control plane): any error
    // rate above the 1 % threshold, and at most the new version's 30 %, is right.
    let metrics = failed.status.and_then(|s| s.metrics).unwrap_or_default();
    assert!(
        metrics.iter().all(|m| m.verdict == MetricVerdict::Fail
            && m.value.is_some_and(|v| (1.0..=30.5).contains(&v))),
        "Dynatrace sees the 30 % errors: {metrics:?}"
    );
    world
        .wait_event_where("halting on dynatrace-error-rate", |e| {
            e.contains("advancement dynatrace-error-rate ") && e.contains(" > 1")
        })
        .await;
}

async fn splunk_template_promotes_a_healthy_release(cp: ControlPlane) {
    let (_, done) =
        released_on_example_template(cp, "splunk", "podinfo:6.0.1", Phase::Succeeded).await;
    let metrics = done.status.and_then(|s| s.metrics).unwrap_or_default();
    assert_eq!(
        metrics
            .iter()
            .map(|m| (m.name.as_str(), m.verdict, m.value))
            .collect::<Vec<_>>(),
        [("splunk-success-rate", MetricVerdict::Pass, Some(100.0))],
        "{metrics:?}"
    );
}

async fn splunk_template_rolls_back_a_faulty_release(cp: ControlPlane) {
    let (world, failed) =
        released_on_example_template(cp, "splunk", "podinfo:6.0.1-faulty", Phase::Failed).await;
    // The program's `sum(over='5s')` can still hold a second or two of the old version (82 %
    // once on the real control plane): below the threshold, and at least the new version's
    // 70 %, is right.
    let metrics = failed.status.and_then(|s| s.metrics).unwrap_or_default();
    assert!(
        metrics.iter().all(|m| m.verdict == MetricVerdict::Fail
            && m.value.is_some_and(|v| (69.5..99.0).contains(&v))),
        "Splunk sees the 70 % success: {metrics:?}"
    );
    world
        .wait_event_where("halting on splunk-success-rate", |e| {
            e.contains("advancement splunk-success-rate ") && e.contains(" < 99")
        })
        .await;
}

/// The stack with load on `services` only (as [`world_with`]) and what `configure` adds (an
/// emulator, the controller's environment).
async fn world_configured(
    cp: ControlPlane,
    services: &[&str],
    configure: impl FnOnce(WorldConfig) -> WorldConfig,
) -> World {
    let mut scenario = String::from(
        "workloads:\n  readyDelay: 0s\ntraffic:\n  provider: kubernetes\n  services:\n",
    );
    for service in services {
        scenario.push_str(&format!("    - name: {service}\n      rate: 20\n"));
    }
    let config = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp).scenario(&scenario);
    World(configure(config).start().await)
}

/// A healthy release on one templated error-rate metric promoted, its value read (the
/// template's provider answering from the traffic world).
async fn promoted_with(world: &World, metric: Value) {
    initialized(world, json!([metric])).await;
    world.set_image("podinfo:6.0.1").await;
    let done = world.wait_phase(Phase::Succeeded, LONG).await;
    let metrics = done.status.and_then(|s| s.metrics).unwrap_or_default();
    assert!(
        metrics.len() == 1
            && metrics[0].verdict == MetricVerdict::Pass
            && metrics[0].value.is_some(),
        "{metrics:?}"
    );
}

/// Flagger's documented CloudWatch template: errors per request of `{{ target }}` in
/// percent, from the application's custom metrics, with the controller's AWS credentials.
async fn a_cloudwatch_template_promotes_a_healthy_release(cp: ControlPlane) {
    let world = world_configured(cp, &["podinfo-canary"], WorldConfig::cloudwatch).await;
    let stat = |id: &str, name: &str| {
        json!({"Id": id, "ReturnData": false, "MetricStat": {
            "Metric": {"Namespace": "MyKubernetesCluster", "MetricName": name,
                       "Dimensions": [{"Name": "appName", "Value": "{{ target }}.{{ namespace }}"}]},
            "Period": 10, "Stat": "Sum", "Unit": "Count"}})
    };
    let query = json!([
        {"Id": "e1", "Expression": "100 * m1 / m2", "Label": "ErrorRate"},
        stat("m1", "ErrorCount"),
        stat("m2", "RequestCount"),
    ]);
    world
        .create(
            json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "cloudwatch-error-rate"},
            "spec": {"provider": {"type": "cloudwatch", "region": "us-east-1",
                                  "address": world.stack.cloudwatch_url().unwrap()},
                     "query": query.to_string()}}),
        )
        .await;
    promoted_with(
        &world,
        json!({"name": "cloudwatch-error-rate", "templateRef": {"name": "cloudwatch-error-rate"},
               "thresholdRange": {"max": 1}, "interval": "5s", "noDataPolicy": "hold"}),
    )
    .await;
}

/// A Stackdriver MQL template (Istio's request count on GKE): the share of 5xx responses
/// of `{{ target }}`, with the Secret's project and service-account key.
async fn a_stackdriver_template_promotes_a_healthy_release(cp: ControlPlane) {
    let world = world_configured(cp, &["podinfo-canary"], WorldConfig::stackdriver).await;
    let url = world.stack.stackdriver_url().unwrap().to_string();
    world
        .create(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "gcloud-sa"},
            "stringData": {"project": "serin-test-project",
                "serviceAccountKey": serin_stack::testing::stackdriver_key(&format!("{url}/token"))}}))
        .await;
    let query = "fetch k8s_container
| metric 'istio.io/service/server/request_count'
| filter metric.destination_workload_name == '{{ target }}'
    && metric.destination_workload_namespace == '{{ namespace }}'
| align delta(10s)
| every 10s
| within 1m
| filter_ratio_by [], metric.response_code >= 500";
    world
        .create(
            json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "stackdriver-error-ratio"},
            "spec": {"provider": {"type": "stackdriver", "address": url,
                                  "secretRef": {"name": "gcloud-sa"}},
                     "query": query}}),
        )
        .await;
    promoted_with(
        &world,
        json!({"name": "stackdriver-error-ratio", "templateRef": {"name": "stackdriver-error-ratio"},
               "thresholdRange": {"max": 0.01}, "interval": "1m", "noDataPolicy": "hold"}),
    )
    .await;
}

/// Keptn's objects for the canary `podinfo`, read by the stack's stand-in from the world: a
/// KeptnMetric of its success rate, and an AnalysisDefinition failing a workload (the
/// Analysis's `workload` argument) below 99 %; keptn MetricTemplates of each.
async fn keptn_objects(world: &World) {
    let keptn = |kind: &str, name: &str, spec: Value| {
        json!({"apiVersion": "metrics.keptn.sh/v1beta1", "kind": kind,
            "metadata": {"name": name}, "spec": spec})
    };
    world
        .create(keptn(
            "KeptnMetric",
            "podinfo-success-rate",
            json!({"provider": {"name": "world"}, "fetchIntervalSeconds": 1,
                   "query": "request-success-rate{workload=podinfo}",
                   "range": {"interval": "10s"}}),
        ))
        .await;
    world
        .create(keptn(
            "AnalysisValueTemplate",
            "success-rate",
            json!({"provider": {"name": "world"},
                   "query": "request-success-rate{workload={{.workload}}}"}),
        ))
        .await;
    world
        .create(keptn(
            "AnalysisDefinition",
            "healthy",
            json!({"objectives": [{"analysisValueTemplateRef": {"name": "success-rate"},
                                   "target": {"failure": {"lessThan": {"fixedValue": 99}}},
                                   "keyObjective": true}],
                   "totalScore": {"passPercentage": 100, "warningPercentage": 50}}),
        ))
        .await;
    for (name, query) in [
        (
            "keptn-success-rate",
            "keptnmetric/{{ namespace }}/{{ target }}-success-rate",
        ),
        (
            "keptn-analysis",
            "analysis/{{ namespace }}/healthy/{{ interval }}/workload={{ target }}",
        ),
    ] {
        world
            .create(
                json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
                "metadata": {"name": name},
                "spec": {"provider": {"type": "keptn"}, "query": query}}),
            )
            .await;
    }
}

/// A KeptnMetric and a Keptn Analysis (created per check, completed by the stand-in, deleted
/// by serin) promote a healthy release.
async fn keptn_templates_promote_a_healthy_release(cp: ControlPlane) {
    // Only the canary Service is loaded: the target's pods get requests only as the new
    // version, so the windows hold nothing older.
    let world = world_configured(cp, &["podinfo-canary"], WorldConfig::keptn).await;
    keptn_objects(&world).await;
    let metrics = json!([
        // The KeptnMetric has no value until the new pods have served (and Keptn fetched).
        {"name": "keptn-success-rate", "templateRef": {"name": "keptn-success-rate"},
         "thresholdRange": {"min": 99}, "interval": "10s", "noDataPolicy": "hold"},
        {"name": "keptn-analysis", "templateRef": {"name": "keptn-analysis"},
         "thresholdRange": {"min": 1}, "interval": "10s"}
    ]);
    initialized(&world, metrics).await;
    world.set_image("podinfo:6.0.1").await;
    let done = world.wait_phase(Phase::Succeeded, LONG).await;
    let metrics = done.status.and_then(|s| s.metrics).unwrap_or_default();
    assert_eq!(
        metrics
            .iter()
            .map(|m| (m.name.as_str(), m.verdict, m.value))
            .collect::<Vec<_>>(),
        [
            ("keptn-success-rate", MetricVerdict::Pass, Some(100.0)),
            ("keptn-analysis", MetricVerdict::Pass, Some(1.0))
        ],
        "{metrics:?}"
    );
    // Each check's Analysis was deleted once read.
    let analyses = world
        .dynamic("metrics.keptn.sh/v1beta1", "Analysis")
        .list(&Default::default())
        .await
        .unwrap();
    assert!(analyses.items.is_empty(), "{:?}", analyses.items);
}

/// The External Metrics API adapter, asked directly with a token, promotes a healthy release.
async fn external_metrics_template_promotes_a_healthy_release(cp: ControlPlane) {
    let world = world_configured(cp, &["podinfo-canary"], WorldConfig::external_metrics).await;
    let adapter = world.stack.external_metrics_url().unwrap().to_string();
    world
        .create(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "external-metrics"},
            "stringData": {"token": "serin-external-metrics-token"}}))
        .await;
    world
        .create(json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "external-success-rate"},
            "spec": {"provider": {"type": "externalmetrics", "address": adapter,
                                  "secretRef": {"name": "external-metrics"}},
                     "query": "{{ namespace }}/request-success-rate?labelSelector=workload%3D{{ target }}"}}))
        .await;
    let metrics = json!([
        {"name": "external-success-rate", "templateRef": {"name": "external-success-rate"},
         "thresholdRange": {"min": 99}, "interval": "10s", "noDataPolicy": "hold"}
    ]);
    initialized(&world, metrics).await;
    world.set_image("podinfo:6.0.1").await;
    let done = world.wait_phase(Phase::Succeeded, LONG).await;
    let metrics = done.status.and_then(|s| s.metrics).unwrap_or_default();
    assert_eq!(
        metrics
            .iter()
            .map(|m| (m.name.as_str(), m.verdict, m.value))
            .collect::<Vec<_>>(),
        [("external-success-rate", MetricVerdict::Pass, Some(100.0))],
        "{metrics:?}"
    );
}

serin_testkit::on_every_control_plane!(
    virtual_time:
    a_graphite_template_promotes_a_healthy_release,
    an_influxdb_template_promotes_a_healthy_release,
    graphite_and_influxdb_templates_roll_back_a_faulty_release,
    datadog_and_new_relic_templates_promote_a_healthy_release,
    datadog_and_new_relic_templates_roll_back_a_faulty_release,
    dynatrace_template_promotes_a_healthy_release,
    dynatrace_template_rolls_back_a_faulty_release,
    splunk_template_promotes_a_healthy_release,
    splunk_template_rolls_back_a_faulty_release,
    a_stackdriver_template_promotes_a_healthy_release,
    keptn_templates_promote_a_healthy_release,
    external_metrics_template_promotes_a_healthy_release,
    // Prometheus, or (CloudWatch) the controller's environment: a process beside the test.
    ; real_time:
    errors_in_bursts_are_counted_and_rolled_back_by_the_judge,
    an_incident_on_both_versions_is_not_blamed_on_the_canary,
    a_canary_worse_than_its_primary_is_rolled_back_by_the_judge,
    a_healthy_release_is_promoted_on_the_builtin_metrics,
    a_faulty_release_is_rolled_back_with_events_naming_the_value,
    a_quiet_service_with_the_hold_policy_waits_instead_of_failing,
    a_cloudwatch_template_promotes_a_healthy_release,
);

/// The value a Halt event gives `metric`: `... advancement graphite-success-rate 71.2 < 99`
/// (a `%` after it is dropped).
fn halt_value(event: &str, metric: &str) -> Option<f64> {
    let after = event.split(&format!("{metric} ")).nth(1)?;
    after
        .split_whitespace()
        .next()?
        .trim_end_matches('%')
        .parse()
        .ok()
}
