//! PyPI remotes with real clients: `pip` and `uv` install through
//! artifactd from a `pypiserver` upstream, in both forms of the simple API,
//! and again with the upstream stopped; downloads are verified against the
//! `sha256` their index published.

use crate::harness::pypi::{installed_version, pip_install, uv_install, PypiServer};
use crate::harness::{client, Artifactd};
use std::time::Duration;

fn pypi_remote(server: &PypiServer, extra: &str) -> String {
    format!(
        "remotes:\n  pypi:\n    base_url: \"{}\"\n    type: remote\n    package: pypi\n    immutable_patterns:\n      - \"packages/.*\\\\.whl$\"\n      - \"packages/.*\\\\.tar\\\\.gz$\"\n{extra}",
        server.url()
    )
}

const WHEEL_DEP_10: &str = "/packages/tiny_dep-1.0-py3-none-any.whl";
const WHEEL_DEP_11: &str = "/packages/tiny_dep-1.1-py3-none-any.whl";
const WHEEL_APP: &str = "/packages/demo_app-1.0-py3-none-any.whl";

#[tokio::test]
async fn index_pages_link_back_through_the_remote_in_both_forms() {
    let dir = tempfile::tempdir().unwrap();
    let server = PypiServer::start(dir.path()).await;
    server.add_wheel("tiny-dep", "1.0", &[]);
    let ad = Artifactd::start(dir.path(), &pypi_remote(&server, ""), "").await;
    let http = client();
    let page_url = ad.artifact("pypi", "simple/Tiny_Dep");

    let html = http
        .get(&page_url)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(html.status(), 200);
    assert!(html.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(html.headers()["vary"], "Accept");
    let html = html.text().await.unwrap();
    let wheel = std::fs::read(server.packages.join("tiny_dep-1.0-py3-none-any.whl")).unwrap();
    let link = format!(
        "href=\"{}#sha256={}\"",
        ad.artifact("pypi", "packages/tiny_dep-1.0-py3-none-any.whl"),
        crate::harness::sha256_hex(&wheel)
    );
    assert!(html.contains(&link), "{html}");
    assert!(
        !html.contains(&server.url()),
        "no link points upstream: {html}"
    );

    let json = http
        .get(&page_url)
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json.headers()["content-type"],
        "application/vnd.pypi.simple.v1+json"
    );
    let json: serde_json::Value = json.json().await.unwrap();
    assert_eq!(json["name"], "tiny-dep");
    let file = &json["files"][0];
    assert_eq!(file["filename"], "tiny_dep-1.0-py3-none-any.whl");
    assert_eq!(file["hashes"]["sha256"], crate::harness::sha256_hex(&wheel));
    assert_eq!(
        file["url"].as_str().unwrap(),
        ad.artifact("pypi", "packages/tiny_dep-1.0-py3-none-any.whl")
            + "#sha256="
            + &crate::harness::sha256_hex(&wheel)
    );

    // Another host name gets its own links from the same cached page, and
    // a non-normalised name the normalised page: one upstream fetch per form.
    let other = http
        .get(
            page_url
                .replace("127.0.0.1", "localhost")
                .replace("Tiny_Dep", "tiny.dep/"),
        )
        .header("accept", "text/html")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let port = ad.addr.port();
    assert!(
        other.contains(&format!(
            "href=\"https://localhost:{port}/api/v1/remote/pypi/packages/"
        )),
        "{other}"
    );
    assert_eq!(
        server.count_reaching("/simple/tiny-dep/", 2).await,
        2,
        "{:?}",
        server.requests()
    );

    // A range or a validator of the upstream's bytes means nothing for a
    // rewritten page: the whole page is sent.
    let ranged = http
        .get(&page_url)
        .header("accept", "text/html")
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 200);
    assert_eq!(ranged.text().await.unwrap(), html);
}

#[tokio::test]
async fn pip_and_uv_install_through_artifactd_and_again_with_the_upstream_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = PypiServer::start(dir.path()).await;
    server.add_wheel("Demo.App", "1.0", &["tiny-dep>=1"]);
    server.add_wheel("tiny-dep", "1.0", &[]);
    server.add_wheel("tiny-dep", "1.1", &[]);
    // Index pages expire after a second, so the runs with the upstream
    // stopped need the stale copy.
    let remotes = pypi_remote(&server, "    cache:\n      mutable_ttl: 1\n");
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let index = ad.artifact("pypi", "simple/");
    let installs = dir.path().join("installs");

    // pip prefers the JSON form, uv too; `--find-links` makes pip read
    // the HTML form.
    let (ok, out) = pip_install(&index, &installs.join("pip"), &["demo-app"]).await;
    assert!(ok, "pip install: {out}");
    let (ok, out) = uv_install(&index, &installs.join("uv"), &["Demo.App"]).await;
    assert!(ok, "uv pip install: {out}");
    let mut command = tokio::process::Command::new(crate::harness::pypi::tool("pip"));
    command
        .args([
            "install",
            "--no-cache-dir",
            "--no-compile",
            "--no-index",
            "--target",
        ])
        .arg(installs.join("find-links"))
        .args(["--find-links", &ad.artifact("pypi", "simple/demo-app/")])
        .args(["--find-links", &ad.artifact("pypi", "simple/tiny-dep/")])
        .arg("demo-app");
    let (ok, out) = crate::harness::pypi::run_clean(&mut command).await;
    assert!(ok, "pip --find-links (HTML form): {out}");
    for client in ["pip", "uv", "find-links"] {
        let target = installs.join(client);
        assert_eq!(
            installed_version(&target, "demo_app").as_deref(),
            Some("1.0"),
            "{client}"
        );
        assert_eq!(
            installed_version(&target, "tiny_dep").as_deref(),
            Some("1.1"),
            "{client}"
        );
    }
    // Every file came from the upstream once, whatever the client.
    assert_eq!(
        server.count_reaching(WHEEL_APP, 1).await,
        1,
        "{:?}",
        server.requests()
    );
    assert_eq!(
        server.count_reaching(WHEEL_DEP_11, 1).await,
        1,
        "{:?}",
        server.requests()
    );
    assert_eq!(server.count(WHEEL_DEP_10), 0);

    server.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (ok, out) = pip_install(&index, &installs.join("pip-down"), &["demo-app"]).await;
    assert!(ok, "pip install with the upstream stopped: {out}");
    let (ok, out) = uv_install(&index, &installs.join("uv-down"), &["demo-app"]).await;
    assert!(ok, "uv pip install with the upstream stopped: {out}");
    assert_eq!(
        installed_version(&installs.join("uv-down"), "tiny_dep").as_deref(),
        Some("1.1")
    );
    let log = ad.log_text();
    assert!(
        log.contains("source=stale") || log.contains("source=hit"),
        "served from cache"
    );
}

#[tokio::test]
async fn a_tampered_wheel_is_refused_counted_and_never_committed() {
    let dir = tempfile::tempdir().unwrap();
    let server = PypiServer::start(dir.path()).await;
    let wheel_path = server.add_wheel("tiny-dep", "1.0", &[]);
    let good = std::fs::read(&wheel_path).unwrap();
    let ad = Artifactd::start(dir.path(), &pypi_remote(&server, ""), "").await;
    let http = client();
    let index = ad.artifact("pypi", "simple/");

    // The page (both forms, now cached) publishes the good wheel's sha256;
    // then the upstream's file changes under the same name.
    for accept in ["text/html", "application/vnd.pypi.simple.v1+json"] {
        let page = http
            .get(ad.artifact("pypi", "simple/tiny-dep/"))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let _ = page.text().await.unwrap();
    }
    let mut tampered = good.clone();
    let last = tampered.len() - 30;
    tampered[last] ^= 0x55;
    std::fs::write(&wheel_path, &tampered).unwrap();
    // The checksum is recorded in the background; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mismatches = || crate::harness::checksum_mismatches(&ad, "pypi");
    // pip would retry and resume for half a minute: once is enough.
    let no_retries = ["--retries", "0", "--resume-retries", "0", "tiny-dep==1.0"];
    let (ok, out) = pip_install(&index, &dir.path().join("t1"), &no_retries).await;
    assert!(!ok, "pip must fail on a tampered wheel: {out}");
    let after_pip = mismatches().await;
    assert!(after_pip >= 1, "pip's download was refused");
    let file_url = ad.artifact("pypi", "packages/tiny_dep-1.0-py3-none-any.whl");
    let resp = http.get(&file_url).send().await.unwrap();
    let status = resp.status();
    let body = resp.bytes().await;
    assert!(
        body.as_ref().map_or(true, |b| b.len() < tampered.len()),
        "a tampered body never completes: {status} {:?}\n{}",
        body.map(|b| b.len()),
        ad.log_text()
    );
    assert_eq!(mismatches().await, after_pip + 1);
    assert!(ad
        .log_text()
        .contains("checksum mismatch: remote 'pypi' file packages/tiny_dep-1.0-py3-none-any.whl"));

    // Nothing was committed: with the upstream right again, the file is
    // fetched again and served whole.
    std::fs::write(&wheel_path, &good).unwrap();
    server.settle().await;
    let before = server.count(WHEEL_DEP_10);
    let resp = http.get(&file_url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-artifact-source"], "remote");
    assert_eq!(resp.bytes().await.unwrap(), good);
    assert_eq!(
        server.count_reaching(WHEEL_DEP_10, before + 1).await,
        before + 1
    );
    let (ok, out) = pip_install(&index, &dir.path().join("t2"), &["tiny-dep==1.0"]).await;
    assert!(ok, "{out}");
    server.settle().await;
    assert_eq!(
        server.count(WHEEL_DEP_10),
        before + 1,
        "then served from cache"
    );
}

#[tokio::test]
async fn quarantined_uploads_are_left_out_and_pip_resolves_the_previous_version() {
    use crate::harness::{Origin, OriginFile};
    // An index that publishes upload times (PEP 700), as public indexes
    // do: a static JSON page on the counting origin, next to the wheels.
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let wheels = dir.path().join("wheels");
    std::fs::create_dir_all(&wheels).unwrap();
    let ago = |days: u64| {
        let t = std::time::SystemTime::now() - Duration::from_secs(days * 86_400);
        humantime::format_rfc3339_micros(t).to_string()
    };
    let mut files = Vec::new();
    for (version, uploaded) in [("1.0", ago(30)), ("1.1", ago(1))] {
        let path = crate::harness::pypi::build_wheel(&wheels, "tiny-dep", version, &[]);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        files.push(serde_json::json!({
            "filename": name,
            "url": format!("/files/{name}"),
            "hashes": {"sha256": crate::harness::sha256_hex(&bytes)},
            "upload-time": uploaded,
        }));
        origin.put(&format!("/files/{name}"), OriginFile::new(bytes));
    }
    let page = serde_json::json!({
        "meta": {"api-version": "1.1"}, "name": "tiny-dep", "versions": ["1.0", "1.1"], "files": files
    });
    origin.put(
        "/simple/tiny-dep/",
        OriginFile::new(page.to_string()).content_type("application/vnd.pypi.simple.v1+json"),
    );
    let remotes = format!(
        "remotes:\n  pypi:\n    base_url: \"{}\"\n    package: pypi\n    quarantine_new: true\n    quarantine_days: 7\n",
        origin.base_url()
    );
    let ad = Artifactd::start(dir.path(), &remotes, "").await;

    let json = crate::harness::pypi::simple_json(&ad, "pypi", "tiny-dep").await;
    let names: Vec<&str> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tiny_dep-1.0-py3-none-any.whl"], "{json}");
    let html = crate::harness::get_text(&client(), ad.artifact("pypi", "simple/tiny-dep/")).await;
    assert!(
        html.contains("tiny_dep-1.0-py3") && !html.contains("tiny_dep-1.1"),
        "{html}"
    );

    let target = dir.path().join("installed");
    let (ok, out) = pip_install(&ad.artifact("pypi", "simple/"), &target, &["tiny-dep"]).await;
    assert!(ok, "pip install: {out}");
    assert_eq!(
        installed_version(&target, "tiny_dep").as_deref(),
        Some("1.0")
    );
    assert_eq!(origin.hits("/files/tiny_dep-1.1-py3-none-any.whl"), 0);
}

#[tokio::test]
async fn a_virtual_repository_overlays_private_packages_on_a_remote() {
    let dir = tempfile::tempdir().unwrap();
    let server = PypiServer::start(dir.path()).await;
    server.add_wheel("tiny-dep", "1.0", &[]);
    server.add_wheel("tiny-dep", "1.1", &[]);
    // Private builds: an app only the team has, and its own tiny-dep 1.1
    // that must win over the public one.
    let private = dir.path().join("private");
    std::fs::create_dir_all(&private).unwrap();
    let make = |name: &str, version: &str, requires: &[&str]| {
        crate::harness::pypi::build_wheel(&private, name, version, requires)
    };
    let app_wheel = make("Secret.App", "1.0", &["tiny-dep>=1.1"]);
    let dep_wheel = make(
        "tiny-dep",
        "1.1",
        &["requests-never-installed; python_version<'3'"],
    );
    let remotes = format!(
        "{}  private:\n    type: local\n    package: pypi\n  all:\n    type: virtual\n    package: pypi\n    members: [private, pypi]\n",
        pypi_remote(&server, "")
    );
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let http = client();
    for wheel in [&app_wheel, &dep_wheel] {
        let name = wheel.file_name().unwrap().to_string_lossy().to_string();
        let resp = http
            .put(ad.artifact("private", &format!("packages/{name}")))
            .body(std::fs::read(wheel).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    // The local repository's index is generated from its uploads, listed
    // as soon as each upload was answered.
    let listed = http
        .get(ad.artifact("all", "simple/secret-app/"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200, "the upload is not listed yet");

    // The merged page: the private tiny-dep 1.1 wins, 1.0 comes from the
    // remote, each file links to the member that serves it.
    let page = crate::harness::pypi::simple_json(&ad, "all", "tiny-dep").await;
    let urls: Vec<&str> = page["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), 2, "{page}");
    assert!(
        urls[0].starts_with(&ad.artifact("private", "packages/tiny_dep-1.1-py3-none-any.whl")),
        "{urls:?}"
    );
    assert!(
        urls[1].starts_with(&ad.artifact("pypi", "packages/tiny_dep-1.0-py3-none-any.whl")),
        "{urls:?}"
    );

    let target = dir.path().join("installed");
    let (ok, out) = pip_install(&ad.artifact("all", "simple/"), &target, &["secret-app"]).await;
    assert!(ok, "pip install through the virtual repository: {out}");
    assert_eq!(
        installed_version(&target, "secret_app").as_deref(),
        Some("1.0")
    );
    assert_eq!(
        installed_version(&target, "tiny_dep").as_deref(),
        Some("1.1")
    );
    server.settle().await;
    assert_eq!(server.count(WHEEL_DEP_11), 0, "the private build won");
    // And a public-only dependency comes from the remote.
    let (ok, out) = pip_install(
        &ad.artifact("all", "simple/"),
        &dir.path().join("i2"),
        &["tiny-dep==1.0"],
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(server.count_reaching(WHEEL_DEP_10, 1).await, 1);
    // A plain path goes to the first member that has it.
    let resp = http
        .get(ad.artifact("all", "packages/secret_app-1.0-py3-none-any.whl"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-artifact-member"], "private");
    assert_eq!(
        resp.bytes().await.unwrap(),
        std::fs::read(&app_wheel).unwrap()
    );
    let resp = http
        .get(ad.artifact("all", "packages/none.whl"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}
