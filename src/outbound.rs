//! Where serin may send HTTP requests: metric providers, webhooks and alerts.
//!
//! Every destination comes from a tenant's object (a MetricTemplate `address`, a webhook
//! `url`, an AlertProvider `address`), so each is a request the tenant makes with serin's
//! network position. By default serin refuses the link-local range and cloud metadata
//! endpoints (169.254.0.0/16, fe80::/10, fd00:ec2::254, `metadata.google.internal`), which
//! hand out node credentials to whoever asks. An optional allow-list (`--outbound-allow`)
//! narrows every destination to the listed hosts and CIDRs.
//!
//! The check runs where it cannot be dodged: on the URL before sending (IP literals never
//! reach a resolver), on every address a name resolves to (a DNS name pointing at
//! 169.254.169.254 is refused too), and on every redirect.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use ipnet::IpNet;

/// One allow-list entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// Addresses in this network, however they were named (an explicit entry also admits
    /// a link-local or metadata address).
    Net(IpNet),
    /// This host name exactly, or with `*.` every name under it.
    Host(String),
}

impl std::str::FromStr for Allowed {
    type Err = String;

    fn from_str(entry: &str) -> Result<Allowed, String> {
        let entry = entry.trim();
        if let Ok(net) = entry.parse::<IpNet>() {
            return Ok(Allowed::Net(net));
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            return Ok(Allowed::Net(IpNet::from(ip)));
        }
        let name = entry.strip_prefix("*.").unwrap_or(entry);
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid {
            return Err(format!(
                "`{entry}` is neither a CIDR (10.0.0.0/8), an address, a host name \
                 (prometheus.monitoring) nor a wildcard (*.datadoghq.com)"
            ));
        }
        Ok(Allowed::Host(entry.to_ascii_lowercase()))
    }
}

/// The outbound policy of the process.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Empty: every destination but the refused ranges.
    pub allow: Vec<Allowed>,
    /// Admit link-local and metadata destinations without listing them.
    pub allow_link_local: bool,
}

/// Host names of metadata services that are not link-local addresses by name.
const METADATA_HOSTS: [&str; 2] = ["metadata.google.internal", "metadata"];

impl Policy {
    /// Whether `host` (as named in a URL) may be asked for at all, before resolution.
    pub fn check_host(&self, host: &str) -> Result<(), String> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.check_addr(None, ip);
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if METADATA_HOSTS.contains(&host.as_str()) && !self.allow_link_local && !self.names(&host) {
            return Err(format!(
                "{host} is a cloud metadata endpoint, which serin refuses (--outbound-allow \
                 it to call it anyway)"
            ));
        }
        Ok(())
    }

    /// Whether `ip`, reached through the name `host` (None for a literal), may be called.
    pub fn check_addr(&self, host: Option<&str>, ip: IpAddr) -> Result<(), String> {
        let ip = ip.to_canonical();
        let listed = self
            .allow
            .iter()
            .any(|a| matches!(a, Allowed::Net(net) if net.contains(&ip)));
        if listed {
            return Ok(());
        }
        if is_link_local_or_metadata(ip) && !self.allow_link_local {
            return Err(format!(
                "{ip} is a link-local or cloud metadata address, which serin refuses \
                 (--outbound-allow {ip} to call it anyway)"
            ));
        }
        let named = host.is_some_and(|h| self.names(h));
        if self.allow.is_empty() || named {
            return Ok(());
        }
        let via = host
            .map(|h| format!("{h} ({ip})"))
            .unwrap_or(ip.to_string());
        Err(format!(
            "{via} is not in serin's outbound allow-list (--outbound-allow)"
        ))
    }

    fn names(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allow.iter().any(|a| match a {
            Allowed::Host(pattern) => match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .strip_suffix(suffix)
                    .is_some_and(|rest| rest.ends_with('.')),
                None => *pattern == host,
            },
            Allowed::Net(_) => false,
        })
    }

    /// Whether a URL may be called (its host, before resolution).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), String> {
        match url.host_str() {
            Some(host) => self.check_host(host),
            None => Err(format!("{url} has no host")),
        }
    }
}

/// 169.254.0.0/16 and fe80::/10 (where AWS, GCP, Azure, OpenStack and others serve instance
/// metadata and credentials), and AWS' IPv6 metadata address fd00:ec2::254.
fn is_link_local_or_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6 == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

static POLICY: OnceLock<Policy> = OnceLock::new();

/// Sets the process' policy (the controller does, from its flags, before any client is
/// built). A second call is ignored: the policy of a running process does not change.
pub fn install(policy: Policy) {
    let _ = POLICY.set(policy);
}

/// The process' policy: the installed one, else the default (refuse link-local and metadata).
pub fn policy() -> &'static Policy {
    POLICY.get_or_init(Policy::default)
}

/// A client builder that resolves and redirects only within [`policy`]. Every HTTP client
/// serin builds for tenant-named destinations starts here.
pub fn client_builder() -> reqwest::ClientBuilder {
    // reqwest is built without a crypto provider of its own (and panics building a client
    // without one); ring is the one kube links. Installed once per process, first come.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 10 {
            return attempt.error("more than 10 redirects");
        }
        match policy().check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(refused) => attempt.error(format!("redirect refused: {refused}")),
        }
    });
    reqwest::Client::builder()
        .user_agent(concat!("serin/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(Resolver))
        .redirect(redirects)
}

/// The system resolver, keeping only the addresses the policy admits.
#[derive(Debug)]
struct Resolver;

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            policy().check_host(&host)?;
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let admitted: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match policy().check_addr(Some(&host), addr.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused = Some(why);
                        false
                    }
                })
                .collect();
            if admitted.is_empty() {
                let why = refused.unwrap_or_else(|| format!("{host} resolves to no address"));
                return Err(why.into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(admitted.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(entries: &[&str]) -> Policy {
        Policy {
            allow: entries.iter().map(|e| e.parse().unwrap()).collect(),
            allow_link_local: false,
        }
    }

    #[test]
    fn metadata_and_link_local_are_refused_by_default() {
        let p = Policy::default();
        for host in [
            "169.254.169.254",
            "[fd00:ec2::254]",
            "[fe80::1]",
            "metadata.google.internal",
            "METADATA.google.internal.",
            "::ffff:169.254.169.254",
        ] {
            let err = p.check_host(host).unwrap_err();
            assert!(err.contains("--outbound-allow"), "{host}: {err}");
        }
        for host in ["127.0.0.1", "prometheus.monitoring", "10.0.0.7", "[::1]"] {
            assert!(p.check_host(host).is_ok(), "{host}");
        }
        // A name that resolves to the metadata address is refused at resolution.
        let ip = "169.254.169.254".parse().unwrap();
        assert!(p.check_addr(Some("innocent.example"), ip).is_err());
    }

    #[test]
    fn an_allow_list_admits_its_hosts_and_networks_only() {
        let p = allow(&["10.0.0.0/8", "prometheus.monitoring", "*.datadoghq.com"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.check_addr(None, ip("10.1.2.3")).is_ok());
        assert!(p.check_addr(Some("x"), ip("10.1.2.3")).is_ok());
        assert!(
            p.check_addr(Some("prometheus.monitoring"), ip("192.168.1.1"))
                .is_ok()
        );
        assert!(
            p.check_addr(Some("api.datadoghq.com"), ip("52.1.1.1"))
                .is_ok()
        );
        assert!(
            p.check_addr(Some("datadoghq.com.evil.io"), ip("52.1.1.1"))
                .is_err()
        );
        assert!(
            p.check_addr(Some("evildatadoghq.com"), ip("52.1.1.1"))
                .is_err()
        );
        let err = p
            .check_addr(Some("example.com"), ip("93.1.1.1"))
            .unwrap_err();
        assert!(err.contains("allow-list"), "{err}");
        // A listed name still cannot reach metadata; a listed network can.
        assert!(
            p.check_addr(Some("prometheus.monitoring"), ip("169.254.169.254"))
                .is_err()
        );
        let explicit = allow(&["169.254.169.254/32"]);
        assert!(explicit.check_addr(None, ip("169.254.169.254")).is_ok());
    }

    #[test]
    fn allow_entries_are_checked() {
        assert!("10.0.0.0/8".parse::<Allowed>().is_ok());
        assert!("::1".parse::<Allowed>().is_ok());
        assert!("*.example.com".parse::<Allowed>().is_ok());
        let err = "http://x/".parse::<Allowed>().unwrap_err();
        assert!(err.contains("CIDR"), "{err}");
        assert!("a..b".parse::<Allowed>().is_err());
    }

    #[tokio::test]
    async fn redirects_to_a_refused_address_are_not_followed() {
        use serin_stack::testing::fake_http::{FakeServer, Response};
        let server = FakeServer::start(|_| {
            Response::text(302, "text/plain", "").with_header(
                "location",
                "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            )
        })
        .await;
        let client = client_builder().build().unwrap();
        let err = client.get(&server.url).send().await.unwrap_err();
        let chain = format!("{err:?}");
        assert!(chain.contains("redirect refused"), "{chain}");
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_called() {
        use serin_stack::testing::fake_http::{FakeServer, Response};
        let server = FakeServer::start(|_| Response::text(200, "text/plain", "ok")).await;
        let url = server.url.replace("127.0.0.1", "localhost");
        let client = client_builder().build().unwrap();
        let answer = client.get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 200);
    }
}
