//! The in-memory index of committed entries: the parsed record of each hot
//! entry, tagged with the flush generation it was loaded under.
//!
//! pingora's stored header blob is zstd-compressed; decompressing and
//! parsing it on every hit was a measurable share of a small hit's CPU. So
//! a record is parsed once when it enters the index, and each hit rebuilds
//! an equal [`CacheMeta`] from the parsed fields.

use super::record::Record;
use pingora::cache::CacheMeta;
use pingora::http::ResponseHeader;
use pingora::Result;
use pingora_memory_cache::MemoryCache;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::SystemTime;

/// A record as held in memory.
pub struct Entry {
    pub record: Record,
    /// The record's meta, parsed once.
    pub prepared: PreparedMeta,
    /// Unix seconds of the last access reported to the catalog.
    pub access_reported: AtomicU64,
}

impl Entry {
    pub fn new(record: Record, access_reported: u64) -> Result<Arc<Entry>> {
        let meta = CacheMeta::deserialize(&record.meta_internal, &record.meta_header)?;
        Ok(Arc::new(Entry {
            prepared: PreparedMeta::of(&meta),
            record,
            access_reported: AtomicU64::new(access_reported),
        }))
    }
}

/// The fields of a [`CacheMeta`], from which an equal one is rebuilt cheaply.
pub struct PreparedMeta {
    fresh_until: SystemTime,
    created: SystemTime,
    updated: SystemTime,
    stale_while_revalidate_sec: u32,
    stale_if_error_sec: u32,
    header: ResponseHeader,
}

impl PreparedMeta {
    pub fn of(meta: &CacheMeta) -> PreparedMeta {
        PreparedMeta {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            updated: meta.updated(),
            stale_while_revalidate_sec: meta.stale_while_revalidate_sec(),
            stale_if_error_sec: meta.stale_if_error_sec(),
            header: meta.response_header_copy(),
        }
    }

    pub fn to_meta(&self) -> CacheMeta {
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

/// Hot records by entry id.
pub struct Index {
    hot: MemoryCache<u128, HotRecord>,
}

impl Index {
    pub fn new(entries: usize) -> Self {
        Index {
            hot: MemoryCache::new(entries),
        }
    }

    /// The entry, if it is held and was loaded under `generation`.
    pub fn get(&self, id: u128, generation: u64) -> Option<Arc<Entry>> {
        match self.hot.get(&id) {
            (Some(hot), _) if hot.generation == generation => Some(hot.entry),
            _ => None,
        }
    }

    /// The entry whatever its generation (for the body it points at).
    pub fn get_any(&self, id: u128) -> Option<Arc<Entry>> {
        self.hot.get(&id).0.map(|hot| hot.entry)
    }

    pub fn put(&self, id: u128, entry: Arc<Entry>, generation: u64) {
        self.hot.put(&id, HotRecord { generation, entry }, None);
    }

    pub fn remove(&self, id: u128) {
        self.hot.remove(&id);
    }
}
