//! The request phase's decision: which handler a request goes to, or the
//! error it gets, before anything touches storage or an upstream.

use super::ctx::Artifact;
use super::respond::Reply;
use crate::app::App;
use crate::config::{Remote, RemoteKind};
use filters::{Access, AdminRoute, Route};
use http::{Method, StatusCode};
use pingora::http::RequestHeader;
use std::sync::Arc;

pub enum Action {
    /// Answer at once (errors, denials).
    Reply(Reply),
    Admin(AdminRoute),
    /// The catalog listing of one remote (already known to exist).
    ArtifactList(Arc<Remote>),
    /// The cache API; `rest` is the path after `/api/v1/cache`.
    CacheApi {
        rest: String,
    },
    /// A background job's status.
    Job {
        id: String,
    },
    /// A local repository operation; the path is validated and decoded.
    Local {
        remote: Arc<Remote>,
        path: String,
    },
    /// A virtual repository: its members answer.
    Virtual {
        remote: Arc<Remote>,
        /// Decoded, validated.
        path: String,
        /// As the client sent it, for the members.
        raw_path: String,
    },
    /// Continue into the cache and, on a miss, the upstream.
    Proxy(Artifact),
}

/// What a request is, with the outcome counted for refusals.
pub struct Decision {
    pub action: Action,
    pub remote: Option<String>,
    pub denied: bool,
}

pub fn decide(app: &App, req: &RequestHeader) -> Decision {
    let (method, path) = (&req.method, req.uri.path());
    let plain = |action| Decision {
        action,
        remote: None,
        denied: false,
    };
    let (remote_name, raw_path) = match filters::route(path) {
        Route::Admin(route) => return plain(Action::Admin(route)),
        Route::NotFound => {
            return plain(Action::Reply(Reply::text(
                StatusCode::NOT_FOUND,
                "not found",
            )))
        }
        Route::Artifact { remote, raw_path } => (remote, raw_path),
        Route::CacheApi { rest } => {
            return plain(Action::CacheApi {
                rest: rest.to_string(),
            })
        }
        Route::Job { id } => return plain(Action::Job { id: id.to_string() }),
        Route::V2 { after_v2 } => return super::oci::decide(app, req, after_v2),
        Route::ArtifactList { remote } => {
            return match app.config.remotes.get(remote) {
                Some(r) => plain(Action::ArtifactList(r.clone())),
                None => plain(Action::Reply(Reply::text(
                    StatusCode::NOT_FOUND,
                    format!("unknown remote '{remote}'"),
                ))),
            }
        }
    };
    let Some(remote) = app.config.remotes.get(remote_name) else {
        return plain(Action::Reply(Reply::text(
            StatusCode::NOT_FOUND,
            format!("unknown remote '{remote_name}'"),
        )));
    };
    let with_remote = |action, denied| Decision {
        action,
        remote: Some(remote.name.clone()),
        denied,
    };
    // npm asks for scoped package documents as `@scope%2fname`.
    let raw_path = match remote.package {
        filters::Package::Npm => filters::npm::unescape_scope(raw_path),
        _ => std::borrow::Cow::Borrowed(raw_path),
    };
    let raw_path = raw_path.as_ref();
    let valid = match filters::validate_artifact_path(raw_path, app.config.server.max_path_bytes) {
        Ok(valid) => valid,
        Err(e) => {
            return with_remote(
                Action::Reply(Reply::text(
                    StatusCode::BAD_REQUEST,
                    format!("bad path: {e}"),
                )),
                false,
            )
        }
    };
    if remote.kind == RemoteKind::Virtual {
        let action = Action::Virtual {
            remote: remote.clone(),
            path: valid.decoded,
            raw_path: raw_path.to_string(),
        };
        return with_remote(action, false);
    }
    if remote.kind == RemoteKind::Local {
        let action = Action::Local {
            remote: remote.clone(),
            path: valid.decoded,
        };
        return with_remote(action, false);
    }
    if method != Method::GET && method != Method::HEAD {
        let reply = Reply::text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("remote '{}' is read-only: use GET or HEAD", remote.name),
        )
        .header("allow", "GET, HEAD");
        return with_remote(Action::Reply(reply), false);
    }
    match remote.policy.classify(&valid.decoded) {
        Access::Denied => with_remote(
            Action::Reply(Reply::text(
                StatusCode::FORBIDDEN,
                format!(
                    "path not allowed by the patterns of remote '{}'",
                    remote.name
                ),
            )),
            true,
        ),
        Access::Allowed(class) => {
            let mut artifact = Artifact {
                remote: remote.clone(),
                raw_path: raw_path.to_string(),
                key_parts: vec![valid.decoded],
                class,
                oci: None,
                document: None,
            };
            super::documents::route(&mut artifact, req);
            with_remote(Action::Proxy(artifact), false)
        }
    }
}
