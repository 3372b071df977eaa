//! Where an entry's record and bodies live in the body store.
//!
//! Per remote, so a remote can be flushed by prefix:
//! - `cache/{remote}/{hh}/{hash}.meta`: the commit-time record;
//! - `cache/{remote}/{hh}/{hash}.{uuid}.body`: a body. Each fill writes a
//!   new body key, so a reader of the old body is never handed new bytes
//!   under old headers, and deleting a body by its key can never delete a
//!   newer one.

use pingora::cache::key::{CacheHashKey, CompactCacheKey};
use pingora::cache::CacheKey;

/// An entry's identity: remote and the 128-bit primary hash of its key.
///
/// The hash covers remote and path (the cache key encodes both), so it
/// alone identifies an entry in memory; object keys, which need hex, are
/// only built when storage is actually touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryLocation {
    pub remote: String,
    pub primary: [u8; 16],
}

impl EntryLocation {
    /// Entry `id` of `remote`.
    pub fn new(remote: &str, id: u128) -> Self {
        EntryLocation {
            remote: remote.to_string(),
            primary: id.to_be_bytes(),
        }
    }

    pub fn from_compact(key: &CompactCacheKey) -> Self {
        EntryLocation {
            remote: key.user_tag.to_string(),
            primary: key.primary,
        }
    }

    pub fn from_key(key: &CacheKey) -> Self {
        EntryLocation {
            remote: key.user_tag.clone(),
            primary: key.primary_bin(),
        }
    }

    fn hash(&self) -> String {
        hex::encode(self.primary)
    }

    fn dir_and_hash(&self) -> (String, String) {
        let hash = self.hash();
        (format!("cache/{}/{}", self.remote, &hash[..2]), hash)
    }

    pub fn meta_key(&self) -> String {
        let (dir, hash) = self.dir_and_hash();
        format!("{dir}/{hash}.meta")
    }

    /// A body key no earlier fill of the entry used. Its id is random and
    /// fits 64 bits (the index keeps 64), nonzero (0 means "in the
    /// record") and never `u64::MAX`.
    pub fn new_body_key(&self) -> String {
        let (dir, hash) = self.dir_and_hash();
        let random = uuid::Uuid::new_v4().as_u64_pair().1;
        let id = (random | 1).min(u64::MAX - 1);
        format!("{dir}/{hash}.{id:032x}.body")
    }

    /// The key of the entry's freshness in the state store.
    pub fn state_key(&self) -> String {
        format!("{}/{}", self.remote, self.hash())
    }

    pub fn id(&self) -> u128 {
        u128::from_be_bytes(self.primary)
    }
}

/// The entry id encoded in a body or record key (`.../{hash}.….body`).
pub fn id_of_key(key: &str) -> Option<u128> {
    let name = key.rsplit('/').next()?;
    let hash = name.split('.').next()?;
    u128::from_str_radix(hash, 16)
        .ok()
        .filter(|_| hash.len() == 32)
}

/// The body id in a body key (`….{uuid}.body`); 0 for an empty key (a
/// body kept in its record).
pub fn body_id(body_key: &str) -> u128 {
    body_key
        .strip_suffix(".body")
        .and_then(|k| k.rsplit('.').next())
        .and_then(|uuid| u128::from_str_radix(uuid, 16).ok())
        .unwrap_or(0)
}

/// The body key of body `body` of entry `location` (see [`body_id`]).
pub fn body_key(location: &EntryLocation, body: u128) -> String {
    let (dir, hash) = location.dir_and_hash();
    format!("{dir}/{hash}.{body:032x}.body")
}

/// The body key of body `body`, or "" for a body kept in its record.
pub fn body_key_or_inline(location: &EntryLocation, body: u128) -> String {
    if body == 0 {
        String::new()
    } else {
        body_key(location, body)
    }
}

/// The store prefix holding every cached entry of `remote` (or of all).
pub fn cache_prefix(remote: Option<&str>) -> String {
    match remote {
        Some(remote) => format!("cache/{remote}"),
        None => "cache".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_keys_carry_their_entry_id() {
        let location = EntryLocation {
            remote: "r".into(),
            primary: [0xab; 16],
        };
        let key = location.new_body_key();
        assert!(key.starts_with("cache/r/ab/abababab"), "{key}");
        assert_eq!(id_of_key(&key), Some(location.id()));
        assert_eq!(id_of_key(&location.meta_key()), Some(location.id()));
        assert_eq!(id_of_key("local/r/file.bin"), None);
        assert_eq!(id_of_key("health-probe"), None);
        let body = body_id(&key);
        assert_ne!(body, 0);
        assert!(body < u64::MAX as u128, "fits the index's 64 bits");
        assert_eq!(body_key(&location, body), key);
        assert_eq!(body_id(""), 0);
    }
}
