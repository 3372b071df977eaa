//! The body store: where cache bodies, records and local-repository files
//! live, behind one narrow trait.
//!
//! Two implementations: [`fs::FsBodyStore`] (the embedded default: files
//! under one root, written through a staging directory and renamed into
//! place, read with `pread`) and [`object::ObjectBodyStore`] (any
//! `object_store` backend: in-memory for the contract tests, S3 for a
//! cluster). The
//! contract both must keep is in `contract.rs`, run against each.
//!
//! Readers ask for byte ranges ([`BodyStore::read_range`]), so a store that
//! is not a local disk sends exactly the bytes a client asked for instead
//! of reading from byte 0 and discarding.

pub mod fs;
pub mod object;
pub mod s3;

#[cfg(test)]
mod contract;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// The key [`BodyStore::check_readable`] asks a remote store for: never
/// written, so the answer is a quick "absent" from a store that works.
const READ_PROBE_KEY: &str = "readiness-probe";

/// An opened body.
pub enum Opened {
    /// A local file, read with `pread`; one handle serves concurrent hits.
    File { file: Arc<std::fs::File>, size: u64 },
    /// A body in a remote store: only its size is known; bytes come from
    /// [`BodyStore::read_range`].
    Remote { size: u64 },
}

impl Opened {
    pub fn size(&self) -> u64 {
        match self {
            Opened::File { size, .. } | Opened::Remote { size } => *size,
        }
    }
}

/// A stream of body bytes.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// One object listed by [`BodyStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

#[async_trait]
pub trait BodyStore: Send + Sync + 'static {
    /// Starts writing `key`. Nothing is visible under `key` until
    /// [`BodyWrite::commit`]; a writer dropped before that leaves nothing.
    async fn create(&self, key: &str) -> io::Result<Box<dyn BodyWrite>>;

    /// Opens `key` for reading; `None` when absent.
    async fn open(&self, key: &str) -> io::Result<Option<Opened>>;

    /// The bytes of `key` in `range` (clamped to the object's end).
    async fn read_range(&self, key: &str, range: Range<u64>) -> io::Result<ByteStream>;

    /// Writes a small object whole, atomically replacing any previous one.
    async fn put(&self, key: &str, value: Bytes) -> io::Result<()>;

    /// Reads a small object whole; `None` when absent.
    async fn get_small(&self, key: &str) -> io::Result<Option<Bytes>>;

    /// Opens `key` if that needs no waiting (a local file): for a caller
    /// on the request's thread that has a slower way to fall back to.
    /// `None` says nothing about whether the object exists.
    fn open_now(&self, _key: &str) -> Option<Opened> {
        None
    }

    /// Reads a small object whole if that needs no waiting (a local file
    /// whose bytes are in the page cache): for a caller on the request's
    /// thread that has a slower way to fall back to. `None` says nothing
    /// about whether the object exists.
    fn get_small_now(&self, _key: &str) -> Option<Bytes> {
        None
    }

    /// Deletes one object. Returns whether it existed.
    async fn delete(&self, key: &str) -> io::Result<bool>;

    /// Deletes everything under `prefix` (a `/`-separated key prefix),
    /// returning the deleted keys.
    async fn delete_prefix(&self, prefix: &str) -> io::Result<Vec<String>>;

    /// Every object under `prefix`.
    #[cfg_attr(not(test), allow(dead_code))]
    async fn list(&self, prefix: &str) -> io::Result<Vec<Listed>>;

    /// Removes what writers of dead processes left behind, if older than
    /// `min_age`. Returns the bytes reclaimed.
    async fn sweep_staging(&self, min_age: Duration) -> io::Result<u64>;

    /// Proves the store answers reads, without writing anything: a local
    /// store lists its root (an unmounted or removed root fails), a remote
    /// one is asked for a key that is never written. What readiness asks.
    async fn check_readable(&self) -> io::Result<()> {
        if let Some(root) = self.local_root() {
            let root = root.to_path_buf();
            return tokio::task::spawn_blocking(move || {
                std::fs::read_dir(&root)
                    .map(|_| ())
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", root.display())))
            })
            .await
            .map_err(io::Error::other)?;
        }
        self.get_small(READ_PROBE_KEY).await.map(|_| ())
    }

    /// The directory holding the store, when it is local: its record
    /// segments live there too ([`crate::storage::segments`]).
    fn local_root(&self) -> Option<&std::path::Path> {
        None
    }

    /// Free bytes on the filesystem holding the store, when it is local.
    fn free_bytes(&self) -> Option<u64> {
        None
    }
}

/// A body being written.
#[async_trait]
pub trait BodyWrite: Send + Sync {
    async fn write(&mut self, data: Bytes) -> io::Result<()>;

    /// Makes the body visible under its key (for a store configured to
    /// fsync, only once it is on stable storage).
    async fn commit(self: Box<Self>) -> io::Result<()>;

    /// A local file holding everything written so far, which readers of a
    /// fill in progress `pread` from. It stays valid after the commit.
    fn local_file(&self) -> Arc<std::fs::File>;

    /// Says that [`Self::local_file`] holds every byte below `to`, written
    /// there at their offsets (in any order) instead of through
    /// [`Self::write`]: a store that keeps bodies elsewhere sends them on
    /// up to `to`, in order. One body uses one way of writing, not both.
    async fn advance(&mut self, to: u64) -> io::Result<()>;
}

/// Converts an `object_store` error, keeping "not found" recognisable.
pub fn object_error(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        e => io::Error::other(e),
    }
}
