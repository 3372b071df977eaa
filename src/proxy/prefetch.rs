//! Background fetches through artifactd's own listener: tag manifests
//! for clients that only ever `HEAD` them, and the signatures of images.
//!
//! **Signatures follow their image** on a remote with `follow_signatures:
//! true`. When a manifest comes from the upstream, its cosign signature and attestation (`sha256-<hex>.sig`,
//! `.att`), its OCI referrers and the referrers tag are fetched too, with
//! every manifest and blob they name, so that verifying the image keeps
//! working while the registry is down, on every node that pulled it.
//! What is absent upstream is remembered as such (`cache.negative_ttl`).
//! It is a choice per remote: each manifest fetched costs four more
//! manifest requests upstream, which a rate-limited registry counts.
//!
//! **HEAD-only tags.**
//! containerd resolves a tag with `HEAD /v2/{image}/manifests/{tag}` and then
//! fetches by digest. A HEAD miss fills the cache like a GET, but a HEAD on
//! an expired tag would wait for a revalidation in line; within the
//! remote's `stale_if_error` period it is answered from cache at once while
//! artifactd GETs the tag itself in the background, through its own
//! listener and so through the normal fill (lock, digest check,
//! cross-link): stale-while-revalidate for HEAD only; GETs revalidate in
//! line.
//!
//! Background GETs of one tag are at most one per [`REPEAT`].

use super::artifact::Artifact;
use crate::loopback::Loopback;
use filters::ecosystem::oci::{self, Kind};
use pingora_memory_cache::MemoryCache;
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// How often one tag is fetched in the background at most.
const REPEAT: Duration = Duration::from_secs(5);
/// How often the signatures of one manifest are looked for at most.
const SIGNATURES_REPEAT: Duration = Duration::from_secs(300);
/// Marks a request of these background fetches, so that what they fetch
/// does not start fetches of its own.
pub const MARK: &str = "x-artifactd-prefetch";
/// The most manifests one signature walk fetches.
const MAX_WALK: usize = 64;

pub struct Prefetcher {
    recent: MemoryCache<u64, ()>,
    /// artifactd's own listener, which the background GETs go through.
    loopback: Loopback,
    background: tokio::runtime::Handle,
}

impl Prefetcher {
    pub fn new(loopback: Loopback, background: tokio::runtime::Handle) -> Prefetcher {
        Prefetcher {
            recent: MemoryCache::new(4096),
            loopback,
            background,
        }
    }

    /// Whether `artifact` is a tag manifest a HEAD asked for.
    pub fn applies(artifact: &Artifact, method: &http::Method) -> bool {
        method == http::Method::HEAD
            && artifact
                .oci()
                .as_ref()
                .is_some_and(|oci| oci.kind == Kind::TagManifest)
    }

    /// Whether `artifact` is a manifest whose signatures are looked for
    /// once it came from the upstream: not for this module's own fetches.
    pub fn follows_signatures(artifact: &Artifact, req: &http::request::Parts) -> bool {
        artifact.remote.follow_signatures
            && req.method == http::Method::GET
            && !req.headers.contains_key(MARK)
            && artifact
                .oci()
                .is_some_and(|oci| matches!(oci.kind, Kind::TagManifest | Kind::DigestManifest))
    }

    /// Fetches the signatures, attestations and referrers of manifest
    /// `digest` of `artifact`'s repository through artifactd, in the
    /// background, with what they name.
    pub fn signatures(&self, artifact: &Artifact, digest: &str) {
        let Some(oci) = artifact.oci() else { return };
        let repository = oci.client_base.clone();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (&repository, digest).hash(&mut hasher);
        let id = hasher.finish();
        if self.recent.get(&id).0.is_some() {
            return;
        }
        self.recent.put(&id, (), Some(SIGNATURES_REPEAT));
        let loopback = self.loopback.clone();
        let paths = oci::signature_paths(digest);
        self.background
            .spawn(async move { walk(&loopback, &repository, paths).await });
    }

    /// GETs the tag manifest of `artifact` through artifactd, in the
    /// background, unless that happened moments ago.
    pub fn tag_manifest(&self, artifact: &Artifact) {
        let Some(oci) = artifact.oci() else { return };
        let path = format!("/v2/{}/{}", artifact.remote.name, artifact.key_parts[0]);
        let accept = oci.accept.header_value();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (&path, &accept).hash(&mut hasher);
        let id = hasher.finish();
        if self.recent.get(&id).0.is_some() {
            return;
        }
        self.recent.put(&id, (), Some(REPEAT));
        let request = self
            .loopback
            .request(reqwest::Method::GET, &path)
            .header(http::header::ACCEPT, accept);
        self.background.spawn(async move {
            let outcome = match request.send().await {
                Ok(resp) => resp.bytes().await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = outcome {
                log::info!("background fetch of {path} failed: {e}");
            }
        });
    }
}

/// Fetches each of `paths` below `repository`, then every manifest and
/// blob the manifests found name.
async fn walk(loopback: &Loopback, repository: &str, paths: Vec<String>) {
    let mut pending = paths;
    let mut seen = std::collections::HashSet::new();
    while let Some(path) = pending.pop() {
        if !seen.insert(path.clone()) || seen.len() > MAX_WALK {
            continue;
        }
        let url = format!("{repository}/{path}");
        let Some((body, media_type)) = fetch(loopback, &url, oci::ANY_MANIFEST).await else {
            continue;
        };
        if path.starts_with("blobs/") {
            continue;
        }
        // A tag is cached per `Accept`: also for a client that asks for
        // exactly the type the registry answered (oras asks so).
        let is_tag = path.starts_with("manifests/") && !path.contains(':');
        if let Some(media_type) = media_type.filter(|_| is_tag) {
            fetch(loopback, &url, &media_type).await;
        }
        for named in oci::manifest_references(&body) {
            pending.push(match named {
                oci::Named::Blob(digest) => format!("blobs/{digest}"),
                oci::Named::Manifest(digest) => format!("manifests/{digest}"),
            });
        }
    }
}

/// GETs `url` through artifactd: the body and its media type, on a 200.
async fn fetch(
    loopback: &Loopback,
    url: &str,
    accept: &str,
) -> Option<(bytes::Bytes, Option<String>)> {
    let request = loopback
        .request(reqwest::Method::GET, url)
        .header(http::header::ACCEPT, accept)
        .header(MARK, "1");
    match request.send().await {
        Ok(resp) if resp.status() == reqwest::StatusCode::OK => {
            let media_type = (resp.headers().get(http::header::CONTENT_TYPE))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            resp.bytes().await.ok().map(|body| (body, media_type))
        }
        Ok(_) => None,
        Err(e) => {
            log::info!("background fetch of {url} failed: {e}");
            None
        }
    }
}
