//! Fills in progress, and the readers that follow them.
//!
//! pingora-cache releases its cache lock as soon as a fill's miss handler
//! exists (`support_streaming_partial_write`), and every waiting request
//! looks the key up again. The lookup finds the fill here and gets a
//! [`PartialHit`]: it `pread`s the fill's file up to the bytes written so
//! far and waits on a watch channel for more. So a follower's first byte
//! comes right after the leader's, whatever the object's size, and the lock
//! timeout no longer bounds how large an object can be. A small fill (up to
//! `cache.memory_body_max`) is held in memory and never gets a file; a
//! larger one moves to its staging file once it outgrows that, and readers
//! switch over at the same offsets. A spilled fill still keeps its newest
//! chunks ([`RECENT_MAX`]): a reader at the head, as the miss's own client
//! is, gets the chunk that just arrived instead of zeroing a buffer and
//! reading it back from the file.
//!
//! A follower must tell a finished fill from an abandoned one (STYLE.md
//! §7.15): [`Progress::Done`] ends a body, while [`Progress::Failed`] or a
//! writer that vanished without saying either is a read error, which ends
//! the client's transfer as failed instead of as a short body.

use super::record::StoredMeta;
use pingora::cache::storage::{HandleHit, Storage};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta};
use pingora::{Error, ErrorType, Result};
use pingora_memory_cache::MemoryCache;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Largest chunk handed to pingora per read.
const READ_CHUNK: u64 = 256 * 1024;
/// Bytes a spilled fill keeps in memory behind its newest write. A
/// reader at the head trails the writer by about one chunk; a follower
/// further behind reads the file.
const RECENT_MAX: usize = 512 * 1024;
/// How long a completed fill is remembered (see [`Fills::known`]).
const RECENT: Duration = Duration::from_secs(5);
const RECENT_FILLS: usize = 16_384;

/// How far a fill has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Writing(u64),
    /// Committed with this many bytes.
    Done(u64),
    /// Abandoned: nothing was committed.
    Failed,
}

struct Fill {
    tag: u64,
    meta: StoredMeta,
    about: FillAbout,
    started: Instant,
    /// Milliseconds from `started` to the last write.
    last_write_ms: AtomicU64,
    data: parking_lot::Mutex<FillData>,
    progress: watch::Sender<Progress>,
    /// Bytes past the prefix, for a fill assembled from ranges.
    sparse: OnceLock<Sparse>,
}

/// What a fill assembled from ranges ([`super::large`]) shows readers
/// beyond its contiguous prefix: the spans written past it, and a way for
/// a reader of a range to ask for the byte it waits on.
pub struct Sparse {
    spans: parking_lot::Mutex<Vec<Range<u64>>>,
    want: Box<dyn Fn(u64) + Send + Sync>,
    /// Fetches started and in flight, for the status page.
    pub fetches: AtomicU64,
    pub in_flight: AtomicU64,
}

impl Sparse {
    pub fn new(want: Box<dyn Fn(u64) + Send + Sync>) -> Sparse {
        Sparse {
            spans: parking_lot::Mutex::new(Vec::new()),
            want,
            fetches: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }

    /// How far the written span holding `position` reaches.
    fn reach(&self, position: u64) -> Option<u64> {
        let spans = self.spans.lock();
        spans.iter().find(|s| s.contains(&position)).map(|s| s.end)
    }
}

/// What a fill is of, for the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillAbout {
    pub remote: String,
    pub path: String,
    /// The upstream's `Content-Length`, when it sent one.
    pub expected: Option<u64>,
}

/// A fill in progress as the status page and `/metrics` see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillView {
    pub about: FillAbout,
    pub written: u64,
    pub elapsed: Duration,
    /// Since the last bytes arrived.
    pub idle: Duration,
    /// Requests streaming this fill besides its writer.
    pub followers: usize,
    /// For a fill assembled from ranges: upstream fetches so far (the
    /// first response included), and how many are in flight.
    pub fetches: Option<(u64, u64)>,
}

/// Where a fill's bytes so far are.
enum FillData {
    /// The chunks received, in order.
    Memory(Vec<bytes::Bytes>),
    /// The staging file, from offset 0, and the newest chunks written to it.
    File {
        file: Arc<std::fs::File>,
        recent: Recent,
    },
    /// The staging file up to `stored`, and the chunks received after
    /// storing failed ([`FillHandle::keep_tail`]).
    Tail {
        file: Arc<std::fs::File>,
        stored: u64,
        chunks: Vec<bytes::Bytes>,
    },
}

impl FillData {
    /// Up to `max` bytes at `position`, which must be below what was written.
    fn read(&self, position: u64, max: usize) -> std::io::Result<bytes::Bytes> {
        match self {
            FillData::Memory(chunks) => read_chunks(chunks, position, max),
            FillData::File { file, recent } => match recent.read(position, max) {
                Some(chunk) => Ok(chunk),
                None => read_file(file, position, max),
            },
            FillData::Tail { file, stored, .. } if position < *stored => {
                read_file(file, position, max.min((stored - position) as usize))
            }
            FillData::Tail { stored, chunks, .. } => read_chunks(chunks, position - stored, max),
        }
    }
}

/// The newest chunks written to a spilled fill's file, contiguous from
/// `start`, at most [`RECENT_MAX`] bytes of them (or one chunk).
#[derive(Default)]
struct Recent {
    start: u64,
    chunks: VecDeque<bytes::Bytes>,
    bytes: usize,
}

impl Recent {
    fn end(&self) -> u64 {
        self.start + self.bytes as u64
    }

    /// Keeps `chunk`, written at `at`; a chunk that does not follow the
    /// ones kept starts the window anew.
    fn push(&mut self, at: u64, chunk: bytes::Bytes) {
        if at != self.end() {
            self.chunks.clear();
            self.start = at;
            self.bytes = 0;
        }
        self.bytes += chunk.len();
        self.chunks.push_back(chunk);
        while self.bytes > RECENT_MAX && self.chunks.len() > 1 {
            if let Some(oldest) = self.chunks.pop_front() {
                self.start += oldest.len() as u64;
                self.bytes -= oldest.len();
            }
        }
    }

    /// Up to `max` bytes at `position`, when the window holds it.
    fn read(&self, position: u64, max: usize) -> Option<bytes::Bytes> {
        if position < self.start || position >= self.end() {
            return None;
        }
        read_chunks(&self.chunks, position - self.start, max).ok()
    }
}

fn read_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a bytes::Bytes>,
    position: u64,
    max: usize,
) -> std::io::Result<bytes::Bytes> {
    let mut start = 0u64;
    for chunk in chunks {
        let end = start + chunk.len() as u64;
        if position < end {
            let from = (position - start) as usize;
            let to = chunk.len().min(from + max);
            return Ok(chunk.slice(from..to));
        }
        start = end;
    }
    Err(std::io::Error::other("fill read past its bytes"))
}

fn read_file(file: &std::fs::File, position: u64, max: usize) -> std::io::Result<bytes::Bytes> {
    let mut buf = vec![0u8; max];
    // Bytes just written: a page-cache read.
    file.read_exact_at(&mut buf, position)?;
    Ok(bytes::Bytes::from(buf))
}

/// Bytes the fills in `active` expect and have not written yet.
fn still_to_write(active: &HashMap<u128, Vec<Arc<Fill>>>) -> u64 {
    active
        .values()
        .flatten()
        .filter_map(|fill| match *fill.progress.borrow() {
            Progress::Writing(written) => Some(fill.about.expected?.saturating_sub(written)),
            _ => None,
        })
        .sum()
}

/// Every fill in progress, by entry id (several only when a lock timed out
/// and a second writer started).
pub struct Fills {
    active: Mutex<HashMap<u128, Vec<Arc<Fill>>>>,
    next_tag: AtomicU64,
    /// The [`Self::forgetting`] epoch each recent fill ended in.
    recent: MemoryCache<u128, u64>,
    /// Bumped when recent fills no longer mean "look again" (a flush: what
    /// they committed is gone, and a request sent back to look would only
    /// miss again until the lock's retry limit, uncached).
    forgetting: AtomicU64,
    /// Woken whenever a fill starts.
    started: tokio::sync::Notify,
}

impl Default for Fills {
    fn default() -> Self {
        Fills {
            active: Mutex::new(HashMap::new()),
            next_tag: AtomicU64::new(1),
            recent: MemoryCache::new(RECENT_FILLS),
            forgetting: AtomicU64::new(0),
            started: tokio::sync::Notify::new(),
        }
    }
}

impl Fills {
    /// Registers a fill of entry `id`, held in memory until it spills.
    #[cfg(test)]
    pub fn start(&'static self, id: u128, meta: &CacheMeta, about: FillAbout) -> FillHandle {
        self.start_admitted(id, meta, about, |_| true)
            .expect("admitted")
    }

    /// Starts a fill if `admit` agrees, given the bytes the fills in flight
    /// have still to write (their expected length less what they wrote).
    /// Asked under the lock that registers fills, so two fills are never
    /// admitted against the same free space.
    pub fn start_admitted(
        &'static self,
        id: u128,
        meta: &CacheMeta,
        about: FillAbout,
        admit: impl FnOnce(u64) -> bool,
    ) -> Option<FillHandle> {
        let fill = Arc::new(Fill {
            tag: self.next_tag.fetch_add(1, Ordering::Relaxed),
            meta: StoredMeta::of(meta),
            about,
            started: Instant::now(),
            last_write_ms: AtomicU64::new(0),
            data: parking_lot::Mutex::new(FillData::Memory(Vec::new())),
            progress: watch::channel(Progress::Writing(0)).0,
            sparse: OnceLock::new(),
        });
        let mut active = self.active.lock().expect("fills lock");
        if !admit(still_to_write(&active)) {
            return None;
        }
        active.entry(id).or_default().push(fill.clone());
        drop(active);
        self.started.notify_waiters();
        Some(FillHandle {
            fills: self,
            id,
            fill,
            ended: false,
        })
    }

    /// Bytes the fills in flight expect and have not written yet.
    pub fn still_to_write(&self) -> u64 {
        still_to_write(&self.active.lock().expect("fills lock"))
    }

    /// A reader of the fill of entry `id` once one starts, waiting up to
    /// `limit` while `expected` says one is coming (this node fetches it,
    /// and its upstream has not answered yet).
    pub async fn reader_once_started(
        &self,
        id: u128,
        limit: std::time::Duration,
        expected: impl Fn() -> bool,
    ) -> Option<(CacheMeta, PartialHit)> {
        // A fetch that fails before its fill starts says nothing; looking
        // again this often notices that it no longer holds its claim.
        const RECHECK: std::time::Duration = std::time::Duration::from_millis(200);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let started = self.started.notified();
            tokio::pin!(started);
            started.as_mut().enable();
            if let Some(found) = self.reader(id, None) {
                return Some(found);
            }
            let now = tokio::time::Instant::now();
            if !expected() || now >= deadline {
                return None;
            }
            let _ = tokio::time::timeout((deadline - now).min(RECHECK), started).await;
        }
    }

    /// A reader of the fill of entry `id` tagged `tag`, or of its newest
    /// fill when no tag is given.
    pub fn reader(&self, id: u128, tag: Option<u64>) -> Option<(CacheMeta, PartialHit)> {
        let active = self.active.lock().expect("fills lock");
        let fills = active.get(&id)?;
        let fill = match tag {
            Some(tag) => fills.iter().find(|f| f.tag == tag)?,
            None => fills.last()?,
        };
        let reader = PartialHit {
            fill: fill.clone(),
            progress: fill.progress.subscribe(),
            position: 0,
            end: None,
            ranged: false,
            asked: None,
        };
        Some((fill.meta.to_meta(), reader))
    }

    /// Whether entry `id` is being filled or was filled moments ago.
    ///
    /// The cache lock is taken only after a lookup: a request whose lookup
    /// missed just before a fill registered, and whose lock attempt comes
    /// after the leader released the lock, would become a second writer
    /// (seen with five concurrent `skopeo copy` on a loaded machine). The
    /// lock asks this first and sends such a request back to look up again.
    pub fn known(&self, id: u128) -> bool {
        let epoch = self.forgetting.load(Ordering::Acquire);
        self.recent.get(&id).0 == Some(epoch)
            || self.active.lock().expect("fills lock").contains_key(&id)
    }

    /// Every fill in progress, the longest-running first.
    pub fn in_progress(&self) -> Vec<FillView> {
        let active = self.active.lock().expect("fills lock");
        let mut views: Vec<FillView> = active
            .values()
            .flatten()
            .map(|fill| {
                let written = match *fill.progress.borrow() {
                    Progress::Writing(bytes) | Progress::Done(bytes) => bytes,
                    Progress::Failed => 0,
                };
                let elapsed = fill.started.elapsed();
                let last = Duration::from_millis(fill.last_write_ms.load(Ordering::Relaxed));
                FillView {
                    about: fill.about.clone(),
                    written,
                    elapsed,
                    idle: elapsed.saturating_sub(last),
                    followers: fill.progress.receiver_count(),
                    fetches: fill.sparse.get().map(|sparse| {
                        let count = |n: &AtomicU64| n.load(Ordering::Relaxed);
                        (count(&sparse.fetches), count(&sparse.in_flight))
                    }),
                }
            })
            .collect();
        drop(active);
        views.sort_by_key(|view| std::cmp::Reverse(view.elapsed));
        views
    }

    /// Forgets the recent fill of `id`: its entry was removed.
    pub fn forget(&self, id: u128) {
        self.recent.remove(&id);
    }

    /// Forgets every recent fill (a flush).
    pub fn forget_all(&self) {
        self.forgetting.fetch_add(1, Ordering::AcqRel);
    }

    fn end(&self, id: u128, tag: u64, done: bool) {
        if done {
            let epoch = self.forgetting.load(Ordering::Acquire);
            self.recent.put(&id, epoch, Some(RECENT));
        }
        let mut active = self.active.lock().expect("fills lock");
        if let Some(fills) = active.get_mut(&id) {
            fills.retain(|f| f.tag != tag);
            if fills.is_empty() {
                active.remove(&id);
            }
        }
    }
}

/// The writer's side of a registered fill. Dropped without [`Self::done`],
/// it tells every follower that the fill failed.
pub struct FillHandle {
    fills: &'static Fills,
    id: u128,
    fill: Arc<Fill>,
    ended: bool,
}

impl FillHandle {
    pub fn tag_bytes(&self) -> [u8; 8] {
        self.fill.tag.to_be_bytes()
    }

    /// Keeps a chunk in memory for readers: before any spill, or after
    /// storing failed.
    pub fn append(&self, chunk: bytes::Bytes) {
        match &mut *self.fill.data.lock() {
            FillData::Memory(chunks) | FillData::Tail { chunks, .. } => chunks.push(chunk),
            FillData::File { .. } => {}
        }
    }

    /// Keeps `chunk`, just written at `at` to the spilled fill's file, for
    /// the readers at the head.
    pub fn recent(&self, at: u64, chunk: bytes::Bytes) {
        if let FillData::File { recent, .. } = &mut *self.fill.data.lock() {
            recent.push(at, chunk);
        }
    }

    /// Storing failed after `stored` bytes: readers read those from the
    /// staging file, and what [`Self::append`] keeps after them.
    pub fn keep_tail(&self, stored: u64) {
        let mut data = self.fill.data.lock();
        if let FillData::File { file, .. } = &*data {
            let file = file.clone();
            *data = FillData::Tail {
                file,
                stored,
                chunks: Vec::new(),
            };
        }
    }

    /// From now on, readers read `file`, which holds every byte so far:
    /// `held`, the chunks kept in memory until now, from offset 0.
    pub fn spill(&self, file: Arc<std::fs::File>, held: &[bytes::Bytes]) {
        let mut recent = Recent::default();
        for chunk in held {
            recent.push(recent.end(), chunk.clone());
        }
        *self.fill.data.lock() = FillData::File { file, recent };
    }

    /// Makes the fill one assembled from ranges: readers of a range may
    /// read past the prefix, and ask for the bytes they wait on.
    pub fn make_sparse(&self, sparse: Sparse) {
        let _ = self.fill.sparse.set(sparse);
    }

    /// Upstream fetches of a fill assembled from ranges: started, and in
    /// flight.
    pub fn fetches(&self, started: u64, in_flight: u64) {
        if let Some(sparse) = self.fill.sparse.get() {
            sparse.fetches.store(started, Ordering::Relaxed);
            sparse.in_flight.store(in_flight, Ordering::Relaxed);
        }
    }

    /// The prefix readers may read is `prefix`; readers of a range may also
    /// read `spans`.
    pub fn written_sparse(&self, prefix: u64, spans: Vec<Range<u64>>) {
        if let Some(sparse) = self.fill.sparse.get() {
            *sparse.spans.lock() = spans;
        }
        self.written(prefix);
    }

    pub fn written(&self, bytes: u64) {
        let since_start = self.fill.started.elapsed().as_millis() as u64;
        self.fill
            .last_write_ms
            .store(since_start, Ordering::Relaxed);
        self.fill.progress.send_replace(Progress::Writing(bytes));
    }

    /// The fill is committed: followers read to `bytes` and end.
    pub fn done(self, bytes: u64) {
        self.end(bytes, true);
    }

    /// The body is whole but was not kept: followers still read to `bytes`
    /// and end, and the next request fetches it anew.
    pub fn done_unstored(self, bytes: u64) {
        self.end(bytes, false);
    }

    fn end(mut self, bytes: u64, committed: bool) {
        self.fill.progress.send_replace(Progress::Done(bytes));
        self.fills.end(self.id, self.fill.tag, committed);
        self.ended = true;
    }
}

impl Drop for FillHandle {
    fn drop(&mut self) {
        if !self.ended {
            self.fill.progress.send_replace(Progress::Failed);
            self.fills.end(self.id, self.fill.tag, false);
        }
    }
}

/// The tag a miss handler hands pingora, back as a number.
pub fn tag_of(bytes: Option<&[u8]>) -> Option<u64> {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

/// A reader of a fill in progress.
pub struct PartialHit {
    fill: Arc<Fill>,
    progress: watch::Receiver<Progress>,
    position: u64,
    /// One past the last byte wanted (set by `seek`); `None`: to the end.
    end: Option<u64>,
    /// A reader of a range that starts past 0: it may read bytes written
    /// past the prefix, which a whole body's reader never needs, and which
    /// may include the last byte before the fill's digest check.
    ranged: bool,
    /// The byte this reader last asked the fill for.
    asked: Option<u64>,
}

fn fill_error(what: &str) -> Box<Error> {
    Error::explain(ErrorType::ReadError, format!("cache fill {what}"))
}

impl PartialHit {
    /// Waits until bytes past `position` exist; returns how far they reach,
    /// or `None` at the end of the body.
    async fn available(&mut self) -> Result<Option<u64>> {
        loop {
            let progress = *self.progress.borrow_and_update();
            let reach = match progress {
                Progress::Failed => return Err(fill_error("failed; nothing was committed")),
                Progress::Done(size) => {
                    let end = self.end.map_or(size, |e| e.min(size));
                    return Ok((self.position < end).then_some(end));
                }
                Progress::Writing(written) => written,
            };
            if self.end.is_some_and(|end| self.position >= end) {
                return Ok(None);
            }
            let end = self.end.map_or(reach, |e| e.min(reach));
            if end > self.position {
                return Ok(Some(end));
            }
            if let Some(reach) = self.past_prefix() {
                return Ok(Some(self.end.map_or(reach, |e| e.min(reach))));
            }
            if self.progress.changed().await.is_err() {
                // The writer vanished without saying done or failed.
                return Err(fill_error("writer vanished"));
            }
        }
    }
}

impl PartialHit {
    /// For a reader of a range: how far the bytes written at its position
    /// past the prefix reach; when there are none, asks the fill for them.
    fn past_prefix(&mut self) -> Option<u64> {
        let sparse = self.fill.sparse.get().filter(|_| self.ranged)?;
        let reach = sparse.reach(self.position);
        if reach.is_none() && self.asked != Some(self.position) {
            self.asked = Some(self.position);
            (sparse.want)(self.position);
        }
        reach
    }

    /// Continues a whole body from `position` (a client whose response
    /// was cut): it reads the prefix only, like every reader of a whole body.
    pub fn continue_at(&mut self, position: u64) {
        self.position = position;
    }
}

#[async_trait::async_trait]
impl HandleHit for PartialHit {
    async fn read_body(&mut self) -> Result<Option<bytes::Bytes>> {
        let Some(reach) = self.available().await? else {
            return Ok(None);
        };
        let want = (reach - self.position).min(READ_CHUNK) as usize;
        let chunk = self
            .fill
            .data
            .lock()
            .read(self.position, want)
            .map_err(|e| {
                Error::explain(ErrorType::ReadError, format!("reading cache fill: {e}"))
            })?;
        self.position += chunk.len() as u64;
        Ok(Some(chunk))
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
        self.position = start as u64;
        self.end = end.map(|e| e as u64);
        self.ranged = start > 0;
        Ok(())
    }

    fn should_count_access(&self) -> bool {
        false
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
// Written spans are lists of ranges, often of one.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use std::io::Write;

    fn meta() -> CacheMeta {
        let header = pingora::http::ResponseHeader::build(200, None).unwrap();
        let now = std::time::SystemTime::now();
        CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header)
    }

    fn fills() -> &'static Fills {
        Box::leak(Box::default())
    }

    fn about() -> FillAbout {
        FillAbout {
            remote: "r".into(),
            path: "big.bin".into(),
            expected: Some(10),
        }
    }

    #[tokio::test]
    async fn fills_in_progress_show_their_bytes_and_followers() {
        let fills = fills();
        let handle = fills.start(5, &meta(), about());
        let (_, _reader) = fills.reader(5, None).unwrap();
        handle.append(bytes::Bytes::from_static(b"abcd"));
        handle.written(4);
        let views = fills.in_progress();
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].about, about());
        assert_eq!((views[0].written, views[0].followers), (4, 1));
        assert!(views[0].idle <= views[0].elapsed);
        handle.done(4);
        assert!(fills.in_progress().is_empty());
    }

    #[tokio::test]
    async fn a_follower_reads_bytes_as_they_are_written_and_ends_on_done() {
        let fills = fills();
        let handle = fills.start(7, &meta(), about());
        let (_, mut reader) = fills.reader(7, None).unwrap();
        handle.append(bytes::Bytes::from_static(b"hello "));
        handle.written(6);
        assert_eq!(reader.read_body().await.unwrap().unwrap(), "hello ");
        let next = tokio::spawn(async move {
            let second = reader.read_body().await.unwrap().unwrap();
            let end = reader.read_body().await.unwrap();
            (second, end)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The fill outgrows memory: readers continue from the file.
        let file = Arc::new(tempfile::tempfile().unwrap());
        (&*file).write_all(b"hello world").unwrap();
        handle.spill(file, &[bytes::Bytes::from_static(b"hello ")]);
        handle.written(11);
        handle.done(11);
        let (second, end) = next.await.unwrap();
        assert_eq!(second, "world");
        assert_eq!(end, None);
        assert!(fills.known(7), "remembered after the commit");
        assert!(fills.reader(7, None).is_none());
    }

    #[tokio::test]
    async fn a_reader_at_the_head_of_a_spilled_fill_gets_the_chunk_written_not_a_copy() {
        let fills = fills();
        let handle = fills.start(11, &meta(), about());
        let chunks: Vec<bytes::Bytes> = (0..4u8)
            .map(|i| bytes::Bytes::from(vec![i; 200 * 1024]))
            .collect();
        let file = Arc::new(tempfile::tempfile().unwrap());
        (&*file).write_all(&chunks[0]).unwrap();
        handle.spill(file.clone(), &chunks[..1]);
        let mut at = chunks[0].len() as u64;
        for chunk in &chunks[1..] {
            (&*file).write_all(chunk).unwrap();
            handle.recent(at, chunk.clone());
            at += chunk.len() as u64;
        }
        handle.written(at);

        // The first two chunks left the window: read back from the file.
        let (_, mut behind) = fills.reader(11, None).unwrap();
        let read = behind.read_body().await.unwrap().unwrap();
        assert_eq!(read.len() as u64, READ_CHUNK);
        assert_eq!(&read[..200 * 1024], &chunks[0][..]);
        assert_eq!(&read[200 * 1024..], &chunks[1][..read.len() - 200 * 1024]);

        let (_, mut head) = fills.reader(11, None).unwrap();
        head.continue_at(500 * 1024);
        let read = head.read_body().await.unwrap().unwrap();
        assert_eq!(&read[..], &chunks[2][100 * 1024..]);
        assert_eq!(
            read.as_ptr(),
            chunks[2][100 * 1024..].as_ptr(),
            "a slice, not a copy"
        );
        handle.done(at);
    }

    #[test]
    fn the_window_of_recent_chunks_starts_anew_at_a_chunk_out_of_order() {
        let mut recent = Recent::default();
        recent.push(0, bytes::Bytes::from_static(b"0123"));
        recent.push(4, bytes::Bytes::from_static(b"4567"));
        assert_eq!(recent.read(2, 10).unwrap(), "23");
        assert_eq!(recent.read(5, 2).unwrap(), "56");
        recent.push(100, bytes::Bytes::from_static(b"abc"));
        assert!(recent.read(2, 10).is_none());
        assert!(recent.read(103, 10).is_none());
        assert_eq!(recent.read(101, 10).unwrap(), "bc");
    }

    #[tokio::test]
    async fn a_dropped_fill_is_an_error_for_its_followers_never_an_end() {
        let fills = fills();
        let handle = fills.start(9, &meta(), about());
        let tag = u64::from_be_bytes(handle.tag_bytes());
        let (_, mut reader) = fills.reader(9, Some(tag)).unwrap();
        handle.append(bytes::Bytes::from_static(b"part"));
        handle.written(4);
        assert_eq!(reader.read_body().await.unwrap().unwrap(), "part");
        drop(handle);
        assert!(reader.read_body().await.is_err());
        assert!(!fills.known(9), "a failed fill is not remembered");
    }

    #[tokio::test]
    async fn a_seek_waits_for_its_range_and_stops_at_its_end() {
        let fills = fills();
        let handle = fills.start(3, &meta(), about());
        let (_, mut reader) = fills.reader(3, None).unwrap();
        reader.seek(4, Some(8)).unwrap();
        handle.append(bytes::Bytes::from_static(b"0123"));
        handle.written(4);
        let read = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(chunk) = reader.read_body().await.unwrap() {
                got.extend_from_slice(&chunk);
            }
            got
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        handle.append(bytes::Bytes::from_static(b"45"));
        handle.append(bytes::Bytes::from_static(b"6789"));
        handle.written(10);
        assert_eq!(read.await.unwrap(), b"4567");
        drop(handle);
    }

    #[tokio::test]
    async fn a_reader_of_a_range_reads_past_the_prefix_and_asks_for_what_is_missing() {
        let fills = fills();
        let handle = fills.start(11, &meta(), about());
        let asked = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let asks = asked.clone();
        handle.make_sparse(Sparse::new(Box::new(move |at| asks.lock().push(at))));
        let file = Arc::new(tempfile::tempfile().unwrap());
        file.write_all_at(b"0123456789", 0).unwrap();
        handle.spill(file, &[]);
        // Bytes 0-1 and 6-9 are written, 2-5 are not.
        handle.written_sparse(2, vec![6..10]);
        let (_, mut footer) = fills.reader(11, None).unwrap();
        footer.seek(6, None).unwrap();
        assert_eq!(footer.read_body().await.unwrap().unwrap(), "6789");
        let (_, mut middle) = fills.reader(11, None).unwrap();
        middle.seek(3, Some(5)).unwrap();
        let read = tokio::spawn(async move { middle.read_body().await.unwrap().unwrap() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            *asked.lock(),
            vec![3],
            "the reader asked for its first byte"
        );
        handle.written_sparse(2, vec![3..10]);
        assert_eq!(read.await.unwrap(), "34");
        // A whole body's reader never reads past the prefix.
        let (_, mut whole) = fills.reader(11, None).unwrap();
        assert_eq!(whole.read_body().await.unwrap().unwrap(), "01");
        let blocked = tokio::time::timeout(Duration::from_millis(20), whole.read_body()).await;
        assert!(blocked.is_err(), "it waits for the prefix");
        assert_eq!(asked.lock().len(), 1, "and asks for nothing");
        handle.done(10);
    }
}
