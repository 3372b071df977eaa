//! Whose turn it is to evict from the shared bucket: one node at a time.
//!
//! Every node checks its bounds every few seconds; with a shared bucket
//! only the holder of `{prefix}:evict` acts, so two nodes never evict the
//! same entries or overshoot together. Each check renews the lease if this
//! node holds it, else takes it if it is free, in one script; a holder
//! that dies stops renewing and another node takes over within the TTL.
//! While Redis is away no node evicts (the bucket may outgrow its bound
//! for that long, never lose more than eviction would).

use super::link::RedisLink;
use crate::storage::evict::EvictionTurn;
use std::sync::Arc;
use std::time::Duration;

/// Renews the lease if the caller holds it, else takes it if free.
const TAKE_OR_RENEW: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end
if redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then return 1 end
return 0"#;

pub struct EvictionLease {
    link: Arc<RedisLink>,
    key: String,
    /// This node's token in the lease.
    node: String,
    ttl: Duration,
    script: redis::Script,
}

impl EvictionLease {
    /// A lease lasting `ttl` without renewal (a few eviction checks).
    pub fn new(link: Arc<RedisLink>, ttl: Duration) -> EvictionLease {
        EvictionLease {
            key: link.key("evict"),
            link,
            node: uuid::Uuid::new_v4().simple().to_string(),
            ttl,
            script: redis::Script::new(TAKE_OR_RENEW),
        }
    }
}

#[async_trait::async_trait]
impl EvictionTurn for EvictionLease {
    async fn my_turn(&self) -> bool {
        let (key, node, script) = (self.key.clone(), self.node.clone(), &self.script);
        let ttl_ms = self.ttl.as_millis() as u64;
        self.link
            .run("eviction lease", |mut c| async move {
                script
                    .key(key)
                    .arg(node)
                    .arg(ttl_ms)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .is_ok_and(|held| held == 1)
    }
}
