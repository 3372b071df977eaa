//! The media type of a file known only by its name: what `artifactd
//! import` stores with a file that no upstream described. Package
//! clients look at it for index documents (a simple page must be HTML,
//! a package document JSON); for archives it is informative.

/// The media type of the file at `path`, by its extension;
/// `application/octet-stream` when the extension says nothing.
///
/// ```
/// assert_eq!(filters::media_type::of_path("repodata/repomd.xml"), "application/xml");
/// assert_eq!(filters::media_type::of_path("pkg/1.0/pkg-1.0.tgz"), "application/gzip");
/// assert_eq!(filters::media_type::of_path("bin/tool"), "application/octet-stream");
/// ```
pub fn of_path(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some((_, extension)) = name.rsplit_once('.') else {
        return OCTET_STREAM;
    };
    let extension = extension.to_ascii_lowercase();
    BY_EXTENSION
        .iter()
        .find(|(known, _)| *known == extension)
        .map_or(OCTET_STREAM, |(_, media_type)| media_type)
}

const OCTET_STREAM: &str = "application/octet-stream";

const BY_EXTENSION: &[(&str, &str)] = &[
    ("json", "application/json"),
    ("html", "text/html"),
    ("htm", "text/html"),
    ("xml", "application/xml"),
    ("txt", "text/plain"),
    ("asc", "text/plain"),
    ("yaml", "application/yaml"),
    ("yml", "application/yaml"),
    ("gz", "application/gzip"),
    ("tgz", "application/gzip"),
    ("bz2", "application/x-bzip2"),
    ("xz", "application/x-xz"),
    ("zst", "application/zstd"),
    ("zip", "application/zip"),
    ("whl", "application/zip"),
    ("jar", "application/java-archive"),
    ("tar", "application/x-tar"),
    ("rpm", "application/x-rpm"),
    ("deb", "application/vnd.debian.binary-package"),
    ("sig", "application/pgp-signature"),
    ("sha256", "text/plain"),
];

#[cfg(test)]
mod tests {
    use super::of_path;

    #[test]
    fn extensions_decide_case_blind_and_only_in_the_last_segment() {
        assert_eq!(of_path("simple/pkg/index.HTML"), "text/html");
        assert_eq!(of_path("a.json/b"), "application/octet-stream");
        assert_eq!(of_path("dists/stable/Release"), "application/octet-stream");
        assert_eq!(of_path("x/y-1.0-py3-none-any.whl"), "application/zip");
        assert_eq!(of_path("trailing."), "application/octet-stream");
    }
}
