//! Alerts that reach people: each alert of a step goes to the Canary's `analysis.alerts`
//! (AlertProviders, filtered by severity) or, when it has none, to the global notifier from
//! the flags (`--slack-url`, `--msteams-url`, ...), as Flagger routes them.
//!
//! Delivery is off the reconcile path: alerts queue for one task that resolves providers and
//! their Secrets, then POSTs each in its own task (a bounded number at once), so a slow,
//! failing or hanging receiver never delays a step. A failed POST is retried with backoff a
//! bounded number of times; each outcome is counted in `serin_alerts_total{provider_type,result}` and
//! failures are logged with the provider's name, never its address (a Secret's, often).

pub mod content;
mod payload;
mod route;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serin_core::Severity;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::api::AlertProviderType;
use crate::api::canary::CanaryAlert;
use crate::controller::runtime::telemetry::Telemetry;

pub use route::{Destination, GlobalFlags};

/// Alerts waiting to be routed before new ones are dropped.
const QUEUE: usize = 1024;
/// POSTs in flight at once.
const IN_FLIGHT: usize = 32;
/// Flagger's timeout for a notifier POST.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Waits before each retry of a failed POST (then it is given up).
const RETRIES: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// One alert of a canary.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub canary: String,
    pub namespace: String,
    /// `<target>.<namespace>`, the name Flagger's alerts carry.
    pub workload: String,
    pub severity: Severity,
    pub message: String,
    /// Titled facts: cluster, target, phase, weight, failed checks, failing metrics, ...
    pub fields: Vec<(String, String)>,
}

#[derive(Debug)]
struct Job {
    alert: Alert,
    routes: Vec<CanaryAlert>,
    /// Dropped (closing its receiver) once every destination has been tried.
    done: Option<Arc<oneshot::Sender<()>>>,
}

/// The sending side; cheap to share.
#[derive(Clone, Debug)]
pub struct Alerts {
    tx: mpsc::Sender<Job>,
    telemetry: Arc<Telemetry>,
}

impl Alerts {
    /// Starts the routing task. `global`: the notifier from the flags, for Canaries without
    /// `analysis.alerts`.
    pub fn start(
        client: kube::Client,
        http: reqwest::Client,
        global: Option<Destination>,
        telemetry: Arc<Telemetry>,
    ) -> Alerts {
        let (tx, rx) = mpsc::channel(QUEUE);
        let sender = Sender {
            http,
            proxied: Mutex::default(),
            telemetry: telemetry.clone(),
        };
        tokio::spawn(run(rx, client, global, Arc::new(sender)));
        Alerts { tx, telemetry }
    }

    /// Queues `alert` for the Canary's `analysis.alerts` (`routes`); never waits.
    pub fn send(&self, alert: Alert, routes: &[CanaryAlert]) {
        self.queue(alert, routes, None);
    }

    /// As [`Alerts::send`]; the receiver closes once every destination has been tried
    /// (delivered, given up, or the alert dropped).
    pub fn send_tracked(&self, alert: Alert, routes: &[CanaryAlert]) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.queue(alert, routes, Some(Arc::new(tx)));
        rx
    }

    fn queue(&self, alert: Alert, routes: &[CanaryAlert], done: Option<Arc<oneshot::Sender<()>>>) {
        let job = Job {
            alert,
            routes: routes.to_vec(),
            done,
        };
        if let Err(e) = self.tx.try_send(job) {
            tracing::warn!(error = %e, "alert queue full; alert dropped");
            self.telemetry.alert("queue", "dropped");
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Job>,
    client: kube::Client,
    global: Option<Destination>,
    sender: Arc<Sender>,
) {
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(job) = rx.recv().await {
        let destinations = match job.routes.is_empty() {
            true => global.clone().into_iter().collect(),
            false => route::resolve(&client, &job.alert, &job.routes).await,
        };
        for destination in destinations {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let (sender, alert, done) = (sender.clone(), job.alert.clone(), job.done.clone());
            tokio::spawn(async move {
                sender.deliver(&destination, &alert).await;
                drop(permit);
                drop(done);
            });
        }
    }
}

struct Sender {
    http: reqwest::Client,
    /// One client per proxy URL (reqwest sets the proxy per client).
    proxied: Mutex<HashMap<String, reqwest::Client>>,
    telemetry: Arc<Telemetry>,
}

impl Sender {
    async fn deliver(&self, to: &Destination, alert: &Alert) {
        let body = payload::body(to.kind, to.sender(), alert);
        let kind = type_label(to.kind);
        let mut attempt = 0;
        loop {
            match self.post(to, &body).await {
                Ok(()) => {
                    self.telemetry.alert(kind, "delivered");
                    return;
                }
                Err(e) if attempt < RETRIES.len() => {
                    tracing::debug!(provider = %to.name, error = %e, "alert not delivered; retrying");
                    tokio::time::sleep(RETRIES[attempt]).await;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::warn!(
                        provider = %to.name,
                        namespace = %alert.namespace,
                        name = %alert.canary,
                        attempts = attempt + 1,
                        error = %e,
                        "alert not delivered"
                    );
                    self.telemetry.alert(kind, "failed");
                    return;
                }
            }
        }
    }

    /// One POST. Errors never carry the URL: it may be a Secret's.
    async fn post(&self, to: &Destination, body: &serde_json::Value) -> Result<(), String> {
        let client = self.client(to.proxy.as_deref())?;
        let url = reqwest::Url::parse(&to.url).map_err(|e| format!("invalid url: {e}"))?;
        crate::outbound::policy().check_url(&url)?;
        let mut request = client.post(&to.url).timeout(TIMEOUT).json(body);
        if let Some(token) = &to.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(format!("HTTP {status}"))
    }

    fn client(&self, proxy: Option<&str>) -> Result<reqwest::Client, String> {
        let Some(proxy) = proxy.filter(|p| !p.is_empty()) else {
            return Ok(self.http.clone());
        };
        let mut clients = self.proxied.lock().map_err(|e| e.to_string())?;
        if let Some(client) = clients.get(proxy) {
            return Ok(client.clone());
        }
        let client = reqwest::Proxy::all(proxy)
            .and_then(|p| crate::outbound::client_builder().proxy(p).build())
            .map_err(|e| format!("proxy: {}", e.without_url()))?;
        clients.insert(proxy.to_string(), client.clone());
        Ok(client)
    }
}

/// The provider type as a bounded metric label.
fn type_label(kind: AlertProviderType) -> &'static str {
    match kind {
        AlertProviderType::Slack => "slack",
        AlertProviderType::Msteams => "msteams",
        AlertProviderType::Discord => "discord",
        AlertProviderType::Rocket => "rocket",
        AlertProviderType::Gchat => "gchat",
        AlertProviderType::Webhook => "webhook",
    }
}
