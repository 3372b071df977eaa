//! Alpine remotes: `APKINDEX.tar.gz` is mutable (fetched again after
//! `mutable_ttl`), `.apk` packages are immutable. No apk client is
//! installable here: the index is read with `tar`, as apk would.

use crate::harness::{client, Artifactd, Origin, OriginFile};
use std::time::Duration;

/// An `APKINDEX.tar.gz` holding an `APKINDEX` that lists `packages`.
fn apkindex(dir: &std::path::Path, packages: &[(&str, &str)]) -> Vec<u8> {
    let text: String = packages
        .iter()
        .map(|(name, version)| {
            format!(
                "P:{name}
V:{version}
A:x86_64

"
            )
        })
        .collect();
    crate::harness::tar_gz(dir, &[("APKINDEX", &text)])
}

fn index_text(archive: &[u8], dir: &std::path::Path) -> String {
    let path = dir.join("fetched-APKINDEX.tar.gz");
    std::fs::write(&path, archive).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-xzOf")
        .arg(&path)
        .arg("APKINDEX")
        .output()
        .unwrap();
    assert!(out.status.success(), "not an APKINDEX archive");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn apkindex_is_fetched_again_after_its_ttl_and_packages_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let index_path = "/alpine/v3.20/main/x86_64/APKINDEX.tar.gz";
    let apk_path = "/alpine/v3.20/main/x86_64/tiny-1.0-r0.apk";
    origin.put(
        index_path,
        OriginFile::new(apkindex(dir.path(), &[("tiny", "1.0-r0")])),
    );
    origin.put(apk_path, OriginFile::new("apk 1.0-r0"));
    // The seed's alpine example: packages immutable, APKINDEX built in.
    let remotes = format!(
        "remotes:\n  alpine:\n    base_url: \"{}/alpine\"\n    package: alpine\n    immutable_patterns:\n      - \".*/x86_64/.*\\\\.apk$\"\n    cache:\n      mutable_ttl: 1\n",
        origin.base_url()
    );
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let http = client();
    let index_url = ad.artifact("alpine", "v3.20/main/x86_64/APKINDEX.tar.gz");
    let apk_url = ad.artifact("alpine", "v3.20/main/x86_64/tiny-1.0-r0.apk");

    for _ in 0..3 {
        let body = http
            .get(&index_url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(index_text(&body, dir.path()).contains("P:tiny\nV:1.0-r0"));
        let apk = http
            .get(&apk_url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&apk[..], b"apk 1.0-r0");
    }
    assert_eq!(origin.hits(index_path), 1, "within the TTL: from cache");
    assert_eq!(origin.hits(apk_path), 1);

    // The mirror publishes a new index (and, wrongly, new bytes under an
    // existing package name): after the TTL the index is new, the package
    // is the one cached.
    origin.put(
        index_path,
        OriginFile::new(apkindex(
            dir.path(),
            &[("tiny", "1.0-r0"), ("tiny", "1.1-r0")],
        )),
    );
    origin.put(apk_path, OriginFile::new("apk 1.0-r0, rebuilt"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let resp = http.get(&index_url).send().await.unwrap();
    assert_eq!(resp.headers()["x-artifact-source"], "remote");
    let body = resp.bytes().await.unwrap();
    assert!(index_text(&body, dir.path()).contains("V:1.1-r0"));
    assert_eq!(origin.hits(index_path), 2);
    let resp = http.get(&apk_url).send().await.unwrap();
    assert_eq!(resp.headers()["x-artifact-source"], "cache");
    assert_eq!(&resp.bytes().await.unwrap()[..], b"apk 1.0-r0");
    assert_eq!(origin.hits(apk_path), 1, "immutable: never fetched again");
}
