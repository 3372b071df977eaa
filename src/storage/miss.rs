//! Streaming a cache fill into the body store and committing it.
//!
//! The body goes to a multipart upload as it arrives (memory held: at most
//! [`MAX_PARTS_IN_FLIGHT`] parts) while its sha256 and length are computed.
//! `finish` commits only a body whose length matches the upstream's
//! `Content-Length`; any other end (upstream cut, client abort, error)
//! drops the handler, which aborts the upload, so nothing partial is ever
//! visible.

use super::blob::MAX_PARTS_IN_FLIGHT;
use super::record::{BodyInfo, Record};
use super::{internal, unix_now, CacheStorage, EntryLocation};
use crate::catalog::{ArtifactRow, CatalogEvent};
use async_trait::async_trait;
use bytes::Bytes;
use object_store::WriteMultipart;
use pingora::cache::storage::{HandleMiss, MissFinishType};
use pingora::cache::CacheMeta;
use pingora::{Error, ErrorType, Result};
use sha2::{Digest, Sha256};
use sync_wrapper::SyncWrapper;

pub struct BodyMiss {
    storage: &'static CacheStorage,
    location: EntryLocation,
    path: String,
    meta_internal: Vec<u8>,
    meta_header: Vec<u8>,
    content_type: Option<String>,
    expected_size: Option<u64>,
    body_key: String,
    /// `SyncWrapper`: miss handlers must be `Sync`; the upload is only used through `&mut`.
    upload: Option<SyncWrapper<WriteMultipart>>,
    hasher: Sha256,
    written: u64,
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
        let upload = storage
            .blobs
            .start_upload(&body_key)
            .await
            .map_err(|e| internal("starting cache body upload", e))?;
        Ok(BodyMiss {
            storage,
            path,
            meta_internal,
            meta_header,
            content_type: header(http::header::CONTENT_TYPE),
            expected_size,
            body_key,
            upload: Some(SyncWrapper::new(upload)),
            hasher: Sha256::new(),
            written: 0,
            location,
        })
    }

    fn upload(&mut self) -> Result<&mut WriteMultipart> {
        self.upload
            .as_mut()
            .map(SyncWrapper::get_mut)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "cache upload already closed"))
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
        let upload = self.upload()?;
        upload
            .wait_for_capacity(MAX_PARTS_IN_FLIGHT)
            .await
            .map_err(|e| internal("writing cache body", e))?;
        upload.put(data);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        if let Some(expected) = self.expected_size {
            if expected != self.written {
                // Dropping `self` aborts the upload.
                return Error::e_explain(
                    ErrorType::InternalError,
                    format!(
                        "upstream body is {} bytes, Content-Length said {expected}",
                        self.written
                    ),
                );
            }
        }
        let upload = self.upload.take().ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "cache upload already closed")
        })?;
        upload
            .into_inner()
            .finish()
            .await
            .map_err(|e| internal("completing cache body", e))?;
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
        };
        if let Err(e) = self.storage.commit(&self.location, record).await {
            // The body is complete but unreferenced: remove it.
            let _ = self.storage.blobs.delete(&self.body_key).await;
            return Err(e);
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
}

impl Drop for BodyMiss {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            log::info!(
                "cache fill of {}/{} abandoned after {} bytes; nothing committed",
                self.location.remote,
                self.path,
                self.written
            );
            self.storage.runtime.spawn(async move {
                let _ = upload.into_inner().abort().await;
            });
        }
    }
}
