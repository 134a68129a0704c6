//! Any text as the load tester's `hey` command line (it arrives in a webhook body anyone who
//! reaches the load tester can send): parsed or refused with a message, never a panic, and
//! what is accepted stays within the load tester's bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serin::loadtester::hey;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for cmd in [text.to_string(), format!("hey {text}")] {
        if let Some(Ok(parsed)) = hey::parse(&cmd) {
            assert!(parsed.workers <= hey::MAX_WORKERS, "{cmd:?}");
            assert!(parsed.requests <= hey::MAX_REQUESTS, "{cmd:?}");
            assert!(
                parsed.duration.is_none_or(|d| d <= hey::MAX_DURATION),
                "{cmd:?}"
            );
            assert!(parsed.rate.is_finite(), "{cmd:?}");
        }
    }
});
