//! The index: every committed entry, in memory, compactly.
//!
//! One slot per entry says where its body is, how large it is, when it was
//! last used and whether it expires. It answers three questions without
//! touching the disk: is this key cached at all (a cold miss goes straight
//! upstream), how many bytes and objects are stored (eviction's trigger),
//! and which entries were used least recently (eviction's order).
//!
//! A slot is 48 bytes (64 with its key) plus the hash table's overhead; [`Index::memory`]
//! reports the table's actual size. The slot does not hold the response
//! header: the hot tier ([`super::hot`]) holds parsed records of entries in
//! use, and the record file serves the rest.
//!
//! The index is rebuilt at start from the catalog and then reconciled with
//! the store in the background ([`super::reconcile`]); until that completes
//! it is not trusted to say "absent", and misses look at the store.

use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

const SHARDS: usize = 64;

/// Flag: the entry expires (a mutable index file or a remembered 404),
/// so it goes before immutable artifacts of the same age.
pub const MUTABLE: u8 = 1;
/// Flag: the state store holds a newer meta than the record (a 304
/// revalidation extended it).
pub const REVALIDATED: u8 = 2;

/// Where a committed entry's record and body are and how it is used.
#[derive(Debug)]
pub struct Slot {
    /// The body file's id (the uuid in its key); 0 when the body lives in
    /// the record.
    pub body: u128,
    /// Where the record is in the record segments ([`super::segments`]);
    /// 0 for a record kept as its own object (the `.meta` key).
    pub record: u64,
    /// Body size, remote and flags in one word (see [`pack`]): the slot
    /// stays 48 bytes with the record's location in it.
    packed: AtomicU64,
    /// Milliseconds since the Unix epoch.
    pub last_access: AtomicU64,
    /// Unix seconds of the last access reported to the catalog (the slot
    /// lives as long as the entry, so the throttle does not depend on the
    /// entry staying in the hot tier).
    reported: AtomicU32,
    /// Hits since the last report to the catalog.
    unreported_hits: AtomicU32,
}

/// Bits of the packed word holding the body size: 1 TiB, far above any
/// body a cache node holds in one entry.
const SIZE_BITS: u32 = 40;
const SIZE_MASK: u64 = (1 << SIZE_BITS) - 1;
const REMOTE_SHIFT: u32 = SIZE_BITS;
const FLAGS_SHIFT: u32 = SIZE_BITS + 16;

/// Size (clamped to [`SIZE_BITS`]), remote and flags in one word.
fn pack(size: u64, remote: u16, flags: u8) -> u64 {
    size.min(SIZE_MASK) | (remote as u64) << REMOTE_SHIFT | (flags as u64) << FLAGS_SHIFT
}

/// A copy of a slot's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotView {
    pub body: u128,
    pub record: u64,
    pub size: u64,
    pub last_access: u64,
    pub remote: u16,
    pub flags: u8,
}

impl Slot {
    pub fn new(body: u128, size: u64, remote: u16, flags: u8, last_access: u64) -> Slot {
        Slot {
            body,
            record: 0,
            packed: AtomicU64::new(pack(size, remote, flags)),
            last_access: AtomicU64::new(last_access),
            reported: AtomicU32::new((last_access / 1000) as u32),
            unreported_hits: AtomicU32::new(0),
        }
    }

    /// The slot with its record at `record` in the segments.
    pub fn in_segment(mut self, record: u64) -> Slot {
        self.record = record;
        self
    }

    pub fn size(&self) -> u64 {
        self.packed.load(Ordering::Relaxed) & SIZE_MASK
    }

    fn remote(&self) -> u16 {
        (self.packed.load(Ordering::Relaxed) >> REMOTE_SHIFT) as u16
    }

    pub fn view(&self) -> SlotView {
        let packed = self.packed.load(Ordering::Relaxed);
        SlotView {
            body: self.body,
            record: self.record,
            size: packed & SIZE_MASK,
            last_access: self.last_access.load(Ordering::Relaxed),
            remote: (packed >> REMOTE_SHIFT) as u16,
            flags: (packed >> FLAGS_SHIFT) as u8,
        }
    }
}

/// An entry as eviction sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub id: u128,
    pub view: SlotView,
}

pub struct Index {
    shards: Vec<RwLock<HashMap<u128, Slot>>>,
    entries: AtomicU64,
    bytes: AtomicU64,
    complete: AtomicBool,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
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
    fn shard(&self, id: u128) -> &RwLock<HashMap<u128, Slot>> {
        // The id is a hash already: its low bits spread evenly.
        &self.shards[(id as usize) % SHARDS]
    }

    pub fn get(&self, id: u128) -> Option<SlotView> {
        self.shard(id).read().get(&id).map(Slot::view)
    }

    /// Marks an access now. Returns whether it is due to be reported to
    /// the catalog: at most once per `report_every_secs` per entry.
    pub fn touch(&self, id: u128, report_every_secs: u32) -> bool {
        let shard = self.shard(id).read();
        let Some(slot) = shard.get(&id) else {
            return false;
        };
        let now = now_ms();
        slot.last_access.store(now, Ordering::Relaxed);
        slot.unreported_hits.fetch_add(1, Ordering::Relaxed);
        let now_secs = (now / 1000) as u32;
        let reported = slot.reported.load(Ordering::Relaxed);
        now_secs >= reported.saturating_add(report_every_secs)
            && slot
                .reported
                .compare_exchange(reported, now_secs, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The hits of `id` since they were last taken, now zero.
    pub fn take_hits(&self, id: u128) -> u32 {
        let shard = self.shard(id).read();
        shard
            .get(&id)
            .map_or(0, |slot| slot.unreported_hits.swap(0, Ordering::Relaxed))
    }

    /// Every entry with hits not yet reported: (id, last access in ms,
    /// hits), which are taken.
    pub fn take_all_hits(&self) -> Vec<(u128, u64, u32)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            for (id, slot) in shard.read().iter() {
                let hits = slot.unreported_hits.swap(0, Ordering::Relaxed);
                if hits > 0 {
                    out.push((*id, slot.last_access.load(Ordering::Relaxed), hits));
                }
            }
        }
        out
    }

    /// Makes `slot` the entry's slot; returns the one it replaced.
    pub fn insert(&self, id: u128, slot: Slot) -> Option<SlotView> {
        let size = slot.size();
        let old = self
            .shard(id)
            .write()
            .insert(id, slot)
            .map(|old| old.view());
        match &old {
            Some(old) => {
                self.bytes.fetch_sub(old.size, Ordering::Relaxed);
            }
            None => {
                self.entries.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        old
    }

    /// Removes the entry if its body is still `body` (or whatever it is,
    /// for `None`); returns what was removed.
    pub fn remove(&self, id: u128, body: Option<u128>) -> Option<SlotView> {
        let mut shard = self.shard(id).write();
        if let (Some(body), Some(slot)) = (body, shard.get(&id)) {
            if slot.body != body {
                return None;
            }
        }
        let removed = shard.remove(&id)?.view();
        drop(shard);
        self.entries.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(removed.size, Ordering::Relaxed);
        Some(removed)
    }

    /// Points the entry's record at `to` if it is still at `from` (a
    /// compaction moving it); whether it was.
    pub fn relocate(&self, id: u128, from: u64, to: u64) -> bool {
        match self.shard(id).write().get_mut(&id) {
            Some(slot) if slot.record == from => {
                slot.record = to;
                true
            }
            _ => false,
        }
    }

    pub fn set_flag(&self, id: u128, flag: u8) {
        if let Some(slot) = self.shard(id).read().get(&id) {
            slot.packed
                .fetch_or((flag as u64) << FLAGS_SHIFT, Ordering::Relaxed);
        }
    }

    /// Removes every entry of `remote` (or all); returns how many.
    pub fn clear(&self, remote: Option<u16>) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = shard.write();
            shard.retain(|_, slot| {
                let keep = remote.is_some_and(|r| slot.remote() != r);
                if !keep {
                    removed += 1;
                    self.entries.fetch_sub(1, Ordering::Relaxed);
                    self.bytes.fetch_sub(slot.size(), Ordering::Relaxed);
                }
                keep
            });
        }
        removed
    }

    /// Every entry, for eviction to order.
    pub fn candidates(&self) -> Vec<Candidate> {
        let mut out = Vec::with_capacity(self.entries() as usize);
        for shard in &self.shards {
            let shard = shard.read();
            out.extend(shard.iter().map(|(id, slot)| Candidate {
                id: *id,
                view: slot.view(),
            }));
        }
        out
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
        let bucket = std::mem::size_of::<(u128, Slot)>() + 1;
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
        // A removal that read the old body leaves the new one alone.
        assert!(index.remove(1, Some(10)).is_none());
        assert_eq!(index.remove(1, Some(11)).unwrap().size, 70);
        assert_eq!((index.entries(), index.bytes()), (1, 50));
        assert_eq!(index.clear(Some(0)), 0);
        assert_eq!(index.clear(Some(1)), 1);
        assert_eq!((index.entries(), index.bytes()), (0, 0));
    }

    #[test]
    fn a_slot_packs_size_remote_and_flags_into_48_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 48);
        let index = Index::default();
        index.insert(
            7,
            Slot::new(3, (1 << 40) - 1, 513, MUTABLE, 9).in_segment(42),
        );
        index.set_flag(7, REVALIDATED);
        let view = index.get(7).unwrap();
        assert_eq!(
            (view.size, view.remote, view.flags, view.record),
            ((1 << 40) - 1, 513, MUTABLE | REVALIDATED, 42)
        );
        assert!(!index.relocate(7, 41, 50), "moved from elsewhere");
        assert!(index.relocate(7, 42, 50));
        assert_eq!(index.get(7).unwrap().record, 50);
        assert_eq!(index.clear(Some(512)), 0);
        assert_eq!(index.clear(Some(513)), 1);
    }

    #[test]
    fn accesses_are_due_for_the_catalog_once_per_period() {
        let index = Index::default();
        index.insert(1, Slot::new(10, 1, 0, 0, now_ms()));
        assert!(!index.touch(1, 60), "just stored: nothing to report yet");
        assert!(index.touch(1, 0));
        index.insert(2, Slot::new(20, 1, 0, 0, 0));
        assert!(index.touch(2, 60), "last reported long ago");
        assert!(!index.touch(2, 60), "reported just now");
        assert!(!index.touch(9, 0), "unknown entry");
    }

    #[test]
    fn a_million_entries_cost_under_200_bytes_each() {
        let index = Index::default();
        let n: u64 = 1_000_000;
        for i in 0..n {
            let id = (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            index.insert(id, Slot::new(i as u128, 1024, 0, 0, i));
        }
        assert_eq!(index.entries(), n);
        let per_entry = index.memory() / n;
        eprintln!("index: {per_entry} bytes per entry at {n} entries");
        assert!(per_entry < 200, "{per_entry} bytes per entry");
    }
}
