//! Any text as a load tester request body and as its `hey` command line (both arrive from
//! whoever reaches the load tester): decoded or refused, parsed or refused with a message,
//! never a panic, and what is accepted stays within the load tester's bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serin::loadtester::{Payload, hey};

fn check(cmd: &str) {
    if let Some(Ok(parsed)) = hey::parse(cmd) {
        assert!(parsed.workers <= hey::MAX_WORKERS, "{cmd:?}");
        assert!(parsed.requests <= hey::MAX_REQUESTS, "{cmd:?}");
        assert!(
            parsed.duration.is_none_or(|d| d <= hey::MAX_DURATION),
            "{cmd:?}"
        );
        assert!(parsed.rate.is_finite(), "{cmd:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    // The request body, as the load tester decodes it; its `metadata.cmd` is a command line.
    if let Ok(payload) = serde_json::from_slice::<Payload>(data)
        && let Some(cmd) = payload.metadata.as_ref().and_then(|m| m.get("cmd"))
    {
        check(cmd);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check(text);
    check(&format!("hey {text}"));
});
