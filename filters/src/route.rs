//! Maps a request path onto what artifactd should do with it.
//!
//! Only the path is looked at here; methods are checked by the handler of
//! each route, so that a wrong method gets 405 rather than 404.

/// The administrative endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRoute {
    /// `GET /`: name, version and remotes.
    Root,
    /// `GET /health` and `GET /readyz`: readiness, as JSON: the body store
    /// answers a read; the catalog is reported but does not fail it.
    Health,
    /// `GET /livez`: the process serves requests (nothing else is asked).
    Live,
    /// `GET /config`: the effective configuration, secrets redacted.
    Config,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `GET /status`: the status page (HTML, or JSON when asked for).
    Status,
    /// `PUT /cache/flush[?remote=NAME][&pattern=REGEX]`.
    Flush,
    /// `POST /cache-artifact`: start a job that pre-fills the cache.
    CacheArtifact,
    /// `GET /api/v1/audit?…`: who received which artifact.
    Audit,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Admin(AdminRoute),
    /// `/api/v1/remote/{remote}/{path}` or the older `/api/{remote}/{path}`.
    /// `raw_path` is still percent-encoded and not yet validated.
    Artifact {
        remote: &'a str,
        raw_path: &'a str,
    },
    /// `/v2` and everything under it: the OCI distribution API, parsed
    /// further by [`crate::ecosystem::oci::route`]. `after_v2` starts with `/` or is empty.
    V2 {
        after_v2: &'a str,
    },
    /// `GET /artifacts/{remote}`: the catalog's rows for one remote.
    ArtifactList {
        remote: &'a str,
    },
    /// `/api/v1/cache` and below: the cache API.
    CacheApi(CacheApiRoute),
    /// `GET /api/v1/jobs/{id}`: a background job's status.
    Job {
        id: &'a str,
    },
    NotFound,
}

/// The cache API's endpoints by path; the handler checks the method (and
/// answers 405 with this list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheApiRoute {
    /// `GET /api/v1/cache[?remote=&prefix=&limit=&cursor=]`, also as
    /// `/api/v1/artifacts` (the reference system's discovery route).
    List,
    /// `GET /api/v1/cache/usage`
    Usage,
    /// `POST /api/v1/cache/verify[?remote=][&repair]`
    Verify,
    /// `GET|DELETE /api/v1/cache/{remote}/{path}`; `raw_path` is still
    /// percent-encoded and may be empty.
    Artifact { remote: String, raw_path: String },
}

impl CacheApiRoute {
    /// Routes what follows `/api/v1/cache` (empty or starting with `/`).
    fn of(rest: &str) -> CacheApiRoute {
        match rest.trim_end_matches('/') {
            "" => CacheApiRoute::List,
            "/usage" => CacheApiRoute::Usage,
            "/verify" => CacheApiRoute::Verify,
            rest => {
                let rest = &rest[1..];
                let (remote, raw_path) = rest.split_once('/').unwrap_or((rest, ""));
                CacheApiRoute::Artifact {
                    remote: remote.to_string(),
                    raw_path: raw_path.to_string(),
                }
            }
        }
    }
}

const ARTIFACT_PREFIXES: [&str; 2] = ["/api/v1/remote/", "/api/"];

/// Routes `path` (the URL path without its query string).
///
/// ```
/// use filters::route::{route, Route};
/// assert_eq!(
///     route("/api/v1/remote/github/a/b.tgz"),
///     Route::Artifact { remote: "github", raw_path: "a/b.tgz" }
/// );
/// ```
pub fn route(path: &str) -> Route<'_> {
    let admin = match path {
        "/" => Some(AdminRoute::Root),
        "/health" | "/readyz" => Some(AdminRoute::Health),
        "/livez" => Some(AdminRoute::Live),
        "/config" => Some(AdminRoute::Config),
        "/metrics" => Some(AdminRoute::Metrics),
        "/status" => Some(AdminRoute::Status),
        "/cache/flush" => Some(AdminRoute::Flush),
        "/cache-artifact" => Some(AdminRoute::CacheArtifact),
        "/api/v1/audit" | "/api/v1/audit/" => Some(AdminRoute::Audit),
        _ => None,
    };
    if let Some(admin) = admin {
        return Route::Admin(admin);
    }
    if let Some(after_v2) = path.strip_prefix("/v2") {
        if after_v2.is_empty() || after_v2.starts_with('/') {
            return Route::V2 { after_v2 };
        }
    }
    if let Some(rest) = path.strip_prefix("/api/v1/cache") {
        if rest.is_empty() || rest.starts_with('/') {
            return Route::CacheApi(CacheApiRoute::of(rest));
        }
    }
    // The reference system's discovery route: the same listing.
    if matches!(path, "/api/v1/artifacts" | "/api/v1/artifacts/") {
        return Route::CacheApi(CacheApiRoute::List);
    }
    if let Some(id) = path.strip_prefix("/api/v1/jobs/") {
        if !id.is_empty() && !id.contains('/') {
            return Route::Job { id };
        }
    }
    if let Some(remote) = path.strip_prefix("/artifacts/") {
        if !remote.is_empty() && !remote.contains('/') {
            return Route::ArtifactList { remote };
        }
    }
    for prefix in ARTIFACT_PREFIXES {
        if let Some(rest) = path.strip_prefix(prefix) {
            return match rest.split_once('/') {
                Some((remote, raw_path)) if !remote.is_empty() => {
                    Route::Artifact { remote, raw_path }
                }
                _ => Route::NotFound,
            };
        }
    }
    Route::NotFound
}

/// The first value of query parameter `name`, percent- and `+`-decoded.
///
/// ```
/// assert_eq!(filters::route::query_param(Some("a=1&remote=my%2Dr"), "remote").as_deref(), Some("my-r"));
/// ```
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query_params(query, name).next()
}

/// Every parameter of a query, decoded, in order.
pub fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
}

/// Every value of query parameter `name`, in order, decoded like
/// [`query_param`] (token requests repeat `scope`).
pub fn query_params<'q>(
    query: Option<&'q str>,
    name: &'q str,
) -> impl Iterator<Item = String> + 'q {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(move |(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_api_and_jobs_come_before_the_older_artifact_route() {
        assert_eq!(route("/api/v1/cache"), Route::CacheApi(CacheApiRoute::List));
        assert_eq!(
            route("/api/v1/artifacts"),
            Route::CacheApi(CacheApiRoute::List)
        );
        assert_eq!(
            route("/api/v1/cache/"),
            Route::CacheApi(CacheApiRoute::List)
        );
        assert_eq!(
            route("/api/v1/cache/usage"),
            Route::CacheApi(CacheApiRoute::Usage)
        );
        assert_eq!(
            route("/api/v1/cache/verify/"),
            Route::CacheApi(CacheApiRoute::Verify)
        );
        assert_eq!(
            route("/api/v1/cache/gen/a/b.tgz"),
            Route::CacheApi(CacheApiRoute::Artifact {
                remote: "gen".into(),
                raw_path: "a/b.tgz".into()
            })
        );
        assert_eq!(
            route("/api/v1/cache/usage/x"),
            Route::CacheApi(CacheApiRoute::Artifact {
                remote: "usage".into(),
                raw_path: "x".into()
            })
        );
        assert_eq!(route("/api/v1/jobs/7"), Route::Job { id: "7" });
        assert_eq!(
            route("/api/v1/cachex/a"),
            Route::Artifact {
                remote: "v1",
                raw_path: "cachex/a"
            }
        );
        assert_eq!(
            route("/cache-artifact"),
            Route::Admin(AdminRoute::CacheArtifact)
        );
    }

    #[test]
    fn query_params() {
        assert_eq!(
            query_param(Some("remote=x"), "remote").as_deref(),
            Some("x")
        );
        assert_eq!(
            query_param(Some("a&remote=a+b"), "remote").as_deref(),
            Some("a b")
        );
        assert_eq!(query_param(Some("remotes=x"), "remote"), None);
        assert_eq!(query_param(None, "remote"), None);
        let scopes: Vec<_> =
            super::query_params(Some("scope=a%3Ab&x=1&scope=c"), "scope").collect();
        assert_eq!(scopes, ["a:b", "c"]);
    }

    #[test]
    fn admin_routes() {
        assert_eq!(route("/"), Route::Admin(AdminRoute::Root));
        assert_eq!(route("/status"), Route::Admin(AdminRoute::Status));
        assert_eq!(route("/health"), Route::Admin(AdminRoute::Health));
        assert_eq!(route("/config"), Route::Admin(AdminRoute::Config));
        assert_eq!(route("/metrics"), Route::Admin(AdminRoute::Metrics));
        assert_eq!(route("/cache/flush"), Route::Admin(AdminRoute::Flush));
        assert_eq!(route("/readyz"), Route::Admin(AdminRoute::Health));
        assert_eq!(route("/livez"), Route::Admin(AdminRoute::Live));
        assert_eq!(route("/healthz"), Route::NotFound);
        assert_eq!(
            route("/artifacts/github"),
            Route::ArtifactList { remote: "github" }
        );
        assert_eq!(route("/artifacts/"), Route::NotFound);
    }

    #[test]
    fn artifact_routes_new_and_old_layout() {
        let expected = Route::Artifact {
            remote: "github",
            raw_path: "owner/repo/x.tgz",
        };
        assert_eq!(route("/api/v1/remote/github/owner/repo/x.tgz"), expected);
        assert_eq!(route("/api/github/owner/repo/x.tgz"), expected);
        assert_eq!(
            route("/api/v1/remote/pypi/simple/"),
            Route::Artifact {
                remote: "pypi",
                raw_path: "simple/"
            }
        );
    }

    #[test]
    fn artifact_route_keeps_empty_and_absolute_paths_for_validation() {
        assert_eq!(
            route("/api/v1/remote/github/"),
            Route::Artifact {
                remote: "github",
                raw_path: ""
            }
        );
        assert_eq!(
            route("/api/v1/remote/github//etc/passwd"),
            Route::Artifact {
                remote: "github",
                raw_path: "/etc/passwd"
            }
        );
    }

    #[test]
    fn incomplete_artifact_routes_are_not_found() {
        assert_eq!(route("/api/v1/remote/github"), Route::NotFound);
        assert_eq!(route("/api/v1/remote//x"), Route::NotFound);
        assert_eq!(route("/v3/x"), Route::NotFound);
        assert_eq!(route("/v2x"), Route::NotFound);
    }

    #[test]
    fn registry_api_routes() {
        assert_eq!(route("/v2"), Route::V2 { after_v2: "" });
        assert_eq!(route("/v2/"), Route::V2 { after_v2: "/" });
        assert_eq!(
            route("/v2/hub/a/manifests/1"),
            Route::V2 {
                after_v2: "/hub/a/manifests/1"
            }
        );
    }
}
