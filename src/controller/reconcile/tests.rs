//! The reconcile steps against a mocked API server (tower-test), in the manner of kube-rs'
//! controller-rs: each test says which requests a step must send, with what bodies, and
//! answers them.

use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::reflector;
use serde_json::{Value, json};
use serin_core::Phase;
use tower_test::mock::{self, Handle};

use super::observe::current_status;
use super::*;
use crate::api::Provider;
use crate::controller::context::{Config, Stores};

type ApiServer = Handle<Request<Body>, Response<Body>>;

fn context() -> (Context, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let outbox_client = client.clone();
    let config = Config {
        mesh_provider: Provider::Kubernetes,
        metrics_server: "http://prometheus:9090".into(),
        namespace: None,
        canary_selector: None,
        concurrency: Default::default(),
        selector_labels: vec!["app".into()],
        config_tracking: true,
        include_label_prefixes: vec![],
        min_interval: Duration::from_secs(1),
        max_concurrent_reconciles: 0,
        router: Default::default(),
        event_webhook: None,
        no_cross_namespace_refs: false,
        cluster_name: None,
        notifier: Default::default(),
        clock: Default::default(),
    };
    let telemetry = Arc::new(crate::controller::runtime::telemetry::Telemetry::new());
    let ctx = Context {
        analyzer: crate::analysis::Analyzer::new(
            client.clone(),
            config.metrics_server.clone(),
            config.mesh_provider,
        )
        .unwrap(),
        events: crate::controller::notify::events::Events::new(client.clone(), None),
        alerts: crate::controller::notify::alerts::Alerts::start(
            client.clone(),
            reqwest::Client::new(),
            None,
            telemetry.clone(),
        ),
        client,
        config,
        stores: Stores {
            deployments: reflector::store().0,
            daemon_sets: reflector::store().0,
            stateful_sets: reflector::store().0,
            services: reflector::store().0,
            configmaps: reflector::store().0,
            secrets: reflector::store().0,
            templates: reflector::store().0,
            canaries: reflector::store().0,
            fetched: Default::default(),
            index: Default::default(),
            coverage: Vec::new(),
        },
        http: reqwest::Client::new(),
        telemetry,
        written: Default::default(),
        expected: Default::default(),
        retries: Default::default(),
        commands_cleared: Default::default(),
        deliveries: Default::default(),
        groups: Default::default(),
        outbox: outbox_client,
        background: Default::default(),
        routing: crate::controller::apply::routing_cache::RoutingCache::without_watches(),
        slots: Default::default(),
    };
    (ctx, handle)
}

fn canary(status: Value) -> Canary {
    serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": "u-1",
                     "resourceVersion": "10", "finalizers": ["other"]},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "service": {"port": 9898},
                 "analysis": {"interval": "1m", "threshold": 2, "iterations": 2,
                              "sessionAffinity": {"cookieName": "flagger-cookie"}}},
        "status": status
    }))
    .unwrap()
}

/// Answers the next request with `answer`, returning the request's method, path and body.
async fn answer(server: &mut ApiServer, answer: Value) -> (Method, String, Value) {
    let (request, send) = server.next_request().await.expect("a request");
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let bytes = http_body_util::BodyExt::collect(request.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let response = Response::builder()
        .body(Body::from(serde_json::to_vec(&answer).unwrap()))
        .unwrap();
    send.send_response(response);
    (method, path, body)
}

#[tokio::test]
async fn the_finalizer_is_added_beside_others_and_guarded_by_the_resource_version() {
    let (ctx, mut server) = context();
    let c = canary(json!({}));
    let serving = tokio::spawn(async move { answer(&mut server, json!(canary(json!({})))).await });
    add_finalizer(&c, &ctx).await.unwrap();
    let (method, path, body) = serving.await.unwrap();
    assert_eq!(method, Method::PATCH);
    assert_eq!(
        path,
        "/apis/flagger.app/v1beta1/namespaces/test/canaries/podinfo"
    );
    assert_eq!(body["metadata"]["finalizers"], json!(["other", FINALIZER]));
    assert_eq!(body["metadata"]["resourceVersion"], "10");
}

#[tokio::test]
async fn a_blocked_canary_gets_a_ready_false_condition_and_one_warning_event() {
    let (ctx, mut server) = context();
    let c = canary(json!({"phase": "Initialized"}));
    let written = json!(canary(json!({"phase": "Initialized"})));
    let serving = tokio::spawn(async move {
        let status = answer(&mut server, written).await;
        let event = answer(
            &mut server,
            json!({"metadata": {"name": "e"}, "involvedObject": {}}),
        )
        .await;
        (status, event)
    });
    let action = blocked(
        &c,
        &ctx,
        crate::controller::error::Reason::TargetNotFound,
        "spec.targetRef: Deployment test/podinfo not found",
    )
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(super::BLOCKED_RETRY));
    let ((method, path, body), (event_method, event_path, event)) = serving.await.unwrap();
    assert_eq!(method, Method::PATCH);
    assert!(path.ends_with("/canaries/podinfo/status"), "{path}");
    let ready = body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "TargetNotFound");
    assert_eq!(
        (event_method, event_path.as_str()),
        (Method::POST, "/api/v1/namespaces/test/events")
    );
    assert_eq!(event["type"], "Warning");
    assert_eq!(
        event["message"],
        "spec.targetRef: Deployment test/podinfo not found"
    );
}

#[tokio::test]
async fn the_status_serin_wrote_wins_over_an_older_cache() {
    let (ctx, _server) = context();
    let cached = canary(json!({"phase": "Progressing", "canaryWeight": 10}));
    let mut newer = cached.status.clone().unwrap();
    newer.canary_weight = 20;
    ctx.written.record("u-1", 11, newer);
    assert_eq!(
        current_status(&cached, &ctx).canary_weight,
        20,
        "cache at 10 is behind 11"
    );
    let mut caught_up = cached.clone();
    caught_up.metadata.resource_version = Some("12".into());
    assert_eq!(current_status(&caught_up, &ctx).canary_weight, 10);
}

#[test]
fn session_cookies_are_fresh_per_run_and_kept_within_one() {
    let c = canary(json!({"phase": "Initialized"}));
    let current = c.status.clone().unwrap();
    let mut running = current.engine();
    running.phase = Phase::Progressing;
    let first = Cookies::next(&c, &current, &running);
    let mut recorded = current.clone();
    first.record(&mut recorded);
    let canary_cookie = recorded
        .session_affinity_cookie
        .clone()
        .expect("a cookie for the run");
    // The next step of the same run keeps it.
    let again = Cookies::next(&c, &recorded, &running);
    let mut kept = recorded.clone();
    again.record(&mut kept);
    assert_eq!(kept.session_affinity_cookie, Some(canary_cookie.clone()));
    // When the run ends, its cookie becomes the previous one, for routers to expire.
    let mut done = running.clone();
    done.phase = Phase::Succeeded;
    let ended = Cookies::next(&c, &kept, &done);
    let mut after = kept.clone();
    ended.record(&mut after);
    assert_eq!(after.session_affinity_cookie, None);
    assert_eq!(after.previous_session_affinity_cookie, Some(canary_cookie));
}

#[tokio::test]
async fn a_panic_in_a_reconcile_is_this_canarys_internal_error() {
    let panicking = async {
        if true {
            panic!("index out of bounds: the len is 0 but the index is 3");
        }
        Ok(Action::await_change())
    };
    let err = contained(panicking, Duration::from_secs(5))
        .await
        .unwrap_err();
    let Error::Blocked { reason, message } = &err else {
        panic!("not blocked: {err:?}");
    };
    assert_eq!(*reason, Reason::InternalError);
    assert!(message.contains("index out of bounds"), "{message}");
    assert_eq!(err.label(), "InternalError");
}

#[tokio::test(start_paused = true)]
async fn a_reconcile_past_its_deadline_is_cancelled() {
    let hung = std::future::pending::<Result<Action, Error>>();
    let err = contained(hung, RECONCILE_DEADLINE).await.unwrap_err();
    assert!(
        matches!(err, Error::Deadline(d) if d == RECONCILE_DEADLINE),
        "{err:?}"
    );
    let fine = async { Ok(Action::requeue(Duration::from_secs(1))) };
    assert!(contained(fine, RECONCILE_DEADLINE).await.is_ok());
}

/// Answers the next request with a 404, returning the request's method and path.
async fn not_found(server: &mut ApiServer) -> (Method, String) {
    let (request, send) = server.next_request().await.expect("a request");
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "NotFound", "code": 404, "message": "not found"});
    let response = Response::builder()
        .status(404)
        .body(Body::from(serde_json::to_vec(&status).unwrap()))
        .unwrap();
    let seen = (request.method().clone(), request.uri().path().to_string());
    send.send_response(response);
    seen
}

/// A Canary deleted with a spec serin cannot even route by still leaves the user's service
/// served: the primary and its Services lose the Canary as owner (so the garbage collector
/// keeps them), the user is told, and only then the finalizer goes.
#[tokio::test]
async fn deleted_with_an_invalid_spec_the_primary_is_kept_before_the_finalizer_goes() {
    let (ctx, mut server) = context();
    let mut c = canary(json!({"phase": "Progressing", "lastPromotedSpec": "v1"}));
    c.spec.service.port = 0;
    c.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    c.metadata.finalizers = Some(vec![FINALIZER.into()]);
    let ours = json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo",
                      "uid": "u-1", "controller": true});
    let theirs = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "keep", "uid": "u-2"});
    let primary = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "podinfo-primary", "namespace": "test", "resourceVersion": "5",
                     "ownerReferences": [ours.clone(), theirs.clone()]}});
    let primary_service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "podinfo-primary", "namespace": "test", "resourceVersion": "6",
                     "ownerReferences": [ours]}});
    let released = json!(canary(json!({})));
    let serving = tokio::spawn(async move {
        let mut seen = Vec::new();
        seen.push(answer(&mut server, primary.clone()).await);
        seen.push(answer(&mut server, primary).await);
        let (method, path) = not_found(&mut server).await;
        seen.push((method, path, Value::Null));
        seen.push(answer(&mut server, primary_service.clone()).await);
        seen.push(answer(&mut server, primary_service).await);
        seen.push(
            answer(
                &mut server,
                json!({"metadata": {"name": "e"}, "involvedObject": {}}),
            )
            .await,
        );
        seen.push(answer(&mut server, released).await);
        seen
    });
    let done = intent(&c, &ctx, "test").await.unwrap();
    assert!(matches!(done, std::ops::ControlFlow::Break(a) if a == Action::await_change()));
    let seen = serving.await.unwrap();
    let requests: Vec<(Method, &str)> = seen
        .iter()
        .map(|(m, p, _)| (m.clone(), p.as_str()))
        .collect();
    assert_eq!(
        requests,
        [
            (
                Method::GET,
                "/apis/apps/v1/namespaces/test/deployments/podinfo-primary"
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/test/deployments/podinfo-primary"
            ),
            (Method::GET, "/api/v1/namespaces/test/services/podinfo"),
            (
                Method::GET,
                "/api/v1/namespaces/test/services/podinfo-primary"
            ),
            (
                Method::PATCH,
                "/api/v1/namespaces/test/services/podinfo-primary"
            ),
            (Method::POST, "/api/v1/namespaces/test/events"),
            (
                Method::PATCH,
                "/apis/flagger.app/v1beta1/namespaces/test/canaries/podinfo"
            ),
        ]
    );
    assert_eq!(seen[1].2["metadata"]["ownerReferences"], json!([theirs]));
    assert_eq!(seen[1].2["metadata"]["resourceVersion"], "5");
    assert_eq!(seen[4].2["metadata"]["ownerReferences"], json!([]));
    let event = &seen[5].2;
    assert_eq!(event["type"], "Warning");
    let message = event["message"].as_str().unwrap();
    assert!(
        message.contains("spec.service.port")
            && message.contains("kept podinfo-primary.test")
            && message.contains("delete them once podinfo.test serves"),
        "{message}"
    );
    assert_eq!(seen[6].2["metadata"]["finalizers"], json!([]));
}

/// Answers the next request with HTTP `code` and `answer`, returning the request's body.
async fn answer_with(server: &mut ApiServer, code: u16, answer: Value) -> Value {
    let (request, send) = server.next_request().await.expect("a request");
    let bytes = http_body_util::BodyExt::collect(request.into_body())
        .await
        .unwrap()
        .to_bytes();
    let response = Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(&answer).unwrap()))
        .unwrap();
    send.send_response(response);
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

#[tokio::test]
async fn the_status_write_is_conditional_on_the_copy_the_step_was_decided_on() {
    let (ctx, mut server) = context();
    let cached = canary(json!({"phase": "Progressing"}));
    let status = current_status(&cached, &ctx);
    let reply = json!(cached.clone());
    let serving = tokio::spawn(async move {
        let first = answer_with(&mut server, 200, reply.clone()).await;
        let second = answer_with(&mut server, 200, reply).await;
        (first, second)
    });
    write_status(&cached, &ctx, &status).await.unwrap();
    // serin's own write is newer than the cache: the next step is decided on it.
    ctx.written.record("u-1", 14, status.clone());
    write_status(&cached, &ctx, &status).await.unwrap();
    let (first, second) = serving.await.unwrap();
    assert_eq!(first["metadata"]["resourceVersion"], "10", "the cache's");
    assert_eq!(
        second["metadata"]["resourceVersion"], "14",
        "serin's newer write"
    );
}

fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "Conflict", "code": 409,
        "message": "Operation cannot be fulfilled on canaries.flagger.app \"podinfo\": the object has been modified; please apply your changes to the latest version and try again"})
}

#[tokio::test]
async fn a_status_another_writer_changed_is_not_overwritten_and_the_step_is_decided_again() {
    let (ctx, mut server) = context();
    let cached = Arc::new(canary(json!({"phase": "Progressing", "canaryWeight": 10})));
    let mut next = current_status(&cached, &ctx);
    next.canary_weight = 20;
    // Another controller moved the release on meanwhile.
    let mut theirs = canary(json!({"phase": "Progressing", "canaryWeight": 30}));
    theirs.metadata.resource_version = Some("12".into());
    let serving = tokio::spawn(async move {
        answer_with(&mut server, 409, conflict()).await;
        answer_with(&mut server, 200, json!(theirs)).await;
    });
    let err = write_status(&cached, &ctx, &next).await.unwrap_err();
    serving.await.unwrap();
    assert!(matches!(err, Error::Stale(_)), "{err:?}");
    let ctx = Arc::new(ctx);
    assert_eq!(
        error_policy(cached.clone(), &err, ctx.clone()),
        Action::requeue(super::STALE_RETRY)
    );
    // Not a failure: the backoff of real failures is untouched, the first still waits 1 s.
    let failure = Error::Deadline(Duration::from_secs(1));
    assert_eq!(
        error_policy(cached, &failure, ctx),
        Action::requeue(Duration::from_secs(1))
    );
}

#[tokio::test]
async fn a_status_refused_for_a_spec_edit_or_the_outbox_is_written_on_the_fresh_copy() {
    let (ctx, mut server) = context();
    let cached = canary(json!({"phase": "Progressing", "canaryWeight": 10,
        "announcements": {"t1": {"events": [{"type": "Normal", "message": "m"}]}}}));
    let mut next = current_status(&cached, &ctx);
    next.canary_weight = 20;
    // The outbox took the delivered transition out, and the spec was edited: the status is
    // otherwise the one the step was decided on.
    let mut fresh = canary(json!({"phase": "Progressing", "canaryWeight": 10}));
    fresh.metadata.resource_version = Some("13".into());
    fresh.spec.suspend = Some(true);
    let written = json!(fresh.clone());
    let serving = tokio::spawn(async move {
        let refused = answer_with(&mut server, 409, conflict()).await;
        answer_with(&mut server, 200, json!(fresh)).await;
        let again = answer_with(&mut server, 200, written).await;
        (refused, again)
    });
    write_status(&cached, &ctx, &next).await.unwrap();
    let (refused, again) = serving.await.unwrap();
    assert_eq!(refused["metadata"]["resourceVersion"], "10");
    assert_eq!(
        again["metadata"]["resourceVersion"], "13",
        "the fresh copy's"
    );
    assert_eq!(again["status"]["canaryWeight"], 20, "the step's status");
}
