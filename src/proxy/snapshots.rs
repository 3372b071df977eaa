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

use super::ctx::Artifact;
use super::verify::Verifier;
use crate::app::App;
use crate::checksums::Published;
use crate::config::Remote;
use filters::ecosystem::{IndexedFile, Snapshot};
use filters::Ecosystem;
use parking_lot::Mutex;
use pingora::{Error, ErrorType, Result};
use sha2::Digest as _;
use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// The error that keeps the previous snapshot served.
pub const SNAPSHOT_PENDING: &str = "new repository snapshot not cached yet";

pub struct Snapshots {
    /// The gate's own upstream requests (redirects followed, as mirrors
    /// send them).
    upstream: crate::upstream_tls::UpstreamClients,
    /// Bounds the gate's own upstream request.
    upstream_timeout: Duration,
    /// Snapshots being warmed (remote, repomd digest).
    warming: Mutex<HashSet<(String, String)>>,
    /// The digest of each package list whose packages were last recorded,
    /// per remote and list path.
    recorded_lists: Mutex<HashMap<(String, String), String>>,
}

impl Snapshots {
    pub fn new<'a>(
        remotes: impl IntoIterator<Item = &'a std::sync::Arc<crate::config::Remote>>,
        timeout: Duration,
    ) -> anyhow::Result<Snapshots> {
        Ok(Snapshots {
            upstream: crate::upstream_tls::UpstreamClients::build(remotes, || {
                reqwest::Client::builder().no_proxy()
            })?,
            upstream_timeout: timeout,
            warming: Mutex::new(HashSet::new()),
            recorded_lists: Mutex::new(HashMap::new()),
        })
    }

    /// Decides about an upstream `200` for a snapshot index: the check its
    /// body must pass (the bytes the gate saw), or the error that keeps the
    /// previous snapshot, which `can_keep_previous` says is still servable.
    pub async fn gate(
        &self,
        app: &Arc<App>,
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
        let snapshot = match ecosystem.snapshot(&path, &body) {
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
        let published = snapshot.files.iter().filter_map(|f| {
            Some(Published {
                path: f.path.clone(),
                digest: f.digest.clone()?,
            })
        });
        app.checksums.record_now(remote, published.collect()).await;
        let missing = snapshot
            .files
            .iter()
            .filter(|f| {
                !app.storage
                    .contains(&super::cache::key_of(remote, std::slice::from_ref(&f.path)))
            })
            .count();
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
        self.warm(
            app,
            artifact.remote.clone(),
            &path,
            digest.clone(),
            snapshot,
        );
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
        let mut request = (self.upstream.of(&artifact.remote.name))
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
        &self,
        app: &Arc<App>,
        remote: Arc<Remote>,
        index: &str,
        digest: String,
        snapshot: Snapshot,
    ) {
        let id = (remote.name.clone(), digest);
        if !self.warming.lock().insert(id.clone()) {
            return;
        }
        let app = app.clone();
        let index = index.to_string();
        app.clone().background.spawn(async move {
            let snapshots = &app.snapshots;
            let mut failed = 0;
            for file in &snapshot.files {
                if let Err(e) = snapshots
                    .fetch_through(&app, &remote.name, &file.path, None)
                    .await
                {
                    log::info!("remote '{}': warming {}: {e}", remote.name, file.path);
                    failed += 1;
                }
            }
            for list in &snapshot.package_lists {
                snapshots
                    .record_packages(&app, &remote, &snapshot.root, list)
                    .await;
            }
            log::info!(
                "remote '{}': snapshot {index} warmed ({} files, {failed} failed)",
                remote.name,
                snapshot.files.len()
            );
            snapshots.warming.lock().remove(&id);
        });
    }

    /// GETs a remote path through artifactd's own listener; with `into`,
    /// the body is written there.
    async fn fetch_through(
        &self,
        app: &App,
        remote: &str,
        path: &str,
        mut into: Option<&mut std::fs::File>,
    ) -> std::result::Result<(), String> {
        let url = format!("/api/v1/remote/{remote}/{path}");
        let request = app.loopback.request(reqwest::Method::GET, &url);
        let mut resp = request.send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if let Some(file) = into.as_deref_mut() {
                file.write_all(&chunk).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Reads a package list (from the cache, through the listener) and
    /// records the checksum of every package it names, once per digest.
    async fn record_packages(&self, app: &App, remote: &Remote, root: &str, list: &IndexedFile) {
        let Some(digest) = list.digest.clone() else {
            return;
        };
        let id = (remote.name.clone(), list.path.clone());
        if self.recorded_lists.lock().get(&id) == Some(&digest) {
            return;
        }
        let (ecosystem, remote) = (remote.ecosystem, remote.name.as_str());
        let Ok(mut spool) = tempfile::tempfile() else {
            return;
        };
        if let Err(e) = self
            .fetch_through(app, remote, &list.path, Some(&mut spool))
            .await
        {
            log::info!("remote '{remote}': reading {}: {e}", list.path);
            return;
        }
        let (list_owned, root_owned) = (list.clone(), root.to_string());
        let parsed = tokio::task::spawn_blocking(move || {
            parse_package_list(ecosystem, &list_owned, &root_owned, spool)
        })
        .await;
        match parsed {
            Ok(Ok(packages)) => {
                let count = packages.len();
                app.checksums.record_now(remote, packages).await;
                self.recorded_lists.lock().insert(id, digest);
                log::info!(
                    "remote '{remote}': recorded {count} package checksums from {}",
                    list.path
                );
            }
            Ok(Err(e)) => log::warn!("remote '{remote}': {}: {e}", list.path),
            Err(e) => log::warn!("remote '{remote}': parsing {}: {e}", list.path),
        }
    }
}

/// The largest index the gate reads.
const MAX_INDEX: u64 = 16 << 20;

fn pending(reason: String) -> Box<Error> {
    Error::new_up(ErrorType::Custom(SNAPSHOT_PENDING)).more_context(reason)
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
