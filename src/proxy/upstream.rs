//! The upstream side of a cache miss or revalidation: which peer to
//! connect to and what request to send it.

use super::artifact::Artifact;
use crate::config::{Remote, ServerConfig, Upstream};
use filters::Ecosystem;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use std::net::SocketAddr;

/// Resolves the remote's host and builds the peer with artifactd's timeouts.
///
/// Resolution failures are upstream errors (`Error::new_up`), so a cached
/// copy can still be served for them.
pub async fn peer(
    upstream: &Upstream,
    remote: &Remote,
    server: &ServerConfig,
) -> Result<Box<HttpPeer>> {
    let address = resolve(&upstream.host, upstream.port).await?;
    let mut peer = HttpPeer::new(address, upstream.tls, upstream.host.clone());
    let connect = remote.connect_timeout.unwrap_or(server.connect_timeout);
    let read = remote.read_timeout.unwrap_or(server.read_timeout);
    let options = &mut peer.options;
    options.connection_timeout = Some(connect);
    options.total_connection_timeout = Some(connect);
    // Bounds every read: the wait for the response header and each gap
    // between body chunks, so a stalled upstream cannot hold a client.
    options.read_timeout = Some(read);
    options.write_timeout = Some(read);
    options.idle_timeout = Some(std::time::Duration::from_secs(60));
    remote.upstream_tls.configure_peer(options);
    peer.group_key = worker_pool_key() ^ remote.upstream_tls.trust_tag();
    Ok(Box::new(peer))
}

/// A key that gives each worker thread its own pool of upstream
/// connections.
///
/// NOTE: pingora#998: a pooled connection whose idle watcher runs on
/// another thread can be lost in a race (`failed to acquire reusable
/// stream`), and the request opens a new connection instead: measured on
/// every second cold miss with two threads. A connection is released on
/// the thread (and single-threaded runtime) that used it, so pooling per
/// thread removes the race.
fn worker_pool_key() -> u64 {
    use std::hash::{Hash, Hasher};
    thread_local! {
        static KEY: u64 = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            std::thread::current().id().hash(&mut hasher);
            hasher.finish()
        };
    }
    KEY.with(|key| *key)
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addresses = tokio::net::lookup_host((host, port)).await.map_err(|e| {
        Error::new_up(ErrorType::ConnectNoRoute).more_context(format!("resolving {host}: {e}"))
    })?;
    addresses.next().ok_or_else(|| {
        Error::new_up(ErrorType::ConnectNoRoute).more_context(format!("{host} has no address"))
    })
}

/// The token scope an upstream request needs: a registry repository's pull
/// scope for OCI requests, none otherwise.
fn scope(artifact: &Artifact) -> Option<String> {
    artifact
        .oci()
        .as_ref()
        .map(|oci| filters::ecosystem::oci::pull_scope(&oci.name))
}

/// The error of a request whose upstream token could not be had: an
/// upstream failure, so a cached copy may still be served.
fn token_failed(e: crate::credentials::TokenError) -> Box<Error> {
    super::failure::Failure::TokenFailed.explain(e.to_string())
}

/// The `Authorization` to send before any challenge: the remote's cached
/// token for this scope, or its basic credentials.
pub async fn authorization(app: &crate::app::App, artifact: &Artifact) -> Result<Option<String>> {
    let Some(credentials) = app.credentials().of(&artifact.remote.name).cloned() else {
        return Ok(None);
    };
    credentials
        .authorization(scope(artifact).as_deref())
        .await
        .map_err(token_failed)
}

/// The `Authorization` answering an upstream challenge (a registry token,
/// or basic auth) after `rejected` was refused; `None` when nothing can.
pub async fn answer_challenge(
    app: &crate::app::App,
    artifact: &Artifact,
    www_authenticate: &str,
    rejected: Option<&str>,
) -> Result<Option<String>> {
    let Some(credentials) = app.credentials().of(&artifact.remote.name).cloned() else {
        return Ok(None);
    };
    credentials
        .answer_challenge(www_authenticate, scope(artifact).as_deref(), rejected)
        .await
        .map_err(token_failed)
}

/// Rewrites the client's request into the upstream's: path under the
/// remote's base URL, the upstream's `Host`, the remote's credentials
/// (`authorization`) instead of the client's, the registry `Accept` for OCI
/// requests, and no content negotiation of encodings (the cached body must
/// be the identity encoding every client can take).
pub fn rewrite_request(
    artifact: &Artifact,
    authorization: Option<&str>,
    req: &mut RequestHeader,
) -> Result<()> {
    let upstream = super::documents::upstream_of(artifact)
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "remote without upstream"))?;
    let uri = upstream_path(upstream, artifact.remote.ecosystem, &artifact.raw_path);
    req.set_uri(
        uri.parse()
            .map_err(|e| Error::because(ErrorType::InternalError, "building upstream URI", e))?,
    );
    let host = host_header(upstream.tls, &upstream.host, upstream.port);
    req.insert_header(http::header::HOST, host)?;
    req.remove_header(&http::header::AUTHORIZATION);
    req.remove_header(&http::header::ACCEPT_ENCODING);
    req.remove_header(&http::header::COOKIE);
    if let Some(auth) = authorization {
        req.insert_header(http::header::AUTHORIZATION, auth)?;
    }
    if let Some(oci) = artifact.oci() {
        req.insert_header(http::header::ACCEPT, super::oci::upstream_accept(oci))?;
    }
    let document_accept = artifact.document().and_then(|d| d.upstream_accept());
    if let Some(accept) = document_accept {
        req.insert_header(http::header::ACCEPT, accept)?;
    }
    Ok(())
}

/// The upstream request path: the base path, where the ecosystem's paths
/// live below it (a registry's `/v2`), and the artifact's path.
pub fn upstream_path(upstream: &Upstream, ecosystem: Ecosystem, raw_path: &str) -> String {
    let api = ecosystem.upstream_prefix();
    format!("{}{api}/{raw_path}", upstream.base_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(base_path: &str) -> Upstream {
        Upstream {
            tls: false,
            host: "127.0.0.1".into(),
            port: 80,
            base_path: base_path.into(),
            basic_auth: None,
        }
    }

    #[test]
    fn paths_join_base_and_artifact() {
        assert_eq!(
            upstream_path(&upstream(""), Ecosystem::Generic, "a/b%20c.tgz"),
            "/a/b%20c.tgz"
        );
        assert_eq!(
            upstream_path(&upstream("/alma"), Ecosystem::Rpm, "9/repomd.xml"),
            "/alma/9/repomd.xml"
        );
        assert_eq!(
            upstream_path(
                &upstream(""),
                Ecosystem::Docker,
                "library/nginx/manifests/latest"
            ),
            "/v2/library/nginx/manifests/latest"
        );
    }
}

/// Where an upstream redirect points, resolved against the request it
/// answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, sent as is.
    pub path_and_query: String,
}

impl Redirect {
    /// The peer for this hop, as [`Upstream`] without credentials.
    pub fn upstream(&self) -> Upstream {
        Upstream {
            tls: self.tls,
            host: self.host.clone(),
            port: self.port,
            base_path: String::new(),
            basic_auth: None,
        }
    }

    fn host_header(&self) -> String {
        host_header(self.tls, &self.host, self.port)
    }
}

fn host_header(tls: bool, host: &str, port: u16) -> String {
    let default_port = if tls { 443 } else { 80 };
    if port == default_port {
        host.to_string()
    } else {
        format!("{host}:{port}")
    }
}

/// The most redirects followed for one request.
pub const MAX_REDIRECTS: u8 = 5;

/// Reads a redirect (301, 302, 303, 307, 308 with `Location`) from an
/// upstream response; `from` is the hop that answered. Relative locations
/// stay on that hop's scheme, host and port.
pub fn redirect_target(status: u16, location: Option<&str>, from: &Upstream) -> Option<Redirect> {
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = location?.trim();
    let uri: http::Uri = location.parse().ok()?;
    let path_and_query = uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .filter(|pq| !pq.is_empty())
        .unwrap_or_else(|| "/".to_string());
    match (uri.scheme_str(), uri.host()) {
        (Some(scheme @ ("http" | "https")), Some(host)) => {
            let tls = scheme == "https";
            Some(Redirect {
                tls,
                host: host.trim_matches(['[', ']']).to_string(),
                port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
                path_and_query,
            })
        }
        (None, None) if location.starts_with('/') && !location.starts_with("//") => {
            Some(Redirect {
                tls: from.tls,
                host: from.host.clone(),
                port: from.port,
                path_and_query,
            })
        }
        _ => None,
    }
}

/// Rewrites the request for a redirect hop: the target's path and `Host`,
/// and the remote's credentials only if the hop stays on the remote's own
/// host (a CDN behind a redirect must not receive them).
pub fn rewrite_redirected(
    artifact: &Artifact,
    redirect: &Redirect,
    authorization: Option<&str>,
    req: &mut RequestHeader,
) -> Result<()> {
    rewrite_request(artifact, authorization, req)?;
    req.set_uri(
        redirect
            .path_and_query
            .parse()
            .map_err(|e| Error::because(ErrorType::InternalError, "building redirect URI", e))?,
    );
    req.insert_header(http::header::HOST, redirect.host_header())?;
    let same_host = artifact
        .remote
        .upstream
        .as_ref()
        .is_some_and(|u| u.host == redirect.host && u.port == redirect.port);
    if !same_host {
        req.remove_header(&http::header::AUTHORIZATION);
    }
    Ok(())
}

#[cfg(test)]
mod redirect_tests {
    use super::*;

    fn from() -> Upstream {
        Upstream {
            tls: true,
            host: "origin.example".into(),
            port: 443,
            base_path: "/base".into(),
            basic_auth: Some("Basic x".into()),
        }
    }

    #[test]
    fn absolute_and_relative_locations() {
        let r = redirect_target(302, Some("https://cdn.example/obj/1?sig=abc"), &from()).unwrap();
        assert_eq!(
            (r.tls, r.host.as_str(), r.port, r.path_and_query.as_str()),
            (true, "cdn.example", 443, "/obj/1?sig=abc")
        );
        let r = redirect_target(307, Some("http://127.0.0.1:9000"), &from()).unwrap();
        assert_eq!(
            (r.tls, r.port, r.path_and_query.as_str()),
            (false, 9000, "/")
        );
        let r = redirect_target(301, Some("/moved/here"), &from()).unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.path_and_query.as_str()),
            ("origin.example", 443, "/moved/here")
        );
        assert_eq!(r.host_header(), "origin.example");
    }

    #[test]
    fn non_redirects_and_unusable_locations() {
        assert_eq!(redirect_target(200, Some("/x"), &from()), None);
        assert_eq!(redirect_target(304, Some("/x"), &from()), None);
        assert_eq!(redirect_target(302, None, &from()), None);
        assert_eq!(redirect_target(302, Some("ftp://x/y"), &from()), None);
        assert_eq!(redirect_target(302, Some("relative/path"), &from()), None);
        assert_eq!(
            redirect_target(302, Some("//evil.example/x"), &from()),
            None
        );
    }
}
