//! Fills that outlive their upstream connection: a body assembled at its
//! offsets from more than one upstream response.
//!
//! A fill is *resumable* when the proxy offers a [`RangeSource`] for it
//! before its miss handler starts ([`Offers::offer`]): an object of at least
//! `cache.resumable_fill_min` bytes whose upstream names a validator or
//! whose digest is known. Its bytes then go to their offsets in the body
//! store's local file, and the fill, not the request that started it, owns
//! what was written. When the response streaming into it breaks (reset,
//! timeout, short body), a task continues with `Range: bytes=N-` and
//! `If-Range` ([`filters::fill_ranges`]), with backoff, until an attempt
//! after `cache.fill_resume_attempts` fruitless ones in a row. Readers of
//! the fill see a pause, not a failure. An upstream that answers with the
//! whole object instead (it ignores ranges, or the object changed) fails the
//! fill: a body is never stitched from two versions, and the readers that
//! already had bytes fail; the next request fetches the object anew.
//!
//! The body is hashed in order as its contiguous prefix grows and checked
//! against the expected digest before the commit; until then readers get
//! every byte but the last, so a wrong body completes for no one.

use super::body::BodyWrite;
use super::fills::FillHandle;
use super::layout::EntryLocation;
use super::new_entry::{commit_body, NewBody};
use super::record::StoredMeta;
use super::{internal, CacheStorage};
use crate::digest::Hasher;
use bytes::Bytes;
use filters::fill_ranges::backoff;
use futures::stream::BoxStream;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::sync::watch;

/// A resume that brings less than this (and does not finish the body)
/// counts as fruitless, so an upstream that sends a trickle per connection
/// cannot keep a fill going forever.
const PROGRESS: u64 = 1024 * 1024;
/// Bytes hashed per read of the local file.
const HASH_PIECE: usize = 1024 * 1024;

/// A fill's way back to its upstream, given by the proxy (which knows the
/// request, the remote and its credentials).
#[async_trait::async_trait]
pub trait RangeSource: Send + Sync {
    /// Asks the upstream for `span` of the object being filled. `Err` is an
    /// attempt that failed and may be retried.
    async fn fetch(&self, span: Range<u64>) -> Result<Part, String>;

    /// The assembled body hashed to `actual`, not `expected`: logged and
    /// counted as the request path counts a refused body.
    fn refused(&self, expected: &str, actual: &str);
}

/// An upstream's answer to a range request.
pub enum Part {
    /// The bytes of the span asked for, as they arrive.
    Bytes(BoxStream<'static, io::Result<Bytes>>),
    /// The whole object instead: the fill cannot continue.
    Changed,
}

/// What the proxy offers a fill about to start.
pub struct Offer {
    pub source: Arc<dyn RangeSource>,
    /// `algorithm:hex` the whole body must hash to.
    pub expected: Option<String>,
    /// Fruitless resumes in a row before the fill fails.
    pub resume_attempts: u32,
    /// The fill's tag, once its miss handler took the offer: the request
    /// that offered it reads the fill by it after its own upstream broke.
    pub taken: Arc<OnceLock<u64>>,
}

/// Offers waiting for their fill's miss handler, by entry id.
#[derive(Default)]
pub struct Offers {
    waiting: parking_lot::Mutex<HashMap<u128, (u64, Offer)>>,
    next: AtomicU64,
}

/// Withdraws an offer no miss handler took (the response was not cached)
/// when the request that made it ends.
pub struct OfferGuard {
    offers: &'static Offers,
    id: u128,
    token: u64,
}

impl Offers {
    pub fn offer(&'static self, id: u128, offer: Offer) -> OfferGuard {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        self.waiting.lock().insert(id, (token, offer));
        OfferGuard {
            offers: self,
            id,
            token,
        }
    }

    /// The offer for entry `id`, for its miss handler.
    pub fn take(&self, id: u128) -> Option<Offer> {
        self.waiting.lock().remove(&id).map(|(_, offer)| offer)
    }
}

impl Drop for OfferGuard {
    fn drop(&mut self) {
        let mut waiting = self.offers.waiting.lock();
        if waiting.get(&self.id).is_some_and(|(t, _)| *t == self.token) {
            waiting.remove(&self.id);
        }
    }
}

/// The bytes of a body written at their offsets, and the part of them
/// that is contiguous from the start: hashed, and sent on to the store.
struct Assembly {
    writer: Box<dyn BodyWrite>,
    body_key: String,
    file: Arc<std::fs::File>,
    length: u64,
    /// Every byte below this is written, hashed and sent on.
    prefix: u64,
    /// Written spans past `prefix`, sorted and disjoint.
    ahead: Vec<Range<u64>>,
    sha256: Sha256,
    /// The expected digest's algorithm, when it is not sha256 alone.
    check: Option<Hasher>,
}

impl Assembly {
    async fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset + data.len() as u64;
        if end > self.length {
            return Err(io::Error::other(format!(
                "upstream sent bytes up to {end} of a {}-byte object",
                self.length
            )));
        }
        self.file.write_all_at(data, offset)?;
        if offset <= self.prefix && end > self.prefix {
            self.hash(&data[(self.prefix - offset) as usize..]);
            self.prefix = end;
        } else if offset > self.prefix {
            add_span(&mut self.ahead, offset..end);
        }
        self.absorb()?;
        self.writer.advance(self.prefix).await
    }

    /// Moves spans that now touch the prefix into it, hashing their bytes
    /// from the file.
    fn absorb(&mut self) -> io::Result<()> {
        while self.ahead.first().is_some_and(|s| s.start <= self.prefix) {
            let span = self.ahead.remove(0);
            let mut buf = vec![0u8; HASH_PIECE];
            while self.prefix < span.end {
                let len = ((span.end - self.prefix) as usize).min(HASH_PIECE);
                self.file.read_exact_at(&mut buf[..len], self.prefix)?;
                let piece = buf[..len].to_vec();
                self.hash(&piece);
                self.prefix += len as u64;
            }
        }
        Ok(())
    }

    fn hash(&mut self, data: &[u8]) {
        self.sha256.update(data);
        if let Some(check) = self.check.as_mut() {
            check.update(data);
        }
    }
}

/// Adds `span` to sorted, disjoint `spans`, merging what it touches.
fn add_span(spans: &mut Vec<Range<u64>>, span: Range<u64>) {
    spans.push(span);
    spans.sort_by_key(|s| s.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(spans.len());
    for s in spans.drain(..) {
        match merged.last_mut() {
            Some(last) if s.start <= last.end => last.end = last.end.max(s.end),
            _ => merged.push(s),
        }
    }
    *spans = merged;
}

/// Whether the response that started the fill still streams into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leader {
    Streaming,
    Ended,
}

/// A resumable fill in progress.
pub struct LargeFill {
    storage: &'static CacheStorage,
    location: EntryLocation,
    path: String,
    meta: parking_lot::Mutex<Option<StoredMeta>>,
    content_type: Option<String>,
    length: u64,
    assembly: tokio::sync::Mutex<Option<Assembly>>,
    fill: parking_lot::Mutex<Option<FillHandle>>,
    source: Arc<dyn RangeSource>,
    expected: Option<String>,
    resume_attempts: u32,
    leader: watch::Sender<Leader>,
    /// `Some` once the fill ended: its size, or why it failed.
    outcome: watch::Sender<Option<Result<u64, String>>>,
    resumes: AtomicU32,
    started: Instant,
}

/// What a fill of the whole object needs to become a resumable one.
pub struct Start {
    pub location: EntryLocation,
    pub path: String,
    pub meta: StoredMeta,
    pub content_type: Option<String>,
    pub length: u64,
    pub fill: FillHandle,
}

impl LargeFill {
    /// Starts the resumable fill the proxy offered for `start`'s entry;
    /// the feed for the response that started it.
    pub async fn start(
        storage: &'static CacheStorage,
        offer: Offer,
        start: Start,
    ) -> pingora::Result<LeaderFeed> {
        let body_key = start.location.new_body_key();
        let writer = storage
            .bodies
            .create(&body_key)
            .await
            .map_err(|e| internal("starting cache body", e))?;
        let file = writer.local_file();
        start.fill.spill(file.clone());
        let _ = offer.taken.set(u64::from_be_bytes(start.fill.tag_bytes()));
        let check = offer
            .expected
            .as_deref()
            .filter(|e| !e.starts_with("sha256:"))
            .and_then(Hasher::for_digest);
        let assembly = Assembly {
            writer,
            body_key,
            file,
            length: start.length,
            prefix: 0,
            ahead: Vec::new(),
            sha256: Sha256::new(),
            check,
        };
        let large = Arc::new(LargeFill {
            storage,
            location: start.location,
            path: start.path,
            meta: parking_lot::Mutex::new(Some(start.meta)),
            content_type: start.content_type,
            length: start.length,
            assembly: tokio::sync::Mutex::new(Some(assembly)),
            fill: parking_lot::Mutex::new(Some(start.fill)),
            source: offer.source,
            expected: offer.expected,
            resume_attempts: offer.resume_attempts,
            leader: watch::channel(Leader::Streaming).0,
            outcome: watch::channel(None).0,
            resumes: AtomicU32::new(0),
            started: Instant::now(),
        });
        tokio::spawn(large.clone().supervise());
        Ok(LeaderFeed {
            fill: large,
            offset: 0,
        })
    }

    /// Writes `data` at `offset` and tells readers how far the body goes.
    async fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), String> {
        let mut assembly = self.assembly.lock().await;
        let assembly = assembly.as_mut().ok_or("the fill has ended")?;
        assembly
            .write_at(offset, data)
            .await
            .map_err(|e| format!("writing cache body: {e}"))?;
        // The last byte waits for the digest check.
        let visible = match &self.expected {
            Some(_) => assembly.prefix.min(self.length.saturating_sub(1)),
            None => assembly.prefix,
        };
        if let Some(fill) = self.fill.lock().as_ref() {
            fill.written(visible);
        }
        Ok(())
    }

    async fn prefix(&self) -> Result<u64, String> {
        let assembly = self.assembly.lock().await;
        Ok(assembly.as_ref().ok_or("the fill has ended")?.prefix)
    }

    async fn supervise(self: Arc<Self>) {
        let result = match self.complete().await {
            Ok(()) => self.commit().await,
            Err(why) => Err(why),
        };
        let (remote, path) = (&self.location.remote, &self.path);
        let resumes = self.resumes.load(Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64();
        match &result {
            Ok(size) => log::info!(
                "cache fill of {remote}/{path} committed: {size} bytes in {seconds:.1} s \
                 ({:.1} MiB/s), {resumes} resumes",
                *size as f64 / seconds.max(1e-3) / (1024.0 * 1024.0)
            ),
            Err(why) => {
                log::warn!("cache fill of {remote}/{path} failed after {resumes} resumes: {why}; nothing committed");
                // Readers fail, and the partial body is discarded.
                drop(self.fill.lock().take());
                drop(self.assembly.lock().await.take());
            }
        }
        self.outcome.send_replace(Some(result));
    }

    /// Waits for the leading response to end, then resumes until every
    /// byte is written.
    async fn complete(&self) -> Result<(), String> {
        let _ = self
            .leader
            .subscribe()
            .wait_for(|leader| *leader == Leader::Ended)
            .await;
        let mut fruitless = 0u32;
        loop {
            let from = self.prefix().await?;
            if from >= self.length {
                return Ok(());
            }
            if fruitless >= self.resume_attempts {
                return Err(format!(
                    "{fruitless} attempts in a row to resume at byte {from} of {} brought nothing",
                    self.length
                ));
            }
            fruitless += 1;
            tokio::time::sleep(backoff(fruitless)).await;
            self.resumes.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "resuming cache fill of {}/{} at byte {from} of {} (attempt {fruitless})",
                self.location.remote,
                self.path,
                self.length
            );
            let span = from..self.length;
            let mut stream = match self.source.fetch(span).await {
                Ok(Part::Bytes(stream)) => stream,
                Ok(Part::Changed) => {
                    return Err("the upstream answered a resume with the whole object \
                                (it changed, or ignores ranges)"
                        .to_string())
                }
                Err(why) => {
                    log::warn!(
                        "resume of {}/{} failed: {why}",
                        self.location.remote,
                        self.path
                    );
                    continue;
                }
            };
            let mut offset = from;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(data) => {
                        self.write_at(offset, &data).await?;
                        offset += data.len() as u64;
                    }
                    Err(e) => {
                        log::warn!(
                            "resume of {}/{} broke at byte {offset}: {e}",
                            self.location.remote,
                            self.path
                        );
                        break;
                    }
                }
            }
            if offset - from >= PROGRESS || offset >= self.length {
                fruitless = 0;
            }
        }
    }

    /// Checks the digest, then commits the body and its record.
    async fn commit(&self) -> Result<u64, String> {
        let assembly = self.assembly.lock().await.take();
        let assembly = assembly.ok_or("the fill has ended")?;
        let sha256 = hex::encode(assembly.sha256.finalize());
        if let Some(expected) = &self.expected {
            let actual = match assembly.check {
                Some(check) => check.finish(),
                None => format!("sha256:{sha256}"),
            };
            if actual != *expected {
                self.source.refused(expected, &actual);
                return Err(format!("body hashed to {actual}, expected {expected}"));
            }
        }
        assembly
            .writer
            .commit()
            .await
            .map_err(|e| format!("completing cache body: {e}"))?;
        let body = NewBody {
            meta: self.meta.lock().take().ok_or("the fill has ended")?,
            content_type: self.content_type.clone(),
            body_key: assembly.body_key,
            inline_body: None,
            size: self.length,
            sha256,
        };
        commit_body(self.storage, &self.location, &self.path, body)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(fill) = self.fill.lock().take() {
            fill.done(self.length);
        }
        Ok(self.length)
    }
}

/// The response that started a resumable fill, streaming into it. Ended
/// (finished or dropped), it hands the rest of the fill to the resumes.
pub struct LeaderFeed {
    fill: Arc<LargeFill>,
    offset: u64,
}

impl LeaderFeed {
    pub async fn write(&mut self, data: &[u8]) -> pingora::Result<()> {
        self.fill
            .write_at(self.offset, data)
            .await
            .map_err(|why| internal("resumable cache fill", why))?;
        self.offset += data.len() as u64;
        Ok(())
    }

    /// The leading response ended whole: waits for the commit.
    pub async fn finish(self) -> pingora::Result<u64> {
        let mut outcome = self.fill.outcome.subscribe();
        self.fill.leader.send_replace(Leader::Ended);
        let ended = outcome.wait_for(Option::is_some).await;
        match ended.as_deref() {
            Ok(Some(Ok(size))) => Ok(*size),
            Ok(Some(Err(why))) => Err(internal("resumable cache fill", why)),
            _ => Err(internal("resumable cache fill", "ended without an outcome")),
        }
    }
}

impl Drop for LeaderFeed {
    fn drop(&mut self) {
        self.fill.leader.send_replace(Leader::Ended);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::body::fs::FsBodyStore;
    use crate::storage::body::BodyStore;

    async fn assembly(dir: &std::path::Path, length: u64, check: Option<Hasher>) -> Assembly {
        let store = FsBodyStore::open(dir, false).unwrap();
        let writer = store.create("r/a/b.body").await.unwrap();
        Assembly {
            file: writer.local_file(),
            writer,
            body_key: "r/a/b.body".into(),
            length,
            prefix: 0,
            ahead: Vec::new(),
            sha256: Sha256::new(),
            check,
        }
    }

    #[tokio::test]
    async fn parts_written_out_of_order_hash_as_the_whole_body() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let digest = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&body)));
        let check = Hasher::for_digest(&digest);
        let mut a = assembly(dir.path(), body.len() as u64, check).await;
        // The last part first, then a middle one overlapping the first.
        a.write_at(2_000_000, &body[2_000_000..]).await.unwrap();
        assert_eq!(a.prefix, 0);
        assert_eq!(
            (a.ahead.len(), a.ahead[0].clone()),
            (1, 2_000_000..3_000_000)
        );
        a.write_at(900_000, &body[900_000..2_000_000])
            .await
            .unwrap();
        assert_eq!(a.prefix, 0, "nothing contiguous from the start yet");
        a.write_at(0, &body[..1_000_000]).await.unwrap();
        assert_eq!((a.prefix, a.ahead.len()), (3_000_000, 0));
        let sha256 = hex::encode(std::mem::take(&mut a.sha256).finalize());
        assert_eq!(sha256, hex::encode(Sha256::digest(&body)));
        assert_eq!(a.check.take().unwrap().finish(), digest);
        let mut stored = vec![0u8; body.len()];
        a.file.read_exact_at(&mut stored, 0).unwrap();
        assert!(stored == body);
    }

    #[tokio::test]
    async fn bytes_past_the_length_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = assembly(dir.path(), 10, None).await;
        a.write_at(0, b"0123456789").await.unwrap();
        assert!(a.write_at(8, b"89x").await.is_err());
        assert_eq!(a.prefix, 10);
    }

    #[test]
    fn spans_merge_when_they_touch() {
        let mut spans = Vec::new();
        add_span(&mut spans, 10..20);
        add_span(&mut spans, 30..40);
        assert_eq!(spans, vec![10..20, 30..40]);
        add_span(&mut spans, 20..30);
        assert_eq!((spans.len(), spans[0].clone()), (1, 10..40));
        add_span(&mut spans, 0..5);
        add_span(&mut spans, 12..50);
        assert_eq!(spans, vec![0..5, 10..50]);
    }
}
