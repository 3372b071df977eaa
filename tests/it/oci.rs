//! The OCI distribution API through artifactd, against a real
//! `docker-registry` (with and without token auth) and real `skopeo`;
//! images are built with `umoci`. Upstream requests are counted from the
//! registry's access log.

use crate::harness::registry::{
    assert_dir_copy, pull_to_dir, registry_digest, Containerd, Layout, Registry,
};
use crate::harness::token::TokenIssuer;
use crate::harness::{
    client, get_bytes, get_json, pattern_bytes, sha256_hex, Artifactd, Origin, OriginFile,
};
use std::path::Path;
use std::time::{Duration, Instant};

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A docker remote `hub` in front of `upstream`, mirroring Docker Hub.
pub(crate) fn hub_remote(upstream: &str, extra: &str) -> String {
    format!(
        "remotes:\n  hub:\n    base_url: \"{upstream}\"\n    type: remote\n    package: docker\n    mirror_of: [\"docker.io\"]\n{extra}"
    )
}

/// artifactd in `dir/ad` with the remote `hub` in front of `front` (an
/// origin that forwards to a registry, with some answers of its own).
async fn hub_in_front_of(dir: &Path, front: &Origin) -> Artifactd {
    Artifactd::start(&dir.join("ad"), &hub_remote(&front.base_url(), ""), "").await
}

/// A layout with tag `app`: `layers` layers of `size` bytes each.
pub(crate) async fn app_layout(dir: &Path, layers: usize, size: usize, seed: u64) -> Layout {
    let layout = Layout::init(&dir.join("layout")).await;
    let files: Vec<(String, Vec<u8>)> = (0..layers)
        .map(|i| (format!("layer{i}"), pattern_bytes(size, seed + i as u64)))
        .collect();
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    layout.build("app", None, &files).await;
    layout
}

/// A test directory, a plain registry in it, and a layout with tag `app`
/// (see [`app_layout`]).
async fn registry_with_app(
    layers: usize,
    size: usize,
    seed: u64,
) -> (tempfile::TempDir, Registry, Layout) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None).await;
    let layout = app_layout(dir.path(), layers, size, seed).await;
    (dir, registry, layout)
}

/// The blob digests (`sha256:…`) a layout's tag references.
fn blob_digests(layout: &Layout, tag: &str) -> Vec<String> {
    let descriptor = layout.descriptor(tag);
    let digest = descriptor["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.path.join("blobs/sha256").join(&digest[7..])).unwrap(),
    )
    .unwrap();
    let mut blobs = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
    for layer in manifest["layers"].as_array().unwrap() {
        blobs.push(layer["digest"].as_str().unwrap().to_string());
    }
    blobs
}

/// The catalog's paths of remote `hub`, once at least `min` are listed.
async fn catalog_paths(ad: &Artifactd, min: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = get_json(&client(), ad.url("/artifacts/hub")).await;
        let paths: Vec<String> = list["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["path"].as_str().unwrap().to_string())
            .collect();
        if paths.len() >= min || Instant::now() > deadline {
            return paths;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn docker_ref(ad: &Artifactd, path: &str) -> String {
    format!("docker://{}/{path}", ad.addr)
}

async fn metric(ad: &Artifactd, line_start: &str) -> u64 {
    let text = crate::harness::get_text(&client(), ad.url("/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in:\n{text}"))
}

#[tokio::test]
async fn oci_docker_and_multi_arch_images_pull_then_serve_from_cache_offline() {
    let (dir, mut registry, layout) = registry_with_app(3, 300_000, 1).await;
    layout
        .build("amd", Some("app"), &[("amd", pattern_bytes(1000, 7))])
        .await;
    layout
        .build("arm", Some("app"), &[("arm", pattern_bytes(1000, 8))])
        .await;
    layout.set_arch("arm", "arm64").await;
    layout.add_index("multi", &[("amd", "amd64"), ("arm", "arm64")]);
    layout.push("app", &registry, "test/oci", &[]).await;
    layout
        .push("app", &registry, "test/docker", &["--format", "v2s2"])
        .await;
    layout
        .push("multi", &registry, "test/multi", &["--all"])
        .await;
    let oci_digest = registry_digest(&registry, "test/oci", "app", OCI_MANIFEST).await;
    let docker_digest = registry_digest(&registry, "test/docker", "app", DOCKER_MANIFEST).await;
    let index_digest = registry_digest(&registry, "test/multi", "multi", OCI_INDEX).await;
    let ad = Artifactd::start(&dir.path().join("ad"), &hub_remote(&registry.url(), ""), "").await;

    let images = [
        ("hub/test/oci:app", &oci_digest, &[][..]),
        ("hub/test/docker:app", &docker_digest, &[][..]),
        ("hub/test/multi:multi", &index_digest, &["--all"][..]),
    ];
    let copy = dir.path().join("copy");
    for (image, digest, extra) in images {
        let out = pull_to_dir(&docker_ref(&ad, image), &copy, extra).await;
        assert!(
            out.status.success(),
            "{image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_dir_copy(&copy, digest);
    }
    // Every blob of the three images was fetched from the registry once.
    for blob in blob_digests(&layout, "app") {
        assert_eq!(
            registry.gets(&format!("/test/oci/blobs/{blob}")),
            1,
            "{blob}"
        );
    }
    let cached_blobs = registry.gets("/blobs/");

    registry.stop().await;
    for (image, digest, extra) in images {
        let out = pull_to_dir(&docker_ref(&ad, image), &copy, extra).await;
        assert!(
            out.status.success(),
            "{image} offline: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_dir_copy(&copy, digest);
    }
    assert_eq!(
        registry.gets("/blobs/"),
        cached_blobs,
        "offline pulls reached the registry"
    );
}

#[tokio::test]
async fn registry_api_answers_in_oci_json() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None).await;
    let remotes = format!(
        "{}  gen:\n    base_url: \"{}\"\n    package: generic\n  limited:\n    base_url: \"{}\"\n    package: docker\n    include_patterns: [\"^allowed/\"]\n",
        hub_remote(&registry.url(), ""),
        registry.url(),
        registry.url()
    );
    let ad = Artifactd::start(&dir.path().join("ad"), &remotes, "").await;
    let http = client();
    let ping = http.get(ad.url("/v2/")).send().await.unwrap();
    assert_eq!(ping.status(), 200);
    assert_eq!(
        ping.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    assert_eq!(ping.text().await.unwrap().trim(), "{}");

    let cases = [
        ("GET", "/v2/gen/a/manifests/v1", 400, "UNSUPPORTED"),
        ("PUT", "/v2/hub/a/manifests/v1", 405, "UNSUPPORTED"),
        ("POST", "/v2/hub/a/blobs/uploads/", 405, "UNSUPPORTED"),
        ("GET", "/v2/limited/denied/app/manifests/v1", 403, "DENIED"),
        ("GET", "/v2/limited/denied/app/tags/list", 403, "DENIED"),
        (
            "GET",
            "/v2/hub/a/manifests/sha256:nothex",
            404,
            "MANIFEST_UNKNOWN",
        ),
        ("GET", "/v2/hub/Bad/manifests/v1", 400, "NAME_INVALID"),
        ("GET", "/v2/x/manifests/v1?ns=quay.io", 404, "NAME_UNKNOWN"),
        (
            "GET",
            "/v2/hub/test/missing/manifests/v1",
            404,
            "MANIFEST_UNKNOWN",
        ),
    ];
    for (method, path, status, code) in cases {
        let resp = http
            .request(method.parse().unwrap(), ad.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{method} {path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], code, "{method} {path}: {body}");
    }
    // Denials never reach the registry.
    assert_eq!(registry.gets("denied"), 0);
}

#[tokio::test]
async fn token_auth_costs_one_token_request_per_repository() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = TokenIssuer::start(&dir.path().join("issuer"), 300).await;
    let registry = Registry::start(dir.path(), Some(&issuer)).await;
    let layout = app_layout(dir.path(), 3, 100_000, 20).await;
    layout.push("app", &registry, "team/a", &[]).await;
    layout.push("app", &registry, "team/b", &[]).await;
    let digest = registry_digest_with_token(&issuer, &registry, "team/a").await;
    issuer.reset();
    let pushed = registry.requests().len();
    let remotes = hub_remote(
        &registry.url(),
        "    username: puller\n    password: pull-secret\n",
    );
    let ad = Artifactd::start(&dir.path().join("ad"), &remotes, "").await;
    let copy = dir.path().join("copy");
    for image in ["hub/team/a:app", "hub/team/b:app", "hub/team/a:app"] {
        let out = pull_to_dir(&docker_ref(&ad, image), &copy, &[]).await;
        assert!(
            out.status.success(),
            "{image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_dir_copy(&copy, &digest);
    }
    assert_eq!(
        issuer.requests_for("repository:team/a:pull"),
        1,
        "{:?}",
        issuer.requests()
    );
    assert_eq!(
        issuer.requests_for("repository:team/b:pull"),
        1,
        "{:?}",
        issuer.requests()
    );
    assert_eq!(issuer.requests().len(), 2);
    // The remote's credentials went to the token realm.
    for request in issuer.requests() {
        assert_eq!(
            request.authorization.as_deref(),
            Some("Basic cHVsbGVyOnB1bGwtc2VjcmV0")
        );
    }
    // Each blob came from the registry once, with a token: team/b shares
    // every blob with team/a, so its pull needed only its manifest.
    for blob in blob_digests(&layout, "app") {
        assert_eq!(registry.gets(&format!("/blobs/{blob}")), 1, "{blob}");
    }
    assert_eq!(registry.gets("/team/b/blobs/"), 0);
    // Only the first request met a challenge; later repositories of the
    // same registry got their token before asking.
    let refused = registry.requests()[pushed..]
        .iter()
        .filter(|r| r.status == 401)
        .count();
    assert_eq!(refused, 1, "{:?}", &registry.requests()[pushed..]);
}

/// The manifest digest of `repository:app` on a token-auth registry.
async fn registry_digest_with_token(
    issuer: &TokenIssuer,
    registry: &Registry,
    repository: &str,
) -> String {
    let token: serde_json::Value = get_json(
        &client(),
        format!(
            "http://{}/token?service=x&scope=repository:{repository}:pull",
            issuer.addr
        ),
    )
    .await;
    let resp = client()
        .head(format!("{}/v2/{repository}/manifests/app", registry.url()))
        .header("accept", OCI_MANIFEST)
        .bearer_auth(token["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_layer_shared_by_two_images_is_fetched_and_stored_once() {
    let (dir, registry, layout) = registry_with_app(1, 400_000, 30).await;
    layout
        .build("one", Some("app"), &[("one", pattern_bytes(5000, 31))])
        .await;
    layout
        .build("two", Some("app"), &[("two", pattern_bytes(5000, 32))])
        .await;
    layout.push("one", &registry, "shared/one", &[]).await;
    layout.push("two", &registry, "shared/two", &[]).await;
    let base = blob_digests(&layout, "app")[1].clone();
    assert!(
        blob_digests(&layout, "one").contains(&base)
            && blob_digests(&layout, "two").contains(&base)
    );
    let ad = Artifactd::start(&dir.path().join("ad"), &hub_remote(&registry.url(), ""), "").await;
    let copy = dir.path().join("copy");
    for image in ["hub/shared/one:one", "hub/shared/two:two"] {
        let out = pull_to_dir(&docker_ref(&ad, image), &copy, &[]).await;
        assert!(
            out.status.success(),
            "{image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        registry.gets(&format!("/blobs/{base}")),
        1,
        "shared layer fetched once"
    );
    let paths = catalog_paths(&ad, 1).await;
    let stored = paths
        .iter()
        .filter(|p| **p == format!("blobs/{base}"))
        .count();
    assert_eq!(stored, 1, "{paths:?}");
}

#[tokio::test]
async fn pull_by_tag_then_by_digest_sends_nothing_upstream() {
    let (dir, registry, layout) = registry_with_app(2, 50_000, 40).await;
    layout.push("app", &registry, "pin/app", &[]).await;
    let digest = registry_digest(&registry, "pin/app", "app", OCI_MANIFEST).await;
    let ad = Artifactd::start(&dir.path().join("ad"), &hub_remote(&registry.url(), ""), "").await;
    let copy = dir.path().join("copy");
    let out = pull_to_dir(&docker_ref(&ad, "hub/pin/app:app"), &copy, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The cross-link is stored in the background.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = registry.requests().len();
    let out = pull_to_dir(
        &docker_ref(&ad, &format!("hub/pin/app@{digest}")),
        &copy,
        &[],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_dir_copy(&copy, &digest);
    assert_eq!(
        registry.requests().len(),
        before,
        "{:?}",
        &registry.requests()[before..]
    );
    // The manifest by digest carries its registry headers from cache.
    let resp = client()
        .head(ad.url(&format!("/v2/hub/pin/app/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(resp.headers()["content-type"], OCI_MANIFEST);
    assert_eq!(resp.headers()["x-artifact-source"], "cache");
    assert!(
        resp.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn wrong_bytes_for_a_digest_fail_the_transfer_and_commit_nothing() {
    let (dir, registry, layout) = registry_with_app(2, 200_000, 50).await;
    layout.push("app", &registry, "bad/app", &[]).await;
    let blob = blob_digests(&layout, "app")[1].clone();
    let front = Origin::start().await;
    front.forward_to(&registry.url());
    let blob_path = format!("/v2/bad/app/blobs/{blob}");
    let good = std::fs::read(layout.path.join("blobs/sha256").join(&blob[7..])).unwrap();
    let mut wrong = good.clone();
    wrong[1000] ^= 0xff;
    front.put(&blob_path, OriginFile::new(wrong));
    let ad = hub_in_front_of(dir.path(), &front).await;

    let resp = client()
        .get(ad.url(&format!("/v2/hub/bad/app/blobs/{blob}")))
        .send()
        .await
        .unwrap();
    // Headers usually go out before the body is known bad (200, then a
    // cut transfer); when the whole body arrives before they are sent (a
    // small blob behind a slower store), the client gets a 502 instead.
    let status = resp.status();
    assert!(status == 200 || status == 502, "{status}");
    let body = resp.bytes().await;
    assert!(
        body.as_ref().map_or(true, |b| b.len() < good.len()),
        "the client's transfer must not complete"
    );
    let copy = dir.path().join("copy");
    let out = pull_to_dir(&docker_ref(&ad, "hub/bad/app:app"), &copy, &[]).await;
    assert!(!out.status.success(), "skopeo must fail on the wrong blob");
    assert_eq!(
        metric(&ad, "artifactd_digest_mismatches_total{remote=\"hub\"}").await,
        2
    );
    assert!(ad.log_text().contains(&format!("expected {blob}")));
    let paths = catalog_paths(&ad, 1).await;
    assert!(!paths.contains(&format!("blobs/{blob}")), "{paths:?}");

    // A correct upstream again: the pull succeeds and the blob is fetched anew.
    front.remove(&blob_path);
    let fetched = front.hits(&blob_path);
    let out = pull_to_dir(&docker_ref(&ad, "hub/bad/app:app"), &copy, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(front.hits(&blob_path), fetched + 1);
    let digest = registry_digest(&registry, "bad/app", "app", OCI_MANIFEST).await;
    assert_dir_copy(&copy, &digest);
}

#[tokio::test]
async fn a_blob_redirected_to_another_host_gets_no_credentials() {
    let (dir, registry, layout) = registry_with_app(1, 150_000, 60).await;
    layout.push("app", &registry, "cdn/app", &[]).await;
    let blob = blob_digests(&layout, "app")[1].clone();
    let bytes = std::fs::read(layout.path.join("blobs/sha256").join(&blob[7..])).unwrap();
    let storage = Origin::start().await;
    storage.put("/blob-storage/layer", OriginFile::new(bytes.clone()));
    let front = Origin::start().await;
    front.forward_to(&registry.url());
    let blob_path = format!("/v2/cdn/app/blobs/{blob}");
    front.put(
        &blob_path,
        OriginFile::temporary_redirect(&format!("{}/blob-storage/layer", storage.base_url())),
    );
    let remotes = hub_remote(&front.base_url(), "    username: u\n    password: p\n");
    let ad = Artifactd::start(&dir.path().join("ad"), &remotes, "").await;
    let url = ad.url(&format!("/v2/hub/cdn/app/blobs/{blob}"));
    for source in ["remote", "cache"] {
        let resp = client().get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-artifact-source"], source);
        assert_eq!(resp.headers()["docker-content-digest"], blob.as_str());
        assert_eq!(sha256_hex(&resp.bytes().await.unwrap()), &blob[7..]);
    }
    assert_eq!(storage.hits("/blob-storage/layer"), 1);
    let front_saw = front.requests();
    assert!(front_saw.iter().any(|r| r
        .headers
        .get("authorization")
        .is_some_and(|a| a.starts_with("Basic "))));
    for request in storage.requests() {
        assert_eq!(
            request.headers.get("authorization"),
            None,
            "credentials leaked to the redirect target"
        );
    }
}

#[tokio::test]
async fn concurrent_cold_pulls_fetch_each_blob_once() {
    let (dir, registry, layout) = registry_with_app(4, 1_000_000, 70).await;
    layout.push("app", &registry, "herd/app", &[]).await;
    let digest = registry_digest(&registry, "herd/app", "app", OCI_MANIFEST).await;
    let ad = Artifactd::start(&dir.path().join("ad"), &hub_remote(&registry.url(), ""), "").await;
    let pulls = (0..5).map(|i| {
        let reference = docker_ref(&ad, "hub/herd/app:app");
        let copy = dir.path().join(format!("copy{i}"));
        async move { (pull_to_dir(&reference, &copy, &[]).await, copy) }
    });
    for (out, copy) in futures::future::join_all(pulls).await {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_dir_copy(&copy, &digest);
    }
    let log = ad.log_text();
    for blob in blob_digests(&layout, "app") {
        let seen: Vec<&str> = log.lines().filter(|l| l.contains(&blob)).collect();
        assert_eq!(
            registry.gets(&format!("/blobs/{blob}")),
            1,
            "{blob}:\n{seen:#?}"
        );
    }
}

#[tokio::test]
async fn tag_manifests_go_stale_within_the_period_and_keep_their_accept_class() {
    let (dir, mut registry, layout) = registry_with_app(1, 10_000, 80).await;
    layout
        .push("app", &registry, "acc/docker", &["--format", "v2s2"])
        .await;
    layout.push("app", &registry, "acc/oci", &[]).await;
    let remotes = hub_remote(
        &registry.url(),
        "    cache:\n      mutable_ttl: 1\n      stale_if_error: 4\n",
    );
    let ad = Artifactd::start(&dir.path().join("ad"), &remotes, "").await;
    let http = client();
    let get = |path: &str, accept: &str| http.get(ad.url(path)).header("accept", accept).send();
    // One tag, two Accept classes: neither client gets the other's manifest.
    let docker = get("/v2/hub/acc/docker/manifests/app", DOCKER_MANIFEST)
        .await
        .unwrap();
    assert_eq!(docker.status(), 200);
    assert_eq!(docker.headers()["content-type"], DOCKER_MANIFEST);
    let oci_only = get("/v2/hub/acc/docker/manifests/app", OCI_MANIFEST)
        .await
        .unwrap();
    // The registry converts a Docker v2 manifest to schema 1 for a client
    // that does not accept v2: a whole manifest, never the cached v2 one.
    assert_eq!(oci_only.status(), 200);
    let oci_only_type = oci_only.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(oci_only_type, DOCKER_MANIFEST);
    let converted: serde_json::Value = oci_only.json().await.expect("a complete manifest");
    assert_eq!(converted["schemaVersion"], 1);
    assert_eq!(
        registry.gets("/acc/docker/manifests/app"),
        2,
        "each class fetched for itself"
    );
    let oci = get("/v2/hub/acc/oci/manifests/app", OCI_MANIFEST)
        .await
        .unwrap();
    assert_eq!(oci.headers()["content-type"], OCI_MANIFEST);
    // And the reverse: the cached OCI manifest is not handed to a client
    // that accepts only Docker's format (this registry answers it 404).
    let docker_only = get("/v2/hub/acc/oci/manifests/app", DOCKER_MANIFEST)
        .await
        .unwrap();
    assert_ne!(
        docker_only
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap()),
        Some(OCI_MANIFEST)
    );
    assert_eq!(registry.gets("/acc/oci/manifests/app"), 2);
    let oci_digest = oci.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string();
    let cached = get("/v2/hub/acc/docker/manifests/app", DOCKER_MANIFEST)
        .await
        .unwrap();
    assert_eq!(cached.headers()["x-artifact-source"], "cache");
    assert_eq!(cached.headers()["content-type"], DOCKER_MANIFEST);

    registry.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stale = get("/v2/hub/acc/oci/manifests/app", OCI_MANIFEST)
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.headers()["x-artifact-source"], "cache");
    assert!(stale.headers().contains_key("x-artifact-stale"));
    assert_eq!(
        stale.headers()["docker-content-digest"],
        oci_digest.as_str()
    );
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let expired = get("/v2/hub/acc/oci/manifests/app", OCI_MANIFEST)
        .await
        .unwrap();
    assert!(expired.status().is_server_error(), "{}", expired.status());
    let body: serde_json::Value = expired.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
}

#[tokio::test]
async fn docker_hub_mirror_requests_get_library_names() {
    let (dir, registry, layout) = registry_with_app(1, 10_000, 90).await;
    layout.push("app", &registry, "library/alpine", &[]).await;
    let digest = registry_digest(&registry, "library/alpine", "app", OCI_MANIFEST).await;
    let ad = Artifactd::start(&dir.path().join("ad"), &hub_remote(&registry.url(), ""), "").await;
    // dockerd's registry-mirrors (no ns), containerd's ns, and the remote path.
    for path in [
        "/v2/alpine/manifests/app",
        "/v2/alpine/manifests/app?ns=docker.io",
        "/v2/library/alpine/manifests/app?ns=docker.io",
        "/v2/hub/alpine/manifests/app",
    ] {
        let resp = client()
            .get(ad.url(path))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            resp.headers()["docker-content-digest"],
            digest.as_str(),
            "{path}"
        );
    }
    assert_eq!(
        registry.gets("/v2/library/alpine/manifests/app"),
        1,
        "one cache entry for all forms"
    );
}

#[tokio::test]
async fn containerd_pulls_through_ns_and_override_path_mirrors() {
    let (dir, mut registry, layout) = registry_with_app(2, 200_000, 100).await;
    layout.push("app", &registry, "library/web", &[]).await;
    layout.push("app", &registry, "team/api", &[]).await;
    let digest = registry_digest(&registry, "library/web", "app", OCI_MANIFEST).await;
    let remotes = format!(
        "{}  locked:\n    base_url: \"{}\"\n    package: docker\n    include_patterns: [\"^team/\"]\n",
        hub_remote(&registry.url(), ""),
        registry.url()
    );
    let ad = Artifactd::start(&dir.path().join("ad"), &remotes, "").await;
    let containerd = Containerd::start(dir.path()).await;
    // (b) a mirror_of registry: containerd sends ?ns=docker.io; (a)
    // override_path onto /v2/{remote}, for registries no remote lists.
    containerd.mirror(
        &format!("http://{}", ad.addr),
        &["docker.io", "mirror.test=hub", "locked.test=locked"],
    );

    for reference in ["docker.io/library/web:app", "mirror.test/team/api:app"] {
        let out = containerd.pull(reference).await;
        assert!(
            out.status.success(),
            "{reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            containerd.image_digest(reference).await,
            digest,
            "{reference}"
        );
    }
    let log = ad.log_text();
    assert!(
        log.contains("/v2/library/web/manifests/app\" remote=hub"),
        "{log}"
    );
    assert!(
        log.contains("/v2/hub/team/api/manifests/app\" remote=hub"),
        "{log}"
    );
    // Both images share every blob: each was fetched from the registry once.
    for blob in blob_digests(&layout, "app") {
        assert_eq!(registry.gets(&format!("/blobs/{blob}")), 1, "{blob}");
    }

    // containerd resolves tags with HEAD only; artifactd cached them anyway,
    // so with the registry gone the tag still resolves.
    wait_for_get(&registry, "/v2/library/web/manifests/app").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let socket = containerd.socket();
    crate::harness::registry::run(
        "ctr",
        &["-a", &socket, "images", "rm", "docker.io/library/web:app"],
    )
    .await;
    let before_offline = registry.requests().len();
    registry.stop().await;
    let out = containerd.pull("docker.io/library/web:app").await;
    assert!(
        out.status.success(),
        "offline: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(registry.requests().len(), before_offline);

    // A denied image: containerd's pull fails, and the answer is OCI JSON.
    let out = containerd.pull("locked.test/library/web:app").await;
    assert!(!out.status.success());
    let resp = client()
        .get(ad.url("/v2/locked/library/web/manifests/app"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED");
    // Denied before any upstream request (the registry is down by now, so
    // artifactd's own log tells).
    let log = ad.log_text();
    let locked: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("remote=locked"))
        .collect();
    assert!(!locked.is_empty(), "{locked:?}");
    assert!(
        locked
            .iter()
            .all(|l| l.contains("status=403") && !l.contains("source=miss")),
        "{locked:?}"
    );
}

#[tokio::test]
async fn tag_lists_pass_their_query_on_and_are_cached_per_query() {
    let (dir, registry, layout) = registry_with_app(1, 1000, 110).await;
    for tag in ["a", "b", "c"] {
        layout.build(tag, Some("app"), &[]).await;
        layout.push(tag, &registry, "paged/app", &[]).await;
    }
    let ad = Artifactd::start(&dir.path().join("ad"), &hub_remote(&registry.url(), ""), "").await;
    let http = client();
    for query in ["", "?n=2", "?n=2&last=a", "?n=2"] {
        let list = get_json(
            &http,
            ad.url(&format!("/v2/hub/paged/app/tags/list{query}")),
        )
        .await;
        let mut tags: Vec<&str> = list["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        tags.sort();
        // This registry (2.8) answers every page whole; later ones paginate.
        assert_eq!(tags, ["a", "b", "c"], "{query}");
    }
    let lists: Vec<String> = registry
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains("/tags/list"))
        .map(|r| r.path)
        .collect();
    assert_eq!(
        lists,
        [
            "/v2/paged/app/tags/list",
            "/v2/paged/app/tags/list?n=2",
            "/v2/paged/app/tags/list?n=2&last=a"
        ],
        "each query asked once, passed on as sent"
    );
}

/// Waits until the registry has answered a GET for a path containing `needle`.
async fn wait_for_get(registry: &Registry, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry.gets(needle) == 0 {
        assert!(
            Instant::now() < deadline,
            "no GET of {needle} reached the registry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn tags_that_clients_only_head_are_cached_and_served_offline() {
    let (dir, mut registry, layout) = registry_with_app(1, 10_000, 120).await;
    layout.push("app", &registry, "head/app", &[]).await;
    let digest = registry_digest(&registry, "head/app", "app", OCI_MANIFEST).await;
    let remotes = hub_remote(
        &registry.url(),
        "    cache:\n      mutable_ttl: 2\n      stale_if_error: 4\n",
    );
    let ad = Artifactd::start(&dir.path().join("ad"), &remotes, "").await;
    let http = client();
    let head = || {
        http.head(ad.url("/v2/hub/head/app/manifests/app"))
            .header("accept", OCI_MANIFEST)
            .send()
    };
    let first = head().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-artifact-source"], "remote");
    assert_eq!(first.headers()["docker-content-digest"], digest.as_str());
    // artifactd fetched the tag itself in the background.
    wait_for_get(&registry, "/head/app/manifests/app").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    registry.stop().await;

    let cached = head().await.unwrap();
    assert_eq!(cached.status(), 200);
    assert_eq!(cached.headers()["x-artifact-source"], "cache");
    assert_eq!(cached.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(cached.headers()["content-type"], OCI_MANIFEST);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let expired = head().await.unwrap();
    assert_eq!(expired.status(), 200, "within the stale period");
    assert_eq!(expired.headers()["docker-content-digest"], digest.as_str());
    assert!(expired.headers().contains_key("x-artifact-stale"));
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let gone = head().await.unwrap();
    assert!(gone.status().is_server_error(), "{}", gone.status());
}

#[tokio::test]
async fn a_rate_limited_upstream_serves_tags_stale_and_answers_toomanyrequests() {
    let (dir, registry, layout) = registry_with_app(1, 5_000, 130).await;
    layout.push("app", &registry, "limited/app", &[]).await;
    let front = Origin::start().await;
    front.forward_to(&registry.url());
    let remotes = hub_remote(
        &front.base_url(),
        "    cache:\n      mutable_ttl: 1\n      stale_if_error: 60\n",
    );
    let ad = Artifactd::start(&dir.path().join("ad"), &remotes, "").await;
    let http = client();
    let url = ad.url("/v2/hub/limited/app/manifests/app");
    let fresh = http
        .get(&url)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200);
    let digest = fresh.headers()["docker-content-digest"].clone();
    // Docker Hub's usual failure: 429 with Retry-After.
    front.put("/v2/limited/app/manifests/app", OriginFile::failing(429));
    front.put("/v2/limited/other/manifests/app", OriginFile::failing(429));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stale = http
        .get(&url)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.headers()["docker-content-digest"], digest);
    assert_eq!(stale.headers()["x-artifact-stale"], "upstream status 429");
    let refused = http
        .get(ad.url("/v2/hub/limited/other/manifests/app"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS", "{body}");
}

#[tokio::test]
async fn manifests_without_registry_headers_get_them_from_their_body_once_cached() {
    let (dir, registry, layout) = registry_with_app(1, 5_000, 140).await;
    let digest = layout.descriptor("app")["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = std::fs::read(layout.path.join("blobs/sha256").join(&digest[7..])).unwrap();
    // An upstream that labels a manifest as plain bytes, with no digest.
    let front = Origin::start().await;
    front.forward_to(&registry.url());
    front.put(
        "/v2/bare/app/manifests/app",
        OriginFile::new(manifest.clone()),
    );
    let ad = hub_in_front_of(dir.path(), &front).await;
    let http = client();
    let url = ad.url("/v2/hub/bare/app/manifests/app");
    let first = http
        .get(&url)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.bytes().await.unwrap(), manifest);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for method in ["GET", "HEAD"] {
        let hit = http
            .request(method.parse().unwrap(), &url)
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(hit.headers()["x-artifact-source"], "cache", "{method}");
        assert_eq!(hit.headers()["content-type"], OCI_MANIFEST, "{method}");
        assert_eq!(
            hit.headers()["docker-content-digest"],
            digest.as_str(),
            "{method}"
        );
        assert_eq!(
            hit.headers()["content-length"],
            manifest.len().to_string().as_str(),
            "{method}"
        );
    }
    // The cross-linked copy by digest carries them too.
    let by_digest = http
        .get(ad.url(&format!("/v2/hub/bare/app/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(by_digest.headers()["x-artifact-source"], "cache");
    assert_eq!(by_digest.headers()["content-type"], OCI_MANIFEST);
    assert_eq!(by_digest.bytes().await.unwrap(), manifest);
}

#[tokio::test]
async fn warm_caches_every_manifest_and_blob_of_an_image() {
    let (dir, mut registry, layout) = registry_with_app(2, 200_000, 5).await;
    layout
        .build("amd", Some("app"), &[("amd", pattern_bytes(1000, 17))])
        .await;
    layout
        .build("arm", Some("app"), &[("arm", pattern_bytes(1000, 18))])
        .await;
    layout.set_arch("arm", "arm64").await;
    layout.add_index("multi", &[("amd", "amd64"), ("arm", "arm64")]);
    layout
        .push("multi", &registry, "test/multi", &["--all"])
        .await;
    let index_digest = registry_digest(&registry, "test/multi", "multi", OCI_INDEX).await;
    let ad = Artifactd::start(&dir.path().join("ad"), &hub_remote(&registry.url(), ""), "").await;

    let (code, stdout, stderr) =
        crate::harness::artifactd_cli(&ad, None, &["warm", "--remote", "hub", "test/multi:multi"])
            .await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let blobs: std::collections::HashSet<String> = ["amd", "arm"]
        .into_iter()
        .flat_map(|tag| blob_digests(&layout, tag))
        .collect();
    for blob in &blobs {
        assert_eq!(
            registry.gets(&format!("/test/multi/blobs/{blob}")),
            1,
            "{blob}"
        );
    }
    // index + two platform manifests + every distinct blob
    assert!(
        stdout.contains(&format!("warmed {} objects", 3 + blobs.len())),
        "{stdout}"
    );

    // A client's pull after the warm takes every blob from the cache. (Its
    // tag manifest request may still go upstream: tag manifests are cached
    // per Accept class, and the client's differs from warm's.)
    let blob_gets = registry.gets("/blobs/");
    let copy = dir.path().join("copy");
    let out = pull_to_dir(&docker_ref(&ad, "hub/test/multi:multi"), &copy, &["--all"]).await;
    assert!(
        out.status.success(),
        "pull after warm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_dir_copy(&copy, &index_digest);
    assert_eq!(registry.gets("/blobs/"), blob_gets, "no blob fetched again");
    registry.stop().await;
}

/// `/api/v1/remote/{docker remote}/…` is the registry API as `/v2/{remote}/…`
/// serves it: a manifest asked without `Accept` gets the registry's media
/// types asked upstream, a blob shared by two repositories is fetched once,
/// and a blob whose bytes do not match its digest is refused.
#[tokio::test]
async fn a_docker_remote_through_the_artifact_route_is_the_registry_api() {
    let (dir, registry, layout) = registry_with_app(2, 100_000, 70).await;
    layout.push("app", &registry, "team/one", &[]).await;
    layout.push("app", &registry, "team/two", &[]).await;
    let digest = registry_digest(&registry, "team/one", "app", OCI_MANIFEST).await;
    let blobs = blob_digests(&layout, "app");
    let front = Origin::start().await;
    front.forward_to(&registry.url());
    let bad_blob = &blobs[2];
    let good = std::fs::read(layout.path.join("blobs/sha256").join(&bad_blob[7..])).unwrap();
    let mut wrong = good.clone();
    wrong[500] ^= 0xff;
    front.put(
        &format!("/v2/team/bad/blobs/{bad_blob}"),
        OriginFile::new(wrong),
    );
    let ad = hub_in_front_of(dir.path(), &front).await;
    let http = client();

    let manifest = http
        .get(ad.artifact("hub", "team/one/manifests/app"))
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), 200);
    assert_eq!(manifest.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(
        format!("sha256:{}", sha256_hex(&manifest.bytes().await.unwrap())),
        digest
    );
    let asked = front.requests();
    let upstream_get = asked
        .iter()
        .find(|r| r.path.contains("/team/one/manifests/app"))
        .unwrap();
    let accept = upstream_get
        .headers
        .get("accept")
        .cloned()
        .unwrap_or_default();
    assert!(accept.contains(OCI_MANIFEST), "{accept:?}");

    // The tampered copy first: nothing of it is kept, so the good one is
    // fetched below.
    let tampered = http
        .get(ad.artifact("hub", &format!("team/bad/blobs/{bad_blob}")))
        .send()
        .await
        .unwrap();
    let body = tampered.bytes().await;
    assert!(
        body.as_ref().map_or(true, |b| b.len() < good.len()),
        "a tampered blob must not complete"
    );
    assert_eq!(
        metric(&ad, "artifactd_digest_mismatches_total{remote=\"hub\"}").await,
        1
    );
    for repository in ["team/one", "team/two"] {
        for blob in &blobs {
            let path = format!("{repository}/blobs/{blob}");
            let body = get_bytes(&http, ad.artifact("hub", &path)).await;
            assert_eq!(format!("sha256:{}", sha256_hex(&body)), *blob, "{path}");
        }
    }
    for blob in &blobs {
        assert_eq!(
            registry.gets(&format!("/blobs/{blob}")),
            1,
            "{blob} fetched once"
        );
    }
}

#[tokio::test]
async fn signatures_follow_their_image_and_verify_offline() {
    use crate::harness::pypi::python_tool;
    let (dir, mut registry, layout) = registry_with_app(1, 2000, 41).await;
    layout.push("app", &registry, "team/app", &[]).await;
    let digest = registry_digest(&registry, "team/app", "app", OCI_MANIFEST).await;
    let size = layout.descriptor("app")["size"]
        .as_u64()
        .unwrap()
        .to_string();
    let work = dir.path().join("sign");
    std::fs::create_dir_all(&work).unwrap();
    let args = [
        registry.host(),
        "team/app".into(),
        digest.clone(),
        OCI_MANIFEST.into(),
        size,
        work.display().to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = python_tool("oras_sign.py", &args).await;
    assert!(ok, "oras push of the signature: {out}");
    let signature = out.trim().lines().last().unwrap().to_string();
    let payload = std::fs::read(work.join("payload.json")).unwrap();
    let payload_digest = format!("sha256:{}", sha256_hex(&payload));
    let remotes = hub_remote(&registry.url(), "    follow_signatures: true\n");
    let ad = Artifactd::start(&dir.path().join("ad"), &remotes, "").await;

    // Only the image is pulled; its signature follows in the background.
    let copy = dir.path().join("copy");
    let out = pull_to_dir(&docker_ref(&ad, "hub/team/app:app"), &copy, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tag = format!("sha256-{}", &digest[7..]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let fetched = |path: String| registry.gets(&format!("/team/app/{path}"));
    let followed = || {
        [
            format!("blobs/{payload_digest}"),
            format!("manifests/{tag}.sig"),
            format!("manifests/{signature}"),
            format!("manifests/{tag}.att"),
        ]
        .into_iter()
        .all(|path| fetched(path) > 0)
            && fetched(format!("manifests/{tag}.sig")) == 2
    };
    while !followed() {
        assert!(
            Instant::now() < deadline,
            "the signature never followed:\n{}",
            registry.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once per `Accept` form: every manifest type, and the type it has.
    assert_eq!(fetched(format!("manifests/{tag}.sig")), 2);
    assert_eq!(fetched(format!("manifests/{signature}")), 1);
    // Settled: the walk's last fetch has been committed.
    tokio::time::sleep(Duration::from_millis(500)).await;

    registry.stop().await;
    let base = "/v2/hub/team/app";
    // As cosign asks (every manifest type: no `Accept` says the same).
    let signature_manifest = client()
        .get(ad.url(&format!("{base}/manifests/{tag}.sig")))
        .send()
        .await
        .unwrap();
    assert_eq!(signature_manifest.status(), 200);
    let manifest: serde_json::Value = signature_manifest.json().await.unwrap();
    assert_eq!(manifest["subject"]["digest"], digest.as_str());
    assert_eq!(
        manifest["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"],
        "MEUCIQDtest"
    );
    let referrers = get_json(&client(), ad.url(&format!("{base}/manifests/{tag}"))).await;
    assert_eq!(referrers["manifests"][0]["digest"], signature.as_str());
    let by_digest = client()
        .get(ad.url(&format!("{base}/manifests/{signature}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(by_digest.status(), 200);
    let blob = get_bytes(&client(), ad.url(&format!("{base}/blobs/{payload_digest}"))).await;
    assert_eq!(blob, payload);
    // A client that pulls the signature as an artifact gets it too.
    let host = ad.addr.to_string();
    let pulled = dir.path().join("pulled");
    let reference = format!("{host}/hub/team/app:{tag}.sig");
    let (ok, out) = python_tool(
        "oras_chart.py",
        &["pull", &host, &reference, pulled.to_str().unwrap()],
    )
    .await;
    assert!(ok, "oras pull of the signature offline: {out}");
    assert_eq!(std::fs::read(pulled.join("payload.json")).unwrap(), payload);
    let out = pull_to_dir(&docker_ref(&ad, "hub/team/app:app"), &copy, &[]).await;
    assert!(
        out.status.success(),
        "the image offline: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_dir_copy(&copy, &digest);
}

/// Image rules name a repository and tags (globs) or digests: a refused
/// tag or digest gets the registry's `DENIED` error, naming the rule, and
/// is never asked of the upstream; the repository's other tags pull.
#[tokio::test]
async fn deny_rules_refuse_image_tags_and_digests_in_registry_words() {
    let (dir, registry, layout) = registry_with_app(1, 20_000, 60).await;
    layout
        .build("bad-1", None, &[("payload", pattern_bytes(20_000, 61))])
        .await;
    layout
        .build("v1", None, &[("other", pattern_bytes(20_000, 62))])
        .await;
    layout.push("app", &registry, "pin/app", &[]).await;
    layout.push("bad-1", &registry, "pin/app", &[]).await;
    layout.push("v1", &registry, "pin/other", &[]).await;
    let digest = registry_digest(&registry, "pin/other", "v1", OCI_MANIFEST).await;
    let firewall = format!(
        "firewall:\n  rules:\n    - name: image-policy\n      deny:\n        - {{ecosystem: docker, package: pin/app, versions: [\"bad-*\"]}}\n        - {{ecosystem: docker, package: pin/other, versions: [\"{digest}\"]}}\n"
    );
    let ad = Artifactd::start(
        &dir.path().join("ad"),
        &hub_remote(&registry.url(), ""),
        &firewall,
    )
    .await;

    let copy = dir.path().join("copy");
    let out = pull_to_dir(&docker_ref(&ad, "hub/pin/app:app"), &copy, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = pull_to_dir(&docker_ref(&ad, "hub/pin/app:bad-1"), &copy, &[]).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("image-policy"), "{stderr}");

    // A tag is judged by its own name, and again by the digest it
    // resolves to: `pin/other:v1` is the refused digest.
    let by_tag = pull_to_dir(&docker_ref(&ad, "hub/pin/other:v1"), &copy, &[]).await;
    assert!(!by_tag.status.success());
    let references = [
        "pin/app/manifests/bad-1".to_string(),
        format!("pin/other/manifests/{digest}"),
        "pin/other/manifests/v1".to_string(),
    ];
    for reference in &references {
        let resp = client()
            .get(ad.url(&format!("/v2/hub/{reference}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{reference}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("'image-policy'"), "{message}");
    }
    assert_eq!(registry.gets("manifests/bad-1"), 0);
    assert_eq!(registry.gets(&format!("manifests/{digest}")), 0);
    // No layer of the refused image was fetched.
    for blob in blob_digests(&layout, "v1") {
        assert_eq!(registry.gets(&blob), 0, "{blob}");
    }
}
