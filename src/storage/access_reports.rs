//! Telling the catalog which entries were used: their hits and last access.
//!
//! A hit only marks its index slot ([`super::index::Index::touch`]): the
//! time to the millisecond and a count of hits not yet reported. The
//! catalog's copy orders eviction when a node starts without its snapshot
//! and feeds listings and the status page's "most hit", where an hour of
//! lag suffices. So a background reporter walks the index one shard at a
//! time, a full round per [`REPORT_EVERY`], and sends one row update per
//! entry used since its last round.
//!
//! Reporting from the hit instead (the first hit of each clock hour) put a
//! burst on the catalog when every hour began: each entry in use fell due
//! on its next hit, all at once, and at a million entries in use that
//! took a quarter of the node's CPU and dropped events for minutes. The
//! walk spreads the same rows evenly and keeps the hit path free of it.

use super::index::SHARDS;
use super::CacheStorage;
use crate::catalog::CatalogEvent;
use std::time::{Duration, Instant};

/// An entry used within this period reaches the catalog within it. Each
/// report dirties B-tree pages of a table of up to a million rows (about
/// 50 µs of SQLite CPU measured at that size), so a round over a million
/// entries in use costs ~50 s of CPU per period.
pub const REPORT_EVERY: Duration = Duration::from_secs(3600);

/// Reports are queued in chunks this large, each once the catalog writer
/// has room for it, so a shard of a very large index is never dropped for
/// arriving at once.
const CHUNK: usize = 4096;

impl CacheStorage {
    /// Starts the walk: the next shard every `REPORT_EVERY / SHARDS`.
    pub fn start_access_reports(&'static self) {
        let pause = REPORT_EVERY / SHARDS as u32;
        self.runtime.spawn(async move {
            for shard in (0..SHARDS).cycle() {
                tokio::time::sleep(pause).await;
                self.report_hits(self.index.take_hits_of_shard(shard), None)
                    .await;
            }
        });
    }

    /// Reports every hit the catalog has not heard of yet, so a listing
    /// right after shows them and a graceful stop keeps them. Shards not
    /// reached `within` stay for the walk; a chunk still waiting for room
    /// then is queued anyway, and what does not fit is counted as dropped.
    pub async fn report_pending_hits(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for shard in 0..SHARDS {
            if Instant::now() >= deadline {
                return;
            }
            self.report_hits(self.index.take_hits_of_shard(shard), Some(deadline))
                .await;
        }
    }

    async fn report_hits(&self, hits: Vec<(u128, u64, u32)>, deadline: Option<Instant>) {
        for chunk in hits.chunks(CHUNK) {
            let room = self.catalog.wait_for_access_room(CHUNK as u64);
            match deadline {
                Some(deadline) => {
                    let _ = tokio::time::timeout_at(deadline.into(), room).await;
                }
                None => room.await,
            }
            for &(id, at_ms, hits) in chunk {
                self.catalog.record(CatalogEvent::EntryAccessed {
                    id,
                    at_ms: at_ms as i64,
                    hits,
                });
            }
        }
    }
}
