//! Create, read, update, patch, apply and delete with the API server's semantics, shared
//! by the HTTP handlers, the workload simulator and the garbage collector.

use crate::apply::{self, ApplyRequest};
use crate::crd;
use crate::defaults;
use crate::error::{ApiError, ApiResult, Cause};
use crate::fields::{self, Shape};
use crate::metadata;
use crate::patch::{self, PatchType};
use crate::registry::ResourceType;
use crate::scale;
use crate::schema;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Inner, Store};
use serde_json::{Value, json};
use std::sync::Arc;

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Main,
    Status,
    Scale,
}

impl Sub {
    fn field_manager_name(self) -> &'static str {
        match self {
            Sub::Main => "",
            Sub::Status => "status",
            Sub::Scale => "scale",
        }
    }
}

/// Options common to writes.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    pub dry_run: bool,
    /// `fieldValidation=Strict`: unknown fields of custom resources are an error, not pruned.
    pub strict: bool,
    pub manager: String,
    pub force: bool,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ListOpts {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

pub struct ListResult {
    pub items: Vec<Arc<Value>>,
    pub rv: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

pub fn now() -> String {
    crate::clock::timestamp()
}

fn new_uid() -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        fastrand::u32(..),
        fastrand::u16(..),
        fastrand::u16(..0x1000),
        (fastrand::u16(..) & 0x3fff) | 0x8000,
        fastrand::u64(..1 << 48)
    )
}

fn shape<'a>(rt: &'a ResourceType, version: &str) -> Shape<'a> {
    Shape {
        builtin: rt.builtin,
        schema: rt.version(version).and_then(|v| v.schema.as_ref()),
        status_subresource: rt.status,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn meta_str<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The object with everything generation ignores removed.
fn generation_view(obj: &Value, has_status: bool) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        if has_status {
            m.remove("status");
        }
    }
    v
}

/// The stored object, or the API server's 404.
fn stored(inner: &Inner, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<Arc<Value>> {
    inner
        .get(&rt.key(), ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
}

impl Store {
    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<Arc<Value>> {
        stored(&self.lock(), rt, ns, name)
    }

    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        opts: &ListOpts,
    ) -> ApiResult<ListResult> {
        let inner = self.lock();
        let key = rt.key();
        let start: Option<(String, String)> = match &opts.continue_token {
            Some(t) if !t.is_empty() => Some(decode_continue(t)?),
            _ => None,
        };
        let mut items: Vec<Arc<Value>> = Vec::new();
        let mut next = None;
        let mut remaining = 0usize;
        let matches = |o: &Value| opts.labels.matches(o) && opts.fields.matches(o);
        let candidates: Box<dyn Iterator<Item = &Arc<Value>>> = match opts.fields.name() {
            // kubectl wait/delete watch and list by name: answer with a lookup.
            Some(name) => match ns {
                Some(ns) => Box::new(inner.get(&key, ns, name).into_iter()),
                None => Box::new(
                    inner
                        .iter_ns(&key, None)
                        .filter(move |o| meta_str(o, "name") == Some(name)),
                ),
            },
            None => inner.iter_ns(&key, ns),
        };
        for o in candidates {
            if let Some(s) = &start {
                let (ons, oname) = crate::store::ns_name(o);
                if (ons, oname) <= *s {
                    continue;
                }
            }
            if !matches(o) {
                continue;
            }
            if let Some(limit) = opts.limit.filter(|l| *l > 0)
                && items.len() >= limit
            {
                if next.is_none()
                    && let Some(last) = items.last()
                {
                    next = Some(encode_continue(last));
                }
                remaining += 1;
                continue;
            }
            items.push(o.clone());
        }
        Ok(ListResult {
            items,
            rv: inner.rv,
            remaining: next.as_ref().map(|_| remaining),
            continue_token: next,
        })
    }

    pub fn create(
        &self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: &str,
        body: Value,
        opts: &WriteOpts,
    ) -> ApiResult<Value> {
        let mut inner = self.lock();
        let obj = prepare_create(&mut inner, rt, version, ns, body, opts.strict)?;
        let mut obj = obj;
        fields::record_update(
            None,
            &mut obj,
            &opts.manager,
            "",
            &rt.api_version(version),
            shape(rt, version),
            &now(),
        );
        commit_create(&mut inner, rt, obj, opts.dry_run)
    }

    /// PUT of the object or its status subresource.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: &str,
        name: &str,
        body: Value,
        sub: Sub,
        opts: &WriteOpts,
    ) -> ApiResult<Value> {
        let mut inner = self.lock();
        let old = stored(&inner, rt, ns, name)?;
        if let Some(body_name) = meta_str(&body, "name")
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let new = match sub {
            Sub::Scale => scale::to_object(rt, &old, &body)?,
            _ => body,
        };
        commit_update(&mut inner, rt, version, &old, new, sub, opts, true)
    }

    /// PATCH, including server-side apply (which may create). Returns (object, created).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: &str,
        name: &str,
        kind: PatchType,
        body: Value,
        sub: Sub,
        opts: &WriteOpts,
    ) -> ApiResult<(Value, bool)> {
        if kind == PatchType::Strategic && !rt.builtin {
            return Err(ApiError::unsupported_media(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        let mut inner = self.lock();
        let old = inner.get(&rt.key(), ns, name).cloned();
        if kind == PatchType::Apply {
            return apply_patch(&mut inner, rt, version, ns, name, old, body, sub, opts);
        }
        let old = old.ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        let new = match sub {
            Sub::Scale => {
                let scale = patch::apply_patch(&scale::of(rt, &old), kind, &body)?;
                scale::to_object(rt, &old, &scale)?
            }
            _ => patch::apply_patch(&old, kind, &body)?,
        };
        commit_update(&mut inner, rt, version, &old, new, sub, opts, true).map(|v| (v, false))
    }

    /// DELETE of one object. Returns the object and whether it is gone (false: finalizers
    /// or dependents keep it, with a deletionTimestamp).
    pub fn delete(
        &self,
        rt: &Arc<ResourceType>,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> ApiResult<(Value, bool)> {
        let result = {
            let mut inner = self.lock();
            delete_locked(&mut inner, rt, ns, name, opts)
        };
        self.gc_wake.notify_one();
        result
    }

    pub fn delete_collection(
        &self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        list: &ListOpts,
        opts: &DeleteOpts,
    ) -> ApiResult<Vec<Value>> {
        let names: Vec<(String, String)> = {
            let inner = self.lock();
            inner
                .iter_ns(&rt.key(), ns)
                .filter(|o| list.labels.matches(o) && list.fields.matches(o))
                .map(|o| crate::store::ns_name(o))
                .collect()
        };
        let mut out = Vec::new();
        {
            let mut inner = self.lock();
            for (ns, name) in names {
                match delete_locked(&mut inner, rt, &ns, &name, opts) {
                    Ok((v, _)) => out.push(v),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.gc_wake.notify_one();
        Ok(out)
    }

    /// The autoscaling/v1 Scale of an object.
    pub fn get_scale(&self, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<Value> {
        let obj = self.get(rt, ns, name)?;
        Ok(scale::of(rt, &obj))
    }

    /// Writes the status of an object on behalf of a built-in controller (the simulator),
    /// through the status subresource semantics.
    pub fn write_status(
        &self,
        rt: &Arc<ResourceType>,
        ns: &str,
        name: &str,
        status: Value,
        manager: &str,
    ) -> ApiResult<Value> {
        let mut inner = self.lock();
        let old = stored(&inner, rt, ns, name)?;
        let mut body = (*old).clone();
        body["status"] = status;
        let opts = WriteOpts {
            manager: manager.to_string(),
            ..Default::default()
        };
        let version = rt.preferred_version().to_string();
        commit_update(
            &mut inner,
            rt,
            &version,
            &old,
            body,
            Sub::Status,
            &opts,
            true,
        )
    }
}

fn encode_continue(last: &Value) -> String {
    let (ns, name) = crate::store::ns_name(last);
    let raw = format!("{ns}/{name}");
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> ApiResult<(String, String)> {
    let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let raw = String::from_utf8(bytes.ok_or_else(bad)?).map_err(|_| bad())?;
    let (ns, name) = raw.split_once('/').ok_or_else(bad)?;
    Ok((ns.to_string(), name.to_string()))
}

/// Validates and fills a new object; does not store it.
fn prepare_create(
    inner: &mut Inner,
    rt: &Arc<ResourceType>,
    version: &str,
    ns: &str,
    mut body: Value,
    strict: bool,
) -> ApiResult<Value> {
    check_creatable(rt, &body)?;
    set_type_and_metadata(rt, version, &mut body);
    let name = new_object_name(rt, &body)?;
    body["metadata"]["name"] = json!(name);
    if rt.namespaced {
        place_in_namespace(inner, ns, &mut body)?;
    } else if let Some(m) = body["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    if inner.get(&rt.key(), ns_of(rt, ns), &name).is_some() {
        return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
    }
    set_server_metadata(rt, &mut body);
    if rt.status
        && let Some(m) = body.as_object_mut()
    {
        m.remove("status");
    }
    if rt.plural == "namespaces" {
        body["status"] = json!({"phase": "Active"});
    }
    normalize(inner, rt, version, &mut body, &name, strict)?;
    Ok(body)
}

/// What a create refuses before looking at the object: kinds the stack does not emulate,
/// a body that is not an object, or one of another kind.
fn check_creatable(rt: &ResourceType, body: &Value) -> ApiResult<()> {
    if rt.always_empty {
        return Err(ApiError::method_not_allowed(format!(
            "{} are not emulated: the workload simulator runs none",
            rt.plural
        )));
    }
    check_object(body)?;
    if let Some(k) = body.get("kind").and_then(Value::as_str)
        && k != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the object ({k}) does not match the resource ({})",
            rt.plural
        )));
    }
    Ok(())
}

fn check_object(body: &Value) -> ApiResult<()> {
    match body.is_object() {
        true => Ok(()),
        false => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
    }
}

/// The resource's `kind` and `apiVersion` in the requested version, and a `metadata` map.
fn set_type_and_metadata(rt: &ResourceType, version: &str, obj: &mut Value) {
    obj["kind"] = json!(rt.kind);
    obj["apiVersion"] = json!(rt.api_version(version));
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
}

/// `metadata.name`, or `generateName` with a random suffix; a valid RFC 1123 subdomain.
fn new_object_name(rt: &ResourceType, body: &Value) -> ApiResult<String> {
    let name = match (meta_str(body, "name"), meta_str(body, "generateName")) {
        (Some(n), _) => n.to_string(),
        (None, Some(prefix)) => {
            let suffix: String = (0..5)
                .map(|_| fastrand::alphanumeric().to_ascii_lowercase())
                .collect();
            format!("{prefix}{suffix}")
        }
        (None, None) => {
            return Err(invalid(
                rt,
                "",
                vec![Cause {
                    reason: "FieldValueRequired",
                    field: "metadata.name".into(),
                    message: "Required value: name or generateName is required".into(),
                }],
            ));
        }
    };
    if !valid_name(&name) {
        return Err(invalid(
            rt,
            &name,
            vec![Cause {
                reason: "FieldValueInvalid",
                field: "metadata.name".into(),
                message: format!(
                    "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case \
                 alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            }],
        ));
    }
    Ok(name)
}

/// Sets the namespace of the request on a namespaced object, which must agree with the
/// body's and exist, not terminating.
fn place_in_namespace(inner: &Inner, ns: &str, body: &mut Value) -> ApiResult<()> {
    match meta_str(body, "namespace") {
        Some(n) if n != ns => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        _ => body["metadata"]["namespace"] = json!(ns),
    }
    match inner.get("namespaces", "", ns) {
        None => Err(ApiError::not_found("", "namespaces", ns)),
        Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// The metadata the server owns on a new object: a fresh uid and creation time, generation
/// 1 where the kind has one, none of a client's deletion, version or ownership fields.
fn set_server_metadata(rt: &ResourceType, body: &mut Value) {
    let Some(m) = body["metadata"].as_object_mut() else {
        return;
    };
    m.insert("uid".into(), json!(new_uid()));
    m.insert("creationTimestamp".into(), json!(now()));
    m.remove("deletionTimestamp");
    m.remove("deletionGracePeriodSeconds");
    m.remove("resourceVersion");
    m.remove("managedFields");
    if rt.generation {
        m.insert("generation".into(), json!(1));
    } else {
        m.remove("generation");
    }
}

fn ns_of<'a>(rt: &ResourceType, ns: &'a str) -> &'a str {
    if rt.namespaced { ns } else { "" }
}

fn invalid(rt: &ResourceType, name: &str, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid(&rt.kind, &rt.group, name, causes)
}

/// Defaulting, pruning and validation (built-in defaults or the CRD schema).
fn normalize(
    inner: &Inner,
    rt: &ResourceType,
    version: &str,
    obj: &mut Value,
    name: &str,
    strict: bool,
) -> ApiResult<()> {
    // ObjectMeta's collections are omitempty: an emptied list or map reads as absent, which
    // JSON patch `test` operations (e.g. kube-runtime's finalizer helper) depend on.
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["labels", "annotations", "finalizers", "ownerReferences"] {
            let empty = match meta.get(k) {
                Some(Value::Null) => true,
                Some(Value::Array(a)) => a.is_empty(),
                Some(Value::Object(m)) => m.is_empty(),
                _ => false,
            };
            if empty {
                meta.remove(k);
            }
        }
    }
    let causes = metadata::validate(obj);
    if !causes.is_empty() {
        return Err(invalid(rt, name, causes));
    }
    if rt.builtin {
        defaults::apply(&rt.plural, obj, inner.rv);
        if rt.plural == "customresourcedefinitions" {
            crd::validate(obj, name).map_err(|c| invalid(rt, name, vec![c]))?;
        }
        return Ok(());
    }
    let Some(schema) = rt.version(version).and_then(|v| v.schema.as_ref()) else {
        return Ok(());
    };
    let pruned = schema::prune_and_default(obj, schema);
    if strict && !pruned.is_empty() {
        let fields: Vec<String> = pruned
            .iter()
            .map(|p| format!("unknown field \"{p}\""))
            .collect();
        return Err(ApiError::bad_request(format!(
            "{} in version \"{version}\" cannot be handled as a {}: strict decoding error: {}",
            rt.kind,
            rt.kind,
            fields.join(", ")
        )));
    }
    let causes = schema::validate(obj, schema);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(rt, name, causes))
    }
}

fn commit_create(
    inner: &mut Inner,
    rt: &Arc<ResourceType>,
    mut obj: Value,
    dry_run: bool,
) -> ApiResult<Value> {
    if rt.plural == "customresourcedefinitions" {
        crd::set_status(&mut obj);
    }
    if dry_run {
        return Ok(obj);
    }
    let key = rt.key();
    if rt.plural == "customresourcedefinitions" {
        crd::register(inner, &obj);
    }
    let stored = inner.put(&key, obj);
    Ok((*stored).clone())
}

/// The shared update path: subresource rules, optimistic concurrency, validation,
/// generation, field ownership, no-op detection, finalization.
#[allow(clippy::too_many_arguments)]
fn commit_update(
    inner: &mut Inner,
    rt: &Arc<ResourceType>,
    version: &str,
    old: &Arc<Value>,
    body: Value,
    sub: Sub,
    opts: &WriteOpts,
    track_fields: bool,
) -> ApiResult<Value> {
    check_object(&body)?;
    let name = meta_str(old, "name").unwrap_or_default().to_string();
    check_resource_version(rt, old, &body, &name)?;
    let mut new = written_part(rt, old, body, sub, track_fields);
    set_type_and_metadata(rt, version, &mut new);
    // Server-owned metadata always comes from the stored object.
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "resourceVersion",
    ] {
        copy_field(&mut new["metadata"], &old["metadata"], k);
    }
    check_no_finalizer_added_while_deleting(rt, old, &new, &name)?;
    normalize(inner, rt, version, &mut new, &name, opts.strict)?;
    if rt.plural == "customresourcedefinitions" {
        crd::set_status(&mut new);
        keep_crd_conditions(old, &mut new);
    }
    if rt.generation && generation_view(old, rt.status) != generation_view(&new, rt.status) {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        new["metadata"]["generation"] = json!(g + 1);
    }
    if track_fields {
        fields::record_update(
            Some(old),
            &mut new,
            &opts.manager,
            sub.field_manager_name(),
            &rt.api_version(version),
            shape(rt, version),
            &now(),
        );
    }
    if new == **old || opts.dry_run {
        return Ok(new);
    }
    Ok(store_update(inner, rt, old, new, &name))
}

/// Optimistic concurrency: a `resourceVersion` in the body must be the stored one.
fn check_resource_version(
    rt: &ResourceType,
    old: &Value,
    body: &Value,
    name: &str,
) -> ApiResult<()> {
    match meta_str(body, "resourceVersion") {
        Some(rv) if Some(rv) != meta_str(old, "resourceVersion") => Err(ApiError::conflict(
            &rt.group,
            &rt.plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )),
        _ => Ok(()),
    }
}

/// The object a write to `sub` makes: a status write changes only `status` (and, from an
/// apply, the ownership it computed); with a status subresource, a write to the main
/// resource keeps the stored `status`.
fn written_part(
    rt: &ResourceType,
    old: &Value,
    body: Value,
    sub: Sub,
    track_fields: bool,
) -> Value {
    match sub {
        Sub::Status => {
            let mut n = old.clone();
            copy_field(&mut n, &body, "status");
            // An apply computed the new ownership itself.
            if !track_fields && let Some(mf) = body.pointer("/metadata/managedFields") {
                n["metadata"]["managedFields"] = mf.clone();
            }
            n
        }
        Sub::Main | Sub::Scale => {
            let mut n = body;
            if rt.status {
                copy_field(&mut n, old, "status");
            }
            n
        }
    }
}

/// Sets `to[key]` to `from[key]`, or removes it from `to` when `from` has none.
fn copy_field(to: &mut Value, from: &Value, key: &str) {
    match from.get(key) {
        Some(v) => to[key] = v.clone(),
        None => {
            if let Some(m) = to.as_object_mut() {
                m.remove(key);
            }
        }
    }
}

/// No finalizer can be added to an object being deleted.
fn check_no_finalizer_added_while_deleting(
    rt: &ResourceType,
    old: &Value,
    new: &Value,
    name: &str,
) -> ApiResult<()> {
    if old.pointer("/metadata/deletionTimestamp").is_none() {
        return Ok(());
    }
    let before = finalizers(old);
    match finalizers(new).into_iter().find(|f| !before.contains(f)) {
        None => Ok(()),
        Some(added) => Err(invalid(
            rt,
            name,
            vec![Cause {
                reason: "FieldValueForbidden",
                field: "metadata.finalizers".into(),
                message: format!(
                    "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [{added:?}]"
                ),
            }],
        )),
    }
}

/// Keeps a CRD's condition transition times stable when its accepted names did not change.
fn keep_crd_conditions(old: &Value, new: &mut Value) {
    if let Some(old_status) = old.get("status")
        && old_status.get("conditions").is_some()
        && old_status["acceptedNames"] == new["status"]["acceptedNames"]
    {
        new["status"]["conditions"] = old_status["conditions"].clone();
    }
}

/// Stores a changed object: an object being deleted whose last finalizer went is removed
/// for good (namespaces wait for the garbage collector to empty them).
fn store_update(
    inner: &mut Inner,
    rt: &Arc<ResourceType>,
    old: &Value,
    new: Value,
    name: &str,
) -> Value {
    let ns = meta_str(old, "namespace").unwrap_or_default().to_string();
    let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
    let owners_changed =
        old.pointer("/metadata/ownerReferences") != new.pointer("/metadata/ownerReferences");
    if deleting && finalizers(&new).is_empty() && rt.plural != "namespaces" {
        let gone = finalize(inner, rt, &ns, name);
        return gone.map(|g| (*g).clone()).unwrap_or(new);
    }
    if rt.plural == "customresourcedefinitions" {
        crd::register(inner, &new);
    }
    let stored = inner.put(&rt.key(), new);
    if deleting || owners_changed {
        inner.wants_gc = true;
    }
    (*stored).clone()
}

/// Removes an object for good; for a CRD also its custom resources and served type.
pub(crate) fn finalize(
    inner: &mut Inner,
    rt: &ResourceType,
    ns: &str,
    name: &str,
) -> Option<Arc<Value>> {
    if rt.plural == "customresourcedefinitions"
        && let Some(crd) = inner.get(&rt.key(), ns, name).cloned()
    {
        crd::unregister(inner, &crd);
    }
    inner.wants_gc = true;
    inner.remove(&rt.key(), ns, name)
}

/// A delete's precondition on `metadata.<key>` (`what` names it as the API server does):
/// when `wanted`, the object's must be it, else 409.
fn precondition(
    rt: &ResourceType,
    name: &str,
    obj: &Value,
    key: &str,
    what: &str,
    wanted: Option<&str>,
) -> ApiResult<()> {
    let actual = meta_str(obj, key);
    match wanted {
        Some(wanted) if Some(wanted) != actual => Err(ApiError::conflict(
            &rt.group,
            &rt.plural,
            name,
            &format!(
                "Precondition failed: {what} in precondition: {wanted}, {what} in object meta: {}",
                actual.unwrap_or_default()
            ),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn delete_locked(
    inner: &mut Inner,
    rt: &Arc<ResourceType>,
    ns: &str,
    name: &str,
    opts: &DeleteOpts,
) -> ApiResult<(Value, bool)> {
    let ns = ns_of(rt, ns);
    let old = stored(inner, rt, ns, name)?;
    precondition(
        rt,
        name,
        &old,
        "uid",
        "UID",
        opts.precondition_uid.as_deref(),
    )?;
    precondition(
        rt,
        name,
        &old,
        "resourceVersion",
        "ResourceVersion",
        opts.precondition_rv.as_deref(),
    )?;
    if old.pointer("/metadata/deletionTimestamp").is_some() {
        return Ok(((*old).clone(), false));
    }
    let mut fins = finalizers(&old);
    match opts.propagation.as_deref() {
        Some("Foreground") => fins.push("foregroundDeletion".into()),
        Some("Orphan") => fins.push("orphan".into()),
        _ => {}
    }
    if opts.dry_run {
        return Ok(((*old).clone(), fins.is_empty()));
    }
    if fins.is_empty() && rt.plural != "namespaces" {
        let gone = finalize(inner, rt, ns, name).unwrap_or(old);
        return Ok(((*gone).clone(), true));
    }
    let mut new = (*old).clone();
    new["metadata"]["deletionTimestamp"] = json!(now());
    new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    if !fins.is_empty() {
        new["metadata"]["finalizers"] = json!(fins);
    }
    if rt.plural == "namespaces" {
        new["status"]["phase"] = json!("Terminating");
    }
    inner.wants_gc = true;
    let stored = inner.put(&rt.key(), new);
    Ok(((*stored).clone(), false))
}

/// Server-side apply builds a typed object from the applied configuration: a field the
/// custom resource's schema does not declare (and does not preserve) is an error, not pruned
/// as in other writes, with the API server's status and message.
fn undeclared_fields(
    rt: &ResourceType,
    version: &str,
    name: &str,
    api_version: &str,
    applied: &Value,
) -> ApiResult<()> {
    if rt.builtin {
        return Ok(());
    }
    let Some(schema) = rt.version(version).and_then(|v| v.schema.as_ref()) else {
        return Ok(());
    };
    let mut probe = applied.clone();
    let pruned = schema::prune_and_default(&mut probe, schema);
    match pruned.first() {
        None => Ok(()),
        Some(field) => Err(ApiError::new(
            500,
            "InternalError",
            format!(
                "failed to create typed patch object (/{name}; {api_version}, Kind={}): .{field}: field not declared in schema",
                rt.kind
            ),
        )),
    }
}

#[allow(clippy::too_many_arguments)]
fn apply_patch(
    inner: &mut Inner,
    rt: &Arc<ResourceType>,
    version: &str,
    ns: &str,
    name: &str,
    old: Option<Arc<Value>>,
    body: Value,
    sub: Sub,
    opts: &WriteOpts,
) -> ApiResult<(Value, bool)> {
    let applied = applied_configuration(rt, name, body, sub, opts)?;
    let api_version = rt.api_version(version);
    undeclared_fields(rt, version, name, &api_version, &applied)?;
    let time = now();
    let req = ApplyRequest {
        manager: &opts.manager,
        force: opts.force,
        api_version: &api_version,
        subresource: sub.field_manager_name(),
        shape: shape(rt, version),
        now: &time,
    };
    let merged = apply::apply(old.as_deref(), &applied, &req)
        .map_err(|conflicts| apply_conflict(rt, name, &conflicts))?;
    match old {
        None => {
            if sub != Sub::Main {
                return Err(ApiError::not_found(&rt.group, &rt.plural, name));
            }
            let managed = merged.pointer("/metadata/managedFields").cloned();
            let mut obj = prepare_create(inner, rt, version, ns, merged, opts.strict)?;
            if let Some(m) = managed {
                obj["metadata"]["managedFields"] = m;
            }
            commit_create(inner, rt, obj, opts.dry_run).map(|v| (v, true))
        }
        Some(old) => {
            commit_update(inner, rt, version, &old, merged, sub, opts, false).map(|v| (v, false))
        }
    }
}

/// The applied configuration, named as on the URL, once the request is one an apply can
/// serve: a field manager, not the scale subresource, an object.
fn applied_configuration(
    rt: &ResourceType,
    name: &str,
    body: Value,
    sub: Sub,
    opts: &WriteOpts,
) -> ApiResult<Value> {
    if opts.manager.is_empty() {
        return Err(invalid(
            rt,
            name,
            vec![Cause {
                reason: "FieldValueRequired",
                field: "fieldManager".into(),
                message: "Required value: is required for apply patch".into(),
            }],
        ));
    }
    if sub == Sub::Scale {
        return Err(ApiError::unsupported_media(
            "server-side apply to the scale subresource is not emulated",
        ));
    }
    let mut applied = body;
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "the applied configuration must be an object",
        ));
    }
    if meta_str(&applied, "name").is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(
            "the name in the applied configuration does not match the URL",
        ));
    }
    applied["metadata"]["name"] = json!(name);
    Ok(applied)
}

/// The API server's 409 for an apply that conflicts with other managers' fields: one
/// `FieldManagerConflict` cause per field.
fn apply_conflict(rt: &ResourceType, name: &str, conflicts: &[apply::Conflict]) -> ApiError {
    let lines: Vec<String> = conflicts
        .iter()
        .map(|c| {
            format!(
                "conflict with \"{}\" using {}: {}",
                c.manager, c.api_version, c.field
            )
        })
        .collect();
    let message = if lines.len() == 1 {
        format!("Apply failed with 1 conflict: {}", lines.join(""))
    } else {
        format!(
            "Apply failed with {} conflicts: {}",
            lines.len(),
            lines.join("\n")
        )
    };
    let mut err = ApiError::new(409, "Conflict", message).details(&rt.group, &rt.plural, name);
    err.details.causes = conflicts
        .iter()
        .map(|c| Cause {
            reason: "FieldManagerConflict",
            field: c.field.clone(),
            message: format!("conflict with \"{}\" using {}", c.manager, c.api_version),
        })
        .collect();
    err
}
