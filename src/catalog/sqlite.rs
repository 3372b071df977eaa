//! The SQLite catalog, the single-node default.

use super::{ArtifactRow, Catalog, CatalogEvent, CatalogResult};
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
                CatalogEvent::Flushed(Some(remote)) => {
                    sqlx::query("DELETE FROM artifacts WHERE remote = $1 AND NOT local")
                        .bind(remote)
                        .execute(&mut *tx)
                        .await?;
                }
                CatalogEvent::Flushed(None) => {
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

    async fn ping(&self) -> CatalogResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
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
