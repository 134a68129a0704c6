//! The world's requests as the meshes export them, in Prometheus text format, under the
//! metric names and labels that Flagger's builtin queries read:
//!
//! - Istio: `istio_requests_total`, `istio_request_duration_milliseconds_{bucket,sum,count}`
//!   (`reporter="destination"`, `destination_workload`, `destination_workload_namespace`,
//!   `destination_service_name`, `response_code`, ...)
//! - Linkerd: `response_total`, `response_latency_ms_{bucket,sum,count}` (`namespace`,
//!   `deployment` or `daemonset`, `pod`, `direction="inbound"`, `classification`, `status_code`)
//! - NGINX ingress: `nginx_ingress_controller_requests`,
//!   `nginx_ingress_controller_response_duration_seconds_{bucket,sum,count}` (`namespace`,
//!   `ingress`, `service`, `canary`, `status`), only for requests that came through an Ingress
//! - the app's own histogram, for the kubernetes and Gateway API providers:
//!   `http_request_duration_seconds_{bucket,sum,count}` (`kubernetes_namespace`,
//!   `kubernetes_pod_name`, `method`, `path`, `status`)
//!
//! The app's own histogram is always exported (the app exports it whatever the mesh); the
//! mesh families only under their provider (Istio: `istio`; Linkerd: `linkerd`, `smi`,
//! `osm`; NGINX: `nginx`), to keep scrapes small.

use crate::traffic::config::Provider;
use crate::traffic::world::{Counts, Layouts, SeriesKey};
use std::collections::BTreeMap;
use std::fmt::Write;

type Labels = Vec<(&'static str, String)>;

/// Sums series that share the labels a family exports.
#[derive(Default)]
struct Family {
    series: BTreeMap<Labels, Counts>,
}

impl Family {
    fn add(&mut self, labels: Labels, c: &Counts) {
        let e = self.series.entry(labels).or_insert_with(|| Counts {
            buckets: c.buckets.iter().map(|b| vec![0.0; b.len()]).collect(),
            ..Counts::default()
        });
        e.requests += c.requests;
        e.latency_sum_secs += c.latency_sum_secs;
        for (acc, b) in e.buckets.iter_mut().zip(&c.buckets) {
            for (a, x) in acc.iter_mut().zip(b) {
                *a += x;
            }
        }
    }
}

fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(v);
    }
    std::borrow::Cow::Owned(
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
}

fn label_str(labels: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    parts.join(",")
}

fn counter(out: &mut String, name: &str, help: &str, fam: &Family) {
    if fam.series.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (labels, c) in &fam.series {
        let _ = writeln!(out, "{name}{{{}}} {}", label_str(labels, None), c.requests);
    }
}

/// A histogram; `unit` converts seconds into the family's unit (1000 for milliseconds).
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    fam: &Family,
    layout: usize,
    bounds: &[f64],
    unit: f64,
) {
    if fam.series.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (labels, c) in &fam.series {
        for (i, le) in bounds.iter().enumerate() {
            let n = c
                .buckets
                .get(layout)
                .and_then(|b| b.get(i))
                .copied()
                .unwrap_or(0.0);
            let _ = writeln!(
                out,
                "{name}_bucket{{{}}} {n}",
                label_str(labels, Some(("le", le.to_string())))
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{}}} {}",
            label_str(labels, Some(("le", "+Inf".into()))),
            c.requests
        );
        let l = label_str(labels, None);
        let _ = writeln!(out, "{name}_sum{{{l}}} {}", c.latency_sum_secs * unit);
        let _ = writeln!(out, "{name}_count{{{l}}} {}", c.requests);
    }
}

/// The exposition text for all series.
pub fn render(series: &[(SeriesKey, Counts)], provider: Provider) -> String {
    let mut families = Families::default();
    for (k, c) in series {
        families.add(k, c, provider);
    }
    families.render()
}

/// The families exported, each summing the series under its labels.
#[derive(Default)]
struct Families {
    istio: Family,
    linkerd_total: Family,
    linkerd_latency: Family,
    app: Family,
    nginx: Family,
}

impl Families {
    /// Counts one series in each family that exports it under `provider`.
    fn add(&mut self, k: &SeriesKey, c: &Counts, provider: Provider) {
        let code = k.code.to_string();
        if provider == Provider::Istio {
            self.istio.add(istio_labels(k, &code), c);
        }
        if provider == Provider::Smi {
            let class = if k.code >= 500 { "failure" } else { "success" };
            self.linkerd_total.add(
                linkerd_labels(
                    k,
                    vec![
                        ("classification", class.into()),
                        ("status_code", code.clone()),
                    ],
                ),
                c,
            );
            self.linkerd_latency
                .add(linkerd_labels(k, vec![("status_code", code.clone())]), c);
        }
        let b = &k.backend;
        self.app.add(
            vec![
                ("kubernetes_namespace", b.namespace.clone()),
                ("kubernetes_pod_name", b.pod.clone()),
                ("method", "GET".into()),
                ("path", "/".into()),
                ("status", code.clone()),
            ],
            c,
        );
        if let Some((ingress, canary)) = &k.ingress {
            self.nginx.add(
                vec![
                    ("namespace", b.namespace.clone()),
                    ("ingress", ingress.clone()),
                    ("service", k.service.clone()),
                    ("canary", canary.clone()),
                    ("method", "GET".into()),
                    ("path", "/".into()),
                    ("status", code),
                ],
                c,
            );
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let secs = Layouts::DEFAULT_SECS;
        counter(
            &mut out,
            "istio_requests_total",
            "Requests (Istio standard metric).",
            &self.istio,
        );
        histogram(
            &mut out,
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds (Istio standard metric).",
            &self.istio,
            Layouts::ISTIO,
            Layouts::ISTIO_MS,
            1000.0,
        );
        counter(
            &mut out,
            "response_total",
            "Responses (Linkerd proxy).",
            &self.linkerd_total,
        );
        histogram(
            &mut out,
            "response_latency_ms",
            "Response latency in milliseconds (Linkerd proxy).",
            &self.linkerd_latency,
            Layouts::LINKERD,
            Layouts::LINKERD_MS,
            1000.0,
        );
        histogram(
            &mut out,
            "http_request_duration_seconds",
            "Request duration in seconds (the application's own metric).",
            &self.app,
            Layouts::DEFAULT,
            secs,
            1.0,
        );
        counter(
            &mut out,
            "nginx_ingress_controller_requests",
            "Client requests (ingress-nginx).",
            &self.nginx,
        );
        histogram(
            &mut out,
            "nginx_ingress_controller_response_duration_seconds",
            "Upstream response time in seconds (ingress-nginx).",
            &self.nginx,
            Layouts::DEFAULT,
            secs,
            1.0,
        );
        out
    }
}

/// Istio's standard labels, as the destination's proxy reports them.
fn istio_labels(k: &SeriesKey, code: &str) -> Labels {
    let b = &k.backend;
    vec![
        ("reporter", "destination".into()),
        ("source_workload", "unknown".into()),
        ("destination_workload", b.workload.clone()),
        ("destination_workload_namespace", b.namespace.clone()),
        (
            "destination_service",
            format!("{}.{}.svc.cluster.local", k.service, b.namespace),
        ),
        ("destination_service_name", k.service.clone()),
        ("destination_service_namespace", b.namespace.clone()),
        ("request_protocol", "http".into()),
        ("response_code", code.to_string()),
    ]
}

/// The labels of Linkerd's inbound proxy metrics, then `extra`.
fn linkerd_labels(k: &SeriesKey, extra: Labels) -> Labels {
    let b = &k.backend;
    let owner = if b.daemonset {
        "daemonset"
    } else {
        "deployment"
    };
    let mut l: Labels = vec![
        ("direction", "inbound".into()),
        ("namespace", b.namespace.clone()),
        (owner, b.workload.clone()),
        ("pod", b.pod.clone()),
    ];
    l.extend(extra);
    l
}
