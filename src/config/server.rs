//! The server configuration file (`artifactd.yaml`) and its environment
//! overrides.
//!
//! Everything that is not a remote lives here: where to listen, where
//! bodies, state and the catalog are kept, limits and tokens. Relative paths
//! in the file resolve against the file's own directory, so a config and its
//! `remotes.yaml` can move together; relative paths from the environment
//! resolve against the working directory, as a shell user expects.

use super::backends;
pub use super::backends::{
    CatalogUrl, ClusterSettings, RawCluster, RawRedis, RawS3, StateUrl, StorageUrl,
};
use super::error::{parse_yaml, ConfigError};
use super::paths::{self, resolve};
use super::units::positive_duration;
pub use super::units::{RawDuration, RawSize};
use super::Secret;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The server config file as written. Unknown keys are errors: a typo in a
/// limit must not silently keep the default.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerConfig {
    /// One listener or a list; each `host:port` or `{address, tls}`.
    pub listen: Option<RawListen>,
    /// Worker threads; defaults to the number of CPUs.
    pub threads: Option<usize>,
    /// The URL clients reach artifactd at (`https://artifacts.example.com`),
    /// for links in rewritten index documents; without it, the request's
    /// `Host` and `X-Forwarded-Proto` decide.
    pub public_url: Option<String>,
    /// Path of `remotes.yaml`.
    pub remotes: Option<String>,
    /// Body store URL: `fs://PATH` or `s3://BUCKET/PREFIX`.
    pub storage: Option<String>,
    /// Freshness state URL: `embedded`, `embedded://PATH` or `redis://…`.
    pub state: Option<String>,
    /// Catalog URL: `sqlite://PATH` or `postgres://…`.
    pub catalog: Option<String>,
    /// The bucket's endpoint and credentials when `storage` is `s3://`.
    #[serde(default)]
    pub s3: RawS3,
    /// Key prefix and timeout when `state` is `redis://`.
    #[serde(default)]
    pub redis: RawRedis,
    /// How nodes sharing a bucket and Redis reach each other.
    #[serde(default)]
    pub cluster: RawCluster,
    /// Serve uploads, deletes and admin endpoints without tokens on a
    /// non-loopback listener. Refused unless set explicitly.
    pub allow_anonymous_admin: Option<bool>,
    #[serde(default)]
    pub cache: RawCacheSettings,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub upstream: RawUpstreamSettings,
    #[serde(default)]
    pub tokens: RawTokens,
    #[serde(default)]
    pub process: RawProcess,
    #[serde(default)]
    pub log: RawLog,
    /// The artifact firewall: rules, feeds, the policy file.
    #[serde(default)]
    pub firewall: super::firewall::RawFirewall,
    #[serde(default)]
    pub audit: RawAudit,
    /// Which settings the environment replaced, so their relative paths
    /// resolve against the working directory.
    #[serde(skip)]
    from_environment: FromEnvironment,
}

/// `listen:` as written: one listener or a list of them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawListen {
    One(RawListener),
    Many(Vec<RawListener>),
}

/// One listener: `"host:port"` or `{address: "host:port", tls: {cert, key}}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawListener {
    Address(String),
    Detailed(RawListenerDetail),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerDetail {
    pub address: String,
    pub tls: Option<RawTls>,
}

/// PEM files of a TLS listener: the full certificate chain and its key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCacheSettings {
    /// How long a cache-fill lock may be held before followers give up
    /// waiting and fetch on their own (seconds, or `5m`).
    pub lock_timeout: Option<RawDuration>,
    /// How long an upstream 404 for a mutable path is remembered (0:
    /// never); a remote's `cache.negative_ttl` overrides it.
    pub negative_ttl: Option<RawDuration>,
    /// How long an expired copy may still be served while the upstream
    /// fails (0: never); a remote's `cache.stale_if_error` overrides it.
    pub stale_if_error: Option<RawDuration>,
    /// Largest object that is cached (bytes, or with a unit: `4GiB`);
    /// larger ones pass through. Unlimited when absent.
    pub max_object_size: Option<RawSize>,
    /// fsync bodies and records before they become visible.
    pub fsync: Option<bool>,
    /// Answer fresh hits held in memory before pingora's phases.
    pub fast_path: Option<bool>,
    /// Bytes the cache may occupy (bytes or with a unit: `50GiB`); least
    /// recently used objects are evicted beyond it. Unbounded when absent.
    pub max_size: Option<RawSize>,
    /// Free space to keep on the storage filesystem; objects are evicted
    /// to keep it.
    pub min_free: Option<RawSize>,
    /// How many objects the in-memory index holds, and so the cache.
    pub memory_index_entries: Option<u64>,
    /// Bodies up to this size are kept inside their record and served from
    /// memory while hot (0: never).
    pub memory_body_max: Option<RawSize>,
    /// Memory for hot records and small bodies.
    pub memory_bytes: Option<RawSize>,
    /// Memory for rewritten index documents (0: rewrite every response).
    pub rewritten_bytes: Option<RawSize>,
    /// How long a record segment grows before the next one starts.
    pub segment_size: Option<RawSize>,
    /// Fills of at least this size continue after a broken upstream
    /// connection with a range request instead of failing.
    pub resumable_fill_min: Option<RawSize>,
    /// Attempts in a row that bring nothing before a fill gives up
    /// resuming (0: fills never resume).
    pub fill_resume_attempts: Option<u32>,
    /// A client's range of an uncached object at least this large is
    /// fetched at once, beside the fill of the whole.
    pub range_fill_min: Option<RawSize>,
    /// Fills at least this large, from an upstream that answers ranges,
    /// fetch parts side by side.
    pub parallel_fill_min: Option<RawSize>,
    /// Upstream connections of one parallel fill.
    pub parallel_fill_connections: Option<u32>,
    /// Bytes per part of a parallel fill.
    pub parallel_fill_part: Option<RawSize>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest accepted upload to a local repository (bytes or `1GiB`).
    pub max_upload_bytes: Option<RawSize>,
    /// Longest accepted artifact path, in bytes.
    pub max_path_bytes: Option<usize>,
    /// Time a client has to send a whole request head, from its first byte.
    pub header_timeout: Option<RawDuration>,
    /// How long an open connection waits for its next request.
    pub idle_timeout: Option<RawDuration>,
    /// Client connections open at once; past it the longest idle close.
    pub max_connections: Option<usize>,
    /// Largest request head (request line and headers).
    pub max_header_size: Option<RawSize>,
    /// Streams one HTTP/2 connection may have open at once.
    pub h2_max_streams: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamSettings {
    /// Time to establish a TCP (and TLS) connection.
    pub connect_timeout: Option<RawDuration>,
    /// Longest silence of an upstream (before the first byte or between chunks).
    pub read_timeout: Option<RawDuration>,
    /// Upstream connections a remote without `max_upstream_connections`
    /// may have open at once from this node (0: no bound).
    pub max_connections_per_remote: Option<u32>,
    /// Consecutive upstream failures that mark a remote down (0: never).
    pub breaker_failures: Option<u32>,
    /// How long a remote stays marked down before one probe request tests it.
    pub breaker_backoff: Option<RawDuration>,
}

/// Bearer tokens, inline or (better) read from files that stay out of the
/// config. Setting both forms of one token is an error.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokens {
    /// Required to upload to or delete from local repositories.
    pub write: Option<String>,
    pub write_file: Option<String>,
    /// Required for administrative operations (flush, catalog, cache API).
    pub admin: Option<String>,
    pub admin_file: Option<String>,
    /// Required for `/metrics` when set (the admin token also works).
    pub metrics: Option<String>,
    pub metrics_file: Option<String>,
}

/// The process lifecycle: shutdown and graceful upgrade.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcess {
    /// How long in-flight transfers may take to finish after SIGTERM or an
    /// upgrade hand-over before the process exits anyway.
    pub grace_period: Option<RawDuration>,
    /// The Unix socket a new process (`serve -u`) receives the listening
    /// sockets through.
    pub upgrade_socket: Option<String>,
}

/// Logging.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` (default) or `json`: one JSON object per line.
    pub format: Option<String>,
}

/// The audit trail of what was served to whom.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Record every artifact served (default: on).
    pub enabled: Option<bool>,
    /// How long rows are kept (default 90 days).
    pub retain: Option<RawDuration>,
}

/// The audit trail's settings, resolved.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub enabled: bool,
    pub retain: Duration,
}

pub const DEFAULT_AUDIT_RETAIN: Duration = Duration::from_secs(90 * 86_400);

#[derive(Debug, Clone, Default)]
struct FromEnvironment {
    remotes: bool,
    storage: bool,
    state: bool,
    catalog: bool,
    write_token_file: bool,
    admin_token_file: bool,
    metrics_token_file: bool,
}

/// A listening endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub address: SocketAddr,
    pub tls: Option<TlsFiles>,
}

/// PEM files of a TLS listener, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Listener {
    /// Whether only this machine can connect.
    pub fn is_loopback(&self) -> bool {
        self.address.ip().is_loopback()
    }
}

/// The listeners as one line for messages: `http://…, https://…`.
pub fn describe(listeners: &[Listener]) -> String {
    let names: Vec<String> = listeners.iter().map(ToString::to_string).collect();
    names.join(", ")
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.address)
    }
}

/// The resolved server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// At least one; addresses are distinct.
    pub listen: Vec<Listener>,
    pub threads: usize,
    /// Without a trailing `/`.
    pub public_url: Option<String>,
    pub remotes_file: PathBuf,
    pub storage: StorageUrl,
    pub state: StateUrl,
    pub catalog: CatalogUrl,
    pub lock_timeout: Duration,
    pub negative_ttl: Duration,
    pub stale_if_error: Duration,
    /// Objects larger than this pass through uncached.
    pub max_object_size: Option<u64>,
    /// fsync bodies and records before they become visible.
    pub fsync: bool,
    /// Fresh hits held in memory are answered before pingora's phases.
    pub fast_path: bool,
    pub max_size: Option<u64>,
    pub min_free: Option<u64>,
    pub memory_index_entries: u64,
    pub memory_body_max: u64,
    pub memory_bytes: u64,
    pub rewritten_bytes: u64,
    pub segment_size: u64,
    pub large_fills: LargeFills,
    pub max_upload_bytes: u64,
    pub max_path_bytes: usize,
    pub clients: ClientLimits,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// `upstream.max_connections_per_remote`; `None`: no bound.
    pub max_connections_per_remote: Option<u32>,
    pub breaker: filters::breaker::Breaker,
    pub write_token: Option<Secret>,
    pub admin_token: Option<Secret>,
    pub metrics_token: Option<Secret>,
    pub allow_anonymous_admin: bool,
    pub grace_period: Duration,
    pub upgrade_socket: PathBuf,
    pub log_format: crate::access_log::LogFormat,
    pub cluster: Option<ClusterSettings>,
    pub firewall: super::firewall::FirewallSettings,
    pub audit: AuditSettings,
}

impl ServerConfig {
    /// Where bodies, state and the catalog are, resolved and without
    /// passwords: a line for `check-config` and the start log.
    pub fn describe_backends(&self) -> String {
        format!(
            "storage {}, state {}, catalog {}",
            self.storage, self.state, self.catalog
        )
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_NEGATIVE_TTL: u64 = 60;
/// One week: long enough to ride out an upstream outage over a weekend.
pub const DEFAULT_STALE_IF_ERROR: u64 = 7 * 24 * 3600;
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1 << 30;
pub const DEFAULT_MEMORY_INDEX_ENTRIES: u64 = 1_000_000;
pub const DEFAULT_MEMORY_BODY_MAX: u64 = 64 << 10;
/// What one client connection may take: the limits an edge proxy sets
/// against slow and abusive clients (nginx's `client_header_timeout`,
/// `keepalive_timeout`, `worker_connections`, `large_client_header_buffers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// From a request head's first byte to its last; past it `408`.
    pub header_timeout: Duration,
    /// Between requests on an open connection; past it the connection closes.
    pub idle_timeout: Duration,
    /// Open client connections; a new one past it closes the longest idle
    /// ones, or is answered `503` when none is idle.
    pub max_connections: usize,
    /// A longer request head is answered `431` (`414` when the request line
    /// alone is longer).
    pub max_header_size: usize,
    /// Concurrent streams of one HTTP/2 connection.
    pub h2_max_streams: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 16_384,
            max_header_size: 32 << 10,
            h2_max_streams: 128,
        }
    }
}

/// How fills of large objects use ranges ([`crate::storage::large`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LargeFills {
    /// Fills at least this large resume after a broken connection; below
    /// it a broken fill starts again from zero: cheaper than a range
    /// request, and the client retries anyway.
    pub resumable_min: u64,
    /// Fruitless fetches in a row before a fill fails (0: no resumes).
    pub resume_attempts: u32,
    /// A client's range of an uncached object this large is fetched at once.
    pub range_min: u64,
    /// Fills this large fetch parts side by side.
    pub parallel_min: u64,
    pub parallel_connections: u32,
    pub parallel_part: u64,
}

impl Default for LargeFills {
    fn default() -> Self {
        LargeFills {
            resumable_min: 8 << 20,
            resume_attempts: 5,
            range_min: 64 << 20,
            parallel_min: 64 << 20,
            parallel_connections: 4,
            parallel_part: 16 << 20,
        }
    }
}
pub const DEFAULT_MEMORY_BYTES: u64 = 256 << 20;
pub const DEFAULT_REWRITTEN_BYTES: u64 = 128 << 20;
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
pub const DEFAULT_MAX_PATH_BYTES: usize = 2048;
/// Long enough for a large layer on a slow client; systemd's
/// `TimeoutStopSec` in the shipped unit allows for it.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);

/// An environment variable that replaces one setting of the file.
pub struct EnvOverride {
    pub var: &'static str,
    /// The setting it replaces, as the file spells it.
    pub field: &'static str,
    apply: fn(&mut RawServerConfig, String) -> Result<(), String>,
}

fn number<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))
}

/// Every `ARTIFACTD_*` variable, with the setting it replaces and how its
/// text becomes that setting's type.
pub const ENV_OVERRIDES: &[EnvOverride] = &[
    EnvOverride {
        var: "ARTIFACTD_LISTEN",
        field: "listen",
        apply: |raw, v| {
            let listeners = v.split(',').map(|a| RawListener::Address(a.trim().into()));
            raw.listen = Some(RawListen::Many(listeners.collect()));
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_THREADS",
        field: "threads",
        apply: |raw, v| {
            raw.threads = Some(number(&v)?);
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_PUBLIC_URL",
        field: "public_url",
        apply: |raw, v| {
            raw.public_url = Some(v);
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_REMOTES",
        field: "remotes",
        apply: |raw, v| {
            raw.from_environment.remotes = true;
            raw.remotes = Some(v);
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_STORAGE",
        field: "storage",
        apply: |raw, v| {
            raw.from_environment.storage = true;
            raw.storage = Some(v);
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_STATE",
        field: "state",
        apply: |raw, v| {
            raw.from_environment.state = true;
            raw.state = Some(v);
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_CATALOG",
        field: "catalog",
        apply: |raw, v| {
            raw.from_environment.catalog = true;
            raw.catalog = Some(v);
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_CLUSTER_ADVERTISE",
        field: "cluster.advertise",
        apply: |raw, v| {
            raw.cluster.advertise = Some(v);
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_CLUSTER_SECRET",
        field: "cluster.secret",
        apply: |raw, v| {
            raw.cluster.secret = Some(v);
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_ALLOW_ANONYMOUS_ADMIN",
        field: "allow_anonymous_admin",
        apply: |raw, v| {
            raw.allow_anonymous_admin = Some(super::units::boolean(&v)?);
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_MAX_SIZE",
        field: "cache.max_size",
        apply: |raw, v| {
            filters::size::parse(&v)?;
            raw.cache.max_size = Some(RawSize::Text(v));
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_MAX_UPLOAD_BYTES",
        field: "limits.max_upload_bytes",
        apply: |raw, v| {
            filters::size::parse(&v)?;
            raw.limits.max_upload_bytes = Some(RawSize::Text(v));
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_GRACE_PERIOD",
        field: "process.grace_period",
        apply: |raw, v| {
            filters::duration::parse(&v)?;
            raw.process.grace_period = Some(RawDuration::Text(v));
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_LOG_FORMAT",
        field: "log.format",
        apply: |raw, v| {
            v.parse::<crate::access_log::LogFormat>()?;
            raw.log.format = Some(v);
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_WRITE_TOKEN",
        field: "tokens.write",
        apply: |raw, v| {
            raw.tokens.write = Some(v);
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_WRITE_TOKEN_FILE",
        field: "tokens.write_file",
        apply: |raw, v| {
            raw.from_environment.write_token_file = true;
            raw.tokens.write_file = Some(v);
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_ADMIN_TOKEN",
        field: "tokens.admin",
        apply: |raw, v| {
            raw.tokens.admin = Some(v);
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_ADMIN_TOKEN_FILE",
        field: "tokens.admin_file",
        apply: |raw, v| {
            raw.from_environment.admin_token_file = true;
            raw.tokens.admin_file = Some(v);
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_METRICS_TOKEN",
        field: "tokens.metrics",
        apply: |raw, v| {
            raw.tokens.metrics = Some(v);
            Ok(())
        },
    },
    EnvOverride {
        var: "ARTIFACTD_METRICS_TOKEN_FILE",
        field: "tokens.metrics_file",
        apply: |raw, v| {
            raw.from_environment.metrics_token_file = true;
            raw.tokens.metrics_file = Some(v);
            Ok(())
        },
    },
];

/// Parses the server config text and applies `env` overrides.
pub fn parse_server_config(
    file: &Path,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(RawServerConfig, ServerConfig), ConfigError> {
    let raw = read_raw(file, source, env)?;
    let f = Fields::new(file);
    let (storage, state, catalog) = f.backends(&raw, env)?;
    let from_env = &raw.from_environment;
    let listen =
        listeners(raw.listen.as_ref(), &f.file_dir).map_err(|(field, m)| f.err(&field, m))?;
    let public_url = f.public_url(&raw)?;
    let threads = f.threads(&raw)?;
    let cluster = f.cluster(&raw, &storage, &state, &listen)?;
    let upgrade_socket = match raw.process.upgrade_socket.as_deref() {
        Some(path) => resolve(&f.file_dir, path),
        None => default_upgrade_socket(&storage, &listen),
    };
    let [write_token, admin_token, metrics_token] = f.tokens(&raw)?;
    let (cache, limits, upstream) = (&raw.cache, &raw.limits, &raw.upstream);
    let config = ServerConfig {
        max_object_size: f.size("cache.max_object_size", &cache.max_object_size)?,
        fsync: cache.fsync.unwrap_or(false),
        fast_path: cache.fast_path.unwrap_or(true),
        max_size: f.size("cache.max_size", &cache.max_size)?,
        min_free: f.size("cache.min_free", &cache.min_free)?,
        memory_index_entries: f.memory_index_entries(cache)?,
        memory_body_max: (f.size("cache.memory_body_max", &cache.memory_body_max)?)
            .unwrap_or(DEFAULT_MEMORY_BODY_MAX),
        memory_bytes: (f.size("cache.memory_bytes", &cache.memory_bytes)?)
            .unwrap_or(DEFAULT_MEMORY_BYTES),
        rewritten_bytes: (f.size("cache.rewritten_bytes", &cache.rewritten_bytes)?)
            .unwrap_or(DEFAULT_REWRITTEN_BYTES),
        segment_size: f.segment_size(cache)?,
        large_fills: f.large_fills(cache)?,
        listen,
        threads,
        public_url,
        remotes_file: resolve(
            f.base(from_env.remotes),
            raw.remotes.as_deref().unwrap_or("remotes.yaml"),
        ),
        lock_timeout: f.positive("cache.lock_timeout", &cache.lock_timeout, 300)?,
        negative_ttl: f.seconds(
            "cache.negative_ttl",
            &cache.negative_ttl,
            DEFAULT_NEGATIVE_TTL,
        )?,
        stale_if_error: f.seconds(
            "cache.stale_if_error",
            &cache.stale_if_error,
            DEFAULT_STALE_IF_ERROR,
        )?,
        max_upload_bytes: (f.size("limits.max_upload_bytes", &limits.max_upload_bytes)?)
            .unwrap_or(DEFAULT_MAX_UPLOAD_BYTES),
        max_path_bytes: limits.max_path_bytes.unwrap_or(DEFAULT_MAX_PATH_BYTES),
        clients: f.client_limits(limits)?,
        connect_timeout: f.positive("upstream.connect_timeout", &upstream.connect_timeout, 10)?,
        read_timeout: f.positive("upstream.read_timeout", &upstream.read_timeout, 60)?,
        max_connections_per_remote: Some(upstream.max_connections_per_remote.unwrap_or(256))
            .filter(|n| *n > 0),
        breaker: filters::breaker::Breaker {
            threshold: upstream.breaker_failures.unwrap_or(5),
            backoff_ms: (f.positive("upstream.breaker_backoff", &upstream.breaker_backoff, 30)?)
                .as_millis() as u64,
        },
        write_token,
        admin_token,
        metrics_token,
        allow_anonymous_admin: raw.allow_anonymous_admin.unwrap_or(false),
        grace_period: f.duration(
            "process.grace_period",
            &raw.process.grace_period,
            DEFAULT_GRACE_PERIOD,
        )?,
        upgrade_socket,
        log_format: match raw.log.format.as_deref() {
            None => crate::access_log::LogFormat::Text,
            Some(text) => text.parse().map_err(|m| f.err("log.format", m))?,
        },
        firewall: f.firewall(&raw.firewall)?,
        audit: AuditSettings {
            enabled: raw.audit.enabled.unwrap_or(true),
            retain: positive_duration(&raw.audit.retain, DEFAULT_AUDIT_RETAIN)
                .map_err(|m| f.err("audit.retain", m))?,
        },
        storage,
        state,
        catalog,
        cluster,
    };
    Ok((raw, config))
}

/// The file's settings as written, with the environment's overrides.
fn read_raw(
    file: &Path,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RawServerConfig, ConfigError> {
    let mut raw: RawServerConfig = if source.trim().is_empty() {
        RawServerConfig::default()
    } else {
        parse_yaml(file, source)?
    };
    for over in ENV_OVERRIDES {
        if let Some(value) = env(over.var) {
            (over.apply)(&mut raw, value).map_err(|message| {
                ConfigError::new(file, format!("{}: {message}", over.var)).field(over.field)
            })?;
        }
    }
    Ok(raw)
}

/// Reads the server file's fields into their types, each error naming
/// the file and the field. Relative paths resolve against the file's
/// folder, or the working directory for a path from the environment.
struct Fields<'a> {
    file: &'a Path,
    file_dir: PathBuf,
    cwd: PathBuf,
}

impl<'a> Fields<'a> {
    fn new(file: &'a Path) -> Fields<'a> {
        Fields {
            file,
            file_dir: paths::folder_of(file),
            cwd: paths::working_directory(),
        }
    }

    fn err(&self, field: &str, message: String) -> ConfigError {
        ConfigError::new(self.file, message).field(field)
    }

    fn field_error(&self, (field, message): backends::FieldError) -> ConfigError {
        self.err(field, message)
    }

    /// Where a relative path of the setting resolves.
    fn base(&self, from_environment: bool) -> &Path {
        if from_environment {
            &self.cwd
        } else {
            &self.file_dir
        }
    }

    fn firewall(
        &self,
        raw: &super::firewall::RawFirewall,
    ) -> Result<super::firewall::FirewallSettings, ConfigError> {
        Ok(super::firewall::FirewallSettings {
            policy_file: raw
                .policy_file
                .as_deref()
                .map(|p| resolve(&self.file_dir, p)),
            refresh: positive_duration(&raw.refresh, super::firewall::DEFAULT_REFRESH)
                .map_err(|m| self.err("firewall.refresh", m))?,
            inline: raw.rules.clone(),
            file: self.file.to_path_buf(),
            dir: self.file_dir.clone(),
        })
    }

    fn duration(
        &self,
        field: &str,
        value: &Option<RawDuration>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => v.duration().map_err(|message| self.err(field, message)),
        }
    }

    fn seconds(
        &self,
        field: &str,
        value: &Option<RawDuration>,
        default: u64,
    ) -> Result<Duration, ConfigError> {
        self.duration(field, value, Duration::from_secs(default))
    }

    fn positive(
        &self,
        field: &str,
        value: &Option<RawDuration>,
        default: u64,
    ) -> Result<Duration, ConfigError> {
        positive_duration(value, Duration::from_secs(default)).map_err(|m| self.err(field, m))
    }

    fn large_fills(&self, cache: &RawCacheSettings) -> Result<LargeFills, ConfigError> {
        let default = LargeFills::default();
        let size = |field: &str, value: &Option<RawSize>, default: u64| {
            Ok::<_, ConfigError>(self.size(field, value)?.unwrap_or(default))
        };
        let part = size(
            "cache.parallel_fill_part",
            &cache.parallel_fill_part,
            default.parallel_part,
        )?;
        if part < 1 << 20 {
            return Err(self.err("cache.parallel_fill_part", "must be at least 1MiB".into()));
        }
        let connections = (cache.parallel_fill_connections).unwrap_or(default.parallel_connections);
        if connections == 0 {
            let message = "must be at least 1 (1: no parallel fills)".into();
            return Err(self.err("cache.parallel_fill_connections", message));
        }
        Ok(LargeFills {
            resumable_min: size(
                "cache.resumable_fill_min",
                &cache.resumable_fill_min,
                default.resumable_min,
            )?,
            resume_attempts: (cache.fill_resume_attempts).unwrap_or(default.resume_attempts),
            range_min: size(
                "cache.range_fill_min",
                &cache.range_fill_min,
                default.range_min,
            )?,
            parallel_min: size(
                "cache.parallel_fill_min",
                &cache.parallel_fill_min,
                default.parallel_min,
            )?,
            parallel_connections: connections,
            parallel_part: part,
        })
    }

    fn client_limits(&self, limits: &RawLimits) -> Result<ClientLimits, ConfigError> {
        let default = ClientLimits::default();
        let max_header_size = match self.size("limits.max_header_size", &limits.max_header_size)? {
            None => default.max_header_size,
            Some(size) if (1 << 10..=1 << 20).contains(&size) => size as usize,
            Some(_) => {
                let message = "must be between 1KiB and 1MiB".into();
                return Err(self.err("limits.max_header_size", message));
            }
        };
        let at_least_one = |field: &str, value: Option<usize>, default: usize| match value {
            Some(0) => Err(self.err(field, "must be at least 1".into())),
            value => Ok(value.unwrap_or(default)),
        };
        let timeout = |field: &str, value: &Option<RawDuration>, default: Duration| {
            positive_duration(value, default).map_err(|m| self.err(field, m))
        };
        Ok(ClientLimits {
            header_timeout: timeout(
                "limits.header_timeout",
                &limits.header_timeout,
                default.header_timeout,
            )?,
            idle_timeout: timeout(
                "limits.idle_timeout",
                &limits.idle_timeout,
                default.idle_timeout,
            )?,
            max_connections: at_least_one(
                "limits.max_connections",
                limits.max_connections,
                default.max_connections,
            )?,
            max_header_size,
            h2_max_streams: at_least_one(
                "limits.h2_max_streams",
                limits.h2_max_streams.map(|n| n as usize),
                default.h2_max_streams as usize,
            )? as u32,
        })
    }

    fn size(&self, field: &str, value: &Option<RawSize>) -> Result<Option<u64>, ConfigError> {
        value
            .as_ref()
            .map(|v| v.bytes().map_err(|message| self.err(field, message)))
            .transpose()
    }

    fn token(
        &self,
        field: &str,
        inline: &Option<String>,
        path: &Option<String>,
        from_environment: bool,
    ) -> Result<Option<Secret>, ConfigError> {
        read_token(field, inline, path, self.base(from_environment)).map_err(|m| self.err(field, m))
    }

    /// The three backends, each relative path resolved where its setting
    /// came from (the file or the environment).
    fn backends(
        &self,
        raw: &RawServerConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(StorageUrl, StateUrl, CatalogUrl), ConfigError> {
        let from_env = &raw.from_environment;
        let storage = backends::storage(
            raw.storage.as_deref(),
            &raw.s3,
            self.base(from_env.storage),
            env,
        )
        .map_err(|e| self.field_error(e))?;
        let state = backends::state(
            raw.state.as_deref(),
            &storage,
            &raw.redis,
            self.base(from_env.state),
        )
        .map_err(|e| self.field_error(e))?;
        let catalog = backends::catalog(
            raw.catalog.as_deref(),
            &storage,
            self.base(from_env.catalog),
        )
        .map_err(|e| self.field_error(e))?;
        Ok((storage, state, catalog))
    }

    /// The write, admin and metrics tokens, each inline or from its file.
    fn tokens(&self, raw: &RawServerConfig) -> Result<[Option<Secret>; 3], ConfigError> {
        let (t, from_env) = (&raw.tokens, &raw.from_environment);
        Ok([
            self.token(
                "tokens.write",
                &t.write,
                &t.write_file,
                from_env.write_token_file,
            )?,
            self.token(
                "tokens.admin",
                &t.admin,
                &t.admin_file,
                from_env.admin_token_file,
            )?,
            self.token(
                "tokens.metrics",
                &t.metrics,
                &t.metrics_file,
                from_env.metrics_token_file,
            )?,
        ])
    }

    fn memory_index_entries(&self, cache: &RawCacheSettings) -> Result<u64, ConfigError> {
        match cache.memory_index_entries {
            Some(0) => Err(self.err("cache.memory_index_entries", "must be positive".into())),
            other => Ok(other.unwrap_or(DEFAULT_MEMORY_INDEX_ENTRIES)),
        }
    }

    /// A segment holds at least one record and its offsets fit 32 bits.
    fn segment_size(&self, cache: &RawCacheSettings) -> Result<u64, ConfigError> {
        let size = self
            .size("cache.segment_size", &cache.segment_size)?
            .unwrap_or(DEFAULT_SEGMENT_SIZE);
        if !(1 << 16..=1 << 31).contains(&size) {
            return Err(self.err(
                "cache.segment_size",
                format!("{size} bytes is outside 64KiB..2GiB"),
            ));
        }
        Ok(size)
    }

    fn threads(&self, raw: &RawServerConfig) -> Result<usize, ConfigError> {
        match raw.threads.unwrap_or_else(default_threads) {
            0 => Err(self.err("threads", "must be at least 1".into())),
            threads => Ok(threads),
        }
    }

    fn public_url(&self, raw: &RawServerConfig) -> Result<Option<String>, ConfigError> {
        let url = match raw.public_url.as_deref().map(str::trim) {
            None | Some("") => return Ok(None),
            Some(url) => url,
        };
        let valid = url
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
            .filter(|u| u.host().is_some_and(|h| !h.is_empty()))
            .filter(|u| u.query().is_none());
        match valid {
            Some(_) => Ok(Some(url.trim_end_matches('/').to_string())),
            None => Err(self.err(
                "public_url",
                format!("{url:?} is not an http(s) URL like https://artifacts.example.com"),
            )),
        }
    }

    /// The cluster section, which needs the shared backends and a plain
    /// listener for the other nodes.
    fn cluster(
        &self,
        raw: &RawServerConfig,
        storage: &StorageUrl,
        state: &StateUrl,
        listen: &[Listener],
    ) -> Result<Option<ClusterSettings>, ConfigError> {
        let plain: Vec<SocketAddr> = (listen.iter())
            .filter(|l| l.tls.is_none())
            .map(|l| l.address)
            .collect();
        let secret = read_token(
            "cluster.secret",
            &raw.cluster.secret,
            &raw.cluster.secret_file,
            &self.file_dir,
        )
        .map_err(|m| self.err("cluster.secret", m))?;
        backends::cluster(&raw.cluster, secret, storage, state, &plain)
            .map_err(|e| self.field_error(e))
    }
}

/// Beside a filesystem store (one per store, so two nodes on one host
/// with their own stores never meet); with a bucket, a per-port socket in
/// the temp directory.
fn default_upgrade_socket(storage: &StorageUrl, listen: &[Listener]) -> PathBuf {
    match storage {
        StorageUrl::Filesystem(root) => {
            root.parent().unwrap_or(root).join("artifactd-upgrade.sock")
        }
        StorageUrl::S3(_) => std::env::temp_dir().join(format!(
            "artifactd-upgrade-{}.sock",
            listen.first().map_or(0, |l| l.address.port())
        )),
    }
}

/// Resolves `listen:`: at least one listener, distinct addresses, TLS
/// files relative to the config's directory. Errors name the field.
fn listeners(raw: Option<&RawListen>, file_dir: &Path) -> Result<Vec<Listener>, (String, String)> {
    let default = [RawListener::Address(DEFAULT_LISTEN.into())];
    let entries: &[RawListener] = match raw {
        None => &default,
        Some(RawListen::One(one)) => std::slice::from_ref(one),
        Some(RawListen::Many(many)) => many,
    };
    if entries.is_empty() {
        return Err(("listen".into(), "lists no address".into()));
    }
    let mut out: Vec<Listener> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let field = match raw {
            Some(RawListen::Many(_)) => format!("listen[{i}]"),
            _ => "listen".into(),
        };
        let (address, tls) = match entry {
            RawListener::Address(address) => (address, None),
            RawListener::Detailed(detail) => (&detail.address, detail.tls.as_ref()),
        };
        let address: SocketAddr = address.trim().parse().map_err(|_| {
            (
                field.clone(),
                format!("{address:?} is not an address like 127.0.0.1:8080 or [::]:443"),
            )
        })?;
        if out.iter().any(|l| l.address == address) {
            return Err((field, format!("{address} is listed twice")));
        }
        let tls = tls.map(|tls| TlsFiles {
            cert: resolve(file_dir, &tls.cert),
            key: resolve(file_dir, &tls.key),
        });
        out.push(Listener { address, tls });
    }
    Ok(out)
}

/// A token given inline or in a file (trimmed; a file must hold one).
fn read_token(
    field: &str,
    inline: &Option<String>,
    path: &Option<String>,
    base: &Path,
) -> Result<Option<Secret>, String> {
    match (inline.as_deref().filter(|t| !t.is_empty()), path) {
        (Some(_), Some(_)) => Err(format!("set either {field} or {field}_file, not both")),
        (Some(token), None) => Ok(Some(Secret::new(token.to_string()))),
        (None, Some(path)) => {
            let path = resolve(base, path);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("{field}_file {}: {e}", path.display()))?;
            match text.trim() {
                "" => Err(format!("{field}_file {} is empty", path.display())),
                token => Ok(Some(Secret::new(token.to_string()))),
            }
        }
        (None, None) => Ok(None),
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str, env: &[(&str, &str)]) -> Result<ServerConfig, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        parse_server_config(Path::new("/etc/artifactd/artifactd.yaml"), src, &lookup)
            .map(|(_, c)| c)
    }

    #[test]
    fn defaults_resolve_against_the_file_directory() {
        let c = parse("", &[]).unwrap();
        assert_eq!(
            c.storage,
            StorageUrl::Filesystem("/etc/artifactd/data/objects".into())
        );
        assert_eq!(
            c.state,
            StateUrl::Embedded("/etc/artifactd/data/objects/state".into())
        );
        assert_eq!(c.remotes_file, PathBuf::from("/etc/artifactd/remotes.yaml"));
        assert_eq!(c.listen.len(), 1);
        assert_eq!(c.listen[0].to_string(), format!("http://{DEFAULT_LISTEN}"));
        assert_eq!(c.grace_period, DEFAULT_GRACE_PERIOD);
        assert_eq!(
            c.upgrade_socket,
            PathBuf::from("/etc/artifactd/data/artifactd-upgrade.sock")
        );
    }

    #[test]
    fn environment_overrides_file_and_resolves_against_cwd() {
        let c = parse(
            "listen: 127.0.0.1:1\nstorage: fs:///srv/a\n",
            &[
                ("ARTIFACTD_LISTEN", "127.0.0.1:2"),
                ("ARTIFACTD_STORAGE", "fs://rel"),
                ("ARTIFACTD_WRITE_TOKEN", "t"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen[0].address.to_string(), "127.0.0.1:2");
        let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
        assert_eq!(c.storage, StorageUrl::Filesystem(cwd.join("rel")));
        assert_eq!(c.write_token.as_ref().map(Secret::expose), Some("t"));
    }

    #[test]
    fn listeners_take_a_list_with_tls_files_beside_the_config() {
        let c = parse(
            "listen:\n  - \"0.0.0.0:80\"\n  - address: \"[::]:443\"\n    tls: {cert: tls/c.pem, key: /k.pem}\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert!(c.listen[0].tls.is_none() && !c.listen[0].is_loopback());
        let tls = c.listen[1].tls.as_ref().unwrap();
        assert_eq!(tls.cert, PathBuf::from("/etc/artifactd/tls/c.pem"));
        assert_eq!(tls.key, PathBuf::from("/k.pem"));
        assert_eq!(c.listen[1].to_string(), "https://[::]:443");
        let e = parse("listen: [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n", &[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("listen[1]"));
        let e = parse("listen: []\n", &[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("listen"));
        let c = parse("", &[("ARTIFACTD_LISTEN", "127.0.0.1:1, 127.0.0.1:2")]).unwrap();
        assert_eq!(c.listen.len(), 2);
    }

    #[test]
    fn durations_and_sizes_take_units() {
        let c = parse(
            "cache:\n  lock_timeout: 2m\n  stale_if_error: 7d\n  max_size: 2GiB\nupstream:\n  read_timeout: 90\nprocess:\n  grace_period: 1m30s\n",
            &[("ARTIFACTD_MAX_UPLOAD_BYTES", "10MiB")],
        )
        .unwrap();
        assert_eq!(c.lock_timeout, Duration::from_secs(120));
        assert_eq!(c.stale_if_error, Duration::from_secs(7 * 86_400));
        assert_eq!(c.max_size, Some(2 << 30));
        assert_eq!(c.read_timeout, Duration::from_secs(90));
        assert_eq!(c.grace_period, Duration::from_secs(90));
        assert_eq!(c.max_upload_bytes, 10 << 20);
        let e = parse("upstream:\n  connect_timeout: soon\n", &[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("upstream.connect_timeout"));
        let e = parse("", &[("ARTIFACTD_GRACE_PERIOD", "forever")]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("process.grace_period"));
        assert!(e.to_string().contains("ARTIFACTD_GRACE_PERIOD"), "{e}");
    }

    #[test]
    fn large_fill_settings_have_defaults_and_bounds() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c.large_fills, LargeFills::default());
        let c = parse(
            "cache:\n  range_fill_min: 1GiB\n  parallel_fill_connections: 8\n  parallel_fill_part: 4MiB\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.large_fills.range_min, 1 << 30);
        assert_eq!(c.large_fills.parallel_connections, 8);
        assert_eq!(c.large_fills.parallel_part, 4 << 20);
        let e = parse("cache:\n  parallel_fill_part: 64KiB\n", &[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("cache.parallel_fill_part"));
        assert!(e.to_string().contains("at least 1MiB"), "{e}");
        let e = parse("cache:\n  parallel_fill_connections: 0\n", &[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("cache.parallel_fill_connections"));
    }

    #[test]
    fn tokens_come_from_files_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin"), "s3cret-admin\n").unwrap();
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let file = dir.path().join("artifactd.yaml");
        let load = |src: &str| parse_server_config(&file, src, &|_| None).map(|(_, c)| c);
        let c = load("tokens:\n  admin_file: admin\n").unwrap();
        assert_eq!(
            c.admin_token.as_ref().map(Secret::expose),
            Some("s3cret-admin")
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        let e = load("tokens:\n  admin_file: empty\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("tokens.admin"));
        assert!(e.to_string().contains("is empty"), "{e}");
        let e = load("tokens:\n  admin_file: missing\n").unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        let e = load("tokens:\n  admin: x\n  admin_file: admin\n").unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_field() {
        let e = parse("limits:\n  max_upload_byte: 3\n", &[]).unwrap_err();
        assert!(e.to_string().contains("max_upload_byte"), "{e}");
        let e = parse("storage: gs://bucket\n", &[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("storage"));
        let e = parse("", &[("ARTIFACTD_THREADS", "many")]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("threads"));
        let e = parse("listen: nowhere\n", &[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("listen"));
    }
}
