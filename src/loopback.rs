//! artifactd's requests to itself, through its own listener: background
//! fetches that must take the normal path (cache lock, verification,
//! commit), and the members of virtual repositories.

use crate::config::Listener;
use anyhow::Context;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

#[derive(Clone)]
pub struct Loopback {
    /// `http://host:port` of the listener.
    base: String,
    http: reqwest::Client,
}

/// Where this machine reaches a listener bound to `address`: loopback for
/// an unspecified address, the address itself otherwise.
pub fn reachable(address: SocketAddr) -> SocketAddr {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(ip) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, address.port())
}

impl Loopback {
    /// A client of the first plain listener, or of the first TLS one when
    /// there is none. A TLS listener's certificate names the public host,
    /// not the loopback address, so it is not verified: the connection
    /// goes to this process's own socket. No total timeout: bodies of any
    /// size stream through; the fills behind them have their own upstream
    /// timeouts.
    pub fn new(listeners: &[Listener]) -> anyhow::Result<Loopback> {
        let listener = listeners
            .iter()
            .find(|l| l.tls.is_none())
            .or(listeners.first())
            .context("no listener to reach")?;
        let scheme = if listener.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Ok(Loopback {
            base: format!("{scheme}://{}", reachable(listener.address)),
            http: reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(10))
                .danger_accept_invalid_certs(listener.tls.is_some())
                // Followed by the caller: a member's redirect is its answer.
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        })
    }

    /// A request for `path` (starting with `/`) of this artifactd.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }
}
