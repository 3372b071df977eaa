//! The SQLite catalog, the single-node default.

use super::{
    ArtifactRow, CachedRow, Catalog, CatalogEvent, CatalogResult, EntryRow, PageQuery, UsageRow,
};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;
use std::path::Path;

/// Access reports are applied in bulk, this many rows per statement: each
/// statement is a round trip to sqlx's database thread, and a sweep over
/// many cached objects reports thousands of accesses a second.
const ACCESS_CHUNK: usize = 256;

/// The statements run for access reports and per eviction must find their
/// rows through an index, never scan a table of a million rows (tested
/// below with the query planner).
fn access_artifacts(rows: usize) -> String {
    format!(
        "UPDATE artifacts SET last_access = v.column3 FROM (VALUES {}) AS v
         WHERE artifacts.remote = v.column1 AND artifacts.path = v.column2
           AND artifacts.last_access < v.column3",
        vec!["(?, ?, ?)"; rows].join(", ")
    )
}

fn access_entries(rows: usize) -> String {
    format!(
        "UPDATE entries SET last_access = max(entries.last_access, v.column2),
           hits = entries.hits + v.column3
         FROM (VALUES {}) AS v WHERE entries.id = v.column1",
        vec!["(?, ?, ?)"; rows].join(", ")
    )
}

/// A page of the cache API: cached (not uploaded) artifacts in (remote,
/// path) order after a cursor, with the hits of their entries.
const CACHED_PAGE: &str = "
    SELECT a.remote, a.path, a.size, a.sha256, a.content_type, a.fetched_at,
           max(a.last_access, coalesce(max(e.last_access), 0) / 1000) AS last_access,
           coalesce(sum(e.hits), 0) AS hits
    FROM artifacts a LEFT JOIN entries e ON e.remote = a.remote AND e.path = a.path
    WHERE NOT a.local
      AND ($1 IS NULL OR a.remote = $1)
      AND substr(a.path, 1, length($2)) = $2
      AND (a.remote, a.path) > ($3, $4)
    GROUP BY a.remote, a.path
    ORDER BY a.remote, a.path
    LIMIT $5";

const REMOVE_ENTRY: [&str; 3] = [
    "DELETE FROM artifacts WHERE NOT local AND (remote, path) IN
       (SELECT remote, path FROM entries WHERE id = $1)",
    "DELETE FROM entries WHERE id = $1",
    "DELETE FROM refs WHERE manifest = $1",
];

pub struct SqliteCatalog {
    pool: SqlitePool,
}

impl SqliteCatalog {
    /// Opens (creating if needed) the database file and migrates it.
    pub async fn open(path: &Path) -> CatalogResult<SqliteCatalog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| super::CatalogError(format!("{}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(5))
            // A million entries make a catalog of a few hundred MiB; the
            // default 2 MiB page cache re-reads the B-tree from the OS for
            // every access report and eviction.
            .pragma("cache_size", "-32768");
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        sqlx::migrate!("src/catalog/migrations")
            .run(&pool)
            .await
            .map_err(|e| super::CatalogError(e.to_string()))?;
        Ok(SqliteCatalog { pool })
    }
}

#[async_trait]
impl Catalog for SqliteCatalog {
    async fn apply(&self, events: &[CatalogEvent]) -> CatalogResult<()> {
        let mut tx = self.pool.begin().await?;
        // Accesses only ever raise `last_access` of rows that exist, so
        // applying them after the batch's other events changes nothing.
        let mut artifact_accesses = Vec::new();
        let mut entry_accesses = Vec::new();
        for event in events {
            match event {
                CatalogEvent::Stored(row) => {
                    sqlx::query(
                        "INSERT INTO artifacts (remote, path, size, sha256, content_type, fetched_at, last_access, local)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                         ON CONFLICT (remote, path) DO UPDATE SET size = excluded.size,
                           sha256 = excluded.sha256, content_type = excluded.content_type,
                           fetched_at = excluded.fetched_at, last_access = excluded.last_access,
                           local = excluded.local",
                    )
                    .bind(&row.remote)
                    .bind(&row.path)
                    .bind(row.size)
                    .bind(&row.sha256)
                    .bind(&row.content_type)
                    .bind(row.fetched_at)
                    .bind(row.last_access)
                    .bind(row.local)
                    .execute(&mut *tx)
                    .await?;
                }
                CatalogEvent::Accessed { remote, path, at } => {
                    artifact_accesses.push((remote, path, *at));
                }
                CatalogEvent::Removed { remote, path } => {
                    sqlx::query("DELETE FROM artifacts WHERE remote = $1 AND path = $2")
                        .bind(remote)
                        .bind(path)
                        .execute(&mut *tx)
                        .await?;
                }
                CatalogEvent::Entry(row) => {
                    sqlx::query(
                        "INSERT INTO entries (id, remote, path, body, size, flags, last_access)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (id) DO UPDATE SET remote = excluded.remote,
                           path = excluded.path, body = excluded.body, size = excluded.size,
                           flags = excluded.flags, last_access = excluded.last_access",
                    )
                    .bind(hex_id(row.id))
                    .bind(&row.remote)
                    .bind(&row.path)
                    .bind(hex_id(row.body))
                    .bind(row.size)
                    .bind(row.flags as i64)
                    .bind(row.last_access)
                    .execute(&mut *tx)
                    .await?;
                }
                CatalogEvent::EntryRemoved { id } => {
                    let id = hex_id(*id);
                    for statement in REMOVE_ENTRY {
                        sqlx::query(statement).bind(&id).execute(&mut *tx).await?;
                    }
                }
                CatalogEvent::EntryAccessed { id, at_ms, hits } => {
                    entry_accesses.push((hex_id(*id), *at_ms, i64::from(*hits)));
                }
                CatalogEvent::References { manifest, targets } => {
                    for target in targets {
                        sqlx::query("INSERT INTO refs (manifest, target) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                            .bind(hex_id(*manifest))
                            .bind(hex_id(*target))
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                CatalogEvent::Flushed(Some(remote)) => {
                    sqlx::query("DELETE FROM entries WHERE remote = $1")
                        .bind(remote)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM artifacts WHERE remote = $1 AND NOT local")
                        .bind(remote)
                        .execute(&mut *tx)
                        .await?;
                }
                CatalogEvent::Flushed(None) => {
                    sqlx::query("DELETE FROM entries").execute(&mut *tx).await?;
                    sqlx::query("DELETE FROM refs").execute(&mut *tx).await?;
                    sqlx::query("DELETE FROM artifacts WHERE NOT local")
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        for chunk in artifact_accesses.chunks(ACCESS_CHUNK) {
            let statement = access_artifacts(chunk.len());
            let mut query = sqlx::query(&statement);
            for (remote, path, at) in chunk {
                query = query.bind(*remote).bind(*path).bind(at);
            }
            query.execute(&mut *tx).await?;
        }
        for chunk in entry_accesses.chunks(ACCESS_CHUNK) {
            let statement = access_entries(chunk.len());
            let mut query = sqlx::query(&statement);
            for (id, at_ms, hits) in chunk {
                query = query.bind(id).bind(at_ms).bind(hits);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list(&self, remote: &str) -> CatalogResult<Vec<ArtifactRow>> {
        Ok(sqlx::query_as(
            "SELECT remote, path, size, sha256, content_type, fetched_at, last_access, local
             FROM artifacts WHERE remote = $1 ORDER BY path",
        )
        .bind(remote)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn entries(&self) -> CatalogResult<Vec<EntryRow>> {
        let rows =
            sqlx::query("SELECT id, remote, path, body, size, flags, last_access FROM entries")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|row| {
                let flags: i64 = row.try_get("flags")?;
                Ok(EntryRow {
                    id: parse_id(row.try_get("id")?)?,
                    remote: row.try_get("remote")?,
                    path: row.try_get("path")?,
                    body: parse_id(row.try_get("body")?)?,
                    size: row.try_get("size")?,
                    flags: flags as u8,
                    last_access: row.try_get("last_access")?,
                })
            })
            .collect()
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
            "SELECT remote, count(*) AS objects, coalesce(sum(size), 0) AS bytes
             FROM entries GROUP BY remote ORDER BY remote",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn ping(&self) -> CatalogResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

fn hex_id(id: u128) -> String {
    format!("{id:032x}")
}

fn parse_id(text: String) -> CatalogResult<u128> {
    u128::from_str_radix(&text, 16)
        .map_err(|e| super::CatalogError(format!("entry id {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let dir = tempfile::tempdir().unwrap();
        let catalog = SqliteCatalog::open(&dir.path().join("c.db")).await.unwrap();
        let accesses = [access_artifacts(3), access_entries(3)];
        for statement in accesses.iter().map(String::as_str).chain(REMOVE_ENTRY) {
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
        let dir = tempfile::tempdir().unwrap();
        let catalog = SqliteCatalog::open(&dir.path().join("c.db")).await.unwrap();
        catalog
            .apply(&[
                CatalogEvent::Stored(row("a", false)),
                CatalogEvent::Stored(row("up", true)),
                CatalogEvent::Accessed {
                    remote: "r".into(),
                    path: "a".into(),
                    at: 20,
                },
            ])
            .await
            .unwrap();
        let rows = catalog.list("r").await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].last_access, 20);
        catalog
            .apply(&[CatalogEvent::Flushed(Some("r".into()))])
            .await
            .unwrap();
        let rows = catalog.list("r").await.unwrap();
        assert_eq!(rows, vec![row("up", true)]);
    }

    /// Access reports in bulk: more rows than one statement takes, only
    /// ever raising `last_access`, and none for rows removed in the batch.
    #[tokio::test]
    async fn bulk_accesses_raise_last_access_of_existing_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = SqliteCatalog::open(&dir.path().join("c.db")).await.unwrap();
        let count = ACCESS_CHUNK as u128 * 2 + 7;
        let entry = |id: u128| EntryRow {
            id,
            remote: "r".into(),
            path: format!("p{id}"),
            body: 0,
            size: 1,
            flags: 0,
            last_access: 1000,
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
