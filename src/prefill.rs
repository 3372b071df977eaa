//! `POST /cache-artifact`: pre-fill the cache with the release assets of a
//! project that match a pattern (seed 003's endpoint, seed 001's
//! `discover_artifacts`), as a background job.
//!
//! The releases are listed from a GitHub-style REST API
//! (`{releases_api}/repos/{project}/releases`, followed through its `Link:
//! rel="next"` pages); each asset whose download URL lies under the
//! remote's `base_url`, whose path matches the pattern and which the
//! remote's patterns allow is then fetched through artifactd's own listener,
//! so it takes the normal path (cache lock, verification, commit) and is
//! cached exactly as a client's request would have cached it.

use crate::app::App;
use crate::config::{Remote, RemoteKind, Upstream};
use crate::jobs::Job;
use crate::reply::Reply;
use filters::{Access, PatternSet};
use futures::StreamExt;
use http::StatusCode;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Release pages followed at most (100 releases each).
const MAX_PAGES: usize = 50;
/// Assets fetched at once.
const CONCURRENCY: usize = 4;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub remote: String,
    /// `owner/repository`.
    pub project: String,
    /// Python `re.search` pattern on the asset's path in the remote.
    #[serde(alias = "include_pattern")]
    pub pattern: String,
}

#[derive(Debug, Deserialize)]
struct Release {
    #[serde(default)]
    assets: Vec<Asset>,
}

#[derive(Debug, Deserialize)]
struct Asset {
    browser_download_url: String,
}

/// Validates the request and starts the job.
pub fn start(app: &Arc<App>, body: &[u8]) -> Reply {
    let request: Request = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            return Reply::text(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"remote\", \"project\", \"pattern\"}}: {e}"),
            )
        }
    };
    let remote = match app.config().remotes.get(&request.remote) {
        None => {
            return Reply::text(
                StatusCode::NOT_FOUND,
                format!("unknown remote '{}'", request.remote),
            )
        }
        Some(r) if r.kind != RemoteKind::Remote || !r.ecosystem.has_release_assets() => {
            return Reply::text(
                StatusCode::BAD_REQUEST,
                format!("'{}' is not a generic remote with releases", r.name),
            )
        }
        Some(r) => r.clone(),
    };
    let valid_project = request.project.split('/').count() == 2
        && request.project.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
    if !valid_project {
        return Reply::text(
            StatusCode::BAD_REQUEST,
            format!("project {:?} is not owner/repository", request.project),
        );
    }
    let pattern = match PatternSet::new(&[request.pattern.as_str()]) {
        Ok(pattern) => pattern,
        Err(e) => return Reply::text(StatusCode::BAD_REQUEST, format!("pattern: {e}")),
    };
    let job_app = app.clone();
    let id = app
        .jobs
        .start("cache-artifact", &app.background, move |job| {
            run(job_app, remote, request.project, pattern, job)
        });
    log::info!("cache-artifact job {id} started");
    crate::jobs::started_reply(id)
}

async fn run(
    app: Arc<App>,
    remote: Arc<Remote>,
    project: String,
    pattern: PatternSet,
    job: Job,
) -> Result<(), String> {
    let upstream = remote.upstream.as_ref().ok_or("remote without upstream")?;
    let api = remote
        .releases_api
        .as_deref()
        .ok_or("remote without releases_api")?;
    let urls = list_assets(
        &app,
        &remote,
        &format!("{api}/repos/{project}/releases?per_page=100"),
    )
    .await?;
    let mut wanted = Vec::new();
    for url in urls {
        let Some(raw_path) = path_in_remote(upstream, &url) else {
            continue;
        };
        let Ok(path) =
            filters::validate_artifact_path(&raw_path, app.config().server.max_path_bytes)
        else {
            continue;
        };
        if !pattern.is_match(&path.decoded) {
            continue;
        }
        if remote.policy.classify(&path.decoded) == Access::Denied {
            job.failed(path.decoded, "not allowed by the remote's patterns".into());
            continue;
        }
        wanted.push(raw_path);
    }
    job.set_total(wanted.len() as u64);
    futures::stream::iter(wanted)
        .for_each_concurrent(CONCURRENCY, |raw_path| {
            let (app, job, remote) = (&app, &job, &remote.name);
            async move {
                match fetch(app, remote, &raw_path).await {
                    Ok(bytes) => job.succeeded(raw_path, bytes),
                    Err(reason) => job.failed(raw_path, reason),
                }
            }
        })
        .await;
    Ok(())
}

/// Every asset download URL of every release page.
async fn list_assets(app: &App, remote: &Remote, first: &str) -> Result<Vec<String>, String> {
    let builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(app.config().server.connect_timeout)
        .timeout(app.config().server.read_timeout * 2)
        .user_agent(concat!("artifactd/", env!("CARGO_PKG_VERSION")));
    let http = remote
        .upstream_tls
        .configure_client(builder)
        .build()
        .map_err(|e| e.to_string())?;
    let auth = remote.upstream.as_ref().and_then(|u| u.basic_auth.clone());
    let mut urls = Vec::new();
    let mut next = Some(first.to_string());
    for _ in 0..MAX_PAGES {
        let Some(url) = next.take() else { break };
        let mut request = http
            .get(&url)
            .header("accept", "application/vnd.github+json");
        if let Some(auth) = &auth {
            request = request.header(http::header::AUTHORIZATION, auth);
        }
        let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        next = response
            .headers()
            .get(http::header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_link);
        let releases: Vec<Release> = response
            .json()
            .await
            .map_err(|e| format!("{url}: not a release list: {e}"))?;
        urls.extend(
            releases
                .into_iter()
                .flat_map(|r| r.assets)
                .map(|a| a.browser_download_url),
        );
    }
    Ok(urls)
}

/// The `rel="next"` target of a `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

/// The remote path (still percent-encoded) of `url`, when it lies under
/// the remote's base URL.
fn path_in_remote(upstream: &Upstream, url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let tls = match uri.scheme_str()? {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let same_origin = tls == upstream.tls
        && uri.host()?.eq_ignore_ascii_case(&upstream.host)
        && port == upstream.port;
    if !same_origin {
        return None;
    }
    let path = uri
        .path()
        .strip_prefix(&upstream.base_path)?
        .strip_prefix('/')?;
    (!path.is_empty()).then(|| path.to_string())
}

/// GETs one asset through artifactd itself; the bytes it had.
async fn fetch(app: &App, remote: &str, raw_path: &str) -> Result<u64, String> {
    let response = app
        .loopback
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/remote/{remote}/{raw_path}"),
        )
        .timeout(Duration::from_secs(24 * 3600))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != StatusCode::OK {
        return Err(format!("answered {}", response.status()));
    }
    let mut response = response;
    let mut bytes = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        bytes += chunk.len() as u64;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_and_paths_under_the_remote() {
        let header = r#"<https://x/repos/a/b/releases?page=2>; rel="next", <https://x/repos/a/b/releases?page=5>; rel="last""#;
        assert_eq!(
            next_link(header).as_deref(),
            Some("https://x/repos/a/b/releases?page=2")
        );
        assert_eq!(next_link(r#"<https://x/1>; rel="prev""#), None);
        let upstream = Upstream {
            tls: true,
            host: "code.example".into(),
            port: 443,
            base_path: "/mirror".into(),
            basic_auth: None,
        };
        assert_eq!(
            path_in_remote(
                &upstream,
                "https://code.example/mirror/a/b/releases/download/v1/t%20x.tgz"
            )
            .as_deref(),
            Some("a/b/releases/download/v1/t%20x.tgz")
        );
        assert_eq!(
            path_in_remote(&upstream, "https://other.example/mirror/a"),
            None
        );
        assert_eq!(
            path_in_remote(&upstream, "http://code.example/mirror/a"),
            None
        );
        assert_eq!(
            path_in_remote(&upstream, "https://code.example/mirrored/a"),
            None
        );
    }
}
