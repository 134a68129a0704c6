//! What reaches people: the outbox of a transition's events and alerts (`status.announcements`),
//! Kubernetes events, Flagger's event webhooks and alerts to chat and incident tools.

pub mod alerts;
pub mod event_webhooks;
pub mod events;
pub mod outbox;
