//! Flushing a remote's cache (or all of it), and the generation counter
//! that keeps memory honest while a flush runs.
//!
//! Every flush bumps [`CacheStorage::flush_generation`] before and after
//! deleting; the index ignores entries loaded under an older generation,
//! so a lookup racing with the deletion never serves what was flushed from
//! memory.

use super::coherence::Change;
use super::layout::cache_prefix;
use super::{internal, CacheStorage};
use crate::catalog::CatalogEvent;
use pingora::Result;
use std::sync::atomic::Ordering;

impl CacheStorage {
    /// Deletes every cached entry of `remote` (or of all remotes), leaving
    /// local repositories alone. Returns how many objects were deleted.
    pub async fn flush(&self, remote: Option<&str>) -> Result<usize> {
        self.flush_generation.fetch_add(1, Ordering::AcqRel);
        self.index.clear(remote.map(|r| self.remote_index(r)));
        self.fills.forget_all();
        let deleted = self
            .bodies
            .delete_prefix(&cache_prefix(remote))
            .await
            .map_err(|e| internal("flushing cache objects", e))?;
        // Close what was deleted, so the disk space really comes back.
        for key in &deleted {
            self.open_bodies.close(key);
        }
        if let Some(segments) = &self.segments {
            segments.forget(remote);
            self.forget_snapshot(segments);
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
        self.announce(Change::Flush(remote.map(str::to_string)))
            .await;
        // A second bump covers lookups that raced with the deletion.
        self.flush_generation.fetch_add(1, Ordering::AcqRel);
        Ok(deleted.len())
    }

    async fn state_clear_all(&self) -> crate::state::StateResult<()> {
        for remote in self.known_remotes.load().iter() {
            self.state.delete_prefix(remote).await?;
        }
        Ok(())
    }
}
