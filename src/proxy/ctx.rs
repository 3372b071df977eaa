//! Per-request state shared across the proxy phases.

use super::upstream::Redirect;
use crate::config::Remote;
use crate::lifecycle::InFlightGuard;
use crate::metrics::Outcome;
use filters::breaker::Admit;
use filters::ecosystem::oci::{AcceptClass, Kind};
use filters::ecosystem::{Document, Routed};
use filters::ArtifactClass;
use std::sync::Arc;
use std::time::Instant;

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

pub struct RequestCtx {
    /// Counts this request as in flight until pingora drops the context.
    _in_flight: InFlightGuard,
    pub started: Instant,
    /// Set for requests routed to a remote (cached) repository.
    pub artifact: Option<Artifact>,
    /// Remote name for logs and metrics, also for local repositories.
    pub remote_name: Option<String>,
    /// Set when `request_filter` answered by itself.
    pub outcome: Option<Outcome>,
    /// What the last upstream response meant, if one arrived.
    pub upstream: Option<super::outcome::UpstreamOutcome>,
    /// The hop to ask next after an upstream redirect.
    pub redirect: Option<Redirect>,
    /// Redirects followed so far for this request.
    pub redirects: u8,
    /// Why an expired copy is being served (`X-Artifact-Stale`).
    pub stale_reason: Option<String>,
    /// The breaker's answer for this request's first upstream attempt.
    pub admitted: Option<Admit>,
    /// The `Authorization` value obtained after an upstream challenge, for
    /// the retried request (and only for the remote's own host).
    pub authorization: Option<String>,
    /// Whether the request was already retried after a 401 challenge.
    pub challenged: bool,
    /// A HEAD answered from an expired tag manifest; a background GET
    /// revalidates it (`prefetch`).
    pub revalidate_in_background: bool,
    /// Headers a fetched manifest lacked, stored with it once committed.
    pub header_fix: Option<super::oci::HeaderFix>,
    /// Checks the body of a manifest or blob response while it streams.
    pub body_check: Option<super::oci::BodyCheck>,
    /// Checks a package file against the checksum its index published.
    pub file_check: Option<super::verify::Verifier>,
    /// When the first request went upstream.
    pub upstream_started: Option<Instant>,
    /// Until the (last) upstream response header arrived.
    pub upstream_header: Option<std::time::Duration>,
    /// Whether the fetch was claimed for the cluster (once per request).
    pub claimed: bool,
    /// This node's claim on the fetch, released when the request ends.
    pub fill_lease: Option<crate::cluster::fill_lease::Lease>,
    /// Another node's fill this request streams instead of the upstream.
    pub peer: Option<crate::cluster::peer::PeerFill>,
    /// The cache storage could not be reached for this request (503).
    pub storage_down: bool,
    /// The node this request meant to follow, found unreachable.
    pub dead_peer: Option<crate::cluster::peer::PeerFill>,
}

impl RequestCtx {
    pub fn new(in_flight: InFlightGuard) -> Self {
        RequestCtx {
            _in_flight: in_flight,
            started: Instant::now(),
            artifact: None,
            remote_name: None,
            outcome: None,
            upstream: None,
            redirect: None,
            redirects: 0,
            stale_reason: None,
            admitted: None,
            authorization: None,
            challenged: false,
            revalidate_in_background: false,
            header_fix: None,
            body_check: None,
            file_check: None,
            upstream_started: None,
            upstream_header: None,
            claimed: false,
            fill_lease: None,
            peer: None,
            storage_down: false,
            dead_peer: None,
        }
    }
}
