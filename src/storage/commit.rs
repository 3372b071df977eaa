//! Making records current and removing them.
//!
//! Every change to an entry's record (commit, meta replacement, removal)
//! holds that entry's stripe of [`EntryLocks`], and a removal compares
//! before deleting: it names the body it means to remove and leaves a
//! record that has moved on to another body alone. So an eviction or a
//! failed size check that read an entry a moment ago never deletes the
//! fill that replaced it since. Bodies are never overwritten (each fill
//! has its own key), so deleting a body by key cannot hit a newer one.

use super::index::Entry;
use super::layout::EntryLocation;
use super::record::Record;
use super::{internal, miss, unix_now, CacheStorage};
use crate::catalog::CatalogEvent;
use bytes::Bytes;
use pingora::cache::{CacheKey, CacheMeta};
use pingora::http::ResponseHeader;
use pingora::Result;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a replaced body outlives its record: a hit that opened it on a
/// store without open-file semantics can finish reading.
const REPLACED_BODY_GRACE: Duration = Duration::from_secs(30);
const STRIPES: usize = 64;

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
    async fn lock(&self, id: u128) -> tokio::sync::MutexGuard<'_, ()> {
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
    /// Makes `record` the entry's current record: commit marker first, then
    /// the state store and memory.
    pub(super) async fn commit(
        &'static self,
        location: &EntryLocation,
        record: Record,
    ) -> Result<()> {
        let _guard = self.entry_locks.lock(location.id()).await;
        let previous = self.previous_body(location).await;
        let encoded = Bytes::from(record.encode());
        let (meta_key, state_key) = (location.meta_key(), location.state_key());
        // Both writes are single-object replaces; the body they point at is
        // already complete, so their order does not matter for readers.
        let (meta_written, state_written) = tokio::join!(
            self.bodies.put(&meta_key, encoded.clone()),
            self.state.put(&state_key, encoded),
        );
        meta_written.map_err(|e| internal("writing cache record", e))?;
        if let Err(e) = state_written {
            log::warn!("{e}");
        }
        let generation = self.flush_generation.load(Ordering::Acquire);
        let new_body = record.body.body_key.clone();
        self.index
            .put(location.id(), Entry::new(record, unix_now())?, generation);
        if let Some(previous) = previous.filter(|key| *key != new_body) {
            self.delete_body_later(previous);
        }
        Ok(())
    }

    /// The body key of the entry being replaced, from memory or the state
    /// store. A refill follows a lookup that loaded the old entry into
    /// memory; a first fill finds nothing in either, and skipping the slower
    /// body-store read keeps a cold miss short.
    async fn previous_body(&self, location: &EntryLocation) -> Option<String> {
        if let Some(entry) = self.index.get_any(location.id()) {
            return Some(entry.record.body.body_key.clone());
        }
        let bytes = self.state.get(&location.state_key()).await.ok().flatten()?;
        Record::decode(&bytes).ok().map(|r| r.body.body_key)
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
    /// what `expect` allows. Returns the removed record.
    pub(super) async fn remove(
        &self,
        location: &EntryLocation,
        expect: Expect<'_>,
    ) -> Result<Option<Record>> {
        let _guard = self.entry_locks.lock(location.id()).await;
        let Some(current) = self.stored_record(location).await? else {
            self.index.remove(location.id());
            return Ok(None);
        };
        if let Expect::Body(expected) = expect {
            if current.body.body_key != expected {
                return Ok(None);
            }
        }
        self.index.remove(location.id());
        if let Err(e) = self.state.delete(&location.state_key()).await {
            log::warn!("{e}");
        }
        self.bodies
            .delete(&location.meta_key())
            .await
            .map_err(|e| internal("deleting cache record", e))?;
        let body = &current.body;
        self.open_bodies.close(&body.body_key);
        self.bodies
            .delete(&body.body_key)
            .await
            .map_err(|e| internal("deleting cache body", e))?;
        self.catalog.record(CatalogEvent::Removed {
            remote: body.remote.clone(),
            path: body.path.clone(),
        });
        Ok(Some(current))
    }

    /// The record as stored (state store, else the commit record), not as
    /// memory remembers it: what a removal compares against.
    async fn stored_record(&self, location: &EntryLocation) -> Result<Option<Record>> {
        let state_bytes = self.state.get(&location.state_key()).await.ok().flatten();
        let bytes = match state_bytes {
            Some(bytes) => Some(bytes),
            None => self
                .bodies
                .get_small(&location.meta_key())
                .await
                .map_err(|e| internal("reading cache record", e))?,
        };
        Ok(bytes.and_then(|b| Record::decode(&b).ok()))
    }

    /// Stores a complete small object under `key` unless an entry exists
    /// (the tag → digest manifest cross-link). Goes through the same
    /// staging, record and catalog steps as a fill. Returns whether it
    /// stored anything.
    pub async fn store_if_absent(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        body: Bytes,
    ) -> Result<bool> {
        use pingora::cache::storage::HandleMiss;
        let location = EntryLocation::from_key(key);
        if self.load_record(&location).await?.is_some() {
            return Ok(false);
        }
        let path = super::catalog_path(key);
        let mut fill = miss::BodyMiss::start(self, location, path, meta).await?;
        fill.write_body(body, true).await?;
        Box::new(fill).finish().await?;
        Ok(true)
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
        let Some(current) = self.load_record(&location).await? else {
            return Ok(false);
        };
        if current.record.body.sha256 != body_sha256 {
            // Another body than the one the edit was learnt from.
            return Ok(false);
        }
        let mut meta = current.prepared.to_meta();
        edit(meta.response_header_mut())?;
        self.replace_meta(&location, &current, &meta).await
    }

    /// Makes `meta` the entry's meta, for the same body: state store first
    /// (it takes precedence over the commit record), then memory. Does
    /// nothing if the entry has moved on to another body meanwhile.
    pub(super) async fn replace_meta(
        &self,
        location: &EntryLocation,
        current: &Entry,
        meta: &CacheMeta,
    ) -> Result<bool> {
        let _guard = self.entry_locks.lock(location.id()).await;
        let generation = self.flush_generation.load(Ordering::Acquire);
        if let Some(now) = self.index.get(location.id(), generation) {
            if now.record.body.body_key != current.record.body.body_key {
                return Ok(false);
            }
        }
        let (meta_internal, meta_header) = meta.serialize()?;
        let updated = Record {
            meta_internal,
            meta_header,
            body: current.record.body.clone(),
        };
        self.state
            .put(&location.state_key(), Bytes::from(updated.encode()))
            .await
            .map_err(|e| internal("writing freshness", e))?;
        let updated = Entry::new(updated, current.access_reported.load(Ordering::Relaxed))?;
        self.index.put(location.id(), updated, generation);
        Ok(true)
    }
}
