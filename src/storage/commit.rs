//! Making records current and removing them.
//!
//! Every change to an entry's record (commit, meta replacement, removal)
//! holds that entry's stripe of [`EntryLocks`], and a removal compares
//! before deleting: it names the body it means to remove and leaves a
//! record that has moved on to another body alone. So an eviction or a
//! failed size check that read an entry a moment ago never deletes the
//! fill that replaced it since. Bodies are never overwritten (each fill
//! has its own key), so deleting a body by key cannot hit a newer one.

use super::coherence::Change;
use super::index::{Slot, REVALIDATED};
use super::layout::{self, EntryLocation};
use super::record::{Record, StoredMeta};
use super::{index, internal, CacheStorage};
use crate::catalog::CatalogEvent;
use bytes::Bytes;
use pingora::cache::{CacheKey, CacheMeta};
use pingora::http::ResponseHeader;
use pingora::Result;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long a replaced body outlives its record: a hit that opened it on a
/// store without open-file semantics can finish reading.
const REPLACED_BODY_GRACE: Duration = Duration::from_secs(30);
const STRIPES: usize = 64;
/// The largest inline body a commit puts in the hot tier (one page).
const HOT_AT_COMMIT_MAX_BODY: usize = 4096;

/// One buffer of a fill's chunks; a body of one chunk is not copied.
fn join(mut chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => Bytes::from(chunks.concat()),
    }
}

/// Per-entry mutual exclusion for record changes, striped by entry id.
pub struct EntryLocks {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl Default for EntryLocks {
    fn default() -> Self {
        EntryLocks {
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }
}

impl EntryLocks {
    pub(super) async fn lock(&self, id: u128) -> tokio::sync::MutexGuard<'_, ()> {
        self.stripes[(id % STRIPES as u128) as usize].lock().await
    }
}

/// Which record a removal may delete.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// Whatever is current (a purge by key).
    Current,
    /// Only a record still pointing at this body.
    Body(&'a str),
}

impl CacheStorage {
    /// Makes `record` the entry's current record: the commit record first
    /// (the body it names is already complete), then the index and memory.
    /// The body it replaces is deleted after a grace period.
    ///
    /// `inline_chunks` is the inline body as a fill received it, when
    /// `record` leaves it out: a body the hot tier does not take at commit
    /// ([`Self::remember_committed`]) is written from its chunks and never
    /// joined; any other is joined into the record.
    pub(super) async fn commit(
        &'static self,
        location: &EntryLocation,
        mut record: Record,
        inline_chunks: Option<Vec<Bytes>>,
    ) -> Result<()> {
        let id = location.id();
        let flags = super::flags_of(&record.meta);
        let detached = match inline_chunks {
            Some(chunks) if self.keeps_out_of_hot_tier(chunks.iter().map(Bytes::len).sum()) => {
                chunks
            }
            Some(chunks) => {
                record.inline_body = Some(join(chunks));
                Vec::new()
            }
            None => Vec::new(),
        };
        let _guard = self.entry_locks.lock(id).await;
        let at = self.write_record(location, &record, &detached).await?;
        let slot = Slot::new(
            layout::body_id(&record.body.body_key),
            record.body.size,
            self.remote_index(&location.remote),
            flags,
            index::now_ms(),
        )
        .in_segment(at);
        let new_body = slot.body;
        let row = self.entry_row(location, &record, &slot);
        let replaced = self.index.insert(id, slot);
        self.recount(location, Some(slot), replaced);
        self.catalog.record(CatalogEvent::Entry(row));
        self.announce(Change::Entry(id)).await;
        if detached.is_empty() {
            self.remember_committed(id, record);
        } else {
            self.hot.remove(id);
        }
        if let Some(old) = replaced {
            if old.body != 0 && old.body != new_body {
                self.delete_body_later(layout::body_key(location, old.body));
            }
            if old.flags & REVALIDATED != 0 {
                // The newer meta of the replaced body must not outlive it.
                let state_key = location.state_key();
                let state = self.state.clone();
                self.runtime.spawn(async move {
                    if let Err(e) = state.delete(&state_key).await {
                        log::warn!("{e}");
                    }
                });
            }
        }
        Ok(())
    }

    /// A committed record enters the hot tier at once unless it holds a
    /// body of more than a page and sits in a local segment: that one is
    /// a `pread` away and enters on its first hit, so a fill does not pay,
    /// on its critical path, for fresh memory holding a body nobody may
    /// ask for again (at 64 KiB, a tenth of a miss's CPU in page faults).
    fn remember_committed(&self, id: u128, record: Record) {
        let inline = record.inline_body.as_ref().map_or(0, |b| b.len());
        if self.keeps_out_of_hot_tier(inline) {
            self.hot.remove(id);
        } else {
            let generation = self.flush_generation.load(Ordering::Acquire);
            self.hot.put(id, Arc::new(record), generation);
        }
    }

    fn keeps_out_of_hot_tier(&self, inline_body: usize) -> bool {
        self.segments.is_some() && inline_body > HOT_AT_COMMIT_MAX_BODY
    }

    fn delete_body_later(&'static self, body_key: String) {
        self.runtime.spawn(async move {
            tokio::time::sleep(REPLACED_BODY_GRACE).await;
            self.open_bodies.close(&body_key);
            if let Err(e) = self.bodies.delete(&body_key).await {
                log::warn!("deleting replaced body {body_key}: {e}");
            }
        });
    }

    /// Removes an entry everywhere, record first, then its body, if it is
    /// what `expect` allows. Returns the removed record's body key.
    pub(super) async fn remove(
        &self,
        location: &EntryLocation,
        expect: Expect<'_>,
    ) -> Result<Option<String>> {
        let id = location.id();
        let _guard = self.entry_locks.lock(id).await;
        let slot = self.index.get(id);
        let stored = match slot {
            Some(slot) => Some((layout::body_key_or_inline(location, slot.body), slot.flags)),
            None => self
                .read_stored(location, None)
                .await?
                .map(|(record, _)| (record.body.body_key, REVALIDATED)),
        };
        let Some((body_key, flags)) = stored else {
            return Ok(None);
        };
        if let Expect::Body(expected) = expect {
            if body_key != expected {
                return Ok(None);
            }
        }
        self.index.remove(id, slot.map(|s| s.body));
        self.hot.remove(id);
        self.fills.forget(id);
        self.refs.forget(id);
        if flags & REVALIDATED != 0 {
            if let Err(e) = self.state.delete(&location.state_key()).await {
                log::warn!("{e}");
            }
        }
        self.delete_record(location, slot).await?;
        if !body_key.is_empty() {
            self.open_bodies.close(&body_key);
            self.bodies
                .delete(&body_key)
                .await
                .map_err(|e| internal("deleting cache body", e))?;
        }
        self.catalog.record(CatalogEvent::EntryRemoved { id });
        self.announce(Change::Entry(id)).await;
        Ok(Some(body_key))
    }

    /// Edits the stored response header of a committed entry whose body
    /// hashes to `body_sha256` (hex), keeping body and freshness: a
    /// manifest's media type learnt from the body it was stored with.
    /// Returns whether such an entry existed.
    pub async fn update_header(
        &'static self,
        key: &CacheKey,
        body_sha256: &str,
        edit: impl FnOnce(&mut ResponseHeader) -> Result<()>,
    ) -> Result<bool> {
        let location = EntryLocation::from_key(key);
        // The edit may come from the request whose fill is committing.
        self.commits.settled(location.id()).await;
        let Some(current) = self.load_record(&location).await? else {
            return Ok(false);
        };
        if current.body.sha256 != body_sha256 {
            // Another body than the one the edit was learnt from.
            return Ok(false);
        }
        let mut meta = current.meta.to_meta();
        edit(meta.response_header_mut())?;
        self.replace_meta(&location, &current, &meta).await
    }

    /// Makes `meta` the entry's meta, for the same body: state store first
    /// (it takes precedence over the commit record), then the index and
    /// memory. Does nothing if the entry has moved on to another body.
    pub(super) async fn replace_meta(
        &self,
        location: &EntryLocation,
        current: &Record,
        meta: &CacheMeta,
    ) -> Result<bool> {
        let id = location.id();
        let _guard = self.entry_locks.lock(id).await;
        let current_body = layout::body_id(&current.body.body_key);
        if self
            .index
            .get(id)
            .is_none_or(|slot| slot.body != current_body)
        {
            return Ok(false);
        }
        let updated = Record {
            meta: StoredMeta::of(meta),
            body: current.body.clone(),
            inline_body: current.inline_body.clone(),
            fast_head: Default::default(),
        };
        self.state
            .put(&location.state_key(), Bytes::from(updated.encode()))
            .await
            .map_err(|e| internal("writing freshness", e))?;
        self.index.set_flag(id, REVALIDATED);
        self.announce(Change::Entry(id)).await;
        let updated = Arc::new(updated);
        let generation = self.flush_generation.load(Ordering::Acquire);
        self.hot.put(id, updated, generation);
        Ok(true)
    }
}
