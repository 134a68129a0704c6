//! Every Kubernetes API permission the controller uses, in one list: the chart's ClusterRole
//! is generated from it (`serin rbac` writes `deploy/chart/serin/files/rbac-rules.yaml`), a
//! test fails when the chart grants more or less, and a scenario runs the controller with a
//! service account bound only to that ClusterRole.
//!
//! Writes are server-side applies (verb `patch`; `create` too, for objects serin creates that
//! way) and merge or JSON patches; reads come from watches (`list`, `watch`) or single GETs.

use serde::Serialize;

/// One rule of the ClusterRole, with why serin needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub api_group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub why: &'static str,
}

const WATCH_AND_WRITE: &[&str] = &["get", "list", "watch", "create", "patch"];
/// Routing objects: read before each write, written with server-side apply.
const ROUTE: &[&str] = &["get", "create", "patch"];

/// What every installation needs, whatever the provider.
pub const CORE: &[Rule] = &[
    Rule {
        api_group: "flagger.app",
        resources: &["canaries"],
        verbs: &["get", "list", "watch", "patch"],
        why: "Canaries are watched; their finalizer and command annotations are patched",
    },
    Rule {
        api_group: "flagger.app",
        resources: &["canaries/status"],
        verbs: &["patch"],
        why: "the release's status is written with server-side apply",
    },
    Rule {
        api_group: "flagger.app",
        resources: &["canaries/finalizers"],
        verbs: &["update"],
        why: "objects serin creates are owned by their Canary (blockOwnerDeletion)",
    },
    Rule {
        api_group: "flagger.app",
        resources: &["metrictemplates"],
        verbs: &["get", "list", "watch"],
        why: "metric templates are cached",
    },
    Rule {
        api_group: "flagger.app",
        resources: &["alertproviders"],
        verbs: &["get"],
        why: "alert providers are read when an alert is sent",
    },
    Rule {
        api_group: "apps",
        resources: &["deployments", "daemonsets"],
        verbs: WATCH_AND_WRITE,
        why: "targets are watched; primaries written; targets scaled",
    },
    Rule {
        api_group: "",
        resources: &["services"],
        verbs: WATCH_AND_WRITE,
        why: "the apex, -primary and -canary Services",
    },
    Rule {
        api_group: "",
        resources: &["configmaps", "secrets"],
        verbs: WATCH_AND_WRITE,
        why: "tracked configs are watched and copied to -primary; provider credentials read",
    },
    Rule {
        api_group: "",
        resources: &["events"],
        verbs: &["create", "patch"],
        why: "events on Canaries (repeated ones counted)",
    },
    Rule {
        api_group: "autoscaling",
        resources: &["horizontalpodautoscalers"],
        verbs: ROUTE,
        why: "the target's HPA is copied for the primary",
    },
    Rule {
        api_group: "keda.sh",
        resources: &["scaledobjects"],
        verbs: ROUTE,
        why: "the target's KEDA ScaledObject is copied for the primary and paused",
    },
    Rule {
        api_group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["get", "list", "watch", "create", "patch"],
        why: "leader election (--enable-leader-election); the leader watches its Lease to step down when its renewals stop showing",
    },
];

/// The routing objects of each provider (all of them in the chart: a Canary may name any
/// provider in `spec.provider`).
pub const PROVIDERS: &[(&str, &[Rule])] = &[
    (
        "istio",
        &[Rule {
            api_group: "networking.istio.io",
            resources: &["virtualservices", "destinationrules"],
            verbs: ROUTE,
            why: "Istio routing",
        }],
    ),
    (
        "gatewayapi, linkerd",
        &[Rule {
            api_group: "gateway.networking.k8s.io",
            resources: &["httproutes"],
            verbs: ROUTE,
            why: "Gateway API routing (also Linkerd's)",
        }],
    ),
    (
        "smi, osm, linkerd",
        &[Rule {
            api_group: "split.smi-spec.io",
            resources: &["trafficsplits"],
            verbs: ROUTE,
            why: "SMI traffic splits",
        }],
    ),
    (
        "nginx, skipper",
        &[Rule {
            api_group: "networking.k8s.io",
            resources: &["ingresses"],
            verbs: ROUTE,
            why: "the canary Ingress",
        }],
    ),
    (
        "appmesh",
        &[Rule {
            api_group: "appmesh.k8s.aws",
            resources: &["virtualnodes", "virtualrouters", "virtualservices"],
            verbs: ROUTE,
            why: "App Mesh routing",
        }],
    ),
    (
        "contour",
        &[Rule {
            api_group: "projectcontour.io",
            resources: &["httpproxies"],
            verbs: ROUTE,
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
                why: "Gloo upstreams",
            },
            Rule {
                api_group: "gateway.solo.io",
                resources: &["routetables"],
                verbs: ROUTE,
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
            why: "Traefik weighted services",
        }],
    ),
    (
        "kuma",
        &[Rule {
            api_group: "kuma.io",
            resources: &["trafficroutes"],
            verbs: ROUTE,
            why: "Kuma traffic routes",
        }],
    ),
    (
        "apisix",
        &[Rule {
            api_group: "apisix.apache.org",
            resources: &["apisixroutes"],
            verbs: ROUTE,
            why: "APISIX routes",
        }],
    ),
    (
        "knative",
        &[
            Rule {
                api_group: "serving.knative.dev",
                resources: &["services"],
                verbs: &["get", "patch"],
                why: "the Knative Service target: its traffic split and primary revision",
            },
            Rule {
                api_group: "serving.knative.dev",
                resources: &["revisions"],
                verbs: &["get"],
                why: "readiness of the Knative revisions",
            },
        ],
    ),
];

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyRule<'a> {
    api_groups: [&'a str; 1],
    resources: &'a [&'a str],
    verbs: &'a [&'a str],
}

/// Every rule, core first.
pub fn rules() -> Vec<Rule> {
    CORE.iter()
        .chain(PROVIDERS.iter().flat_map(|(_, rules)| rules.iter()))
        .copied()
        .collect()
}

/// The rules as the YAML list of a ClusterRole's `rules`, each with why as a comment.
pub fn rules_yaml() -> String {
    let mut out = String::from(
        "# Generated by `serin rbac` from src/rbac.rs: every permission the controller uses.\n",
    );
    let mut section = |title: &str, rules: &[Rule]| {
        out.push_str(&format!("# {title}\n"));
        for rule in rules {
            let policy = PolicyRule {
                api_groups: [rule.api_group],
                resources: rule.resources,
                verbs: rule.verbs,
            };
            let json = serde_json::to_string(&policy).unwrap_or_default();
            out.push_str(&format!("- {json} # {}\n", rule.why));
        }
    };
    section("core", CORE);
    for (providers, rules) in PROVIDERS {
        section(&format!("provider {providers}"), rules);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_yaml_parses_back_to_the_rules() {
        let parsed: Vec<serde_json::Value> = serde_norway::from_str(&rules_yaml()).unwrap();
        assert_eq!(parsed.len(), rules().len());
        assert_eq!(parsed[0]["apiGroups"][0], "flagger.app");
        assert_eq!(parsed[0]["resources"][0], "canaries");
    }
}
