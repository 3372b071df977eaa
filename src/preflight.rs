//! What `check-config` and `serve -t` check beyond the files' syntax: what
//! a start needs that can be checked without changing anything, so that a
//! configuration they call ok also starts.
//!
//! Each folder a start writes to (storage, state, the catalog's, an S3
//! spool, the upgrade socket's) exists and is writable, or can be created:
//! its nearest existing ancestor is a writable folder. The SQLite catalog
//! opens (or its folder takes a new one). Each TLS listener's certificate
//! and key load and match. Token and `ca_file` files are read when the
//! config loads, so they are checked before this runs. Writability is asked
//! of the kernel (`faccessat` with the effective ids), which also answers
//! for read-only mounts and immutable folders, where root's permission bits
//! say nothing.

use crate::config::paths::nearest_existing;
use crate::config::{CatalogUrl, Config, ConfigError, ConfigErrors, StateUrl, StorageUrl};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Every problem a start would meet, each naming `file` and its field.
pub fn check(file: &Path, config: &Config) -> Result<(), ConfigErrors> {
    let server = &config.server;
    let mut errors = Vec::new();
    let mut report = |field: &str, result: Result<(), String>| {
        if let Err(message) = result {
            errors.push(ConfigError::new(file, message).field(field));
        }
    };
    match &server.storage {
        StorageUrl::Filesystem(root) => report("storage", writable_folder(root)),
        StorageUrl::S3(s3) => report("s3.spool_dir", writable_folder(&s3.spool_dir)),
    }
    if let StateUrl::Embedded(dir) = &server.state {
        report("state", writable_folder(dir));
    }
    if let CatalogUrl::Sqlite(path) = &server.catalog {
        report("catalog", sqlite_catalog(path));
    }
    if let Some(dir) = server.upgrade_socket.parent() {
        report("process.upgrade_socket", writable_folder(dir));
    }
    report(
        "listen",
        crate::server::check_listeners(&server.listen).map_err(|e| format!("{e:#}")),
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// `dir` is a folder this process can create files in, or can be created.
fn writable_folder(dir: &Path) -> Result<(), String> {
    let existing = nearest_existing(dir);
    let creating = if existing == dir {
        String::new()
    } else {
        format!("cannot create {}: ", dir.display())
    };
    match std::fs::metadata(existing) {
        Err(e) => Err(format!("{creating}{}: {e}", existing.display())),
        Ok(meta) if !meta.is_dir() => {
            Err(format!("{creating}{} is not a folder", existing.display()))
        }
        Ok(_) => may_access(existing, libc::W_OK | libc::X_OK)
            .map_err(|e| format!("{creating}{} is not writable: {e}", existing.display())),
    }
}

/// The catalog's folder takes its file and journal, and a file already
/// there is a database this process can read and write.
fn sqlite_catalog(path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        writable_folder(dir)?;
    }
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
        Ok(meta) if !meta.is_file() => return Err(format!("{} is not a file", path.display())),
        Ok(_) => may_access(path, libc::R_OK | libc::W_OK)
            .map_err(|e| format!("{} cannot be read and written: {e}", path.display()))?,
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting a runtime to open {}: {e}", path.display()))?;
    runtime
        .block_on(crate::catalog::check_sqlite(path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether the kernel grants `mode` on `path` to this process's effective
/// user and groups.
fn may_access(path: &Path, mode: libc::c_int) -> io::Result<()> {
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    let status = unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), mode, libc::AT_EACCESS) };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_fine_when_it_or_its_nearest_ancestor_is_writable() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(writable_folder(dir.path()), Ok(()));
        assert_eq!(writable_folder(&dir.path().join("a/b/c")), Ok(()));
    }

    #[test]
    fn a_folder_under_a_file_cannot_be_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        let error = writable_folder(&file.join("objects")).unwrap_err();
        assert!(error.starts_with("cannot create "), "{error}");
        assert!(error.contains("plain is not a folder"), "{error}");
    }

    #[test]
    fn a_catalog_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        assert_eq!(sqlite_catalog(&path), Ok(()));
        assert!(!path.exists(), "the check created the catalog");
        std::fs::write(&path, "not a database, just text long enough to be read").unwrap();
        let error = sqlite_catalog(&path).unwrap_err();
        assert!(error.contains("catalog.db"), "{error}");
        let folder = dir.path().join("folder.db");
        std::fs::create_dir(&folder).unwrap();
        assert!(sqlite_catalog(&folder)
            .unwrap_err()
            .contains("is not a file"));
    }
}
