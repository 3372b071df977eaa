//! The SQLite catalog, the single-node default.

use super::{ArtifactRow, Catalog, CatalogEvent, CatalogResult, EntryRow};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;
use std::path::Path;

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
            .busy_timeout(std::time::Duration::from_secs(5));
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
                    sqlx::query("UPDATE artifacts SET last_access = $1 WHERE remote = $2 AND path = $3 AND last_access < $1")
                        .bind(at)
                        .bind(remote)
                        .bind(path)
                        .execute(&mut *tx)
                        .await?;
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
                    sqlx::query(
                        "DELETE FROM artifacts WHERE NOT local AND EXISTS
                           (SELECT 1 FROM entries e WHERE e.id = $1
                              AND e.remote = artifacts.remote AND e.path = artifacts.path)",
                    )
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM entries WHERE id = $1")
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM refs WHERE manifest = $1")
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?;
                }
                CatalogEvent::EntryAccessed { id, at_ms } => {
                    sqlx::query(
                        "UPDATE entries SET last_access = $1 WHERE id = $2 AND last_access < $1",
                    )
                    .bind(at_ms)
                    .bind(hex_id(*id))
                    .execute(&mut *tx)
                    .await?;
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
        tx.commit().await?;
        Ok(())
    }

    async fn list(&self, remote: &str) -> CatalogResult<Vec<ArtifactRow>> {
        let rows = sqlx::query(
            "SELECT remote, path, size, sha256, content_type, fetched_at, last_access, local
             FROM artifacts WHERE remote = $1 ORDER BY path",
        )
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
                    local: row.try_get("local")?,
                })
            })
            .collect()
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
}
