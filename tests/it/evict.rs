//! A bounded cache: `cache.max_size` holds, least recently used objects go
//! first, an object being read is kept, an image whose manifest is cached
//! keeps every blob, and the index comes back after a restart (also one
//! the catalog did not hear of).

use crate::cache::walk;
use crate::harness::registry::{pull_to_dir, run, Layout, Registry};
use crate::harness::{client, get_json, pattern_bytes, Artifactd, Origin, OriginFile};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;
const BOUND: &str = "cache:\n  max_size: 10MiB\n";

pub(crate) fn remotes(origin: &Origin, registry: Option<&Registry>) -> String {
    let mut yaml = format!(
        "remotes:\n  gen:\n    base_url: \"{}\"\n    package: generic\n    immutable_patterns:\n      - '\\.bin$'\n",
        origin.base_url()
    );
    if let Some(registry) = registry {
        yaml.push_str(&format!(
            "  hub:\n    base_url: \"{}\"\n    package: docker\n",
            registry.url()
        ));
    }
    yaml
}

/// Bytes on disk under the cache and staging directories.
fn disk_use(dir: &Path) -> u64 {
    ["store/cache", "store/staging"]
        .iter()
        .flat_map(|sub| walk(&dir.join(sub)))
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Fetches `path` of remote `gen`: its `X-Artifact-Source` and bytes.
pub(crate) async fn fetch(ad: &Artifactd, path: &str) -> (String, Vec<u8>) {
    let resp = client().get(ad.artifact("gen", path)).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    let source = resp.headers()["x-artifact-source"]
        .to_str()
        .unwrap()
        .to_string();
    (source, resp.bytes().await.unwrap().to_vec())
}

/// Every sample of `name` summed (over remotes, for the per-remote ones).
pub(crate) async fn metric(ad: &Artifactd, name: &str) -> u64 {
    let text = crate::harness::get_text(&client(), ad.url("/metrics")).await;
    let known = text
        .lines()
        .any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")));
    assert!(known, "no metric {name} in:\n{text}");
    crate::harness::sample_sum(&text, name, &[]) as u64
}

/// `cache.memory_index_entries` bounds the object count: a cache holding
/// exactly that many evicts nothing (the background check runs every 5 s),
/// and one more object evicts the least recently used.
#[tokio::test]
async fn an_exactly_full_index_is_kept_and_one_more_object_evicts_the_oldest() {
    let origin = Origin::start().await;
    for i in 0..21 {
        origin.put(
            &format!("/n/{i}.bin"),
            OriginFile::new(pattern_bytes(100, i)),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let bound = "cache:\n  memory_index_entries: 20\n";
    let ad = Artifactd::start(dir.path(), &remotes(&origin, None), bound).await;
    for i in 0..20 {
        assert_eq!(fetch(&ad, &format!("n/{i}.bin")).await.0, "remote");
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(metric(&ad, "artifactd_cache_evictions_total").await, 0);
    assert_eq!(metric(&ad, "artifactd_cache_objects").await, 20);
    for i in 1..20 {
        assert_eq!(fetch(&ad, &format!("n/{i}.bin")).await.0, "cache", "n/{i}");
    }
    assert_eq!(fetch(&ad, "n/20.bin").await.0, "remote");
    assert!(metric(&ad, "artifactd_cache_objects").await <= 20);
    assert!(metric(&ad, "artifactd_cache_evictions_total").await >= 1);
    assert_eq!(fetch(&ad, "n/20.bin").await.0, "cache");
    assert_eq!(fetch(&ad, "n/0.bin").await.0, "remote", "the oldest went");
    for i in 0..21 {
        assert_eq!(
            origin.hits(&format!("/n/{i}.bin")),
            if i == 0 { 2 } else { 1 }
        );
    }
}

#[tokio::test]
async fn a_bounded_cache_keeps_its_bound_and_the_most_recently_used() {
    let origin = Origin::start().await;
    let bodies: Vec<Vec<u8>> = (0..30).map(|i| pattern_bytes(MIB, 200 + i)).collect();
    for (i, body) in bodies.iter().enumerate() {
        origin.put(&format!("/o/{i}.bin"), OriginFile::new(body.clone()));
    }
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &remotes(&origin, None), BOUND).await;
    let bound = 10 * MIB as u64;
    let mut peak = 0;
    for (i, body) in bodies.iter().enumerate() {
        let (source, bytes) = fetch(&ad, &format!("o/{i}.bin")).await;
        assert_eq!(source, "remote");
        assert!(bytes == *body, "object {i}");
        // A fill in flight is not bounded: its commit, just after the
        // client's last byte, makes room first.
        ad.committed().await;
        peak = peak.max(disk_use(dir.path()));
    }
    assert!(
        peak <= bound + MIB as u64,
        "disk use peaked at {peak} bytes, bound {bound} plus one object"
    );
    assert!(metric(&ad, "artifactd_cache_bytes").await <= bound);
    assert!(metric(&ad, "artifactd_cache_evictions_total").await >= 20);
    // The most recently used objects are hits, in reverse order so that a
    // hit does not protect an older one.
    for i in (22..30).rev() {
        let (source, bytes) = fetch(&ad, &format!("o/{i}.bin")).await;
        assert_eq!(source, "cache", "object {i} was evicted");
        assert!(bytes == bodies[i]);
        assert_eq!(origin.hits(&format!("/o/{i}.bin")), 1);
    }
    // The oldest ones were evicted, and come back from the upstream.
    let (source, bytes) = fetch(&ad, "o/0.bin").await;
    assert_eq!(source, "remote");
    assert!(bytes == bodies[0]);
    assert_eq!(origin.hits("/o/0.bin"), 2);
}

/// Sends a GET on a socket with a tiny receive buffer, reads the response
/// head and a little body, and returns the socket with the rest unread:
/// artifactd's side stays blocked in the middle of the body.
async fn slow_reader(ad: &Artifactd, path: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(ad.addr).await.unwrap();
    let request =
        format!("GET /api/v1/remote/gen/{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 2048];
    let n = stream.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    stream
}

#[tokio::test]
async fn an_object_streamed_to_a_slow_reader_is_not_evicted() {
    let origin = Origin::start().await;
    let big = pattern_bytes(4 * MIB, 300);
    origin.put("/s/big.bin", OriginFile::new(big.clone()));
    for i in 0..12 {
        origin.put(
            &format!("/s/{i}.bin"),
            OriginFile::new(pattern_bytes(MIB, 310 + i)),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &remotes(&origin, None), BOUND).await;
    assert_eq!(fetch(&ad, "s/big.bin").await.1, big);
    let mut reader = slow_reader(&ad, "s/big.bin").await;
    // Pressure: twelve more megabytes through a ten-megabyte cache.
    for i in 0..12 {
        fetch(&ad, &format!("s/{i}.bin")).await;
    }
    assert!(metric(&ad, "artifactd_cache_evictions_total").await >= 6);
    // The slow reader gets every byte.
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).await.unwrap();
    // (The first read took the head and at most a little of the body.)
    assert!(rest.len() >= big.len() - 2048, "short: {}", rest.len());
    assert!(big.ends_with(&rest));
    assert_eq!(
        origin.hits("/s/big.bin"),
        1,
        "still cached: never refetched"
    );
    let (source, _) = fetch(&ad, "s/big.bin").await;
    assert_eq!(source, "cache");
}

/// The catalog paths of remote `hub`.
async fn hub_paths(ad: &Artifactd) -> Vec<String> {
    let list = get_json(&client(), ad.url("/artifacts/hub")).await;
    list["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["path"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn an_image_whose_manifest_is_cached_never_loses_a_blob() {
    const PRESSURE: usize = 40;
    let origin = Origin::start().await;
    for i in 0..PRESSURE {
        origin.put(
            &format!("/p/{i}.bin"),
            OriginFile::new(pattern_bytes(300_000, 400 + i as u64)),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::start(dir.path(), None).await;
    let layout = Layout::init(&dir.path().join("layout")).await;
    let layers: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("layer{i}"), pattern_bytes(300_000, 420 + i)))
        .collect();
    let layers: Vec<(&str, Vec<u8>)> = layers
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    layout.build("app", None, &layers).await;
    layout.push("app", &registry, "team/app", &[]).await;
    let ad_dir = dir.path().join("ad");
    let ad = Artifactd::start(&ad_dir, &remotes(&origin, Some(&registry)), BOUND).await;
    let copy = dir.path().join("copy");
    let image = format!("docker://{}/hub/team/app:app", ad.addr);
    let out = pull_to_dir(&image, &copy, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The tag is resolved again later (an up-to-date pull): the tag's
    // manifest is now more recent than the blobs it names, in a later
    // second (within one second, expiring entries go first anyway). Least
    // recently used first would now take the blobs before that manifest.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    registry.stop().await;
    run(
        "skopeo",
        &["inspect", "--raw", "--tls-verify=false", &image],
    )
    .await;

    let is_blob = |p: &String| p.starts_with("blobs/");
    let mut evictions = 0;
    let mut checked_under_pressure = false;
    for i in 0..PRESSURE {
        fetch(&ad, &format!("p/{i}.bin")).await;
        let now = metric(&ad, "artifactd_cache_evictions_total").await;
        if now == evictions {
            continue;
        }
        evictions = now;
        // The catalog is written in batches.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let paths = hub_paths(&ad).await;
        let blobs = paths.iter().filter(|p| is_blob(p)).count();
        if paths.len() > blobs {
            assert_eq!(blobs, 4, "a cached manifest lost a blob: {paths:?}");
        }
        if blobs > 0 {
            checked_under_pressure = true;
        }
    }
    assert!(
        checked_under_pressure,
        "eviction ran while the image was cached"
    );
    assert!(
        hub_paths(&ad).await.is_empty(),
        "under enough pressure the image goes too"
    );
}

#[tokio::test]
async fn a_restart_finds_every_entry_even_ones_the_catalog_missed() {
    let origin = Origin::start().await;
    let bodies: Vec<Vec<u8>> = (0..6)
        .map(|i| pattern_bytes(100_000 + i * 7, 500 + i as u64))
        .collect();
    for (i, body) in bodies.iter().enumerate() {
        origin.put(&format!("/r/{i}.bin"), OriginFile::new(body.clone()));
    }
    let dir = tempfile::tempdir().unwrap();
    let remotes = remotes(&origin, None);
    let mut ad = Artifactd::start(dir.path(), &remotes, "").await;
    for i in 0..3 {
        fetch(&ad, &format!("r/{i}.bin")).await;
    }
    // Let the catalog hear of these three, then kill before it hears of
    // the next three.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 3..6 {
        fetch(&ad, &format!("r/{i}.bin")).await;
    }
    ad.committed().await;
    ad.kill();
    origin.stop();
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    for (i, body) in bodies.iter().enumerate() {
        let (source, bytes) = fetch(&ad, &format!("r/{i}.bin")).await;
        assert_eq!(source, "cache", "object {i}");
        assert!(bytes == *body);
    }
    let expected: u64 = bodies.iter().map(|b| b.len() as u64).sum();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&ad, "artifactd_cache_bytes").await != expected {
        assert!(
            Instant::now() < deadline,
            "the index never counted every entry"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&ad, "artifactd_cache_objects").await, 6);
}
