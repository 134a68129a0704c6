//! `spec.service.trafficPolicy`: the Istio DestinationRule traffic policy serin puts on the
//! primary's and the canary's DestinationRules, typed as Flagger's CRD types it (connection
//! pool, load balancer, outlier detection, TLS), so the API server validates it and `kubectl
//! explain` shows it. Enumerations are strings checked by the schema rather than Rust enums:
//! a Canary stored before this schema with a value Istio would refuse still decodes, and the
//! mesh (not the controller's cache) says what is wrong with it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Istio traffic policy of the generated DestinationRules.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    /// Connection pool settings of the upstream hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    /// Load balancing algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// Ejection of unhealthy hosts from the load balancing pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS settings for connections to the upstream hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPool {
    /// HTTP connection pool settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpConnectionPool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpConnectionPool {
    /// Whether HTTP/1.1 connections to the destination are upgraded to HTTP/2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"]))]
    pub h2_upgrade_policy: Option<String>,
    /// Most pending HTTP requests to a destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<i32>,
    /// Most requests to a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<i32>,
    /// Idle timeout of upstream connection pool connections, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// Most requests per connection to a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<i32>,
    /// Most outstanding retries to the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
}

/// Either a simple algorithm or a consistent hash, not both.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.simple) != has(self.consistentHash)",
    "message": "set exactly one of simple and consistentHash",
}]))]
pub struct LoadBalancer {
    /// A simple algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["ROUND_ROBIN", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "LEAST_REQUEST"]))]
    pub simple: Option<String>,
    /// Session affinity by a hash of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHash>,
    /// Locality-weighted load balancing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// How long a new host's share of the traffic ramps up, e.g. `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<String>,
}

/// What the hash is computed from: exactly one of a header, a cookie, the source IP or a
/// query parameter.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.httpHeaderName) ? 1 : 0) + (has(self.httpCookie) ? 1 : 0) + (has(self.useSourceIp) ? 1 : 0) + (has(self.httpQueryParameterName) ? 1 : 0) == 1",
    "message": "set exactly one of httpHeaderName, httpCookie, useSourceIp and httpQueryParameterName",
}]))]
pub struct ConsistentHash {
    /// Hash of an HTTP cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    /// Hash of an HTTP header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// Hash of an HTTP query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    /// Minimum number of virtual nodes of the hash ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<i64>,
    /// Hash of the source IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCookie {
    /// Name of the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Path of the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Lifetime of the cookie, e.g. `3600s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalityLbSetting {
    /// Traffic shares by locality (only one of `distribute` and `failover`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribute: Option<Vec<LocalityDistribute>>,
    /// Locality load balancing for this DestinationRule, overriding the mesh's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Where traffic fails over to (only one of `distribute` and `failover`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Vec<LocalityFailover>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalityDistribute {
    /// Originating locality, `/`-separated (`region/zone/subzone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Upstream localities and their weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<BTreeMap<String, i64>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalityFailover {
    /// Originating region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Region traffic fails over to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Minimum ejection duration, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    /// 5xx answers in a row before a host is ejected.
    #[serde(
        default,
        rename = "consecutive5xxErrors",
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_5xx_errors: Option<i64>,
    /// Errors in a row before a host is ejected (Istio's older name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<i32>,
    /// Gateway errors (502, 503, 504) in a row before a host is ejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<i32>,
    /// Locally originated failures in a row before ejection (with
    /// `splitExternalLocalOriginErrors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<i32>,
    /// Time between ejection sweeps, e.g. `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Most hosts ejected, in percent of the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i32>,
    /// Outlier detection stops below this share of healthy hosts, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<i32>,
    /// Count locally originated failures apart from the upstream's errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls {
    /// CA certificates file to verify the server's certificate with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Client certificate file; required with `mode: MUTUAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// TLS mode of the connections to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]))]
    pub mode: Option<String>,
    /// Client private key file; required with `mode: MUTUAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// SNI presented to the server in the TLS handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Subject alternative names the server's certificate must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alt_names: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_flagger_traffic_policy_round_trips_unchanged() {
        let written = json!({
            "connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE", "http1MaxPendingRequests": 10,
                "idleTimeout": "30s", "maxRetries": 3}},
            "loadBalancer": {"consistentHash": {"httpCookie": {"name": "user", "ttl": "0s"},
                "minimumRingSize": 1024},
                "localityLbSetting": {"enabled": true,
                    "distribute": [{"from": "eu/zone1/*", "to": {"eu/zone1/*": 80, "eu/zone2/*": 20}}]}},
            "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s",
                "baseEjectionTime": "30s", "maxEjectionPercent": 50},
            "tls": {"mode": "ISTIO_MUTUAL", "subjectAltNames": ["spiffe://a"]}
        });
        let policy: TrafficPolicy = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(
            policy
                .outlier_detection
                .as_ref()
                .unwrap()
                .consecutive_5xx_errors,
            Some(5)
        );
        assert_eq!(serde_json::to_value(&policy).unwrap(), written);
    }

    #[test]
    fn enumerations_are_in_the_schema_not_in_the_decoder() {
        let odd: TrafficPolicy =
            serde_json::from_value(json!({"tls": {"mode": "istio_mutual"}})).unwrap();
        assert_eq!(odd.tls.unwrap().mode.as_deref(), Some("istio_mutual"));
        let schema = serde_json::to_value(schemars::schema_for!(ClientTls)).unwrap();
        assert_eq!(
            schema["properties"]["mode"]["enum"],
            json!(["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"])
        );
    }
}
