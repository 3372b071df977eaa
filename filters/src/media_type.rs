//! The media type of a file known only by its name: what `artifactd
//! import` stores with a file that no upstream described, and what a
//! response carries when its upstream or uploader labelled it only
//! `application/octet-stream`. Package clients look at it for index
//! documents (a simple page must be HTML, a package document JSON); for
//! archives it is informative. And the `Content-Disposition` a download
//! carries, naming the file.

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
        .map(|(_, media_type)| *media_type)
        .or_else(|| mime_guess::from_ext(&extension).first_raw())
        .unwrap_or(OCTET_STREAM)
}

/// The media type a response for `path` should carry in place of the one
/// it was `sent` with, when that says nothing (absent, empty or
/// `application/octet-stream`) and the name says more; `None` keeps it.
///
/// ```
/// use filters::media_type::relabel;
/// assert_eq!(relabel(Some("application/octet-stream"), "a/b.tar.gz"), Some("application/gzip"));
/// assert_eq!(relabel(None, "a/b.zip"), Some("application/zip"));
/// assert_eq!(relabel(Some("application/x-gzip"), "a/b.tar.gz"), None);
/// assert_eq!(relabel(Some("application/octet-stream"), "bin/tool"), None);
/// ```
pub fn relabel(sent: Option<&str>, path: &str) -> Option<&'static str> {
    let essence = sent.map(|v| v.split(';').next().unwrap_or("").trim());
    let says_nothing = essence.is_none_or(|e| e.is_empty() || e.eq_ignore_ascii_case(OCTET_STREAM));
    let by_name = of_path(path);
    (says_nothing && by_name != OCTET_STREAM).then_some(by_name)
}

/// `attachment; filename="…"` for a download of the file at `path`: the
/// last segment, quoted; a name that is not plain ASCII also goes as
/// `filename*` (RFC 6266), percent-encoded UTF-8. `None` for a path
/// with no file name.
///
/// ```
/// use filters::media_type::attachment;
/// assert_eq!(attachment("r/v1/tool.tar.gz").as_deref(), Some("attachment; filename=\"tool.tar.gz\""));
/// assert_eq!(attachment("dir/"), None);
/// ```
pub fn attachment(path: &str) -> Option<String> {
    let name = path.rsplit('/').next().filter(|n| !n.is_empty())?;
    // What a quoted-string carries as it is, in every client.
    let quotable = |c: char| (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\';
    if name.chars().all(quotable) {
        return Some(format!("attachment; filename=\"{name}\""));
    }
    let quoted: String = (name.chars())
        .map(|c| if quotable(c) { c } else { '_' })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(name, ATTR_CHAR_ESCAPES);
    Some(format!(
        "attachment; filename=\"{quoted}\"; filename*=UTF-8''{encoded}"
    ))
}

/// What RFC 5987's `attr-char` leaves out, escaped in `filename*`.
const ATTR_CHAR_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

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
    use super::{attachment, of_path, relabel};

    #[test]
    fn names_beyond_the_table_come_from_the_common_list() {
        assert_eq!(of_path("docs/page.css"), "text/css");
        assert_eq!(of_path("img/logo.png"), "image/png");
        assert_eq!(
            of_path("pkg.whl"),
            "application/zip",
            "the table decides first"
        );
    }

    #[test]
    fn only_a_label_that_says_nothing_is_replaced() {
        assert_eq!(relabel(Some(""), "x.json"), Some("application/json"));
        assert_eq!(
            relabel(Some("Application/Octet-Stream; charset=binary"), "x.rpm"),
            Some("application/x-rpm")
        );
        assert_eq!(relabel(Some("text/plain"), "x.json"), None);
        assert_eq!(relabel(None, "Release"), None);
    }

    #[test]
    fn file_names_are_quoted_and_non_ascii_ones_also_encoded() {
        assert_eq!(
            attachment("a/we\"ird.txt").as_deref(),
            Some("attachment; filename=\"we_ird.txt\"; filename*=UTF-8''we%22ird.txt")
        );
        assert_eq!(
            attachment("a/caf\u{e9}.tgz").as_deref(),
            Some("attachment; filename=\"caf_.tgz\"; filename*=UTF-8''caf%C3%A9.tgz")
        );
        assert_eq!(attachment(""), None);
    }

    #[test]
    fn extensions_decide_case_blind_and_only_in_the_last_segment() {
        assert_eq!(of_path("simple/pkg/index.HTML"), "text/html");
        assert_eq!(of_path("a.json/b"), "application/octet-stream");
        assert_eq!(of_path("dists/stable/Release"), "application/octet-stream");
        assert_eq!(of_path("x/y-1.0-py3-none-any.whl"), "application/zip");
        assert_eq!(of_path("trailing."), "application/octet-stream");
    }
}
