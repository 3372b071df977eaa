//! The state store in Redis, shared by every node of a cluster: a
//! revalidation on one node is fresh on all of them, and an index's
//! recorded checksums check downloads on any node.
//!
//! Each key lives [`STATE_TTL`] from its last write, so state of objects
//! long gone cleans itself; losing a key costs at most one revalidation
//! (the commit record still serves) or one unverified download.

use super::{StateError, StateResult, StateStore};
use crate::cluster::link::RedisLink;
use async_trait::async_trait;
use bytes::Bytes;
use redis::AsyncCommands;
use std::sync::Arc;
use std::time::Duration;

/// How long an unwritten state key lives.
pub const STATE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Keys looked at per step when a prefix is flushed.
const DELETE_BATCH: usize = 500;

/// One step of a prefix walk: `SCAN` a batch and `UNLINK` what matched.
/// A script, so that in a cluster it runs on the shard that holds every
/// key of this node: it is routed by `KEYS[1]`, a key of their hash slot
/// (a bare `SCAN` would go to any node).
const DELETE_STEP: &str = r#"
local found = redis.call("SCAN", ARGV[1], "MATCH", ARGV[2], "COUNT", ARGV[3])
for _, key in ipairs(found[2]) do redis.call("UNLINK", key) end
return found[1]
"#;

pub struct RedisState {
    link: Arc<RedisLink>,
}

impl RedisState {
    pub fn new(link: Arc<RedisLink>) -> RedisState {
        RedisState { link }
    }

    fn key(&self, key: &str) -> String {
        self.link.key(&format!("state:{key}"))
    }
}

fn unavailable(e: impl std::fmt::Display) -> StateError {
    StateError(e.to_string())
}

#[async_trait]
impl StateStore for RedisState {
    async fn get(&self, key: &str) -> StateResult<Option<Bytes>> {
        let key = self.key(key);
        let value: Option<Vec<u8>> = self
            .link
            .run("get", |mut c| async move { c.get(key).await })
            .await
            .map_err(unavailable)?;
        Ok(value.map(Bytes::from))
    }

    async fn put(&self, key: &str, value: Bytes) -> StateResult<()> {
        let key = self.key(key);
        self.link
            .run("set", |mut c| async move {
                c.set_ex::<_, _, ()>(key, value.as_ref(), STATE_TTL.as_secs())
                    .await
            })
            .await
            .map_err(unavailable)
    }

    async fn put_expiring(&self, key: &str, value: Bytes, ttl: Duration) -> StateResult<()> {
        let key = self.key(key);
        let ttl_ms = (ttl.as_millis() as u64).max(1);
        self.link
            .run("set", |mut c| async move {
                c.pset_ex::<_, _, ()>(key, value.as_ref(), ttl_ms).await
            })
            .await
            .map_err(unavailable)
    }

    async fn delete(&self, key: &str) -> StateResult<()> {
        let key = self.key(key);
        self.link
            .run("del", |mut c| async move { c.del::<_, ()>(key).await })
            .await
            .map_err(unavailable)
    }

    /// Walks the prefix with `SCAN` (never `KEYS`, which blocks Redis).
    async fn delete_prefix(&self, prefix: &str) -> StateResult<()> {
        let pattern = format!("{}/*", escape_glob(&self.key(prefix)));
        let script = redis::Script::new(DELETE_STEP);
        let mut cursor = "0".to_string();
        loop {
            let (route, scan, script) = (self.key(""), pattern.clone(), &script);
            cursor = self
                .link
                .run("flush", |mut c| async move {
                    script
                        .key(route)
                        .arg(cursor)
                        .arg(scan)
                        .arg(DELETE_BATCH)
                        .invoke_async::<String>(&mut c)
                        .await
                })
                .await
                .map_err(unavailable)?;
            if cursor == "0" {
                return Ok(());
            }
        }
    }
}

/// `text` matched literally by a Redis glob pattern.
pub fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_match_literally() {
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(escape_glob("artifactd:state:r"), "artifactd:state:r");
    }
}
