//! Conformance of the emulator through kube-rs: the client the serin controller uses.

// Test helpers outside #[test] functions: failing loudly is the point.
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::Status;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use serin_stack::testing::poll::Poll;
use serin_stack::testing::{client, http};
use serin_stack::{FaultRule, Scenario, Stack, StackConfig};
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;

async fn start(config: StackConfig) -> (Stack, Client) {
    let stack = Stack::start(config).await.unwrap();
    let client = client(&stack);
    (stack, client)
}

/// A stack whose workloads follow `workloads` (the scenario's section).
async fn stack_with(workloads: &str) -> (Stack, Client) {
    let scenario = Scenario::parse(&format!("workloads:\n{workloads}")).unwrap();
    start(StackConfig {
        scenario,
        ..StackConfig::default()
    })
    .await
}

async fn stack() -> (Stack, Client) {
    stack_with("  readyDelay: 200ms\n").await
}

fn api_err(e: kube::Error) -> Box<Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The API error `request` is refused with.
async fn refused<T: Debug>(request: impl Future<Output = kube::Result<T>>) -> Box<Status> {
    api_err(request.await.unwrap_err())
}

/// Polls `f` until it returns Some, for up to 10 s.
async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    Poll::new(what, Duration::from_secs(10)).until(f).await
}

/// Waits (`eventually`) until `name` is gone from `api`.
async fn gone<K>(api: &Api<K>, what: &str, name: &str)
where
    K: Clone + DeserializeOwned + Debug,
{
    eventually(what, || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

async fn create<K>(api: &Api<K>, obj: &K) -> K
where
    K: Clone + DeserializeOwned + Serialize + Debug,
{
    api.create(&PostParams::default(), obj).await.unwrap()
}

/// A JSON merge patch of `name`.
async fn merge<K>(api: &Api<K>, name: &str, patch: Value) -> K
where
    K: Clone + DeserializeOwned + Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap()
}

/// Sets `name`'s replicas through its scale subresource.
async fn scale<K>(api: &Api<K>, name: &str, replicas: i32)
where
    K: Clone + DeserializeOwned + Debug,
{
    let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
    api.patch_scale(name, &PatchParams::default(), &patch)
        .await
        .unwrap();
}

/// A JSON patch of `name`.
async fn json_patch<K>(api: &Api<K>, name: &str, patch: Value) -> K
where
    K: Clone + DeserializeOwned + Debug,
{
    let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .unwrap()
}

fn resource_version<K: Resource>(o: &K) -> u64 {
    o.meta().resource_version.clone().unwrap().parse().unwrap()
}

/// The resourceVersion of a list of `api` now.
async fn list_version<K>(api: &Api<K>) -> String
where
    K: Clone + DeserializeOwned + Debug,
{
    api.list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
}

/// Asserts that a watch ends (within 5 s) without another event.
async fn ends<S, T, E>(events: &mut S)
where
    S: futures::Stream<Item = Result<T, E>> + Unpin,
    T: Debug,
    E: Debug,
{
    let next = tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(next.is_none(), "the watch went on: {next:?}");
}

fn names(l: kube::api::ObjectList<ConfigMap>) -> Vec<String> {
    l.items
        .into_iter()
        .map(|c| c.metadata.name.unwrap())
        .collect()
}

fn cm(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

fn namespace(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
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
    let created = create_and_refuse(&cms).await;
    replace_and_conflict(&cms, created).await;
    dry_run_stores_nothing(&cms).await;
    selectors_and_pages(&cms).await;
    cluster_wide_list(&client).await;
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(cms.get_opt("a").await.unwrap().is_none());
    stack.shutdown().await;
}

/// Creates `a`, then the errors: a duplicate, a missing object, an invalid name or label.
async fn create_and_refuse(cms: &Api<ConfigMap>) -> ConfigMap {
    let created = create(cms, &cm("a", json!({"app": "x"}))).await;
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());

    let dup = refused(cms.create(&PostParams::default(), &cm("a", json!({})))).await;
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    let missing = refused(cms.get("nope")).await;
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    let bad = refused(cms.create(&PostParams::default(), &cm("Bad_Name", json!({})))).await;
    assert_eq!(bad.code, 422);
    assert_eq!(bad.details.unwrap().causes[0].field, "metadata.name");

    let long_label = cm("long", json!({"hash": "x".repeat(64)}));
    let long_label = refused(cms.create(&PostParams::default(), &long_label)).await;
    assert_eq!(long_label.code, 422);
    assert_eq!(
        long_label.details.unwrap().causes[0].field,
        "metadata.labels"
    );
    created
}

/// A replace moves the resourceVersion on; one at the old version is a conflict.
async fn replace_and_conflict(cms: &Api<ConfigMap>, created: ConfigMap) {
    let mut updated = created.clone();
    updated.data = Some([("k".to_string(), "w".to_string())].into());
    let after = cms
        .replace("a", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert!(resource_version(&after) > resource_version(&created));
    // `updated` still carries the old resourceVersion.
    let stale = refused(cms.replace("a", &PostParams::default(), &updated)).await;
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
}

async fn dry_run_stores_nothing(cms: &Api<ConfigMap>) {
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    cms.create(&dry, &cm("dry", json!({}))).await.unwrap();
    assert!(cms.get_opt("dry").await.unwrap().is_none());
}

/// Label and field selectors, and pages of a list.
async fn selectors_and_pages(cms: &Api<ConfigMap>) {
    create(cms, &cm("b", json!({"app": "y"}))).await;
    create(cms, &cm("c", json!({"tier": "z"}))).await;
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
}

/// A cluster-wide list covers every namespace.
async fn cluster_wide_list(client: &Client) {
    create(&Api::all(client.clone()), &namespace("other")).await;
    create(
        &Api::<ConfigMap>::namespaced(client.clone(), "other"),
        &cm("d", json!({})),
    )
    .await;
    assert_eq!(
        Api::<ConfigMap>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        4
    );
}

#[tokio::test]
async fn patches_status_and_generation() {
    let (stack, client) = stack().await;
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let d = create(&deps, &deployment("web", "podinfo:1", 2)).await;
    assert_eq!(d.metadata.generation, Some(1));
    patch_kinds_and_generation(&deps).await;
    status_subresource(&deps).await;
    scale_subresource(&deps).await;
    stack.shutdown().await;
}

/// Merge, strategic and JSON patches; only spec changes bump the generation.
async fn patch_kinds_and_generation(deps: &Api<Deployment>) {
    let d = merge(deps, "web", json!({"metadata": {"labels": {"x": "y"}}})).await;
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
    let containers = d.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(
        containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["app", "sidecar"]
    );
    assert_eq!(d.metadata.generation, Some(2));

    let replicas = json!([{"op": "replace", "path": "/spec/replicas", "value": 5}]);
    let d = json_patch(deps, "web", replicas).await;
    assert_eq!(d.spec.unwrap().replicas, Some(5));
}

/// Status changes through the main resource are ignored, and through the status
/// subresource only status changes.
async fn status_subresource(deps: &Api<Deployment>) {
    let d = merge(deps, "web", json!({"status": {"collisionCount": 7}})).await;
    assert_ne!(d.status.and_then(|s| s.collision_count), Some(7));
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
}

async fn scale_subresource(deps: &Api<Deployment>) {
    let before = deps.get_scale("web").await.unwrap();
    assert_eq!(before.spec.unwrap().replicas, Some(5));
    scale(deps, "web", 1).await;
    assert_eq!(
        deps.get("web").await.unwrap().spec.unwrap().replicas,
        Some(1)
    );
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
    let conflict = refused(cms.patch("s", &PatchParams::apply("bob"), &Patch::Apply(&b))).await;
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
    let again = refused(cms.patch("s", &PatchParams::apply("bob"), &Patch::Apply(&b))).await;
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

/// The CRD of `crd()` installed, and its Widgets in the default namespace.
async fn widgets(client: &Client) -> (Api<CustomResourceDefinition>, Api<DynamicObject>) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    create(&crds, &crd()).await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    (crds, Api::default_namespaced_with(client.clone(), &ar))
}

/// As the API server: server-side apply builds a typed object, so a field the schema does
/// not declare is an error (other writes prune it), and a stale resourceVersion in the
/// applied configuration is a conflict.
#[tokio::test]
async fn server_side_apply_of_custom_resources_is_typed_and_can_be_conditional() {
    let (_stack, client) = stack().await;
    let (_, widgets) = widgets(&client).await;
    let apply = PatchParams::apply("test");
    let undeclared = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "mesh": "default", "spec": {"size": 1}});
    let status = refused(widgets.patch("w", &apply, &Patch::Apply(&undeclared))).await;
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
    let status = refused(widgets.patch("w", &apply, &Patch::Apply(&stale))).await;
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
    let status = refused(crds.create(&PostParams::default(), &unapproved)).await;
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("api-approved.kubernetes.io"),
        "{}",
        status.message
    );
    crd["metadata"]["annotations"] =
        json!({"api-approved.kubernetes.io": "https://example.com/approval"});
    let approved: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
    create(&crds, &approved).await;
}

#[tokio::test]
async fn custom_resources() {
    let (stack, client) = stack().await;
    let (crds, widgets) = widgets(&client).await;
    crd_is_established_and_discovered(&crds, &client).await;
    validated_defaulted_and_pruned(&widgets).await;
    status_subresource_and_generation(&widgets).await;
    status_by_server_side_apply(&widgets).await;
    no_strategic_merge_and_a_scale_subresource(&widgets).await;

    // Deleting the CRD deletes its objects and stops serving the type.
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let gone = refused(widgets.get("w")).await;
    assert_eq!(gone.code, 404);
    stack.shutdown().await;
}

async fn crd_is_established_and_discovered(crds: &Api<CustomResourceDefinition>, client: &Client) {
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
}

fn widget(spec: Value) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec})).unwrap()
}

/// The schema's errors name their fields; defaults are set, unknown fields pruned unless
/// preserved. Creates `w`.
async fn validated_defaulted_and_pruned(widgets: &Api<DynamicObject>) {
    let invalid = widget(json!({"size": 0, "mode": "c"}));
    let invalid = refused(widgets.create(&PostParams::default(), &invalid)).await;
    assert_eq!(invalid.code, 422);
    let fields: Vec<String> = invalid
        .details
        .unwrap()
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    assert_eq!(fields, ["spec.size", "spec.mode"]);
    let missing = refused(widgets.create(&PostParams::default(), &widget(json!({})))).await;
    assert_eq!(missing.details.unwrap().causes[0].field, "spec.size");

    let w = create(
        widgets,
        &widget(json!({"size": 2, "unknown": 1, "extra": {"kept": true}})),
    )
    .await;
    assert_eq!(
        w.data["spec"],
        json!({"size": 2, "extra": {"kept": true}, "replicas": 1})
    );
    assert_eq!(w.metadata.generation, Some(1));
}

async fn status_subresource_and_generation(widgets: &Api<DynamicObject>) {
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
    let w = merge(widgets, "w", json!({"spec": {"size": 3}})).await;
    assert_eq!(w.metadata.generation, Some(2));
    assert_eq!(w.data["status"]["phase"], "Ready");
}

/// Controllers commonly server-side apply their status.
async fn status_by_server_side_apply(widgets: &Api<DynamicObject>) {
    let apply_status = |s: Value| async move {
        let status = json!({"apiVersion": "example.com/v1", "kind": "Widget", "status": s});
        widgets
            .patch_status(
                "w",
                &PatchParams::apply("ctl").force(),
                &Patch::Apply(status),
            )
            .await
            .unwrap()
    };
    let w = apply_status(json!({"phase": "Applied"})).await;
    assert_eq!(w.data["status"], json!({"phase": "Applied", "replicas": 1}));
    assert_eq!(w.data["spec"]["size"], 3);
    let w = apply_status(json!({"replicas": 2})).await;
    assert_eq!(
        w.data["status"],
        json!({"replicas": 2}),
        "the field ctl stopped applying is removed"
    );
    assert_eq!(w.metadata.generation, Some(2));
}

async fn no_strategic_merge_and_a_scale_subresource(widgets: &Api<DynamicObject>) {
    let strategic = Patch::Strategic(json!({"spec": {"size": 4}}));
    let strategic = refused(widgets.patch("w", &PatchParams::default(), &strategic)).await;
    assert_eq!(strategic.code, 415);

    scale(widgets, "w", 4).await;
    let scaled = widgets.get_scale("w").await.unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(4));
    assert_eq!(scaled.status.unwrap().replicas, 2);
}

/// `method` on the stack's admin server at `path`: the status code and the body.
async fn admin(stack: &Stack, method: &str, path: &str, body: &str) -> (u16, String) {
    let url = format!("{}{path}", stack.admin_url().unwrap());
    let (code, _, body) = http(method, &url, &[], body).await;
    (code, body)
}

/// A GET of the API server's `path` with `headers`: the status code and the body.
async fn api_get(stack: &Stack, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (code, _, body) = http("GET", &format!("{}{path}", stack.url()), headers, "").await;
    (code, body)
}

/// A reflector of `api` under `config`, ready (its first list in), and the task that drives
/// it.
async fn reflect(
    api: &Api<ConfigMap>,
    config: watcher::Config,
) -> (Store<ConfigMap>, JoinHandle<()>) {
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(writer, watcher(api.clone(), config)).boxed();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.unwrap();
    (reader, task)
}

/// Waits until `reader` holds the objects named `want` and no others.
async fn reflects(reader: &Store<ConfigMap>, what: &str, want: &[&str]) {
    eventually(what, || async {
        let mut names: Vec<String> = reader
            .state()
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        (names == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn watcher_reflector_and_selectors() {
    let (stack, client) = stack().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let (reader, task) = reflect(&cms, watcher::Config::default().labels("app=web")).await;
    reflector_follows_the_selector(&cms, &reader).await;
    reflector_relists_after_410(&stack, &cms, &reader).await;
    task.abort();
    create(&cms, &cm("three", json!({"app": "web"}))).await;
    cms.delete("four", &DeleteParams::default()).await.unwrap();
    metadata_only_views(&client, &cms).await;

    // Streaming lists (sendInitialEvents) work too.
    let (reader, task) = reflect(&cms, watcher::Config::default().streaming_lists()).await;
    assert_eq!(reader.state().len(), 2);
    task.abort();
    stack.shutdown().await;
}

/// Objects that enter the selector are reflected; leaving it is seen as a deletion.
async fn reflector_follows_the_selector(cms: &Api<ConfigMap>, reader: &Store<ConfigMap>) {
    for (n, app) in [("one", "web"), ("two", "web"), ("three", "db")] {
        create(cms, &cm(n, json!({"app": app}))).await;
    }
    reflects(reader, "two objects in the reflector", &["one", "two"]).await;
    cms.delete("one", &DeleteParams::default()).await.unwrap();
    merge(
        cms,
        "two",
        json!({"metadata": {"labels": {"app": "other"}}}),
    )
    .await;
    reflects(reader, "an empty reflector", &[]).await;
    merge(
        cms,
        "three",
        json!({"metadata": {"labels": {"app": "web"}}}),
    )
    .await;
    reflects(reader, "the relabelled object", &["three"]).await;
}

/// A dropped watch that cannot resume until its history is gone gets 410; the watcher
/// relists.
async fn reflector_relists_after_410(
    stack: &Stack,
    cms: &Api<ConfigMap>,
    reader: &Store<ConfigMap>,
) {
    stack.faults().add(vec![FaultRule {
        verb: "watch".into(),
        error_rate: 1.0,
        ..FaultRule::default()
    }]);
    stack.faults().drop_watches();
    create(cms, &cm("four", json!({"app": "web"}))).await;
    cms.delete("three", &DeleteParams::default()).await.unwrap();
    assert_eq!(admin(stack, "POST", "/compact", "").await.0, 200);
    let failed_watches = stack.faults().requests("watch", "configmaps");
    stack.faults().clear();
    reflects(reader, "the relisted state", &["four"]).await;
    assert!(failed_watches >= 1);
    let (_, metrics) = admin(stack, "GET", "/metrics", "").await;
    assert!(
        metrics.contains("verb=\"watch\",resource=\"configmaps\",code=\"503\""),
        "{metrics}"
    );
}

/// Metadata-only views (PartialObjectMetadata), as metadata watchers use.
async fn metadata_only_views(client: &Client, cms: &Api<ConfigMap>) {
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
}

/// Asserts that a watch of `cms` from `rv` begins with a 410 Gone ERROR event.
async fn expired(cms: &Api<ConfigMap>, params: &WatchParams, rv: &str) {
    let mut old = cms.watch(params, rv).await.unwrap().boxed();
    match old.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => assert_eq!(status.code, 410),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
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
    let rv = list_version(&cms).await;
    let bookmarks = WatchParams {
        bookmarks: true,
        ..Default::default()
    };
    let mut events = cms.watch(&bookmarks, &rv).await.unwrap().boxed();
    create(&cms, &cm("w", json!({}))).await;
    match events.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(c) => assert_eq!(c.metadata.name.as_deref(), Some("w")),
        other => panic!("expected ADDED, got {other:?}"),
    }
    // Changes elsewhere advance the resourceVersion; a bookmark reports it.
    let lease = serde_json::from_value(json!({"metadata": {"name": "l"}})).unwrap();
    create(&Api::<Lease>::default_namespaced(client.clone()), &lease).await;
    match events.try_next().await.unwrap().unwrap() {
        WatchEvent::Bookmark(b) => {
            assert!(b.metadata.resource_version.parse::<u64>().unwrap() > rv.parse().unwrap())
        }
        other => panic!("expected BOOKMARK, got {other:?}"),
    }

    // Dropping watches ends the stream.
    stack.faults().drop_watches();
    ends(&mut events).await;

    for i in 0..10 {
        merge(&cms, "w", json!({"data": {"i": i.to_string()}})).await;
    }
    expired(&cms, &WatchParams::default(), &rv).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn finalizers_and_garbage_collection() {
    let (stack, client) = stack().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    finalizers_hold_a_deleted_object(&cms).await;
    kube_runtime_finalizer_helper(&cms).await;
    background_deletion_collects_dependents(&cms, &deps).await;
    orphan_deletion_keeps_dependents(&cms, &deps).await;
    foreground_deletion_waits_for_dependents(&cms, &deps).await;
    namespace_deletion_deletes_contents(&client).await;
    delete_collection_with_a_selector(&cms).await;
    stack.shutdown().await;
}

/// Finalizers hold an object with a deletionTimestamp until they are removed.
async fn finalizers_hold_a_deleted_object(cms: &Api<ConfigMap>) {
    let mut held = cm("held", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    create(cms, &held).await;
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let pending = cms.get("held").await.unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    merge(cms, "held", json!({"metadata": {"finalizers": null}})).await;
    assert!(cms.get_opt("held").await.unwrap().is_none());
}

/// kube-runtime's finalizer helper (JSON patches with `test` operations).
async fn kube_runtime_finalizer_helper(cms: &Api<ConfigMap>) {
    create(cms, &cm("helped", json!({}))).await;
    let run = |obj: ConfigMap| async move {
        kube::runtime::finalizer(
            cms,
            "example.com/cleanup",
            std::sync::Arc::new(obj),
            |_| async {
                Ok::<_, std::io::Error>(kube::runtime::controller::Action::await_change())
            },
        )
        .await
        .unwrap();
    };
    run(cms.get("helped").await.unwrap()).await;
    assert_eq!(
        cms.get("helped").await.unwrap().metadata.finalizers,
        Some(vec!["example.com/cleanup".to_string()])
    );
    // Removing the last finalizer leaves no empty list behind, so the helper can add it again.
    let remove = json!([{"op": "remove", "path": "/metadata/finalizers/0"}]);
    json_patch(cms, "helped", remove).await;
    assert_eq!(cms.get("helped").await.unwrap().metadata.finalizers, None);
    run(cms.get("helped").await.unwrap()).await;
    cms.delete("helped", &DeleteParams::default())
        .await
        .unwrap();
    run(cms.get("helped").await.unwrap()).await;
    assert!(cms.get_opt("helped").await.unwrap().is_none());
}

/// A ConfigMap `name` whose controller is `owner` (blocking its deletion or not).
fn owned(name: &str, owner: &Deployment, block: bool) -> ConfigMap {
    let mut oref = owner.controller_owner_ref(&()).unwrap();
    oref.block_owner_deletion = Some(block);
    let mut c = cm(name, json!({}));
    c.metadata.owner_references = Some(vec![oref]);
    c
}

/// Background: the dependent goes after its owner.
async fn background_deletion_collects_dependents(cms: &Api<ConfigMap>, deps: &Api<Deployment>) {
    let owner = create(deps, &deployment("bg", "i:1", 1)).await;
    create(cms, &owned("bg-dep", &owner, false)).await;
    deps.delete("bg", &DeleteParams::background())
        .await
        .unwrap();
    gone(cms, "the dependent to be collected", "bg-dep").await;
}

/// Orphan: the dependent stays, without the reference.
async fn orphan_deletion_keeps_dependents(cms: &Api<ConfigMap>, deps: &Api<Deployment>) {
    let owner = create(deps, &deployment("or", "i:1", 1)).await;
    create(cms, &owned("or-dep", &owner, false)).await;
    deps.delete("or", &DeleteParams::orphan()).await.unwrap();
    gone(deps, "the owner to go", "or").await;
    let orphan = cms.get("or-dep").await.unwrap();
    assert!(
        orphan
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
}

/// Foreground with blockOwnerDeletion: the owner waits for its dependent.
async fn foreground_deletion_waits_for_dependents(cms: &Api<ConfigMap>, deps: &Api<Deployment>) {
    let owner = create(deps, &deployment("fg", "i:1", 1)).await;
    let mut dep = owned("fg-dep", &owner, true);
    dep.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    create(cms, &dep).await;
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
    merge(cms, "fg-dep", json!({"metadata": {"finalizers": null}})).await;
    gone(deps, "the owner to go", "fg").await;
}

/// Deleting a namespace deletes its contents, then the namespace.
async fn namespace_deletion_deletes_contents(client: &Client) {
    let nss: Api<Namespace> = Api::all(client.clone());
    create(&nss, &namespace("tmp")).await;
    let tmp: Api<ConfigMap> = Api::namespaced(client.clone(), "tmp");
    create(&tmp, &cm("x", json!({}))).await;
    nss.delete("tmp", &DeleteParams::default()).await.unwrap();
    gone(&nss, "the namespace to go", "tmp").await;
    assert!(tmp.get_opt("x").await.unwrap().is_none());
}

async fn delete_collection_with_a_selector(cms: &Api<ConfigMap>) {
    for n in ["c1", "c2"] {
        create(cms, &cm(n, json!({"batch": "1"}))).await;
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

/// Pods ready after 200 ms, except `broken` images (never) and `barrier` images (after
/// 400 ms: later than any rollout that can progress).
const SIMULATED: &str = "  readyDelay: 200ms\n  images:\n    - match: broken\n      ready: never\n    - match: barrier\n      readyDelay: 400ms\n";

#[tokio::test]
async fn workload_simulator() {
    let (stack, client) = stack_with(SIMULATED).await;
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    deployment_rolls_out(&deps).await;
    a_new_template_rolls_like_a_surge(&deps).await;
    scales_to_zero(&deps).await;
    a_broken_image_exceeds_the_deadline(&deps).await;

    let dss: Api<DaemonSet> = Api::default_namespaced(client.clone());
    let nowhere = daemonsets_run_on_matching_nodes(&dss).await;
    a_broken_daemonset_rollout_stays_on_its_first_node(&dss).await;
    assert_eq!(nowhere.desired_number_scheduled, 0);
    stack.shutdown().await;
}

async fn deployment_rolls_out(deps: &Api<Deployment>) {
    create(deps, &deployment("good", "podinfo:6.0.0", 2)).await;
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
}

/// A new template rolls: old pods keep serving until the new ones are ready.
async fn a_new_template_rolls_like_a_surge(deps: &Api<Deployment>) {
    merge(deps, "good", json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "podinfo:6.0.1"}]}}}})).await;
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
}

async fn scales_to_zero(deps: &Api<Deployment>) {
    scale(deps, "good", 0).await;
    eventually("scale to zero", || async {
        let d = deps.get("good").await.unwrap();
        let s = d.status.clone()?;
        (s.observed_generation == Some(3) && s.replicas.is_none() && s.ready_replicas.is_none())
            .then_some(())
    })
    .await;
}

/// A broken image never becomes ready; after the deadline, Progressing is False.
async fn a_broken_image_exceeds_the_deadline(deps: &Api<Deployment>) {
    let mut broken = deployment("bad", "podinfo:broken", 2);
    broken.spec.as_mut().unwrap().progress_deadline_seconds = Some(1);
    create(deps, &broken).await;
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
}

fn daemonset(name: &str, image: &str, node_selector: Value) -> DaemonSet {
    serde_json::from_value(
        json!({"metadata": {"name": name}, "spec": {"selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"nodeSelector": node_selector,
            "containers": [{"name": "a", "image": image}]}}}}),
    )
    .unwrap()
}

/// Waits until DaemonSet `name` has a status `ready` accepts, and returns it.
async fn daemonset_status(
    dss: &Api<DaemonSet>,
    what: &str,
    name: &str,
    ready: impl Fn(&DaemonSetStatus) -> bool,
) -> DaemonSetStatus {
    eventually(what, || async {
        let s = dss.get(name).await.unwrap().status?;
        ready(&s).then_some(s)
    })
    .await
}

/// DaemonSets: one pod per matching simulated node (3 by default). Returns the status of
/// one that matches no node.
async fn daemonsets_run_on_matching_nodes(dss: &Api<DaemonSet>) -> DaemonSetStatus {
    let linux = json!({"kubernetes.io/os": "linux"});
    create(dss, &daemonset("everywhere", "agent:1", linux)).await;
    let ssd = json!({"disktype": "ssd"});
    create(dss, &daemonset("nowhere", "agent:1", ssd)).await;
    daemonset_status(dss, "daemonset ready", "everywhere", |s| {
        s.desired_number_scheduled == 3
            && s.number_ready == 3
            && s.number_available == Some(3)
            && s.observed_generation == Some(1)
    })
    .await;
    daemonset_status(dss, "daemonset status", "nowhere", |_| true).await
}

/// A new template with an image that never gets ready: the rollout stays on its first node.
async fn a_broken_daemonset_rollout_stays_on_its_first_node(dss: &Api<DaemonSet>) {
    dss.patch(
        "everywhere",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "agent:broken"}]}}}})),
    )
    .await
    .unwrap();
    let rolling = daemonset_status(dss, "the daemonset rollout to start", "everywhere", |s| {
        s.observed_generation == Some(2)
    })
    .await;
    // The barrier: a DaemonSet created after the broken rollout was taken in, whose pods take
    // longer to get ready than any but broken ones (`SIMULATED`). Once they are ready, a
    // rollout that could progress would have.
    let linux = json!({"kubernetes.io/os": "linux"});
    create(dss, &daemonset("barrier", "agent:barrier", linux)).await;
    daemonset_status(dss, "the barrier's pods to be ready", "barrier", |s| {
        s.number_ready == 3
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
}

#[tokio::test]
async fn faults_and_accounting() {
    let (stack, client) = stack().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    fault_rules_through_the_admin_server(&stack, &cms).await;
    conflicts_and_request_counts(&stack, &cms).await;
    drops_and_compaction_through_the_admin_server(&stack, &cms).await;

    let (_, metrics) = admin(&stack, "GET", "/metrics", "").await;
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

async fn fault_rules_through_the_admin_server(stack: &Stack, cms: &Api<ConfigMap>) {
    let rules = "- verb: list\n  resource: configmaps\n  errorRate: 1\n  status: 429\n";
    assert_eq!(admin(stack, "POST", "/faults", rules).await.0, 200);
    let (code, body) = api_get(stack, "/api/v1/namespaces/default/configmaps", &[]).await;
    assert_eq!(code, 429);
    assert!(body.contains("TooManyRequests"));
    assert_eq!(admin(stack, "DELETE", "/faults", "").await.0, 200);
    cms.list(&ListParams::default()).await.unwrap();
}

/// An injected conflict, then the requests counted (the raw GET is not a kube-rs one).
async fn conflicts_and_request_counts(stack: &Stack, cms: &Api<ConfigMap>) {
    stack.faults().add(vec![FaultRule {
        verb: "update".into(),
        resource: "configmaps".into(),
        conflicts: 1,
        ..FaultRule::default()
    }]);
    let c = create(cms, &cm("f", json!({}))).await;
    let first = refused(cms.replace("f", &PostParams::default(), &c)).await;
    assert_eq!(first.code, 409);
    cms.replace("f", &PostParams::default(), &c).await.unwrap();

    assert_eq!(stack.faults().requests("update", "configmaps"), 2);
    assert_eq!(stack.faults().requests("list", "configmaps"), 2);
    let (code, raw) = api_get(stack, "/api/v1/namespaces/default/configmaps/f", &[]).await;
    assert_eq!(code, 200);
    assert!(raw.contains("\"name\":\"f\""));
    let (code, rules) = admin(stack, "GET", "/faults", "").await;
    assert_eq!(code, 200);
    assert!(rules.contains("\"conflicts\":0"), "{rules}");
}

/// Dropping watches and forgetting history through the admin server.
async fn drops_and_compaction_through_the_admin_server(stack: &Stack, cms: &Api<ConfigMap>) {
    let rv = list_version(cms).await;
    let mut events = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    assert_eq!(admin(stack, "POST", "/watches/drop", "").await.0, 200);
    ends(&mut events).await;
    create(cms, &cm("after", json!({}))).await;
    assert_eq!(admin(stack, "POST", "/compact", "").await.0, 200);
    expired(cms, &WatchParams::default().timeout(5), &rv).await;
}

#[tokio::test]
async fn events_leases_and_tables() {
    let (stack, client) = stack().await;
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let d = create(&deps, &deployment("ev", "i:1", 1)).await;
    events_through_the_recorder(&client, &d).await;
    a_lease_taken_over_conflicts(&client).await;
    tables(&stack).await;
    stack.shutdown().await;
}

/// Events via kube-runtime's `Recorder`, read as events.k8s.io/v1 and core/v1.
async fn events_through_the_recorder(client: &Client, d: &Deployment) {
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
}

async fn a_lease_taken_over_conflicts(client: &Client) {
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    let lease = json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}});
    let l = create(&leases, &serde_json::from_value(lease).unwrap()).await;
    let mut mine = l.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("leader", &PostParams::default(), &mine)
        .await
        .unwrap();
    let lost = refused(leases.replace("leader", &PostParams::default(), &l)).await;
    assert_eq!(lost.code, 409);
}

/// Tables (`kubectl get`), with the events' columns; protobuf asked for, JSON answered.
async fn tables(stack: &Stack) {
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io";
    let (code, body) = api_get(
        stack,
        "/apis/apps/v1/namespaces/default/deployments",
        &[("Accept", &format!("{table},application/json"))],
    )
    .await;
    assert_eq!(code, 200);
    let table_of_deployments: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(table_of_deployments["kind"], "Table");
    assert_eq!(table_of_deployments["columnDefinitions"][0]["name"], "Name");
    assert_eq!(table_of_deployments["rows"][0]["cells"][0], "ev");
    assert_eq!(
        table_of_deployments["rows"][0]["object"]["kind"],
        "PartialObjectMetadata"
    );
    let (_, body) = api_get(
        stack,
        "/api/v1/namespaces/default/events",
        &[("Accept", table)],
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
    let (code, body) = api_get(
        stack,
        "/api/v1/namespaces/default/pods",
        &[(
            "Accept",
            "application/vnd.kubernetes.protobuf,application/json",
        )],
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["items"],
        json!([])
    );
}

#[tokio::test]
async fn bearer_token_latency_and_watch_drops_after_events() {
    let config = StackConfig {
        token: Some("s3cret".into()),
        ..StackConfig::default()
    };
    let stack = Stack::start(config).await.unwrap();
    let client = the_token_is_required(&stack).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    create(&cms, &cm("t", json!({}))).await;
    injected_latency(&stack, &cms).await;
    watches_drop_after_events(&stack, &cms).await;
    stack.shutdown().await;
}

/// Requests without the token are refused; the kubeconfig carries it. Returns a client of
/// that kubeconfig.
async fn the_token_is_required(stack: &Stack) -> Client {
    let (code, body) = api_get(stack, "/api/v1/namespaces", &[]).await;
    assert_eq!(code, 401);
    assert!(body.contains("Unauthorized"));
    let bearer = [("Authorization", "Bearer s3cret")];
    assert_eq!(api_get(stack, "/api/v1/namespaces", &bearer).await.0, 200);

    let kubeconfig = kube::config::Kubeconfig::read_from(stack.kubeconfig_path()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

async fn injected_latency(stack: &Stack, cms: &Api<ConfigMap>) {
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
}

/// Watches close after N events; the single-object watch path works too.
async fn watches_drop_after_events(stack: &Stack, cms: &Api<ConfigMap>) {
    stack.faults().add(vec![FaultRule {
        drop_watches_after_events: Some(2),
        ..FaultRule::default()
    }]);
    let (code, body) = api_get(
        stack,
        "/api/v1/namespaces/default/configmaps/t?watch=true&timeoutSeconds=1",
        &[("Authorization", "Bearer s3cret")],
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
    create(cms, &cm("u", json!({}))).await;
    create(cms, &cm("v", json!({}))).await;
    while let Some(e) = tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        assert!(matches!(e, WatchEvent::Added(_)));
        n += 1;
    }
    assert_eq!(n, 2, "the watch closes after two events");
}
