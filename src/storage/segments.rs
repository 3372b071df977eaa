//! Records in append-only segment files, on a local store.
//!
//! A record file per entry costs a file create and a rename on every fill
//! and an open, a read and a close on every hit whose record is not in
//! memory; at millions of entries that is millions of inodes, a dentry walk
//! per cold hit and a start that cannot afford to look at them. On a local
//! store records therefore go into segments,
//! `cache/{remote}/segments/{number:08x}.seg`: runs of frames, appended
//! and never rewritten. The index slot holds a frame's location (segment
//! number and offset), so a cold hit is one `pread` on a descriptor kept
//! open.
//!
//! A frame is a 32-byte header (magic, kind, payload length, entry id, a
//! CRC-32 of all of them and of the payload) and its payload. A frame is
//! trusted only whole and matching its CRC, so a tail torn by a crash reads
//! as the end of its segment; nothing in it was committed, because the
//! index learns of a record only after its frame is written. A removal
//! appends a tombstone, so that recovery does not bring back an entry
//! removed just before a crash.
//!
//! Segments are per remote, so a flush of a remote deletes them with the
//! rest of its directory. Each counts the entries whose current record it
//! holds and an estimate of their bytes: a sealed segment with none left is
//! deleted, and one with less than half its length live is compacted (its
//! live frames appended anew, the index pointed at the copies) until it
//! empties.

use super::body::fs::{create_new, open_for_reading, read_cached};
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const MAGIC: &[u8; 4] = b"ADS1";
/// Bytes of a frame's header.
pub const HEADER: usize = 32;
/// What a cold read asks for beyond the record's inline body: a stored
/// head rarely needs more, so most cold hits are a single read.
const HEAD_ALLOWANCE: usize = 1536;
/// A typical stored head (status, headers, freshness, body info).
const HEAD_ESTIMATE: u64 = 512;
const DIR: &str = "segments";
/// Segment numbers a starting process leaves to the one it replaces.
const UPGRADE_GAP: u64 = 1024;
const SUFFIX: &str = ".seg";

/// What a frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The payload is the entry's record.
    Record = 1,
    /// The entry was removed (no payload).
    Removed = 2,
}

/// A frame read back by a scan.
#[derive(Debug, Clone)]
pub struct Frame {
    pub location: u64,
    pub kind: Kind,
    pub id: u128,
    pub payload: Bytes,
}

/// A segment location: segment number in the high half, offset in the low.
/// Numbers start at 1, so no location is 0 (a slot's "no segment").
pub fn location(number: u32, offset: u64) -> u64 {
    (number as u64) << 32 | offset
}

pub fn number_of(location: u64) -> u32 {
    (location >> 32) as u32
}

fn offset_of(location: u64) -> u64 {
    location & 0xffff_ffff
}

/// The bytes an entry with `in_record` bytes of body in its record is
/// taken to occupy in its segment, for deciding when to compact (the exact
/// length of a record is not kept).
fn estimate(in_record: u64) -> u64 {
    HEADER as u64 + HEAD_ESTIMATE + in_record
}

/// A frame's header for the payload made of `parts`: magic, kind, length,
/// id and the CRC of all but the magic and the payload.
fn frame_header(kind: Kind, id: u128, parts: &[&[u8]]) -> [u8; HEADER] {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(MAGIC);
    header[4] = kind as u8;
    header[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    header[12..28].copy_from_slice(&id.to_le_bytes());
    let crc = checksum(&header[4..28], parts);
    header[28..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Writes `header` then the payload's `parts` at `offset` with `pwritev`,
/// so neither a record nor the fill's chunks of a body inside it are
/// copied into one frame buffer first.
fn write_frame_at(file: &File, header: &[u8], parts: &[&[u8]], offset: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let all: Vec<&[u8]> = std::iter::once(header)
        .chain(parts.iter().copied())
        .filter(|part| !part.is_empty())
        .collect();
    let total: usize = all.iter().map(|part| part.len()).sum();
    let mut written = 0;
    while written < total {
        // The parts from `written` on: whole ones skipped, the first cut.
        let mut skip = written;
        let iovecs: Vec<libc::iovec> = all
            .iter()
            .filter_map(|part| {
                let rest = part.get(skip.min(part.len())..).unwrap_or_default();
                skip = skip.saturating_sub(part.len());
                (!rest.is_empty()).then_some(libc::iovec {
                    iov_base: rest.as_ptr() as *mut libc::c_void,
                    iov_len: rest.len(),
                })
            })
            .collect();
        let count = libc::c_int::try_from(iovecs.len().min(libc::UIO_MAXIOV as usize))
            .map_err(|_| io::Error::other("too many frame parts"))?;
        let at = libc::off_t::try_from(offset + written as u64)
            .map_err(|_| io::Error::other("segment offset out of range"))?;
        // SAFETY: every iovec points into a slice that outlives the call,
        // and the descriptor is `file`'s, open for as long as it lives.
        let n = unsafe { libc::pwritev(file.as_raw_fd(), iovecs.as_ptr(), count, at) };
        match n {
            n if n > 0 => written += n as usize,
            0 => return Err(io::ErrorKind::WriteZero.into()),
            _ => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
    Ok(())
}

fn checksum(header: &[u8], parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header);
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

/// A header's kind, payload length and id, if it is one.
fn header(bytes: &[u8]) -> Option<(Kind, usize, u128)> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return None;
    }
    let kind = match bytes[4] {
        1 => Kind::Record,
        2 => Kind::Removed,
        _ => return None,
    };
    let len = u32::from_le_bytes(bytes[8..12].try_into().ok()?) as usize;
    let id = u128::from_le_bytes(bytes[12..28].try_into().ok()?);
    Some((kind, len, id))
}

/// The frame at the start of `bytes` if it is whole and its CRC matches:
/// kind, id and the payload's range in `bytes`.
fn whole(bytes: &[u8]) -> Option<(Kind, u128, std::ops::Range<usize>)> {
    let (kind, len, id) = header(bytes)?;
    let payload = bytes.get(HEADER..HEADER + len)?;
    let crc = u32::from_le_bytes(bytes[28..32].try_into().ok()?);
    (checksum(&bytes[4..28], &[payload]) == crc).then_some((kind, id, HEADER..HEADER + len))
}

/// One segment file.
struct Segment {
    number: u32,
    remote: String,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes written: where the next frame goes.
    len: AtomicU64,
    /// Entries whose current record is here, and their estimated bytes.
    live: AtomicU64,
    live_bytes: AtomicU64,
    /// No longer appended to.
    sealed: AtomicBool,
}

/// A sealed segment's length and its live bytes (estimated).
#[derive(Debug, Clone, Copy)]
pub struct SealedSegment {
    pub number: u32,
    pub len: u64,
    live: u64,
}

impl SealedSegment {
    fn dead(&self) -> u64 {
        self.len.saturating_sub(self.live)
    }
}

/// Every segment of the store, and the one each remote appends to.
pub struct Segments {
    root: PathBuf,
    segment_max: u64,
    next: AtomicU64,
    all: RwLock<HashMap<u32, Arc<Segment>>>,
    active: Mutex<HashMap<String, Arc<Segment>>>,
}

impl Segments {
    /// The segments under the store `root`, all sealed: a process appends
    /// only to segments it created, each until it is `segment_max` long.
    pub fn open(root: &Path, segment_max: u64) -> io::Result<Segments> {
        let mut all = HashMap::new();
        let cache = root.join("cache");
        let remotes = match std::fs::read_dir(&cache) {
            Ok(entries) => entries.collect::<io::Result<Vec<_>>>()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        for remote in remotes {
            let remote_name = remote.file_name().to_string_lossy().into_owned();
            let dir = remote.path().join(DIR);
            let Ok(files) = std::fs::read_dir(&dir) else {
                continue;
            };
            for file in files {
                let path = file?.path();
                let Some(number) = path
                    .file_name()
                    .and_then(|n| n.to_str()?.strip_suffix(SUFFIX))
                    .and_then(|n| u32::from_str_radix(n, 16).ok())
                else {
                    continue;
                };
                let file = open_for_reading(&path)?;
                let len = file.metadata()?.len();
                let segment = Segment::new(number, remote_name.clone(), path, file, len);
                segment.sealed.store(true, Ordering::Relaxed);
                all.insert(number, Arc::new(segment));
            }
        }
        // Past a gap: during a graceful upgrade the old process still
        // creates segments for a few seconds, numbered from where it was.
        let next = all.keys().max().map_or(1, |n| *n as u64 + 1 + UPGRADE_GAP);
        Ok(Segments {
            root: root.to_path_buf(),
            segment_max,
            next: AtomicU64::new(next),
            all: RwLock::new(all),
            active: Mutex::default(),
        })
    }

    /// Appends a frame to `remote`'s segment; its location. The bytes are
    /// in the page cache, not necessarily on disk (see [`Self::sync`]).
    pub fn append(&self, remote: &str, kind: Kind, id: u128, payload: &[u8]) -> io::Result<u64> {
        self.append_parts(remote, kind, id, &[payload])
    }

    /// [`Segments::append`] of the payload made of `parts` in turn.
    pub fn append_parts(
        &self,
        remote: &str,
        kind: Kind,
        id: u128,
        parts: &[&[u8]],
    ) -> io::Result<u64> {
        let header = frame_header(kind, id, parts);
        let payload_len: usize = parts.iter().map(|part| part.len()).sum();
        let frame_len = (HEADER + payload_len) as u64;
        let mut active = self.active.lock();
        let current = active.get(remote).filter(|segment| {
            let len = segment.len.load(Ordering::Relaxed);
            len == 0 || len + frame_len <= self.segment_max
        });
        let segment = match current {
            Some(segment) => segment.clone(),
            None => {
                let segment = self.create(remote)?;
                if let Some(full) = active.insert(remote.to_string(), segment.clone()) {
                    self.seal(&full);
                }
                segment
            }
        };
        let offset = segment.len.load(Ordering::Relaxed);
        // A failed write leaves `len` where it was: the next frame
        // overwrites whatever part of this one reached the file.
        write_frame_at(&segment.file, &header, parts, offset)
            .map_err(|e| with_path(&segment.path, e))?;
        segment.len.store(offset + frame_len, Ordering::Release);
        Ok(location(segment.number, offset))
    }

    fn create(&self, remote: &str) -> io::Result<Arc<Segment>> {
        let dir = self.root.join("cache").join(remote).join(DIR);
        std::fs::create_dir_all(&dir).map_err(|e| with_path(&dir, e))?;
        let (number, path, file) = loop {
            let number = u32::try_from(self.next.fetch_add(1, Ordering::Relaxed))
                .map_err(|_| io::Error::other("segment numbers exhausted"))?;
            let path = dir.join(format!("{number:08x}{SUFFIX}"));
            match create_new(&path) {
                Ok(file) => break (number, path, file),
                // Another process took the number: take the next.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        };
        let segment = Arc::new(Segment::new(number, remote.to_string(), path, file, 0));
        self.all.write().insert(number, segment.clone());
        Ok(segment)
    }

    fn seal(&self, segment: &Segment) {
        segment.sealed.store(true, Ordering::Release);
        self.delete_if_empty(segment);
    }

    fn get(&self, number: u32) -> Option<Arc<Segment>> {
        self.all.read().get(&number).cloned()
    }

    /// Makes what was appended at `location` durable (with its directory
    /// entry, for a segment's first frame). Blocking.
    pub fn sync(&self, location: u64) -> io::Result<()> {
        let Some(segment) = self.get(number_of(location)) else {
            return Ok(());
        };
        segment.file.sync_data()?;
        if offset_of(location) == 0 {
            if let Some(dir) = segment.path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(())
    }

    /// Whether the segment of `location` exists.
    pub fn holds(&self, location: u64) -> bool {
        self.all.read().contains_key(&number_of(location))
    }

    /// The record of entry `id` at `location` if the page cache holds it;
    /// `None` when reading would wait, or the frame is not that entry's
    /// record. `inline` is the size of a body kept in the record.
    pub fn read_now(&self, location: u64, id: u128, inline: u64) -> Option<Bytes> {
        let segment = self.get(number_of(location))?;
        read_frame(&segment.file, location, id, inline, read_cached)
    }

    /// `look` at the record of entry `id` at `location` if the page cache
    /// holds it, read into a buffer the thread reuses; `None` as with
    /// [`Self::read_now`].
    pub fn with_record_now<R>(
        &self,
        location: u64,
        id: u128,
        inline: u64,
        look: impl FnOnce(&[u8]) -> Option<R>,
    ) -> Option<R> {
        let segment = self.get(number_of(location))?;
        READ_BUFFER.with(|cell| {
            let mut fresh = Vec::new();
            let mut kept = cell.try_borrow_mut();
            let buf = kept.as_deref_mut().unwrap_or(&mut fresh);
            let payload = read_frame_into(buf, &segment.file, location, id, inline, read_cached);
            let seen = payload.and_then(|payload| look(&buf[payload]));
            if buf.capacity() > KEPT_BUFFER_MAX {
                *buf = Vec::new();
            }
            seen
        })
    }

    /// The record of entry `id` at `location`: from the page cache when it
    /// is there, else on the blocking pool. `None` when the segment is
    /// gone or the frame is not that entry's record.
    pub async fn read(&self, location: u64, id: u128, inline: u64) -> io::Result<Option<Bytes>> {
        let Some(segment) = self.get(number_of(location)) else {
            return Ok(None);
        };
        if let Some(record) = read_frame(&segment.file, location, id, inline, read_cached) {
            return Ok(Some(record));
        }
        let file = segment.file.clone();
        tokio::task::spawn_blocking(move || {
            Ok(read_frame(&file, location, id, inline, |f, buf, at| {
                f.read_at(buf, at).ok()
            }))
        })
        .await
        .map_err(io::Error::other)?
    }

    /// The storage root the segments live under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where recovery would start for `remote` if the node stopped now:
    /// the segment it appends to, or the next number when it has none.
    pub fn floor(&self, remote: &str) -> u32 {
        match self.active.lock().get(remote) {
            Some(segment) => segment.number,
            None => self.next.load(Ordering::Relaxed).min(u32::MAX as u64) as u32,
        }
    }

    /// Forgets every count (an index load that is being undone).
    pub fn uncount_all(&self) {
        for segment in self.all.read().values() {
            segment.live.store(0, Ordering::Relaxed);
            segment.live_bytes.store(0, Ordering::Relaxed);
        }
    }

    /// Counts an entry whose current record is at `location`, with
    /// `in_record` bytes of its body inside the record (0 when the body
    /// has a file of its own: the segment holds only the head).
    pub fn count(&self, location: u64, in_record: u64) {
        if let Some(segment) = self.get(number_of(location)) {
            segment.live.fetch_add(1, Ordering::Relaxed);
            segment
                .live_bytes
                .fetch_add(estimate(in_record), Ordering::Relaxed);
        }
    }

    /// Uncounts an entry whose record was at `location` (`in_record` as
    /// [`Segments::count`] was given it); a sealed segment left with no
    /// entries is deleted.
    pub fn release(&self, location: u64, in_record: u64) {
        let Some(segment) = self.get(number_of(location)) else {
            return;
        };
        let dec = |n: u64, by: u64| Some(n.saturating_sub(by));
        let _ = segment
            .live_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                dec(n, estimate(in_record))
            });
        let _ = segment
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| dec(n, 1));
        self.delete_if_empty(&segment);
    }

    fn delete_if_empty(&self, segment: &Segment) {
        if !segment.sealed.load(Ordering::Acquire) || segment.live.load(Ordering::Acquire) > 0 {
            return;
        }
        if self.all.write().remove(&segment.number).is_none() {
            return;
        }
        // Readers holding the descriptor finish; the space comes back
        // when they let go.
        match std::fs::remove_file(&segment.path) {
            Ok(()) => log::debug!("deleted empty segment {}", segment.path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("deleting {}: {e}", segment.path.display()),
        }
    }

    /// Deletes every sealed segment no entry uses (after the index is
    /// rebuilt, for segments whose entries all went while the node was
    /// down or whose frames were never committed).
    pub fn delete_unused(&self) {
        let segments: Vec<_> = self.all.read().values().cloned().collect();
        for segment in segments {
            self.delete_if_empty(&segment);
        }
    }

    /// Forgets the segments of `remote` (or all), which a flush deleted:
    /// the next append starts a new one.
    pub fn forget(&self, remote: Option<&str>) {
        let matches = |segment: &Segment| remote.is_none_or(|r| segment.remote == r);
        self.active.lock().retain(|_, segment| !matches(segment));
        self.all.write().retain(|_, segment| !matches(segment));
    }

    /// Sealed segments less than half live, worth compacting.
    pub fn sparse(&self) -> Vec<u32> {
        let mut sparse: Vec<_> = self
            .sealed()
            .into_iter()
            .filter(|s| s.live * 2 < s.len)
            .map(|s| s.number)
            .collect();
        sparse.sort_unstable();
        sparse
    }

    /// Sealed segments at least a quarter dead by their estimates, the
    /// most dead bytes first: where compacting gives disk space back
    /// soonest when free space is short.
    pub fn reclaimable(&self) -> Vec<SealedSegment> {
        let mut found: Vec<_> = self
            .sealed()
            .into_iter()
            .filter(|s| s.dead() * 4 >= s.len && s.dead() > 0)
            .collect();
        found.sort_unstable_by_key(|s| (std::cmp::Reverse(s.dead()), s.number));
        found
    }

    /// Whether segment `number` is still there (compaction deletes a
    /// segment once nothing lives in it).
    pub fn exists(&self, number: u32) -> bool {
        self.get(number).is_some()
    }

    fn sealed(&self) -> Vec<SealedSegment> {
        self.all
            .read()
            .values()
            .filter(|s| s.sealed.load(Ordering::Acquire))
            .map(|s| SealedSegment {
                number: s.number,
                len: s.len.load(Ordering::Relaxed),
                live: s.live_bytes.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Remote and numbers of every segment, oldest first.
    pub fn listed(&self) -> Vec<(String, u32)> {
        let mut listed: Vec<_> = self
            .all
            .read()
            .values()
            .map(|s| (s.remote.clone(), s.number))
            .collect();
        listed.sort_unstable_by_key(|(_, number)| *number);
        listed
    }

    /// The remote a segment belongs to.
    pub fn remote_of(&self, number: u32) -> Option<String> {
        self.get(number).map(|s| s.remote.clone())
    }

    /// Every whole frame of segment `number`, in order, up to the first
    /// that is not (a torn tail). Blocking: reads the whole segment.
    pub fn scan(&self, number: u32) -> io::Result<Vec<Frame>> {
        let Some(segment) = self.get(number) else {
            return Ok(Vec::new());
        };
        let len = segment.len.load(Ordering::Acquire) as usize;
        let mut bytes = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match segment.file.read_at(&mut bytes[filled..], filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(with_path(&segment.path, e)),
            }
        }
        bytes.truncate(filled);
        let bytes = Bytes::from(bytes);
        let mut frames = Vec::new();
        let mut at = 0;
        while let Some((kind, id, payload)) = whole(&bytes[at..]) {
            frames.push(Frame {
                location: location(number, at as u64),
                kind,
                id,
                payload: bytes.slice(at + payload.start..at + payload.end),
            });
            at += payload.end;
        }
        Ok(frames)
    }
}

impl Segment {
    fn new(number: u32, remote: String, path: PathBuf, file: File, len: u64) -> Segment {
        Segment {
            number,
            remote,
            path,
            file: Arc::new(file),
            len: AtomicU64::new(len),
            live: AtomicU64::new(0),
            live_bytes: AtomicU64::new(0),
            sealed: AtomicBool::new(false),
        }
    }
}

/// Reads the frame at `location` with `read` (which may stop short), in
/// one call when the record is no longer than its inline body and
/// [`HEAD_ALLOWANCE`]; its payload if it is entry `id`'s whole record.
fn read_frame(
    file: &File,
    location: u64,
    id: u128,
    inline: u64,
    read: impl Fn(&File, &mut [u8], u64) -> Option<usize>,
) -> Option<Bytes> {
    let mut buf = Vec::new();
    let payload = read_frame_into(&mut buf, file, location, id, inline, read)?;
    Some(Bytes::from(buf).slice(payload))
}

/// [`read_frame`] into `buf`: where in it the payload is.
fn read_frame_into(
    buf: &mut Vec<u8>,
    file: &File,
    location: u64,
    id: u128,
    inline: u64,
    read: impl Fn(&File, &mut [u8], u64) -> Option<usize>,
) -> Option<std::ops::Range<usize>> {
    let offset = offset_of(location);
    let first = HEADER + HEAD_ALLOWANCE + inline as usize;
    // A reused buffer is grown but never cleared: zeroing it on every hit
    // cost more than the rest of the read's user time, and nothing past
    // what the reads return (an earlier record's bytes) is looked at.
    grow(buf, first);
    let mut got = read(file, &mut buf[..first], offset)?;
    let (kind, len, found) = header(&buf[..got])?;
    if kind != Kind::Record || found != id {
        return None;
    }
    if got < HEADER + len {
        grow(buf, HEADER + len);
        got += read(file, &mut buf[got..HEADER + len], offset + got as u64)?;
    }
    let (_, _, payload) = whole(&buf[..got])?;
    Some(payload)
}

fn grow(buf: &mut Vec<u8>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0);
    }
}

thread_local! {
    /// The buffer [`Segments::with_record_now`] reads into: a hit that
    /// only looks at its record allocates nothing for the read.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A reused read buffer grows to the largest record read on its thread;
/// one larger than this is let go after use.
const KEPT_BUFFER_MAX: usize = 64 << 10;

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn blocking_read(segments: &Segments, location: u64, id: u128) -> Option<Bytes> {
        let segment = segments.get(number_of(location))?;
        read_frame(&segment.file, location, id, 0, |f, buf, at| {
            f.read_at(buf, at).ok()
        })
    }

    #[test]
    fn appended_records_read_back_by_location_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let segments = Segments::open(dir.path(), 64 << 20).unwrap();
        let small = segments.append("r", Kind::Record, 7, b"seven").unwrap();
        // Longer than the first read: a second read completes it.
        let long = vec![9u8; HEAD_ALLOWANCE * 3];
        let large = segments.append("r", Kind::Record, 8, &long).unwrap();
        assert_eq!(number_of(small), number_of(large));
        assert_eq!(blocking_read(&segments, small, 7).unwrap(), &b"seven"[..]);
        assert_eq!(blocking_read(&segments, large, 8).unwrap(), long);
        assert!(
            blocking_read(&segments, small, 8).is_none(),
            "another entry's"
        );
        let removed = segments.append("r", Kind::Removed, 7, b"").unwrap();
        assert!(
            blocking_read(&segments, removed, 7).is_none(),
            "a tombstone"
        );
        let other = segments.append("s", Kind::Record, 7, b"s").unwrap();
        assert_ne!(number_of(other), number_of(small), "one segment per remote");
        assert!(dir.path().join("cache/s/segments").is_dir());
    }

    #[test]
    fn a_record_read_into_a_reused_buffer_is_its_own_bytes_alone() {
        let dir = tempfile::tempdir().unwrap();
        let segments = Segments::open(dir.path(), 64 << 20).unwrap();
        let long = vec![9u8; HEAD_ALLOWANCE * 3];
        let large = segments.append("r", Kind::Record, 8, &long).unwrap();
        let small = segments.append("r", Kind::Record, 7, b"seven").unwrap();
        // The last frame of its segment: its read returns less than asked.
        let read = |location, id| segments.with_record_now(location, id, 0, |b| Some(b.to_vec()));
        for _ in 0..2 {
            assert_eq!(read(large, 8).unwrap(), long);
            assert_eq!(read(small, 7).unwrap(), b"seven");
        }
        assert!(read(small, 8).is_none(), "another entry's");
    }

    #[test]
    fn a_frame_written_from_parts_is_the_frame_of_their_concatenation() {
        let dir = tempfile::tempdir().unwrap();
        let segments = Segments::open(dir.path(), 64 << 20).unwrap();
        let parts: [&[u8]; 5] = [b"head", b"", &[1; 5000], b"x", &[2; 70_000]];
        let whole = parts.concat();
        let from_parts = segments.append_parts("r", Kind::Record, 3, &parts).unwrap();
        let from_whole = segments.append("r", Kind::Record, 3, &whole).unwrap();
        assert_eq!(blocking_read(&segments, from_parts, 3).unwrap(), whole);
        let path = segments.get(number_of(from_parts)).unwrap().path.clone();
        let file = std::fs::read(path).unwrap();
        let frame_len = HEADER + whole.len();
        let at = |location| offset_of(location) as usize;
        assert_eq!(
            file[at(from_parts)..at(from_parts) + frame_len],
            file[at(from_whole)..at(from_whole) + frame_len],
            "same header, same CRC, same bytes"
        );
    }

    #[test]
    fn a_torn_or_corrupt_tail_ends_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let segments = Segments::open(dir.path(), 64 << 20).unwrap();
        let first = segments.append("r", Kind::Record, 1, b"one").unwrap();
        let second = segments.append("r", Kind::Record, 2, b"two").unwrap();
        let number = number_of(first);
        let path = segments.get(number).unwrap().path.clone();
        // A crash mid-write: the last frame lost its last byte.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len(len - 1).unwrap();
        drop(segments);
        let reopened = Segments::open(dir.path(), 64 << 20).unwrap();
        let frames = reopened.scan(number).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!((frames[0].id, &frames[0].payload[..]), (1, &b"one"[..]));
        assert!(blocking_read(&reopened, second, 2).is_none());
        // A flipped payload byte fails the CRC.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"X", offset_of(first) + HEADER as u64)
            .unwrap();
        assert!(blocking_read(&reopened, first, 1).is_none());
        assert!(reopened.scan(number).unwrap().is_empty());
        // A new process appends to a new segment, never after a torn tail,
        // numbered past what the process it replaces may still create.
        let next = reopened.append("r", Kind::Record, 3, b"three").unwrap();
        assert!(number_of(next) > number + UPGRADE_GAP as u32);
    }

    #[test]
    fn a_number_another_process_took_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let segments = Segments::open(dir.path(), 64 << 20).unwrap();
        let taken = dir.path().join("cache/r/segments");
        std::fs::create_dir_all(&taken).unwrap();
        std::fs::write(taken.join(format!("{:08x}{SUFFIX}", 1)), b"theirs").unwrap();
        let at = segments.append("r", Kind::Record, 1, b"mine").unwrap();
        assert_eq!(number_of(at), 2);
        assert_eq!(
            std::fs::read(taken.join(format!("{:08x}{SUFFIX}", 1))).unwrap(),
            b"theirs"
        );
    }

    #[test]
    fn full_segments_are_sealed_and_deleted_when_nothing_lives_there() {
        let dir = tempfile::tempdir().unwrap();
        let segments = Segments::open(dir.path(), 200).unwrap();
        let a = segments.append("r", Kind::Record, 1, &[1; 100]).unwrap();
        segments.count(a, 100);
        let b = segments.append("r", Kind::Record, 2, &[2; 100]).unwrap();
        segments.count(b, 100);
        assert_ne!(number_of(a), number_of(b), "the first segment was full");
        let path = segments.get(number_of(a)).unwrap().path.clone();
        assert!(path.exists());
        assert_eq!(segments.sparse(), Vec::<u32>::new());
        segments.release(a, 100);
        assert!(!path.exists(), "sealed and empty");
        assert!(!segments.holds(a));
        // The active segment stays, empty or not.
        segments.release(b, 100);
        assert!(segments.holds(b));
        segments.forget(Some("r"));
        assert!(!segments.holds(b));
    }

    #[test]
    fn a_sealed_segment_mostly_dead_is_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let segments = Segments::open(dir.path(), 5000).unwrap();
        let mut first = Vec::new();
        for id in 0..4u128 {
            let at = segments.append("r", Kind::Record, id, &[0; 1000]).unwrap();
            segments.count(at, 1000);
            first.push(at);
        }
        let next = segments.append("r", Kind::Record, 9, &[0; 1000]).unwrap();
        assert_ne!(number_of(next), number_of(first[0]));
        assert_eq!(segments.sparse(), Vec::<u32>::new());
        for at in &first[..3] {
            segments.release(*at, 1000);
        }
        assert_eq!(segments.sparse(), vec![number_of(first[0])]);
        let frames = segments.scan(number_of(first[0])).unwrap();
        assert_eq!(
            frames.iter().map(|f| f.id).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(frames[3].location, first[3]);
    }

    #[test]
    fn reclaimable_segments_are_a_quarter_dead_or_more_most_dead_first() {
        let dir = tempfile::tempdir().unwrap();
        let segments = Segments::open(dir.path(), 5000).unwrap();
        // Counted so that each estimate is the frame's length exactly.
        let in_record = 1000 - HEAD_ESTIMATE;
        let mut frames = Vec::new();
        for id in 0..12u128 {
            let at = segments.append("r", Kind::Record, id, &[0; 1000]).unwrap();
            segments.count(at, in_record);
            frames.push(at);
        }
        let [a, b, c] = [0, 4, 8].map(|i| number_of(frames[i]));
        assert!(a != b && b != c, "four frames a segment");
        assert!(segments.reclaimable().is_empty(), "all live");
        segments.release(frames[0], in_record);
        for at in &frames[4..7] {
            segments.release(*at, in_record);
        }
        // The active segment is never compacted, however dead.
        for at in &frames[8..12] {
            segments.release(*at, in_record);
        }
        let numbers: Vec<u32> = segments.reclaimable().iter().map(|s| s.number).collect();
        assert_eq!(numbers, [b, a]);
        assert_eq!(
            segments.sparse(),
            [b],
            "the background compacts only the half dead"
        );
    }
}
