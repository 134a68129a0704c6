//! `AlertProvider` (`alertproviders.flagger.app`): a chat or webhook destination for alerts,
//! referenced by `spec.analysis.alerts[].providerRef`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::common::{Condition, SecretRef, conditions_schema};

/// Where alerts are sent.
///
/// Flagger's CRD has `oneOf: [type+address, type+secretRef]`; serin's CRD keeps the part that
/// never rejects a Flagger manifest ("address or secretRef") as a CEL rule.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "AlertProvider",
    namespaced,
    derive = "PartialEq",
    status = "AlertProviderStatus",
    category = "all",
    annotation("helm.sh/resource-policy", "keep"),
    doc = "AlertProvider is the Schema for the AlertProvider API.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.address) || has(self.secretRef)",
    "message": "set address, or secretRef to a Secret with an `address` key",
}]))]
#[schemars(transform = crate::api::common::tidy_enums)]
pub struct AlertProviderSpec {
    /// Type of the provider.
    #[serde(rename = "type")]
    pub type_: AlertProviderType,
    /// Channel to post to (default `general`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Bot user name (default `flagger`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Hook URL of the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// HTTP(S) proxy to reach the provider through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Secret, in the provider's namespace, with an `address` key (overrides `address`) and
    /// an optional `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

/// Default `channel`.
pub const DEFAULT_CHANNEL: &str = "general";
/// Default `username`.
pub const DEFAULT_USERNAME: &str = "flagger";

impl AlertProviderSpec {
    /// `channel`, default `general`.
    pub fn channel(&self) -> &str {
        self.channel
            .as_deref()
            .filter(|c| !c.is_empty())
            .unwrap_or(DEFAULT_CHANNEL)
    }

    /// `username`, default `flagger`.
    pub fn username(&self) -> &str {
        self.username
            .as_deref()
            .filter(|u| !u.is_empty())
            .unwrap_or(DEFAULT_USERNAME)
    }
}

/// Alert provider types, spelled as in Flagger's CRD.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertProviderType {
    Slack,
    Msteams,
    Discord,
    Rocket,
    Gchat,
    /// serin's extension: a generic JSON POST (canary, namespace, workload, severity,
    /// message, fields) for receivers of your own.
    Webhook,
}

/// Observed state of an AlertProvider (Flagger declares it and never writes it).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::api::common::tidy_enums)]
pub struct AlertProviderStatus {
    /// Conditions of this provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Option<Vec<Condition>>,
}
