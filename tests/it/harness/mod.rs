//! Test harness: a counting origin ([`origin::Origin`]), an artifactd
//! process ([`artifactd::Artifactd`]), a real registry with images and
//! its token issuer ([`registry`], [`token`]), PyPI and npm registries
//! with their clients ([`pypi`], [`npm`]), RPM repositories and dnf
//! ([`rpm`]), a test certificate authority ([`tls`]), all on free
//! loopback ports
//! and all torn down on drop.

pub mod apt;
pub mod artifactd;
pub mod chromium;
pub mod npm;
pub mod origin;
pub mod prometheus;
pub mod pypi;
pub mod registry;
pub mod rpm;
pub mod services;
pub mod tls;
pub mod token;

pub use artifactd::Artifactd;
pub use origin::{Backlogged, Origin, OriginFile, Silent};

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The head of one HTTP/1.1 request read by the test servers.
pub struct RequestHead {
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// Lower-cased names.
    pub headers: HashMap<String, String>,
}

/// Reads a request line and headers; `None` when the client closed first.
pub async fn read_request_head(
    reader: &mut (impl AsyncBufRead + Unpin),
) -> std::io::Result<Option<RequestHead>> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).await? == 0 {
        return Ok(None);
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Ok(Some(RequestHead {
                method,
                target,
                headers,
            }));
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
}

/// Deterministic pseudo-random bytes, so a failed comparison is reproducible.
pub fn pattern_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An HTTP client that never pools across tests and has a hard deadline.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .no_proxy()
        .build()
        .expect("client")
}

/// A remotes.yaml with one generic remote `gen` in front of `origin`.
pub fn generic_remote(origin: &Origin, extra: &str) -> String {
    format!(
        "remotes:\n  gen:\n    base_url: \"{}\"\n    type: remote\n    package: generic\n{extra}",
        origin.base_url()
    )
}

/// Sends raw bytes (for requests an HTTP client would normalise or refuse
/// to send) and returns the status code and the whole response text.
pub async fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send");
    let mut response = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut response),
    );
    let _ = read.await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// GETs `url` and parses the body as JSON.
pub async fn get_json(http: &reqwest::Client, url: impl AsRef<str>) -> serde_json::Value {
    let url = url.as_ref();
    let resp = http.get(url).send().await.expect("response");
    resp.json()
        .await
        .unwrap_or_else(|e| panic!("{url}: not JSON: {e}"))
}

/// GETs `url` and returns the body as text.
pub async fn get_text(http: &reqwest::Client, url: impl AsRef<str>) -> String {
    let url = url.as_ref();
    let resp = http.get(url).send().await.expect("response");
    resp.text()
        .await
        .unwrap_or_else(|e| panic!("{url}: no text body: {e}"))
}

/// GETs `url` and returns the body.
pub async fn get_bytes(http: &reqwest::Client, url: impl AsRef<str>) -> bytes::Bytes {
    let url = url.as_ref();
    let resp = http.get(url).send().await.expect("response");
    resp.bytes()
        .await
        .unwrap_or_else(|e| panic!("{url}: no body: {e}"))
}

/// Sends a request and returns only its status.
pub async fn status(request: reqwest::RequestBuilder) -> reqwest::StatusCode {
    request.send().await.expect("response").status()
}

/// Sends a request (with its headers: a token, an `Accept`) and returns
/// its body as text, whatever the status.
pub async fn text(request: reqwest::RequestBuilder) -> String {
    let resp = request.send().await.expect("response");
    resp.text().await.expect("a text body")
}

/// Runs a client (pip, npm, dnf, …) to completion within two minutes and
/// returns (success, stdout and stderr).
pub async fn run_client(command: &mut tokio::process::Command) -> (bool, String) {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        command.stdin(std::process::Stdio::null()).output(),
    )
    .await
    .expect("client finished within 120 s")
    .expect("client ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A client run again and again in the background (a package manager
/// while its repository changes), until stopped or `max` runs.
pub struct ClientLoop {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl ClientLoop {
    /// Starts running `run(n)`, which answers (success, output).
    pub fn start<F, Fut>(max: usize, mut run: F) -> ClientLoop
    where
        F: FnMut(usize) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = (bool, String)> + Send,
    {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut runs = 0;
            while !stopped.load(Ordering::Relaxed) && runs < max {
                let (ok, out) = run(runs).await;
                if !ok {
                    failures.push(out);
                }
                runs += 1;
            }
            (runs, failures)
        });
        ClientLoop { stop, task }
    }

    /// Stops the loop; it ran at least twice and no run failed.
    pub async fn stop_without_failures(self, what: &str) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (runs, failures) = self.task.await.unwrap();
        assert!(runs >= 2, "the {what} loop ran {runs} times");
        assert!(
            failures.is_empty(),
            "{} of {runs} {what} runs failed:\n{}",
            failures.len(),
            failures.join("\n---\n")
        );
    }
}

/// Waits up to 30 s for artifactd's log to say `text` (background work).
pub async fn log_says(ad: &Artifactd, text: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if ad.log_text().contains(text) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("artifactd never logged {text:?}:\n{}", ad.log_text());
}

/// `artifactd_checksum_mismatches_total` of `remote`, scraped now.
pub async fn checksum_mismatches(ad: &Artifactd, remote: &str) -> u64 {
    remote_metric(ad, "artifactd_checksum_mismatches_total", remote).await
}

/// The value of `name{remote="…"}`, scraped now.
pub async fn remote_metric(ad: &Artifactd, name: &str, remote: &str) -> u64 {
    metric(ad, &format!("{name}{{remote=\"{remote}\"}}")).await
}

/// The sum of every sample of `name` in the exposition `text` whose labels
/// include `labels` (all of its samples for none).
pub fn sample_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}')?)),
                None => (series, Vec::new()),
            };
            let matches = series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.iter().any(|(sk, sv)| sk == k && sv == v));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// `k="v",k2="v2"` as pairs (values without escapes, as artifactd's are).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some((value, tail)) = after.split_once('"') else {
            break;
        };
        pairs.push((key.trim_start_matches(',').to_string(), value.to_string()));
        rest = tail;
    }
    pairs
}

/// [`sample_sum`] of a scrape made now, as a count.
pub async fn metric_sum(ad: &Artifactd, name: &str, labels: &[(&str, &str)]) -> u64 {
    let text = get_text(&client(), ad.url("/metrics")).await;
    sample_sum(&text, name, labels) as u64
}

/// Requests of `remote` served from `source` (hit, miss, stale, ...).
pub async fn requests_from(ad: &Artifactd, remote: &str, source: &str) -> u64 {
    let labels = [("remote", remote), ("source", source)];
    metric_sum(ad, "artifactd_requests_total", &labels).await
}

/// The value of the sample `selector` (a name, and its labels if it has
/// any), scraped now.
pub async fn metric(ad: &Artifactd, selector: &str) -> u64 {
    let metrics = get_text(&client(), ad.url("/metrics")).await;
    let line = format!("{selector} ");
    let value = metrics.lines().find_map(|l| l.strip_prefix(line.as_str()));
    let value = value.unwrap_or_else(|| panic!("no {line}in\n{metrics}"));
    value.trim().parse().unwrap()
}

/// A `.tar.gz` of `files` (relative path, content), made with `tar` in a
/// fresh directory under `dir`.
pub fn tar_gz(dir: &std::path::Path, files: &[(&str, &str)]) -> Vec<u8> {
    let root = tempfile::tempdir_in(dir).unwrap();
    let mut names = Vec::new();
    for (path, content) in files {
        let file = root.path().join("tree").join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
        names.push(*path);
    }
    let archive = root.path().join("archive.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(root.path().join("tree"))
        .args(&names)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(archive).unwrap()
}

/// Whether `url` answers `200` within `secs` seconds (a test server
/// starting up).
pub async fn answers_ok(url: &str, secs: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let http = client();
    while std::time::Instant::now() < deadline {
        if let Ok(resp) = http.get(url).send().await {
            if resp.status() == 200 {
                return true;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// The keys of `dir`'s node in the shared bucket of the cluster shape
/// that end in `suffix`; `None` in the embedded shape.
pub fn bucket_keys(dir: &std::path::Path, suffix: &str) -> Option<Vec<String>> {
    match artifactd::shape() {
        artifactd::Shape::Embedded => None,
        artifactd::Shape::Cluster => {
            let ns = artifactd::namespace(dir);
            let keys = services::shared()
                .s3
                .keys(services::SHARED_BUCKET, &format!("{ns}/"));
            Some(keys.into_iter().filter(|k| k.ends_with(suffix)).collect())
        }
    }
}

/// Starts a test server with stdout and stderr appended to `log`, killed
/// when its handle drops.
pub trait SpawnLogged {
    fn spawn_logged(&mut self, log: &std::path::Path) -> tokio::process::Child;
}

impl SpawnLogged for tokio::process::Command {
    fn spawn_logged(&mut self, log: &std::path::Path) -> tokio::process::Child {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("server log");
        self.stdout(file.try_clone().expect("server log"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", self.as_std().get_program()))
    }
}

/// Runs the artifactd binary as a client command (`warm`, `cache …`)
/// against `ad` with `token` as the admin token: (exit code, stdout,
/// stderr).
pub async fn artifactd_cli(
    ad: &Artifactd,
    token: Option<&str>,
    args: &[&str],
) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_artifactd"));
    command
        .args(args)
        .env("ARTIFACTD_URL", ad.url(""))
        .env_remove("ARTIFACTD_ADMIN_TOKEN")
        .stdin(std::process::Stdio::null());
    if let Some(token) = token {
        command.env("ARTIFACTD_ADMIN_TOKEN", token);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), command.output())
        .await
        .expect("the command finished within 180 s")
        .expect("the command ran");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Makes a directory immutable for the test's lifetime. Root ignores
/// permission bits, so `chattr +i` is how "unwritable" is made real here.
pub struct Immutable(std::path::PathBuf);

impl Immutable {
    pub fn set(path: &std::path::Path) -> Immutable {
        let status = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .expect("chattr");
        assert!(status.success(), "chattr +i failed");
        Immutable(path.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}
