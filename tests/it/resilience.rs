//! Resilience and supply-chain policy: quarantine of new artifacts, negative
//! caching of missing mutable files.

use crate::harness::{client, generic_remote, Artifactd, Origin, OriginFile};
use std::time::{Duration, SystemTime};

fn dated(body: &str, age: Option<Duration>) -> OriginFile {
    let mut file = OriginFile::new(body.to_string());
    file.last_modified = age.map(|age| httpdate::fmt_http_date(SystemTime::now() - age));
    file
}

const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test]
async fn quarantine_holds_new_immutable_artifacts_only() {
    let origin = Origin::start().await;
    let published = SystemTime::now() - DAY;
    let mut new = OriginFile::new("new release");
    new.last_modified = Some(httpdate::fmt_http_date(published));
    origin.put("/q/new-1.0.tgz", new);
    origin.put("/q/old-1.0.tgz", dated("old release", Some(30 * DAY)));
    origin.put("/q/undated-1.0.tgz", dated("undated release", None));
    origin.put(
        "/q/index.yaml",
        dated("index", Some(Duration::from_secs(3600))),
    );
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(
        &origin,
        "    quarantine_new: true\n    quarantine_days: 7\n    immutable_patterns: ['\\.tgz$']\n    mutable_patterns: ['index\\.yaml$']\n",
    );
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let http = client();

    for _ in 0..2 {
        let held = http
            .get(ad.artifact("gen", "q/new-1.0.tgz"))
            .send()
            .await
            .unwrap();
        assert_eq!(held.status(), 404);
        // The header names the end of the period: published + 7 days (HTTP dates have 1 s resolution).
        let published_secs =
            httpdate::parse_http_date(&httpdate::fmt_http_date(published)).unwrap();
        let until = filters::quarantine::rfc3339(published_secs + 7 * DAY);
        assert_eq!(
            held.headers()["x-artifact-quarantine"],
            format!("until {until}").as_str()
        );
        assert!(held.text().await.unwrap().contains("quarantine"));
    }
    assert_eq!(
        origin.hits("/q/new-1.0.tgz"),
        2,
        "a held artifact is never cached"
    );
    let fast = crate::harness::remote_metric(&ad, "artifactd_fast_path_hits_total", "gen");
    assert_eq!(fast.await, 0, "nor answered by the fast path");
    let held = crate::harness::remote_metric(&ad, "artifactd_quarantined_requests_total", "gen");
    assert_eq!(held.await, 2, "both refusals counted");

    for (path, body) in [
        ("q/old-1.0.tgz", "old release"),
        ("q/undated-1.0.tgz", "undated release"),
        ("q/index.yaml", "index"),
    ] {
        let resp = http.get(ad.artifact("gen", path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.headers().get("x-artifact-quarantine").is_none());
        assert_eq!(resp.text().await.unwrap(), body);
    }
}

#[tokio::test]
async fn missing_mutable_files_are_remembered_for_the_negative_ttl() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let remotes = format!(
        "{}  short:\n    base_url: \"{}\"\n    mutable_patterns: ['index\\.yaml$']\n    cache:\n      negative_ttl: 1\n",
        generic_remote(&origin, "    mutable_patterns: ['index\\.yaml$']\n"),
        origin.base_url()
    );
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let http = client();
    for _ in 0..20 {
        let resp = http
            .get(ad.artifact("gen", "missing/index.yaml"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.text().await.unwrap(), "no such file\n");
    }
    assert_eq!(
        origin.hits("/missing/index.yaml"),
        1,
        "20 requests, one upstream request"
    );

    // The remote's own negative_ttl (1 s) overrides the server default (60 s).
    for _ in 0..3 {
        http.get(ad.artifact("short", "gone/index.yaml"))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(origin.hits("/gone/index.yaml"), 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // Once the 404 has expired, the file that appeared meanwhile is served.
    origin.put("/gone/index.yaml", OriginFile::new("now here"));
    let resp = http
        .get(ad.artifact("short", "gone/index.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "now here");
    assert_eq!(origin.hits("/gone/index.yaml"), 2);
}

/// How an upstream fails after the object was cached.
#[derive(Clone, Copy, Debug)]
enum Failure {
    Refused,
    Dns,
    Tls,
    Stalled,
    ConnectTimeout,
    Status(u16),
}

const STALE_REMOTE: &str = "    mutable_patterns: ['index\\.yaml$']\n    timeouts:\n      connect: 1\n      read: 1\n    cache:\n      mutable_ttl: 1\n      stale_if_error: 3\n";

fn remote_at(base_url: &str) -> String {
    format!("remotes:\n  gen:\n    base_url: \"{base_url}\"\n{STALE_REMOTE}")
}

/// Caches `s/index.yaml`, makes the upstream fail in the given way, then
/// checks: within the stale period the cached bytes come back with the stale
/// headers; after it, a 5xx with a reason; an uncached path gets a 5xx at
/// once (every request is bounded by the 1 s timeouts and the client's 60 s).
async fn stale_through(failure: Failure, expected_status: u16, reason_part: &str) {
    let origin = Origin::start().await;
    let body = format!("index as cached ({failure:?})\n");
    origin.put("/s/index.yaml", OriginFile::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let mut ad = Artifactd::start(dir.path(), &remote_at(&origin.base_url()), "").await;
    let http = client();
    let fetched = std::time::Instant::now();
    assert_eq!(
        crate::harness::get_text(&http, ad.artifact("gen", "s/index.yaml")).await,
        body
    );

    let silent = crate::harness::Silent::start().await;
    let black_hole = crate::harness::Backlogged::start().await;
    let port = origin.base_url().rsplit(':').next().unwrap().to_string();
    let failing_url = match failure {
        Failure::Refused => {
            origin.stop();
            None
        }
        Failure::Status(code) => {
            origin.put("/s/index.yaml", OriginFile::failing(code));
            origin.put("/s/other/index.yaml", OriginFile::failing(code));
            None
        }
        Failure::Dns => Some("http://upstream.invalid".to_string()),
        Failure::Tls => Some(format!("https://127.0.0.1:{port}")),
        Failure::Stalled => Some(format!("http://{}", silent.addr)),
        Failure::ConnectTimeout => Some(format!("http://{}", black_hole.addr)),
    };
    if let Some(url) = failing_url {
        // Same storage, same remote name, now pointing at a failing upstream.
        ad.committed().await;
        ad.kill();
        ad = Artifactd::start(dir.path(), &remote_at(&url), "").await;
    }

    tokio::time::sleep(Duration::from_millis(1600).saturating_sub(fetched.elapsed())).await;
    let stale = http
        .get(ad.artifact("gen", "s/index.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stale.status(),
        200,
        "{failure:?}: stale copy expected\n{}",
        ad.log_text()
    );
    assert_eq!(stale.headers()["x-artifact-source"], "cache");
    assert_eq!(stale.headers()["warning"], "110 - \"Response is Stale\"");
    let why = stale.headers()["x-artifact-stale"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(why.contains(reason_part), "{failure:?}: reason {why:?}");
    assert!(stale.headers().contains_key("age"));
    assert_eq!(stale.text().await.unwrap(), body);

    let uncached = http
        .get(ad.artifact("gen", "s/other/index.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        uncached.status(),
        expected_status,
        "{failure:?}: uncached path"
    );
    if let Failure::Status(503 | 429) = failure {
        // The upstream's Retry-After (the test origin sends 1) is passed on.
        assert_eq!(uncached.headers()["retry-after"], "1");
    }
    assert!(uncached.text().await.unwrap().contains("remote 'gen'"));
    // Counted by what the client got: the stale copy, then the error.
    let metrics = crate::harness::get_text(&http, ad.url("/metrics")).await;
    let errors = |fallback| {
        let labels = [("remote", "gen"), ("fallback", fallback)];
        crate::harness::sample_sum(&metrics, "artifactd_upstream_errors_total", &labels)
    };
    assert_eq!((errors("stale"), errors("none")), (1.0, 1.0), "{failure:?}");
    assert_eq!(crate::harness::requests_from(&ad, "gen", "stale").await, 1);

    tokio::time::sleep(Duration::from_millis(5500).saturating_sub(fetched.elapsed())).await;
    let expired = http
        .get(ad.artifact("gen", "s/index.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        expired.status(),
        expected_status,
        "{failure:?}: past the stale period"
    );
    assert!(expired.headers().get("x-artifact-stale").is_none());
    let text = expired.text().await.unwrap();
    assert!(
        text.contains("remote 'gen'") && text.contains(reason_part),
        "{text}"
    );
}

#[tokio::test]
async fn stale_through_connection_refused() {
    stale_through(Failure::Refused, 502, "refused").await;
}

#[tokio::test]
async fn stale_through_dns_failure() {
    stale_through(Failure::Dns, 502, "unresolvable").await;
}

#[tokio::test]
async fn stale_through_tls_failure() {
    stale_through(Failure::Tls, 502, "TLS").await;
}

#[tokio::test]
async fn stale_through_a_stalled_upstream() {
    stale_through(Failure::Stalled, 504, "timeout").await;
}

#[tokio::test]
async fn stale_through_a_connect_timeout() {
    stale_through(Failure::ConnectTimeout, 504, "connect timeout").await;
}

#[tokio::test]
async fn stale_through_500() {
    stale_through(Failure::Status(500), 502, "status 500").await;
}

#[tokio::test]
async fn stale_through_503() {
    stale_through(Failure::Status(503), 503, "status 503").await;
}

#[tokio::test]
async fn stale_through_429() {
    stale_through(Failure::Status(429), 503, "status 429").await;
}

#[tokio::test]
async fn truncated_revalidation_keeps_the_old_copy_intact() {
    let origin = Origin::start().await;
    let old = crate::harness::pattern_bytes(1_000_000, 21);
    origin.put("/t/index.yaml", OriginFile::new(old.clone()));
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &remote_at(&origin.base_url()), "").await;
    let http = client();
    let fetched = std::time::Instant::now();
    let first = http
        .get(ad.artifact("gen", "t/index.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.bytes().await.unwrap(), old);

    // The upstream changes, but its new body is cut off halfway.
    let mut cut = OriginFile::new(crate::harness::pattern_bytes(1_000_000, 22));
    cut.truncate_after = Some(400_000);
    origin.put("/t/index.yaml", cut);
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(fetched.elapsed())).await;
    let refill = http
        .get(ad.artifact("gen", "t/index.yaml"))
        .send()
        .await
        .unwrap();
    assert!(
        refill.bytes().await.is_err(),
        "the cut-off body must fail the transfer"
    );
    assert_eq!(origin.hits("/t/index.yaml"), 2);

    // Nothing partial was committed: with the upstream gone, the old copy is
    // served, byte for byte.
    origin.stop();
    let stale = http
        .get(ad.artifact("gen", "t/index.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    assert!(stale.headers().contains_key("x-artifact-stale"));
    assert_eq!(stale.bytes().await.unwrap(), old);
}

#[tokio::test]
async fn breaker_marks_a_failing_remote_down_and_one_probe_detects_recovery() {
    let origin = Origin::start().await;
    origin.put("/c/index.yaml", OriginFile::new("cached index\n"));
    let dir = tempfile::tempdir().unwrap();
    let extra = "upstream:\n  breaker_failures: 3\n  breaker_backoff: 2\n";
    // A stale period far longer than the test: the first fill's commit can
    // take seconds on a loaded S3 server, and the copy's age counts from the
    // upstream's answer, not from the commit.
    let remote = remote_at(&origin.base_url()).replace("stale_if_error: 3", "stale_if_error: 600");
    let ad = Artifactd::start(dir.path(), &remote, extra).await;
    let http = client();
    let url = ad.artifact("gen", "c/index.yaml");
    assert_eq!(
        crate::harness::get_text(&http, &url).await,
        "cached index\n"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Three failures in a row mark the remote down.
    origin.put("/u/a.tgz", OriginFile::failing(503));
    for _ in 0..3 {
        let resp = http
            .get(ad.artifact("gen", "u/a.tgz"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
    }
    assert_eq!(origin.hits("/u/a.tgz"), 3);
    // The third failure is recorded as its request ends, after the answer
    // (through Redis in the cluster shape): wait for it to show.
    upstream_health_becomes(&http, &ad, "down").await;
    let before = origin.total_hits();

    // While down: the expired cached object is answered from cache, 100
    // times, without a single upstream request; an uncached one fails fast.
    for _ in 0..100 {
        let resp = http.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-artifact-stale"], "remote marked down");
        assert_eq!(resp.text().await.unwrap(), "cached index\n");
    }
    let fast = http
        .get(ad.artifact("gen", "u/a.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(fast.status(), 503);
    let retry_after: u64 = fast.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(
        origin.total_hits(),
        before,
        "no upstream request while the remote is down"
    );
    let health: serde_json::Value = crate::harness::get_json(&http, ad.url("/health")).await;
    assert_eq!(health["upstreams"]["gen"], "down");
    let metrics = crate::harness::get_text(&http, ad.url("/metrics")).await;
    assert!(
        metrics.contains("artifactd_remote_up{remote=\"gen\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("artifactd_breaker_rejections_total{remote=\"gen\"} 101"),
        "{metrics}"
    );

    // The upstream recovers; after the back-off a burst sends one probe only.
    origin.put("/c/index.yaml", OriginFile::new("fresh index\n"));
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let burst: Vec<_> = (0..5)
        .map(|_| {
            let http = http.clone();
            let url = url.clone();
            tokio::spawn(async move { crate::harness::status(http.get(&url)).await })
        })
        .collect();
    for task in burst {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(
        origin.hits("/c/index.yaml"),
        2,
        "the first fill and exactly one probe"
    );
    upstream_health_becomes(&http, &ad, "up").await;
    let after = http.get(&url).send().await.unwrap();
    assert_eq!(after.text().await.unwrap(), "fresh index\n");
}

#[tokio::test]
async fn check_mutable_updates_decides_conditional_revalidation() {
    let origin = Origin::start().await;
    for path in [
        "/plain/index.yaml",
        "/checked/index.yaml",
        "/helm/index.yaml",
    ] {
        origin.put(path, OriginFile::new("v1\n").etag("\"v1\""));
    }
    let dir = tempfile::tempdir().unwrap();
    let base = origin.base_url();
    let remotes = format!(
        "remotes:\n  plain:\n    base_url: \"{base}\"\n    mutable_patterns: ['index\\.yaml$']\n    cache:\n      mutable_ttl: 1\n  checked:\n    base_url: \"{base}\"\n    check_mutable_updates: true\n    mutable_patterns: ['index\\.yaml$']\n    cache:\n      mutable_ttl: 1\n  helm:\n    base_url: \"{base}\"\n    package: helm\n    check_mutable_updates: true\n    cache:\n      mutable_ttl: 1\n"
    );
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let http = client();
    for remote in ["plain", "checked", "helm"] {
        let path = format!("{remote}/index.yaml");
        crate::harness::get_text(&http, ad.artifact(remote, &path)).await;
    }
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for remote in ["plain", "checked", "helm"] {
        let path = format!("{remote}/index.yaml");
        let resp = http.get(ad.artifact(remote, &path)).send().await.unwrap();
        assert_eq!(resp.text().await.unwrap(), "v1\n");
    }
    let conditional = |path: &str| {
        let seen: Vec<_> = origin
            .requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect();
        assert_eq!(seen.len(), 2, "{path}");
        seen[1].headers.contains_key("if-none-match")
    };
    assert!(
        !conditional("/plain/index.yaml"),
        "no check_mutable_updates: full refetch"
    );
    assert!(
        conditional("/checked/index.yaml"),
        "check_mutable_updates on a user pattern: conditional"
    );
    assert!(
        !conditional("/helm/index.yaml"),
        "built-in patterns are always refetched in full"
    );
}

#[tokio::test]
async fn an_immutable_artifact_the_upstream_deleted_is_still_served() {
    let origin = Origin::start().await;
    origin.put("/r/gone-1.0.tgz", OriginFile::new("release 1.0"));
    origin.put("/r/withdrawn-1.0.tgz", OriginFile::new("release w"));
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(&origin, "    immutable_patterns: ['\\.tgz$']\n    cache:\n      immutable_ttl: 1\n      stale_if_error: 1\n");
    let ad = Artifactd::start(dir.path(), &remotes, "upstream:\n  breaker_failures: 2\n").await;
    let http = client();
    for path in ["r/gone-1.0.tgz", "r/withdrawn-1.0.tgz"] {
        crate::harness::get_text(&http, ad.artifact("gen", path)).await;
    }
    origin.put("/r/gone-1.0.tgz", OriginFile::failing(404));
    origin.put("/r/withdrawn-1.0.tgz", OriginFile::failing(410));
    // Well past the stale period too: a vanished immutable artifact is kept regardless.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    for _ in 0..3 {
        for (path, body, status) in [
            ("r/gone-1.0.tgz", "release 1.0", "404"),
            ("r/withdrawn-1.0.tgz", "release w", "410"),
        ] {
            let resp = http.get(ad.artifact("gen", path)).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            let why = resp.headers()["x-artifact-stale"]
                .to_str()
                .unwrap()
                .to_string();
            assert!(why.contains(status), "{why}");
            assert_eq!(resp.text().await.unwrap(), body);
        }
    }
    // Six 404/410 answers are not failures: the remote stays up.
    let health: serde_json::Value = crate::harness::get_json(&http, ad.url("/health")).await;
    assert_eq!(health["upstreams"]["gen"], "up");
    // An uncached path that is missing upstream is still a plain 404.
    let missing = http
        .get(ad.artifact("gen", "r/never-1.0.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// Waits (at most 5 s) until `/health` reports remote `gen` as `state`:
/// a probe's outcome is recorded as its request ends, after the answer.
async fn upstream_health_becomes(http: &reqwest::Client, ad: &Artifactd, state: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let health: serde_json::Value = crate::harness::get_json(http, ad.url("/health")).await;
        if health["upstreams"]["gen"] == state {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never {state}: {health}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
