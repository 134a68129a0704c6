//! Release groups (`serin.flagger.app/release-group: NAME` on each member Canary): the other
//! members' releases as the engine reads them ([`serin_core::GroupObservation`]), and a lock
//! that makes the members' decisions one at a time.
//!
//! A group is the Canaries of one namespace with the same annotation value. An annotation
//! rather than a kind of its own: membership is written on the member, so a Canary belongs
//! to one group at most by construction; nothing more to install or to grant; and a group
//! cannot reach into another namespace, where one team's failing release would roll back
//! another team's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use serin_core::{GroupObservation, Phase, Position};

use crate::api::Canary;
use crate::canary_plan;
use crate::controller::context::Context;

/// The annotation naming a Canary's release group.
pub use crate::api::canary::RELEASE_GROUP as ANNOTATION;

/// The release group `canary` belongs to, if any.
pub fn name(canary: &Canary) -> Option<&str> {
    canary
        .annotations()
        .get(ANNOTATION)
        .map(|g| g.trim())
        .filter(|g| !g.is_empty())
}

/// The other members of `canary`'s group with a release underway, or finished since
/// `canary`'s began (`started`, `None` when it has none running).
pub(super) fn observe(
    canary: &Canary,
    started: Option<DateTime<Utc>>,
    ctx: &Context,
) -> Option<GroupObservation> {
    let group = name(canary)?;
    let namespace = canary.namespace();
    let me = canary.name_any();
    let mut seen = GroupObservation {
        name: group.to_string(),
        failed: None,
        members: Vec::new(),
    };
    let mut others: Vec<_> = ctx
        .stores
        .canaries
        .state()
        .into_iter()
        .filter(|c| c.namespace() == namespace && c.name_any() != me && name(c) == Some(group))
        .collect();
    others.sort_by_key(|c| c.name_any());
    for other in others {
        // The cache corrected by this process's own last writes: the member decided before
        // this one (under the group's lock) is seen as it decided.
        let current = super::observe::current_status(&other, ctx);
        let status = current.engine();
        let ended_since_mine = current
            .history
            .as_ref()
            .and_then(|h| h.last())
            .and_then(|r| r.ended)
            .zip(started)
            .is_some_and(|(ended, started)| ended >= started);
        let position = match status.phase {
            Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting | Phase::Finalising => {
                match canary_plan::from_canary(
                    &other,
                    ctx.config.mesh_provider,
                    ctx.config.min_interval,
                ) {
                    Ok(plan) => serin_core::group::position(&plan, &status),
                    // Blocked on its spec: it holds the group, and the events name it.
                    Err(_) => Position::Step(0),
                }
            }
            Phase::Succeeded if ended_since_mine => Position::Promoting,
            Phase::Failed if ended_since_mine => {
                seen.failed.get_or_insert_with(|| other.name_any());
                continue;
            }
            _ => continue,
        };
        seen.members.push((other.name_any(), position));
    }
    Some(seen)
}

/// One lock per release group: its members' reconciles decide and write one at a time, each
/// seeing the others' last writes, so two members cannot both read the other as not yet
/// ready, or one promote while another's last check fails unseen.
#[derive(Debug, Default)]
pub struct Locks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Locks {
    /// Waits for `canary`'s group's lock (`None` outside a group).
    pub async fn lock(&self, canary: &Canary) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let group = name(canary)?;
        let key = format!("{}/{group}", canary.namespace().unwrap_or_default());
        let lock = {
            let mut map = self.0.lock().ok()?;
            // Groups nobody holds or waits for are forgotten: the map stays as small as the
            // groups being reconciled.
            map.retain(|_, l| Arc::strong_count(l) > 1);
            map.entry(key).or_default().clone()
        };
        Some(lock.lock_owned().await)
    }
}
