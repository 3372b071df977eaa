//! The cache path: miss then hit, revalidation of mutable artifacts,
//! single-flight fills, truncated upstream bodies, restarts and ranges.

use crate::harness::{
    client, generic_remote, pattern_bytes, sha256_hex, Artifactd, Origin, OriginFile,
};
use std::time::Duration;

/// `X-Artifact-Source` of a response (`<none>` when missing).
pub fn source(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-artifact-source")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
        .to_string()
}

const IMMUTABLE_TGZ: &str =
    "    immutable_patterns: ['\\.tgz$']\n    mutable_patterns: ['index\\.yaml$']\n";

#[tokio::test]
async fn miss_then_hit_serves_identical_bytes_with_one_upstream_request() {
    let origin = Origin::start().await;
    let body = pattern_bytes(300_000, 1);
    origin.put("/pkg/a-1.0.tgz", OriginFile::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, IMMUTABLE_TGZ), "").await;
    let http = client();
    let url = ad.artifact("gen", "pkg/a-1.0.tgz");

    let first = http.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(source(&first), "remote");
    assert_eq!(first.bytes().await.unwrap(), body);

    let second = http.get(&url).send().await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(source(&second), "cache");
    assert_eq!(
        second.headers()["content-length"],
        body.len().to_string().as_str()
    );
    assert_eq!(second.bytes().await.unwrap(), body);

    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(source(&head), "cache");
    assert_eq!(
        head.headers()["content-length"],
        body.len().to_string().as_str()
    );
    assert_eq!(origin.hits("/pkg/a-1.0.tgz"), 1, "upstream fetched once");

    // The older route layout reaches the same cache entry.
    let old_route = http
        .get(ad.url("/api/gen/pkg/a-1.0.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(source(&old_route), "cache");
    assert_eq!(old_route.bytes().await.unwrap(), body);
    assert_eq!(origin.hits("/pkg/a-1.0.tgz"), 1);
}

#[tokio::test]
async fn denied_path_gets_403_without_upstream_request() {
    let origin = Origin::start().await;
    origin.put("/pkg/a.zip", OriginFile::new("zip"));
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, IMMUTABLE_TGZ), "").await;
    let resp = client()
        .get(ad.artifact("gen", "pkg/a.zip"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let text = resp.text().await.unwrap();
    assert!(text.contains("'gen'"), "{text}");
    assert_eq!(text.lines().count(), 1);
    assert!(
        text.starts_with("{\"detail\":"),
        "the reference's error form: {text}"
    );
    let unknown = client()
        .get(ad.artifact("nope", "pkg/a.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test]
async fn expired_mutable_artifact_is_revalidated_with_its_validator() {
    let origin = Origin::start().await;
    origin.put(
        "/charts/index.yaml",
        OriginFile::new("entries: v1\n").etag("\"v1\""),
    );
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(
        &origin,
        &format!(
            "{IMMUTABLE_TGZ}    check_mutable_updates: true\n    cache:\n      mutable_ttl: 1\n"
        ),
    );
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let http = client();
    let url = ad.artifact("gen", "charts/index.yaml");

    let first = http.get(&url).send().await.unwrap();
    assert_eq!(source(&first), "remote");
    assert_eq!(first.text().await.unwrap(), "entries: v1\n");
    let fresh = http.get(&url).send().await.unwrap();
    assert_eq!(source(&fresh), "cache");
    assert_eq!(
        origin.hits("/charts/index.yaml"),
        1,
        "fresh copy served without asking"
    );

    // After the TTL: one conditional request; the 304 keeps the cached body.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let revalidated = http.get(&url).send().await.unwrap();
    assert_eq!(source(&revalidated), "cache");
    assert_eq!(revalidated.text().await.unwrap(), "entries: v1\n");
    let requests = origin.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].method, "GET");
    assert_eq!(
        requests[1].headers.get("if-none-match").map(String::as_str),
        Some("\"v1\"")
    );

    // The 304 refreshed the TTL: the next request is a fresh hit.
    let after = http.get(&url).send().await.unwrap();
    assert_eq!(source(&after), "cache");
    assert_eq!(origin.hits("/charts/index.yaml"), 2);

    // The upstream changes: after expiry the 200 replaces the cached copy.
    origin.put(
        "/charts/index.yaml",
        OriginFile::new("entries: v2\n").etag("\"v2\""),
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let replaced = http.get(&url).send().await.unwrap();
    assert_eq!(source(&replaced), "remote");
    assert_eq!(replaced.text().await.unwrap(), "entries: v2\n");
    let cached = http.get(&url).send().await.unwrap();
    assert_eq!(source(&cached), "cache");
    assert_eq!(cached.text().await.unwrap(), "entries: v2\n");
    assert_eq!(origin.hits("/charts/index.yaml"), 3);
}

#[tokio::test]
async fn concurrent_cold_requests_cause_one_upstream_fetch() {
    let origin = Origin::start().await;
    let body = pattern_bytes(20 * 1024 * 1024, 3);
    let expected = sha256_hex(&body);
    let mut file = OriginFile::new(body);
    // About 320 chunks of 64 KiB at 1 ms: the fill stays in flight while all requests arrive.
    file.chunk_delay = Some(Duration::from_millis(1));
    origin.put("/big/blob.tgz", file);
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, IMMUTABLE_TGZ), "").await;
    let http = client();
    let url = ad.artifact("gen", "big/blob.tgz");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let http = http.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let resp = http.get(&url).send().await.expect("response");
                assert_eq!(resp.status(), 200);
                sha256_hex(&resp.bytes().await.expect("body"))
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), expected);
    }
    assert_eq!(
        origin.hits("/big/blob.tgz"),
        1,
        "exactly one upstream fetch"
    );
}

#[tokio::test]
async fn truncated_upstream_body_fails_the_client_and_commits_nothing() {
    let origin = Origin::start().await;
    let body = pattern_bytes(1_000_000, 4);
    let mut cut = OriginFile::new(body.clone());
    cut.truncate_after = Some(500_000);
    origin.put("/t/half.tgz", cut);
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, IMMUTABLE_TGZ), "").await;
    let http = client();
    let url = ad.artifact("gen", "t/half.tgz");

    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let result = resp.bytes().await;
    assert!(
        result.is_err(),
        "a short body must fail the transfer, got {} bytes",
        result.map(|b| b.len()).unwrap_or(0)
    );

    // Nothing was committed: the next request goes upstream again and now gets it whole.
    origin.put("/t/half.tgz", OriginFile::new(body.clone()));
    let again = http.get(&url).send().await.unwrap();
    assert_eq!(source(&again), "remote");
    assert_eq!(again.bytes().await.unwrap(), body);
    let cached = http.get(&url).send().await.unwrap();
    assert_eq!(source(&cached), "cache");
    assert_eq!(cached.bytes().await.unwrap(), body);
    assert_eq!(origin.hits("/t/half.tgz"), 2);
    // (Empty files created ahead of use may wait there.)
    let staged: u64 = walk(&dir.path().join("store/staging"))
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert_eq!(staged, 0, "no staged bytes left behind");
    if let Some(bodies) = crate::harness::bucket_keys(dir.path(), ".body") {
        assert_eq!(
            bodies.len(),
            1,
            "only the whole body is in the bucket: {bodies:?}"
        );
    }
}

#[tokio::test]
async fn cached_objects_survive_a_restart_with_the_upstream_stopped() {
    let origin = Origin::start().await;
    let body = pattern_bytes(123_456, 5);
    origin.put("/r/keep.tgz", OriginFile::new(body.clone()));
    origin.put("/r/index.yaml", OriginFile::new("idx\n").etag("\"i\""));
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(&origin, IMMUTABLE_TGZ);
    let mut ad = Artifactd::start(dir.path(), &remotes, "").await;
    let http = client();
    for path in ["r/keep.tgz", "r/index.yaml"] {
        let resp = http.get(ad.artifact("gen", path)).send().await.unwrap();
        assert_eq!(source(&resp), "remote");
        resp.bytes().await.unwrap();
    }
    // A kill in the instant between a client's last byte and its miss's
    // commit would only cost a fetch again; this test is about what was
    // committed.
    ad.committed().await;
    ad.kill();
    origin.stop();

    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let resp = http
        .get(ad.artifact("gen", "r/keep.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(source(&resp), "cache");
    assert_eq!(resp.bytes().await.unwrap(), body);
    let index = http
        .get(ad.artifact("gen", "r/index.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(source(&index), "cache");
    assert_eq!(index.text().await.unwrap(), "idx\n");
    assert_eq!(origin.total_hits(), 2);
}

#[tokio::test]
async fn range_on_cached_object_returns_exactly_those_bytes() {
    let origin = Origin::start().await;
    let body = pattern_bytes(50_000, 6);
    origin.put("/g/r.tgz", OriginFile::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, IMMUTABLE_TGZ), "").await;
    let http = client();
    let url = ad.artifact("gen", "g/r.tgz");
    http.get(&url).send().await.unwrap().bytes().await.unwrap();

    let resp = http
        .get(&url)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(source(&resp), "cache");
    assert_eq!(resp.headers()["content-range"], "bytes 100-199/50000");
    assert_eq!(resp.bytes().await.unwrap(), body[100..200]);

    let tail = http
        .get(&url)
        .header("range", "bytes=49990-")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap(), body[49990..]);
    let beyond = http
        .get(&url)
        .header("range", "bytes=60000-")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);
    assert_eq!(origin.hits("/g/r.tgz"), 1);
}

pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test]
async fn expired_copy_is_served_while_the_upstream_is_down() {
    let origin = Origin::start().await;
    origin.put(
        "/s/index.yaml",
        OriginFile::new("stale but useful\n").etag("\"s\""),
    );
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(
        &origin,
        &format!("{IMMUTABLE_TGZ}    cache:\n      mutable_ttl: 1\n"),
    );
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let http = client();
    let url = ad.artifact("gen", "s/index.yaml");
    assert_eq!(
        crate::harness::get_text(&http, &url).await,
        "stale but useful\n"
    );
    origin.stop();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(source(&resp), "cache");
    assert_eq!(resp.text().await.unwrap(), "stale but useful\n");
    // An uncached path has nothing to fall back on: a 502, not a hang.
    let missing = http
        .get(ad.artifact("gen", "s/other.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 502);
    let reason = missing.text().await.unwrap();
    assert!(
        reason.contains("remote 'gen'") && reason.contains("refused the connection"),
        "{reason}"
    );
    assert_eq!(reason.lines().count(), 1);
}

#[tokio::test]
async fn redirects_are_followed_and_cached_under_the_requested_path() {
    let origin = Origin::start().await;
    let cdn = Origin::start().await;
    let body = pattern_bytes(200_000, 11);
    let location = format!("{}/cdn/blob?sig=abc", cdn.base_url());
    origin.put("/releases/v1/tool.tgz", OriginFile::redirect(&location));
    origin.put("/moved/tool2.tgz", OriginFile::redirect("/real/tool2.tgz"));
    origin.put("/real/tool2.tgz", OriginFile::new("same-origin hop"));
    cdn.put("/cdn/blob?sig=abc", OriginFile::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(
        &origin,
        &format!("{IMMUTABLE_TGZ}    username: u\n    password: p\n"),
    );
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let http = client();
    let url = ad.artifact("gen", "releases/v1/tool.tgz");
    let first = http.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(source(&first), "remote");
    assert_eq!(first.bytes().await.unwrap(), body);
    let second = http.get(&url).send().await.unwrap();
    assert_eq!(source(&second), "cache");
    assert_eq!(second.bytes().await.unwrap(), body);
    assert_eq!(origin.hits("/releases/v1/tool.tgz"), 1);
    assert_eq!(cdn.hits("/cdn/blob?sig=abc"), 1);
    assert!(origin.requests()[0].headers.contains_key("authorization"));
    assert!(
        !cdn.requests()[0].headers.contains_key("authorization"),
        "credentials must not follow a redirect to another host"
    );

    let same = http
        .get(ad.artifact("gen", "moved/tool2.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(same.text().await.unwrap(), "same-origin hop");
    assert_eq!(origin.hits("/real/tool2.tgz"), 1);
}

#[tokio::test]
async fn redirect_loops_end_in_an_error() {
    let origin = Origin::start().await;
    origin.put("/loop/a.tgz", OriginFile::redirect("/loop/a.tgz"));
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, IMMUTABLE_TGZ), "").await;
    let resp = client()
        .get(ad.artifact("gen", "loop/a.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(
        origin.hits("/loop/a.tgz"),
        6,
        "the first request plus five redirects"
    );
}

#[tokio::test]
async fn upstream_errors_pass_through_uncached() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, IMMUTABLE_TGZ), "").await;
    let http = client();
    for _ in 0..2 {
        let resp = http
            .get(ad.artifact("gen", "nope/missing.tgz"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(source(&resp), "remote");
        assert_eq!(resp.text().await.unwrap(), "no such file\n");
    }
    assert_eq!(origin.hits("/nope/missing.tgz"), 2);
}

/// A file the upstream labels only `application/octet-stream` is served,
/// on the miss and on every hit, with the media type its name says and a
/// `Content-Disposition` naming it; a label that says something is kept.
#[tokio::test]
async fn files_are_labelled_by_name_when_the_upstream_says_nothing() {
    let origin = Origin::start().await;
    origin.put("/l/tool.tar.gz", OriginFile::new(pattern_bytes(3_000, 5)));
    origin.put(
        "/l/notes.txt",
        OriginFile::new("x").content_type("text/markdown"),
    );
    origin.put("/l/index.yaml", OriginFile::new("entries: {}\n"));
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(
        dir.path(),
        &generic_remote(&origin, IMMUTABLE_TGZ_AND_TXT),
        "",
    )
    .await;
    let http = client();
    for expected_source in ["remote", "cache", "cache"] {
        let resp = http
            .get(ad.artifact("gen", "l/tool.tar.gz"))
            .send()
            .await
            .unwrap();
        assert_eq!(source(&resp), expected_source);
        assert_eq!(resp.headers()["content-type"], "application/gzip");
        assert_eq!(
            resp.headers()["content-disposition"],
            "attachment; filename=\"tool.tar.gz\""
        );
        assert_eq!(resp.bytes().await.unwrap(), pattern_bytes(3_000, 5));
        let resp = http
            .get(ad.artifact("gen", "l/notes.txt"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-type"], "text/markdown");
        let resp = http
            .get(ad.artifact("gen", "l/index.yaml"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-type"], "application/yaml");
    }
    assert_eq!(origin.hits("/l/tool.tar.gz"), 1);
}

const IMMUTABLE_TGZ_AND_TXT: &str =
    "    immutable_patterns: ['\\.gz$', '\\.txt$']\n    mutable_patterns: ['index\\.yaml$']\n";
