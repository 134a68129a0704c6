//! Leader election on a `coordination.k8s.io/v1` Lease (`--enable-leader-election`), with
//! kube-lease-manager: of several replicas only the holder of the Lease reconciles; the others
//! wait, serving `/healthz` and `/metrics`, and take over when the holder stops renewing (at
//! most the lease duration after it died). A leader that loses the Lease stops reconciling at
//! once and the process exits, so two replicas never act on the same Canary; a graceful stop
//! releases the Lease for an immediate handover.

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Name of the Lease the replicas compete for, unless `--leader-election-id` names another.
pub const LEASE: &str = "serin-leader-election";

/// Where and how the election runs.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    /// The Lease's name.
    pub lease: String,
    /// How long a Lease stays held without renewal.
    pub lease_duration: Duration,
    /// This replica's name in `holderIdentity`.
    pub identity: String,
}

/// Held leadership: resolves [`Leadership::lost`] when the Lease is lost.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
    /// Ends when this replica's own renewals stop showing in time (see [`renew_deadline`]).
    deadline: JoinHandle<()>,
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

/// The field manager of this replica's writes of the Lease: its own. The manager takes a free
/// Lease with a server-side apply that another field manager's claim makes conflict; with one
/// name for every replica, two replicas starting together both took it (found by a loop of
/// the scenarios: both led for a moment, then both stepped down). At most 128 characters, the
/// API server's limit.
fn field_manager(identity: &str) -> String {
    format!("serin-leader-election-{identity}")
        .chars()
        .take(128)
        .collect()
}

/// Waits until this replica holds the Lease.
pub async fn acquire(client: kube::Client, election: &Election) -> anyhow::Result<Leadership> {
    let seconds = election.lease_duration.as_secs().max(2);
    let client_for_deadline = client.clone();
    let lease = &election.lease;
    let manager = LeaseManagerBuilder::new(client, lease)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(seconds)
        // Renew a third of the way before expiry: a slow API server does not cost the Lease.
        .with_grace(grace(Duration::from_secs(seconds)).as_secs())
        .with_field_manager(field_manager(&election.identity))
        .build()
        .await
        .with_context(|| format!("Lease {}/{lease}: cannot use it", election.namespace))?;
    let (mut state, task) = manager.watch().await;
    tracing::info!(identity = %election.identity, lease = %format!("{}/{lease}", election.namespace),
        "waiting to become the leader");
    while !*state.borrow_and_update() {
        if state.changed().await.is_err() {
            anyhow::bail!("leader election stopped before this replica became the leader");
        }
    }
    tracing::info!(identity = %election.identity, "became the leader");
    let deadline = tokio::spawn(renew_deadline(client_for_deadline, election.clone()));
    Ok(Leadership {
        state,
        task,
        deadline,
    })
}

/// Resolves when this replica can no longer be sure that it holds the Lease: the last
/// renewal of its own that it has seen expires in less than [`margin`], or the Lease names
/// another holder. kube-lease-manager keeps a holder leading while a renewal is in flight,
/// however slow the API server; the other replicas take the Lease as soon as it expires by
/// their clock. Without this deadline (client-go's `RenewDeadline`) a slow renewal leaves two
/// leaders acting at once until it fails.
async fn renew_deadline(client: kube::Client, election: Election) {
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", election.lease));
    let mut leases = watcher(api, config).default_backoff().boxed();
    let hold = election
        .lease_duration
        .saturating_sub(margin(election.lease_duration));
    // Just acquired: renewed now, at the latest. The deadline is kept on the monotonic clock,
    // so a wall-clock step (NTP) cannot stretch it; the wall clock only ages a renewal.
    let mut until = tokio::time::Instant::now() + hold;
    loop {
        let event = tokio::select! {
            event = leases.try_next() => event,
            () = tokio::time::sleep_until(until) => {
                tracing::warn!(identity = %election.identity,
                    "no renewal of the leader election Lease seen in time; stepping down");
                return;
            }
        };
        let lease = match event {
            Ok(Some(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease))) => lease,
            Ok(Some(watcher::Event::Delete(_))) | Ok(None) => return,
            Ok(Some(_)) => continue,
            Err(e) => {
                // Without the watch no renewal shows and the leader steps down at the deadline.
                tracing::warn!(error = %e, "leader election Lease watch failed; retrying");
                continue;
            }
        };
        let spec = lease.spec.unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(election.identity.as_str()) {
            return;
        }
        if let Some(renewed) = spec.renew_time {
            // A renewal's age by the wall clock, within [0, hold]: a clock that jumped forward
            // makes the renewal look old (stepping down early is safe), one that jumped back
            // makes it look new (late by the watch's delay at most).
            let age = SystemTime::now()
                .duration_since(SystemTime::from(renewed.0))
                .unwrap_or(Duration::ZERO)
                .min(hold);
            until = until.max(tokio::time::Instant::now() + (hold - age));
        }
    }
}

/// How long before the Lease expires a holder that has not seen its renewal steps down: half
/// the renewal's head start (the third of the duration it renews early), so that a renewal
/// on time is seen well before.
fn margin(duration: Duration) -> Duration {
    grace(duration) / 2
}

/// How early the holder renews: a third of the duration, at least a second.
fn grace(duration: Duration) -> Duration {
    Duration::from_secs((duration.as_secs() / 3).max(1))
}

impl Leadership {
    /// Resolves when the Lease is lost (another replica holds it, or it cannot be renewed).
    pub async fn lost(&mut self) {
        let state = &mut self.state;
        let held = async {
            while *state.borrow_and_update() {
                if state.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            () = held => {}
            _ = &mut self.deadline => {}
        }
    }

    /// Stops leading without writing the Lease: once lost, it may name another holder, whom
    /// the manager's release (a patch clearing the holder, from what it last read) would
    /// clear too, leaving no leader. The manager is cancelled, and only then its state
    /// channel closed (which it would take as the signal to release).
    pub async fn abandon(self) {
        self.deadline.abort();
        self.task.abort();
        let _ = self.task.await;
        drop(self.state);
    }

    /// Gives the Lease up, for the next replica to take at once.
    pub async fn release(self) {
        self.deadline.abort();
        drop(self.state);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!("leader election lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the leader election lease"),
            Err(e) => tracing::warn!(error = %e, "leader election task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::{Patch, PatchParams};
    use serde_json::json;
    use serin_stack::{Stack, StackConfig};
    use std::time::Instant;

    fn election(duration: u64) -> Election {
        Election {
            namespace: "default".into(),
            lease: LEASE.into(),
            lease_duration: Duration::from_secs(duration),
            identity: "me-1".into(),
        }
    }

    async fn set_lease(leases: &Api<Lease>, holder: &str) {
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": LEASE},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3,
                     "renewTime": now_rfc3339()}});
        leases
            .patch(
                LEASE,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&lease),
            )
            .await
            .expect("lease");
    }

    /// The Lease's holder now.
    async fn holder(leases: &Api<Lease>) -> Option<String> {
        leases
            .get(LEASE)
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
    }

    fn now_rfc3339() -> String {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    #[test]
    fn the_holder_steps_down_half_its_head_start_before_expiry() {
        assert_eq!(margin(Duration::from_secs(15)), Duration::from_millis(2500));
        assert_eq!(margin(Duration::from_secs(3)), Duration::from_millis(500));
        assert_eq!(grace(Duration::from_secs(2)), Duration::from_secs(1));
    }

    #[test]
    fn each_replica_writes_the_lease_as_itself() {
        assert_eq!(field_manager("pod-1-7"), "serin-leader-election-pod-1-7");
        assert_ne!(field_manager("a-1"), field_manager("b-2"));
        assert_eq!(field_manager(&"x".repeat(300)).chars().count(), 128);
    }

    /// Why each replica writes as itself: a free Lease is taken with a server-side apply,
    /// and only another field manager's claim makes the second taker's apply conflict.
    #[tokio::test]
    async fn a_second_replicas_claim_of_the_lease_conflicts() {
        let stack = Stack::start(StackConfig::default()).await.expect("stack");
        let leases: Api<Lease> = Api::namespaced(stack.client().await.expect("client"), "default");
        let claim = |holder: &str| {
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": LEASE},
                   "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                            "renewTime": now_rfc3339(), "acquireTime": now_rfc3339()}})
        };
        let apply = |holder: &str| PatchParams::apply(&field_manager(holder));
        leases
            .patch(LEASE, &apply("one-1"), &Patch::Apply(&claim("one-1")))
            .await
            .expect("the first claim");
        let second = leases
            .patch(LEASE, &apply("two-2"), &Patch::Apply(&claim("two-2")))
            .await;
        assert!(
            matches!(second, Err(kube::Error::Api(ref e)) if e.code == 409),
            "{second:?}"
        );
        let holder = holder(&leases).await;
        assert_eq!(holder.as_deref(), Some("one-1"));
    }

    /// Two replicas starting together: one leads, the other waits; the leader abandoning
    /// the Lease after losing it leaves the new holder's claim alone.
    #[tokio::test]
    async fn two_replicas_at_once_elect_one_and_a_lost_lease_is_not_cleared() {
        let stack = Stack::start(StackConfig::default()).await.expect("stack");
        let client = stack.client().await.expect("client");
        let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
        let one = Election {
            identity: "one-1".into(),
            ..election(15)
        };
        let two = Election {
            identity: "two-2".into(),
            ..election(15)
        };
        let (c1, c2) = (client.clone(), client.clone());
        let a = tokio::spawn(async move { acquire(c1, &one).await });
        let b = tokio::spawn(async move { acquire(c2, &two).await });
        let first = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::select! {
                l = a => ("one-1", l),
                l = b => ("two-2", l),
            }
        })
        .await
        .expect("a leader within 10 s");
        let (leader, leadership) = (first.0, first.1.unwrap().unwrap());
        // The other stays a follower: the Lease names the leader for a while.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(200)).await; // not a wait: a period watched
            let holder = holder(&leases).await;
            assert_eq!(holder.as_deref(), Some(leader), "one holder");
        }
        // Lost to another replica: abandoning it does not clear the new holder (a clear
        // would be written before `abandon` returns).
        set_lease(&leases, "three-3").await;
        leadership.abandon().await;
        let holder = holder(&leases).await;
        assert_eq!(holder.as_deref(), Some("three-3"));
    }

    #[tokio::test]
    async fn renewals_keep_the_deadline_away_and_their_absence_ends_it() {
        let stack = Stack::start(StackConfig::default()).await.expect("stack");
        let leases: Api<Lease> = Api::namespaced(stack.client().await.expect("client"), "default");
        set_lease(&leases, "me-1").await;

        // Renewed every second: still leading after 4 s (the deadline alone is 2.5 s).
        let started = Instant::now();
        let mut deadline = tokio::spawn(renew_deadline(stack.client().await.unwrap(), election(3)));
        while started.elapsed() < Duration::from_secs(4) {
            tokio::time::sleep(Duration::from_secs(1)).await; // not a wait: the renewal cadence
            set_lease(&leases, "me-1").await;
            assert!(!deadline.is_finished(), "stepped down while renewed");
        }

        // No more renewals: down within the 2.5 s deadline (and not before 2 s).
        let last = Instant::now();
        (&mut deadline).await.unwrap();
        let waited = last.elapsed();
        assert!(
            (Duration::from_secs(2)..Duration::from_millis(3500)).contains(&waited),
            "{waited:?}"
        );

        // Another holder: down at once, whether the watch lists it or sees it change.
        set_lease(&leases, "me-1").await;
        let other = tokio::spawn(renew_deadline(stack.client().await.unwrap(), election(15)));
        set_lease(&leases, "other-2").await;
        tokio::time::timeout(Duration::from_secs(2), other)
            .await
            .expect("steps down when another replica holds the Lease")
            .unwrap();
    }
}
