//! serin's own metrics under Flagger's metric names and labels, so existing dashboards and
//! alerts keep working, served with `/healthz` on `--port`. Label values are bounded: canary
//! and namespace names (one series per canary), strategy and a fixed status vocabulary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Families {
    /// name → (labels → value)
    gauges: BTreeMap<&'static str, BTreeMap<Labels, f64>>,
    counters: BTreeMap<&'static str, BTreeMap<Labels, f64>>,
}

#[derive(Default)]
pub struct Telemetry {
    families: Mutex<Families>,
}

const HELP: [(&str, &str); 8] = [
    (
        "flagger_info",
        "Information about the controller (serin, speaking Flagger's API)",
    ),
    ("flagger_canary_total", "Canaries per namespace"),
    (
        "flagger_canary_status",
        "Last status of a canary: 0 progressing, 1 other, 2 failed",
    ),
    (
        "flagger_canary_weight",
        "Traffic weight of the primary and the canary workload",
    ),
    (
        "flagger_canary_metric_analysis",
        "Last value of each metric check",
    ),
    ("flagger_canary_successes_total", "Releases promoted"),
    (
        "serin_reconcile_errors_total",
        "Reconciles that failed, by reason (blocked specs and transient errors)",
    ),
    (
        "flagger_canary_failures_total",
        "Releases rolled back or failed",
    ),
];

impl Telemetry {
    pub fn set(&self, name: &'static str, labels: Labels, value: f64) {
        if let Ok(mut f) = self.families.lock() {
            f.gauges.entry(name).or_default().insert(labels, value);
        }
    }

    pub fn inc(&self, name: &'static str, labels: Labels) {
        if let Ok(mut f) = self.families.lock() {
            *f.counters
                .entry(name)
                .or_default()
                .entry(labels)
                .or_default() += 1.0;
        }
    }

    /// Forgets every gauge series of a deleted canary, so dashboards do not show ghosts.
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut f) = self.families.lock() {
            for series in f.gauges.values_mut() {
                series.retain(|labels, _| {
                    let ns = labels
                        .iter()
                        .any(|(k, v)| *k == "namespace" && v == namespace);
                    let n = labels.iter().any(|(k, v)| *k == "name" && v == name);
                    !(ns && n)
                });
            }
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(f) = self.families.lock() else {
            return out;
        };
        for (kind, families) in [("gauge", &f.gauges), ("counter", &f.counters)] {
            for (name, series) in families {
                let help = HELP.iter().find(|(n, _)| n == name).map_or("", |(_, h)| h);
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (labels, value) in series {
                    let labels: Vec<String> = labels
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                        .collect();
                    let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
                }
            }
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `/metrics` and `/healthz` until the process ends. HTTP/1.0-style: one request per
/// connection, which is all a scraper or a kubelet probe needs.
pub async fn serve(listener: TcpListener, telemetry: std::sync::Arc<Telemetry>) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n = socket.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, content_type, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", telemetry.render()),
                "/healthz" | "/readyz" => ("200 OK", "text/plain", "OK".to_string()),
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_gauges_and_counters_with_escaped_labels() {
        let t = Telemetry::default();
        let labels = vec![
            ("name", "podinfo".to_string()),
            ("namespace", "te\"st".to_string()),
        ];
        t.set("flagger_canary_status", labels.clone(), 2.0);
        t.inc("flagger_canary_failures_total", labels.clone());
        t.inc("flagger_canary_failures_total", labels);
        let text = t.render();
        assert!(
            text.contains("# TYPE flagger_canary_status gauge"),
            "{text}"
        );
        assert!(
            text.contains("flagger_canary_status{name=\"podinfo\",namespace=\"te\\\"st\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "flagger_canary_failures_total{name=\"podinfo\",namespace=\"te\\\"st\"} 2"
            )
        );
        t.forget("te\"st", "podinfo");
        assert!(!t.render().contains("flagger_canary_status{"));
    }
}
