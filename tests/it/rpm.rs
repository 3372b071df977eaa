//! RPM remotes: `dnf` installs through artifactd from a `createrepo_c`
//! repository; a regenerated upstream never gives a client a
//! `repomd.xml` whose files cannot be served; repodata and packages are
//! verified against `repomd.xml` and `primary.xml`.

use crate::harness::rpm::{dnf_install, RpmRepo};
use crate::harness::{client, log_says, Artifactd, ClientLoop, Origin};
use std::time::{Duration, Instant};

fn rpm_remote(origin: &Origin, extra: &str) -> String {
    format!(
        "remotes:\n  el:\n    base_url: \"{}/repo\"\n    package: rpm\n    cache:\n      mutable_ttl: 2\n{extra}",
        origin.base_url()
    )
}

#[tokio::test]
async fn a_regenerated_repository_switches_snapshots_without_a_client_ever_failing() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let mut repo = RpmRepo::new(dir.path(), "/repo");
    repo.build("tiny", "1.0");
    repo.publish(&origin);
    let old_repodata = repo.repodata();
    let ad = Artifactd::start(dir.path(), &rpm_remote(&origin, ""), "").await;
    let url = ad.artifact("el", "");
    let http = client();

    let (ok, out) = dnf_install(&url, &dir.path().join("root0"), "tiny").await;
    assert!(ok, "dnf install: {out}");
    let version = std::fs::read_to_string(dir.path().join("root0/usr/share/tiny/VERSION")).unwrap();
    assert_eq!(version.trim(), "1.0");
    // The whole snapshot is warmed, not only what dnf asked for.
    log_says(&ad, "snapshot repodata/repomd.xml warmed").await;
    let old_repomd =
        crate::harness::get_text(&http, ad.artifact("el", "repodata/repomd.xml")).await;

    // Clients keep installing while the upstream regenerates.
    let installs = {
        let (url, base) = (url.clone(), dir.path().to_path_buf());
        ClientLoop::start(60, move |run| {
            let (url, root) = (url.clone(), base.join(format!("loop{run}")));
            async move { dnf_install(&url, &root, "tiny").await }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    repo.build("tiny-extra", "1.0");
    repo.publish(&origin);
    let new_repomd = std::fs::read_to_string(repo.dir.join("repodata/repomd.xml")).unwrap();
    assert_ne!(new_repomd, old_repomd);

    // Every file of the old snapshot is still served, from cache, although
    // the upstream deleted it (dnf never asked for some of them).
    for path in &old_repodata {
        let resp = http.get(ad.artifact("el", path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["x-artifact-source"], "cache", "{path}");
    }

    // After the TTL the new package becomes installable.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    loop {
        let root = dir.path().join(format!("extra{attempt}"));
        let (ok, out) = dnf_install(&url, &root, "tiny-extra").await;
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tiny-extra never became installable: {out}"
        );
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    installs.stop_without_failures("install").await;

    // The snapshot now served names only files artifactd serves.
    let served = crate::harness::get_text(&http, ad.artifact("el", "repodata/repomd.xml")).await;
    assert_eq!(served, new_repomd);
    for path in repo.repodata() {
        let resp = http.get(ad.artifact("el", &path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_new_snapshot_waits_behind_the_previous_one_until_its_files_are_cached() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let mut repo = RpmRepo::new(dir.path(), "/repo");
    repo.build("tiny", "1.0");
    repo.publish(&origin);
    let ad = Artifactd::start(dir.path(), &rpm_remote(&origin, ""), "").await;
    let http = client();
    let repomd_url = ad.artifact("el", "repodata/repomd.xml");
    let old = crate::harness::get_text(&http, &repomd_url).await;
    log_says(&ad, "snapshot repodata/repomd.xml warmed").await;

    // The upstream regenerates, and its new primary is slow to arrive, as
    // on a mirror still syncing: the first look after the TTL keeps the
    // previous snapshot.
    repo.build("tiny-extra", "1.0");
    repo.publish(&origin);
    let primary = repo
        .repodata()
        .into_iter()
        .find(|p| p.ends_with("-primary.xml.gz"))
        .unwrap();
    let bytes = std::fs::read(repo.dir.join(&primary)).unwrap();
    let mut slow = crate::harness::OriginFile::new(bytes);
    slow.chunk_delay = Some(Duration::from_millis(1500));
    slow.chunked = true;
    origin.put(&format!("/repo/{primary}"), slow);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let resp = http.get(&repomd_url).send().await.unwrap();
    assert!(
        resp.headers().contains_key("x-artifact-stale"),
        "{:?}",
        resp.headers()
    );
    assert_eq!(
        resp.text().await.unwrap(),
        old,
        "the previous snapshot is kept"
    );

    // Once its files are cached, the new snapshot is served.
    let new = std::fs::read_to_string(repo.dir.join("repodata/repomd.xml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while crate::harness::get_text(&http, &repomd_url).await != new {
        assert!(
            Instant::now() < deadline,
            "the new snapshot was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        origin.hits(&format!("/repo/{primary}")),
        1,
        "fetched once, by the warm job"
    );
}

#[tokio::test]
async fn a_tampered_rpm_is_refused_counted_and_never_committed() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let mut repo = RpmRepo::new(dir.path(), "/repo");
    let rpm = repo.build("tiny", "1.0");
    repo.publish(&origin);
    let good = std::fs::read(&rpm).unwrap();
    let ad = Artifactd::start(
        dir.path(),
        &rpm_remote(&origin, "    immutable_patterns: [\"\\\\.rpm$\"]\n"),
        "",
    )
    .await;
    let http = client();
    let _ = crate::harness::get_text(&http, ad.artifact("el", "repodata/repomd.xml")).await;
    log_says(&ad, "recorded 1 package checksums").await;

    let mut tampered = good.clone();
    let at = tampered.len() - 100;
    tampered[at] ^= 0x20;
    origin.put(
        "/repo/tiny-1.0-1.noarch.rpm",
        crate::harness::OriginFile::new(tampered.clone()),
    );
    let (ok, out) = dnf_install(&ad.artifact("el", ""), &dir.path().join("root1"), "tiny").await;
    assert!(!ok, "dnf must fail on a tampered package: {out}");
    let url = ad.artifact("el", "tiny-1.0-1.noarch.rpm");
    let body = http.get(&url).send().await.unwrap().bytes().await;
    assert!(
        body.map_or(true, |b| b.len() < tampered.len()),
        "a tampered body never completes"
    );
    let count = crate::harness::checksum_mismatches(&ad, "el").await;
    assert!(count >= 2, "{count} mismatches counted");

    origin.put(
        "/repo/tiny-1.0-1.noarch.rpm",
        crate::harness::OriginFile::new(good.clone()),
    );
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(
        resp.headers()["x-artifact-source"],
        "remote",
        "nothing was committed"
    );
    assert_eq!(resp.bytes().await.unwrap(), good);
    let (ok, out) = dnf_install(&ad.artifact("el", ""), &dir.path().join("root2"), "tiny").await;
    assert!(ok, "{out}");
}
