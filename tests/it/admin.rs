//! The administrative endpoints.

use crate::harness::{
    client, generic_remote, pattern_bytes, Artifactd, Immutable, Origin, OriginFile,
};

/// The samples of `name` for remote `gen` with `labels` too, summed.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    let mut all = vec![("remote", "gen")];
    all.extend_from_slice(labels);
    let known = text.lines().any(|l| l.starts_with(name));
    assert!(known, "no {name} in\n{text}");
    crate::harness::sample_sum(text, name, &all) as u64
}

#[tokio::test]
async fn config_hides_every_secret() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(
        &origin,
        "    username: \"robot\"\n    password: \"pa55-w0rd-xyz\"\n",
    );
    let extra = "tokens:\n  write: \"write-tok-123\"\n  admin: \"admin-tok-456\"\n";
    let ad = Artifactd::start(dir.path(), &remotes, extra).await;
    // With an admin token set, the configuration is the admin's to read.
    assert_eq!(
        crate::harness::status(client().get(ad.url("/config"))).await,
        401
    );
    let text =
        crate::harness::text(client().get(ad.url("/config")).bearer_auth("admin-tok-456")).await;
    for secret in ["pa55-w0rd-xyz", "write-tok-123", "admin-tok-456"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["remotes"]["gen"]["password"], "***");
    assert_eq!(json["remotes"]["gen"]["username"], "robot");
    assert_eq!(json["server"]["tokens"]["admin"], "***");
    assert_eq!(json["remotes"]["gen"]["base_url"], origin.base_url());
}

#[tokio::test]
async fn upstream_receives_the_remote_credentials_not_the_client_ones() {
    let origin = Origin::start().await;
    origin.put("/c/x.tgz", OriginFile::new("x"));
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(&origin, "    username: \"robot\"\n    password: \"pw\"\n");
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let resp = client()
        .get(ad.artifact("gen", "c/x.tgz"))
        .bearer_auth("client-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = origin.requests();
    assert_eq!(
        seen[0].headers.get("authorization").map(String::as_str),
        Some("Basic cm9ib3Q6cHc=")
    );
    assert_eq!(
        seen[0].headers.get("host").cloned(),
        Some(origin.base_url().trim_start_matches("http://").to_string())
    );
}

#[tokio::test]
async fn metrics_move_with_traffic_and_flush_empties_the_cache() {
    let origin = Origin::start().await;
    let body = pattern_bytes(4096, 8);
    origin.put("/m/a.tgz", OriginFile::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(
        dir.path(),
        &generic_remote(&origin, "    immutable_patterns: ['\\.tgz$']\n"),
        "tokens:\n  admin: \"adm\"\n",
    )
    .await;
    let http = client();
    let scrape = || async { crate::harness::get_text(&http, ad.url("/metrics")).await };
    let before = scrape().await;
    let hits = [("source", "hit")];
    assert_eq!(metric(&before, "artifactd_requests_total", &hits), 0);

    let url = ad.artifact("gen", "m/a.tgz");
    http.get(&url).send().await.unwrap().bytes().await.unwrap();
    http.get(&url).send().await.unwrap().bytes().await.unwrap();
    http.get(&url).send().await.unwrap().bytes().await.unwrap();
    http.get(ad.artifact("gen", "m/a.zip"))
        .send()
        .await
        .unwrap();
    let after = scrape().await;
    let misses = [("source", "miss"), ("status", "2xx")];
    assert_eq!(metric(&after, "artifactd_requests_total", &misses), 1);
    assert_eq!(metric(&after, "artifactd_requests_total", &hits), 2);
    assert_eq!(metric(&after, "artifactd_denied_requests_total", &[]), 1);
    let refused = [("source", "passed"), ("status", "4xx")];
    assert_eq!(metric(&after, "artifactd_requests_total", &refused), 1);
    assert_eq!(
        metric(&after, "artifactd_served_bytes_total", &hits),
        2 * 4096
    );
    let fetched = [("source", "miss")];
    assert_eq!(
        metric(&after, "artifactd_served_bytes_total", &fetched),
        4096
    );
    assert_eq!(metric(&after, "artifactd_upstream_bytes_total", &[]), 4096);
    let answered = [("status", "2xx")];
    assert_eq!(
        metric(&after, "artifactd_upstream_responses_total", &answered),
        1
    );

    // Flushing needs the admin token, then empties the remote's cache.
    let flush_url = ad.url("/cache/flush?remote=gen");
    assert_eq!(crate::harness::status(http.put(&flush_url)).await, 401);
    let flushed = http
        .put(&flush_url)
        .bearer_auth("adm")
        .send()
        .await
        .unwrap();
    assert_eq!(flushed.status(), 200);
    let refetched = http.get(&url).send().await.unwrap();
    assert_eq!(refetched.headers()["x-artifact-source"], "remote");
    assert_eq!(refetched.bytes().await.unwrap(), body);
    assert_eq!(origin.hits("/m/a.tgz"), 2);
    assert_eq!(
        crate::harness::status(
            http.put(ad.url("/cache/flush?remote=nope"))
                .bearer_auth("adm")
        )
        .await,
        404
    );
}

#[tokio::test]
async fn catalog_lists_what_was_cached() {
    let origin = Origin::start().await;
    let body = pattern_bytes(777, 9);
    origin.put("/cat/a.tgz", OriginFile::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, ""), "").await;
    let http = client();
    http.get(ad.artifact("gen", "cat/a.tgz"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    // The catalog is written in the background, in batches.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let list: serde_json::Value =
            crate::harness::get_json(&http, ad.url("/artifacts/gen")).await;
        if list["count"] == 1 {
            let row = &list["artifacts"][0];
            assert_eq!(row["path"], "cat/a.tgz");
            assert_eq!(row["size"], 777);
            assert_eq!(row["sha256"], crate::harness::sha256_hex(&body));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "catalog never listed the artifact: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn readiness_reports_a_store_that_cannot_be_read_and_liveness_does_not() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, ""), "").await;
    let http = client();
    for probe in ["/health", "/readyz"] {
        let ok = http.get(ad.url(probe)).send().await.unwrap();
        assert_eq!(ok.status(), 200, "{probe}");
        let ok: serde_json::Value = ok.json().await.unwrap();
        assert_eq!(ok["status"], "ok", "{probe}");
        assert_eq!(ok["checks"]["storage"]["ok"], true, "{probe}");
        assert_eq!(ok["checks"]["catalog"]["ok"], true, "{probe}");
    }

    // A store that takes no writes still serves hits: ready.
    let guard = Immutable::set(&dir.path().join("store"));
    assert_eq!(
        crate::harness::status(http.get(ad.url("/readyz"))).await,
        200
    );
    drop(guard);

    // A store whose root is gone (an unmounted volume) serves nothing.
    let store = dir.path().join("store");
    let away = dir.path().join("store-away");
    std::fs::rename(&store, &away).unwrap();
    for probe in ["/health", "/readyz"] {
        let asked = std::time::Instant::now();
        let bad = http.get(ad.url(probe)).send().await.unwrap();
        assert!(asked.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(bad.status(), 503, "{probe}");
        let bad: serde_json::Value = bad.json().await.unwrap();
        assert_eq!(bad["status"], "unhealthy");
        assert_eq!(bad["checks"]["storage"]["ok"], false);
        let error = bad["checks"]["storage"]["error"].as_str().unwrap_or("");
        assert!(error.contains("store"), "the error names the root: {bad}");
    }
    // The process still serves: liveness says so, as plain text.
    let live = http.get(ad.url("/livez")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.text().await.unwrap().trim(), "ok");
    std::fs::rename(&away, &store).unwrap();
    assert_eq!(
        crate::harness::status(http.get(ad.url("/readyz"))).await,
        200
    );
    // Probes take reads only: nothing was left in the store's root.
    let left: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("probe"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn root_lists_remotes() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, ""), "").await;
    let root: serde_json::Value = crate::harness::get_json(&client(), ad.url("/")).await;
    assert_eq!(root["name"], "artifactd");
    assert_eq!(root["remotes"][0]["name"], "gen");
    assert_eq!(root["remotes"][0]["package"], "generic");
}

#[tokio::test]
async fn request_ids_access_lines_and_duration_histograms() {
    let origin = Origin::start().await;
    origin.put("/o.bin", OriginFile::new(pattern_bytes(5000, 4)));
    let remotes = generic_remote(&origin, "");
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let extra = format!("log:\n  format: {format}\n");
        let ad = Artifactd::start(dir.path(), &remotes, &extra).await;
        let http = client();
        let url = ad.artifact("gen", "o.bin");
        let miss = http
            .get(&url)
            .header("x-request-id", "client-id-42")
            .header("user-agent", "artifactd-test/1 (ci)")
            .send()
            .await
            .unwrap();
        assert_eq!(miss.headers()["x-request-id"], "client-id-42");
        miss.bytes().await.unwrap();
        let hit = http.get(&url).send().await.unwrap();
        let generated = hit.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(generated.len(), 32, "{generated}");
        hit.bytes().await.unwrap();
        let refused = http
            .get(ad.url("/api/v1/remote/nope/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 404);
        assert!(
            refused.headers().contains_key("x-request-id"),
            "every response has one"
        );
        // The upstream saw the id of the request that reached it.
        let upstream = origin.requests().into_iter().last().unwrap();
        assert_eq!(
            upstream.headers.get("x-request-id").map(String::as_str),
            Some("client-id-42")
        );

        let log = ad.log_text();
        let line = |id: &str| {
            log.lines()
                .find(|l| l.contains(id) && l.contains("o.bin"))
                .unwrap_or_else(|| panic!("no access line for {id}:\n{log}"))
                .to_string()
        };
        let (miss_line, hit_line) = (line("client-id-42"), line(&generated));
        if format == "json" {
            for text in [&miss_line, &hit_line] {
                let record: serde_json::Value = serde_json::from_str(text).expect("a JSON line");
                assert_eq!(record["target"], "access");
                assert_eq!(record["remote"], "gen");
                assert_eq!(record["status"], 200);
                assert_eq!(record["bytes"], 5000);
                assert!(record["client"].as_str().unwrap().starts_with("127.0.0.1:"));
            }
            let miss: serde_json::Value = serde_json::from_str(&miss_line).unwrap();
            let hit: serde_json::Value = serde_json::from_str(&hit_line).unwrap();
            assert_eq!(
                (miss["source"].as_str(), hit["source"].as_str()),
                (Some("miss"), Some("hit"))
            );
            assert!(miss["upstream_ms"].as_f64().is_some() && hit["upstream_ms"].is_null());
            assert_eq!(miss["user_agent"], "artifactd-test/1 (ci)");
            assert_eq!(
                (&miss["upstream_status"], &miss["upstream_bytes"]),
                (&200.into(), &5000.into())
            );
            assert_eq!(
                (&hit["upstream_status"], &hit["upstream_bytes"]),
                (&serde_json::Value::Null, &0.into())
            );
            for record in [&miss, &hit] {
                assert_eq!(
                    (&record["key_remote"], &record["key_path"]),
                    (&"gen".into(), &"o.bin".into())
                );
            }
            assert!(
                log.lines()
                    .filter(|l| !l.trim().is_empty())
                    .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
                "every line is JSON:\n{log}"
            );
        } else {
            assert!(
                miss_line.contains("source=miss") && miss_line.contains("127.0.0.1:"),
                "{miss_line}"
            );
            assert!(
                miss_line.contains("\"GET /api/v1/remote/gen/o.bin\" remote=gen status=200"),
                "{miss_line}"
            );
            assert!(!miss_line.contains("upstream_ms=-"), "{miss_line}");
            for field in [
                " upstream_status=200 upstream_bytes=5000 ",
                r#" ua="artifactd-test/1 (ci)""#,
                r#" key=gen:"o.bin""#,
            ] {
                assert!(miss_line.contains(field), "{field} in {miss_line}");
            }
            assert!(
                hit_line.contains(" upstream_status=- upstream_bytes=0 "),
                "{hit_line}"
            );
            assert!(
                hit_line.contains("source=hit") && hit_line.contains("upstream_ms=-"),
                "{hit_line}"
            );
        }

        // Prometheus asks for OpenMetrics; curl and promtool get the older
        // text format, whose counter headers name the `_total` series.
        let prometheus_accept =
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        let open = http
            .get(ad.url("/metrics"))
            .header("accept", prometheus_accept);
        let open = open.send().await.unwrap();
        assert!(open.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"));
        let open = open.text().await.unwrap();
        assert!(open.contains("# TYPE artifactd_requests counter") && open.ends_with("# EOF\n"));
        let metrics = http.get(ad.url("/metrics")).send().await.unwrap();
        assert!(metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        let text = metrics.text().await.unwrap();
        assert!(
            text.contains("# TYPE artifactd_requests_total counter") && !text.contains("# EOF")
        );
        for expected in [
            "artifactd_request_duration_seconds_count{remote=\"gen\",source=\"miss\"} 1",
            "artifactd_request_duration_seconds_count{remote=\"gen\",source=\"hit\"} 1",
            "artifactd_upstream_response_seconds_count{remote=\"gen\"} 1",
            "artifactd_requests_total{remote=\"gen\",source=\"hit\",status=\"2xx\"} 1",
            "artifactd_remote_up{remote=\"gen\"} 1",
            "artifactd_cache_objects{remote=\"gen\"} 1",
        ] {
            assert!(text.contains(expected), "{expected} in:\n{text}");
        }
    }
}

/// Errors of `/api/` routes answer as the reference's FastAPI did,
/// `{"detail": "..."}`; the probes and `/cache/flush` keep their forms.
#[tokio::test]
async fn api_errors_answer_json_detail_and_probes_stay_as_they_were() {
    let origin = Origin::start().await;
    origin.put("/f.tgz", OriginFile::new(pattern_bytes(1_000, 1)));
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(&origin, "    immutable_patterns: ['\\.tgz$']\n");
    let ad = Artifactd::start(dir.path(), &remotes, "tokens:\n  admin: \"adm-detail\"\n").await;
    let http = client();
    for (url, status, detail) in [
        (ad.artifact("nope", "f.tgz"), 404, "unknown remote 'nope'"),
        (ad.artifact("gen", "f.zip"), 403, "not allowed"),
        (ad.url("/api/v1/artifacts?remote=gen"), 401, "token"),
        (ad.artifact("gen", "a%2Ff.tgz"), 400, "bad path"),
    ] {
        let resp = http.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), status, "{url}");
        let kind = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert_eq!(kind, "application/json", "{url}");
        let body: serde_json::Value = resp.json().await.unwrap();
        let text = body["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("{url}: {body}"));
        assert!(text.contains(detail), "{url}: {body}");
    }
    let live = http.get(ad.url("/livez")).send().await.unwrap();
    assert!(live.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let flush = http.put(ad.url("/cache/flush")).send().await.unwrap();
    assert_eq!(flush.status(), 401);
    assert!(flush.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
}
