//! Defaults the API server applies to built-in types (the subset controllers commonly read).

use serde_json::{Value, json};

fn set_if_absent(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut() {
        m.entry(key.to_string()).or_insert(v);
    }
}

/// `seq` makes allocated cluster IPs unique.
pub fn apply(plural: &str, obj: &mut Value, seq: u64) {
    match plural {
        "deployments" => {
            let spec = &mut obj["spec"];
            set_if_absent(spec, "replicas", json!(1));
            set_if_absent(spec, "progressDeadlineSeconds", json!(600));
            set_if_absent(spec, "revisionHistoryLimit", json!(10));
            set_if_absent(spec, "strategy", json!({}));
            let strategy = &mut spec["strategy"];
            set_if_absent(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                set_if_absent(strategy, "rollingUpdate", json!({}));
                set_if_absent(&mut strategy["rollingUpdate"], "maxSurge", json!("25%"));
                set_if_absent(
                    &mut strategy["rollingUpdate"],
                    "maxUnavailable",
                    json!("25%"),
                );
            }
        }
        "daemonsets" => {
            let spec = &mut obj["spec"];
            set_if_absent(spec, "revisionHistoryLimit", json!(10));
            set_if_absent(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
        }
        "services" => {
            let spec = &mut obj["spec"];
            set_if_absent(spec, "type", json!("ClusterIP"));
            set_if_absent(spec, "sessionAffinity", json!("None"));
            if spec["type"] != "ExternalName" && spec.get("clusterIP").is_none() {
                let ip = format!("10.96.{}.{}", (seq / 250) % 250, seq % 250 + 2);
                spec["clusterIP"] = json!(ip);
                spec["clusterIPs"] = json!([ip]);
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_if_absent(p, "protocol", json!("TCP"));
                    if let Some(port) = p.get("port").cloned() {
                        set_if_absent(p, "targetPort", port);
                    }
                }
            }
        }
        "namespaces" => {
            set_if_absent(&mut obj["spec"], "finalizers", json!(["kubernetes"]));
        }
        _ => {}
    }
}
