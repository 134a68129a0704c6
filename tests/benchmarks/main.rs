//! Benchmarks, ignored by default: each prints what it measured, and how to run it is in its
//! module's documentation and in BENCHMARKS.md (`cargo test --release --test benchmarks
//! scale:: -- --ignored --nocapture`).
//!
//! - `dashboard`: `serin dashboard` with many Canaries (first render, a change shown, memory);
//! - `decisions`: releases whose truth is known, decided with thresholds and with the judge;
//! - `release_timing`: how fast a new revision is picked up, and how close a release runs to
//!   its ideal duration;
//! - `requests`: the API requests of one Canary through each router (initialization, a
//!   release, idle);
//! - `scale`: many Canaries on one controller.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dashboard;
mod decisions;
mod release_timing;
mod requests;
mod scale;
