//! Pingora's cache lock, plus a short memory of fills that just completed.
//!
//! pingora-cache looks a key up in storage and only then takes the lock. A
//! request whose (slower, on a miss) lookup started before a fill committed,
//! and whose lock attempt comes after the filler released the lock, would
//! find no lock and become a second writer: a second upstream fetch of an
//! object that is already stored. Seen with five concurrent `skopeo copy`
//! on a loaded machine: one blob of five fetched twice.
//!
//! So a key whose fill completed moments ago gets a read lock that is
//! already released as done: the request looks storage up again and finds
//! the object. The memory is bounded and short-lived; a request that still
//! misses (the object flushed meanwhile) is bounded by the lock retry limit
//! set with the cache options, after which it goes upstream.
//!
//! Also: a HEAD or range miss that happened to take the lock hands it on
//! to the waiting full requests instead of releasing them all upstream.

use pingora::cache::key::CacheHashKey;
use pingora::cache::lock::{CacheKeyLock, CacheLock, LockStatus, Locked, WritePermit};
use pingora::cache::CacheKey;
use pingora_memory_cache::MemoryCache;
use std::time::Duration;

/// How long a completed fill is remembered: far longer than a storage
/// lookup, far shorter than any freshness lifetime.
const RECENT: Duration = Duration::from_secs(5);
/// How many completed fills are remembered at once.
const RECENT_FILLS: usize = 16_384;

pub struct FillLock {
    inner: Box<CacheLock>,
    recent: MemoryCache<u128, ()>,
}

impl FillLock {
    /// A lock whose writers time out after `age_timeout` (pingora's meaning).
    pub fn new(age_timeout: Duration) -> Self {
        FillLock {
            inner: CacheLock::new_boxed(age_timeout),
            recent: MemoryCache::new(RECENT_FILLS),
        }
    }
}

fn id(key: &CacheKey) -> u128 {
    u128::from_be_bytes(key.combined_bin())
}

impl CacheKeyLock for FillLock {
    fn lock(&self, key: &CacheKey, stale_writer: bool) -> Locked {
        if !stale_writer && self.recent.get(&id(key)).0.is_some() {
            let (mut permit, stub) = WritePermit::new(RECENT, false, http::Extensions::new());
            let read = stub.read_lock();
            permit.unlock(LockStatus::Done);
            return Locked::Read(read);
        }
        self.inner.lock(key, stale_writer)
    }

    fn release(&self, key: &CacheKey, permit: WritePermit, reason: LockStatus) {
        // Remembered before the lock goes: whoever finds no lock afterwards
        // finds the memory.
        if reason == LockStatus::Done {
            self.recent.put(&id(key), (), Some(RECENT));
        }
        self.inner.release(key, permit, reason);
    }

    /// A HEAD or range request that took the lock and then went upstream
    /// uncached must not send every waiting full request upstream too
    /// (pingora's default for custom reasons, "give up"): they compete for
    /// the lock again, and one of them fills.
    fn custom_lock_status(&self, custom_no_cache: &'static str) -> LockStatus {
        use crate::proxy::cache::{HEAD_MISS, RANGE_MISS};
        if custom_no_cache == HEAD_MISS || custom_no_cache == RANGE_MISS {
            LockStatus::TransientError
        } else {
            LockStatus::GiveUp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_filled_moments_ago_gets_a_released_read_lock() {
        let lock = FillLock::new(Duration::from_secs(60));
        let key = CacheKey::new("k", "r");
        let Locked::Write(permit) = lock.lock(&key, false) else {
            panic!("the first request writes");
        };
        let Locked::Read(waiting) = lock.lock(&key, false) else {
            panic!("a concurrent request waits");
        };
        lock.release(&key, permit, LockStatus::Done);
        waiting.wait().await;
        // After the release, a late request does not become a second writer.
        let Locked::Read(late) = lock.lock(&key, false) else {
            panic!("a late request must re-check storage, not fetch again");
        };
        late.wait().await;
        assert_eq!(late.lock_status(), LockStatus::Done);
        // A failed fill is not remembered: the next request writes.
        let other = CacheKey::new("other", "r");
        let Locked::Write(permit) = lock.lock(&other, false) else {
            panic!("writes");
        };
        lock.release(&other, permit, LockStatus::TransientError);
        let Locked::Write(permit) = lock.lock(&other, false) else {
            panic!("after a failed fill the next request writes");
        };
        lock.release(&other, permit, LockStatus::TransientError);
        // Revalidations are never short-cut.
        let Locked::Write(permit) = lock.lock(&key, true) else {
            panic!("a revalidation writes");
        };
        lock.release(&key, permit, LockStatus::Done);
    }
}
