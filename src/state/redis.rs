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
/// Keys deleted per `UNLINK` when a prefix is flushed.
const DELETE_BATCH: usize = 500;

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
        let mut cursor: u64 = 0;
        loop {
            let scan = pattern.clone();
            let (next, keys): (u64, Vec<String>) = self
                .link
                .run("scan", |mut c| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(scan)
                        .arg("COUNT")
                        .arg(DELETE_BATCH)
                        .query_async(&mut c)
                        .await
                })
                .await
                .map_err(unavailable)?;
            if !keys.is_empty() {
                self.link
                    .run("unlink", |mut c| async move {
                        redis::cmd("UNLINK")
                            .arg(keys)
                            .query_async::<()>(&mut c)
                            .await
                    })
                    .await
                    .map_err(unavailable)?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
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
