//! What an artifact request asks for, once routed: plain data that every
//! phase helper reads (a leaf of the proxy, so the helpers that read it
//! need nothing of each other).

use crate::config::Remote;
use filters::ecosystem::oci::{AcceptClass, Kind};
use filters::ecosystem::{Document, Routed};
use filters::ArtifactClass;
use std::sync::Arc;

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
        }
    }

    pub fn document(&self) -> Option<&Document> {
        match &self.kind {
            ArtifactKind::Document(document) => Some(document),
            _ => None,
        }
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
