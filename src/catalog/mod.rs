//! The catalog: what is cached (remote, path, size, sha256, content type,
//! fetched, last access), for listing, auditing and eviction.
//!
//! The catalog is never on the request path. Requests hand events to a
//! [`CatalogWriter`] (a channel, never blocking); a background task batches
//! them into one transaction, coalescing access times, so a hit costs one
//! channel send. Changes to what is stored are never dropped (the index is
//! rebuilt from them at start); access times are dropped and counted when
//! too many wait, since they only refine the eviction order.

mod sql;

pub use sql::{check_sqlite, SqlCatalog};

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// One catalog row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArtifactRow {
    pub remote: String,
    pub path: String,
    pub size: i64,
    pub sha256: String,
    pub content_type: Option<String>,
    pub fetched_at: i64,
    pub last_access: i64,
    /// Uploaded to a local repository rather than cached from an upstream.
    pub local: bool,
}

/// Which page of cached artifacts to list.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    pub remote: Option<String>,
    /// Paths starting with this ("" for all).
    pub prefix: String,
    /// The (remote, path) the previous page ended at.
    pub after: Option<(String, String)>,
    pub limit: u32,
}

/// One cached artifact as the cache API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct CachedRow {
    pub remote: String,
    pub path: String,
    pub size: i64,
    pub sha256: String,
    pub content_type: Option<String>,
    /// Unix seconds.
    pub fetched_at: i64,
    /// Unix seconds.
    pub last_access: i64,
    /// Hits served from the cache.
    pub hits: i64,
}

/// What one remote holds in the cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct UsageRow {
    pub remote: String,
    pub objects: i64,
    pub bytes: i64,
}

/// Which entries [`Catalog::top_entries`] lists first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopOrder {
    Largest,
    MostHit,
}

/// One entry of a top list on the status page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct TopEntry {
    pub remote: String,
    pub path: String,
    pub size: i64,
    /// Hits reported so far (the index reports them in batches).
    pub hits: i64,
}

/// One committed cache entry, as the storage index holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRow {
    pub id: u128,
    pub remote: String,
    pub path: String,
    /// The body file's id; 0 for a body kept in its record.
    pub body: u128,
    pub size: i64,
    pub flags: u8,
    /// Milliseconds since the Unix epoch.
    pub last_access: i64,
    /// The record's location in the record segments; 0 for a record kept
    /// as its own object.
    pub record: u64,
}

/// One artifact served to one client: a row of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct AuditRow {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub remote: String,
    /// The decoded remote path (the cache key's path).
    pub path: String,
    pub package: Option<String>,
    pub version: Option<String>,
    /// The body's sha256 (hex) as the catalog knew it when the row was
    /// written.
    pub sha256: Option<String>,
    /// The client's IP address.
    pub client: Option<String>,
    /// The name of the configured token the request bore (`write`,
    /// `admin`, `metrics`), if any.
    pub token: Option<String>,
    pub user_agent: Option<String>,
    /// How many deliveries the row stands for: those of one write batch
    /// (half a second) alike in everything but time, from `at_ms` on.
    pub deliveries: i64,
}

/// Which audit rows to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub remote: Option<String>,
    pub package: Option<String>,
    pub version: Option<String>,
    /// Hex sha256, or a path's `sha256:hex` digest.
    pub digest: Option<String>,
    pub since_ms: Option<i64>,
    pub limit: u32,
}

/// A change to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogEvent {
    /// A committed cache entry (replacing any earlier one of that id).
    Entry(EntryRow),
    /// A cache entry removed (evicted, purged, found broken), with the
    /// artifact row it stood for.
    EntryRemoved {
        id: u128,
    },
    EntryAccessed {
        id: u128,
        at_ms: i64,
        /// Hits since the last report.
        hits: u32,
    },
    /// What a cached manifest names (blobs, child manifests), by entry id.
    References {
        manifest: u128,
        targets: Vec<u128>,
    },
    Stored(ArtifactRow),
    Removed {
        remote: String,
        path: String,
    },
    /// Cached (not uploaded) rows of one remote, or of all when `None`.
    Flushed(Option<String>),
    /// An artifact served (the audit trail); its `sha256` is filled from
    /// the catalog's row of the path when written.
    Served(AuditRow),
}

pub type CatalogResult<T> = Result<T, CatalogError>;

#[derive(Debug, thiserror::Error)]
#[error("catalog: {0}")]
pub struct CatalogError(pub String, pub Retry);

/// Whether trying the same statements again later may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The database was unreachable, restarting or overloaded.
    Later,
    /// The statements themselves failed.
    Never,
}

impl CatalogError {
    pub fn new(message: String) -> CatalogError {
        CatalogError(message, Retry::Never)
    }
}

impl From<sqlx::Error> for CatalogError {
    fn from(e: sqlx::Error) -> Self {
        let retry = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::WorkerCrashed => Retry::Later,
            sqlx::Error::Database(db) => database_retry(db.as_ref()),
            _ => Retry::Never,
        };
        CatalogError(e.to_string(), retry)
    }
}

/// Whether a database's refusal is one of its state rather than of the
/// statements. A full disk is: the batch is written once eviction has made
/// room, as PostgreSQL's `disk_full` already was, and not dropped.
fn database_retry(db: &dyn sqlx::error::DatabaseError) -> Retry {
    let code = db.code();
    let code = code.as_deref().unwrap_or_default();
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // An extended result code, in decimal; its low byte is the primary
        // code: BUSY, LOCKED, IOERR, FULL.
        return match code.parse::<i32>().map(|code| code & 0xff) {
            Ok(5 | 6 | 10 | 13) => Retry::Later,
            _ => Retry::Never,
        };
    }
    // SQLSTATE classes: connection exception, insufficient resources
    // (disk full among them), operator intervention (a restart),
    // transaction rollback (deadlock, serialization).
    match code.get(..2) {
        Some("08" | "53" | "57" | "40") => Retry::Later,
        _ => Retry::Never,
    }
}

#[async_trait]
pub trait Catalog: Send + Sync {
    /// Applies a batch of events in one transaction.
    async fn apply(&self, events: &[CatalogEvent]) -> CatalogResult<()>;
    /// Rows of one remote, ordered by path.
    async fn list(&self, remote: &str) -> CatalogResult<Vec<ArtifactRow>>;
    /// Every cache entry.
    async fn entries(&self) -> CatalogResult<Vec<EntryRow>>;
    /// Every (manifest, target) reference.
    async fn references(&self) -> CatalogResult<Vec<(u128, u128)>>;
    /// Up to `limit` entries in eviction order, least recently used first,
    /// leaving out those a cached manifest names (an image stays whole).
    async fn eviction_order(&self, limit: i64) -> CatalogResult<Vec<EntryRow>>;
    /// A page of cached artifacts for the cache API.
    async fn cached_page(&self, query: &PageQuery) -> CatalogResult<Vec<CachedRow>>;
    /// The cache entries (id, path) of `remote`: of one path, or all.
    async fn entries_of(
        &self,
        remote: &str,
        path: Option<&str>,
    ) -> CatalogResult<Vec<(u128, String)>>;
    /// Objects and bytes cached per remote.
    async fn usage(&self) -> CatalogResult<Vec<UsageRow>>;
    /// The first `limit` entries in `order`.
    async fn top_entries(&self, order: TopOrder, limit: u32) -> CatalogResult<Vec<TopEntry>>;
    /// Audit rows matching `query`, newest first.
    async fn audit(&self, query: &AuditQuery) -> CatalogResult<Vec<AuditRow>>;
    /// Deletes audit rows older than `before_ms`; how many.
    async fn prune_audit(&self, before_ms: i64) -> CatalogResult<u64>;
    /// Cheap liveness check.
    async fn ping(&self) -> CatalogResult<()>;
}

/// Access events allowed to wait before new ones are dropped.
const MAX_PENDING_ACCESSES: u64 = 65_536;
/// Changes (stored, removed, flushed) allowed to wait while the catalog is
/// unreachable: about 300 MiB of queue at the worst. Beyond it changes are
/// dropped and counted; the next start's reconcile repairs the catalog
/// from the store.
const MAX_PENDING_CHANGES: u64 = 1_000_000;
/// Retries of a batch the catalog could not take back off up to this.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// At most one log line per this while the catalog is unreachable.
const LOG_EVERY: Duration = Duration::from_secs(10);
const MAX_BATCH: usize = 8192;
const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// The request side of the catalog: fire-and-forget event submission.
pub struct CatalogWriter {
    tx: mpsc::UnboundedSender<CatalogEvent>,
    pending_accesses: Arc<AtomicU64>,
    pending_changes: Arc<AtomicU64>,
    dropped: AtomicU64,
    /// Events queued so far, and how far the batching task has written.
    submitted: AtomicU64,
    progress: Arc<Progress>,
}

/// How many events the batching task has applied (or given up on), and
/// the ask to stop gathering a trickle and write it now.
#[derive(Default)]
struct Progress {
    applied: AtomicU64,
    changed: tokio::sync::Notify,
    /// Set by `drain`: whoever waits for the catalog (a listing, a
    /// removal, eviction, the stop) should not also wait out
    /// `FLUSH_INTERVAL`, which is there only to batch unasked writes.
    write_now: tokio::sync::Notify,
}

fn is_access(event: &CatalogEvent) -> bool {
    matches!(
        event,
        CatalogEvent::EntryAccessed { .. } | CatalogEvent::Served(_)
    )
}

impl CatalogWriter {
    /// Starts the batching task on `runtime` and returns the submitting end.
    pub fn spawn(catalog: Arc<dyn Catalog>, runtime: &tokio::runtime::Handle) -> Arc<Self> {
        Self::spawn_gathering(catalog, runtime, FLUSH_INTERVAL)
    }

    fn spawn_gathering(
        catalog: Arc<dyn Catalog>,
        runtime: &tokio::runtime::Handle,
        gather: Duration,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Pending::default();
        let progress = Arc::new(Progress::default());
        let batches = Batches {
            catalog,
            pending: pending.clone(),
            progress: progress.clone(),
            gather,
        };
        runtime.spawn(batches.run(rx));
        Arc::new(CatalogWriter {
            tx,
            pending_accesses: pending.accesses,
            pending_changes: pending.changes,
            dropped: AtomicU64::new(0),
            submitted: AtomicU64::new(0),
            progress,
        })
    }

    /// Waits until every event queued before the call is written (or its
    /// batch failed), up to `limit`: the last step before the process
    /// exits, so a graceful stop loses no catalog rows, and what a reader
    /// of the catalog does first, so it sees its own node's changes.
    pub async fn drain(&self, limit: Duration) -> bool {
        let target = self.submitted.load(Ordering::Acquire);
        if self.progress.applied.load(Ordering::Acquire) < target {
            self.progress.write_now.notify_one();
        }
        let written = async {
            loop {
                let changed = self.progress.changed.notified();
                if self.progress.applied.load(Ordering::Acquire) >= target {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(limit, written).await.is_ok()
    }

    /// Waits until fewer than `most` changes are queued: how a bulk
    /// writer (`artifactd import`) keeps the queue from growing without
    /// bound while the catalog is slower than it.
    pub async fn wait_for_room(&self, most: u64) {
        self.wait_below(&self.pending_changes, most).await;
    }

    /// Waits until `more` access events fit in their queue, so a bulk
    /// reporter's events are not dropped.
    pub async fn wait_for_access_room(&self, more: u64) {
        let most = MAX_PENDING_ACCESSES.saturating_sub(more);
        self.wait_below(&self.pending_accesses, most).await;
    }

    async fn wait_below(&self, queued: &AtomicU64, most: u64) {
        loop {
            let changed = self.progress.changed.notified();
            if queued.load(Ordering::Acquire) < most {
                return;
            }
            changed.await;
        }
    }

    /// Queues an event without waiting.
    pub fn record(&self, event: CatalogEvent) {
        if is_access(&event) {
            if self.pending_accesses.load(Ordering::Relaxed) >= MAX_PENDING_ACCESSES {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.pending_accesses.fetch_add(1, Ordering::Relaxed);
        } else {
            if self.pending_changes.load(Ordering::Relaxed) >= MAX_PENDING_CHANGES {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.pending_changes.fetch_add(1, Ordering::Relaxed);
        }
        self.submitted.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.submitted.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Counts events dropped before they reached this writer (audit
    /// deliveries counted in memory when it was full).
    pub fn add_dropped(&self, events: u64) {
        self.dropped.fetch_add(events, Ordering::Relaxed);
    }

    /// Events queued and not yet written.
    pub fn queued(&self) -> u64 {
        self.pending_accesses.load(Ordering::Relaxed) + self.pending_changes.load(Ordering::Relaxed)
    }

    /// Events lost because too many accesses waited or the writer had stopped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Events queued and not yet taken into a batch.
#[derive(Clone, Default)]
struct Pending {
    accesses: Arc<AtomicU64>,
    changes: Arc<AtomicU64>,
}

/// The batching task: gathers events for up to `gather` so one
/// transaction covers a trickle, unless a `drain` asks for them sooner.
struct Batches {
    catalog: Arc<dyn Catalog>,
    pending: Pending,
    progress: Arc<Progress>,
    gather: Duration,
}

impl Batches {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<CatalogEvent>) {
        let mut buffer = Vec::with_capacity(MAX_BATCH);
        loop {
            if rx.recv_many(&mut buffer, MAX_BATCH).await == 0 {
                return;
            }
            if buffer.len() < MAX_BATCH {
                // A backlog is written at once, in full batches.
                tokio::select! {
                    _ = tokio::time::sleep(self.gather) => {}
                    _ = self.progress.write_now.notified() => {}
                }
            }
            while buffer.len() < MAX_BATCH && !rx.is_empty() {
                let room = MAX_BATCH - buffer.len();
                rx.recv_many(&mut buffer, room).await;
            }
            let accesses = buffer.iter().filter(|e| is_access(e)).count() as u64;
            let received = buffer.len() as u64;
            let batch = coalesce_accesses(std::mem::take(&mut buffer));
            apply_until_taken(self.catalog.as_ref(), &batch).await;
            self.pending.accesses.fetch_sub(accesses, Ordering::Relaxed);
            self.pending
                .changes
                .fetch_sub(received - accesses, Ordering::Relaxed);
            self.progress.applied.fetch_add(received, Ordering::AcqRel);
            self.progress.changed.notify_waiters();
        }
    }
}

/// Applies `batch`, retrying with backoff while the catalog is unreachable
/// or out of room (events queue behind it meanwhile); a batch the catalog
/// refuses for what it says is logged and dropped.
async fn apply_until_taken(catalog: &dyn Catalog, batch: &[CatalogEvent]) {
    let mut delay = Duration::from_millis(100);
    let mut last_log: Option<std::time::Instant> = None;
    let mut failures = 0u32;
    loop {
        match catalog.apply(batch).await {
            Ok(()) => {
                if failures > 0 {
                    log::info!(
                        "catalog reachable again: {} queued events written after {failures} failed attempts",
                        batch.len()
                    );
                }
                return;
            }
            Err(CatalogError(message, Retry::Later)) => {
                failures += 1;
                if last_log.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                    log::warn!(
                        "catalog unreachable or full ({message}); {} events wait and are retried",
                        batch.len()
                    );
                    last_log = Some(std::time::Instant::now());
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
            Err(e) => {
                log::warn!("catalog batch of {} events failed: {e}", batch.len());
                return;
            }
        }
    }
}

/// Keeps only the latest access per entry (with the hits of all of them),
/// in place of the first one, so an entry reported twice in a batch costs
/// one row update.
fn coalesce_accesses(events: Vec<CatalogEvent>) -> Vec<CatalogEvent> {
    let mut latest: HashMap<u128, (i64, u32)> = HashMap::new();
    for event in &events {
        if let CatalogEvent::EntryAccessed { id, at_ms, hits } = event {
            let entry = latest.entry(*id).or_insert((*at_ms, 0));
            *entry = (entry.0.max(*at_ms), entry.1.saturating_add(*hits));
        }
    }
    events
        .into_iter()
        .filter_map(|event| match event {
            CatalogEvent::EntryAccessed { id, .. } => latest
                .remove(&id)
                .map(|(at_ms, hits)| CatalogEvent::EntryAccessed { id, at_ms, hits }),
            other => Some(other),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(id: u128, at_ms: i64, hits: u32) -> CatalogEvent {
        CatalogEvent::EntryAccessed { id, at_ms, hits }
    }

    /// A real SQLite database, reached through the `Any` driver as the
    /// catalog reaches it, whose size is capped so that a write fails the
    /// way a full disk makes it fail (`SQLITE_FULL`).
    async fn capped_sqlite() -> (tempfile::TempDir, sqlx::AnyConnection) {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display());
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        for statement in [
            "CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB)",
            "PRAGMA max_page_count = 8",
        ] {
            sqlx::query(statement).execute(&mut conn).await.unwrap();
        }
        (dir, conn)
    }

    #[tokio::test]
    async fn a_full_sqlite_database_is_retried_and_a_bad_statement_is_not() {
        let (_dir, mut conn) = capped_sqlite().await;
        let full = sqlx::query("INSERT INTO t (id, data) VALUES (1, zeroblob(1000000))")
            .execute(&mut conn)
            .await
            .unwrap_err();
        let full = CatalogError::from(full);
        assert!(full.0.contains("full"), "{full}");
        assert_eq!(full.1, Retry::Later, "{full}");
        sqlx::query("INSERT INTO t (id, data) VALUES (2, x'00')")
            .execute(&mut conn)
            .await
            .unwrap();
        let duplicate = sqlx::query("INSERT INTO t (id, data) VALUES (2, x'00')")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert_eq!(CatalogError::from(duplicate).1, Retry::Never);
        let missing = sqlx::query("SELECT * FROM nowhere")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert_eq!(CatalogError::from(missing).1, Retry::Never);
    }

    #[test]
    fn accesses_coalesce_to_the_latest_per_entry_with_every_hit() {
        let out = coalesce_accesses(vec![
            access(1, 1, 2),
            access(2, 5, 1),
            access(1, 3, 4),
            CatalogEvent::Flushed(None),
        ]);
        assert_eq!(
            out,
            vec![
                access(1, 3, 6),
                access(2, 5, 1),
                CatalogEvent::Flushed(None)
            ]
        );
    }

    /// A reader's `drain` does not wait out the gathering of a trickle:
    /// with an hour to gather, the row is written as soon as it is asked
    /// for, and only then.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_drain_writes_a_gathering_trickle_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::config::CatalogUrl::Sqlite(dir.path().join("c.db"));
        let catalog: Arc<dyn Catalog> = Arc::new(sql::SqlCatalog::open(&url).await.unwrap());
        let writer = CatalogWriter::spawn_gathering(
            catalog.clone(),
            &tokio::runtime::Handle::current(),
            Duration::from_secs(3600),
        );
        let row = ArtifactRow {
            remote: "r".into(),
            path: "a/b.tgz".into(),
            size: 3,
            sha256: "ab".into(),
            content_type: None,
            fetched_at: 10,
            last_access: 10,
            local: false,
        };
        writer.record(CatalogEvent::Stored(row.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(catalog.list("r").await.unwrap(), [], "written unasked");
        assert!(writer.drain(Duration::from_secs(30)).await);
        assert_eq!(catalog.list("r").await.unwrap(), [row]);
        // Nothing queued: a drain returns without asking.
        assert!(writer.drain(Duration::from_millis(1)).await);
    }
}
