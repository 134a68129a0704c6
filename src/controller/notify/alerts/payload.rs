//! The JSON body each alert service expects, from one [`Alert`]. Pure, so every shape is
//! tested without a server.

use serde_json::{Value, json};
use serin_core::Severity;

use super::Alert;
use crate::api::AlertProviderType;

/// What a destination adds to the body: Slack-style channel and user name.
#[derive(Clone, Copy, Debug)]
pub struct Sender<'a> {
    pub channel: &'a str,
    pub username: &'a str,
}

pub fn body(kind: AlertProviderType, sender: Sender<'_>, alert: &Alert) -> Value {
    match kind {
        AlertProviderType::Slack => slack(sender, alert, slack_color(alert.severity)),
        // Rocket.Chat takes Slack's attachments, with hex colours.
        AlertProviderType::Rocket => slack(sender, alert, hex_color(alert.severity, "#")),
        AlertProviderType::Msteams => msteams(alert),
        AlertProviderType::Discord => discord(sender, alert),
        AlertProviderType::Gchat => gchat(alert),
        AlertProviderType::Webhook => webhook(alert),
    }
}

fn slack_color(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "good",
        Severity::Warn => "warning",
        Severity::Error => "danger",
    }
}

fn hex_color(severity: Severity, prefix: &str) -> String {
    let hex = match severity {
        Severity::Info => "0076D7",
        Severity::Warn => "FFA500",
        Severity::Error => "FF0000",
    };
    format!("{prefix}{hex}")
}

fn slack(sender: Sender<'_>, alert: &Alert, color: impl Into<Value>) -> Value {
    let fields: Vec<Value> = alert
        .fields
        .iter()
        .map(|(title, value)| json!({"title": title, "value": value, "short": false}))
        .collect();
    json!({
        "channel": sender.channel,
        "username": sender.username,
        "icon_emoji": ":rocket:",
        "attachments": [{
            "color": color.into(),
            "author_name": alert.workload,
            "text": alert.message,
            "mrkdwn_in": ["text"],
            "fields": fields,
        }],
    })
}

/// Teams' MessageCard (what Teams incoming webhooks and Workflows both accept).
fn msteams(alert: &Alert) -> Value {
    let facts: Vec<Value> = alert
        .fields
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    json!({
        "@type": "MessageCard",
        "@context": "http://schema.org/extensions",
        "themeColor": hex_color(alert.severity, ""),
        "summary": alert.workload,
        "sections": [{
            "activityTitle": alert.message,
            "activitySubtitle": alert.workload,
            "facts": facts,
        }],
    })
}

/// Discord's own webhook format: one embed, its colour an integer.
fn discord(sender: Sender<'_>, alert: &Alert) -> Value {
    let color = u32::from_str_radix(&hex_color(alert.severity, ""), 16).unwrap_or_default();
    let fields: Vec<Value> = alert
        .fields
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value, "inline": false}))
        .collect();
    json!({
        "username": sender.username,
        "embeds": [{
            "title": alert.workload,
            "description": alert.message,
            "color": color,
            "fields": fields,
        }],
    })
}

/// Google Chat's card: the message, then one section per field.
fn gchat(alert: &Alert) -> Value {
    let mut sections = vec![json!({"widgets": [{"textParagraph": {"text": alert.message}}]})];
    sections.extend(alert.fields.iter().map(
        |(name, value)| json!({"widgets": [{"keyValue": {"topLabel": name, "content": value}}]}),
    ));
    json!({
        "cards": [{
            "header": {"title": "serin", "subtitle": alert.workload},
            "sections": sections,
        }],
    })
}

/// serin's generic JSON: everything a receiver needs to route the alert itself.
fn webhook(alert: &Alert) -> Value {
    let fields: serde_json::Map<String, Value> = alert
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "canary": alert.canary,
        "namespace": alert.namespace,
        "workload": alert.workload,
        "severity": match alert.severity {
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "error",
        },
        "message": alert.message,
        "fields": fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            canary: "podinfo".into(),
            namespace: "test".into(),
            workload: "podinfo.test".into(),
            severity: Severity::Error,
            message: "Failed checks threshold reached 2".into(),
            fields: vec![
                ("Cluster".into(), "prod-eu".into()),
                ("Canary weight".into(), "20%".into()),
            ],
        }
    }

    const SENDER: Sender<'static> = Sender {
        channel: "releases",
        username: "flagger",
    };

    #[test]
    fn each_service_gets_its_own_shape() {
        let a = alert();
        let slack = body(AlertProviderType::Slack, SENDER, &a);
        assert_eq!(slack["channel"], "releases");
        assert_eq!(slack["attachments"][0]["color"], "danger");
        assert_eq!(slack["attachments"][0]["author_name"], "podinfo.test");
        assert_eq!(slack["attachments"][0]["fields"][0]["title"], "Cluster");
        assert_eq!(slack["attachments"][0]["fields"][0]["value"], "prod-eu");

        let rocket = body(AlertProviderType::Rocket, SENDER, &a);
        assert_eq!(rocket["attachments"][0]["color"], "#FF0000");

        let teams = body(AlertProviderType::Msteams, SENDER, &a);
        assert_eq!(teams["@type"], "MessageCard");
        assert_eq!(teams["themeColor"], "FF0000");
        assert_eq!(teams["sections"][0]["activityTitle"], a.message);
        assert_eq!(teams["sections"][0]["facts"][1]["name"], "Canary weight");

        let discord = body(AlertProviderType::Discord, SENDER, &a);
        assert_eq!(discord["embeds"][0]["color"], 0xFF0000);
        assert_eq!(discord["embeds"][0]["description"], a.message);
        assert_eq!(discord["embeds"][0]["fields"][1]["value"], "20%");

        let gchat = body(AlertProviderType::Gchat, SENDER, &a);
        assert_eq!(gchat["cards"][0]["header"]["subtitle"], "podinfo.test");
        assert_eq!(
            gchat["cards"][0]["sections"][1]["widgets"][0]["keyValue"]["content"],
            "prod-eu"
        );

        let hook = body(AlertProviderType::Webhook, SENDER, &a);
        assert_eq!(hook["severity"], "error");
        assert_eq!(hook["fields"]["Cluster"], "prod-eu");
        assert_eq!(hook["canary"], "podinfo");
    }

    #[test]
    fn colours_follow_the_severity() {
        let mut a = alert();
        for (severity, slack, teams) in [
            (Severity::Info, "good", "0076D7"),
            (Severity::Warn, "warning", "FFA500"),
            (Severity::Error, "danger", "FF0000"),
        ] {
            a.severity = severity;
            assert_eq!(
                body(AlertProviderType::Slack, SENDER, &a)["attachments"][0]["color"],
                slack
            );
            assert_eq!(
                body(AlertProviderType::Msteams, SENDER, &a)["themeColor"],
                teams
            );
        }
    }
}
