//! Streaming a cache fill into the body store and committing it.
//!
//! A fill's bytes are held in memory while they fit in
//! `cache.memory_body_max` (most index files and manifests never touch a
//! file until their record is written, with the body inside it); past that
//! they go to a body-store writer, with what was held written first. Each
//! write is announced to the fill's followers ([`super::fills`]) and
//! counted; the sha256 of a spilled body is taken beside the transfer
//! ([`super::hash_beside`]), that of a body that never left memory in its
//! commit. `finish` commits only a body whose length matches the
//! upstream's `Content-Length`; any other end (upstream cut, error,
//! over-long body) drops the handler, which discards the write and fails
//! the followers, so nothing partial is ever visible or served as whole.
//!
//! A miss's fill commits in a task of its own, so that pingora hands its
//! client the last chunk without waiting for the commit: the rest of the
//! hash, the body file's rename (and fsync), the record
//! ([`super::commits`] says who waits for it instead).
//!
//! A fill starts only with room for it ([`super::room`]). When storing
//! fails anyway (the disk filled, a body store error), the fill stops
//! storing but not serving: its readers read what was stored, then the
//! rest from memory (up to [`UNSTORED_MAX`]), and at the end nothing is
//! committed. So the client of a miss gets the whole body even when the
//! cache cannot keep it.

use super::body::BodyWrite;
use super::commits::PendingCommit;
use super::fills::FillHandle;
use super::hash_beside::HashBeside;
use super::large::{LargeFill, LeaderFeed, Start};
use super::layout::EntryLocation;
use super::new_entry::{commit_body, NewBody};
use super::record::StoredMeta;
use super::room::{self, Unstored};
use super::CacheStorage;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::storage::{HandleMiss, MissFinishType};
use pingora::cache::{CacheKey, CacheMeta};
use pingora::{Error, ErrorType, Result};
use sha2::{Digest, Sha256};

/// Bytes a fill that could not store them holds in memory for its readers;
/// past it the fill fails as a cut upstream would.
pub const UNSTORED_MAX: u64 = 64 << 20;

pub struct BodyMiss {
    storage: &'static CacheStorage,
    location: EntryLocation,
    path: String,
    meta: Option<StoredMeta>,
    content_type: Option<String>,
    expected_size: Option<u64>,
    /// The body while it fits in memory; `None` once it spilled.
    held: Option<Vec<Bytes>>,
    /// The body store's writer, once the body outgrew memory.
    writer: Option<(String, Box<dyn BodyWrite>)>,
    fill: Option<FillHandle>,
    /// A resumable fill's feed ([`super::large`]): every write goes there.
    large: Option<LeaderFeed>,
    tag: [u8; 8],
    /// The sha256 of the body, once it left memory.
    hashing: Option<HashBeside>,
    written: u64,
    /// Why storing stopped, once it failed: the body is served, not kept.
    unstored: Option<String>,
    /// Bytes held in memory since storing stopped.
    unstored_bytes: u64,
    committed: bool,
    /// Commit after `finish` returns (a miss).
    commit_later: bool,
}

/// A whole body about to be committed, with what its commit needs once
/// the fill's handler is gone.
struct Completed {
    storage: &'static CacheStorage,
    location: EntryLocation,
    path: String,
    body: NewBody,
    /// A spilled body: its writer, to commit under `body.body_key`, and
    /// its hash. A body held in memory is hashed in the commit.
    spilled: Option<(Box<dyn BodyWrite>, HashBeside)>,
    fill: Option<FillHandle>,
}

impl BodyMiss {
    pub async fn start(
        storage: &'static CacheStorage,
        location: EntryLocation,
        path: String,
        meta: &CacheMeta,
    ) -> Result<BodyMiss> {
        let header = |name: http::header::HeaderName| {
            meta.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let expected_size = header(http::header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let about = super::fills::FillAbout {
            remote: location.remote.clone(),
            path: path.clone(),
            expected: expected_size,
        };
        let free = storage
            .room
            .free_for_admission(|| storage.bodies.free_bytes());
        let incoming = expected_size.unwrap_or(0);
        let admit = |still_to_write| room::admits(free, still_to_write, incoming);
        let Some(fill) = storage
            .fills
            .start_admitted(location.id(), meta, about, admit)
        else {
            storage.room.unstored(Unstored::NoRoom, || {
                format!("{} bytes of {}/{path}", incoming, location.remote)
            });
            return Error::e_explain(ErrorType::InternalError, "no room in storage for this fill");
        };
        let tag = fill.tag_bytes();
        let meta = StoredMeta::of(meta);
        let content_type = header(http::header::CONTENT_TYPE);
        // Only a fill the proxy offered as resumable, and of a known
        // length, is assembled from ranges.
        let offer =
            expected_size.and_then(|length| Some((length, storage.offers.take(location.id())?)));
        let (fill, large, meta) = match offer {
            Some((length, offer)) => {
                let start = Start {
                    location: location.clone(),
                    path: path.clone(),
                    meta,
                    content_type: content_type.clone(),
                    length,
                    fill,
                };
                let feed = LargeFill::start(storage, offer, start).await?;
                (None, Some(feed), None)
            }
            None => (Some(fill), None, Some(meta)),
        };
        Ok(BodyMiss {
            storage,
            path,
            meta,
            content_type,
            expected_size,
            held: Some(Vec::new()),
            writer: None,
            tag,
            fill,
            large,
            hashing: None,
            written: 0,
            unstored: None,
            unstored_bytes: 0,
            committed: false,
            commit_later: false,
            location,
        })
    }

    /// Commits the body after `finish` returns, as a miss does: its
    /// client gets the last chunk without waiting for it.
    pub fn committing_later(mut self) -> BodyMiss {
        self.commit_later = true;
        self
    }

    /// Moves the body from memory to a body-store writer. On an error the
    /// body is still in memory, where the fill's readers read it.
    async fn spill(&mut self) -> std::io::Result<()> {
        let body_key = self.location.new_body_key();
        let mut writer = self.storage.bodies.create(&body_key).await?;
        for chunk in self.held.iter().flatten() {
            writer.write(chunk.clone()).await?;
        }
        // Taken once it is written: a failed spill leaves it held, where
        // readers read it and the commit hashes it.
        let held = self.held.take().unwrap_or_default();
        if let Some(fill) = &self.fill {
            fill.spill(writer.local_file(), &held);
        }
        let hashing = HashBeside::start();
        for chunk in held {
            hashing.update(chunk).await;
        }
        self.hashing = Some(hashing);
        self.writer = Some((body_key, writer));
        Ok(())
    }

    /// Keeps `data`: in memory while the body fits there, else in the
    /// body store.
    async fn store(&mut self, data: &Bytes) -> std::io::Result<()> {
        if self.held.is_some() && self.written > self.storage.settings.memory_body_max {
            self.spill().await?;
        }
        match (&mut self.held, &mut self.writer) {
            (Some(held), _) => {
                held.push(data.clone());
                if let Some(fill) = &self.fill {
                    fill.append(data.clone());
                }
                Ok(())
            }
            (None, Some((_, writer))) => {
                writer.write(data.clone()).await?;
                if let Some(fill) = &self.fill {
                    fill.recent(self.written - data.len() as u64, data.clone());
                }
                Ok(())
            }
            (None, None) => Err(std::io::Error::other("cache fill already closed")),
        }
    }

    /// Storing failed: the writer's bytes so far (all but `data`) stay
    /// readable from its file, and what follows is held in memory.
    fn stop_storing(&mut self, error: std::io::Error, data_len: u64) {
        log::info!(
            "cache fill of {}/{}: storing failed after {} bytes ({error}); serving it without keeping it",
            self.location.remote,
            self.path,
            self.written - data_len
        );
        if let (Some(fill), Some(_)) = (&self.fill, &self.writer) {
            fill.keep_tail(self.written - data_len);
        }
        // Dropping the writer discards its staging file; readers hold it open.
        self.writer = None;
        self.held = None;
        self.unstored = Some(error.to_string());
    }

    /// Holds `data` in memory for the readers of a fill that stopped storing.
    fn hold_unstored(&mut self, data: Bytes) -> Result<()> {
        self.unstored_bytes += data.len() as u64;
        if self.unstored_bytes > UNSTORED_MAX {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("storing failed and {UNSTORED_MAX} bytes are held in memory already"),
            );
        }
        if let Some(fill) = &self.fill {
            fill.append(data);
        }
        Ok(())
    }

    /// Ends a fill whose body reached its readers but is not kept.
    fn finish_unstored(&mut self, why: String) -> Result<MissFinishType> {
        self.committed = true;
        let written = self.written;
        not_kept(self.storage, &self.location, &self.path, written, why);
        if let Some(fill) = self.fill.take() {
            fill.done_unstored(written);
        }
        // Nothing was created; pingora's own eviction, which would count
        // it, is not used.
        Ok(MissFinishType::Created(0))
    }
}

#[async_trait]
impl HandleMiss for BodyMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if let Some(large) = self.large.as_mut() {
            return large.write(&data).await;
        }
        self.written += data.len() as u64;
        if self
            .expected_size
            .is_some_and(|expected| self.written > expected)
        {
            return Error::e_explain(
                ErrorType::InternalError,
                "upstream body longer than Content-Length",
            );
        }
        if self.unstored.is_none() {
            match self.store(&data).await {
                // Held bytes are hashed in the commit, or at the spill.
                Ok(()) => {
                    if let Some(hashing) = &self.hashing {
                        hashing.update(data.clone()).await;
                    }
                }
                Err(e) => self.stop_storing(e, data.len() as u64),
            }
        }
        if self.unstored.is_some() {
            self.hold_unstored(data)?;
        }
        if let Some(fill) = &self.fill {
            fill.written(self.written);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        if let Some(large) = self.large.take() {
            self.committed = true;
            return Ok(MissFinishType::Created(large.finish().await? as usize));
        }
        if let Some(expected) = self.expected_size {
            if expected != self.written {
                // Dropping `self` discards the write and fails the followers.
                return Error::e_explain(
                    ErrorType::InternalError,
                    format!(
                        "upstream body is {} bytes, Content-Length said {expected}",
                        self.written
                    ),
                );
            }
        }
        if let Some(why) = self.unstored.take() {
            return self.finish_unstored(why);
        }
        // A small body goes into its record; a spilled one is committed
        // under its own key first.
        let (body_key, inline_body, spilled) =
            match (self.held.take(), self.writer.take(), self.hashing.take()) {
                (Some(held), _, _) => (String::new(), Some(held), None),
                (None, Some((body_key, writer)), Some(hashing)) => {
                    (body_key, None, Some((writer, hashing)))
                }
                _ => {
                    return Error::e_explain(ErrorType::InternalError, "cache fill already closed")
                }
            };
        self.committed = true;
        let later = self.commit_later;
        let written = self.written;
        let completed = Completed {
            storage: self.storage,
            location: self.location.clone(),
            path: std::mem::take(&mut self.path),
            body: NewBody {
                meta: self.meta.take().expect("a fill commits once"),
                content_type: self.content_type.take(),
                body_key,
                inline_body,
                size: written,
                sha256: String::new(),
            },
            spilled,
            fill: self.fill.take(),
        };
        let committed = if later {
            let pending = self.storage.commits.begin(self.location.id());
            tokio::spawn(completed.commit(Some(pending)));
            true
        } else {
            completed.commit(None).await
        };
        Ok(MissFinishType::Created(
            if committed { written } else { 0 } as usize
        ))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(&self.tag)
    }
}

impl Completed {
    /// Commits the body; whether it was kept. Either way its readers read
    /// it to its end: a body that cannot be kept was still whole.
    async fn commit(mut self, pending: Option<PendingCommit>) -> bool {
        let size = self.body.size;
        let result = match self.seal().await {
            Ok(()) => commit_body(self.storage, &self.location, &self.path, self.body)
                .await
                .map_err(|e| format!("committing: {e}")),
            Err(e) => Err(format!("completing cache body: {e}")),
        };
        if let Err(why) = &result {
            not_kept(self.storage, &self.location, &self.path, size, why);
        }
        if let Some(fill) = self.fill.take() {
            match result {
                Ok(()) => fill.done(size),
                Err(_) => fill.done_unstored(size),
            }
        }
        // Waiters for the entry go on only once its readers have their end.
        drop(pending);
        result.is_ok()
    }

    /// Takes the body's sha256 and makes a spilled body visible under its
    /// key (dropping its writer on a failure discards the file, which the
    /// fill's readers still hold open).
    async fn seal(&mut self) -> std::io::Result<()> {
        match self.spilled.take() {
            Some((writer, hashing)) => {
                self.body.sha256 = hashing.finish().await?;
                writer.commit().await
            }
            None => {
                let mut hasher = Sha256::new();
                for chunk in self.body.inline_body.iter().flatten() {
                    hasher.update(chunk);
                }
                self.body.sha256 = hex::encode(hasher.finalize());
                Ok(())
            }
        }
    }
}

/// Counts and logs a whole body its readers got but the cache did not keep.
fn not_kept(
    storage: &CacheStorage,
    location: &EntryLocation,
    path: &str,
    size: u64,
    why: impl std::fmt::Display,
) {
    storage.room.unstored(Unstored::WriteFailed, || {
        format!("{}/{path} ({size} bytes): {why}", location.remote)
    });
}

impl Drop for BodyMiss {
    fn drop(&mut self) {
        if !self.committed && self.large.is_none() {
            log::info!(
                "cache fill of {}/{} abandoned after {} bytes; nothing committed",
                self.location.remote,
                self.path,
                self.written
            );
        }
    }
}

impl CacheStorage {
    /// Stores a complete small object under `key` unless an entry exists
    /// (the tag → digest manifest cross-link). Goes through the same
    /// staging, record and catalog steps as a fill. Returns whether it
    /// stored anything.
    pub async fn store_if_absent(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        body: Bytes,
    ) -> Result<bool> {
        let location = EntryLocation::from_key(key);
        self.commits.settled(location.id()).await;
        if self.load_record(&location).await?.is_some() {
            return Ok(false);
        }
        let mut fill = self.start_fill(key, meta).await?;
        fill.write_body(body, true).await?;
        Box::new(fill).finish().await?;
        Ok(true)
    }

    /// A fill of `key` with `meta`, as a miss starts one: what the body
    /// written to it becomes once `finish` commits it.
    pub async fn start_fill(&'static self, key: &CacheKey, meta: &CacheMeta) -> Result<BodyMiss> {
        let location = EntryLocation::from_key(key);
        BodyMiss::start(self, location, super::catalog_path(key), meta).await
    }
}
