//! Reading a cached body for a hit, with seeking for range requests.

use super::blob::BodySource;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use pingora::cache::storage::{HandleHit, Storage};
use pingora::cache::trace::SpanHandle;
use pingora::cache::CacheKey;
use pingora::{Error, ErrorType, Result};
use std::os::unix::fs::FileExt;

/// Largest chunk handed to pingora per `read_body`.
const READ_CHUNK: u64 = 256 * 1024;

/// A hit on a stored body.
pub struct BodyHit {
    source: BodySource,
    /// Next byte to hand out.
    position: u64,
    /// One past the last byte to hand out.
    end: u64,
    size: u64,
    /// For streams: bytes still to skip before `position` (set by `seek`).
    stream_skip: u64,
}

impl BodyHit {
    pub fn new(source: BodySource, size: u64) -> Self {
        BodyHit {
            source,
            position: 0,
            end: size,
            size,
            stream_skip: 0,
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
        match &mut self.source {
            BodySource::File { file, .. } => {
                // A page-cache read of at most one chunk; cheaper inline than a
                // round trip through the blocking pool.
                let mut buf = vec![0u8; want as usize];
                let mut filled = 0;
                while filled < buf.len() {
                    let n = file
                        .read_at(&mut buf[filled..], self.position + filled as u64)
                        .map_err(read_error)?;
                    if n == 0 {
                        return Err(read_error("body shorter than its record"));
                    }
                    filled += n;
                }
                self.position += want;
                Ok(Some(Bytes::from(buf)))
            }
            BodySource::Stream { stream, .. } => loop {
                let Some(chunk) = stream.get_mut().next().await else {
                    return Err(read_error("body stream ended early"));
                };
                let mut chunk = chunk.map_err(read_error)?;
                if self.stream_skip > 0 {
                    let skip = self.stream_skip.min(chunk.len() as u64);
                    self.stream_skip -= skip;
                    chunk = chunk.slice(skip as usize..);
                }
                if chunk.is_empty() {
                    continue;
                }
                let take = (chunk.len() as u64).min(self.end - self.position);
                self.position += take;
                return Ok(Some(chunk.slice(..take as usize)));
            },
        }
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
        matches!(self.source, BodySource::File { .. }) || self.position == 0
    }

    fn can_seek_multipart(&self) -> bool {
        matches!(self.source, BodySource::File { .. })
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let start = start as u64;
        let end = end.map(|e| e as u64).unwrap_or(self.size).min(self.size);
        if start > end {
            return Error::e_explain(ErrorType::InternalError, "seek start past end");
        }
        if let BodySource::Stream { .. } = self.source {
            // A stream only moves forward; `can_seek` admits one seek before reading.
            if start < self.position {
                return Error::e_explain(ErrorType::InternalError, "stream cannot seek backwards");
            }
            self.stream_skip = start - self.position;
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
