//! Feeds fetched through a remote on a schedule.
//!
//! A feed with `fetch: {remote, path, every}` is asked for through
//! artifactd's own listener, like any client's request of that remote:
//! the remote's credentials, proxy and timeouts apply, the copy is cached
//! (so a node that starts while the feed's host is down still has it),
//! and the cache's revalidation decides when the upstream is asked again
//! (the remote's `mutable_patterns` should name the feed). The answer is
//! written to the feed's `path` only when it parses as a feed and differs
//! from what is there, by a rename, so the rules are read from a whole
//! file; the file watch ([`super::watch`]) then puts the new advisories in
//! force. A failed fetch keeps the feed as it was and is tried again at
//! the next interval.

use crate::app::App;
use crate::config::firewall::{parse_feed, FeedFetch};
use crate::loopback::Loopback;
use futures::StreamExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// How often the list of feeds is looked at for one due.
const TICK: Duration = Duration::from_secs(1);

/// Fetches each feed when it is due, for as long as the process runs.
pub async fn fetch_feeds(app: Arc<App>) {
    let mut fetched: HashMap<FeedFetch, Instant> = HashMap::new();
    loop {
        let fetches = app.firewall.fetches();
        fetched.retain(|fetch, _| fetches.contains(fetch));
        for fetch in fetches {
            if fetched
                .get(&fetch)
                .is_some_and(|at| at.elapsed() < fetch.every)
            {
                continue;
            }
            fetched.insert(fetch.clone(), Instant::now());
            match fetch_one(&app.loopback, &fetch).await {
                Ok(true) => log::info!(
                    "firewall: feed '{}' fetched anew into {}",
                    fetch.feed,
                    fetch.into.display()
                ),
                Ok(false) => {}
                Err(e) => log::warn!(
                    "firewall: feed '{}' not fetched from remote '{}' ({}): {e}; it stays as it was",
                    fetch.feed,
                    fetch.remote,
                    fetch.path
                ),
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Fetches one feed; `true` when its file changed.
async fn fetch_one(loopback: &Loopback, fetch: &FeedFetch) -> anyhow::Result<bool> {
    let url = format!("/api/v1/remote/{}/{}", fetch.remote, fetch.path);
    let resp = loopback
        .request(reqwest::Method::GET, &url)
        .header(http::header::USER_AGENT, "artifactd-feed-fetch")
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "answered {}", resp.status());
    let part = part_path(&fetch.into);
    if let Some(dir) = part.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let written = write_body(resp, &part).await;
    let outcome = match written {
        Ok(()) => settle(&part, &fetch.into).await,
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&part).await;
    outcome
}

/// Where a fetch is written before it replaces the feed: beside it, so
/// that the rename stays on one file system.
fn part_path(into: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".fetching-");
    name.push(into.file_name().unwrap_or_default());
    into.with_file_name(name)
}

async fn write_body(resp: reqwest::Response, part: &Path) -> anyhow::Result<()> {
    let mut file = tokio::fs::File::create(part).await?;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        file.write_all(&chunk?).await?;
    }
    file.sync_all().await?;
    Ok(())
}

/// Puts a fetched file in place of the feed when it parses as a feed and
/// differs from it; `true` when it did.
async fn settle(part: &Path, into: &Path) -> anyhow::Result<bool> {
    let (new, old) = (part.to_path_buf(), into.to_path_buf());
    tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
        let fetched = std::fs::read(&new)?;
        if std::fs::read(&old).is_ok_and(|current| current == fetched) {
            return Ok(false);
        }
        // Read as the rules will read it: the feed's name says zip or JSON.
        if let Err(m) = parse_feed(&old, &fetched) {
            anyhow::bail!("not a feed: {m}");
        }
        std::fs::rename(&new, &old)?;
        Ok(true)
    })
    .await?
}
