//! artifactd's `pingora_cache::Storage` backend.
//!
//! - [`body`]: the body store trait and its filesystem and `object_store`
//!   implementations. [`layout`]: which keys an entry uses.
//! - [`record`]: the commit record's format (small bodies inside it).
//!   [`records`]: where records are kept; [`segments`]: the append-only
//!   files that hold them on a local store; [`snapshot`]: the index in one
//!   file, for a fast start.
//!   [`index`]: every committed entry, compactly, for existence, accounting
//!   and eviction order; [`access_reports`]: its uses, told to the catalog.
//!   [`hot`]: parsed records and small bodies of the entries in use.
//!   [`open_bodies`]: body files kept open between hits.
//! - [`miss`]: streaming a fill and committing it; [`hash_beside`]: the
//!   sha256 of a spilled body, on a thread of its own. [`fills`]: fills in
//!   progress and the followers reading them. [`large`]: fills that
//!   resume after their upstream connection broke. [`hit`]: reading a body.
//! - [`commit`]: record changes and compare-before-delete removal.
//!   [`new_entry`]: a complete body committed as an entry. [`commits`]:
//!   the commits that run after their client has the body.
//!   [`flush`]: flushes and their generations. [`sweep`]: staging cleanup.
//! - [`evict`]: the size, count and free-space bounds. [`refs`]: what
//!   cached manifests name. [`reconcile`]: the index at start.
//!   [`id_counts`]: entries held by readers or commits.
//!
//! Freshness updates (304 revalidations) go to the state store under
//! `{remote}/{hash}` and take precedence over the commit record.

pub mod access_reports;
pub mod body;
pub mod coherence;
pub mod commit;
pub mod commits;
pub mod evict;
pub mod fills;
pub mod flush;
pub mod hash_beside;
pub mod hit;
pub mod hot;
pub mod id_counts;
pub mod index;
pub mod inspect;
pub mod large;
pub mod layout;
pub mod miss;
pub mod new_entry;
pub mod open_bodies;
pub mod outage;
pub mod reconcile;
pub mod record;
pub mod records;
pub mod refs;
pub mod room;
pub mod segments;
pub mod snapshot;
pub mod sweep;

use crate::catalog::{CatalogEvent, CatalogWriter};
use crate::one_in::{one_in, Calls};
use crate::state::StateStore;
use async_trait::async_trait;
use body::{BodyStore, Opened};
use commit::{EntryLocks, Expect};
use fills::Fills;
use hot::HotEntries;
use index::{Index, SlotView, MUTABLE, REVALIDATED};
use layout::EntryLocation;
use open_bodies::OpenBodies;
use pingora::cache::storage::{
    HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta};
use pingora::{Error, ErrorType, Result};
use record::{Record, RecordView};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How many committed body files are kept open.
const OPEN_BODIES: usize = 4096;

/// The cache storage. Built once at start and leaked: pingora needs `'static`.
pub struct CacheStorage {
    bodies: Arc<dyn BodyStore>,
    state: Arc<dyn StateStore>,
    catalog: Arc<CatalogWriter>,
    index: Index,
    hot: HotEntries,
    open_bodies: OpenBodies,
    fills: Fills,
    /// Commits that run after their client has the body.
    commits: commits::PendingCommits,
    /// Misses served whole without being kept (no room, or storing failed).
    pub room: room::Room,
    /// Resumable fills the proxy offered, for their miss handlers.
    pub offers: large::Offers,
    entry_locks: EntryLocks,
    /// Bumped by every flush; index entries from an older generation are ignored.
    flush_generation: AtomicU64,
    runtime: tokio::runtime::Handle,
    /// Remote names; an index slot names its remote by position here. A
    /// reload only appends, so a position never changes meaning (a removed
    /// remote keeps its place and its entries until they are evicted).
    known_remotes: arc_swap::ArcSwap<Vec<String>>,
    settings: Settings,
    bounds: evict::Bounds,
    refs: refs::References,
    in_use: evict::InUse,
    /// Held by the one eviction pass that may run at a time.
    evicting: tokio::sync::Mutex<()>,
    eviction_stats: evict::EvictionStats,
    /// A cluster's eviction from the shared bucket, once wired.
    shared_eviction: std::sync::OnceLock<evict::SharedEviction>,
    /// Where this node announces its changes, when other nodes share the store.
    changes: std::sync::OnceLock<Arc<dyn coherence::ChangeFeed>>,
    outages: outage::Outages,
    /// The record segments, on a local store.
    segments: Option<Arc<segments::Segments>>,
    /// Per remote, the newest segment the catalog's rows name: recovery
    /// reads from there (see [`records`]).
    recovery_floors: parking_lot::Mutex<std::collections::HashMap<String, u32>>,
}

/// A fresh entry at hand, for the fast path ([`CacheStorage::fresh_at_hand`]).
pub enum AtHand<R, P = FreshHit> {
    /// Its parsed record and body: the hot tier held it, or it was read
    /// and offered to the tier.
    Parsed(P),
    /// What the caller made from its record where it lies.
    Made(R),
}

/// One hot-tier miss in this many that could be answered from the record
/// where it lies is parsed and offered to the hot tier instead: an entry
/// hit again and again gets in after a few hits, and the many read once
/// in a while cost no parse and no insert. (Per thread; which read is
/// the one does not matter.)
const ADMIT_EVERY: u32 = 16;

thread_local!(static FRAME_READS: Calls = const { Calls::new(0) });

/// A fresh hit for the fast path: the record, and its body at hand.
pub struct FreshHit {
    pub record: Arc<Record>,
    pub body: FreshBody,
}

pub enum FreshBody {
    /// A small body, kept in its record.
    Memory(bytes::Bytes),
    File(OpenFile),
}

/// A committed body file, open; eviction keeps away while this lives.
pub struct OpenFile {
    pub file: Arc<std::fs::File>,
    _in_use: evict::InUseGuard,
}

/// The storage's tunables (`cache.*` in the server file).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Bodies up to this size live inside their record and are served
    /// from memory while hot.
    pub memory_body_max: u64,
    /// The hot tier's budget.
    pub memory_bytes: u64,
    pub bounds: evict::Bounds,
    /// Other nodes write the same store: an entry missing from the index
    /// may still be stored (see [`coherence`]).
    pub shared_store: bool,
    /// Records reach stable storage before they count (`cache.fsync`).
    pub fsync: bool,
    /// How long a record segment grows (`cache.segment_size`).
    pub segment_size: u64,
}

/// What `/metrics` reports about the storage.
#[derive(Debug, Clone, Copy)]
pub struct StorageStats {
    pub bytes: u64,
    pub objects: u64,
    pub evictions: u64,
    pub bytes_reclaimed: u64,
    pub index_bytes_per_entry: u64,
}

/// An entry whose freshness ends within this is "mutable" for eviction.
const EXPIRING: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// Index flags for a record's meta.
fn flags_of(meta: &record::StoredMeta) -> u8 {
    let lifetime = meta
        .fresh_until
        .duration_since(meta.created)
        .unwrap_or_default();
    if lifetime < EXPIRING {
        MUTABLE
    } else {
        0
    }
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
    /// A reader of the fill of entry `id` tagged `tag`, while it lasts.
    pub fn fill_reader(&self, id: u128, tag: u64) -> Option<(CacheMeta, fills::PartialHit)> {
        self.fills.reader(id, Some(tag))
    }

    pub fn new(
        bodies: Arc<dyn BodyStore>,
        state: Arc<dyn StateStore>,
        catalog: Arc<CatalogWriter>,
        runtime: tokio::runtime::Handle,
        known_remotes: Vec<String>,
        settings: Settings,
    ) -> std::io::Result<Self> {
        // Nodes sharing a store read each other's records by key.
        let local_root = bodies.local_root().filter(|_| !settings.shared_store);
        let segments = records::open_segments(local_root, settings.segment_size)?;
        Ok(CacheStorage {
            bodies,
            state,
            catalog,
            index: Index::default(),
            hot: HotEntries::new(settings.memory_bytes),
            bounds: settings.bounds,
            settings,
            refs: refs::References::default(),
            in_use: evict::InUse::default(),
            evicting: tokio::sync::Mutex::new(()),
            eviction_stats: evict::EvictionStats::default(),
            shared_eviction: std::sync::OnceLock::new(),
            changes: std::sync::OnceLock::new(),
            outages: outage::Outages::default(),
            open_bodies: OpenBodies::new(OPEN_BODIES),
            fills: Fills::default(),
            commits: Default::default(),
            room: room::Room::default(),
            offers: large::Offers::default(),
            entry_locks: EntryLocks::default(),
            flush_generation: AtomicU64::new(0),
            runtime,
            known_remotes: arc_swap::ArcSwap::from_pointee(known_remotes),
            segments,
            recovery_floors: Default::default(),
        })
    }

    pub fn bodies(&self) -> &Arc<dyn BodyStore> {
        &self.bodies
    }

    /// Records that the manifest stored under `manifest` names the entries
    /// under `targets` (its blobs, or the manifests of an index), so they
    /// are not evicted while it is cached.
    pub fn add_references(&self, manifest: &CacheKey, targets: &[CacheKey]) {
        let manifest = EntryLocation::from_key(manifest).id();
        let targets: Vec<u128> = targets
            .iter()
            .map(|key| EntryLocation::from_key(key).id())
            .collect();
        self.refs.add(manifest, &targets);
        self.catalog
            .record(CatalogEvent::References { manifest, targets });
    }

    /// Bytes and objects stored, and what eviction did.
    pub fn stats(&self) -> StorageStats {
        let entries = self.index.entries();
        StorageStats {
            bytes: self.index.bytes(),
            objects: entries,
            evictions: self.eviction_stats.evictions.load(Ordering::Relaxed),
            bytes_reclaimed: self.eviction_stats.bytes_reclaimed.load(Ordering::Relaxed),
            index_bytes_per_entry: self.index.memory().checked_div(entries).unwrap_or(0),
        }
    }

    /// Objects and bytes each remote holds, by name.
    pub fn usage_by_remote(&self) -> Vec<(String, index::RemoteUsage)> {
        let names = self.known_remotes.load();
        let usage = self.index.usage_by_remote();
        let of = |at: usize| usage.get(at).copied().unwrap_or_default();
        names
            .iter()
            .enumerate()
            .map(|(at, name)| (name.clone(), of(at)))
            .collect()
    }

    /// The bounds eviction keeps the cache within.
    pub fn bounds(&self) -> &evict::Bounds {
        &self.bounds
    }

    /// Whether a fill of `incoming` bytes would be kept now: it fits in the
    /// free space beside what the fills in flight have still to write
    /// ([`room`]). A fill starting re-checks under the fills' lock.
    pub fn has_room(&self, incoming: u64) -> bool {
        room::admits(
            self.room.free_for_admission(|| self.bodies.free_bytes()),
            self.fills.still_to_write(),
            incoming,
        )
    }

    /// Fills in progress on this node, the longest-running first.
    pub fn fills_in_progress(&self) -> Vec<fills::FillView> {
        self.fills.in_progress()
    }

    /// Whether a committed entry for `key` is in the index (it may still be
    /// expired).
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.index.get(EntryLocation::from_key(key).id()).is_some()
    }

    /// The hit fast path's lookup: entry `id` if it is committed, fresh at
    /// `now`, still the entry the index names (not flushed, replaced,
    /// evicted or invalidated by another node since it was loaded), and
    /// both its record and its body can be had without waiting: the record
    /// from the hot tier or the page cache, the body from the record or an
    /// open local file. Counts as an access, as a hit does. `None` sends
    /// the request down pingora's path, which loads what is missing.
    ///
    /// An entry the hot tier does not hold, with its body in its record,
    /// is given to `make` as it lies in the page cache (see
    /// [`Self::make_from_frame`]); when `make` declines it is parsed.
    pub fn fresh_at_hand<R>(
        &'static self,
        id: u128,
        now: std::time::SystemTime,
        make: impl FnOnce(&RecordView<'_>) -> Option<R>,
    ) -> Option<AtHand<R>> {
        let slot = self.index.get(id)?;
        let generation = self.flush_generation.load(Ordering::Acquire);
        if let Some(record) = self.hot_current(id, generation, slot) {
            return self.fresh_hit(id, record, now).map(AtHand::Parsed);
        }
        let record = match self.make_from_frame(id, generation, slot, now, make) {
            Some(AtHand::Made(made)) => return Some(AtHand::Made(made)),
            Some(AtHand::Parsed(record)) => record,
            None => self.read_record_now(id, generation, slot)?,
        };
        self.fresh_hit(id, record, now).map(AtHand::Parsed)
    }

    /// `record` and its body, if it is fresh at `now` and the body is at
    /// hand.
    fn fresh_hit(
        &'static self,
        id: u128,
        record: Arc<Record>,
        now: std::time::SystemTime,
    ) -> Option<FreshHit> {
        if record.meta.fresh_until < now {
            return None;
        }
        let body = match &record.inline_body {
            Some(body) if body.len() as u64 == record.body.size => FreshBody::Memory(body.clone()),
            Some(_) => return None,
            None => self.open_body_now(id, &record)?,
        };
        self.accessed(id);
        Some(FreshHit { record, body })
    }

    /// What `make` makes of entry `id`'s record where it lies in its
    /// segment, if the entry is fresh at `now`, carries its body and the
    /// page cache holds it. The record is parsed instead (and offered to
    /// the hot tier) when `make` declines, and on one read in
    /// [`ADMIT_EVERY`]. `None` when the record is not there to be read
    /// without waiting, or is not the entry's current one.
    fn make_from_frame<R>(
        &self,
        id: u128,
        generation: u64,
        slot: SlotView,
        now: std::time::SystemTime,
        make: impl FnOnce(&RecordView<'_>) -> Option<R>,
    ) -> Option<AtHand<R, Arc<Record>>> {
        let segments = self.segments.as_ref()?;
        if slot.flags & REVALIDATED != 0 || slot.record == 0 || slot.body != 0 {
            return None;
        }
        segments.with_record_now(slot.record, id, records::inline_size(slot), |bytes| {
            let view = RecordView::parse(bytes).ok()?;
            if layout::body_id(view.body_key) != slot.body {
                return None;
            }
            let fresh = view.fresh_until >= now && view.inline_body.is_some();
            if fresh && !one_in(&FRAME_READS, ADMIT_EVERY) {
                if let Some(made) = make(&view) {
                    self.accessed(id);
                    return Some(AtHand::Made(made));
                }
            }
            let record = Arc::new(view.to_record().ok()?);
            self.hot.put(id, record.clone(), generation);
            Some(AtHand::Parsed(record))
        })
    }

    /// Entry `id`'s record under the same conditions as [`Self::fresh_at_hand`]
    /// (its body is not looked at), for a hit that sends something made
    /// from it; the caller counts the hit with [`Self::accessed`].
    pub fn fresh_record_now(&self, id: u128, now: std::time::SystemTime) -> Option<Arc<Record>> {
        let slot = self.index.get(id)?;
        let generation = self.flush_generation.load(Ordering::Acquire);
        let record = self
            .hot_current(id, generation, slot)
            .or_else(|| self.read_record_now(id, generation, slot))?;
        (record.meta.fresh_until >= now).then_some(record)
    }

    /// Counts a hit on entry `id` served without a lookup. The catalog
    /// hears of it from [`access_reports`].
    pub fn accessed(&self, id: u128) {
        self.index.touch(id);
    }

    /// The record's body file, open, when the store is local and the file
    /// has the size the record says (anything else is for the phases,
    /// which drop a broken entry).
    fn open_body_now(&'static self, id: u128, record: &Record) -> Option<FreshBody> {
        let key = &record.body.body_key;
        let opened = match self.kept_body(id, key) {
            Some(kept) => kept,
            None => self.keep_body(id, key, self.bodies.open_now(key)?),
        };
        match opened {
            Opened::File { file, size } if size == record.body.size => {
                Some(FreshBody::File(OpenFile {
                    file,
                    _in_use: self.in_use.enter(id),
                }))
            }
            _ => None,
        }
    }

    /// The sha256 of entry `id`'s body, if the hot tier holds its current
    /// record (as it does right after a hit's lookup).
    pub fn held_digest(&self, id: u128) -> Option<String> {
        let slot = self.index.get(id)?;
        let generation = self.flush_generation.load(Ordering::Acquire);
        let record = self.hot_current(id, generation, slot)?;
        (!record.body.sha256.is_empty()).then(|| record.body.sha256.clone())
    }

    /// Why the lookup of `key` just failed, if it did (once).
    pub fn take_lookup_failure(&self, key: &CacheKey) -> Option<outage::LookupFailure> {
        self.outages.take(EntryLocation::from_key(key).id())
    }

    /// Whether any commit runs after its client got the body.
    pub fn committing(&self) -> bool {
        self.commits.any()
    }

    /// Waits until no commit of entry `id` runs after its client got the
    /// body ([`commits`]); whether it waited.
    pub async fn committed(&self, id: u128) -> bool {
        self.commits.settled(id).await
    }

    /// Waits until no commit runs after its client got the body: what
    /// follows sees every entry whose client has its last byte.
    pub async fn all_committed(&self) {
        self.commits.all_settled().await
    }

    /// Whether `key` is being filled or was filled moments ago (see
    /// [`Fills::known`]).
    pub fn fill_known(&self, key: &CacheKey) -> bool {
        self.fills.known(EntryLocation::from_key(key).id())
    }

    /// Where entry `id` of the remote at `remote` (its position in the
    /// remote names, as an index slot holds it) lives.
    fn location_of(&self, id: u128, remote: u16) -> Option<EntryLocation> {
        let names = self.known_remotes.load();
        let remote = names.get(remote as usize)?;
        Some(EntryLocation::new(remote, id))
    }

    /// Gives the remotes a reload added their positions, before any request
    /// can store an entry of theirs.
    pub fn know_remotes<'a>(&self, names: impl IntoIterator<Item = &'a String>) {
        let names: Vec<&String> = names.into_iter().collect();
        self.known_remotes.rcu(|known| {
            let mut grown = Vec::clone(known);
            grown.extend(
                names
                    .iter()
                    .filter(|n| !known.contains(n))
                    .map(|n| n.to_string()),
            );
            grown
        });
    }

    /// The position of `remote` in the remote names (u16::MAX if unknown).
    fn remote_index(&self, remote: &str) -> u16 {
        self.known_remotes
            .load()
            .iter()
            .position(|r| r == remote)
            .map_or(u16::MAX, |i| i as u16)
    }

    /// The entry's current record, parsed: hot tier, else the store (the
    /// state store's newer meta for a revalidated entry). An entry the
    /// index does not know is looked for in the store only while the index
    /// is still being reconciled after a start, or when other nodes share
    /// the store ([`coherence`]).
    async fn load_record(&self, location: &EntryLocation) -> Result<Option<Arc<Record>>> {
        let id = location.id();
        let generation = self.flush_generation.load(Ordering::Acquire);
        let slot = match self.index.get(id) {
            Some(slot) => Some(slot),
            None if self.index.complete() && !self.settings.shared_store => return Ok(None),
            None => None,
        };
        if let Some(entry) = slot.and_then(|slot| self.hot_current(id, generation, slot)) {
            return Ok(Some(entry));
        }
        let Some((record, revalidated)) = self.read_stored(location, slot).await? else {
            return Ok(None);
        };
        let entry = Arc::new(record);
        if slot.is_none() {
            self.adopt(location, &entry, revalidated);
        }
        self.hot.put(id, entry.clone(), generation);
        Ok(Some(entry))
    }

    /// The hot tier's record of `id`, if it was loaded under `generation`
    /// and is the one the index's `slot` names (not replaced since).
    fn hot_current(&self, id: u128, generation: u64, slot: SlotView) -> Option<Arc<Record>> {
        let entry = self.hot.get(id, generation)?;
        (layout::body_id(&entry.body.body_key) == slot.body).then_some(entry)
    }

    /// The entry's commit record read from the store without waiting (a
    /// local file in the page cache), parsed and put in the hot tier, as
    /// [`Self::load_record`] would; `None` whenever that is not possible
    /// here (the state store holds a newer meta, a remote store, a read
    /// that would wait for the disk, a record that does not match the
    /// slot), and the caller takes the path that waits.
    fn read_record_now(&self, id: u128, generation: u64, slot: SlotView) -> Option<Arc<Record>> {
        if slot.flags & REVALIDATED != 0 {
            return None;
        }
        let bytes = self.record_bytes_now(id, slot)?;
        let record = Record::decode(&bytes).ok()?;
        if layout::body_id(&record.body.body_key) != slot.body {
            return None;
        }
        let entry = Arc::new(record);
        self.hot.put(id, entry.clone(), generation);
        Some(entry)
    }

    /// Reads an entry's record from the store: the commit record, or the
    /// state store's copy when it is newer for the same body. Returns
    /// whether the state store's copy was used.
    async fn read_stored(
        &self,
        location: &EntryLocation,
        slot: Option<SlotView>,
    ) -> Result<Option<(Record, bool)>> {
        let wants_state = slot.is_none_or(|s| s.flags & REVALIDATED != 0);
        let from_state = if wants_state {
            match self.state.get(&location.state_key()).await {
                Ok(bytes) => bytes.and_then(|b| Record::decode(&b).ok()),
                Err(e) => {
                    // Fail open: the commit-time record still serves.
                    log::warn!("{e}; falling back to the stored record");
                    None
                }
            }
        } else {
            None
        };
        if let (Some(record), Some(slot)) = (&from_state, slot) {
            if layout::body_id(&record.body.body_key) == slot.body {
                return Ok(from_state.map(|r| (r, true)));
            }
        }
        let Some(bytes) = self.record_bytes(location, slot).await? else {
            return Ok(None);
        };
        let committed = match Record::decode(&bytes) {
            Ok(record) => record,
            Err(e) => {
                log::warn!(
                    "unreadable cache record {}: {e}; treating as a miss",
                    location.meta_key()
                );
                return Ok(None);
            }
        };
        Ok(Some(match from_state {
            Some(state) if state.body.body_key == committed.body.body_key => (state, true),
            _ => (committed, false),
        }))
    }

    /// Puts an entry found in the store but not in the index into the index.
    fn adopt(&self, location: &EntryLocation, entry: &Record, revalidated: bool) {
        let mut slot = self.found_slot(location, entry);
        if revalidated {
            slot.flags |= REVALIDATED;
        }
        self.index.insert(location.id(), slot);
    }

    /// The slot of a record found in the store rather than committed here:
    /// last used when it was fetched.
    fn found_slot(&self, location: &EntryLocation, entry: &Record) -> index::Slot {
        let body = &entry.body;
        index::Slot::new(
            layout::body_id(&body.body_key),
            body.size,
            self.remote_index(&location.remote),
            flags_of(&entry.meta),
            body.fetched_at * 1000,
        )
    }

    /// Opens an entry's body, reusing an open handle when there is one.
    async fn open_body(&self, id: u128, body_key: &str) -> Result<Option<Opened>> {
        if let Some(kept) = self.kept_body(id, body_key) {
            return Ok(Some(kept));
        }
        let opened = self
            .bodies
            .open(body_key)
            .await
            .map_err(|e| internal("opening cache body", e))?;
        Ok(opened.map(|opened| self.keep_body(id, body_key, opened)))
    }

    /// The body handle kept open for entry `id`, if it is `body_key`'s.
    fn kept_body(&self, id: u128, body_key: &str) -> Option<Opened> {
        let (file, size) = self.open_bodies.get(id, body_key)?;
        Some(Opened::File { file, size })
    }

    /// Keeps a local body file open for the entry's next hits.
    fn keep_body(&self, id: u128, body_key: &str, opened: Opened) -> Opened {
        if let Opened::File { file, size } = &opened {
            self.open_bodies.keep(id, body_key, file.clone(), *size);
        }
        opened
    }

    /// A hit on the committed entry, if there is one whose body is whole.
    async fn lookup_committed(
        &'static self,
        location: &EntryLocation,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(record) = self.load_record(location).await? else {
            return Ok(None);
        };
        let handler = match &record.inline_body {
            Some(body) => hit::BodyHit::memory(body.clone()),
            None => {
                let opened = self.open_body(location.id(), &record.body.body_key).await?;
                match opened {
                    Some(opened) if opened.size() == record.body.size => {
                        hit::BodyHit::new(opened, &self.bodies, &record.body.body_key)
                            .in_use(self.in_use.enter(location.id()))
                    }
                    other => {
                        // The record points at a missing or wrong-sized body
                        // (a crash between writes, or tampering): never serve it.
                        log::warn!(
                            "cache body {} is {}, record says {} bytes; dropping the entry",
                            record.body.body_key,
                            other
                                .as_ref()
                                .map(|b| b.size().to_string())
                                .unwrap_or("missing".into()),
                            record.body.size
                        );
                        self.remove(location, Expect::Body(&record.body.body_key))
                            .await?;
                        return Ok(None);
                    }
                }
            }
        };
        self.accessed(location.id());
        Ok(Some((record.meta.to_meta(), Box::new(handler))))
    }
}

#[async_trait]
impl Storage for CacheStorage {
    /// A fill in progress comes first: its followers stream it, and an
    /// expired entry being refilled is not served once the new body flows.
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let location = EntryLocation::from_key(key);
        // A fill whose commit is under way is whole, but a hit is what the
        // request gets once it is committed (its record in the hot tier).
        self.commits.settled(location.id()).await;
        if let Some((meta, reader)) = self.fills.reader(location.id(), None) {
            return Ok(Some((meta, Box::new(reader))));
        }
        let found = self.lookup_committed(&location).await;
        if let Err(e) = &found {
            let id = location.id();
            let failure = outage::LookupFailure {
                cached: self.index.get(id).is_some(),
                reason: e.to_string(),
            };
            self.outages.note(id, failure);
        }
        found
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        streaming_write_tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(tag) = fills::tag_of(streaming_write_tag) else {
            return self.lookup(key, trace).await;
        };
        let id = EntryLocation::from_key(key).id();
        match self.fills.reader(id, Some(tag)) {
            Some((meta, reader)) => Ok(Some((meta, Box::new(reader)))),
            // The fill waited for has ended: what it committed (or, had it
            // failed, what was there before) is the answer, not a miss.
            None => self.lookup(key, trace).await,
        }
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let fill = self.start_fill(key, meta).await?;
        // Other nodes cannot wait for this node's commits: on a shared
        // store, the client of a miss has its last byte once others see it.
        if self.settings.shared_store {
            return Ok(Box::new(fill));
        }
        Ok(Box::new(fill.committing_later()))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let location = EntryLocation::from_compact(target.key());
        self.commits.settled(location.id()).await;
        Ok(match self.remove(&location, Expect::Current).await? {
            Some(_) => PurgeOutcome::Purged(None),
            None => PurgeOutcome::NotFound,
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let location = EntryLocation::from_key(key);
        self.commits.settled(location.id()).await;
        let Some(current) = self.load_record(&location).await? else {
            return Ok(false);
        };
        self.replace_meta(&location, &current, meta).await
    }

    fn support_streaming_partial_write(&self) -> bool {
        true
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
