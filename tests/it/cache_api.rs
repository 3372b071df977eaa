//! The cache API (`/api/v1/cache`), flushing by pattern, re-hashing stored
//! bodies, `POST /cache-artifact`, and the CLI that drives them
//! (`artifactd warm`, `artifactd cache ls|du|rm|verify`).

use crate::cache::walk;
use crate::harness::{
    client, generic_remote, pattern_bytes, sha256_hex, status, Artifactd, Origin, OriginFile,
};
use serde_json::Value;
use std::time::{Duration, Instant};

pub const ADMIN: &str = "tokens:\n  admin: \"adm-cache-api\"\n";
pub const TOKEN: &str = "adm-cache-api";

pub async fn admin_json(ad: &Artifactd, method: reqwest::Method, path: &str) -> Value {
    let resp = client()
        .request(method, ad.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

/// Polls a job until it is no longer running.
pub async fn finished_job(ad: &Artifactd, started: &Value) -> Value {
    let url = started["status_url"]
        .as_str()
        .expect("status_url")
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = admin_json(ad, reqwest::Method::GET, &url).await;
        if status["state"] != "running" {
            return status;
        }
        assert!(Instant::now() < deadline, "job still running: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get_body(ad: &Artifactd, path: &str) -> bytes::Bytes {
    let resp = client().get(ad.artifact("gen", path)).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.bytes().await.unwrap()
}

/// Hits are counted in memory and reach the catalog later (a walk over the
/// index, once an hour per entry); a graceful stop reports what is still
/// counted, so the catalog holds every hit and the last use after a
/// restart, whose index starts with none pending.
#[tokio::test]
async fn hits_and_the_last_use_reach_the_catalog_before_a_graceful_stop() {
    let origin = Origin::start().await;
    origin.put("/a/1.tgz", OriginFile::new(pattern_bytes(4_000, 1)));
    let dir = tempfile::tempdir().unwrap();
    let mut ad = Artifactd::start(dir.path(), &generic_remote(&origin, ""), ADMIN).await;
    get_body(&ad, "a/1.tgz").await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let before_hits = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for _ in 0..3 {
        assert_eq!(get_body(&ad, "a/1.tgz").await, pattern_bytes(4_000, 1));
    }
    assert_eq!(origin.hits("/a/1.tgz"), 1, "three hits from the cache");
    ad.signal(libc::SIGTERM);
    assert!(ad.exited_within(Duration::from_secs(20)).await.is_some());

    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, ""), ADMIN).await;
    let page = admin_json(&ad, reqwest::Method::GET, "/api/v1/cache?remote=gen").await;
    let row = &page["artifacts"][0];
    assert_eq!(row["path"], "a/1.tgz", "{page}");
    assert_eq!(row["hits"], 3, "{page}");
    let last_use = row["last_access"].as_u64().unwrap();
    assert!(
        last_use >= before_hits,
        "{last_use} < {before_hits}: {page}"
    );
    assert!(row["fetched_at"].as_u64().unwrap() < before_hits, "{page}");
}

#[tokio::test]
async fn lists_pages_inspects_deletes_and_flushes_by_pattern() {
    let origin = Origin::start().await;
    let files = [("a/1.tgz", 1), ("a/2.tgz", 2), ("b/3.tgz", 3)];
    for (path, seed) in files {
        origin.put(
            &format!("/{path}"),
            OriginFile::new(pattern_bytes(70_000, seed)),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, ""), ADMIN).await;
    for (path, _) in files {
        get_body(&ad, path).await;
    }
    for _ in 0..2 {
        get_body(&ad, "a/1.tgz").await;
    }

    assert_eq!(status(client().get(ad.url("/api/v1/cache"))).await, 401);
    let page = admin_json(
        &ad,
        reqwest::Method::GET,
        "/api/v1/cache?remote=gen&limit=2",
    )
    .await;
    let rows = page["artifacts"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["path"], "a/1.tgz");
    assert_eq!(rows[0]["hits"], 2, "two hits after the miss: {page}");
    assert_eq!(rows[0]["size"], 70_000);
    assert_eq!(rows[0]["sha256"], sha256_hex(&pattern_bytes(70_000, 1)));
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = admin_json(
        &ad,
        reqwest::Method::GET,
        &format!("/api/v1/cache?remote=gen&limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(next["artifacts"].as_array().unwrap().len(), 1);
    assert_eq!(next["artifacts"][0]["path"], "b/3.tgz");
    assert!(next["next_cursor"].is_null());
    let prefixed = admin_json(&ad, reqwest::Method::GET, "/api/v1/cache?prefix=a/").await;
    assert_eq!(prefixed["count"], 2);
    // The reference system's discovery route lists the same catalog.
    let listed = admin_json(&ad, reqwest::Method::GET, "/api/v1/cache?remote=gen").await;
    let discovered = admin_json(&ad, reqwest::Method::GET, "/api/v1/artifacts?remote=gen").await;
    assert_eq!(discovered["artifacts"].as_array().map(Vec::len), Some(3));
    assert_eq!(discovered["artifacts"], listed["artifacts"]);
    let usage = admin_json(&ad, reqwest::Method::GET, "/api/v1/cache/usage").await;
    assert_eq!(usage["objects"], 3);
    assert_eq!(usage["bytes"], 210_000);
    let one = admin_json(&ad, reqwest::Method::GET, "/api/v1/cache/gen/a/2.tgz").await;
    assert_eq!(
        one["artifact"]["sha256"],
        sha256_hex(&pattern_bytes(70_000, 2))
    );

    let removed = admin_json(&ad, reqwest::Method::DELETE, "/api/v1/cache/gen/a/1.tgz").await;
    assert_eq!(removed["removed"]["entries"], 1);
    let again = client()
        .delete(ad.url("/api/v1/cache/gen/a/1.tgz"))
        .bearer_auth(TOKEN);
    assert_eq!(status(again).await, 404);
    assert_eq!(get_body(&ad, "a/1.tgz").await, pattern_bytes(70_000, 1));
    assert_eq!(origin.hits("/a/1.tgz"), 2, "fetched again after the delete");

    let flushed = admin_json(
        &ad,
        reqwest::Method::PUT,
        "/cache/flush?remote=gen&pattern=%5Eb/",
    )
    .await;
    assert_eq!(flushed["flushed"]["objects_deleted"], 1);
    get_body(&ad, "b/3.tgz").await;
    get_body(&ad, "a/2.tgz").await;
    assert_eq!(origin.hits("/b/3.tgz"), 2, "the matching object went");
    assert_eq!(origin.hits("/a/2.tgz"), 1, "the others stayed");
    let bad = client()
        .put(ad.url("/cache/flush?remote=gen&pattern=("))
        .bearer_auth(TOKEN);
    assert_eq!(status(bad).await, 400);
}

#[tokio::test]
async fn verify_finds_a_flipped_byte_and_repair_refetches_it() {
    let origin = Origin::start().await;
    let body = pattern_bytes(100_000, 9);
    origin.put("/v.bin", OriginFile::new(body.clone()));
    origin.put("/w.bin", OriginFile::new(pattern_bytes(90_000, 8)));
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, ""), ADMIN).await;
    get_body(&ad, "v.bin").await;
    get_body(&ad, "w.bin").await;
    let started = admin_json(&ad, reqwest::Method::POST, "/api/v1/cache/verify").await;
    let clean = finished_job(&ad, &started).await;
    assert_eq!(
        (
            clean["state"].as_str(),
            clean["ok"].as_u64(),
            clean["failed_count"].as_u64()
        ),
        (Some("done"), Some(2), Some(0)),
        "{clean}"
    );

    let stored = walk(&dir.path().join("store"))
        .into_iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == 100_000))
        .expect("the body file");
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[50_000] ^= 0x01;
    std::fs::write(&stored, bytes).unwrap();

    let started = admin_json(
        &ad,
        reqwest::Method::POST,
        "/api/v1/cache/verify?remote=gen&repair=true",
    )
    .await;
    let found = finished_job(&ad, &started).await;
    assert_eq!(found["failed_count"], 1, "{found}");
    assert_eq!(found["failed"][0]["path"], "gen/v.bin");
    assert!(
        found["failed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("corrupt"),
        "{found}"
    );
    assert_eq!(
        get_body(&ad, "v.bin").await,
        body,
        "repaired: fetched again"
    );
    assert_eq!(origin.hits("/v.bin"), 2);
}

#[tokio::test]
async fn cache_artifact_fetches_the_matching_release_assets_and_nothing_else() {
    let origin = Origin::start().await;
    let base = origin.base_url();
    let assets = [
        "v1.0/tool_linux_amd64.tar.gz",
        "v1.0/tool_darwin_arm64.tar.gz",
        "v1.0/checksums.txt",
        "v1.1/tool_linux_amd64.tar.gz",
        "v1.1/tool_windows_amd64.zip",
    ];
    for (i, asset) in assets.iter().enumerate() {
        let path = format!("/acme/tool/releases/download/{asset}");
        origin.put(&path, OriginFile::new(pattern_bytes(20_000, i as u64)));
    }
    let release = |tag: &str| {
        let urls: Vec<Value> = assets
            .iter()
            .filter(|a| a.starts_with(tag))
            .map(|a| serde_json::json!({"name": a, "browser_download_url": format!("{base}/acme/tool/releases/download/{a}")}))
            .collect();
        serde_json::json!({"tag_name": tag, "assets": urls})
    };
    let listing = serde_json::json!([release("v1.1"), release("v1.0")]).to_string();
    origin.put(
        "/api/v3/repos/acme/tool/releases?per_page=100",
        OriginFile::new(listing).content_type("application/json"),
    );
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, ""), ADMIN).await;

    let request =
        serde_json::json!({"remote": "gen", "project": "acme/tool", "pattern": "linux_amd64"});
    let anonymous = client().post(ad.url("/cache-artifact")).json(&request);
    assert_eq!(status(anonymous).await, 401);
    let resp = client()
        .post(ad.url("/cache-artifact"))
        .bearer_auth(TOKEN)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let started: Value = resp.json().await.unwrap();
    let done = finished_job(&ad, &started).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(
        (done["total"].as_u64(), done["ok"].as_u64()),
        (Some(2), Some(2)),
        "{done}"
    );
    for (i, asset) in assets.iter().enumerate() {
        let path = format!("/acme/tool/releases/download/{asset}");
        let expected = usize::from(asset.contains("linux_amd64"));
        assert_eq!(origin.hits(&path), expected, "{asset}");
        if expected == 1 {
            let resp = client()
                .get(ad.artifact("gen", &path[1..]))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.headers()["x-artifact-source"], "cache");
            assert_eq!(resp.bytes().await.unwrap(), pattern_bytes(20_000, i as u64));
        }
    }
    let listed = admin_json(&ad, reqwest::Method::GET, "/api/v1/cache?remote=gen").await;
    assert_eq!(listed["count"], 2, "nothing else was cached: {listed}");
    let bad = client()
        .post(ad.url("/cache-artifact"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"remote": "gen", "project": "../x", "pattern": "a"}));
    assert_eq!(status(bad).await, 400);
}

#[tokio::test]
async fn warm_fills_fifty_paths_with_four_workers_and_resumes() {
    let origin = Origin::start().await;
    let paths: Vec<String> = (0..50).map(|i| format!("pkg/file-{i:02}.bin")).collect();
    for (i, path) in paths.iter().enumerate() {
        origin.put(
            &format!("/{path}"),
            OriginFile::new(pattern_bytes(30_000 + i, i as u64)),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, ""), ADMIN).await;
    let list = dir.path().join("paths.txt");
    std::fs::write(&list, format!("# fifty files\n{}\n", paths.join("\n"))).unwrap();
    let state = dir.path().join("warm.state");
    let (list_arg, state_arg) = (
        list.to_string_lossy().to_string(),
        state.to_string_lossy().to_string(),
    );
    let args = [
        "warm",
        "--remote",
        "gen",
        "--workers",
        "4",
        "--list",
        &list_arg,
        "--state",
        &state_arg,
    ];
    let (code, stdout, stderr) = crate::harness::artifactd_cli(&ad, None, &args).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("warmed 50 objects"), "{stdout}");
    assert_eq!(
        stderr.matches("warmed /api/v1/remote/gen/pkg/").count(),
        50,
        "progress lines: {stderr}"
    );
    for (i, path) in paths.iter().enumerate() {
        assert_eq!(origin.hits(&format!("/{path}")), 1, "{path}");
        let resp = client().get(ad.artifact("gen", path)).send().await.unwrap();
        assert_eq!(resp.headers()["x-artifact-source"], "cache", "{path}");
        assert_eq!(
            resp.bytes().await.unwrap(),
            pattern_bytes(30_000 + i, i as u64)
        );
    }

    // A second run with the same state file does nothing; a missing path
    // fails the run and is listed.
    let (code, stdout, _) =
        crate::harness::artifactd_cli(&ad, None, &[&args[..], &["pkg/missing.bin"]].concat()).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("50 already done") && stdout.contains("1 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("failed: /api/v1/remote/gen/pkg/missing.bin: 404"),
        "{stdout}"
    );
    assert_eq!(origin.total_hits(), 51, "nothing warmed twice");
}

#[tokio::test]
async fn cache_commands_list_measure_remove_and_verify() {
    let origin = Origin::start().await;
    for (path, seed) in [("x/one.bin", 1), ("x/two.bin", 2)] {
        origin.put(
            &format!("/{path}"),
            OriginFile::new(pattern_bytes(80_000, seed)),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, ""), ADMIN).await;
    get_body(&ad, "x/one.bin").await;
    get_body(&ad, "x/two.bin").await;
    let cli = |args: &'static [&'static str]| crate::harness::artifactd_cli(&ad, Some(TOKEN), args);

    let (code, _, stderr) = crate::harness::artifactd_cli(&ad, None, &["cache", "ls"]).await;
    assert_eq!(code, 2, "no token: {stderr}");
    assert!(stderr.contains("admin token"), "{stderr}");
    let (code, stdout, _) = cli(&["cache", "ls", "--json"]).await;
    assert_eq!(code, 0);
    let rows: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{stdout}");
    let (_, stdout, _) = cli(&["cache", "ls", "--remote", "gen"]).await;
    assert!(
        stdout.contains("gen/x/one.bin") && stdout.contains("78.12 KiB"),
        "{stdout}"
    );
    let (_, stdout, _) = cli(&["cache", "du"]).await;
    assert!(stdout.contains("2 objects  gen"), "{stdout}");

    let (code, stdout, _) = cli(&["cache", "verify"]).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("verified 2 objects") && stdout.contains("0 damaged"),
        "{stdout}"
    );
    let stored = walk(&dir.path().join("store"))
        .into_iter()
        .find(|p| {
            std::fs::read(p).is_ok_and(|b| b.len() == 80_000 && b == pattern_bytes(80_000, 2))
        })
        .expect("the body of two.bin");
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[12_345] ^= 0x80;
    std::fs::write(&stored, bytes).unwrap();
    let (code, stdout, _) = cli(&["cache", "verify", "--remote", "gen"]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("1 damaged") && stdout.contains("damaged: gen/x/two.bin"),
        "{stdout}"
    );

    let (code, stdout, _) = cli(&["cache", "rm", "--remote", "gen", "x/one.bin"]).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("removed gen/x/one.bin"), "{stdout}");
    let (code, stdout, _) = cli(&["cache", "rm", "--remote", "gen", "x/one.bin"]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("not cached: gen/x/one.bin"), "{stdout}");
}

/// A script written for the reference's flush: `cache_type=index` drops
/// only the mutable paths, `files` everything, and the answer carries
/// `.flushed.operations`.
#[tokio::test]
async fn flush_by_cache_type_answers_in_the_reference_shape() {
    let origin = Origin::start().await;
    origin.put("/index.yaml", OriginFile::new(pattern_bytes(900, 1)));
    origin.put("/c/a.tgz", OriginFile::new(pattern_bytes(30_000, 2)));
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(&origin, "    mutable_patterns: ['index\\.yaml$']\n");
    let ad = Artifactd::start(dir.path(), &remotes, ADMIN).await;
    let fetch_both = || async {
        assert_eq!(get_body(&ad, "index.yaml").await, pattern_bytes(900, 1));
        assert_eq!(get_body(&ad, "c/a.tgz").await, pattern_bytes(30_000, 2));
    };
    fetch_both().await;
    fetch_both().await;
    assert_eq!(origin.hits("/index.yaml"), 1, "a fresh copy is kept");

    let flushed = admin_json(
        &ad,
        reqwest::Method::PUT,
        "/cache/flush?remote=gen&cache_type=index",
    )
    .await;
    let operations = flushed["flushed"]["operations"].as_array().unwrap();
    assert_eq!(operations.len(), 1, "{flushed}");
    let operation = operations[0].as_str().unwrap();
    assert!(operation.starts_with("Deleted 1 "), "{operation}");
    assert!(operation.contains("remote 'gen'"), "{operation}");
    assert_eq!(flushed["flushed"]["cache_type"], "index");
    fetch_both().await;
    assert_eq!(origin.hits("/index.yaml"), 2, "the index file went");
    assert_eq!(origin.hits("/c/a.tgz"), 1, "the artifact stayed");

    let flushed = admin_json(&ad, reqwest::Method::PUT, "/cache/flush?cache_type=files").await;
    assert!(flushed["flushed"]["operations"][0]
        .as_str()
        .unwrap()
        .starts_with("Deleted "));
    fetch_both().await;
    assert_eq!(origin.hits("/index.yaml"), 3);
    assert_eq!(origin.hits("/c/a.tgz"), 2, "files takes everything");

    let bad = client()
        .put(ad.url("/cache/flush?cache_type=bodies"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let text = bad.text().await.unwrap();
    assert!(text.contains("all, files or index"), "{text}");
}
