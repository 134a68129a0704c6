//! Fault modes of the metric-provider emulators (Datadog, New Relic, Graphite, InfluxDB,
//! Dynatrace, Splunk): what a client must survive from a metrics API. Set from the admin server
//! (`POST /datadog/fault`, `/newrelic/fault`, ...), from Rust (`Stack::datadog_faults()`,
//! ...), or in the scenario.
//! Fault modes of the metric-provider emulators (Datadog, New Relic, the External Metrics API
//! adapter): what a client must survive from a metrics API. Set from the admin server
//! (`POST /datadog/fault`, `/newrelic/fault`, `/externalmetrics/fault`), from Rust
//! (`Stack::datadog_faults()`, ...), or in the scenario.
//!
//! ```yaml
//! mode: rate-limit   # null-points | empty | several-series | rate-limit | error | hang | graphql-error
//! status: 502        # for `error` (default 503)
//! count: 2           # only the next 2 requests (default: until cleared)
//! ```

use serde::{Deserialize, Serialize};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultMode {
    /// Values present but null (Datadog and Graphite points, New Relic `result`, InfluxDB
    /// `_value`).
    NullPoints,
    /// No data: Datadog `series: []`, New Relic `results: []`, Graphite `[]`, InfluxDB no
    /// table.
    Empty,
    /// Several series (Datadog, Graphite), rows (New Relic) or tables (InfluxDB) with
    /// different values.
    SeveralSeries,
    /// 429 with the provider's rate-limit headers.
    RateLimit,
    /// A 5xx (`status`) with an HTML body, as a proxy in front of the API sends.
    Error,
    /// Never answers (until the stack stops).
    Hang,
    /// HTTP 200 carrying an error: New Relic NerdGraph's GraphQL `errors` array, InfluxDB's
    /// error table.
    GraphqlError,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderFault {
    pub mode: FaultMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Applies to the next `count` requests only; `None`: until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

impl ProviderFault {
    pub fn new(mode: FaultMode) -> Self {
        ProviderFault {
            mode,
            status: None,
            count: None,
        }
    }
}

/// The active fault of one emulator.
#[derive(Debug, Default)]
pub struct ProviderFaults {
    fault: Mutex<Option<ProviderFault>>,
}

impl ProviderFaults {
    pub fn set(&self, fault: ProviderFault) {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = Some(fault);
    }

    pub fn clear(&self) {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn get(&self) -> Option<ProviderFault> {
        self.fault.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The fault to apply to the request being served (counting it down).
    pub fn take(&self) -> Option<ProviderFault> {
        let mut f = self.fault.lock().unwrap_or_else(|e| e.into_inner());
        let current = f.clone()?;
        match current.count {
            Some(0) => {
                *f = None;
                return None;
            }
            Some(n) if n <= 1 => *f = None,
            Some(n) => {
                if let Some(x) = f.as_mut() {
                    x.count = Some(n - 1);
                }
            }
            None => {}
        }
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_faults_run_out() {
        let f = ProviderFaults::default();
        f.set(ProviderFault {
            count: Some(2),
            ..ProviderFault::new(FaultMode::Empty)
        });
        assert_eq!(f.take().map(|x| x.mode), Some(FaultMode::Empty));
        assert_eq!(f.take().map(|x| x.mode), Some(FaultMode::Empty));
        assert_eq!(f.take(), None);
        f.set(ProviderFault::new(FaultMode::Hang));
        assert!(f.take().is_some() && f.take().is_some());
        f.clear();
        assert_eq!(f.take(), None);
    }

    #[test]
    fn parses_the_documented_shape() {
        let f: ProviderFault =
            serde_norway::from_str("mode: error\nstatus: 502\ncount: 1\n").unwrap();
        assert_eq!(f.mode, FaultMode::Error);
        assert_eq!(f.status, Some(502));
    }
}
