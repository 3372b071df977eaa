//! Which nodes of a cluster are alive, for the status page: each node
//! adds its advertised address to one sorted set, scored by the time it
//! last said so, every [`BEAT`]; the nodes are those heard from within
//! [`GONE_AFTER`]. One key, so it works on a Redis Cluster as on one
//! server, and nothing on the request path reads it.

use super::link::RedisLink;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const BEAT: Duration = Duration::from_secs(10);
/// Three beats missed.
const GONE_AFTER: Duration = Duration::from_secs(35);
/// A node not heard from for this long leaves the set (until then it is
/// only left out of the list).
const FORGET_AFTER: Duration = Duration::from_secs(600);

fn key(link: &RedisLink) -> String {
    link.key("nodes")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Says this node is alive every [`BEAT`], and forgets nodes long gone.
pub fn start(
    link: Arc<RedisLink>,
    advertise: std::net::SocketAddr,
    runtime: &tokio::runtime::Handle,
) {
    runtime.spawn(async move {
        let mut beats = tokio::time::interval(BEAT);
        loop {
            beats.tick().await;
            let key = key(&link);
            let now = now_ms();
            let forgotten = now - FORGET_AFTER.as_millis() as i64;
            let _ = link
                .run("cluster heartbeat", |mut c| async move {
                    redis::pipe()
                        .zadd(&key, advertise.to_string(), now)
                        .ignore()
                        .zrembyscore(&key, "-inf", forgotten)
                        .ignore()
                        .query_async::<()>(&mut c)
                        .await
                })
                .await;
        }
    });
}

/// The nodes heard from lately, in address order; empty while Redis does
/// not answer.
pub async fn list(link: &RedisLink) -> Vec<String> {
    let key = key(link);
    let since = now_ms() - GONE_AFTER.as_millis() as i64;
    let nodes = link
        .run("cluster members", |mut c| async move {
            redis::cmd("ZRANGEBYSCORE")
                .arg(&key)
                .arg(since)
                .arg("+inf")
                .query_async::<Vec<String>>(&mut c)
                .await
        })
        .await;
    let mut nodes = nodes.unwrap_or_default();
    nodes.sort();
    nodes
}
