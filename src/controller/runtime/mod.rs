//! What keeps the controller process going, apart from any one Canary: leader election,
//! the API client's rate limit, release slots, fresh identifiers and serin's own metrics.

pub mod ids;
pub mod leader;
pub mod slots;
pub mod telemetry;
pub mod throttle;
