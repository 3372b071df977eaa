//! A complete body becoming an entry: its record, room for it within the
//! bounds, then its catalog row. Shared by fills streamed whole
//! ([`super::miss`]) and resumable ones ([`super::large`]).

use super::layout::EntryLocation;
use super::record::{BodyInfo, Record, StoredMeta};
use super::{unix_now, CacheStorage};
use crate::catalog::{ArtifactRow, CatalogEvent};
use bytes::Bytes;
use pingora::Result;

/// A complete body about to become an entry.
pub(super) struct NewBody {
    pub meta: StoredMeta,
    pub content_type: Option<String>,
    /// Empty when the body is inline.
    pub body_key: String,
    /// The inline body, as the chunks a fill received.
    pub inline_body: Option<Vec<Bytes>>,
    pub size: u64,
    pub sha256: String,
}

/// Commits a complete body (already in the body store, or inline): its
/// record, room for it within the bounds, then its catalog row. A body
/// whose record cannot be written is removed again.
pub(super) async fn commit_body(
    storage: &'static CacheStorage,
    location: &EntryLocation,
    path: &str,
    body: NewBody,
) -> Result<()> {
    let fetched_at = unix_now();
    let record = Record {
        meta: body.meta,
        body: BodyInfo {
            body_key: body.body_key.clone(),
            size: body.size,
            sha256: body.sha256.clone(),
            remote: location.remote.clone(),
            path: path.to_string(),
            fetched_at,
        },
        inline_body: None,
        fast_head: Default::default(),
    };
    storage
        .make_room(super::evict::Incoming::Entry { bytes: body.size })
        .await;
    if let Err(e) = storage.commit(location, record, body.inline_body).await {
        if !body.body_key.is_empty() {
            // The body is complete but unreferenced: remove it.
            let _ = storage.bodies.delete(&body.body_key).await;
        }
        return Err(e);
    }
    storage.catalog.record(CatalogEvent::Stored(ArtifactRow {
        remote: location.remote.clone(),
        path: path.to_string(),
        size: body.size as i64,
        sha256: body.sha256,
        content_type: body.content_type,
        fetched_at: fetched_at as i64,
        last_access: fetched_at as i64,
        local: false,
    }));
    Ok(())
}
