//! The index: every committed entry, in memory, compactly.
//!
//! One slot per entry says where its body is, how large it is, when it was
//! last used and whether it expires. It answers three questions without
//! touching the disk: is this key cached at all (a cold miss goes straight
//! upstream), how many bytes and objects are stored (eviction's trigger),
//! and which entries were used least recently (eviction's order).
//!
//! A slot is 32 bytes (48 with its key) plus the hash table's overhead;
//! [`Index::memory`] reports the table's actual size. The slot does not hold the response
//! header: the hot tier ([`super::hot`]) holds parsed records of entries in
//! use, and the record file serves the rest.
//!
//! The index is rebuilt at start from the catalog and then reconciled with
//! the store in the background ([`super::reconcile`]); until that completes
//! it is not trusted to say "absent", and misses look at the store.

use foldhash::fast::RandomState;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Independently locked parts of the table (an entry's by its id).
pub const SHARDS: usize = 64;

/// Spans of access time an eviction pass counts entries in, to find how
/// far back it must look ([`Index::least_recently_used`]).
const AGE_BUCKETS: usize = 1024;

/// Flag: the entry expires (a mutable index file or a remembered 404),
/// so it goes before immutable artifacts of the same age.
pub const MUTABLE: u8 = 1;
/// Flag: the state store holds a newer meta than the record (a 304
/// revalidation extended it).
pub const REVALIDATED: u8 = 2;

/// A slot's contents, as [`Index::insert`] takes them and [`SlotView`]
/// gives them back.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// The body file's id (the number in its key); 0 when the body lives
    /// in the record.
    pub body: u128,
    /// Where the record is in the record segments ([`super::segments`]);
    /// 0 for a record kept as its own object (the `.meta` key).
    pub record: u64,
    pub size: u64,
    pub remote: u16,
    pub flags: u8,
    /// Milliseconds since the Unix epoch.
    pub last_access: u64,
}

/// A copy of a slot's fields.
pub type SlotView = Slot;

impl Slot {
    pub fn new(body: u128, size: u64, remote: u16, flags: u8, last_access: u64) -> Slot {
        Slot {
            body,
            record: 0,
            size,
            remote,
            flags,
            last_access,
        }
    }

    /// The slot with its record at `record` in the segments.
    pub fn in_segment(mut self, record: u64) -> Slot {
        self.record = record;
        self
    }
}

/// What the table keeps per entry: 32 bytes, 48 with the key, so that ten
/// million entries fit in well under 100 bytes each.
#[derive(Debug)]
struct Stored {
    /// The body id, or [`WIDE`] for a 128-bit id of an earlier version,
    /// kept in [`Index::wide_bodies`].
    body: u64,
    record: u64,
    /// Body size (clamped to [`SIZE_BITS`]), remote and flags.
    packed: AtomicU64,
    /// Last access in milliseconds ([`TIME_BITS`]) and hits not yet
    /// reported to the catalog above them.
    access: AtomicU64,
}

/// Body ids of new fills fit 64 bits; this one says "look it up".
const WIDE: u64 = u64::MAX;
/// Bits of the packed word holding the body size: 1 TiB, far above any
/// body a cache node holds in one entry.
const SIZE_BITS: u32 = 40;
const SIZE_MASK: u64 = (1 << SIZE_BITS) - 1;
const REMOTE_SHIFT: u32 = SIZE_BITS;
const FLAGS_SHIFT: u32 = SIZE_BITS + 16;
/// Milliseconds since the Unix epoch up to the year 2109.
const TIME_BITS: u32 = 42;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
/// Unreported hits saturate here (each entry's are reported hourly).
const HITS_MAX: u64 = (1 << (64 - TIME_BITS)) - 1;

impl Stored {
    fn of(slot: &Slot) -> Stored {
        let body = u64::try_from(slot.body)
            .ok()
            .filter(|b| *b != WIDE)
            .unwrap_or(WIDE);
        let packed = slot.size.min(SIZE_MASK)
            | (slot.remote as u64) << REMOTE_SHIFT
            | (slot.flags as u64) << FLAGS_SHIFT;
        Stored {
            body,
            record: slot.record,
            packed: AtomicU64::new(packed),
            access: AtomicU64::new(slot.last_access & TIME_MASK),
        }
    }

    fn remote(&self) -> u16 {
        (self.packed.load(Ordering::Relaxed) >> REMOTE_SHIFT) as u16
    }

    fn size(&self) -> u64 {
        self.packed.load(Ordering::Relaxed) & SIZE_MASK
    }

    /// The slot, but for a [`WIDE`] body id, which the caller fills in.
    fn view(&self) -> Slot {
        let packed = self.packed.load(Ordering::Relaxed);
        Slot {
            body: self.body as u128,
            record: self.record,
            size: packed & SIZE_MASK,
            remote: (packed >> REMOTE_SHIFT) as u16,
            flags: (packed >> FLAGS_SHIFT) as u8,
            last_access: self.access.load(Ordering::Relaxed) & TIME_MASK,
        }
    }

    /// Takes the unreported hits, leaving the access time.
    fn take_hits(&self) -> u32 {
        let old = self.access.fetch_and(TIME_MASK, Ordering::Relaxed);
        (old >> TIME_BITS) as u32
    }
}

/// An entry as eviction sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub id: u128,
    pub view: SlotView,
}

/// One shard's table. Ids are blake2 hashes of cache keys, but anyone
/// who can name paths can search for ids that share a table's buckets, so
/// the table hashes them again with a seed: foldhash, a multiply per id,
/// where std's SipHash cost a hundred instructions or more per lookup, and
/// a hit at a million entries looks an id up three times.
type Shard = HashMap<u128, Stored, RandomState>;

pub struct Index {
    shards: Vec<RwLock<Shard>>,
    /// Body ids wider than 64 bits (fills of earlier versions), by entry.
    wide_bodies: RwLock<HashMap<u128, u128>>,
    entries: AtomicU64,
    bytes: AtomicU64,
    /// Objects and bytes by remote position, for `/metrics` and the
    /// status page (changed only by inserts and removals, never by a hit).
    per_remote: parking_lot::Mutex<Vec<RemoteUsage>>,
    complete: AtomicBool,
}

/// What one remote holds in the index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteUsage {
    pub objects: u64,
    pub bytes: u64,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            wide_bodies: RwLock::default(),
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            per_remote: parking_lot::Mutex::default(),
            complete: AtomicBool::new(false),
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Index {
    fn shard(&self, id: u128) -> &RwLock<Shard> {
        // The id is a hash already: its low bits spread evenly.
        &self.shards[(id as usize) % SHARDS]
    }

    /// The slot of `stored`, entry `id`, with a wide body id filled in.
    fn view(&self, id: u128, stored: &Stored) -> Slot {
        let mut slot = stored.view();
        if stored.body == WIDE {
            slot.body = self.wide_bodies.read().get(&id).copied().unwrap_or(0);
        }
        slot
    }

    pub fn get(&self, id: u128) -> Option<SlotView> {
        let shard = self.shard(id).read();
        shard.get(&id).map(|stored| self.view(id, stored))
    }

    /// Marks an access now and counts it as a hit for the catalog's next
    /// report of the entry's shard.
    pub fn touch(&self, id: u128) {
        self.touch_at(id, now_ms());
    }

    fn touch_at(&self, id: u128, now: u64) {
        let shard = self.shard(id).read();
        if let Some(stored) = shard.get(&id) {
            // A plain add would carry a saturated hit count into the
            // time bits; the loop stays uncontended as a slot is one
            // entry's.
            let _ = stored
                .access
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                    let hits = ((old >> TIME_BITS) + 1).min(HITS_MAX);
                    Some(hits << TIME_BITS | (now & TIME_MASK))
                });
        }
    }

    /// Every entry of one of the [`SHARDS`] shards with hits not yet
    /// reported: (id, last access in ms, hits), which are taken. A shard at
    /// a time, so a reporter can spread the work over a period.
    pub fn take_hits_of_shard(&self, shard: usize) -> Vec<(u128, u64, u32)> {
        let mut out = Vec::new();
        for (id, stored) in self.shards[shard % SHARDS].read().iter() {
            let hits = stored.take_hits();
            if hits > 0 {
                let at = stored.access.load(Ordering::Relaxed) & TIME_MASK;
                out.push((*id, at, hits));
            }
        }
        out
    }

    /// Makes `slot` the entry's slot; returns the one it replaced.
    pub fn insert(&self, id: u128, slot: Slot) -> Option<SlotView> {
        let stored = Stored::of(&slot);
        let wide = stored.body == WIDE;
        let mut shard = self.shard(id).write();
        let old = shard
            .insert(id, stored)
            .map(|old| (old.body == WIDE, old.view()));
        let mut old_view = old.map(|(_, view)| view);
        if wide || old.is_some_and(|(was_wide, _)| was_wide) {
            let mut bodies = self.wide_bodies.write();
            let replaced = if wide {
                bodies.insert(id, slot.body)
            } else {
                bodies.remove(&id)
            };
            if let (Some(view), Some(body)) = (&mut old_view, replaced) {
                view.body = body;
            }
        }
        drop(shard);
        match &old_view {
            Some(old) => {
                self.bytes.fetch_sub(old.size, Ordering::Relaxed);
                self.account(old.remote, old.size, false);
            }
            None => {
                self.entries.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.bytes
            .fetch_add(slot.size.min(SIZE_MASK), Ordering::Relaxed);
        self.account(slot.remote, slot.size.min(SIZE_MASK), true);
        old_view
    }

    /// Removes the entry if its body is still `body` (or whatever it is,
    /// for `None`); returns what was removed.
    pub fn remove(&self, id: u128, body: Option<u128>) -> Option<SlotView> {
        let mut shard = self.shard(id).write();
        let current = self.view(id, shard.get(&id)?);
        if body.is_some_and(|body| body != current.body) {
            return None;
        }
        let removed = shard.remove(&id)?;
        if removed.body == WIDE {
            self.wide_bodies.write().remove(&id);
        }
        drop(shard);
        self.entries.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(current.size, Ordering::Relaxed);
        self.account(current.remote, current.size, false);
        Some(current)
    }

    /// Points the entry's record at `to` if it is still at `from` (a
    /// compaction moving it); whether it was.
    pub fn relocate(&self, id: u128, from: u64, to: u64) -> bool {
        match self.shard(id).write().get_mut(&id) {
            Some(stored) if stored.record == from => {
                stored.record = to;
                true
            }
            _ => false,
        }
    }

    pub fn set_flag(&self, id: u128, flag: u8) {
        if let Some(stored) = self.shard(id).read().get(&id) {
            stored
                .packed
                .fetch_or((flag as u64) << FLAGS_SHIFT, Ordering::Relaxed);
        }
    }

    /// Removes every entry of `remote` (or all); returns how many.
    pub fn clear(&self, remote: Option<u16>) -> usize {
        let mut removed = 0;
        let mut wide = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.write();
            shard.retain(|id, stored| {
                let keep = remote.is_some_and(|r| stored.remote() != r);
                if !keep {
                    removed += 1;
                    self.entries.fetch_sub(1, Ordering::Relaxed);
                    self.bytes.fetch_sub(stored.size(), Ordering::Relaxed);
                    self.account(stored.remote(), stored.size(), false);
                    if stored.body == WIDE {
                        wide.push(*id);
                    }
                }
                keep
            });
        }
        let mut bodies = self.wide_bodies.write();
        for id in wide {
            bodies.remove(&id);
        }
        removed
    }

    /// Hands every entry to `each`, one shard at a time.
    pub fn each(&self, mut each: impl FnMut(u128, Slot)) {
        for shard in &self.shards {
            let shard = shard.read();
            for (id, stored) in shard.iter() {
                each(*id, self.view(*id, stored));
            }
        }
    }

    /// The least recently used entries, for an eviction pass to order:
    /// whole seconds of last access, oldest first, until they hold at
    /// least `entries` entries and `bytes` bytes (every entry when the
    /// index holds less). Whole seconds, so that the order within one
    /// second (expiring entries first) is the whole index's.
    ///
    /// Three walks find them: the range of access times, a histogram of
    /// [`AGE_BUCKETS`] over it, and the entries up to the bucket that
    /// covers the request. A list of every entry would be 64 bytes an
    /// entry, 640 MB at ten million, and the allocator keeps it.
    pub fn least_recently_used(&self, entries: u64, bytes: u64) -> Vec<Candidate> {
        let second = |slot: &Slot| slot.last_access / 1000;
        let (mut first, mut last) = (u64::MAX, 0);
        self.each(|_, slot| {
            first = first.min(second(&slot));
            last = last.max(second(&slot));
        });
        if first > last {
            return Vec::new();
        }
        let width = (last - first) / AGE_BUCKETS as u64 + 1;
        // Entries committed or used between the walks fall in the last
        // bucket, or the first when an adopted record is older than all.
        let bucket = |slot: &Slot| {
            ((second(slot).saturating_sub(first) / width) as usize).min(AGE_BUCKETS - 1)
        };
        let mut histogram = [(0u64, 0u64); AGE_BUCKETS];
        self.each(|_, slot| {
            let (count, size) = &mut histogram[bucket(&slot)];
            *count += 1;
            *size += slot.size;
        });
        let (mut covered, mut count, mut size) = (AGE_BUCKETS - 1, 0, 0);
        for (at, (bucket_count, bucket_size)) in histogram.iter().enumerate() {
            count += bucket_count;
            size += bucket_size;
            if count >= entries && size >= bytes {
                covered = at;
                break;
            }
        }
        let mut out = Vec::with_capacity(count as usize);
        self.each(|id, view| {
            if bucket(&view) <= covered {
                out.push(Candidate { id, view });
            }
        });
        out
    }

    /// Adds (or takes away) one object of `size` bytes to the remote at
    /// position `remote`; an unknown remote (`u16::MAX`) is not counted.
    fn account(&self, remote: u16, size: u64, added: bool) {
        if remote == u16::MAX {
            return;
        }
        let mut per_remote = self.per_remote.lock();
        let at = remote as usize;
        if per_remote.len() <= at {
            per_remote.resize(at + 1, RemoteUsage::default());
        }
        let usage = &mut per_remote[at];
        if added {
            usage.objects += 1;
            usage.bytes += size;
        } else {
            usage.objects = usage.objects.saturating_sub(1);
            usage.bytes = usage.bytes.saturating_sub(size);
        }
    }

    /// Objects and bytes by remote position.
    pub fn usage_by_remote(&self) -> Vec<RemoteUsage> {
        self.per_remote.lock().clone()
    }

    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether the index holds every committed entry (absence is final).
    pub fn complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    pub fn set_complete(&self) {
        self.complete.store(true, Ordering::Release);
    }

    /// Bytes the tables occupy (buckets of key and slot plus a control
    /// byte each), for the per-entry figure in `/metrics`.
    pub fn memory(&self) -> u64 {
        let bucket = std::mem::size_of::<(u128, Stored)>() + 1;
        self.shards
            .iter()
            // hashbrown keeps an eighth of its buckets free.
            .map(|shard| (shard.read().capacity() * 8 / 7 * bucket) as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounting_follows_inserts_replacements_and_compare_before_remove() {
        let index = Index::default();
        assert!(index.insert(1, Slot::new(10, 100, 0, 0, 1)).is_none());
        assert!(index.insert(2, Slot::new(20, 50, 1, MUTABLE, 2)).is_none());
        assert_eq!((index.entries(), index.bytes()), (2, 150));
        let old = index.insert(1, Slot::new(11, 70, 0, 0, 3)).unwrap();
        assert_eq!(old.body, 10);
        assert_eq!((index.entries(), index.bytes()), (2, 120));
        let usage = |objects, bytes| RemoteUsage { objects, bytes };
        assert_eq!(index.usage_by_remote(), vec![usage(1, 70), usage(1, 50)]);
        // A removal that read the old body leaves the new one alone.
        assert!(index.remove(1, Some(10)).is_none());
        assert_eq!(index.remove(1, Some(11)).unwrap().size, 70);
        assert_eq!((index.entries(), index.bytes()), (1, 50));
        assert_eq!(index.clear(Some(0)), 0);
        assert_eq!(index.clear(Some(1)), 1);
        assert_eq!((index.entries(), index.bytes()), (0, 0));
        assert_eq!(index.usage_by_remote(), vec![usage(0, 0), usage(0, 0)]);
        index.insert(3, Slot::new(30, 5, u16::MAX, 0, 1));
        assert_eq!(
            index.usage_by_remote().len(),
            2,
            "unknown remote not counted"
        );
    }

    #[test]
    fn an_entry_takes_48_bytes_with_its_key() {
        assert_eq!(std::mem::size_of::<(u128, Stored)>(), 48);
        let index = Index::default();
        index.insert(
            7,
            Slot::new(3, (1 << 40) - 1, 513, MUTABLE, 9).in_segment(42),
        );
        index.set_flag(7, REVALIDATED);
        let view = index.get(7).unwrap();
        assert_eq!(
            (
                view.body,
                view.size,
                view.remote,
                view.flags,
                view.record,
                view.last_access
            ),
            (3, (1 << 40) - 1, 513, MUTABLE | REVALIDATED, 42, 9)
        );
        assert!(!index.relocate(7, 41, 50), "moved from elsewhere");
        assert!(index.relocate(7, 42, 50));
        assert_eq!(index.get(7).unwrap().record, 50);
        assert_eq!(index.clear(Some(512)), 0);
        assert_eq!(index.clear(Some(513)), 1);
    }

    #[test]
    fn body_ids_of_earlier_versions_keep_all_128_bits() {
        let index = Index::default();
        let wide = u128::MAX - 5;
        index.insert(1, Slot::new(wide, 10, 0, 0, 1));
        assert_eq!(index.get(1).unwrap().body, wide);
        assert!(
            index.remove(1, Some(wide as u64 as u128)).is_none(),
            "compared whole"
        );
        let old = index.insert(1, Slot::new(4, 10, 0, 0, 2)).unwrap();
        assert_eq!(old.body, wide);
        assert!(
            index.wide_bodies.read().is_empty(),
            "replaced by a narrow id"
        );
        index.insert(2, Slot::new(u64::MAX as u128, 10, 0, 0, 1));
        assert_eq!(
            index
                .least_recently_used(u64::MAX, 0)
                .iter()
                .find(|c| c.id == 2)
                .unwrap()
                .view
                .body,
            u64::MAX as u128
        );
        assert_eq!(
            index.remove(2, Some(u64::MAX as u128)).unwrap().body,
            u64::MAX as u128
        );
        assert!(index.wide_bodies.read().is_empty());
    }

    #[test]
    fn the_least_recently_used_cover_the_request_in_whole_seconds() {
        let index = Index::default();
        // Ten seconds apart, 100 bytes each, ids 0..1000; id 1000 in the
        // same second as id 0, 999 ms later.
        for id in 0..1000u128 {
            let at = 1_000_000 + id as u64 * 10_000;
            index.insert(id, Slot::new(id + 1, 100, 0, 0, at));
        }
        index.insert(1000, Slot::new(1001, 100, 0, 0, 1_000_999));
        let ids = |entries, bytes| {
            let mut ids: Vec<u128> = (index.least_recently_used(entries, bytes).iter())
                .map(|c| c.id)
                .collect();
            ids.sort_unstable();
            ids
        };
        let asked = ids(50, 0);
        assert!(asked.len() >= 50 && asked.len() < 100, "{}", asked.len());
        assert_eq!(asked.last(), Some(&1000), "the same second as the oldest");
        let oldest: Vec<u128> = (0..asked.len() as u128 - 1).collect();
        assert_eq!(asked[..asked.len() - 1], oldest[..]);
        let by_bytes = ids(0, 30_000);
        assert!(by_bytes.len() >= 300 && by_bytes.len() < 350);
        assert_eq!(ids(2_000, 0).len(), 1001, "all when the index holds less");
        assert!(Index::default().least_recently_used(1, 1).is_empty());
    }

    fn take_all(index: &Index) -> Vec<(u128, u64, u32)> {
        (0..SHARDS)
            .flat_map(|shard| index.take_hits_of_shard(shard))
            .collect()
    }

    #[test]
    fn accesses_keep_the_latest_time_and_count_hits_until_taken() {
        let index = Index::default();
        let hour = 3_600_000;
        index.insert(1, Slot::new(10, 1, 0, 0, 5 * hour + 10));
        index.touch_at(1, 6 * hour + 1);
        index.touch_at(1, 6 * hour + 3);
        assert_eq!(index.get(1).unwrap().last_access, 6 * hour + 3);
        assert_eq!(take_all(&index), vec![(1, 6 * hour + 3, 2)]);
        assert!(take_all(&index).is_empty(), "taken once");
        assert_eq!(
            index.get(1).unwrap().last_access,
            6 * hour + 3,
            "taking hits keeps the time"
        );
        index.touch(9);
        assert!(index.get(9).is_none(), "an unknown entry stays unknown");
    }

    #[test]
    fn a_shard_gives_up_the_hits_of_its_own_entries_only() {
        let index = Index::default();
        for id in 0..(3 * SHARDS as u128) {
            index.insert(id, Slot::new(10, 1, 0, 0, 1));
            // Every round of ids but the second.
            if id / SHARDS as u128 != 1 {
                index.touch_at(id, 7);
            }
        }
        let taken = index.take_hits_of_shard(2);
        let mut ids: Vec<u128> = taken.iter().map(|(id, _, _)| *id).collect();
        ids.sort_unstable();
        let (shard, size) = (2, SHARDS as u128);
        assert_eq!(
            ids,
            vec![shard, shard + 2 * size],
            "touched entries of shard 2"
        );
        assert!(taken.iter().all(|&(_, at, hits)| at == 7 && hits == 1));
        assert!(index.take_hits_of_shard(2).is_empty(), "taken once");
        assert_eq!(take_all(&index).len(), 2 * SHARDS - 2);
    }

    #[test]
    fn a_million_entries_cost_under_110_bytes_each() {
        let index = Index::default();
        let n: u64 = 1_000_000;
        for i in 0..n {
            let id = (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            index.insert(id, Slot::new(i as u128, 1024, 0, 0, i));
        }
        assert_eq!(index.entries(), n);
        let per_entry = index.memory() / n;
        eprintln!("index: {per_entry} bytes per entry at {n} entries");
        assert!(per_entry < 110, "{per_entry} bytes per entry");
    }
}
