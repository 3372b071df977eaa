//! Where a link in an upstream index document points, and the URL that
//! brings it back through artifactd instead.
//!
//! Index documents (PyPI simple pages, npm package documents, Helm
//! `index.yaml`) name their files by absolute, root-relative or relative
//! URLs. A link is resolved against the page it came from (RFC 3986); if it
//! lands under one of the remote's upstreams it becomes the same path under
//! the remote's proxy URL, keeping the query and fragment (PyPI's
//! `#sha256=`). A link elsewhere is left pointing where it did, made
//! absolute so that it still works from the proxy's address.

use url::Url;

/// One upstream of a remote: a base URL whose paths the remote serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    base: Url,
    /// Remote paths this upstream answers; empty: every path. A PyPI remote
    /// whose index and files live on different hosts sends only `simple/`
    /// and `pypi/` to the index host.
    only: Vec<&'static str>,
}

impl Upstream {
    /// `base` is an absolute `http(s)` URL; a trailing `/` is implied.
    pub fn new(base: &str, only: &[&'static str]) -> Result<Upstream, url::ParseError> {
        let mut base = Url::parse(base)?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        base.set_query(None);
        base.set_fragment(None);
        Ok(Upstream {
            base,
            only: only.to_vec(),
        })
    }

    /// The remote path of `url` if this upstream serves it.
    fn remote_path<'u>(&self, url: &'u Url) -> Option<&'u str> {
        let same_origin = url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default();
        if !same_origin {
            return None;
        }
        let path = url.path().strip_prefix(self.base.path())?;
        let allowed = self.only.is_empty() || self.only.iter().any(|p| path.starts_with(p));
        allowed.then_some(path)
    }
}

/// A link rewritten for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// What the client is given.
    pub url: String,
    /// The remote path the link names (still percent-encoded, no query or
    /// fragment), when it comes back through the remote.
    pub remote_path: Option<String>,
}

/// Maps the links of one upstream page.
#[derive(Debug, Clone)]
pub struct LinkMap {
    page: Url,
    upstreams: Vec<Upstream>,
    /// The remote's URL as the client sees it, ending in `/`:
    /// `https://cache.example/api/v1/remote/pypi/`.
    proxy_base: String,
}

impl LinkMap {
    /// `page` is the upstream URL the document was fetched from.
    pub fn new(
        page: &str,
        upstreams: Vec<Upstream>,
        proxy_base: &str,
    ) -> Result<LinkMap, url::ParseError> {
        let mut proxy_base = proxy_base.to_string();
        if !proxy_base.ends_with('/') {
            proxy_base.push('/');
        }
        Ok(LinkMap {
            page: Url::parse(page)?,
            upstreams,
            proxy_base,
        })
    }

    /// The client's URL for `href` (as written in the document, already
    /// unescaped from its markup). A link that cannot be parsed is kept.
    pub fn map(&self, href: &str) -> Mapped {
        let Ok(url) = self.page.join(href.trim()) else {
            return Mapped {
                url: href.to_string(),
                remote_path: None,
            };
        };
        let found = self.upstreams.iter().find_map(|u| u.remote_path(&url));
        match found {
            Some(path) => {
                let mut out = String::with_capacity(self.proxy_base.len() + href.len());
                out.push_str(&self.proxy_base);
                out.push_str(path);
                if let Some(query) = url.query() {
                    out.push('?');
                    out.push_str(query);
                }
                if let Some(fragment) = url.fragment() {
                    out.push('#');
                    out.push_str(fragment);
                }
                Mapped {
                    url: out,
                    remote_path: Some(path.to_string()),
                }
            }
            None => Mapped {
                url: url.to_string(),
                remote_path: None,
            },
        }
    }

    /// The proxy URL of a remote path (`simple/demo/`).
    pub fn proxy_url(&self, remote_path: &str) -> String {
        format!("{}{}", self.proxy_base, remote_path.trim_start_matches('/'))
    }
}

/// Characters a path segment keeps as they are (RFC 3986 `pchar` minus
/// the few that confuse clients).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'+')
    .remove(b'!')
    .remove(b'@');

/// Percent-encodes a decoded remote path for a URL, keeping its `/`.
///
/// ```
/// assert_eq!(filters::links::encode_path("a b/c%d.whl"), "a%20b/c%25d.whl");
/// ```
pub fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|segment| percent_encoding::utf8_percent_encode(segment, PATH_SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// The remote's URL as a client sees it: the configured `public_url`, else
/// the request's `Host` with `X-Forwarded-Proto` (default `http`).
///
/// ```
/// let base = filters::links::proxy_base(None, Some("cache:8080"), None, "pypi");
/// assert_eq!(base, "http://cache:8080/api/v1/remote/pypi/");
/// let base = filters::links::proxy_base(Some("https://m.example/"), Some("x"), None, "npm");
/// assert_eq!(base, "https://m.example/api/v1/remote/npm/");
/// ```
pub fn proxy_base(
    public_url: Option<&str>,
    host: Option<&str>,
    forwarded_proto: Option<&str>,
    remote: &str,
) -> String {
    let origin = match public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let proto = match forwarded_proto.map(str::trim) {
                Some(p) if p.eq_ignore_ascii_case("https") => "https",
                _ => "http",
            };
            format!("{proto}://{}", host.unwrap_or("localhost"))
        }
    };
    format!("{origin}/api/v1/remote/{remote}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pypiserver() -> LinkMap {
        let files = Upstream::new("http://127.0.0.1:3141", &[]).unwrap();
        LinkMap::new(
            "http://127.0.0.1:3141/simple/demo/",
            vec![files],
            "http://cache/api/v1/remote/pypi",
        )
        .unwrap()
    }

    #[test]
    fn root_relative_relative_and_absolute_links_come_back_through_the_remote() {
        let map = pypiserver();
        let m = map.map("/packages/demo-1.0.whl#sha256=ab");
        assert_eq!(
            m.url,
            "http://cache/api/v1/remote/pypi/packages/demo-1.0.whl#sha256=ab"
        );
        assert_eq!(m.remote_path.as_deref(), Some("packages/demo-1.0.whl"));
        let m = map.map("../../packages/x.tar.gz?x=1");
        assert_eq!(
            m.url,
            "http://cache/api/v1/remote/pypi/packages/x.tar.gz?x=1"
        );
        let m = map.map("http://127.0.0.1:3141/packages/y.whl");
        assert_eq!(m.remote_path.as_deref(), Some("packages/y.whl"));
        assert_eq!(
            map.map("other/").url,
            "http://cache/api/v1/remote/pypi/simple/demo/other/"
        );
    }

    #[test]
    fn foreign_links_stay_where_they_point_but_become_absolute() {
        let map = pypiserver();
        let m = map.map("https://elsewhere.example/a.whl");
        assert_eq!(
            (m.url.as_str(), m.remote_path),
            ("https://elsewhere.example/a.whl", None)
        );
        // Another port is another origin.
        assert_eq!(map.map("http://127.0.0.1:9/x").remote_path, None);
    }

    #[test]
    fn an_upstream_under_a_base_path_maps_only_what_is_below_it() {
        let files = Upstream::new("https://files.example/pypi", &[]).unwrap();
        let index = Upstream::new("https://index.example", &["simple/", "pypi/"]).unwrap();
        let map = LinkMap::new(
            "https://index.example/simple/demo/",
            vec![files, index],
            "https://cache/api/v1/remote/p/",
        )
        .unwrap();
        let m = map.map("https://files.example/pypi/packages/a.whl");
        assert_eq!(m.remote_path.as_deref(), Some("packages/a.whl"));
        assert_eq!(
            map.map("https://files.example/other/a.whl").remote_path,
            None
        );
        assert_eq!(
            map.map("/simple/other/").remote_path.as_deref(),
            Some("simple/other/")
        );
        assert_eq!(
            map.map("/about").remote_path,
            None,
            "index host only for its paths"
        );
    }
}
