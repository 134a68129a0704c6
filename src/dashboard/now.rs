//! The top of a Canary's page: what the release waits for, whether the canary and the primary
//! are ready (read with the user's credentials), and its webhooks and gates.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::{Api, ResourceExt};

use super::pages::esc;
use crate::api::Canary;
use crate::api::canary::GateState;

/// Characters of an API error shown in place of a readiness.
const ERROR_CHARS: usize = 200;

/// The section's HTML (escaped).
pub async fn section(client: &kube::Client, canary: &Canary, waiting_for: &str) -> String {
    let namespace = canary.namespace().unwrap_or_default();
    let target = &canary.spec.target_ref;
    let mut rows = vec![("Waiting for".to_string(), waiting_for.to_string())];
    let kind = target.kind.as_str();
    if matches!(kind, "Deployment" | "DaemonSet") {
        for name in [target.name.clone(), format!("{}-primary", target.name)] {
            let ready = readiness(client, &namespace, kind, &name).await;
            rows.push((format!("{kind} {name}"), ready));
        }
    }
    if kind == "StatefulSet" {
        let pods = in_place(client, &namespace, &target.name).await;
        rows.push((format!("StatefulSet {}", target.name), pods));
    }
    let mut out = String::from("<h2>Now</h2><table><tbody>");
    for (what, state) in rows {
        out.push_str(&format!(
            "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
            esc(&what),
            esc(&state)
        ));
    }
    out.push_str("</tbody></table>");
    let hooks = canary.spec.analysis().map(|a| a.webhooks()).unwrap_or(&[]);
    if !hooks.is_empty() {
        out.push_str(
            "<h2>Webhooks and gates</h2><table><thead><tr><th scope=\"col\">Name</th>\
             <th scope=\"col\">Type</th><th scope=\"col\">URL</th>\
             <th scope=\"col\">State</th></tr></thead><tbody>",
        );
        let gates = canary.status.as_ref().and_then(|s| s.gates.as_ref());
        for hook in hooks {
            let kind = hook.type_.map_or("rollout", |t| t.as_str());
            let state = gates.and_then(|g| g.get(kind)).map_or_else(
                || match kind {
                    "rollout" => "checked at every analysis".to_string(),
                    "pre-rollout"
                    | "confirm-rollout"
                    | "confirm-traffic-increase"
                    | "confirm-promotion" => "not asked yet".to_string(),
                    _ => String::new(),
                },
                gate_state,
            );
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"gate\">{}</td></tr>",
                esc(&hook.name),
                esc(kind),
                esc(&hook.url),
                esc(&state)
            ));
        }
        out.push_str("</tbody></table>");
    }
    out
}

/// `open since 08:01:02 UTC`, `closed since 08:01:02 UTC: approve answered 403`. Words,
/// not colours, say which.
fn gate_state(g: &GateState) -> String {
    let since = g.since.format("%Y-%m-%d %H:%M:%S UTC");
    match (&g.reason, g.open) {
        (_, true) => format!("open since {since}"),
        (Some(reason), false) => format!("closed since {since}: {reason}"),
        (None, false) => format!("closed since {since}"),
    }
}

/// A StatefulSet released in place: `3 of 3 ready, 1 on the new revision`.
async fn in_place(client: &kube::Client, namespace: &str, name: &str) -> String {
    let api = Api::<StatefulSet>::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(s)) => {
            let status = s.status.clone().unwrap_or_default();
            let replicas = crate::workload::stateful_set::replicas(&s);
            let ready = status.ready_replicas.unwrap_or(0);
            let updated = match status.current_revision == status.update_revision {
                true => 0,
                false => status.updated_replicas.unwrap_or(0),
            };
            format!("{ready} of {replicas} ready, {updated} on the new revision")
        }
        Ok(None) => "not found".into(),
        Err(e) => format!(
            "cannot read it: {}",
            super::cut(&e.to_string(), ERROR_CHARS)
        ),
    }
}

/// `2 of 2 ready`, `not found`, or why it cannot be read.
async fn readiness(client: &kube::Client, namespace: &str, kind: &str, name: &str) -> String {
    let counts = if kind == "DaemonSet" {
        Api::<DaemonSet>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map(|d| {
                d.map(|d| {
                    let s = d.status.unwrap_or_default();
                    (s.number_ready, s.desired_number_scheduled)
                })
            })
    } else {
        Api::<Deployment>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map(|d| {
                d.map(|d| {
                    let want = d.spec.and_then(|s| s.replicas).unwrap_or(1);
                    let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
                    (ready, want)
                })
            })
    };
    match counts {
        Ok(Some((ready, want))) => format!("{ready} of {want} ready"),
        Ok(None) => "not found".into(),
        Err(e) => format!(
            "cannot read it: {}",
            super::cut(&e.to_string(), ERROR_CHARS)
        ),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_gate_says_its_state_in_words() {
        let since = chrono::Utc.with_ymd_and_hms(2026, 12, 7, 8, 1, 2).unwrap();
        let closed = GateState {
            open: false,
            since,
            reason: Some("approve answered 403".into()),
        };
        assert_eq!(
            gate_state(&closed),
            "closed since 2026-12-07 08:01:02 UTC: approve answered 403"
        );
        let open = GateState {
            open: true,
            reason: None,
            ..closed
        };
        assert_eq!(gate_state(&open), "open since 2026-12-07 08:01:02 UTC");
    }
}
