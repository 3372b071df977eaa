//! A body store over any `object_store` backend (in-memory for the contract
//! tests; S3 and its kin for a cluster).
//!
//! Every request is bounded: the first answer of each within the store's
//! timeout, each further chunk of a read within it too (a stalled stream
//! is an error, not a hang), a part upload within [`part_timeout`]. There
//! is no bound on a whole read, which lasts as long as the client reading
//! a large body takes.
//!
//! A write is a streaming multipart upload, completed only on commit and
//! aborted otherwise, so the store never holds a partial object under its
//! key. Readers of a fill in progress read a local spool file written
//! alongside the upload: an anonymous temporary file, which the kernel
//! removes when the last handle closes, so a crash leaves no local bytes
//! behind.

use super::{object_error, BodyStore, BodyWrite, ByteStream, Listed, Opened};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};
use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use sync_wrapper::SyncWrapper;

/// How many upload parts may be in flight per writer before `write`
/// waits: the bound on memory held per concurrent fill.
const MAX_PARTS_IN_FLIGHT: usize = 2;

pub struct ObjectBodyStore {
    store: Arc<dyn ObjectStore>,
    part_size: usize,
    spool_dir: PathBuf,
    timeout: Duration,
}

impl ObjectBodyStore {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        part_size: usize,
        spool_dir: PathBuf,
        timeout: Duration,
    ) -> Self {
        ObjectBodyStore {
            store,
            part_size,
            spool_dir,
            timeout,
        }
    }

    async fn within<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> io::Result<T> {
        within(self.timeout, what, request).await
    }
}

/// A part of `part_size` bytes may take this long: a slow link is not a
/// dead one, but a stalled upload must fail the fill, not hold it.
fn part_timeout(timeout: Duration) -> Duration {
    (timeout * 6).max(Duration::from_secs(60))
}

async fn within<T>(
    limit: Duration,
    what: &str,
    request: impl std::future::Future<Output = object_store::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(limit, request).await {
        Ok(result) => result.map_err(object_error),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("object store {what}: no answer within {limit:?}"),
        )),
    }
}

fn object_path(key: &str) -> io::Result<ObjectPath> {
    ObjectPath::parse(key).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

struct ObjectWrite {
    upload: Option<SyncWrapper<WriteMultipart>>,
    spool: Arc<File>,
    part_timeout: Duration,
    /// Bytes of the spool handed to the upload by [`BodyWrite::advance`].
    sent: u64,
}

impl ObjectWrite {
    /// Hands `data` to the upload once it has room for another part.
    async fn put(&mut self, data: Bytes) -> io::Result<()> {
        let upload = self
            .upload
            .as_mut()
            .map(SyncWrapper::get_mut)
            .ok_or_else(|| io::Error::other("upload already closed"))?;
        within(
            self.part_timeout,
            "part upload",
            upload.wait_for_capacity(MAX_PARTS_IN_FLIGHT),
        )
        .await?;
        upload.put(data);
        Ok(())
    }
}

#[async_trait]
impl BodyWrite for ObjectWrite {
    async fn write(&mut self, data: Bytes) -> io::Result<()> {
        (&*self.spool).write_all(&data)?;
        self.put(data).await
    }

    async fn commit(mut self: Box<Self>) -> io::Result<()> {
        let upload = self
            .upload
            .take()
            .ok_or_else(|| io::Error::other("upload already closed"))?;
        within(
            self.part_timeout,
            "completing an upload",
            upload.into_inner().finish(),
        )
        .await
        .map(|_| ())
    }

    fn local_file(&self) -> Arc<File> {
        self.spool.clone()
    }

    /// Uploads the spool's bytes up to `to`, read back from the page cache.
    async fn advance(&mut self, to: u64) -> io::Result<()> {
        const PIECE: u64 = 1024 * 1024;
        while self.sent < to {
            let len = (to - self.sent).min(PIECE) as usize;
            let mut piece = vec![0u8; len];
            self.spool.read_exact_at(&mut piece, self.sent)?;
            self.put(Bytes::from(piece)).await?;
            self.sent += len as u64;
        }
        Ok(())
    }
}

impl Drop for ObjectWrite {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = upload.into_inner().abort().await;
                });
            }
        }
    }
}

#[async_trait]
impl BodyStore for ObjectBodyStore {
    async fn create(&self, key: &str) -> io::Result<Box<dyn BodyWrite>> {
        let path = object_path(key)?;
        let upload = self
            .within("starting an upload", self.store.put_multipart(&path))
            .await?;
        let spool = tempfile::tempfile_in(&self.spool_dir)?;
        Ok(Box::new(ObjectWrite {
            upload: Some(SyncWrapper::new(WriteMultipart::new_with_chunk_size(
                upload,
                self.part_size,
            ))),
            spool: Arc::new(spool),
            part_timeout: part_timeout(self.timeout),
            sent: 0,
        }))
    }

    async fn open(&self, key: &str) -> io::Result<Option<Opened>> {
        let path = object_path(key)?;
        match self.within("head", self.store.head(&path)).await {
            Ok(meta) => Ok(Some(Opened::Remote { size: meta.size })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn read_range(&self, key: &str, range: Range<u64>) -> io::Result<ByteStream> {
        if range.start >= range.end {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        let path = object_path(key)?;
        let result = self
            .within("ranged read", self.store.get_opts(&path, options))
            .await?;
        let limit = self.timeout;
        let chunks = result.into_stream().map_err(object_error);
        Ok(stalls_fail(chunks.boxed(), limit))
    }

    async fn put(&self, key: &str, value: Bytes) -> io::Result<()> {
        let path = object_path(key)?;
        self.within("put", self.store.put(&path, PutPayload::from(value)))
            .await
            .map(|_| ())
    }

    async fn get_small(&self, key: &str) -> io::Result<Option<Bytes>> {
        let path = object_path(key)?;
        let read = async { self.store.get(&path).await?.bytes().await };
        match self.within("get", read).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, key: &str) -> io::Result<bool> {
        let path = object_path(key)?;
        // Object stores delete idempotently; ask first to answer "existed".
        match self.within("head", self.store.head(&path)).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        match self.within("delete", self.store.delete(&path)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> io::Result<Vec<String>> {
        let prefix = object_path(prefix)?;
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
            .map_err(object_error)?;
        Ok(deleted.into_iter().map(|path| path.to_string()).collect())
    }

    async fn list(&self, prefix: &str) -> io::Result<Vec<Listed>> {
        let prefix = object_path(prefix)?;
        self.store
            .list(Some(&prefix))
            .map_ok(|meta| Listed {
                key: meta.location.to_string(),
                size: meta.size,
            })
            .try_collect()
            .await
            .map_err(object_error)
    }

    /// Spools are anonymous files and uploads are aborted on drop; what a
    /// crashed process leaves in the bucket is for the bucket's lifecycle
    /// rule (multipart uploads are listed by the store, not by this trait).
    async fn sweep_staging(&self, _min_age: Duration) -> io::Result<u64> {
        Ok(0)
    }
}

/// `chunks`, failing if the next chunk takes longer than `limit` to come.
fn stalls_fail(chunks: ByteStream, limit: Duration) -> ByteStream {
    futures::stream::unfold(Some(chunks), move |chunks| async move {
        let mut chunks = chunks?;
        match tokio::time::timeout(limit, chunks.next()).await {
            Ok(Some(chunk)) => Some((chunk, Some(chunks))),
            Ok(None) => None,
            Err(_) => Some((
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("object store read: stalled for {limit:?}"),
                )),
                None,
            )),
        }
    })
    .boxed()
}
