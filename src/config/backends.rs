//! The three backends of the server file, each chosen by URL: where bodies
//! live (`fs://PATH` or `s3://BUCKET/PREFIX`), where freshness state lives
//! (`embedded`, `embedded://PATH` or `redis://…`), where the catalog lives
//! (`sqlite://PATH` or `postgres://…`).
//!
//! S3 settings come from the file's `s3:` section, else from the standard
//! AWS variables, so a node configured the way every other S3 client on the
//! host is needs no extra lines. Everything is checked here, at load, so a
//! typo names its field instead of failing the first request.

use super::paths::resolve;
use super::redis_url::{is_cluster, is_sentinel, parse_cluster, parse_sentinel, RedisServers};
use super::units::{positive_duration, RawDuration, RawSize};
use super::Secret;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// `s3:` in the server file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3 {
    /// `http(s)://host:port` of an S3-compatible server (MinIO, SeaweedFS,
    /// Ceph); requests are path-style. Default: `AWS_ENDPOINT_URL`, else AWS.
    pub endpoint: Option<String>,
    /// Default: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allow a plain-HTTP endpoint. Default: `AWS_ALLOW_HTTP`, else false.
    pub allow_http: Option<bool>,
    /// Multipart upload part size (at least 5 MiB, S3's minimum).
    pub part_size: Option<RawSize>,
    /// The longest one request to the store may take before the request
    /// it serves gets a 503.
    pub timeout: Option<RawDuration>,
    /// Local directory for the spool files readers of a fill in progress
    /// read from (anonymous files; default: the system temp directory).
    pub spool_dir: Option<String>,
    /// When the bucket cannot be reached: `pass` (default) fetches misses
    /// from the upstream without storing them; `fail` answers 503. Cached
    /// objects get a 503 either way (their bytes are in the bucket).
    pub on_failure: Option<String>,
}

/// What a miss does while the bucket cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Pass,
    Fail,
}

/// `redis:` in the server file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// Every key starts with this and `:` (default `artifactd`), so nodes
    /// of one cluster share keys and two clusters on one Redis do not.
    pub key_prefix: Option<String>,
    /// The longest one command may take before the node carries on
    /// without Redis (fail-open).
    pub timeout: Option<RawDuration>,
    /// For a `redis+sentinel://` state: the Sentinels' own password, when
    /// they ask for one (the URL's is the Redis servers').
    pub sentinel_password: Option<String>,
}

/// `cluster:` in the server file: how nodes sharing a bucket and Redis
/// reach each other.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// `host:port` of a plain-HTTP listener of this node that the other
    /// nodes can reach. Default: the first plain listener, if its address
    /// is a specific one.
    pub advertise: Option<String>,
    /// Shared by every node: authenticates requests for fills in progress.
    pub secret: Option<String>,
    pub secret_file: Option<String>,
    /// How long a node's claim to fetch an object lasts without renewal:
    /// how soon another node takes over the fetch of a node that died.
    pub lock_ttl: Option<RawDuration>,
}

/// How this node takes part in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub advertise: std::net::SocketAddr,
    pub secret: Secret,
    pub lock_ttl: Duration,
}

pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(10);

/// Resolves `cluster:`; `None` when no secret is set (each node then
/// fetches on its own, still sharing what is committed).
pub fn cluster(
    raw: &RawCluster,
    secret: Option<Secret>,
    storage: &StorageUrl,
    state: &StateUrl,
    plain_listeners: &[std::net::SocketAddr],
) -> Result<Option<ClusterSettings>, FieldError> {
    let Some(secret) = secret else {
        if raw.advertise.is_some() || raw.lock_ttl.is_some() {
            return Err((
                "cluster.secret",
                "set cluster.secret (or cluster.secret_file), shared by every node".into(),
            ));
        }
        return Ok(None);
    };
    if secret.expose().len() < 16 {
        return Err(("cluster.secret", "must be at least 16 characters".into()));
    }
    if !matches!(storage, StorageUrl::S3(_)) || !matches!(state, StateUrl::Redis(_)) {
        return Err((
            "cluster",
            "nodes share a bucket and Redis: set storage to s3://… and state to redis://…".into(),
        ));
    }
    let advertise = match &raw.advertise {
        Some(text) => text.trim().parse().map_err(|_| {
            (
                "cluster.advertise",
                format!("{text:?} is not an address like 10.0.0.5:8080"),
            )
        })?,
        None => *plain_listeners
            .iter()
            .find(|a| !a.ip().is_unspecified())
            .ok_or((
                "cluster.advertise",
                "no plain listener with a specific address: set the address other nodes reach this node at".to_string(),
            ))?,
    };
    if advertise.ip().is_unspecified() || advertise.port() == 0 {
        return Err((
            "cluster.advertise",
            format!("{advertise} is not an address other nodes can reach"),
        ));
    }
    let lock_ttl = match &raw.lock_ttl {
        None => DEFAULT_LOCK_TTL,
        Some(t) => t.duration().map_err(|m| ("cluster.lock_ttl", m))?,
    };
    if lock_ttl < Duration::from_secs(1) {
        return Err(("cluster.lock_ttl", "must be at least 1s".into()));
    }
    Ok(Some(ClusterSettings {
        advertise,
        secret,
        lock_ttl,
    }))
}

/// Where bodies are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    Filesystem(PathBuf),
    S3(S3Settings),
}

/// A bucket and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix inside the bucket, without slashes at either end.
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub allow_http: bool,
    pub part_size: usize,
    pub timeout: Duration,
    pub spool_dir: PathBuf,
    pub on_failure: OnFailure,
}

/// Where freshness and revalidation state is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateUrl {
    Embedded(PathBuf),
    Redis(RedisSettings),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://`, `rediss://`, a Sentinel or a Cluster URL (it may carry
    /// a password).
    pub url: Secret,
    pub servers: RedisServers,
    pub sentinel_password: Option<Secret>,
    pub key_prefix: String,
    pub timeout: Duration,
}

/// Where the catalog of cached artifacts is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogUrl {
    Sqlite(PathBuf),
    /// A `postgres://` URL (it may carry a password).
    Postgres(Secret),
}

pub const MIN_PART_SIZE: u64 = 5 << 20;
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;
pub const DEFAULT_S3_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_KEY_PREFIX: &str = "artifactd";

/// A field and what is wrong with it.
pub type FieldError = (&'static str, String);

/// Resolves `storage:` (default `fs://data/objects` beside the file).
pub fn storage(
    text: Option<&str>,
    s3: &RawS3,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<StorageUrl, FieldError> {
    let text = text.unwrap_or("fs://data/objects");
    if let Some(path) = text.strip_prefix("fs://").filter(|p| !p.is_empty()) {
        return Ok(StorageUrl::Filesystem(resolve(base, path)));
    }
    let Some(location) = text.strip_prefix("s3://") else {
        return Err((
            "storage",
            format!("{text:?} is not supported; expected fs://PATH or s3://BUCKET/PREFIX"),
        ));
    };
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !bucket_ok {
        return Err((
            "storage",
            format!("{bucket:?} is not a bucket name (3-63 of a-z, 0-9, '-', '.')"),
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|s| s == "." || s == "..") || prefix.contains("//") {
        return Err(("storage", format!("{prefix:?} is not a key prefix")));
    }
    Ok(StorageUrl::S3(s3_settings(bucket, prefix, s3, base, env)?))
}

fn s3_settings(
    bucket: &str,
    prefix: &str,
    raw: &RawS3,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<S3Settings, FieldError> {
    let from_env = |names: &[&str]| names.iter().find_map(|n| env(n).filter(|v| !v.is_empty()));
    let endpoint = raw
        .endpoint
        .clone()
        .or_else(|| from_env(&["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]));
    let allow_http = match raw.allow_http {
        Some(allow) => allow,
        None => match from_env(&["AWS_ALLOW_HTTP"]) {
            Some(v) => super::units::boolean(&v).map_err(|m| ("s3.allow_http", m))?,
            None => false,
        },
    };
    if let Some(endpoint) = &endpoint {
        check_endpoint(endpoint, allow_http)?;
    }
    let access_key_id = raw
        .access_key_id
        .clone()
        .or_else(|| from_env(&["AWS_ACCESS_KEY_ID"]));
    let secret_access_key = raw
        .secret_access_key
        .clone()
        .or_else(|| from_env(&["AWS_SECRET_ACCESS_KEY"]));
    if access_key_id.is_some() != secret_access_key.is_some() {
        return Err((
            "s3.secret_access_key",
            "set both s3.access_key_id and s3.secret_access_key (or neither)".into(),
        ));
    }
    let (part_size, timeout, on_failure) = s3_transfers(raw)?;
    Ok(S3Settings {
        on_failure,
        bucket: bucket.into(),
        prefix: prefix.into(),
        endpoint: endpoint.map(|e| e.trim_end_matches('/').to_string()),
        region: raw
            .region
            .clone()
            .or_else(|| from_env(&["AWS_REGION", "AWS_DEFAULT_REGION"]))
            .unwrap_or_else(|| "us-east-1".into()),
        access_key_id,
        secret_access_key: secret_access_key.map(Secret::new),
        session_token: from_env(&["AWS_SESSION_TOKEN"]).map(Secret::new),
        allow_http,
        part_size: part_size as usize,
        timeout,
        spool_dir: raw
            .spool_dir
            .as_deref()
            .map(|dir| resolve(base, dir))
            .unwrap_or_else(std::env::temp_dir),
    })
}

/// An S3 endpoint is an https URL, or http where allowed.
fn check_endpoint(endpoint: &str, allow_http: bool) -> Result<(), FieldError> {
    let uri = endpoint
        .parse::<http::Uri>()
        .ok()
        .filter(|u| u.host().is_some_and(|h| !h.is_empty()));
    match uri.as_ref().and_then(|u| u.scheme_str()) {
        Some("https") => Ok(()),
        Some("http") if allow_http => Ok(()),
        Some("http") => Err((
            "s3.endpoint",
            format!("{endpoint:?} is plain HTTP; set s3.allow_http: true (or AWS_ALLOW_HTTP=true) to allow it"),
        )),
        _ => Err((
            "s3.endpoint",
            format!("{endpoint:?} is not a URL like https://s3.example.com:9000"),
        )),
    }
}

/// How bodies move to and from the bucket: the multipart part size, the
/// time one request may take, and what a miss does while it is away.
fn s3_transfers(raw: &RawS3) -> Result<(u64, Duration, OnFailure), FieldError> {
    let part_size = match &raw.part_size {
        None => DEFAULT_PART_SIZE,
        Some(size) => size.bytes().map_err(|m| ("s3.part_size", m))?,
    };
    if part_size < MIN_PART_SIZE {
        return Err((
            "s3.part_size",
            format!("{part_size} bytes is below S3's minimum part size of 5 MiB"),
        ));
    }
    let timeout =
        positive_duration(&raw.timeout, DEFAULT_S3_TIMEOUT).map_err(|m| ("s3.timeout", m))?;
    let on_failure = match raw.on_failure.as_deref() {
        None | Some("pass") => OnFailure::Pass,
        Some("fail") => OnFailure::Fail,
        Some(other) => return Err(("s3.on_failure", format!("{other:?} is not pass or fail"))),
    };
    Ok((part_size, timeout, on_failure))
}

/// Resolves `state:`. Its default, `embedded`, keeps state beside a
/// filesystem store; with a bucket there is no such place, so the file
/// must say where (Redis, or a local directory).
pub fn state(
    text: Option<&str>,
    storage: &StorageUrl,
    raw: &RawRedis,
    base: &Path,
) -> Result<StateUrl, FieldError> {
    let text = text.unwrap_or("embedded");
    if text == "embedded" {
        return match storage {
            StorageUrl::Filesystem(root) => Ok(StateUrl::Embedded(root.join("state"))),
            StorageUrl::S3(_) => Err((
                "state",
                "storage is a bucket: set state to redis://HOST:PORT (shared by every node) or embedded://PATH".into(),
            )),
        };
    }
    if let Some(path) = text.strip_prefix("embedded://").filter(|p| !p.is_empty()) {
        return Ok(StateUrl::Embedded(resolve(base, path)));
    }
    let wrong = |e: String| ("state", format!("{:?} {e}", redact_url(text)));
    let servers = if is_sentinel(text) {
        RedisServers::Sentinel(parse_sentinel(text).map_err(wrong)?)
    } else if is_cluster(text) {
        RedisServers::Cluster(parse_cluster(text).map_err(wrong)?)
    } else if text.starts_with("redis://") || text.starts_with("rediss://") {
        redis::IntoConnectionInfo::into_connection_info(text)
            .map_err(|e| ("state", format!("{:?}: {e}", redact_url(text))))?;
        RedisServers::One
    } else {
        return Err((
            "state",
            format!(
                "{:?} is not supported; expected embedded, embedded://PATH, redis://HOST:PORT, rediss://HOST:PORT, redis+sentinel://HOST:PORT[,HOST:PORT…]/SERVICE or redis+cluster://HOST:PORT[,HOST:PORT…]",
                redact_url(text)
            ),
        ));
    };
    if raw.sentinel_password.is_some() && !matches!(servers, RedisServers::Sentinel(_)) {
        return Err((
            "redis.sentinel_password",
            "is for redis+sentinel:// state only".into(),
        ));
    }
    let key_prefix = raw
        .key_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.into());
    if key_prefix.is_empty() || key_prefix.contains(char::is_whitespace) {
        return Err((
            "redis.key_prefix",
            format!("{key_prefix:?} must be non-empty, without spaces"),
        ));
    }
    let timeout =
        positive_duration(&raw.timeout, DEFAULT_REDIS_TIMEOUT).map_err(|m| ("redis.timeout", m))?;
    Ok(StateUrl::Redis(RedisSettings {
        url: Secret::new(text.into()),
        servers,
        sentinel_password: raw.sentinel_password.clone().map(Secret::new),
        key_prefix,
        timeout,
    }))
}

/// Resolves `catalog:`; like `state:`, its default needs a filesystem store.
pub fn catalog(
    text: Option<&str>,
    storage: &StorageUrl,
    base: &Path,
) -> Result<CatalogUrl, FieldError> {
    let Some(text) = text else {
        return match storage {
            StorageUrl::Filesystem(root) => Ok(CatalogUrl::Sqlite(root.join("catalog.db"))),
            StorageUrl::S3(_) => Err((
                "catalog",
                "storage is a bucket: set catalog to postgres://… (shared by every node) or sqlite://PATH".into(),
            )),
        };
    };
    if let Some(path) = text.strip_prefix("sqlite://").filter(|p| !p.is_empty()) {
        return Ok(CatalogUrl::Sqlite(resolve(base, path)));
    }
    if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
        return Err((
            "catalog",
            format!(
                "{:?} is not supported; expected sqlite://PATH or postgres://USER@HOST/DATABASE",
                redact_url(text)
            ),
        ));
    }
    sqlx::postgres::PgConnectOptions::from_str(text)
        .map_err(|e| ("catalog", format!("{:?}: {e}", redact_url(text))))?;
    Ok(CatalogUrl::Postgres(Secret::new(text.into())))
}

// The three backends as URLs again, resolved (absolute paths) and without
// passwords: what `GET /config`, `check-config` and the start log show.

impl std::fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageUrl::Filesystem(root) => write!(f, "fs://{}", root.display()),
            StorageUrl::S3(s3) if s3.prefix.is_empty() => write!(f, "s3://{}", s3.bucket),
            StorageUrl::S3(s3) => write!(f, "s3://{}/{}", s3.bucket, s3.prefix),
        }
    }
}

impl std::fmt::Display for StateUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateUrl::Embedded(dir) => write!(f, "embedded://{}", dir.display()),
            StateUrl::Redis(redis) => f.write_str(&redact_url(redis.url.expose())),
        }
    }
}

impl std::fmt::Display for CatalogUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CatalogUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            CatalogUrl::Postgres(url) => f.write_str(&redact_url(url.expose())),
        }
    }
}

/// `text` with the password of its `user:password@` part replaced, for
/// messages and `GET /config`.
pub fn redact_url(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return text.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn s3_urls_take_the_section_then_the_aws_variables() {
        let env = |name: &str| match name {
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:8333".to_string()),
            "AWS_ALLOW_HTTP" => Some("true".into()),
            "AWS_ACCESS_KEY_ID" => Some("id".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("key".into()),
            "AWS_REGION" => Some("eu-west-1".into()),
            _ => None,
        };
        let StorageUrl::S3(s3) = storage(
            Some("s3://cache/a/b/"),
            &RawS3::default(),
            Path::new("/"),
            &env,
        )
        .unwrap() else {
            panic!("an s3 store")
        };
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("cache", "a/b"));
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(s3.region, "eu-west-1");
        assert!(s3.allow_http);
        assert_eq!(s3.secret_access_key.unwrap().expose(), "key");
        let section = RawS3 {
            region: Some("us-west-2".into()),
            part_size: Some(RawSize::Text("16MiB".into())),
            ..RawS3::default()
        };
        let StorageUrl::S3(s3) =
            storage(Some("s3://cache"), &section, Path::new("/"), &env).unwrap()
        else {
            panic!("an s3 store")
        };
        assert_eq!((s3.region.as_str(), s3.part_size), ("us-west-2", 16 << 20));
        assert_eq!(s3.prefix, "");
    }

    #[test]
    fn bad_s3_settings_name_their_field() {
        let field = |text: &str, raw: RawS3| {
            storage(Some(text), &raw, Path::new("/"), &no_env)
                .unwrap_err()
                .0
        };
        assert_eq!(field("s3://A_B", RawS3::default()), "storage");
        assert_eq!(field("s3://ok-bucket/../x", RawS3::default()), "storage");
        assert_eq!(field("gs://bucket", RawS3::default()), "storage");
        let plain = RawS3 {
            endpoint: Some("http://127.0.0.1:9000".into()),
            ..RawS3::default()
        };
        assert_eq!(field("s3://bucket", plain), "s3.endpoint");
        let small = RawS3 {
            part_size: Some(RawSize::Text("1MiB".into())),
            ..RawS3::default()
        };
        assert_eq!(field("s3://bucket", small), "s3.part_size");
        let unknown = RawS3 {
            on_failure: Some("retry".into()),
            ..RawS3::default()
        };
        assert_eq!(field("s3://bucket", unknown), "s3.on_failure");
        let half = RawS3 {
            access_key_id: Some("id".into()),
            ..RawS3::default()
        };
        assert_eq!(field("s3://bucket", half), "s3.secret_access_key");
    }

    fn a_bucket() -> StorageUrl {
        storage(
            Some("s3://bucket"),
            &RawS3::default(),
            Path::new("/"),
            &no_env,
        )
        .unwrap()
    }

    #[test]
    fn a_bucket_needs_state_and_catalog_named() {
        let bucket = a_bucket();
        let raw = RawRedis::default();
        assert_eq!(
            state(None, &bucket, &raw, Path::new("/")).unwrap_err().0,
            "state"
        );
        assert_eq!(
            catalog(None, &bucket, Path::new("/")).unwrap_err().0,
            "catalog"
        );
        let StateUrl::Redis(redis) = state(
            Some("redis://:pw@127.0.0.1:6379/2"),
            &bucket,
            &raw,
            Path::new("/"),
        )
        .unwrap() else {
            panic!("redis state")
        };
        assert_eq!(redis.key_prefix, "artifactd");
        assert!(matches!(
            catalog(
                Some("postgres://u:pw@127.0.0.1:5432/cache"),
                &bucket,
                Path::new("/")
            ),
            Ok(CatalogUrl::Postgres(_))
        ));
        let e = state(Some("memcached://x"), &bucket, &raw, Path::new("/")).unwrap_err();
        assert_eq!(e.0, "state");
        let e = catalog(Some("mysql://u:pw@h/db"), &bucket, Path::new("/")).unwrap_err();
        assert!(!e.1.contains("pw"), "{}", e.1);
    }

    #[test]
    fn sentinel_and_cluster_state_urls_are_read_and_checked() {
        let bucket = a_bucket();
        let mut raw = RawRedis {
            sentinel_password: Some("sp".into()),
            ..RawRedis::default()
        };
        let read = |text: &str, raw: &RawRedis| state(Some(text), &bucket, raw, Path::new("/"));
        let Ok(StateUrl::Redis(redis)) = read("redis+sentinel://:pw@h1,h2:26380/cache", &raw)
        else {
            panic!("sentinel state")
        };
        let RedisServers::Sentinel(sentinel) = &redis.servers else {
            panic!("{:?}", redis.servers)
        };
        assert_eq!(sentinel.sentinels.len(), 2);
        assert_eq!(
            redis.sentinel_password.as_ref().map(Secret::expose),
            Some("sp")
        );
        let e = read("redis+cluster://n1:7000", &raw).unwrap_err();
        assert_eq!(e.0, "redis.sentinel_password");
        raw.sentinel_password = None;
        let Ok(StateUrl::Redis(redis)) = read("redis+cluster://n1:7000,n2:7001", &raw) else {
            panic!("cluster state")
        };
        assert!(matches!(&redis.servers, RedisServers::Cluster(c) if c.nodes.len() == 2));
        let e = read("redis+sentinel://:secret@h1", &raw).unwrap_err();
        assert_eq!(e.0, "state");
        assert!(
            e.1.contains("names no master") && !e.1.contains("secret"),
            "{}",
            e.1
        );
    }

    #[test]
    fn urls_lose_their_passwords_in_messages() {
        assert_eq!(
            redact_url("postgres://u:secret@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact_url("redis://:secret@h:6379"), "redis://:***@h:6379");
        assert_eq!(redact_url("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(redact_url("sqlite://a@b"), "sqlite://a@b");
    }
}
