//! Conformance of the emulator through kube-rs: the client the serin controller uses.

// Test helpers outside #[test] functions: failing loudly is the point.
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource};
use serde_json::{Value, json};
use serin_stack::testing::poll::Poll;
use serin_stack::{FaultRule, Scenario, Stack, StackConfig};
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(config: StackConfig) -> (Stack, Client) {
    let stack = Stack::start(config).await.unwrap();
    let cfg = kube::Config::new(stack.url().parse().unwrap());
    let client = Client::try_from(cfg).unwrap();
    (stack, client)
}

async fn stack() -> (Stack, Client) {
    let scenario = Scenario::parse("workloads:\n  readyDelay: 200ms\n").unwrap();
    start(StackConfig {
        scenario,
        ..StackConfig::default()
    })
    .await
}

fn api_err(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `f` until it returns Some, for up to 10 s.
async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    Poll::new(what, Duration::from_secs(10)).until(f).await
}

/// A bare HTTP/1.1 request (for the admin server and content negotiation).
async fn http(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

fn cm(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

fn deployment(name: &str, image: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}}}
    }))
    .unwrap()
}

#[tokio::test]
async fn crud_errors_and_dry_run() {
    let (stack, client) = stack().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let created = cms
        .create(&PostParams::default(), &cm("a", json!({"app": "x"})))
        .await
        .unwrap();
    let rv1: u64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());

    let dup = api_err(
        cms.create(&PostParams::default(), &cm("a", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    let missing = api_err(cms.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    let bad = api_err(
        cms.create(&PostParams::default(), &cm("Bad_Name", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(bad.code, 422);
    assert_eq!(bad.details.unwrap().causes[0].field, "metadata.name");

    let long_label = api_err(
        cms.create(
            &PostParams::default(),
            &cm("long", json!({"hash": "x".repeat(64)})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(long_label.code, 422);
    assert_eq!(
        long_label.details.unwrap().causes[0].field,
        "metadata.labels"
    );

    let mut updated = created.clone();
    updated.data = Some([("k".to_string(), "w".to_string())].into());
    let after = cms
        .replace("a", &PostParams::default(), &updated)
        .await
        .unwrap();
    let rv2: u64 = after
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    // `updated` still carries the old resourceVersion.
    let stale = api_err(
        cms.replace("a", &PostParams::default(), &updated)
            .await
            .unwrap_err(),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));

    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    cms.create(&dry, &cm("dry", json!({}))).await.unwrap();
    assert!(cms.get_opt("dry").await.unwrap().is_none());

    cms.create(&PostParams::default(), &cm("b", json!({"app": "y"})))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("c", json!({"tier": "z"})))
        .await
        .unwrap();
    let names = |l: kube::api::ObjectList<ConfigMap>| -> Vec<String> {
        l.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect()
    };
    let cases: [(ListParams, &[&str]); 4] = [
        (ListParams::default().labels("app in (x,y)"), &["a", "b"]),
        (ListParams::default().labels("!app"), &["c"]),
        (ListParams::default().labels("app!=x"), &["b", "c"]),
        (ListParams::default().fields("metadata.name=b"), &["b"]),
    ];
    for (params, expected) in cases {
        let got = names(cms.list(&params).await.unwrap());
        assert_eq!(got, expected, "{params:?}");
    }
    let page = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().unwrap();
    let rest = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(rest), ["c"]);
    assert!(page.metadata.resource_version.is_some());

    // Cluster-wide list covers every namespace.
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap(),
    )
    .await
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), "other")
        .create(&PostParams::default(), &cm("d", json!({})))
        .await
        .unwrap();
    assert_eq!(
        Api::<ConfigMap>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        4
    );

    cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(cms.get_opt("a").await.unwrap().is_none());
    stack.shutdown().await;
}

#[tokio::test]
async fn patches_status_and_generation() {
    let (stack, client) = stack().await;
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let d = deps
        .create(&PostParams::default(), &deployment("web", "podinfo:1", 2))
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1));

    let d = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        d.metadata.generation,
        Some(1),
        "metadata changes do not bump generation"
    );

    let strategic = json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "s:1"}]}}}});
    let d = deps
        .patch("web", &PatchParams::default(), &Patch::Strategic(strategic))
        .await
        .unwrap();
    let containers = d
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers
        .clone();
    assert_eq!(
        containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["app", "sidecar"]
    );
    assert_eq!(d.metadata.generation, Some(2));

    let json_patch: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/replicas", "value": 5}]))
            .unwrap();
    let d = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Json::<()>(json_patch),
        )
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(5));

    // Status changes through the main resource are ignored...
    let d = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"collisionCount": 7}})),
        )
        .await
        .unwrap();
    assert_ne!(d.status.and_then(|s| s.collision_count), Some(7));
    // ...and through the status subresource only status changes.
    let d = deps
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 9}, "status": {"collisionCount": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().collision_count, Some(7));
    assert_eq!(d.spec.unwrap().replicas, Some(5));
    assert_eq!(d.metadata.generation, Some(3));

    let scale = deps.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(5));
    deps.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    assert_eq!(
        deps.get("web").await.unwrap().spec.unwrap().replicas,
        Some(1)
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn server_side_apply() {
    let (stack, client) = stack().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s", "labels": {"owner": "a"}},
        "data": {"shared": "1", "mine": "a"}});
    let created = cms
        .patch("s", &PatchParams::apply("alice"), &Patch::Apply(&a))
        .await
        .unwrap();
    assert_eq!(created.data.unwrap()["mine"], "a");

    let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"shared": "2"}});
    let conflict = api_err(
        cms.patch("s", &PatchParams::apply("bob"), &Patch::Apply(&b))
            .await
            .unwrap_err(),
    );
    assert_eq!(conflict.code, 409);
    let causes = conflict.details.unwrap().causes;
    assert_eq!(causes[0].field, ".data.shared");
    assert!(causes[0].message.contains("alice"), "{}", causes[0].message);

    let forced = cms
        .patch("s", &PatchParams::apply("bob").force(), &Patch::Apply(&b))
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["shared"], "2");

    // Alice stops sending `mine` and the label: nobody else owns them, so they go.
    let a2 =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {}});
    let after = cms
        .patch("s", &PatchParams::apply("alice"), &Patch::Apply(&a2))
        .await
        .unwrap();
    let data = after.data.clone().unwrap();
    assert_eq!(data.get("shared").map(String::as_str), Some("2"));
    assert!(!data.contains_key("mine"));
    assert!(after.metadata.labels.unwrap_or_default().is_empty());
    let managers: Vec<(String, String)> = after
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .map(|m| (m.manager.unwrap(), m.operation.unwrap()))
        .collect();
    assert!(
        managers.contains(&("bob".into(), "Apply".into())),
        "{managers:?}"
    );

    // An update by another manager takes ownership, so re-applying the old value conflicts.
    cms.patch(
        "s",
        &PatchParams {
            field_manager: Some("carol".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"data": {"shared": "3"}})),
    )
    .await
    .unwrap();
    let again = api_err(
        cms.patch("s", &PatchParams::apply("bob"), &Patch::Apply(&b))
            .await
            .unwrap_err(),
    );
    assert!(again.message.contains("carol"), "{}", again.message);
    stack.shutdown().await;
}

fn crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["size"], "properties": {
                        "size": {"type": "integer", "minimum": 1},
                        "replicas": {"type": "integer", "default": 1},
                        "mode": {"type": "string", "enum": ["a", "b"]},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}, "replicas": {"type": "integer"}}}}}}}]}
    }))
    .unwrap()
}

/// As the API server: server-side apply builds a typed object, so a field the schema does
/// not declare is an error (other writes prune it), and a stale resourceVersion in the
/// applied configuration is a conflict.
#[tokio::test]
async fn server_side_apply_of_custom_resources_is_typed_and_can_be_conditional() {
    let (_stack, client) = stack().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd()).await.unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::default_namespaced_with(client.clone(), &ar);
    let apply = PatchParams::apply("test");
    let undeclared = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "mesh": "default", "spec": {"size": 1}});
    let status = api_err(
        widgets
            .patch("w", &apply, &Patch::Apply(&undeclared))
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 500);
    assert!(
        status
            .message
            .ends_with("(/w; example.com/v1, Kind=Widget): .mesh: field not declared in schema"),
        "{}",
        status.message
    );
    let ok = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"size": 1}});
    let created = widgets
        .patch("w", &apply, &Patch::Apply(&ok))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    let mut bumped = ok.clone();
    bumped["spec"]["size"] = json!(2);
    widgets
        .patch("w", &apply, &Patch::Apply(&bumped))
        .await
        .unwrap();
    let mut stale = ok.clone();
    stale["metadata"]["resourceVersion"] = json!(rv);
    stale["spec"]["size"] = json!(3);
    let status = api_err(
        widgets
            .patch("w", &apply, &Patch::Apply(&stale))
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 409, "{}", status.message);
}

/// As the API server: a CRD in a group the Kubernetes project owns needs an approval
/// annotation (Gateway API's CRDs carry one).
#[tokio::test]
async fn a_crd_in_a_protected_group_needs_the_approval_annotation() {
    let (_stack, client) = stack().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd = serde_json::to_value(crd()).unwrap();
    crd["metadata"]["name"] = json!("widgets.example.k8s.io");
    crd["spec"]["group"] = json!("example.k8s.io");
    let unapproved: CustomResourceDefinition = serde_json::from_value(crd.clone()).unwrap();
    let status = api_err(
        crds.create(&PostParams::default(), &unapproved)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("api-approved.kubernetes.io"),
        "{}",
        status.message
    );
    crd["metadata"]["annotations"] =
        json!({"api-approved.kubernetes.io": "https://example.com/approval"});
    let approved: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
    crds.create(&PostParams::default(), &approved)
        .await
        .unwrap();
}

#[tokio::test]
async fn custom_resources() {
    let (stack, client) = stack().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd()).await.unwrap();
    let established = crds.get("widgets.example.com").await.unwrap();
    let conds = established.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "NamesAccepted" && c.status == "True")
    );

    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"))
        .unwrap();
    assert_eq!(ar.plural, "widgets");
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"));

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::default_namespaced_with(client.clone(), &ar);
    let obj = |spec: Value| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec})).unwrap()
    };
    let invalid = api_err(
        widgets
            .create(
                &PostParams::default(),
                &obj(json!({"size": 0, "mode": "c"})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(invalid.code, 422);
    let fields: Vec<String> = invalid
        .details
        .unwrap()
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    assert_eq!(fields, ["spec.size", "spec.mode"]);
    let missing = api_err(
        widgets
            .create(&PostParams::default(), &obj(json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(missing.details.unwrap().causes[0].field, "spec.size");

    let w = widgets
        .create(
            &PostParams::default(),
            &obj(json!({"size": 2, "unknown": 1, "extra": {"kept": true}})),
        )
        .await
        .unwrap();
    assert_eq!(
        w.data["spec"],
        json!({"size": 2, "extra": {"kept": true}, "replicas": 1})
    );
    assert_eq!(w.metadata.generation, Some(1));

    let w = widgets
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready", "replicas": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(w.data["status"]["phase"], "Ready");
    assert_eq!(w.metadata.generation, Some(1));
    let w = widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(2));
    assert_eq!(w.data["status"]["phase"], "Ready");

    // Controllers commonly server-side apply their status.
    let status = |s: Value| json!({"apiVersion": "example.com/v1", "kind": "Widget", "status": s});
    let w = widgets
        .patch_status(
            "w",
            &PatchParams::apply("ctl").force(),
            &Patch::Apply(status(json!({"phase": "Applied"}))),
        )
        .await
        .unwrap();
    assert_eq!(w.data["status"], json!({"phase": "Applied", "replicas": 1}));
    assert_eq!(w.data["spec"]["size"], 3);
    let w = widgets
        .patch_status(
            "w",
            &PatchParams::apply("ctl").force(),
            &Patch::Apply(status(json!({"replicas": 2}))),
        )
        .await
        .unwrap();
    assert_eq!(
        w.data["status"],
        json!({"replicas": 2}),
        "the field ctl stopped applying is removed"
    );
    assert_eq!(w.metadata.generation, Some(2));

    let strategic = api_err(
        widgets
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"size": 4}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(strategic.code, 415);

    widgets
        .patch_scale(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    let scale = widgets.get_scale("w").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(4));
    assert_eq!(scale.status.unwrap().replicas, 2);

    // Deleting the CRD deletes its objects and stops serving the type.
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let gone = api_err(widgets.get("w").await.unwrap_err());
    assert_eq!(gone.code, 404);
    stack.shutdown().await;
}

#[tokio::test]
async fn watcher_reflector_and_selectors() {
    let (stack, client) = stack().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(
        writer,
        watcher(cms.clone(), watcher::Config::default().labels("app=web")),
    )
    .applied_objects()
    .boxed();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.unwrap();

    for (n, app) in [("one", "web"), ("two", "web"), ("three", "db")] {
        cms.create(&PostParams::default(), &cm(n, json!({"app": app})))
            .await
            .unwrap();
    }
    eventually("two objects in the reflector", || async {
        (reader.state().len() == 2).then_some(())
    })
    .await;
    cms.delete("one", &DeleteParams::default()).await.unwrap();
    // Leaving the selector is seen as a deletion.
    cms.patch(
        "two",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    eventually("an empty reflector", || async {
        reader.state().is_empty().then_some(())
    })
    .await;
    cms.patch(
        "three",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    eventually("the relabelled object", || async {
        (reader
            .state()
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect::<Vec<_>>()
            == ["three"])
        .then_some(())
    })
    .await;

    // A dropped watch that cannot resume until its history is gone gets 410; the watcher
    // relists.
    stack.faults().add(vec![FaultRule {
        verb: "watch".into(),
        error_rate: 1.0,
        ..FaultRule::default()
    }]);
    stack.faults().drop_watches();
    cms.create(&PostParams::default(), &cm("four", json!({"app": "web"})))
        .await
        .unwrap();
    cms.delete("three", &DeleteParams::default()).await.unwrap();
    let admin = stack.admin_url().unwrap().to_string();
    assert_eq!(http(&admin, "POST", "/compact", &[], "").await.0, 200);
    let failed_watches = stack.faults().requests("watch", "configmaps");
    stack.faults().clear();
    eventually("the relisted state", || async {
        (reader
            .state()
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect::<Vec<_>>()
            == ["four"])
        .then_some(())
    })
    .await;
    assert!(failed_watches >= 1);
    let (_, metrics) = http(&admin, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains("verb=\"watch\",resource=\"configmaps\",code=\"503\""),
        "{metrics}"
    );
    task.abort();
    cms.create(&PostParams::default(), &cm("three", json!({"app": "web"})))
        .await
        .unwrap();
    cms.delete("four", &DeleteParams::default()).await.unwrap();

    // Metadata-only views (PartialObjectMetadata), as metadata watchers use.
    let meta = cms.get_metadata("three").await.unwrap();
    assert_eq!(meta.metadata.labels.unwrap()["app"], "web");
    let metas = cms.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(metas.items.len(), 2);
    let meta_api: Api<kube::core::PartialObjectMeta<ConfigMap>> =
        Api::default_namespaced(client.clone());
    let mut mw = watcher(meta_api, watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(5), mw.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.metadata.name.is_some());
    assert_eq!(first.types.unwrap().kind, "PartialObjectMetadata");

    // Streaming lists (sendInitialEvents) work too.
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(
        writer,
        watcher(cms.clone(), watcher::Config::default().streaming_lists()),
    )
    .boxed();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.unwrap();
    assert_eq!(reader.state().len(), 2);
    task.abort();
    stack.shutdown().await;
}

#[tokio::test]
async fn watch_bookmarks_gone_and_drops() {
    let config = StackConfig {
        history: 5,
        bookmark_interval: Duration::from_millis(100),
        ..StackConfig::default()
    };
    let (stack, client) = start(config).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = cms
        .watch(
            &WatchParams {
                bookmarks: true,
                ..Default::default()
            },
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("w", json!({})))
        .await
        .unwrap();
    match events.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(c) => assert_eq!(c.metadata.name.as_deref(), Some("w")),
        other => panic!("expected ADDED, got {other:?}"),
    }
    // Changes elsewhere advance the resourceVersion; a bookmark reports it.
    Api::<Lease>::default_namespaced(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "l"}})).unwrap(),
        )
        .await
        .unwrap();
    match events.try_next().await.unwrap().unwrap() {
        WatchEvent::Bookmark(b) => {
            assert!(b.metadata.resource_version.parse::<u64>().unwrap() > rv.parse().unwrap())
        }
        other => panic!("expected BOOKMARK, got {other:?}"),
    }

    // Dropping watches ends the stream.
    stack.faults().drop_watches();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), events.try_next())
            .await
            .unwrap()
            .unwrap()
            .is_none()
    );

    for i in 0..10 {
        cms.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"i": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    let mut old = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match old.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(status) => assert_eq!(status.code, 410),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn finalizers_and_garbage_collection() {
    let (stack, client) = stack().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());

    // Finalizers hold an object with a deletionTimestamp until they are removed.
    let mut held = cm("held", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let pending = cms.get("held").await.unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(cms.get_opt("held").await.unwrap().is_none());

    // kube-runtime's finalizer helper (JSON patches with `test` operations).
    cms.create(&PostParams::default(), &cm("helped", json!({})))
        .await
        .unwrap();
    let run = |obj: ConfigMap| {
        let cms = cms.clone();
        async move {
            kube::runtime::finalizer(
                &cms,
                "example.com/cleanup",
                std::sync::Arc::new(obj),
                |_| async {
                    Ok::<_, std::io::Error>(kube::runtime::controller::Action::await_change())
                },
            )
            .await
            .unwrap();
        }
    };
    run(cms.get("helped").await.unwrap()).await;
    assert_eq!(
        cms.get("helped").await.unwrap().metadata.finalizers,
        Some(vec!["example.com/cleanup".to_string()])
    );
    // Removing the last finalizer leaves no empty list behind, so the helper can add it again.
    let remove: json_patch::Patch =
        serde_json::from_value(json!([{"op": "remove", "path": "/metadata/finalizers/0"}]))
            .unwrap();
    cms.patch(
        "helped",
        &PatchParams::default(),
        &Patch::Json::<()>(remove),
    )
    .await
    .unwrap();
    assert_eq!(cms.get("helped").await.unwrap().metadata.finalizers, None);
    run(cms.get("helped").await.unwrap()).await;
    cms.delete("helped", &DeleteParams::default())
        .await
        .unwrap();
    run(cms.get("helped").await.unwrap()).await;
    assert!(cms.get_opt("helped").await.unwrap().is_none());

    let owned = |name: &str, owner: &Deployment, block: bool| -> ConfigMap {
        let mut oref = owner.controller_owner_ref(&()).unwrap();
        oref.block_owner_deletion = Some(block);
        let mut c = cm(name, json!({}));
        c.metadata.owner_references = Some(vec![oref]);
        c
    };

    // Background: the dependent goes after its owner.
    let owner = deps
        .create(&PostParams::default(), &deployment("bg", "i:1", 1))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &owned("bg-dep", &owner, false))
        .await
        .unwrap();
    deps.delete("bg", &DeleteParams::background())
        .await
        .unwrap();
    eventually("the dependent to be collected", || async {
        cms.get_opt("bg-dep").await.unwrap().is_none().then_some(())
    })
    .await;

    // Orphan: the dependent stays, without the reference.
    let owner = deps
        .create(&PostParams::default(), &deployment("or", "i:1", 1))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &owned("or-dep", &owner, false))
        .await
        .unwrap();
    deps.delete("or", &DeleteParams::orphan()).await.unwrap();
    eventually("the owner to go", || async {
        deps.get_opt("or").await.unwrap().is_none().then_some(())
    })
    .await;
    let orphan = cms.get("or-dep").await.unwrap();
    assert!(
        orphan
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );

    // Foreground with blockOwnerDeletion: the owner waits for its dependent.
    let owner = deps
        .create(&PostParams::default(), &deployment("fg", "i:1", 1))
        .await
        .unwrap();
    let mut dep = owned("fg-dep", &owner, true);
    dep.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &dep).await.unwrap();
    deps.delete("fg", &DeleteParams::foreground())
        .await
        .unwrap();
    let waiting = eventually("the dependent to be deleting", || async {
        let d = cms.get("fg-dep").await.unwrap();
        d.metadata.deletion_timestamp.is_some().then_some(d)
    })
    .await;
    assert!(waiting.metadata.deletion_timestamp.is_some());
    let owner_now = deps.get("fg").await.unwrap();
    assert!(
        owner_now
            .metadata
            .finalizers
            .unwrap()
            .contains(&"foregroundDeletion".to_string())
    );
    cms.patch(
        "fg-dep",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("the owner to go", || async {
        deps.get_opt("fg").await.unwrap().is_none().then_some(())
    })
    .await;

    // Deleting a namespace deletes its contents, then the namespace.
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "tmp"}})).unwrap(),
    )
    .await
    .unwrap();
    let tmp: Api<ConfigMap> = Api::namespaced(client.clone(), "tmp");
    tmp.create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap();
    nss.delete("tmp", &DeleteParams::default()).await.unwrap();
    eventually("the namespace to go", || async {
        nss.get_opt("tmp").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(tmp.get_opt("x").await.unwrap().is_none());

    // Delete collection with a selector.
    for n in ["c1", "c2"] {
        cms.create(&PostParams::default(), &cm(n, json!({"batch": "1"})))
            .await
            .unwrap();
    }
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("batch=1"),
    )
    .await
    .unwrap();
    assert!(
        cms.list(&ListParams::default().labels("batch=1"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    stack.shutdown().await;
}

fn condition(d: &Deployment, type_: &str) -> Option<(String, String)> {
    let c = d
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone().unwrap_or_default()))
}

/// The simulator's stack: pods ready after 200 ms, except `broken` images (never) and
/// `barrier` images (after 400 ms: later than any rollout that can progress).
async fn simulator_stack() -> (Stack, Client) {
    let scenario = Scenario::parse(
        "workloads:\n  readyDelay: 200ms\n  images:\n    - match: broken\n      ready: never\n    - match: barrier\n      readyDelay: 400ms\n",
    )
    .unwrap();
    start(StackConfig {
        scenario,
        ..StackConfig::default()
    })
    .await
}

#[tokio::test]
async fn workload_simulator() {
    let (stack, client) = simulator_stack().await;
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    deps.create(
        &PostParams::default(),
        &deployment("good", "podinfo:6.0.0", 2),
    )
    .await
    .unwrap();
    let done = eventually("the rollout to complete", || async {
        let d = deps.get("good").await.unwrap();
        (condition(&d, "Progressing") == Some(("True".into(), "NewReplicaSetAvailable".into())))
            .then_some(d)
    })
    .await;
    let s = done.status.clone().unwrap();
    assert_eq!(
        (
            s.observed_generation,
            s.ready_replicas,
            s.available_replicas,
            s.updated_replicas
        ),
        (Some(1), Some(2), Some(2), Some(2))
    );
    assert_eq!(
        condition(&done, "Available"),
        Some(("True".into(), "MinimumReplicasAvailable".into()))
    );
    assert_eq!(
        done.spec,
        deps.get("good").await.unwrap().spec,
        "the simulator never changes spec"
    );

    // A new template rolls: old pods keep serving until the new ones are ready.
    deps.patch("good", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "podinfo:6.0.1"}]}}}})))
        .await
        .unwrap();
    let rolling = eventually("the rollout to start", || async {
        let d = deps.get("good").await.unwrap();
        (d.status.as_ref()?.observed_generation == Some(2)).then_some(d)
    })
    .await;
    if condition(&rolling, "Progressing").unwrap().1 == "ReplicaSetUpdated" {
        assert!(rolling.status.unwrap().replicas.unwrap() > 2);
    }
    eventually("the second rollout to complete", || async {
        let d = deps.get("good").await.unwrap();
        (condition(&d, "Progressing").unwrap().1 == "NewReplicaSetAvailable"
            && d.status.unwrap().replicas == Some(2))
        .then_some(())
    })
    .await;

    // Scaling to zero.
    deps.patch_scale(
        "good",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await
    .unwrap();
    eventually("scale to zero", || async {
        let d = deps.get("good").await.unwrap();
        let s = d.status.clone()?;
        (s.observed_generation == Some(3) && s.replicas.is_none() && s.ready_replicas.is_none())
            .then_some(())
    })
    .await;

    // A broken image never becomes ready; after the deadline, Progressing is False.
    let mut broken = deployment("bad", "podinfo:broken", 2);
    broken.spec.as_mut().unwrap().progress_deadline_seconds = Some(1);
    deps.create(&PostParams::default(), &broken).await.unwrap();
    let stuck = eventually("the deadline", || async {
        let d = deps.get("bad").await.unwrap();
        (condition(&d, "Progressing")?.1 == "ProgressDeadlineExceeded").then_some(d)
    })
    .await;
    assert_eq!(condition(&stuck, "Progressing").unwrap().0, "False");
    assert_eq!(
        condition(&stuck, "Available"),
        Some(("False".into(), "MinimumReplicasUnavailable".into()))
    );
    assert_eq!(stuck.status.unwrap().ready_replicas, None);

    // DaemonSets: one pod per matching simulated node (3 by default).
    let dss: Api<DaemonSet> = Api::default_namespaced(client.clone());
    let ds = |name: &str, image: &str, selector: Value| -> DaemonSet {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"nodeSelector": selector,
                "containers": [{"name": "a", "image": image}]}}}}),
        )
        .unwrap()
    };
    dss.create(
        &PostParams::default(),
        &ds(
            "everywhere",
            "agent:1",
            json!({"kubernetes.io/os": "linux"}),
        ),
    )
    .await
    .unwrap();
    dss.create(
        &PostParams::default(),
        &ds("nowhere", "agent:1", json!({"disktype": "ssd"})),
    )
    .await
    .unwrap();
    eventually("daemonset ready", || async {
        let s = dss.get("everywhere").await.unwrap().status?;
        (s.desired_number_scheduled == 3
            && s.number_ready == 3
            && s.number_available == Some(3)
            && s.observed_generation == Some(1))
        .then_some(())
    })
    .await;
    let nowhere = eventually("daemonset status", || async {
        dss.get("nowhere").await.unwrap().status
    })
    .await;
    // A new template with an image that never gets ready: the rollout stays on its first node.
    dss.patch(
        "everywhere",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "agent:broken"}]}}}})),
    )
    .await
    .unwrap();
    let rolling = eventually("the daemonset rollout to start", || async {
        let s = dss.get("everywhere").await.unwrap().status?;
        (s.observed_generation == Some(2)).then_some(s)
    })
    .await;
    // The barrier: a DaemonSet created after the broken rollout was taken in, whose pods
    // take longer to get ready than any image of this stack but broken ones. Once they are
    // ready, a rollout that could progress would have.
    dss.create(
        &PostParams::default(),
        &ds(
            "barrier",
            "agent:barrier",
            json!({"kubernetes.io/os": "linux"}),
        ),
    )
    .await
    .unwrap();
    eventually("the barrier's pods to be ready", || async {
        let s = dss.get("barrier").await.unwrap().status?;
        (s.number_ready == 3).then_some(())
    })
    .await;
    let s = dss.get("everywhere").await.unwrap().status.unwrap();
    assert_eq!(s, rolling, "a broken image makes no progress");
    assert_eq!(
        (
            s.updated_number_scheduled,
            s.number_ready,
            s.number_unavailable
        ),
        (Some(1), 2, Some(1))
    );
    assert_eq!(nowhere.desired_number_scheduled, 0);
    stack.shutdown().await;
}

#[tokio::test]
async fn faults_and_accounting() {
    let (stack, client) = stack().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let admin = stack.admin_url().unwrap().to_string();

    let (code, _) = http(
        &admin,
        "POST",
        "/faults",
        &[],
        "- verb: list\n  resource: configmaps\n  errorRate: 1\n  status: 429\n",
    )
    .await;
    assert_eq!(code, 200);
    let (code, body) = http(
        stack.url(),
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &[],
        "",
    )
    .await;
    assert_eq!(code, 429);
    assert!(body.contains("TooManyRequests"));
    let (code, _) = http(&admin, "DELETE", "/faults", &[], "").await;
    assert_eq!(code, 200);
    cms.list(&ListParams::default()).await.unwrap();

    stack.faults().add(vec![FaultRule {
        verb: "update".into(),
        resource: "configmaps".into(),
        conflicts: 1,
        ..FaultRule::default()
    }]);
    let c = cms
        .create(&PostParams::default(), &cm("f", json!({})))
        .await
        .unwrap();
    let first = api_err(
        cms.replace("f", &PostParams::default(), &c)
            .await
            .unwrap_err(),
    );
    assert_eq!(first.code, 409);
    cms.replace("f", &PostParams::default(), &c).await.unwrap();

    assert_eq!(stack.faults().requests("update", "configmaps"), 2);
    assert_eq!(stack.faults().requests("list", "configmaps"), 2);
    let (code, raw) = http(
        stack.url(),
        "GET",
        "/api/v1/namespaces/default/configmaps/f",
        &[],
        "",
    )
    .await;
    assert_eq!(code, 200);
    assert!(raw.contains("\"name\":\"f\""));
    let (code, rules) = http(&admin, "GET", "/faults", &[], "").await;
    assert_eq!(code, 200);
    assert!(rules.contains("\"conflicts\":0"), "{rules}");

    // Dropping watches and forgetting history through the admin server.
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    assert_eq!(http(&admin, "POST", "/watches/drop", &[], "").await.0, 200);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), events.try_next())
            .await
            .unwrap()
            .unwrap()
            .is_none()
    );
    cms.create(&PostParams::default(), &cm("after", json!({})))
        .await
        .unwrap();
    assert_eq!(http(&admin, "POST", "/compact", &[], "").await.0, 200);
    let mut old = cms
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match old.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => assert_eq!(status.code, 410),
        other => panic!("expected 410 after compaction, got {other:?}"),
    }

    let (_, metrics) = http(&admin, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains(
            "serin_stack_requests_total{verb=\"list\",resource=\"configmaps\",code=\"429\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        "serin_stack_requests_total{verb=\"update\",resource=\"configmaps\",code=\"409\"} 1"
    ));
    stack.shutdown().await;
}

#[tokio::test]
async fn events_leases_and_tables() {
    let (stack, client) = stack().await;
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let d = deps
        .create(&PostParams::default(), &deployment("ev", "i:1", 1))
        .await
        .unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "tester".into(),
            instance: None,
        },
    );
    let ev = Event {
        type_: EventType::Normal,
        reason: "Synced".into(),
        note: Some("hello".into()),
        action: "Sync".into(),
        secondary: None,
    };
    recorder.publish(&ev, &d.object_ref(&())).await.unwrap();
    recorder.publish(&ev, &d.object_ref(&())).await.unwrap();
    let events = Api::<K8sEvent>::default_namespaced(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(events.items.len(), 1);
    assert_eq!(events.items[0].series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(events.items[0].note.as_deref(), Some("hello"));
    // The same events, through core/v1 (what `kubectl get events` and `describe` read).
    let core = Api::<k8s_openapi::api::core::v1::Event>::default_namespaced(client.clone())
        .list(&ListParams::default().fields("involvedObject.name=ev"))
        .await
        .unwrap();
    assert_eq!(core.items.len(), 1);
    assert_eq!(core.items[0].message.as_deref(), Some("hello"));
    assert_eq!(
        core.items[0].involved_object.kind.as_deref(),
        Some("Deployment")
    );
    let by_regarding = Api::<K8sEvent>::default_namespaced(client.clone())
        .list(&ListParams::default().fields("regarding.name=ev"))
        .await
        .unwrap();
    assert_eq!(by_regarding.items.len(), 1);

    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    let l = leases
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let mut mine = l.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("leader", &PostParams::default(), &mine)
        .await
        .unwrap();
    let lost = api_err(
        leases
            .replace("leader", &PostParams::default(), &l)
            .await
            .unwrap_err(),
    );
    assert_eq!(lost.code, 409);

    let (code, body) = http(
        stack.url(),
        "GET",
        "/apis/apps/v1/namespaces/default/deployments",
        &[(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )],
        "",
    )
    .await;
    assert_eq!(code, 200);
    let table: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["columnDefinitions"][0]["name"], "Name");
    assert_eq!(table["rows"][0]["cells"][0], "ev");
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    let (_, body) = http(
        stack.url(),
        "GET",
        "/api/v1/namespaces/default/events",
        &[("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")],
        "",
    )
    .await;
    let events_table: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = events_table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Last Seen", "Type", "Reason", "Object", "Message", "Name"]
    );
    assert_eq!(events_table["rows"][0]["cells"][3], "deployment/ev");
    assert_eq!(events_table["rows"][0]["cells"][4], "hello");
    let (code, body) = http(
        stack.url(),
        "GET",
        "/api/v1/namespaces/default/pods",
        &[(
            "Accept",
            "application/vnd.kubernetes.protobuf,application/json",
        )],
        "",
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["items"],
        json!([])
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn bearer_token_latency_and_watch_drops_after_events() {
    let config = StackConfig {
        token: Some("s3cret".into()),
        ..StackConfig::default()
    };
    let stack = Stack::start(config).await.unwrap();
    let (code, body) = http(stack.url(), "GET", "/api/v1/namespaces", &[], "").await;
    assert_eq!(code, 401);
    assert!(body.contains("Unauthorized"));
    let (code, _) = http(
        stack.url(),
        "GET",
        "/api/v1/namespaces",
        &[("Authorization", "Bearer s3cret")],
        "",
    )
    .await;
    assert_eq!(code, 200);

    // The kubeconfig carries the token.
    let kubeconfig = kube::config::Kubeconfig::read_from(stack.kubeconfig_path()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = Client::try_from(cfg).unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("t", json!({})))
        .await
        .unwrap();

    stack.faults().add(vec![FaultRule {
        verb: "get".into(),
        resource: "configmaps".into(),
        latency: Some(Duration::from_millis(300)),
        ..FaultRule::default()
    }]);
    let t = std::time::Instant::now();
    cms.get("t").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    stack.faults().clear();

    // Watches close after N events; the single-object watch path works too.
    stack.faults().add(vec![FaultRule {
        drop_watches_after_events: Some(2),
        ..FaultRule::default()
    }]);
    let (code, body) = http(
        stack.url(),
        "GET",
        "/api/v1/namespaces/default/configmaps/t?watch=true&timeoutSeconds=1",
        &[("Authorization", "Bearer s3cret")],
        "",
    )
    .await;
    assert_eq!(code, 200);
    assert!(
        body.contains("\"type\":\"ADDED\"") && body.contains("\"name\":\"t\""),
        "{body}"
    );
    let mut events = cms
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let mut n = 0;
    cms.create(&PostParams::default(), &cm("u", json!({})))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("v", json!({})))
        .await
        .unwrap();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        assert!(matches!(e, WatchEvent::Added(_)));
        n += 1;
    }
    assert_eq!(n, 2, "the watch closes after two events");
    stack.shutdown().await;
}
