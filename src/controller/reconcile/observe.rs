//! Observe: what is, read from the caches (and, for Knative, the API): the target and its
//! primary, their readiness, the revision and tracked configs, the status to start from.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::DynamicObject;
use kube::{Api, ResourceExt};
use serin_core::hash::spec_hash;
use serin_core::{Command, Observation, Plan, Probes, Readiness};

use crate::api::{Canary, CanaryStatus, TargetKind};
use crate::controller::caches::packed;
use crate::controller::context::{Context, key};
use crate::controller::error::{Error, Reason};
use crate::controller::reconcile::target::{KnativeService, Primary, ReadinessClock, Target};
use crate::controller::runtime::slots;
use crate::workload::configs::{self, Tracked};
use crate::workload::primary::{PRIMARY_SUFFIX, selector_label};
use crate::workload::readiness;
use crate::workload::{knative, stateful_set};

pub(super) async fn find_target(
    canary: &Canary,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<Target>, Error> {
    let name = &canary.spec.target_ref.name;
    let stores = &ctx.stores;
    if canary.spec.is_knative_target() {
        return find_knative(ctx, namespace, name).await;
    }
    Ok(match canary.spec.target_ref.kind {
        TargetKind::Deployment => {
            let Some(cached) = packed::get(&stores.deployments, namespace, name)? else {
                return Ok(None);
            };
            stores
                .fetched
                .whole(&ctx.client, cached)
                .await
                .map_err(|e| Error::kube(format!("read Deployment {namespace}/{name}"), e))?
                .map(Target::Deployment)
        }
        TargetKind::DaemonSet => {
            packed::get(&stores.daemon_sets, namespace, name)?.map(Target::DaemonSet)
        }
        TargetKind::Service => packed::get(&stores.services, namespace, name)?.map(Target::Service),
        TargetKind::StatefulSet => {
            let Some(s) = packed::get(&stores.stateful_sets, namespace, name)? else {
                return Ok(None);
            };
            if let Some((field, message)) = stateful_set::problems(&s).into_iter().next() {
                return Err(Error::Blocked {
                    reason: Reason::TargetInvalid,
                    message: format!("spec.targetRef: {field}: {message}"),
                });
            }
            Some(Target::StatefulSet(s))
        }
    })
}

/// A Knative Service and its latest revision, from the API (see `workload::knative`). A kind
/// the API server does not serve (Knative not installed) reads as not found.
pub(super) async fn find_knative(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<Target>, Error> {
    let services: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &knative::service_resource());
    let cached = ctx.routing.cached(&knative::service_key(namespace, name));
    let service = match cached {
        Some(service) => Ok(Some(service)),
        None => services.get_opt(name).await,
    };
    let service = match service {
        Ok(found) => found,
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => {
            return Err(Error::kube(
                format!("read Knative Service {namespace}/{name}"),
                e,
            ));
        }
    };
    let Some(service) = service else {
        return Ok(None);
    };
    let latest = match knative::latest_created(&service) {
        Some(revision) => get_revision(ctx, namespace, revision).await?,
        None => None,
    };
    Ok(Some(Target::Knative(Arc::new(KnativeService {
        service,
        latest,
    }))))
}

pub(super) async fn get_revision(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<DynamicObject>, Error> {
    if let Some(revision) = ctx.routing.cached(&knative::revision_key(namespace, name)) {
        return Ok(Some(revision));
    }
    let revisions: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &knative::revision_resource());
    revisions
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("read Knative Revision {namespace}/{name}"), e))
}

pub(super) async fn find_primary(
    target: &Target,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<Primary>, Error> {
    Ok(match target {
        Target::Deployment(d) => {
            let name = format!("{}{PRIMARY_SUFFIX}", d.name_any());
            packed::get(&ctx.stores.deployments, namespace, &name)?.map(Primary::Deployment)
        }
        Target::DaemonSet(d) => {
            let name = format!("{}{PRIMARY_SUFFIX}", d.name_any());
            packed::get(&ctx.stores.daemon_sets, namespace, &name)?.map(Primary::DaemonSet)
        }
        // Released in place: its current revision is the primary.
        Target::StatefulSet(s) => Some(Primary::StatefulSet(s.clone())),
        Target::Service(_) => None,
        Target::Knative(k) => {
            let Some(name) = knative::primary_revision(&k.service) else {
                return Ok(None);
            };
            let revision = match &k.latest {
                Some(latest) if latest.name_any() == name => Some(latest.clone()),
                _ => get_revision(ctx, namespace, name).await?,
            };
            let Some(revision) = revision else {
                return Err(Error::Blocked {
                    reason: Reason::TargetInvalid,
                    message: format!(
                        "Knative Service {namespace}/{}: annotation {} names revision {name}, \
                         which does not exist; remove the annotation to make the latest \
                         revision the primary",
                        k.service.name_any(),
                        knative::PRIMARY_REVISION
                    ),
                });
            };
            Some(Primary::KnativeRevision(Arc::new(revision)))
        }
    })
}

/// A ready target's readiness on deletion, confirmed by its ReplicaSets: traffic is handed
/// back to it then, the one moment nothing else would serve, and a Deployment scaled to zero
/// and straight back up can report available pods that are terminating
/// (`readiness::replica_sets_lag`). One LIST, only while a Canary is being deleted. A failed
/// read waits like an unready target (at the progress deadline the primary is kept serving).
async fn confirm_replica_sets(
    ctx: &Context,
    namespace: &str,
    deployment: &Deployment,
) -> Readiness {
    let labels = deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), namespace);
    match api
        .list(&kube::api::ListParams::default().labels(&labels))
        .await
    {
        Ok(list) => match readiness::replica_sets_lag(deployment, &list.items) {
            Some(reason) => Readiness::NotReady(reason),
            None => Readiness::Ready,
        },
        // The API server's code and reason, not its message (a remote answer).
        Err(kube::Error::Api(s)) => Readiness::NotReady(format!(
            "reading the target's ReplicaSets: {} {}",
            s.code,
            s.reason.chars().take(64).collect::<String>()
        )),
        Err(_) => Readiness::NotReady("reading the target's ReplicaSets failed".into()),
    }
}

/// Whether the cache has not yet seen serin's last write of the target.
pub(super) fn is_stale(ctx: &Context, target: &Target) -> bool {
    match target {
        Target::Deployment(d) => ctx.is_stale(d.as_ref()),
        Target::DaemonSet(d) => ctx.is_stale(d.as_ref()),
        Target::StatefulSet(s) => ctx.is_stale(s.as_ref()),
        // Read from the API, never stale.
        Target::Service(_) | Target::Knative(_) => false,
    }
}

/// Whether the cache has not yet seen serin's last write of the primary.
pub(super) fn is_stale_primary(ctx: &Context, primary: &Primary) -> bool {
    match primary {
        Primary::Deployment(d) => ctx.is_stale(d.as_ref()),
        Primary::DaemonSet(d) => ctx.is_stale(d.as_ref()),
        Primary::StatefulSet(s) => ctx.is_stale(s.as_ref()),
        Primary::KnativeRevision(_) => false,
    }
}

/// MetricTemplates the analysis references must exist before a release can be judged.
pub(super) fn missing_templates(
    canary: &Canary,
    ctx: &Context,
    namespace: &str,
) -> Result<(), Error> {
    let Some(analysis) = canary.spec.analysis() else {
        return Ok(());
    };
    for (i, metric) in analysis.metrics().iter().enumerate() {
        let Some(reference) = &metric.template_ref else {
            continue;
        };
        let ns = reference.namespace.as_deref().unwrap_or(namespace);
        if ctx
            .stores
            .templates
            .get(&key(ns, &reference.name))
            .is_none()
        {
            return Err(Error::Blocked {
                reason: Reason::MetricTemplateNotFound,
                message: format!(
                    "spec.analysis.metrics[{i}].templateRef: MetricTemplate {ns}/{} not found",
                    reference.name
                ),
            });
        }
    }
    Ok(())
}

/// The ConfigMaps and Secrets the target uses, checksummed; recorded in the index, so that a
/// change to one of them wakes this Canary.
pub(super) fn track_configs(
    canary: &Canary,
    target: &Target,
    ctx: &Context,
    namespace: &str,
) -> Tracked {
    // A StatefulSet released in place has no primary whose copies of its ConfigMaps and
    // Secrets could differ from the canary's: both revisions read the same ones, so a change
    // to them is no release of its own.
    if !ctx.config.config_tracking || matches!(target, Target::StatefulSet(_)) {
        return Tracked::default();
    }
    let Some(pod) = target.pod_spec() else {
        return Tracked::default();
    };
    // One walk of the pod spec: the references are recorded, then tracked.
    let refs = configs::refs(&pod);
    let used = refs.iter().map(|r| (r.kind, r.name.clone()));
    let canary_ref = kube::runtime::reflector::ObjectRef::from_obj(canary);
    ctx.stores.index.uses_configs(&canary_ref, namespace, used);
    configs::track_refs(
        refs,
        |name| ctx.stores.configmaps.get(&key(namespace, name)),
        |name| ctx.stores.secrets.get(&key(namespace, name)),
    )
}

/// The Canary's status, unless the cache has not caught up with serin's own last write.
pub(super) fn current_status(canary: &Canary, ctx: &Context) -> CanaryStatus {
    let mut cached = canary.status.clone().unwrap_or_default();
    crate::controller::notify::outbox::tidy(&mut cached);
    let uid = canary.uid().unwrap_or_default();
    let cached_version = canary
        .resource_version()
        .and_then(|v| v.parse::<u64>().ok());
    match ctx.written.newer_than(&uid, cached_version) {
        Some((version, status)) => {
            tracing::debug!(
                cached = cached_version,
                written = version,
                "cache is behind; using the status serin wrote"
            );
            status
        }
        None => cached,
    }
}

/// When the release underway began (its open `status.history` record).
fn release_started(current: &CanaryStatus) -> Option<chrono::DateTime<chrono::Utc>> {
    current
        .history
        .as_ref()
        .and_then(|h| h.last())
        .filter(|r| r.ended.is_none())
        .map(|r| r.started)
}

/// What one reconcile works from.
pub(super) struct Observed {
    pub target: Target,
    pub primary: Option<Primary>,
    /// Selector label of a workload target (`None` for Service and Knative targets).
    pub selector: Option<(String, String)>,
    pub tracked: Tracked,
    /// The Canary's status as last written (the cache's, or serin's own newer write).
    pub current: CanaryStatus,
    /// The same, as the engine reads it.
    pub status: serin_core::Status,
    pub obs: Observation,
}

/// Observes the Canary's target and primary; `None` when the target does not exist.
pub(super) async fn observe(
    canary: &Canary,
    ctx: &Context,
    plan: &Plan,
    namespace: &str,
    now: DateTime<Utc>,
    command: Option<Command>,
) -> Result<Option<Observed>, Error> {
    let Some(target) = find_target(canary, ctx, namespace).await? else {
        return Ok(None);
    };
    // Templates only matter to an analysis; a deletion must not wait on one (the finalizer
    // would stay until someone recreated it).
    if canary.metadata.deletion_timestamp.is_none() {
        missing_templates(canary, ctx, namespace)?;
    }
    let selector = selector(&target, ctx)?;

    // What is.
    let tracked = track_configs(canary, &target, ctx, namespace);
    let revision = spec_hash(&target.revision_source(), &tracked.checksums);
    let current = current_status(canary, ctx);
    let status = current.engine();
    let primary = find_primary(&target, ctx, namespace).await?;
    let analysis = canary.spec.analysis().cloned().unwrap_or_default();
    let clock = ReadinessClock {
        deadline: plan.progress_deadline,
        since: status.last_transition_time,
        now,
    };
    let mut target_readiness = if target.is_scaled_to_zero() {
        Readiness::NotReady(format!("{} is scaled to zero", plan.target))
    } else if is_stale(ctx, &target) {
        Readiness::NotReady("waiting for the target's update to be observed".into())
    } else {
        target.readiness(analysis.canary_ready_threshold(), &clock)
    };
    if let Target::Deployment(d) = &target
        && canary.metadata.deletion_timestamp.is_some()
        && target_readiness.is_ready()
    {
        target_readiness = confirm_replica_sets(ctx, namespace, d).await;
    }
    let primary_readiness = match &primary {
        None if matches!(target, Target::Service(_)) => Readiness::Ready,
        None => Readiness::Missing,
        Some(p) if is_stale_primary(ctx, p) => {
            Readiness::NotReady("waiting for the primary's update to be observed".into())
        }
        Some(p) => p.readiness(analysis.primary_ready_threshold(), &clock),
    };
    let obs = Observation {
        target: target_readiness,
        primary: primary_readiness,
        deleting: canary.metadata.deletion_timestamp.is_some(),
        deletion_requested_at: canary
            .metadata
            .deletion_timestamp
            .as_ref()
            .and_then(crate::workload::readiness::to_chrono),
        probes: Probes::default(),
        queued: slots::queued(canary, &status, &revision, command, ctx),
        group: super::group::observe(canary, release_started(&current), ctx),
        revision,
        command,
    };
    Ok(Some(Observed {
        target,
        primary,
        selector,
        tracked,
        current,
        status,
        obs,
    }))
}

/// `TargetNotFound`, naming the kind and the fix.
pub(super) fn target_not_found(canary: &Canary, namespace: &str) -> Error {
    let r = &canary.spec.target_ref;
    let (kind, hint) = match canary.spec.is_knative_target() {
        true => ("Knative Service", " (is Knative Serving installed?)"),
        false => (r.kind.as_str(), ""),
    };
    Error::Blocked {
        reason: Reason::TargetNotFound,
        message: format!(
            "spec.targetRef: {kind} {namespace}/{} not found; create it or fix the name{hint}",
            r.name
        ),
    }
}

/// The selector label of a workload target (a DaemonSet's or a StatefulSet's read as a
/// Deployment's would be).
fn selector(target: &Target, ctx: &Context) -> Result<Option<(String, String)>, Error> {
    let as_deployment = |metadata: &kube::api::ObjectMeta, selector: Option<&LabelSelector>| {
        let deployment = Deployment {
            metadata: metadata.clone(),
            spec: selector.map(|s| k8s_openapi::api::apps::v1::DeploymentSpec {
                selector: s.clone(),
                ..Default::default()
            }),
            status: None,
        };
        selector_label(&deployment, &ctx.config.selector_labels).map_err(Error::workload)
    };
    Ok(match target {
        Target::Deployment(d) => {
            Some(selector_label(d, &ctx.config.selector_labels).map_err(Error::workload)?)
        }
        Target::DaemonSet(d) => Some(as_deployment(
            &d.metadata,
            d.spec.as_ref().map(|s| &s.selector),
        )?),
        Target::StatefulSet(s) => Some(as_deployment(
            &s.metadata,
            s.spec.as_ref().map(|s| &s.selector),
        )?),
        Target::Service(_) | Target::Knative(_) => None,
    })
}
