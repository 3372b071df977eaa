//! The filesystem body store: one root directory, keys as relative paths.
//!
//! A write goes to `staging/{pid}.{uuid}.part` and is renamed to its key on
//! commit, so a key only ever names a complete file. The staging name
//! carries the writer's pid: the sweep removes files of processes that no
//! longer exist (a `kill -9` mid-fill) and never those of a live process,
//! such as the old binary of a graceful upgrade still finishing its fills.
//!
//! Writes and small renames run inline on the calling thread, as nginx
//! writes its temp files: they land in the page cache, and a hand-off to
//! the blocking pool per chunk cost more than the write (the cold-miss
//! profile of the first engine). Creating a file is another matter: on the
//! ext4 volumes measured here it takes ~0.6 ms, more than a whole cold miss
//! of nginx. So staging files are created ahead, on the blocking pool, and
//! a write takes one from a small pool ([`StagingPool`]); only when the
//! pool runs dry is one created inline. Whole-tree walks and fsyncs go to
//! the blocking pool.

use super::{BodyStore, BodyWrite, ByteStream, Listed, Opened};
use async_trait::async_trait;
use bytes::Bytes;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The directory under the root that holds bodies being written.
pub const STAGING_DIR: &str = "staging";
const STAGING_SUFFIX: &str = ".part";
/// Largest chunk a ranged read hands out.
const READ_CHUNK: u64 = 256 * 1024;

pub struct FsBodyStore {
    root: PathBuf,
    staging: PathBuf,
    fsync: bool,
    pool: Arc<StagingPool>,
}

/// How many staging files are kept created ahead.
const POOL_TARGET: usize = 64;
/// Below this many, a refill starts.
const POOL_LOW: usize = 32;

/// Empty staging files created ahead of use.
///
/// Creating a file holds its directory's lock, and so does renaming a file
/// out of it; each refill creates into the other of two directories and
/// files are handed out oldest first, so a commit's rename does not queue
/// behind the refill's creates.
#[derive(Default)]
struct StagingPool {
    ready: parking_lot::Mutex<std::collections::VecDeque<(PathBuf, File)>>,
    refilling: std::sync::atomic::AtomicBool,
    refills: std::sync::atomic::AtomicUsize,
}

impl StagingPool {
    fn take(&self) -> Option<(PathBuf, File)> {
        self.ready.lock().pop_front()
    }

    fn len(&self) -> usize {
        self.ready.lock().len()
    }
}

impl FsBodyStore {
    /// A store rooted at `root` (created if missing). With `fsync`, bodies
    /// and records are flushed to stable storage before they become visible.
    pub fn open(root: &Path, fsync: bool) -> io::Result<FsBodyStore> {
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let staging = root.join(STAGING_DIR);
        std::fs::create_dir_all(&staging)?;
        Ok(FsBodyStore {
            root,
            staging,
            fsync,
            pool: Arc::default(),
        })
    }

    /// A staging file: from the pool when it has one, which is then topped
    /// up in the background; created here otherwise.
    fn staging_file(&self) -> io::Result<(PathBuf, File)> {
        let taken = self.pool.take();
        if self.pool.len() < POOL_LOW {
            self.refill_pool();
        }
        match taken {
            Some(file) => Ok(file),
            None => new_staging_file(&self.staging),
        }
    }

    fn refill_pool(&self) {
        use std::sync::atomic::Ordering;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.pool.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let batch = self.pool.refills.fetch_add(1, Ordering::Relaxed);
        let dir = self.staging.join(format!("ahead-{}", batch % 2));
        let pool = self.pool.clone();
        runtime.spawn_blocking(move || {
            if let Err(e) = std::fs::create_dir_all(&dir) {
                log::warn!("creating {}: {e}", dir.display());
            }
            while pool.len() < POOL_TARGET {
                match new_staging_file(&dir) {
                    Ok(file) => pool.ready.lock().push_back(file),
                    Err(e) => {
                        log::warn!("creating staging files ahead: {e}");
                        break;
                    }
                }
            }
            pool.refilling.store(false, Ordering::Release);
        });
    }

    /// Opens `key` with its size (an open of a local file does not wait
    /// for the disk's data); `None` when absent.
    fn open_local(&self, key: &str) -> io::Result<Option<Opened>> {
        let path = self.path(key)?;
        match open_for_reading(&path) {
            Ok(file) => {
                let size = file.metadata().map_err(|e| with_path(&path, e))?.len();
                Ok(Some(Opened::File {
                    file: Arc::new(file),
                    size,
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(with_path(&path, e)),
        }
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        let relative = Path::new(key);
        let plain = !key.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !plain || key.starts_with(STAGING_DIR) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid store key {key:?}"),
            ));
        }
        Ok(self.root.join(relative))
    }
}

/// Creates a new, empty staging file named for this process.
fn new_staging_file(staging: &Path) -> io::Result<(PathBuf, File)> {
    let name = format!(
        "{}.{}{STAGING_SUFFIX}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    let path = staging.join(name);
    let file = create_new(&path)?;
    Ok((path, file))
}

/// Creates `path`, which must not exist, for reading and writing; reads
/// through it leave the access time alone, as [`open_for_reading`]'s do
/// (the creator owns the file, so `O_NOATIME` is allowed).
pub fn create_new(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
        .map_err(|e| with_path(path, e))
}

/// Opens a committed file to serve it, without updating its access time:
/// the first read of a freshly written record or body would otherwise
/// write its inode (3% of the CPU of hits at a million objects). The
/// cache keeps its own access times. `O_NOATIME` needs the file's owner;
/// a store shared with another user opens without it.
pub fn open_for_reading(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
        other => other,
    }
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Renames a finished staging file to its key, creating the key's
/// directories on first use.
fn rename_into_place(staging: &Path, dest: &Path) -> io::Result<()> {
    match std::fs::rename(staging, dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| with_path(parent, e))?;
            }
            std::fs::rename(staging, dest).map_err(|e| with_path(dest, e))
        }
        other => other.map_err(|e| with_path(dest, e)),
    }
}

/// Renames with the file's data and the directory entry made durable.
fn durable_rename(file: &File, staging: &Path, dest: &Path) -> io::Result<()> {
    file.sync_data()?;
    rename_into_place(staging, dest)?;
    if let Some(parent) = dest.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// A body being written to a staging file.
struct FsWrite {
    file: Arc<File>,
    staging: PathBuf,
    dest: PathBuf,
    fsync: bool,
    committed: bool,
}

#[async_trait]
impl BodyWrite for FsWrite {
    async fn write(&mut self, data: Bytes) -> io::Result<()> {
        (&*self.file)
            .write_all(&data)
            .map_err(|e| with_path(&self.staging, e))
    }

    async fn commit(mut self: Box<Self>) -> io::Result<()> {
        if self.fsync {
            let (file, staging, dest) =
                (self.file.clone(), self.staging.clone(), self.dest.clone());
            tokio::task::spawn_blocking(move || durable_rename(&file, &staging, &dest))
                .await
                .map_err(io::Error::other)??;
        } else {
            rename_into_place(&self.staging, &self.dest)?;
        }
        self.committed = true;
        Ok(())
    }

    fn local_file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// The staging file is the body: nothing to send on.
    async fn advance(&mut self, _to: u64) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for FsWrite {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.staging);
        }
    }
}

/// Reads into `buf` at `offset` only what the page cache already holds
/// (`preadv2` with `RWF_NOWAIT`): `None` when that would wait for the
/// disk or the kernel does not support it.
pub fn read_cached(file: &File, buf: &mut [u8], offset: u64) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: one iovec over `buf`, which outlives the call.
    let n = unsafe {
        libc::preadv2(
            file.as_raw_fd(),
            &iov,
            1,
            offset as libc::off_t,
            libc::RWF_NOWAIT,
        )
    };
    (n >= 0).then_some(n as usize)
}

/// Reads `range` of `file` in chunks on the blocking pool.
pub fn file_range_stream(file: Arc<File>, range: Range<u64>) -> ByteStream {
    let chunks = futures::stream::try_unfold(range, move |range| {
        let file = file.clone();
        async move {
            if range.start >= range.end {
                return Ok(None);
            }
            let want = (range.end - range.start).min(READ_CHUNK) as usize;
            let start = range.start;
            let chunk = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; want];
                file.read_exact_at(&mut buf, start)
                    .map(|_| Bytes::from(buf))
            })
            .await
            .map_err(io::Error::other)??;
            Ok(Some((chunk, start + want as u64..range.end)))
        }
    });
    Box::pin(chunks)
}

/// Every file under `dir`, with its key relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Listed)>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(with_path(dir, e)),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            walk(root, &path, out)?;
        } else if file_type.is_file() {
            let Ok(relative) = path.strip_prefix(root) else {
                continue;
            };
            let key = relative.to_string_lossy().into_owned();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((path, Listed { key, size }));
        }
    }
    Ok(())
}

/// Whether a process with this pid exists.
pub(crate) fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Whether a staging file belongs to a writer that can no longer finish it.
fn orphaned(name: &str, age: Duration, min_age: Duration) -> bool {
    let pid = name
        .strip_suffix(STAGING_SUFFIX)
        .and_then(|n| n.split('.').next())
        .and_then(|p| p.parse::<u32>().ok());
    match pid {
        Some(pid) if pid == std::process::id() => false,
        Some(pid) => age >= min_age && !process_alive(pid),
        // Not a name this store writes: leftovers of some other writer.
        None => age >= min_age,
    }
}

#[async_trait]
impl BodyStore for FsBodyStore {
    async fn create(&self, key: &str) -> io::Result<Box<dyn BodyWrite>> {
        let dest = self.path(key)?;
        let (staging, file) = self.staging_file()?;
        Ok(Box::new(FsWrite {
            file: Arc::new(file),
            staging,
            dest,
            fsync: self.fsync,
            committed: false,
        }))
    }

    async fn open(&self, key: &str) -> io::Result<Option<Opened>> {
        self.open_local(key)
    }

    async fn read_range(&self, key: &str, range: Range<u64>) -> io::Result<ByteStream> {
        let Some(Opened::File { file, size }) = self.open(key).await? else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{key}: not found"),
            ));
        };
        Ok(file_range_stream(
            file,
            range.start.min(size)..range.end.min(size),
        ))
    }

    async fn put(&self, key: &str, value: Bytes) -> io::Result<()> {
        let mut writer = self.create(key).await?;
        writer.write(value).await?;
        writer.commit().await
    }

    /// Read inline when the file's pages are cached (the common case for
    /// records of hot objects), on the blocking pool when the read would
    /// wait for the disk, so a cold record never stalls the event loop.
    async fn get_small(&self, key: &str) -> io::Result<Option<Bytes>> {
        let path = self.path(key)?;
        let file = match open_for_reading(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(with_path(&path, e)),
        };
        let size = file.metadata().map_err(|e| with_path(&path, e))?.len() as usize;
        let mut buf = vec![0u8; size];
        if let Some(n) = read_cached(&file, &mut buf, 0) {
            if n == size {
                return Ok(Some(Bytes::from(buf)));
            }
        }
        tokio::task::spawn_blocking(move || {
            file.read_exact_at(&mut buf, 0)
                .map(|_| Some(Bytes::from(buf)))
                .map_err(|e| with_path(&path, e))
        })
        .await
        .map_err(io::Error::other)?
    }

    fn open_now(&self, key: &str) -> Option<Opened> {
        self.open_local(key).ok().flatten()
    }

    fn get_small_now(&self, key: &str) -> Option<Bytes> {
        let Opened::File { file, size } = self.open_now(key)? else {
            return None;
        };
        let mut buf = vec![0u8; size as usize];
        (read_cached(&file, &mut buf, 0)? == buf.len()).then(|| Bytes::from(buf))
    }

    async fn delete(&self, key: &str) -> io::Result<bool> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(with_path(&path, e)),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> io::Result<Vec<String>> {
        let dir = self.path(prefix)?;
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            walk(&root, &dir, &mut found)?;
            let mut deleted = Vec::with_capacity(found.len());
            for (path, listed) in found {
                match std::fs::remove_file(&path) {
                    Ok(()) => deleted.push(listed.key),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(with_path(&path, e)),
                }
            }
            // Empty directories go too; one still in use is left alone.
            let _ = remove_empty_dirs(&dir);
            Ok(deleted)
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn list(&self, prefix: &str) -> io::Result<Vec<Listed>> {
        let dir = self.path(prefix)?;
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            walk(&root, &dir, &mut found)?;
            Ok(found.into_iter().map(|(_, listed)| listed).collect())
        })
        .await
        .map_err(io::Error::other)?
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn free_bytes(&self) -> Option<u64> {
        let path = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: statvfs writes only into the zeroed struct passed.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
        (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
    }

    async fn sweep_staging(&self, min_age: Duration) -> io::Result<u64> {
        let staging = self.staging.clone();
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            walk(&staging, &staging, &mut found)?;
            let mut reclaimed = 0;
            for (path, listed) in found {
                let age = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok())
                    .unwrap_or_default();
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if orphaned(&name, age, min_age) {
                    match std::fs::remove_file(&path) {
                        Ok(()) => reclaimed += listed.size,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(with_path(&path, e)),
                    }
                }
            }
            Ok(reclaimed)
        })
        .await
        .map_err(io::Error::other)?
    }
}

fn remove_empty_dirs(dir: &Path) -> io::Result<bool> {
    let mut empty = true;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() && remove_empty_dirs(&entry.path())? {
            continue;
        }
        empty = false;
    }
    if empty {
        std::fs::remove_dir(dir)?;
    }
    Ok(empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_files_of_live_processes_are_kept() {
        let hour = Duration::from_secs(3600);
        let own = format!("{}.abc{STAGING_SUFFIX}", std::process::id());
        assert!(!orphaned(&own, hour, Duration::ZERO));
        // pid 1 always exists.
        assert!(!orphaned("1.abc.part", hour, Duration::ZERO));
        // The largest pid value is never a live process here.
        assert!(orphaned("4194304.abc.part", hour, Duration::ZERO));
        assert!(!orphaned("4194304.abc.part", Duration::ZERO, hour));
        assert!(orphaned("stray", hour, Duration::ZERO));
    }

    #[test]
    fn keys_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBodyStore::open(dir.path(), false).unwrap();
        for bad in ["", "../x", "/etc/passwd", "a/../../b", "staging/1.x.part"] {
            assert!(store.path(bad).is_err(), "{bad}");
        }
        assert!(store.path("cache/r/ab/x.meta").is_ok());
    }
}
