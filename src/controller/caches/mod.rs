//! The watches and what they keep: the Canary watch, which namespaces the caches hold, what
//! the Deployment cache trims, and the index of Canaries by what they concern.

pub mod canary_watch;
pub mod index;
pub mod namespaces;
pub mod trim;
