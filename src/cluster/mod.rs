//! What nodes of a cluster share through Redis, and how a node carries on
//! when Redis is away.
//!
//! [`link::RedisLink`] is the one connection every shared thing uses: it
//! connects lazily, times every command out, and after a failure answers
//! "unavailable" at once for a short while instead of making each request
//! wait for a dead server (fail-open: the node serves on from its own
//! storage and coordinates less); [`redis_target`] says which Redis it
//! talks to (one server, Sentinel's master, or a cluster). [`changes`]
//! keeps nodes' memories of the shared bucket true; [`fill_lease`] and
//! [`peer`] make one node fetch an object while the others stream its
//! fill; [`evict_lease`] lets one node at a time evict from the shared
//! bucket; [`members`] says which nodes are alive, for the status page.

pub mod changes;
pub mod evict_lease;
pub mod fill_lease;
pub mod link;
pub mod members;
pub mod peer;
pub mod redis_target;

use crate::config::Secret;

/// What a node of a cluster (`cluster:` set) needs on the request path.
pub struct Cluster {
    /// Authenticates fill requests between nodes.
    pub secret: Secret,
    pub leases: fill_lease::FillLeases,
    pub following: std::sync::Arc<peer::Following>,
}
