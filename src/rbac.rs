//! Every Kubernetes API permission the controller uses, in one place: the chart's RBAC is
//! generated from it (`serin rbac --write deploy/chart/serin/files`), a test fails when the
//! chart grants more or less, and a scenario runs the controller with a service account bound
//! only to what the chart grants.
//!
//! Three scopes, so that each grant reaches no further than its use:
//! - the watched namespaces ([`rules`]): a ClusterRole, or a Role in the one namespace of a
//!   namespaced install (`--namespace`);
//! - Secrets within them: watched and written only with config tracking ([`CONFIG_TRACKING`]);
//!   without it, read one by one when a MetricTemplate or AlertProvider names one
//!   ([`CREDENTIALS`]), so the controller can never list a tenant's Secrets;
//! - the controller's own namespace ([`LEADER_ELECTION`]): its Lease, by name, through a Role;
//!   not every Lease of the cluster (node heartbeats, the control plane's own leaders).
//!
//! Writes are server-side applies (verb `patch`; `create` too, for objects serin creates that
//! way) and merge or JSON patches; reads come from watches (`list`, `watch`) or single GETs.

use serde::Serialize;

/// One RBAC rule, with why serin needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub api_group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// The objects the rule is limited to; empty: every object of the resources.
    pub resource_names: &'static [&'static str],
    pub why: &'static str,
}

const WATCH_AND_WRITE: &[&str] = &["get", "list", "watch", "create", "patch"];
/// Routing objects: watched (so an idle Canary costs no request), read afresh after a
/// conflict, written with server-side apply.
const ROUTE: &[&str] = &["get", "list", "watch", "create", "patch"];
/// Objects copied for the primary: read before each write, written with server-side apply.
const COPIED: &[&str] = &["get", "create", "patch"];

/// What every installation needs in the namespaces it watches, whatever the provider.
pub const CORE: &[Rule] = &[
    Rule {
        api_group: "flagger.app",
        resources: &["canaries"],
        verbs: &["get", "list", "watch", "patch"],
        resource_names: &[],
        why: "Canaries are watched; their finalizer and command annotations are patched",
    },
    Rule {
        api_group: "flagger.app",
        resources: &["canaries/status"],
        verbs: &["patch"],
        resource_names: &[],
        why: "the release's status is written with server-side apply",
    },
    Rule {
        api_group: "flagger.app",
        resources: &["canaries/finalizers"],
        verbs: &["update"],
        resource_names: &[],
        why: "objects serin creates are owned by their Canary (blockOwnerDeletion)",
    },
    Rule {
        api_group: "flagger.app",
        resources: &["metrictemplates"],
        verbs: &["get", "list", "watch"],
        resource_names: &[],
        why: "metric templates are cached",
    },
    Rule {
        api_group: "flagger.app",
        resources: &["alertproviders"],
        verbs: &["get"],
        resource_names: &[],
        why: "alert providers are read when an alert is sent",
    },
    Rule {
        api_group: "apps",
        resources: &["deployments", "daemonsets"],
        verbs: WATCH_AND_WRITE,
        resource_names: &[],
        why: "targets are watched; primaries written; targets scaled",
    },
    Rule {
        api_group: "apps",
        resources: &["statefulsets"],
        verbs: &["get", "list", "watch", "patch"],
        resource_names: &[],
        why: "StatefulSet targets are released in place: watched, their partition patched",
    },
    Rule {
        api_group: "",
        resources: &["pods"],
        verbs: &["list", "delete"],
        resource_names: &[],
        why: "a StatefulSet's rollback: its pods on the rolled-back revision are listed and \
              deleted, for the StatefulSet controller to recreate on the current revision",
    },
    Rule {
        api_group: "apps",
        resources: &["replicasets"],
        verbs: &["list"],
        resource_names: &[],
        why: "a deleted Canary's target Deployment: its ReplicaSets confirm its status before \
              traffic is handed back to it",
    },
    Rule {
        api_group: "",
        resources: &["services"],
        verbs: WATCH_AND_WRITE,
        resource_names: &[],
        why: "the apex, -primary and -canary Services",
    },
    Rule {
        api_group: "",
        resources: &["configmaps"],
        verbs: WATCH_AND_WRITE,
        resource_names: &[],
        why: "tracked ConfigMaps are watched and copied to -primary",
    },
    Rule {
        api_group: "",
        resources: &["events"],
        verbs: &["create", "patch"],
        resource_names: &[],
        why: "events on Canaries (repeated ones counted)",
    },
    Rule {
        api_group: "autoscaling",
        resources: &["horizontalpodautoscalers"],
        verbs: COPIED,
        resource_names: &[],
        why: "the target's HPA is copied for the primary",
    },
    Rule {
        api_group: "keda.sh",
        resources: &["scaledobjects"],
        verbs: COPIED,
        resource_names: &[],
        why: "the target's KEDA ScaledObject is copied for the primary and paused",
    },
];

/// Secrets with config tracking (`--enable-config-tracking`, the default): the Secrets of
/// targets are watched (a change of their data starts a release) and copied to `-primary`;
/// provider and alert credentials come from the same cache.
pub const CONFIG_TRACKING: &[Rule] = &[Rule {
    api_group: "",
    resources: &["secrets"],
    verbs: WATCH_AND_WRITE,
    resource_names: &[],
    why: "tracked Secrets are watched and copied to -primary; provider and alert credentials read from that cache",
}];

/// Secrets without config tracking: only the one a MetricTemplate or AlertProvider names, read
/// when it is used. RBAC cannot name them in advance (tenants create them), but without `list`
/// and `watch` the controller cannot enumerate or bulk-read any namespace's Secrets.
pub const CREDENTIALS: &[Rule] = &[Rule {
    api_group: "",
    resources: &["secrets"],
    verbs: &["get"],
    resource_names: &[],
    why: "the Secret a MetricTemplate or AlertProvider names, read when it is used",
}];

/// In the controller's own namespace only, with `--enable-leader-election`.
pub const LEADER_ELECTION: &[Rule] = &[
    Rule {
        api_group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["get", "list", "watch", "patch"],
        resource_names: &[crate::controller::runtime::leader::LEASE],
        why: "the leader election Lease; the leader watches it (by name) to step down when its renewals stop showing",
    },
    Rule {
        api_group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["create"],
        // A create names no object in its URL: RBAC cannot limit it to a name.
        resource_names: &[],
        why: "the first replica creates the Lease",
    },
];

/// The routing objects of each provider, and what the metric providers that read through the
/// Kubernetes API use (all of them in the chart: a Canary may name any provider in
/// `spec.provider`, a MetricTemplate any metric provider).
pub const PROVIDERS: &[(&str, &[Rule])] = &[
    (
        "istio",
        &[Rule {
            api_group: "networking.istio.io",
            resources: &["virtualservices", "destinationrules"],
            verbs: ROUTE,
            resource_names: &[],
            why: "Istio routing",
        }],
    ),
    (
        "gatewayapi, linkerd",
        &[Rule {
            api_group: "gateway.networking.k8s.io",
            resources: &["httproutes"],
            verbs: ROUTE,
            resource_names: &[],
            why: "Gateway API routing (also Linkerd's)",
        }],
    ),
    (
        "smi, osm, linkerd",
        &[Rule {
            api_group: "split.smi-spec.io",
            resources: &["trafficsplits"],
            verbs: ROUTE,
            resource_names: &[],
            why: "SMI traffic splits",
        }],
    ),
    (
        "nginx, skipper",
        &[Rule {
            api_group: "networking.k8s.io",
            resources: &["ingresses"],
            verbs: ROUTE,
            resource_names: &[],
            why: "the canary Ingress",
        }],
    ),
    (
        "appmesh",
        &[Rule {
            api_group: "appmesh.k8s.aws",
            resources: &["virtualnodes", "virtualrouters", "virtualservices"],
            verbs: ROUTE,
            resource_names: &[],
            why: "App Mesh routing",
        }],
    ),
    (
        "contour",
        &[Rule {
            api_group: "projectcontour.io",
            resources: &["httpproxies"],
            verbs: ROUTE,
            resource_names: &[],
            why: "Contour routing",
        }],
    ),
    (
        "gloo",
        &[
            Rule {
                api_group: "gloo.solo.io",
                resources: &["upstreams"],
                verbs: ROUTE,
                resource_names: &[],
                why: "Gloo upstreams",
            },
            Rule {
                api_group: "gateway.solo.io",
                resources: &["routetables"],
                verbs: ROUTE,
                resource_names: &[],
                why: "Gloo route tables",
            },
        ],
    ),
    (
        "traefik",
        &[Rule {
            api_group: "traefik.io",
            resources: &["traefikservices"],
            verbs: ROUTE,
            resource_names: &[],
            why: "Traefik weighted services",
        }],
    ),
    (
        "kuma",
        &[Rule {
            api_group: "kuma.io",
            resources: &["trafficroutes"],
            verbs: ROUTE,
            resource_names: &[],
            why: "Kuma traffic routes",
        }],
    ),
    (
        "apisix",
        &[Rule {
            api_group: "apisix.apache.org",
            resources: &["apisixroutes"],
            verbs: ROUTE,
            resource_names: &[],
            why: "APISIX routes",
        }],
    ),
    (
        "knative",
        &[
            Rule {
                api_group: "serving.knative.dev",
                resources: &["services"],
                verbs: &["get", "list", "watch", "patch"],
                resource_names: &[],
                why: "the Knative Service target: its traffic split and primary revision",
            },
            Rule {
                api_group: "serving.knative.dev",
                resources: &["revisions"],
                verbs: &["get", "list", "watch"],
                resource_names: &[],
                why: "readiness of the Knative revisions",
            },
        ],
    ),
    (
        "metrics keptn",
        &[
            Rule {
                api_group: "metrics.keptn.sh",
                resources: &["keptnmetrics"],
                verbs: &["get"],
                resource_names: &[],
                why: "a KeptnMetric's value, for a keptn MetricTemplate",
            },
            Rule {
                api_group: "metrics.keptn.sh",
                resources: &["analyses"],
                verbs: &["create", "get", "delete"],
                resource_names: &[],
                why: "a Keptn Analysis per check of a keptn MetricTemplate, read until done, then deleted",
            },
        ],
    ),
    (
        "metrics externalmetrics",
        &[Rule {
            api_group: "external.metrics.k8s.io",
            // Each metric is a resource of its own.
            resources: &["*"],
            verbs: &["list"],
            resource_names: &[],
            why: "external metrics through the API server, for an externalmetrics MetricTemplate without an address",
        }],
    ),
];

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyRule<'a> {
    api_groups: [&'a str; 1],
    resources: &'a [&'a str],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    resource_names: &'a [&'a str],
    verbs: &'a [&'a str],
}

/// Every rule of the watched namespaces, core first: what the chart's ClusterRole (or, for a
/// namespaced install, Role) grants with config tracking on or off.
pub fn rules(config_tracking: bool) -> Vec<Rule> {
    let secrets = match config_tracking {
        true => CONFIG_TRACKING,
        false => CREDENTIALS,
    };
    CORE.iter()
        .chain(secrets)
        .chain(PROVIDERS.iter().flat_map(|(_, rules)| rules.iter()))
        .copied()
        .collect()
}

/// The chart's rule files (`deploy/chart/serin/files/<name>`), each a YAML list of rules with
/// why as a comment; the chart's templates pick them by scope and values.
pub fn files() -> Vec<(&'static str, String)> {
    let mut watched =
        header("what the controller uses in the namespaces it watches, whatever its settings");
    section(&mut watched, "core", CORE);
    for (providers, rules) in PROVIDERS {
        section(&mut watched, &format!("provider {providers}"), rules);
    }
    let mut tracking = header(
        "its Secrets in the watched namespaces, with config tracking (configTracking.enabled)",
    );
    section(&mut tracking, "secrets", CONFIG_TRACKING);
    let mut credentials = header("its Secrets in the watched namespaces, without config tracking");
    section(&mut credentials, "secrets", CREDENTIALS);
    let mut leader =
        header("its Lease in its own namespace, with leader election (leaderElection.enabled)");
    section(&mut leader, "leader election", LEADER_ELECTION);
    vec![
        ("rbac-rules.yaml", watched),
        ("rbac-config-tracking.yaml", tracking),
        ("rbac-credentials.yaml", credentials),
        ("rbac-leader-election.yaml", leader),
    ]
}

fn header(what: &str) -> String {
    format!("# Generated by `serin rbac` from src/rbac.rs: {what}.\n")
}

fn section(out: &mut String, title: &str, rules: &[Rule]) {
    out.push_str(&format!("# {title}\n"));
    for rule in rules {
        let policy = PolicyRule {
            api_groups: [rule.api_group],
            resources: rule.resources,
            resource_names: rule.resource_names,
            verbs: rule.verbs,
        };
        let json = serde_json::to_string(&policy).unwrap_or_default();
        out.push_str(&format!("- {json} # {}\n", rule.why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_yaml_parses_back_to_the_rules() {
        let files = files();
        let parse = |name: &str| -> Vec<serde_json::Value> {
            let (_, text) = files.iter().find(|(n, _)| *n == name).unwrap();
            serde_norway::from_str(text).unwrap()
        };
        let watched = parse("rbac-rules.yaml");
        assert_eq!(watched.len(), rules(true).len() - CONFIG_TRACKING.len());
        assert_eq!(watched[0]["apiGroups"][0], "flagger.app");
        assert_eq!(watched[0]["resources"][0], "canaries");
        assert!(watched[0].get("resourceNames").is_none());
        let leader = parse("rbac-leader-election.yaml");
        assert_eq!(
            leader[0]["resourceNames"][0],
            crate::controller::runtime::leader::LEASE
        );
        assert_eq!(
            parse("rbac-credentials.yaml")[0]["verbs"],
            serde_json::json!(["get"])
        );
    }

    #[test]
    fn secrets_are_listed_only_with_config_tracking() {
        let lists_secrets = |rules: Vec<Rule>| {
            rules
                .iter()
                .any(|r| r.resources.contains(&"secrets") && r.verbs.contains(&"list"))
        };
        assert!(lists_secrets(rules(true)));
        assert!(!lists_secrets(rules(false)));
        assert!(
            rules(false)
                .iter()
                .chain(rules(true).iter())
                .all(|r| !r.resources.contains(&"leases")),
            "Leases only in the controller's own namespace"
        );
    }
}
