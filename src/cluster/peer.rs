//! Streaming another node's fill: the follower's request and the leader's
//! answer.
//!
//! A node that finds another node's claim on an object ([`fill_lease`])
//! does not fetch it and does not wait for its commit: it asks the leader
//! for `GET /_artifactd/fills/{remote}/{id}`, which the leader answers from
//! its fill in progress (the engine's streaming partial writes: bytes as
//! they arrive; if its upstream has not answered yet, once it has) or,
//! once committed, from storage. So a follower on another
//! node gets its first byte as soon as a follower on the leader's node.
//! The request carries the cluster secret; nothing else answers there.
//!
//! The follower does not store what it streams (the leader stores it once,
//! in the shared bucket) and passes it on as is; if the leader cannot be
//! reached or no longer has the fill, the follower fetches from the
//! upstream itself, uncached.
//!
//! [`fill_lease`]: super::fill_lease

use crate::app::App;
use crate::reply::{self, Reply};
use bytes::Bytes;
use http::StatusCode;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::Result;
use std::net::SocketAddr;

/// Carries the cluster secret on requests between nodes.
pub const PEER_HEADER: &str = "x-artifactd-peer";
const FILLS_PATH: &str = "/_artifactd/fills/";

/// A fill this request streams from another node.
#[derive(Debug, Clone)]
pub struct PeerFill {
    pub address: SocketAddr,
    pub remote: String,
    pub id: u128,
}

/// Entries whose fill another node leads, as this node last found.
///
/// A request for one skips pingora's per-node lock (`fill_lock`): it would
/// only queue behind a local writer that stores nothing (it streams the
/// other node's fill), so each request streams from the other node at
/// once. An entry is forgotten when this node claims it itself, or after
/// the claim's TTL.
#[derive(Default)]
pub struct Following {
    until: parking_lot::Mutex<std::collections::HashMap<u128, std::time::Instant>>,
}

impl Following {
    pub fn follow(&self, id: u128, ttl: std::time::Duration) {
        let mut until = self.until.lock();
        let now = std::time::Instant::now();
        until.retain(|_, at| *at > now);
        until.insert(id, now + ttl);
    }

    pub fn forget(&self, id: u128) {
        self.until.lock().remove(&id);
    }

    pub fn is_following(&self, id: u128) -> bool {
        let until = self.until.lock();
        until
            .get(&id)
            .is_some_and(|at| *at > std::time::Instant::now())
    }
}

/// Whether the request asks for another node's fill.
pub fn is_fill_request(req: &RequestHeader) -> bool {
    req.uri.path().starts_with(FILLS_PATH)
}

/// The request a follower sends the leader for `fill`.
pub fn fill_request(fill: &PeerFill, method: &http::Method, secret: &str) -> Result<RequestHeader> {
    let path = format!("{FILLS_PATH}{}/{:032x}", fill.remote, fill.id);
    let mut req = RequestHeader::build(method.clone(), path.as_bytes(), None)?;
    req.insert_header(http::header::HOST, fill.address.to_string())?;
    req.insert_header(PEER_HEADER, secret)?;
    Ok(req)
}

/// `{remote}/{id}` of a fill request.
fn parse(path: &str) -> Option<(&str, u128)> {
    let (remote, id) = path.strip_prefix(FILLS_PATH)?.split_once('/')?;
    let id = (id.len() == 32).then(|| u128::from_str_radix(id, 16).ok())??;
    let remote_ok = !matches!(remote, "" | "." | "..")
        && remote
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    remote_ok.then_some((remote, id))
}

/// Answers a fill request: the fill in progress, else the committed body,
/// else 404 (the follower then fetches upstream itself).
pub async fn serve_fill(app: &App, session: &mut Session) -> Result<()> {
    let Some(cluster) = &app.cluster else {
        return reply::send(session, not_found()).await;
    };
    let presented = session
        .req_header()
        .headers
        .get(PEER_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !crate::auth::constant_time_eq(presented, cluster.secret.expose().as_bytes()) {
        return reply::send(
            session,
            Reply::text(StatusCode::FORBIDDEN, "not a node of this cluster\n"),
        )
        .await;
    }
    let Some((remote, id)) = parse(session.req_header().uri.path()) else {
        return reply::send(
            session,
            Reply::text(StatusCode::BAD_REQUEST, "not a fill path\n"),
        )
        .await;
    };
    if !app.config().remotes.contains_key(remote) {
        return reply::send(session, not_found()).await;
    }
    let remote = remote.to_string();
    let fetching = || cluster.leases.holds(id);
    let limit = app.config().server.lock_timeout;
    let Some((meta, mut body)) = app.storage.follow(&remote, id, limit, fetching).await? else {
        return reply::send(session, not_found()).await;
    };
    let head = session.req_header().method == http::Method::HEAD;
    let mut header = meta.response_header_copy();
    header.insert_header("x-artifact-source", "cache")?;
    session
        .write_response_header(Box::new(header), head)
        .await?;
    if head {
        return Ok(());
    }
    while let Some(chunk) = body.read_body().await? {
        session.write_response_body(Some(chunk), false).await?;
    }
    session.write_response_body(Some(Bytes::new()), true).await
}

fn not_found() -> Reply {
    Reply::text(StatusCode::NOT_FOUND, "no such fill on this node\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_paths_parse_strictly() {
        let id = 0x0123_4567_89ab_cdef_0123_4567_89ab_cdefu128;
        assert_eq!(
            parse(&format!("{FILLS_PATH}hub/{id:032x}")),
            Some(("hub", id))
        );
        for bad in [
            format!("{FILLS_PATH}hub/{id:031x}"),
            format!("{FILLS_PATH}/{id:032x}"),
            format!("{FILLS_PATH}../{id:032x}"),
            format!("{FILLS_PATH}hub/{id:032x}/x"),
            "/v2/hub/x".to_string(),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
    }
}
