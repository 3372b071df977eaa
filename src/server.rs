//! Builds the running server: background runtime, body store, state store,
//! catalog, cache storage and lock, then the Pingora proxy service.

use crate::app::App;
use crate::breakers::Breakers;
use crate::catalog::{Catalog, CatalogError, CatalogWriter, Retry, SqlCatalog};
use crate::checksums::Checksums;
use crate::cluster::link::RedisLink;
use crate::config::{CatalogUrl, Config, Listener, ServerConfig, StateUrl, StorageUrl};
use crate::credentials::Credentials;
use crate::fill_lock::FillLock;
use crate::lifecycle::{InFlight, Supervised};
use crate::loopback::Loopback;
use crate::metrics::{Metrics, Scraped};
use crate::proxy::prefetch::Prefetcher;
use crate::proxy::snapshots::Snapshots;
use crate::proxy::ArtifactProxy;
use crate::state::{EmbeddedState, RedisState, StateStore};
use crate::storage::body::fs::FsBodyStore;
use crate::storage::body::BodyStore;
use crate::storage::evict::Bounds;
use crate::storage::{CacheStorage, Settings};
use crate::tls::ReloadableCert;
use anyhow::Context;
use pingora::cache::lock::CacheKeyLockImpl;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use std::sync::Arc;
use std::time::Instant;

/// Starts a runtime for work that outlives any request (catalog batches,
/// deferred deletes) and for async start-up. It runs until the process ends.
pub(crate) fn background_runtime() -> anyhow::Result<tokio::runtime::Handle> {
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
pub fn serve(config: Config, config_path: &std::path::Path, upgrade: bool) -> anyhow::Result<()> {
    raise_nofile_limit();
    log::info!("{}", config.server.describe_backends());
    // Held until the process exits, which `run_forever` does itself.
    let _store_lock =
        crate::store_lock::take(&config.server.storage, crate::store_lock::Holder::Server)?;
    let background = background_runtime()?;
    let opened = open_backends(&config, &background)?;
    let (mut server, pid_file) = pingora_server(&config, upgrade)?;
    let listen = config.server.listen.clone();
    let certs = tls_certs(&listen)?;
    let in_flight = Arc::new(InFlight::default());
    let catalog_writer = opened.catalog_writer.clone();
    let storage = opened.storage;
    let app = build_app(config, opened, in_flight.clone(), &background)?;
    let reloadable = crate::reload::Reloadable {
        config_path: config_path.to_path_buf(),
        app: app.clone(),
        certs: certs.iter().flatten().cloned().collect(),
    };
    crate::reload::on_sighup(reloadable, &background);
    background.spawn(crate::firewall::watch(app.clone()));
    background.spawn(crate::firewall::feeds::fetch_feeds(app.clone()));
    background.spawn(crate::audit::prune(app.clone()));
    background.spawn(crate::audit::hand_over(app.clone()));
    let audit = app.audit.clone();
    let proxy = proxy_service(&server, app, &listen, certs, in_flight.clone())?;
    server.add_service(proxy);
    crate::lifecycle::supervise(
        server.watch_execution_phase(),
        Supervised {
            in_flight,
            catalog_writer,
            audit,
            storage,
            listeners: listen.iter().map(|l| l.address).collect(),
            pid_file,
            took_over: upgrade,
        },
        &background,
    );
    log::info!(
        "artifactd {} listening on {}",
        env!("CARGO_PKG_VERSION"),
        crate::config::server::describe(&listen)
    );
    server.run_forever()
}

/// What the node keeps and shares, opened and started: storage and its
/// index, state, catalog, breakers, the cluster's leases, the cache lock.
struct Opened {
    storage: &'static CacheStorage,
    state: Arc<dyn crate::state::StateStore>,
    redis: Option<Arc<crate::cluster::link::RedisLink>>,
    catalog: Arc<dyn Catalog>,
    catalog_writer: Arc<CatalogWriter>,
    breakers: Arc<Breakers>,
    cluster: Option<crate::cluster::Cluster>,
    cache_lock: &'static CacheKeyLockImpl,
}

fn open_backends(config: &Config, background: &tokio::runtime::Handle) -> anyhow::Result<Opened> {
    let bodies = open_bodies(&config.server)?;
    crate::storage::sweep::start(bodies.clone(), background);
    let (state, redis) = open_state(&config.server.state)?;
    let (catalog, catalog_opened) = open_catalog(&config.server.catalog, background)?;
    let catalog_writer = CatalogWriter::spawn(catalog.clone(), background);
    // Nodes share a bucket: changes, eviction and lookups go through it.
    let shared_store = matches!(config.server.storage, StorageUrl::S3(_));
    let remote_names: Vec<String> = config.remotes.keys().cloned().collect();
    let storage: &'static CacheStorage = Box::leak(Box::new(
        CacheStorage::new(
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
                shared_store,
                fsync: config.server.fsync,
                segment_size: config.server.segment_size,
            },
        )
        .context("opening the record segments")?,
    ));
    let breakers = Arc::new(Breakers::new(config.server.breaker, config.remotes.keys()));
    let cluster = join_cluster(config, &redis, storage, &breakers, &catalog, background);
    // The snapshot, when there is a good one, stands in for the catalog's
    // rows (which take seconds per million); references are few.
    let from_snapshot = storage.load_snapshot();
    if catalog_opened {
        if from_snapshot {
            let references = background
                .block_on(catalog.references())
                .context("reading the catalog's references")?;
            storage.load_references(references);
        } else {
            let (rows, references) = background
                .block_on(async { tokio::try_join!(catalog.entries(), catalog.references()) })
                .context("reading the catalog's cache entries")?;
            storage.load_index(rows);
            storage.load_references(references);
        }
    }
    background.block_on(storage.recover_segments());
    // Without the catalog's rows the walk of the store builds the index.
    storage.start_reconcile();
    storage.start_eviction();
    storage.start_access_reports();
    storage.start_snapshots();
    let cache_lock: &'static CacheKeyLockImpl = Box::leak(Box::new(FillLock::new(
        config.server.lock_timeout,
        storage,
        cluster.as_ref().map(|c| c.following.clone()),
    )));
    Ok(Opened {
        storage,
        state,
        redis,
        catalog,
        catalog_writer,
        breakers,
        cluster,
        cache_lock,
    })
}

/// What `artifactd import` writes through: the storage with its index
/// loaded and recovered, and the catalog's writer.
pub(crate) struct OpenedStore {
    pub storage: &'static CacheStorage,
    pub catalog_writer: Arc<CatalogWriter>,
}

/// Opens the store as a start does, without serving.
pub(crate) fn open_store(
    config: &Config,
    background: &tokio::runtime::Handle,
) -> anyhow::Result<OpenedStore> {
    let opened = open_backends(config, background)?;
    Ok(OpenedStore {
        storage: opened.storage,
        catalog_writer: opened.catalog_writer,
    })
}

/// With Redis: the change feed (and, on a shared bucket, one evicting
/// node at a time); with a cluster section, the fill leases too.
fn join_cluster(
    config: &Config,
    redis: &Option<Arc<crate::cluster::link::RedisLink>>,
    storage: &'static CacheStorage,
    breakers: &Arc<Breakers>,
    catalog: &Arc<dyn Catalog>,
    background: &tokio::runtime::Handle,
) -> Option<crate::cluster::Cluster> {
    let link = redis.as_ref()?;
    let shared_store = matches!(config.server.storage, StorageUrl::S3(_));
    let listeners = crate::cluster::changes::Listeners {
        storage: shared_store.then_some(storage),
        breakers: breakers.clone(),
    };
    crate::cluster::changes::start(link.clone(), listeners, background);
    if shared_store {
        // A lease outliving three checks: its holder keeps it while alive.
        let lease = crate::cluster::evict_lease::EvictionLease::new(
            link.clone(),
            crate::storage::evict::CHECK_EVERY * 3,
        );
        storage.share_eviction(crate::storage::evict::SharedEviction {
            turn: Arc::new(lease),
            catalog: catalog.clone(),
        });
    }
    let settings = config.server.cluster.as_ref()?;
    crate::cluster::members::start(link.clone(), settings.advertise, background);
    Some(crate::cluster::Cluster {
        following: Arc::default(),
        secret: settings.secret.clone(),
        leases: crate::cluster::fill_lease::FillLeases::new(
            link.clone(),
            settings.advertise,
            settings.lock_ttl,
            background.clone(),
        ),
    })
}

/// pingora's server, bootstrapped (taking the listeners over from a
/// running artifactd with `upgrade`), and the pid file it is known by.
fn pingora_server(config: &Config, upgrade: bool) -> anyhow::Result<(Server, std::path::PathBuf)> {
    let grace = config.server.grace_period;
    let conf = ServerConf {
        threads: config.server.threads,
        // Pingora sleeps this long after a stop or hand-over; `lifecycle`
        // exits earlier once nothing is in flight.
        grace_period_seconds: Some(grace.as_secs() + u64::from(grace.subsec_nanos() > 0)),
        // One runtime per thread, like nginx workers: a hit never wakes
        // another thread (measured: +13% hit RPS over work stealing).
        work_stealing: false,
        graceful_shutdown_timeout_seconds: Some(5),
        upgrade_sock: config.server.upgrade_socket.display().to_string(),
        pid_file: std::env::temp_dir()
            .join(format!("artifactd-{}.pid", std::process::id()))
            .display()
            .to_string(),
        ..ServerConf::default()
    };
    if let Some(dir) = config.server.upgrade_socket.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the upgrade socket's folder {}", dir.display()))?;
    }
    let pid_file = crate::lifecycle::pid_file(&config.server);
    if upgrade {
        crate::lifecycle::take_over(&pid_file, &config.server.upgrade_socket)?;
    }
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    Ok((server, pid_file))
}

fn build_app(
    config: Config,
    opened: Opened,
    in_flight: Arc<InFlight>,
    background: &tokio::runtime::Handle,
) -> anyhow::Result<Arc<App>> {
    let storage = opened.storage;
    let loopback = Loopback::new(&config.server.listen)?;
    let checksums = Arc::new(Checksums::new(opened.state.clone(), background.clone()));
    let snapshot_node = crate::proxy::snapshots::Node {
        storage,
        checksums: checksums.clone(),
        loopback: loopback.clone(),
        background: background.clone(),
    };
    let snapshots = Snapshots::new(
        config.remotes.values(),
        config.server.read_timeout,
        snapshot_node,
    )?;
    let rewrites = crate::rewrites::Rewrites::new(config.server.rewritten_bytes);
    let firewall =
        crate::firewall::rules::Firewall::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut metrics = Metrics::new(config.remotes.keys());
    let connections = Arc::new(crate::connections::Connections::default());
    metrics.register_scraped(Scraped {
        connections: connections.clone(),
        breakers: opened.breakers.clone(),
        storage,
        catalog_writer: opened.catalog_writer.clone(),
        rewrites: rewrites.clone(),
    });
    let credentials = Credentials::new(
        config.remotes.values(),
        config.server.connect_timeout,
        config.server.read_timeout,
        // Shared only through Redis: the embedded store is a disk.
        opened.redis.is_some().then(|| opened.state.clone()),
    )?;
    Ok(Arc::new(App {
        metrics,
        breakers: opened.breakers,
        upstream_limits: Default::default(),
        prefetcher: Prefetcher::new(loopback.clone(), background.clone()),
        loopback,
        credentials: arc_swap::ArcSwap::from_pointee(credentials),
        config: arc_swap::ArcSwap::from_pointee(config),
        config_generation: Default::default(),
        storage,
        cache_lock: opened.cache_lock,
        catalog: opened.catalog,
        catalog_writer: opened.catalog_writer,
        checksums,
        rewrites,
        snapshots: Arc::new(snapshots),
        in_flight,
        connections,
        jobs: crate::jobs::Jobs::default(),
        background: background.clone(),
        started: Instant::now(),
        top_lists: Default::default(),
        cluster: opened.cluster,
        redis: opened.redis,
        firewall,
        audit: Default::default(),
    }))
}

/// pingora's proxy with the client limits it enforces itself: those of
/// HTTP/2 connections (HTTP/1 heads are read by [`crate::fast_path`]).
/// Fixed at start: a reload does not change them.
fn http_proxy(server: &Server, app: &Arc<App>) -> pingora::proxy::HttpProxy<ArtifactProxy> {
    let limits = app.config().server.clients;
    let mut proxy =
        pingora::proxy::http_proxy(&server.configuration, ArtifactProxy::new(app.clone()));
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_concurrent_streams(limits.h2_max_streams)
        .max_header_list_size(limits.max_header_size as u32);
    proxy.h2_options = Some(h2);
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2_idle_timeout = Some(limits.idle_timeout);
    proxy.server_options = Some(options);
    proxy
}

/// The proxy on every listener: plain TCP, or TLS (with HTTP/2) where a
/// certificate is configured.
fn proxy_service(
    server: &Server,
    app: Arc<App>,
    listen: &[Listener],
    certs: Vec<Option<Arc<ReloadableCert>>>,
    in_flight: Arc<InFlight>,
) -> anyhow::Result<impl pingora::services::Service + 'static> {
    let mut proxy = pingora::services::listening::Service::new(
        "artifactd".to_string(),
        crate::lifecycle::Counted::new(
            crate::fast_path::FastPath::new(http_proxy(server, &app), app),
            in_flight,
        ),
    );
    for (listener, cert) in listen.iter().zip(certs) {
        let address = listener.address.to_string();
        match cert {
            None => proxy.add_tcp(&address),
            Some(cert) => {
                let mut settings = TlsSettings::intermediate("", "")
                    .map_err(|e| anyhow::anyhow!("TLS settings for {listener}: {e}"))?;
                settings.set_cert_resolver(cert);
                settings.enable_h2();
                proxy.add_tls_with_settings(&address, None, settings);
            }
        }
    }
    Ok(proxy)
}

fn open_bodies(server: &ServerConfig) -> anyhow::Result<Arc<dyn BodyStore>> {
    Ok(match &server.storage {
        StorageUrl::Filesystem(root) => Arc::new(
            FsBodyStore::open(root, server.fsync)
                .with_context(|| format!("opening storage {}", root.display()))?,
        ),
        StorageUrl::S3(settings) => Arc::new(crate::storage::body::s3::open(settings)?),
    })
}

/// A state store, and the Redis connection behind it when there is one.
type OpenedState = (Arc<dyn StateStore>, Option<Arc<RedisLink>>);

/// The state store, and the Redis connection behind it when there is one
/// (the change feed and fill claims of a cluster use it too).
fn open_state(url: &StateUrl) -> anyhow::Result<OpenedState> {
    Ok(match url {
        StateUrl::Embedded(dir) => (
            Arc::new(
                EmbeddedState::open(dir)
                    .with_context(|| format!("opening state store {}", dir.display()))?,
            ),
            None,
        ),
        StateUrl::Redis(settings) => {
            let link = Arc::new(RedisLink::new(settings)?);
            (Arc::new(RedisState::new(link.clone())), Some(link))
        }
    })
}

/// Opens the catalog, and whether it answered. SQLite must open; a
/// PostgreSQL that is away (an error worth retrying, not a refused login
/// or a failed migration) does not stop the start: the node serves from
/// its store (whose walk builds the index), queues catalog changes, and
/// migrates and catches up once the database answers.
fn open_catalog(
    url: &CatalogUrl,
    background: &tokio::runtime::Handle,
) -> anyhow::Result<(Arc<dyn Catalog>, bool)> {
    let opened = background.block_on(SqlCatalog::open(url));
    let (CatalogUrl::Postgres(secret), Err(e @ CatalogError(_, Retry::Later))) = (url, &opened)
    else {
        let catalog = opened.with_context(|| format!("opening catalog {}", url))?;
        return Ok((Arc::new(catalog), true));
    };
    log::warn!(
        "catalog {} unreachable ({e}); starting without it: the index is built from the store, changes queue until it answers",
        url
    );
    // The lazy pool starts its reaper on the current runtime.
    let _runtime = background.enter();
    let catalog = Arc::new(
        SqlCatalog::open_lazy(secret.expose()).with_context(|| format!("catalog {}", url))?,
    );
    let migrating = catalog.clone();
    background.spawn(async move { migrating.migrate_when_reachable().await });
    Ok((catalog, false))
}

/// The certificate of each listener (`None` for plain ones), read now so a
/// bad file stops the start with its name.
fn tls_certs(listen: &[Listener]) -> anyhow::Result<Vec<Option<Arc<ReloadableCert>>>> {
    listen
        .iter()
        .map(|listener| {
            listener
                .tls
                .as_ref()
                .map(|files| {
                    ReloadableCert::load(files).with_context(|| format!("listener {listener}"))
                })
                .transpose()
        })
        .collect()
}

/// What `check-config` asks of each TLS listener: its certificate and key
/// load and match, exactly as the start loads them.
pub fn check_listeners(listen: &[Listener]) -> anyhow::Result<()> {
    tls_certs(listen).map(drop)
}
