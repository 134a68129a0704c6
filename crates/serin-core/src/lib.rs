//! serin's pure domain: phases, the release plan, weight stepping, spec hashing and the
//! engine's `decide()`. Nothing here does I/O or reads a clock: `now` is an argument, so
//! every behaviour is a table test.

pub mod phase;

pub use phase::{ConditionStatus, Phase};
