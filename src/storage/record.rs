//! The stored description of one cached object: pingora's [`CacheMeta`]
//! blobs plus where the body lives and what it must hash to.
//!
//! A record is written only after its body is complete, so its presence is
//! the commit marker. The encoding is a small versioned envelope, parsed
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
        let mut out = Vec::with_capacity(
            MAGIC.len() + 12 + self.meta_internal.len() + self.meta_header.len() + info.len(),
        );
        out.extend_from_slice(MAGIC);
        for section in [&self.meta_internal[..], &self.meta_header[..], &info[..]] {
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
        if !rest.is_empty() {
            return Err(RecordError::Truncated);
        }
        Ok(Record {
            meta_internal: meta_internal.to_vec(),
            meta_header: meta_header.to_vec(),
            body: serde_json::from_slice(info)?,
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
        }
    }

    #[test]
    fn round_trip() {
        let r = sample();
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn every_truncated_prefix_is_an_error_not_a_panic() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(Record::decode(&bytes[..len]).is_err(), "prefix {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Record::decode(&longer).is_err());
    }
}
