//! RPM repositories: which paths are the repository's index
//! (`repodata/repomd.xml`) and which are content-addressed repodata
//! files, what a `repomd.xml` names, and the package checksums
//! `primary.xml` publishes.
//!
//! A repository is consistent only as a snapshot: `repomd.xml` names
//! repodata files by checksum, and when the upstream regenerates, the old
//! files disappear. The proxy uses [`repomd_files`] to serve a new
//! `repomd.xml` only once every file it names is cached (see
//! `src/proxy/snapshots.rs`).

use quick_xml::events::Event;
use quick_xml::Reader;
use std::io::BufRead;

use super::{Document, IndexedFile, Request, Routed, Snapshot};
use crate::ecosystem::ArtifactClass;

/// Built-in mutable patterns: the index and repodata not named by checksum.
pub const MUTABLE_PATTERNS: &[&str] = &[
    r"repomd\.xml(\.asc|\.key)?$",
    r"repodata/[^/]+\.(xml|sqlite|yaml|asc|txt)(\.(gz|bz2|xz|zst))?$",
    r"Packages\.gz$",
];

/// The repodata files a `repomd.xml` at `path` names; `primary` lists the
/// packages.
pub fn snapshot(path: &str, body: &[u8]) -> Result<Snapshot, String> {
    let files = repomd_files(path, body).map_err(|e| e.to_string())?;
    let package_lists = files
        .iter()
        .filter(|f| f.kind == "primary")
        .map(|f| vec![f.indexed()])
        .collect();
    let files: Vec<IndexedFile> = files.iter().map(RepoFile::indexed).collect();
    Ok(Snapshot {
        checksums: files.clone(),
        files,
        package_lists,
        root: repository_root(path).to_string(),
    })
}

/// The packages of a decompressed `primary.xml` of the repository at `root`.
pub fn read_package_list(
    root: &str,
    reader: &mut dyn BufRead,
    found: &mut dyn FnMut(String, String),
) -> Result<u64, String> {
    primary_packages(root, reader, |p| found(p.path, p.digest)).map_err(|e| e.to_string())
}

/// `repomd.xml` is a snapshot; repodata files named by their checksum
/// never change, whatever the built-in mutable patterns say.
pub fn route(request: &Request<'_>) -> Routed {
    let mut routed = Routed::file(request);
    if is_content_addressed(request.path) {
        routed.class = ArtifactClass::Immutable;
    }
    if is_repomd(request.path) {
        routed.document = Some(Document::RpmRepomd);
    }
    routed
}

/// Whether a (decoded) path is a repository's `repomd.xml`.
pub fn is_repomd(path: &str) -> bool {
    path == "repodata/repomd.xml" || path.ends_with("/repodata/repomd.xml")
}

/// Whether a path is a repodata file named by its checksum
/// (`repodata/<hex>-primary.xml.gz`, createrepo's default): its content
/// never changes, whatever the built-in mutable patterns say.
///
/// ```
/// assert!(filters::ecosystem::rpm::is_content_addressed("9/repodata/5764e94d300732186ea4aaf6dd5adda4-primary.xml.gz"));
/// assert!(!filters::ecosystem::rpm::is_content_addressed("9/repodata/primary.xml.gz"));
/// ```
pub fn is_content_addressed(path: &str) -> bool {
    let Some((dir, file)) = path.rsplit_once('/') else {
        return false;
    };
    if dir != "repodata" && !dir.ends_with("/repodata") {
        return false;
    }
    let Some((hex, _)) = file.split_once('-') else {
        return false;
    };
    (32..=128).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One file a `repomd.xml` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFile {
    /// `primary`, `filelists`, `other`, `group`, …
    pub kind: String,
    /// The remote path: the `location href` under the repository root.
    pub path: String,
    /// `sha256:hex` (or `sha512:`, `sha1:`) of the file as stored.
    pub digest: Option<String>,
}

impl RepoFile {
    fn indexed(&self) -> IndexedFile {
        IndexedFile {
            path: self.path.clone(),
            digest: self.digest.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not a repomd.xml: {0}")]
pub struct RepomdError(String);

/// The repository root of a `repomd.xml` path (`9/BaseOS/x86_64/os/` for
/// `9/BaseOS/x86_64/os/repodata/repomd.xml`; empty at the remote's root).
pub fn repository_root(repomd_path: &str) -> &str {
    repomd_path
        .strip_suffix("repodata/repomd.xml")
        .unwrap_or("")
}

/// The files a `repomd.xml` at `repomd_path` names, with their checksums.
pub fn repomd_files(repomd_path: &str, doc: &[u8]) -> Result<Vec<RepoFile>, RepomdError> {
    let root = repository_root(repomd_path);
    let mut reader = Reader::from_reader(doc);
    let mut files = Vec::new();
    let mut current: Option<RepoFile> = None;
    let mut checksum_type: Option<String> = None;
    let mut in_checksum = false;
    let mut saw_repomd = false;
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| RepomdError(e.to_string()))?;
        match event {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                b"repomd" => saw_repomd = true,
                b"data" => {
                    current = Some(RepoFile {
                        kind: attribute(&e, b"type").unwrap_or_default(),
                        path: String::new(),
                        digest: None,
                    })
                }
                b"checksum" => {
                    in_checksum = current.is_some();
                    checksum_type = attribute(&e, b"type");
                }
                b"location" => {
                    if let (Some(file), Some(href)) = (current.as_mut(), attribute(&e, b"href")) {
                        file.path = format!("{root}{}", href.trim_start_matches('/'));
                    }
                }
                _ => {}
            },
            Event::Text(text) if in_checksum => {
                let value = text.decode().map_err(|e| RepomdError(e.to_string()))?;
                if let Some(file) = current.as_mut() {
                    file.digest = digest(checksum_type.as_deref(), value.trim());
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"checksum" => in_checksum = false,
                b"data" => {
                    if let Some(file) = current.take().filter(|f| !f.path.is_empty()) {
                        files.push(file);
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !saw_repomd {
        return Err(RepomdError("no <repomd> element".into()));
    }
    Ok(files)
}

fn attribute(e: &quick_xml::events::BytesStart<'_>, name: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .and_then(|a| a.unescape_value().ok())
        .map(|v| v.into_owned())
}

/// `algorithm:hex` for the checksum types repositories use (`sha` is
/// yum's old name for sha1); `None` for others or malformed values.
fn digest(kind: Option<&str>, hex: &str) -> Option<String> {
    let (algorithm, len) = match kind? {
        "sha256" => ("sha256", 64),
        "sha512" => ("sha512", 128),
        "sha1" | "sha" => ("sha1", 40),
        _ => return None,
    };
    let hex = hex.to_ascii_lowercase();
    (hex.len() == len && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("{algorithm}:{hex}"))
}

/// One package of `primary.xml`: its remote path and checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub path: String,
    pub digest: String,
}

/// Streams the packages out of a decompressed `primary.xml` of the
/// repository at `root` (see [`repository_root`]), calling `found` for
/// each one with a checksum. Memory stays at one package's elements.
pub fn primary_packages(
    root: &str,
    xml: impl BufRead,
    mut found: impl FnMut(Package),
) -> Result<u64, RepomdError> {
    let mut reader = Reader::from_reader(xml);
    let mut buf = Vec::new();
    let (mut href, mut checksum): (Option<String>, Option<String>) = (None, None);
    let mut checksum_type: Option<String> = None;
    let mut in_checksum = false;
    let mut depth_in_package = 0u32;
    let mut count = 0;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| RepomdError(e.to_string()))?;
        match event {
            Event::Start(e) => {
                let name = e.local_name();
                if name.as_ref() == b"package" {
                    depth_in_package = 1;
                    (href, checksum) = (None, None);
                } else if depth_in_package > 0 {
                    depth_in_package += 1;
                    // Only the package's own checksum, at depth 2.
                    if name.as_ref() == b"checksum" && depth_in_package == 2 {
                        in_checksum = true;
                        checksum_type = attribute(&e, b"type");
                    }
                }
            }
            Event::Empty(e) if depth_in_package == 1 && e.local_name().as_ref() == b"location" => {
                href = attribute(&e, b"href");
            }
            Event::Text(text) if in_checksum => {
                let value = text.decode().map_err(|e| RepomdError(e.to_string()))?;
                checksum = digest(checksum_type.as_deref(), value.trim());
            }
            Event::End(e) => {
                depth_in_package = depth_in_package.saturating_sub(1);
                if e.local_name().as_ref() == b"checksum" {
                    in_checksum = false;
                }
                if e.local_name().as_ref() == b"package" {
                    depth_in_package = 0;
                    if let (Some(href), Some(digest)) = (href.take(), checksum.take()) {
                        count += 1;
                        found(Package {
                            path: format!("{root}{}", href.trim_start_matches('/')),
                            digest,
                        });
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPOMD: &str = include_str!("../../../tests/fixtures/rpm/repomd.xml");
    const PRIMARY: &str = include_str!("../../../tests/fixtures/rpm/primary.xml");

    #[test]
    fn repomd_names_every_file_under_the_repository_root() {
        let files = repomd_files("el/9/repodata/repomd.xml", REPOMD.as_bytes()).unwrap();
        let kinds: Vec<&str> = files.iter().map(|f| f.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "primary",
                "filelists",
                "other",
                "primary_db",
                "filelists_db",
                "other_db"
            ]
        );
        assert!(
            files[0].path.starts_with("el/9/repodata/")
                && files[0].path.ends_with("-primary.xml.gz")
        );
        let digest = files[0].digest.as_deref().unwrap();
        assert!(digest.starts_with("sha256:"));
        assert!(
            files[0].path.contains(&digest[7..]),
            "named by its checksum"
        );
        assert!(files.iter().all(|f| is_content_addressed(&f.path)));
        assert!(repomd_files("repodata/repomd.xml", b"<html/>").is_err());
        assert_eq!(repository_root("repodata/repomd.xml"), "");
    }

    #[test]
    fn primary_lists_packages_with_their_checksums() {
        let mut packages = Vec::new();
        let count = primary_packages("el/9/", PRIMARY.as_bytes(), |p| packages.push(p)).unwrap();
        assert_eq!(count, 1);
        assert_eq!(packages[0].path, "el/9/tiny-1.0-1.noarch.rpm");
        assert!(packages[0].digest.starts_with("sha256:5cb9d92a"));
    }

    #[test]
    fn checksum_kinds() {
        assert_eq!(
            digest(Some("sha"), &"A".repeat(40)).unwrap(),
            format!("sha1:{}", "a".repeat(40))
        );
        assert_eq!(digest(Some("md5"), "abc"), None);
        assert_eq!(digest(Some("sha256"), "abc"), None);
        assert!(!is_content_addressed("repodata/repomd.xml"));
        assert!(!is_content_addressed(
            "x/5764e94d300732186ea4aaf6dd5adda4-primary.xml.gz"
        ));
    }
}
