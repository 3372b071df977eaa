//! Keeping the cache within its bounds: `cache.max_size` bytes,
//! `cache.memory_index_entries` objects and `cache.min_free` free space on
//! the storage filesystem.
//!
//! A fill makes room before it commits, so committed bytes never exceed the
//! bound and the disk holds at most the bound plus the fills in flight. A
//! background check every few seconds covers free space taken by others.
//! Past a bound, entries are evicted down to a low watermark 5% below it,
//! least recently used first (the index's last access, to the
//! millisecond); within one second of age, expiring entries (index files,
//! remembered 404s) go before immutable artifacts. Never evicted: an entry
//! being read from a file ([`InUse`]), a blob or child manifest named by a
//! cached manifest ([`super::refs`]), anything a fill has not committed,
//! and local repositories (they are not in the cache). Free space is read
//! from the filesystem, where an entry evicted from a record segment
//! shows only once its segment is compacted: a pass counts what it
//! evicted, and segments are compacted before the next pass. Each eviction
//! removes the record first and then the body, comparing before deleting
//! ([`super::commit`]), so a crash leaves at worst an unnamed body that the
//! reconciliation deletes.
//!
//! A shared bucket ([`SharedEviction`]) is bounded differently: a node's
//! index holds only what it committed, looked up or listed at start, so no
//! node's view is the bucket's size, and nodes evicting by their own views
//! would evict at once and too much. The bucket's size is the catalog's
//! (every node records there), checked by one node at a time (the holder
//! of a lease, `cluster::evict_lease`), which evicts in the catalog's
//! order: least recently used to the hour (the catalog's last access is
//! reported hourly). Fills commit without waiting for room, so a cluster
//! may exceed its bound by what arrives between two checks.

use super::commit::Expect;
use super::id_counts::IdCounts;
use super::index::{Candidate, MUTABLE};
use super::layout::{self, EntryLocation};
use super::CacheStorage;
use crate::catalog::{Catalog, CatalogEvent, EntryRow};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the background check runs.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Passes of one eviction: each looks at the least recently used entries
/// that cover what is still to evict, plus what the pass before skipped.
const MAX_PASSES: usize = 16;

/// Entries read from the catalog per step of a shared eviction pass.
const SHARED_BATCH: i64 = 256;
/// Steps of one shared pass (the next check goes on).
const SHARED_STEPS: usize = 64;
/// How long a pass waits for its removals to reach the catalog before it
/// reads the next candidates.
const CATALOG_CATCH_UP: Duration = Duration::from_secs(5);

/// Whether this node may evict from the shared bucket now.
#[async_trait::async_trait]
pub trait EvictionTurn: Send + Sync {
    async fn my_turn(&self) -> bool;
}

/// What eviction from a bucket shared by several nodes needs.
pub struct SharedEviction {
    pub turn: Arc<dyn EvictionTurn>,
    /// The catalog every node records its commits in.
    pub catalog: Arc<dyn Catalog>,
}

/// The bounds, from the server file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bounds {
    pub max_size: Option<u64>,
    pub min_free: Option<u64>,
    pub max_entries: u64,
}

/// Entries being read from a body file, by entry id.
#[derive(Default)]
pub struct InUse {
    readers: IdCounts,
}

impl InUse {
    pub fn enter(&'static self, id: u128) -> InUseGuard {
        self.readers.add(id);
        InUseGuard { in_use: self, id }
    }

    fn contains(&self, id: u128) -> bool {
        self.readers.contains(id)
    }
}

/// Marks an entry in use until dropped.
pub struct InUseGuard {
    in_use: &'static InUse,
    id: u128,
}

impl Drop for InUseGuard {
    fn drop(&mut self) {
        self.in_use.readers.remove_one(self.id);
    }
}

/// What eviction has done since start.
#[derive(Default)]
pub struct EvictionStats {
    pub evictions: AtomicU64,
    pub bytes_reclaimed: AtomicU64,
}

/// What is about to be committed: a new entry of `bytes`, or nothing (the
/// background check, which must not evict a cache that is exactly full).
#[derive(Debug, Clone, Copy)]
pub(super) enum Incoming {
    Entry { bytes: u64 },
    Nothing,
}

impl Incoming {
    fn bytes(self) -> u64 {
        match self {
            Incoming::Entry { bytes } => bytes,
            Incoming::Nothing => 0,
        }
    }

    fn entries(self) -> u64 {
        match self {
            Incoming::Entry { .. } => 1,
            Incoming::Nothing => 0,
        }
    }
}

/// How far an eviction pass must go.
#[derive(Debug, Clone, Copy)]
struct Target {
    /// Stop once stored bytes (plus the incoming fill) are at most this.
    bytes: Option<u64>,
    /// Stop once the index holds at most this many (room for the incoming).
    entries: Option<u64>,
    /// Stop once the filesystem has this many bytes free.
    free: Option<u64>,
}

fn low_watermark(bound: u64) -> u64 {
    bound - bound / 20
}

/// The eviction order: oldest second first, expiring before immutable
/// within it, then by millisecond.
fn order_key(candidate: &Candidate) -> (u64, bool, u64) {
    let at = candidate.view.last_access;
    (at / 1000, candidate.view.flags & MUTABLE == 0, at)
}

impl CacheStorage {
    /// The pass needed before committing `incoming`, if any.
    fn target_for(&self, incoming: Incoming) -> Option<Target> {
        let bounds = self.bounds;
        let incoming_entries = incoming.entries();
        let over_entries = self.index.entries() + incoming_entries > bounds.max_entries;
        let incoming = incoming.bytes();
        let bytes = self.index.bytes() + incoming;
        // A shared bucket's size is the catalog's: see `evict_shared`.
        let over_bytes = bounds
            .max_size
            .filter(|max| bytes > *max && !self.settings.shared_store);
        let free = bounds
            .min_free
            .and_then(|min| Some((min, self.bodies.free_bytes()?)))
            .filter(|(min, free)| *free < min + incoming);
        if over_bytes.is_none() && !over_entries && free.is_none() {
            return None;
        }
        Some(Target {
            bytes: over_bytes.map(|max| low_watermark(max).saturating_sub(incoming)),
            entries: over_entries
                .then(|| low_watermark(bounds.max_entries).saturating_sub(incoming_entries)),
            free: free.map(|(min, _)| min + min / 20 + incoming),
        })
    }

    fn reached(&self, target: Target) -> bool {
        target.bytes.is_none_or(|b| self.index.bytes() <= b)
            && target.entries.is_none_or(|e| self.index.entries() <= e)
            && target
                .free
                .is_none_or(|f| self.bodies.free_bytes().is_none_or(|free| free >= f))
    }

    /// Makes room for what is about to commit.
    pub(super) async fn make_room(&'static self, incoming: Incoming) {
        if self.target_for(incoming).is_none() {
            return;
        }
        let _one_at_a_time = self.evicting.lock().await;
        // Another fill may have made the room meanwhile.
        if let Some(target) = self.target_for(incoming) {
            self.evict(target).await;
        }
    }

    /// Evicts in LRU order until `target` is reached or nothing evictable
    /// is left.
    async fn evict(&'static self, target: Target) {
        // What the last pass skipped (in use, or named by a cached
        // manifest): the next one asks for that much more, so it reaches
        // further back, until it has looked at every entry.
        let mut skipped = (0, 0);
        let mut nothing_left = false;
        for _ in 0..MAX_PASSES {
            if self.reached_compacting(target).await {
                return;
            }
            let (entries, bytes) = self.still_to_evict(target);
            let mut candidates = self
                .index
                .least_recently_used(entries + skipped.0, bytes + skipped.1);
            candidates.sort_unstable_by_key(order_key);
            let every_entry = candidates.len() as u64 >= self.index.entries();
            skipped = (0, 0);
            // Counted, not only re-read: an entry evicted from a segment
            // frees no disk space until the segment is compacted, so free
            // space alone would not show the pass its progress.
            let mut evicted = (0, 0);
            for candidate in &candidates {
                if self.reached(target) || (evicted.0 >= entries && evicted.1 >= bytes) {
                    break;
                }
                if self.in_use.contains(candidate.id) || self.refs.pinned(candidate.id, &self.index)
                {
                    skipped.0 += 1;
                    skipped.1 += candidate.view.size;
                    continue;
                }
                if self.evict_one(candidate).await {
                    evicted.0 += 1;
                    evicted.1 += candidate.view.size;
                }
            }
            let evicted_any = evicted.0 > 0;
            // A pass that evicted nothing ends the eviction, unless it
            // skipped entries and did not see them all: the next pass
            // reaches further back. After one that evicted, look again:
            // evicted manifests may have unpinned what they named.
            if !evicted_any && (every_entry || skipped == (0, 0)) {
                nothing_left = true;
                break;
            }
        }
        if self.reached_compacting(target).await {
            return;
        }
        if nothing_left {
            log::warn!(
                "cache above its bounds with nothing left to evict: {} bytes in {} objects (in use or named by cached manifests)",
                self.index.bytes(),
                self.index.entries()
            );
        } else {
            // The next commit or check goes on from here.
            log::debug!("eviction stopped after {MAX_PASSES} passes short of its target");
        }
    }

    /// Whether `target` is reached, after compacting segments if it asks
    /// for free space ([`CacheStorage::compact_for_space`]).
    async fn reached_compacting(&'static self, target: Target) -> bool {
        if self.reached(target) {
            return true;
        }
        target.free.is_some() && self.compact_for_space(|| self.reached(target)).await
    }

    /// Entries and bytes to evict before `target` is reached, as things
    /// stand (freeing disk space counts as bytes).
    fn still_to_evict(&self, target: Target) -> (u64, u64) {
        let entries = (target.entries).map_or(0, |e| self.index.entries().saturating_sub(e));
        let bytes = (target.bytes).map_or(0, |b| self.index.bytes().saturating_sub(b));
        let free = (target.free).map_or(0, |f| {
            f.saturating_sub(self.bodies.free_bytes().unwrap_or(f))
        });
        (entries, bytes.max(free))
    }

    async fn evict_one(&self, candidate: &Candidate) -> bool {
        let Some(location) = self.location_of(candidate.id, candidate.view.remote) else {
            return false;
        };
        let body_key = layout::body_key_or_inline(&location, candidate.view.body);
        let view = candidate.view;
        self.evict_entry(&location, &body_key, view.size, view.last_access)
            .await
            .unwrap_or(false)
    }

    /// Removes one entry if it still has `body_key`: `Some(evicted)`, or
    /// `None` when the store failed.
    async fn evict_entry(
        &self,
        location: &EntryLocation,
        body_key: &str,
        size: u64,
        last_access_ms: u64,
    ) -> Option<bool> {
        match self.remove(location, Expect::Body(body_key)).await {
            Ok(Some(_)) => {
                log::debug!(
                    "evicted {} ({size} bytes, last used {} ms ago)",
                    location.meta_key(),
                    super::index::now_ms().saturating_sub(last_access_ms)
                );
                self.refs.forget(location.id());
                self.eviction_stats
                    .evictions
                    .fetch_add(1, Ordering::Relaxed);
                self.eviction_stats
                    .bytes_reclaimed
                    .fetch_add(size, Ordering::Relaxed);
                Some(true)
            }
            Ok(None) => Some(false),
            Err(e) => {
                log::warn!("evicting {}: {e}", location.meta_key());
                None
            }
        }
    }

    /// Wires eviction from a bucket other nodes share.
    pub fn share_eviction(&self, shared: SharedEviction) {
        if self.shared_eviction.set(shared).is_err() {
            log::warn!("shared eviction wired twice; keeping the first");
        }
    }

    /// One pass over a shared bucket, if it is over `cache.max_size` by the
    /// catalog and this node holds the eviction lease.
    async fn evict_shared(&self, shared: &SharedEviction) {
        let Some(max) = self.bounds.max_size else {
            return;
        };
        if !shared.turn.my_turn().await {
            return;
        }
        // This node's own removals are counted, not stale rows.
        self.catalog.drain(CATALOG_CATCH_UP).await;
        let stored = match shared.catalog.usage().await {
            Ok(rows) => rows.iter().map(|r| r.bytes.max(0) as u64).sum::<u64>(),
            Err(e) => {
                log::warn!("eviction: catalog unreadable: {e}");
                return;
            }
        };
        if stored <= max {
            return;
        }
        let mut excess = stored - low_watermark(max);
        log::info!("shared cache holds {stored} bytes, over {max}: evicting {excess} bytes");
        for step in 0..SHARED_STEPS {
            // Each step renews the lease; one lost (Redis away, or this
            // node too slow) ends the pass before another node starts one.
            if step > 0 && !shared.turn.my_turn().await {
                return;
            }
            let rows = match shared.catalog.eviction_order(SHARED_BATCH).await {
                Ok(rows) if !rows.is_empty() => rows,
                Ok(_) => break,
                Err(e) => {
                    log::warn!("eviction: catalog unreadable: {e}");
                    return;
                }
            };
            let mut progressed = false;
            for row in &rows {
                if excess == 0 {
                    return;
                }
                if self.in_use.contains(row.id) {
                    continue;
                }
                let size = row.size.max(0) as u64;
                match self.evict_catalog_row(row).await {
                    Some(true) => excess = excess.saturating_sub(size),
                    Some(false) => {}
                    None => return,
                }
                progressed = true;
            }
            // The next candidates must not include these again.
            if !progressed || !self.catalog.drain(CATALOG_CATCH_UP).await {
                break;
            }
        }
        if excess > 0 {
            log::warn!("shared cache still {excess} bytes over its bound after an eviction pass");
        }
    }

    /// Evicts the entry a catalog row names; a row whose entry is gone or
    /// was replaced meanwhile is stale and dropped from the catalog.
    async fn evict_catalog_row(&self, row: &EntryRow) -> Option<bool> {
        let location = EntryLocation::new(&row.remote, row.id);
        let body_key = layout::body_key_or_inline(&location, row.body);
        let last_access = row.last_access.max(0) as u64;
        let evicted = self
            .evict_entry(&location, &body_key, row.size.max(0) as u64, last_access)
            .await?;
        if !evicted && self.contains_stored(&location).await == Some(false) {
            self.catalog
                .record(CatalogEvent::EntryRemoved { id: row.id });
        }
        Some(evicted)
    }

    /// Whether the store holds a record for `location` (`None`: unknown).
    async fn contains_stored(&self, location: &EntryLocation) -> Option<bool> {
        self.read_stored(location, None)
            .await
            .ok()
            .map(|found| found.is_some())
    }

    /// Checks the bounds every few seconds (free space can be taken by
    /// others; a restart can find the cache over a lowered bound).
    pub fn start_eviction(&'static self) {
        self.runtime.spawn(async move {
            loop {
                self.make_room(Incoming::Nothing).await;
                self.compact_sparse().await;
                if let Some(shared) = self.shared_eviction.get() {
                    self.evict_shared(shared).await;
                }
                tokio::time::sleep(CHECK_EVERY).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::index::SlotView;

    fn candidate(id: u128, last_access: u64, flags: u8) -> Candidate {
        Candidate {
            id,
            view: SlotView {
                body: 0,
                record: 0,
                size: 1,
                last_access,
                remote: 0,
                flags,
            },
        }
    }

    #[test]
    fn oldest_first_and_expiring_before_immutable_of_the_same_second() {
        let mut all = [
            candidate(1, 5_000, 0),
            candidate(2, 5_900, MUTABLE),
            candidate(3, 4_000, 0),
            candidate(4, 9_000, MUTABLE),
            candidate(5, 5_100, 0),
        ];
        all.sort_unstable_by_key(order_key);
        let ids: Vec<u128> = all.iter().map(|c| c.id).collect();
        assert_eq!(ids, [3, 2, 1, 5, 4]);
        assert_eq!(low_watermark(10 << 20), 9_961_472);
    }
}
