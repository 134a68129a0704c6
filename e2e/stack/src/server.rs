//! The HTTP front: routing of Kubernetes REST paths, content negotiation, authentication,
//! fault injection and request accounting. Handlers delegate to `crud`, `watch`,
//! `discovery` and `table`.

use crate::convert;
use crate::crud::{DeleteOpts, ListOpts, Sub, WriteOpts};
use crate::discovery;
use crate::error::{ApiError, ApiResult};
use crate::faults::Faults;
use crate::openapi;
use crate::patch::PatchType;
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::Store;
use crate::table;
use crate::watch::{self, WatchParams};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, Uri};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// State every request handler shares.
pub struct Shared {
    pub store: Arc<Store>,
    pub faults: Arc<Faults>,
    pub token: Option<String>,
    pub bookmark_interval: Duration,
    pub watches: AtomicI64,
}

pub fn full(code: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).boxed_unsync());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(ct) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, ct);
    }
    resp
}

pub fn json_response(code: u16, v: &Value) -> Response<Body> {
    full(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut resp = json_response(e.code, &e.to_status());
    if let Some(secs) = e.details.retry_after
        && let Ok(v) = secs.to_string().parse()
    {
        resp.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    resp
}

/// A request's query parameters, `%`-decoded, as pairs in any collection (a map keeps the
/// last value of a repeated name).
pub fn query_pairs<C: FromIterator<(String, String)>>(uri: &Uri) -> C {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

struct Query(HashMap<String, String>);

impl Query {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("1" | "true" | "True"))
    }
}

/// A parsed resource path.
struct Target {
    rt: Arc<ResourceType>,
    version: String,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

/// Entry point for one request.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if let Some(token) = &shared.token {
        let ok = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| t == token);
        if !ok {
            return Ok(error_response(&ApiError::new(
                401,
                "Unauthorized",
                "Unauthorized",
            )));
        }
    }
    let path = req.uri().path().to_string();
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let reg = || shared.store.lock().registry.clone();
    let resp = match s.as_slice() {
        ["version"] => json_response(200, &discovery::version()),
        ["healthz" | "readyz" | "livez", ..] => full(200, "text/plain", "ok"),
        ["api"] => json_response(200, &discovery::core_versions()),
        ["openapi", "v3"] => json_response(200, &openapi::index(&reg())),
        ["openapi", "v3", "api", "v1"] => {
            discovery_or_404(openapi::group_version(&reg(), "", "v1"))
        }
        ["openapi", "v3", "apis", g, v] => discovery_or_404(openapi::group_version(&reg(), g, v)),
        ["api", "v1"] => discovery_or_404(discovery::resource_list(&reg(), "", "v1")),
        ["apis"] => json_response(200, &discovery::group_list(&reg())),
        ["apis", g] => discovery_or_404(discovery::group(&reg(), g)),
        ["apis", g, v] => discovery_or_404(discovery::resource_list(&reg(), g, v)),
        ["api", "v1", rest @ ..] => resource(shared, req, "", "v1", rest).await,
        ["apis", g, v, rest @ ..] => {
            let (g, v) = (g.to_string(), v.to_string());
            resource(shared, req, &g, &v, rest).await
        }
        _ => error_response(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
    };
    Ok(resp)
}

fn discovery_or_404(doc: Option<Value>) -> Response<Body> {
    match doc {
        Some(d) => json_response(200, &d),
        None => error_response(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
    }
}

fn parse_target(shared: &Shared, group: &str, version: &str, rest: &[&str]) -> ApiResult<Target> {
    let (ns, rest) = if rest.first() == Some(&"namespaces")
        && rest.len() >= 3
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"))
    {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    let plural = rest.first().ok_or_else(not_found)?;
    if rest.len() > 3 {
        return Err(not_found());
    }
    let rt = shared
        .store
        .lock()
        .registry
        .lookup(group, version, plural)
        .cloned()
        .ok_or_else(not_found)?;
    let name = rest.get(1).map(|s| s.to_string());
    let sub = rest.get(2).map(|s| s.to_string());
    if ns.is_some() && !rt.namespaced {
        return Err(not_found());
    }
    if ns.is_none() && rt.namespaced && name.is_some() {
        return Err(not_found());
    }
    match sub.as_deref() {
        None => {}
        Some("status") if rt.status => {}
        Some("scale") if rt.scale.is_some() => {}
        Some(_) => return Err(not_found()),
    }
    Ok(Target {
        rt,
        version: version.to_string(),
        ns,
        name,
        sub,
    })
}

fn verb_of(method: &Method, t: &Target, q: &Query) -> &'static str {
    match (method.as_str(), t.name.is_some()) {
        // The old single-object watch path (`.../NAME?watch=true`) is a watch by name.
        ("GET", true) if q.flag("watch") && t.sub.is_none() => "watch",
        ("GET", true) => "get",
        ("GET", false) if q.flag("watch") => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

async fn resource(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Response<Body> {
    let q = Query(query_pairs(req.uri()));
    let target = match parse_target(&shared, group, version, rest) {
        Ok(t) => t,
        Err(e) => {
            shared.faults.count(
                &req.method().as_str().to_lowercase(),
                rest.first().copied().unwrap_or_default(),
                e.code,
            );
            return error_response(&e);
        }
    };
    let verb = verb_of(req.method(), &target, &q);
    let plural = target.rt.plural.clone();
    let user_agent = req
        .headers()
        .get(hyper::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let decision = shared.faults.decide(verb, &plural, user_agent);
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    let result = if let Some(code) = decision.fail {
        let mut e = ApiError::new(
            code,
            reason_for(code),
            format!("injected fault: {verb} {plural} answered {code}"),
        );
        if code == 429 {
            e.details.retry_after = Some(1);
        }
        Err(e)
    } else if decision.conflict {
        Err(ApiError::conflict(
            &target.rt.group,
            &plural,
            target.name.as_deref().unwrap_or_default(),
            "the object has been modified; please apply your changes to the latest version and try again",
        ))
    } else {
        dispatch(&shared, req, target, &q, verb).await
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    let code = resp.status().as_u16();
    shared.faults.count(verb, &plural, code);
    tracing::debug!(verb, resource = %plural, code, "request");
    resp
}

fn reason_for(code: u16) -> &'static str {
    match code {
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        409 => "Conflict",
        _ => "InternalError",
    }
}

async fn read_body(req: Request<Incoming>) -> ApiResult<(String, Bytes)> {
    let ct = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let bytes = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading request body: {e}")))?
        .to_bytes();
    Ok((ct, bytes))
}

fn decode(ct: &str, bytes: &[u8]) -> ApiResult<Value> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    if ct.contains("protobuf") {
        return crate::protobuf::decode(bytes).map_err(ApiError::unsupported_media);
    }
    // JSON is YAML, but JSON first keeps error messages about JSON.
    serde_json::from_slice(bytes).or_else(|json_err| {
        if ct.contains("yaml") {
            serde_norway::from_slice(bytes)
                .map_err(|e| ApiError::bad_request(format!("invalid YAML body: {e}")))
        } else {
            Err(ApiError::bad_request(format!(
                "invalid JSON body: {json_err}"
            )))
        }
    })
}

fn default_manager(req: &Request<Incoming>, q: &Query) -> String {
    if let Some(m) = q.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.to_string();
    }
    let ua = req
        .headers()
        .get(hyper::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    ua.split('/').next().unwrap_or("unknown").to_string()
}

/// The representation the client asked for in `Accept`.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    Full,
    /// meta.k8s.io/v1 Table, with the `includeObject` parameter.
    Table(String),
    /// meta.k8s.io/v1 PartialObjectMetadata (kube-rs `metadata_watcher`, `get_metadata`).
    Metadata,
}

fn format_of(req: &Request<Incoming>, q: &Query) -> Format {
    let accept = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept.contains("as=Table") {
        Format::Table(q.get("includeObject").unwrap_or("Metadata").to_string())
    } else if accept.contains("as=PartialObjectMetadata") {
        Format::Metadata
    } else {
        Format::Full
    }
}

fn list_opts(q: &Query, rt: &ResourceType) -> ApiResult<ListOpts> {
    Ok(ListOpts {
        labels: LabelSelector::parse(q.get("labelSelector").unwrap_or_default())
            .map_err(ApiError::bad_request)?,
        fields: FieldSelector::parse(&convert::inbound_field_selector(
            rt,
            q.get("fieldSelector").unwrap_or_default(),
        ))
        .map_err(ApiError::bad_request)?,
        limit: q.get("limit").and_then(|l| l.parse().ok()),
        continue_token: q.get("continue").map(String::from),
    })
}

/// The object as seen through the requested version.
fn versioned(t: &Target, obj: &Value) -> Value {
    let av = t.rt.api_version(&t.version);
    let mut o = convert::outbound(&t.rt, obj).unwrap_or_else(|| obj.clone());
    if o.get("apiVersion").and_then(Value::as_str) != Some(av.as_str()) {
        o["apiVersion"] = json!(av);
    }
    o
}

/// Serves one request on a resource by its verb.
async fn dispatch(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    t: Target,
    q: &Query,
    verb: &str,
) -> ApiResult<Response<Body>> {
    let store = &shared.store;
    match verb {
        "get" => get(store, &t, format_of(&req, q)),
        "list" => list(store, &t, q, format_of(&req, q)),
        "watch" => watch(shared, &t, q, format_of(&req, q)),
        "create" => create(store, req, &t, q).await,
        "update" => update(store, req, &t, q).await,
        "patch" => patch(store, req, &t, q).await,
        "delete" => delete(store, &t, &delete_request(req, q).await?),
        "deletecollection" => delete_collection(store, &t, q, &delete_request(req, q).await?),
        _ => Err(ApiError::method_not_allowed("method not allowed")),
    }
}

impl Target {
    /// The namespace, empty for a cluster-scoped resource.
    fn namespace(&self) -> &str {
        self.ns.as_deref().unwrap_or_default()
    }

    /// The object's name, empty on a collection.
    fn object_name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    fn subresource(&self) -> Sub {
        match self.sub.as_deref() {
            Some("status") => Sub::Status,
            Some("scale") => Sub::Scale,
            _ => Sub::Main,
        }
    }
}

/// The options of a write: dry run, field validation, the field manager, `force`.
fn write_opts(req: &Request<Incoming>, q: &Query) -> WriteOpts {
    WriteOpts {
        dry_run: q.get("dryRun") == Some("All"),
        strict: q.get("fieldValidation") == Some("Strict"),
        manager: default_manager(req, q),
        force: q.flag("force"),
    }
}

/// A create's or an update's options and body (decoded, in the stored shape).
async fn write_request(
    req: Request<Incoming>,
    t: &Target,
    q: &Query,
) -> ApiResult<(WriteOpts, Value)> {
    let opts = write_opts(&req, q);
    let (ct, bytes) = read_body(req).await?;
    let body = convert::inbound(&t.rt, decode(&ct, &bytes)?);
    Ok((opts, body))
}

fn get(store: &Store, t: &Target, format: Format) -> ApiResult<Response<Body>> {
    let (ns, name) = (t.namespace(), t.object_name());
    if t.subresource() == Sub::Scale {
        return Ok(json_response(200, &store.get_scale(&t.rt, ns, name)?));
    }
    let obj = store.get(&t.rt, ns, name)?;
    match format {
        Format::Table(include) => {
            let meta = json!({"resourceVersion": obj.pointer("/metadata/resourceVersion")});
            let table = table::table(&t.rt, &t.version, &[obj], meta, &include);
            Ok(json_response(200, &table))
        }
        Format::Metadata => Ok(json_response(200, &table::partial_metadata(&obj))),
        Format::Full => Ok(json_response(200, &versioned(t, &obj))),
    }
}

fn list(store: &Store, t: &Target, q: &Query, format: Format) -> ApiResult<Response<Body>> {
    let lo = list_opts(q, &t.rt)?;
    let res = store.list(&t.rt, t.ns.as_deref(), &lo)?;
    let mut meta = json!({"resourceVersion": res.rv.to_string()});
    if let Some(c) = &res.continue_token {
        meta["continue"] = json!(c);
        meta["remainingItemCount"] = json!(res.remaining.unwrap_or(0));
    }
    let list = match format {
        Format::Table(include) => table::table(&t.rt, &t.version, &res.items, meta, &include),
        Format::Metadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "items": res.items.iter().map(|o| table::partial_metadata(o)).collect::<Vec<_>>(),
        }),
        Format::Full => json!({
            "kind": format!("{}List", t.rt.kind),
            "apiVersion": t.rt.api_version(&t.version),
            "metadata": meta,
            "items": res.items.iter().map(|o| versioned(t, o)).collect::<Vec<_>>(),
        }),
    };
    Ok(json_response(200, &list))
}

fn watch(shared: &Arc<Shared>, t: &Target, q: &Query, format: Format) -> ApiResult<Response<Body>> {
    let mut lo = list_opts(q, &t.rt)?;
    if let Some(name) = &t.name {
        lo.fields = FieldSelector::parse(&format!("metadata.name={name}"))
            .map_err(ApiError::bad_request)?;
    }
    let send_initial = q.flag("sendInitialEvents");
    if send_initial && q.get("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::new(
            422,
            "Invalid",
            "sendInitialEvents requires resourceVersionMatch=NotOlderThan",
        ));
    }
    let params = WatchParams {
        resource_version: q.get("resourceVersion").map(String::from),
        bookmarks: q.flag("allowWatchBookmarks"),
        timeout: q
            .get("timeoutSeconds")
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs),
        send_initial_events: send_initial,
        labels: lo.labels,
        fields: lo.fields,
        format,
    };
    let body = watch::start(
        shared.clone(),
        t.rt.clone(),
        t.version.clone(),
        t.ns.clone(),
        params,
    );
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

async fn create(
    store: &Store,
    req: Request<Incoming>,
    t: &Target,
    q: &Query,
) -> ApiResult<Response<Body>> {
    if t.name.is_some() {
        return Err(ApiError::method_not_allowed(
            "POST is not allowed on a named object",
        ));
    }
    let (opts, body) = write_request(req, t, q).await?;
    let created = store.create(&t.rt, &t.version, t.namespace(), body, &opts)?;
    Ok(json_response(201, &versioned(t, &created)))
}

async fn update(
    store: &Store,
    req: Request<Incoming>,
    t: &Target,
    q: &Query,
) -> ApiResult<Response<Body>> {
    let (opts, body) = write_request(req, t, q).await?;
    let sub = t.subresource();
    let updated = store.update(
        &t.rt,
        &t.version,
        t.namespace(),
        t.object_name(),
        body,
        sub,
        &opts,
    )?;
    Ok(json_response(200, &respond_sub(t, sub, &updated)))
}

async fn patch(
    store: &Store,
    req: Request<Incoming>,
    t: &Target,
    q: &Query,
) -> ApiResult<Response<Body>> {
    let opts = write_opts(&req, q);
    let (ct, bytes) = read_body(req).await?;
    let kind = PatchType::from_content_type(&ct).ok_or_else(|| {
        ApiError::unsupported_media(format!(
            "the body of the request was in an unknown format - {ct}"
        ))
    })?;
    let body = if kind == PatchType::Apply {
        serde_norway::from_slice::<Value>(&bytes)
            .or_else(|_| serde_json::from_slice(&bytes))
            .map_err(|e| ApiError::bad_request(format!("invalid apply body: {e}")))?
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid patch body: {e}")))?
    };
    let body = match kind {
        PatchType::Json => convert::inbound_json_patch(&t.rt, body),
        _ => convert::inbound(&t.rt, body),
    };
    let sub = t.subresource();
    let (ns, name) = (t.namespace(), t.object_name());
    let (obj, created) = store.patch(&t.rt, &t.version, ns, name, kind, body, sub, &opts)?;
    Ok(json_response(
        if created { 201 } else { 200 },
        &respond_sub(t, sub, &obj),
    ))
}

fn delete(store: &Store, t: &Target, dopts: &DeleteOpts) -> ApiResult<Response<Body>> {
    let (obj, gone) = store.delete(&t.rt, t.namespace(), t.object_name(), dopts)?;
    Ok(json_response(
        if gone { 200 } else { 202 },
        &versioned(t, &obj),
    ))
}

fn delete_collection(
    store: &Store,
    t: &Target,
    q: &Query,
    dopts: &DeleteOpts,
) -> ApiResult<Response<Body>> {
    let lo = list_opts(q, &t.rt)?;
    let deleted = store.delete_collection(&t.rt, t.ns.as_deref(), &lo, dopts)?;
    let rv = store.lock().rv;
    let items: Vec<Value> = deleted.iter().map(|o| versioned(t, o)).collect();
    Ok(json_response(
        200,
        &json!({
            "kind": format!("{}List", t.rt.kind),
            "apiVersion": t.rt.api_version(&t.version),
            "metadata": {"resourceVersion": rv.to_string()},
            "items": items,
        }),
    ))
}

fn respond_sub(t: &Target, sub: Sub, obj: &Value) -> Value {
    match sub {
        Sub::Scale => crate::scale::of(&t.rt, obj),
        _ => versioned(t, obj),
    }
}

/// A delete's options, from its body (DeleteOptions) or else its query.
async fn delete_request(req: Request<Incoming>, q: &Query) -> ApiResult<DeleteOpts> {
    let (ct, bytes) = read_body(req).await?;
    Ok(delete_opts(q, &decode(&ct, &bytes)?))
}

fn delete_opts(q: &Query, body: &Value) -> DeleteOpts {
    let from_body = |k: &str| body.get(k).and_then(Value::as_str).map(String::from);
    let mut propagation =
        from_body("propagationPolicy").or_else(|| q.get("propagationPolicy").map(String::from));
    let orphan = body
        .get("orphanDependents")
        .and_then(Value::as_bool)
        .or_else(|| q.get("orphanDependents").map(|v| v == "true"));
    if propagation.is_none() && orphan == Some(true) {
        propagation = Some("Orphan".into());
    }
    let dry_run = q.get("dryRun") == Some("All")
        || body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    DeleteOpts {
        propagation,
        precondition_uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from),
        precondition_rv: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        dry_run,
    }
}
