//! The `<target>-primary` Deployment: a copy of the target that serves production traffic,
//! rendered purely from the target (Flagger's copy rules). The controller adds the
//! owner reference and applies it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::Value;

use crate::workload::configs::{self, ConfigKind};

/// Pod template annotation changed on every promotion so the primary always rolls.
pub const PROMOTION_ID_ANNOTATION: &str = "flagger-id";
/// Suffix of every object serin copies for the primary.
pub const PRIMARY_SUFFIX: &str = "-primary";
/// A DaemonSet cannot be scaled: "zero" is a nodeSelector no node matches (Flagger's key, so
/// a DaemonSet scaled down by Flagger is recognised).
pub const SCALE_TO_ZERO_LABEL: &str = "flagger.app/scale-to-zero";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrimaryError {
    #[error(
        "spec.selector.matchLabels of {target} has none of the selector labels {labels:?}: add one \
         of them (or set --selector-labels)"
    )]
    NoSelectorLabel { target: String, labels: Vec<String> },
    #[error("{0} has no spec.template")]
    NoTemplate(String),
    #[error("cannot copy the pod template of {0}: {1}")]
    Template(String, String),
}

/// How to copy a target into its primary.
#[derive(Clone, Debug)]
pub struct CopyRules<'a> {
    /// `--selector-labels`: the first present in the target's matchLabels is the selector.
    pub selector_labels: &'a [String],
    /// `--include-label-prefix`: labels and annotations copied to the primary object.
    pub include_label_prefixes: &'a [String],
    /// ConfigMaps and Secrets whose `-primary` copies the primary uses.
    pub tracked_configmaps: &'a BTreeSet<String>,
    pub tracked_secrets: &'a BTreeSet<String>,
    /// An autoscaler owns the primary's replicas: keep `current_replicas`.
    pub has_autoscaler: bool,
    /// A fresh value per promotion (the controller passes a UUID).
    pub promotion_id: &'a str,
}

/// The selector label of a workload: (key, value).
pub fn selector_label(
    target: &Deployment,
    selector_labels: &[String],
) -> Result<(String, String), PrimaryError> {
    let name = target.metadata.name.clone().unwrap_or_default();
    let match_labels = target
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref());
    selector_labels
        .iter()
        .find_map(|key| {
            match_labels
                .and_then(|m| m.get(key))
                .map(|v| (key.clone(), v.clone()))
        })
        .ok_or_else(|| PrimaryError::NoSelectorLabel {
            target: name,
            labels: selector_labels.to_vec(),
        })
}

/// Renders the primary Deployment for `target`. `current_replicas` is the existing primary's
/// replicas, kept when an autoscaler owns them.
pub fn render(
    target: &Deployment,
    current_replicas: Option<i32>,
    rules: &CopyRules<'_>,
) -> Result<Deployment, PrimaryError> {
    let name = target.metadata.name.clone().unwrap_or_default();
    let (key, value) = selector_label(target, rules.selector_labels)?;
    let primary_value = format!("{value}{PRIMARY_SUFFIX}");
    let spec = target
        .spec
        .as_ref()
        .ok_or_else(|| PrimaryError::NoTemplate(name.clone()))?;

    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.insert(key.clone(), primary_value.clone());
    meta.labels = Some(labels);
    let mut annotations = without_toolkit(meta.annotations.clone().unwrap_or_default());
    annotations.insert(PROMOTION_ID_ANNOTATION.into(), rules.promotion_id.into());
    meta.annotations = Some(annotations);
    if let Some(pod) = template.spec.take() {
        let mut json = serde_json::to_value(pod)
            .map_err(|e| PrimaryError::Template(name.clone(), e.to_string()))?;
        rename_config_refs(&mut json, rules.tracked_configmaps, rules.tracked_secrets);
        rename_pod_selectors(&mut json, &key, &value, &primary_value);
        template.spec = Some(
            serde_json::from_value(json)
                .map_err(|e| PrimaryError::Template(name.clone(), e.to_string()))?,
        );
    }

    let mut object_labels = filtered(&target.metadata.labels, rules.include_label_prefixes);
    object_labels.insert(key.clone(), primary_value.clone());
    let object_annotations = filtered(&target.metadata.annotations, rules.include_label_prefixes);
    // A target already at zero (scaled down by a previous controller) must not make a
    // primary that serves nothing.
    let own = spec.replicas.filter(|r| *r > 0);
    let replicas = if rules.has_autoscaler {
        current_replicas.or(own).or(Some(1))
    } else {
        own.or(Some(1))
    };
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(format!("{name}{PRIMARY_SUFFIX}")),
            namespace: target.metadata.namespace.clone(),
            labels: Some(object_labels),
            annotations: (!object_annotations.is_empty()).then_some(object_annotations),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas,
            // Only the selector label: other matchLabels would also select the target's pods
            // (flagger#1257).
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(key, primary_value)])),
                match_expressions: None,
            },
            template,
            progress_deadline_seconds: spec.progress_deadline_seconds,
            min_ready_seconds: spec.min_ready_seconds,
            revision_history_limit: spec.revision_history_limit,
            strategy: spec.strategy.clone(),
            paused: None,
        }),
        status: None,
    })
}

/// Renders the primary DaemonSet for `target`: the Deployment rules applied to its template,
/// without the scale-to-zero nodeSelector.
pub fn render_daemon_set(
    target: &DaemonSet,
    rules: &CopyRules<'_>,
) -> Result<DaemonSet, PrimaryError> {
    let name = target.metadata.name.clone().unwrap_or_default();
    let spec = target
        .spec
        .as_ref()
        .ok_or_else(|| PrimaryError::NoTemplate(name.clone()))?;
    let mut template = spec.template.clone();
    strip_scale_to_zero(&mut template);
    // The copy rules are the same as a Deployment's; only the spec fields differ.
    let as_deployment = Deployment {
        metadata: target.metadata.clone(),
        spec: Some(DeploymentSpec {
            selector: spec.selector.clone(),
            template,
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    let rendered = render(&as_deployment, None, rules)?;
    let copied = rendered
        .spec
        .ok_or_else(|| PrimaryError::NoTemplate(name.clone()))?;
    Ok(DaemonSet {
        metadata: rendered.metadata,
        spec: Some(DaemonSetSpec {
            selector: copied.selector,
            template: copied.template,
            min_ready_seconds: spec.min_ready_seconds,
            revision_history_limit: spec.revision_history_limit,
            update_strategy: spec.update_strategy.clone(),
        }),
        status: None,
    })
}

/// Removes the scale-to-zero nodeSelector (an empty selector becomes none, as the API
/// server would store it).
pub fn strip_scale_to_zero(template: &mut PodTemplateSpec) {
    if let Some(pod) = template.spec.as_mut()
        && let Some(selector) = pod.node_selector.as_mut()
    {
        selector.remove(SCALE_TO_ZERO_LABEL);
        if selector.is_empty() {
            pod.node_selector = None;
        }
    }
}

fn without_toolkit(map: BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter()
        .filter(|(k, _)| !k.contains("toolkit.fluxcd.io"))
        .collect()
}

/// Labels or annotations copied to a primary object: those under `--include-label-prefix`,
/// never Flux's (they would make Flux manage the copy).
pub fn filtered(
    map: &Option<BTreeMap<String, String>>,
    prefixes: &[String],
) -> BTreeMap<String, String> {
    map.iter()
        .flatten()
        .filter(|(k, _)| !k.contains("toolkit.fluxcd.io"))
        .filter(|(k, _)| {
            prefixes
                .iter()
                .any(|p| p == "*" || k.starts_with(p.as_str()))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Points the pod anti-affinity terms and topology spread constraints that select the
/// target's pods (selector label `key` = `value`) at the primary's pods instead, as Flagger's
/// copy does: otherwise the primary would spread against, or avoid, the wrong pods.
fn rename_pod_selectors(pod: &mut Value, key: &str, value: &str, primary_value: &str) {
    let rename = |selector: &mut Value| {
        if let Some(labels) = selector
            .get_mut("matchLabels")
            .and_then(Value::as_object_mut)
            && labels.get(key).and_then(Value::as_str) == Some(value)
        {
            labels.insert(key.to_string(), primary_value.into());
        }
        let expressions = selector
            .get_mut("matchExpressions")
            .and_then(Value::as_array_mut);
        for expr in expressions.into_iter().flatten() {
            if expr.get("key").and_then(Value::as_str) != Some(key) {
                continue;
            }
            let values = expr.get_mut("values").and_then(Value::as_array_mut);
            for v in values.into_iter().flatten() {
                if v.as_str() == Some(value) {
                    *v = primary_value.into();
                }
            }
        }
    };
    // Each list of terms, and where a term holds its label selector.
    let selectors = [
        (
            "/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution",
            "/labelSelector",
        ),
        (
            "/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution",
            "/podAffinityTerm/labelSelector",
        ),
        ("/topologySpreadConstraints", "/labelSelector"),
    ];
    for (terms, selector) in selectors {
        let terms = pod.pointer_mut(terms).and_then(Value::as_array_mut);
        for term in terms.into_iter().flatten() {
            if let Some(selector) = term.pointer_mut(selector) {
                rename(selector);
            }
        }
    }
}

/// Points every reference to a tracked ConfigMap or Secret at its `-primary` copy: volumes,
/// projected sources, env and envFrom of containers and init containers.
fn rename_config_refs(pod: &mut Value, configmaps: &BTreeSet<String>, secrets: &BTreeSet<String>) {
    configs::for_each_ref(pod, &mut |kind, name| {
        let tracked = match kind {
            ConfigKind::ConfigMap => configmaps,
            ConfigKind::Secret => secrets,
        };
        if tracked.contains(name.as_str()) {
            name.push_str(PRIMARY_SUFFIX);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target() -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "podinfo", "namespace": "test",
                "labels": {"app": "podinfo", "team.example.com/owner": "web",
                           "kustomize.toolkit.fluxcd.io/name": "apps"},
                "annotations": {"team.example.com/docs": "x"}},
            "spec": {
                "replicas": 3,
                "progressDeadlineSeconds": 120,
                "selector": {"matchLabels": {"app": "podinfo", "tier": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "podinfo", "tier": "web"},
                                 "annotations": {"helm.toolkit.fluxcd.io/x": "y", "keep": "me"}},
                    "spec": {
                        "containers": [{"name": "app", "image": "podinfo:6.0.0",
                            "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "a"}}},
                                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "untracked", "key": "b"}}}],
                            "envFrom": [{"secretRef": {"name": "creds"}}]}],
                        "volumes": [{"name": "v", "configMap": {"name": "cfg"}},
                                    {"name": "p", "projected": {"sources": [{"secret": {"name": "creds"}}]}}]
                    }
                }
            }
        }))
        .unwrap()
    }

    fn labels() -> Vec<String> {
        vec!["app".into(), "name".into(), "app.kubernetes.io/name".into()]
    }

    #[test]
    fn anti_affinity_and_spread_selectors_of_the_target_point_at_the_primary() {
        let mut t = target();
        let mut json = serde_json::to_value(&t).unwrap();
        let selector = json!({"matchLabels": {"app": "podinfo", "tier": "web"},
            "matchExpressions": [{"key": "app", "operator": "In", "values": ["podinfo", "other"]}]});
        json["spec"]["template"]["spec"]["affinity"] = json!({"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": selector, "topologyKey": "kubernetes.io/hostname"}],
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "podinfo"}},
                    "topologyKey": "topology.kubernetes.io/zone"}}]}});
        json["spec"]["template"]["spec"]["topologySpreadConstraints"] = json!([
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"app": "podinfo"}}},
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"app": "unrelated"}}}]);
        t = serde_json::from_value(json).unwrap();
        let selector_labels = labels();
        let none = BTreeSet::new();
        let rules = rules(&selector_labels, &none);
        let p = serde_json::to_value(render(&t, None, &rules).unwrap()).unwrap();
        let pod = &p["spec"]["template"]["spec"];
        let required = &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            [0]["labelSelector"];
        assert_eq!(
            required["matchLabels"],
            json!({"app": "podinfo-primary", "tier": "web"})
        );
        assert_eq!(
            required["matchExpressions"][0]["values"],
            json!(["podinfo-primary", "other"])
        );
        assert_eq!(
            pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
                [0]["podAffinityTerm"]["labelSelector"]["matchLabels"]["app"],
            "podinfo-primary"
        );
        assert_eq!(
            pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]["app"],
            "podinfo-primary"
        );
        assert_eq!(
            pod["topologySpreadConstraints"][1]["labelSelector"]["matchLabels"]["app"], "unrelated",
            "selectors of other pods are left alone"
        );
    }

    #[test]
    fn primary_copies_the_target_by_flaggers_rules() {
        let cms = BTreeSet::from(["cfg".to_string()]);
        let secrets = BTreeSet::from(["creds".to_string()]);
        let selector_labels = labels();
        let prefixes = vec!["team.example.com/".to_string()];
        let rules = CopyRules {
            selector_labels: &selector_labels,
            include_label_prefixes: &prefixes,
            tracked_configmaps: &cms,
            tracked_secrets: &secrets,
            has_autoscaler: false,
            promotion_id: "id-1",
        };
        let p = render(&target(), None, &rules).unwrap();
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["metadata"]["name"], "podinfo-primary");
        assert_eq!(
            json["metadata"]["labels"],
            json!({"app": "podinfo-primary", "team.example.com/owner": "web"})
        );
        assert_eq!(
            json["spec"]["selector"],
            json!({"matchLabels": {"app": "podinfo-primary"}})
        );
        assert_eq!(json["spec"]["replicas"], 3);
        assert_eq!(json["spec"]["progressDeadlineSeconds"], 120);
        let tpl = &json["spec"]["template"];
        assert_eq!(tpl["metadata"]["labels"]["app"], "podinfo-primary");
        assert_eq!(
            tpl["metadata"]["annotations"],
            json!({"keep": "me", "flagger-id": "id-1"})
        );
        let c = &tpl["spec"]["containers"][0];
        assert_eq!(
            c["env"][0]["valueFrom"]["configMapKeyRef"]["name"],
            "cfg-primary"
        );
        assert_eq!(
            c["env"][1]["valueFrom"]["secretKeyRef"]["name"],
            "untracked"
        );
        assert_eq!(c["envFrom"][0]["secretRef"]["name"], "creds-primary");
        assert_eq!(
            tpl["spec"]["volumes"][0]["configMap"]["name"],
            "cfg-primary"
        );
        assert_eq!(
            tpl["spec"]["volumes"][1]["projected"]["sources"][0]["secret"]["name"],
            "creds-primary"
        );
    }

    /// Copy rules with `selector_labels` and nothing tracked, included or autoscaled.
    fn rules<'a>(selector_labels: &'a [String], none: &'a BTreeSet<String>) -> CopyRules<'a> {
        CopyRules {
            selector_labels,
            include_label_prefixes: &[],
            tracked_configmaps: none,
            tracked_secrets: none,
            has_autoscaler: false,
            promotion_id: "id",
        }
    }

    #[test]
    fn autoscaler_keeps_the_primary_replicas() {
        let none = BTreeSet::new();
        let selector_labels = labels();
        let rules = CopyRules {
            has_autoscaler: true,
            ..rules(&selector_labels, &none)
        };
        let p = render(&target(), Some(7), &rules).unwrap();
        assert_eq!(p.spec.unwrap().replicas, Some(7));
        let mut scaled_down = target();
        scaled_down.spec.as_mut().unwrap().replicas = Some(0);
        let rules = CopyRules {
            has_autoscaler: false,
            ..rules
        };
        let p = render(&scaled_down, None, &rules).unwrap();
        assert_eq!(p.spec.unwrap().replicas, Some(1), "never a primary at zero");
    }

    #[test]
    fn missing_selector_label_is_a_clear_error() {
        let none = BTreeSet::new();
        let selector_labels = vec!["name".to_string()];
        let rules = rules(&selector_labels, &none);
        let err = render(&target(), None, &rules).unwrap_err();
        assert!(err.to_string().contains("--selector-labels"), "{err}");
    }

    #[test]
    fn daemon_set_primary_drops_the_scale_to_zero_selector() {
        let none = BTreeSet::new();
        let selector_labels = labels();
        let rules = rules(&selector_labels, &none);
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "test"},
            "spec": {
                "minReadySeconds": 5,
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"nodeSelector": {SCALE_TO_ZERO_LABEL: "true"},
                             "containers": [{"name": "a", "image": "agent:1"}]}
                }
            }
        }))
        .unwrap();
        let p = serde_json::to_value(render_daemon_set(&ds, &rules).unwrap()).unwrap();
        assert_eq!(p["metadata"]["name"], "agent-primary");
        assert_eq!(p["spec"]["selector"]["matchLabels"]["app"], "agent-primary");
        assert_eq!(p["spec"]["minReadySeconds"], 5);
        assert!(
            p["spec"]["template"]["spec"].get("nodeSelector").is_none(),
            "{p}"
        );
        assert_eq!(
            p["spec"]["template"]["metadata"]["annotations"]["flagger-id"],
            "id"
        );
    }
}
