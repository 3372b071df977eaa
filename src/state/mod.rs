//! The state store: small, frequently rewritten records of freshness and
//! revalidation, kept apart from the body store.
//!
//! The body store holds each entry's commit-time record, which is durable
//! and authoritative for the body. Revalidation (a 304 that extends an
//! entry's life) only rewrites the freshness, so it goes here instead of
//! rewriting objects next to the bodies. Losing the state store loses no
//! body: lookups fall back to the commit-time record, whose freshness is
//! older, so the worst case is an extra revalidation.
//!
//! The embedded implementation keeps one file per key on the local disk;
//! the Redis one is shared by the nodes of a cluster.

mod embedded;
mod redis;

pub use self::redis::RedisState;
pub use embedded::EmbeddedState;

use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;

pub type StateResult<T> = Result<T, StateError>;

#[derive(Debug, thiserror::Error)]
#[error("state store: {0}")]
pub struct StateError(pub String);

/// A key-value store for small records. Keys are `/`-separated and safe
/// (remote names and hex digests).
#[async_trait]
pub trait StateStore: Send + Sync {
    async fn get(&self, key: &str) -> StateResult<Option<Bytes>>;
    /// Replaces the value atomically: a reader sees the old or the new value.
    async fn put(&self, key: &str, value: Bytes) -> StateResult<()>;
    /// Like [`Self::put`], for a value useless after `ttl`: a store that
    /// can expire keys (Redis) drops it then; others keep it, and readers
    /// check the value's own expiry.
    async fn put_expiring(&self, key: &str, value: Bytes, _ttl: Duration) -> StateResult<()> {
        self.put(key, value).await
    }
    async fn delete(&self, key: &str) -> StateResult<()>;
    /// Deletes every key starting with `prefix/`.
    async fn delete_prefix(&self, prefix: &str) -> StateResult<()>;
}
