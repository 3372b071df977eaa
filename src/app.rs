//! The shared application state every request sees, built once at start.

use crate::breakers::Breakers;
use crate::catalog::{Catalog, CatalogWriter};
use crate::config::Config;
use crate::credentials::Credentials;
use crate::metrics::Metrics;
use crate::storage::CacheStorage;
use pingora::cache::lock::CacheKeyLockImpl;
use std::sync::Arc;
use std::time::Instant;

pub struct App {
    pub config: Config,
    /// Leaked once at start: pingora requires `'static` storage and locks.
    pub storage: &'static CacheStorage,
    pub cache_lock: &'static CacheKeyLockImpl,
    pub metrics: Metrics,
    pub breakers: Arc<Breakers>,
    /// Per-remote upstream credentials (basic, registry tokens).
    pub credentials: Credentials,
    /// Background GETs of tag manifests that clients only HEAD.
    pub prefetcher: crate::proxy::prefetch::Prefetcher,
    pub catalog: Arc<dyn Catalog>,
    /// Requests to this artifactd's own listener.
    pub loopback: crate::loopback::Loopback,
    /// RPM repository snapshots: the `repomd.xml` gate and warming.
    pub snapshots: Arc<crate::proxy::snapshots::Snapshots>,
    /// Checksums that index documents published for their files.
    pub checksums: Arc<crate::checksums::Checksums>,
    /// Index documents rewritten for their clients, kept.
    pub rewrites: Arc<crate::rewrites::Rewrites>,
    pub catalog_writer: Arc<CatalogWriter>,
    /// Background jobs of the admin API.
    pub jobs: crate::jobs::Jobs,
    /// Requests being served, for the graceful stop.
    pub in_flight: Arc<crate::lifecycle::InFlight>,
    /// The background runtime: catalog, deferred deletes, admin I/O that
    /// must not depend on a request's runtime.
    pub background: tokio::runtime::Handle,
    pub started: Instant,
    /// Set when this node is one of several sharing a bucket and Redis.
    pub cluster: Option<crate::cluster::Cluster>,
    /// The Redis connection state and the cluster share, when configured.
    pub redis: Option<Arc<crate::cluster::link::RedisLink>>,
}
