//! `remotes.yaml`: the reference system's remote definitions, loaded
//! unchanged (seeds 003/004), then compiled into [`Remote`]s.
//!
//! Parsing is two-stage, as in ripgrep's low/high args: [`RawRemote`] is
//! what the file says, [`Remote`] is what artifactd runs with (compiled
//! pattern sets, parsed URL, resolved TTLs). Every problem is collected with
//! the remote and field it belongs to.

use super::error::{parse_yaml, ConfigError, ConfigErrors};
use super::units::{RawDuration, RawSize};
use crate::upstream_tls::UpstreamTls;
use filters::{Ecosystem, RemotePolicy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// One remote as written in `remotes.yaml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawRemote {
    pub base_url: Option<String>,
    /// Where a PyPI remote's index documents (`simple/`, `pypi/…/json`)
    /// come from when its files are on another host (seed 004). Defaults
    /// to `base_url`.
    pub index_url: Option<String>,
    /// A GitHub-style REST API base (`…/repos/{project}/releases` below
    /// it) that `POST /cache-artifact` lists release assets from
    /// (artifactd). Defaults to `{base_url's origin}/api/v3`.
    pub releases_api: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub package: Option<String>,
    pub description: Option<String>,
    pub immutable_patterns: Option<Vec<String>>,
    pub mutable_patterns: Option<Vec<String>>,
    /// The older name of `immutable_patterns` (seed 001).
    pub include_patterns: Option<Vec<String>>,
    /// The older name of `mutable_patterns` (before seed 000's rename).
    pub index_patterns: Option<Vec<String>>,
    #[serde(default)]
    pub check_mutable_updates: bool,
    #[serde(default)]
    pub quarantine_new: bool,
    pub quarantine_days: Option<u32>,
    /// Remove quarantined versions from rewritten index documents, so
    /// resolvers pick the newest allowed one (default: on with quarantine).
    pub quarantine_hide: Option<bool>,
    /// Packages (`*` patterns) `quarantine_new` spares (artifactd).
    pub quarantine_exempt: Option<Vec<String>>,
    /// `keep` (default): a cached release the upstream withdrew stays
    /// served; `refuse`: refused once the package's index no longer lists
    /// it (artifactd).
    pub on_upstream_removed: Option<String>,
    /// Fetch each image's signatures, attestations and referrers when the
    /// image's manifest is fetched (artifactd).
    #[serde(default)]
    pub follow_signatures: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A file holding `password` (artifactd): kept out of remotes.yaml, as
    /// a Kubernetes Secret or systemd credential mounts it. Trimmed.
    pub password_file: Option<String>,
    /// PEM file of the CAs that verify this remote's TLS certificate, in
    /// place of the system roots (artifactd).
    pub ca_file: Option<String>,
    /// Skip certificate verification of this remote: only for lab
    /// registries with self-signed certificates (artifactd).
    #[serde(default)]
    pub tls_insecure: bool,
    pub cache: Option<RawRemoteCache>,
    /// Upstream timeouts of this remote (artifactd; server defaults otherwise).
    pub timeouts: Option<RawTimeouts>,
    /// Upstream connections at once from this node (artifactd): a parallel
    /// fill never trips the upstream's rate limit.
    pub max_upstream_connections: Option<u32>,
    /// Bytes per second from the upstream, all requests together (artifactd):
    /// for sites that share a thin link.
    pub max_upstream_bytes_per_second: Option<RawSize>,
    /// Registry hosts this docker remote stands in for when a container
    /// runtime uses artifactd as a mirror (artifactd): `["docker.io"]`.
    pub mirror_of: Option<Vec<String>>,
    /// The repositories a `type: virtual` remote serves, in order.
    pub members: Option<Vec<String>>,
    /// The architectures whose package lists a repository snapshot keeps
    /// consistent (artifactd): `["amd64"]`; all the index lists if unset.
    pub architectures: Option<Vec<String>>,
    /// Keys artifactd does not know; warned about, not fatal, because the
    /// reference system ignored them too.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_yaml_ng::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawRemoteCache {
    pub immutable_ttl: Option<RawDuration>,
    pub mutable_ttl: Option<RawDuration>,
    /// The older names of `immutable_ttl` and `mutable_ttl` (seed 000).
    pub file_ttl: Option<RawDuration>,
    pub index_ttl: Option<RawDuration>,
    /// Seconds an upstream 404 for a mutable path is remembered (artifactd).
    pub negative_ttl: Option<RawDuration>,
    /// Seconds an expired copy may be served while the upstream fails (artifactd).
    pub stale_if_error: Option<RawDuration>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_yaml_ng::Value>,
}

/// Per-remote upstream timeouts (seconds, or with a unit: `30s`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// To establish the TCP (and TLS) connection.
    pub connect: Option<RawDuration>,
    /// The longest silence while waiting for the response or between body
    /// chunks; a stalled upstream cannot hold a client longer than this.
    pub read: Option<RawDuration>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawRemotesFile {
    #[serde(default)]
    pub remotes: BTreeMap<String, RawRemote>,
}

/// How a repository is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteKind {
    /// Proxies and caches an upstream.
    Remote,
    /// Holds uploaded files; no upstream.
    Local,
    /// Serves its `members` in order: a path from the first that has it,
    /// index documents merged.
    Virtual,
}

impl RemoteKind {
    /// The `type:` value of `remotes.yaml` that names it.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteKind::Remote => "remote",
            RemoteKind::Local => "local",
            RemoteKind::Virtual => "virtual",
        }
    }
}

/// What this node may ask of a remote's upstream at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamBounds {
    /// `max_upstream_connections`.
    pub connections: Option<u32>,
    /// `max_upstream_bytes_per_second`.
    pub bytes_per_second: Option<u64>,
}

impl UpstreamBounds {
    pub fn any(&self) -> bool {
        self.connections.is_some() || self.bytes_per_second.is_some()
    }
}

/// The upstream of a remote, parsed once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix of `base_url`, without a trailing slash (may be empty).
    pub base_path: String,
    /// `Authorization` header value from `username`/`password`.
    pub basic_auth: Option<String>,
}

/// A remote ready to serve.
#[derive(Debug, Clone)]
pub struct Remote {
    pub name: String,
    pub kind: RemoteKind,
    pub ecosystem: Ecosystem,
    pub policy: RemotePolicy,
    pub upstream: Option<Upstream>,
    /// A PyPI remote's index host, when it is not `upstream` (`index_url`).
    pub index_upstream: Option<Upstream>,
    pub check_mutable_updates: bool,
    pub quarantine_days: Option<u32>,
    /// Whether index documents leave quarantined versions out.
    pub quarantine_hide: bool,
    /// Package patterns the quarantine spares.
    pub quarantine_exempt: Vec<String>,
    /// `on_upstream_removed: refuse`.
    pub refuse_withdrawn: bool,
    /// `follow_signatures: true` (docker remotes).
    pub follow_signatures: bool,
    /// `None` caches immutable artifacts until flushed (`immutable_ttl: 0`).
    pub immutable_ttl: Option<Duration>,
    pub mutable_ttl: Duration,
    /// `None`: the server's `cache.negative_ttl`.
    pub negative_ttl: Option<Duration>,
    /// `None`: the server's `cache.stale_if_error`.
    pub stale_if_error: Option<Duration>,
    /// `None`: the server's `upstream.connect_timeout`.
    pub connect_timeout: Option<Duration>,
    /// `None`: the server's `upstream.read_timeout`.
    pub read_timeout: Option<Duration>,
    pub upstream_bounds: UpstreamBounds,
    /// Registry hosts this docker remote mirrors, lower-cased.
    pub mirror_of: Vec<String>,
    /// A virtual repository's members, in order.
    pub members: Vec<String>,
    /// The architectures a snapshot's package lists are kept for; empty
    /// for all.
    pub architectures: Vec<String>,
    /// `username`, for keying tokens fetched with it.
    pub username: Option<String>,
    /// `password`, with `username` the basic auth of token requests.
    pub password: Option<String>,
    /// How the upstream's certificate is verified (`ca_file`, `tls_insecure`).
    pub upstream_tls: Arc<UpstreamTls>,
    /// Where `POST /cache-artifact` lists release assets, without a
    /// trailing `/`.
    pub releases_api: Option<String>,
}

impl Remote {
    /// Whether this remote serves Docker Hub, whose one-segment image names
    /// mean `library/{name}`.
    pub fn mirrors_docker_hub(&self) -> bool {
        self.mirror_of
            .iter()
            .any(|host| host == filters::ecosystem::oci::DOCKER_HUB)
    }
}

/// The default `cache.mutable_ttl` of the reference system: one hour.
pub const DEFAULT_MUTABLE_TTL: u64 = 3600;

/// Parses and compiles a `remotes.yaml` text. `file` is only used in errors.
pub fn parse_remotes(
    file: &Path,
    source: &str,
) -> Result<(RawRemotesFile, Vec<Remote>, Vec<String>), ConfigErrors> {
    let raw: RawRemotesFile = parse_yaml(file, source)?;
    let mut remotes = Vec::new();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for (name, remote) in &raw.remotes {
        match compile_remote(file, name, remote, &mut warnings) {
            Ok(remote) => remotes.push(remote),
            Err(mut e) => errors.append(&mut e),
        }
    }
    errors.append(&mut mirror_conflicts(file, &remotes));
    errors.append(&mut member_errors(file, &remotes));
    if errors.is_empty() {
        Ok((raw, remotes, warnings))
    } else {
        Err(ConfigErrors(errors))
    }
}

fn compile_remote(
    file: &Path,
    name: &str,
    raw: &RawRemote,
    warnings: &mut Vec<String>,
) -> Result<Remote, Vec<ConfigError>> {
    let mut c = Compiler {
        file,
        name,
        errors: Vec::new(),
        warnings,
    };
    c.check_name();
    c.warn_unknown(raw);
    let kind = c.kind(raw);
    let ecosystem = c.ecosystem(raw);
    let password = c.password(raw);
    let upstream = c.upstream(raw, kind, password.as_deref());
    let members = c.members(raw, kind);
    let index_upstream = c.index_upstream(raw, ecosystem, upstream.as_ref());
    let releases_api = c.releases_api(raw, upstream.as_ref());
    let policy = c.policy(raw, ecosystem);
    if raw.quarantine_new && raw.quarantine_days.unwrap_or(0) == 0 {
        c.error(
            "quarantine_days",
            "must be a positive number of days when quarantine_new is true".into(),
        );
    }
    if let Some(exempt) = &raw.quarantine_exempt {
        if let Some(i) = exempt.iter().position(|p| p.trim().is_empty()) {
            c.error(
                &format!("quarantine_exempt[{i}]"),
                "a package name or pattern must not be empty".into(),
            );
        }
    }
    let refuse_withdrawn = match raw.on_upstream_removed.as_deref() {
        None | Some("keep") => false,
        Some("refuse") => true,
        Some(other) => {
            c.error(
                "on_upstream_removed",
                format!("unknown value {other:?}, expected keep or refuse"),
            );
            false
        }
    };
    if raw.follow_signatures && !ecosystem.speaks_registry_api() {
        c.error(
            "follow_signatures",
            format!("only docker remotes have signatures to follow, not {ecosystem} ones"),
        );
    }
    let mirror_of = c.mirror_of(raw, ecosystem);
    let architectures = c.names(
        "architectures",
        raw.architectures.clone().unwrap_or_default(),
        |ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_'),
        "an architecture name (such as \"amd64\")",
    );
    let timing = c.timing(raw);
    let upstream_bounds = c.upstream_bounds(raw, upstream.is_some());
    let upstream_tls = c.upstream_tls(raw, upstream.is_some());
    match (c.errors.is_empty(), policy) {
        (true, Some(policy)) => Ok(Remote {
            name: name.to_string(),
            kind,
            ecosystem,
            policy,
            upstream,
            index_upstream,
            check_mutable_updates: raw.check_mutable_updates,
            quarantine_days: raw.quarantine_new.then(|| raw.quarantine_days.unwrap_or(0)),
            quarantine_hide: raw.quarantine_new && raw.quarantine_hide.unwrap_or(true),
            quarantine_exempt: raw.quarantine_exempt.clone().unwrap_or_default(),
            refuse_withdrawn,
            follow_signatures: raw.follow_signatures,
            immutable_ttl: timing.immutable_ttl.filter(|ttl| !ttl.is_zero()),
            mutable_ttl: (timing.mutable_ttl).unwrap_or(Duration::from_secs(DEFAULT_MUTABLE_TTL)),
            negative_ttl: timing.negative_ttl,
            stale_if_error: timing.stale_if_error,
            connect_timeout: timing.connect_timeout,
            read_timeout: timing.read_timeout,
            upstream_bounds,
            upstream_tls,
            releases_api,
            mirror_of,
            members,
            architectures,
            username: raw.username.clone(),
            password,
        }),
        _ => Err(c.errors),
    }
}

/// Compiles one remote's fields, collecting every error (each naming the
/// file, the remote and the field) and warning rather than stopping at
/// the first.
struct Compiler<'a> {
    file: &'a Path,
    name: &'a str,
    errors: Vec<ConfigError>,
    warnings: &'a mut Vec<String>,
}

/// The durations of a remote that override the server's.
struct Timing {
    immutable_ttl: Option<Duration>,
    mutable_ttl: Option<Duration>,
    negative_ttl: Option<Duration>,
    stale_if_error: Option<Duration>,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
}

impl Compiler<'_> {
    fn error(&mut self, field: &str, message: String) {
        let error = ConfigError::new(self.file, message)
            .remote(self.name)
            .field(field);
        self.errors.push(error);
    }

    fn warn(&mut self, message: &str) {
        let warning = format!("{}: remote '{}': {message}", self.file.display(), self.name);
        self.warnings.push(warning);
    }

    fn check_name(&mut self) {
        let name = self.name;
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.');
        if !valid {
            self.errors.push(
                ConfigError::new(
                    self.file,
                    "remote names may only use letters, digits, '-', '_' and '.' (and not start with '.')",
                )
                .remote(name),
            );
        }
    }

    fn warn_unknown(&mut self, raw: &RawRemote) {
        for key in raw.unknown.keys() {
            self.warn(&format!("unknown field '{key}' ignored"));
        }
        for key in raw.cache.iter().flat_map(|cache| cache.unknown.keys()) {
            self.warn(&format!("unknown field 'cache.{key}' ignored"));
        }
    }

    fn kind(&mut self, raw: &RawRemote) -> RemoteKind {
        match raw.kind.as_deref().unwrap_or("remote") {
            "remote" => RemoteKind::Remote,
            "local" => RemoteKind::Local,
            "virtual" => RemoteKind::Virtual,
            other => {
                let message = format!("unknown type {other:?}, expected remote, local or virtual");
                self.error("type", message);
                RemoteKind::Remote
            }
        }
    }

    fn ecosystem(&mut self, raw: &RawRemote) -> Ecosystem {
        let text = raw.package.as_deref().unwrap_or("generic");
        text.parse::<Ecosystem>().unwrap_or_else(|message| {
            self.error("package", message);
            Ecosystem::Generic
        })
    }

    /// A URL field, parsed; `None` (and an error) if it does not parse.
    fn url(&mut self, field: &str, url: &str) -> Option<Upstream> {
        parse_base_url(url)
            .map_err(|message| self.error(field, message))
            .ok()
    }

    /// `password`, or the contents of `password_file`.
    fn password(&mut self, raw: &RawRemote) -> Option<String> {
        let Some(path) = raw.password_file.as_deref() else {
            return raw.password.clone();
        };
        if raw.password.is_some() {
            self.error(
                "password_file",
                "set password or password_file, not both".into(),
            );
            return None;
        }
        let path = super::paths::resolve(&super::paths::folder_of(self.file), path);
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
            Ok(_) => {
                self.error("password_file", format!("{} is empty", path.display()));
                None
            }
            Err(e) => {
                self.error(
                    "password_file",
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    }

    fn upstream(
        &mut self,
        raw: &RawRemote,
        kind: RemoteKind,
        password: Option<&str>,
    ) -> Option<Upstream> {
        match (kind, raw.base_url.as_deref()) {
            (RemoteKind::Remote, None) => {
                let message = "required for a remote of type 'remote'".into();
                self.error("base_url", message);
                None
            }
            (RemoteKind::Remote, Some(url)) => {
                let mut upstream = self.url("base_url", url)?;
                upstream.basic_auth = basic_auth(raw.username.as_deref(), password);
                Some(upstream)
            }
            (RemoteKind::Local | RemoteKind::Virtual, _) => None,
        }
    }

    fn members(&mut self, raw: &RawRemote, kind: RemoteKind) -> Vec<String> {
        let members = raw.members.clone().unwrap_or_default();
        match kind {
            RemoteKind::Virtual if members.is_empty() => self.error(
                "members",
                "a virtual repository needs at least one member".into(),
            ),
            RemoteKind::Virtual => {}
            _ if !members.is_empty() => self.error(
                "members",
                "only a remote of type 'virtual' has members".into(),
            ),
            _ => {}
        }
        members
    }

    fn index_upstream(
        &mut self,
        raw: &RawRemote,
        ecosystem: Ecosystem,
        upstream: Option<&Upstream>,
    ) -> Option<Upstream> {
        let url = raw.index_url.as_deref()?;
        if !ecosystem.has_separate_index() {
            let message = format!(
                "only a remote with package 'pypi' has a separate index, not '{ecosystem}'"
            );
            self.error("index_url", message);
            return None;
        }
        let mut index = self.url("index_url", url)?;
        index.basic_auth = upstream.and_then(|u| u.basic_auth.clone());
        Some(index)
    }

    fn releases_api(&mut self, raw: &RawRemote, upstream: Option<&Upstream>) -> Option<String> {
        match (raw.releases_api.as_deref(), upstream) {
            (Some(url), Some(_)) => {
                self.url("releases_api", url)?;
                Some(url.trim_end_matches('/').to_string())
            }
            (Some(_), None) => {
                let message = "only a remote with a base_url has releases".into();
                self.error("releases_api", message);
                None
            }
            (None, Some(up)) => Some(format!(
                "{}://{}/api/v3",
                if up.tls { "https" } else { "http" },
                if (up.tls && up.port == 443) || (!up.tls && up.port == 80) {
                    up.host.clone()
                } else {
                    format!("{}:{}", up.host, up.port)
                }
            )),
            (None, None) => None,
        }
    }

    /// A field by its current name or, with a warning, by the name it had
    /// before (`old`): the name it came by, so that an error names the
    /// field as written, and its value.
    fn renamed<'v, T>(
        &mut self,
        new: (&'static str, &'v Option<T>),
        old: (&'static str, &'v Option<T>),
    ) -> (&'static str, &'v Option<T>) {
        match (new.1, old.1) {
            (Some(_), Some(_)) => {
                self.warn(&format!(
                    "'{}' is the older name of '{}': both are set, '{}' is ignored",
                    old.0, new.0, old.0
                ));
                new
            }
            (None, Some(_)) => {
                self.warn(&format!("'{}' is deprecated, read as '{}'", old.0, new.0));
                old
            }
            _ => new,
        }
    }

    fn policy(&mut self, raw: &RawRemote, ecosystem: Ecosystem) -> Option<RemotePolicy> {
        let immutable = self.renamed(
            ("immutable_patterns", &raw.immutable_patterns),
            ("include_patterns", &raw.include_patterns),
        );
        let mutable = self.renamed(
            ("mutable_patterns", &raw.mutable_patterns),
            ("index_patterns", &raw.index_patterns),
        );
        let names = [immutable.0, mutable.0];
        let (immutable, mutable) = (
            immutable.1.clone().unwrap_or_default(),
            mutable.1.clone().unwrap_or_default(),
        );
        RemotePolicy::new(ecosystem, &immutable, &mutable)
            .map_err(|e| {
                let written = match e.field {
                    "immutable_patterns" => names[0],
                    "mutable_patterns" => names[1],
                    other => other,
                };
                let field = format!("{written}[{}]", e.source.index);
                let message = format!("invalid regex {:?}: {}", e.source.pattern, e.source.message);
                self.error(&field, message)
            })
            .ok()
    }

    fn mirror_of(&mut self, raw: &RawRemote, ecosystem: Ecosystem) -> Vec<String> {
        let hosts: Vec<String> = (raw.mirror_of.iter().flatten())
            .map(|host| host.trim().to_ascii_lowercase())
            .collect();
        if !hosts.is_empty() && !ecosystem.can_mirror() {
            let able: Vec<&str> = (Ecosystem::ALL.iter())
                .filter(|e| e.can_mirror())
                .map(|e| e.as_str())
                .collect();
            let message = format!(
                "a remote with package '{ecosystem}' cannot mirror a host; only {} can",
                able.join(", ")
            );
            self.error("mirror_of", message);
        }
        self.names(
            "mirror_of",
            hosts,
            |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'),
            "a host name (such as \"docker.io\" or \"ghcr.io\")",
        )
    }

    /// A list of names, each non-empty and of `allowed` characters.
    fn names(
        &mut self,
        field: &str,
        names: Vec<String>,
        allowed: fn(char) -> bool,
        what: &str,
    ) -> Vec<String> {
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() || !name.chars().all(allowed) {
                self.error(&format!("{field}[{i}]"), format!("{name:?} is not {what}"));
            }
        }
        names
    }

    fn duration(&mut self, field: &str, value: &Option<RawDuration>) -> Option<Duration> {
        match value.as_ref().map(RawDuration::duration)? {
            Ok(d) => Some(d),
            Err(message) => {
                self.error(field, message);
                None
            }
        }
    }

    fn timing(&mut self, raw: &RawRemote) -> Timing {
        let cache = raw.cache.clone().unwrap_or_default();
        let timeouts = raw.timeouts.clone().unwrap_or_default();
        let (immutable_field, immutable_ttl) = self.renamed(
            ("cache.immutable_ttl", &cache.immutable_ttl),
            ("cache.file_ttl", &cache.file_ttl),
        );
        let (mutable_field, mutable_ttl) = self.renamed(
            ("cache.mutable_ttl", &cache.mutable_ttl),
            ("cache.index_ttl", &cache.index_ttl),
        );
        let timing = Timing {
            immutable_ttl: self.duration(immutable_field, immutable_ttl),
            mutable_ttl: self.duration(mutable_field, mutable_ttl),
            negative_ttl: self.duration("cache.negative_ttl", &cache.negative_ttl),
            stale_if_error: self.duration("cache.stale_if_error", &cache.stale_if_error),
            connect_timeout: self.duration("timeouts.connect", &timeouts.connect),
            read_timeout: self.duration("timeouts.read", &timeouts.read),
        };
        for (field, value) in [
            ("timeouts.connect", timing.connect_timeout),
            ("timeouts.read", timing.read_timeout),
        ] {
            if value.is_some_and(|d| d.is_zero()) {
                self.error(field, "must be positive".into());
            }
        }
        timing
    }

    fn upstream_bounds(&mut self, raw: &RawRemote, has_upstream: bool) -> UpstreamBounds {
        const MIN_RATE: u64 = 1024;
        let rate = match raw
            .max_upstream_bytes_per_second
            .as_ref()
            .map(RawSize::bytes)
        {
            Some(Err(message)) => {
                self.error("max_upstream_bytes_per_second", message);
                None
            }
            Some(Ok(rate)) if rate < MIN_RATE => {
                let message = format!("{rate} bytes per second is below the least, 1KiB");
                self.error("max_upstream_bytes_per_second", message);
                None
            }
            Some(Ok(rate)) => Some(rate),
            None => None,
        };
        if raw.max_upstream_connections == Some(0) {
            let message = "must be at least 1 (unset: no bound)".into();
            self.error("max_upstream_connections", message);
        }
        let bounds = UpstreamBounds {
            connections: raw.max_upstream_connections.filter(|n| *n > 0),
            bytes_per_second: rate,
        };
        if bounds.any() && !has_upstream {
            let field = match bounds.connections {
                Some(_) => "max_upstream_connections",
                None => "max_upstream_bytes_per_second",
            };
            self.error(
                field,
                "only a remote with a base_url has an upstream".into(),
            );
        }
        bounds
    }

    fn upstream_tls(&mut self, raw: &RawRemote, has_upstream: bool) -> Arc<UpstreamTls> {
        let folder = super::paths::folder_of(self.file);
        let ca_file = (raw.ca_file.as_deref()).map(|path| super::paths::resolve(&folder, path));
        if !has_upstream && (ca_file.is_some() || raw.tls_insecure) {
            let field = if raw.tls_insecure {
                "tls_insecure"
            } else {
                "ca_file"
            };
            self.error(
                field,
                "only a remote with a base_url has upstream TLS".into(),
            );
        }
        if raw.tls_insecure {
            self.warn("tls_insecure: the upstream's certificate is not verified");
        }
        match UpstreamTls::load(ca_file.as_deref(), raw.tls_insecure) {
            Ok(tls) => Arc::new(tls),
            Err(e) => {
                self.error("ca_file", format!("{e:#}"));
                Arc::default()
            }
        }
    }
}

/// A virtual repository's members must exist, be local or remote
/// repositories (not virtual ones), and share its package type.
fn member_errors(file: &Path, remotes: &[Remote]) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for remote in remotes.iter().filter(|r| r.kind == RemoteKind::Virtual) {
        for (i, member) in remote.members.iter().enumerate() {
            let problem = match remotes.iter().find(|r| &r.name == member) {
                None => Some(format!("no remote named '{member}'")),
                Some(m) if m.kind == RemoteKind::Virtual => Some(format!(
                    "'{member}' is virtual itself; list its members instead"
                )),
                Some(m) if m.ecosystem != remote.ecosystem => Some(format!(
                    "'{member}' has package '{}', this virtual repository '{}'",
                    m.ecosystem, remote.ecosystem
                )),
                Some(_) => None,
            };
            if let Some(message) = problem {
                errors.push(
                    ConfigError::new(file, message)
                        .remote(&remote.name)
                        .field(format!("members[{i}]")),
                );
            }
        }
    }
    errors
}

/// Two remotes mirroring one registry host would make `ns` ambiguous.
fn mirror_conflicts(file: &Path, remotes: &[Remote]) -> Vec<ConfigError> {
    let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
    let mut errors = Vec::new();
    for remote in remotes {
        for (i, host) in remote.mirror_of.iter().enumerate() {
            if let Some(first) = owners.insert(host, &remote.name) {
                errors.push(
                    ConfigError::new(
                        file,
                        format!("{host:?} is already mirrored by remote '{first}'"),
                    )
                    .remote(&remote.name)
                    .field(format!("mirror_of[{i}]")),
                );
            }
        }
    }
    errors
}

/// Parses `http(s)://host[:port][/path]`.
fn parse_base_url(url: &str) -> Result<Upstream, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{url:?} must start with http:// or https://")),
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{url:?} has no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    if uri.query().is_some() {
        return Err(format!("{url:?} must not have a query string"));
    }
    Ok(Upstream {
        tls,
        port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        host,
        base_path: uri.path().trim_end_matches('/').to_string(),
        basic_auth: None,
    })
}

fn basic_auth(username: Option<&str>, password: Option<&str>) -> Option<String> {
    use base64::Engine;
    let username = username?;
    let credentials = format!("{username}:{}", password.unwrap_or(""));
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_forms() {
        let u = parse_base_url("https://mirror.example.com/almalinux/").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.base_path.as_str()),
            (true, "mirror.example.com", 443, "/almalinux")
        );
        let u = parse_base_url("http://127.0.0.1:8081").unwrap();
        assert_eq!((u.tls, u.port, u.base_path.as_str()), (false, 8081, ""));
        assert!(parse_base_url("ftp://x").is_err());
        assert!(parse_base_url("not a url").is_err());
    }

    #[test]
    fn password_file_is_read_trimmed_and_refused_beside_password() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hub.password"), "s3cret\n").unwrap();
        let file = dir.path().join("remotes.yaml");
        let remote = |extra: &str| {
            format!("remotes:\n  hub:\n    base_url: https://registry.example\n    package: docker\n    username: robot\n{extra}")
        };
        let (_, remotes, _) =
            parse_remotes(&file, &remote("    password_file: hub.password\n")).unwrap();
        assert_eq!(remotes[0].password.as_deref(), Some("s3cret"));
        let expected = basic_auth(Some("robot"), Some("s3cret"));
        assert_eq!(remotes[0].upstream.as_ref().unwrap().basic_auth, expected);

        let both = remote("    password: x\n    password_file: hub.password\n");
        let errors = parse_remotes(&file, &both).unwrap_err().to_string();
        assert!(
            errors.contains("remote 'hub': field 'password_file'"),
            "{errors}"
        );
        let missing = remote("    password_file: nowhere\n");
        let errors = parse_remotes(&file, &missing).unwrap_err().to_string();
        assert!(
            errors.contains("cannot read") && errors.contains("nowhere"),
            "{errors}"
        );
    }

    #[test]
    fn seed_fixture_compiles_and_npm_look_ahead_classifies() {
        use filters::{Access, ArtifactClass};
        let source = include_str!("../../tests/fixtures/remotes-examples.yaml");
        let (_, remotes, warnings) =
            parse_remotes(Path::new("remotes-examples.yaml"), source).unwrap();
        assert_eq!(remotes.len(), 12);
        assert!(warnings.is_empty(), "{warnings:?}");
        let npm = remotes.iter().find(|r| r.name == "npm").unwrap();
        assert_eq!(
            npm.policy.classify("foo.tgz"),
            Access::Allowed(ArtifactClass::Immutable)
        );
        assert_eq!(
            npm.policy.classify("foo"),
            Access::Allowed(ArtifactClass::Mutable { user_defined: true })
        );
        let local = remotes.iter().find(|r| r.name == "local-generic").unwrap();
        assert_eq!(local.kind, RemoteKind::Local);
        let ghcr = remotes.iter().find(|r| r.name == "ghcr").unwrap();
        assert!(ghcr.upstream.as_ref().unwrap().basic_auth.is_some());
        let github = remotes.iter().find(|r| r.name == "github").unwrap();
        assert_eq!(
            github.immutable_ttl, None,
            "immutable_ttl 0 keeps artifacts until flushed"
        );
        assert_eq!(github.mutable_ttl.as_secs(), DEFAULT_MUTABLE_TTL);
    }

    #[test]
    fn names_from_before_the_rename_are_read_as_what_they_became() {
        use filters::{Access, ArtifactClass};
        let yaml = "remotes:\n  old:\n    base_url: http://x\n    include_patterns: ['\\.tgz$']\n    index_patterns: ['index\\.yaml$']\n    cache:\n      file_ttl: 0\n      index_ttl: 120\n";
        let (_, remotes, warnings) = parse_remotes(Path::new("r.yaml"), yaml).unwrap();
        let old = &remotes[0];
        assert_eq!(
            old.policy.classify("index.yaml"),
            Access::Allowed(ArtifactClass::Mutable { user_defined: true })
        );
        assert_eq!(
            old.policy.classify("a.tgz"),
            Access::Allowed(ArtifactClass::Immutable)
        );
        assert_eq!(old.policy.classify("a.zip"), Access::Denied);
        assert_eq!(old.mutable_ttl.as_secs(), 120);
        assert_eq!(old.immutable_ttl, None);
        for (before, now) in [
            ("include_patterns", "immutable_patterns"),
            ("index_patterns", "mutable_patterns"),
            ("cache.file_ttl", "cache.immutable_ttl"),
            ("cache.index_ttl", "cache.mutable_ttl"),
        ] {
            let expected =
                format!("r.yaml: remote 'old': '{before}' is deprecated, read as '{now}'");
            assert!(warnings.contains(&expected), "{expected} in {warnings:?}");
        }

        // Both names: the new one wins, and the old one is named.
        let both = "remotes:\n  b:\n    base_url: http://x\n    mutable_patterns: ['a$']\n    index_patterns: ['b$']\n";
        let (_, remotes, warnings) = parse_remotes(Path::new("r.yaml"), both).unwrap();
        assert!(
            remotes[0].policy.user_mutable("a") && !remotes[0].policy.user_mutable("b"),
            "mutable_patterns is used"
        );
        assert!(
            warnings[0].contains("'index_patterns' is ignored"),
            "{warnings:?}"
        );

        // An error in a pattern names the field as it was written.
        let bad = "remotes:\n  o:\n    base_url: http://x\n    index_patterns: ['(']\n";
        let error = parse_remotes(Path::new("r.yaml"), bad)
            .unwrap_err()
            .to_string();
        assert!(error.contains("index_patterns[0]"), "{error}");
    }

    #[test]
    fn virtual_members_must_exist_match_and_not_nest() {
        let yaml = "remotes:\n  py:\n    base_url: http://x\n    package: pypi\n  gen:\n    type: local\n  all:\n    type: virtual\n    package: pypi\n    members: [py, gen, nope]\n  outer:\n    type: virtual\n    package: pypi\n    members: [all]\n  empty:\n    type: virtual\n  stray:\n    base_url: http://x\n    members: [py]\n";
        let errors = parse_remotes(Path::new("r.yaml"), yaml)
            .unwrap_err()
            .to_string();
        assert!(
            errors.contains("remote 'all'") && errors.contains("members[1]"),
            "{errors}"
        );
        assert!(errors.contains("'gen' has package 'generic'"), "{errors}");
        assert!(
            errors.contains("members[2]") && errors.contains("no remote named 'nope'"),
            "{errors}"
        );
        assert!(errors.contains("'all' is virtual itself"), "{errors}");
        assert!(errors.contains("needs at least one member"), "{errors}");
        assert!(
            errors.contains("only a remote of type 'virtual' has members"),
            "{errors}"
        );
        let good = "remotes:\n  py:\n    base_url: http://x\n    package: pypi\n  all:\n    type: virtual\n    package: pypi\n    members: [py]\n";
        let (_, remotes, _) = parse_remotes(Path::new("r.yaml"), good).unwrap();
        let all = remotes.iter().find(|r| r.name == "all").unwrap();
        assert_eq!(
            (all.kind, all.members.as_slice()),
            (RemoteKind::Virtual, &["py".to_string()][..])
        );
    }

    #[test]
    fn upstream_bounds_are_checked_and_named() {
        let good = "remotes:\n  g:\n    base_url: http://x\n    package: generic\n    max_upstream_connections: 4\n    max_upstream_bytes_per_second: 10MiB\n";
        let (_, remotes, _) = parse_remotes(Path::new("r.yaml"), good).unwrap();
        let bounds = remotes[0].upstream_bounds;
        assert_eq!(
            (bounds.connections, bounds.bytes_per_second),
            (Some(4), Some(10 << 20))
        );
        let bad = "remotes:\n  g:\n    base_url: http://x\n    package: generic\n    max_upstream_connections: 0\n    max_upstream_bytes_per_second: 100\n  l:\n    type: local\n    package: generic\n    max_upstream_connections: 2\n";
        let errors = parse_remotes(Path::new("r.yaml"), bad)
            .err()
            .unwrap()
            .to_string();
        for (remote, field, why) in [
            ("g", "max_upstream_connections", "at least 1"),
            (
                "g",
                "max_upstream_bytes_per_second",
                "below the least, 1KiB",
            ),
            (
                "l",
                "max_upstream_connections",
                "only a remote with a base_url",
            ),
        ] {
            let line = errors
                .lines()
                .find(|l| l.contains(&format!("remote '{remote}'")) && l.contains(field));
            assert!(
                line.is_some_and(|l| l.contains(why)),
                "{remote} {field}: {errors}"
            );
        }
    }

    #[test]
    fn basic_auth_header() {
        assert_eq!(basic_auth(Some("u"), Some("p")).unwrap(), "Basic dTpw");
        assert_eq!(basic_auth(None, Some("p")), None);
    }
}
