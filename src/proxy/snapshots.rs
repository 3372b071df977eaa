//! Consistent repository snapshots: a client never gets an index (RPM's
//! `repomd.xml`) naming files artifactd cannot serve.
//!
//! Such an index names its files by checksum, and when the upstream
//! regenerates a repository the old files disappear. A cache that
//! refreshes the index on its own schedule can therefore hand out a new
//! index whose files it has not got yet (and that a slow upstream mirror
//! may not have either), or keep an old index whose files the upstream has
//! deleted. Here, a refreshed index is only let through once every file
//! it names is cached; until then the previous snapshot stays served
//! (within `cache.stale_if_error`) while a background job fetches the new
//! files through artifactd itself (verified against the index). On a
//! cold cache there is no previous snapshot: the new one is served at once
//! (its files are fetchable now) and warmed in the background. What an
//! index names is its ecosystem's answer ([`filters::Ecosystem::snapshot`]);
//! nothing here knows a format.
//!
//! The check needs the index's body before pingora commits it, and the
//! only asynchronous hook before that is `upstream_response_filter`, which
//! sees headers only; so the gate fetches the (small) document itself, and
//! pingora's own copy must hash to the same bytes or it is not stored.
//!
//! The warm job also reads the snapshot's package lists and records each
//! package's checksum, so package downloads are verified too.

use super::artifact::Artifact;
use super::verify::Verifier;
use crate::checksums::Checksums;
use crate::checksums::Published;
use crate::config::Remote;
use crate::loopback::Loopback;
use crate::storage::CacheStorage;
use filters::ecosystem::{IndexedFile, Snapshot};
use filters::Ecosystem;
use parking_lot::Mutex;
use pingora::{Error, Result};
use sha2::Digest as _;
use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

pub struct Snapshots {
    /// The gate's own upstream requests (redirects followed, as mirrors
    /// send them).
    /// Rebuilt by a reload, as the remotes' `ca_file`s may change.
    upstream: arc_swap::ArcSwap<crate::upstream_tls::UpstreamClients>,
    /// Bounds the gate's own upstream request.
    upstream_timeout: Duration,
    /// Snapshots being warmed (remote, index digest).
    warming: Mutex<HashSet<(String, String)>>,
    /// Per remote and index path: the snapshot digest and the files of it
    /// the upstream does not have.
    absent: Mutex<HashMap<(String, String), AbsentFiles>>,
    /// The digest of each package list whose packages were last recorded,
    /// per remote and list path.
    recorded_lists: Mutex<HashMap<(String, String), String>>,
    /// What the gate and its warm jobs use of the node.
    node: Node,
}

/// The parts of the node the gate uses: it reads and replaces entries,
/// records checksums, fetches through artifactd's own listener, and warms
/// in the background.
pub struct Node {
    pub storage: &'static CacheStorage,
    pub checksums: Arc<Checksums>,
    pub loopback: Loopback,
    pub background: tokio::runtime::Handle,
}

impl Snapshots {
    pub fn new<'a>(
        remotes: impl IntoIterator<Item = &'a std::sync::Arc<crate::config::Remote>>,
        timeout: Duration,
        node: Node,
    ) -> anyhow::Result<Snapshots> {
        Ok(Snapshots {
            upstream: arc_swap::ArcSwap::from_pointee(Self::clients(remotes)?),
            upstream_timeout: timeout,
            warming: Mutex::new(HashSet::new()),
            absent: Mutex::new(HashMap::new()),
            recorded_lists: Mutex::new(HashMap::new()),
            node,
        })
    }

    /// Decides about an upstream `200` for a snapshot index: the check its
    /// body must pass (the bytes the gate saw), or the error that keeps the
    /// previous snapshot, which `can_keep_previous` says is still servable.
    /// The gate's upstream clients for the remotes of a reloaded
    /// configuration; the running ones are kept if they cannot be built.
    pub fn reconfigure<'a>(
        &self,
        remotes: impl IntoIterator<Item = &'a std::sync::Arc<crate::config::Remote>>,
    ) -> anyhow::Result<()> {
        self.upstream
            .store(std::sync::Arc::new(Self::clients(remotes)?));
        Ok(())
    }

    fn clients<'a>(
        remotes: impl IntoIterator<Item = &'a std::sync::Arc<crate::config::Remote>>,
    ) -> anyhow::Result<crate::upstream_tls::UpstreamClients> {
        crate::upstream_tls::UpstreamClients::build(remotes, || {
            reqwest::Client::builder().no_proxy()
        })
    }

    pub async fn gate(
        self: &Arc<Self>,
        artifact: &Artifact,
        can_keep_previous: bool,
    ) -> Result<Option<Verifier>> {
        let path = artifact.key_parts[0].clone();
        let body = match self.fetch_upstream(artifact).await {
            Ok(body) => body,
            Err(e) if can_keep_previous => {
                return Err(pending(format!("fetching {path}: {e}")));
            }
            Err(e) => {
                log::info!("remote '{}': {path} not checked: {e}", artifact.remote.name);
                return Ok(None);
            }
        };
        let ecosystem = artifact.remote.ecosystem;
        let scope = filters::ecosystem::Scope {
            architectures: &artifact.remote.architectures,
        };
        let snapshot = match ecosystem.snapshot(&path, &body, &scope) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                log::warn!(
                    "remote '{}': {path}: {e}; served unchecked",
                    artifact.remote.name
                );
                return Ok(None);
            }
        };
        let remote = &artifact.remote.name;
        let published = snapshot.checksums.iter().filter_map(|f| {
            Some(Published {
                path: f.path.clone(),
                digest: f.digest.clone()?,
            })
        });
        self.node
            .checksums
            .record_now(remote, published.collect())
            .await;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
        let absent = self.absent_of(remote, &path, &digest);
        let mut missing = 0;
        for file in snapshot.files.iter().filter(|f| !absent.contains(&f.path)) {
            if self.cached_as_named(remote, file).await != Cached::AsNamed {
                missing += 1;
            }
        }
        self.warm(artifact.remote.clone(), &path, digest.clone(), snapshot);
        if missing > 0 && can_keep_previous {
            return Err(pending(format!(
                "{missing} file(s) of the new {path} still being fetched"
            )));
        }
        Ok(Verifier::new(Some(&digest), false))
    }

    async fn fetch_upstream(
        &self,
        artifact: &Artifact,
    ) -> std::result::Result<bytes::Bytes, String> {
        let upstream = artifact
            .remote
            .upstream
            .as_ref()
            .ok_or("remote without upstream")?;
        let url = format!(
            "{}{}",
            super::documents::url_of(upstream),
            artifact.raw_path
        );
        let mut request = (self.upstream.load().of(&artifact.remote.name))
            .get(&url)
            .timeout(self.upstream_timeout);
        if let Some(auth) = &upstream.basic_auth {
            request = request.header(http::header::AUTHORIZATION, auth);
        }
        let resp = request.send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("upstream answered {}", resp.status()));
        }
        let length = resp.content_length().unwrap_or(0);
        if length > MAX_INDEX {
            return Err(format!("{length} bytes is too large for an index"));
        }
        resp.bytes().await.map_err(|e| e.to_string())
    }

    /// Fetches every file of a snapshot through artifactd (so each is
    /// verified and cached), then records the packages its lists name.
    fn warm(
        self: &Arc<Self>,
        remote: Arc<Remote>,
        index: &str,
        digest: String,
        snapshot: Snapshot,
    ) {
        let id = (remote.name.clone(), digest);
        if !self.warming.lock().insert(id.clone()) {
            return;
        }
        let snapshots = self.clone();
        let index = index.to_string();
        self.node.background.spawn(async move {
            let mut failed = 0;
            for file in &snapshot.files {
                if let Err(e) = snapshots.warm_file(&remote.name, file).await {
                    if e == Through::Absent {
                        snapshots.note_absent(&remote.name, &index, &id.1, &file.path);
                    }
                    log::info!("remote '{}': warming {}: {e}", remote.name, file.path);
                    failed += 1;
                }
            }
            for choices in &snapshot.package_lists {
                snapshots
                    .record_packages(&remote, &snapshot.root, choices)
                    .await;
            }
            log::info!(
                "remote '{}': snapshot {index} warmed ({} files, {failed} not cached)",
                remote.name,
                snapshot.files.len()
            );
            snapshots.warming.lock().remove(&id);
        });
    }

    /// Caches one file of a snapshot: nothing to do if it is cached with
    /// the bytes the index names; cached with others (a file whose name
    /// stays while its content changes), it is removed and fetched again.
    async fn warm_file(&self, remote: &str, file: &IndexedFile) -> Result<(), Through> {
        match self.cached_as_named(remote, file).await {
            Cached::AsNamed => return Ok(()),
            Cached::Other => {
                let key = super::cache::key_of(remote, std::slice::from_ref(&file.path));
                let id = crate::storage::layout::EntryLocation::from_key(&key).id();
                let removed = self.node.storage.remove_entry(remote, id).await;
                removed.map_err(|e| Through::Failed(format!("replacing it: {e}")))?;
            }
            Cached::No => {}
        }
        self.fetch_through(remote, &file.path, None).await
    }

    /// Whether `file` is cached with the bytes its index names (when the
    /// index names them by sha256; otherwise being cached is enough).
    async fn cached_as_named(&self, remote: &str, file: &IndexedFile) -> Cached {
        let key = super::cache::key_of(remote, std::slice::from_ref(&file.path));
        if !self.node.storage.contains(&key) {
            return Cached::No;
        }
        let Some(named) = file
            .digest
            .as_deref()
            .and_then(|d| d.strip_prefix("sha256:"))
        else {
            return Cached::AsNamed;
        };
        match self.node.storage.committed_sha256(&key).await {
            Ok(Some(stored)) if stored == named => Cached::AsNamed,
            Ok(Some(_)) => Cached::Other,
            Ok(None) | Err(_) => Cached::No,
        }
    }

    /// The files of the snapshot `digest` of `index` the upstream does not
    /// have (an index may name files that are not published, such as an
    /// uncompressed list): not waited for.
    fn absent_of(&self, remote: &str, index: &str, digest: &str) -> HashSet<String> {
        let absent = self.absent.lock();
        match absent.get(&(remote.to_string(), index.to_string())) {
            Some((of, paths)) if of == digest => paths.clone(),
            _ => HashSet::new(),
        }
    }

    fn note_absent(&self, remote: &str, index: &str, digest: &str, path: &str) {
        let mut absent = self.absent.lock();
        let entry = absent
            .entry((remote.to_string(), index.to_string()))
            .or_default();
        if entry.0 != digest {
            *entry = (digest.to_string(), HashSet::new());
        }
        entry.1.insert(path.to_string());
    }

    /// GETs a remote path through artifactd's own listener; with `into`,
    /// the body is written there.
    async fn fetch_through(
        &self,
        remote: &str,
        path: &str,
        mut into: Option<&mut std::fs::File>,
    ) -> Result<(), Through> {
        let failed = |e: &dyn std::fmt::Display| Through::Failed(e.to_string());
        let url = format!("/api/v1/remote/{remote}/{path}");
        let request = self.node.loopback.request(reqwest::Method::GET, &url);
        let mut resp = request.send().await.map_err(|e| failed(&e))?;
        match resp.status() {
            reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::GONE => {
                return Err(Through::Absent)
            }
            status if !status.is_success() => return Err(failed(&format!("status {status}"))),
            _ => {}
        }
        while let Some(chunk) = resp.chunk().await.map_err(|e| failed(&e))? {
            if let Some(file) = into.as_deref_mut() {
                file.write_all(&chunk).map_err(|e| failed(&e))?;
            }
        }
        Ok(())
    }

    /// Reads a package list (from the cache, through the listener): the
    /// first of `choices` that can be read. Records the checksum of every
    /// package it names, once per list digest.
    async fn record_packages(&self, remote: &Remote, root: &str, choices: &[IndexedFile]) {
        let mut why = Vec::new();
        for list in choices {
            match self.record_list(remote, root, list).await {
                Ok(()) => return,
                Err(e) => why.push(format!("{}: {e}", list.path)),
            }
        }
        log::warn!(
            "remote '{}': no package list read, packages stay unverified ({})",
            remote.name,
            why.join("; ")
        );
    }

    async fn record_list(
        &self,
        remote: &Remote,
        root: &str,
        list: &IndexedFile,
    ) -> Result<(), String> {
        let digest = list.digest.clone().ok_or("no digest")?;
        let id = (remote.name.clone(), list.path.clone());
        if self.recorded_lists.lock().get(&id) == Some(&digest) {
            return Ok(());
        }
        let ecosystem = remote.ecosystem;
        let mut spool = tempfile::tempfile().map_err(|e| e.to_string())?;
        self.fetch_through(&remote.name, &list.path, Some(&mut spool))
            .await
            .map_err(|e| e.to_string())?;
        let (list_owned, root_owned) = (list.clone(), root.to_string());
        let packages = tokio::task::spawn_blocking(move || {
            parse_package_list(ecosystem, &list_owned, &root_owned, spool)
        })
        .await
        .map_err(|e| e.to_string())??;
        let count = packages.len();
        self.node.checksums.record_now(&remote.name, packages).await;
        self.recorded_lists.lock().insert(id, digest);
        log::info!(
            "remote '{}': recorded {count} package checksums from {}",
            remote.name,
            list.path
        );
        Ok(())
    }
}

/// The digest of a snapshot and the files of it the upstream lacks.
type AbsentFiles = (String, HashSet<String>);

/// Why a file could not be fetched through artifactd.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Through {
    #[error("not found upstream")]
    Absent,
    #[error("{0}")]
    Failed(String),
}

/// How a file of a snapshot is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cached {
    No,
    /// With the bytes its index names.
    AsNamed,
    /// With other bytes (an older version under the same name).
    Other,
}

/// The largest index the gate reads.
const MAX_INDEX: u64 = 16 << 20;

fn pending(reason: String) -> Box<Error> {
    super::failure::Failure::SnapshotPending.explain(reason)
}

/// The packages of a spooled package list, decompressed by its name.
fn parse_package_list(
    ecosystem: Ecosystem,
    list: &IndexedFile,
    root: &str,
    mut spool: std::fs::File,
) -> std::result::Result<Vec<Published>, String> {
    use std::io::{BufReader, Seek};
    spool.rewind().map_err(|e| e.to_string())?;
    let extension = list.path.rsplit_once('.').map(|(_, e)| e);
    let reader: Box<dyn std::io::Read> = match extension {
        Some("gz") => Box::new(flate2::read::GzDecoder::new(spool)),
        Some("zst") => {
            Box::new(zstd::stream::read::Decoder::new(spool).map_err(|e| e.to_string())?)
        }
        Some("bz2" | "xz" | "lz4" | "lzma") => {
            return Err("compression not supported; packages stay unverified".into())
        }
        _ => Box::new(spool),
    };
    let mut packages = Vec::new();
    ecosystem.read_package_list(
        root,
        list,
        &mut BufReader::new(reader),
        &mut |path, digest| packages.push(Published { path, digest }),
    )?;
    Ok(packages)
}
