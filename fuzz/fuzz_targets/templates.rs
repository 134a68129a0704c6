//! Any text as a metric query template and as the values of its variables: rendered or
//! refused with an error, never a panic; durations parse or are refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serin::analysis::template::{TemplateVars, render};
use serin::api::{Canary, parse_duration};

fn canary() -> Canary {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "1m"}
        }
    }))
    .expect("a valid Canary")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `query|interval|variable`: the parts the user writes.
    let mut parts = text.splitn(3, '|');
    let query = parts.next().unwrap_or_default();
    let interval = parts.next().unwrap_or("1m");
    let variable = parts.next().unwrap_or_default();
    let _ = parse_duration(interval);
    let variables = std::collections::BTreeMap::from([("v".to_string(), variable.to_string())]);
    let vars = TemplateVars::new(&canary(), interval, Some(&variables));
    let _ = render(query, &vars);
});
