//! The hot tier: parsed records, and the bodies of small objects, of the
//! entries in use, within `cache.memory_bytes`.
//!
//! A record is parsed once as it enters the tier; each hit rebuilds its
//! [`CacheMeta`](pingora::cache::CacheMeta) from the parsed fields.

use super::record::Record;
use std::sync::Arc;

/// Fixed memory an entry costs besides its header text and inline body
/// (the parsed header, the `Arc`, the record's strings), for weighing it.
const ENTRY_OVERHEAD: usize = 1024;

/// A hot entry tagged with its id (the tier hashes keys to 64 bits, so a
/// collision must be told apart) and the flush generation it was loaded
/// under.
#[derive(Clone)]
struct HotRecord {
    id: u128,
    generation: u64,
    entry: Arc<Record>,
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
    pub fn get(&self, id: u128, generation: u64) -> Option<Arc<Record>> {
        match self.ufo.get(&id) {
            Some(hot) if hot.id == id && hot.generation == generation => Some(hot.entry),
            _ => None,
        }
    }

    pub fn put(&self, id: u128, entry: Arc<Record>, generation: u64) {
        let bytes = ENTRY_OVERHEAD
            + entry.meta.header_bytes()
            + entry.inline_body.as_ref().map_or(0, |b| b.len());
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
