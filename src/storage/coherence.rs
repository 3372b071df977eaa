//! Keeping this node's memory of the store (index, hot records) true
//! while other nodes change the same store.
//!
//! With a shared bucket, another node may commit, replace, revalidate,
//! remove or flush any entry. Two things keep a node honest:
//!
//! - an entry this node's index does not know is looked for in the store
//!   (and adopted), instead of being a certain miss as on a private disk;
//! - every change a node makes is announced ([`Change`], through a
//!   [`ChangeFeed`]: Redis pub/sub in a cluster), and every other node
//!   forgets what it held of that entry, so its next lookup reads the
//!   store (and the shared state) again.
//!
//! A change missed (the feed was down) costs little: a forgotten body is
//! found missing and treated as a miss, a replaced one is read from its
//! new record, and [`CacheStorage::forget_memory`] drops every hot record
//! after the feed comes back.

use super::CacheStorage;
use pingora::cache::storage::HitHandler;
use pingora::cache::CacheMeta;
use std::sync::atomic::Ordering;

/// A change to the store another node must not serve around.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The entry was committed, replaced, given new freshness or removed.
    Entry(u128),
    /// Every cached entry of a remote (or of all, `None`) was deleted.
    Flush(Option<String>),
}

impl Change {
    /// `e {id:032x}` or `f {remote}` / `f *` (remote names never hold
    /// spaces or `*`).
    pub fn encode(&self) -> String {
        match self {
            Change::Entry(id) => format!("e {id:032x}"),
            Change::Flush(Some(remote)) => format!("f {remote}"),
            Change::Flush(None) => "f *".into(),
        }
    }

    pub fn decode(text: &str) -> Option<Change> {
        match text.split_once(' ')? {
            ("e", id) if id.len() == 32 => u128::from_str_radix(id, 16).ok().map(Change::Entry),
            ("f", "*") => Some(Change::Flush(None)),
            ("f", remote) if !remote.is_empty() => Some(Change::Flush(Some(remote.into()))),
            _ => None,
        }
    }
}

/// Where a node announces its changes. Announcing completes before the
/// change's request is answered, so a client that goes from one node to
/// another never outruns it.
#[async_trait::async_trait]
pub trait ChangeFeed: Send + Sync {
    async fn publish(&self, change: Change);
}

impl CacheStorage {
    /// Announces this node's changes on `feed` from now on.
    pub fn announce_changes(&self, feed: std::sync::Arc<dyn ChangeFeed>) {
        if self.changes.set(feed).is_err() {
            log::warn!("change feed set twice; keeping the first");
        }
    }

    pub(super) async fn announce(&self, change: Change) {
        if let Some(feed) = self.changes.get() {
            feed.publish(change).await;
        }
    }

    /// Forgets what this node held of a change another node made.
    pub fn apply_change(&self, change: &Change) {
        match change {
            Change::Entry(id) => {
                self.index.remove(*id, None);
                self.hot.remove(*id);
                self.fills.forget(*id);
            }
            Change::Flush(remote) => {
                self.flush_generation.fetch_add(1, Ordering::AcqRel);
                self.index
                    .clear(remote.as_deref().map(|r| self.remote_index(r)));
                self.fills.forget_all();
                self.flush_generation.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// What a node following this one's fill of entry `id` reads: the fill
    /// in progress (waiting up to `limit` for it to start while `fetching`
    /// says this node is about to fill it), else the committed entry.
    pub async fn follow(
        &'static self,
        remote: &str,
        id: u128,
        limit: std::time::Duration,
        fetching: impl Fn() -> bool,
    ) -> pingora::Result<Option<(CacheMeta, HitHandler)>> {
        let started = self.fills.reader_once_started(id, limit, fetching).await;
        if let Some((meta, reader)) = started {
            return Ok(Some((meta, Box::new(reader))));
        }
        let location = super::layout::EntryLocation::new(remote, id);
        self.lookup_committed(&location).await
    }

    /// Drops every hot record (changes may have been missed): the next
    /// lookup of each entry reads its record from the store.
    pub fn forget_memory(&self) {
        self.flush_generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_and_junk_is_refused() {
        for change in [
            Change::Entry(0),
            Change::Entry(u128::MAX),
            Change::Flush(None),
            Change::Flush(Some("hub".into())),
        ] {
            assert_eq!(Change::decode(&change.encode()), Some(change));
        }
        for junk in [
            "",
            "e",
            "e 12",
            "x y",
            "f ",
            "e zz000000000000000000000000000000",
        ] {
            assert_eq!(Change::decode(junk), None, "{junk:?}");
        }
    }
}
