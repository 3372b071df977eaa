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

use crate::digest::Hasher;
use bytes::{Bytes, BytesMut};

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
    held: Option<Bytes>,
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
            held: None,
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
            // Release the previous chunk, hold this one.
            let previous = self.held.take();
            self.held = body.take();
            *body = previous;
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
                self.held = None;
                return Err(Mismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
            *body = join(body.take(), self.held.take());
        }
        Ok(Some(Verified {
            digest: actual,
            body: self.kept.take().map(BytesMut::freeze),
        }))
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
