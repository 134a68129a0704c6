//! Alerts through the real controller: to the Canary's AlertProviders by severity (address
//! from a Secret, with its token), to the global notifier for Canaries without alerts, with
//! `--cluster-name`; failed deliveries retried and counted; a hanging receiver delays nothing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serin_core::Phase;
use serin_testkit::Receiver;

use crate::harness::{
    ControlPlane, World, canary, deployment, wait_until, world_without_controller,
};

use serin_testkit::LONG;

async fn secret(world: &World, name: &str, address: &str) {
    world
        .create(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"address": address, "token": "s3cr3t-token"}}))
        .await;
}

async fn provider(world: &World, name: &str, kind: &str, secret: &str) {
    world
        .create(
            json!({"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
            "metadata": {"name": name},
            "spec": {"type": kind, "channel": "releases", "secretRef": {"name": secret}}}),
        )
        .await;
}

fn messages(bodies: &[Value], pointer: &str) -> Vec<String> {
    bodies
        .iter()
        .filter_map(|b| b.pointer(pointer)?.as_str().map(String::from))
        .collect()
}

async fn alerts_reach_providers_by_severity_and_failures_are_retried(cp: ControlPlane) {
    let slack = Receiver::start(200).await;
    let errors = Receiver::start(200).await;
    let broken = Receiver::start(500).await;
    let hanging = Receiver::start(200).await;
    hanging
        .delay_ms
        .store(60_000, std::sync::atomic::Ordering::SeqCst);
    let global = Receiver::start(200).await;
    let gate = Receiver::start(500).await;
    let proxy = Receiver::start(200).await;
    let mut world = world_without_controller(cp).await;
    world.start_controller(&[
        "--cluster-name",
        "prod-eu",
        "--slack-url",
        &global.url,
        "--slack-channel",
        "ops",
    ]);
    let ns = world.ns();
    for (name, receiver) in [
        ("slack", &slack),
        ("errors", &errors),
        ("broken", &broken),
        ("hanging", &hanging),
    ] {
        secret(&world, &format!("{name}-address"), &receiver.url).await;
    }
    provider(&world, "slack", "slack", "slack-address").await;
    provider(&world, "errors", "webhook", "errors-address").await;
    provider(&world, "broken", "webhook", "broken-address").await;
    provider(&world, "hanging", "msteams", "hanging-address").await;
    world
        .create(json!({"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
            "metadata": {"name": "proxied"},
            "spec": {"type": "discord", "address": "http://alerts.invalid/hook", "proxy": proxy.url}}))
        .await;
    for name in ["podinfo", "other"] {
        world
            .apply(&world.deployments(), deployment(name, "podinfo:6.0.0", 1))
            .await;
    }
    let mut c = canary("podinfo").iterations(3).build();
    c["spec"]["analysis"]["alerts"] = json!([
        {"name": "team", "providerRef": {"name": "slack"}},
        {"name": "on-call", "severity": "error", "providerRef": {"name": "errors"}},
        {"name": "broken", "severity": "error", "providerRef": {"name": "broken"}},
        {"name": "hanging", "providerRef": {"name": "hanging"}},
        {"name": "proxied", "severity": "error", "providerRef": {"name": "proxied"}}
    ]);
    c["spec"]["analysis"]["webhooks"] = json!([{"name": "gate", "url": gate.url}]);
    world.apply(&world.canaries(), c).await;
    world
        .apply(&world.canaries(), canary("other").iterations(1).build())
        .await;
    world.wait_phase("podinfo", Phase::Initialized, LONG).await;
    world.wait_phase("other", Phase::Initialized, LONG).await;

    // A release whose rollout check fails: rolled back at the threshold (2 checks at 1 s),
    // however long the hanging receiver takes.
    let started = Instant::now();
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Failed, LONG).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    let initialized = "New Deployment detected, initialization completed.";
    wait_until(LONG, "alerts delivered", || async {
        let slack = messages(&slack.bodies().await, "/attachments/0/text");
        let errors = messages(&errors.bodies().await, "/message");
        slack.iter().any(|m| m == initialized)
            && slack
                .iter()
                .any(|m| m.starts_with("Failed checks threshold reached"))
            && errors
                .iter()
                .any(|m| m.starts_with("Failed checks threshold reached"))
            && messages(&global.bodies().await, "/attachments/0/text")
                .iter()
                .any(|m| m == initialized)
            && !proxy.bodies().await.is_empty()
    })
    .await;

    // Slack: the AlertProvider's channel, the Secret's token, Flagger's fields plus the cluster.
    let bodies = slack.bodies().await;
    let failed = bodies
        .iter()
        .find(|b| b["attachments"][0]["color"] == "danger")
        .unwrap();
    assert_eq!(failed["channel"], "releases");
    assert_eq!(
        failed["attachments"][0]["author_name"],
        format!("podinfo.{ns}")
    );
    let fields: Vec<(String, String)> = failed["attachments"][0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["title"].as_str().unwrap().into(),
                f["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        fields.contains(&("Cluster".into(), "prod-eu".into())),
        "{fields:?}"
    );
    assert!(
        fields.contains(&("Failed checks threshold".into(), "2".into())),
        "{fields:?}"
    );
    assert!(
        slack
            .headers
            .lock()
            .await
            .iter()
            .all(|h| h.contains("authorization: bearer s3cr3t-token")),
        "the Secret's token is sent"
    );

    // Severity `error` gets errors only; Canaries without alerts use the global notifier.
    let severities: Vec<String> = messages(&errors.bodies().await, "/severity");
    assert!(severities.iter().all(|s| s == "error"), "{severities:?}");
    let global_bodies = global.bodies().await;
    assert!(
        global_bodies.iter().all(|b| b["channel"] == "ops"),
        "{global_bodies:?}"
    );
    assert!(
        messages(&global_bodies, "/attachments/0/author_name")
            .iter()
            .all(|w| *w == format!("other.{ns}")),
        "a Canary with alerts of its own does not use the global notifier"
    );

    // Through the AlertProvider's proxy: the proxy gets the request for the real address.
    let proxied = proxy.headers.lock().await.clone();
    assert!(
        proxied
            .iter()
            .any(|h| h.starts_with("post http://alerts.invalid/hook")),
        "{proxied:?}"
    );
    assert!(
        proxy
            .bodies()
            .await
            .iter()
            .all(|b| b["embeds"][0]["title"] == format!("podinfo.{ns}"))
    );

    // A failing receiver gets the alert and three retries, then it is counted as failed;
    // its address (a Secret's) is never logged.
    wait_until(LONG, "retries given up", || async {
        let (_, metrics) = world.controller_http("/metrics").await;
        metrics.contains(r#"serin_alerts_total{provider_type="webhook",result="failed"} 1"#)
    })
    .await;
    assert_eq!(broken.bodies().await.len(), 4);
    let port = broken
        .url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert!(!world.logs().contains(&port), "the log names the port");
    world.kill_controller();
}

serin_testkit::on_every_control_plane!(virtual_time: alerts_reach_providers_by_severity_and_failures_are_retried);
