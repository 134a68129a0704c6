//! What the engine asks about before it moves a release: the metric checks of an analysis
//! step and the webhooks (gates, rollout checks, rollback requests, post-rollout).

pub mod metrics;
pub mod webhooks;
