//! The body store: an `object_store` backend plus the few operations
//! artifactd needs from it.
//!
//! Writes always go through `object_store` (multipart uploads that become
//! visible only on `complete`, which for the filesystem is a rename), so a
//! later S3 backend is the same code. Reads of a filesystem store take a
//! shortcut: the file is opened directly and read with `pread`, because a
//! cache hit must not pay for a blocking-pool round trip per chunk.

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many upload parts may be in flight per writer before `write`
/// waits: the bound on memory held per concurrent fill.
pub const MAX_PARTS_IN_FLIGHT: usize = 2;

/// A readable body: an open file for the filesystem store, a stream otherwise.
pub enum BodySource {
    /// Shared: reads use `pread`, so one open file serves concurrent hits.
    File { file: Arc<std::fs::File>, size: u64 },
    Stream {
        /// `SyncWrapper`: pingora's hit handlers must be `Sync`; the stream is only used through `&mut`.
        stream: sync_wrapper::SyncWrapper<BoxStream<'static, object_store::Result<Bytes>>>,
        size: u64,
    },
}

/// The body store.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Set for the filesystem store, enabling direct reads.
    fs_root: Option<PathBuf>,
    part_size: usize,
}

impl BlobStore {
    /// A store rooted at a local directory, created if missing.
    pub fn filesystem(root: &Path) -> std::io::Result<BlobStore> {
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(std::io::Error::other)?
            .with_automatic_cleanup(true);
        Ok(BlobStore {
            store: Arc::new(store),
            fs_root: Some(root),
            part_size: 256 * 1024,
        })
    }

    /// Starts an upload that is invisible until [`WriteMultipart::finish`].
    /// Dropping or aborting it leaves nothing behind.
    pub async fn start_upload(&self, key: &str) -> object_store::Result<WriteMultipart> {
        let upload = self.store.put_multipart(&ObjectPath::parse(key)?).await?;
        Ok(WriteMultipart::new_with_chunk_size(upload, self.part_size))
    }

    /// Writes a small object in one atomic put.
    pub async fn put(&self, key: &str, value: Vec<u8>) -> object_store::Result<()> {
        self.store
            .put(&ObjectPath::parse(key)?, PutPayload::from(value))
            .await
            .map(|_| ())
    }

    /// Reads a small object whole; `None` when absent.
    pub async fn get_small(&self, key: &str) -> object_store::Result<Option<Bytes>> {
        match self.store.get(&ObjectPath::parse(key)?).await {
            Ok(result) => result.bytes().await.map(Some),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens a body for reading; `None` when absent.
    pub async fn open(&self, key: &str) -> object_store::Result<Option<BodySource>> {
        let path = ObjectPath::parse(key)?;
        if let Some(root) = &self.fs_root {
            let full = root.join(path.as_ref());
            return match std::fs::File::open(&full) {
                Ok(file) => {
                    let size = file.metadata().map_err(|e| io_error(&full, e))?.len();
                    Ok(Some(BodySource::File {
                        file: Arc::new(file),
                        size,
                    }))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_error(&full, e)),
            };
        }
        match self.store.get(&path).await {
            Ok(result) => {
                let size = result.meta.size;
                Ok(Some(BodySource::Stream {
                    stream: sync_wrapper::SyncWrapper::new(result.into_stream()),
                    size,
                }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes one object; absent objects are not an error.
    pub async fn delete(&self, key: &str) -> object_store::Result<bool> {
        match self.store.delete(&ObjectPath::parse(key)?).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes everything under `prefix`, returning the deleted keys.
    pub async fn delete_prefix(&self, prefix: &str) -> object_store::Result<Vec<String>> {
        let prefix = ObjectPath::parse(prefix)?;
        let locations = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .boxed();
        let deleted: Vec<_> = self
            .store
            .delete_stream(locations)
            .try_collect()
            .await
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(Vec::new()),
                e => Err(e),
            })?;
        Ok(deleted.into_iter().map(|path| path.to_string()).collect())
    }

    /// Writes and removes a probe object: proves the store takes writes.
    pub async fn check_writable(&self) -> object_store::Result<()> {
        // At the top level, so that an unwritable root is noticed at once.
        let key = format!("health-probe-{}", uuid::Uuid::new_v4());
        self.put(&key, b"ok".to_vec()).await?;
        self.delete(&key).await.map(|_| ())
    }
}

fn io_error(path: &Path, source: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("{}: {source}", path.display()).into(),
    }
}
