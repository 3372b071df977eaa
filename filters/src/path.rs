//! Validation of the artifact path part of a request URL.
//!
//! The path is used three ways: matched against a remote's patterns, turned
//! into a storage key, and appended to the upstream URL. It is validated once,
//! here, before any of those happen, so that no encoding trick can make the
//! three disagree or reach outside a remote's namespace.

use percent_encoding::percent_decode_str;
use std::fmt;

/// Why a path was refused. Each variant carries enough to write a one-line
/// 400 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// No artifact path after the remote name.
    #[error("empty artifact path")]
    Empty,
    /// The raw path is longer than the configured limit.
    #[error("path is {len} bytes, over the limit of {max}")]
    TooLong { len: usize, max: usize },
    /// The path starts with `/` (an absolute path after the remote name).
    #[error("absolute path")]
    Absolute,
    /// `%2F`, `%5C` or `%00` (any case): an encoded separator or NUL that
    /// would decode into something the router never saw.
    #[error("encoded separator or NUL ({0})")]
    EncodedSeparator(String),
    /// A `.` or `..` segment, before or after decoding.
    #[error("dot segment {0:?}")]
    DotSegment(String),
    /// Two consecutive slashes.
    #[error("empty path segment")]
    EmptySegment,
    /// A backslash or control character after decoding.
    #[error("forbidden character {0:?}")]
    ForbiddenChar(char),
    /// Percent-decoding did not yield UTF-8.
    #[error("path is not UTF-8 after decoding")]
    NotUtf8,
}

/// A path that passed [`validate_artifact_path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactPath<'a> {
    /// The path as the client sent it (still percent-encoded); this is what
    /// goes to the upstream, so the upstream sees exactly what was asked.
    pub raw: &'a str,
    /// The decoded path: what patterns match and storage keys are built from.
    pub decoded: String,
}

impl fmt::Display for ArtifactPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.decoded)
    }
}

/// Validates `raw`, the still-encoded path after `/api/v1/remote/{remote}/`.
///
/// A single trailing slash is allowed (index pages such as `simple/pkg/`
/// need it); empty inner segments are not.
///
/// ```
/// use filters::validate_artifact_path;
/// assert_eq!(validate_artifact_path("a/b%20c.tgz", 1024).unwrap().decoded, "a/b c.tgz");
/// assert!(validate_artifact_path("a/../b", 1024).is_err());
/// assert!(validate_artifact_path("a/%2e%2e/b", 1024).is_err());
/// ```
pub fn validate_artifact_path(raw: &str, max_len: usize) -> Result<ArtifactPath<'_>, PathError> {
    if raw.is_empty() {
        return Err(PathError::Empty);
    }
    if raw.len() > max_len {
        return Err(PathError::TooLong {
            len: raw.len(),
            max: max_len,
        });
    }
    if raw.starts_with('/') {
        return Err(PathError::Absolute);
    }
    let decoded = if decodes_to_itself(raw) {
        raw.to_owned()
    } else {
        decode(raw)?
    };
    let body = decoded.strip_suffix('/').unwrap_or(&decoded);
    for segment in body.split('/') {
        match segment {
            "" => return Err(PathError::EmptySegment),
            "." | ".." => return Err(PathError::DotSegment(segment.to_string())),
            _ => {}
        }
    }
    Ok(ArtifactPath { raw, decoded })
}

/// Whether `raw` is printable ASCII without `%` or `\`: what nearly every
/// request asks, which decodes to itself and holds no character that
/// [`decode`] refuses, so it skips decoding.
fn decodes_to_itself(raw: &str) -> bool {
    raw.bytes()
        .all(|b| matches!(b, b' '..=b'~') && b != b'%' && b != b'\\')
}

/// `raw` percent-decoded, refused if it holds an encoded separator or
/// decodes to a backslash, a control character or not UTF-8.
fn decode(raw: &str) -> Result<String, PathError> {
    if let Some(encoded) = find_encoded_separator(raw) {
        return Err(PathError::EncodedSeparator(encoded.to_string()));
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError::NotUtf8)?
        .into_owned();
    if let Some(c) = decoded.chars().find(|c| *c == '\\' || c.is_control()) {
        return Err(PathError::ForbiddenChar(c));
    }
    Ok(decoded)
}

fn find_encoded_separator(raw: &str) -> Option<&str> {
    let bytes = raw.as_bytes();
    (0..bytes.len().saturating_sub(2)).find_map(|i| {
        // Only ASCII bytes are compared, so the slice of a match starts and
        // ends on character boundaries even in a non-ASCII path.
        let forbidden = bytes[i] == b'%'
            && matches!(
                (bytes[i + 1], bytes[i + 2].to_ascii_uppercase()),
                (b'2', b'F') | (b'5', b'C') | (b'0', b'0')
            );
        forbidden.then(|| &raw[i..i + 3])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_before_an_escape_is_not_sliced_apart() {
        assert_eq!(
            validate_artifact_path("¡%2e", 64),
            Ok(ArtifactPath {
                raw: "¡%2e",
                decoded: "¡.".into()
            })
        );
        assert!(validate_artifact_path("é%2f", 64).is_err());
    }

    fn check(raw: &str) -> Result<String, PathError> {
        validate_artifact_path(raw, 64).map(|p| p.decoded)
    }

    #[test]
    fn ordinary_paths_pass_and_decode() {
        assert_eq!(
            check("owner/repo/v1.0/x.tar.gz").unwrap(),
            "owner/repo/v1.0/x.tar.gz"
        );
        assert_eq!(check("simple/requests/").unwrap(), "simple/requests/");
        assert_eq!(check("a/b%2Bc").unwrap(), "a/b+c");
        assert_eq!(check("..a/b..").unwrap(), "..a/b..");
    }

    #[test]
    fn traversal_is_refused_raw_and_encoded() {
        for raw in [
            "..",
            "../etc/passwd",
            "a/../../b",
            "a/./b",
            "%2e%2e/x",
            "a/%2E%2e",
            "a/.%2e/b",
        ] {
            assert!(matches!(check(raw), Err(PathError::DotSegment(_))), "{raw}");
        }
    }

    #[test]
    fn encoded_separators_and_nul_are_refused() {
        for raw in ["a%2Fb", "a%2fb", "a%5Cb", "a%5cb", "a%00b", "x/%2F"] {
            assert!(
                matches!(check(raw), Err(PathError::EncodedSeparator(_))),
                "{raw}"
            );
        }
    }

    #[test]
    fn absolute_empty_and_long_paths_are_refused() {
        assert_eq!(check("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(check(""), Err(PathError::Empty));
        assert_eq!(check("a//b"), Err(PathError::EmptySegment));
        assert_eq!(
            check(&"a".repeat(65)),
            Err(PathError::TooLong { len: 65, max: 64 })
        );
        assert!(check(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn backslash_control_and_bad_utf8_are_refused() {
        assert_eq!(check("a\\b"), Err(PathError::ForbiddenChar('\\')));
        assert_eq!(check("a%0Ab"), Err(PathError::ForbiddenChar('\n')));
        assert_eq!(check("a%FFb"), Err(PathError::NotUtf8));
    }

    #[test]
    fn what_skips_decoding_decodes_to_itself() {
        for byte in 0..=127u8 {
            let raw = format!("a{}b", byte as char);
            if decodes_to_itself(&raw) {
                assert_eq!(decode(&raw), Ok(raw.clone()), "{raw:?}");
            }
        }
        assert!(decodes_to_itself("pkg/a b~1.0.tgz"));
        for raw in ["a%41", "a\\b", "a\tb", "a\u{7f}", "é"] {
            assert!(!decodes_to_itself(raw), "{raw:?}");
        }
    }

    #[test]
    fn short_inputs_do_not_panic() {
        for raw in ["%", "%2", "a%", "%%%"] {
            let _ = check(raw);
        }
    }
}
