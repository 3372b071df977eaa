//! Checksums that package indexes publish for their files, recorded when an
//! index document is served so that the file's download can be verified
//! before it is committed.
//!
//! A PyPI simple page names each file with its `sha256`, an npm document
//! each tarball with its `integrity`, a Helm index each chart with its
//! `digest`. Those are recorded per remote and file path in the state store
//! (a restart keeps them; a cluster shares them), and the download of that
//! path is checked against them while it streams. A file nobody recorded a
//! checksum for is fetched unverified, as before.
//!
//! For remotes with `on_upstream_removed: refuse`, the versions each
//! package's newest index lists are kept too (in memory, per node), so
//! that a release the upstream withdrew is refused
//! ([`Checksums::withdrawn`]).
//!
//! Index documents are served far more often than they change, so a small
//! in-memory map of what was last written keeps a hit on an index from
//! rewriting the state store.

use crate::state::StateStore;
use parking_lot::Mutex;
use sha2::Digest as _;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Entries remembered as written (about 250 bytes each); past this the
/// memory is cleared and the state store is asked again (a rewrite of an
/// unchanged value is harmless).
const REMEMBERED: usize = 50_000;

pub struct Checksums {
    state: Arc<dyn StateStore>,
    /// State key → digest last written or read.
    known: Mutex<HashMap<String, String>>,
    background: tokio::runtime::Handle,
    /// (remote, package) → the versions its newest index listed, for the
    /// remotes that refuse what the upstream withdrew.
    listed: Mutex<HashMap<(String, String), HashSet<String>>>,
}

/// One published checksum: a decoded remote path and its digest
/// (`sha256:hex`, `sha512:hex`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub path: String,
    pub digest: String,
}

impl Checksums {
    pub fn new(state: Arc<dyn StateStore>, background: tokio::runtime::Handle) -> Checksums {
        Checksums {
            state,
            known: Mutex::new(HashMap::new()),
            background,
            listed: Mutex::new(HashMap::new()),
        }
    }

    /// Records the versions of `package` a fresh index of `remote` lists.
    pub fn record_listing(&self, remote: &str, package: &str, versions: HashSet<String>) {
        let key = (remote.to_string(), package.to_string());
        self.listed.lock().insert(key, versions);
    }

    /// Whether the newest index of `package` seen from `remote`'s upstream
    /// no longer lists `version` (`false` when no index was seen since
    /// the start: a release is never refused on a guess).
    pub fn withdrawn(&self, remote: &str, package: &str, version: &str) -> bool {
        let key = (remote.to_string(), package.to_string());
        self.listed
            .lock()
            .get(&key)
            .is_some_and(|versions| !versions.contains(version))
    }

    /// The state key of a file: its path hashed, so that any path is a
    /// safe key of fixed length.
    fn key(remote: &str, path: &str) -> String {
        let digest = sha2::Sha256::digest(path.as_bytes());
        format!("checksums/{remote}/{}", hex::encode(digest))
    }

    /// Records what an index published, in the background; only changed
    /// entries are written.
    pub fn record(self: &Arc<Self>, remote: &str, published: Vec<Published>) {
        let fresh = self.unknown(remote, published);
        if fresh.is_empty() {
            return;
        }
        let this = self.clone();
        self.background
            .spawn(async move { this.write(fresh).await });
    }

    /// Records what an index published before returning, for a caller
    /// that fetches the files next.
    pub async fn record_now(&self, remote: &str, published: Vec<Published>) {
        let fresh = self.unknown(remote, published);
        self.write(fresh).await;
    }

    /// The entries not already known with the same digest, keyed.
    fn unknown(&self, remote: &str, published: Vec<Published>) -> Vec<(String, String)> {
        let known = self.known.lock();
        published
            .into_iter()
            .map(|p| (Self::key(remote, &p.path), p.digest))
            .filter(|(key, digest)| known.get(key) != Some(digest))
            .collect()
    }

    async fn write(&self, entries: Vec<(String, String)>) {
        for (key, digest) in entries {
            let stored = self.state.get(&key).await.ok().flatten();
            if stored.as_deref() != Some(digest.as_bytes()) {
                if let Err(e) = self.state.put(&key, digest.clone().into()).await {
                    log::warn!("recording a published checksum: {e}");
                    continue;
                }
            }
            self.remember(key, digest);
        }
    }

    fn remember(&self, key: String, digest: String) {
        let mut known = self.known.lock();
        if known.len() >= REMEMBERED {
            known.clear();
        }
        known.insert(key, digest);
    }

    /// The digest recorded for `path` of `remote`, if any. A state store
    /// that cannot be read means no known checksum: the file is fetched
    /// unverified rather than refused.
    pub async fn expected(&self, remote: &str, path: &str) -> Option<String> {
        let key = Self::key(remote, path);
        if let Some(digest) = self.known.lock().get(&key) {
            return Some(digest.clone());
        }
        match self.state.get(&key).await {
            Ok(Some(value)) => {
                let digest = String::from_utf8(value.to_vec()).ok()?;
                self.remember(key, digest.clone());
                Some(digest)
            }
            Ok(None) => None,
            Err(e) => {
                log::warn!("reading a published checksum: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::EmbeddedState;

    #[test]
    fn recorded_checksums_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let open = || {
            let state: Arc<dyn StateStore> = Arc::new(EmbeddedState::open(dir.path()).unwrap());
            Arc::new(Checksums::new(state, runtime.handle().clone()))
        };
        let first = open();
        let published = vec![Published {
            path: "packages/a b.whl".into(),
            digest: "sha256:ab".into(),
        }];
        first.record("pypi", published);
        runtime.block_on(async {
            for _ in 0..100 {
                if first.expected("pypi", "packages/a b.whl").await.is_some() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        });
        let second = open();
        runtime.block_on(async {
            let found = second.expected("pypi", "packages/a b.whl").await;
            assert_eq!(found.as_deref(), Some("sha256:ab"));
            assert_eq!(second.expected("pypi", "packages/other.whl").await, None);
            assert_eq!(second.expected("npm", "packages/a b.whl").await, None);
        });
    }
}
