//! What an artifact request asks for, once routed: plain data that every
//! phase helper reads (a leaf of the proxy, so the helpers that read it
//! need nothing of each other).

use crate::config::Remote;
use filters::ecosystem::oci::{AcceptClass, Kind};
use filters::ecosystem::{Document, PackageVersion, Routed};
use filters::firewall::{Finding, Shown};
use filters::ArtifactClass;
use std::sync::Arc;
use std::time::Duration;

/// What `request_filter` learned about an artifact request, for the later
/// phases (cache key, peer, upstream request, cacheability).
pub struct Artifact {
    pub remote: Arc<Remote>,
    /// Still percent-encoded: what the upstream is asked for.
    pub raw_path: String,
    /// The cache key after the remote name. The first part is the decoded
    /// path that patterns matched and the catalog lists; the rest tell
    /// variants apart (an `Accept` class, a query).
    pub key_parts: Vec<String>,
    pub class: ArtifactClass,
    pub kind: ArtifactKind,
    /// What the artifact firewall made of it ([`crate::firewall::judge`]).
    pub judged: Judged,
}

/// What the artifact firewall decided for a request it lets through.
#[derive(Debug, Default, Clone)]
pub struct Judged {
    /// Refused while younger than this (by the upstream's
    /// `Last-Modified`): a remote's quarantine or a `min_age` rule.
    pub min_age: Option<Duration>,
    /// A dry-run rule that would have refused it: served, marked, counted.
    pub dry_run: Option<Finding>,
    /// What an index document of one package leaves out or marks.
    pub shown: Shown,
    /// The configuration generation it was judged under, which firewall
    /// changes bump too (kept rewrites of documents are told apart by it).
    pub generation: u64,
}

/// What kind of thing an artifact request asks for.
pub enum ArtifactKind {
    /// A file, stored as the upstream sent it.
    File,
    /// An index document, rewritten for each client.
    Document(Document),
    /// The OCI distribution API of a docker remote.
    Oci(OciArtifact),
}

impl Artifact {
    /// A request routed by its remote's ecosystem.
    pub fn routed(remote: Arc<Remote>, routed: Routed) -> Artifact {
        Artifact {
            remote,
            raw_path: routed.upstream_path,
            key_parts: routed.key_parts,
            class: routed.class,
            kind: match routed.document {
                Some(document) => ArtifactKind::Document(document),
                None => ArtifactKind::File,
            },
            judged: Judged::default(),
        }
    }

    pub fn document(&self) -> Option<&Document> {
        match &self.kind {
            ArtifactKind::Document(document) => Some(document),
            _ => None,
        }
    }

    /// Whether a response to it delivers an artifact someone may later ask
    /// about (the audit trail): a file, an image's manifest or blob; not
    /// an index document, a tag list or referrers.
    pub fn is_release(&self) -> bool {
        match &self.kind {
            ArtifactKind::File => true,
            ArtifactKind::Document(_) => false,
            ArtifactKind::Oci(oci) => matches!(
                oci.kind,
                Kind::TagManifest | Kind::DigestManifest | Kind::Blob
            ),
        }
    }

    /// The package and version it belongs to: by its format's file names,
    /// or an image's repository and reference (tag or digest).
    pub fn release(&self) -> Option<PackageVersion> {
        match &self.kind {
            ArtifactKind::File => (self.remote.ecosystem).package_of(self.key_parts.first()?),
            ArtifactKind::Document(_) => None,
            ArtifactKind::Oci(oci) => {
                let reference = match &oci.digest {
                    Some(digest) => digest.clone(),
                    None => self.raw_path.rsplit('/').next()?.to_string(),
                };
                Some(PackageVersion {
                    name: oci.name.clone(),
                    version: reference,
                })
            }
        }
    }

    /// The decoded remote path (the cache key's path), for logs and the
    /// audit trail.
    pub fn path(&self) -> &str {
        self.key_parts.first().map_or("", String::as_str)
    }

    /// The release a response resolved this request to, when the request
    /// did not name it by digest: an image tag's manifest, by the digest
    /// it is answered with.
    pub fn resolved_release(&self, resp: &pingora::http::ResponseHeader) -> Option<PackageVersion> {
        let oci = self.oci().filter(|oci| oci.digest.is_none())?;
        let digest = resp.headers.get("docker-content-digest")?.to_str().ok()?;
        Some(PackageVersion {
            name: oci.name.clone(),
            version: digest.to_string(),
        })
    }

    pub fn oci(&self) -> Option<&OciArtifact> {
        match &self.kind {
            ArtifactKind::Oci(oci) => Some(oci),
            _ => None,
        }
    }
}

/// What an OCI request asks for, once routed to its remote.
pub struct OciArtifact {
    /// Repository name upstream (`library/` added for Docker Hub).
    pub name: String,
    pub kind: Kind,
    /// The digest the body must have: the URL's, for blobs and manifests
    /// by digest.
    pub digest: Option<String>,
    pub accept: AcceptClass,
    /// The request path up to and including the repository name as the
    /// client wrote it (`/v2/hub/nginx`), for rewriting pagination links.
    pub client_base: String,
}
