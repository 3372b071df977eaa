//! Large objects filled from ranges: a fill whose upstream connection
//! breaks resumes and every client, the one that started it too, gets the
//! whole object; an object that changed between a cut and its resume is
//! never stitched together; a footer read of a cold object is answered at
//! once; parts fetched side by side fill an object faster than one
//! connection can, and a tampered part commits nothing.

use crate::cache::walk;
use crate::harness::registry::{pull_checked, registry_digest, Layout, Registry};
use crate::harness::{
    bucket_keys, client, generic_remote, pattern_bytes, Artifactd, Origin, OriginFile,
};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, Instant};

const IMMUTABLE_BIN: &str = "    immutable_patterns:\n      - '\\.bin$'\n";
const MIB: usize = 1024 * 1024;
/// The tests that move a gigabyte or more take turns: on two cores, two
/// at once would time each other.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One connection at a time: the resume tests count their fetches.
const SEQUENTIAL: &str = "cache:\n  parallel_fill_connections: 1\n";

/// `len` pseudo-random bytes, built from a block of a prime length so that
/// a byte at a wrong offset differs (and quick to build at 512 MiB).
fn big_pattern(len: usize, seed: u64) -> Vec<u8> {
    let block = pattern_bytes(MIB + 7, seed);
    block.iter().copied().cycle().take(len).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Streams `url` and returns the sha256 and length of what arrived, or
/// the error that ended the transfer (with the bytes it had by then).
async fn stream_digest(url: String) -> Result<(String, u64), (String, u64)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .no_proxy()
        .build()
        .unwrap();
    let mut resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| (e.to_string(), 0))?;
    if resp.status() != 200 {
        return Err((format!("status {}", resp.status()), 0));
    }
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                hasher.update(&chunk);
                received += chunk.len() as u64;
            }
            Ok(None) => return Ok((hex::encode(hasher.finalize()), received)),
            Err(e) => return Err((e.to_string(), received)),
        }
    }
}

/// Streams `url` and returns how many bytes arrived.
async fn stream_length(url: String) -> Result<u64, String> {
    let mut resp = client().get(&url).send().await.map_err(|e| e.to_string())?;
    let mut received = 0u64;
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        received += chunk.len() as u64;
    }
    Ok(received)
}

/// Sizes of the committed body files of the embedded shape's store.
fn committed_body_sizes(dir: &Path) -> Vec<u64> {
    walk(&dir.join("store"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "body"))
        .filter(|p| !p.components().any(|c| c.as_os_str() == "staging"))
        .filter_map(|p| std::fs::metadata(p).ok().map(|m| m.len()))
        .collect()
}

/// Waits for the log line of a fill's commit, which may trail the last
/// byte its clients read.
async fn wait_for_commit(ad: &Artifactd) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ad.log_text().contains("committed: ") {
        assert!(Instant::now() < deadline, "no commit logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Once its fill committed, `url` is a hit with the whole object.
async fn assert_cached_whole(ad: &Artifactd, url: &str, sha256: &str) {
    wait_for_commit(ad).await;
    let hit = client().get(url).send().await.unwrap();
    assert_eq!(hit.headers()["x-artifact-source"], "cache");
    assert_eq!(sha256_hex(&hit.bytes().await.unwrap()), sha256);
}

fn gets(origin: &Origin, path: &str) -> Vec<Option<String>> {
    origin
        .requests()
        .into_iter()
        .filter(|r| r.path == path && r.method == "GET")
        .map(|r| r.headers.get("range").cloned())
        .collect()
}

#[tokio::test]
async fn cuts_at_30_60_and_90_percent_resume_and_every_client_gets_the_whole_object() {
    let _turn = HEAVY.lock().await;
    let origin = Origin::start().await;
    let len = 512 * MIB;
    let body = big_pattern(len, 27);
    let expected = sha256_hex(&body);
    let cuts = [len * 3 / 10, len * 6 / 10, len * 9 / 10];
    // 200 MiB/s per connection: the five clients overlap every cut.
    let file = OriginFile::new(body)
        .etag("\"v1\"")
        .cut_at(&cuts)
        .rate(200 * MIB as u64);
    let unused_cuts = file.cuts.clone();
    origin.put("/big/layer.bin", file);
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(&origin, IMMUTABLE_BIN);
    let ad = Artifactd::start(dir.path(), &remotes, SEQUENTIAL).await;
    let url = ad.artifact("gen", "big/layer.bin");

    let clients: Vec<_> = (0..5)
        .map(|_| tokio::spawn(stream_digest(url.clone())))
        .collect();
    // Nothing partial is committed while the fill goes on.
    let mut watched = 0;
    while !clients.iter().all(|c| c.is_finished()) {
        for size in committed_body_sizes(dir.path()) {
            assert_eq!(size, len as u64, "a partial body was committed");
        }
        watched += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        watched > 10,
        "the fill took {watched} polls: too fast to watch"
    );
    for (i, client) in clients.into_iter().enumerate() {
        let got = client.await.unwrap();
        assert_eq!(
            got,
            Ok((expected.clone(), len as u64)),
            "client {i} did not get the whole object"
        );
    }
    assert!(unused_cuts.lock().unwrap().is_empty(), "every cut happened");
    let fetched = gets(&origin, "/big/layer.bin");
    let resumes: Vec<Option<String>> = cuts
        .iter()
        .map(|at| Some(format!("bytes={at}-{}", len - 1)))
        .collect();
    assert_eq!(fetched.len(), 4, "1 GET and 3 resumes: {fetched:?}");
    assert_eq!(fetched[0], None, "the first GET asks for the whole object");
    assert_eq!(fetched[1..], resumes[..], "each resume starts at its cut");
    let if_ranges: Vec<_> = origin
        .requests()
        .into_iter()
        .filter(|r| r.headers.contains_key("range"))
        .map(|r| r.headers.get("if-range").cloned())
        .collect();
    assert_eq!(if_ranges, vec![Some("\"v1\"".to_string()); 3]);

    // Committed once, whole (the commit may trail the last byte read): a
    // hit now, with no upstream request.
    assert_cached_whole(&ad, &url, &expected).await;
    match bucket_keys(dir.path(), ".body") {
        Some(keys) => assert_eq!(keys.len(), 1, "{keys:?}"),
        None => assert_eq!(committed_body_sizes(dir.path()), vec![len as u64]),
    }
    assert_eq!(gets(&origin, "/big/layer.bin").len(), 4);
    let log = ad.log_text();
    assert!(
        log.contains("4 upstream fetches, 3 broke"),
        "the commit is logged with its fetches"
    );
}

#[tokio::test]
async fn an_object_that_changed_before_its_resume_fails_its_readers_and_is_fetched_anew() {
    let origin = Origin::start().await;
    let len = 64 * MIB;
    let old = big_pattern(len, 31);
    let new = big_pattern(len, 32);
    let changed = OriginFile::new(new.clone()).etag("\"v2\"");
    let mut first = OriginFile::new(old)
        .etag("\"v1\"")
        .cut_at(&[len / 2])
        .rate(100 * MIB as u64);
    first.after_cut = Some(Box::new(changed));
    origin.put("/big/image.bin", first);
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(&origin, IMMUTABLE_BIN);
    let ad = Artifactd::start(dir.path(), &remotes, SEQUENTIAL).await;
    let url = ad.artifact("gen", "big/image.bin");

    let clients: Vec<_> = (0..3)
        .map(|_| tokio::spawn(stream_digest(url.clone())))
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let (error, had) = client
            .await
            .unwrap()
            .expect_err("a stitched body completed");
        assert!(
            had >= (len / 4) as u64 && had < len as u64,
            "client {i} failed after {had} bytes ({error})"
        );
    }
    let fetched = gets(&origin, "/big/image.bin");
    assert_eq!(fetched.len(), 2, "{fetched:?}");
    assert_eq!(fetched[1], Some(format!("bytes={}-{}", len / 2, len - 1)));
    assert!(
        committed_body_sizes(dir.path()).is_empty(),
        "nothing committed"
    );

    // The next request fetches the new object, whole, and keeps it.
    let got = stream_digest(url.clone()).await;
    assert_eq!(got, Ok((sha256_hex(&new), len as u64)));
    let hit = client().get(&url).send().await.unwrap();
    assert_eq!(hit.headers()["x-artifact-source"], "cache");
    assert_eq!(hit.headers()["etag"], "\"v2\"");
    assert_eq!(gets(&origin, "/big/image.bin").len(), 3);
    assert!(
        ad.log_text().contains("whole object"),
        "the failure says why"
    );
}

/// A footer-first reader (as SOCI and eStargz read a layer) of a cold
/// 1 GiB object from an upstream that sends 50 MiB/s per connection gets
/// its footer from a range fetch of its own, not after the whole object.
#[tokio::test]
async fn a_footer_read_of_a_cold_object_is_answered_at_once_while_the_whole_fills() {
    let _turn = HEAVY.lock().await;
    let origin = Origin::start().await;
    let len = 1024 * MIB;
    let body = big_pattern(len, 41);
    let expected = sha256_hex(&body);
    let footer = body[len - 65536..].to_vec();
    let file = OriginFile::new(body).etag("\"m1\"").rate(50 * MIB as u64);
    origin.put("/big/model.bin", file);
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(&origin, IMMUTABLE_BIN);
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let url = ad.artifact("gen", "big/model.bin");

    let began = Instant::now();
    let resp = client()
        .get(&url)
        .header("range", "bytes=-65536")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    let content_range = resp.headers()["content-range"].to_str().unwrap();
    assert_eq!(
        content_range,
        format!("bytes {}-{}/{len}", len - 65536, len - 1)
    );
    let got = resp.bytes().await.unwrap();
    let took = began.elapsed();
    assert!(got == footer, "the footer's bytes");
    eprintln!("footer of a cold 1 GiB object in {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "the footer took {took:?} (the whole object needs 20 s at 50 MiB/s)"
    );

    // The whole object is cached afterwards.
    assert_cached_whole(&ad, &url, &expected).await;
    let fetched = gets(&origin, "/big/model.bin");
    assert_eq!(fetched[0], None, "the fill's GET of the whole object");
    let for_reader = format!("bytes={}-{}", len - 65536, len - 1);
    assert_eq!(
        fetched
            .iter()
            .filter(|r| r.as_ref() == Some(&for_reader))
            .count(),
        1,
        "the reader's range went upstream once: {fetched:?}"
    );
    assert_ranges_tile(&fetched, 16 * MIB as u64, len as u64);
}

/// The ranges fetched, sorted, tile `from..len` exactly: the first GET
/// stopped at `from`, and no byte was fetched twice.
fn assert_ranges_tile(fetched: &[Option<String>], from: u64, len: u64) {
    let mut spans: Vec<(u64, u64)> = (fetched.iter().flatten())
        .map(|range| {
            let (a, b) = range
                .strip_prefix("bytes=")
                .unwrap()
                .split_once('-')
                .unwrap();
            (a.parse().unwrap(), b.parse::<u64>().unwrap() + 1)
        })
        .collect();
    spans.sort();
    let mut next = from;
    for (start, end) in &spans {
        assert_eq!(*start, next, "ranges fetched: {spans:?}");
        next = *end;
    }
    assert_eq!(next, len, "ranges fetched: {spans:?}");
}

/// A cold 1 GiB object from an upstream that sends 50 MiB/s per connection,
/// fetched in 4 parts at a time, arrives in less than half the time one
/// connection needs; the status page shows the fetches in flight.
#[tokio::test]
async fn parallel_parts_fill_a_cold_object_in_under_half_the_time_of_one_connection() {
    let _turn = HEAVY.lock().await;
    let origin = Origin::start().await;
    let len = 1024 * MIB;
    let rate = 50 * MIB;
    let body = big_pattern(len, 43);
    let expected = sha256_hex(&body);
    origin.put(
        "/big/disk.iso",
        OriginFile::new(body).etag("\"d1\"").rate(rate as u64),
    );
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(&origin, "    immutable_patterns:\n      - '\\.iso$'\n");
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let url = ad.artifact("gen", "big/disk.iso");

    let began = Instant::now();
    // Counted, not hashed: the hit below checks the bytes, and the client's
    // hash would take CPU from the fill being timed.
    let client_task = tokio::spawn(stream_length(url.clone()));
    let mut most_in_flight = 0;
    while !client_task.is_finished() {
        let status: serde_json::Value = client()
            .get(ad.url("/status"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let in_flight = status["fills"][0]["fetches_in_flight"].as_u64();
        most_in_flight = most_in_flight.max(in_flight.unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = client_task.await.unwrap();
    let took = began.elapsed();
    assert_eq!(got, Ok(len as u64));
    let one_connection = Duration::from_secs_f64(len as f64 / rate as f64);
    eprintln!("1 GiB in 4 parallel parts: {took:?}; one connection needs {one_connection:?}");
    // The cluster shape also sends every byte on to S3 from a debug build,
    // beside SeaweedFS and the other suite's test on the same two cores:
    // 8.5 s alone, 10.3 s once in a CI run. The speed-up is the fill's,
    // shown on the embedded shape; the cluster shape must still beat one
    // connection clearly.
    let bound = match crate::harness::artifactd::shape() {
        crate::harness::artifactd::Shape::Embedded => one_connection / 2,
        crate::harness::artifactd::Shape::Cluster => one_connection * 3 / 4,
    };
    assert!(
        took < bound,
        "took {took:?}; one connection needs {one_connection:?}"
    );
    assert_eq!(
        most_in_flight, 4,
        "the status page shows 4 fetches at a time"
    );
    assert_cached_whole(&ad, &url, &expected).await;
    let fetched = gets(&origin, "/big/disk.iso");
    assert_eq!(fetched[0], None);
    assert_eq!(fetched.len(), 64, "1 GiB in 16 MiB parts: {fetched:?}");
    assert_ranges_tile(&fetched, 16 * MIB as u64, len as u64);
}

/// An OCI blob filled in parallel parts is checked against its digest as
/// a whole: one tampered part commits nothing, and no client gets a whole
/// body; the next pull fetches it anew.
#[tokio::test]
async fn a_blob_with_a_tampered_part_is_refused_whole_and_nothing_is_committed() {
    let origin = Origin::start().await;
    let len = 96 * MIB;
    let body = big_pattern(len, 47);
    let digest = format!("sha256:{}", sha256_hex(&body));
    let path = format!("/v2/lib/big/blobs/{digest}");
    let mut tampered = OriginFile::new(body.clone());
    tampered.tampered_in_ranges = Some(50 * MIB + 12345);
    origin.put(&path, tampered);
    let dir = tempfile::tempdir().unwrap();
    let remotes = crate::oci::hub_remote(&origin.base_url(), "");
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let url = ad.artifact("hub", &format!("lib/big/blobs/{digest}"));

    let clients: Vec<_> = (0..2)
        .map(|_| tokio::spawn(stream_digest(url.clone())))
        .collect();
    for client in clients {
        let (_, had) = client
            .await
            .unwrap()
            .expect_err("a tampered blob completed");
        assert!(had < len as u64);
    }
    let fetched = gets(&origin, &path);
    assert!(fetched.len() > 2, "fetched in parts: {fetched:?}");
    assert!(
        committed_body_sizes(dir.path()).is_empty(),
        "nothing committed"
    );
    let stored = bucket_keys(dir.path(), ".body").unwrap_or_default();
    assert!(stored.is_empty(), "{stored:?}");
    let log = ad.log_text();
    assert!(
        log.contains(&format!("expected {digest}")),
        "the refusal names the digest"
    );

    // Untampered now: the next pull gets the blob whole and keeps it.
    origin.put(&path, OriginFile::new(body));
    let got = stream_digest(url.clone()).await;
    assert_eq!(got, Ok((digest[7..].to_string(), len as u64)));
    assert_cached_whole(&ad, &url, &digest[7..]).await;
}

/// An OCI layout at `path` with tag `tag`: one uncompressed layer of
/// `layer` bytes (written directly: building a gigabyte's tarball would
/// take longer than the test), its config and manifest.
fn one_layer_layout(path: &Path, tag: &str, layer: &[u8]) -> Layout {
    let blobs = path.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = sha256_hex(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (layer_digest, layer_size) = put(layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": manifest_digest,
                       "size": manifest_size,
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(path.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(path.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    Layout {
        path: path.to_path_buf(),
    }
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// `skopeo copy` of an image with a 1 GiB layer, from a registry behind a
/// proxy that cuts every connection after 10 MiB: artifactd assembles the
/// layer from ranges, each resumed where its cut left it, and skopeo gets
/// the whole layer, digest-checked, in one pull.
#[tokio::test]
async fn skopeo_copies_a_1_gib_layer_through_connections_cut_every_10_mib() {
    let _turn = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None).await;
    let layer = big_pattern(1024 * MIB, 53);
    let layout = one_layer_layout(&dir.path().join("layout"), "big", &layer);
    drop(layer);
    layout.push("big", &registry, "team/model", &[]).await;
    let digest = registry_digest(&registry, "team/model", "big", OCI_MANIFEST).await;
    let front = Origin::start().await;
    front.forward_to(&registry.url());
    front.cut_forwarded_every(10 * MIB);
    let remotes = crate::oci::hub_remote(&front.base_url(), "");
    let ad = Artifactd::start(&dir.path().join("ad"), &remotes, "").await;

    let copy = dir.path().join("copy");
    let reference = format!("docker://{}/hub/team/model:big", ad.addr);
    pull_checked(&reference, &copy, &digest).await;
    // The layer as the registry has it (a push may recompress it).
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.join("manifest.json")).unwrap()).unwrap();
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let layer_size = manifest["layers"][0]["size"].as_u64().unwrap();
    assert!(
        layer_size >= 1024 * MIB as u64,
        "a 1 GiB layer: {layer_size}"
    );
    let layer_path = format!("/v2/team/model/blobs/{layer_digest}");
    let fetched = gets(&front, &layer_path);
    // 16 MiB parts, each cut at 10 MiB and resumed once.
    assert!(
        fetched.len() > 100,
        "every connection is cut after 10 MiB: {} fetches",
        fetched.len()
    );
    wait_for_commit(&ad).await;
    let blob = ad.url(&format!("/v2/hub/team/model/blobs/{layer_digest}"));
    let hit = client().head(&blob).send().await.unwrap();
    assert_eq!(hit.headers()["x-artifact-source"], "cache");
    assert_eq!(gets(&front, &layer_path).len(), fetched.len());
}

/// `max_upstream_connections` bounds a parallel fill (and everything else
/// of the remote) on this node: the origin never sends more bodies at once.
#[tokio::test]
async fn a_remote_s_connection_bound_holds_a_parallel_fill_to_it() {
    let origin = Origin::start().await;
    let len = 128 * MIB;
    let body = big_pattern(len, 59);
    let expected = sha256_hex(&body);
    let file = OriginFile::new(body).etag("\"c1\"").rate(100 * MIB as u64);
    origin.put("/big/bounded.bin", file);
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{IMMUTABLE_BIN}    max_upstream_connections: 2\n");
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, &extra), "").await;
    let url = ad.artifact("gen", "big/bounded.bin");

    let got = stream_digest(url.clone()).await;
    assert_eq!(got, Ok((expected.clone(), len as u64)));
    assert_cached_whole(&ad, &url, &expected).await;
    let fetched = gets(&origin, "/big/bounded.bin");
    assert!(fetched.len() > 2, "fetched in parts: {fetched:?}");
    // The parts: the first response, cut where they begin, would count
    // at the origin until it noticed the close.
    assert_eq!(
        origin.most_concurrent_ranges(),
        2,
        "two connections at a time"
    );
}

/// `max_upstream_bytes_per_second` paces a remote's upstream bytes: a
/// 16 MiB object at 8 MiB/s takes at least the 2 s it costs (less the
/// quarter second a burst may take).
#[tokio::test]
async fn a_remote_s_bandwidth_cap_paces_its_upstream_bytes() {
    let origin = Origin::start().await;
    let len = 16 * MIB;
    let body = big_pattern(len, 61);
    let expected = sha256_hex(&body);
    origin.put("/capped.bin", OriginFile::new(body).etag("\"p1\""));
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{IMMUTABLE_BIN}    max_upstream_bytes_per_second: 8MiB\n");
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, &extra), "").await;
    let url = ad.artifact("gen", "capped.bin");

    let began = Instant::now();
    let got = stream_digest(url.clone()).await;
    let took = began.elapsed();
    assert_eq!(got, Ok((expected, len as u64)));
    assert!(
        took >= Duration::from_millis(1700),
        "16 MiB at 8 MiB/s arrived in {took:?}"
    );
    // A hit is not paced: the cap is on the upstream.
    let began = Instant::now();
    let hit = client().get(&url).send().await.unwrap();
    assert_eq!(hit.headers()["x-artifact-source"], "cache");
    assert_eq!(hit.bytes().await.unwrap().len(), len);
    assert!(began.elapsed() < took / 2, "{:?}", began.elapsed());
}
