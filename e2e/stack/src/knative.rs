//! A stand-in for Knative Serving's controller, on either control plane: every new template
//! of a Knative Service (`serving.knative.dev/v1`) becomes a Revision named
//! `<service>-00001`, `-00002`, ... (Knative's naming), recorded in the Service's
//! `status.latestCreatedRevisionName`. A Revision becomes `Ready` after the image's ready
//! delay (the scenario's `workloads` rules: an image containing `broken` never does), and then
//! is the Service's `status.latestReadyRevisionName`. No pod runs and `spec.traffic` is not
//! programmed into any gateway: this is what a controller releasing a Knative Service reads.

use crate::scenario::Workloads;
use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::sync::Arc;

/// Label Knative puts on a Revision: the Service it belongs to.
const SERVICE_LABEL: &str = "serving.knative.dev/service";
/// The template a Revision was made from, to tell a new template from a traffic change.
const TEMPLATE_ANNOTATION: &str = "serin-stack.local/template";

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.knative.dev", "v1", kind),
        plural,
    )
}

struct Serving {
    client: Client,
    cfg: Workloads,
}

/// Runs until the task is aborted, serving the Knative Services of `namespace` (`None`: of
/// every namespace). Needs the Knative CRDs (`e2e/crds/routing.yaml`).
pub async fn run(client: Client, cfg: Workloads, namespace: Option<String>) -> Result<()> {
    let serving = Arc::new(Serving {
        client: client.clone(),
        cfg,
    });
    let ar = resource("Service", "services");
    let services: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    };
    let mut events = watcher(services, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        match events.try_next().await {
            Ok(Some(watcher::Event::Apply(service) | watcher::Event::InitApply(service))) => {
                serving.clone().reconcile_or_retry(service).await
            }
            Ok(Some(_)) => {}
            Ok(None) => return Ok(()),
            // The watcher re-establishes a failed watch after its backoff; ending here would
            // leave every later template without a revision.
            Err(e) => tracing::warn!("knative: service watch: {e}"),
        }
    }
}

/// A Knative Service's `spec.template` as JSON text: what a Revision was made from.
fn template_of(service: &DynamicObject) -> Result<String> {
    let template = service.data.pointer("/spec/template").cloned();
    Ok(serde_json::to_string(&template.unwrap_or(Value::Null))?)
}

/// How often a failed revision is retried (1 s apart) before waiting for the next change.
const ATTEMPTS: u32 = 10;

impl Serving {
    fn revisions(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &resource("Revision", "revisions"))
    }

    fn services(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &resource("Service", "services"))
    }

    /// Reconciles `service`; a failure (the API server under load) is retried in the
    /// background with the Service read again, as no watch event may come to retry it.
    async fn reconcile_or_retry(self: Arc<Self>, service: DynamicObject) {
        let Err(e) = self.reconcile(&service).await else {
            return;
        };
        let (ns, name) = (service.namespace().unwrap_or_default(), service.name_any());
        tracing::warn!(service = %name, "knative stand-in: {e:#}; retrying");
        tokio::spawn(async move {
            let api = self.services(&ns);
            for _ in 0..ATTEMPTS {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let result = match api.get_opt(&name).await {
                    Ok(Some(service)) => self.reconcile(&service).await,
                    Ok(None) => return,
                    Err(e) => Err(e.into()),
                };
                match result {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(service = %name, "knative stand-in: {e:#}"),
                }
            }
        });
    }

    /// A Revision for a template not seen before; the Service's status names it.
    async fn reconcile(self: &Arc<Self>, service: &DynamicObject) -> Result<()> {
        if service.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let ns = service.namespace().unwrap_or_default();
        let name = service.name_any();
        let template = template_of(service)?;
        let latest = service
            .data
            .pointer("/status/latestCreatedRevisionName")
            .and_then(Value::as_str);
        if let Some(latest) = latest
            && let Some(revision) = self.revisions(&ns).get_opt(latest).await?
            && revision.annotations().get(TEMPLATE_ANNOTATION) == Some(&template)
        {
            return Ok(());
        }
        let number = latest
            .and_then(|l| l.rsplit_once('-'))
            .and_then(|(_, n)| n.parse::<u32>().ok())
            .unwrap_or(0)
            + 1;
        let revision_name = format!("{name}-{number:05}");
        if !self
            .create_revision(service, &revision_name, &template)
            .await?
        {
            return Ok(());
        }
        self.set_revision_ready(&ns, &revision_name, false).await?;
        self.patch_service_status(
            &ns,
            &name,
            json!({
                "observedGeneration": service.metadata.generation,
                "latestCreatedRevisionName": revision_name,
            }),
        )
        .await?;
        let image = service
            .data
            .pointer("/spec/template/spec/containers/0/image")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(delay) = self.cfg.ready_after(image) {
            let this = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Err(e) = this.ready(&ns, &name, &revision_name).await {
                    tracing::warn!(revision = %revision_name, "knative stand-in: {e:#}");
                }
            });
        }
        Ok(())
    }

    /// Creates the Revision `revision_name` of `service`'s `template`, owned by the Service.
    /// Returns whether the rest of the reconcile is still to do: false when the Revision
    /// existed and this event is stale.
    async fn create_revision(
        &self,
        service: &DynamicObject,
        revision_name: &str,
        template: &str,
    ) -> Result<bool> {
        let ns = service.namespace().unwrap_or_default();
        let name = service.name_any();
        let mut revision = DynamicObject::new(revision_name, &resource("Revision", "revisions"))
            .within(&ns)
            .data(
                json!({"spec": service.data.pointer("/spec/template/spec").cloned()
                .unwrap_or(json!({}))}),
            );
        revision
            .labels_mut()
            .insert(SERVICE_LABEL.into(), name.clone());
        revision
            .annotations_mut()
            .insert(TEMPLATE_ANNOTATION.into(), template.to_string());
        revision.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "serving.knative.dev/v1".into(),
                kind: "Service".into(),
                name: name.clone(),
                uid: service.uid().unwrap_or_default(),
                controller: Some(true),
                ..Default::default()
            },
        ]);
        match self
            .revisions(&ns)
            .create(&PostParams::default(), &revision)
            .await
        {
            Ok(_) => Ok(true),
            // Made before: either this event is stale (the Service has moved on or already
            // names the revision) or an earlier attempt failed after creating it; only the
            // latter has anything left to do.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.unfinished(&ns, &name, revision_name, template).await
            }
            Err(e) => Err(e).with_context(|| format!("creating Revision {ns}/{revision_name}")),
        }
    }

    /// Whether `revision` exists for `template`, which is still the Service's template, and
    /// the Service's status does not name it yet (an attempt failed half-way).
    async fn unfinished(
        &self,
        ns: &str,
        service: &str,
        revision: &str,
        template: &str,
    ) -> Result<bool> {
        let current = self.services(ns).get(service).await?;
        let current_template = template_of(&current)?;
        let named = current.data.pointer("/status/latestCreatedRevisionName")
            == Some(&Value::String(revision.into()));
        let existing = self.revisions(ns).get(revision).await?;
        let ours = existing
            .annotations()
            .get(TEMPLATE_ANNOTATION)
            .map(String::as_str)
            == Some(template);
        Ok(ours && current_template == template && !named)
    }

    async fn ready(&self, ns: &str, service: &str, revision: &str) -> Result<()> {
        self.set_revision_ready(ns, revision, true).await?;
        self.patch_service_status(ns, service, json!({"latestReadyRevisionName": revision}))
            .await
    }

    async fn set_revision_ready(&self, ns: &str, name: &str, ready: bool) -> Result<()> {
        let (status, reason) = match ready {
            true => ("True", "Ready"),
            false => ("Unknown", "Deploying"),
        };
        let patch = json!({"status": {"conditions": [{
            "type": "Ready", "status": status, "reason": reason,
            "lastTransitionTime": crate::clock::timestamp(),
        }]}});
        self.revisions(ns)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("status of Revision {ns}/{name}"))?;
        Ok(())
    }

    async fn patch_service_status(&self, ns: &str, name: &str, status: Value) -> Result<()> {
        self.services(ns)
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
            .with_context(|| format!("status of Knative Service {ns}/{name}"))?;
        Ok(())
    }
}
