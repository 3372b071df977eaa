//! Rebuilding the index at start, and reconciling it with the store.
//!
//! At start the index is filled from the catalog's entry rows (one query,
//! no walk of the store), so hits, accounting and eviction work at once.
//! Before the node serves, records in segments are brought up to date
//! from the segments the catalog may lag behind ([`super::records`]): a
//! lookup of a key the index lacks could not find them otherwise.
//! The catalog is written in batches, so a killed process may have
//! committed a few entries it never heard of, or removed a few it still
//! lists. A background walk of the store's `cache/` directories (names
//! only, one directory at a time) repairs that: records the index lacks are
//! adopted, entries with no record are dropped, and bodies no record names
//! are deleted once they have stayed unnamed for a while (a fill renames
//! its body a moment before writing its record). Until the walk completes,
//! a key the index lacks is looked for in the store; afterwards absence is
//! final and a cold miss touches no disk before going upstream.

use super::index::{self, Slot};
use super::layout::{self, EntryLocation};
use super::CacheStorage;
use crate::catalog::EntryRow;
use std::collections::HashSet;
use std::time::Duration;

/// How long an unnamed body must stay unnamed before it is deleted.
const ORPHAN_GRACE: Duration = Duration::from_secs(60);

impl CacheStorage {
    /// Fills the index from the catalog's rows.
    pub fn load_index(&self, rows: Vec<EntryRow>) {
        let mut unreadable = 0;
        for row in rows {
            let remote = self.remote_index(&row.remote);
            if remote == u16::MAX {
                // A remote no longer configured: its entries are left to
                // a flush; they are not served.
                continue;
            }
            if row.record != 0 {
                self.note_recovery_floor(&row.remote, row.record);
                if !self.segments.as_ref().is_some_and(|s| s.holds(row.record)) {
                    unreadable += 1;
                    self.catalog
                        .record(crate::catalog::CatalogEvent::EntryRemoved { id: row.id });
                    continue;
                }
            }
            let size = row.size.max(0) as u64;
            let slot = Slot::new(
                row.body,
                size,
                remote,
                row.flags,
                row.last_access.max(0) as u64,
            )
            .in_segment(row.record);
            self.index.insert(row.id, slot);
            if let Some(segments) = self.segments.as_ref().filter(|_| row.record != 0) {
                segments.count(row.record, super::records::inline_size(slot));
            }
        }
        if unreadable > 0 {
            log::warn!("{unreadable} catalog entries name record segments that are gone; dropped");
        }
    }

    /// Notes what the catalog's cached manifests name.
    pub fn load_references(&self, references: Vec<(u128, u128)>) {
        for (manifest, target) in references {
            self.refs.add(manifest, &[target]);
        }
    }

    /// Walks the store and makes the index match it; then the index is
    /// complete.
    pub async fn reconcile(&'static self) {
        let started = index::now_ms();
        let mut seen = HashSet::new();
        let mut orphans = Vec::new();
        for remote in self.known_remotes.load_full().iter() {
            for dir in 0..=255u8 {
                let prefix = format!("cache/{remote}/{dir:02x}");
                let listed = match self.bodies.list(&prefix).await {
                    Ok(listed) => listed,
                    Err(e) => {
                        log::warn!("reconciling {prefix}: {e}; the index stays incomplete");
                        return;
                    }
                };
                for object in listed {
                    self.reconcile_object(remote, &object.key, &mut seen, &mut orphans)
                        .await;
                }
            }
        }
        // Entries the catalog listed but the store no longer has (and that
        // nobody committed or used since the walk started). Only those are
        // collected: a list of every entry would be 640 MB at ten million.
        let mut stale = Vec::new();
        self.index.each(|id, slot| {
            // A record in a segment was checked when it was loaded.
            let in_segment = slot.record != 0;
            if !in_segment && !seen.contains(&id) && slot.last_access < started {
                stale.push((id, slot.body));
            }
        });
        let dropped = stale
            .into_iter()
            .filter(|(id, body)| self.index.remove(*id, Some(*body)).is_some())
            .count();
        self.index.set_complete();
        log::info!(
            "index reconciled with the store: {} entries, {} bytes; {dropped} stale catalog entries dropped",
            self.index.entries(),
            self.index.bytes()
        );
        if orphans.is_empty() {
            return;
        }
        tokio::time::sleep(ORPHAN_GRACE).await;
        let mut deleted = 0;
        for (id, body_key) in orphans {
            let named = self
                .index
                .get(id)
                .is_some_and(|slot| slot.body == layout::body_id(&body_key));
            if !named && self.bodies.delete(&body_key).await.unwrap_or(false) {
                deleted += 1;
            }
        }
        if deleted > 0 {
            log::info!("deleted {deleted} cache bodies no record named");
        }
    }

    async fn reconcile_object(
        &self,
        remote: &str,
        key: &str,
        seen: &mut HashSet<u128>,
        orphans: &mut Vec<(u128, String)>,
    ) {
        let Some(id) = layout::id_of_key(key) else {
            return;
        };
        if key.ends_with(".meta") {
            seen.insert(id);
            if self.index.get(id).is_none() {
                let location = EntryLocation::new(remote, id);
                // Reading it adopts it into the index.
                if let Err(e) = self.load_record(&location).await {
                    log::warn!("reconciling {key}: {e}");
                }
            }
        } else if key.ends_with(".body") {
            let named = self
                .index
                .get(id)
                .is_some_and(|slot| slot.body == layout::body_id(key));
            if !named {
                orphans.push((id, key.to_string()));
            }
        }
    }

    /// Starts the reconciliation on the storage's runtime.
    pub fn start_reconcile(&'static self) {
        self.runtime.spawn(self.reconcile());
    }
}
