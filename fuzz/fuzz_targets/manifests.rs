//! Any bytes as a manifest file, as `serin check` reads one: parsed, every object checked
//! against every provider; no panic, and a Canary the check accepts becomes a plan (a spec
//! the check passes never fails only in the controller).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serin::api::{Canary, Provider, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(objects) = serin::cli::check::parse_documents(text) else {
        return;
    };
    for object in objects {
        for provider in Provider::all() {
            let Some(checked) = validate::object(&object, provider) else {
                continue;
            };
            if checked.kind != "Canary" || !checked.problems.is_empty() {
                continue;
            }
            let canary: Canary = match serde_json::from_value(object.clone()) {
                Ok(canary) => canary,
                Err(e) => panic!("accepted by the check but not a Canary: {e}: {object}"),
            };
            let plan = serin::canary_plan::from_canary(
                &canary,
                provider,
                std::time::Duration::from_secs(1),
            );
            assert!(
                plan.is_ok(),
                "accepted by the check, refused by the planner: {plan:?}"
            );
        }
    }
});
