//! The server configuration file (`artifactd.yaml`) and its environment
//! overrides.
//!
//! Everything that is not a remote lives here: where to listen, where
//! bodies, state and the catalog are kept, limits and tokens. Relative paths
//! in the file resolve against the file's own directory, so a config and its
//! `remotes.yaml` can move together; relative paths from the environment
//! resolve against the working directory, as a shell user expects.

use super::error::{yaml_error, ConfigError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The server config file as written. Unknown keys are errors: a typo in a
/// limit must not silently keep the default.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerConfig {
    /// `host:port` to listen on.
    pub listen: Option<String>,
    /// Worker threads; defaults to the number of CPUs.
    pub threads: Option<usize>,
    /// The URL clients reach artifactd at (`https://artifacts.example.com`),
    /// for links in rewritten index documents; without it, the request's
    /// `Host` and `X-Forwarded-Proto` decide.
    pub public_url: Option<String>,
    /// Path of `remotes.yaml`.
    pub remotes: Option<String>,
    /// Body store URL: `fs://PATH`.
    pub storage: Option<String>,
    /// Freshness state URL: `embedded` or `embedded://PATH`.
    pub state: Option<String>,
    /// Catalog URL: `sqlite://PATH`.
    pub catalog: Option<String>,
    #[serde(default)]
    pub cache: RawCacheSettings,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub upstream: RawUpstreamSettings,
    #[serde(default)]
    pub tokens: RawTokens,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCacheSettings {
    /// Seconds a cache-fill lock may be held before followers give up
    /// waiting and fetch on their own.
    pub lock_timeout: Option<u64>,
    /// Seconds an upstream 404 for a mutable path is remembered (0: never);
    /// a remote's `cache.negative_ttl` overrides it.
    pub negative_ttl: Option<u64>,
    /// Seconds an expired copy may still be served while the upstream fails
    /// (0: never); a remote's `cache.stale_if_error` overrides it.
    pub stale_if_error: Option<u64>,
    /// Largest object that is cached (bytes, or with a unit: `4GiB`);
    /// larger ones pass through. Unlimited when absent.
    pub max_object_size: Option<RawSize>,
    /// fsync bodies and records before they become visible.
    pub fsync: Option<bool>,
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
}

/// A byte size: a number of bytes or a string with a unit (`50GiB`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

impl RawSize {
    fn bytes(&self) -> Result<u64, String> {
        match self {
            RawSize::Bytes(n) => Ok(*n),
            RawSize::Text(text) => filters::size::parse(text),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest accepted upload to a local repository, in bytes.
    pub max_upload_bytes: Option<u64>,
    /// Longest accepted artifact path, in bytes.
    pub max_path_bytes: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamSettings {
    /// Seconds to establish a TCP (and TLS) connection.
    pub connect_timeout: Option<u64>,
    /// Seconds an upstream may stay silent (before the first byte or between chunks).
    pub read_timeout: Option<u64>,
    /// Consecutive upstream failures that mark a remote down (0: never).
    pub breaker_failures: Option<u32>,
    /// Seconds a remote stays marked down before one probe request tests it.
    pub breaker_backoff: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokens {
    /// Bearer token required to upload to or delete from local repositories.
    pub write: Option<String>,
    /// Bearer token required for administrative operations (cache flush).
    pub admin: Option<String>,
}

/// Where bodies are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    Filesystem(PathBuf),
}

/// Where freshness and revalidation state is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateUrl {
    Embedded(PathBuf),
}

/// Where the catalog of cached artifacts is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogUrl {
    Sqlite(PathBuf),
}

/// The resolved server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: String,
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
    pub max_size: Option<u64>,
    pub min_free: Option<u64>,
    pub memory_index_entries: u64,
    pub memory_body_max: u64,
    pub memory_bytes: u64,
    pub max_upload_bytes: u64,
    pub max_path_bytes: usize,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub breaker: filters::breaker::Breaker,
    pub write_token: Option<String>,
    pub admin_token: Option<String>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_NEGATIVE_TTL: u64 = 60;
/// One week: long enough to ride out an upstream outage over a weekend.
pub const DEFAULT_STALE_IF_ERROR: u64 = 7 * 24 * 3600;
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1 << 30;
pub const DEFAULT_MEMORY_INDEX_ENTRIES: u64 = 1_000_000;
pub const DEFAULT_MEMORY_BODY_MAX: u64 = 64 << 10;
pub const DEFAULT_MEMORY_BYTES: u64 = 256 << 20;
pub const DEFAULT_MAX_PATH_BYTES: usize = 2048;

/// Environment variables that override file settings, with the field each
/// one replaces.
pub const ENV_OVERRIDES: [(&str, &str); 9] = [
    ("ARTIFACTD_LISTEN", "listen"),
    ("ARTIFACTD_THREADS", "threads"),
    ("ARTIFACTD_REMOTES", "remotes"),
    ("ARTIFACTD_STORAGE", "storage"),
    ("ARTIFACTD_STATE", "state"),
    ("ARTIFACTD_CATALOG", "catalog"),
    ("ARTIFACTD_MAX_UPLOAD_BYTES", "limits.max_upload_bytes"),
    ("ARTIFACTD_WRITE_TOKEN", "tokens.write"),
    ("ARTIFACTD_ADMIN_TOKEN", "tokens.admin"),
];

/// Parses the server config text and applies `env` overrides.
pub fn parse_server_config(
    file: &Path,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(RawServerConfig, ServerConfig), ConfigError> {
    let mut raw: RawServerConfig = if source.trim().is_empty() {
        RawServerConfig::default()
    } else {
        serde_yaml::from_str(source).map_err(|e| yaml_error(file, source, &e))?
    };
    let file_dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let cwd = PathBuf::from(".");
    // Which base each path-like setting resolves against.
    let mut bases = [&file_dir; 4].map(Clone::clone);
    let err = |field: &str, message: String| ConfigError::new(file, message).field(field);
    for (index, (var, field)) in ENV_OVERRIDES.iter().enumerate() {
        let Some(value) = env(var) else { continue };
        let parse_number = |value: &str| {
            value
                .parse()
                .map_err(|_| err(field, format!("{var}={value:?} is not a number")))
        };
        match *field {
            "listen" => raw.listen = Some(value),
            "threads" => raw.threads = Some(parse_number(&value)? as usize),
            "remotes" => raw.remotes = Some(value),
            "storage" => raw.storage = Some(value),
            "state" => raw.state = Some(value),
            "catalog" => raw.catalog = Some(value),
            "limits.max_upload_bytes" => raw.limits.max_upload_bytes = Some(parse_number(&value)?),
            "tokens.write" => raw.tokens.write = Some(value),
            _ => raw.tokens.admin = Some(value),
        }
        if (2..6).contains(&index) {
            bases[index - 2] = cwd.clone();
        }
    }
    let [remotes_base, storage_base, state_base, catalog_base] = bases;
    let storage_text = raw
        .storage
        .clone()
        .unwrap_or_else(|| "fs://data/objects".into());
    let storage = match storage_text.strip_prefix("fs://") {
        Some(path) if !path.is_empty() => StorageUrl::Filesystem(resolve(&storage_base, path)),
        _ => {
            return Err(err(
                "storage",
                format!("{storage_text:?} is not supported; expected fs://PATH"),
            ))
        }
    };
    let StorageUrl::Filesystem(storage_root) = &storage;
    let state_text = raw.state.clone().unwrap_or_else(|| "embedded".into());
    let state = match state_text.as_str() {
        "embedded" => StateUrl::Embedded(storage_root.join("state")),
        other => match other.strip_prefix("embedded://") {
            Some(path) if !path.is_empty() => StateUrl::Embedded(resolve(&state_base, path)),
            _ => {
                return Err(err(
                    "state",
                    format!("{other:?} is not supported; expected embedded or embedded://PATH"),
                ))
            }
        },
    };
    let catalog_text = raw.catalog.clone();
    let catalog = match catalog_text.as_deref() {
        None => CatalogUrl::Sqlite(storage_root.join("catalog.db")),
        Some(text) => match text.strip_prefix("sqlite://") {
            Some(path) if !path.is_empty() => CatalogUrl::Sqlite(resolve(&catalog_base, path)),
            _ => {
                return Err(err(
                    "catalog",
                    format!("{text:?} is not supported; expected sqlite://PATH"),
                ))
            }
        },
    };
    let listen = raw.listen.clone().unwrap_or_else(|| DEFAULT_LISTEN.into());
    if listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(err(
            "listen",
            format!("{listen:?} is not an address like 127.0.0.1:8080"),
        ));
    }
    let public_url = match raw.public_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) => {
            let valid = url
                .parse::<http::Uri>()
                .ok()
                .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
                .filter(|u| u.host().is_some_and(|h| !h.is_empty()))
                .filter(|u| u.query().is_none());
            if valid.is_none() {
                return Err(err(
                    "public_url",
                    format!("{url:?} is not an http(s) URL like https://artifacts.example.com"),
                ));
            }
            Some(url.trim_end_matches('/').to_string())
        }
    };
    let threads = raw.threads.unwrap_or_else(default_threads);
    if threads == 0 {
        return Err(err("threads", "must be at least 1".into()));
    }
    let positive = |field: &str, value: Option<u64>, default: u64| match value {
        Some(0) => Err(err(field, "must be positive".into())),
        other => Ok(Duration::from_secs(other.unwrap_or(default))),
    };
    let size = |field: &str, value: &Option<RawSize>| -> Result<Option<u64>, ConfigError> {
        value
            .as_ref()
            .map(|v| v.bytes().map_err(|message| err(field, message)))
            .transpose()
    };
    let config = ServerConfig {
        max_object_size: size("cache.max_object_size", &raw.cache.max_object_size)?,
        fsync: raw.cache.fsync.unwrap_or(false),
        max_size: size("cache.max_size", &raw.cache.max_size)?,
        min_free: size("cache.min_free", &raw.cache.min_free)?,
        memory_index_entries: match raw.cache.memory_index_entries {
            Some(0) => return Err(err("cache.memory_index_entries", "must be positive".into())),
            other => other.unwrap_or(DEFAULT_MEMORY_INDEX_ENTRIES),
        },
        memory_body_max: size("cache.memory_body_max", &raw.cache.memory_body_max)?
            .unwrap_or(DEFAULT_MEMORY_BODY_MAX),
        memory_bytes: size("cache.memory_bytes", &raw.cache.memory_bytes)?
            .unwrap_or(DEFAULT_MEMORY_BYTES),
        listen,
        threads,
        public_url,
        remotes_file: resolve(
            &remotes_base,
            raw.remotes.as_deref().unwrap_or("remotes.yaml"),
        ),
        storage,
        state,
        catalog,
        lock_timeout: positive("cache.lock_timeout", raw.cache.lock_timeout, 300)?,
        negative_ttl: Duration::from_secs(raw.cache.negative_ttl.unwrap_or(DEFAULT_NEGATIVE_TTL)),
        stale_if_error: Duration::from_secs(
            raw.cache.stale_if_error.unwrap_or(DEFAULT_STALE_IF_ERROR),
        ),
        max_upload_bytes: raw
            .limits
            .max_upload_bytes
            .unwrap_or(DEFAULT_MAX_UPLOAD_BYTES),
        max_path_bytes: raw.limits.max_path_bytes.unwrap_or(DEFAULT_MAX_PATH_BYTES),
        connect_timeout: positive("upstream.connect_timeout", raw.upstream.connect_timeout, 10)?,
        read_timeout: positive("upstream.read_timeout", raw.upstream.read_timeout, 60)?,
        breaker: filters::breaker::Breaker {
            threshold: raw.upstream.breaker_failures.unwrap_or(5),
            backoff_ms: positive("upstream.breaker_backoff", raw.upstream.breaker_backoff, 30)?
                .as_millis() as u64,
        },
        write_token: raw.tokens.write.clone().filter(|t| !t.is_empty()),
        admin_token: raw.tokens.admin.clone().filter(|t| !t.is_empty()),
    };
    Ok((raw, config))
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
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
        assert_eq!(c.listen, DEFAULT_LISTEN);
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
        assert_eq!(c.listen, "127.0.0.1:2");
        assert_eq!(c.storage, StorageUrl::Filesystem("./rel".into()));
        assert_eq!(c.write_token.as_deref(), Some("t"));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_field() {
        let e = parse("limits:\n  max_upload_byte: 3\n", &[]).unwrap_err();
        assert!(e.to_string().contains("max_upload_byte"), "{e}");
        let e = parse("storage: s3://bucket\n", &[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("storage"));
        let e = parse("", &[("ARTIFACTD_THREADS", "many")]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("threads"));
        let e = parse("listen: nowhere\n", &[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("listen"));
    }
}
