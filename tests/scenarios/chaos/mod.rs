//! Chaos runs: the `serin controller` binary on the emulator while things go wrong. Each
//! prints what it tried and what happened, and fails on any wrong outcome.
//!
//! - `kills`: concurrent releases, half healthy and half faulty, while the controller is
//!   killed with SIGKILL at random moments and the API server fails, delays, conflicts and
//!   drops watches;
//! - `outages`: Prometheus, Datadog and New Relic stopped mid-analysis;
//! - `drift`: routing weights and the primary's pod template edited by hand mid-release;
//! - `api_outage`: every request of serin's refused and its watches cut mid-release, then
//!   the API server back;
//! - `watch_expiry`: serin cut off mid-release while the history is compacted, so its
//!   watches resume into 410 Gone (on the real control plane too: etcd compacted).
//!
//! The suite runs them reduced (a few minutes in all); the full kill run:
//!
//! ```sh
//! SERIN_CHAOS_RELEASES=50 SERIN_CHAOS_KILLS=20 SERIN_CHAOS_INTERVAL=10s \
//!   cargo test --release --test scenarios chaos::kills -- --nocapture
//! SERIN_CHAOS_API_FAULTS=1 ...   # and API faults
//! SERIN_CHAOS_SEED=7 ...         # another sequence of kill times
//! ```

mod api_outage;
mod drift;
mod kills;
mod outages;
mod watch_expiry;

use serin_core::Phase;
use serin_testkit::World;

/// API requests (of any client) the stack answered with one of `codes`.
fn answered(world: &World, codes: &[u16]) -> u64 {
    let codes: Vec<String> = codes.iter().map(|c| format!("\"{c}\"")).collect();
    world
        .stack
        .faults()
        .metrics(0, 0)
        .lines()
        .filter(|l| codes.iter().any(|c| l.contains(c.as_str())))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

fn terminal(p: Phase) -> bool {
    matches!(p, Phase::Succeeded | Phase::Failed)
}

/// Deploys `podinfo:6.0.0` and a Canary for it (the `kubernetes` provider, a 1 s interval,
/// `iterations` steps, a 10-minute deadline): the release both outage runs interrupt.
async fn podinfo_release(world: &World, iterations: u32) {
    world
        .apply(
            &world.deployments(),
            serin_testkit::deployment("podinfo", "podinfo:6.0.0", 2),
        )
        .await;
    world
        .apply(
            &world.canaries(),
            serin_testkit::canary("podinfo")
                .iterations(iterations)
                .deadline(600)
                .build(),
        )
        .await;
}
