//! Defaults the API server applies to built-in types (the subset controllers commonly read).

use serde_json::{Value, json};

fn set_if_absent(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut() {
        m.entry(key.to_string()).or_insert(v);
    }
}

/// Pod template defaults: controllers that compare a template they wrote with the stored one
/// must cope with these, as against a real API server.
fn pod_template(template: &mut Value) {
    if !template.is_object() {
        return;
    }
    // The API server's famous quirk: template metadata carries `creationTimestamp: null`.
    set_if_absent(template, "metadata", json!({}));
    set_if_absent(&mut template["metadata"], "creationTimestamp", Value::Null);
    let spec = &mut template["spec"];
    if !spec.is_object() {
        return;
    }
    set_if_absent(spec, "restartPolicy", json!("Always"));
    set_if_absent(spec, "terminationGracePeriodSeconds", json!(30));
    set_if_absent(spec, "dnsPolicy", json!("ClusterFirst"));
    set_if_absent(spec, "securityContext", json!({}));
    set_if_absent(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            set_if_absent(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_if_absent(c, "terminationMessagePolicy", json!("File"));
            set_if_absent(c, "resources", json!({}));
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            let tag = image.rsplit('/').next().unwrap_or_default();
            let latest = !tag.contains(':') || tag.ends_with(":latest");
            let policy = if latest && !image.contains('@') {
                "Always"
            } else {
                "IfNotPresent"
            };
            set_if_absent(c, "imagePullPolicy", json!(policy));
            for p in c
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                set_if_absent(p, "protocol", json!("TCP"));
            }
        }
    }
}

/// `seq` makes allocated cluster IPs unique.
pub fn apply(plural: &str, obj: &mut Value, seq: u64) {
    match plural {
        "deployments" => {
            pod_template(&mut obj["spec"]["template"]);
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
            pod_template(&mut obj["spec"]["template"]);
            let spec = &mut obj["spec"];
            set_if_absent(spec, "revisionHistoryLimit", json!(10));
            set_if_absent(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
        }
        "statefulsets" => {
            pod_template(&mut obj["spec"]["template"]);
            let spec = &mut obj["spec"];
            set_if_absent(spec, "replicas", json!(1));
            set_if_absent(spec, "revisionHistoryLimit", json!(10));
            set_if_absent(spec, "podManagementPolicy", json!("OrderedReady"));
            set_if_absent(spec, "updateStrategy", json!({}));
            let strategy = &mut spec["updateStrategy"];
            set_if_absent(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                set_if_absent(strategy, "rollingUpdate", json!({}));
                set_if_absent(&mut strategy["rollingUpdate"], "partition", json!(0));
            }
        }
        "services" => {
            let spec = &mut obj["spec"];
            set_if_absent(spec, "type", json!("ClusterIP"));
            set_if_absent(spec, "sessionAffinity", json!("None"));
            if spec["type"] != "ExternalName" {
                set_if_absent(spec, "internalTrafficPolicy", json!("Cluster"));
                set_if_absent(spec, "ipFamilies", json!(["IPv4"]));
                set_if_absent(spec, "ipFamilyPolicy", json!("SingleStack"));
            }
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
        // The API server stores `stringData` as `data` (base64), the former winning, and
        // never returns `stringData`.
        "secrets" => {
            set_if_absent(obj, "type", json!("Opaque"));
            let Some(Value::Object(strings)) =
                obj.as_object_mut().and_then(|o| o.remove("stringData"))
            else {
                return;
            };
            set_if_absent(obj, "data", json!({}));
            if let Some(data) = obj["data"].as_object_mut() {
                for (k, v) in strings {
                    let text = v.as_str().unwrap_or_default();
                    data.insert(k, json!(crate::protobuf::base64(text.as_bytes())));
                }
            }
        }
        _ => {}
    }
}
