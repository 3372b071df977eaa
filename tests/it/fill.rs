//! Fills as clients see them: followers stream a fill in progress, a fill
//! outlives the client that started it, HEAD and range misses fill, a
//! failed fill fails everyone and commits nothing, and a killed process
//! leaves no staging bytes behind.

use crate::cache::walk;
use crate::harness::{
    bucket_keys, client, generic_remote, pattern_bytes, Artifactd, Origin, OriginFile,
};
use std::path::Path;
use std::time::{Duration, Instant};

const IMMUTABLE_TGZ: &str = "    immutable_patterns:\n      - '\\.tgz$'\n";
const CHUNK: usize = 64 * 1024;

/// A file the origin sends in 64 KiB chunks over about `seconds`.
pub fn slow_file(body: &[u8], seconds: f64) -> OriginFile {
    let chunks = body.len().div_ceil(CHUNK) as f64;
    let mut file = OriginFile::new(body.to_vec());
    file.chunk_delay = Some(Duration::from_secs_f64(seconds / chunks));
    file
}

/// What one client got: time to the first body byte, and the body or the
/// error that ended it.
struct Transfer {
    first_byte: Duration,
    body: Result<Vec<u8>, String>,
}

async fn fetch(http: reqwest::Client, url: String) -> Transfer {
    let started = Instant::now();
    let mut resp = http.get(&url).send().await.expect("response head");
    assert_eq!(resp.status(), 200);
    let mut body = Vec::new();
    let mut first_byte = None;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                first_byte.get_or_insert_with(|| started.elapsed());
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Transfer {
                    first_byte: first_byte.unwrap_or_else(|| started.elapsed()),
                    body: Err(format!("{e} after {} bytes", body.len())),
                }
            }
        }
    }
    Transfer {
        first_byte: first_byte.unwrap_or_else(|| started.elapsed()),
        body: Ok(body),
    }
}

fn source(resp: &reqwest::Response) -> String {
    resp.headers()["x-artifact-source"]
        .to_str()
        .unwrap()
        .to_string()
}

/// Waits until the catalog lists `count` artifacts of remote `gen`: the
/// fill has committed.
async fn wait_for_catalog(ad: &Artifactd, count: u64) {
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = crate::harness::get_json(&http, ad.url("/artifacts/gen")).await;
        if list["count"] == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "catalog never reached {count}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn staging_bytes(dir: &Path) -> u64 {
    walk(&dir.join("store/staging"))
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

#[tokio::test]
async fn followers_joining_a_slow_fill_get_their_first_byte_at_once() {
    let origin = Origin::start().await;
    let body = pattern_bytes(5 * 1024 * 1024, 91);
    origin.put("/f/big.tgz", slow_file(&body, 5.0));
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, IMMUTABLE_TGZ), "").await;
    let url = ad.artifact("gen", "f/big.tgz");
    let started = Instant::now();
    let leader = tokio::spawn(fetch(client(), url.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let followers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(fetch(client(), url.clone())))
        .collect();
    let leader = leader.await.unwrap();
    assert!(leader.body.as_ref().unwrap() == &body, "leader bytes");
    assert!(
        started.elapsed() > Duration::from_secs(4),
        "the fill really was slow"
    );
    for follower in followers {
        let follower = follower.await.unwrap();
        assert!(
            follower.first_byte < Duration::from_millis(1500),
            "a follower's first byte took {:?}",
            follower.first_byte
        );
        assert!(follower.body.as_ref().unwrap() == &body, "follower bytes");
    }
    assert_eq!(origin.hits("/f/big.tgz"), 1, "one upstream fetch");
    let again = client().get(&url).send().await.unwrap();
    assert_eq!(source(&again), "cache");
    assert!(again.bytes().await.unwrap() == body);
    assert_eq!(origin.hits("/f/big.tgz"), 1);
}

#[tokio::test]
async fn a_fill_that_fails_midway_fails_every_follower_and_commits_nothing() {
    for chunked in [false, true] {
        let origin = Origin::start().await;
        let body = pattern_bytes(3 * 1024 * 1024, 92);
        let mut cut = slow_file(&body, 2.0);
        cut.truncate_after = Some(body.len() / 2);
        cut.chunked = chunked;
        origin.put("/f/cut.tgz", cut);
        let dir = tempfile::tempdir().unwrap();
        let ad = Artifactd::start(dir.path(), &generic_remote(&origin, IMMUTABLE_TGZ), "").await;
        let url = ad.artifact("gen", "f/cut.tgz");
        let leader = tokio::spawn(fetch(client(), url.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let followers: Vec<_> = (0..3)
            .map(|_| tokio::spawn(fetch(client(), url.clone())))
            .collect();
        let mut transfers = vec![leader.await.unwrap()];
        for follower in followers {
            transfers.push(follower.await.unwrap());
        }
        for (i, transfer) in transfers.iter().enumerate() {
            assert!(
                transfer.body.is_err(),
                "client {i} (chunked: {chunked}) got a complete-looking body of {} bytes",
                transfer.body.as_ref().map(Vec::len).unwrap_or(0)
            );
        }
        assert_eq!(
            origin.hits("/f/cut.tgz"),
            1,
            "followers did not fetch themselves"
        );
        assert_eq!(staging_bytes(dir.path()), 0, "nothing left in staging");
        // Nothing was committed: the next request goes upstream and gets it whole.
        origin.put("/f/cut.tgz", OriginFile::new(body.clone()));
        let again = client().get(&url).send().await.unwrap();
        assert_eq!(source(&again), "remote");
        assert!(again.bytes().await.unwrap() == body);
        assert_eq!(origin.hits("/f/cut.tgz"), 2);
    }
}

#[tokio::test]
async fn a_client_that_aborts_does_not_cancel_the_fill() {
    let origin = Origin::start().await;
    let body = pattern_bytes(4 * 1024 * 1024, 93);
    origin.put("/f/abort.tgz", slow_file(&body, 3.0));
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, IMMUTABLE_TGZ), "").await;
    let url = ad.artifact("gen", "f/abort.tgz");
    let mut resp = client().get(&url).send().await.unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(resp);
    wait_for_catalog(&ad, 1).await;
    let again = client().get(&url).send().await.unwrap();
    assert_eq!(source(&again), "cache");
    assert!(again.bytes().await.unwrap() == body);
    assert_eq!(origin.hits("/f/abort.tgz"), 1, "the upstream saw one GET");
}

#[tokio::test]
async fn head_and_range_misses_answer_at_once_and_leave_the_object_cached() {
    let origin = Origin::start().await;
    let head_body = pattern_bytes(2_000_000, 94);
    let range_body = pattern_bytes(3_000_000, 95);
    origin.put("/f/head.tgz", slow_file(&head_body, 1.0));
    origin.put("/f/range.tgz", slow_file(&range_body, 1.0));
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, IMMUTABLE_TGZ), "").await;
    let http = client();

    let head_url = ad.artifact("gen", "f/head.tgz");
    let started = Instant::now();
    let head = http.head(&head_url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "2000000");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "HEAD waited for the body"
    );

    let range_url = ad.artifact("gen", "f/range.tgz");
    let ranged = http
        .get(&range_url)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.headers()["content-range"], "bytes 1000-1999/3000000");
    assert_eq!(ranged.bytes().await.unwrap(), range_body[1000..2000]);

    wait_for_catalog(&ad, 2).await;
    for (url, body) in [(&head_url, &head_body), (&range_url, &range_body)] {
        let full = http.get(url).send().await.unwrap();
        assert_eq!(source(&full), "cache");
        assert!(full.bytes().await.unwrap() == *body);
    }
    let tail = http
        .get(&range_url)
        .header("range", "bytes=2999000-")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap(), range_body[2_999_000..]);
    let seen = origin.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for request in seen {
        assert_eq!(request.method, "GET", "{request:?}");
        assert!(!request.headers.contains_key("range"), "{request:?}");
    }
}

#[tokio::test]
async fn a_killed_fill_leaves_no_staging_bytes_after_restart() {
    let origin = Origin::start().await;
    let body = pattern_bytes(6 * 1024 * 1024, 96);
    origin.put("/f/killed.tgz", slow_file(&body, 4.0));
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(&origin, IMMUTABLE_TGZ);
    let mut ad = Artifactd::start(dir.path(), &remotes, "").await;
    let url = ad.artifact("gen", "f/killed.tgz");
    let mut resp = client().get(&url).send().await.unwrap();
    let mut received = 0;
    while received < 1024 * 1024 {
        received += resp.chunk().await.unwrap().unwrap().len();
    }
    // A bucket holds an upload in progress where no reader sees it; a
    // filesystem store stages the body beside the store.
    let bodies = || bucket_keys(dir.path(), ".body");
    match bodies() {
        None => assert!(staging_bytes(dir.path()) > 0, "the fill is staged"),
        Some(keys) => assert_eq!(keys, Vec::<String>::new(), "nothing visible mid-fill"),
    }
    ad.kill();
    drop(resp);
    match bodies() {
        None => assert!(
            staging_bytes(dir.path()) > 0,
            "kill -9 leaves the staging file"
        ),
        Some(keys) => assert_eq!(keys, Vec::<String>::new(), "nothing visible after kill -9"),
    }

    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while staging_bytes(dir.path()) > 0 {
        assert!(Instant::now() < deadline, "orphaned staging bytes remain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    origin.put("/f/killed.tgz", OriginFile::new(body.clone()));
    let url = ad.artifact("gen", "f/killed.tgz");
    let again = client().get(&url).send().await.unwrap();
    assert_eq!(source(&again), "remote");
    assert!(again.bytes().await.unwrap() == body, "fetched whole");
    assert_eq!(origin.hits("/f/killed.tgz"), 2);
    if let Some(keys) = bodies() {
        assert_eq!(keys.len(), 1, "one whole body in the bucket: {keys:?}");
    }
}

/// A miss commits just after its client has the last byte, whether its
/// body was held in memory or spilled to a file. What comes right behind
/// it still finds the entry: a hit on another connection is
/// answered by the fast path from the committed entry, and a removal or a
/// flush takes effect, never undone by a commit landing after it.
#[tokio::test]
async fn what_comes_right_behind_a_miss_finds_its_entry_committed() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    // fsync makes each commit take a while after its client has the body.
    let remotes = generic_remote(&origin, IMMUTABLE_TGZ);
    let ad = Artifactd::start(dir.path(), &remotes, "cache:\n  fsync: true\n").await;
    // Two clients, two connections: the one behind never shares the
    // connection (or the task) that served the miss.
    let (first, behind) = (client(), client());
    let fast_hits = || crate::harness::remote_metric(&ad, "artifactd_fast_path_hits_total", "gen");
    const ROUNDS: u64 = 20;
    // A body in a shared bucket is no local file, so a hit on a spilled
    // one takes the phases there (still from the committed entry).
    let cluster = crate::harness::artifactd::shape() == crate::harness::artifactd::Shape::Cluster;
    let mut fast_expected = 0;
    for round in 0..ROUNDS {
        // Held in memory to its commit, or spilled to a body file; each
        // with either kind of removal below.
        let spilled = round / 2 % 2 == 1;
        let body = pattern_bytes(if spilled { 300_000 } else { 64 * 1024 }, 300 + round);
        if !(cluster && spilled) {
            fast_expected += 1;
        }
        for name in ["hit", "removed"] {
            origin.put(
                &format!("/b{round}/{name}.tgz"),
                OriginFile::new(body.clone()),
            );
        }
        let url = ad.artifact("gen", &format!("b{round}/hit.tgz"));
        let missed = first.get(&url).send().await.unwrap();
        assert_eq!(source(&missed), "remote");
        assert!(missed.bytes().await.unwrap() == body);
        let hit = behind.get(&url).send().await.unwrap();
        assert_eq!(source(&hit), "cache", "round {round}");
        assert!(hit.bytes().await.unwrap() == body);

        let path = format!("b{round}/removed.tgz");
        let url = ad.artifact("gen", &path);
        assert!(crate::harness::get_bytes(&first, &url).await == body);
        // By a removal of the entry, and by a flush of what matches it.
        let removal = match round % 2 {
            0 => behind.delete(ad.url(&format!("/api/v1/cache/gen/{path}"))),
            _ => behind.put(ad.url(&format!(
                "/cache/flush?remote=gen&pattern=^b{round}/removed"
            ))),
        };
        let removed = removal.send().await.unwrap();
        assert_eq!(removed.status(), 200, "round {round}");
        let again = first.get(&url).send().await.unwrap();
        assert_eq!(
            source(&again),
            "remote",
            "removed in round {round}, yet cached"
        );
        assert!(again.bytes().await.unwrap() == body);
        assert_eq!(origin.hits(&format!("/b{round}/hit.tgz")), 1);
        assert_eq!(origin.hits(&format!("/{path}")), 2);
    }
    assert_eq!(
        fast_hits().await,
        fast_expected,
        "each hit behind a miss the fast path can serve took it"
    );
}
