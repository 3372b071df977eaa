//! npm remotes with the real client: `npm install` through artifactd from
//! a verdaccio upstream, scoped and unscoped, again with the upstream
//! stopped; tarballs verified against `dist.integrity`; quarantined
//! versions left out of package documents.

use crate::harness::npm::{installed_version, npm_install, Verdaccio};
use crate::harness::{client, Artifactd};
use std::time::Duration;

fn npm_remote(upstream: &Verdaccio, extra: &str) -> String {
    // The seed's npm example: tarballs immutable, everything else mutable.
    format!(
        "remotes:\n  npm:\n    base_url: \"{}\"\n    type: remote\n    package: npm\n    immutable_patterns:\n      - \"\\\\.tgz$\"\n    mutable_patterns:\n      - \"^(?!.*\\\\.tgz$).*\"\n{extra}",
        upstream.url()
    )
}

#[tokio::test]
async fn npm_installs_scoped_and_unscoped_packages_and_again_with_the_upstream_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut upstream = Verdaccio::start(dir.path()).await;
    upstream.publish("tiny-dep", "1.0.0", &[]).await;
    upstream.publish("tiny-dep", "1.1.0", &[]).await;
    upstream
        .publish("@demo/app", "1.0.0", &[("tiny-dep", "^1.0.0")])
        .await;
    upstream
        .publish("plain-app", "2.0.0", &[("tiny-dep", "~1.0.0")])
        .await;
    let remotes = npm_remote(&upstream, "    cache:\n      mutable_ttl: 1\n");
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let registry = ad.artifact("npm", "");

    // Every spelling of a scoped document answers, with tarballs through
    // artifactd.
    let http = client();
    upstream.settle().await;
    let published = upstream.count("/@demo%2fapp");
    for spelling in ["@demo%2fapp", "@demo%2Fapp", "@demo/app"] {
        let doc = crate::harness::get_json(&http, ad.artifact("npm", spelling)).await;
        let tarball = doc["versions"]["1.0.0"]["dist"]["tarball"]
            .as_str()
            .unwrap();
        assert_eq!(
            tarball,
            ad.artifact("npm", "@demo/app/-/app-1.0.0.tgz"),
            "{spelling}"
        );
    }
    upstream.settle().await;
    assert_eq!(
        upstream.count("/@demo%2fapp"),
        published + 1,
        "one cached document: {:?}",
        upstream.requests()
    );

    let project = dir.path().join("project");
    let (ok, out) = npm_install(&registry, &project, &["@demo/app", "plain-app"]).await;
    assert!(ok, "npm install: {out}");
    assert_eq!(
        installed_version(&project, "@demo/app").as_deref(),
        Some("1.0.0")
    );
    assert_eq!(
        installed_version(&project, "plain-app").as_deref(),
        Some("2.0.0")
    );
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.join("package-lock.json")).unwrap()).unwrap();
    let packages = lock["packages"].as_object().unwrap();
    let resolved: Vec<&str> = packages
        .values()
        .filter_map(|p| p["resolved"].as_str())
        .collect();
    assert!(resolved.len() >= 3, "{lock}");
    for url in &resolved {
        assert!(
            url.starts_with(&registry),
            "lockfile points at artifactd: {url}"
        );
    }
    // @demo/app takes tiny-dep ^1.0.0 (1.1.0), plain-app ~1.0.0 (1.0.0,
    // nested): each tarball came from the upstream once.
    assert_eq!(
        installed_version(&project, "tiny-dep").as_deref(),
        Some("1.1.0")
    );
    let nested = project.join("node_modules/plain-app");
    assert_eq!(
        installed_version(&nested, "tiny-dep").as_deref(),
        Some("1.0.0")
    );
    upstream.settle().await;
    for tarball in [
        "/tiny-dep/-/tiny-dep-1.1.0.tgz",
        "/tiny-dep/-/tiny-dep-1.0.0.tgz",
        "/@demo/app/-/app-1.0.0.tgz",
        "/plain-app/-/plain-app-2.0.0.tgz",
    ] {
        let count = upstream.count(tarball);
        assert_eq!(count, 1, "{tarball}: {:?}", upstream.requests());
    }

    // With verdaccio stopped and the documents expired, a fresh project
    // (and a fresh npm cache) installs from artifactd's copies.
    upstream.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let offline = dir.path().join("offline");
    let (ok, out) = npm_install(&registry, &offline, &["@demo/app", "plain-app"]).await;
    assert!(ok, "npm install with the upstream stopped: {out}");
    assert_eq!(
        installed_version(&offline, "tiny-dep").as_deref(),
        Some("1.1.0")
    );
    let nested = offline.join("node_modules/plain-app");
    assert_eq!(
        installed_version(&nested, "tiny-dep").as_deref(),
        Some("1.0.0")
    );
    let index = std::fs::read_to_string(offline.join("node_modules/@demo/app/index.js")).unwrap();
    assert_eq!(index, "module.exports = '1.0.0';\n");
}

#[tokio::test]
async fn a_tampered_tarball_is_refused_counted_and_never_committed() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Verdaccio::start(dir.path()).await;
    upstream.publish("tiny-dep", "1.0.0", &[]).await;
    let ad = Artifactd::start(dir.path(), &npm_remote(&upstream, ""), "").await;
    let registry = ad.artifact("npm", "");
    let http = client();
    // Both forms of the document are cached (and their integrity
    // recorded) before the upstream's tarball changes.
    for accept in ["application/json", "application/vnd.npm.install-v1+json"] {
        let resp = http
            .get(ad.artifact("npm", "tiny-dep"))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let _ = resp.bytes().await.unwrap();
    }
    let stored = upstream.tarball("tiny-dep", "1.0.0");
    let good = std::fs::read(&stored).unwrap();
    let mut tampered = good.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x01;
    std::fs::write(&stored, &tampered).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (ok, out) = npm_install(&registry, &dir.path().join("p1"), &["tiny-dep"]).await;
    assert!(!ok, "npm must fail on a tampered tarball: {out}");
    let tarball_url = ad.artifact("npm", "tiny-dep/-/tiny-dep-1.0.0.tgz");
    let body = http.get(&tarball_url).send().await.unwrap().bytes().await;
    assert!(
        body.map_or(true, |b| b.len() < tampered.len()),
        "a tampered body never completes"
    );
    let count = crate::harness::checksum_mismatches(&ad, "npm").await;
    assert!(count >= 2, "{count} mismatches counted");

    std::fs::write(&stored, &good).unwrap();
    let resp = http.get(&tarball_url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-artifact-source"],
        "remote",
        "nothing was committed"
    );
    assert_eq!(resp.bytes().await.unwrap(), good);
    let (ok, out) = npm_install(&registry, &dir.path().join("p2"), &["tiny-dep"]).await;
    assert!(ok, "{out}");
}

#[tokio::test]
async fn quarantined_versions_are_left_out_and_npm_resolves_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Verdaccio::start(dir.path()).await;
    upstream.publish("tiny-dep", "1.0.0", &[]).await;
    upstream.publish("tiny-dep", "1.1.0", &[]).await;
    // 1.0.0 a month ago, 1.1.0 yesterday.
    let ago = |days: u64| {
        let t = std::time::SystemTime::now() - Duration::from_secs(days * 86_400);
        humantime::format_rfc3339_millis(t).to_string()
    };
    upstream.set_publish_time("tiny-dep", "1.0.0", &ago(30));
    upstream.set_publish_time("tiny-dep", "1.1.0", &ago(1));
    let quarantine = "    quarantine_new: true\n    quarantine_days: 7\n";
    let ad = Artifactd::start(dir.path(), &npm_remote(&upstream, quarantine), "").await;

    let doc = crate::harness::get_json(&client(), ad.artifact("npm", "tiny-dep")).await;
    assert!(doc["versions"].get("1.1.0").is_none(), "{doc}");
    assert!(doc["versions"].get("1.0.0").is_some());
    assert_eq!(doc["dist-tags"]["latest"], "1.0.0");

    let project = dir.path().join("project");
    let (ok, out) = npm_install(&ad.artifact("npm", ""), &project, &["tiny-dep"]).await;
    assert!(ok, "npm install: {out}");
    assert_eq!(
        installed_version(&project, "tiny-dep").as_deref(),
        Some("1.0.0")
    );
}

#[tokio::test]
async fn a_virtual_registry_overlays_uploaded_private_packages_on_a_remote() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Verdaccio::start(dir.path()).await;
    upstream.publish("tiny-dep", "1.0.0", &[]).await;
    // A private package, packed by npm and uploaded the simple way.
    let package = dir.path().join("secret");
    std::fs::create_dir_all(&package).unwrap();
    let manifest = serde_json::json!({"name": "@team/secret", "version": "1.0.0", "main": "index.js",
        "dependencies": {"tiny-dep": "^1.0.0"}});
    std::fs::write(package.join("package.json"), manifest.to_string()).unwrap();
    std::fs::write(package.join("index.js"), "module.exports = 'secret';\n").unwrap();
    let mut pack = tokio::process::Command::new("npm");
    pack.current_dir(&package)
        .args(["pack", "--pack-destination"])
        .arg(&package);
    let (ok, out) = crate::harness::npm::run_npm(&mut pack).await;
    assert!(ok, "npm pack: {out}");
    let tarball = std::fs::read(package.join("team-secret-1.0.0.tgz")).unwrap();
    let remotes = format!(
        "{}  team:\n    type: local\n    package: npm\n  all:\n    type: virtual\n    package: npm\n    members: [team, npm]\n",
        npm_remote(&upstream, "")
    );
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let http = client();
    let put = http
        .put(ad.artifact("team", "@team/secret/-/secret-1.0.0.tgz"))
        .body(tarball.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    // Listed as soon as the upload was answered.
    let listed = http
        .get(ad.artifact("all", "@team%2fsecret"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200, "the upload is not listed yet");

    let project = dir.path().join("project");
    let registry = ad.artifact("all", "");
    let (ok, out) = npm_install(&registry, &project, &["@team/secret"]).await;
    assert!(ok, "npm install through the virtual registry: {out}");
    let index =
        std::fs::read_to_string(project.join("node_modules/@team/secret/index.js")).unwrap();
    assert_eq!(index, "module.exports = 'secret';\n");
    assert_eq!(
        installed_version(&project, "tiny-dep").as_deref(),
        Some("1.0.0")
    );
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.join("package-lock.json")).unwrap()).unwrap();
    let resolved =
        |name: &str| lock["packages"][format!("node_modules/{name}")]["resolved"].clone();
    assert_eq!(
        resolved("@team/secret"),
        ad.artifact("team", "@team/secret/-/secret-1.0.0.tgz")
    );
    assert_eq!(
        resolved("tiny-dep"),
        ad.artifact("npm", "tiny-dep/-/tiny-dep-1.0.0.tgz")
    );
}

#[tokio::test]
async fn search_is_passed_to_the_upstream_and_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Verdaccio::start(dir.path()).await;
    upstream.publish("tiny-dep", "1.0.0", &[]).await;
    let ad = Artifactd::start(dir.path(), &npm_remote(&upstream, ""), "").await;
    let http = client();
    let url = ad.artifact("npm", "-/v1/search?text=tiny&size=5");
    for _ in 0..2 {
        let resp = http.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-artifact-source"], "remote");
        let found: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            found["objects"][0]["package"]["name"], "tiny-dep",
            "{found}"
        );
    }
    upstream.settle().await;
    let searches = upstream
        .requests()
        .iter()
        .filter(|p| p.starts_with("/-/v1/search?text=tiny"))
        .count();
    assert_eq!(searches, 2, "{:?}", upstream.requests());
}
