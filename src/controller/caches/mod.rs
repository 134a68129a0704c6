//! The watches and what they keep: the Canary watch, which namespaces the caches hold, what
//! the Deployment cache trims, the index of Canaries by what they concern, and objects decoded
//! without their managed fields, and objects kept as their JSON text.

pub mod canary_watch;
pub mod index;
pub mod lean;
pub mod namespaces;
pub mod packed;
pub mod trim;
