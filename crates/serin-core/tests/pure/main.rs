//! serin-core's tests, one binary: the engine's phase transition table and exact release
//! sequences, properties of any plan and any observations, and the statistics against
//! scipy's answers.

#![allow(clippy::unwrap_used)]

mod common;
mod mann_whitney;
mod phase_table;
mod properties;
mod rate_ratio;
mod release_groups;
mod sequences;
