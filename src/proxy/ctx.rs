//! Per-request state shared across the proxy phases, in named parts: what
//! the request is, its upstream attempt, its part in a cluster fill, and
//! the checks its response passes through.

use super::artifact::Artifact;
use super::upstream::Redirect;
use crate::lifecycle::InFlightGuard;
use crate::metrics::{InFlightRequest, Outcome};
use crate::served_from::ServedFrom;
use filters::breaker::Admit;
use pingora::cache::CachePhase;
use std::time::{Duration, Instant};

pub struct RequestCtx {
    /// Counts this request as in flight until pingora drops the context.
    _in_flight: InFlightGuard,
    /// Counts it in `artifactd_requests_in_flight` likewise.
    _counted: InFlightRequest,
    pub started: Instant,
    /// Set for requests routed to a remote (cached) repository.
    pub artifact: Option<Artifact>,
    /// Remote name for logs and metrics, also for local repositories.
    pub remote_name: Option<String>,
    /// Set when `request_filter` answered by itself.
    pub outcome: Option<Outcome>,
    /// Decided once, by the first phase that asks (see [`Self::served_from`]).
    served: Option<ServedFrom>,
    /// Why an expired copy is being served (`X-Artifact-Stale`).
    pub stale_reason: Option<String>,
    /// The expired copy stands in for an upstream that failed (refused,
    /// timed out, 5xx, marked down), not for one whose answer was refused
    /// (a pending snapshot, a body failing its checksum) or deleted.
    pub stale_for_failure: bool,
    /// A HEAD answered from an expired tag manifest; a background GET
    /// revalidates it (`prefetch`).
    pub revalidate_in_background: bool,
    /// The cache storage could not be reached for this request (503).
    pub storage_down: bool,
    /// The cached copy is held by its remote's quarantine: the request is
    /// refused before it reaches the upstream.
    pub held_in_cache: bool,
    pub attempt: UpstreamAttempt,
    pub fill: FillPart,
    pub checks: Checks,
    /// The body sent in place of the response's own, which a rule
    /// refused once the response said what it is (see
    /// `firewall::judge_resolved`).
    pub substitute: Substitute,
    /// The resumable fill this response started ([`super::large`]).
    pub large: Option<LargeLead>,
    /// This request's share of its remote's upstream bounds.
    pub upstream_slot: Option<crate::upstream_limits::UpstreamSlot>,
    /// The client got the rest of its response from that fill after the
    /// request's own upstream broke.
    pub large_continued: bool,
    /// One of artifactd's own range requests for a fill: never cached.
    pub fill_part: bool,
}

/// A response body replaced after its header arrived.
pub enum Substitute {
    None,
    /// Sent in place of the first chunk of the response's own body.
    Pending(bytes::Bytes),
    /// Sent: the rest of the response's own body is dropped.
    Sent,
}

impl Substitute {
    /// Puts what is sent in place of a chunk of the response's own body.
    pub fn apply(&mut self, body: &mut Option<bytes::Bytes>) {
        match std::mem::replace(self, Substitute::Sent) {
            Substitute::None => *self = Substitute::None,
            Substitute::Pending(instead) => *body = Some(instead),
            Substitute::Sent => *body = None,
        }
    }
}

/// The request's way to the upstream: hops, challenges, the breaker's
/// answer and timings.
#[derive(Default)]
pub struct UpstreamAttempt {
    /// What the last upstream response meant, if one arrived.
    pub outcome: Option<super::outcome::UpstreamOutcome>,
    /// The hop to ask next after an upstream redirect.
    pub redirect: Option<Redirect>,
    /// Redirects followed so far for this request.
    pub redirects: u8,
    /// The breaker's answer for this request's first upstream attempt.
    pub admitted: Option<Admit>,
    /// The `Authorization` value obtained after an upstream challenge, for
    /// the retried request (and only for the remote's own host).
    pub authorization: Option<String>,
    /// Whether the request was already retried after a 401 challenge.
    pub challenged: bool,
    /// When the first request went upstream.
    pub started: Option<Instant>,
    /// The status of the last upstream response, if one arrived.
    pub status: Option<u16>,
    /// Body bytes received from the upstream (not from another node).
    pub body_bytes: u64,
    /// Until the (last) upstream response header arrived.
    pub header_wait: Option<Duration>,
}

/// The resumable fill a response started, offered or under way.
pub struct LargeLead {
    /// Its entry.
    pub id: u128,
    /// Its fill's tag, once its miss handler took the offer.
    pub taken: std::sync::Arc<std::sync::OnceLock<u64>>,
    /// Withdrawn when the request ends, if no miss handler took it.
    pub _offer: crate::storage::large::OfferGuard,
}

/// The request's part in a fill shared by the cluster's nodes.
#[derive(Default)]
pub struct FillPart {
    /// Whether the fetch was claimed for the cluster (once per request).
    pub claimed: bool,
    /// This node's claim on the fetch, released when the request ends.
    pub lease: Option<crate::cluster::fill_lease::Lease>,
    /// Another node's fill this request streams instead of the upstream.
    pub peer: Option<crate::cluster::peer::PeerFill>,
    /// The node this request meant to follow, found unreachable.
    pub dead_peer: Option<crate::cluster::peer::PeerFill>,
}

/// What the response is checked against, or completed with, as it streams.
#[derive(Default)]
pub struct Checks {
    /// Headers a fetched manifest lacked, stored with it once committed.
    pub header_fix: Option<super::oci::HeaderFix>,
    /// Checks the body of a manifest or blob response while it streams.
    pub body_check: Option<super::oci::BodyCheck>,
    /// Checks a package file against the checksum its index published.
    pub file_check: Option<super::verify::Verifier>,
    /// Checks an index document is well-formed before it is kept.
    pub document_check: Option<super::verify::DocumentCheck>,
}

impl RequestCtx {
    pub fn new(in_flight: InFlightGuard, counted: InFlightRequest) -> Self {
        RequestCtx {
            _in_flight: in_flight,
            _counted: counted,
            started: Instant::now(),
            artifact: None,
            remote_name: None,
            outcome: None,
            served: None,
            stale_reason: None,
            stale_for_failure: false,
            revalidate_in_background: false,
            storage_down: false,
            held_in_cache: false,
            attempt: UpstreamAttempt::default(),
            fill: FillPart::default(),
            checks: Checks::default(),
            substitute: Substitute::None,
            large: None,
            upstream_slot: None,
            large_continued: false,
            fill_part: false,
        }
    }

    /// Marks a request its handler answered without the cache.
    pub fn answered_by(&mut self, served: ServedFrom, outcome: Outcome) {
        self.served = Some(served);
        self.outcome = Some(outcome);
    }

    /// Where the response came from: decided by the first phase that asks
    /// (the response header's, or the end of a request that had none), so
    /// the header, the metrics and the access log say the same.
    pub fn served_from(&mut self, phase: CachePhase) -> ServedFrom {
        if let Some(served) = self.served {
            return served;
        }
        let served = match phase {
            _ if self.artifact.is_none() => ServedFrom::Passed,
            _ if self.stale_reason.is_some() => ServedFrom::Stale,
            CachePhase::Hit => ServedFrom::Hit,
            CachePhase::Stale | CachePhase::StaleUpdating => ServedFrom::Stale,
            CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => ServedFrom::Revalidated,
            _ => ServedFrom::Miss,
        };
        self.served = Some(served);
        served
    }
}
