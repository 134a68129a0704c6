//! The traffic world: simulated requests to Services, split the way the routing objects in
//! the store say, answered the way each workload's image behaves.
//!
//! Every tick (1 s, or `World::step` under a manual clock) it re-reads the routing and the
//! ready workloads; between ticks requests accrue continuously at the current split.
//! Requests are counted fractionally (expected values), so a split of 10 % over 10 s at
//! 20 requests/s is exactly 20 requests, and the success rate of a workload failing 30 % is
//! exactly 70 %. It keeps cumulative counters (for the Prometheus exposition) and an hour of
//! per-second history (for the metric API emulators' time windows).
//!
//! Under `traffic.noise` each flow's requests are drawn instead, per second of world time:
//! a Poisson count, binomial errors, and one latency per request (see `noise`), from one
//! seeded generator, so the same seed and the same clock steps give the same series. Incidents
//! and intermittent faults change a flow's error rate and latency on the world's clock; an
//! accrual is split at their edges (and, with noise, at whole seconds) and each piece uses the
//! conditions at its middle.

use crate::store::{Store, ns_name};
use crate::traffic::config::{Provider, Traffic};
use crate::traffic::latency::{Latency, Profile};
use crate::traffic::noise;
use crate::traffic::routing::{self, IngressHop, Request, Snapshot};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

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
    /// The generator of `traffic.noise`; `None`: expected values.
    rng: Option<fastrand::Rng>,
}

/// An incident in world seconds.
struct Incident {
    pattern: String,
    start: f64,
    end: f64,
    error_rate: f64,
    latency_factor: f64,
}

impl Incident {
    fn hits(&self, f: &Flow) -> bool {
        f.backend.workload.contains(&self.pattern)
    }
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
    /// The runtime's clock: virtual in tests that pause time.
    started: tokio::time::Instant,
    /// Unix time (seconds) at world time 0.
    epoch_unix: f64,
    manual: bool,
    keep_history: bool,
    /// Play the gateway controller on the store's HTTPRoutes (off over the real control
    /// plane, where the mirror accepts them through the API).
    gateway: bool,
    bounds: [Vec<f64>; 3],
    incidents: Vec<Incident>,
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
        cfg.validate()?;
        let incidents = cfg
            .incidents
            .iter()
            .map(|i| {
                let (start, end) = i.window();
                Incident {
                    pattern: i.pattern.clone(),
                    start,
                    end,
                    error_rate: i.error_rate,
                    latency_factor: i.latency_factor,
                }
            })
            .collect();
        let state = State {
            rng: cfg.noise.as_ref().map(|n| fastrand::Rng::with_seed(n.seed)),
            ..State::default()
        };
        let epoch_unix = crate::clock::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        Ok(World {
            store,
            cfg,
            provider,
            started: tokio::time::Instant::now(),
            epoch_unix,
            manual,
            keep_history: history,
            gateway: true,
            bounds: [
                Layouts::bounds_secs(Layouts::ISTIO),
                Layouts::bounds_secs(Layouts::LINKERD),
                Layouts::bounds_secs(Layouts::DEFAULT),
            ],
            incidents,
            state: Mutex::new(state),
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
        // `services: []`: no load at all, so nothing to route; taking the snapshot would cost
        // a pass over every Service and workload each second (benchmarks with 10,000 apps).
        if self.cfg.services.as_ref().is_some_and(Vec::is_empty) {
            return;
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
        let mut guard = self.lock();
        let s = &mut *guard;
        let from = s.accrued_to;
        if now <= from {
            return;
        }
        s.accrued_to = now;
        let dt = now - from;
        s.unrouted += s.unrouted_rate * dt;
        let flows = std::mem::take(&mut s.flows);
        let mut rng = s.rng.take();
        let mut edges = Vec::new();
        for f in &flows {
            self.edges(f, from, now, rng.is_some(), &mut edges);
            let mut a = from;
            for &b in edges.iter().chain(std::iter::once(&now)) {
                let (error_rate, latency) = self.conditions(f, (a + b) / 2.0);
                match rng.as_mut() {
                    None => self.accrue_expected(s, f, a, b, error_rate, latency),
                    Some(rng) => self.accrue_sampled(s, rng, f, a, b, error_rate, latency),
                }
                a = b;
            }
        }
        s.flows = flows;
        s.rng = rng;
    }

    /// Where a flow's conditions may change inside `(from, to)`, sorted: the edges of the
    /// incidents that hit it and of its intermittent fault, and with noise every whole second
    /// (each second is drawn on its own). Empty without incidents, intermittent faults or
    /// noise: the accrual is one piece, as it always was.
    fn edges(&self, f: &Flow, from: f64, to: f64, seconds: bool, out: &mut Vec<f64>) {
        out.clear();
        for i in self.incidents.iter().filter(|i| i.hits(f)) {
            out.extend(
                [i.start, i.end]
                    .into_iter()
                    .filter(|t| *t > from && *t < to),
            );
        }
        if let Some(d) = f.profile.intermittent {
            d.edges(from, to, out);
        }
        if seconds {
            let mut t = from.floor() + 1.0;
            while t < to {
                out.push(t);
                t += 1.0;
            }
        }
        out.sort_by(f64::total_cmp);
        out.dedup();
    }

    /// A flow's error rate and latency at world time `t`: its image's behaviour (healthy while
    /// an intermittent fault is off), degraded by the incidents active then.
    fn conditions(&self, f: &Flow, t: f64) -> (f64, Latency) {
        let mut error_rate = f.profile.error_rate_at(t);
        let mut latency = f.profile.latency;
        for i in &self.incidents {
            if i.start <= t && t < i.end && i.hits(f) {
                error_rate = (error_rate + i.error_rate).clamp(0.0, 1.0);
                latency = latency.scaled(i.latency_factor);
            }
        }
        (error_rate, latency)
    }

    /// The counters of a flow's series with this status code.
    fn counts<'a>(&self, s: &'a mut State, f: &Flow, code: u16) -> &'a mut Counts {
        let key = SeriesKey {
            backend: f.backend.clone(),
            service: f.service.clone(),
            ingress: f
                .ingress
                .as_ref()
                .map(|h| (h.ingress.clone(), h.canary.clone())),
            code,
        };
        s.series.entry(key).or_insert_with(|| Counts {
            buckets: self.bounds.iter().map(|b| vec![0.0; b.len()]).collect(),
            ..Counts::default()
        })
    }

    /// Adds `count` requests spread over the distribution: each bucket its expected share.
    fn add_expected(&self, c: &mut Counts, count: f64, latency: Latency) {
        c.requests += count;
        c.latency_sum_secs += count * latency.mean();
        for (layout, bounds) in self.bounds.iter().enumerate() {
            for (i, le) in bounds.iter().enumerate() {
                // A hair of tolerance so a latency equal to a bound lands in it.
                c.buckets[layout][i] += count * latency.cdf(le * (1.0 + 1e-9));
            }
        }
    }

    /// Expected values over `[from, to)` (the default).
    fn accrue_expected(
        &self,
        s: &mut State,
        f: &Flow,
        from: f64,
        to: f64,
        error_rate: f64,
        latency: Latency,
    ) {
        let n = f.rate * (to - from);
        let errors = n * error_rate;
        for (code, count) in [(200, n - errors), (500, errors)] {
            if count <= 0.0 {
                continue;
            }
            self.add_expected(self.counts(s, f, code), count, latency);
            if self.keep_history {
                let sample = Sample {
                    backend: f.backend.clone(),
                    service: f.service.clone(),
                    code,
                    requests: count,
                    latency,
                };
                record(&mut s.history, from, to, sample);
            }
        }
        if f.mirror {
            *s.mirrored.entry(f.backend.clone()).or_default() += n;
        }
    }

    /// Drawn requests over `[from, to)` (within one second): a Poisson count, binomial
    /// errors, one latency per request, all added as whole requests.
    #[allow(clippy::too_many_arguments)]
    fn accrue_sampled(
        &self,
        s: &mut State,
        rng: &mut fastrand::Rng,
        f: &Flow,
        from: f64,
        to: f64,
        error_rate: f64,
        latency: Latency,
    ) {
        let n = noise::poisson(rng, f.rate * (to - from));
        let errors = noise::binomial(rng, n, error_rate);
        for (code, count) in [(200, n - errors), (500, errors)] {
            if count == 0 {
                continue;
            }
            let c = self.counts(s, f, code);
            if latency.is_fixed() {
                // Every request takes the median: whole counts either way.
                self.add_expected(c, count as f64, latency);
            } else {
                c.requests += count as f64;
                for _ in 0..count {
                    let x = latency.sample(noise::normal(rng));
                    c.latency_sum_secs += x;
                    for (layout, bounds) in self.bounds.iter().enumerate() {
                        let first = bounds.partition_point(|le| le * (1.0 + 1e-9) < x);
                        for b in &mut c.buckets[layout][first..] {
                            *b += 1.0;
                        }
                    }
                }
            }
            if self.keep_history {
                let sample = Sample {
                    backend: f.backend.clone(),
                    service: f.service.clone(),
                    code,
                    requests: count as f64,
                    latency,
                };
                record(&mut s.history, from, to, sample);
            }
        }
        if f.mirror {
            *s.mirrored.entry(f.backend.clone()).or_default() += n as f64;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    /// Two Deployments behind their own Services, `podinfo` (the canary) and
    /// `podinfo-primary`, in a world with a manual clock.
    fn world(traffic: &str, canary_image: &str) -> World {
        let store = Arc::new(Store::new(100));
        {
            let mut s = store.lock();
            for (name, image) in [
                ("podinfo", canary_image),
                ("podinfo-primary", "podinfo:6.0.0"),
            ] {
                s.put(
                    routing::SERVICES,
                    json!({"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": name, "namespace": "default"},
                        "spec": {"selector": {"app": name}}}),
                );
                s.put(
                    routing::DEPLOYMENTS,
                    json!({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": name, "namespace": "default", "uid": name},
                        "spec": {"replicas": 1, "template": {
                            "metadata": {"labels": {"app": name}},
                            "spec": {"containers": [{"name": "app", "image": image}]}}},
                        "status": {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}}),
                );
            }
        }
        let scenario = Scenario::parse(&format!("traffic:\n{traffic}")).unwrap();
        let w = World::new(store, scenario.traffic, true, true).unwrap();
        w.reroute();
        w
    }

    /// The exposition without pod names (they hash the template with std's hasher).
    fn render(w: &World) -> String {
        let re = regex::Regex::new(r#"kubernetes_pod_name="[^"]*""#).unwrap();
        let text = crate::traffic::telemetry::render(&w.series(), Provider::Kubernetes);
        re.replace_all(&text, "kubernetes_pod_name=\"-\"")
            .into_owned()
    }

    const GOLDEN_TRAFFIC: &str = "  services:\n    - name: podinfo\n      rate: 20\n    - name: podinfo-primary\n      rate: 10\n  images:\n    - match: faulty\n      errorRate: 0.3\n      latency: 100ms\n      p99: 400ms\n";

    /// What the world reports after 10 s and 0.7 s of the manual clock: stats, the first
    /// seconds of history and the exposition (lines sorted, pod names masked).
    fn golden_report(w: &World) -> String {
        for _ in 0..10 {
            w.step(Duration::from_secs(1));
        }
        w.step(Duration::from_millis(700));
        let mut out = String::new();
        for name in ["podinfo", "podinfo-primary"] {
            out += &format!("{name}: {:?}\n", w.stats("default", name));
        }
        let mut history: Vec<String> = w
            .samples(0.0, 3.0)
            .iter()
            .map(|(sec, x)| {
                format!(
                    "history {sec} {} {} {} {:?}",
                    x.backend.workload, x.code, x.requests, x.latency
                )
            })
            .collect();
        history.sort();
        let mut lines: Vec<String> = render(w).lines().map(String::from).collect();
        lines.sort();
        for l in history.into_iter().chain(lines) {
            out += &l;
            out.push('\n');
        }
        out
    }

    #[test]
    fn fractional_output_unchanged_without_new_keys() {
        // Recorded before noise, incidents and intermittent faults existed.
        let want = include_str!("testdata/fractional.golden");
        let got = golden_report(&world(GOLDEN_TRAFFIC, "podinfo:6.0.1-faulty"));
        assert!(got == want, "the fractional path changed:\n{got}");
    }

    /// Requests per second of history for one workload, by status code.
    fn per_second(w: &World, workload: &str, code: u16, to: f64) -> BTreeMap<u64, f64> {
        let mut out = BTreeMap::new();
        for sec in 0..to as u64 {
            out.insert(sec, 0.0);
        }
        for (sec, x) in w.samples(0.0, to) {
            if x.backend.workload == workload && x.code == code {
                *out.entry(sec).or_default() += x.requests;
            }
        }
        out
    }

    const LOAD: &str = "  services:\n    - name: podinfo\n      rate: 20\n    - name: podinfo-primary\n      rate: 20\n";

    #[test]
    fn expected_values_are_exact_without_noise() {
        let w = world(
            &format!("{LOAD}  images:\n    - match: faulty\n      errorRate: 0.25\n"),
            "podinfo:6.0.1-faulty",
        );
        for _ in 0..10 {
            w.step(Duration::from_secs(1));
        }
        let canary = w.stats("default", "podinfo");
        assert_eq!((canary.requests, canary.errors), (200.0, 50.0));
        assert_eq!(w.stats("default", "podinfo-primary").requests, 200.0);
        assert!(
            per_second(&w, "podinfo", 500, 10.0)
                .values()
                .all(|n| *n == 5.0)
        );
        assert!(
            per_second(&w, "podinfo", 200, 10.0)
                .values()
                .all(|n| *n == 15.0)
        );
    }

    fn noisy(seed: u64, secs: u32) -> World {
        let w = world(
            &format!(
                "{LOAD}  noise: {{seed: {seed}}}\n  images:\n    - match: faulty\n      errorRate: 0.05\n      latency: 100ms\n      p99: 400ms\n"
            ),
            "podinfo:6.0.1-faulty",
        );
        for _ in 0..secs {
            w.step(Duration::from_secs(1));
        }
        w
    }

    #[test]
    fn noise_samples_counts_errors_and_latencies() {
        let w = world(
            &format!(
                "{LOAD}  noise: {{seed: 1}}\n  images:\n    - match: faulty\n      errorRate: 0.05\n      latency: 100ms\n      p99: 400ms\n"
            ),
            "podinfo:6.0.1-faulty",
        );
        let mut last = 0.0;
        for _ in 0..2000 {
            w.step(Duration::from_secs(1));
            let now = w.stats("default", "podinfo").requests;
            assert!(now >= last, "counters went down: {last} -> {now}");
            last = now;
        }
        let c = w.stats("default", "podinfo");
        // 2,000 s at 20 requests/s: Poisson, 40,000 ± 200.
        assert!((c.requests - 40_000.0).abs() < 1_000.0, "{c:?}");
        let fraction = c.errors / c.requests;
        let se = (0.05 * 0.95 / c.requests).sqrt();
        assert!(
            (fraction - 0.05).abs() < 4.0 * se,
            "error fraction {fraction} (se {se})"
        );
        assert!(
            fraction != 0.05,
            "exactly the expected fraction: not sampled"
        );
        // Per-second counts are whole numbers that vary like a Poisson's (variance ≈ mean).
        let ok = per_second(&w, "podinfo", 200, 2000.0);
        let errors = per_second(&w, "podinfo", 500, 2000.0);
        let counts: Vec<f64> = ok
            .values()
            .zip(errors.values())
            .map(|(a, b)| a + b)
            .collect();
        assert!(counts.iter().all(|n| n.fract() == 0.0));
        let mean = counts.iter().sum::<f64>() / counts.len() as f64;
        let var = counts.iter().map(|n| (n - mean) * (n - mean)).sum::<f64>()
            / (counts.len() as f64 - 1.0);
        assert!(
            (mean - 20.0).abs() < 0.5 && (10.0..30.0).contains(&var),
            "{mean} {var}"
        );
        assert!(errors.values().any(|n| *n == 0.0) && errors.values().any(|n| *n >= 2.0));
        // Latencies drawn per request: whole bucket counts, about half within the median.
        let series = w.series();
        let (_, counts) = series
            .iter()
            .find(|(k, _)| k.backend.workload == "podinfo" && k.code == 200)
            .unwrap();
        let buckets = &counts.buckets[Layouts::DEFAULT];
        assert!(buckets.iter().all(|b| b.fract() == 0.0));
        let le_100ms = buckets[Layouts::DEFAULT_SECS
            .iter()
            .position(|b| *b == 0.1)
            .unwrap()];
        assert!(
            (le_100ms / counts.requests - 0.5).abs() < 0.02,
            "{le_100ms}"
        );
        assert!(buckets.windows(2).all(|p| p[0] <= p[1]));
        let mean_latency = counts.latency_sum_secs / counts.requests;
        let want = Latency::new(0.1, Some(0.4)).mean();
        assert!(
            (mean_latency / want - 1.0).abs() < 0.03,
            "{mean_latency} vs {want}"
        );
        // The fixed-latency primary stays fixed: everything in the 50 ms bucket.
        let primary = w.series();
        let (_, p) = primary
            .iter()
            .find(|(k, _)| k.backend.workload == "podinfo-primary")
            .unwrap();
        let le_50ms = Layouts::DEFAULT_SECS
            .iter()
            .position(|b| *b == 0.05)
            .unwrap();
        assert_eq!(p.buckets[Layouts::DEFAULT][le_50ms - 1], 0.0);
        assert_eq!(p.buckets[Layouts::DEFAULT][le_50ms], p.requests);
    }

    #[test]
    fn noise_is_deterministic_given_the_seed() {
        let a = golden_report(&noisy(7, 200));
        assert_eq!(a, golden_report(&noisy(7, 200)));
        assert_ne!(a, golden_report(&noisy(8, 200)));
    }

    #[test]
    fn incidents_hit_primary_and_canary_inside_their_window() {
        let w = world(
            &format!(
                "{LOAD}  images:\n    - match: faulty\n      errorRate: 0.1\n  incidents:\n    - match: podinfo\n      start: 10s\n      duration: 5s\n      errorRate: 0.25\n      latencyFactor: 3\n    - match: elsewhere\n      start: 0s\n      duration: 1h\n      errorRate: 1\n"
            ),
            "podinfo:6.0.1-faulty",
        );
        // Steps that do not fall on the incident's edges: 8.5 → 11 → 13.5 → 16 → 20.
        w.step(Duration::from_millis(8500));
        for _ in 0..3 {
            w.step(Duration::from_millis(2500));
        }
        w.step(Duration::from_secs(4));
        let canary = per_second(&w, "podinfo", 500, 20.0);
        let primary = per_second(&w, "podinfo-primary", 500, 20.0);
        for sec in 0..20u64 {
            let inside = (10..15).contains(&sec);
            let (want_canary, want_primary) = if inside { (7.0, 5.0) } else { (2.0, 0.0) };
            let near = |got: f64, want: f64| (got - want).abs() < 1e-9;
            assert!(
                near(canary[&sec], want_canary),
                "canary at {sec}: {}",
                canary[&sec]
            );
            assert!(
                near(primary[&sec], want_primary),
                "primary at {sec}: {}",
                primary[&sec]
            );
        }
        // Totals: 5 s of the incident on each workload.
        let c = w.stats("default", "podinfo");
        let p = w.stats("default", "podinfo-primary");
        assert!((c.errors - (15.0 * 2.0 + 5.0 * 7.0)).abs() < 1e-9, "{c:?}");
        assert!((p.errors - 5.0 * 5.0).abs() < 1e-9, "{p:?}");
        // Latency ×3 during the incident: primary's fixed 50 ms is 150 ms for 100 of 400
        // requests.
        let series = w.series();
        let sum: f64 = series
            .iter()
            .filter(|(k, _)| k.backend.workload == "podinfo-primary")
            .map(|(_, c)| c.latency_sum_secs)
            .sum();
        assert!((sum - (300.0 * 0.05 + 100.0 * 0.15)).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn intermittent_faults_only_inside_the_duty_part() {
        for noise in ["", "  noise: {seed: 3}\n"] {
            let w = world(
                &format!(
                    "{LOAD}{noise}  images:\n    - match: faulty\n      errorRate: 0.5\n      intermittent: {{period: 10s, duty: 0.3}}\n"
                ),
                "podinfo:6.0.1-faulty",
            );
            // Steps of 0.7 s cross the cycle's edges at odd places.
            for _ in 0..100 {
                w.step(Duration::from_millis(700));
            }
            let errors = per_second(&w, "podinfo", 500, 70.0);
            let ok = per_second(&w, "podinfo", 200, 70.0);
            for (sec, n) in &errors {
                if sec % 10 >= 3 {
                    assert_eq!(*n, 0.0, "{noise:?}: errors at {sec}");
                } else if noise.is_empty() {
                    assert!((n - 10.0).abs() < 1e-9, "{noise:?}: {n} errors at {sec}");
                    assert!((ok[sec] - 10.0).abs() < 1e-9);
                }
            }
            let on: f64 = errors
                .iter()
                .filter(|(s, _)| *s % 10 < 3)
                .map(|(_, n)| n)
                .sum();
            // 21 s on at 20/s, half failing: 210 expected (sampled: within a few sd).
            assert!((on - 210.0).abs() < 50.0, "{noise:?}: {on}");
            assert_eq!(w.stats("default", "podinfo-primary").errors, 0.0);
        }
    }

    #[test]
    fn rejects_what_it_cannot_simulate() {
        for traffic in [
            "  images:\n    - match: x\n      intermittent: {period: 0s, duty: 0.5}\n",
            "  images:\n    - match: x\n      intermittent: {period: 1s, duty: 1.5}\n",
            "  incidents:\n    - {match: x, duration: 1s, latencyFactor: 0}\n",
        ] {
            let t = Scenario::parse(&format!("traffic:\n{traffic}"))
                .unwrap()
                .traffic;
            let store = Arc::new(Store::new(10));
            assert!(World::new(store, t, true, false).is_err(), "{traffic}");
        }
    }
}
