//! The scenario file: workload behaviour and faults. YAML (or JSON), every field optional:
//!
//! ```yaml
//! workloads:
//!   readyDelay: 1s          # how long new pods take to become ready
//!   nodes: 3                # simulated nodes, for DaemonSets
//!   images:                 # first match wins; `match` is a substring of the image
//!     - match: "broken"
//!       ready: never
//!     - match: "podinfo:6.0.2-slow"
//!       readyDelay: 5s
//! faults:                   # see faults.rs
//!   - verb: update
//!     resource: deployments
//!     errorRate: 0.1
//!     status: 503
//! ```
//!
//! plus `traffic` (see `traffic/config.rs`), `datadog`, `newrelic`, `graphite`, `influxdb`,
//! `dynatrace`, `splunk`, `cloudwatch`, `stackdriver`, `keptn` and `externalmetrics` (see those modules). Unknown top-level keys are ignored.

use crate::faults::FaultRule;
use crate::traffic::config::Traffic;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// A parsed scenario file (see the module documentation for the format).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scenario {
    #[serde(default)]
    pub workloads: Workloads,
    #[serde(default)]
    pub faults: Vec<FaultRule>,
    /// The traffic world (see `traffic::config`).
    #[serde(default)]
    pub traffic: Traffic,
    /// The Datadog emulator's keys and initial fault (see `datadog`).
    #[serde(default)]
    pub datadog: crate::datadog::DatadogConfig,
    /// The New Relic emulator's account, keys and initial fault (see `newrelic`).
    #[serde(default)]
    pub newrelic: crate::newrelic::NewRelicConfig,
    /// The Graphite emulator's credentials and initial fault (see `graphite`).
    #[serde(default)]
    pub graphite: crate::graphite::GraphiteConfig,
    /// The InfluxDB emulator's token, organization, bucket and initial fault (see
    /// `influxdb`).
    #[serde(default)]
    pub influxdb: crate::influxdb::InfluxDbConfig,
    /// The Dynatrace emulator's token and initial fault (see `dynatrace`).
    #[serde(default)]
    pub dynatrace: crate::dynatrace::DynatraceConfig,
    /// The Splunk emulator's token and initial fault (see `splunk`).
    #[serde(default)]
    pub splunk: crate::splunk::SplunkConfig,
    /// The CloudWatch emulator's keys, region and initial fault (see `cloudwatch`).
    #[serde(default)]
    pub cloudwatch: crate::cloudwatch::CloudWatchConfig,
    /// The Stackdriver emulator's project, account and initial fault (see `stackdriver`).
    #[serde(default)]
    pub stackdriver: crate::stackdriver::StackdriverConfig,
    /// The External Metrics API adapter's token, window and initial fault (see
    /// `external_metrics`).
    #[serde(default)]
    pub external_metrics: crate::external_metrics::ExternalMetricsConfig,
}

/// How the simulated workloads behave.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workloads {
    /// How long new pods take to become ready (default 1 s).
    #[serde(default = "default_ready_delay", with = "duration_str")]
    pub ready_delay: Duration,
    /// Simulated nodes, for DaemonSets (default 3).
    #[serde(default = "default_nodes")]
    pub nodes: u32,
    /// Per-image behaviour; first match wins (default: `broken` never becomes ready).
    #[serde(default = "default_images")]
    pub images: Vec<ImageRule>,
}

impl Default for Workloads {
    fn default() -> Self {
        Workloads {
            ready_delay: default_ready_delay(),
            nodes: default_nodes(),
            images: default_images(),
        }
    }
}

/// How pods of matching images behave.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRule {
    #[serde(rename = "match")]
    pub pattern: String,
    /// `never`: pods never become ready. Anything else (or absent): they do.
    #[serde(default)]
    pub ready: Option<String>,
    #[serde(default, with = "opt_duration_str")]
    pub ready_delay: Option<Duration>,
}

fn default_ready_delay() -> Duration {
    Duration::from_secs(1)
}

fn default_nodes() -> u32 {
    3
}

/// Without a scenario: an image whose reference contains `broken` never becomes ready.
fn default_images() -> Vec<ImageRule> {
    vec![ImageRule {
        pattern: "broken".into(),
        ready: Some("never".into()),
        ready_delay: None,
    }]
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing scenario {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Ok(Scenario::default());
        }
        Ok(serde_norway::from_str(text)?)
    }
}

impl Workloads {
    /// `None` if pods of this image never become ready, else their ready delay.
    pub fn ready_after(&self, image: &str) -> Option<Duration> {
        match self.images.iter().find(|r| image.contains(&r.pattern)) {
            Some(r) if r.ready.as_deref() == Some("never") => None,
            Some(r) => Some(r.ready_delay.unwrap_or(self.ready_delay)),
            None => Some(self.ready_delay),
        }
    }
}

/// Parses `250ms`, `1s`, `1.5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("invalid duration unit in {s:?} (use ms, s, m or h)"),
    };
    if !(0.0..=1e9).contains(&secs) {
        bail!("duration out of range: {s:?}");
    }
    Ok(Duration::from_secs_f64(secs))
}

pub(crate) mod duration_str {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let s = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "invalid duration {other}"
                )));
            }
        };
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

pub(crate) mod opt_duration_str {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v = Option::<serde_json::Value>::deserialize(d)?;
        match v {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => super::parse_duration(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            Some(serde_json::Value::Number(n)) => super::parse_duration(&n.to_string())
                .map(Some)
                .map_err(serde::de::Error::custom),
            Some(other) => Err(serde::de::Error::custom(format!(
                "invalid duration {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_example() {
        let s = Scenario::parse(
            "workloads:\n  readyDelay: 2s\n  nodes: 5\n  images:\n    - match: broken\n      ready: never\n    - match: slow\n      readyDelay: 5s\nfaults:\n  - verb: update\n    resource: deployments\n    errorRate: 0.1\n    status: 503\n  - latency: 50ms\ntraffic: {}\n",
        )
        .unwrap();
        assert_eq!(s.workloads.nodes, 5);
        assert_eq!(s.workloads.ready_after("x:broken"), None);
        assert_eq!(
            s.workloads.ready_after("x:slow"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(s.workloads.ready_after("x:1"), Some(Duration::from_secs(2)));
        assert_eq!(s.faults.len(), 2);
        assert_eq!(s.faults[1].latency, Some(Duration::from_millis(50)));
        assert!(parse_duration("3x").is_err());
    }
}
