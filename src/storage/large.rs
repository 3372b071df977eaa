//! Fills assembled from ranges: a body written at its offsets by more than
//! one upstream response, for objects large enough that one connection is
//! the wrong unit of failure, speed or latency.
//!
//! A fill is assembled from ranges when the proxy offers a [`RangeSource`]
//! for it before its miss handler starts ([`Offers::offer`]): an object of
//! at least `cache.resumable_fill_min` bytes whose upstream names a
//! validator or whose digest is known. Its bytes go to their offsets in the
//! body store's local file, and the fill, not the request that started it,
//! owns what was written. The response that started it is its first fetch;
//! [`filters::fill_plan`] decides the others:
//!
//! - **Resume.** A fetch that breaks (reset, timeout, short body) leaves a
//!   gap, and the next fetch of that gap carries `Range` and `If-Range`,
//!   after a backoff while fetches keep bringing less than 1 MiB; more than
//!   `cache.fill_resume_attempts` such in a row fail the fill. Readers see a
//!   pause, not a failure.
//! - **Ranged first touch.** A reader of a range waiting on a byte no fetch
//!   reaches soon asks for it ([`super::fills::Sparse`]), and a fetch starts
//!   there at once (objects of `cache.range_fill_min` and more).
//! - **Parallel fill.** Objects of `cache.parallel_fill_min` and more, from
//!   an upstream that answers ranges, are fetched in parts of
//!   `cache.parallel_fill_part`, `cache.parallel_fill_connections` at a time.
//!
//! An upstream that answers a range with the whole object (it ignores
//! ranges, or the object changed) fails the fill: a body is never stitched
//! from two versions, and the readers that already had bytes fail; the next
//! request fetches the object anew.
//!
//! The body is hashed in order as its contiguous prefix grows and checked
//! against the expected digest before the commit; until then readers of
//! the whole body get every byte but the last, so a wrong body completes for
//! no one. A reader of a range gets its bytes as the upstream sent them, as
//! it would without a cache.

use super::body::BodyWrite;
use super::fills::{FillHandle, Sparse};
use super::layout::EntryLocation;
use super::new_entry::{commit_body, NewBody};
use super::record::StoredMeta;
use super::{internal, CacheStorage};
use crate::digest::Hasher;
use bytes::Bytes;
use filters::fill_plan::{Fetching, Plan, Step};
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
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// A fetch that breaks having brought less than this counts as fruitless,
/// so an upstream that sends a trickle per connection cannot keep a fill
/// going forever.
const PROGRESS: u64 = 1024 * 1024;
/// A reader waiting on a byte this close to a fetch's position waits for
/// that fetch rather than starting its own.
const NEAR: u64 = 2 * 1024 * 1024;
/// Bytes hashed per read of the local file.
const HASH_PIECE: usize = 1024 * 1024;
/// Bytes of a range fetch gathered before they are written.
const WRITE_PIECE: usize = 256 * 1024;

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
    /// Fruitless fetches in a row before the fill fails.
    pub resume_attempts: u32,
    pub shape: FillShape,
    /// The fill's tag, once its miss handler took the offer: the request
    /// that offered it reads the fill by it after its own upstream broke.
    pub taken: Arc<OnceLock<u64>>,
}

/// How a fill may use ranges beyond resuming, as the proxy judged from the
/// object's size and its upstream's first answer.
#[derive(Debug, Clone, Copy)]
pub struct FillShape {
    /// Upstream connections at a time (1: one after the other).
    pub connections: usize,
    /// Bytes per part when fetching side by side.
    pub part: u64,
    /// Readers of a range get a fetch of their own (ranged first touch).
    pub for_readers: bool,
    /// The upstream said it answers ranges (`Accept-Ranges: bytes`); else
    /// ranges are used beyond resuming only once one was answered.
    pub ranges_advertised: bool,
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

/// Which bytes of a body are written at their offsets, and how far they
/// are contiguous from the start.
#[derive(Default)]
struct Assembly {
    /// Every byte below this is written.
    prefix: u64,
    /// Written spans past `prefix`, sorted and disjoint.
    ahead: Vec<Range<u64>>,
}

impl Assembly {
    /// Records that the bytes of `span` are in the file.
    fn wrote(&mut self, span: Range<u64>) {
        match span.start <= self.prefix {
            true => self.prefix = self.prefix.max(span.end),
            false => add_span(&mut self.ahead, span),
        }
        while let Some(next) = self.ahead.first().filter(|s| s.start <= self.prefix) {
            self.prefix = self.prefix.max(next.end);
            self.ahead.remove(0);
        }
    }

    /// The written spans: the prefix, then those ahead of it.
    fn written(&self) -> Vec<Range<u64>> {
        let prefix = (self.prefix > 0).then_some(0..self.prefix);
        prefix
            .into_iter()
            .chain(self.ahead.iter().cloned())
            .collect()
    }
}

/// The in-order side of a fill: follows the contiguous prefix as it grows,
/// hashing it and sending it on to the body store, apart from the fetches
/// that write it, so neither a hash nor an object-store upload holds them
/// up.
struct Sealer {
    writer: Box<dyn BodyWrite>,
    body_key: String,
    file: Arc<std::fs::File>,
    sha256: Sha256,
    /// The expected digest's algorithm, when it is not sha256 alone.
    check: Option<Hasher>,
    /// Bytes hashed and sent on.
    done: u64,
}

impl Sealer {
    /// Hashes and sends on the prefix as `prefix` reports it, up to
    /// `length`.
    async fn follow(mut self, mut prefix: watch::Receiver<u64>, length: u64) -> io::Result<Sealer> {
        let mut piece = vec![0u8; HASH_PIECE];
        loop {
            let to = *prefix.borrow_and_update();
            // Whole pieces (or the end) at a time, on a thread of their
            // own: hashed on a worker, they held up the very transfer they
            // follow (a 32 MiB miss took twice nginx's time).
            if self.done < to && (to - self.done >= HASH_PIECE as u64 || to >= length) {
                let (sealer, buffer, hashed) = tokio::task::spawn_blocking(move || {
                    let hashed = self.hash_to(&mut piece, to);
                    (self, piece, hashed)
                })
                .await
                .map_err(io::Error::other)?;
                (self, piece) = (sealer, buffer);
                hashed?;
                self.writer.advance(self.done).await?;
            }
            if self.done >= length {
                return Ok(self);
            }
            if prefix.changed().await.is_err() {
                return Err(io::Error::other("the fill ended"));
            }
        }
    }

    fn hash_to(&mut self, piece: &mut [u8], to: u64) -> io::Result<()> {
        while self.done < to {
            let len = ((to - self.done) as usize).min(piece.len());
            self.file.read_exact_at(&mut piece[..len], self.done)?;
            self.sha256.update(&piece[..len]);
            if let Some(check) = self.check.as_mut() {
                check.update(&piece[..len]);
            }
            self.done += len as u64;
        }
        Ok(())
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

/// One upstream response streaming into the fill: the first, or a range.
struct Fetch {
    start: u64,
    /// Every byte from `start` below this is written.
    at: AtomicU64,
    /// Where it stops; moved closer by the plan, never further.
    end: AtomicU64,
    for_reader: bool,
}

impl Fetch {
    fn new(span: Range<u64>, for_reader: bool) -> Fetch {
        Fetch {
            start: span.start,
            at: AtomicU64::new(span.start),
            end: AtomicU64::new(span.end),
            for_reader,
        }
    }

    fn view(&self) -> Fetching {
        Fetching {
            at: self.at.load(Ordering::Acquire),
            end: self.end.load(Ordering::Acquire),
            for_reader: self.for_reader,
        }
    }

    /// The part of `data`, arriving at the fetch's position, that is still
    /// its to write (none once the plan stopped it there).
    fn room(&self, data: &[u8]) -> (u64, usize) {
        let Fetching { at, end, .. } = self.view();
        (at, (data.len() as u64).min(end.saturating_sub(at)) as usize)
    }
}

/// The fetches of a fill and what they are to do.
#[derive(Default)]
struct Schedule {
    fetches: Vec<Arc<Fetch>>,
    /// Bytes readers of ranges wait on, since the last plan.
    wants: Vec<u64>,
    /// Fetches in a row that broke having brought less than [`PROGRESS`].
    fruitless: u32,
    /// An upstream answered a range here, or said it would.
    ranges_work: bool,
    failure: Option<String>,
}

/// A fill assembled from ranges, in progress.
pub struct LargeFill {
    storage: &'static CacheStorage,
    location: EntryLocation,
    path: String,
    meta: parking_lot::Mutex<Option<StoredMeta>>,
    content_type: Option<String>,
    length: u64,
    /// The body store's local file the fetches write into.
    file: Arc<std::fs::File>,
    /// `None` once the fill ended.
    assembly: parking_lot::Mutex<Option<Assembly>>,
    /// The contiguous prefix, for the [`Sealer`].
    prefix: watch::Sender<u64>,
    sealer: parking_lot::Mutex<Option<tokio::task::JoinHandle<io::Result<Sealer>>>>,
    fill: parking_lot::Mutex<Option<FillHandle>>,
    source: Arc<dyn RangeSource>,
    expected: Option<String>,
    resume_attempts: u32,
    shape: FillShape,
    schedule: parking_lot::Mutex<Schedule>,
    /// Wakes the plan: a fetch ended, a reader waits, the fill failed.
    replan: Notify,
    /// `Some` once the fill ended: its size, or why it failed.
    outcome: watch::Sender<Option<Result<u64, String>>>,
    /// Fetches started, the first response included.
    fetches: AtomicU32,
    /// Fetches that broke before their end.
    broken: AtomicU32,
    started: Instant,
}

/// What a fill of the whole object needs to become one assembled from
/// ranges.
pub struct Start {
    pub location: EntryLocation,
    pub path: String,
    pub meta: StoredMeta,
    pub content_type: Option<String>,
    pub length: u64,
    pub fill: FillHandle,
}

impl LargeFill {
    /// Starts the fill the proxy offered for `start`'s entry; the feed for
    /// the response that started it.
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
        start.fill.spill(file.clone(), &[]);
        let _ = offer.taken.set(u64::from_be_bytes(start.fill.tag_bytes()));
        let check = offer
            .expected
            .as_deref()
            .filter(|e| !e.starts_with("sha256:"))
            .and_then(Hasher::for_digest);
        let sealer = Sealer {
            writer,
            body_key,
            file: file.clone(),
            sha256: Sha256::new(),
            check,
            done: 0,
        };
        let leader = Arc::new(Fetch::new(0..start.length, false));
        let schedule = Schedule {
            fetches: vec![leader.clone()],
            ranges_work: offer.shape.ranges_advertised,
            ..Schedule::default()
        };
        let large = Arc::new(LargeFill {
            storage,
            location: start.location,
            path: start.path,
            meta: parking_lot::Mutex::new(Some(start.meta)),
            content_type: start.content_type,
            length: start.length,
            file,
            assembly: parking_lot::Mutex::new(Some(Assembly::default())),
            prefix: watch::channel(0).0,
            sealer: parking_lot::Mutex::new(None),
            fill: parking_lot::Mutex::new(None),
            source: offer.source,
            expected: offer.expected,
            resume_attempts: offer.resume_attempts,
            shape: offer.shape,
            schedule: parking_lot::Mutex::new(schedule),
            replan: Notify::new(),
            outcome: watch::channel(None).0,
            fetches: AtomicU32::new(1),
            broken: AtomicU32::new(0),
            started: Instant::now(),
        });
        let weak = Arc::downgrade(&large);
        let weak_for_sealer = weak.clone();
        start
            .fill
            .make_sparse(Sparse::new(Box::new(move |position| {
                if let Some(large) = weak.upgrade() {
                    large.want(position);
                }
            })));
        *large.fill.lock() = Some(start.fill);
        let prefix = large.prefix.subscribe();
        let sealing = tokio::spawn(async move {
            let sealed = sealer.follow(prefix, start.length).await;
            if let (Err(e), Some(large)) = (&sealed, weak_for_sealer.upgrade()) {
                large.fail(format!("storing the body: {e}"));
            }
            sealed
        });
        *large.sealer.lock() = Some(sealing);
        large.show_fetches();
        tokio::spawn(large.clone().supervise());
        Ok(LeaderFeed {
            fill: large,
            fetch: leader,
            ended: false,
        })
    }

    /// A reader of a range waits on byte `position`.
    fn want(&self, position: u64) {
        self.schedule.lock().wants.push(position);
        self.replan.notify_one();
    }

    fn fail(&self, why: String) {
        self.schedule.lock().failure.get_or_insert(why);
        self.replan.notify_one();
    }

    /// Writes `data` at `offset` and tells readers how far the body goes.
    /// `recent` is `data` as a chunk the fill keeps for the readers at its
    /// head: the leader's, whose bytes they read first.
    fn write_at(&self, offset: u64, data: &[u8], recent: Option<Bytes>) -> Result<(), String> {
        let end = offset + data.len() as u64;
        if end > self.length {
            return Err(format!(
                "upstream sent bytes up to {end} of a {}-byte object",
                self.length
            ));
        }
        if self.assembly.lock().is_none() {
            return Err("the fill has ended".to_string());
        }
        (self.file.write_all_at(data, offset)).map_err(|e| format!("writing cache body: {e}"))?;
        // Told in the order the spans were recorded, so that readers never
        // see the body shrink.
        let mut assembly = self.assembly.lock();
        let assembly = assembly.as_mut().ok_or("the fill has ended")?;
        assembly.wrote(offset..end);
        let prefix = assembly.prefix;
        self.prefix
            .send_if_modified(|sent| std::mem::replace(sent, prefix) != prefix);
        // A whole body's last byte waits for the digest check.
        let visible = match &self.expected {
            Some(_) => prefix.min(self.length.saturating_sub(1)),
            None => prefix,
        };
        let withheld = (visible < prefix).then_some(visible..prefix);
        let past_prefix = withheld.into_iter().chain(assembly.ahead.iter().cloned());
        if let Some(fill) = self.fill.lock().as_ref() {
            if let Some(chunk) = recent {
                fill.recent(offset, chunk);
            }
            fill.written_sparse(visible, past_prefix.collect());
        }
        Ok(())
    }

    fn show_fetches(&self) {
        let in_flight = self.schedule.lock().fetches.len() as u64;
        let started = self.fetches.load(Ordering::Relaxed) as u64;
        if let Some(fill) = self.fill.lock().as_ref() {
            fill.fetches(started, in_flight);
        }
    }

    async fn supervise(self: Arc<Self>) {
        let result = match self.drive().await {
            Ok(()) => self.commit().await,
            Err(why) => Err(why),
        };
        // Whatever still streams stops at its next chunk.
        for fetch in &self.schedule.lock().fetches {
            fetch
                .end
                .fetch_min(fetch.at.load(Ordering::Acquire), Ordering::AcqRel);
        }
        let (remote, path) = (&self.location.remote, &self.path);
        let fetches = self.fetches.load(Ordering::Relaxed);
        let broken = self.broken.load(Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64();
        match &result {
            Ok(size) => log::info!(
                "cache fill of {remote}/{path} committed: {size} bytes in {seconds:.1} s \
                 ({:.1} MiB/s), {fetches} upstream fetches, {broken} broke",
                *size as f64 / seconds.max(1e-3) / (1024.0 * 1024.0)
            ),
            Err(why) => {
                log::warn!(
                    "cache fill of {remote}/{path} failed after {fetches} upstream fetches \
                     ({broken} broke): {why}; nothing committed"
                );
                // Readers fail, and the partial body is discarded.
                drop(self.fill.lock().take());
                drop(self.assembly.lock().take());
                if let Some(sealing) = self.sealer.lock().take() {
                    sealing.abort();
                }
            }
        }
        self.outcome.send_replace(Some(result));
    }

    /// Plans and starts fetches until every byte is written.
    async fn drive(self: &Arc<Self>) -> Result<(), String> {
        loop {
            let replan = self.replan.notified();
            let prefix = self.assembly.lock().as_ref().map(|a| a.prefix);
            if prefix.ok_or("the fill has ended")? >= self.length {
                return Ok(());
            }
            self.plan()?;
            replan.await;
        }
    }

    /// Applies the plan's next steps ([`filters::fill_plan`]).
    fn plan(self: &Arc<Self>) -> Result<(), String> {
        let mut schedule = self.schedule.lock();
        if let Some(why) = schedule.failure.take() {
            return Err(why);
        }
        if schedule.fruitless > self.resume_attempts {
            return Err(format!(
                "{} fetches in a row broke having brought less than 1 MiB",
                schedule.fruitless
            ));
        }
        let fetching: Vec<Fetching> = schedule.fetches.iter().map(|f| f.view()).collect();
        let written = (self.assembly.lock().as_ref()).map_or_else(Vec::new, Assembly::written);
        let parallel = schedule.ranges_work && self.shape.connections > 1;
        let wants = std::mem::take(&mut schedule.wants);
        let for_readers = schedule.ranges_work && self.shape.for_readers;
        let plan = Plan {
            length: self.length,
            written: &written,
            fetching: &fetching,
            slots: if parallel { self.shape.connections } else { 1 },
            part: parallel.then_some(self.shape.part),
            near: NEAR,
        };
        let steps = plan.steps(if for_readers { &wants } else { &[] });
        for step in steps {
            match step {
                Step::Stop { fetch, at } => {
                    schedule.fetches[fetch].end.fetch_min(at, Ordering::AcqRel);
                }
                Step::Fetch { span, for_reader } => {
                    let delay = match schedule.fruitless {
                        0 => Duration::ZERO,
                        _ if for_reader => Duration::ZERO,
                        fruitless => backoff(fruitless),
                    };
                    let fetch = Arc::new(Fetch::new(span, for_reader));
                    schedule.fetches.push(fetch.clone());
                    self.fetches.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(self.clone().run(fetch, delay));
                }
            }
        }
        drop(schedule);
        self.show_fetches();
        Ok(())
    }

    /// One range fetch, from start to stop.
    async fn run(self: Arc<Self>, fetch: Arc<Fetch>, delay: Duration) {
        tokio::time::sleep(delay).await;
        let span = fetch.start..fetch.end.load(Ordering::Acquire);
        if !span.is_empty() {
            let (remote, path) = (&self.location.remote, &self.path);
            let what = if fetch.for_reader { "for a reader" } else { "" };
            log::info!(
                "fetching bytes {}-{} of {remote}/{path} {what}",
                span.start,
                span.end - 1
            );
            match self.source.fetch(span.clone()).await {
                Ok(Part::Bytes(stream)) => {
                    self.schedule.lock().ranges_work = true;
                    self.stream_into(&fetch, stream).await;
                }
                Ok(Part::Changed) => self.fail(
                    "the upstream answered a range with the whole object \
                     (it changed, or ignores ranges)"
                        .to_string(),
                ),
                Err(why) => log::warn!("range fetch of {remote}/{path} failed: {why}"),
            }
        }
        self.fetch_ended(&fetch);
    }

    /// Writes a range's bytes as they arrive, a few hundred KiB at a
    /// time: each write wakes the fill's readers and its sealer, which
    /// need not wake for every network read.
    async fn stream_into(&self, fetch: &Fetch, mut stream: BoxStream<'static, io::Result<Bytes>>) {
        let mut pending = bytes::BytesMut::new();
        loop {
            let (more, broke) = match stream.next().await {
                Some(Ok(data)) => {
                    pending.extend_from_slice(&data);
                    (true, None)
                }
                Some(Err(e)) => (false, Some(e)),
                None => (false, None),
            };
            if more && pending.len() < WRITE_PIECE {
                continue;
            }
            if !self.write_fetched(fetch, &pending) {
                return;
            }
            pending.clear();
            if let Some(e) = broke {
                let at = fetch.at.load(Ordering::Acquire);
                let (remote, path) = (&self.location.remote, &self.path);
                log::warn!("range fetch of {remote}/{path} broke at byte {at}: {e}");
            }
            if !more {
                return;
            }
        }
    }

    /// Writes what a fetch brought at its position; `false` once the fetch
    /// is to stop (it reached its end, or the fill failed).
    fn write_fetched(&self, fetch: &Fetch, data: &[u8]) -> bool {
        let (at, room) = fetch.room(data);
        if room > 0 {
            if let Err(why) = self.write_at(at, &data[..room], None) {
                self.fail(why);
                return false;
            }
            fetch.at.store(at + room as u64, Ordering::Release);
        }
        room == data.len() && fetch.at.load(Ordering::Acquire) < fetch.end.load(Ordering::Acquire)
    }

    /// A fetch ended, at its stop or short of it.
    fn fetch_ended(&self, fetch: &Arc<Fetch>) {
        let Fetching { at, end, .. } = fetch.view();
        let mut schedule = self.schedule.lock();
        schedule.fetches.retain(|f| !Arc::ptr_eq(f, fetch));
        if at >= end {
            schedule.fruitless = 0;
        } else {
            self.broken.fetch_add(1, Ordering::Relaxed);
            schedule.fruitless = match at - fetch.start >= PROGRESS {
                true => 0,
                false => schedule.fruitless + 1,
            };
        }
        drop(schedule);
        self.show_fetches();
        self.replan.notify_one();
    }

    /// Checks the digest, then commits the body and its record.
    async fn commit(&self) -> Result<u64, String> {
        let sealing = self.sealer.lock().take().ok_or("the fill has ended")?;
        let sealer = (sealing.await)
            .map_err(|e| format!("storing the body: {e}"))?
            .map_err(|e| format!("storing the body: {e}"))?;
        self.assembly.lock().take();
        let sha256 = hex::encode(sealer.sha256.finalize());
        if let Some(expected) = &self.expected {
            let actual = match sealer.check {
                Some(check) => check.finish(),
                None => format!("sha256:{sha256}"),
            };
            if actual != *expected {
                self.source.refused(expected, &actual);
                return Err(format!("body hashed to {actual}, expected {expected}"));
            }
        }
        sealer
            .writer
            .commit()
            .await
            .map_err(|e| format!("completing cache body: {e}"))?;
        let body = NewBody {
            meta: self.meta.lock().take().ok_or("the fill has ended")?,
            content_type: self.content_type.clone(),
            body_key: sealer.body_key,
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

/// The response that started a fill, streaming into it as its first fetch.
/// It stops where the plan stops it (the parts after are other fetches'),
/// and once it ended, its unfetched rest is a gap for the next fetch.
pub struct LeaderFeed {
    fill: Arc<LargeFill>,
    fetch: Arc<Fetch>,
    ended: bool,
}

impl LeaderFeed {
    /// Writes the next bytes of the response; an error once they are past
    /// where the plan stopped it, which ends the response (the request's
    /// client gets the rest from the fill: `proxy::large::continue_leader`).
    pub async fn write(&mut self, data: &Bytes) -> pingora::Result<()> {
        let (at, room) = self.fetch.room(data);
        if room > 0 {
            self.fill
                .write_at(at, &data[..room], Some(data.slice(..room)))
                .map_err(|why| internal("cache fill from ranges", why))?;
            self.fetch.at.store(at + room as u64, Ordering::Release);
        }
        if room < data.len() {
            return Err(internal(
                "cache fill from ranges",
                "the rest of the body comes from the fill's other fetches",
            ));
        }
        Ok(())
    }

    /// The leading response ended whole: waits for the commit.
    pub async fn finish(mut self) -> pingora::Result<u64> {
        let mut outcome = self.fill.outcome.subscribe();
        self.end();
        let ended = outcome.wait_for(Option::is_some).await;
        match ended.as_deref() {
            Ok(Some(Ok(size))) => Ok(*size),
            Ok(Some(Err(why))) => Err(internal("cache fill from ranges", why)),
            _ => Err(internal(
                "cache fill from ranges",
                "ended without an outcome",
            )),
        }
    }

    fn end(&mut self) {
        if !std::mem::replace(&mut self.ended, true) {
            self.fill.fetch_ended(&self.fetch);
        }
    }
}

impl Drop for LeaderFeed {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
// Written spans are lists of ranges, often of one.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::storage::body::fs::FsBodyStore;
    use crate::storage::body::BodyStore;

    #[tokio::test]
    async fn parts_written_out_of_order_hash_as_the_whole_body() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let digest = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&body)));
        let store = FsBodyStore::open(dir.path(), false).unwrap();
        let writer = store.create("r/a/b.body").await.unwrap();
        let file = writer.local_file();
        let sealer = Sealer {
            writer,
            body_key: "r/a/b.body".into(),
            file: file.clone(),
            sha256: Sha256::new(),
            check: Hasher::for_digest(&digest),
            done: 0,
        };
        let prefix = watch::channel(0u64).0;
        let sealing = tokio::spawn(sealer.follow(prefix.subscribe(), body.len() as u64));
        let mut a = Assembly::default();
        let mut write = |span: Range<usize>| {
            file.write_all_at(&body[span.clone()], span.start as u64)
                .unwrap();
            a.wrote(span.start as u64..span.end as u64);
            prefix.send_replace(a.prefix);
            (a.prefix, a.ahead.clone())
        };
        // The last part first, then a middle one overlapping the first.
        assert_eq!(write(2_000_000..3_000_000), (0, vec![2_000_000..3_000_000]));
        assert_eq!(write(900_000..2_000_000), (0, vec![900_000..3_000_000]));
        assert_eq!(write(0..1_000_000), (3_000_000, vec![]));
        let sealed = sealing.await.unwrap().unwrap();
        assert_eq!(sealed.done, 3_000_000);
        let sha256 = hex::encode(sealed.sha256.finalize());
        assert_eq!(sha256, hex::encode(Sha256::digest(&body)));
        assert_eq!(sealed.check.unwrap().finish(), digest);
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
