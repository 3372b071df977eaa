//! What a cache miss does before it goes upstream, beyond one node: the
//! answer to a bucket that could not be reached ([`storage_outage`]), and
//! the claim on the fetch for the cluster (`cluster::fill_lease`): if
//! another node holds the claim, the request streams that node's fill
//! instead (`cluster::peer`) and this node stores nothing.

use super::ctx::RequestCtx;
use crate::app::App;
use crate::cluster::fill_lease::Claim;
use crate::cluster::peer::PeerFill;
use crate::config::backends::OnFailure;
use crate::config::StorageUrl;
use crate::storage::layout::EntryLocation;
use pingora::cache::{CachePhase, NoCacheReason};
use pingora::proxy::Session;

/// Why a request that found another node's claim stores nothing.
pub const FOLLOWING_PEER: &str = "following another node's fill";

/// What a request whose lookup failed because the bucket could not be
/// reached does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// A 503: always for an entry the index knows (its bytes are in the
    /// bucket), and for others with `s3.on_failure: fail`.
    Refuse,
    /// Fetched from the upstream and not stored (`pass`, the default).
    PassUncached,
}

/// Whether this request's lookup just failed for want of the bucket, and
/// what it does then.
pub fn storage_outage(app: &App, session: &mut Session) -> Option<Outage> {
    let StorageUrl::S3(s3) = &app.config().server.storage else {
        return None;
    };
    let failure = app
        .storage
        .take_lookup_failure(session.cache.maybe_cache_key()?)?;
    let outage = match (failure.cached, s3.on_failure) {
        (false, OnFailure::Pass) => Outage::PassUncached,
        _ => Outage::Refuse,
    };
    log::warn!(
        "cache storage unreachable for {} ({}): {}",
        session.req_header().uri.path(),
        match outage {
            Outage::Refuse => "503",
            Outage::PassUncached => "passed through uncached",
        },
        failure.reason
    );
    if outage == Outage::PassUncached {
        // Not even a small body is kept: it could not be committed.
        session.cache.disable(NoCacheReason::StorageError);
    }
    Some(outage)
}

/// Claims the fetch once per request, for a writer of a miss or of an
/// expired entry (a refetch or a revalidation). Without a cluster, or
/// with Redis away, nothing changes.
pub async fn claim(app: &App, session: &mut Session, ctx: &mut RequestCtx) {
    let Some(cluster) = &app.cluster else {
        return;
    };
    if std::mem::replace(&mut ctx.fill.claimed, true) {
        return;
    }
    if !matches!(
        session.cache.phase(),
        CachePhase::Miss | CachePhase::Expired | CachePhase::Stale
    ) {
        return;
    }
    let Some(location) = session.cache.maybe_cache_key().map(EntryLocation::from_key) else {
        return;
    };
    let id = location.id();
    match cluster.leases.claim(&location.remote, id).await {
        Claim::Won(lease) => {
            cluster.following.forget(id);
            ctx.fill.lease = Some(lease);
        }
        Claim::HeldBy(address) => {
            // The cache stays enabled (this request keeps its place as the
            // node's writer) until the peer's response shows it streams:
            // `response_cache_filter` declines it then. If the peer is gone,
            // this request takes the fetch over and stores it.
            cluster.following.follow(id, cluster.leases.ttl());
            ctx.fill.peer = Some(PeerFill {
                address,
                id,
                remote: location.remote,
            });
        }
        Claim::Unknown => cluster.following.forget(id),
    }
}

/// After the node this request followed could not be reached: waits for
/// its claim to lapse (at most the claim TTL), then claims the fetch here
/// and goes upstream, storing the object; or follows the node that took
/// the fetch over first.
pub async fn take_over(app: &App, ctx: &mut RequestCtx) {
    let (Some(cluster), Some(dead)) = (&app.cluster, ctx.fill.dead_peer.take()) else {
        return;
    };
    match cluster
        .leases
        .claim_after(&dead.remote, dead.id, dead.address)
        .await
    {
        Claim::Won(lease) => {
            cluster.following.forget(dead.id);
            ctx.fill.lease = Some(lease);
        }
        Claim::HeldBy(address) => {
            ctx.fill.peer = Some(PeerFill { address, ..dead });
        }
        Claim::Unknown => cluster.following.forget(dead.id),
    }
}
