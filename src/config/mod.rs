//! Configuration: the server file plus `remotes.yaml`, loaded once at start.
//!
//! - [`server`]: `artifactd.yaml` and its `ARTIFACTD_*` environment overrides.
//! - [`remotes`]: the reference system's `remotes.yaml`, compiled.
//! - [`error`]: errors naming file, line, remote and field.
//! - [`exposure`]: refusing tokenless admin surfaces on public listeners.
//! - [`paths`]: relative paths made absolute, once, at load.
//! - [`units`]: sizes and durations with units. [`secret`]: tokens that
//!   never print.
//!
//! [`Config::redacted`] is what `GET /config` shows: every password and token
//! replaced by `***`.

pub mod backends;
pub mod error;
pub mod exposure;
pub mod firewall;
pub mod paths;
pub mod redis_url;
pub mod remotes;
pub mod secret;
pub mod server;
pub mod units;

pub use error::{ConfigError, ConfigErrors};
pub use remotes::{Remote, RemoteKind, Upstream};
pub use secret::Secret;
pub use server::{
    CatalogUrl, ClientLimits, Listener, ServerConfig, StateUrl, StorageUrl, TlsFiles,
};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub remotes: BTreeMap<String, Arc<Remote>>,
    /// Registry host → the docker remote that mirrors it (`mirror_of`).
    pub mirrors: BTreeMap<String, Arc<Remote>>,
    /// Non-fatal findings (unknown keys, deprecated names), logged at start.
    pub warnings: Vec<String>,
    raw_server: server::RawServerConfig,
    raw_remotes: remotes::RawRemotesFile,
}

const REDACTED: &str = "***";

/// What a reload changes of the remotes, by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RemoteChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl std::fmt::Display for RemoteChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |names: &[String]| match names {
            [] => "none".to_string(),
            names => names.join(", "),
        };
        write!(
            f,
            "remotes added: {}; removed: {}; changed: {}",
            list(&self.added),
            list(&self.removed),
            list(&self.changed)
        )
    }
}

impl Config {
    /// Loads the server config at `path` (environment overrides from the
    /// process) and the `remotes.yaml` it names.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::load_with_env(path, &|name| std::env::var(name).ok())
    }

    pub fn load_with_env(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let source = read(path)?;
        let (raw_server, server) = server::parse_server_config(path, &source, env)?;
        let remotes_source = read(&server.remotes_file)?;
        let (raw_remotes, remotes, warnings) =
            remotes::parse_remotes(&server.remotes_file, &remotes_source)?;
        let remotes: BTreeMap<String, Arc<Remote>> = remotes
            .into_iter()
            .map(|r| (r.name.clone(), Arc::new(r)))
            .collect();
        let warnings = match exposure::check(path, &server, remotes.values().map(|r| &**r)) {
            exposure::Exposure::Safe => warnings,
            exposure::Exposure::Allowed(warning) => [warnings, vec![warning]].concat(),
            exposure::Exposure::Refused(error) => return Err(error.into()),
        };
        firewall::compile(&server.firewall, &remotes)?;
        let mirrors = remotes
            .values()
            .flat_map(|r| {
                r.mirror_of
                    .iter()
                    .map(move |host| (host.clone(), r.clone()))
            })
            .collect();
        Ok(Config {
            server,
            remotes,
            mirrors,
            warnings,
            raw_server,
            raw_remotes,
        })
    }

    /// Prepares `self`, freshly loaded, to replace `running`: settings read
    /// only at start keep their running values. Returns the names of those
    /// the files changed, which take effect at the next restart.
    pub fn keep_start_settings(&mut self, running: &Config) -> Vec<&'static str> {
        let (loaded, running) = (&mut self.server, &running.server);
        let mut kept = Vec::new();
        // Secrets compare by their redacted `Debug`: a changed S3 key is
        // kept silently, never printed.
        macro_rules! keep {
            ($($field:ident),* $(,)?) => {$(
                if format!("{:?}", loaded.$field) != format!("{:?}", running.$field) {
                    kept.push(stringify!($field));
                    loaded.$field = running.$field.clone();
                }
            )*};
        }
        keep!(
            listen,
            threads,
            storage,
            state,
            catalog,
            fsync,
            max_size,
            min_free,
            memory_index_entries,
            memory_body_max,
            memory_bytes,
            rewritten_bytes,
            segment_size,
            breaker,
            grace_period,
            upgrade_socket,
            log_format,
            cluster,
        );
        kept
    }

    /// Remotes `self` has that `before` had not, those it dropped, and
    /// those whose settings differ, as written in `remotes.yaml`.
    pub fn remote_changes(&self, before: &Config) -> RemoteChanges {
        let written = |config: &Config, name: &str| {
            (config.raw_remotes.remotes.get(name)).map(|raw| serde_json::to_value(raw).ok())
        };
        let mut changes = RemoteChanges::default();
        for name in self.remotes.keys() {
            match written(before, name) {
                None => changes.added.push(name.clone()),
                Some(old) if old != written(self, name).flatten() => {
                    changes.changed.push(name.clone())
                }
                Some(_) => {}
            }
        }
        changes.removed = (before.remotes.keys())
            .filter(|name| !self.remotes.contains_key(*name))
            .cloned()
            .collect();
        changes
    }

    /// The effective configuration as JSON with secrets replaced.
    pub fn redacted(&self) -> serde_json::Value {
        let mut server = self.raw_server.clone();
        let tokens = &mut server.tokens;
        for token in [&mut tokens.write, &mut tokens.admin, &mut tokens.metrics] {
            if token.is_some() {
                *token = Some(REDACTED.into());
            }
        }
        for url in [&mut server.storage, &mut server.state, &mut server.catalog] {
            if let Some(text) = url.as_mut() {
                *text = backends::redact_url(text);
            }
        }
        if server.cluster.secret.is_some() {
            server.cluster.secret = Some(REDACTED.into());
        }
        if server.redis.sentinel_password.is_some() {
            server.redis.sentinel_password = Some(REDACTED.into());
        }
        if server.s3.secret_access_key.is_some() {
            server.s3.secret_access_key = Some(REDACTED.into());
        }
        let mut remotes = self.raw_remotes.clone();
        for remote in remotes.remotes.values_mut() {
            if remote.password.is_some() {
                remote.password = Some(REDACTED.into());
            }
        }
        serde_json::json!({
            "server": server,
            "resolved": {
                "listen": self.server.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "threads": self.server.threads,
                "remotes_file": self.server.remotes_file,
                "storage": self.server.storage.to_string(),
                "state": self.server.state.to_string(),
                "catalog": self.server.catalog.to_string(),
                "upgrade_socket": self.server.upgrade_socket,
                "tls": self.server.listen.iter().filter_map(|l| l.tls.as_ref()).collect::<Vec<_>>(),
                "max_upload_bytes": self.server.max_upload_bytes,
                "max_path_bytes": self.server.max_path_bytes,
                "client_limits": {
                    "header_timeout_seconds": self.server.clients.header_timeout.as_secs_f64(),
                    "idle_timeout_seconds": self.server.clients.idle_timeout.as_secs_f64(),
                    "max_connections": self.server.clients.max_connections,
                    "max_header_size": self.server.clients.max_header_size,
                    "h2_max_streams": self.server.clients.h2_max_streams,
                },
                "write_token_set": self.server.write_token.is_some(),
                "admin_token_set": self.server.admin_token.is_some(),
                "metrics_token_set": self.server.metrics_token.is_some(),
                "allow_anonymous_admin": self.server.allow_anonymous_admin,
                "grace_period_seconds": self.server.grace_period.as_secs_f64(),
            },
            "remotes": remotes.remotes,
        })
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::new(path, format!("cannot read: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A server file and `remotes.yaml` in a fresh folder, loaded.
    fn load(dir: &Path, server: &str, remotes: &str) -> Config {
        std::fs::write(dir.join("artifactd.yaml"), server).unwrap();
        std::fs::write(dir.join("remotes.yaml"), remotes).unwrap();
        Config::load_with_env(&dir.join("artifactd.yaml"), &|_| None).unwrap()
    }

    const TWO: &str = "remotes:\n  a:\n    type: remote\n    package: generic\n    base_url: http://127.0.0.1:1\n  b:\n    type: remote\n    package: generic\n    base_url: http://127.0.0.1:2\n";

    #[test]
    fn remote_changes_name_added_removed_and_changed() {
        let dir = tempfile::tempdir().unwrap();
        let before = load(dir.path(), "", TWO);
        let after = load(
            dir.path(),
            "",
            "remotes:\n  a:\n    type: remote\n    package: generic\n    base_url: http://127.0.0.1:1\n    mutable_patterns: ['.*\\.json$']\n  c:\n    type: remote\n    package: generic\n    base_url: http://127.0.0.1:3\n",
        );
        let changes = after.remote_changes(&before);
        assert_eq!(changes.added, ["c"]);
        assert_eq!(changes.removed, ["b"]);
        assert_eq!(changes.changed, ["a"]);
        assert_eq!(
            changes.to_string(),
            "remotes added: c; removed: b; changed: a"
        );
        assert_eq!(before.remote_changes(&before), RemoteChanges::default());
    }

    #[test]
    fn start_settings_keep_their_running_values_and_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let running = load(dir.path(), "listen: 127.0.0.1:7001\n", TWO);
        let mut loaded = load(
            dir.path(),
            "listen: 127.0.0.1:7002\nthreads: 7\ncache:\n  negative_ttl: 5s\n",
            TWO,
        );
        let kept = loaded.keep_start_settings(&running);
        assert_eq!(kept, ["listen", "threads"]);
        assert_eq!(loaded.server.listen[0].address.port(), 7001);
        assert_eq!(loaded.server.threads, running.server.threads);
        // Read per request: the new value is in force.
        assert_eq!(loaded.server.negative_ttl, Duration::from_secs(5));
        assert!(loaded.keep_start_settings(&running).is_empty());
    }
}
