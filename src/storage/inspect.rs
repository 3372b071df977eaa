//! Operations on single stored entries for the cache API and the
//! snapshot gate: removal by id, the recorded digest, and re-hashing a body against the sha256 recorded when it was fetched.
//!
//! Both go through the same paths as everything else (the entry lock,
//! compare-before-delete removal, ranged reads of the body store), so they
//! are safe while the entry is being served or replaced.

use super::layout::EntryLocation;
use super::{internal, CacheStorage, Expect};
use futures::StreamExt;
use pingora::Result;
use sha2::{Digest, Sha256};

/// What re-hashing one entry found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verified {
    Ok {
        size: u64,
    },
    /// The body's bytes no longer hash to the recorded digest.
    Corrupt {
        expected: String,
        actual: String,
    },
    /// The body is shorter or longer than recorded, or gone.
    Damaged {
        reason: String,
    },
    /// Removed (or replaced) since it was listed.
    Vanished,
}

impl CacheStorage {
    /// Removes entry `id` of `remote`; whether there was one.
    pub async fn remove_entry(&self, remote: &str, id: u128) -> Result<bool> {
        let location = EntryLocation::new(remote, id);
        Ok(self.remove(&location, Expect::Current).await?.is_some())
    }

    /// The hex sha256 recorded for the body committed under `key`, if an
    /// entry is.
    pub async fn committed_sha256(&self, key: &pingora::cache::CacheKey) -> Result<Option<String>> {
        let location = EntryLocation::from_key(key);
        Ok(self
            .load_record(&location)
            .await?
            .map(|record| record.body.sha256.clone()))
    }

    /// Reads entry `id` of `remote` back and compares its sha256 and size
    /// with what was recorded at commit.
    pub async fn verify_entry(&self, remote: &str, id: u128) -> Result<Verified> {
        let location = EntryLocation::new(remote, id);
        let slot = self.index.get(id);
        let Some((record, _)) = self.read_stored(&location, slot).await? else {
            return Ok(Verified::Vanished);
        };
        let expected_size = record.body.size;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        match &record.inline_body {
            Some(body) => {
                hasher.update(body);
                size = body.len() as u64;
            }
            None => {
                // One byte past the recorded end shows a body that grew.
                let stream = self
                    .bodies
                    .read_range(&record.body.body_key, 0..expected_size + 1)
                    .await;
                let mut stream = match stream {
                    Ok(stream) => stream,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Ok(Verified::Damaged {
                            reason: "body missing".into(),
                        })
                    }
                    Err(e) => return Err(internal("reading a body to verify", e)),
                };
                while let Some(chunk) = stream.next().await {
                    let chunk = match chunk {
                        Ok(chunk) => chunk,
                        Err(e) => {
                            return Ok(Verified::Damaged {
                                reason: format!("unreadable: {e}"),
                            })
                        }
                    };
                    size += chunk.len() as u64;
                    hasher.update(&chunk);
                }
            }
        }
        if size != expected_size {
            return Ok(Verified::Damaged {
                reason: format!("{size} bytes where {expected_size} were recorded"),
            });
        }
        let actual = hex::encode(hasher.finalize());
        Ok(if actual == record.body.sha256 {
            Verified::Ok { size }
        } else {
            Verified::Corrupt {
                expected: record.body.sha256.clone(),
                actual,
            }
        })
    }
}
