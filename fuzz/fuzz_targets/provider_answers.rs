//! Any reply as a metric provider's answer (status, rate-limit and content-type headers,
//! body), read every way serin reads one: a value, no data or an error, never a panic, and
//! never more than a short excerpt of the body in what serin would show.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serin::analysis::provider::read_every_way;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `status|retry-after|x-ratelimit-reset|content-type|body`.
    let mut parts = text.splitn(5, '|');
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let retry_after = parts.next().unwrap_or_default();
    let reset = parts.next().unwrap_or_default();
    let content_type = parts.next().unwrap_or("application/json");
    let body = parts.next().unwrap_or_default();
    let headers = [
        ("retry-after", retry_after),
        ("x-ratelimit-reset", reset),
        ("content-type", content_type),
    ];
    for shown in read_every_way(status, &headers, body) {
        // An excerpt is at most 200 characters, plus the fixed text around it.
        assert!(
            shown.chars().count() <= 200 * 4 + 2000,
            "{} characters shown",
            shown.chars().count()
        );
    }
});
