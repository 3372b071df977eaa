//! Builds the running server: background runtime, body store, state store,
//! catalog, cache storage and lock, then the Pingora proxy service.

use crate::app::App;
use crate::breakers::Breakers;
use crate::catalog::{Catalog, CatalogWriter, SqliteCatalog};
use crate::checksums::Checksums;
use crate::config::{CatalogUrl, Config, StateUrl, StorageUrl};
use crate::credentials::Credentials;
use crate::fill_lock::FillLock;
use crate::loopback::Loopback;
use crate::metrics::Metrics;
use crate::proxy::prefetch::Prefetcher;
use crate::proxy::snapshots::Snapshots;
use crate::proxy::ArtifactProxy;
use crate::state::{EmbeddedState, StateStore};
use crate::storage::body::fs::FsBodyStore;
use crate::storage::body::BodyStore;
use crate::storage::evict::Bounds;
use crate::storage::{CacheStorage, Settings};
use anyhow::Context;
use pingora::cache::lock::CacheKeyLockImpl;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use std::sync::Arc;
use std::time::Instant;

/// Starts a runtime for work that outlives any request (catalog batches,
/// deferred deletes) and for async start-up. It runs until the process ends.
fn background_runtime() -> anyhow::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("artifactd-bg")
        .enable_all()
        .build()
        .context("starting the background runtime")?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("artifactd-bg".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .context("starting the background thread")?;
    Ok(handle)
}

/// Raises the open-file soft limit to the hard limit, as nginx's
/// `worker_rlimit_nofile` does: every client, upstream connection and kept
/// open cache body is a descriptor, and the usual soft limit is 1024.
fn raise_nofile_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let wanted = limit.rlim_max;
            limit.rlim_cur = wanted;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                log::warn!("could not raise the open file limit to {wanted}");
            }
        }
    }
}

/// Builds everything and serves until the process is told to stop.
pub fn serve(config: Config) -> anyhow::Result<()> {
    raise_nofile_limit();
    let background = background_runtime()?;
    let StorageUrl::Filesystem(root) = &config.server.storage;
    let bodies: Arc<dyn BodyStore> = Arc::new(
        FsBodyStore::open(root, config.server.fsync)
            .with_context(|| format!("opening storage {}", root.display()))?,
    );
    crate::storage::sweep::start(bodies.clone(), &background);
    let StateUrl::Embedded(state_dir) = &config.server.state;
    let state: Arc<dyn StateStore> = Arc::new(
        EmbeddedState::open(state_dir)
            .with_context(|| format!("opening state store {}", state_dir.display()))?,
    );
    let CatalogUrl::Sqlite(catalog_path) = &config.server.catalog;
    let catalog: Arc<dyn Catalog> = Arc::new(
        background
            .block_on(SqliteCatalog::open(catalog_path))
            .with_context(|| format!("opening catalog {}", catalog_path.display()))?,
    );
    let catalog_writer = CatalogWriter::spawn(catalog.clone(), &background);
    let remote_names: Vec<String> = config.remotes.keys().cloned().collect();
    let storage: &'static CacheStorage = Box::leak(Box::new(CacheStorage::new(
        bodies,
        state.clone(),
        catalog_writer.clone(),
        background.clone(),
        remote_names,
        Settings {
            memory_body_max: config.server.memory_body_max,
            memory_bytes: config.server.memory_bytes,
            bounds: Bounds {
                max_size: config.server.max_size,
                min_free: config.server.min_free,
                max_entries: config.server.memory_index_entries,
            },
        },
    )));
    let (rows, references) = background
        .block_on(async { tokio::try_join!(catalog.entries(), catalog.references()) })
        .context("reading the catalog's cache entries")?;
    storage.load_index(rows, references);
    storage.start_reconcile();
    storage.start_eviction();
    let cache_lock: &'static CacheKeyLockImpl =
        Box::leak(Box::new(FillLock::new(config.server.lock_timeout, storage)));

    let mut conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(1),
        // One runtime per thread, like nginx workers: a hit never wakes
        // another thread (measured: +13% hit RPS over work stealing).
        work_stealing: false,
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    conf.pid_file = std::env::temp_dir()
        .join(format!("artifactd-{}.pid", std::process::id()))
        .display()
        .to_string();
    conf.upgrade_sock = std::env::temp_dir()
        .join(format!("artifactd-{}.sock", std::process::id()))
        .display()
        .to_string();
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();

    let listen = config.server.listen.clone();
    let snapshots = Snapshots::new(config.server.read_timeout)?;
    let loopback = Loopback::new(&listen).with_context(|| format!("listen address {listen}"))?;
    let app = Arc::new(App {
        metrics: Metrics::new(config.remotes.keys()),
        breakers: Breakers::new(config.server.breaker, config.remotes.keys()),
        prefetcher: Prefetcher::new(),
        loopback,
        credentials: Credentials::new(
            config.remotes.values(),
            config.server.connect_timeout,
            config.server.read_timeout,
        )?,
        config,
        storage,
        cache_lock,
        catalog,
        catalog_writer,
        checksums: Arc::new(Checksums::new(state, background.clone())),
        snapshots,
        background,
        started: Instant::now(),
    });
    let mut proxy =
        pingora::proxy::http_proxy_service(&server.configuration, ArtifactProxy::new(app));
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    log::info!(
        "artifactd {} listening on {listen}",
        env!("CARGO_PKG_VERSION")
    );
    server.run_forever()
}
