//! Reading a committed body for a hit, with seeking for range requests.
//!
//! A local file is read with `pread` at the position asked for. A body in a
//! remote store is read with one ranged request per seek, opened on the
//! first read after it, so a client's range costs the bytes of that range.

use super::body::{BodyStore, ByteStream, Opened};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use pingora::cache::storage::{HandleHit, Storage};
use pingora::cache::trace::SpanHandle;
use pingora::cache::CacheKey;
use pingora::{Error, ErrorType, Result};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use sync_wrapper::SyncWrapper;

/// Largest chunk handed to pingora per `read_body`.
const READ_CHUNK: u64 = 256 * 1024;

enum Source {
    /// A small body held in memory (it lives in its record).
    Memory(Bytes),
    File(Arc<std::fs::File>),
    Remote {
        store: Arc<dyn BodyStore>,
        key: String,
        /// The ranged read from the current position; `None` until the
        /// first read after a seek.
        stream: Option<SyncWrapper<ByteStream>>,
    },
}

/// A hit on a stored body.
pub struct BodyHit {
    source: Source,
    /// Next byte to hand out.
    position: u64,
    /// One past the last byte to hand out.
    end: u64,
    size: u64,
    /// Keeps eviction away while the body is read.
    _in_use: Option<super::evict::InUseGuard>,
}

impl BodyHit {
    pub fn new(opened: Opened, store: &Arc<dyn BodyStore>, key: &str) -> Self {
        let size = opened.size();
        let source = match opened {
            Opened::File { file, .. } => Source::File(file),
            Opened::Remote { .. } => Source::Remote {
                store: store.clone(),
                key: key.to_string(),
                stream: None,
            },
        };
        BodyHit {
            source,
            position: 0,
            end: size,
            size,
            _in_use: None,
        }
    }

    /// Marks the entry in use for as long as this hit reads it.
    pub fn in_use(mut self, guard: super::evict::InUseGuard) -> Self {
        self._in_use = Some(guard);
        self
    }
}

impl BodyHit {
    /// A hit on a body held in memory.
    pub fn memory(body: Bytes) -> Self {
        let size = body.len() as u64;
        BodyHit {
            source: Source::Memory(body),
            position: 0,
            end: size,
            size,
            _in_use: None,
        }
    }
}

fn read_error(e: impl std::fmt::Display) -> Box<Error> {
    Error::explain(ErrorType::ReadError, format!("reading cache body: {e}"))
}

#[async_trait]
impl HandleHit for BodyHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.position >= self.end {
            return Ok(None);
        }
        let want = (self.end - self.position).min(READ_CHUNK);
        let chunk = match &mut self.source {
            Source::Memory(body) => body.slice(self.position as usize..self.end as usize),
            Source::File(file) => {
                // What the page cache holds is read inline (cheaper than a
                // trip through the blocking pool); a read that would wait for
                // the disk goes to the pool, so it stalls no other request.
                let mut buf = vec![0u8; want as usize];
                let cached = super::body::fs::read_cached(file, &mut buf, self.position);
                match cached {
                    Some(n) if n > 0 => buf.truncate(n),
                    _ => {
                        let (file, position) = (file.clone(), self.position);
                        buf = tokio::task::spawn_blocking(move || {
                            file.read_exact_at(&mut buf, position).map(|_| buf)
                        })
                        .await
                        .map_err(read_error)?
                        .map_err(read_error)?;
                    }
                }
                Bytes::from(buf)
            }
            Source::Remote { store, key, stream } => {
                if stream.is_none() {
                    let range = store
                        .read_range(key, self.position..self.end)
                        .await
                        .map_err(read_error)?;
                    *stream = Some(SyncWrapper::new(range));
                }
                let next = stream.as_mut().map(|s| s.get_mut().next());
                match next {
                    Some(next) => match next.await {
                        Some(chunk) => chunk.map_err(read_error)?,
                        None => return Err(read_error("body ended before its record's size")),
                    },
                    None => return Err(read_error("no body stream")),
                }
            }
        };
        let take = (chunk.len() as u64).min(self.end - self.position);
        self.position += take;
        Ok(Some(chunk.slice(..take as usize)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let start = start as u64;
        let end = end.map(|e| e as u64).unwrap_or(self.size).min(self.size);
        if start > end {
            return Error::e_explain(ErrorType::InternalError, "seek start past end");
        }
        if let Source::Remote { stream, .. } = &mut self.source {
            *stream = None;
        }
        self.position = start;
        self.end = end;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.size as usize
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn std::any::Any + Send + Sync) {
        self
    }
}
