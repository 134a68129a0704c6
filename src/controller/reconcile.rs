//! One reconcile of one Canary: observe (from the caches) → decide (the pure engine, running
//! the probes it asks for) → apply the effects → write the status → publish events.
//!
//! The status is the only memory of a release. Effects are applied before it is written and
//! are idempotent, so a process killed anywhere in between redoes the same step on restart;
//! events, alerts and notifications go out only after the status is written, so they are
//! not repeated for a step that did not happen.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Service;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use serin_core::hash::spec_hash;
use serin_core::{
    Analysis, ConditionStatus, Decision, Effect, EventType, Notify, Observation, Phase, Plan,
    Probe, Probes, Readiness, Routes, Step, Strategy, decide, desired_routes,
};
use tracing::Instrument;

use crate::api::{Canary, CanaryStatus, HookType, TargetKind};
use crate::canary_plan;
use crate::controller::alerts;
use crate::controller::apply::{MANAGER, Scope, primary_drift};
use crate::controller::commands;
use crate::controller::conditions;
use crate::controller::context::{Context, Written, key};
use crate::controller::error::Error;
use crate::controller::router::{self, Input};
use crate::controller::target::{KnativeService, Primary, Target};
use crate::controller::telemetry::Outcome;
use crate::controller::webhooks::{self, Call};
use crate::workload::configs::{self, Tracked};
use crate::workload::knative;
use crate::workload::primary::{PRIMARY_SUFFIX, selector_label};

/// Flagger's finalizer name, so Canaries move between the two controllers.
pub const FINALIZER: &str = "finalizer.flagger.app";
/// How often a blocked Canary is looked at again (watches usually wake it sooner).
const BLOCKED_RETRY: Duration = Duration::from_secs(30);
/// Probes per decision: one per gate and the analysis. More means a bug in the engine.
const MAX_PROBES: usize = 8;

pub async fn reconcile(canary: Arc<Canary>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "canary",
        namespace = canary.namespace().unwrap_or_default(),
        name = canary.name_any()
    );
    let started = std::time::Instant::now();
    let result = run(&canary, &ctx)
        .instrument(span.clone())
        .await
        .map_err(Error::needing_a_human);
    record_duration(&canary, &ctx, started.elapsed());
    match result {
        Err(Error::Blocked { reason, message }) => {
            ctx.telemetry.reconcile_error(reason);
            blocked(&canary, &ctx, reason, &message)
                .instrument(span)
                .await
        }
        Ok(action) => {
            ctx.retries.reset(&canary.uid().unwrap_or_default());
            Ok(action)
        }
        other => other,
    }
}

/// Every reconcile's duration; Flagger's `flagger_canary_duration_seconds` for those of a
/// canary under analysis (not of a deleted one: its series are gone).
fn record_duration(canary: &Canary, ctx: &Context, took: Duration) {
    let seconds = took.as_secs_f64();
    ctx.telemetry.reconciled(seconds);
    let analysing = canary.status.as_ref().is_some_and(|s| s.phase.is_active());
    if analysing && canary.metadata.deletion_timestamp.is_none() {
        let namespace = canary.namespace().unwrap_or_default();
        ctx.telemetry
            .duration(&namespace, &canary.spec.target_ref.name, seconds);
    }
}

/// Requeue policy for transient errors: per Canary, 1 s doubling to 5 minutes while the
/// errors go on (reset by the next reconcile that completes).
pub fn error_policy(canary: Arc<Canary>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.retries.next(&canary.uid().unwrap_or_default());
    ctx.telemetry.reconcile_error(error.label());
    tracing::warn!(
        namespace = canary.namespace().unwrap_or_default(),
        name = canary.name_any(),
        error = %error,
        kind = error.label(),
        retry_in = ?delay,
        "reconcile failed; retrying"
    );
    Action::requeue(delay)
}

async fn run(canary: &Canary, ctx: &Context) -> Result<Action, Error> {
    if !ctx.stores.ready() {
        tracing::debug!("caches not synced yet; retrying");
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let namespace = canary.namespace().unwrap_or_default();
    let deleting = canary.metadata.deletion_timestamp.is_some();
    let has_finalizer = canary.finalizers().iter().any(|f| f == FINALIZER);
    if deleting && !has_finalizer {
        ctx.telemetry
            .forget(&namespace, &canary.spec.target_ref.name);
        return Ok(Action::await_change());
    }
    if !deleting && !has_finalizer {
        add_finalizer(canary, ctx).await?;
    }
    let now = Utc::now();

    // What the spec asks for.
    let mut plan =
        match canary_plan::from_canary(canary, ctx.config.mesh_provider, ctx.config.min_interval) {
            Ok(plan) => plan,
            Err(_) if deleting => return remove_finalizer(canary, ctx).await,
            Err(problems) => return Err(blocked_by("InvalidSpec", &problems)),
        };
    // `serin pause` holds the Canary as `spec.suspend` does; a command waits until resumed.
    plan.suspend |= commands::paused(canary);
    let requested = commands::requested(canary, ctx).filter(|_| !plan.suspend && !deleting);
    if ctx.config.no_cross_namespace_refs && !deleting {
        let problems = crate::api::validate::cross_namespace_refs(canary);
        if !problems.is_empty() {
            return Err(blocked_by("CrossNamespaceRef", &problems));
        }
    }
    let provider = canary.spec.provider_or(ctx.config.mesh_provider);
    let router = router::for_provider(provider).map_err(|message| Error::Blocked {
        reason: "ProviderNotSupported",
        message,
    })?;
    let Some(target) = find_target(canary, ctx, &namespace).await? else {
        if deleting {
            return remove_finalizer(canary, ctx).await;
        }
        let r = &canary.spec.target_ref;
        let (kind, hint) = match canary.spec.is_knative_target() {
            true => ("Knative Service", " (is Knative Serving installed?)"),
            false => (r.kind.as_str(), ""),
        };
        return Err(Error::Blocked {
            reason: "TargetNotFound",
            message: format!(
                "spec.targetRef: {kind} {namespace}/{} not found; create it or fix the name{hint}",
                r.name
            ),
        });
    };
    missing_templates(canary, ctx, &namespace)?;
    let selector = match &target {
        Target::Deployment(d) => {
            Some(selector_label(d, &ctx.config.selector_labels).map_err(Error::workload)?)
        }
        Target::DaemonSet(d) => {
            let as_deployment = Deployment {
                metadata: d.metadata.clone(),
                spec: d
                    .spec
                    .as_ref()
                    .map(|s| k8s_openapi::api::apps::v1::DeploymentSpec {
                        selector: s.selector.clone(),
                        ..Default::default()
                    }),
                status: None,
            };
            Some(
                selector_label(&as_deployment, &ctx.config.selector_labels)
                    .map_err(Error::workload)?,
            )
        }
        Target::Service(_) | Target::Knative(_) => None,
    };

    // What is.
    let tracked = track_configs(&target, ctx, &namespace);
    let revision = spec_hash(&target.revision_source(), &tracked.checksums);
    let current = current_status(canary, ctx);
    let status = current.engine();
    let primary = find_primary(&target, ctx, &namespace).await?;
    let analysis = canary.spec.analysis().cloned().unwrap_or_default();
    let since = status.last_transition_time;
    let target_readiness = if target.is_scaled_to_zero() {
        Readiness::NotReady(format!("{} is scaled to zero", plan.target))
    } else if is_stale(ctx, &target, &namespace) {
        Readiness::NotReady("waiting for the target's update to be observed".into())
    } else {
        target.readiness(
            analysis.canary_ready_threshold(),
            plan.progress_deadline,
            since,
            now,
        )
    };
    let primary_readiness = match &primary {
        None if matches!(target, Target::Service(_)) => Readiness::Ready,
        None => Readiness::Missing,
        Some(p) if is_stale_primary(ctx, p, &namespace) => {
            Readiness::NotReady("waiting for the primary's update to be observed".into())
        }
        Some(p) => p.readiness(
            analysis.primary_ready_threshold(),
            plan.progress_deadline,
            since,
            now,
        ),
    };
    let mut obs = Observation {
        target: target_readiness,
        primary: primary_readiness,
        revision,
        deleting,
        probes: Probes::default(),
        command: requested.as_ref().and_then(|r| r.command),
    };

    // What to do.
    let checksum = webhook_checksum(&tracked, &obs.revision);
    let mut metrics = None;
    let step = {
        let mut probes = 0;
        loop {
            match decide(&plan, &status, &obs, now) {
                Decision::Step(step) => break step,
                Decision::Probe(_) if probes >= MAX_PROBES => {
                    tracing::error!("the engine asked for too many probes; retrying later");
                    return Ok(Action::requeue(
                        plan.interval.to_std().unwrap_or(BLOCKED_RETRY),
                    ));
                }
                Decision::Probe(probe) => {
                    probes += 1;
                    let at = Call {
                        canary,
                        phase: status.phase,
                        checksum: &checksum,
                    };
                    run_probe(ctx, probe, at, &mut obs.probes, &mut metrics).await;
                }
            }
        }
    };
    tracing::debug!(phase = %step.status.phase, effects = step.effects.len(), "decided");

    // Do it.
    let cookies = Cookies::next(canary, &current, &step.status);
    let scope = Scope {
        ctx,
        canary,
        namespace: &namespace,
        target: &target,
        primary: primary.as_ref(),
        selector: selector.as_ref(),
        tracked: &tracked,
    };
    for effect in &step.effects {
        match effect {
            Effect::EnsurePrimary => scope.ensure_primary().await?,
            Effect::Promote => scope.promote().await?,
            Effect::ScaleTargetToZero => scope.scale_target_to_zero().await?,
            Effect::ScaleTargetUp => scope.scale_target_up().await?,
            Effect::SetRoutes(routes) => {
                scope.ensure_services().await?;
                let input = route_input(canary, ctx, &plan, &namespace, *routes, &cookies);
                let recorded = desired_routes(&plan, &status, obs.target.is_ready());
                let outcome = scope.route(router.as_ref(), &input, recorded).await?;
                // Reported at once, not after the status write like the step's own events:
                // the repair is done, so a retry after a later failure finds nothing to
                // report, and the event would be lost.
                if let Some(found) = outcome.drift {
                    let message = format!(
                        "Routing of {} was changed outside serin (primary {}%, canary {}%); \
                         restored to primary {}%, canary {}%",
                        plan.canary, found.primary, found.canary, routes.primary, routes.canary
                    );
                    ctx.events
                        .publish(canary, EventType::Warning, &message)
                        .await;
                }
                record_weights(ctx, canary, &namespace, routes.primary, routes.canary);
            }
            Effect::Revert => {
                scope.revert().await?;
                if canary.spec.revert_on_deletion() {
                    let input =
                        route_input(canary, ctx, &plan, &namespace, Routes::PRIMARY, &cookies);
                    scope.restore_routing(router.as_ref(), &input).await?;
                }
            }
            Effect::Event { .. }
            | Effect::Alert { .. }
            | Effect::Webhooks(_)
            | Effect::RemoveFinalizer => {}
        }
    }

    // The primary runs what was promoted: a hand edit of its template is put back.
    let rewritten = step
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Promote | Effect::EnsurePrimary));
    if !rewritten
        && !deleting
        && let Some(p) = primary.as_ref()
        && !is_stale_primary(ctx, p, &namespace)
        && let Some(promoted) = primary_drift::drifted(p)
    {
        let name = scope.restore_primary_template(p, promoted).await?;
        let message =
            format!("{name} was changed outside serin; the promoted template is restored");
        ctx.events
            .publish(canary, EventType::Warning, &message)
            .await;
    }

    // Remember it.
    let mut next = current.clone();
    next.record(&step.status);
    next.tracked_configs = (!tracked.checksums.is_empty()).then(|| tracked.checksums.clone());
    next.observed_generation = canary.metadata.generation;
    if let Some(observations) = metrics {
        next.metrics = Some(observations);
    }
    cookies.record(&mut next);
    let mut list = next.conditions.take().unwrap_or_default();
    conditions::promoted(&mut list, step.status.phase, target.kind(), now);
    conditions::set(
        &mut list,
        conditions::READY,
        ConditionStatus::True,
        "Reconciled",
        "",
        now,
    );
    next.conditions = Some(list);
    if next != current {
        write_status(canary, ctx, &next).await?;
    }

    // Tell it.
    after_status(
        canary,
        ctx,
        &plan,
        &step,
        &checksum,
        next.metrics.as_deref(),
    )
    .await;
    if step.status.phase == Phase::Initialized && status.phase.is_initial() && !plan.skip_analysis {
        announce_metric_providers(canary, ctx).await;
    }
    if let Some(requested) = requested
        .as_ref()
        .filter(|r| commands::settled(r, status.phase, &step))
    {
        commands::consume(canary, ctx, requested, status.phase).await;
    }
    if step.effects.contains(&Effect::RemoveFinalizer) {
        return remove_finalizer(canary, ctx).await;
    }
    Ok(Action::requeue(
        step.requeue.to_std().unwrap_or(Duration::from_secs(1)),
    ))
}

/// The spec's problems as one `Blocked` error: each as `field: what to do`.
fn blocked_by(reason: &'static str, problems: &[crate::api::validate::Problem]) -> Error {
    let message = problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join("; ");
    Error::Blocked { reason, message }
}

async fn find_target(
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
        TargetKind::Deployment => stores
            .deployments
            .get(&key::<Deployment>(namespace, name))
            .map(Target::Deployment),
        TargetKind::DaemonSet => stores
            .daemon_sets
            .get(&key::<DaemonSet>(namespace, name))
            .map(Target::DaemonSet),
        TargetKind::Service => stores
            .services
            .get(&key::<Service>(namespace, name))
            .map(Target::Service),
    })
}

/// A Knative Service and its latest revision, from the API (see `workload::knative`). A kind
/// the API server does not serve (Knative not installed) reads as not found.
async fn find_knative(ctx: &Context, namespace: &str, name: &str) -> Result<Option<Target>, Error> {
    let services: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &knative::service_resource());
    let service = match services.get_opt(name).await {
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

async fn get_revision(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<DynamicObject>, Error> {
    let revisions: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &knative::revision_resource());
    revisions
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("read Knative Revision {namespace}/{name}"), e))
}

async fn find_primary(
    target: &Target,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<Primary>, Error> {
    Ok(match target {
        Target::Deployment(d) => {
            let name = format!("{}{PRIMARY_SUFFIX}", d.name_any());
            ctx.stores
                .deployments
                .get(&key::<Deployment>(namespace, &name))
                .map(Primary::Deployment)
        }
        Target::DaemonSet(d) => {
            let name = format!("{}{PRIMARY_SUFFIX}", d.name_any());
            ctx.stores
                .daemon_sets
                .get(&key::<DaemonSet>(namespace, &name))
                .map(Primary::DaemonSet)
        }
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
                    reason: "TargetInvalid",
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

fn is_stale(ctx: &Context, target: &Target, namespace: &str) -> bool {
    match target {
        Target::Deployment(d) => ctx.is_stale(
            &format!("Deployment/{namespace}/{}", d.name_any()),
            d.metadata.generation,
        ),
        Target::DaemonSet(d) => ctx.is_stale(
            &format!("DaemonSet/{namespace}/{}", d.name_any()),
            d.metadata.generation,
        ),
        // Read from the API, never stale.
        Target::Service(_) | Target::Knative(_) => false,
    }
}

fn is_stale_primary(ctx: &Context, primary: &Primary, namespace: &str) -> bool {
    match primary {
        Primary::Deployment(d) => ctx.is_stale(
            &format!("Deployment/{namespace}/{}", d.name_any()),
            d.metadata.generation,
        ),
        Primary::DaemonSet(d) => ctx.is_stale(
            &format!("DaemonSet/{namespace}/{}", d.name_any()),
            d.metadata.generation,
        ),
        Primary::KnativeRevision(_) => false,
    }
}

/// MetricTemplates the analysis references must exist before a release can be judged.
fn missing_templates(canary: &Canary, ctx: &Context, namespace: &str) -> Result<(), Error> {
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
                reason: "MetricTemplateNotFound",
                message: format!(
                    "spec.analysis.metrics[{i}].templateRef: MetricTemplate {ns}/{} not found",
                    reference.name
                ),
            });
        }
    }
    Ok(())
}

fn track_configs(target: &Target, ctx: &Context, namespace: &str) -> Tracked {
    if !ctx.config.config_tracking {
        return Tracked::default();
    }
    let Some(pod) = target.pod_spec() else {
        return Tracked::default();
    };
    configs::track(
        &pod,
        |name| ctx.stores.configmaps.get(&key(namespace, name)),
        |name| ctx.stores.secrets.get(&key(namespace, name)),
    )
}

/// The Canary's status, unless the cache has not caught up with serin's own last write.
fn current_status(canary: &Canary, ctx: &Context) -> CanaryStatus {
    let cached = canary.status.clone().unwrap_or_default();
    let uid = canary.uid().unwrap_or_default();
    let cached_version = canary
        .resource_version()
        .and_then(|v| v.parse::<u64>().ok());
    let Ok(written) = ctx.written.lock() else {
        return cached;
    };
    match (written.get(&uid), cached_version) {
        (Some(w), Some(v)) if v < w.resource_version => {
            tracing::debug!(
                cached = v,
                written = w.resource_version,
                "cache is behind; using the status serin wrote"
            );
            w.status.clone()
        }
        _ => cached,
    }
}

/// The webhook payload's `checksum`: the revision and the tracked configs, hashed.
fn webhook_checksum(tracked: &Tracked, revision: &str) -> String {
    spec_hash(&json!({"revision": revision}), &tracked.checksums)
}

async fn run_probe(
    ctx: &Context,
    probe: Probe,
    at: Call<'_>,
    probes: &mut Probes,
    metrics: &mut Option<Vec<crate::api::canary::MetricObservation>>,
) {
    let http = &ctx.http;
    match probe {
        Probe::ConfirmRollout => {
            probes.confirm_rollout = Some(webhooks::gate(http, HookType::ConfirmRollout, at).await);
        }
        Probe::PreRollout => {
            probes.pre_rollout = Some(webhooks::gate(http, HookType::PreRollout, at).await);
        }
        Probe::ConfirmTrafficIncrease => {
            let gate = webhooks::gate(http, HookType::ConfirmTrafficIncrease, at).await;
            probes.confirm_traffic_increase = Some(gate);
        }
        Probe::ConfirmPromotion => {
            let gate = webhooks::gate(http, HookType::ConfirmPromotion, at).await;
            probes.confirm_promotion = Some(gate);
        }
        Probe::Rollback => probes.rollback = Some(webhooks::rollback_requested(http, at).await),
        Probe::Analysis => {
            let outcome = match webhooks::rollout_checks(http, at).await {
                Err(reason) => Analysis::Fail(reason),
                Ok(()) => {
                    let (outcome, observations) =
                        crate::controller::metric_analysis::evaluate(ctx, at.canary).await;
                    *metrics = observations;
                    outcome
                }
            };
            probes.analysis = Some(outcome);
        }
    }
}

async fn write_status(canary: &Canary, ctx: &Context, status: &CanaryStatus) -> Result<(), Error> {
    let namespace = canary.namespace().unwrap_or_default();
    let api: Api<Canary> = Api::namespaced(ctx.client.clone(), &namespace);
    let body = json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": "Canary",
        "status": status,
    });
    let written = api
        .patch_status(
            &canary.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| Error::kube("write Canary status", e))?;
    if let (Some(uid), Some(version)) = (
        canary.uid(),
        written
            .resource_version()
            .and_then(|v| v.parse::<u64>().ok()),
    ) && let Ok(mut map) = ctx.written.lock()
    {
        map.insert(
            uid,
            Written {
                resource_version: version,
                status: status.clone(),
            },
        );
    }
    Ok(())
}

/// Events, alerts, notifications and metrics of a step whose status is written.
async fn after_status(
    canary: &Canary,
    ctx: &Context,
    plan: &Plan,
    step: &Step,
    checksum: &str,
    metrics: Option<&[crate::api::canary::MetricObservation]>,
) {
    for effect in &step.effects {
        match effect {
            Effect::Event { kind, message } => ctx.events.publish(canary, *kind, message).await,
            Effect::Alert { severity, message } => {
                let cluster = ctx.config.cluster_name.as_deref();
                let alert = alerts::content::alert(
                    canary,
                    plan,
                    &step.status,
                    metrics,
                    cluster,
                    *severity,
                    message,
                );
                let routes = canary
                    .spec
                    .analysis()
                    .map(|a| a.alerts())
                    .unwrap_or_default();
                ctx.alerts.send(alert, routes);
            }
            Effect::Webhooks(Notify::PostRollout) => {
                let at = Call {
                    canary,
                    phase: step.status.phase,
                    checksum,
                };
                for (hook, outcome) in webhooks::notify(&ctx.http, at).await {
                    let (kind, message) = match outcome {
                        Ok(()) => (
                            EventType::Normal,
                            format!("Post-rollout check {hook} passed"),
                        ),
                        Err(reason) => (
                            EventType::Warning,
                            format!("Post-rollout check {hook} failed {reason}"),
                        ),
                    };
                    ctx.events.publish(canary, kind, &message).await;
                }
            }
            _ => {}
        }
    }
    let namespace = canary.namespace().unwrap_or_default();
    let target = &canary.spec.target_ref.name;
    let code = match step.status.phase {
        Phase::Progressing => 0,
        Phase::Failed => 2,
        _ => 1,
    };
    ctx.telemetry.status(&namespace, target, code);
    let entered =
        |p: Phase| step.status.phase == p && canary.status.as_ref().map(|s| s.phase) != Some(p);
    let outcome = |outcome| {
        let status = match plan.skip_analysis {
            true => "skipped",
            false => "completed",
        };
        ctx.telemetry
            .outcome(&namespace, target, outcome, plan.strategy.label(), status);
    };
    if entered(Phase::Succeeded)
        && step
            .effects
            .iter()
            .any(|e| matches!(e, Effect::ScaleTargetToZero))
    {
        outcome(Outcome::Promoted);
    }
    if entered(Phase::Failed) && canary.status.as_ref().is_some_and(|s| s.phase.is_active()) {
        outcome(Outcome::Failed);
    }
}

/// At initialization: can the metric providers be reached? Only reported, never blocking
/// (a provider may come up after the workload), as Flagger does.
async fn announce_metric_providers(canary: &Canary, ctx: &Context) {
    let has_metrics = canary
        .spec
        .analysis()
        .is_some_and(|a| !a.metrics().is_empty());
    if !has_metrics {
        return;
    }
    match ctx.analyzer.check_availability(canary).await {
        Ok(()) => {
            let message = "all the metrics providers are available!";
            ctx.events.publish(canary, EventType::Normal, message).await;
        }
        Err(reason) => {
            let message = format!("metrics provider unavailable: {reason}");
            ctx.events
                .publish(canary, EventType::Warning, &message)
                .await;
        }
    }
}

fn record_weights(
    ctx: &Context,
    canary: &Canary,
    namespace: &str,
    primary: u32,
    canary_weight: u32,
) {
    let target = &canary.spec.target_ref.name;
    ctx.telemetry
        .weights(namespace, target, primary, canary_weight);
}

/// A Canary serin cannot run: a `Ready=False` condition and one Warning event per new
/// problem, both naming the field. Other Canaries are not affected.
async fn blocked(
    canary: &Canary,
    ctx: &Context,
    reason: &str,
    message: &str,
) -> Result<Action, Error> {
    let now = Utc::now();
    let mut status = current_status(canary, ctx);
    let mut list = status.conditions.take().unwrap_or_default();
    let changed = conditions::set(
        &mut list,
        conditions::READY,
        ConditionStatus::False,
        reason,
        message,
        now,
    );
    if status.phase == Phase::New {
        conditions::promoted(
            &mut list,
            Phase::New,
            canary.spec.target_ref.kind.as_str(),
            now,
        );
    }
    status.conditions = Some(list);
    if changed {
        tracing::warn!(reason, message, "canary blocked");
        write_status(canary, ctx, &status).await?;
        ctx.events
            .publish(canary, EventType::Warning, message)
            .await;
    }
    Ok(Action::requeue(BLOCKED_RETRY))
}

async fn add_finalizer(canary: &Canary, ctx: &Context) -> Result<(), Error> {
    let mut finalizers = canary.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    patch_finalizers(canary, ctx, finalizers).await
}

async fn remove_finalizer(canary: &Canary, ctx: &Context) -> Result<Action, Error> {
    let finalizers: Vec<String> = canary
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    patch_finalizers(canary, ctx, finalizers).await?;
    if let (Some(uid), Ok(mut written)) = (canary.uid(), ctx.written.lock()) {
        written.remove(&uid);
    }
    ctx.telemetry.forget(
        &canary.namespace().unwrap_or_default(),
        &canary.spec.target_ref.name,
    );
    Ok(Action::await_change())
}

/// Merge patch guarded by the resourceVersion, so a concurrent change is never overwritten.
async fn patch_finalizers(
    canary: &Canary,
    ctx: &Context,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let api: Api<Canary> =
        Api::namespaced(ctx.client.clone(), &canary.namespace().unwrap_or_default());
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": canary.resource_version(),
    }});
    api.patch(
        &canary.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| Error::kube("update Canary finalizers", e))?;
    Ok(())
}

fn route_input<'a>(
    canary: &'a Canary,
    ctx: &'a Context,
    plan: &Plan,
    namespace: &'a str,
    routes: Routes,
    cookies: &'a Cookies,
) -> Input<'a> {
    let apex = canary.spec.service_name();
    Input {
        canary,
        namespace,
        apex,
        primary_service: format!("{apex}{PRIMARY_SUFFIX}"),
        canary_service: format!("{apex}-canary"),
        routes,
        ab_testing: matches!(plan.strategy, Strategy::AbTesting { .. }),
        canary_cookie: cookies.canary.as_deref(),
        primary_cookie: cookies.primary.as_deref(),
        options: &ctx.config.router,
    }
}

/// Session affinity cookies (`name=value`) of the current run, kept in the status so every
/// step and every restart pins users the same way. A run gets fresh values; the previous
/// run's canary cookie is kept so routers can expire it.
#[derive(Debug, Default)]
struct Cookies {
    canary: Option<String>,
    primary: Option<String>,
    previous: Option<String>,
}

impl Cookies {
    fn next(canary: &Canary, current: &CanaryStatus, next: &serin_core::Status) -> Cookies {
        let Some(affinity) = canary
            .spec
            .analysis()
            .and_then(|a| a.session_affinity.as_ref())
        else {
            return Cookies::default();
        };
        let running = matches!(
            next.phase,
            Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting | Phase::Finalising
        );
        if !running {
            // The run is over: its cookie becomes the previous one, to be expired.
            return Cookies {
                canary: None,
                primary: current.primary_session_affinity_cookie.clone(),
                previous: current
                    .session_affinity_cookie
                    .clone()
                    .or_else(|| current.previous_session_affinity_cookie.clone()),
            };
        }
        let fresh = |name: &str| format!("{name}={}", random_token(canary));
        // A primary cookie only when the Canary names one (Flagger's behaviour).
        let primary = affinity.primary_cookie_name.as_deref().map(|name| {
            current
                .primary_session_affinity_cookie
                .clone()
                .unwrap_or_else(|| fresh(name))
        });
        Cookies {
            canary: current
                .session_affinity_cookie
                .clone()
                .or_else(|| Some(fresh(&affinity.cookie_name))),
            primary,
            previous: current.previous_session_affinity_cookie.clone(),
        }
    }

    fn record(&self, status: &mut CanaryStatus) {
        status.session_affinity_cookie = self.canary.clone();
        status.primary_session_affinity_cookie = self.primary.clone();
        status.previous_session_affinity_cookie = self.previous.clone();
    }
}

fn random_token(canary: &Canary) -> String {
    use sha2::{Digest, Sha256};
    let now = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let digest = Sha256::digest(format!("{}/{now}", canary.uid().unwrap_or_default()).as_bytes());
    hex::encode(&digest[..10])
}
