//! Large objects whose upstream connection breaks: the fill resumes with
//! ranges and every client, the one that started it too, gets the whole
//! object; an object that changed between a cut and its resume is never
//! stitched together.

use crate::cache::walk;
use crate::harness::{
    bucket_keys, client, generic_remote, pattern_bytes, Artifactd, Origin, OriginFile,
};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

const IMMUTABLE_BIN: &str = "    immutable_patterns:\n      - '\\.bin$'\n";
const MIB: usize = 1024 * 1024;

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

/// Sizes of the committed body files of the embedded shape's store.
fn committed_body_sizes(dir: &Path) -> Vec<u64> {
    walk(&dir.join("store"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "body"))
        .filter(|p| !p.components().any(|c| c.as_os_str() == "staging"))
        .filter_map(|p| std::fs::metadata(p).ok().map(|m| m.len()))
        .collect()
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
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, IMMUTABLE_BIN), "").await;
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
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ad.log_text().contains("committed: ") {
        assert!(std::time::Instant::now() < deadline, "no commit logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match bucket_keys(dir.path(), ".body") {
        Some(keys) => assert_eq!(keys.len(), 1, "{keys:?}"),
        None => assert_eq!(committed_body_sizes(dir.path()), vec![len as u64]),
    }
    let hit = client().get(&url).send().await.unwrap();
    assert_eq!(hit.headers()["x-artifact-source"], "cache");
    assert_eq!(sha256_hex(&hit.bytes().await.unwrap()), expected);
    assert_eq!(gets(&origin, "/big/layer.bin").len(), 4);
    let log = ad.log_text();
    assert!(
        log.contains("3 resumes"),
        "the commit is logged with its resumes"
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
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, IMMUTABLE_BIN), "").await;
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
