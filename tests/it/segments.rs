//! Records in segment files: no record file per object, a node killed
//! while its catalog could not hear recovers what it committed and removed
//! from the segments, and compaction gives back what evictions freed.

use crate::cache::walk;
use crate::evict::{fetch, remotes};
use crate::harness::{client, metric, pattern_bytes, Artifactd, Origin, OriginFile};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

/// Files under the cache directory whose names end with `suffix`.
fn cache_files(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    walk(&dir.join("store/cache"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect()
}

fn segment_bytes(dir: &Path) -> u64 {
    cache_files(dir, ".seg")
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Holds an exclusive lock on the SQLite catalog, so artifactd's catalog
/// writer hears of nothing until the holder is killed.
async fn lock_catalog(path: &Path) -> tokio::process::Child {
    let script = "import sqlite3, sys, time\n\
                  c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
                  c.execute('BEGIN EXCLUSIVE')\n\
                  print('locked', flush=True)\n\
                  time.sleep(120)\n";
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the catalog lock in time")
        .unwrap();
    assert_eq!(line.as_deref(), Some("locked"));
    child
}

/// Deletes the cached `path` of remote `gen` through the cache API.
async fn delete_cached(ad: &Artifactd, path: &str) {
    let deleted = client()
        .delete(ad.url(&format!("/api/v1/cache/gen/{path}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200, "{}", deleted.text().await.unwrap());
}

/// The numbers in the start's "… N entries adopted, M removed" line.
fn recovered(ad: &Artifactd) -> (u64, u64) {
    let log = ad.log_text();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("entries adopted"))
        .unwrap_or_else(|| panic!("no recovery line in:\n{log}"));
    let number_before = |word: &str| -> u64 {
        let head = &line[..line.find(word).unwrap()];
        head.split_whitespace().last().unwrap().parse().unwrap()
    };
    (number_before(" entries adopted"), number_before(" removed"))
}

/// Small bodies live in their records, large ones in body files; both
/// kinds of record are frames in segments. Objects committed and removed
/// while the catalog was locked, then `kill -9`: the restart finds the
/// commits and the removal in the segments, not in the catalog.
#[tokio::test]
async fn a_node_killed_while_its_catalog_was_locked_recovers_from_its_segments() {
    let origin = Origin::start().await;
    let small = |i: usize| pattern_bytes(2_000 + i, i as u64);
    let large = |i: usize| pattern_bytes(100_000 + i, 1_000 + i as u64);
    for i in 0..30 {
        origin.put(&format!("/s{i}.bin"), OriginFile::new(small(i)));
    }
    for i in 0..2 {
        origin.put(&format!("/l{i}.bin"), OriginFile::new(large(i)));
    }
    let dir = tempfile::tempdir().unwrap();
    let remotes = remotes(&origin, None);
    let mut ad = Artifactd::start(dir.path(), &remotes, "").await;
    for i in 0..20 {
        fetch(&ad, &format!("s{i}.bin")).await;
    }
    fetch(&ad, "l0.bin").await;
    ad.committed().await;
    assert!(
        cache_files(dir.path(), ".meta").is_empty(),
        "no record files"
    );
    assert_eq!(cache_files(dir.path(), ".body").len(), 1, "one body file");
    assert!(!cache_files(dir.path(), ".seg").is_empty());
    // The catalog hears of those (it writes every half second)...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // ...and of nothing from here on.
    let mut lock = lock_catalog(&dir.path().join("store/catalog.db")).await;
    for i in 20..30 {
        fetch(&ad, &format!("s{i}.bin")).await;
    }
    fetch(&ad, "l1.bin").await;
    delete_cached(&ad, "s0.bin").await;
    ad.kill();
    lock.kill().await.unwrap();

    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    assert_eq!(
        recovered(&ad),
        (11, 1),
        "commits and the removal the catalog missed"
    );
    for i in 1..30 {
        let (source, bytes) = fetch(&ad, &format!("s{i}.bin")).await;
        assert_eq!(source, "cache", "s{i}");
        assert!(bytes == small(i), "s{i}");
        assert_eq!(origin.hits(&format!("/s{i}.bin")), 1, "s{i}");
    }
    for i in 0..2 {
        let (source, bytes) = fetch(&ad, &format!("l{i}.bin")).await;
        assert_eq!(source, "cache", "l{i}");
        assert!(bytes == large(i), "l{i}");
    }
    let (source, bytes) = fetch(&ad, "s0.bin").await;
    assert_ne!(source, "cache", "the removed object stays removed");
    assert!(bytes == small(0));
    assert_eq!(origin.hits("/s0.bin"), 2);
    assert_eq!(
        crate::evict::metric(&ad, "artifactd_cache_objects").await,
        32
    );
}

/// A bounded cache whose oldest segments each keep one object in use:
/// those segments are mostly dead, so they are compacted (the object's
/// record copied forward) and deleted, and the disk holds about what is
/// live, not everything ever written.
#[tokio::test]
async fn segments_left_mostly_dead_by_evictions_are_compacted() {
    let origin = Origin::start().await;
    let body = |name: &str, i: usize| pattern_bytes(4_000, i as u64 + name.len() as u64 * 1000);
    for i in 0..190 {
        origin.put(&format!("/f{i}.bin"), OriginFile::new(body("f", i)));
    }
    for i in 0..10 {
        origin.put(&format!("/keep{i}.bin"), OriginFile::new(body("keep", i)));
    }
    let dir = tempfile::tempdir().unwrap();
    let extra = "cache:\n  max_size: 120KiB\n  segment_size: 64KiB\n";
    let ad = Artifactd::start(dir.path(), &remotes(&origin, None), extra).await;
    let mut kept = 0;
    for i in 0..190 {
        fetch(&ad, &format!("f{i}.bin")).await;
        if i % 19 == 18 {
            fetch(&ad, &format!("keep{kept}.bin")).await;
            kept += 1;
        }
        // The kept objects stay the most recently used.
        for k in 0..kept {
            fetch(&ad, &format!("keep{k}.bin")).await;
        }
    }
    assert_eq!(kept, 10);
    assert!(metric(&ad, "artifactd_cache_evictions_total").await > 100);
    let written = 200 * 4_000;
    let deadline = Instant::now() + Duration::from_secs(30);
    while segment_bytes(dir.path()) > 400 * 1024 {
        assert!(
            Instant::now() < deadline,
            "segments still hold {} bytes ({} files) of {written} written",
            segment_bytes(dir.path()),
            cache_files(dir.path(), ".seg").len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for k in 0..10 {
        let (source, bytes) = fetch(&ad, &format!("keep{k}.bin")).await;
        assert_eq!(source, "cache", "keep{k}");
        assert!(bytes == body("keep", k), "keep{k}");
        assert_eq!(origin.hits(&format!("/keep{k}.bin")), 1, "keep{k}");
    }
}

/// The numbers in the start's "index loaded from …: N entries" line, if
/// the index came from the snapshot.
fn loaded_from_snapshot(ad: &Artifactd) -> Option<u64> {
    let log = ad.log_text();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("index loaded from"))?;
    let after = &line[line.find(": ").unwrap() + 2..];
    after.split_whitespace().next()?.parse().ok()
}

/// A graceful stop writes the index snapshot and the next start loads it
/// instead of the catalog's rows; what came after it (commits and a
/// removal before a `kill -9`) comes from the segments; a flush deletes it.
#[tokio::test]
async fn a_start_loads_the_index_snapshot_and_the_segments_after_it() {
    let origin = Origin::start().await;
    let body = |i: usize| pattern_bytes(3_000 + i, 50 + i as u64);
    for i in 0..8 {
        origin.put(&format!("/o{i}.bin"), OriginFile::new(body(i)));
    }
    let dir = tempfile::tempdir().unwrap();
    let remotes = remotes(&origin, None);
    let snapshot = dir.path().join("store/index.snap");
    let mut ad = Artifactd::start(dir.path(), &remotes, "").await;
    assert!(loaded_from_snapshot(&ad).is_none(), "nothing to load yet");
    for i in 0..5 {
        fetch(&ad, &format!("o{i}.bin")).await;
    }
    ad.signal(libc::SIGTERM);
    assert!(ad.exited_within(Duration::from_secs(15)).await.is_some());
    assert!(snapshot.exists(), "written at the stop");

    let mut ad = Artifactd::start(dir.path(), &remotes, "").await;
    assert_eq!(loaded_from_snapshot(&ad), Some(5));
    for i in 5..8 {
        fetch(&ad, &format!("o{i}.bin")).await;
    }
    delete_cached(&ad, "o0.bin").await;
    ad.kill();

    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    assert_eq!(loaded_from_snapshot(&ad), Some(5), "the stop's snapshot");
    assert_eq!(recovered(&ad), (3, 1), "what came after it");
    for i in 1..8 {
        let (source, bytes) = fetch(&ad, &format!("o{i}.bin")).await;
        assert_eq!(source, "cache", "o{i}");
        assert!(bytes == body(i), "o{i}");
        assert_eq!(origin.hits(&format!("/o{i}.bin")), 1, "o{i}");
    }
    let (source, _) = fetch(&ad, "o0.bin").await;
    assert_ne!(source, "cache", "removed after the snapshot, stays removed");
    let flushed = client()
        .put(ad.url("/cache/flush?remote=gen"))
        .send()
        .await
        .unwrap();
    assert_eq!(flushed.status(), 200, "{}", flushed.text().await.unwrap());
    assert!(!snapshot.exists(), "a flush deletes the snapshot");
}
