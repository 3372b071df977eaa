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
pub mod paths;
pub mod redis_url;
pub mod remotes;
pub mod secret;
pub mod server;
pub mod units;

pub use error::{ConfigError, ConfigErrors};
pub use remotes::{Remote, RemoteKind, Upstream};
pub use secret::Secret;
pub use server::{CatalogUrl, Listener, ServerConfig, StateUrl, StorageUrl, TlsFiles};

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
