//! Per-request state shared across the proxy phases.

use super::artifact::Artifact;
use super::upstream::Redirect;
use crate::lifecycle::InFlightGuard;
use crate::metrics::{Outcome, Source};
use filters::breaker::Admit;
use pingora::cache::CachePhase;
use std::time::Instant;

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

impl RequestCtx {
    /// Where the response came from, for metrics and the access log.
    pub fn served_from(&self, phase: CachePhase) -> Source {
        if self.artifact.is_none() {
            return Source::None;
        }
        if self.stale_reason.is_some() {
            return Source::Stale;
        }
        match phase {
            CachePhase::Hit => Source::Hit,
            CachePhase::Stale | CachePhase::StaleUpdating => Source::Stale,
            CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => Source::Revalidated,
            _ => Source::Miss,
        }
    }
}
