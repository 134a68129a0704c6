//! The traffic world: simulated requests to Services, split the way the routing objects in
//! the store say, answered the way each workload's image behaves.
//!
//! Every tick (1 s, or `World::step` under a manual clock) it re-reads the routing and the
//! ready workloads; between ticks requests accrue continuously at the current split.
//! Requests are counted fractionally (expected values), so a split of 10 % over 10 s at
//! 20 requests/s is exactly 20 requests, and the success rate of a workload failing 30 % is
//! exactly 70 %. It keeps cumulative counters (for the Prometheus exposition) and an hour of
//! per-second history (for the Datadog and New Relic emulators' time windows).

use crate::store::{Store, ns_name};
use crate::traffic::config::{Provider, Traffic};
use crate::traffic::latency::{Latency, Profile};
use crate::traffic::routing::{self, IngressHop, Request, Snapshot};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds of per-second history kept for the metric API emulators.
const HISTORY_SECS: u64 = 3600;

/// A version of a workload that answers requests: one simulated pod per workload version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub namespace: String,
    /// Deployment or DaemonSet name.
    pub workload: String,
    pub daemonset: bool,
    /// A pod name as its controller would generate it (`<deployment>-<hash>-<suffix>`).
    pub pod: String,
}

/// The labels of one counter series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub backend: Backend,
    /// The Service the request was addressed to (after routing).
    pub service: String,
    pub ingress: Option<(String, String)>,
    pub code: u16,
}

/// Cumulative counts of one series: requests, total latency, and per histogram layout the
/// cumulative bucket counts.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub requests: f64,
    pub latency_sum_secs: f64,
    pub buckets: Vec<Vec<f64>>,
}

/// Requests one backend answered with one status code during one second.
#[derive(Debug, Clone)]
pub struct Sample {
    pub backend: Backend,
    pub service: String,
    pub code: u16,
    pub requests: f64,
    pub latency: Latency,
}

#[derive(Debug, Clone)]
struct Flow {
    rate: f64,
    backend: Backend,
    service: String,
    ingress: Option<IngressHop>,
    mirror: bool,
    profile: Profile,
}

/// One second of history: what each backend answered, by Service addressed and status code.
type Slot = HashMap<(Backend, String, u16), Sample>;

/// Per-workload memory of a routing pass.
struct Memo {
    served: HashMap<String, (Backend, Profile)>,
    cache: HashMap<String, (String, Backend, Profile)>,
    seen: HashSet<String>,
}

/// What one workload has answered so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WorkloadStats {
    /// Requests received, mirrored copies included.
    pub requests: f64,
    /// Requests answered 5xx.
    pub errors: f64,
    /// Mirrored copies received.
    pub mirrored: f64,
}

#[derive(Default)]
struct State {
    flows: Vec<Flow>,
    unrouted_rate: f64,
    unrouted: f64,
    /// World time (seconds since start) of the last accrual.
    accrued_to: f64,
    /// World time under a manual clock.
    manual_now: f64,
    series: BTreeMap<SeriesKey, Counts>,
    mirrored: HashMap<Backend, f64>,
    history: VecDeque<(u64, Slot)>,
    /// Per workload uid: the backend of its last complete rollout (pods of that template
    /// keep serving while a newer one is not ready).
    served: HashMap<String, (Backend, Profile)>,
    /// Per workload uid: the backend computed at a resourceVersion (recomputed on change).
    cache: HashMap<String, (String, Backend, Profile)>,
}

/// Histogram bucket layouts, one per exported family (upper bounds in seconds).
pub struct Layouts;

impl Layouts {
    /// Istio's `istio_request_duration_milliseconds` (bounds in ms).
    pub const ISTIO_MS: &[f64] = &[
        0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
    ];
    /// Linkerd's `response_latency_ms` (bounds in ms).
    pub const LINKERD_MS: &[f64] = &[
        1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
        1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
    ];
    /// The Prometheus client libraries' default buckets (seconds): app metrics and NGINX.
    pub const DEFAULT_SECS: &[f64] = &[
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    pub const ISTIO: usize = 0;
    pub const LINKERD: usize = 1;
    pub const DEFAULT: usize = 2;

    fn bounds_secs(layout: usize) -> Vec<f64> {
        match layout {
            Self::ISTIO => Self::ISTIO_MS.iter().map(|b| b / 1000.0).collect(),
            Self::LINKERD => Self::LINKERD_MS.iter().map(|b| b / 1000.0).collect(),
            _ => Self::DEFAULT_SECS.to_vec(),
        }
    }
}

pub struct World {
    store: Arc<Store>,
    cfg: Traffic,
    provider: Provider,
    started: Instant,
    /// Unix time (seconds) at world time 0.
    epoch_unix: f64,
    manual: bool,
    keep_history: bool,
    /// Play the gateway controller on the store's HTTPRoutes (off over the real control
    /// plane, where the mirror accepts them through the API).
    gateway: bool,
    bounds: [Vec<f64>; 3],
    state: Mutex<State>,
}

impl World {
    /// `manual`: time moves only through `step` (deterministic tests); otherwise `run` ticks
    /// every second in real time. `history`: keep the per-second history the metric API
    /// emulators answer from (only they need it, and it costs memory with many workloads).
    pub fn new(
        store: Arc<Store>,
        cfg: Traffic,
        manual: bool,
        history: bool,
    ) -> Result<World, String> {
        let provider = Provider::parse(&cfg.provider)?;
        let epoch_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        Ok(World {
            store,
            cfg,
            provider,
            started: Instant::now(),
            epoch_unix,
            manual,
            keep_history: history,
            gateway: true,
            bounds: [
                Layouts::bounds_secs(Layouts::ISTIO),
                Layouts::bounds_secs(Layouts::LINKERD),
                Layouts::bounds_secs(Layouts::DEFAULT),
            ],
            state: Mutex::new(State::default()),
        })
    }

    /// Leaves accepting HTTPRoutes to someone else (the real control plane's mirror).
    pub(crate) fn without_gateway(mut self) -> World {
        self.gateway = false;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// World time in seconds since start.
    pub fn now(&self) -> f64 {
        if self.manual {
            self.lock().manual_now
        } else {
            self.started.elapsed().as_secs_f64()
        }
    }

    /// Unix seconds of a world time.
    pub fn unix(&self, t: f64) -> f64 {
        self.epoch_unix + t
    }

    /// World time of a Unix time in seconds.
    pub fn from_unix(&self, unix: f64) -> f64 {
        unix - self.epoch_unix
    }

    /// Ticks every second until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = self.now();
            self.accrue(now);
            self.reroute();
        }
    }

    /// Manual clock: accrues `dt` at the current split, then re-reads the routing. Call
    /// `reroute` first after changing routing objects.
    pub fn step(&self, dt: Duration) {
        let now = {
            let mut s = self.lock();
            s.manual_now += dt.as_secs_f64();
            s.manual_now
        };
        self.accrue(now);
        self.reroute();
    }

    /// Brings the counters up to the present (scrapes call this so counters move smoothly).
    pub fn catch_up(&self) {
        if !self.manual {
            self.accrue(self.now());
        }
    }

    /// Re-reads the loaded Services, the routing objects and the ready workloads (and, under
    /// Gateway API, accepts new HTTPRoutes as a gateway controller would).
    pub fn reroute(&self) {
        if self.gateway && self.provider == Provider::GatewayApi {
            crate::traffic::gateway::accept_routes(&self.store);
        }
        let snap = Snapshot::take(&self.store.lock());
        let mut memo = {
            let mut s = self.lock();
            Memo {
                served: std::mem::take(&mut s.served),
                cache: std::mem::take(&mut s.cache),
                seen: HashSet::new(),
            }
        };
        let (flows, unrouted_rate) = self.plan(&snap, &mut memo);
        // Forget workloads that are gone.
        memo.served.retain(|uid, _| memo.seen.contains(uid));
        memo.cache.retain(|uid, _| memo.seen.contains(uid));
        let mut s = self.lock();
        s.served = memo.served;
        s.cache = memo.cache;
        s.flows = flows;
        s.unrouted_rate = unrouted_rate;
    }

    fn loads(&self, store: &Snapshot) -> Vec<crate::traffic::config::ServiceLoad> {
        if let Some(services) = &self.cfg.services {
            return services.clone();
        }
        // Defaults: the apex Services. `X-primary` and `X-canary` next to an `X` receive
        // their traffic through `X`; except that with plain Services (no routing objects)
        // the canary is loaded directly, as Flagger's load tester does for blue/green.
        let mut out = Vec::new();
        for svc in store.iter_ns(routing::SERVICES, None) {
            let (ns, name) = ns_name(svc);
            let apex_exists = |suffix: &str| {
                name.strip_suffix(suffix)
                    .is_some_and(|apex| store.get(routing::SERVICES, &ns, apex).is_some())
            };
            let skip = apex_exists("-primary")
                || (apex_exists("-canary") && self.provider != Provider::Kubernetes);
            if !skip && routing::selects_deployment(store, svc) {
                out.push(crate::traffic::config::ServiceLoad {
                    name,
                    namespace: ns,
                    rate: crate::traffic::config::DEFAULT_RATE,
                    ab_testing: None,
                });
            }
        }
        out
    }

    fn plan(&self, store: &Snapshot, memo: &mut Memo) -> (Vec<Flow>, f64) {
        let mut flows = Vec::new();
        let mut unrouted = 0.0;
        for load in self.loads(store) {
            let mut classes = vec![(load.rate, Request::default())];
            if let Some(ab) = &load.ab_testing {
                let f = ab.fraction.clamp(0.0, 1.0);
                classes = vec![
                    (load.rate * (1.0 - f), Request::default()),
                    (load.rate * f, Request::new(&ab.headers, &ab.cookies)),
                ];
            }
            for (rate, req) in classes {
                if rate <= 0.0 {
                    continue;
                }
                let dests = routing::route(
                    store,
                    self.provider,
                    &self.cfg.ingress_annotations_prefix,
                    &load.namespace,
                    &load.name,
                    &req,
                );
                if dests.iter().all(|d| d.mirror) {
                    unrouted += rate;
                }
                for d in dests {
                    let eps = routing::endpoints(store, &load.namespace, &d.service);
                    let ready: f64 = eps.iter().map(|(_, n)| n).sum();
                    if ready <= 0.0 {
                        if !d.mirror {
                            unrouted += rate * d.share;
                        }
                        continue;
                    }
                    for (w, n) in eps {
                        let (backend, profile) = self.backend(&w, memo);
                        flows.push(Flow {
                            rate: rate * d.share * n / ready,
                            backend,
                            service: d.service.clone(),
                            ingress: d.ingress.clone(),
                            mirror: d.mirror,
                            profile,
                        });
                    }
                }
            }
        }
        (flows, unrouted)
    }

    /// The backend a workload's ready pods form, and how they answer: pods of the last
    /// complete rollout's template while a newer template is not ready.
    fn backend(&self, w: &Value, memo: &mut Memo) -> (Backend, Profile) {
        let uid = w
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let rv = w
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        memo.seen.insert(uid.clone());
        if let Some((cached_rv, b, p)) = memo.cache.get(&uid)
            && cached_rv == rv
        {
            return (b.clone(), *p);
        }
        let (namespace, workload) = ns_name(w);
        let daemonset = w.get("kind").and_then(Value::as_str) == Some("DaemonSet");
        let int = |p: &str| w.pointer(p).and_then(Value::as_i64).unwrap_or(0);
        let complete = if daemonset {
            int("/status/updatedNumberScheduled") >= int("/status/desiredNumberScheduled")
                && int("/status/numberUnavailable") == 0
        } else {
            int("/status/observedGeneration") >= int("/metadata/generation")
                && int("/status/updatedReplicas") >= int("/status/replicas")
                && int("/status/readyReplicas") >= int("/status/replicas")
        };
        let result = match memo.served.get(&uid) {
            Some(served) if !complete => served.clone(),
            _ => {
                let template = w.pointer("/spec/template").unwrap_or(&Value::Null);
                let images: Vec<String> = template
                    .pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .map(|cs| {
                        cs.iter()
                            .filter_map(|c| {
                                c.get("image").and_then(Value::as_str).map(String::from)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                template.to_string().hash(&mut h);
                let hash = h.finish();
                let pod = if daemonset {
                    format!("{workload}-{}", alnum(hash, 5))
                } else {
                    format!(
                        "{workload}-{:010x}-{}",
                        hash & 0xff_ffff_ffff,
                        alnum(hash >> 20, 5)
                    )
                };
                let backend = Backend {
                    namespace,
                    workload,
                    daemonset,
                    pod,
                };
                (backend, self.cfg.behaviour(&images))
            }
        };
        if complete {
            memo.served.insert(uid.clone(), result.clone());
        }
        memo.cache
            .insert(uid, (rv.to_string(), result.0.clone(), result.1));
        result
    }

    fn accrue(&self, now: f64) {
        let mut s = self.lock();
        let from = s.accrued_to;
        if now <= from {
            return;
        }
        s.accrued_to = now;
        let dt = now - from;
        s.unrouted += s.unrouted_rate * dt;
        let flows = std::mem::take(&mut s.flows);
        for f in &flows {
            let n = f.rate * dt;
            let errors = n * f.profile.error_rate;
            for (code, count) in [(200, n - errors), (500, errors)] {
                if count <= 0.0 {
                    continue;
                }
                let key = SeriesKey {
                    backend: f.backend.clone(),
                    service: f.service.clone(),
                    ingress: f
                        .ingress
                        .as_ref()
                        .map(|h| (h.ingress.clone(), h.canary.clone())),
                    code,
                };
                let c = s.series.entry(key).or_insert_with(|| Counts {
                    buckets: self.bounds.iter().map(|b| vec![0.0; b.len()]).collect(),
                    ..Counts::default()
                });
                c.requests += count;
                c.latency_sum_secs += count * f.profile.latency.mean();
                for (layout, bounds) in self.bounds.iter().enumerate() {
                    for (i, le) in bounds.iter().enumerate() {
                        // A hair of tolerance so a latency equal to a bound lands in it.
                        c.buckets[layout][i] += count * f.profile.latency.cdf(le * (1.0 + 1e-9));
                    }
                }
                if !self.keep_history {
                    continue;
                }
                let sample = Sample {
                    backend: f.backend.clone(),
                    service: f.service.clone(),
                    code,
                    requests: count,
                    latency: f.profile.latency,
                };
                record(&mut s.history, from, now, sample);
            }
            if f.mirror {
                *s.mirrored.entry(f.backend.clone()).or_default() += n;
            }
        }
        s.flows = flows;
    }

    /// Totals per workload (`namespace`, `name`) since start.
    pub fn stats(&self, namespace: &str, workload: &str) -> WorkloadStats {
        self.catch_up();
        let s = self.lock();
        let mut out = WorkloadStats::default();
        for (k, c) in &s.series {
            if k.backend.namespace == namespace && k.backend.workload == workload {
                out.requests += c.requests;
                if k.code >= 500 {
                    out.errors += c.requests;
                }
            }
        }
        out.mirrored = s
            .mirrored
            .iter()
            .filter(|(b, _)| b.namespace == namespace && b.workload == workload)
            .map(|(_, n)| n)
            .sum();
        out
    }

    /// Requests that found no route or no ready endpoint.
    pub fn unrouted(&self) -> f64 {
        self.catch_up();
        self.lock().unrouted
    }

    /// The current split: requests/s per workload (JSON, for the admin endpoint).
    pub fn describe(&self) -> Value {
        self.catch_up();
        let s = self.lock();
        let mut per: BTreeMap<(String, String), (f64, f64, f64)> = BTreeMap::new();
        for (k, c) in &s.series {
            let e = per
                .entry((k.backend.namespace.clone(), k.backend.workload.clone()))
                .or_default();
            e.0 += c.requests;
            if k.code >= 500 {
                e.1 += c.requests;
            }
        }
        for f in &s.flows {
            per.entry((f.backend.namespace.clone(), f.backend.workload.clone()))
                .or_default()
                .2 += f.rate;
        }
        let workloads: Vec<Value> = per
            .into_iter()
            .map(|((ns, w), (req, err, rate))| {
                json!({"namespace": ns, "workload": w, "requests": req, "errors": err, "ratePerSecond": rate})
            })
            .collect();
        json!({"provider": self.cfg.provider, "time": s.accrued_to, "workloads": workloads,
            "unrouted": s.unrouted, "unroutedPerSecond": s.unrouted_rate})
    }

    /// Cumulative series (for the Prometheus exposition).
    pub fn series(&self) -> Vec<(SeriesKey, Counts)> {
        self.catch_up();
        self.lock()
            .series
            .iter()
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect()
    }

    /// Samples with world time in `[from, to)`, at one-second resolution: `(second, sample)`.
    pub fn samples(&self, from: f64, to: f64) -> Vec<(u64, Sample)> {
        self.catch_up();
        let s = self.lock();
        s.history
            .iter()
            .filter(|(sec, _)| (*sec as f64) + 1.0 > from && (*sec as f64) < to)
            .flat_map(|(sec, v)| v.values().map(move |x| (*sec, x.clone())))
            .collect()
    }
}

/// Spreads a sample accrued over `[from, to)` across the one-second slots it covers.
fn record(history: &mut VecDeque<(u64, Slot)>, from: f64, to: f64, sample: Sample) {
    let dt = to - from;
    let mut t = from;
    while t < to {
        let sec = t.floor() as u64;
        let end = ((sec + 1) as f64).min(to);
        let part = Sample {
            requests: sample.requests * (end - t) / dt,
            ..sample.clone()
        };
        if history.back().is_none_or(|(s, _)| *s != sec) {
            history.push_back((sec, Slot::new()));
        }
        if let Some((_, slot)) = history.back_mut() {
            let key = (part.backend.clone(), part.service.clone(), part.code);
            match slot.get_mut(&key) {
                Some(s) => s.requests += part.requests,
                None => {
                    slot.insert(key, part);
                }
            }
        }
        t = end;
    }
    while history
        .front()
        .is_some_and(|(s, _)| s + HISTORY_SECS < to as u64)
    {
        history.pop_front();
    }
}

/// `n` lower-case alphanumeric characters from a hash (pod-name suffixes).
fn alnum(mut h: u64, n: usize) -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n)
        .map(|_| {
            let c = CHARS[(h % CHARS.len() as u64) as usize] as char;
            h /= CHARS.len() as u64;
            c
        })
        .collect()
}
