//! `serin dashboard` against the stack, as a person's browser would use it: the overview's
//! stream shows a release move without a new request, a Canary's page shows its report,
//! a button (with the header the dashboard's own script sends) promotes, and what another
//! site could send is refused. On the real control plane, a user whose Role only reads
//! Canaries sees the API server's refusal. And in a real browser (headless Chromium): the
//! page follows the release without reloading, the metric's chart has a point per analysis,
//! the promote button (confirmed) promotes, a dashboard started later and the release report
//! (opened from a file) chart every analysis, a release failing its metric is rolled back
//! with its failures on the chart, and (real control plane) the reader's Abort shows the API
//! server's refusal; screenshots go to `target/tmp/screenshots/`. Real time
//! on both back-ends: the dashboard and the browser are processes beside the test.

use serde_json::{Value, json};
use serin_core::Phase;
use serin_testkit::LONG;
use serin_testkit::dashboard::Dashboard;
use serin_testkit::http::{EventStream, request_with};

use crate::harness::{
    ControlPlane, World, WorldConfig, canary, initialized, initialized_with, world,
};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

serin_testkit::on_every_control_plane!(
    the_dashboard_shows_a_release_live_and_its_buttons_act,
    in_a_browser_the_release_moves_without_a_reload_and_promote_promotes,
);

/// The row of Canary `ns/name` in a stream message (the dashboard lists every namespace:
/// on a shared API server, other scenarios' Canaries too).
fn row_of(message: &str, ns: &str, name: &str) -> Option<Value> {
    let snapshot: Value = serde_json::from_str(message).expect("a JSON snapshot");
    snapshot["rows"]
        .as_array()?
        .iter()
        .find(|r| r["namespace"] == ns && r["name"] == name)
        .cloned()
}

async fn the_dashboard_shows_a_release_live_and_its_buttons_act(cp: ControlPlane) {
    let world = world(cp).await;
    let ns = world.ns();
    initialized(&world, "podinfo", 30).await;
    let dashboard = Dashboard::start(SERIN, world.stack.kubeconfig_path(), &[]).await;

    let (code, page) = dashboard.get("/").await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<table id=\"canaries\""), "{page}");
    assert_eq!(dashboard.get("/assets/dashboard.js").await.0, 200);

    // One stream, opened before the release: its messages follow the release.
    let mut stream = EventStream::open(&format!("{}/api/stream", dashboard.url)).await;
    let first = stream.next(LONG).await;
    let row = row_of(&first, ns, "podinfo").expect("podinfo in the first snapshot");
    assert_eq!(row["phase"], "Initialized", "{row}");
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    let moving = serin_testkit::Poll::new(LONG);
    loop {
        let message = stream.next(LONG).await;
        let row = row_of(&message, ns, "podinfo").expect("podinfo in every snapshot");
        if row["phase"] == "Progressing" && row["step"][0].as_u64() >= Some(2) {
            break;
        }
        assert!(!moving.expired(), "the stream never showed step 2: {row}");
    }

    let (code, page) = dashboard.get(&format!("/canaries/{ns}/podinfo")).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("data-action=\"promote\""), "{page}");
    assert!(
        page.contains("<th scope=\"row\">Deployment podinfo-primary</th><td>2 of 2 ready</td>"),
        "{page}"
    );
    assert!(page.contains("<td>the next check</td>"), "{page}");
    assert!(page.contains("<td>Progressing</td>"), "{page}");
    assert!(
        page.contains(&format!("Advance podinfo.{ns} canary iteration 1/30")),
        "{page}"
    );
    assert_eq!(
        dashboard.get(&format!("/canaries/{ns}/nothing")).await.0,
        404
    );

    // What another site could make a browser send.
    let url = format!("{}/api/canaries/{ns}/podinfo/promote", dashboard.url);
    let (code, _) = request_with("POST", &url, &[], "").await;
    assert_eq!(code, 403, "a form of another site");
    let rebound = [
        ("Host", "serin.attacker.example"),
        ("X-Serin-Dashboard", "1"),
    ];
    assert_eq!(
        request_with("POST", &url, &rebound, "").await.0,
        403,
        "DNS rebinding"
    );
    assert_eq!(
        world.phase("podinfo").await,
        Phase::Progressing,
        "nothing pressed yet"
    );

    let (code, text) = dashboard.press(ns, "podinfo", "promote").await;
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("promotion requested"), "{text}");
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    assert_eq!(world.image("podinfo-primary").await, "podinfo:6.0.1");

    if cp == ControlPlane::Real {
        a_reader_sees_the_api_servers_refusal(&world).await;
    }
}

/// A kubeconfig (written in `dir`) of a user whose Role reads Canaries and events but may not
/// patch them.
async fn reader_kubeconfig(world: &World, dir: &std::path::Path) -> std::path::PathBuf {
    let ns = world.ns();
    for object in [
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "reader"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "canary-reader"},
               "rules": [{"apiGroups": ["flagger.app"], "resources": ["canaries"],
                          "verbs": ["get", "list", "watch"]},
                         {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "canary-reader"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": "canary-reader"},
               "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]}),
    ] {
        world.create(object).await;
    }
    world.service_account_kubeconfig(ns, "reader", dir)
}

/// The reader's dashboard: the page works, a button answers 403 with the API server's own
/// words, and the Canary is unchanged.
async fn a_reader_sees_the_api_servers_refusal(world: &World) {
    let ns = world.ns();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = reader_kubeconfig(world, dir.path()).await;
    // Namespaced: the reader may not list Canaries cluster-wide.
    let reader = Dashboard::start(SERIN, &kubeconfig, &["-n", ns]).await;
    let (code, page) = reader.get(&format!("/canaries/{ns}/podinfo")).await;
    assert_eq!(code, 200, "{page}");
    let (code, text) = reader.press(ns, "podinfo", "abort").await;
    assert_eq!(code, 403, "{text}");
    assert!(
        text.contains("the API server refused (403)") && text.contains("cannot patch"),
        "{text}"
    );
    let canary = world.canary("podinfo").await;
    let annotations = canary.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key("serin.flagger.app/command"),
        "{annotations:?}"
    );
}

/// Where a test's screenshots go, for a reviewer to look at.
fn screenshot(cp: ControlPlane, name: &str) -> std::path::PathBuf {
    let cp = match cp {
        ControlPlane::Emulator => "emulator",
        ControlPlane::Real => "real",
    };
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("screenshots")
        .join(format!("{cp}-{name}.png"))
}

/// The analysis of a Canary checking, at every step, a metric that always reads 42.
async fn constant_metric(world: &World) -> Value {
    world.constant_template("constant", 42.0).await;
    json!({"interval": "1s", "threshold": 2, "iterations": 30, "metrics": [
        {"name": "constant", "templateRef": {"name": "constant"},
         "thresholdRange": {"max": 100}, "interval": "1m"}
    ]})
}

async fn in_a_browser_the_release_moves_without_a_reload_and_promote_promotes(cp: ControlPlane) {
    let world = WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp)
        .prometheus()
        .start()
        .await;
    let ns = world.ns();
    let analysis = constant_metric(&world).await;
    initialized_with(&world, canary("podinfo").analysis(analysis).build()).await;
    let dashboard = Dashboard::start(SERIN, world.stack.kubeconfig_path(), &[]).await;
    let browser = serin_testkit::browser::Browser::start().await;

    browser.open(&format!("{}/", dashboard.url)).await;
    let row = format!("tr[data-canary=\"{ns}/podinfo\"]");
    browser.wait_for(&row, LONG).await;
    // A mark in the page: a reload would clear it.
    browser.run("window.serinMark = 42; return true;").await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    let cells = format!(
        "const r = document.querySelector('{}'); \
         return r ? [...r.children].map((c) => c.textContent) : [];",
        row.replace('"', "\\\"")
    );
    let poll = serin_testkit::Poll::new(LONG);
    loop {
        let shown = browser.run(&cells).await;
        let step = shown[3].as_str().unwrap_or_default();
        let taken: u32 = step
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if shown[1] == "Progressing" && taken >= 4 {
            break;
        }
        assert!(!poll.expired(), "the page never showed step 4: {shown}");
        poll.next().await;
    }
    assert_eq!(
        browser.run("return window.serinMark;").await,
        42,
        "the page was not reloaded"
    );
    browser
        .screenshot(&screenshot(cp, "overview-release"))
        .await;

    browser.click_on(&format!("{row} a"), LONG).await;
    browser
        .click_on("button[data-action=\"promote\"]", LONG)
        .await;
    let asked = browser.accept_dialog(LONG).await;
    assert_eq!(asked, format!("Promote podinfo.{ns}?"));
    let result = browser.wait_for("#result", LONG).await;
    let poll = serin_testkit::Poll::new(LONG);
    while !browser.text(&result).await.contains("promotion requested") {
        assert!(!poll.expired(), "no answer to the button");
        poll.next().await;
    }
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;

    // The metric's chart: a point per analysis (every step but the first ran one), each 42.
    let steps = world
        .events("podinfo")
        .await
        .iter()
        .filter(|e| e.contains(&format!("Advance podinfo.{ns} canary iteration")))
        .count();
    let points = "const p = document.querySelectorAll('svg[data-metric=\"constant\"] .point'); \
                  return [...p].map((e) => e.dataset.value);";
    let poll = serin_testkit::Poll::new(LONG);
    loop {
        let shown = browser.run(points).await;
        let values: Vec<&str> = shown
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if values.len() == steps - 1 && values.iter().all(|v| *v == "42") {
            break;
        }
        assert!(!poll.expired(), "{steps} steps, the chart shows {values:?}");
        poll.next().await;
    }
    browser.screenshot(&screenshot(cp, "canary-promoted")).await;
    // A dashboard started after the release charts every analysis too: from the status.
    let later = Dashboard::start(SERIN, world.stack.kubeconfig_path(), &[]).await;
    let (code, sections) = later.get(&format!("/canaries/{ns}/podinfo/sections")).await;
    assert_eq!(code, 200, "{sections}");
    assert_eq!(
        sections
            .matches("class=\"point pass\" data-value=\"42\"")
            .count(),
        steps - 1,
        "{sections}"
    );
    drop(later);

    // The release report, opened from a file: everything is in it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("release.html");
    let file_arg = file.display().to_string();
    let (code, out, err) = world
        .cli(&["report", "podinfo", "-n", ns, "-o", &file_arg])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    browser.open(&format!("file://{file_arg}")).await;
    let title = browser.run("return document.title;").await;
    assert_eq!(title, format!("Release of podinfo.{ns}"));
    let text = browser.run("return document.body.innerText;").await;
    let text = text.as_str().unwrap_or_default();
    assert!(
        text.contains("Succeeded") && text.contains("Promotion completed"),
        "{text}"
    );
    let in_report =
        "return document.querySelectorAll('svg[data-metric=\"constant\"] .point').length;";
    assert_eq!(
        browser.run(in_report).await.as_u64(),
        Some(steps as u64 - 1),
        "the report charts every analysis of the release"
    );
    browser.screenshot(&screenshot(cp, "report")).await;

    // A release whose metric now fails its range: rolled back, its chart's points failures.
    let failing = json!({"spec": {"analysis": {"metrics": [
        {"name": "constant", "templateRef": {"name": "constant"},
         "thresholdRange": {"max": 10}, "interval": "1m"}]}}});
    world.merge(&world.canaries(), "podinfo", failing).await;
    browser
        .open(&format!("{}/canaries/{ns}/podinfo", dashboard.url))
        .await;
    world.set_image("podinfo", "app", "podinfo:6.0.2").await;
    world.wait_phase("podinfo", Phase::Failed, LONG).await;
    let failures =
        "return document.querySelectorAll('svg[data-metric=\"constant\"] .point.fail').length;";
    let poll = serin_testkit::Poll::new(LONG);
    while browser.run(failures).await.as_u64() < Some(2) {
        assert!(
            !poll.expired(),
            "the chart never showed the two failed checks"
        );
        poll.next().await;
    }
    browser
        .screenshot(&screenshot(cp, "canary-rolled-back"))
        .await;
    let chart = browser
        .wait_for("svg[data-metric=\"constant\"]", LONG)
        .await;
    browser
        .screenshot_of(&chart, &screenshot(cp, "metric-rolled-back"))
        .await;
    if cp == ControlPlane::Real {
        a_reader_in_a_browser_sees_the_refusal(&world, &browser).await;
    }
    browser.close().await;
}

/// The reader's dashboard in the browser: Abort, confirmed, shows the API server's refusal
/// on the page, and the Canary is unchanged.
async fn a_reader_in_a_browser_sees_the_refusal(
    world: &World,
    browser: &serin_testkit::browser::Browser,
) {
    let ns = world.ns();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = reader_kubeconfig(world, dir.path()).await;
    let reader = Dashboard::start(SERIN, &kubeconfig, &["-n", ns]).await;
    browser
        .open(&format!("{}/canaries/{ns}/podinfo", reader.url))
        .await;
    browser
        .click_on("button[data-action=\"abort\"]", LONG)
        .await;
    assert_eq!(
        browser.accept_dialog(LONG).await,
        format!("Abort podinfo.{ns}?")
    );
    let result = browser.wait_for("#result.refused", LONG).await;
    let poll = serin_testkit::Poll::new(LONG);
    loop {
        let text = browser.text(&result).await;
        if text.contains("the API server refused (403)") && text.contains("cannot patch") {
            break;
        }
        assert!(!poll.expired(), "the page shows {text:?}");
        poll.next().await;
    }
    browser
        .screenshot(&screenshot(ControlPlane::Real, "reader-refused"))
        .await;
    let canary = world.canary("podinfo").await;
    let annotations = canary.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key("serin.flagger.app/command"),
        "{annotations:?}"
    );
}
