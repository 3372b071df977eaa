//! Where the relative paths of the config files land.
//!
//! Every path a setting names (storage, state, catalog, TLS and token
//! files, the upgrade socket, a remote's `ca_file`) is made absolute once,
//! when the config is compiled, against the folder of the file that names
//! it (or the working directory, for an environment override). Nothing
//! later sees a relative path, so no consumer can read one differently:
//! SQLite URLs, for one, take the first segment of `sqlite://a/../b` as a
//! host and drop the `..` after it.
//!
//! `..` is applied the way the operating system applies it: through the
//! deepest part of the path that exists, symlinks resolved; lexically only
//! in the part still to be created, which holds no symlink.

use std::path::{Component, Path, PathBuf};

/// `path` against `base` unless it is absolute, as an absolute path with
/// no `.` or `..` left in it.
pub fn resolve(base: &Path, path: &str) -> PathBuf {
    normalize(&absolute(&base.join(path)))
}

/// The folder a config file's relative paths resolve against.
pub fn folder_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => normalize(&absolute(dir)),
        _ => working_directory(),
    }
}

/// The working directory, against which environment overrides resolve.
pub fn working_directory() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        working_directory().join(path)
    }
}

/// `path` (absolute) with its existing part canonical and `.` and `..`
/// applied to the rest.
fn normalize(path: &Path) -> PathBuf {
    let components: Vec<Component> = path.components().collect();
    for existing in (1..=components.len()).rev() {
        let head: PathBuf = components[..existing].iter().collect();
        if let Ok(canonical) = head.canonicalize() {
            return append_lexically(canonical, &components[existing..]);
        }
    }
    append_lexically(PathBuf::new(), &components)
}

fn append_lexically(mut out: PathBuf, rest: &[Component]) -> PathBuf {
    for component in rest {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The deepest ancestor of `path` (itself included) that exists.
pub fn nearest_existing(path: &Path) -> &Path {
    path.ancestors()
        .find(|p| p.symlink_metadata().is_ok())
        .unwrap_or(Path::new("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_become_absolute_without_dots() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("conf")).unwrap();
        let base = root.join("conf");
        assert_eq!(
            resolve(&base, "../var/catalog.db"),
            root.join("var/catalog.db")
        );
        assert_eq!(resolve(&base, "./a/./b/../c"), root.join("conf/a/c"));
        assert_eq!(resolve(&base, "/srv/x/../y"), PathBuf::from("/srv/y"));
        assert_eq!(
            resolve(&base, "new/../../var/objects"),
            root.join("var/objects")
        );
    }

    #[test]
    fn dot_dot_follows_symlinks_where_they_exist() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("real/deep")).unwrap();
        std::os::unix::fs::symlink(root.join("real/deep"), root.join("link")).unwrap();
        // The OS reads link/.. as real, not as root.
        assert_eq!(resolve(&root, "link/../x.db"), root.join("real/x.db"));
    }

    #[test]
    fn a_bare_file_name_resolves_against_the_working_directory() {
        assert_eq!(folder_of(Path::new("artifactd.yaml")), working_directory());
        assert!(folder_of(Path::new("conf/artifactd.yaml")).is_absolute());
    }

    #[test]
    fn nearest_existing_stops_at_the_first_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("a/b/c");
        assert_eq!(nearest_existing(&missing), dir.path());
        assert_eq!(nearest_existing(dir.path()), dir.path());
    }
}
