//! The upstream side of a cache miss or revalidation: which peer to
//! connect to and what request to send it.

use super::ctx::Artifact;
use crate::config::{ServerConfig, Upstream};
use filters::Package;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use std::net::SocketAddr;

/// Resolves the remote's host and builds the peer with artifactd's timeouts.
///
/// Resolution failures are upstream errors (`Error::new_up`), so a cached
/// copy can still be served for them.
pub async fn peer(upstream: &Upstream, server: &ServerConfig) -> Result<Box<HttpPeer>> {
    let address = resolve(&upstream.host, upstream.port).await?;
    let mut peer = HttpPeer::new(address, upstream.tls, upstream.host.clone());
    let options = &mut peer.options;
    options.connection_timeout = Some(server.connect_timeout);
    options.total_connection_timeout = Some(server.connect_timeout);
    options.read_timeout = Some(server.read_timeout);
    options.write_timeout = Some(server.read_timeout);
    options.idle_timeout = Some(std::time::Duration::from_secs(60));
    Ok(Box::new(peer))
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

/// Rewrites the client's request into the upstream's: path under the
/// remote's base URL, the upstream's `Host`, the remote's credentials
/// instead of the client's, and no content negotiation of encodings (the
/// cached body must be the identity encoding every client can take).
pub fn rewrite_request(artifact: &Artifact, req: &mut RequestHeader) -> Result<()> {
    let upstream = artifact
        .remote
        .upstream
        .as_ref()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "remote without upstream"))?;
    let uri = upstream_path(upstream, artifact.remote.package, &artifact.raw_path);
    req.set_uri(
        uri.parse()
            .map_err(|e| Error::because(ErrorType::InternalError, "building upstream URI", e))?,
    );
    let default_port = if upstream.tls { 443 } else { 80 };
    let host = if upstream.port == default_port {
        upstream.host.clone()
    } else {
        format!("{}:{}", upstream.host, upstream.port)
    };
    req.insert_header(http::header::HOST, host)?;
    req.remove_header(&http::header::AUTHORIZATION);
    req.remove_header(&http::header::ACCEPT_ENCODING);
    req.remove_header(&http::header::COOKIE);
    if let Some(auth) = &upstream.basic_auth {
        req.insert_header(http::header::AUTHORIZATION, auth.as_str())?;
    }
    Ok(())
}

/// The upstream request path. Docker remotes speak the registry API, so
/// their paths live under `/v2/` (seed 001).
pub fn upstream_path(upstream: &Upstream, package: Package, raw_path: &str) -> String {
    let api = if package == Package::Docker {
        "/v2"
    } else {
        ""
    };
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
            upstream_path(&upstream(""), Package::Generic, "a/b%20c.tgz"),
            "/a/b%20c.tgz"
        );
        assert_eq!(
            upstream_path(&upstream("/alma"), Package::Rpm, "9/repomd.xml"),
            "/alma/9/repomd.xml"
        );
        assert_eq!(
            upstream_path(
                &upstream(""),
                Package::Docker,
                "library/nginx/manifests/latest"
            ),
            "/v2/library/nginx/manifests/latest"
        );
    }
}
