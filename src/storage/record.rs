//! The stored description of one cached object: pingora's [`CacheMeta`]
//! blobs plus where the body lives and what it must hash to.
//!
//! A record is written only after its body is complete, so its presence is
//! the commit marker. A small body is kept inside its record (an optional
//! fourth section), so a hit on it costs one file read and no body file
//! exists at all. The encoding is a small versioned envelope, parsed
//! with every length checked: a truncated or foreign file must read as
//! "not cached", never panic or serve garbage.
//!
//! [`CacheMeta`]: pingora::cache::CacheMeta

use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 4] = b"ADR1";

/// What the envelope says about the body besides pingora's meta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyInfo {
    /// Object key of the body in the blob store.
    pub body_key: String,
    pub size: u64,
    /// Hex sha256 of the body, computed while it streamed in.
    pub sha256: String,
    pub remote: String,
    pub path: String,
    /// Seconds since the Unix epoch when the body was fetched.
    pub fetched_at: u64,
}

/// A committed cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `CacheMeta::serialize().0`.
    pub meta_internal: Vec<u8>,
    /// `CacheMeta::serialize().1`.
    pub meta_header: Vec<u8>,
    pub body: BodyInfo,
    /// The body itself, when it is small enough to live in the record
    /// (`body.body_key` is then empty).
    pub inline_body: Option<bytes::Bytes>,
}

/// Why bytes could not be read as a [`Record`].
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a record (bad magic)")]
    BadMagic,
    #[error("record truncated")]
    Truncated,
    #[error("record body info: {0}")]
    Info(#[from] serde_json::Error),
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let info = serde_json::to_vec(&self.body).expect("BodyInfo serializes");
        let inline = self.inline_body.as_deref();
        let mut out = Vec::with_capacity(
            MAGIC.len()
                + 16
                + self.meta_internal.len()
                + self.meta_header.len()
                + info.len()
                + inline.map_or(0, <[u8]>::len),
        );
        out.extend_from_slice(MAGIC);
        let sections = [&self.meta_internal[..], &self.meta_header[..], &info[..]];
        for section in sections.into_iter().chain(inline) {
            out.extend_from_slice(&(section.len() as u32).to_le_bytes());
            out.extend_from_slice(section);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let rest = bytes.strip_prefix(MAGIC).ok_or(RecordError::BadMagic)?;
        let (meta_internal, rest) = take_section(rest)?;
        let (meta_header, rest) = take_section(rest)?;
        let (info, rest) = take_section(rest)?;
        let inline_body = match rest {
            [] => None,
            rest => {
                let (inline, rest) = take_section(rest)?;
                if !rest.is_empty() {
                    return Err(RecordError::Truncated);
                }
                Some(bytes::Bytes::copy_from_slice(inline))
            }
        };
        let body: BodyInfo = serde_json::from_slice(info)?;
        let whole = match &inline_body {
            Some(inline) => inline.len() as u64 == body.size,
            // A record without a body file must have carried its body.
            None => !body.body_key.is_empty(),
        };
        if !whole {
            return Err(RecordError::Truncated);
        }
        Ok(Record {
            meta_internal: meta_internal.to_vec(),
            meta_header: meta_header.to_vec(),
            body,
            inline_body,
        })
    }
}

fn take_section(bytes: &[u8]) -> Result<(&[u8], &[u8]), RecordError> {
    let len_bytes: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(RecordError::Truncated)?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let section = bytes.get(4..4 + len).ok_or(RecordError::Truncated)?;
    Ok((section, &bytes[4 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            meta_internal: vec![1, 2, 3],
            meta_header: b"HTTP/1.1 200 OK".to_vec(),
            body: BodyInfo {
                body_key: "cache/r/ab/abcd.1.body".into(),
                size: 42,
                sha256: "00".repeat(32),
                remote: "r".into(),
                path: "a/b.tgz".into(),
                fetched_at: 1,
            },
            inline_body: None,
        }
    }

    #[test]
    fn round_trip() {
        let r = sample();
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn inline_bodies_round_trip_and_must_match_their_size() {
        let mut r = sample();
        r.body.body_key = String::new();
        r.inline_body = Some(bytes::Bytes::from(vec![7u8; 42]));
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        r.inline_body = Some(bytes::Bytes::from(vec![7u8; 41]));
        assert!(Record::decode(&r.encode()).is_err());
    }

    #[test]
    fn every_truncated_prefix_is_an_error_not_a_panic() {
        let mut inline = sample();
        inline.body.body_key = String::new();
        inline.inline_body = Some(bytes::Bytes::from(vec![1u8; 42]));
        let bytes = inline.encode();
        for len in 0..bytes.len() {
            assert!(Record::decode(&bytes[..len]).is_err(), "prefix {len}");
        }
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(Record::decode(&bytes[..len]).is_err(), "prefix {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Record::decode(&longer).is_err());
    }
}
