//! Webhooks, called as Flagger calls them: gates the engine asks about, the rollout checks of the analysis,
//! and the post-rollout notification. One POST per hook, in spec order; for gates the first
//! failure decides.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;
use serin_core::{Gate, Phase};

use crate::api::canary::CanaryWebhook;
use crate::api::{Canary, HookType, parse_duration};

/// Flagger's default per-attempt timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between retries (`retries` in the spec).
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// The longest one hook may take, all its attempts together, whatever its `timeout` and
/// `retries` say: a hook runs inside the Canary's reconcile, and a hung receiver must not
/// hold a reconcile slot (shared by every Canary) for longer than this.
pub const MAX_CALL_TIME: Duration = Duration::from_secs(300);
/// The most of a hook's answer serin reads: only its status decides, and the body is
/// quoted (cleaned and cut) in the reason of a failure.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The body every webhook receives (Flagger's `CanaryWebhookPayload`).
#[derive(Debug, Serialize)]
struct Payload<'a> {
    name: &'a str,
    namespace: &'a str,
    phase: &'a str,
    checksum: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a BTreeMap<String, String>>,
}

/// What a hook call is about.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    pub canary: &'a Canary,
    pub phase: Phase,
    /// Checksum of the revision and tracked configs, so a load tester can tell runs apart.
    pub checksum: &'a str,
}

impl<'a> Call<'a> {
    pub fn new(canary: &'a Canary, phase: Phase, checksum: &'a str) -> Call<'a> {
        Call {
            canary,
            phase,
            checksum,
        }
    }
}

/// The hooks of `canary` of one type, in spec order (an unset type counts as `rollout`).
pub fn of_type(canary: &Canary, kind: HookType) -> Vec<&CanaryWebhook> {
    let hooks = canary
        .spec
        .analysis()
        .map(|a| a.webhooks())
        .unwrap_or_default();
    hooks.iter().filter(|h| h.hook_type() == kind).collect()
}

/// Calls one hook. `Ok(())` on 200, 201 or 202 (Flagger's success range); otherwise the
/// reason, with the response body when there is one.
pub async fn call(
    http: &reqwest::Client,
    hook: &CanaryWebhook,
    at: Call<'_>,
) -> Result<(), String> {
    let name = at.canary.metadata.name.as_deref().unwrap_or_default();
    let namespace = at.canary.metadata.namespace.as_deref().unwrap_or_default();
    let payload = Payload {
        name,
        namespace,
        phase: at.phase.as_str(),
        checksum: at.checksum,
        metadata: hook.metadata.as_ref().filter(|m| !m.is_empty()),
    };
    let timeout = hook
        .timeout
        .as_deref()
        .and_then(|t| parse_duration(t).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_TIMEOUT)
        .min(MAX_CALL_TIME);
    let attempts = 1 + hook.retries.unwrap_or(0).clamp(0, 10).unsigned_abs();
    let http = if hook.disable_tls == Some(true) {
        insecure(http)
    } else {
        http
    };
    let url = reqwest::Url::parse(&hook.url).map_err(|e| format!("invalid url: {e}"))?;
    crate::outbound::policy().check_url(&url)?;
    let started = tokio::time::Instant::now();
    let mut last = String::new();
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        let left = MAX_CALL_TIME.saturating_sub(started.elapsed());
        if left.is_zero() {
            last = format!(
                "{last} (gave up after {}s, serin's limit for one hook)",
                MAX_CALL_TIME.as_secs()
            );
            break;
        }
        let timeout = timeout.min(left);
        let sent = http
            .post(url.clone())
            .timeout(timeout)
            .json(&payload)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().as_u16() <= 202 && resp.status().is_success() => {
                return Ok(());
            }
            Ok(resp) => {
                let status = resp.status();
                last = format!("{status} {}", answer_summary(resp).await);
                // Client errors (a closed gate says 403) are answers, not transient failures.
                if status.is_client_error() && status.as_u16() != 429 {
                    break;
                }
            }
            Err(e) if e.is_timeout() => {
                last = format!("timed out after {}s", timeout.as_secs_f64());
            }
            // With its causes: "error sending request" alone hides a refused certificate.
            Err(e) => last = with_causes(&e),
        }
    }
    Err(last.trim().to_string())
}

/// A failed hook's answer as a reason: the body, read up to [`MAX_ANSWER_BYTES`] and never
/// copied raw (control characters dropped, whitespace collapsed, cut to a short excerpt).
async fn answer_summary(resp: reqwest::Response) -> String {
    use crate::analysis::provider::{LimitedReadError, read_limited, remote_text};
    match read_limited(resp, MAX_ANSWER_BYTES).await {
        Ok(body) => remote_text(&String::from_utf8_lossy(&body)),
        Err(LimitedReadError::TooLarge) => {
            format!("(an answer over {} KiB, not read)", MAX_ANSWER_BYTES / 1024)
        }
        Err(LimitedReadError::Transport(e)) => format!("(the answer broke off: {e})"),
    }
}

fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The client for hooks with `disableTLS` (Flagger skips certificate verification for
/// them), built on first use; if it cannot be built, the verifying one.
fn insecure(http: &reqwest::Client) -> &reqwest::Client {
    static INSECURE: OnceLock<Option<reqwest::Client>> = OnceLock::new();
    let client = INSECURE.get_or_init(|| {
        crate::outbound::client_builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .ok()
    });
    client.as_ref().unwrap_or(http)
}

/// Runs the hooks of a gate type; the first closed one closes the gate.
pub async fn gate(http: &reqwest::Client, kind: HookType, at: Call<'_>) -> Gate {
    let hooks = of_type(at.canary, kind);
    let mut mute_all = !hooks.is_empty();
    for hook in &hooks {
        if let Err(reason) = call(http, hook, at).await {
            mute_all &= hook.mute_alert.unwrap_or(false);
            return Gate::Closed {
                reason: format!("{} {reason}", hook.name),
                mute_alert: mute_all,
            };
        }
    }
    Gate::Open
}

/// Rollback hooks: `true` when one of them answers with success, asking for a rollback.
pub async fn rollback_requested(http: &reqwest::Client, at: Call<'_>) -> bool {
    for hook in of_type(at.canary, HookType::Rollback) {
        if call(http, hook, at).await.is_ok() {
            return true;
        }
    }
    false
}

/// Rollout hooks of one analysis step: the first failure, as the engine's failure reason.
pub async fn rollout_checks(http: &reqwest::Client, at: Call<'_>) -> Result<(), String> {
    for hook in of_type(at.canary, HookType::Rollout) {
        call(http, hook, at)
            .await
            .map_err(|reason| format!("external check {} failed {reason}", hook.name))?;
    }
    Ok(())
}

/// Post-rollout hooks: fired for their side effect; each outcome is returned for an event.
pub async fn notify(http: &reqwest::Client, at: Call<'_>) -> Vec<(String, Result<(), String>)> {
    let mut outcomes = Vec::new();
    for hook in of_type(at.canary, HookType::PostRollout) {
        outcomes.push((hook.name.clone(), call(http, hook, at).await));
    }
    outcomes
}
