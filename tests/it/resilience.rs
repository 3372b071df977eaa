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
