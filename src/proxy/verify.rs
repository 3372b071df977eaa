//! Checking a response body against the digest it must have, while it
//! streams, before anything of it is committed or completed.
//!
//! The newest chunk is always held back: the client gets it, and the cache
//! fill gets it, only once the whole body hashed to the expected digest. A
//! wrong body therefore never completes for the client (its transfer fails
//! short of `Content-Length`) and never reaches `finish` of the cache fill,
//! whose handler is dropped, so nothing is committed.
//!
//! The same pass keeps a small manifest's bytes, so a tag manifest can be
//! stored under its digest too (seed 000 cross-link).
//!
//! [`DocumentCheck`] holds an index document back the same way until it
//! parsed as well-formed ([`filters::syntax`]).

use crate::digest::Hasher;
use bytes::{Bytes, BytesMut};
use filters::syntax::Syntax;

/// Manifests larger than this are not kept for the cross-link (the
/// distribution spec lets registries refuse manifests over 4 MiB).
pub const MAX_KEPT_MANIFEST: usize = 4 * 1024 * 1024;

/// A body whose digest did not match.
#[derive(Debug)]
pub struct Mismatch {
    pub expected: String,
    pub actual: String,
}

impl Mismatch {
    /// The upstream error (of kind `failure`) that fails the transfer;
    /// the caller has logged and counted it.
    pub fn into_error(self, failure: super::failure::Failure) -> Box<pingora::Error> {
        failure.explain(format!("expected {}, got {}", self.expected, self.actual))
    }
}

/// A body that ended and (when a digest was expected) matched it.
pub struct Verified {
    /// The body's digest (the expected algorithm, else sha256).
    pub digest: String,
    /// The whole body, when it was kept and small enough.
    pub body: Option<Bytes>,
}

pub struct Verifier {
    /// `None`: nothing to check (a tag manifest without
    /// `Docker-Content-Digest`); the body is only hashed and kept.
    expected: Option<String>,
    hasher: Option<Hasher>,
    held: HeldBack,
    kept: Option<BytesMut>,
}

impl Verifier {
    /// Checks against `expected` (`sha256:`, `sha512:` or `sha1:` and
    /// lower-case hex; `None`: hash with sha256 only); keeps the body for
    /// the caller when `keep` is set. An expected digest with an unknown
    /// algorithm or malformed hex yields `None`: nothing can be verified,
    /// and such digests never reach here from a validated route or index.
    pub fn new(expected: Option<&str>, keep: bool) -> Option<Verifier> {
        let hasher = match expected {
            Some(text) => Hasher::for_digest(text)?,
            None => Hasher::sha256(),
        };
        Some(Verifier {
            expected: expected.map(str::to_string),
            hasher: Some(hasher),
            held: HeldBack::default(),
            kept: keep.then(BytesMut::new),
        })
    }

    /// The digest the body must have, if one is checked.
    pub fn expected(&self) -> Option<&str> {
        self.expected.as_deref()
    }

    /// Filters one body event in place. Returns `Ok(Some(_))` once the body
    /// ended intact, `Err` when it ended with the wrong digest (the held
    /// chunk is then never released).
    pub fn filter(
        &mut self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> Result<Option<Verified>, Mismatch> {
        if let Some(chunk) = body.as_ref() {
            if let Some(hasher) = self.hasher.as_mut() {
                hasher.update(chunk);
            }
            if let Some(kept) = self.kept.as_mut() {
                if kept.len() + chunk.len() <= MAX_KEPT_MANIFEST {
                    kept.extend_from_slice(chunk);
                } else {
                    self.kept = None;
                }
            }
        }
        if self.expected.is_some() {
            self.held.hold(body);
        }
        if !end_of_stream {
            return Ok(None);
        }
        let Some(hasher) = self.hasher.take() else {
            return Ok(None);
        };
        let actual = hasher.finish();
        if let Some(expected) = &self.expected {
            if *expected != actual {
                self.held = HeldBack::default();
                return Err(Mismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
            self.held.release(body);
        }
        Ok(Some(Verified {
            digest: actual,
            body: self.kept.take().map(BytesMut::freeze),
        }))
    }
}

/// The newest chunk of a body, held until the next one arrives or the
/// body is found good at its end.
#[derive(Default)]
struct HeldBack(Option<Bytes>);

impl HeldBack {
    /// Releases the chunk held before, and holds this one.
    fn hold(&mut self, body: &mut Option<Bytes>) {
        let previous = self.0.take();
        self.0 = body.take();
        *body = previous;
    }

    /// The body is good: what `hold` released, and the chunk held.
    fn release(&mut self, body: &mut Option<Bytes>) {
        *body = join(body.take(), self.0.take());
    }
}

/// Checks an index document's syntax while it streams, holding back its
/// newest chunk as [`Verifier`] does: a garbled document never completes
/// for its client and is never committed. One larger than the rewriter
/// holds ([`super::documents::MAX_WHOLE_DOCUMENT`]) goes on unchecked, as
/// the rewriter passes it on.
pub struct DocumentCheck {
    syntax: Syntax,
    /// The document so far; `None` once it grew too large to check.
    doc: Option<BytesMut>,
    held: HeldBack,
}

impl DocumentCheck {
    pub fn new(syntax: Syntax) -> DocumentCheck {
        DocumentCheck {
            syntax,
            doc: Some(BytesMut::new()),
            held: HeldBack::default(),
        }
    }

    pub fn syntax(&self) -> Syntax {
        self.syntax
    }

    /// Filters one body event in place; at the end, the parser's
    /// complaint about a document that is not well-formed (the held chunk
    /// is then never released).
    pub fn filter(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) -> Result<(), String> {
        let Some(doc) = self.doc.as_mut() else {
            return Ok(());
        };
        if let Some(chunk) = body.as_ref() {
            if doc.len() + chunk.len() > super::documents::MAX_WHOLE_DOCUMENT {
                self.doc = None;
                self.held.release(body);
                return Ok(());
            }
            doc.extend_from_slice(chunk);
        }
        self.held.hold(body);
        if !end_of_stream {
            return Ok(());
        }
        let doc = self.doc.take().unwrap_or_default();
        if let Err(complaint) = self.syntax.check(&doc) {
            self.held = HeldBack::default();
            return Err(complaint);
        }
        self.held.release(body);
        Ok(())
    }
}

fn join(first: Option<Bytes>, second: Option<Bytes>) -> Option<Bytes> {
    match (first, second) {
        (Some(a), Some(b)) if a.is_empty() => Some(b),
        (Some(a), Some(b)) if b.is_empty() => Some(a),
        (Some(a), Some(b)) => {
            let mut joined = BytesMut::with_capacity(a.len() + b.len());
            joined.extend_from_slice(&a);
            joined.extend_from_slice(&b);
            Some(joined.freeze())
        }
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    fn digest_of(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
    }

    /// Feeds `chunks` (the last with end of stream) and collects what is let through.
    fn run(
        verifier: &mut Verifier,
        chunks: &[&[u8]],
    ) -> (Vec<u8>, Result<Option<Verified>, Mismatch>) {
        let mut out = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let end = i + 1 == chunks.len();
            let mut body = Some(Bytes::copy_from_slice(chunk));
            let result = verifier.filter(&mut body, end);
            if let Some(b) = body {
                out.extend_from_slice(&b);
            }
            if end || result.is_err() {
                return (out, result);
            }
        }
        unreachable!("no chunks")
    }

    #[test]
    fn a_matching_body_passes_whole_and_in_order() {
        let data = b"hello, registry";
        let mut v = Verifier::new(Some(&digest_of(data)), false).unwrap();
        let (out, result) = run(&mut v, &[b"hello", b", ", b"registry"]);
        assert_eq!(out, data);
        assert_eq!(result.unwrap().unwrap().digest, digest_of(data));
    }

    #[test]
    fn a_wrong_body_never_releases_its_last_chunk() {
        let mut v = Verifier::new(Some(&digest_of(b"right")), false).unwrap();
        let (out, result) = run(&mut v, &[b"wro", b"ng"]);
        assert_eq!(out, b"wro", "the last chunk is held back");
        let mismatch = result.err().unwrap();
        assert_eq!(mismatch.actual, digest_of(b"wrong"));
        // A single-chunk body lets nothing through at all.
        let mut v = Verifier::new(Some(&digest_of(b"right")), false).unwrap();
        let (out, result) = run(&mut v, &[b"wrong"]);
        assert!(out.is_empty() && result.is_err());
    }

    #[test]
    fn end_of_stream_without_data_releases_the_held_chunk() {
        let data = b"abc";
        let mut v = Verifier::new(Some(&digest_of(data)), false).unwrap();
        let mut body = Some(Bytes::from_static(data));
        assert!(v.filter(&mut body, false).unwrap().is_none());
        assert!(body.is_none());
        let mut end = None;
        let verified = v.filter(&mut end, true).unwrap().unwrap();
        assert_eq!(end.as_deref(), Some(&data[..]));
        assert_eq!(verified.digest, digest_of(data));
    }

    /// Runs chunks through a document check; what came out, and the end.
    fn check_document(syntax: Syntax, chunks: &[&[u8]]) -> (Vec<u8>, Result<(), String>) {
        let mut check = DocumentCheck::new(syntax);
        let mut out = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut body = Some(Bytes::copy_from_slice(chunk));
            let result = check.filter(&mut body, i + 1 == chunks.len());
            out.extend_from_slice(body.as_deref().unwrap_or_default());
            if result.is_err() {
                return (out, result);
            }
        }
        (out, Ok(()))
    }

    #[test]
    fn a_garbled_document_never_completes_and_a_good_one_passes_whole() {
        let (out, end) = check_document(Syntax::Json, &[b"{\"name\":", b" \"a\"}"]);
        assert_eq!((out.as_slice(), end), (&b"{\"name\": \"a\"}"[..], Ok(())));
        let (out, end) = check_document(Syntax::Json, &[b"{\"name\":", b" \"a\""]);
        assert_eq!(out, b"{\"name\":", "the last chunk is held back");
        assert!(end.is_err());
        let (out, end) = check_document(Syntax::Yaml, &[b"entries: [1"]);
        assert!(out.is_empty() && end.is_err());
    }

    #[test]
    fn unverified_bodies_stream_through_and_are_kept() {
        let mut v = Verifier::new(None, true).unwrap();
        let (out, result) = run(&mut v, &[b"{\"a\":", b"1}"]);
        assert_eq!(out, b"{\"a\":1}");
        let verified = result.unwrap().unwrap();
        assert_eq!(verified.digest, digest_of(b"{\"a\":1}"));
        assert_eq!(verified.body.as_deref(), Some(&b"{\"a\":1}"[..]));
    }

    #[test]
    fn sha512_digests_and_bad_digests() {
        let data = b"x";
        let expected = format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)));
        let mut v = Verifier::new(Some(&expected), false).unwrap();
        assert!(run(&mut v, &[data]).1.is_ok());
        assert!(Verifier::new(Some("md5:abc"), false).is_none());
        assert!(Verifier::new(Some("sha256:ABC"), false).is_none());
        let sha1 = format!(
            "sha1:{}",
            hex::encode(<sha1::Sha1 as sha2::Digest>::digest(data))
        );
        let mut v = Verifier::new(Some(&sha1), false).unwrap();
        assert_eq!(run(&mut v, &[data]).1.unwrap().unwrap().digest, sha1);
    }
}
