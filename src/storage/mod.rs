//! artifactd's `pingora_cache::Storage` backend.
//!
//! Layout in the body store, per remote so a remote can be flushed by prefix:
//! - `cache/{remote}/{hh}/{hash}.meta`: the commit-time [`Record`];
//! - `cache/{remote}/{hh}/{hash}.{uuid}.body`: the body. Each fill writes a
//!   new body key, so a reader of the old body is never handed new bytes
//!   under old headers; the record, written last, switches readers over.
//!
//! Freshness updates (304 revalidations) go to the state store under
//! `{remote}/{hash}`. Hot records are held in memory (TinyUFO), so a hit
//! normally costs one in-memory lookup and one file open.
//!
//! - [`record`]: the envelope format. [`blob`]: the body store.
//! - [`hit`]: reading a body. [`miss`]: streaming a fill and committing it.

pub mod blob;
pub mod hit;
pub mod miss;
pub mod record;

use crate::catalog::{CatalogEvent, CatalogWriter};
use crate::state::StateStore;
use async_trait::async_trait;
use blob::{BlobStore, BodySource};
use bytes::Bytes;
use pingora::cache::key::{CacheHashKey, CompactCacheKey};
use pingora::cache::storage::{
    HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};
use pingora_memory_cache::MemoryCache;
use record::Record;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// How many records the in-memory hot set holds (an entry is about 1 KB:
/// the stored meta blobs, the parsed response header and the body's
/// location).
const HOT_RECORDS: usize = 16_384;
/// How many cache bodies are kept open. Opening, stat-ing and closing a
/// file was a fifth of a small hit's CPU; a body file never changes once
/// committed (a refill writes a new one), so an open handle stays valid.
/// Raised file limits (see `server::raise_nofile_limit`) leave room for it.
const OPEN_BODIES: usize = 4096;
/// A hot object's last access reaches the catalog at most this often, so a
/// hit costs no catalog traffic at all in the common case.
const ACCESS_REPORT_SECS: u64 = 60;

/// Where an entry's record and bodies live.
///
/// The primary hash covers remote and path (the cache key encodes both), so
/// it alone identifies an entry in memory; object keys, which need hex, are
/// only built when storage is actually touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryLocation {
    pub remote: String,
    pub primary: [u8; 16],
}

impl EntryLocation {
    fn from_compact(key: &CompactCacheKey) -> Self {
        EntryLocation {
            remote: key.user_tag.to_string(),
            primary: key.primary,
        }
    }

    fn from_key(key: &CacheKey) -> Self {
        EntryLocation {
            remote: key.user_tag.clone(),
            primary: key.primary_bin(),
        }
    }

    fn hash(&self) -> String {
        hex::encode(self.primary)
    }

    fn dir_and_hash(&self) -> (String, String) {
        let hash = self.hash();
        (format!("cache/{}/{}", self.remote, &hash[..2]), hash)
    }

    pub fn meta_key(&self) -> String {
        let (dir, hash) = self.dir_and_hash();
        format!("{dir}/{hash}.meta")
    }

    pub fn new_body_key(&self) -> String {
        let (dir, hash) = self.dir_and_hash();
        format!("{dir}/{hash}.{}.body", uuid::Uuid::new_v4().simple())
    }

    fn state_key(&self) -> String {
        format!("{}/{}", self.remote, self.hash())
    }

    fn id(&self) -> u128 {
        u128::from_be_bytes(self.primary)
    }
}

/// The entry id encoded in a body object key (`.../{hash}.{uuid}.body`).
fn id_of_body_key(key: &str) -> Option<u128> {
    let name = key.rsplit('/').next()?;
    let hash = name.split('.').next()?;
    u128::from_str_radix(hash, 16)
        .ok()
        .filter(|_| hash.len() == 32)
}

/// An open body file and the body key it was opened for.
#[derive(Clone)]
struct OpenBody {
    body_key: Arc<str>,
    file: Arc<std::fs::File>,
    size: u64,
}

/// A record as held in memory.
pub struct Entry {
    pub record: Record,
    /// The record's meta, parsed once.
    prepared: PreparedMeta,
    /// Unix seconds of the last access reported to the catalog.
    access_reported: AtomicU64,
}

impl Entry {
    fn new(record: Record, access_reported: u64) -> Result<Arc<Entry>> {
        Ok(Arc::new(Entry {
            prepared: PreparedMeta::parse(&record)?,
            record,
            access_reported: AtomicU64::new(access_reported),
        }))
    }
}

/// pingora's stored header blob is zstd-compressed; decompressing and
/// parsing it on every hit was a measurable share of a small hit's CPU. So
/// the meta is parsed once per entry and each hit rebuilds an equal
/// [`CacheMeta`] from these fields.
struct PreparedMeta {
    fresh_until: SystemTime,
    created: SystemTime,
    updated: SystemTime,
    stale_while_revalidate_sec: u32,
    stale_if_error_sec: u32,
    header: ResponseHeader,
}

impl PreparedMeta {
    fn parse(record: &Record) -> Result<PreparedMeta> {
        let meta = CacheMeta::deserialize(&record.meta_internal, &record.meta_header)?;
        Ok(PreparedMeta {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            updated: meta.updated(),
            stale_while_revalidate_sec: meta.stale_while_revalidate_sec(),
            stale_if_error_sec: meta.stale_if_error_sec(),
            header: meta.response_header_copy(),
        })
    }

    fn to_meta(&self) -> CacheMeta {
        let mut meta = CacheMeta::new(
            self.fresh_until,
            self.created,
            self.stale_while_revalidate_sec,
            self.stale_if_error_sec,
            self.header.clone(),
        );
        // `new` sets updated = created; the age of a revalidated entry counts
        // from its last revalidation, which the epoch override restores.
        if self.updated != self.created {
            meta.set_epoch_override(self.updated);
        }
        meta
    }
}

/// A hot entry tagged with the flush generation it was loaded under.
#[derive(Clone)]
struct HotRecord {
    generation: u64,
    entry: Arc<Entry>,
}

/// The cache storage. Built once at start and leaked: pingora needs `'static`.
pub struct CacheStorage {
    blobs: BlobStore,
    state: Arc<dyn StateStore>,
    catalog: Arc<CatalogWriter>,
    hot: MemoryCache<u128, HotRecord>,
    /// Open body files by entry id, with the body key they belong to (unique
    /// per fill): a handle is used only for the body key it was opened for.
    open_bodies: MemoryCache<u128, OpenBody>,
    /// Bumped by every flush; hot records from an older generation are ignored.
    flush_generation: AtomicU64,
    runtime: tokio::runtime::Handle,
    /// Remote names, for clearing every remote's state on a full flush.
    known_remotes: Vec<String>,
}

fn internal(context: &'static str, e: impl std::fmt::Display) -> Box<Error> {
    Error::explain(ErrorType::InternalError, format!("{context}: {e}"))
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl CacheStorage {
    pub fn new(
        blobs: BlobStore,
        state: Arc<dyn StateStore>,
        catalog: Arc<CatalogWriter>,
        runtime: tokio::runtime::Handle,
        known_remotes: Vec<String>,
    ) -> Self {
        CacheStorage {
            blobs,
            state,
            catalog,
            hot: MemoryCache::new(HOT_RECORDS),
            open_bodies: MemoryCache::new(OPEN_BODIES),
            flush_generation: AtomicU64::new(0),
            runtime,
            known_remotes,
        }
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Finds the current record: memory, then state store, then body store.
    async fn load_record(&self, location: &EntryLocation) -> Result<Option<Arc<Entry>>> {
        let generation = self.flush_generation.load(Ordering::Acquire);
        if let (Some(hot), _) = self.hot.get(&location.id()) {
            if hot.generation == generation {
                return Ok(Some(hot.entry));
            }
        }
        let state_bytes = match self.state.get(&location.state_key()).await {
            Ok(bytes) => bytes,
            Err(e) => {
                // Fail open: the commit-time record still serves.
                log::warn!("{e}; falling back to the stored record");
                None
            }
        };
        let bytes = match state_bytes {
            Some(bytes) => Some(bytes),
            None => self
                .blobs
                .get_small(&location.meta_key())
                .await
                .map_err(|e| internal("reading cache record", e))?,
        };
        let Some(bytes) = bytes else { return Ok(None) };
        match Record::decode(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|record| Entry::new(record, 0).map_err(|e| e.to_string()))
        {
            Ok(entry) => {
                self.remember(location, entry.clone(), generation);
                Ok(Some(entry))
            }
            Err(e) => {
                log::warn!(
                    "unreadable cache record {}: {e}; treating as a miss",
                    location.meta_key()
                );
                Ok(None)
            }
        }
    }

    fn remember(&self, location: &EntryLocation, entry: Arc<Entry>, generation: u64) {
        self.hot
            .put(&location.id(), HotRecord { generation, entry }, None);
    }

    /// Opens an entry's body, reusing an open handle when there is one.
    async fn open_body(&self, id: u128, body_key: &str) -> Result<Option<BodySource>> {
        if let (Some(open), _) = self.open_bodies.get(&id) {
            if &*open.body_key == body_key {
                return Ok(Some(BodySource::File {
                    file: open.file,
                    size: open.size,
                }));
            }
        }
        let body = self
            .blobs
            .open(body_key)
            .await
            .map_err(|e| internal("opening cache body", e))?;
        if let Some(BodySource::File { file, size }) = &body {
            let open = OpenBody {
                body_key: body_key.into(),
                file: file.clone(),
                size: *size,
            };
            self.open_bodies.put(&id, open, None);
        }
        Ok(body)
    }

    /// Closes the kept handle of a body that is being deleted, so the disk
    /// space really comes back.
    fn close_body(&self, body_key: &str) {
        let Some(id) = id_of_body_key(body_key) else {
            return;
        };
        if let (Some(open), _) = self.open_bodies.get(&id) {
            if &*open.body_key == body_key {
                self.open_bodies.remove(&id);
            }
        }
    }

    /// Tells the catalog about an access, at most once per
    /// [`ACCESS_REPORT_SECS`] per entry.
    fn report_access(&self, entry: &Entry) {
        let now = unix_now();
        let last = entry.access_reported.load(Ordering::Relaxed);
        let due = now >= last + ACCESS_REPORT_SECS;
        if due
            && entry
                .access_reported
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.catalog.record(CatalogEvent::Accessed {
                remote: entry.record.body.remote.clone(),
                path: entry.record.body.path.clone(),
                at: now as i64,
            });
        }
    }

    /// Makes `record` the entry's current record: commit marker first, then
    /// the state store and memory.
    async fn commit(&'static self, location: &EntryLocation, record: Record) -> Result<()> {
        let previous = self.previous_body(location).await;
        let encoded = record.encode();
        let (meta_key, state_key) = (location.meta_key(), location.state_key());
        // Both writes are single-object replaces; the body they point at is
        // already complete, so their order does not matter for readers.
        let (meta_written, state_written) = tokio::join!(
            self.blobs.put(&meta_key, encoded.clone()),
            self.state.put(&state_key, Bytes::from(encoded)),
        );
        meta_written.map_err(|e| internal("writing cache record", e))?;
        if let Err(e) = state_written {
            log::warn!("{e}");
        }
        let generation = self.flush_generation.load(Ordering::Acquire);
        let new_body = record.body.body_key.clone();
        self.remember(location, Entry::new(record, unix_now())?, generation);
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
        if let (Some(hot), _) = self.hot.get(&location.id()) {
            return Some(hot.entry.record.body.body_key.clone());
        }
        let bytes = self.state.get(&location.state_key()).await.ok().flatten()?;
        Record::decode(&bytes).ok().map(|r| r.body.body_key)
    }

    /// Old bodies are deleted after a grace period, so that a hit that opened
    /// the previous generation on a non-filesystem store can finish reading.
    fn delete_body_later(&'static self, body_key: String) {
        let blobs = self.blobs.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            self.close_body(&body_key);
            if let Err(e) = blobs.delete(&body_key).await {
                log::warn!("deleting replaced body {body_key}: {e}");
            }
        });
    }

    /// Removes an entry everywhere. Returns whether it existed.
    async fn remove(&self, location: &EntryLocation) -> Result<bool> {
        let entry = self.load_record(location).await?;
        self.hot.remove(&location.id());
        if let Err(e) = self.state.delete(&location.state_key()).await {
            log::warn!("{e}");
        }
        self.blobs
            .delete(&location.meta_key())
            .await
            .map_err(|e| internal("deleting cache record", e))?;
        if let Some(entry) = &entry {
            let body = &entry.record.body;
            self.close_body(&body.body_key);
            self.blobs
                .delete(&body.body_key)
                .await
                .map_err(|e| internal("deleting cache body", e))?;
            self.catalog.record(CatalogEvent::Removed {
                remote: body.remote.clone(),
                path: body.path.clone(),
            });
        }
        Ok(entry.is_some())
    }

    /// Deletes every cached entry of `remote` (or of all remotes), leaving
    /// local repositories alone. Returns how many objects were deleted.
    pub async fn flush(&self, remote: Option<&str>) -> Result<usize> {
        self.flush_generation.fetch_add(1, Ordering::AcqRel);
        let prefix = match remote {
            Some(remote) => format!("cache/{remote}"),
            None => "cache".to_string(),
        };
        let deleted = self
            .blobs
            .delete_prefix(&prefix)
            .await
            .map_err(|e| internal("flushing cache objects", e))?;
        // Close what was deleted, so the disk space really comes back.
        for key in &deleted {
            self.close_body(key);
        }
        let state_result = match remote {
            Some(remote) => self.state.delete_prefix(remote).await,
            None => self.state_clear_all().await,
        };
        if let Err(e) = state_result {
            log::warn!("{e}");
        }
        self.catalog
            .record(CatalogEvent::Flushed(remote.map(str::to_string)));
        // A second bump covers lookups that raced with the deletion.
        self.flush_generation.fetch_add(1, Ordering::AcqRel);
        Ok(deleted.len())
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
        let mut fill = miss::BodyMiss::start(self, location, catalog_path(key), meta).await?;
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
    /// (it takes precedence over the commit record), then memory.
    async fn replace_meta(
        &self,
        location: &EntryLocation,
        current: &Entry,
        meta: &CacheMeta,
    ) -> Result<bool> {
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
        self.remember(
            location,
            updated,
            self.flush_generation.load(Ordering::Acquire),
        );
        Ok(true)
    }

    async fn state_clear_all(&self) -> crate::state::StateResult<()> {
        for remote in self.known_remotes.iter() {
            self.state.delete_prefix(remote).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for CacheStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let location = EntryLocation::from_key(key);
        let Some(entry) = self.load_record(&location).await? else {
            return Ok(None);
        };
        let record = &entry.record;
        let body = self.open_body(location.id(), &record.body.body_key).await?;
        let body = match body {
            Some(body) if body_size(&body) == record.body.size => body,
            other => {
                // The record points at a missing or wrong-sized body (a crash
                // between writes, or tampering): never serve it.
                log::warn!(
                    "cache body {} is {}, record says {} bytes; dropping the entry",
                    record.body.body_key,
                    other
                        .as_ref()
                        .map(|b| body_size(b).to_string())
                        .unwrap_or("missing".into()),
                    record.body.size
                );
                self.remove(&location).await?;
                return Ok(None);
            }
        };
        let meta = entry.prepared.to_meta();
        let handler: HitHandler = Box::new(hit::BodyHit::new(body, record.body.size));
        self.report_access(&entry);
        Ok(Some((meta, handler)))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let location = EntryLocation::from_key(key);
        let handler = miss::BodyMiss::start(self, location, catalog_path(key), meta).await?;
        Ok(Box::new(handler))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let location = EntryLocation::from_compact(target.key());
        Ok(if self.remove(&location).await? {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let location = EntryLocation::from_key(key);
        let Some(current) = self.load_record(&location).await? else {
            return Ok(false);
        };
        self.replace_meta(&location, &current, meta).await
    }

    fn support_streaming_partial_write(&self) -> bool {
        false
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync + 'static) {
        self
    }
}

/// The path the catalog lists for a cache key: its part after the remote.
fn catalog_path(key: &CacheKey) -> String {
    key.primary_key_str()
        .and_then(filters::cache_key::decode)
        .and_then(|parts| parts.get(1).map(|p| p.to_string()))
        .unwrap_or_default()
}

fn body_size(body: &BodySource) -> u64 {
    match body {
        BodySource::File { size, .. } | BodySource::Stream { size, .. } => *size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_keys_carry_their_entry_id() {
        let location = EntryLocation {
            remote: "r".into(),
            primary: [0xab; 16],
        };
        let key = location.new_body_key();
        assert!(key.starts_with("cache/r/ab/abababab"), "{key}");
        assert_eq!(id_of_body_key(&key), Some(location.id()));
        assert_eq!(id_of_body_key(&location.meta_key()), Some(location.id()));
        assert_eq!(id_of_body_key("local/r/file.bin"), None);
        assert_eq!(id_of_body_key("health-probe"), None);
    }
}
