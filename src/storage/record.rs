//! The stored description of one cached object: its response header and
//! freshness, where the body lives and what it must hash to.
//!
//! A record is written only after its body is complete, so its presence is
//! the commit marker. A small body is kept inside its record (an optional
//! last section), so a hit on it costs one file read and no body file
//! exists at all. The encoding is a small versioned envelope, parsed
//! with every length checked: a truncated or foreign file must read as
//! "not cached", never panic or serve garbage.
//!
//! `ADR2` (written today) stores the header as plain name/value pairs and
//! the freshness as integers: reading a record that is not in the hot tier
//! is then a few copies. `ADR1` records, written by earlier versions, hold
//! pingora's own meta blobs (a zstd-compressed header and msgpack times),
//! whose decoding was 8% of the CPU of hits at a million objects; they are
//! still read, so an upgrade keeps its cache.

use pingora::cache::CacheMeta;
use pingora::http::ResponseHeader;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAGIC_V1: &[u8; 4] = b"ADR1";
const MAGIC: &[u8; 4] = b"ADR2";

/// What the envelope says about the body besides its meta.
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

/// The fields of a [`CacheMeta`], from which an equal one is rebuilt
/// cheaply on every hit.
#[derive(Debug, Clone)]
pub struct StoredMeta {
    pub fresh_until: SystemTime,
    pub created: SystemTime,
    /// The reference point of the entry's age: its last revalidation.
    pub epoch: SystemTime,
    pub stale_while_revalidate_sec: u32,
    pub stale_if_error_sec: u32,
    pub header: ResponseHeader,
}

impl StoredMeta {
    pub fn of(meta: &CacheMeta) -> StoredMeta {
        StoredMeta {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            epoch: meta.epoch(),
            stale_while_revalidate_sec: meta.stale_while_revalidate_sec(),
            stale_if_error_sec: meta.stale_if_error_sec(),
            header: meta.response_header_copy(),
        }
    }

    pub fn to_meta(&self) -> CacheMeta {
        let mut meta = CacheMeta::new(
            self.fresh_until,
            self.created,
            self.stale_while_revalidate_sec,
            self.stale_if_error_sec,
            self.header.clone(),
        );
        // `new` counts age from `created`; a revalidated entry's counts from
        // its last revalidation, which the epoch override restores.
        if self.epoch != self.created {
            meta.set_epoch_override(self.epoch);
        }
        meta
    }

    /// The header as (name, value) pairs, names in their original case.
    pub fn header_pairs(&self) -> Vec<(&[u8], &[u8])> {
        if self.header.has_case() {
            self.header
                .case_header_iter()
                .map(|(name, value)| (name.as_slice(), value.as_bytes()))
                .collect()
        } else {
            self.header
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
                .collect()
        }
    }

    /// Bytes of header text, for weighing a record in memory (on every
    /// hot-tier put, so without collecting the pairs; a name's case does
    /// not change its length).
    pub fn header_bytes(&self) -> usize {
        self.header
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for time in [self.fresh_until, self.created, self.epoch] {
            let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
            out.extend_from_slice(&since.as_secs().to_le_bytes());
            out.extend_from_slice(&since.subsec_nanos().to_le_bytes());
        }
        out.extend_from_slice(&self.stale_while_revalidate_sec.to_le_bytes());
        out.extend_from_slice(&self.stale_if_error_sec.to_le_bytes());
        out.extend_from_slice(&self.header.status.as_u16().to_le_bytes());
        let pairs = self.header_pairs();
        out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
        for (name, value) in pairs {
            put_section(out, name);
            put_section(out, value);
        }
    }
}

/// A committed cache entry.
#[derive(Debug, Clone)]
pub struct Record {
    pub meta: StoredMeta,
    pub body: BodyInfo,
    /// The body itself, when it is small enough to live in the record
    /// (`body.body_key` is then empty).
    pub inline_body: Option<bytes::Bytes>,
    /// The response head the hit fast path sends, built on its first use.
    /// A record never changes once shared (a revalidation or a header fix
    /// makes a new one), so the head cannot go stale.
    pub fast_head: std::sync::OnceLock<bytes::Bytes>,
}

/// Why bytes could not be read as a [`Record`].
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a record (bad magic)")]
    BadMagic,
    #[error("record truncated")]
    Truncated,
    #[error("record meta: {0}")]
    Meta(String),
    #[error("record body info: {0}")]
    Info(#[from] serde_json::Error),
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let inline = self.inline_body.as_deref();
        let mut out = self.encode_head(inline.map(<[u8]>::len));
        out.extend_from_slice(inline.unwrap_or_default());
        out
    }

    /// The record's bytes up to its inline body of `inline_len` bytes
    /// (`None`: no inline body), which follow them: a fill writes its
    /// chunks after these instead of joining them first. The capacity
    /// leaves room for the body, for [`Record::encode`].
    pub fn encode_head(&self, inline_len: Option<usize>) -> Vec<u8> {
        let mut meta = Vec::with_capacity(256);
        self.meta.encode(&mut meta);
        let mut info = Vec::with_capacity(128);
        self.body.encode(&mut info);
        let inline_here = self.inline_body.as_ref().map_or(0, |b| b.len());
        let mut out = Vec::with_capacity(MAGIC.len() + 12 + meta.len() + info.len() + inline_here);
        out.extend_from_slice(MAGIC);
        put_section(&mut out, &meta);
        put_section(&mut out, &info);
        if let Some(len) = inline_len {
            out.extend_from_slice(&(len as u32).to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        if bytes.starts_with(MAGIC) {
            return RecordView::parse(bytes)?.to_record();
        }
        let (meta, body, rest) = if let Some(rest) = bytes.strip_prefix(MAGIC_V1) {
            let (meta_internal, rest) = take_section(rest)?;
            let (meta_header, rest) = take_section(rest)?;
            let (info, rest) = take_section(rest)?;
            let meta = CacheMeta::deserialize(meta_internal, meta_header)
                .map_err(|e| RecordError::Meta(e.to_string()))?;
            (
                StoredMeta::of(&meta),
                serde_json::from_slice::<BodyInfo>(info)?,
                rest,
            )
        } else {
            return Err(RecordError::BadMagic);
        };
        let inline_body = inline_section(rest)?;
        if !is_whole(body.size, inline_body, &body.body_key) {
            return Err(RecordError::Truncated);
        }
        Ok(Record {
            meta,
            body,
            inline_body: inline_body.map(bytes::Bytes::copy_from_slice),
            fast_head: Default::default(),
        })
    }
}

/// The optional last section of a record: its inline body.
fn inline_section(rest: &[u8]) -> Result<Option<&[u8]>, RecordError> {
    if rest.is_empty() {
        return Ok(None);
    }
    let (inline, rest) = take_section(rest)?;
    if !rest.is_empty() {
        return Err(RecordError::Truncated);
    }
    Ok(Some(inline))
}

/// Whether a record carries its body: inline at its full size, or in a
/// body file it names.
fn is_whole(size: u64, inline: Option<&[u8]>, body_key: &str) -> bool {
    match inline {
        Some(inline) => inline.len() as u64 == size,
        None => !body_key.is_empty(),
    }
}

/// An `ADR2` record read where it lies, every length and every header
/// checked as [`Record::decode`] checks them, without building anything.
///
/// Why: a hit on a small object the hot tier does not hold is answered
/// from this (its head written from the stored pairs, its body copied
/// from the read), which costs a fraction of a parse into a
/// [`ResponseHeader`], its clone for the response, and a hot-tier insert.
pub struct RecordView<'a> {
    pub fresh_until: SystemTime,
    pub created: SystemTime,
    pub epoch: SystemTime,
    pub stale_while_revalidate_sec: u32,
    pub stale_if_error_sec: u32,
    pub status: http::StatusCode,
    /// The header pairs, as [`put_section`] wrote them.
    pairs: &'a [u8],
    count: usize,
    pub size: u64,
    pub fetched_at: u64,
    pub body_key: &'a str,
    pub sha256: &'a str,
    pub remote: &'a str,
    pub path: &'a str,
    pub inline_body: Option<&'a [u8]>,
}

impl<'a> RecordView<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<RecordView<'a>, RecordError> {
        // No `ok_or(error)` in here: it builds the error, and drops it, on
        // every call, and every hit on a record in a segment parses it.
        let Some(rest) = bytes.strip_prefix(MAGIC) else {
            return Err(RecordError::BadMagic);
        };
        let (mut meta, rest) = take_section(rest)?;
        let (mut info, rest) = take_section(rest)?;
        let inline_body = inline_section(rest)?;
        let mut time = || -> Result<SystemTime, RecordError> {
            let secs = u64::from_le_bytes(take_array(&mut meta)?);
            let nanos = u32::from_le_bytes(take_array(&mut meta)?);
            // Not `Duration::new`, which panics when the nanoseconds carry
            // past the largest number of seconds.
            Duration::from_secs(secs)
                .checked_add(Duration::from_nanos(u64::from(nanos)))
                .and_then(|since| UNIX_EPOCH.checked_add(since))
                .ok_or_else(|| RecordError::Meta("time out of range".into()))
        };
        let (fresh_until, created, epoch) = (time()?, time()?, time()?);
        let stale_while_revalidate_sec = u32::from_le_bytes(take_array(&mut meta)?);
        let stale_if_error_sec = u32::from_le_bytes(take_array(&mut meta)?);
        let status = http::StatusCode::from_u16(u16::from_le_bytes(take_array(&mut meta)?))
            .map_err(|e| RecordError::Meta(e.to_string()))?;
        let count = u32::from_le_bytes(take_array(&mut meta)?) as usize;
        // Each pair takes at least 8 bytes: a count beyond that is garbage.
        if count > meta.len() / 8 {
            return Err(RecordError::Truncated);
        }
        let pairs = meta;
        let mut rest = pairs;
        for _ in 0..count {
            let (name, after) = take_section(rest)?;
            let (value, after) = take_section(after)?;
            check_pair(name, value)?;
            rest = after;
        }
        if !rest.is_empty() {
            return Err(RecordError::Truncated);
        }
        let size = u64::from_le_bytes(take_array(&mut info)?);
        let fetched_at = u64::from_le_bytes(take_array(&mut info)?);
        let mut text = || -> Result<&'a str, RecordError> {
            let (section, after) = take_section(info)?;
            info = after;
            std::str::from_utf8(section).map_err(|e| RecordError::Meta(e.to_string()))
        };
        let (body_key, sha256, remote, path) = (text()?, text()?, text()?, text()?);
        if !info.is_empty() || !is_whole(size, inline_body, body_key) {
            return Err(RecordError::Truncated);
        }
        Ok(RecordView {
            fresh_until,
            created,
            epoch,
            stale_while_revalidate_sec,
            stale_if_error_sec,
            status,
            pairs,
            count,
            size,
            fetched_at,
            body_key,
            sha256,
            remote,
            path,
            inline_body,
        })
    }

    /// The header's (name, value) pairs, names in their case, in the
    /// order a parsed header iterates them (the encoder wrote them from
    /// one, so equal names are already together).
    pub fn header_pairs(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone {
        let mut rest = self.pairs;
        (0..self.count).map_while(move |_| {
            let (name, after) = take_section(rest).ok()?;
            let (value, after) = take_section(after).ok()?;
            rest = after;
            Some((name, value))
        })
    }

    /// The record, parsed.
    pub fn to_record(&self) -> Result<Record, RecordError> {
        let bad = |e: Box<pingora::Error>| RecordError::Meta(e.to_string());
        let mut header = ResponseHeader::build(self.status, Some(self.count)).map_err(bad)?;
        for (name, value) in self.header_pairs() {
            let value = http::HeaderValue::from_bytes(value)
                .map_err(|e| RecordError::Meta(e.to_string()))?;
            header
                .append_header(bytes::Bytes::copy_from_slice(name), value)
                .map_err(bad)?;
        }
        Ok(Record {
            meta: StoredMeta {
                fresh_until: self.fresh_until,
                created: self.created,
                epoch: self.epoch,
                stale_while_revalidate_sec: self.stale_while_revalidate_sec,
                stale_if_error_sec: self.stale_if_error_sec,
                header,
            },
            body: BodyInfo {
                body_key: self.body_key.to_owned(),
                size: self.size,
                sha256: self.sha256.to_owned(),
                remote: self.remote.to_owned(),
                path: self.path.to_owned(),
                fetched_at: self.fetched_at,
            },
            inline_body: self.inline_body.map(bytes::Bytes::copy_from_slice),
            fast_head: Default::default(),
        })
    }
}

/// A stored header pair is what `http` accepts: a token for a name, and
/// a value without control characters other than tab. A pair that could
/// not have been parsed is never written out as it lies.
///
/// Every hit on a record read from its segment checks its pairs, so the
/// checks look bytes up in a table and fold without branching (a value
/// then checks many bytes per instruction).
fn check_pair(name: &[u8], value: &[u8]) -> Result<(), RecordError> {
    let token = name.iter().fold(true, |ok, b| ok & TOKEN[*b as usize]);
    let visible = value.iter().fold(true, |ok, b| {
        ok & (((*b >= 0x20) & (*b != 0x7f)) | (*b == b'\t'))
    });
    if name.is_empty() || !token || !visible {
        return Err(RecordError::Meta(format!(
            "invalid header {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

/// The bytes of a token (a header name), by value.
const TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

impl BodyInfo {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.fetched_at.to_le_bytes());
        for text in [&self.body_key, &self.sha256, &self.remote, &self.path] {
            put_section(out, text.as_bytes());
        }
    }
}

fn put_section(out: &mut Vec<u8>, section: &[u8]) {
    out.extend_from_slice(&(section.len() as u32).to_le_bytes());
    out.extend_from_slice(section);
}

fn take_array<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N], RecordError> {
    let Some((head, rest)) = bytes.split_first_chunk::<N>() else {
        return Err(RecordError::Truncated);
    };
    *bytes = rest;
    Ok(*head)
}

fn take_section(bytes: &[u8]) -> Result<(&[u8], &[u8]), RecordError> {
    let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
        return Err(RecordError::Truncated);
    };
    let len = u32::from_le_bytes(*len) as usize;
    match (rest.get(..len), rest.get(len..)) {
        (Some(section), Some(after)) => Ok((section, after)),
        _ => Err(RecordError::Truncated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> CacheMeta {
        let created = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let mut header = ResponseHeader::build(200, None).unwrap();
        header
            .append_header("Content-Type", "application/gzip")
            .unwrap();
        header.append_header("x-Mixed-Case", "one").unwrap();
        header.append_header("x-mixed-case", "two").unwrap();
        header.append_header("ETag", "\"abc\"").unwrap();
        let mut meta = CacheMeta::new(created + Duration::from_secs(600), created, 30, 60, header);
        meta.set_epoch_override(created + Duration::from_secs(5));
        meta
    }

    fn sample() -> Record {
        Record {
            meta: StoredMeta::of(&meta()),
            body: BodyInfo {
                body_key: "cache/r/ab/abcd.1.body".into(),
                size: 42,
                sha256: "00".repeat(32),
                remote: "r".into(),
                path: "a/b.tgz".into(),
                fetched_at: 1,
            },
            inline_body: None,
            fast_head: Default::default(),
        }
    }

    /// The header as the wire would carry it: names in their case, in order.
    fn wire(meta: &StoredMeta) -> Vec<u8> {
        let mut out = vec![];
        meta.header.header_to_h1_wire(&mut out);
        out
    }

    fn assert_same(a: &Record, b: &Record) {
        assert_eq!(a.body, b.body);
        assert_eq!(a.inline_body, b.inline_body);
        assert_eq!(a.meta.fresh_until, b.meta.fresh_until);
        assert_eq!(a.meta.created, b.meta.created);
        assert_eq!(a.meta.epoch, b.meta.epoch);
        assert_eq!(
            a.meta.stale_while_revalidate_sec,
            b.meta.stale_while_revalidate_sec
        );
        assert_eq!(a.meta.stale_if_error_sec, b.meta.stale_if_error_sec);
        assert_eq!(a.meta.header.status, b.meta.header.status);
        assert_eq!(wire(&a.meta), wire(&b.meta));
    }

    #[test]
    fn round_trip_keeps_times_to_the_nanosecond_and_header_case_and_order() {
        let r = sample();
        let back = Record::decode(&r.encode()).unwrap();
        assert_same(&r, &back);
        let text = String::from_utf8(wire(&back.meta)).unwrap();
        assert!(
            text.contains("x-Mixed-Case: one\r\nx-mixed-case: two"),
            "{text}"
        );
        let rebuilt = back.meta.to_meta();
        assert_eq!(
            rebuilt.epoch(),
            UNIX_EPOCH + Duration::new(1_700_000_005, 123_456_789)
        );
        assert_eq!(rebuilt.stale_if_error_sec(), 60);
    }

    /// Records written by earlier versions (pingora's meta blobs and JSON
    /// body info) still read.
    #[test]
    fn adr1_records_still_decode() {
        let r = sample();
        let (internal, header) = meta().serialize().unwrap();
        let info = serde_json::to_vec(&r.body).unwrap();
        let mut old = MAGIC_V1.to_vec();
        for section in [&internal[..], &header[..], &info[..]] {
            put_section(&mut old, section);
        }
        let back = Record::decode(&old).unwrap();
        assert_eq!(back.body, r.body);
        assert_eq!(back.meta.fresh_until, r.meta.fresh_until);
        assert_eq!(back.meta.header.headers.get("x-mixed-case").unwrap(), "one");
    }

    #[test]
    fn inline_bodies_round_trip_and_must_match_their_size() {
        let mut r = sample();
        r.body.body_key = String::new();
        r.inline_body = Some(bytes::Bytes::from(vec![7u8; 42]));
        assert_same(&Record::decode(&r.encode()).unwrap(), &r);
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

    #[test]
    fn a_huge_header_count_is_an_error_not_an_allocation() {
        let mut bytes = sample().encode();
        // The count sits after the magic, the meta's length, three times
        // (12 bytes each), two u32s and the status.
        bytes[8 + 12 * 3 + 8 + 2..][..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Record::decode(&bytes),
            Err(RecordError::Truncated)
        ));
    }

    #[test]
    fn a_view_reads_what_decode_reads() {
        let mut inline = sample();
        inline.body.body_key = String::new();
        inline.inline_body = Some(bytes::Bytes::from(vec![5u8; 42]));
        for record in [sample(), inline] {
            let bytes = record.encode();
            let view = RecordView::parse(&bytes).unwrap();
            assert_eq!(view.inline_body, record.inline_body.as_deref());
            assert_eq!(
                (view.body_key, view.size, view.remote, view.path),
                (&*record.body.body_key, 42, "r", "a/b.tgz")
            );
            assert_eq!(view.epoch, record.meta.epoch);
            let mut wired = vec![];
            for (name, value) in view.header_pairs() {
                wired.extend_from_slice(&[name, b": ", value, b"\r\n"].concat());
            }
            assert_eq!(wired, wire(&record.meta));
            assert_same(&view.to_record().unwrap(), &record);
        }
    }

    #[test]
    fn a_stored_time_past_the_last_second_is_an_error_not_a_panic() {
        let record = sample();
        let mut meta = vec![];
        record.meta.encode(&mut meta);
        meta[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        meta[8..12].copy_from_slice(&999_999_999u32.to_le_bytes());
        let mut info = vec![];
        record.body.encode(&mut info);
        let mut bytes = MAGIC.to_vec();
        put_section(&mut bytes, &meta);
        put_section(&mut bytes, &info);
        assert!(RecordView::parse(&bytes).is_err());
        assert!(Record::decode(&bytes).is_err());
    }

    #[test]
    fn every_byte_is_judged_as_http_judges_it() {
        for byte in 0..=255u8 {
            let as_name = check_pair(&[b'x', byte], b"v").is_ok();
            let http_name = http::HeaderName::from_bytes(&[b'x', byte]).is_ok();
            assert_eq!(as_name, http_name, "name byte {byte:#04x}");
            let as_value = check_pair(b"x", &[b'v', byte]).is_ok();
            let http_value = http::HeaderValue::from_bytes(&[b'v', byte]).is_ok();
            assert_eq!(as_value, http_value, "value byte {byte:#04x}");
        }
    }

    #[test]
    fn a_stored_header_that_http_would_refuse_is_an_error() {
        for (name, value) in [
            ("x-a", "one\r\ntwo"),
            ("x a", "v"),
            ("", "v"),
            ("x-a", "\u{7f}"),
        ] {
            let mut record = sample();
            record.meta.header = ResponseHeader::build(200, None).unwrap();
            let mut meta = vec![];
            record.meta.encode(&mut meta);
            // Rewrite the (now empty) pair list as one raw pair.
            meta.truncate(12 * 3 + 8 + 2);
            meta.extend_from_slice(&1u32.to_le_bytes());
            put_section(&mut meta, name.as_bytes());
            put_section(&mut meta, value.as_bytes());
            let mut info = vec![];
            record.body.encode(&mut info);
            let mut bytes = MAGIC.to_vec();
            put_section(&mut bytes, &meta);
            put_section(&mut bytes, &info);
            assert!(RecordView::parse(&bytes).is_err(), "{name:?}: {value:?}");
            assert!(Record::decode(&bytes).is_err(), "{name:?}: {value:?}");
        }
    }
}
