//! The shared application state every request sees, built once at start.

use crate::breakers::Breakers;
use crate::catalog::{Catalog, CatalogWriter};
use crate::config::Config;
use crate::credentials::Credentials;
use crate::metrics::Metrics;
use crate::storage::CacheStorage;
use arc_swap::{ArcSwap, Guard};
use pingora::cache::lock::CacheKeyLockImpl;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub struct App {
    /// Swapped whole by a reload ([`crate::reload`]); read with [`App::config`].
    pub(crate) config: ArcSwap<Config>,
    /// Counts reloads, so what was decided from an older configuration
    /// (the fast path's memo) is known as such.
    pub(crate) config_generation: AtomicU64,
    /// Leaked once at start: pingora requires `'static` storage and locks.
    pub storage: &'static CacheStorage,
    pub cache_lock: &'static CacheKeyLockImpl,
    pub metrics: Metrics,
    pub breakers: Arc<Breakers>,
    /// Per-remote bounds on upstream connections and bytes per second.
    pub upstream_limits: crate::upstream_limits::UpstreamLimits,
    /// Per-remote upstream credentials (basic, registry tokens), swapped
    /// with the configuration; read with [`App::credentials`].
    pub(crate) credentials: ArcSwap<Credentials>,
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
    /// Open client connections, for `limits.max_connections`.
    pub connections: Arc<crate::connections::Connections>,
    /// Requests being served, for the graceful stop.
    pub in_flight: Arc<crate::lifecycle::InFlight>,
    /// The background runtime: catalog, deferred deletes, admin I/O that
    /// must not depend on a request's runtime.
    pub background: tokio::runtime::Handle,
    pub started: Instant,
    /// The status page's top lists, asked of the catalog now and then.
    pub top_lists: crate::status::top_lists::TopLists,
    /// Set when this node is one of several sharing a bucket and Redis.
    pub cluster: Option<crate::cluster::Cluster>,
    /// The Redis connection state and the cluster share, when configured.
    pub redis: Option<Arc<crate::cluster::link::RedisLink>>,
    /// The artifact firewall's rules in force.
    pub firewall: crate::firewall::rules::Firewall,
    /// Deliveries counted for the audit trail, not yet written.
    pub audit: Arc<crate::audit::pending::Pending>,
}

impl App {
    /// The configuration in force now. A request that needs it twice reads
    /// it once: a reload between two reads would mix two configurations.
    pub fn config(&self) -> Guard<Arc<Config>> {
        self.config.load()
    }

    /// Which configuration is in force: read before deciding from it.
    pub fn config_generation(&self) -> u64 {
        self.config_generation.load(Ordering::Acquire)
    }

    /// Ends what was decided under the firewall's earlier rules (the fast
    /// path's memo; kept rewrites are told apart by the rules' generation).
    pub(crate) fn firewall_changed(&self) {
        self.config_generation.fetch_add(1, Ordering::Release);
    }

    /// Puts a reloaded configuration in force, with its credentials.
    pub(crate) fn replace_config(&self, config: Config, credentials: Credentials) {
        self.credentials.store(Arc::new(credentials));
        self.config.store(Arc::new(config));
        self.config_generation.fetch_add(1, Ordering::Release);
    }

    /// The upstream credentials of the configuration in force now.
    pub fn credentials(&self) -> Guard<Arc<Credentials>> {
        self.credentials.load()
    }
}
