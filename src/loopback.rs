//! artifactd's requests to itself, through its own listener: background
//! fetches that must take the normal path (cache lock, verification,
//! commit), and the members of virtual repositories.

use std::time::Duration;

pub struct Loopback {
    /// `http://host:port` of the listener.
    base: String,
    http: reqwest::Client,
}

impl Loopback {
    /// A client of the listener at `listen` (an unspecified address is
    /// reached on loopback). No total timeout: bodies of any size stream
    /// through; the fills behind them have their own upstream timeouts.
    pub fn new(listen: &str) -> anyhow::Result<Loopback> {
        let address: std::net::SocketAddr = listen.parse()?;
        let ip = match address.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        Ok(Loopback {
            base: format!("http://{}", std::net::SocketAddr::new(ip, address.port())),
            http: reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(10))
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
