//! The hot tier: parsed records, and the bodies of small objects, of the
//! entries in use, within `cache.memory_bytes`.
//!
//! pingora's stored header blob is zstd-compressed; decompressing and
//! parsing it on every hit was a measurable share of a small hit's CPU. So
//! a record is parsed once when it enters the index, and each hit rebuilds
//! an equal [`CacheMeta`] from the parsed fields.

use super::record::Record;
use pingora::cache::CacheMeta;
use pingora::http::ResponseHeader;
use pingora::Result;
use std::sync::Arc;
use std::time::SystemTime;

/// A record as held in memory.
pub struct Entry {
    pub record: Record,
    /// The record's meta, parsed once.
    pub prepared: PreparedMeta,
}

impl Entry {
    pub fn new(record: Record) -> Result<Arc<Entry>> {
        let meta = CacheMeta::deserialize(&record.meta_internal, &record.meta_header)?;
        Ok(Arc::new(Entry {
            prepared: PreparedMeta::of(&meta),
            record,
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

/// Fixed memory an entry costs besides its serialized meta and inline body
/// (the parsed header, the `Arc`, the record's strings), for weighing it.
const ENTRY_OVERHEAD: usize = 1024;

/// A hot entry tagged with its id (the tier hashes keys to 64 bits, so a
/// collision must be told apart) and the flush generation it was loaded
/// under.
#[derive(Clone)]
struct HotRecord {
    id: u128,
    generation: u64,
    entry: Arc<Entry>,
}

/// Parsed records and small bodies of hot entries, within a byte budget
/// (TinyUFO: an admission filter keeps one-off objects from pushing out
/// the ones that are used again).
pub struct HotEntries {
    ufo: tinyufo::TinyUfo<u128, HotRecord>,
}

impl HotEntries {
    /// A tier of about `budget` bytes.
    pub fn new(budget: u64) -> Self {
        let kib = (budget / 1024).max(1) as usize;
        HotEntries {
            ufo: tinyufo::TinyUfo::new(kib, (kib / 2).max(16)),
        }
    }

    /// The entry, if it is held and was loaded under `generation`.
    pub fn get(&self, id: u128, generation: u64) -> Option<Arc<Entry>> {
        match self.ufo.get(&id) {
            Some(hot) if hot.id == id && hot.generation == generation => Some(hot.entry),
            _ => None,
        }
    }

    pub fn put(&self, id: u128, entry: Arc<Entry>, generation: u64) {
        let bytes = ENTRY_OVERHEAD
            + entry.record.meta_header.len()
            + entry.record.meta_internal.len()
            + entry.record.inline_body.as_ref().map_or(0, |b| b.len());
        let weight = bytes.div_ceil(1024).min(u16::MAX as usize) as u16;
        let hot = HotRecord {
            id,
            generation,
            entry,
        };
        self.ufo.put(id, hot, weight);
    }

    pub fn remove(&self, id: u128) {
        self.ufo.remove(&id);
    }
}
