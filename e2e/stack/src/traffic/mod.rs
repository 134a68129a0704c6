//! The traffic world: simulated load that follows the routing objects, and its telemetry.

pub mod config;
pub mod gateway;
pub mod latency;
pub mod measures;
pub mod noise;
pub mod routing;
pub mod telemetry;
pub mod world;
