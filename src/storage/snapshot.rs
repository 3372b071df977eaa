//! The index in one file, so that a node holding millions of entries
//! starts without reading them from the catalog row by row (a million rows
//! took 10.9 s through sqlx; ten million would take minutes).
//!
//! On a local store with record segments, `index.snap` under the storage
//! root is written every [`EVERY`] and at a graceful stop: a temporary file
//! renamed over the last one, so a reader finds a whole snapshot or the
//! previous one. Besides every slot it names, per remote, the segment that
//! was being appended to when it was taken: whatever was committed or
//! removed afterwards is a frame in that segment or a later one, and
//! recovery reads those at start ([`super::records`]). A flush deletes the
//! snapshot (it would list what the flush deleted).
//!
//! Layout: magic, the remotes (name and floor each), fixed-size entries,
//! then their count and a CRC-32 of everything before it. The reader
//! checks the CRC as it goes and reports a bad one after the last entry,
//! so its caller undoes what it loaded and reads the catalog instead.

use super::index::Slot;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::Duration;

const MAGIC: &[u8; 8] = b"ADXSNAP1";
/// The file under the storage root.
pub const FILE: &str = "index.snap";
/// How often a running node writes one.
pub const EVERY: Duration = Duration::from_secs(600);
/// Bytes of one entry: id, body, record, size, last access, remote, flags
/// and one byte of padding.
const ENTRY: usize = 16 + 16 + 8 + 8 + 8 + 2 + 1 + 1;
/// Bytes after the entries: their count and the CRC.
const FOOTER: usize = 8 + 4;

/// Writes a snapshot of the remotes (name and recovery floor each) and the
/// entries `walk` hands out, whose `remote` indexes `remotes`. Blocking.
/// Returns how many entries it holds.
pub fn write(
    path: &Path,
    remotes: &[(String, u32)],
    walk: impl FnOnce(&mut dyn FnMut(u128, &Slot)),
) -> io::Result<u64> {
    let temporary = temporary_of(path, std::process::id());
    let written = write_to(&temporary, remotes, walk).and_then(|count| {
        std::fs::rename(&temporary, path)?;
        Ok(count)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Where process `pid` writes the snapshot that replaces `path`: one
/// file per process, as during a graceful upgrade two may write at once.
fn temporary_of(path: &Path, pid: u32) -> std::path::PathBuf {
    path.with_extension(format!("snap.{pid}.tmp"))
}

/// Deletes the temporary snapshots beside `path` of processes that are
/// gone (killed while writing): each is as large as a snapshot, 600 MB at
/// ten million entries, and is named for a process that will never come
/// back for it. A running process's file (a predecessor writing its last
/// snapshot during a graceful upgrade) is left alone.
pub fn remove_abandoned(path: &Path) {
    let (Some(dir), Some(file)) = (path.parent(), path.file_name()) else {
        return;
    };
    let Ok(listed) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in listed.flatten() {
        let name = entry.file_name();
        let writer = (name.to_str())
            .and_then(|name| name.strip_prefix(file.to_str()?))
            .and_then(|rest| rest.strip_prefix('.')?.strip_suffix(".tmp"))
            .and_then(|pid| pid.parse::<u32>().ok());
        let Some(pid) = writer else {
            continue;
        };
        if pid != std::process::id() && !super::body::fs::process_alive(pid) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => log::info!("removed an abandoned snapshot of process {pid}"),
                Err(e) => log::warn!("removing an abandoned snapshot of process {pid}: {e}"),
            }
        }
    }
}

fn write_to(
    temporary: &Path,
    remotes: &[(String, u32)],
    walk: impl FnOnce(&mut dyn FnMut(u128, &Slot)),
) -> io::Result<u64> {
    let mut out = Hashed::new(BufWriter::with_capacity(1 << 20, File::create(temporary)?));
    out.write_all(MAGIC)?;
    out.write_all(&(remotes.len() as u32).to_le_bytes())?;
    for (name, floor) in remotes {
        out.write_all(&(name.len() as u16).to_le_bytes())?;
        out.write_all(name.as_bytes())?;
        out.write_all(&floor.to_le_bytes())?;
    }
    let mut count = 0u64;
    let mut failed = None;
    walk(&mut |id, slot| {
        if failed.is_none() {
            match out.write_all(&encode(id, slot)) {
                Ok(()) => count += 1,
                Err(e) => failed = Some(e),
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    out.write_all(&count.to_le_bytes())?;
    let crc = out.hasher.clone().finalize();
    let mut file = out.inner.into_inner().map_err(|e| e.into_error())?;
    file.write_all(&crc.to_le_bytes())?;
    file.sync_all()?;
    Ok(count)
}

fn encode(id: u128, slot: &Slot) -> [u8; ENTRY] {
    let mut entry = [0u8; ENTRY];
    entry[0..16].copy_from_slice(&id.to_le_bytes());
    entry[16..32].copy_from_slice(&slot.body.to_le_bytes());
    entry[32..40].copy_from_slice(&slot.record.to_le_bytes());
    entry[40..48].copy_from_slice(&slot.size.to_le_bytes());
    entry[48..56].copy_from_slice(&slot.last_access.to_le_bytes());
    entry[56..58].copy_from_slice(&slot.remote.to_le_bytes());
    entry[58] = slot.flags;
    entry
}

fn decode(entry: &[u8; ENTRY]) -> (u128, Slot) {
    let u64_at = |at: usize| u64::from_le_bytes(entry[at..at + 8].try_into().unwrap());
    let slot = Slot {
        body: u128::from_le_bytes(entry[16..32].try_into().unwrap()),
        record: u64_at(32),
        size: u64_at(40),
        last_access: u64_at(48),
        remote: u16::from_le_bytes(entry[56..58].try_into().unwrap()),
        flags: entry[58],
    };
    (u128::from_le_bytes(entry[0..16].try_into().unwrap()), slot)
}

/// A snapshot being read: its remotes, then its entries.
pub struct Reader {
    pub remotes: Vec<(String, u32)>,
    entries: u64,
    input: Hashed<BufReader<File>>,
}

/// Opens the snapshot at `path`; `None` when there is none or it is not
/// one (too short, another magic, lengths that do not add up).
pub fn open(path: &Path) -> io::Result<Option<Reader>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut input = Hashed::new(BufReader::with_capacity(1 << 20, file));
    let mut magic = [0u8; 8];
    if input.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Ok(None);
    }
    let count = read_u32(&mut input)?;
    let mut header = (MAGIC.len() + 4) as u64;
    let mut remotes = Vec::new();
    for _ in 0..count.min(u16::MAX as u32) {
        let mut name_len = [0u8; 2];
        input.read_exact(&mut name_len)?;
        let mut name = vec![0u8; u16::from_le_bytes(name_len) as usize];
        input.read_exact(&mut name)?;
        let floor = read_u32(&mut input)?;
        header += 2 + name.len() as u64 + 4;
        remotes.push((String::from_utf8_lossy(&name).into_owned(), floor));
    }
    let body = len.checked_sub(header + FOOTER as u64);
    let Some(entries) = body
        .filter(|b| b % ENTRY as u64 == 0)
        .map(|b| b / ENTRY as u64)
    else {
        return Ok(None);
    };
    Ok(Some(Reader {
        remotes,
        entries,
        input,
    }))
}

impl Reader {
    /// Hands every entry to `each` (its `remote` indexes
    /// [`Self::remotes`]); an error after the last one when the file's
    /// count or CRC do not match what was read.
    pub fn entries(mut self, mut each: impl FnMut(u128, Slot)) -> io::Result<u64> {
        let mut entry = [0u8; ENTRY];
        for _ in 0..self.entries {
            self.input.read_exact(&mut entry)?;
            let (id, slot) = decode(&entry);
            each(id, slot);
        }
        let mut count = [0u8; 8];
        self.input.read_exact(&mut count)?;
        let crc = self.input.hasher.clone().finalize();
        let mut stored = [0u8; 4];
        self.input.inner.read_exact(&mut stored)?;
        if u64::from_le_bytes(count) != self.entries || u32::from_le_bytes(stored) != crc {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "index snapshot: count or CRC does not match",
            ));
        }
        Ok(self.entries)
    }
}

fn read_u32(input: &mut impl Read) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    input.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

/// A reader or writer that takes the CRC-32 of what passes through.
struct Hashed<T> {
    inner: T,
    hasher: crc32fast::Hasher,
}

impl<T> Hashed<T> {
    fn new(inner: T) -> Self {
        Hashed {
            inner,
            hasher: crc32fast::Hasher::new(),
        }
    }
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<(u128, Slot)> {
        (0..1000u128)
            .map(|i| {
                let slot = Slot::new(
                    u128::MAX - i,
                    i as u64 * 7,
                    (i % 3) as u16,
                    (i % 2) as u8,
                    1_700_000_000_000 + i as u64,
                )
                .in_segment((i as u64) << 32 | 64);
                (i * 0x9e37_79b9_7f4a_7c15, slot)
            })
            .collect()
    }

    fn written(dir: &Path) -> std::path::PathBuf {
        let path = dir.join(FILE);
        let remotes = vec![
            ("a".to_string(), 3),
            ("bb".to_string(), 0),
            ("c".to_string(), 9),
        ];
        let all = entries();
        let count = write(&path, &remotes, |each| {
            for (id, slot) in &all {
                each(*id, slot);
            }
        })
        .unwrap();
        assert_eq!(count, 1000);
        path
    }

    #[test]
    fn a_snapshot_reads_back_every_entry_and_remote() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path());
        let reader = open(&path).unwrap().unwrap();
        assert_eq!(
            reader.remotes,
            vec![("a".into(), 3), ("bb".into(), 0), ("c".into(), 9)]
        );
        let mut read = Vec::new();
        assert_eq!(
            reader.entries(|id, slot| read.push((id, slot))).unwrap(),
            1000
        );
        let expected = entries();
        assert_eq!(read.len(), expected.len());
        for ((id, slot), (want_id, want)) in read.iter().zip(&expected) {
            assert_eq!(id, want_id);
            assert_eq!(
                (
                    slot.body,
                    slot.record,
                    slot.size,
                    slot.last_access,
                    slot.remote,
                    slot.flags
                ),
                (
                    want.body,
                    want.record,
                    want.size,
                    want.last_access,
                    want.remote,
                    want.flags
                )
            );
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from(FILE)],
            "no temporary file left"
        );
    }

    #[test]
    fn only_the_temporaries_of_gone_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path());
        // A process that has exited: a child, waited for.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let mut running = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let ours = std::process::id();
        for pid in [gone.id(), running.id(), ours] {
            std::fs::write(temporary_of(&path, pid), b"partial").unwrap();
        }
        std::fs::write(dir.path().join("index.snap.x.tmp"), b"not ours").unwrap();
        remove_abandoned(&path);
        let _ = running.kill();
        let _ = running.wait();
        let mut left: Vec<String> = (std::fs::read_dir(dir.path()).unwrap())
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want = vec![
            FILE.to_string(),
            format!("index.snap.{}.tmp", running.id()),
            format!("index.snap.{ours}.tmp"),
            "index.snap.x.tmp".to_string(),
        ];
        want.sort();
        assert_eq!(left, want);
        assert!(open(&path).unwrap().is_some(), "the snapshot stays");
    }

    #[test]
    fn a_damaged_or_cut_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path());
        let good = std::fs::read(&path).unwrap();
        // A flipped byte in an entry: read through, refused at the end.
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let reader = open(&path).unwrap().unwrap();
        assert!(reader.entries(|_, _| {}).is_err());
        // Cut mid-entry: the lengths do not add up.
        std::fs::write(&path, &good[..good.len() - 30]).unwrap();
        assert!(open(&path).unwrap().is_none());
        // Not a snapshot at all, and none.
        std::fs::write(&path, b"hello").unwrap();
        assert!(open(&path).unwrap().is_none());
        std::fs::remove_file(&path).unwrap();
        assert!(open(&path).unwrap().is_none());
    }
}
