//! Tests that need no stack, one binary (each test binary links the whole crate: fewer
//! binaries, less linking): `serin check` on the examples, the CRDs against the types,
//! `serin plan`, property tests of the engine, query templates, TLS of Prometheus and
//! webhooks against local servers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod check;
mod crds;
mod flagger_probes;
mod flags;
mod plan;
mod prometheus_tls;
mod properties;
mod templates;
mod webhooks_tls;

/// A process's output as text.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
