//! Streaming a cache fill into the body store and committing it.
//!
//! The body goes to the store's writer as it arrives while its sha256 and
//! length are computed; each write is announced to the fill's followers
//! ([`super::fills`]). `finish` commits only a body whose length matches
//! the upstream's `Content-Length`; any other end (upstream cut, error,
//! over-long body) drops the handler, which discards the write and fails
//! the followers, so nothing partial is ever visible or served as whole.

use super::body::BodyWrite;
use super::fills::FillHandle;
use super::layout::EntryLocation;
use super::record::{BodyInfo, Record};
use super::{internal, unix_now, CacheStorage};
use crate::catalog::{ArtifactRow, CatalogEvent};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::cache::storage::{HandleMiss, MissFinishType};
use pingora::cache::CacheMeta;
use pingora::{Error, ErrorType, Result};
use sha2::{Digest, Sha256};

pub struct BodyMiss {
    storage: &'static CacheStorage,
    location: EntryLocation,
    path: String,
    meta_internal: Vec<u8>,
    meta_header: Vec<u8>,
    content_type: Option<String>,
    expected_size: Option<u64>,
    body_key: String,
    writer: Option<Box<dyn BodyWrite>>,
    fill: Option<FillHandle>,
    tag: [u8; 8],
    hasher: Sha256,
    written: u64,
    /// The body while it is small enough to live in its record.
    small: Option<BytesMut>,
    /// The entry's index flags, from its meta.
    flags: u8,
}

impl BodyMiss {
    pub async fn start(
        storage: &'static CacheStorage,
        location: EntryLocation,
        path: String,
        meta: &CacheMeta,
    ) -> Result<BodyMiss> {
        let (meta_internal, meta_header) = meta.serialize()?;
        let header = |name: http::header::HeaderName| {
            meta.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let expected_size = header(http::header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let body_key = location.new_body_key();
        let writer = storage
            .bodies
            .create(&body_key)
            .await
            .map_err(|e| internal("starting cache body", e))?;
        let fill = storage
            .fills
            .start(location.id(), meta, writer.local_file());
        Ok(BodyMiss {
            storage,
            path,
            meta_internal,
            meta_header,
            content_type: header(http::header::CONTENT_TYPE),
            expected_size,
            body_key,
            writer: Some(writer),
            tag: fill.tag_bytes(),
            fill: Some(fill),
            hasher: Sha256::new(),
            written: 0,
            small: (storage.settings.memory_body_max > 0).then(BytesMut::new),
            flags: super::flags_of(meta),
            location,
        })
    }

    fn abandoned(&self, why: &str) {
        log::info!(
            "cache fill of {}/{} abandoned after {} bytes ({why}); nothing committed",
            self.location.remote,
            self.path,
            self.written
        );
    }
}

#[async_trait]
impl HandleMiss for BodyMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.hasher.update(&data);
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
        if let Some(small) = &mut self.small {
            if self.written <= self.storage.settings.memory_body_max {
                small.extend_from_slice(&data);
            } else {
                self.small = None;
            }
        }
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "cache fill already closed"))?;
        writer
            .write(data)
            .await
            .map_err(|e| internal("writing cache body", e))?;
        if let Some(fill) = &self.fill {
            fill.written(self.written);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
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
        let writer = self
            .writer
            .take()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "cache fill already closed"))?;
        // A small body goes into its record; its staging file is dropped
        // (followers still reading it keep their handle).
        let inline_body = self.small.take().map(BytesMut::freeze);
        if inline_body.is_some() {
            self.body_key.clear();
            drop(writer);
        } else {
            writer
                .commit()
                .await
                .map_err(|e| internal("completing cache body", e))?;
        }
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let fetched_at = unix_now();
        let record = Record {
            meta_internal: std::mem::take(&mut self.meta_internal),
            meta_header: std::mem::take(&mut self.meta_header),
            body: BodyInfo {
                body_key: self.body_key.clone(),
                size: self.written,
                sha256: sha256.clone(),
                remote: self.location.remote.clone(),
                path: self.path.clone(),
                fetched_at,
            },
            inline_body,
        };
        self.storage.make_room(self.written).await;
        if let Err(e) = self
            .storage
            .commit(&self.location, record, self.flags)
            .await
        {
            if !self.body_key.is_empty() {
                // The body is complete but unreferenced: remove it.
                let _ = self.storage.bodies.delete(&self.body_key).await;
            }
            return Err(e);
        }
        if let Some(fill) = self.fill.take() {
            fill.done(self.written);
        }
        self.storage
            .catalog
            .record(CatalogEvent::Stored(ArtifactRow {
                remote: self.location.remote.clone(),
                path: self.path.clone(),
                size: self.written as i64,
                sha256,
                content_type: self.content_type.clone(),
                fetched_at: fetched_at as i64,
                last_access: fetched_at as i64,
                local: false,
            }));
        Ok(MissFinishType::Created(self.written as usize))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(&self.tag)
    }
}

impl Drop for BodyMiss {
    fn drop(&mut self) {
        if self.writer.is_some() {
            self.abandoned("fill ended early");
        }
    }
}
