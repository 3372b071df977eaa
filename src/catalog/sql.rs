//! The catalog in SQL: SQLite (the single-node default) or PostgreSQL (a
//! cluster), one schema, one set of migrations and one code path through
//! sqlx's `Any` driver.
//!
//! The statements are written in the SQL both accept: numbered `$n`
//! parameters, `CASE` instead of the two-argument `max` SQLite has and
//! PostgreSQL spells `GREATEST`, aggregates cast to `BIGINT` (PostgreSQL's
//! `sum` of a `BIGINT` is `NUMERIC`, which `Any` does not carry).

use super::{
    ArtifactRow, AuditQuery, AuditRow, CachedRow, Catalog, CatalogError, CatalogEvent,
    CatalogResult, EntryRow, PageQuery, TopEntry, TopOrder, UsageRow,
};
use crate::config::CatalogUrl;
use async_trait::async_trait;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::AnyPool;
use sqlx::{ConnectOptions, Connection};
use sqlx::{Executor, Row};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// Access reports are applied in bulk, this many rows per statement: each
/// statement is a round trip to sqlx's database thread, and a sweep over
/// many cached objects reports thousands of accesses a second.
const ACCESS_CHUNK: usize = 256;
/// Stored rows likewise (8 parameters each, far below either database's
/// limit of parameters per statement).
const UPSERT_CHUNK: usize = 256;
/// Removed entries likewise (one parameter each).
const REMOVE_CHUNK: usize = 512;

/// The statements run for access reports and per eviction must find their
/// rows through an index, never scan a table of a million rows (tested
/// below with the query planner).
fn access_entries(rows: usize, params: Params) -> String {
    format!(
        "UPDATE entries SET last_access = CASE WHEN v.column2 > entries.last_access
             THEN v.column2 ELSE entries.last_access END,
           hits = entries.hits + v.column3
         FROM (VALUES {}) AS v WHERE entries.id = v.column1",
        value_rows(rows, 3, params)
    )
}

/// How a multi-row statement names its parameters. PostgreSQL knows only
/// numbered ones (`$n`); SQLite binds a numbered one by looking its name up
/// in a list as long as the statement's (quadratic in the rows: half an
/// import's catalog time), an anonymous one (`?`) in order.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Params {
    Numbered,
    Anonymous,
}

impl Params {
    fn of(conn: &sqlx::AnyConnection) -> Params {
        if conn.backend_name() == "SQLite" {
            Params::Anonymous
        } else {
            Params::Numbered
        }
    }
}

/// `$1, $2, …` (or `?, ?, …`): `count` parameters.
fn param_list(count: usize, params: Params) -> String {
    let name = |i: usize| match params {
        Params::Numbered => format!("${i}"),
        Params::Anonymous => "?".to_string(),
    };
    (1..=count).map(name).collect::<Vec<_>>().join(", ")
}

/// `($1, $2, $3), ($4, $5, $6), …` (or `(?, ?, ?), …`): `rows` tuples of
/// `width` parameters.
fn value_rows(rows: usize, width: usize, params: Params) -> String {
    let tuple = |row: usize| {
        let names: Vec<String> = (1..=width)
            .map(|i| match params {
                Params::Numbered => format!("${}", row * width + i),
                Params::Anonymous => "?".to_string(),
            })
            .collect();
        format!("({})", names.join(", "))
    };
    (0..rows).map(tuple).collect::<Vec<_>>().join(", ")
}

/// An artifact's last use in seconds, grouped over its entries (`e`): a
/// hit reaches the catalog as its entry's access ([`access_entries`]), the
/// artifact's own column keeps the time it was stored.
macro_rules! last_use {
    () => {
        "CASE WHEN coalesce(max(e.last_access), 0) / 1000 > a.last_access
           THEN coalesce(max(e.last_access), 0) / 1000 ELSE a.last_access END AS last_access"
    };
}

/// A page of the cache API: cached (not uploaded) artifacts in (remote,
/// path) order after a cursor, with the hits of their entries.
const CACHED_PAGE: &str = concat!(
    "
    SELECT a.remote, a.path, a.size, a.sha256, a.content_type, a.fetched_at, ",
    last_use!(),
    ",
           CAST(coalesce(sum(e.hits), 0) AS BIGINT) AS hits
    FROM artifacts a LEFT JOIN entries e ON e.remote = a.remote AND e.path = a.path
    WHERE NOT a.local
      AND ($1 IS NULL OR a.remote = $1)
      AND substr(a.path, 1, length($2)) = $2
      AND (a.remote, a.path) > ($3, $4)
    GROUP BY a.remote, a.path
    ORDER BY a.remote, a.path
    LIMIT $5"
);

/// What removing entries deletes, for `ids` of them at once: their
/// artifacts (not uploads), their rows and the references they made. An
/// eviction of half a million entries is a few thousand statements, not
/// a million and a half, so a stop drains it within its bound.
fn remove_entries(ids: usize, params: Params) -> [String; 3] {
    let list = param_list(ids, params);
    [
        format!(
            "DELETE FROM artifacts WHERE NOT local AND (remote, path) IN
               (SELECT remote, path FROM entries WHERE id IN ({list}))"
        ),
        format!("DELETE FROM entries WHERE id IN ({list})"),
        format!("DELETE FROM refs WHERE manifest IN ({list})"),
    ]
}

/// How long a statement may wait for a connection: a catalog that is down
/// fails a batch (which the writer retries) instead of stalling it.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqlCatalog {
    pool: AnyPool,
}

impl SqlCatalog {
    /// Connects (creating an SQLite file if needed) and migrates.
    pub async fn open(url: &CatalogUrl) -> CatalogResult<SqlCatalog> {
        sqlx::any::install_default_drivers();
        let pool = match url {
            CatalogUrl::Sqlite(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| CatalogError::new(format!("{}: {e}", dir.display())))?;
                }
                AnyPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // A million entries make a catalog of a few
                            // hundred MiB; the default 2 MiB page cache
                            // re-reads the B-tree from the OS for every
                            // access report and eviction.
                            conn.execute("PRAGMA cache_size = -32768").await?;
                            conn.execute("PRAGMA busy_timeout = 5000").await?;
                            Ok(())
                        })
                    })
                    .connect_with(sqlite_options(path)?)
                    .await?
            }
            CatalogUrl::Postgres(url) => postgres_pool().connect(url.expose()).await?,
        };
        let catalog = SqlCatalog { pool };
        catalog.migrate().await?;
        if matches!(url, CatalogUrl::Sqlite(_)) {
            // Kept by the file: readers never wait for the writer.
            catalog.pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        Ok(catalog)
    }

    /// A PostgreSQL catalog that connects when first used, for a node
    /// starting while the database is away: its statements fail (and the
    /// writer retries them) until [`Self::migrate_when_reachable`] is done.
    pub fn open_lazy(url: &str) -> CatalogResult<SqlCatalog> {
        sqlx::any::install_default_drivers();
        Ok(SqlCatalog {
            pool: postgres_pool().connect_lazy(url)?,
        })
    }

    async fn migrate(&self) -> CatalogResult<()> {
        sqlx::migrate!("src/catalog/migrations")
            .run(&self.pool)
            .await
            .map_err(|e| CatalogError::new(e.to_string()))
    }

    /// Migrates once the database answers, retrying with backoff.
    pub async fn migrate_when_reachable(&self) {
        let mut delay = Duration::from_secs(1);
        loop {
            match self.migrate().await {
                Ok(()) => {
                    log::info!("catalog reachable: schema ready, queued changes follow");
                    return;
                }
                Err(e) => log::debug!("catalog still unreachable: {e}"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MIGRATE_RETRY_MAX);
        }
    }
}

/// The longest wait between two attempts to migrate a lazy catalog.
const MIGRATE_RETRY_MAX: Duration = Duration::from_secs(30);

fn postgres_pool() -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(ACQUIRE_TIMEOUT)
}

/// What an SQLite URL's path may not hold as is.
const SQLITE_PATH_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b'?')
    .add(b'#');

/// The options the `Any` pool opens (or creates) the SQLite file at `path`
/// with. They travel as a URL, which may read a path differently (a
/// relative path's first folder becomes the URL's host), so the URL is read
/// back as the SQLite driver will and must name `path` itself.
fn sqlite_options(path: &Path) -> CatalogResult<AnyConnectOptions> {
    let url = format!(
        "sqlite://{}?mode=rwc",
        percent_encoding::utf8_percent_encode(&path.to_string_lossy(), SQLITE_PATH_ESCAPES)
    );
    let options = AnyConnectOptions::from_str(&url)?;
    let read_back = SqliteConnectOptions::try_from(&options)?;
    if read_back.get_filename() != path {
        return Err(CatalogError::new(format!(
            "{} would reach SQLite as {}: give the catalog as an absolute path of UTF-8 characters",
            path.display(),
            read_back.get_filename().display()
        )));
    }
    Ok(options)
}

/// Whether a start can open the SQLite catalog at `path`, changing
/// nothing: the path survives the driver's URL, and a file already there
/// is a database (opened read-only and immutable, so SQLite writes no
/// journal or lock beside it). Whether its folder is writable is the
/// caller's check, as for every folder a start writes to.
pub async fn check_sqlite(path: &Path) -> CatalogResult<()> {
    sqlite_options(path)?;
    if path.symlink_metadata().is_err() {
        return Ok(());
    }
    let mut connection = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .immutable(true)
        .connect()
        .await?;
    connection
        .fetch_one("SELECT count(*) FROM sqlite_master")
        .await?;
    connection.close().await?;
    Ok(())
}

/// Writes one change (anything but an access) within the batch's
/// transaction.
async fn write_change(conn: &mut sqlx::AnyConnection, change: &CatalogEvent) -> CatalogResult<()> {
    match change {
        CatalogEvent::Stored(row) => STORE_ARTIFACTS.write(conn, &[row]).await?,
        CatalogEvent::Removed { remote, path } => {
            sqlx::query("DELETE FROM artifacts WHERE remote = $1 AND path = $2")
                .bind(remote)
                .bind(path)
                .execute(&mut *conn)
                .await?;
        }
        CatalogEvent::Entry(row) => STORE_ENTRIES.write(conn, &[row]).await?,
        CatalogEvent::EntryRemoved { id } => remove(conn, &[*id]).await?,
        CatalogEvent::References { manifest, targets } => {
            for target in targets {
                sqlx::query(
                    "INSERT INTO refs (manifest, target) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(hex_id(*manifest))
                .bind(hex_id(*target))
                .execute(&mut *conn)
                .await?;
            }
        }
        CatalogEvent::Flushed(remote) => flush(conn, remote.as_deref()).await?,
        CatalogEvent::EntryAccessed { .. } | CatalogEvent::Served(_) => {}
    }
    Ok(())
}

/// Audit rows are written in bulk, this many per statement (9 parameters
/// each).
const AUDIT_CHUNK: usize = 256;

/// What tells audit rows apart within a batch.
#[derive(PartialEq, Eq, Hash)]
struct AuditKey<'a> {
    remote: &'a str,
    path: &'a str,
    client: Option<&'a str>,
    token: Option<&'a str>,
    user_agent: Option<&'a str>,
    sha256: Option<&'a str>,
}

impl<'a> AuditKey<'a> {
    fn of(row: &'a AuditRow) -> AuditKey<'a> {
        AuditKey {
            remote: &row.remote,
            path: &row.path,
            client: row.client.as_deref(),
            token: row.token.as_deref(),
            user_agent: row.user_agent.as_deref(),
            sha256: row.sha256.as_deref(),
        }
    }
}

/// A multi-row insert of audit rows. A row without the sha256 of what was
/// delivered takes the one the catalog knows for its path now; one with
/// it does not look (both databases evaluate `COALESCE` lazily), which
/// at a million artifacts was two thirds of the catalog writer's work.
fn insert_audit(rows: usize, params: Params) -> String {
    format!(
        "INSERT INTO audit (at_ms, remote, path, package, version, client, token, user_agent,
                            deliveries, sha256)
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7,
                v.column8, v.column9,
                COALESCE(v.column10, (SELECT a.sha256 FROM artifacts a
                                      WHERE a.remote = v.column2 AND a.path = v.column3))
         FROM (VALUES {}) AS v",
        value_rows(rows, 10, params)
    )
}

/// The audit rows of a batch, those alike in everything but time as one
/// (a hot artifact served thousands of times a second to one client is a
/// row per batch, not thousands), in chunks.
async fn write_audit(tx: &mut sqlx::AnyConnection, rows: &[&AuditRow]) -> CatalogResult<()> {
    let mut merged: Vec<AuditRow> = Vec::new();
    let mut at: std::collections::HashMap<AuditKey<'_>, usize> = std::collections::HashMap::new();
    for row in rows {
        match at.get(&AuditKey::of(row)) {
            Some(&i) => {
                merged[i].deliveries += row.deliveries;
                merged[i].at_ms = merged[i].at_ms.min(row.at_ms);
            }
            None => {
                at.insert(AuditKey::of(row), merged.len());
                merged.push((*row).clone());
            }
        }
    }
    for chunk in merged.chunks(AUDIT_CHUNK) {
        let statement = insert_audit(chunk.len(), Params::of(&*tx));
        let mut query = sqlx::query(&statement);
        for row in chunk {
            query = query
                .bind(row.at_ms)
                .bind(&row.remote)
                .bind(&row.path)
                .bind(&row.package)
                .bind(&row.version)
                .bind(&row.client)
                .bind(&row.token)
                .bind(&row.user_agent)
                .bind(row.deliveries)
                .bind(&row.sha256);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// A multi-row upsert of one table: `INSERT INTO {into} VALUES …
/// ON CONFLICT {on_conflict}`, each row bound by `bind` as `width`
/// parameters.
struct Upsert<T> {
    into: &'static str,
    on_conflict: &'static str,
    width: usize,
    bind: for<'q> fn(AnyQuery<'q>, &'q T) -> AnyQuery<'q>,
}

impl<T> Upsert<T> {
    /// Writes `rows`, [`UPSERT_CHUNK`] per statement.
    async fn write(&self, conn: &mut sqlx::AnyConnection, rows: &[&T]) -> CatalogResult<()> {
        for chunk in rows.chunks(UPSERT_CHUNK) {
            let statement = format!(
                "INSERT INTO {} VALUES {} ON CONFLICT {}",
                self.into,
                value_rows(chunk.len(), self.width, Params::of(conn)),
                self.on_conflict
            );
            let query = chunk.iter().fold(sqlx::query(&statement), |query, row| {
                (self.bind)(query, row)
            });
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

const STORE_ARTIFACTS: Upsert<ArtifactRow> = Upsert {
    into: "artifacts (remote, path, size, sha256, content_type, fetched_at, last_access, local)",
    on_conflict: "(remote, path) DO UPDATE SET size = excluded.size,
        sha256 = excluded.sha256, content_type = excluded.content_type,
        fetched_at = excluded.fetched_at, last_access = excluded.last_access,
        local = excluded.local",
    width: 8,
    bind: |query, row| {
        query
            .bind(&row.remote)
            .bind(&row.path)
            .bind(row.size)
            .bind(&row.sha256)
            .bind(&row.content_type)
            .bind(row.fetched_at)
            .bind(row.last_access)
            .bind(row.local)
    },
};

const STORE_ENTRIES: Upsert<EntryRow> = Upsert {
    into: "entries (id, remote, path, body, size, flags, last_access, record)",
    on_conflict: "(id) DO UPDATE SET remote = excluded.remote,
        path = excluded.path, body = excluded.body, size = excluded.size,
        flags = excluded.flags, last_access = excluded.last_access,
        record = excluded.record",
    width: 8,
    bind: |query, row| {
        query
            .bind(hex_id(row.id))
            .bind(&row.remote)
            .bind(&row.path)
            .bind(hex_id(row.body))
            .bind(row.size)
            .bind(row.flags as i64)
            .bind(row.last_access)
            .bind(row.record as i64)
    },
};

/// Consecutive stores, or consecutive entry removals, of a batch: written
/// as multi-row statements. A run ends where an event of another kind
/// comes, so a row stored after its removal (or removed after its store)
/// ends as the batch's order says. A row stored twice in one run keeps
/// its last version only: PostgreSQL refuses an upsert that touches a row
/// twice, and the last one wins anyway.
#[derive(Default)]
struct PendingRun<'a> {
    artifacts: Vec<&'a ArtifactRow>,
    entries: Vec<&'a EntryRow>,
    removed: Vec<u128>,
}

impl<'a> PendingRun<'a> {
    /// Whether the run must be written before `event`: it is not of the
    /// run's kind.
    fn ends_before(&self, event: &CatalogEvent) -> bool {
        let storing = !self.artifacts.is_empty() || !self.entries.is_empty();
        let removing = !self.removed.is_empty();
        match event {
            CatalogEvent::Stored(_) | CatalogEvent::Entry(_) => removing,
            CatalogEvent::EntryRemoved { .. } => storing,
            _ => storing || removing,
        }
    }

    /// Takes `event` into the run if it is a store or an entry's removal;
    /// `false` if it is neither.
    fn take(&mut self, event: &'a CatalogEvent) -> bool {
        match event {
            CatalogEvent::Stored(row) => self.artifacts.push(row),
            CatalogEvent::Entry(row) => self.entries.push(row),
            CatalogEvent::EntryRemoved { id } => self.removed.push(*id),
            _ => return false,
        }
        true
    }

    async fn write(&mut self, conn: &mut sqlx::AnyConnection) -> CatalogResult<()> {
        let artifacts = last_of_each(std::mem::take(&mut self.artifacts), |row| {
            (row.remote.as_str(), row.path.as_str())
        });
        let entries = last_of_each(std::mem::take(&mut self.entries), |row| row.id);
        STORE_ARTIFACTS.write(conn, &artifacts).await?;
        STORE_ENTRIES.write(conn, &entries).await?;
        remove(conn, &std::mem::take(&mut self.removed)).await
    }
}

/// Removes the entries `ids` (see [`remove_entries`]).
async fn remove(conn: &mut sqlx::AnyConnection, ids: &[u128]) -> CatalogResult<()> {
    for chunk in ids.chunks(REMOVE_CHUNK) {
        let hex: Vec<String> = chunk.iter().map(|id| hex_id(*id)).collect();
        for statement in remove_entries(chunk.len(), Params::of(conn)) {
            let mut query = sqlx::query(&statement);
            for id in &hex {
                query = query.bind(id);
            }
            query.execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// `rows` without those a later row of the same key replaces, in order.
fn last_of_each<'a, T, K: Eq + std::hash::Hash>(
    rows: Vec<&'a T>,
    key: impl Fn(&'a T) -> K,
) -> Vec<&'a T> {
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    let mut kept: Vec<&T> = rows
        .into_iter()
        .rev()
        .filter(|row| seen.insert(key(row)))
        .collect();
    kept.reverse();
    kept
}

/// Forgets the cached rows of `remote` (or of every remote); uploads to
/// local repositories stay.
async fn flush(conn: &mut sqlx::AnyConnection, remote: Option<&str>) -> CatalogResult<()> {
    match remote {
        Some(remote) => {
            sqlx::query("DELETE FROM entries WHERE remote = $1")
                .bind(remote)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM artifacts WHERE remote = $1 AND NOT local")
                .bind(remote)
                .execute(&mut *conn)
                .await?;
        }
        None => {
            sqlx::query("DELETE FROM entries")
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM refs").execute(&mut *conn).await?;
            sqlx::query("DELETE FROM artifacts WHERE NOT local")
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

#[async_trait]
impl Catalog for SqlCatalog {
    async fn apply(&self, events: &[CatalogEvent]) -> CatalogResult<()> {
        let mut tx = self.pool.begin().await?;
        // Accesses only ever raise `last_access` of rows that exist, so
        // applying them after the batch's other events changes nothing.
        let mut entry_accesses = Vec::new();
        let mut served = Vec::new();
        let mut pending = PendingRun::default();
        for event in events {
            match event {
                CatalogEvent::Served(row) => served.push(row),
                CatalogEvent::EntryAccessed { id, at_ms, hits } => {
                    entry_accesses.push((hex_id(*id), *at_ms, i64::from(*hits)));
                }
                change => {
                    if pending.ends_before(change) {
                        pending.write(&mut tx).await?;
                    }
                    if !pending.take(change) {
                        write_change(&mut tx, change).await?;
                    }
                }
            }
        }
        pending.write(&mut tx).await?;
        for chunk in entry_accesses.chunks(ACCESS_CHUNK) {
            let statement = access_entries(chunk.len(), Params::of(&tx));
            let mut query = sqlx::query(&statement);
            for (id, at_ms, hits) in chunk {
                query = query.bind(id).bind(at_ms).bind(hits);
            }
            query.execute(&mut *tx).await?;
        }
        write_audit(&mut tx, &served).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list(&self, remote: &str) -> CatalogResult<Vec<ArtifactRow>> {
        // SQLite has no boolean type `Any` maps; both read `local` as 0 or 1.
        let rows = sqlx::query(concat!(
            "SELECT a.remote, a.path, a.size, a.sha256, a.content_type, a.fetched_at, ",
            last_use!(),
            ", CAST(a.local AS INTEGER) AS local
             FROM artifacts a LEFT JOIN entries e ON e.remote = a.remote AND e.path = a.path
             WHERE a.remote = $1 GROUP BY a.remote, a.path ORDER BY a.path",
        ))
        .bind(remote)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(ArtifactRow {
                    remote: row.try_get("remote")?,
                    path: row.try_get("path")?,
                    size: row.try_get("size")?,
                    sha256: row.try_get("sha256")?,
                    content_type: row.try_get("content_type")?,
                    fetched_at: row.try_get("fetched_at")?,
                    last_access: row.try_get("last_access")?,
                    local: row.try_get::<i64, _>("local")? != 0,
                })
            })
            .collect()
    }

    async fn entries(&self) -> CatalogResult<Vec<EntryRow>> {
        let rows = sqlx::query(&format!("SELECT {ENTRY_COLUMNS} FROM entries"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(entry_row).collect()
    }

    async fn eviction_order(&self, limit: i64) -> CatalogResult<Vec<EntryRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries e
             WHERE NOT EXISTS (SELECT 1 FROM refs r JOIN entries m ON m.id = r.manifest
                               WHERE r.target = e.id)
             ORDER BY last_access, id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_row).collect()
    }

    async fn references(&self) -> CatalogResult<Vec<(u128, u128)>> {
        let rows = sqlx::query("SELECT manifest, target FROM refs")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok((
                    parse_id(row.try_get("manifest")?)?,
                    parse_id(row.try_get("target")?)?,
                ))
            })
            .collect()
    }

    async fn cached_page(&self, query: &PageQuery) -> CatalogResult<Vec<CachedRow>> {
        let (after_remote, after_path) = query.after.clone().unwrap_or_default();
        Ok(sqlx::query_as(CACHED_PAGE)
            .bind(&query.remote)
            .bind(&query.prefix)
            .bind(after_remote)
            .bind(after_path)
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn entries_of(
        &self,
        remote: &str,
        path: Option<&str>,
    ) -> CatalogResult<Vec<(u128, String)>> {
        let rows = sqlx::query(
            "SELECT id, path FROM entries WHERE remote = $1 AND ($2 IS NULL OR path = $2)",
        )
        .bind(remote)
        .bind(path)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| Ok((parse_id(row.try_get("id")?)?, row.try_get("path")?)))
            .collect()
    }

    async fn usage(&self) -> CatalogResult<Vec<UsageRow>> {
        Ok(sqlx::query_as(
            "SELECT remote, count(*) AS objects, CAST(coalesce(sum(size), 0) AS BIGINT) AS bytes
             FROM entries GROUP BY remote ORDER BY remote",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn top_entries(&self, order: TopOrder, limit: u32) -> CatalogResult<Vec<TopEntry>> {
        let order_by = match order {
            TopOrder::Largest => "size DESC",
            TopOrder::MostHit => "hits DESC",
        };
        let query = format!(
            "SELECT remote, path, size, hits FROM entries ORDER BY {order_by}, remote, path LIMIT $1"
        );
        Ok(sqlx::query_as(&query)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn audit(&self, query: &AuditQuery) -> CatalogResult<Vec<AuditRow>> {
        let mut conditions = Vec::new();
        let mut texts: Vec<&str> = Vec::new();
        let digest = query
            .digest
            .as_deref()
            .map(|d| d.strip_prefix("sha256:").unwrap_or(d));
        for (column, value) in [
            ("remote", query.remote.as_deref()),
            ("package", query.package.as_deref()),
            ("version", query.version.as_deref()),
            ("sha256", digest),
        ] {
            if let Some(value) = value {
                texts.push(value);
                conditions.push(format!("{column} = ${}", texts.len()));
            }
        }
        if query.since_ms.is_some() {
            conditions.push(format!("at_ms >= ${}", texts.len() + 1));
        }
        let filter = match conditions.is_empty() {
            true => String::new(),
            false => format!("WHERE {}", conditions.join(" AND ")),
        };
        let statement = format!(
            "SELECT at_ms, remote, path, package, version, sha256, client, token, user_agent,
                    deliveries
             FROM audit {filter} ORDER BY at_ms DESC LIMIT {}",
            query.limit.max(1)
        );
        let mut select = sqlx::query_as::<_, AuditRow>(&statement);
        for text in texts {
            select = select.bind(text);
        }
        if let Some(since) = query.since_ms {
            select = select.bind(since);
        }
        Ok(select.fetch_all(&self.pool).await?)
    }

    async fn prune_audit(&self, before_ms: i64) -> CatalogResult<u64> {
        let done = sqlx::query("DELETE FROM audit WHERE at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn ping(&self) -> CatalogResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// The columns [`entry_row`] reads.
const ENTRY_COLUMNS: &str =
    "id, remote, path, body, size, CAST(flags AS BIGINT) AS flags, last_access, record";

fn entry_row(row: &sqlx::any::AnyRow) -> CatalogResult<EntryRow> {
    let flags: i64 = row.try_get("flags")?;
    Ok(EntryRow {
        id: parse_id(row.try_get("id")?)?,
        remote: row.try_get("remote")?,
        path: row.try_get("path")?,
        body: parse_id(row.try_get("body")?)?,
        size: row.try_get("size")?,
        flags: flags as u8,
        record: row.try_get::<i64, _>("record")? as u64,
        last_access: row.try_get("last_access")?,
    })
}

fn hex_id(id: u128) -> String {
    format!("{id:032x}")
}

fn parse_id(text: String) -> CatalogResult<u128> {
    u128::from_str_radix(&text, 16)
        .map_err(|e| CatalogError::new(format!("entry id {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh SQLite catalog, in a directory that lives as long as the
    /// returned guard.
    async fn temp_catalog() -> (tempfile::TempDir, SqlCatalog) {
        let dir = tempfile::tempdir().unwrap();
        let catalog = SqlCatalog::open(&CatalogUrl::Sqlite(dir.path().join("c.db")))
            .await
            .unwrap();
        (dir, catalog)
    }

    #[test]
    fn sqlite_urls_keep_every_absolute_path_and_refuse_what_they_would_change() {
        for path in [
            "/srv/a b/c.db",
            "/srv/50%/c?.db",
            "/srv/#1/c.db",
            "/srv/ü/c.db",
        ] {
            let options = sqlite_options(Path::new(path)).unwrap();
            let read_back = SqliteConnectOptions::try_from(&options).unwrap();
            assert_eq!(read_back.get_filename(), Path::new(path));
        }
        // A URL takes `conf` for a host and drops the `..` after it.
        let error = sqlite_options(Path::new("conf/../var/catalog.db")).unwrap_err();
        assert!(
            error.to_string().contains("conf/../var/catalog.db"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn the_start_check_changes_nothing_and_knows_a_database() {
        let (dir, catalog) = temp_catalog().await;
        catalog.pool.close().await;
        let path = dir.path().join("c.db");
        let before: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        check_sqlite(&path).await.unwrap();
        check_sqlite(&dir.path().join("new.db")).await.unwrap();
        let after: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(before, after);
        std::fs::write(dir.path().join("text.db"), vec![b'x'; 4096]).unwrap();
        assert!(check_sqlite(&dir.path().join("text.db")).await.is_err());
    }

    fn row(path: &str, local: bool) -> ArtifactRow {
        ArtifactRow {
            remote: "r".into(),
            path: path.into(),
            size: 3,
            sha256: "ab".into(),
            content_type: Some("application/gzip".into()),
            fetched_at: 10,
            last_access: 10,
            local,
        }
    }

    #[tokio::test]
    async fn per_hit_and_per_eviction_statements_use_an_index() {
        let (_dir, catalog) = temp_catalog().await;
        let access = access_entries(3, Params::Anonymous);
        let removals = remove_entries(3, Params::Anonymous);
        for statement in [&access].into_iter().chain(&removals) {
            let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {statement}"))
                .fetch_all(&catalog.pool)
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<String, _>("detail"))
                .collect();
            assert!(!plan.is_empty(), "{statement}");
            // Scanning the statement's own VALUES list is the point.
            let scans_a_table = |step: &String| {
                ["artifacts", "entries", "refs"]
                    .iter()
                    .any(|table| step.starts_with(&format!("SCAN {table}")))
            };
            assert!(
                !plan.iter().any(scans_a_table),
                "{statement}\nscans a table: {plan:?}"
            );
        }
    }

    #[tokio::test]
    async fn store_access_flush_keeps_uploads() {
        let (_dir, catalog) = temp_catalog().await;
        catalog
            .apply(&[
                CatalogEvent::Stored(row("a", false)),
                CatalogEvent::Stored(row("up", true)),
                CatalogEvent::Entry(EntryRow {
                    id: 7,
                    remote: "r".into(),
                    path: "a".into(),
                    body: 7,
                    size: 3,
                    flags: 0,
                    last_access: 10_000,
                    record: 7,
                }),
                CatalogEvent::EntryAccessed {
                    id: 7,
                    at_ms: 20_500,
                    hits: 1,
                },
            ])
            .await
            .unwrap();
        let rows = catalog.list("r").await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].last_access, 20, "the entry's access, in seconds");
        assert_eq!(rows[1].last_access, 10, "an upload's time stored");
        catalog
            .apply(&[CatalogEvent::Flushed(Some("r".into()))])
            .await
            .unwrap();
        let rows = catalog.list("r").await.unwrap();
        assert_eq!(rows, vec![row("up", true)]);
    }

    /// Removals in bulk: more than one statement takes, each taking its
    /// artifact (not an upload) along, and the batch's order kept between
    /// a row's removal and its store.
    #[tokio::test]
    async fn bulk_removals_keep_uploads_and_the_batch_order() {
        let (_dir, catalog) = temp_catalog().await;
        let count = REMOVE_CHUNK as u128 * 2 + 3;
        let entry = |id: u128| {
            CatalogEvent::Entry(EntryRow {
                id,
                remote: "r".into(),
                path: format!("p{id}"),
                body: 0,
                size: 3,
                flags: 0,
                last_access: 10_000,
                record: 0,
            })
        };
        let stored = |id: u128| CatalogEvent::Stored(row(&format!("p{id}"), false));
        let mut events: Vec<_> = (0..count).flat_map(|id| [stored(id), entry(id)]).collect();
        events.push(CatalogEvent::Stored(row("up", true)));
        catalog.apply(&events).await.unwrap();

        let mut events: Vec<_> = (0..count)
            .filter(|id| id % 3 != 0)
            .map(|id| CatalogEvent::EntryRemoved { id })
            .collect();
        // Removed, then stored again; stored, then removed.
        events.extend([stored(1), entry(1), stored(3), entry(3)]);
        events.push(CatalogEvent::EntryRemoved { id: 3 });
        catalog.apply(&events).await.unwrap();

        let kept = |id: &u128| (id % 3 == 0 && *id != 3) || *id == 1;
        let entries = catalog.entries().await.unwrap();
        let mut ids: Vec<u128> = entries.iter().map(|e| e.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..count).filter(kept).collect::<Vec<_>>());
        let listed = catalog.list("r").await.unwrap();
        let mut paths: Vec<String> = listed.into_iter().map(|row| row.path).collect();
        paths.sort_unstable();
        let mut expected: Vec<String> =
            (0..count).filter(kept).map(|id| format!("p{id}")).collect();
        expected.push("up".into());
        expected.sort_unstable();
        assert_eq!(paths, expected);
    }

    #[tokio::test]
    async fn eviction_order_is_oldest_first_and_skips_what_a_cached_manifest_names() {
        let (_dir, catalog) = temp_catalog().await;
        let entry = |id: u128, last_access: i64| {
            CatalogEvent::Entry(EntryRow {
                id,
                remote: "r".into(),
                path: format!("p{id}"),
                body: id,
                size: 10,
                flags: 0,
                last_access,
                record: id as u64,
            })
        };
        let events = [
            entry(1, 400),
            entry(2, 100),
            entry(3, 300),
            entry(4, 200),
            // 2 is named by cached manifest 3; 4 by one that is not cached.
            CatalogEvent::References {
                manifest: 3,
                targets: vec![2],
            },
            CatalogEvent::References {
                manifest: 99,
                targets: vec![4],
            },
        ];
        catalog.apply(&events).await.unwrap();
        let ids = |rows: Vec<EntryRow>| rows.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(catalog.eviction_order(10).await.unwrap()), [4, 3, 1]);
        assert_eq!(ids(catalog.eviction_order(2).await.unwrap()), [4, 3]);
        let rows = catalog.entries().await.unwrap();
        assert!(rows.iter().all(|r| r.record == r.id as u64), "{rows:?}");
    }

    #[tokio::test]
    async fn top_entries_are_the_largest_or_the_most_hit() {
        let (_dir, catalog) = temp_catalog().await;
        let entry = |id: u128, size: i64| {
            CatalogEvent::Entry(EntryRow {
                id,
                remote: "r".into(),
                path: format!("p{id}"),
                body: id,
                size,
                flags: 0,
                last_access: 1,
                record: 0,
            })
        };
        let hits = |id: u128, hits: u32| CatalogEvent::EntryAccessed { id, at_ms: 5, hits };
        let events = [
            entry(1, 300),
            entry(2, 100),
            entry(3, 200),
            hits(2, 7),
            hits(3, 2),
        ];
        catalog.apply(&events).await.unwrap();
        let paths = |rows: Vec<TopEntry>| rows.into_iter().map(|r| r.path).collect::<Vec<_>>();
        let largest = catalog.top_entries(TopOrder::Largest, 2).await.unwrap();
        assert_eq!(paths(largest), ["p1", "p3"]);
        let most_hit = catalog.top_entries(TopOrder::MostHit, 3).await.unwrap();
        assert_eq!(most_hit[0].hits, 7);
        assert_eq!(paths(most_hit), ["p2", "p3", "p1"]);
    }

    /// Access reports in bulk: more rows than one statement takes, only
    /// ever raising `last_access`, and none for rows removed in the batch.
    #[tokio::test]
    async fn bulk_accesses_raise_last_access_of_existing_entries_only() {
        let (_dir, catalog) = temp_catalog().await;
        let count = ACCESS_CHUNK as u128 * 2 + 7;
        let entry = |id: u128| EntryRow {
            id,
            remote: "r".into(),
            path: format!("p{id}"),
            body: 0,
            size: 1,
            flags: 0,
            last_access: 1000,
            record: 0,
        };
        let mut events: Vec<_> = (0..count)
            .map(|id| CatalogEvent::Entry(entry(id)))
            .collect();
        events.extend((0..count).map(|id| CatalogEvent::EntryAccessed {
            id,
            at_ms: if id % 2 == 0 { 5000 + id as i64 } else { 500 },
            hits: 1,
        }));
        events.push(CatalogEvent::EntryRemoved { id: 4 });
        catalog.apply(&events).await.unwrap();
        let mut rows = catalog.entries().await.unwrap();
        rows.sort_by_key(|row| row.id);
        assert_eq!(rows.len() as u128, count - 1);
        for row in rows {
            assert_ne!(row.id, 4);
            let expected = if row.id % 2 == 0 {
                5000 + row.id as i64
            } else {
                1000
            };
            assert_eq!(row.last_access, expected, "entry {}", row.id);
        }
    }
}
