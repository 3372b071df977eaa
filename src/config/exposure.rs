//! Safe defaults: what a listener reachable from other machines would
//! expose without tokens.
//!
//! On loopback, anonymous uploads and flushes are a convenience for one
//! user; on `0.0.0.0` they let anyone on the network replace artifacts or
//! empty the cache. artifactd refuses that unless the operator says
//! `allow_anonymous_admin: true`, and then warns at every start.

use super::server::ServerConfig;
use super::{ConfigError, Remote, RemoteKind};
use std::path::Path;

/// What is open: the refusal for a non-loopback listener without the
/// tokens it needs, or the warning when `allow_anonymous_admin` allows it.
pub enum Exposure {
    Safe,
    Allowed(String),
    Refused(ConfigError),
}

pub fn check<'r>(
    file: &Path,
    server: &ServerConfig,
    remotes: impl IntoIterator<Item = &'r Remote>,
) -> Exposure {
    let Some(public) = server.listen.iter().find(|l| !l.is_loopback()) else {
        return Exposure::Safe;
    };
    let has_local = remotes.into_iter().any(|r| r.kind == RemoteKind::Local);
    let mut open = Vec::new();
    if server.admin_token.is_none() {
        open.push("admin endpoints (flush, cache API) without tokens.admin");
    }
    if has_local && server.write_token.is_none() {
        open.push("uploads and deletes of local repositories without tokens.write");
    }
    if open.is_empty() {
        return Exposure::Safe;
    }
    let what = format!(
        "listener {public} is reachable from other machines and would expose {}",
        open.join(" and ")
    );
    if server.allow_anonymous_admin {
        return Exposure::Allowed(format!(
            "{}: {what}; allowed by allow_anonymous_admin: true",
            file.display()
        ));
    }
    let field = if server.admin_token.is_none() {
        "tokens.admin"
    } else {
        "tokens.write"
    };
    Exposure::Refused(
        ConfigError::new(
            file,
            format!(
                "{what}; set the token (or its _file), listen on 127.0.0.1 only, \
                 or set allow_anonymous_admin: true to accept the risk"
            ),
        )
        .field(field),
    )
}
