//! `artifactd import`: files stored in a stopped node's cache are served as
//! hits by the next start (loaded from the snapshot the import wrote),
//! byte for byte, without the origin ever being asked; a running node's
//! store is refused; a bad line fails alone; a second run keeps what is
//! cached.

use crate::evict::remotes;
use crate::harness::{client, pattern_bytes, Artifactd, Origin, OriginFile};
use std::path::Path;
use std::time::Duration;

/// Runs `artifactd import` on `dir`'s config: (exit code, stdout, stderr).
async fn import(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_artifactd"))
        .arg("--config")
        .arg(dir.join("artifactd.yaml"))
        .arg("import")
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("ARTIFACTD_CONFIG")
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("the import finished within 120 s")
        .expect("the import ran");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn imported_files_are_hits_of_the_next_start_and_the_origin_is_never_asked() {
    if !matches!(
        crate::harness::artifactd::shape(),
        crate::harness::artifactd::Shape::Embedded
    ) {
        return; // An import writes a local store; a cluster's is a bucket.
    }
    let origin = Origin::start().await;
    // The origin has other bytes: whatever is served from these paths
    // came from the import.
    for name in ["/a.bin", "/dir/b c.bin", "/big.bin"] {
        origin.put(name, OriginFile::new(pattern_bytes(10, 99)));
    }
    let dir = tempfile::tempdir().unwrap();
    let remotes = remotes(&origin, None);
    let extra = "cache:\n  memory_body_max: 16KiB\n";
    let mut ad = Artifactd::start(dir.path(), &remotes, extra).await;

    let sources = dir.path().join("sources");
    std::fs::create_dir_all(&sources).unwrap();
    let files = [
        ("a.bin", pattern_bytes(1_000, 1)),
        ("b.bin", pattern_bytes(3_000, 2)),
        ("big.bin", pattern_bytes(3 << 20, 3)),
    ];
    for (name, bytes) in &files {
        std::fs::write(sources.join(name), bytes).unwrap();
    }
    let source = |name: &str| sources.join(name).display().to_string();
    let manifest = dir.path().join("manifest.tsv");
    std::fs::write(
        &manifest,
        format!(
            "# path, file, content type\n\
             a.bin\t{}\n\
             /dir/b%20c.bin\t{}\tapplication/x-test\n\
             big.bin\t{}\n\
             notes.txt\t{}\n\
             missing.bin\t{}\n",
            source("a.bin"),
            source("b.bin"),
            source("big.bin"),
            source("a.bin"),
            source("no-such-file.bin"),
        ),
    )
    .unwrap();
    let manifest_arg = manifest.display().to_string();
    let args = ["gen", "--manifest", manifest_arg.as_str()];

    let (code, _, stderr) = import(dir.path(), &args).await;
    assert_ne!(code, 0, "refused while serving");
    assert!(stderr.contains("stop it before importing"), "{stderr}");

    ad.signal(libc::SIGTERM);
    assert!(ad.exited_within(Duration::from_secs(15)).await.is_some());
    let (code, stdout, stderr) = import(dir.path(), &args).await;
    assert_eq!(code, 1, "one line failed: {stdout}{stderr}");
    assert!(
        stdout.contains("imported 3 objects")
            && stdout.contains("1 denied")
            && stdout.contains("1 failed"),
        "{stdout}"
    );
    assert!(
        stderr.contains("manifest.tsv:6") && stderr.contains("no-such-file.bin"),
        "the failure names its line and file: {stderr}"
    );

    let ad = Artifactd::start(dir.path(), &remotes, extra).await;
    assert!(
        ad.log_text().contains("index loaded from") && ad.log_text().contains(": 3 entries"),
        "the start reads the import's snapshot:\n{}",
        ad.log_text()
    );
    let http = client();
    for (path, (_, bytes), content_type) in [
        ("a.bin", &files[0], "application/octet-stream"),
        ("dir/b%20c.bin", &files[1], "application/x-test"),
        ("big.bin", &files[2], "application/octet-stream"),
    ] {
        let response = http.get(ad.artifact("gen", path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["x-artifact-source"], "cache", "{path}");
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert!(headers.contains_key("last-modified"), "{path}");
        let body = response.bytes().await.unwrap();
        assert!(body == bytes[..], "{path}: the imported bytes");
    }
    let ranged = http
        .get(ad.artifact("gen", "big.bin"))
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert!(ranged.bytes().await.unwrap() == files[2].1[100..200]);
    assert!(origin.requests().is_empty(), "the origin was never asked");
    drop(ad);

    // Run again (the server stopped): what is cached is kept.
    let (code, stdout, _) = import(dir.path(), &args).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("imported 0 objects") && stdout.contains("3 already cached and kept"),
        "{stdout}"
    );
}
