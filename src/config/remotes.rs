//! `remotes.yaml`: the reference system's remote definitions, loaded
//! unchanged (seeds 003/004), then compiled into [`Remote`]s.
//!
//! Parsing is two-stage, as in ripgrep's low/high args: [`RawRemote`] is
//! what the file says, [`Remote`] is what artifactd runs with (compiled
//! pattern sets, parsed URL, resolved TTLs). Every problem is collected with
//! the remote and field it belongs to.

use super::error::{yaml_error, ConfigError, ConfigErrors};
use super::units::RawDuration;
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
    #[serde(default)]
    pub check_mutable_updates: bool,
    #[serde(default)]
    pub quarantine_new: bool,
    pub quarantine_days: Option<u32>,
    /// Remove quarantined versions from rewritten index documents, so
    /// resolvers pick the newest allowed one (default: on with quarantine).
    pub quarantine_hide: Option<bool>,
    pub username: Option<String>,
    pub password: Option<String>,
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
    let raw: RawRemotesFile =
        serde_yaml_ng::from_str(source).map_err(|e| yaml_error(file, source, &e))?;
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
    let err =
        |field: &str, message: String| ConfigError::new(file, message).remote(name).field(field);
    let mut errors = Vec::new();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || name.starts_with('.')
    {
        errors.push(
            ConfigError::new(
                file,
                "remote names may only use letters, digits, '-', '_' and '.' (and not start with '.')",
            )
            .remote(name),
        );
    }
    for key in raw.unknown.keys() {
        warnings.push(format!(
            "{}: remote '{name}': unknown field '{key}' ignored",
            file.display()
        ));
    }
    if let Some(cache) = &raw.cache {
        for key in cache.unknown.keys() {
            warnings.push(format!(
                "{}: remote '{name}': unknown field 'cache.{key}' ignored",
                file.display()
            ));
        }
    }
    let kind = match raw.kind.as_deref().unwrap_or("remote") {
        "remote" => RemoteKind::Remote,
        "local" => RemoteKind::Local,
        "virtual" => RemoteKind::Virtual,
        other => {
            errors.push(err(
                "type",
                format!("unknown type {other:?}, expected remote, local or virtual"),
            ));
            RemoteKind::Remote
        }
    };
    let package = match raw
        .package
        .as_deref()
        .unwrap_or("generic")
        .parse::<Ecosystem>()
    {
        Ok(p) => p,
        Err(message) => {
            errors.push(err("package", message));
            Ecosystem::Generic
        }
    };
    let upstream = match (kind, raw.base_url.as_deref()) {
        (RemoteKind::Remote, None) => {
            errors.push(err(
                "base_url",
                "required for a remote of type 'remote'".into(),
            ));
            None
        }
        (RemoteKind::Remote, Some(url)) => match parse_base_url(url) {
            Ok(mut upstream) => {
                upstream.basic_auth = basic_auth(raw.username.as_deref(), raw.password.as_deref());
                Some(upstream)
            }
            Err(message) => {
                errors.push(err("base_url", message));
                None
            }
        },
        (RemoteKind::Local | RemoteKind::Virtual, _) => None,
    };
    let members: Vec<String> = raw.members.clone().unwrap_or_default();
    match kind {
        RemoteKind::Virtual if members.is_empty() => errors.push(err(
            "members",
            "a virtual repository needs at least one member".into(),
        )),
        RemoteKind::Virtual => {}
        _ if !members.is_empty() => errors.push(err(
            "members",
            "only a remote of type 'virtual' has members".into(),
        )),
        _ => {}
    }
    let index_upstream = match (raw.index_url.as_deref(), package) {
        (None, _) => None,
        (Some(url), Ecosystem::Pypi) => match parse_base_url(url) {
            Ok(mut index) => {
                index.basic_auth = upstream.as_ref().and_then(|u| u.basic_auth.clone());
                Some(index)
            }
            Err(message) => {
                errors.push(err("index_url", message));
                None
            }
        },
        (Some(_), other) => {
            errors.push(err(
                "index_url",
                format!("only a remote with package 'pypi' has a separate index, not '{other}'"),
            ));
            None
        }
    };
    let releases_api = match (raw.releases_api.as_deref(), &upstream) {
        (Some(url), Some(_)) => match parse_base_url(url) {
            Ok(_) => Some(url.trim_end_matches('/').to_string()),
            Err(message) => {
                errors.push(err("releases_api", message));
                None
            }
        },
        (Some(_), None) => {
            errors.push(err(
                "releases_api",
                "only a remote with a base_url has releases".into(),
            ));
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
    };
    let immutable = match (&raw.immutable_patterns, &raw.include_patterns) {
        (Some(patterns), _) => patterns.clone(),
        (None, Some(patterns)) => {
            warnings.push(format!(
                "{}: remote '{name}': 'include_patterns' is deprecated, read as 'immutable_patterns'",
                file.display()
            ));
            patterns.clone()
        }
        (None, None) => Vec::new(),
    };
    let mutable = raw.mutable_patterns.clone().unwrap_or_default();
    let policy = match RemotePolicy::new(package, &immutable, &mutable) {
        Ok(policy) => Some(policy),
        Err(e) => {
            errors.push(err(
                &format!("{}[{}]", e.field, e.source.index),
                format!("invalid regex {:?}: {}", e.source.pattern, e.source.message),
            ));
            None
        }
    };
    if raw.quarantine_new && raw.quarantine_days.unwrap_or(0) == 0 {
        errors.push(err(
            "quarantine_days",
            "must be a positive number of days when quarantine_new is true".into(),
        ));
    }
    let mirror_of: Vec<String> = raw
        .mirror_of
        .iter()
        .flatten()
        .map(|host| host.trim().to_ascii_lowercase())
        .collect();
    if !mirror_of.is_empty() && !package.can_mirror() {
        let able: Vec<&str> = Ecosystem::ALL
            .iter()
            .filter(|e| e.can_mirror())
            .map(|e| e.as_str())
            .collect();
        errors.push(err(
            "mirror_of",
            format!(
                "a remote with package '{package}' cannot mirror a host; only {} can",
                able.join(", ")
            ),
        ));
    }
    for (i, host) in mirror_of.iter().enumerate() {
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if !valid {
            errors.push(err(
                &format!("mirror_of[{i}]"),
                format!("{host:?} is not a host name (such as \"docker.io\" or \"ghcr.io\")"),
            ));
        }
    }
    let architectures = raw.architectures.clone().unwrap_or_default();
    for (i, arch) in architectures.iter().enumerate() {
        let valid = !arch.is_empty()
            && arch
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !valid {
            errors.push(err(
                &format!("architectures[{i}]"),
                format!("{arch:?} is not an architecture name (such as \"amd64\")"),
            ));
        }
    }
    let cache = raw.cache.clone().unwrap_or_default();
    let timeouts = raw.timeouts.clone().unwrap_or_default();
    let mut duration = |field: &str, value: &Option<RawDuration>| -> Option<Duration> {
        match value.as_ref().map(RawDuration::duration)? {
            Ok(d) => Some(d),
            Err(message) => {
                errors.push(err(field, message));
                None
            }
        }
    };
    let immutable_ttl = duration("cache.immutable_ttl", &cache.immutable_ttl);
    let mutable_ttl = duration("cache.mutable_ttl", &cache.mutable_ttl);
    let negative_ttl = duration("cache.negative_ttl", &cache.negative_ttl);
    let stale_if_error = duration("cache.stale_if_error", &cache.stale_if_error);
    let connect_timeout = duration("timeouts.connect", &timeouts.connect);
    let read_timeout = duration("timeouts.read", &timeouts.read);
    for (field, value) in [
        ("timeouts.connect", connect_timeout),
        ("timeouts.read", read_timeout),
    ] {
        if value.is_some_and(|d| d.is_zero()) {
            errors.push(err(field, "must be positive".into()));
        }
    }
    let ca_file = raw
        .ca_file
        .as_deref()
        .map(|path| super::paths::resolve(&super::paths::folder_of(file), path));
    if upstream.is_none() && (ca_file.is_some() || raw.tls_insecure) {
        errors.push(err(
            if raw.tls_insecure {
                "tls_insecure"
            } else {
                "ca_file"
            },
            "only a remote with a base_url has upstream TLS".into(),
        ));
    }
    let upstream_tls = match UpstreamTls::load(ca_file.as_deref(), raw.tls_insecure) {
        Ok(tls) => Arc::new(tls),
        Err(e) => {
            errors.push(err("ca_file", format!("{e:#}")));
            Arc::default()
        }
    };
    if raw.tls_insecure {
        warnings.push(format!(
            "{}: remote '{name}': tls_insecure: the upstream's certificate is not verified",
            file.display()
        ));
    }
    match (errors.is_empty(), policy) {
        (true, Some(policy)) => Ok(Remote {
            name: name.to_string(),
            kind,
            ecosystem: package,
            policy,
            upstream,
            index_upstream,
            check_mutable_updates: raw.check_mutable_updates,
            quarantine_days: raw.quarantine_new.then(|| raw.quarantine_days.unwrap_or(0)),
            quarantine_hide: raw.quarantine_new && raw.quarantine_hide.unwrap_or(true),
            immutable_ttl: immutable_ttl.filter(|ttl| !ttl.is_zero()),
            mutable_ttl: mutable_ttl.unwrap_or(Duration::from_secs(DEFAULT_MUTABLE_TTL)),
            negative_ttl,
            stale_if_error,
            connect_timeout,
            read_timeout,
            upstream_tls,
            releases_api,
            mirror_of,
            members,
            architectures,
            username: raw.username.clone(),
            password: raw.password.clone(),
        }),
        _ => Err(errors),
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
    fn basic_auth_header() {
        assert_eq!(basic_auth(Some("u"), Some("p")).unwrap(), "Basic dTpw");
        assert_eq!(basic_auth(None, Some("p")), None);
    }
}
