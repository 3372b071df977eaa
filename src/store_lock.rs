//! Who may write a local store at a time: any number of serving processes
//! (an upgrade overlaps the old and the new one, whose segments never
//! collide), or one `artifactd import` alone, because an import changes
//! the store behind the index a running server holds in memory.
//!
//! An advisory `flock` on `{root}/artifactd.lock`, shared by servers and
//! exclusive for an import, held until the process exits (the kernel
//! releases it however the process ends, so a crash leaves no stale lock).

use crate::config::StorageUrl;
use anyhow::Context;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

const FILE: &str = "artifactd.lock";

/// Who takes the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    Server,
    Import,
}

/// Takes the lock of the store at `storage` for `holder`, without waiting;
/// `None` for a store that is not local (a bucket is shared by design).
/// Keep the file open for as long as the lock must hold.
pub fn take(storage: &StorageUrl, holder: Holder) -> anyhow::Result<Option<File>> {
    let StorageUrl::Filesystem(root) = storage else {
        return Ok(None);
    };
    take_at(root, holder).map(Some)
}

fn take_at(root: &Path, holder: Holder) -> anyhow::Result<File> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let path = root.join(FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let operation = match holder {
        Holder::Server => libc::LOCK_SH,
        Holder::Import => libc::LOCK_EX,
    } | libc::LOCK_NB;
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        return Ok(file);
    }
    let error = std::io::Error::last_os_error();
    if error.kind() != std::io::ErrorKind::WouldBlock {
        return Err(error).with_context(|| format!("locking {}", path.display()));
    }
    anyhow::bail!(match holder {
        Holder::Server => format!(
            "an artifactd import is writing to {}; start the server once it has finished",
            root.display()
        ),
        Holder::Import => format!(
            "artifactd is serving from {}; stop it before importing (a server would not see what the import stores)",
            root.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_share_and_an_import_excludes_them() {
        let dir = tempfile::tempdir().unwrap();
        let first = take_at(dir.path(), Holder::Server).unwrap();
        let second = take_at(dir.path(), Holder::Server).unwrap();
        let refused = take_at(dir.path(), Holder::Import).unwrap_err();
        assert!(refused.to_string().contains("stop it before importing"));
        drop((first, second));
        let import = take_at(dir.path(), Holder::Import).unwrap();
        let refused = take_at(dir.path(), Holder::Server).unwrap_err();
        assert!(refused.to_string().contains("import is writing"));
        drop(import);
        take_at(dir.path(), Holder::Server).unwrap();
    }
}
