//! Revalidating tag manifests for clients that only ever `HEAD` them.
//!
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
use filters::ecosystem::oci::Kind;
use pingora_memory_cache::MemoryCache;
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// How often one tag is fetched in the background at most.
const REPEAT: Duration = Duration::from_secs(5);

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
