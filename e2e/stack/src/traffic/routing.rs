//! How a request to a Service is routed, read from the routing objects in the store.
//!
//! Pure: it takes the store's contents and a request's headers and answers the Services the
//! request goes to (with shares), then the ready workloads behind each Service. Each
//! provider's precedence rules are the documented ones: Istio takes the first matching
//! `http` route; Gateway API the matching rule with the most header matches; NGINX checks
//! canary-by-header, then canary-by-cookie, then canary-weight.

use crate::store::{self, Bucket, Inner};
use crate::traffic::config::Provider;
use regex::Regex;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const SERVICES: &str = "services";
pub const DEPLOYMENTS: &str = "deployments.apps";
pub const DAEMONSETS: &str = "daemonsets.apps";
pub const VIRTUAL_SERVICES: &str = "virtualservices.networking.istio.io";
pub const HTTP_ROUTES: &str = "httproutes.gateway.networking.k8s.io";
pub const TRAFFIC_SPLITS: &str = "trafficsplits.split.smi-spec.io";
pub const INGRESSES: &str = "ingresses.networking.k8s.io";

/// The objects routing reads, copied out of the store (cheap: the objects are shared), so
/// the store's lock is held only while copying.
#[derive(Default)]
pub struct Snapshot {
    buckets: std::collections::HashMap<&'static str, Bucket>,
    /// Deployments and DaemonSets with their ready pods (`readyReplicas`, `numberReady`).
    workloads: Vec<(Arc<Value>, f64)>,
    /// `(namespace, label key, label value)` → indexes into `workloads` whose pod template
    /// carries that label, so selecting endpoints does not scan the namespace.
    by_label: std::collections::HashMap<(String, String, String), Vec<usize>>,
}

impl Snapshot {
    pub fn take(inner: &Inner) -> Snapshot {
        let mut buckets = std::collections::HashMap::new();
        for key in [
            SERVICES,
            DEPLOYMENTS,
            DAEMONSETS,
            VIRTUAL_SERVICES,
            HTTP_ROUTES,
            TRAFFIC_SPLITS,
            INGRESSES,
        ] {
            if let Some(b) = inner.objects.get(key) {
                buckets.insert(key, b.clone());
            }
        }
        let mut snap = Snapshot {
            buckets,
            ..Snapshot::default()
        };
        for (key, ready_at) in [
            (DEPLOYMENTS, "/status/readyReplicas"),
            (DAEMONSETS, "/status/numberReady"),
        ] {
            let objs: Vec<Arc<Value>> = snap.iter_ns(key, None).cloned().collect();
            for o in objs {
                if o.pointer("/metadata/deletionTimestamp").is_some() {
                    continue;
                }
                let ready = o.pointer(ready_at).and_then(Value::as_f64).unwrap_or(0.0);
                let i = snap.workloads.len();
                let ns = str_at(&o, "/metadata/namespace").to_string();
                if let Some(labels) = o
                    .pointer("/spec/template/metadata/labels")
                    .and_then(Value::as_object)
                {
                    for (k, v) in labels {
                        if let Some(v) = v.as_str() {
                            snap.by_label
                                .entry((ns.clone(), k.clone(), v.to_string()))
                                .or_default()
                                .push(i);
                        }
                    }
                }
                snap.workloads.push((o, ready));
            }
        }
        snap
    }

    /// Workloads in `ns` whose pod template labels include all of `selector`.
    fn selected(
        &self,
        ns: &str,
        selector: &serde_json::Map<String, Value>,
    ) -> impl Iterator<Item = &(Arc<Value>, f64)> {
        let mut pairs = selector
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())));
        let candidates: &[usize] = match pairs.next() {
            Some((k, v)) if pairs.clone().count() + 1 == selector.len() => self
                .by_label
                .get(&(ns.to_string(), k, v))
                .map(Vec::as_slice)
                .unwrap_or_default(),
            // An empty selector, or a non-string value, selects nothing.
            _ => &[],
        };
        candidates
            .iter()
            .filter_map(|i| self.workloads.get(*i))
            .filter(move |(o, _)| {
                let labels = o.pointer("/spec/template/metadata/labels");
                selector
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            })
    }

    pub fn get(&self, key: &str, ns: &str, name: &str) -> Option<&Arc<Value>> {
        store::find(self.buckets.get(key), ns, name)
    }

    /// Objects of a resource in one namespace, or all of them.
    pub fn iter_ns<'a>(
        &'a self,
        key: &str,
        ns: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = &'a Arc<Value>> + 'a> {
        store::in_namespace(self.buckets.get(key), ns)
    }
}

/// A simulated request: `GET /` with these headers (lower-case names; cookies in `cookie`).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub headers: BTreeMap<String, String>,
}

impl Request {
    pub fn new(headers: &BTreeMap<String, String>, cookies: &BTreeMap<String, String>) -> Self {
        let mut h: BTreeMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        if !cookies.is_empty() {
            let c: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            h.insert("cookie".into(), c.join("; "));
        }
        Request { headers: h }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.header("cookie")?.split(';').find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
    }
}

/// Where a share of the requests goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    /// Service name, in the entry Service's namespace.
    pub service: String,
    /// Fraction of the requests (0..=1); destinations that are not mirrors sum to 1.
    pub share: f64,
    /// A mirrored copy (Istio `mirror`, Gateway API `RequestMirror`): extra requests whose
    /// answers the client never sees.
    pub mirror: bool,
    /// Set when the request came through an NGINX Ingress.
    pub ingress: Option<IngressHop>,
}

/// The NGINX ingress labels of a request: the user's Ingress, and the canary upstream
/// (`<namespace>-<service>-<port>`) when the canary Ingress served it.
#[derive(Debug, Clone, PartialEq)]
pub struct IngressHop {
    pub ingress: String,
    pub canary: String,
}

fn direct(service: &str) -> Vec<Destination> {
    vec![Destination {
        service: service.to_string(),
        share: 1.0,
        mirror: false,
        ingress: None,
    }]
}

/// The Services a request to `ns/service` goes to. An empty list: no route matched
/// (the request is not served). No routing object: the Service itself.
pub fn route(
    store: &Snapshot,
    provider: Provider,
    nginx_prefix: &str,
    ns: &str,
    service: &str,
    req: &Request,
) -> Vec<Destination> {
    let routed = match provider {
        Provider::Kubernetes => None,
        Provider::Istio => istio(store, ns, service, req),
        Provider::GatewayApi => gateway_api(store, ns, service, req),
        Provider::Smi => smi(store, ns, service),
        Provider::Nginx => nginx(store, nginx_prefix, ns, service, req),
    };
    routed.unwrap_or_else(|| direct(service))
}

/// `podinfo`, `podinfo.test`, `podinfo.test.svc.cluster.local` → the Service name if it is
/// in namespace `ns`.
fn host_service<'a>(host: &'a str, ns: &str) -> Option<&'a str> {
    let mut parts = host.split('.');
    let name = parts.next()?;
    match parts.next() {
        None => Some(name),
        Some(n) if n == ns => Some(name),
        Some(_) => None,
    }
}

fn objects<'a>(store: &'a Snapshot, key: &str, ns: &'a str) -> Vec<&'a Arc<Value>> {
    store
        .iter_ns(key, Some(ns))
        .filter(|o| o.pointer("/metadata/deletionTimestamp").is_none())
        .collect()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn full_match(pattern: &str, s: &str) -> bool {
    Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|r| r.is_match(s))
}

/// Splits by weights; `None` when they are all zero (nothing is served).
fn weighted(backends: Vec<(String, f64)>) -> Vec<Destination> {
    let total: f64 = backends.iter().map(|(_, w)| w.max(0.0)).sum();
    if total <= 0.0 {
        return Vec::new();
    }
    backends
        .into_iter()
        .filter(|(_, w)| *w > 0.0)
        .map(|(service, w)| Destination {
            service,
            share: w / total,
            mirror: false,
            ingress: None,
        })
        .collect()
}

// --- Istio -------------------------------------------------------------------------------

/// An Istio `StringMatch` (`exact`, `prefix`, `regex`) against a value.
fn istio_string_match(m: &Value, s: &str) -> bool {
    if let Some(e) = m.get("exact").and_then(Value::as_str) {
        return s == e;
    }
    if let Some(p) = m.get("prefix").and_then(Value::as_str) {
        return s.starts_with(p);
    }
    if let Some(r) = m.get("regex").and_then(Value::as_str) {
        return full_match(r, s);
    }
    true
}

/// One `HTTPMatchRequest`: every condition must hold. Conditions on things the world does
/// not model (ports, gateways, source labels) are taken as holding.
fn istio_match(m: &Value, req: &Request) -> bool {
    let Some(m) = m.as_object() else { return true };
    m.iter().all(|(k, v)| match k.as_str() {
        "headers" => v.as_object().is_none_or(|hs| {
            hs.iter()
                .all(|(name, sm)| req.header(name).is_some_and(|h| istio_string_match(sm, h)))
        }),
        "withoutHeaders" => v.as_object().is_none_or(|hs| {
            hs.iter()
                .all(|(name, sm)| !req.header(name).is_some_and(|h| istio_string_match(sm, h)))
        }),
        "uri" => istio_string_match(v, "/"),
        "method" => istio_string_match(v, "GET"),
        "queryParams" => v.as_object().is_none_or(|q| q.is_empty()),
        _ => true,
    })
}

fn istio(store: &Snapshot, ns: &str, service: &str, req: &Request) -> Option<Vec<Destination>> {
    let vs = objects(store, VIRTUAL_SERVICES, ns)
        .into_iter()
        .find(|vs| {
            arr(&vs["spec"], "hosts")
                .iter()
                .filter_map(Value::as_str)
                .any(|h| host_service(h, ns) == Some(service))
        })?;
    let Some(http) = arr(&vs["spec"], "http").iter().find(|r| {
        let ms = arr(r, "match");
        ms.is_empty() || ms.iter().any(|m| istio_match(m, req))
    }) else {
        return Some(Vec::new());
    };
    let routes = arr(http, "route");
    let backends = routes
        .iter()
        .filter_map(|d| {
            let host = host_service(str_at(d, "/destination/host"), ns)?;
            // A single destination without a weight takes everything.
            let w = d
                .get("weight")
                .and_then(Value::as_f64)
                .unwrap_or(if routes.len() == 1 { 100.0 } else { 0.0 });
            Some((host.to_string(), w))
        })
        .collect();
    let mut out = weighted(backends);
    if let Some(host) = http
        .pointer("/mirror/host")
        .and_then(Value::as_str)
        .and_then(|h| host_service(h, ns))
    {
        let pct = http
            .pointer("/mirrorPercentage/value")
            .and_then(Value::as_f64)
            .unwrap_or(100.0);
        out.push(Destination {
            service: host.to_string(),
            share: (pct / 100.0).clamp(0.0, 1.0),
            mirror: true,
            ingress: None,
        });
    }
    Some(out)
}

// --- Gateway API -------------------------------------------------------------------------

/// One `HTTPRouteMatch` against `GET /`; `None` if it does not match, else the number of
/// header matches (Gateway API prefers the rule with more of them).
fn gateway_match(m: &Value, req: &Request) -> Option<usize> {
    if let Some(p) = m.get("path") {
        let value = str_at(p, "/value");
        let ok = match p
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("PathPrefix")
        {
            "Exact" => value == "/",
            "RegularExpression" => full_match(value, "/"),
            _ => value.is_empty() || value == "/",
        };
        if !ok {
            return None;
        }
    }
    if let Some(method) = m.get("method").and_then(Value::as_str)
        && method != "GET"
    {
        return None;
    }
    if !arr(m, "queryParams").is_empty() {
        return None;
    }
    let headers = arr(m, "headers");
    let all = headers.iter().all(|h| {
        let want = str_at(h, "/value");
        req.header(str_at(h, "/name")).is_some_and(|have| {
            match h.get("type").and_then(Value::as_str).unwrap_or("Exact") {
                "RegularExpression" => Regex::new(want).is_ok_and(|r| r.is_match(have)),
                _ => have == want,
            }
        })
    });
    all.then_some(headers.len())
}

fn gateway_api(
    store: &Snapshot,
    ns: &str,
    service: &str,
    req: &Request,
) -> Option<Vec<Destination>> {
    // The route for a Service: one attached to it (GAMMA: parentRef kind Service), or one
    // named like it (Flagger names its HTTPRoute after the apex Service).
    let routes = objects(store, HTTP_ROUTES, ns);
    let attached = |r: &&&Arc<Value>| {
        arr(&r["spec"], "parentRefs")
            .iter()
            .any(|p| str_at(p, "/kind") == "Service" && str_at(p, "/name") == service)
    };
    let route = routes.iter().find(attached).or_else(|| {
        routes
            .iter()
            .find(|r| str_at(r, "/metadata/name") == service)
    })?;
    let best = arr(&route["spec"], "rules")
        .iter()
        .filter_map(|rule| {
            let ms = arr(rule, "matches");
            let score = if ms.is_empty() {
                Some(0)
            } else {
                ms.iter().filter_map(|m| gateway_match(m, req)).max()
            };
            score.map(|s| (s, rule))
        })
        // max_by_key keeps the last of equals; the first rule must win ties.
        .fold(None::<(usize, &Value)>, |best, (s, r)| match best {
            Some((bs, _)) if bs >= s => best,
            _ => Some((s, r)),
        });
    let Some((_, rule)) = best else {
        return Some(Vec::new());
    };
    let backends = arr(rule, "backendRefs")
        .iter()
        .filter(|b| {
            matches!(
                b.get("kind").and_then(Value::as_str),
                None | Some("Service")
            )
        })
        .map(|b| {
            let w = b.get("weight").and_then(Value::as_f64).unwrap_or(1.0);
            (str_at(b, "/name").to_string(), w)
        })
        .collect();
    let mut out = weighted(backends);
    for f in arr(rule, "filters") {
        if str_at(f, "/type") != "RequestMirror" {
            continue;
        }
        let share = if let Some(p) = f.pointer("/requestMirror/percent").and_then(Value::as_f64) {
            p / 100.0
        } else if let Some(fr) = f.pointer("/requestMirror/fraction") {
            let num = fr.get("numerator").and_then(Value::as_f64).unwrap_or(0.0);
            let den = fr
                .get("denominator")
                .and_then(Value::as_f64)
                .unwrap_or(100.0);
            if den > 0.0 { num / den } else { 0.0 }
        } else {
            1.0
        };
        out.push(Destination {
            service: str_at(f, "/requestMirror/backendRef/name").to_string(),
            share: share.clamp(0.0, 1.0),
            mirror: true,
            ingress: None,
        });
    }
    Some(out)
}

// --- SMI ---------------------------------------------------------------------------------

/// An SMI weight: an integer (v1alpha2+) or a Kubernetes quantity such as `500m` (v1alpha1).
fn smi_weight(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) => match s.strip_suffix('m') {
            Some(milli) => milli.parse::<f64>().map(|m| m / 1000.0).unwrap_or(0.0),
            None => s.parse().unwrap_or(0.0),
        },
        _ => 0.0,
    }
}

fn smi(store: &Snapshot, ns: &str, service: &str) -> Option<Vec<Destination>> {
    let ts = objects(store, TRAFFIC_SPLITS, ns)
        .into_iter()
        .find(|t| host_service(str_at(t, "/spec/service"), ns) == Some(service))?;
    let backends = arr(&ts["spec"], "backends")
        .iter()
        .map(|b| {
            let w = b.get("weight").map(smi_weight).unwrap_or(0.0);
            (str_at(b, "/service").to_string(), w)
        })
        .collect();
    Some(weighted(backends))
}

// --- NGINX -------------------------------------------------------------------------------

/// Backend Services of an Ingress's rules (and default backend), with their port.
fn ingress_backends(ing: &Value) -> Vec<(String, String)> {
    let port = |b: &Value| {
        b.pointer("/service/port/number")
            .map(|n| n.to_string())
            .or_else(|| {
                b.pointer("/service/port/name")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    if let Some(b) = ing.pointer("/spec/defaultBackend") {
        out.push((str_at(b, "/service/name").to_string(), port(b)));
    }
    for rule in arr(&ing["spec"], "rules") {
        for p in rule
            .pointer("/http/paths")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            out.push((
                str_at(p, "/backend/service/name").to_string(),
                port(&p["backend"]),
            ));
        }
    }
    out
}

fn first_host(ing: &Value) -> &str {
    arr(&ing["spec"], "rules")
        .first()
        .map(|r| str_at(r, "/host"))
        .unwrap_or_default()
}

fn nginx(
    store: &Snapshot,
    prefix: &str,
    ns: &str,
    service: &str,
    req: &Request,
) -> Option<Vec<Destination>> {
    let ann = |ing: &Value, key: &str| -> Option<String> {
        ing.pointer("/metadata/annotations")
            .and_then(|a| a.get(format!("{prefix}/{key}")))
            .and_then(Value::as_str)
            .map(String::from)
    };
    let ingresses = objects(store, INGRESSES, ns);
    let is_canary = |i: &Value| ann(i, "canary").as_deref() == Some("true");
    let main = ingresses
        .iter()
        .find(|i| !is_canary(i) && ingress_backends(i).iter().any(|(s, _)| s == service))?;
    let main_name = str_at(main, "/metadata/name").to_string();
    let through_main = |service: &str, canary: String, share: f64| Destination {
        service: service.to_string(),
        share,
        mirror: false,
        ingress: Some(IngressHop {
            ingress: main_name.clone(),
            canary,
        }),
    };
    let main_only = || Some(vec![through_main(service, String::new(), 1.0)]);
    let Some(canary) = ingresses
        .iter()
        .find(|i| is_canary(i) && first_host(i) == first_host(main))
    else {
        return main_only();
    };
    let Some((canary_svc, port)) = ingress_backends(canary).into_iter().next() else {
        return main_only();
    };
    let share = nginx_canary_share(&|key| ann(canary, key), req);
    let mut out = Vec::new();
    if share < 1.0 {
        out.push(through_main(service, String::new(), 1.0 - share));
    }
    if share > 0.0 {
        let upstream = format!("{ns}-{canary_svc}-{port}");
        out.push(through_main(&canary_svc, upstream, share));
    }
    Some(out)
}

/// The share of a request the canary Ingress takes (`ann` reads its annotations), with
/// ingress-nginx's precedence: canary-by-header, then canary-by-cookie, then canary-weight.
fn nginx_canary_share(ann: &dyn Fn(&str) -> Option<String>, req: &Request) -> f64 {
    if let Some(h) = ann("canary-by-header")
        && let Some(v) = req.header(&h)
    {
        if let Some(want) = ann("canary-by-header-value") {
            if v == want {
                return 1.0;
            }
        } else if let Some(pattern) = ann("canary-by-header-pattern") {
            if Regex::new(&pattern).is_ok_and(|r| r.is_match(v)) {
                return 1.0;
            }
        } else if v == "always" {
            return 1.0;
        } else if v == "never" {
            return 0.0;
        }
    }
    if let Some(c) = ann("canary-by-cookie")
        && let Some(v) = req.cookie(&c)
    {
        match v {
            "always" => return 1.0,
            "never" => return 0.0,
            _ => {}
        }
    }
    let weight: f64 = ann("canary-weight")
        .and_then(|w| w.parse().ok())
        .unwrap_or(0.0);
    let total: f64 = ann("canary-weight-total")
        .and_then(|w| w.parse().ok())
        .filter(|t: &f64| *t > 0.0)
        .unwrap_or(100.0);
    (weight / total).clamp(0.0, 1.0)
}

// --- Endpoints ---------------------------------------------------------------------------

/// The workloads (Deployments, DaemonSets) behind a Service, each with its ready pods: the
/// ones whose pod template labels include the Service's selector. Workloads without ready
/// pods are left out, as their pods are not endpoints.
pub fn endpoints(store: &Snapshot, ns: &str, service: &str) -> Vec<(Arc<Value>, f64)> {
    let Some(selector) = store
        .get(SERVICES, ns, service)
        .and_then(|svc| svc.pointer("/spec/selector"))
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    store
        .selected(ns, selector)
        .filter(|(_, ready)| *ready > 0.0)
        .cloned()
        .collect()
}

/// Whether some Deployment's pods carry all of the Service's selector labels.
pub fn selects_deployment(store: &Snapshot, svc: &Value) -> bool {
    let Some(selector) = svc.pointer("/spec/selector").and_then(Value::as_object) else {
        return false;
    };
    store
        .selected(str_at(svc, "/metadata/namespace"), selector)
        .any(|(o, _)| o.get("kind").and_then(Value::as_str) == Some("Deployment"))
}
