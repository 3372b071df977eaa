//! One upstream fetch per object across nodes: a node about to fetch an
//! object first claims it in Redis.
//!
//! pingora's cache lock coalesces the requests of one node; this lease
//! does the same between nodes. The claim is `SET {prefix}:fill:{id}
//! "{address} {token}" NX PX {ttl}`: the node that sets it fetches, and
//! renews it every third of the TTL while it does; a node that finds it
//! set streams the fill from the named address instead (`peer`). The
//! claim is released by compare-and-delete (only the holder's token
//! deletes it), so a slow holder never deletes its successor's claim; a
//! holder that dies stops renewing, and its claim expires within the TTL.

use super::link::RedisLink;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Deletes the claim if it is still the caller's.
const RELEASE: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end"#;
/// Extends the claim if it is still the caller's.
const RENEW: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end"#;

pub struct FillLeases {
    link: Arc<RedisLink>,
    /// Entries this node holds claims on.
    held: Arc<Mutex<HashMap<u128, usize>>>,
    /// This node's peer address, written into its claims.
    advertise: SocketAddr,
    ttl: Duration,
    runtime: tokio::runtime::Handle,
}

/// What a claim attempt found.
pub enum Claim {
    /// This node fetches; the lease lasts as long as the value is kept.
    Won(Lease),
    /// Another node fetches it; its fill streams from this address.
    HeldBy(SocketAddr),
    /// Redis did not answer (or this node holds it already): fetch without
    /// a lease, as a single node would.
    Unknown,
}

impl FillLeases {
    pub fn new(
        link: Arc<RedisLink>,
        advertise: SocketAddr,
        ttl: Duration,
        runtime: tokio::runtime::Handle,
    ) -> FillLeases {
        FillLeases {
            link,
            held: Arc::default(),
            advertise,
            ttl,
            runtime,
        }
    }

    /// Whether this node holds a claim on entry `id` (it fetches it now).
    pub fn holds(&self, id: u128) -> bool {
        self.held.lock().contains_key(&id)
    }

    /// How long a claim lasts without renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn key(&self, remote: &str, id: u128) -> String {
        self.link.key(&format!("fill:{remote}:{id:032x}"))
    }

    /// Claims the fetch of entry `id` of `remote`.
    pub async fn claim(&self, remote: &str, id: u128) -> Claim {
        let key = self.key(remote, id);
        let value = format!("{} {}", self.advertise, uuid::Uuid::new_v4().simple());
        // Held from before the claim is set: a node that reads the claim
        // may ask this one for the fill before this one has read Redis's
        // answer, and must find it fetching, not absent.
        let pending = Held::mark(&self.held, id);
        let ttl_ms = self.ttl.as_millis() as u64;
        let (set_key, set_value) = (key.clone(), value.clone());
        // SET NX GET answers the holder's value in the same round trip.
        let answer = self
            .link
            .run("claim", |mut c| async move {
                redis::cmd("SET")
                    .arg(set_key)
                    .arg(set_value)
                    .arg("NX")
                    .arg("GET")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<Option<String>>(&mut c)
                    .await
            })
            .await;
        match answer {
            Ok(None) => Claim::Won(self.lease(pending, key, value)),
            Ok(Some(holder)) => match holder.split_once(' ').map(|(a, _)| a.parse()) {
                Some(Ok(address)) if address != self.advertise => Claim::HeldBy(address),
                Some(Ok(_)) => Claim::Unknown,
                _ => {
                    log::warn!("fill claim {key} holds {holder:?}; fetching without it");
                    Claim::Unknown
                }
            },
            Err(_) => Claim::Unknown,
        }
    }

    /// Claims entry `id` once the claim of `dead` (a node that cannot be
    /// reached) lapses: waits out the claim's remaining time (at most the
    /// TTL, as the dead node no longer renews it), then claims. Another
    /// node that took the fetch over meanwhile is followed instead.
    pub async fn claim_after(&self, remote: &str, id: u128, dead: SocketAddr) -> Claim {
        for _ in 0..3 {
            match self.claim(remote, id).await {
                Claim::HeldBy(holder) if holder == dead => {}
                other => return other,
            }
            let key = self.key(remote, id);
            let remaining = self
                .link
                .run("claim ttl", |mut c| async move {
                    redis::cmd("PTTL").arg(key).query_async::<i64>(&mut c).await
                })
                .await;
            let wait = match remaining {
                Ok(ms) if ms > 0 => Duration::from_millis(ms as u64).min(self.ttl),
                Ok(_) => Duration::ZERO,
                Err(_) => return Claim::Unknown,
            };
            tokio::time::sleep(wait + Duration::from_millis(10)).await;
        }
        Claim::Unknown
    }

    fn lease(&self, held: Held, key: String, value: String) -> Lease {
        let (link, renew_key, renew_value) = (self.link.clone(), key.clone(), value.clone());
        let ttl = self.ttl;
        let renewal = self.runtime.spawn(async move {
            let script = redis::Script::new(RENEW);
            loop {
                tokio::time::sleep(ttl / 3).await;
                let (key, value, script) = (renew_key.clone(), renew_value.clone(), &script);
                let renewed = link
                    .run("renew claim", |mut c| async move {
                        script
                            .key(key)
                            .arg(value)
                            .arg(ttl.as_millis() as u64)
                            .invoke_async::<i64>(&mut c)
                            .await
                    })
                    .await;
                if let Ok(0) = renewed {
                    log::warn!("fill claim {renew_key} was lost; another node may fetch too");
                    return;
                }
            }
        });
        Lease {
            link: self.link.clone(),
            _held: held,
            key,
            value,
            renewal,
            runtime: self.runtime.clone(),
        }
    }
}

/// A won claim: renewed until dropped, then released.
pub struct Lease {
    link: Arc<RedisLink>,
    _held: Held,
    key: String,
    value: String,
    renewal: tokio::task::JoinHandle<()>,
    runtime: tokio::runtime::Handle,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
        let (link, key, value) = (
            self.link.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.value),
        );
        self.runtime.spawn(async move {
            let script = redis::Script::new(RELEASE);
            let _ = link
                .run("release claim", |mut c| async move {
                    script.key(key).arg(value).invoke_async::<i64>(&mut c).await
                })
                .await;
        });
    }
}

/// One count of entry `id` among the claims this node holds, given back
/// when dropped.
struct Held {
    held: Arc<Mutex<HashMap<u128, usize>>>,
    id: u128,
}

impl Held {
    fn mark(held: &Arc<Mutex<HashMap<u128, usize>>>, id: u128) -> Held {
        *held.lock().entry(id).or_default() += 1;
        Held {
            held: held.clone(),
            id,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.held.lock();
        if let Some(count) = held.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.id);
            }
        }
    }
}
