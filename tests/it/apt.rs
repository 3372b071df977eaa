//! APT remotes: the machine's own `apt-get` updates and downloads through
//! artifactd from a suite made with `apt-ftparchive` and signed with
//! `gpg`, as a mirror URL and as its HTTP proxy; a suite the upstream
//! regenerates never fails a client; package lists and `.deb` files are
//! verified against the `InRelease` and `Packages` that name them.

use crate::harness::apt::{AptClient, AptRepo, Via};
use crate::harness::{
    checksum_mismatches, client, log_says, Artifactd, ClientLoop, Origin, OriginFile,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Remote `deb` of the suite under `/debian` of `origin`, standing in for
/// the origin's host when apt uses artifactd as its proxy.
fn apt_remote(origin: &Origin, mutable_ttl: u32) -> String {
    let base = origin.base_url();
    let host = base.trim_start_matches("http://");
    format!(
        "remotes:\n  deb:\n    base_url: \"{base}/debian\"\n    package: apt\n    mirror_of: [\"{host}\"]\n    architectures: [amd64]\n    cache:\n      mutable_ttl: {mutable_ttl}\n"
    )
}

/// A repository with `adtest` 1.0, which depends on `adtest-dep` 1.0.
fn repository(dir: &Path, origin: &Origin) -> AptRepo {
    let mut repo = AptRepo::new(dir, "/debian");
    repo.build("adtest-dep", "1.0", None);
    repo.build("adtest", "1.0", Some("adtest-dep"));
    repo.publish(origin);
    repo
}

fn mirror(ad: &Artifactd) -> Via {
    Via::Mirror(ad.artifact("deb", "").trim_end_matches('/').to_string())
}

fn proxy(ad: &Artifactd, origin: &Origin) -> Via {
    Via::Proxy {
        upstream: format!("{}/debian", origin.base_url()),
        proxy: ad.url(""),
    }
}

/// Both packages downloaded, with the repository's bytes.
fn assert_downloaded(apt: &AptClient, repo: &AptRepo, version: &str, out: &str) {
    for name in ["adtest", "adtest-dep"] {
        let want = std::fs::read(repo.deb(name, "1.0")).unwrap();
        let version = if name == "adtest" { version } else { "1.0" };
        let got = apt.downloaded(name, version);
        let want = if version == "1.0" {
            want
        } else {
            std::fs::read(repo.deb(name, version)).unwrap()
        };
        assert_eq!(got.as_deref(), Some(&want[..]), "{name} {version}:\n{out}");
    }
}

#[tokio::test]
async fn apt_get_installs_as_mirror_and_as_proxy_and_again_with_the_upstream_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let repo = repository(dir.path(), &origin);
    let ad = Artifactd::start(&dir.path().join("node"), &apt_remote(&origin, 3600), "").await;

    let ways = [("mirror", mirror(&ad)), ("proxy", proxy(&ad, &origin))];
    for (name, via) in &ways {
        let apt = AptClient::new(&dir.path().join(format!("apt-{name}")), via, &repo.key);
        let (ok, out) = apt.update_and_download("adtest").await;
        assert!(ok, "{name}: {out}");
        assert_downloaded(&apt, &repo, "1.0", &out);
    }
    // One upstream fetch of each file for both ways in.
    for deb in ["adtest_1.0_all.deb", "adtest-dep_1.0_all.deb"] {
        assert_eq!(origin.hits(&format!("/debian/pool/main/{deb}")), 1, "{deb}");
    }
    // InRelease: pingora's fetch and the snapshot gate's own read of it.
    assert_eq!(origin.hits("/debian/dists/stable/InRelease"), 2);

    // The upstream stops: new clients still update and download.
    origin.stop();
    for (name, via) in &ways {
        let apt = AptClient::new(&dir.path().join(format!("offline-{name}")), via, &repo.key);
        let (ok, out) = apt.update_and_download("adtest").await;
        assert!(ok, "{name} with the upstream stopped: {out}");
        assert_downloaded(&apt, &repo, "1.0", &out);
    }
}

#[tokio::test]
async fn a_regenerated_suite_never_fails_apt_and_the_new_version_arrives_after_the_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let mut repo = repository(dir.path(), &origin);
    let ad = Artifactd::start(&dir.path().join("node"), &apt_remote(&origin, 2), "").await;
    let via = Arc::new(mirror(&ad));
    let first = AptClient::new(&dir.path().join("first"), &via, &repo.key);
    let (ok, out) = first.update_and_download("adtest").await;
    assert!(ok, "{out}");

    // Clients keep updating and downloading while the upstream publishes.
    let loop_clients = {
        let (via, base, key) = (via.clone(), dir.path().to_path_buf(), repo.key.clone());
        ClientLoop::start(80, move |run| {
            let apt = AptClient::new(&base.join(format!("loop{run}")), &via, &key);
            async move { apt.update_and_download("adtest").await }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    repo.build("adtest", "2.0", Some("adtest-dep"));
    repo.publish(&origin);

    // After the TTL, 2.0 is what apt downloads.
    let deadline = Instant::now() + Duration::from_secs(60);
    for attempt in 0.. {
        let apt = AptClient::new(&dir.path().join(format!("new{attempt}")), &via, &repo.key);
        let (ok, out) = apt.update_and_download("adtest").await;
        if ok && apt.downloaded("adtest", "2.0").is_some() {
            assert_downloaded(&apt, &repo, "2.0", &out);
            break;
        }
        assert!(Instant::now() < deadline, "adtest 2.0 never arrived: {out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    loop_clients.stop_without_failures("apt").await;
    // The package lists of the served suite are all cached.
    let http = client();
    for list in repo.package_lists() {
        let resp = http.get(ad.artifact("deb", &list)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{list}");
    }
}

#[tokio::test]
async fn tampered_debs_and_package_lists_are_refused_counted_and_never_committed() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let repo = repository(dir.path(), &origin);
    let ad = Artifactd::start(&dir.path().join("node"), &apt_remote(&origin, 1), "").await;
    let via = mirror(&ad);
    let http = client();

    // Every form of the package list is served with a flipped byte.
    let lists = repo.package_lists();
    for list in &lists {
        let mut bytes = std::fs::read(repo.dir.join(list)).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        origin.put(&format!("/debian/{list}"), OriginFile::new(bytes));
    }
    let apt = AptClient::new(&dir.path().join("tampered-lists"), &via, &repo.key);
    let (ok, out) = apt.update().await;
    assert!(!ok, "apt must fail on tampered package lists: {out}");
    let after_lists = checksum_mismatches(&ad, "deb").await;
    assert!(after_lists >= 1, "{after_lists} mismatches counted");
    for list in &lists {
        let resp = http.get(ad.artifact("deb", list)).send().await.unwrap();
        assert_ne!(
            resp.headers()
                .get("x-artifact-source")
                .map(|v| v.to_str().unwrap()),
            Some("cache"),
            "{list} was committed"
        );
    }
    // The right lists again: once InRelease is looked at anew, apt
    // updates and the packages the lists name are recorded.
    for list in &lists {
        let bytes = std::fs::read(repo.dir.join(list)).unwrap();
        origin.put(&format!("/debian/{list}"), OriginFile::new(bytes));
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let apt = AptClient::new(&dir.path().join("good-lists"), &via, &repo.key);
    let (ok, out) = apt.update().await;
    assert!(ok, "{out}");
    log_says(&ad, "recorded 2 package checksums").await;

    // A tampered .deb: apt fails, nothing is committed, the counter moves.
    let good = std::fs::read(repo.deb("adtest", "1.0")).unwrap();
    let mut tampered = good.clone();
    let at = tampered.len() - 100;
    tampered[at] ^= 0x20;
    let deb = "/debian/pool/main/adtest_1.0_all.deb";
    origin.put(deb, OriginFile::new(tampered.clone()));
    let (ok, out) = apt.download("adtest").await;
    assert!(!ok, "apt must fail on a tampered package: {out}");
    assert!(checksum_mismatches(&ad, "deb").await > after_lists);
    let url = ad.artifact("deb", "pool/main/adtest_1.0_all.deb");
    origin.put(deb, OriginFile::new(good.clone()));
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(
        resp.headers()["x-artifact-source"],
        "remote",
        "nothing was committed"
    );
    assert_eq!(resp.bytes().await.unwrap(), good);
    let (ok, out) = apt.download("adtest").await;
    assert!(ok, "{out}");
    assert_downloaded(&apt, &repo, "1.0", &out);
}
