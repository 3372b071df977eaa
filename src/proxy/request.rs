//! The request phase's decision: which handler a request goes to, or the
//! error it gets, before anything touches storage or an upstream.

use super::action::{Action, AdminRequest, Decision};
use super::artifact::Artifact;
use crate::app::App;
use crate::config::{Remote, RemoteKind};
use crate::reply::Reply;
use filters::{Access, Route};
use http::uri::Authority;
use http::{Method, StatusCode};
use pingora::http::RequestHeader;
use std::sync::Arc;

/// What the artifact decision reads of a request: the same for a parsed
/// pingora header and for the hit fast path's own parse.
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub query: Option<&'a str>,
    pub accept: Option<&'a str>,
}

impl<'a> RequestView<'a> {
    pub fn of(req: &'a RequestHeader) -> Self {
        RequestView {
            method: &req.method,
            query: req.uri.query(),
            accept: super::documents::header(req, http::header::ACCEPT),
        }
    }
}

pub fn decide(app: &App, req: &RequestHeader) -> Decision {
    if let Some(authority) = absolute_form_authority(req) {
        return decide_proxied(app, req, &authority);
    }
    let path = req.uri.path();
    let plain = |action| Decision {
        action,
        remote: None,
        denied: false,
        firewall: None,
    };
    let (remote_name, raw_path) = match filters::route(path) {
        Route::Admin(route) => return plain(Action::Admin(AdminRequest::Route(route))),
        Route::NotFound => {
            return plain(Action::Reply(Reply::text(
                StatusCode::NOT_FOUND,
                "not found",
            )))
        }
        Route::Artifact { remote, raw_path } => (remote, raw_path),
        Route::CacheApi(route) => return plain(Action::Admin(AdminRequest::CacheApi(route))),
        Route::Job { id } => return plain(Action::Admin(AdminRequest::Job { id: id.to_string() })),
        Route::V2 { after_v2 } => return super::oci::decide(app, req, after_v2),
        Route::ArtifactList { remote } => {
            return match app.config().remotes.get(remote) {
                Some(r) => plain(Action::Admin(AdminRequest::ArtifactList(r.clone()))),
                None => plain(Action::Reply(Reply::text(
                    StatusCode::NOT_FOUND,
                    format!("unknown remote '{remote}'"),
                ))),
            }
        }
    };
    let config = app.config();
    let Some(remote) = config.remotes.get(remote_name) else {
        return plain(Action::Reply(Reply::text(
            StatusCode::NOT_FOUND,
            format!("unknown remote '{remote_name}'"),
        )));
    };
    // A registry's artifact route is its `/v2/{remote}/…`: manifests get
    // their `Accept`, blobs their digest key (shared) and digest check.
    if remote.ecosystem.speaks_registry_api() && remote.kind == RemoteKind::Remote {
        return super::oci::decide(app, req, &format!("/{remote_name}/{raw_path}"));
    }
    decide_artifact(app, &RequestView::of(req), remote, raw_path)
}

/// The authority of an HTTP/1 absolute-form request (`GET http://host/p`).
/// pingora keeps only the path on the URI and has already refused a
/// target whose authority differs from `Host`, so `Host` names it.
fn absolute_form_authority(req: &RequestHeader) -> Option<Authority> {
    let target = req.raw_path();
    let (scheme, rest) = target.split_at(target.iter().position(|&b| b == b':')?);
    let absolute = rest.starts_with(b"://")
        && (scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https"));
    if !absolute || req.version >= http::Version::HTTP_2 {
        return None;
    }
    let host = req.headers.get(http::header::HOST)?;
    Authority::try_from(host.as_bytes()).ok()
}

/// An absolute-URI request (`GET http://host/path`, from a client that
/// uses artifactd as its HTTP proxy): served through the remote that
/// mirrors the host, if its format's clients work that way; any other
/// host is refused, never forwarded (artifactd is not an open proxy).
fn decide_proxied(app: &App, req: &RequestHeader, authority: &Authority) -> Decision {
    let refused = |message: String| Decision {
        action: Action::Reply(Reply::text(StatusCode::FORBIDDEN, message)),
        remote: None,
        denied: true,
        firewall: None,
    };
    let authority_text = authority.as_str().to_ascii_lowercase();
    let config = app.config();
    let remote = config
        .mirrors
        .get(&authority_text)
        .or_else(|| match authority.port_u16() {
            None | Some(80) => config.mirrors.get(&authority.host().to_ascii_lowercase()),
            Some(_) => None,
        })
        .filter(|remote| remote.ecosystem.proxied());
    let Some(remote) = remote else {
        return refused(format!(
            "no remote mirrors {authority_text} (mirror_of); artifactd is not an open proxy"
        ));
    };
    let base = remote
        .upstream
        .as_ref()
        .map_or("", |u| u.base_path.as_str());
    let below = req
        .uri
        .path()
        .strip_prefix(base)
        .and_then(|rest| rest.strip_prefix(remote.ecosystem.upstream_prefix()))
        .and_then(|rest| rest.strip_prefix('/'));
    match below {
        Some(raw_path) => decide_artifact(app, &RequestView::of(req), remote, raw_path),
        None => refused(format!(
            "{} is outside what remote '{}' mirrors ({authority_text}{base}/)",
            req.uri.path(),
            remote.name
        )),
    }
}

/// A request for `raw_path` of `remote`.
pub fn decide_artifact(
    app: &App,
    req: &RequestView<'_>,
    remote: &Arc<Remote>,
    raw_path: &str,
) -> Decision {
    let method = req.method;
    let with_remote = |action, denied| Decision {
        action,
        remote: Some(remote.name.clone()),
        denied,
        firewall: None,
    };
    let raw_path = remote.ecosystem.client_path(raw_path);
    let raw_path = raw_path.as_ref();
    let valid = match filters::validate_artifact_path(raw_path, app.config().server.max_path_bytes)
    {
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
    let hides_young = remote.quarantine_hide || app.firewall.has_min_age(&remote.name);
    match routed_artifact(remote, req, raw_path, &valid.decoded, hides_young) {
        None => with_remote(
            Action::Reply(Reply::text(
                StatusCode::FORBIDDEN,
                format!(
                    "path not allowed by the patterns of remote '{}'",
                    remote.name
                ),
            )),
            true,
        ),
        Some(mut artifact) => match crate::firewall::judge(app, &mut artifact) {
            Err(refused) => Decision {
                firewall: Some(refused.why),
                ..with_remote(Action::Reply(refused.reply), true)
            },
            Ok(()) => with_remote(Action::Proxy(artifact), false),
        },
    }
}

/// What a request for `raw_path` (decoded: `path`) of a proxy remote
/// asks for, routed by the remote's ecosystem; `None` when its patterns
/// deny the path. Also how `artifactd import` keys what it stores, so an
/// imported file is found by the request that would have fetched it.
/// `hides_young`: index documents leave out releases below a minimum age
/// (so npm asks for the form with publish times).
pub fn routed_artifact(
    remote: &Arc<Remote>,
    req: &RequestView<'_>,
    raw_path: &str,
    path: &str,
    hides_young: bool,
) -> Option<Artifact> {
    let Access::Allowed(class) = remote.policy.classify(path) else {
        return None;
    };
    let routed = remote.ecosystem.route(&filters::ecosystem::Request {
        raw_path,
        path,
        class,
        accept: req.accept,
        query: req.query,
        quarantine_hide: hides_young,
    });
    Some(Artifact::routed(remote.clone(), routed))
}
