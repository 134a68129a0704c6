//! Leader election on a `coordination.k8s.io/v1` Lease (`--enable-leader-election`), with
//! kube-lease-manager: of several replicas only the holder of the Lease reconciles; the others
//! wait, serving `/healthz` and `/metrics`, and take over when the holder stops renewing (at
//! most the lease duration after it died). A leader that loses the Lease stops reconciling at
//! once and the process exits, so two replicas never act on the same Canary; a graceful stop
//! releases the Lease for an immediate handover.

use std::time::Duration;

use anyhow::Context as _;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Name of the Lease the replicas compete for.
pub const LEASE: &str = "serin-leader-election";

/// Where and how the election runs.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    /// How long a Lease stays held without renewal.
    pub lease_duration: Duration,
    /// This replica's name in `holderIdentity`.
    pub identity: String,
}

/// Held leadership: resolves [`Leadership::lost`] when the Lease is lost.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership").finish_non_exhaustive()
    }
}

/// `POD_NAME` (set from the downward API by the chart), else the host name, with the process
/// id: unique per replica.
pub fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "serin".into());
    format!("{host}-{}", std::process::id())
}

/// Waits until this replica holds the Lease.
pub async fn acquire(client: kube::Client, election: &Election) -> anyhow::Result<Leadership> {
    let seconds = election.lease_duration.as_secs().max(2);
    let manager = LeaseManagerBuilder::new(client, LEASE)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(seconds)
        // Renew a third of the way before expiry: a slow API server does not cost the Lease.
        .with_grace((seconds / 3).max(1))
        .with_field_manager("serin-leader-election")
        .build()
        .await
        .with_context(|| format!("Lease {}/{LEASE}: cannot use it", election.namespace))?;
    let (mut state, task) = manager.watch().await;
    tracing::info!(identity = %election.identity, lease = %format!("{}/{LEASE}", election.namespace),
        "waiting to become the leader");
    while !*state.borrow_and_update() {
        if state.changed().await.is_err() {
            anyhow::bail!("leader election stopped before this replica became the leader");
        }
    }
    tracing::info!(identity = %election.identity, "became the leader");
    Ok(Leadership { state, task })
}

impl Leadership {
    /// Resolves when the Lease is lost (another replica holds it, or it cannot be renewed).
    pub async fn lost(&mut self) {
        while *self.state.borrow_and_update() {
            if self.state.changed().await.is_err() {
                return;
            }
        }
    }

    /// Gives the Lease up, for the next replica to take at once.
    pub async fn release(self) {
        drop(self.state);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!("leader election lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the leader election lease"),
            Err(e) => tracing::warn!(error = %e, "leader election task failed"),
        }
    }
}
