//! Pingora's cache lock, sending requests for keys with a fill in progress
//! (or just completed) back to storage instead of upstream.
//!
//! pingora-cache looks a key up in storage and only then takes the lock. A
//! request whose lookup missed just before a fill registered, and whose
//! lock attempt comes after the leader released the lock (which, with
//! streaming partial writes, happens as soon as the fill starts), would
//! find no lock and become a second writer: a second upstream fetch. Seen
//! with five concurrent `skopeo copy` on a loaded machine.
//!
//! So such a request gets a read lock that is already released as done: it
//! looks storage up again and follows the fill. A fill that fails is
//! forgotten at once; a request that still misses (the object flushed
//! meanwhile) is bounded by the lock retry limit set with the cache
//! options, after which it goes upstream.

use crate::storage::CacheStorage;
use pingora::cache::lock::{CacheKeyLock, CacheLock, LockStatus, Locked, WritePermit};
use pingora::cache::CacheKey;
use std::time::Duration;

pub struct FillLock {
    inner: Box<CacheLock>,
    storage: &'static CacheStorage,
}

impl FillLock {
    /// A lock whose writers time out after `age_timeout` (pingora's meaning).
    pub fn new(age_timeout: Duration, storage: &'static CacheStorage) -> Self {
        FillLock {
            inner: CacheLock::new_boxed(age_timeout),
            storage,
        }
    }
}

/// A read lock released as done: "look storage up again".
fn look_again() -> Locked {
    let (mut permit, stub) =
        WritePermit::new(Duration::from_secs(1), false, http::Extensions::new());
    let read = stub.read_lock();
    permit.unlock(LockStatus::Done);
    Locked::Read(read)
}

impl CacheKeyLock for FillLock {
    fn lock(&self, key: &CacheKey, stale_writer: bool) -> Locked {
        if !stale_writer && self.storage.fill_known(key) {
            return look_again();
        }
        self.inner.lock(key, stale_writer)
    }

    fn release(&self, key: &CacheKey, permit: WritePermit, reason: LockStatus) {
        self.inner.release(key, permit, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_released_read_lock_reads_as_done() {
        let Locked::Read(read) = look_again() else {
            panic!("a read lock");
        };
        read.wait().await;
        assert_eq!(read.lock_status(), LockStatus::Done);
    }
}
