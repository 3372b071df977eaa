//! Where an entry's record is written, read and deleted: a frame in the
//! record segments ([`super::segments`]) on a local store; an object of its
//! own (the `.meta` key) on a remote store, and for entries a version
//! without segments wrote, which are read as they are until replaced.
//!
//! Also the segments' upkeep: at start, the frames the catalog may not have
//! heard of (the newest segments of each remote) are read back into the
//! index; in the background, segments left mostly dead by evictions are
//! compacted.

use super::index::{Slot, SlotView};
use super::layout::EntryLocation;
use super::record::Record;
use super::segments::{self, Frame, Kind, Segments};
use super::{internal, snapshot, CacheStorage};
use crate::catalog::{CatalogEvent, EntryRow};
use bytes::Bytes;
use pingora::Result;
use std::collections::HashMap;
use std::sync::Arc;

/// The size of the body kept in an entry's record (0 when it has a file):
/// how much a segment read asks for beyond the stored head.
pub(super) fn inline_size(slot: SlotView) -> u64 {
    if slot.body == 0 {
        slot.size
    } else {
        0
    }
}

impl CacheStorage {
    /// Writes entry `location`'s record: its location in the segments, or
    /// 0 when it went to an object of its own. With `cache.fsync` it is on
    /// stable storage when this returns.
    ///
    /// `detached` is the inline body's chunks when `record` leaves it out
    /// ([`Self::commit`]); they follow the record's head in its frame.
    pub(super) async fn write_record(
        &self,
        location: &EntryLocation,
        record: &Record,
        detached: &[Bytes],
    ) -> Result<u64> {
        let Some(segments) = &self.segments else {
            // A record of its own is one object: `commit` detaches a body
            // only into a segment frame.
            debug_assert!(detached.is_empty());
            self.bodies
                .put(&location.meta_key(), Bytes::from(record.encode()))
                .await
                .map_err(|e| internal("writing cache record", e))?;
            return Ok(0);
        };
        let inline_len = match detached {
            [] => record.inline_body.as_ref().map(Bytes::len),
            chunks => Some(chunks.iter().map(Bytes::len).sum()),
        };
        let head = record.encode_head(inline_len);
        let parts: Vec<&[u8]> = std::iter::once(&head[..])
            .chain(detached.iter().map(|chunk| &chunk[..]))
            .chain(record.inline_body.as_deref())
            .collect();
        self.append_record(segments, &location.remote, location.id(), &parts)
            .await
            .map_err(|e| internal("writing cache record", e))
    }

    /// Appends entry `id`'s record, made of `parts`, to `remote`'s segment,
    /// synced to stable storage with `cache.fsync`; its location.
    async fn append_record(
        &self,
        segments: &Arc<Segments>,
        remote: &str,
        id: u128,
        parts: &[&[u8]],
    ) -> std::io::Result<u64> {
        let at = segments.append_parts(remote, Kind::Record, id, parts)?;
        if self.settings.fsync {
            let segments = segments.clone();
            blocking(move || segments.sync(at)).await?;
        }
        Ok(at)
    }

    /// Entry `id`'s record where `slot` says it is, if that needs no wait.
    pub(super) fn record_bytes_now(&self, id: u128, slot: SlotView) -> Option<Bytes> {
        match slot.record {
            0 => {
                let location = self.location_of(id, slot.remote)?;
                self.bodies.get_small_now(&location.meta_key())
            }
            at => self.segments.as_ref()?.read_now(at, id, inline_size(slot)),
        }
    }

    /// Entry `location`'s record where `slot` says it is (its own object
    /// for an entry the index does not know); `None` when it is gone.
    pub(super) async fn record_bytes(
        &self,
        location: &EntryLocation,
        slot: Option<SlotView>,
    ) -> Result<Option<Bytes>> {
        let read = match (slot.filter(|s| s.record != 0), &self.segments) {
            (Some(slot), Some(segments)) => {
                segments
                    .read(slot.record, location.id(), inline_size(slot))
                    .await
            }
            (Some(_), None) => Ok(None),
            (None, _) => self.bodies.get_small(&location.meta_key()).await,
        };
        read.map_err(|e| internal("reading cache record", e))
    }

    /// Deletes the record of an entry just removed from the index, which
    /// was where `slot` says (its own object when the index did not know it).
    pub(super) async fn delete_record(
        &self,
        location: &EntryLocation,
        slot: Option<SlotView>,
    ) -> Result<()> {
        match (slot.filter(|s| s.record != 0), &self.segments) {
            (Some(slot), Some(segments)) => {
                // A tombstone, so that recovery after a crash does not
                // bring the entry back from a frame the catalog lists.
                if let Err(e) = segments.append(&location.remote, Kind::Removed, location.id(), &[])
                {
                    log::warn!("recording the removal of {}: {e}", location.meta_key());
                }
                segments.release(slot.record, inline_size(slot));
                Ok(())
            }
            (Some(_), None) => Ok(()),
            (None, _) => self
                .bodies
                .delete(&location.meta_key())
                .await
                .map(|_| ())
                .map_err(|e| internal("deleting cache record", e)),
        }
    }

    /// Keeps the segments' counts right when entry `location` got slot
    /// `new` (`None`: it was removed) in place of `replaced`. A record of
    /// its own that a segment frame replaced is deleted.
    pub(super) fn recount(
        &'static self,
        location: &EntryLocation,
        new: Option<SlotView>,
        replaced: Option<SlotView>,
    ) {
        let Some(segments) = &self.segments else {
            return;
        };
        let new = new.filter(|slot| slot.record != 0);
        if let Some(slot) = new {
            segments.count(slot.record, inline_size(slot));
        }
        match replaced {
            Some(old) if old.record != 0 => segments.release(old.record, inline_size(old)),
            Some(_) if new.is_some() => {
                let key = location.meta_key();
                self.runtime.spawn(async move {
                    if let Err(e) = self.bodies.delete(&key).await {
                        log::warn!("deleting replaced record {key}: {e}");
                    }
                });
            }
            _ => {}
        }
    }

    /// The newest segment each remote's catalog rows name (the floor of
    /// what recovery reads), noted while the index is loaded.
    pub(super) fn note_recovery_floor(&self, remote: &str, record: u64) {
        let mut floors = self.recovery_floors.lock();
        let floor = floors.entry(remote.to_string()).or_insert(0);
        *floor = (*floor).max(segments::number_of(record));
    }

    /// Reads back into the index what the catalog may not have heard of:
    /// frames of each remote's segments from the newest its rows name on
    /// (every segment when the catalog was not read at start). A record
    /// newer than the slot's is adopted, a tombstone newer than it removes
    /// the entry. Then segments nothing lives in are deleted.
    pub async fn recover_segments(&'static self) {
        let Some(segments) = &self.segments else {
            return;
        };
        let floors: HashMap<String, u32> = std::mem::take(&mut *self.recovery_floors.lock());
        let started = std::time::Instant::now();
        let (mut scanned, mut adopted, mut removed) = (0, 0, 0);
        for (remote, number) in segments.listed() {
            if number < floors.get(&remote).copied().unwrap_or(0) {
                continue;
            }
            let Some(frames) = scan(segments, number, &remote).await else {
                continue;
            };
            scanned += 1;
            for frame in frames {
                match self.recover_frame(&remote, frame) {
                    Some(true) => adopted += 1,
                    Some(false) => removed += 1,
                    None => {}
                }
            }
        }
        segments.delete_unused();
        log::info!(
            "read {scanned} record segments in {:?}: {adopted} entries adopted, {removed} removed",
            started.elapsed()
        );
    }

    /// Applies one frame found by recovery if it is newer than what the
    /// index holds: `Some(true)` adopted, `Some(false)` removed.
    fn recover_frame(&'static self, remote: &str, frame: Frame) -> Option<bool> {
        let current = self.index.get(frame.id);
        let newer = current.is_none_or(|slot| slot.record < frame.location);
        if !newer {
            return None;
        }
        let location = EntryLocation::new(remote, frame.id);
        match frame.kind {
            Kind::Removed => {
                let slot = current?;
                self.index.remove(frame.id, Some(slot.body));
                self.recount(&location, None, Some(slot));
                self.catalog
                    .record(CatalogEvent::EntryRemoved { id: frame.id });
                Some(false)
            }
            Kind::Record => {
                let record = Record::decode(&frame.payload).ok()?;
                let slot = self
                    .found_slot(&location, &record)
                    .in_segment(frame.location);
                if slot.remote == u16::MAX {
                    return None;
                }
                let row = self.entry_row(&location, &record, &slot);
                let replaced = self.index.insert(frame.id, slot);
                self.recount(&location, Some(slot), replaced);
                self.catalog.record(CatalogEvent::Entry(row));
                Some(true)
            }
        }
    }

    /// The catalog row of an entry with `record` in `slot`.
    pub(super) fn entry_row(
        &self,
        location: &EntryLocation,
        record: &Record,
        slot: &Slot,
    ) -> EntryRow {
        EntryRow {
            id: location.id(),
            remote: location.remote.clone(),
            path: record.body.path.clone(),
            body: slot.body,
            size: slot.size as i64,
            flags: slot.flags,
            last_access: slot.last_access as i64,
            record: slot.record,
        }
    }

    /// Compacts the segments evictions left mostly dead: each live frame
    /// is appended anew and its entry pointed at the copy, after which the
    /// old segment holds nothing and is deleted.
    pub(super) async fn compact_sparse(&'static self) {
        let Some(segments) = &self.segments else {
            return;
        };
        for number in segments.sparse() {
            self.compact(segments, number).await;
        }
    }

    /// Compacts the segments with the most dead bytes until `enough`:
    /// a record evicted from a segment gives no disk space back until its
    /// segment is compacted, so a pass keeping `cache.min_free` would
    /// otherwise see none of its own progress. Stops at a compaction that
    /// gave back less than an eighth of its segment (the estimates were
    /// off, or another writer took the space): evicting more is then what
    /// frees space. Whether `enough` holds at the end.
    pub(super) async fn compact_for_space(&'static self, enough: impl Fn() -> bool) -> bool {
        let Some(segments) = &self.segments else {
            return enough();
        };
        for segment in segments.reclaimable() {
            if enough() {
                return true;
            }
            let before = self.bodies.free_bytes();
            self.compact(segments, segment.number).await;
            let gained = match (before, self.bodies.free_bytes()) {
                (Some(before), Some(after)) => after.saturating_sub(before),
                _ => 0,
            };
            if segments.exists(segment.number) || gained < segment.len / 8 {
                break;
            }
        }
        enough()
    }

    /// Appends segment `number`'s live frames anew and points their
    /// entries at the copies, after which it holds nothing and is deleted.
    async fn compact(&'static self, segments: &Arc<Segments>, number: u32) {
        let Some(remote) = segments.remote_of(number) else {
            return;
        };
        let Some(frames) = scan(segments, number, &remote).await else {
            return;
        };
        let mut moved = 0;
        for frame in frames {
            if frame.kind == Kind::Record && self.move_frame(&remote, &frame).await {
                moved += 1;
            }
        }
        log::debug!("compacted segment {number:08x} of {remote}: {moved} records moved");
    }

    /// Moves a live frame to the remote's current segment; whether it was
    /// live and moved.
    async fn move_frame(&'static self, remote: &str, frame: &Frame) -> bool {
        let Some(segments) = &self.segments else {
            return false;
        };
        let _guard = self.entry_locks.lock(frame.id).await;
        let Some(slot) = self
            .index
            .get(frame.id)
            .filter(|s| s.record == frame.location)
        else {
            return false;
        };
        let Ok(record) = Record::decode(&frame.payload) else {
            return false;
        };
        let appended = self
            .append_record(segments, remote, frame.id, &[&frame.payload[..]])
            .await;
        let to = match appended {
            Ok(to) => to,
            Err(e) => {
                log::warn!(
                    "compacting segment {:08x}: {e}",
                    segments::number_of(frame.location)
                );
                return false;
            }
        };
        if !self.index.relocate(frame.id, frame.location, to) {
            return false;
        }
        segments.count(to, inline_size(slot));
        segments.release(frame.location, inline_size(slot));
        let location = EntryLocation::new(remote, frame.id);
        let moved = slot.in_segment(to);
        self.catalog.record(CatalogEvent::Entry(
            self.entry_row(&location, &record, &moved),
        ));
        true
    }
}

/// Every whole frame of segment `number`, read on the blocking pool;
/// `None` (logged) when it cannot be read.
async fn scan(segments: &Arc<Segments>, number: u32, remote: &str) -> Option<Vec<Frame>> {
    let scanning = segments.clone();
    blocking(move || scanning.scan(number))
        .await
        .inspect_err(|e| log::warn!("reading segment {number:08x} of {remote}: {e}"))
        .ok()
}

/// Runs `work` on the blocking pool; a panic in it is an error like any.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

/// The segments of a local store rooted at `root`.
pub fn open_segments(
    root: Option<&std::path::Path>,
    segment_size: u64,
) -> std::io::Result<Option<Arc<Segments>>> {
    root.map(|root| Segments::open(root, segment_size).map(Arc::new))
        .transpose()
}

impl CacheStorage {
    /// Writes the index snapshot, on a local store with segments; how
    /// many entries it holds. Blocking.
    pub fn write_snapshot(&self) -> std::io::Result<Option<u64>> {
        let Some(segments) = &self.segments else {
            return Ok(None);
        };
        // Floors first: what commits while the index is walked is at or
        // after them.
        let remotes: Vec<(String, u32)> = self
            .known_remotes
            .load()
            .iter()
            .map(|remote| (remote.clone(), segments.floor(remote)))
            .collect();
        let path = segments.root().join(snapshot::FILE);
        snapshot::write(&path, &remotes, |each| {
            self.index.each(|id, slot| each(id, &slot))
        })
        .map(Some)
    }

    /// Fills the index from the snapshot if there is a good one, with the
    /// floors recovery starts from; whether it did. Entries of remotes no
    /// longer configured or in segments that are gone are left out.
    pub fn load_snapshot(&self) -> bool {
        let Some(segments) = &self.segments else {
            return false;
        };
        let path = segments.root().join(snapshot::FILE);
        snapshot::remove_abandoned(&path);
        let reader = match snapshot::open(&path) {
            Ok(Some(reader)) => reader,
            Ok(None) => return false,
            Err(e) => {
                log::warn!("{}: {e}; reading the catalog instead", path.display());
                return false;
            }
        };
        let started = std::time::Instant::now();
        let positions: Vec<u16> = reader
            .remotes
            .iter()
            .map(|(name, _)| self.remote_index(name))
            .collect();
        let floors: HashMap<String, u32> = reader.remotes.iter().cloned().collect();
        let mut dropped = Vec::new();
        let loaded = reader.entries(|id, mut slot| {
            let remote = positions.get(slot.remote as usize).copied();
            match remote.filter(|r| *r != u16::MAX) {
                Some(remote) if slot.record == 0 || segments.holds(slot.record) => {
                    slot.remote = remote;
                    self.index.insert(id, slot);
                    if slot.record != 0 {
                        segments.count(slot.record, inline_size(slot));
                    }
                }
                _ => dropped.push(id),
            }
        });
        match loaded {
            Ok(entries) => {
                *self.recovery_floors.lock() = floors;
                for id in &dropped {
                    self.catalog.record(CatalogEvent::EntryRemoved { id: *id });
                }
                log::info!(
                    "index loaded from {}: {entries} entries in {:?}, {} left out",
                    path.display(),
                    started.elapsed(),
                    dropped.len()
                );
                true
            }
            Err(e) => {
                log::warn!("{}: {e}; reading the catalog instead", path.display());
                self.index.clear(None);
                segments.uncount_all();
                false
            }
        }
    }

    /// Deletes the snapshot: it lists what a flush just deleted.
    pub(super) fn forget_snapshot(&self, segments: &Segments) {
        let path = segments.root().join(snapshot::FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("deleting {}: {e}", path.display()),
        }
    }

    /// Writes the snapshot every [`snapshot::EVERY`] on the storage's
    /// runtime.
    pub fn start_snapshots(&'static self) {
        if self.segments.is_none() {
            return;
        }
        self.runtime.spawn(async move {
            loop {
                tokio::time::sleep(snapshot::EVERY).await;
                self.snapshot_now().await;
            }
        });
    }

    /// Writes the snapshot on the blocking pool, logging the outcome.
    pub async fn snapshot_now(&'static self) {
        let started = std::time::Instant::now();
        match blocking(move || self.write_snapshot()).await {
            Ok(Some(entries)) => log::info!(
                "index snapshot written: {entries} entries in {:?}",
                started.elapsed()
            ),
            Ok(None) => {}
            Err(e) => log::warn!("writing the index snapshot: {e}"),
        }
    }
}
