//! `serin promote|abort|retry|pause|resume NAME`: steer a release without editing the spec.
//! Each sets an annotation on the Canary that the controller consumes (see
//! `controller::reconcile::commands`), with the caller's user name when the API server tells it (a
//! SelfSubjectReview). `--group G` instead of a name annotates every member of release group G
//! in the namespace. Also `kubectl serin ...` when installed as `kubectl-serin`.

use std::process::ExitCode;

use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::api::Canary;
use crate::cli::cluster::{self, ClusterArgs};
use crate::controller::reconcile::commands::{COMMAND, PAUSED, REQUESTED_BY};
use crate::controller::reconcile::group::ANNOTATION as GROUP;

#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    /// The Canary.
    #[arg(required_unless_present = "group", conflicts_with = "group")]
    pub name: Option<String>,
    /// Every Canary of this release group (`serin.flagger.app/release-group`) in the
    /// namespace, instead of one.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Its namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// What a control command asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Promote,
    Abort,
    Retry,
    Pause,
    Resume,
}

impl Action {
    /// The annotations to merge (null removes one).
    fn annotations(self, by: Option<&str>) -> Value {
        let by = by.map_or(Value::Null, |b| json!(b));
        match self {
            Action::Promote => json!({COMMAND: "promote", REQUESTED_BY: by}),
            Action::Abort => json!({COMMAND: "abort", REQUESTED_BY: by}),
            Action::Retry => json!({COMMAND: "retry", REQUESTED_BY: by}),
            Action::Pause => json!({PAUSED: "true", REQUESTED_BY: by}),
            Action::Resume => json!({PAUSED: null}),
        }
    }

    /// The action a word names (`promote`, `abort`, `retry`, `pause`, `resume`).
    pub fn parse(word: &str) -> Option<Action> {
        Some(match word {
            "promote" => Action::Promote,
            "abort" => Action::Abort,
            "retry" => Action::Retry,
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            _ => return None,
        })
    }

    /// What happens next, in words.
    pub fn done(self) -> &'static str {
        match self {
            Action::Promote => {
                "promotion requested: the remaining steps are skipped once the canary is ready"
            }
            Action::Abort => "abort requested: the release rolls back at the next reconcile",
            Action::Retry => "retry requested: the failed revision is released again",
            Action::Pause => "paused: the release holds where it is until `serin resume`",
            Action::Resume => "resumed",
        }
    }
}

pub fn run(action: Action, args: ControlArgs) -> anyhow::Result<ExitCode> {
    cluster::runtime()?.block_on(control(action, args))
}

async fn control(action: Action, args: ControlArgs) -> anyhow::Result<ExitCode> {
    let (client, default_ns) = cluster::connect(&args.cluster).await?;
    let namespace = args.namespace.unwrap_or(default_ns);
    let canaries: Api<Canary> = Api::namespaced(client.clone(), &namespace);
    let names = match (&args.name, &args.group) {
        (Some(name), _) => {
            let found = canaries
                .get_opt(name)
                .await
                .with_context(|| format!("cannot read Canary {namespace}/{name}"))?;
            if found.is_none() {
                eprintln!("serin: Canary {namespace}/{name} not found");
                return Ok(ExitCode::from(1));
            }
            vec![name.clone()]
        }
        (None, Some(group)) => {
            let members = members(&canaries, group)
                .await
                .with_context(|| format!("cannot list the Canaries of namespace {namespace}"))?;
            if members.is_empty() {
                eprintln!(
                    "serin: no Canary in namespace {namespace} is in release group {group:?} \
                     (annotation {GROUP})"
                );
                return Ok(ExitCode::from(1));
            }
            members
        }
        (None, None) => anyhow::bail!("name a Canary, or a release group with --group"),
    };
    let patch = action.patch(&client).await;
    // A group is annotated whole or not at all: every patch is tried as a dry run first, so
    // a member the caller may not patch stops the command before any member changed.
    if names.len() > 1 {
        for name in &names {
            canaries
                .patch(
                    name,
                    &PatchParams::default().dry_run(),
                    &Patch::Merge(&patch),
                )
                .await
                .with_context(|| {
                    format!("cannot annotate Canary {namespace}/{name}; no member changed")
                })?;
        }
    }
    for name in &names {
        canaries
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("cannot annotate Canary {namespace}/{name}"))?;
        println!("canary {namespace}/{name}: {}", action.done());
    }
    Ok(ExitCode::SUCCESS)
}

/// The names of the Canaries of release group `group`, sorted.
async fn members(canaries: &Api<Canary>, group: &str) -> kube::Result<Vec<String>> {
    let listed = canaries.list_metadata(&Default::default()).await?;
    let mut names: Vec<String> = listed
        .items
        .into_iter()
        .filter(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(GROUP))
                .is_some_and(|g| g.trim() == group)
        })
        .filter_map(|c| c.metadata.name)
        .collect();
    names.sort();
    Ok(names)
}

impl Action {
    /// The merge patch that asks for this action, naming the caller when the API server
    /// tells who that is.
    pub async fn patch(self, client: &kube::Client) -> Value {
        let by = whoami(client).await;
        json!({"metadata": {"annotations": self.annotations(by.as_deref())}})
    }
}

/// The caller's user name, from a SelfSubjectReview (`None` where the API does not serve it).
async fn whoami(client: &kube::Client) -> Option<String> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .ok()?;
    review.status?.user_info?.username
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_set_or_clear_their_annotation() {
        assert_eq!(
            Action::Promote.annotations(Some("alice")),
            json!({COMMAND: "promote", REQUESTED_BY: "alice"})
        );
        assert_eq!(Action::Abort.annotations(None)[REQUESTED_BY], Value::Null);
        assert_eq!(Action::Pause.annotations(None)[PAUSED], "true");
        assert_eq!(Action::Resume.annotations(Some("x")), json!({PAUSED: null}));
    }
}
