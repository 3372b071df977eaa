//! The hit fast path: hot objects answered before pingora's phases, with
//! everything a hit through the phases does (headers, 304, 206/416, HEAD,
//! patterns, freshness, flushes, the access log), and connections that
//! move between the fast path and the phases.

use crate::cache::source;
use crate::harness::{
    client, generic_remote, get_bytes, pattern_bytes, raw_request, remote_metric, Artifactd,
    Origin, OriginFile,
};
use std::time::Duration;

const PATTERNS: &str =
    "    immutable_patterns: ['\\.tgz$']\n    mutable_patterns: ['index\\.yaml$']\n";
const LAST_MODIFIED: &str = "Tue, 01 Dec 2026 10:00:00 GMT";
const PATH: &str = "pkg/a-1.0.tgz";

async fn fast_hits(ad: &Artifactd) -> u64 {
    remote_metric(ad, "artifactd_fast_path_hits_total", "gen").await
}

/// Body bytes sent for remote `gen`, from wherever they came.
async fn served_bytes(ad: &Artifactd) -> u64 {
    crate::harness::metric_sum(ad, "artifactd_served_bytes_total", &[("remote", "gen")]).await
}

/// A 1 KiB immutable file with validators, cached and hot on `ad`.
fn hot_file(origin: &Origin) -> Vec<u8> {
    let body = pattern_bytes(1024, 23);
    let mut file = OriginFile::new(body.clone())
        .etag("\"e1\"")
        .content_type("application/gzip");
    file.last_modified = Some(LAST_MODIFIED.to_string());
    origin.put(&format!("/{PATH}"), file);
    body
}

/// Requests `url` until the fast path answers (the first hit after a
/// restart loads the record through the phases).
async fn until_fast(ad: &Artifactd, url: &str) {
    let http = client();
    let before = fast_hits(ad).await;
    for _ in 0..3 {
        get_bytes(&http, url).await;
    }
    assert!(
        fast_hits(ad).await > before,
        "no fast hit:\n{}",
        ad.log_text()
    );
}

/// The headers that stay the same from one hit to the next.
fn stable_headers(resp: &reqwest::Response) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter(|(name, _)| !["age", "date", "x-request-id"].contains(&name.as_str()))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_string()))
        .collect();
    headers.sort();
    headers
}

#[tokio::test]
async fn a_hot_hit_is_the_response_the_phases_send() {
    let origin = Origin::start().await;
    let body = hot_file(&origin);
    let remotes = generic_remote(&origin, PATTERNS);
    let http = client();

    // The same hit from a node whose every request takes the phases.
    let phases_dir = tempfile::tempdir().unwrap();
    let phases =
        Artifactd::start(phases_dir.path(), &remotes, "cache:\n  fast_path: false\n").await;
    let phases_url = phases.artifact("gen", PATH);
    for _ in 0..3 {
        get_bytes(&http, &phases_url).await;
    }
    let through_phases = http.get(&phases_url).send().await.unwrap();
    assert_eq!(source(&through_phases), "cache");
    assert_eq!(fast_hits(&phases).await, 0);
    let expected = stable_headers(&through_phases);
    assert_eq!(through_phases.bytes().await.unwrap(), body);

    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let url = ad.artifact("gen", PATH);
    // Read to the end: until the fill's last byte is sent, the object is
    // not committed and a request on another connection follows the fill.
    let miss = http.get(&url).send().await.unwrap();
    assert_eq!(source(&miss), "remote");
    assert_eq!(miss.bytes().await.unwrap(), body);

    let fast = http
        .get(&url)
        .header("x-request-id", "fast-1")
        .send()
        .await
        .unwrap();
    assert_eq!(fast_hits(&ad).await, 1);
    assert_eq!(fast.status(), 200);
    assert_eq!(stable_headers(&fast), expected);
    let header = |name: &str| fast.headers()[name].to_str().unwrap().to_string();
    assert_eq!(header("x-artifact-source"), "cache");
    assert_eq!(header("content-length"), "1024");
    assert_eq!(header("content-type"), "application/gzip");
    assert_eq!(header("etag"), "\"e1\"");
    assert_eq!(header("last-modified"), LAST_MODIFIED);
    assert_eq!(header("accept-ranges"), "bytes");
    assert_eq!(header("x-request-id"), "fast-1");
    assert!(header("age").parse::<u64>().unwrap() < 600);
    assert!(httpdate::parse_http_date(&header("date")).is_ok());
    assert_eq!(fast.bytes().await.unwrap(), body);

    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(stable_headers(&head), expected);
    assert!(head.bytes().await.unwrap().is_empty());
    assert_eq!(fast_hits(&ad).await, 2);

    // Counted and logged as hits, with the client's request id.
    let hits = crate::harness::requests_from(&ad, "gen", "hit").await;
    assert_eq!(hits, 2);
    let served = served_bytes(&ad).await;
    assert_eq!(served, 2 * 1024);
    crate::harness::log_says(&ad, "fast-1").await;
    let line = ad
        .log_text()
        .lines()
        .find(|l| l.contains("fast-1"))
        .unwrap()
        .to_string();
    let logged = ["source=hit", "status=200", "bytes=1024", PATH];
    assert!(logged.iter().all(|part| line.contains(part)), "{line}");
    assert_eq!(origin.hits(&format!("/{PATH}")), 2, "once per node");
}

#[tokio::test]
async fn validators_and_ranges_are_answered_on_the_fast_path() {
    let origin = Origin::start().await;
    let body = hot_file(&origin);
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, PATTERNS), "").await;
    let http = client();
    let url = ad.artifact("gen", PATH);
    until_fast(&ad, &url).await;
    let get = |headers: &[(&str, &str)]| {
        let mut request = http.get(&url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move { request.send().await.unwrap() }
    };
    let before = fast_hits(&ad).await;

    let not_modified = get(&[("if-none-match", "\"e1\"")]).await;
    assert_eq!(not_modified.status(), 304);
    assert_eq!(not_modified.headers()["etag"], "\"e1\"");
    assert!(not_modified.headers().get("content-length").is_none());
    assert!(not_modified.bytes().await.unwrap().is_empty());
    let since = get(&[("if-modified-since", LAST_MODIFIED)]).await;
    assert_eq!(since.status(), 304);
    let changed = get(&[("if-none-match", "\"e0\"")]).await;
    assert_eq!(changed.status(), 200);
    assert_eq!(changed.bytes().await.unwrap(), body);

    let part = get(&[("range", "bytes=10-19")]).await;
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 10-19/1024");
    assert_eq!(part.headers()["x-artifact-source"], "cache");
    assert_eq!(part.bytes().await.unwrap(), body[10..20]);
    let beyond = get(&[("range", "bytes=5000-")]).await;
    assert_eq!(beyond.status(), 416);
    assert_eq!(beyond.headers()["content-range"], "bytes */1024");
    let stale_range = get(&[("range", "bytes=0-9"), ("if-range", "\"e0\"")]).await;
    assert_eq!(stale_range.status(), 200);
    assert_eq!(stale_range.bytes().await.unwrap(), body);
    assert_eq!(fast_hits(&ad).await, before + 6);

    // Several ranges make a multipart body: the phases write that one.
    let multi = get(&[("range", "bytes=0-1,5-6")]).await;
    assert_eq!(multi.status(), 206);
    let content_type = multi.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("multipart/byteranges"),
        "{content_type}"
    );
    assert_eq!(fast_hits(&ad).await, before + 6);
    assert_eq!(origin.hits(&format!("/{PATH}")), 1);
}

#[tokio::test]
async fn refusals_and_expired_objects_leave_the_fast_path() {
    let origin = Origin::start().await;
    origin.put("/pkg/a.zip", OriginFile::new("zip"));
    origin.put("/pkg/index.yaml", OriginFile::new("v1\n").etag("\"v1\""));
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(
        &origin,
        &format!("{PATTERNS}    check_mutable_updates: true\n    cache:\n      mutable_ttl: 1\n"),
    );
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let http = client();

    for _ in 0..5 {
        let denied = http
            .get(ad.artifact("gen", "pkg/a.zip"))
            .send()
            .await
            .unwrap();
        assert_eq!(denied.status(), 403);
    }
    assert_eq!(origin.total_hits(), 0);
    assert_eq!(fast_hits(&ad).await, 0);

    let url = ad.artifact("gen", "pkg/index.yaml");
    until_fast(&ad, &url).await;
    let fresh = fast_hits(&ad).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let expired = http.get(&url).send().await.unwrap();
    assert_eq!(source(&expired), "cache");
    assert_eq!(expired.text().await.unwrap(), "v1\n");
    assert_eq!(
        fast_hits(&ad).await,
        fresh,
        "an expired copy left the fast path"
    );
    let requests = origin.requests();
    assert_eq!(requests.len(), 2, "revalidated once");
    assert_eq!(requests[1].headers["if-none-match"], "\"v1\"");
    // Revalidated, it is fresh and fast again.
    let again = http.get(&url).send().await.unwrap();
    assert_eq!(again.text().await.unwrap(), "v1\n");
    assert_eq!(fast_hits(&ad).await, fresh + 1);
    assert_eq!(origin.requests().len(), 2);
}

#[tokio::test]
async fn a_flushed_or_deleted_hot_object_is_never_served_again() {
    let origin = Origin::start().await;
    hot_file(&origin);
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, PATTERNS), "").await;
    let http = client();
    let url = ad.artifact("gen", PATH);
    let path = format!("/{PATH}");
    until_fast(&ad, &url).await;

    let second = pattern_bytes(1024, 24);
    origin.put(&path, OriginFile::new(second.clone()));
    let flushed = http.put(ad.url("/cache/flush?remote=gen")).send().await;
    assert_eq!(flushed.unwrap().status(), 200);
    let fast_before = fast_hits(&ad).await;
    let refetched = http.get(&url).send().await.unwrap();
    assert_eq!(source(&refetched), "remote");
    assert_eq!(refetched.bytes().await.unwrap(), second);
    assert_eq!(fast_hits(&ad).await, fast_before);
    assert_eq!(origin.hits(&path), 2);
    until_fast(&ad, &url).await;
    for _ in 0..20 {
        assert_eq!(get_bytes(&http, &url).await, second);
    }
    assert_eq!(origin.hits(&path), 2, "cached again after the flush");

    let third = pattern_bytes(1024, 25);
    origin.put(&path, OriginFile::new(third.clone()));
    let deleted = http
        .delete(ad.url(&format!("/api/v1/cache/gen/{PATH}")))
        .send()
        .await;
    assert_eq!(deleted.unwrap().status(), 200);
    let refetched = http.get(&url).send().await.unwrap();
    assert_eq!(source(&refetched), "remote");
    assert_eq!(refetched.bytes().await.unwrap(), third);
    let cached = http.get(&url).send().await.unwrap();
    assert_eq!(source(&cached), "cache");
    assert_eq!(cached.bytes().await.unwrap(), third);
    assert_eq!(origin.hits(&path), 3);
}

#[tokio::test]
async fn connections_move_between_the_fast_path_and_the_phases() {
    let origin = Origin::start().await;
    let text = "hot text body\n".repeat(64);
    origin.put(&format!("/{PATH}"), OriginFile::new(text.clone()));
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, PATTERNS), "").await;
    let url = ad.artifact("gen", PATH);
    until_fast(&ad, &url).await;
    let before = fast_hits(&ad).await;
    let target = url
        .split_once("127.0.0.1")
        .unwrap()
        .1
        .split_once('/')
        .unwrap()
        .1;

    // Pipelined on one connection: hit, a request for the phases, hit.
    let hit = format!("GET /{target} HTTP/1.1\r\nHost: a\r\n\r\n");
    let last = format!("GET /{target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let pipelined = format!("{hit}GET /health HTTP/1.1\r\nHost: a\r\n\r\n{last}");
    let addr = url.split('/').nth(2).unwrap().parse().unwrap();
    let (status, response) = raw_request(addr, pipelined.as_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(response.matches("HTTP/1.1 200").count(), 3, "{response}");
    assert_eq!(response.matches(text.as_str()).count(), 2);
    assert!(response.contains("\"status\""), "{response}");
    let health_at = response.find("\"status\"").unwrap();
    assert!(response.find(text.as_str()).unwrap() < health_at);
    assert!(response.rfind(text.as_str()).unwrap() > health_at);
    assert_eq!(fast_hits(&ad).await, before + 2);

    // HTTP/1.0 without keep-alive: answered, then closed.
    let old = format!("GET /{target} HTTP/1.0\r\n\r\n");
    let (status, response) = raw_request(addr, old.as_bytes()).await;
    assert_eq!(status, 200);
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
    assert!(response.ends_with(text.as_str()));
    assert_eq!(fast_hits(&ad).await, before + 3);
    assert_eq!(origin.hits(&format!("/{PATH}")), 1);
}

#[tokio::test]
async fn a_hot_body_written_after_its_head_arrives_whole() {
    let origin = Origin::start().await;
    // Held in memory (under cache.memory_body_max), too large to copy.
    let body = pattern_bytes(60 * 1024, 26);
    origin.put(&format!("/{PATH}"), OriginFile::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, PATTERNS), "").await;
    let http = client();
    let url = ad.artifact("gen", PATH);
    until_fast(&ad, &url).await;
    let before = fast_hits(&ad).await;

    let whole = http.get(&url).send().await.unwrap();
    assert_eq!(whole.headers()["content-length"], "61440");
    assert_eq!(whole.bytes().await.unwrap(), body);
    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], "61440");
    assert!(head.bytes().await.unwrap().is_empty());
    let part = http
        .get(&url)
        .header("range", "bytes=30000-59999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap(), body[30000..60000]);
    assert_eq!(fast_hits(&ad).await, before + 3);
    assert_eq!(origin.hits(&format!("/{PATH}")), 1);
}

/// `url` fetched with curl over HTTP/1.1 into `out`, with curl's extra
/// `args`; the HTTP status.
async fn curl_into(url: &str, out: &std::path::Path, args: &[&str]) -> String {
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["-sS", "--http1.1", "-o"])
        .arg(out)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url);
    let (ok, text) = crate::harness::run_client(&mut command).await;
    assert!(ok, "curl {url}: {text}");
    text.trim().to_string()
}

#[tokio::test]
async fn a_body_file_is_sent_from_the_fast_path_over_plain_and_tls() {
    let origin = Origin::start().await;
    // Past cache.memory_body_max, so it lives in a body file; more than
    // one of the kernel's send windows, and not a multiple of one.
    let body = pattern_bytes(9 * 1024 * 1024 + 123, 27);
    origin.put(
        &format!("/{PATH}"),
        OriginFile::new(body.clone()).etag("\"big\""),
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::harness::tls::TestCa::new(&dir.path().join("pki"));
    let options = crate::harness::artifactd::Options {
        tls: Some(ca.issue("edge")),
        ..Default::default()
    };
    let remotes = generic_remote(&origin, PATTERNS);
    let ad = Artifactd::start_with(dir.path(), &remotes, "", options).await;
    let http = client();
    let url = ad.artifact("gen", PATH);
    let first = http.get(&url).send().await.unwrap();
    assert_eq!(source(&first), "remote");
    assert_eq!(first.bytes().await.unwrap(), body);

    let whole = http.get(&url).send().await.unwrap();
    assert_eq!(source(&whole), "cache");
    assert_eq!(whole.headers()["content-length"], body.len().to_string());
    assert_eq!(whole.bytes().await.unwrap(), body);
    assert_eq!(fast_hits(&ad).await, 1);
    let tail_range = format!("bytes={}-", body.len() - 5000);
    let cases: [(&str, &str, u16, &[u8]); 4] = [
        (
            "range",
            "bytes=4194000-8389000",
            206,
            &body[4194000..=8389000],
        ),
        ("range", &tail_range, 206, &body[body.len() - 5000..]),
        ("if-none-match", "\"big\"", 304, b""),
        ("range", "bytes=99999999-", 416, b""),
    ];
    for (name, value, status, expected) in cases {
        let resp = http.get(&url).header(name, value).send().await.unwrap();
        assert_eq!(resp.status(), status, "{name}: {value}");
        assert!(resp.bytes().await.unwrap() == expected, "{name}: {value}");
    }
    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], body.len().to_string());
    assert!(head.bytes().await.unwrap().is_empty());
    assert_eq!(fast_hits(&ad).await, 6);

    // Over TLS the file is read and written instead of sent by the kernel.
    let tls_port = ad.tls_addr.unwrap().port();
    let https = format!("https://localhost:{tls_port}/api/v1/remote/gen/{PATH}");
    let ca_file = ca.cert.to_string_lossy().to_string();
    let out = dir.path().join("over-tls");
    assert_eq!(
        curl_into(&https, &out, &["--cacert", &ca_file]).await,
        "200"
    );
    assert!(std::fs::read(&out).unwrap() == body);
    let range = ["--cacert", &ca_file, "-r", "1000-5000000"];
    assert_eq!(curl_into(&https, &out, &range).await, "206");
    assert!(std::fs::read(&out).unwrap() == body[1000..=5000000]);
    assert_eq!(fast_hits(&ad).await, 8);
    let served = served_bytes(&ad).await;
    let ranges = (8389000 - 4194000 + 1) + 5000 + (5000000 - 1000 + 1);
    assert_eq!(served as usize, 3 * body.len() + ranges);
    assert_eq!(origin.hits(&format!("/{PATH}")), 1);
}

#[tokio::test]
async fn after_a_restart_the_first_hit_is_answered_on_the_fast_path() {
    let origin = Origin::start().await;
    let small = hot_file(&origin);
    let big = pattern_bytes(200 * 1024, 28);
    origin.put("/pkg/big-1.0.tgz", OriginFile::new(big.clone()));
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(&origin, PATTERNS);
    let mut ad = Artifactd::start(dir.path(), &remotes, "").await;
    let http = client();
    for (path, body) in [(PATH, &small), ("pkg/big-1.0.tgz", &big)] {
        assert_eq!(&get_bytes(&http, &ad.artifact("gen", path)).await, body);
    }
    ad.committed().await;
    ad.kill();

    // Nothing is in the hot tier: the record is read from the page cache
    // (where the fill left it) by the fast path itself.
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    for (path, body) in [(PATH, &small), ("pkg/big-1.0.tgz", &big)] {
        let resp = http.get(ad.artifact("gen", path)).send().await.unwrap();
        assert_eq!(source(&resp), "cache");
        assert_eq!(&resp.bytes().await.unwrap().to_vec(), body);
    }
    assert_eq!(fast_hits(&ad).await, 2, "{}", ad.log_text());
    assert_eq!(origin.total_hits(), 2);
}

/// An audit row names the body its client received. A hot hit keeps the
/// digest of the copy it served when another copy has replaced it before
/// the rows are written (every 5 s), and the two copies are two rows.
#[tokio::test]
async fn the_audit_trail_names_the_copy_each_delivery_received() {
    let origin = Origin::start().await;
    let first = hot_file(&origin);
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, PATTERNS), "").await;
    let url = ad.artifact("gen", PATH);
    until_fast(&ad, &url).await;
    let probe = reqwest::Client::builder()
        .user_agent("audit-probe/1")
        .no_proxy()
        .build()
        .unwrap();

    let fast_before = fast_hits(&ad).await;
    assert_eq!(get_bytes(&probe, &url).await, first);
    assert_eq!(fast_hits(&ad).await, fast_before + 1, "a fast hit");
    let second = pattern_bytes(1024, 26);
    origin.put(&format!("/{PATH}"), OriginFile::new(second.clone()));
    let deleted = probe
        .delete(ad.url(&format!("/api/v1/cache/gen/{PATH}")))
        .send()
        .await;
    assert_eq!(deleted.unwrap().status(), 200);
    for _ in 0..2 {
        assert_eq!(get_bytes(&probe, &url).await, second);
    }

    let by_digest = |rows: &[serde_json::Value], body: &[u8]| -> i64 {
        let digest = crate::harness::sha256_hex(body);
        rows.iter()
            .filter(|row| row["sha256"] == digest.as_str())
            .map(|row| row["deliveries"].as_i64().unwrap())
            .sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let listed = crate::harness::get_json(&client(), ad.url("/api/v1/audit?remote=gen")).await;
        let rows: Vec<serde_json::Value> = (listed["records"].as_array().unwrap().iter())
            .filter(|row| row["user_agent"] == "audit-probe/1")
            .cloned()
            .collect();
        let delivered: i64 = rows.iter().map(|r| r["deliveries"].as_i64().unwrap()).sum();
        if delivered >= 3 || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(by_digest(&rows, &first), 1, "{rows:#?}");
    assert_eq!(by_digest(&rows, &second), 2, "{rows:#?}");
    for row in &rows {
        assert_eq!(row["path"], PATH, "{row}");
    }
}
