//! `serin undo NAME [--to-revision N]`: set a Canary's target Deployment back to the pod
//! template it had at an earlier revision, for people who cannot edit the spec in place.
//!
//! Revisions are the Deployment's own (`deployment.kubernetes.io/revision` on its
//! ReplicaSets, as `kubectl rollout history` lists them), so their templates come from the
//! cluster, not from serin. Without `--to-revision`, the revision the primary runs (the last
//! promoted one). A revision serin promoted within `analysis.rollbackWindow` is promoted
//! again without analysis; any other is released with the full analysis, and the command says
//! which. A target that Flux or Argo CD manages is refused: the next sync would put the spec
//! back, so the undo belongs in Git.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use serin_core::hash::spec_hash;

use crate::api::{Canary, TargetKind};
use crate::cli::cluster::{self, ClusterArgs};

#[derive(Debug, clap::Args)]
pub struct UndoArgs {
    /// The Canary.
    pub name: String,
    /// Its namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The target's revision to go back to (`kubectl rollout history deployment/TARGET`);
    /// default: the revision the primary runs.
    #[arg(long, value_name = "N")]
    pub to_revision: Option<u64>,
    /// Undo even when Flux or Argo CD manages the target (its next sync reverts it).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// The label or annotation that shows a GitOps tool manages an object, and the tool.
const GITOPS_MARKS: [(&str, &str); 3] = [
    ("kustomize.toolkit.fluxcd.io/name", "Flux"),
    ("helm.toolkit.fluxcd.io/name", "Flux"),
    ("argocd.argoproj.io/tracking-id", "Argo CD"),
];

/// The label the Deployment controller adds to each ReplicaSet's template.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The Deployment controller's revision of a ReplicaSet.
const REVISION: &str = "deployment.kubernetes.io/revision";

pub fn run(args: UndoArgs) -> anyhow::Result<ExitCode> {
    cluster::runtime()?.block_on(undo(args))
}

async fn undo(args: UndoArgs) -> anyhow::Result<ExitCode> {
    let (client, default_ns) = cluster::connect(&args.cluster).await?;
    let namespace = args.namespace.clone().unwrap_or(default_ns);
    let name = &args.name;
    let canaries: Api<Canary> = Api::namespaced(client.clone(), &namespace);
    let Some(canary) = canaries
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read Canary {namespace}/{name}"))?
    else {
        return refuse(&format!("Canary {namespace}/{name} not found"));
    };
    let target_ref = &canary.spec.target_ref;
    if target_ref.kind != TargetKind::Deployment {
        let kind: &str = target_ref.kind.into();
        return refuse(&format!(
            "spec.targetRef: serin undo sets back Deployments (their ReplicaSets keep the \
             revisions); {name} releases a {kind}"
        ));
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let target_name = &target_ref.name;
    let target = deployments
        .get(target_name)
        .await
        .with_context(|| format!("cannot read Deployment {namespace}/{target_name}"))?;
    if let Some((mark, tool)) = managed_by(&target).filter(|_| !args.force) {
        return refuse(&gitops_refusal(&namespace, target_name, mark, tool));
    }
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client, &namespace);
    let revisions = revisions(&replica_sets, &target).await?;
    let status = canary.status.clone().unwrap_or_default();
    let tracked = status.tracked_configs.clone().unwrap_or_default();
    let chosen = match choose(&revisions, args.to_revision, &status, &tracked) {
        Ok(chosen) => chosen,
        Err(why) => return refuse(&why),
    };
    let current = serde_json::to_value(target.spec.as_ref().map(|s| &s.template))?;
    if spec_hash(&current, &tracked) == spec_hash(&chosen.template, &tracked) {
        println!(
            "{namespace}/{target_name} already runs revision {}: nothing to undo",
            chosen.number
        );
        return Ok(ExitCode::SUCCESS);
    }
    set_template(&deployments, &target, &chosen.template).await?;
    println!(
        "{}",
        report(&namespace, target_name, &current, chosen, &status, &tracked)
    );
    Ok(ExitCode::SUCCESS)
}

fn refuse(why: &str) -> anyhow::Result<ExitCode> {
    eprintln!("serin: {why}");
    Ok(ExitCode::from(1))
}

/// The GitOps mark on the target, if any: the label or annotation and the tool.
fn managed_by(target: &Deployment) -> Option<(&'static str, &'static str)> {
    GITOPS_MARKS.into_iter().find(|(key, _)| {
        target.labels().contains_key(*key) || target.annotations().contains_key(*key)
    })
}

fn gitops_refusal(namespace: &str, target: &str, mark: &str, tool: &str) -> String {
    format!(
        "Deployment {namespace}/{target} is managed by {tool} ({mark}): its next sync would put \
         the template back. Revert the change in Git instead (serin promotes a revision from \
         within analysis.rollbackWindow without analysis), or suspend {tool}'s sync and run \
         serin undo with --force"
    )
}

/// One of the target's revisions: its number and pod template (without the ReplicaSet's
/// `pod-template-hash` label, as the Deployment holds it).
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub number: u64,
    pub template: Value,
}

/// The target's revisions, from the ReplicaSets it controls, oldest first.
async fn revisions(api: &Api<ReplicaSet>, target: &Deployment) -> anyhow::Result<Vec<Revision>> {
    let uid = target.uid().unwrap_or_default();
    let list = api
        .list(&ListParams::default())
        .await
        .context("cannot list ReplicaSets")?;
    let mut revisions: Vec<Revision> = list
        .items
        .iter()
        .filter(|rs| rs.owner_references().iter().any(|o| o.uid == uid))
        .filter_map(revision_of)
        .collect();
    revisions.sort_by_key(|r| r.number);
    Ok(revisions)
}

fn revision_of(rs: &ReplicaSet) -> Option<Revision> {
    let number = rs.annotations().get(REVISION)?.parse().ok()?;
    let mut template = serde_json::to_value(rs.spec.as_ref()?.template.as_ref()?).ok()?;
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    Some(Revision { number, template })
}

/// The revision to go back to: `--to-revision`, or the one whose template the primary was
/// promoted with (`status.lastPromotedSpec`).
pub fn choose<'a>(
    revisions: &'a [Revision],
    to: Option<u64>,
    status: &crate::api::CanaryStatus,
    tracked: &BTreeMap<String, String>,
) -> Result<&'a Revision, String> {
    let known = || {
        let numbers: Vec<String> = revisions.iter().map(|r| r.number.to_string()).collect();
        match numbers.is_empty() {
            true => "none are kept".to_string(),
            false => format!("kept: {}", numbers.join(", ")),
        }
    };
    if let Some(n) = to {
        return revisions.iter().find(|r| r.number == n).ok_or_else(|| {
            format!(
                "--to-revision: the target has no revision {n} ({})",
                known()
            )
        });
    }
    let promoted = status
        .last_promoted_spec
        .as_deref()
        .ok_or("nothing was promoted yet: there is no revision to go back to")?;
    revisions
        .iter()
        .rev()
        .find(|r| spec_hash(&r.template, tracked) == promoted)
        .ok_or_else(|| {
            format!(
                "no ReplicaSet of the target holds the promoted template any more ({}; the \
                 Deployment's revisionHistoryLimit bounds them): name one with --to-revision",
                known()
            )
        })
}

/// Replaces the target's template, at the generation it was read at: someone else's change
/// of the spec in between makes the patch fail rather than be overwritten (the generation,
/// not the resourceVersion, which the Deployment controller's status updates move on all
/// the time during a rollout).
async fn set_template(
    api: &Api<Deployment>,
    target: &Deployment,
    template: &Value,
) -> anyhow::Result<()> {
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/generation", "value": target.metadata.generation},
        {"op": "replace", "path": "/spec/template", "value": template},
    ]))?;
    let name = target.name_any();
    match api
        .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
    {
        Ok(_) => Ok(()),
        // The `test` operation failed: the spec changed after it was read.
        Err(kube::Error::Api(e)) if e.code == 422 => Err(anyhow::anyhow!(
            "Deployment {name} changed while serin undo read it: nothing was changed; run \
             serin undo again"
        )),
        Err(e) => Err(e).with_context(|| format!("cannot set the template of Deployment {name}")),
    }
}

/// What the undo changed (each container's image) and what serin does next.
pub fn report(
    namespace: &str,
    target: &str,
    before: &Value,
    chosen: &Revision,
    status: &crate::api::CanaryStatus,
    tracked: &BTreeMap<String, String>,
) -> String {
    let mut out = format!(
        "{namespace}/{target}: spec.template set to revision {}",
        chosen.number
    );
    let (was, now) = (images(before), images(&chosen.template));
    for (container, image) in &now {
        match was.get(container) {
            Some(old) if old != image => {
                out.push_str(&format!("\n  {container}: {old} -> {image}"))
            }
            Some(_) => {}
            None => out.push_str(&format!("\n  {container}: {image} (added)")),
        }
    }
    let hash = spec_hash(&chosen.template, tracked);
    let within_window = status.promoted_before.iter().flatten().any(|h| *h == hash);
    out.push_str(if status.last_promoted_spec.as_deref() == Some(hash.as_str()) {
        "\nthe primary runs this revision: a release in progress is cancelled, nothing is analysed"
    } else if within_window {
        "\nserin promotes it again without analysis (a rollback within analysis.rollbackWindow)"
    } else {
        "\nserin releases it with the full analysis (it was not promoted within \
         analysis.rollbackWindow)"
    });
    out
}

/// Container name → image, of a pod template.
fn images(template: &Value) -> BTreeMap<String, String> {
    let containers = template
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    containers
        .filter_map(|c| {
            Some((
                c["name"].as_str()?.to_string(),
                c["image"].as_str()?.to_string(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CanaryStatus;

    fn template(image: &str) -> Value {
        json!({"metadata": {"labels": {"app": "podinfo"}},
               "spec": {"containers": [{"name": "app", "image": image}]}})
    }

    fn revisions() -> Vec<Revision> {
        ["podinfo:1", "podinfo:2", "podinfo:3"]
            .iter()
            .zip(1..)
            .map(|(image, number)| Revision {
                number,
                template: template(image),
            })
            .collect()
    }

    fn hash(image: &str) -> String {
        spec_hash(&template(image), &BTreeMap::new())
    }

    fn promoted(image: &str) -> CanaryStatus {
        CanaryStatus {
            last_promoted_spec: Some(hash(image)),
            promoted_before: Some(vec![hash("podinfo:1")]),
            ..CanaryStatus::default()
        }
    }

    #[test]
    fn by_default_the_revision_the_primary_runs() {
        let revisions = revisions();
        let none = BTreeMap::new();
        let chosen = choose(&revisions, None, &promoted("podinfo:2"), &none).unwrap();
        assert_eq!(chosen.number, 2);
        let named = choose(&revisions, Some(1), &promoted("podinfo:2"), &none).unwrap();
        assert_eq!(named.number, 1);
    }

    #[test]
    fn what_cannot_be_undone_is_said_with_what_is_kept() {
        let revisions = revisions();
        let none = BTreeMap::new();
        let err = choose(&revisions, Some(7), &promoted("podinfo:2"), &none).unwrap_err();
        assert_eq!(
            err,
            "--to-revision: the target has no revision 7 (kept: 1, 2, 3)"
        );
        let err = choose(&revisions, None, &CanaryStatus::default(), &none).unwrap_err();
        assert!(err.starts_with("nothing was promoted yet"), "{err}");
        let err = choose(&revisions, None, &promoted("podinfo:0"), &none).unwrap_err();
        assert!(err.contains("revisionHistoryLimit"), "{err}");
        // The tracked configs are part of a revision's hash: other data, another revision.
        let other = BTreeMap::from([("configmap/a".to_string(), "01".to_string())]);
        assert!(choose(&revisions, None, &promoted("podinfo:2"), &other).is_err());
    }

    #[test]
    fn the_report_names_each_image_change_and_what_serin_does_next() {
        let revisions = revisions();
        let none = BTreeMap::new();
        let status = promoted("podinfo:2");
        let text = report(
            "test",
            "podinfo",
            &template("podinfo:3"),
            &revisions[1],
            &status,
            &none,
        );
        assert_eq!(
            text,
            "test/podinfo: spec.template set to revision 2\n  app: podinfo:3 -> podinfo:2\n\
             the primary runs this revision: a release in progress is cancelled, nothing is \
             analysed"
        );
        let text = report(
            "test",
            "podinfo",
            &template("podinfo:3"),
            &revisions[0],
            &status,
            &none,
        );
        assert!(
            text.ends_with("without analysis (a rollback within analysis.rollbackWindow)"),
            "{text}"
        );
        let text = report(
            "test",
            "podinfo",
            &template("podinfo:1"),
            &revisions[2],
            &status,
            &none,
        );
        assert!(
            text.ends_with(
                "with the full analysis (it was not promoted within analysis.rollbackWindow)"
            ),
            "{text}"
        );
    }

    #[test]
    fn gitops_managed_targets_are_named_with_their_tool() {
        let mut target = Deployment::default();
        assert_eq!(managed_by(&target), None);
        target.metadata.labels = Some(BTreeMap::from([(
            "kustomize.toolkit.fluxcd.io/name".into(),
            "apps".into(),
        )]));
        assert_eq!(
            managed_by(&target),
            Some(("kustomize.toolkit.fluxcd.io/name", "Flux"))
        );
        target.metadata.labels = None;
        target.metadata.annotations = Some(BTreeMap::from([(
            "argocd.argoproj.io/tracking-id".into(),
            "a:b".into(),
        )]));
        let (mark, tool) = managed_by(&target).unwrap();
        assert_eq!(tool, "Argo CD");
        assert!(gitops_refusal("test", "podinfo", mark, tool).contains("Revert the change in Git"));
    }

    #[test]
    fn a_replica_set_revision_drops_the_pod_template_hash() {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "podinfo-abc", "annotations": {REVISION: "4"}},
            "spec": {"selector": {}, "template": {
                "metadata": {"labels": {"app": "podinfo", POD_TEMPLATE_HASH: "abc"}},
                "spec": {"containers": [{"name": "app", "image": "podinfo:4"}]}}}
        }))
        .unwrap();
        let revision = revision_of(&rs).unwrap();
        assert_eq!(revision.number, 4);
        assert_eq!(revision.template, template("podinfo:4"));
    }
}
