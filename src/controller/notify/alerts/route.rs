//! Where an alert goes: the Canary's `analysis.alerts` whose severity admits it, each resolved
//! to its AlertProvider (and the Secret holding its address).

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serin_core::Severity;

use super::Alert;
use super::payload::Sender;
use crate::api::AlertProvider;
use crate::api::AlertProviderType;
use crate::api::alert_provider::DEFAULT_CHANNEL;
use crate::api::canary::{AlertSeverity, CanaryAlert};

/// A resolved destination. Its `Debug` leaves out the address and token.
#[derive(Clone)]
pub struct Destination {
    /// `<namespace>/<provider>`, or `--slack-url` / `--msteams-url`: what logs name.
    pub name: String,
    pub kind: AlertProviderType,
    pub url: String,
    pub proxy: Option<String>,
    pub channel: String,
    pub username: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Destination {
    pub fn sender(&self) -> Sender<'_> {
        Sender {
            channel: &self.channel,
            username: &self.username,
        }
    }

    /// The global notifier from the flags: Teams when its URL is set (Flagger's precedence),
    /// else Slack.
    pub fn global(flags: &GlobalFlags) -> Option<Destination> {
        let common = |name: &str, kind, url: &String, proxy: &Option<String>| Destination {
            name: name.to_string(),
            kind,
            url: url.clone(),
            proxy: proxy.clone(),
            channel: flags
                .slack_channel
                .clone()
                .unwrap_or(DEFAULT_CHANNEL.into()),
            username: flags.slack_user.clone(),
            token: flags.slack_token.clone(),
        };
        if let Some(url) = flags.msteams_url.as_ref().filter(|u| !u.is_empty()) {
            let mut d = common(
                "--msteams-url",
                AlertProviderType::Msteams,
                url,
                &flags.msteams_proxy_url,
            );
            d.token = None;
            return Some(d);
        }
        let url = flags.slack_url.as_ref().filter(|u| !u.is_empty())?;
        Some(common(
            "--slack-url",
            AlertProviderType::Slack,
            url,
            &flags.slack_proxy_url,
        ))
    }
}

/// Flagger's global notifier flags.
#[derive(Clone, Debug, Default)]
pub struct GlobalFlags {
    pub slack_url: Option<String>,
    pub slack_token: Option<String>,
    pub slack_channel: Option<String>,
    pub slack_user: String,
    pub slack_proxy_url: Option<String>,
    pub msteams_url: Option<String>,
    pub msteams_proxy_url: Option<String>,
}

/// Does an alert at `severity` go to a route of `wanted` severity? `info` (or empty) takes
/// everything, `warn` warnings and errors, `error` errors only.
pub fn admits(wanted: Option<AlertSeverity>, severity: Severity) -> bool {
    match wanted.unwrap_or_default() {
        AlertSeverity::Unset | AlertSeverity::Info => true,
        AlertSeverity::Warn => severity != Severity::Info,
        AlertSeverity::Error => severity == Severity::Error,
    }
}

/// The destinations of `alert` among `routes`; a provider that cannot be read is logged and
/// skipped, the others still get the alert.
pub async fn resolve(
    client: &kube::Client,
    alert: &Alert,
    routes: &[CanaryAlert],
) -> Vec<Destination> {
    let mut out = Vec::new();
    for route in routes.iter().filter(|r| admits(r.severity, alert.severity)) {
        let namespace = route
            .provider_ref
            .namespace
            .clone()
            .unwrap_or_else(|| alert.namespace.clone());
        let name = format!("{namespace}/{}", route.provider_ref.name);
        match provider(client, &namespace, &route.provider_ref.name).await {
            Ok(d) => out.push(Destination { name, ..d }),
            Err(e) => tracing::warn!(
                namespace = %alert.namespace,
                name = %alert.canary,
                alert = %route.name,
                "alert provider {name}: {e}"
            ),
        }
    }
    out
}

async fn provider(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Destination, String> {
    let providers: Api<AlertProvider> = Api::namespaced(client.clone(), namespace);
    let provider = providers
        .get_opt(name)
        .await
        .map_err(|e| format!("cannot read it: {e}"))?
        .ok_or("not found; create it or fix analysis.alerts[].providerRef")?;
    let spec = &provider.spec;
    let (mut url, mut token) = (spec.address.clone(), None);
    if let Some(secret_ref) = &spec.secret_ref {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let secret = secrets
            .get_opt(&secret_ref.name)
            .await
            .map_err(|e| format!("cannot read Secret {}: {e}", secret_ref.name))?
            .ok_or_else(|| format!("Secret {} not found", secret_ref.name))?;
        crate::analysis::secret::usable(&secret)?;
        let key = |k: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
        };
        url = Some(
            key("address")
                .ok_or_else(|| format!("Secret {} has no `address` key", secret_ref.name))?,
        );
        token = key("token");
    }
    let url = url
        .filter(|u| !u.is_empty())
        .ok_or("no address: set spec.address or spec.secretRef")?;
    Ok(Destination {
        name: String::new(),
        kind: spec.type_,
        url,
        proxy: spec.proxy.clone(),
        channel: spec.channel().to_string(),
        username: spec.username().to_string(),
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::alert_provider::DEFAULT_USERNAME;

    #[test]
    fn severities_admit_as_flagger_routes_them() {
        use AlertSeverity as A;
        use Severity as S;
        let table = [
            (None, S::Info, true),
            (Some(A::Unset), S::Warn, true),
            (Some(A::Info), S::Error, true),
            (Some(A::Warn), S::Info, false),
            (Some(A::Warn), S::Warn, true),
            (Some(A::Warn), S::Error, true),
            (Some(A::Error), S::Warn, false),
            (Some(A::Error), S::Error, true),
        ];
        for (wanted, severity, expected) in table {
            assert_eq!(
                admits(wanted, severity),
                expected,
                "{wanted:?} {severity:?}"
            );
        }
    }

    #[test]
    fn teams_takes_precedence_and_defaults_apply() {
        let mut flags = GlobalFlags {
            slack_url: Some("https://hooks.slack.example/x".into()),
            slack_user: DEFAULT_USERNAME.into(),
            ..GlobalFlags::default()
        };
        let slack = Destination::global(&flags).unwrap();
        assert_eq!(slack.kind, AlertProviderType::Slack);
        assert_eq!(slack.channel, "general");
        assert!(!format!("{slack:?}").contains("hooks.slack"));
        flags.msteams_url = Some("https://teams.example/y".into());
        assert_eq!(
            Destination::global(&flags).unwrap().kind,
            AlertProviderType::Msteams
        );
        assert!(Destination::global(&GlobalFlags::default()).is_none());
    }
}
