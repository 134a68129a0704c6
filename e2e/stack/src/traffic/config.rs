//! The scenario file's `traffic` section: which routing objects the world reads, which
//! services get load and at what rate, how each image behaves, and (opt-in) sampled noise and
//! timed incidents.
//!
//! ```yaml
//! traffic:
//!   provider: istio            # kubernetes (default), istio, gatewayapi, linkerd, smi, osm, nginx
//!   services:                  # omit for the defaults (see `Traffic::default_services`)
//!     - name: podinfo
//!       namespace: test        # default: default
//!       rate: 20               # requests per second
//!       abTesting:             # a fraction of the requests carries these headers/cookies
//!         fraction: 0.1
//!         headers: {x-canary: insider}
//!         cookies: {canary: always}
//!   images:                    # first match (substring of the image reference) wins
//!     - match: faulty
//!       errorRate: 0.3
//!     - match: slow
//!       latency: 1.5s
//!       p99: 2s                # optional: log-normal with this 99th percentile
//!     - match: flaky
//!       errorRate: 0.5
//!       intermittent:          # optional: the errorRate holds only during the first
//!         period: 60s          # duty × period of each period (world time), else 0
//!         duty: 0.25
//!   noise:                     # optional: sample requests instead of expected values
//!     seed: 42                 # same seed and same clock steps: same series
//!   incidents:                 # optional: degradations of every matching workload
//!     - match: podinfo         # substring of the workload name (podinfo, podinfo-primary)
//!       start: 5m              # world time (since the world started) it begins
//!       duration: 2m
//!       errorRate: 0.2         # added to each version's error rate (clamped to 1)
//!       latencyFactor: 3       # multiplies every latency (default 1)
//! ```
//!
//! Without `noise` requests are counted fractionally (expected values, exact figures); with it
//! every second of every flow draws a Poisson request count, a binomial error count and a
//! latency per request. Incidents and intermittent faults are timed on the world's clock
//! (`World::now`: seconds since the world was created, or the manual clock's time), and an
//! accrual that spans one of their edges is split there.

use crate::scenario::{duration_str, opt_duration_str};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Default request rate of every loaded Service without a scenario (requests/s).
pub const DEFAULT_RATE: f64 = 20.0;
/// Default latency of an image no rule names.
pub const DEFAULT_LATENCY: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// The routing objects the world follows (a Flagger `-mesh-provider` value).
    #[serde(default = "default_provider")]
    pub provider: String,
    /// Loaded services; `None`: every Service that selects a Deployment (see the README).
    #[serde(default)]
    pub services: Option<Vec<ServiceLoad>>,
    /// Per-image behaviour; first match wins. Giving it replaces the default rules.
    #[serde(default = "default_images")]
    pub images: Vec<Behaviour>,
    /// Annotation prefix of NGINX canary Ingresses (Flagger's `-ingress-annotations-prefix`).
    #[serde(default = "default_nginx_prefix")]
    pub ingress_annotations_prefix: String,
    /// Sampled requests instead of expected values; `None`: exact fractional counts.
    #[serde(default)]
    pub noise: Option<Noise>,
    /// Timed degradations of the workloads whose names match.
    #[serde(default)]
    pub incidents: Vec<Incident>,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            provider: default_provider(),
            services: None,
            images: default_images(),
            ingress_annotations_prefix: default_nginx_prefix(),
            noise: None,
            incidents: Vec::new(),
        }
    }
}

/// Load on one Service (the apex, as a client in the mesh or behind the ingress sees it).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceLoad {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default = "default_rate")]
    pub rate: f64,
    #[serde(default)]
    pub ab_testing: Option<AbTesting>,
}

/// The share of requests that carries the A/B test's header or cookie.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbTesting {
    pub fraction: f64,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub cookies: BTreeMap<String, String>,
}

/// How requests to pods of matching images behave.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Behaviour {
    #[serde(rename = "match")]
    pub pattern: String,
    /// Fraction of requests answered 500.
    #[serde(default)]
    pub error_rate: f64,
    /// Median latency (all requests take exactly this long unless `p99` is set).
    #[serde(default, with = "opt_duration_str")]
    pub latency: Option<Duration>,
    /// 99th percentile: latencies are log-normal with the median above and this P99.
    #[serde(default, with = "opt_duration_str")]
    pub p99: Option<Duration>,
    /// The error rate holds only during part of each period; healthy otherwise.
    #[serde(default)]
    pub intermittent: Option<Intermittent>,
}

/// An intermittent fault: on during the first `duty × period` of each period, counted from
/// world time 0.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intermittent {
    #[serde(with = "duration_str")]
    pub period: Duration,
    /// Fraction of the period the fault is on (0 to 1).
    pub duty: f64,
}

/// Sampling: Poisson request counts, binomial errors, one latency draw per request.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Noise {
    pub seed: u64,
}

/// A degradation of every workload whose name contains `pattern` (primary and canary alike)
/// during `[start, start + duration)` of world time.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    #[serde(rename = "match")]
    pub pattern: String,
    #[serde(default, with = "opt_duration_str")]
    pub start: Option<Duration>,
    #[serde(with = "duration_str")]
    pub duration: Duration,
    /// Added to the error rate (the sum is clamped to 0..1).
    #[serde(default)]
    pub error_rate: f64,
    /// Multiplies every latency.
    #[serde(default = "default_latency_factor")]
    pub latency_factor: f64,
}

impl Incident {
    /// `[start, end)` in world seconds.
    pub fn window(&self) -> (f64, f64) {
        let start = self.start.unwrap_or_default().as_secs_f64();
        (start, start + self.duration.as_secs_f64())
    }
}

fn default_latency_factor() -> f64 {
    1.0
}

fn default_provider() -> String {
    "kubernetes".into()
}

fn default_namespace() -> String {
    "default".into()
}

fn default_rate() -> f64 {
    DEFAULT_RATE
}

fn default_nginx_prefix() -> String {
    "nginx.ingress.kubernetes.io".into()
}

/// Without a scenario: `faulty` fails 30 %, `slow` answers in about 1.5 s.
fn default_images() -> Vec<Behaviour> {
    vec![
        Behaviour {
            pattern: "faulty".into(),
            error_rate: 0.3,
            latency: None,
            p99: None,
            intermittent: None,
        },
        Behaviour {
            pattern: "slow".into(),
            error_rate: 0.0,
            latency: Some(Duration::from_millis(1500)),
            p99: None,
            intermittent: None,
        },
    ]
}

/// Which routing objects a provider writes (the world reads only those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Plain Service selectors (Flagger's `kubernetes`: blue/green without a mesh).
    Kubernetes,
    /// `networking.istio.io` VirtualService.
    Istio,
    /// `gateway.networking.k8s.io` HTTPRoute.
    GatewayApi,
    /// `split.smi-spec.io` TrafficSplit (`linkerd`, `smi:*`, `osm`).
    Smi,
    /// NGINX Ingress canary annotations.
    Nginx,
}

impl Provider {
    /// Parses a Flagger mesh-provider value; the ones the world cannot follow are an error.
    pub fn parse(s: &str) -> Result<Provider, String> {
        Ok(match s {
            "kubernetes" => Provider::Kubernetes,
            "istio" => Provider::Istio,
            "linkerd" | "osm" => Provider::Smi,
            s if s.starts_with("smi") => Provider::Smi,
            s if s.starts_with("gatewayapi") => Provider::GatewayApi,
            "nginx" => Provider::Nginx,
            other => {
                return Err(format!(
                    "traffic provider {other:?} is not emulated (use kubernetes, istio, gatewayapi[:v1|:v1beta1], linkerd, smi[:...], osm or nginx)"
                ));
            }
        })
    }
}

impl Traffic {
    /// Rejects what the world cannot simulate: a non-positive intermittent period, a duty
    /// outside 0..1, a non-finite error rate, a non-positive latency factor.
    pub fn validate(&self) -> Result<(), String> {
        for r in &self.images {
            if let Some(i) = &r.intermittent {
                if i.period.is_zero() {
                    return Err(format!(
                        "traffic image {:?}: intermittent period must be positive",
                        r.pattern
                    ));
                }
                if !(0.0..=1.0).contains(&i.duty) {
                    return Err(format!(
                        "traffic image {:?}: intermittent duty must be within 0 and 1",
                        r.pattern
                    ));
                }
            }
        }
        for i in &self.incidents {
            if !i.error_rate.is_finite() {
                return Err(format!(
                    "traffic incident {:?}: errorRate must be a number",
                    i.pattern
                ));
            }
            if !(i.latency_factor.is_finite() && i.latency_factor > 0.0) {
                return Err(format!(
                    "traffic incident {:?}: latencyFactor must be positive",
                    i.pattern
                ));
            }
        }
        Ok(())
    }

    /// The behaviour of a pod running these images: the first rule matching any of them.
    pub fn behaviour(&self, images: &[String]) -> crate::traffic::latency::Profile {
        let rule = self
            .images
            .iter()
            .find(|r| images.iter().any(|i| i.contains(&r.pattern)));
        let median = rule.and_then(|r| r.latency).unwrap_or(DEFAULT_LATENCY);
        crate::traffic::latency::Profile {
            error_rate: rule.map(|r| r.error_rate.clamp(0.0, 1.0)).unwrap_or(0.0),
            latency: crate::traffic::latency::Latency::new(
                median.as_secs_f64(),
                rule.and_then(|r| r.p99).map(|d| d.as_secs_f64()),
            ),
            intermittent: rule.and_then(|r| r.intermittent.as_ref()).map(|i| {
                crate::traffic::latency::Duty {
                    period: i.period.as_secs_f64(),
                    on: i.period.as_secs_f64() * i.duty.clamp(0.0, 1.0),
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    #[test]
    fn defaults_without_a_scenario() {
        let t = Traffic::default();
        assert_eq!(Provider::parse(&t.provider), Ok(Provider::Kubernetes));
        assert!(t.services.is_none());
        let b = |image: &str| t.behaviour(&[image.to_string()]);
        assert_eq!(b("podinfo:6.0.1-faulty").error_rate, 0.3);
        assert_eq!(b("podinfo:6.0.2-slow").latency.mean(), 1.5);
        assert_eq!(b("podinfo:6.0.0").error_rate, 0.0);
        assert_eq!(b("podinfo:6.0.0").latency.mean(), 0.05);
    }

    #[test]
    fn parses_the_documented_section() {
        let s = Scenario::parse(
            "traffic:\n  provider: gatewayapi:v1beta1\n  services:\n    - name: podinfo\n      namespace: test\n      rate: 50\n      abTesting:\n        fraction: 0.1\n        headers: {x-canary: insider}\n        cookies: {canary: always}\n  images:\n    - match: v2\n      errorRate: 0.05\n      latency: 100ms\n      p99: 400ms\n",
        )
        .unwrap();
        let t = &s.traffic;
        assert_eq!(Provider::parse(&t.provider), Ok(Provider::GatewayApi));
        let load = &t.services.as_ref().unwrap()[0];
        assert_eq!((load.namespace.as_str(), load.rate), ("test", 50.0));
        assert_eq!(
            load.ab_testing.as_ref().unwrap().cookies["canary"],
            "always"
        );
        let b = t.behaviour(&["app:v2".to_string()]);
        assert_eq!(b.error_rate, 0.05);
        assert!((b.latency.cdf(0.4) - 0.99).abs() < 1e-4);
        // Giving `images` replaces the defaults: `faulty` is healthy now.
        assert_eq!(t.behaviour(&["x:faulty".to_string()]).error_rate, 0.0);
    }

    #[test]
    fn parses_noise_incidents_and_intermittent() {
        let s = Scenario::parse(
            "traffic:\n  images:\n    - match: flaky\n      errorRate: 0.5\n      intermittent:\n        period: 60s\n        duty: 0.25\n  noise:\n    seed: 42\n  incidents:\n    - match: podinfo\n      start: 5m\n      duration: 2m\n      errorRate: 0.2\n      latencyFactor: 3\n    - match: other\n      duration: 30s\n",
        )
        .unwrap();
        let t = &s.traffic;
        assert_eq!(t.noise.as_ref().unwrap().seed, 42);
        assert_eq!(t.incidents[0].window(), (300.0, 420.0));
        assert_eq!(
            (t.incidents[0].error_rate, t.incidents[0].latency_factor),
            (0.2, 3.0)
        );
        // `start` defaults to 0, `errorRate` to 0, `latencyFactor` to 1.
        assert_eq!(t.incidents[1].window(), (0.0, 30.0));
        assert_eq!(
            (t.incidents[1].error_rate, t.incidents[1].latency_factor),
            (0.0, 1.0)
        );
        let d = t.behaviour(&["x:flaky".into()]).intermittent.unwrap();
        assert_eq!((d.period, d.on), (60.0, 15.0));
        assert!(t.validate().is_ok());
        // Absent keys: nothing changes.
        let d = Traffic::default();
        assert!(d.noise.is_none() && d.incidents.is_empty());
        assert!(d.behaviour(&["x:faulty".into()]).intermittent.is_none());
        // `duration` and `period` are required.
        assert!(Scenario::parse("traffic:\n  incidents:\n    - match: x\n").is_err());
        assert!(
            Scenario::parse("traffic:\n  images:\n    - match: x\n      intermittent: {duty: 1}\n")
                .is_err()
        );
    }

    #[test]
    fn providers() {
        for (s, p) in [
            ("istio", Provider::Istio),
            ("linkerd", Provider::Smi),
            ("osm", Provider::Smi),
            ("smi:v1alpha3:istio", Provider::Smi),
            ("gatewayapi:v1", Provider::GatewayApi),
            ("nginx", Provider::Nginx),
        ] {
            assert_eq!(Provider::parse(s), Ok(p), "{s}");
        }
        assert!(
            Provider::parse("contour")
                .unwrap_err()
                .contains("not emulated")
        );
    }
}
