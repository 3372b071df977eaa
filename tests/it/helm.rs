//! Helm remotes: `index.yaml` rewritten so every chart comes back through
//! artifactd, and charts verified against their `digest`. No helm client
//! is installable on these machines, so the client side is what helm
//! does: read the index, fetch each chart URL, check the digest and read
//! the archive (`tar`).

use crate::harness::{client, sha256_hex, Artifactd, Origin, OriginFile};

/// A chart archive as `helm package` lays it out: `NAME/Chart.yaml`.
fn chart(dir: &std::path::Path, name: &str, version: &str) -> Vec<u8> {
    let chart_yaml = format!(
        "apiVersion: v2
name: {name}
version: {version}
type: application
"
    );
    crate::harness::tar_gz(dir, &[(&format!("{name}/Chart.yaml"), &chart_yaml)])
}

fn tar_lists(archive: &[u8], dir: &std::path::Path) -> String {
    let path = dir.join("fetched.tgz");
    std::fs::write(&path, archive).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "not a gzip tar");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn index_links_every_chart_through_artifactd_and_charts_verify() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let old = chart(dir.path(), "demo", "0.1.0");
    let new = chart(dir.path(), "demo", "0.2.0");
    origin.put("/charts/demo-0.2.0.tgz", OriginFile::new(new.clone()));
    origin.put(
        "/charts/archive/demo-0.1.0.tgz",
        OriginFile::new(old.clone()),
    );
    // One relative and one absolute chart URL, as real indexes mix them.
    let index = format!(
        "apiVersion: v1\nentries:\n  demo:\n  - apiVersion: v2\n    name: demo\n    version: 0.2.0\n    created: \"2026-11-01T00:00:00Z\"\n    digest: {}\n    urls:\n    - demo-0.2.0.tgz\n  - apiVersion: v2\n    name: demo\n    version: 0.1.0\n    created: \"2026-01-01T00:00:00Z\"\n    digest: {}\n    urls:\n    - {}/charts/archive/demo-0.1.0.tgz\ngenerated: \"2026-11-01T00:00:00Z\"\n",
        sha256_hex(&new),
        sha256_hex(&old),
        origin.base_url()
    );
    origin.put(
        "/charts/index.yaml",
        OriginFile::new(index).content_type("application/x-yaml"),
    );
    let remotes = format!(
        "remotes:\n  charts:\n    base_url: \"{}/charts\"\n    package: helm\n    immutable_patterns:\n      - \"\\\\.tgz$\"\n",
        origin.base_url()
    );
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let http = client();

    let text = crate::harness::get_text(&http, ad.artifact("charts", "index.yaml")).await;
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let versions = doc["entries"]["demo"].as_sequence().unwrap();
    assert_eq!(versions.len(), 2);
    for version in versions {
        let url = version["urls"][0].as_str().unwrap();
        assert!(url.starts_with(&ad.artifact("charts", "")), "{url}");
        let digest = version["digest"].as_str().unwrap();
        let resp = http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        let body = resp.bytes().await.unwrap();
        assert_eq!(sha256_hex(&body), digest, "{url}");
        assert!(tar_lists(&body, dir.path()).contains("demo/Chart.yaml"));
    }
    assert_eq!(origin.hits("/charts/demo-0.2.0.tgz"), 1);
    assert_eq!(origin.hits("/charts/archive/demo-0.1.0.tgz"), 1);

    // A chart the upstream changed under its published digest is refused
    // and not stored; the right bytes afterwards are.
    let other = chart(dir.path(), "demo", "0.2.0-tampered");
    let flush = http
        .put(ad.url("/cache/flush?remote=charts"))
        .send()
        .await
        .unwrap();
    assert_eq!(flush.status(), 200);
    let _ = crate::harness::get_text(&http, ad.artifact("charts", "index.yaml")).await;
    origin.put("/charts/demo-0.2.0.tgz", OriginFile::new(other.clone()));
    let url = ad.artifact("charts", "demo-0.2.0.tgz");
    let body = http.get(&url).send().await.unwrap().bytes().await;
    assert!(
        body.map_or(true, |b| b.len() < other.len()),
        "a tampered chart never completes"
    );
    assert_eq!(crate::harness::checksum_mismatches(&ad, "charts").await, 1);
    origin.put("/charts/demo-0.2.0.tgz", OriginFile::new(new.clone()));
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.headers()["x-artifact-source"], "remote");
    assert_eq!(resp.bytes().await.unwrap(), new);
}

/// Runs `tests/tools/oras_chart.py` with the venv's Python.
async fn oras_chart(args: &[&str]) -> (bool, String) {
    crate::harness::pypi::python_tool("oras_chart.py", args).await
}

#[tokio::test]
async fn a_chart_in_an_oci_registry_pulls_through_a_docker_remote() {
    use crate::harness::registry::Registry;
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::start(dir.path(), None).await;
    let archive = chart(dir.path(), "demo", "0.3.0");
    let chart_path = dir.path().join("demo-0.3.0.tgz");
    std::fs::write(&chart_path, &archive).unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"apiVersion":"v2","name":"demo","version":"0.3.0"}"#,
    )
    .unwrap();
    let reference = format!("{}/charts/demo:0.3.0", registry.host());
    let (ok, out) = oras_chart(&[
        "push",
        &registry.host(),
        &reference,
        chart_path.to_str().unwrap(),
        config.to_str().unwrap(),
    ])
    .await;
    assert!(ok, "oras push: {out}");
    let remotes = format!(
        "remotes:\n  oci:\n    base_url: \"{}\"\n    package: docker\n",
        registry.url()
    );
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let host = format!("127.0.0.1:{}", ad.addr.port());
    let through = format!("{host}/oci/charts/demo:0.3.0");

    let pulled = dir.path().join("pulled");
    let (ok, out) = oras_chart(&["pull", &host, &through, pulled.to_str().unwrap()]).await;
    assert!(ok, "oras pull through artifactd: {out}");
    assert_eq!(
        std::fs::read(pulled.join("demo-0.3.0.tgz")).unwrap(),
        archive
    );

    // Again with the registry gone: the chart is served from cache.
    registry.stop().await;
    let again = dir.path().join("again");
    let (ok, out) = oras_chart(&["pull", &host, &through, again.to_str().unwrap()]).await;
    assert!(ok, "oras pull with the registry stopped: {out}");
    assert_eq!(
        std::fs::read(again.join("demo-0.3.0.tgz")).unwrap(),
        archive
    );
}
