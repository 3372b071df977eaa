//! `artifactd warm`: pre-fill a running artifactd with a list of paths, or
//! for docker remotes image references (every manifest, config and layer of
//! every platform), through its normal request path.
//!
//! Fetches run `--workers` at a time; a progress bar shows objects, bytes,
//! rate and ETA on a terminal, plain lines otherwise. `--state FILE`
//! records each finished object so an interrupted run picks up where it
//! stopped. Failures are listed at the end and make the exit status 1.

use super::client::{Server, ServerArgs};
use anyhow::{bail, Context};
use filters::ecosystem::oci::ANY_MANIFEST as MANIFEST_ACCEPT;
use futures::StreamExt;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct WarmArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The remote to fill.
    #[arg(long)]
    pub remote: String,
    /// A file of paths (image references for a docker remote), one per
    /// line; `#` starts a comment.
    #[arg(long)]
    pub list: Option<PathBuf>,
    /// Fetches at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// Records finished objects here; a later run skips them.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Paths (image references for a docker remote).
    pub items: Vec<String>,
}

struct Progress {
    bar: ProgressBar,
    plain: bool,
    bytes: AtomicU64,
    started: Instant,
    failed: Mutex<Vec<(String, String)>>,
    state: Option<Mutex<std::fs::File>>,
}

impl Progress {
    /// A bar on a terminal, plain lines otherwise; `state` is appended to
    /// as objects finish.
    fn new(plain: bool, state: Option<&std::path::Path>) -> anyhow::Result<Progress> {
        let bar = if plain {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} objects, {msg}, ETA {eta}",
            )?
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        let state = match state {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            )),
            None => None,
        };
        Ok(Progress {
            bar,
            plain,
            bytes: AtomicU64::new(0),
            started: Instant::now(),
            failed: Mutex::new(Vec::new()),
            state,
        })
    }

    fn done(&self, object: &str, bytes: u64) {
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.bar.inc(1);
        let rate = total as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        self.bar.set_message(format!(
            "{} at {}/s",
            HumanBytes(total),
            HumanBytes(rate as u64)
        ));
        if self.plain {
            eprintln!("warmed {object} ({})", HumanBytes(bytes));
        }
        if let Some(state) = &self.state {
            let _ = writeln!(state.lock().unwrap(), "{object}");
        }
    }

    fn fail(&self, object: &str, reason: String) {
        self.bar.inc(1);
        if self.plain {
            eprintln!("failed {object}: {reason}");
        }
        self.failed
            .lock()
            .unwrap()
            .push((object.to_string(), reason));
    }
}

/// The paths or image references of the command line and `--list`.
fn requested_items(args: &WarmArgs) -> anyhow::Result<Vec<String>> {
    let mut items = args.items.clone();
    if let Some(list) = &args.list {
        let text =
            std::fs::read_to_string(list).with_context(|| format!("reading {}", list.display()))?;
        items.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    if items.is_empty() {
        bail!("nothing to warm: give paths or --list FILE");
    }
    Ok(items)
}

pub async fn run(args: WarmArgs) -> anyhow::Result<ExitCode> {
    let server = Server::connect(&args.server)?;
    let items = requested_items(&args)?;
    let package = remote_package(&server, &args.remote).await?;
    let finished: HashSet<String> = match &args.state {
        Some(path) => std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect(),
        None => HashSet::new(),
    };
    let plain = !std::io::stderr().is_terminal() || server.json;
    let progress = Progress::new(plain, args.state.as_deref())?;
    // Every object to fetch, as a path of the server; images are expanded
    // into their manifests and blobs first (those GETs warm the manifests).
    let mut objects = Vec::new();
    for item in &items {
        if package == "docker" {
            match image_objects(&server, &args.remote, item, &progress).await {
                Ok(blobs) => objects.extend(blobs),
                Err(e) => progress.fail(item, format!("{e:#}")),
            }
        } else {
            objects.push(format!(
                "/api/v1/remote/{}/{}",
                args.remote,
                item.trim_start_matches('/')
            ));
        }
    }
    let skipped = objects.iter().filter(|o| finished.contains(*o)).count();
    objects.retain(|o| !finished.contains(o));
    progress.bar.inc_length(objects.len() as u64);
    futures::stream::iter(objects)
        .for_each_concurrent(usize::from(args.workers), |object| {
            let (server, progress) = (&server, &progress);
            async move {
                match fetch(server, &object).await {
                    Ok(bytes) => progress.done(&object, bytes),
                    Err(e) => progress.fail(&object, format!("{e:#}")),
                }
            }
        })
        .await;
    progress.bar.finish_and_clear();
    report(&progress, skipped, server.json)
}

fn report(progress: &Progress, skipped: usize, as_json: bool) -> anyhow::Result<ExitCode> {
    let failed = progress.failed.lock().unwrap();
    let objects = progress.bar.position() - failed.len() as u64;
    let bytes = progress.bytes.load(Ordering::Relaxed);
    let elapsed = progress.started.elapsed();
    if as_json {
        let failures: Vec<Value> = failed
            .iter()
            .map(|(object, reason)| json!({"object": object, "reason": reason}))
            .collect();
        println!(
            "{}",
            json!({"warmed": objects, "bytes": bytes, "skipped": skipped, "failed": failures,
                   "seconds": elapsed.as_secs_f64()})
        );
    } else {
        println!(
            "warmed {objects} objects ({}) in {:.1} s; {skipped} already done, {} failed",
            HumanBytes(bytes),
            elapsed.as_secs_f64(),
            failed.len()
        );
        for (object, reason) in failed.iter() {
            println!("failed: {object}: {reason}");
        }
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The remote's package type, from the server's `GET /`.
async fn remote_package(server: &Server, remote: &str) -> anyhow::Result<String> {
    let root: Value = server
        .http
        .get(server.url("/"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .with_context(|| format!("{} unreachable", server.base))?
        .json()
        .await?;
    let remotes = root["remotes"]
        .as_array()
        .context("GET / lists no remotes")?;
    match remotes.iter().find(|r| r["name"] == remote) {
        Some(r) => Ok(r["package"].as_str().unwrap_or("generic").to_string()),
        None => bail!("the server has no remote '{remote}'"),
    }
}

/// GETs `path` and reads the body to its end; the bytes it had.
async fn fetch(server: &Server, path: &str) -> anyhow::Result<u64> {
    let mut response = server.http.get(server.url(path)).send().await?;
    if response.status() != reqwest::StatusCode::OK {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        bail!("{status}: {}", text.trim());
    }
    let mut bytes = 0;
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
    }
    Ok(bytes)
}

/// Splits `name[:tag|@digest]` into name and reference (default `latest`).
fn parse_reference(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

/// Fetches an image's manifests (an index and every platform's manifest)
/// and returns the blob paths they name: configs and layers.
async fn image_objects(
    server: &Server,
    remote: &str,
    image: &str,
    progress: &Progress,
) -> anyhow::Result<Vec<String>> {
    let (name, reference) = parse_reference(image);
    let mut manifests = vec![reference.to_string()];
    let mut blobs = Vec::new();
    while let Some(reference) = manifests.pop() {
        let path = format!("/v2/{remote}/{name}/manifests/{reference}");
        progress.bar.inc_length(1);
        let response = server
            .http
            .get(server.url(&path))
            .header("accept", MANIFEST_ACCEPT)
            .send()
            .await?;
        if response.status() != reqwest::StatusCode::OK {
            bail!("{path}: {}", response.status());
        }
        let body = response.bytes().await?;
        progress.done(&path, body.len() as u64);
        let manifest: Value =
            serde_json::from_slice(&body).with_context(|| format!("{path}: not JSON"))?;
        let digests = |field: &str| -> Vec<String> {
            manifest[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["digest"].as_str().map(str::to_string))
                .collect()
        };
        manifests.extend(digests("manifests"));
        if let Some(config) = manifest["config"]["digest"].as_str() {
            blobs.push(config.to_string());
        }
        blobs.extend(digests("layers"));
    }
    blobs.sort();
    blobs.dedup();
    Ok(blobs
        .into_iter()
        .map(|digest| format!("/v2/{remote}/{name}/blobs/{digest}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::parse_reference;

    #[test]
    fn image_references() {
        assert_eq!(
            parse_reference("library/nginx:1.27"),
            ("library/nginx", "1.27")
        );
        assert_eq!(
            parse_reference("library/nginx"),
            ("library/nginx", "latest")
        );
        assert_eq!(parse_reference("a/b@sha256:00ff"), ("a/b", "sha256:00ff"));
    }
}
