//! `artifactd import`: storing files in the cache of a stopped artifactd
//! without asking any upstream — seeding an air-gapped mirror, carrying a
//! cache over from another mirror, or putting ten million objects into a
//! benchmark's cache in minutes instead of ten million misses.
//!
//! Each file takes the path a miss takes from the moment the response
//! arrives: keyed as the request for its path would be (the remote's
//! patterns and ecosystem decide, a denied path is skipped), fresh for
//! its class's TTL, hashed while written, committed with its record and
//! catalog rows. The server cannot tell an imported object from a fetched
//! one except by its header, which is made here: `Content-Type` (given in
//! the manifest or by the file's extension), `Content-Length` and
//! `Last-Modified` (the file's mtime).
//!
//! Records are not synced one by one: the store is synced once at the end
//! and the index snapshot written, so the next start reads the index in
//! one file. An import holds the store's lock ([`crate::store_lock`]), so
//! it never writes behind a running server's index.

use crate::config::{Config, Remote, RemoteKind};
use crate::proxy::request::{routed_artifact, RequestView};
use crate::storage::CacheStorage;
use anyhow::Context;
use bytes::{Bytes, BytesMut};
use filters::Ecosystem;
use pingora::cache::storage::HandleMiss;
use pingora::cache::RespCacheable;
use pingora::http::ResponseHeader;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Catalog changes allowed to queue before the import waits for them.
const CATALOG_QUEUE: u64 = 100_000;
/// Read size of a file too big for memory.
const CHUNK: usize = 1 << 20;
/// Failures listed one by one; the rest are counted.
const FAILURES_SHOWN: u64 = 20;
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The remote the files are stored under.
    pub remote: String,
    /// A directory: each file under it is stored at its path below it.
    #[arg(required_unless_present = "manifest", conflicts_with = "manifest")]
    pub dir: Option<PathBuf>,
    /// A file of lines `PATH<TAB>FILE[<TAB>CONTENT-TYPE]` ("-": standard
    /// input): PATH below the remote as a client asks for it
    /// (percent-encoded), FILE where its bytes are. Many paths may name
    /// one file.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Replace objects the cache holds already (by default they are kept,
    /// so an interrupted import can simply be run again).
    #[arg(long)]
    pub replace: bool,
}

/// One file to store.
struct Item {
    /// Where it was listed, for errors: `manifest:line` or the file.
    origin: String,
    raw_path: String,
    file: PathBuf,
    content_type: Option<String>,
}

pub fn run(config: Config, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let remote = importable_remote(&config, &args.remote)?;
    let _lock = crate::store_lock::take(&config.server.storage, crate::store_lock::Holder::Import)?
        .context("import writes a local store (storage: fs://...); a cluster's bucket is filled through a node with `artifactd warm`")?;
    let items = listing(&args)?;
    let mut config = config;
    // One sync of the whole store at the end instead of one per record.
    config.server.fsync = false;
    let background = crate::server::background_runtime()?;
    let opened = crate::server::open_store(&config, &background)?;
    let mut importer = Importer {
        storage: opened.storage,
        remote,
        max_path_bytes: config.server.max_path_bytes,
        negative_ttl: config.server.negative_ttl,
        memory_body_max: config.server.memory_body_max,
        replace: args.replace,
        kept_source: None,
        tally: Tally::default(),
    };
    let started = Instant::now();
    background.block_on(async {
        let mut last_report = Instant::now();
        for item in items {
            let item = item?;
            importer.import(item).await;
            opened.catalog_writer.wait_for_room(CATALOG_QUEUE).await;
            if last_report.elapsed() >= PROGRESS_EVERY {
                log::info!("{}", importer.tally.describe(started.elapsed()));
                last_report = Instant::now();
            }
        }
        while !opened.catalog_writer.drain(Duration::from_secs(60)).await {
            log::info!("waiting for the catalog to take the import's rows");
        }
        anyhow::Ok(())
    })?;
    finish_store(opened.storage, &config)?;
    println!("{}", importer.tally.describe(started.elapsed()));
    Ok(if importer.tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The remote named `name`, if files can be imported into it: a proxy
/// remote of a file format (images need their manifests' media types and
/// digests from a registry; local repositories take uploads).
fn importable_remote(config: &Config, name: &str) -> anyhow::Result<Arc<Remote>> {
    let remote = config.remotes.get(name).with_context(|| {
        let known: Vec<&str> = config.remotes.keys().map(String::as_str).collect();
        format!("unknown remote '{name}' (remotes: {})", known.join(", "))
    })?;
    match (remote.kind, remote.ecosystem) {
        (RemoteKind::Remote, Ecosystem::Docker) => anyhow::bail!(
            "remote '{name}' is a container registry: fill it with `artifactd warm`, which keeps the registry's manifests and media types"
        ),
        (RemoteKind::Remote, _) => Ok(remote.clone()),
        (kind, _) => anyhow::bail!(
            "remote '{name}' is {kind:?}: only proxy remotes cache files (upload to a local remote with PUT)"
        ),
    }
}

/// Syncs what the import wrote and writes the index snapshot, so the next
/// start finds every record durable and reads the index in one file.
fn finish_store(storage: &CacheStorage, config: &Config) -> anyhow::Result<()> {
    if let crate::config::StorageUrl::Filesystem(root) = &config.server.storage {
        let dir =
            std::fs::File::open(root).with_context(|| format!("opening {}", root.display()))?;
        // SAFETY: syncfs only reads the descriptor, which `dir` keeps open.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("syncing {}", root.display()));
        }
    }
    storage
        .write_snapshot()
        .context("writing the index snapshot")?;
    Ok(())
}

/// What was stored, kept, skipped and what failed.
#[derive(Default)]
struct Tally {
    stored: u64,
    bytes: u64,
    kept: u64,
    denied: u64,
    failed: u64,
}

impl Tally {
    fn describe(&self, elapsed: Duration) -> String {
        let per_second = self.stored as f64 / elapsed.as_secs_f64().max(1e-3);
        format!(
            "imported {} objects ({} bytes) in {:.1}s ({per_second:.0}/s); {} already cached and kept, {} denied by the remote's patterns, {} failed",
            self.stored,
            self.bytes,
            elapsed.as_secs_f64(),
            self.kept,
            self.denied,
            self.failed
        )
    }
}

struct Importer {
    storage: &'static CacheStorage,
    remote: Arc<Remote>,
    max_path_bytes: usize,
    negative_ttl: Duration,
    memory_body_max: u64,
    replace: bool,
    /// The last small file read, with its mtime: a manifest that names
    /// one file for many paths reads it once.
    kept_source: Option<(PathBuf, SystemTime, Bytes)>,
    tally: Tally,
}

enum Outcome {
    Stored(u64),
    Kept,
    Denied,
}

impl Importer {
    async fn import(&mut self, item: Item) {
        match self.store(&item).await {
            Ok(Outcome::Stored(bytes)) => {
                self.tally.stored += 1;
                self.tally.bytes += bytes;
            }
            Ok(Outcome::Kept) => self.tally.kept += 1,
            Ok(Outcome::Denied) => {
                self.tally.denied += 1;
                log::info!(
                    "{}: {} is denied by the patterns of remote '{}'; skipped",
                    item.origin,
                    item.raw_path,
                    self.remote.name
                );
            }
            Err(e) => {
                self.tally.failed += 1;
                if self.tally.failed <= FAILURES_SHOWN {
                    log::error!("{}: {}: {e:#}", item.origin, item.raw_path);
                } else if self.tally.failed == FAILURES_SHOWN + 1 {
                    log::error!("more failures follow; only their count is reported");
                }
            }
        }
    }

    async fn store(&mut self, item: &Item) -> anyhow::Result<Outcome> {
        let raw_path = self.remote.ecosystem.client_path(&item.raw_path);
        let valid = filters::validate_artifact_path(&raw_path, self.max_path_bytes)
            .map_err(|e| anyhow::anyhow!("bad path: {e}"))?;
        let request = RequestView {
            method: &http::Method::GET,
            query: None,
            accept: None,
        };
        let Some(artifact) = routed_artifact(
            &self.remote,
            &request,
            &raw_path,
            &valid.decoded,
            self.remote.quarantine_hide,
        ) else {
            return Ok(Outcome::Denied);
        };
        let key = crate::proxy::cache::key(&artifact);
        if !self.replace && self.storage.contains(&key) {
            return Ok(Outcome::Kept);
        }
        let metadata = std::fs::metadata(&item.file)
            .with_context(|| format!("reading {}", item.file.display()))?;
        anyhow::ensure!(metadata.is_file(), "{} is not a file", item.file.display());
        let size = metadata.len();
        let modified = metadata.modified()?;
        let content_type = item
            .content_type
            .as_deref()
            .unwrap_or_else(|| filters::media_type::of_path(&valid.decoded));
        let header = response_header(size, content_type, modified)?;
        let RespCacheable::Cacheable(meta) =
            crate::proxy::cache::cacheability(&artifact, &header, self.negative_ttl)
        else {
            anyhow::bail!("a complete file is not cacheable here");
        };
        let mut fill = self.storage.start_fill(&key, &meta).await?;
        if size <= self.memory_body_max {
            let body = self.small_file(&item.file, modified)?;
            anyhow::ensure!(
                body.len() as u64 == size,
                "{} changed while it was read",
                item.file.display()
            );
            fill.write_body(body, true).await?;
        } else {
            let mut file = std::fs::File::open(&item.file)
                .with_context(|| format!("opening {}", item.file.display()))?;
            loop {
                let mut chunk = BytesMut::zeroed(CHUNK);
                let read = file
                    .read(&mut chunk)
                    .with_context(|| format!("reading {}", item.file.display()))?;
                if read == 0 {
                    break;
                }
                chunk.truncate(read);
                fill.write_body(chunk.freeze(), false).await?;
            }
        }
        // A file that grew or shrank since its size was taken fails here
        // (its length no longer matches the header's) and stores nothing.
        Box::new(fill).finish().await?;
        Ok(Outcome::Stored(size))
    }

    fn small_file(&mut self, file: &Path, modified: SystemTime) -> anyhow::Result<Bytes> {
        if let Some((kept, kept_modified, body)) = &self.kept_source {
            if kept == file && *kept_modified == modified {
                return Ok(body.clone());
            }
        }
        let body = Bytes::from(
            std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
        );
        self.kept_source = Some((file.to_path_buf(), modified, body.clone()));
        Ok(body)
    }
}

/// The header a file is stored with, as an upstream would have sent it.
fn response_header(
    size: u64,
    content_type: &str,
    modified: SystemTime,
) -> anyhow::Result<ResponseHeader> {
    let mut header = ResponseHeader::build(http::StatusCode::OK, Some(3))?;
    header.insert_header(http::header::CONTENT_TYPE, content_type)?;
    header.insert_header(http::header::CONTENT_LENGTH, size)?;
    header.insert_header(
        http::header::LAST_MODIFIED,
        httpdate::fmt_http_date(modified),
    )?;
    Ok(header)
}

type Items = Box<dyn Iterator<Item = anyhow::Result<Item>>>;

/// The files to import, listed lazily (a manifest of ten million lines is
/// never held whole).
fn listing(args: &ImportArgs) -> anyhow::Result<Items> {
    match (&args.manifest, &args.dir) {
        (Some(manifest), _) => manifest_items(manifest),
        (None, Some(dir)) => directory_items(dir),
        (None, None) => anyhow::bail!("give a directory or --manifest"),
    }
}

fn manifest_items(manifest: &Path) -> anyhow::Result<Items> {
    let name = manifest.display().to_string();
    let reader: Box<dyn BufRead> = if manifest == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(manifest).with_context(|| format!("opening {name}"))?,
        ))
    };
    let lines = reader.lines().enumerate().filter_map(move |(n, line)| {
        let origin = format!("{name}:{}", n + 1);
        let line = match line {
            Ok(line) => line,
            Err(e) => return Some(Err(anyhow::anyhow!("{origin}: {e}"))),
        };
        if line.trim().is_empty() || line.starts_with('#') {
            return None;
        }
        Some(
            manifest_line(&line)
                .map_err(|e| anyhow::anyhow!("{origin}: {e}"))
                .map(|(raw_path, file, content_type)| Item {
                    origin,
                    raw_path,
                    file,
                    content_type,
                }),
        )
    });
    Ok(Box::new(lines))
}

/// `PATH<TAB>FILE[<TAB>CONTENT-TYPE]`.
fn manifest_line(line: &str) -> anyhow::Result<(String, PathBuf, Option<String>)> {
    let mut fields = line.split('\t');
    let (Some(path), Some(file)) = (fields.next(), fields.next()) else {
        anyhow::bail!("expected PATH<TAB>FILE[<TAB>CONTENT-TYPE], got {line:?}");
    };
    let content_type = fields.next().filter(|t| !t.is_empty()).map(str::to_string);
    anyhow::ensure!(
        fields.next().is_none(),
        "more than three fields in {line:?}"
    );
    anyhow::ensure!(
        !path.is_empty() && !file.is_empty(),
        "empty field in {line:?}"
    );
    Ok((
        path.trim_start_matches('/').to_string(),
        PathBuf::from(file),
        content_type,
    ))
}

/// Every regular file under `dir` (symbolic links followed to files, not
/// to directories, so a link loop cannot recur), at its path below it.
fn directory_items(dir: &Path) -> anyhow::Result<Items> {
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let root = dir.to_path_buf();
    let mut pending = vec![root.clone()];
    let mut files: std::vec::IntoIter<PathBuf> = Vec::new().into_iter();
    let walk = std::iter::from_fn(move || loop {
        if let Some(file) = files.next() {
            return Some(Ok(file));
        }
        let next = pending.pop()?;
        let mut found = Vec::new();
        let entries = match std::fs::read_dir(&next) {
            Ok(entries) => entries,
            Err(e) => return Some(Err(anyhow::anyhow!("{}: {e}", next.display()))),
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => return Some(Err(anyhow::anyhow!("{}: {e}", next.display()))),
            };
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(path),
                Ok(_) if path.is_file() => found.push(path),
                _ => {}
            }
        }
        found.sort();
        files = found.into_iter();
    });
    Ok(Box::new(walk.map(move |file| {
        let file = file?;
        let below = file.strip_prefix(&root).expect("walked under the root");
        let raw_path = below
            .iter()
            .map(|part| {
                let part = part
                    .to_str()
                    .with_context(|| format!("{}: file names must be UTF-8", file.display()))?;
                Ok(percent_encoding::utf8_percent_encode(part, PATH_PART).to_string())
            })
            .collect::<anyhow::Result<Vec<String>>>()?
            .join("/");
        Ok(Item {
            origin: file.display().to_string(),
            raw_path,
            file,
            content_type: None,
        })
    })))
}

/// What a file name must have encoded to be one path segment of a URL.
const PATH_PART: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lines_take_two_or_three_fields() {
        let (path, file, content_type) = manifest_line("/a/b.tgz\t/src/b.tgz").unwrap();
        assert_eq!(
            (path.as_str(), file.as_path()),
            ("a/b.tgz", Path::new("/src/b.tgz"))
        );
        assert_eq!(content_type, None);
        let (_, _, content_type) = manifest_line("pkg\tdoc.json\tapplication/json").unwrap();
        assert_eq!(content_type.as_deref(), Some("application/json"));
        for bad in ["only-a-path", "a\t", "\tb", "a\tb\tc\td"] {
            assert!(manifest_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_directory_lists_its_files_with_encoded_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub dir")).unwrap();
        std::fs::write(dir.path().join("sub dir/a%b.txt"), b"x").unwrap();
        std::fs::write(dir.path().join("top.bin"), b"y").unwrap();
        let mut paths: Vec<String> = directory_items(dir.path())
            .unwrap()
            .map(|item| item.unwrap().raw_path)
            .collect();
        paths.sort();
        assert_eq!(paths, ["sub%20dir/a%25b.txt", "top.bin"]);
    }
}
