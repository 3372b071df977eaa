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
//! looks storage up again and follows the fill. The question is asked
//! before taking the lock and again after winning it, since the whole fill
//! start and lock release can happen between the two. A fill that fails is
//! forgotten at once; a request that still misses (the object flushed
//! meanwhile) is bounded by the lock retry limit set with the cache
//! options, after which it goes upstream.

use crate::cluster::peer::Following;
use crate::storage::CacheStorage;
use pingora::cache::key::CacheHashKey;
use pingora::cache::lock::{CacheKeyLock, CacheLock, LockStatus, Locked, WritePermit};
use pingora::cache::CacheKey;
use std::sync::Arc;
use std::time::Duration;

/// Whether a key has a fill in progress or just completed.
pub trait KnowsFills: Send + Sync {
    fn fill_known(&self, key: &CacheKey) -> bool;
}

impl KnowsFills for CacheStorage {
    fn fill_known(&self, key: &CacheKey) -> bool {
        CacheStorage::fill_known(self, key)
    }
}

pub struct FillLock {
    inner: Box<CacheLock>,
    storage: &'static dyn KnowsFills,
    /// Entries another node of the cluster is filling.
    following: Option<Arc<Following>>,
}

impl FillLock {
    /// A lock whose writers time out after `age_timeout` (pingora's meaning).
    pub fn new(
        age_timeout: Duration,
        storage: &'static dyn KnowsFills,
        following: Option<Arc<Following>>,
    ) -> Self {
        FillLock {
            inner: CacheLock::new_boxed(age_timeout),
            storage,
            following,
        }
    }
}

/// Marks a write permit given outside the lock table: a request that will
/// stream another node's fill (see `cluster::peer::Following`).
#[derive(Clone, Copy)]
struct PeerFollower;

fn unregistered_permit() -> Locked {
    let mut extensions = http::Extensions::new();
    extensions.insert(PeerFollower);
    let (permit, _stub) = WritePermit::new(Duration::from_secs(1), false, extensions);
    Locked::Write(permit)
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
        let following = |f: &Arc<Following>| f.is_following(u128::from_be_bytes(key.primary_bin()));
        if self.following.as_ref().is_some_and(following) {
            return unregistered_permit();
        }
        match self.inner.lock(key, stale_writer) {
            // The fill registered and its writer released the lock between
            // the check above and this one taking it (seen on a loaded
            // machine: a second upstream fetch). The fill registers before
            // the release, so it is known now: give the lock back (anyone
            // queued behind it looks again too) and follow the fill.
            Locked::Write(permit) if !stale_writer && self.storage.fill_known(key) => {
                self.inner.release(key, permit, LockStatus::Done);
                look_again()
            }
            locked => locked,
        }
    }

    fn release(&self, key: &CacheKey, mut permit: WritePermit, reason: LockStatus) {
        if permit.extensions().get::<PeerFollower>().is_some() {
            // Not in the table: removing by key would drop another writer's.
            permit.unlock(reason);
            return;
        }
        self.inner.release(key, permit, reason);
    }

    /// A writer that turned into a follower of another node wakes the
    /// requests queued behind it to look again (and follow that node too).
    fn custom_lock_status(&self, reason: &'static str) -> LockStatus {
        if reason == crate::proxy::FOLLOWING_PEER {
            LockStatus::TransientError
        } else {
            LockStatus::GiveUp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers whether a fill is known from a script, then "no".
    struct Scripted {
        answers: parking_lot::Mutex<std::collections::VecDeque<bool>>,
    }

    impl KnowsFills for Scripted {
        fn fill_known(&self, _key: &CacheKey) -> bool {
            self.answers.lock().pop_front().unwrap_or(false)
        }
    }

    #[tokio::test]
    async fn a_fill_that_starts_while_the_lock_is_taken_is_followed() {
        // Unknown when first asked, known once the lock is won (the fill
        // started and its writer released in between).
        let fills = Box::leak(Box::new(Scripted {
            answers: parking_lot::Mutex::new([false, true].into()),
        }));
        let lock = FillLock::new(Duration::from_secs(60), fills, None);
        let key = CacheKey::new("race", "gen");
        let Locked::Read(read) = lock.lock(&key, false) else {
            panic!("a request that would be a second writer looks again");
        };
        read.wait().await;
        assert_eq!(read.lock_status(), LockStatus::Done);
        // The lock it won was given back, not left in the table.
        let Locked::Write(permit) = lock.lock(&key, false) else {
            panic!("no fill known any more: a writer");
        };
        lock.release(&key, permit, LockStatus::Done);
    }

    #[tokio::test]
    async fn a_released_read_lock_reads_as_done() {
        let Locked::Read(read) = look_again() else {
            panic!("a read lock");
        };
        read.wait().await;
        assert_eq!(read.lock_status(), LockStatus::Done);
    }
}
