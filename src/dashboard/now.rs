//! The top of a Canary's page: what the release waits for, whether the canary and the primary
//! are ready (read with the user's credentials), and its webhooks and gates.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::{Api, ResourceExt};

use super::pages::esc;
use crate::api::Canary;

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
             <th scope=\"col\">Type</th><th scope=\"col\">URL</th></tr></thead><tbody>",
        );
        for hook in hooks {
            let kind = hook.type_.map_or("rollout", |t| t.as_str());
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&hook.name),
                esc(kind),
                esc(&hook.url)
            ));
        }
        out.push_str("</tbody></table>");
    }
    out
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
