//! A full disk: the store on a small tmpfs of its own. Misses the store has
//! no room for pass through whole and uncached, hits keep being served,
//! nothing half-written is ever visible, and caching resumes by itself when
//! space returns. A fill that runs out of space midway still gives its
//! readers every byte.

use crate::harness::{
    client, generic_remote, metric_sum, pattern_bytes, sha256_hex, Artifactd, Origin, OriginFile,
};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A tmpfs of `size` mounted at a path until dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs(at.to_path_buf())
    }

    /// Fills the filesystem to its last byte with a file of its own.
    fn fill_up(&self) -> PathBuf {
        fill_up(&self.0)
    }

    fn free(&self) -> u64 {
        let output = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

/// Fills the filesystem of `dir` to its last byte with a file.
fn fill_up(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![7u8; 64 << 10];
    while file.write_all(&block).is_ok() {}
    while file.write_all(&[7u8]).is_ok() {}
    filler
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// GETs `path` and checks it byte for byte against `body`.
async fn fetch_checked(ad: &Artifactd, path: &str, body: &[u8]) {
    let url = ad.url(&format!("/api/v1/remote/gen{path}"));
    let response = client().get(&url).send().await.expect("response");
    assert_eq!(response.status(), 200, "{path}");
    let got = response.bytes().await.expect("whole body");
    assert_eq!(got.len(), body.len(), "{path}: length");
    assert_eq!(sha256_hex(&got), sha256_hex(body), "{path}: bytes");
}

async fn unstored(ad: &Artifactd, reason: &str) -> u64 {
    metric_sum(ad, "artifactd_cache_unstored_total", &[("reason", reason)]).await
}

#[tokio::test]
async fn a_full_disk_passes_misses_through_whole_and_caching_resumes_with_space() {
    let origin = Origin::start().await;
    let files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("/big/{i}.bin"), pattern_bytes(2 << 20, 100 + i)))
        .collect();
    for (path, body) in &files {
        origin.put(path, OriginFile::new(body.clone()));
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("store"), "24m");
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, ""), "").await;
    // 80 MiB asked of a 24 MiB disk, eight at a time: every one whole.
    let ad_ref = &ad;
    let fetches = files
        .iter()
        .map(|(path, body)| async move { fetch_checked(ad_ref, path, body).await });
    futures::stream::iter(fetches)
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    assert!(unstored(&ad, "no_room").await >= 20, "most did not fit");
    // What was kept is served from the cache; the rest from the origin.
    let before: usize = origin.total_hits();
    for (path, body) in &files {
        fetch_checked(&ad, path, body).await;
    }
    let refetched = origin.total_hits() - before;
    assert!(
        refetched < 40,
        "something was kept: {refetched} fetched again"
    );
    let kept: Vec<&(String, Vec<u8>)> = files
        .iter()
        .filter(|(path, _)| origin.hits(path) == 1)
        .collect();
    assert!(!kept.is_empty());

    // Full to the last byte: hits are served, misses pass through whole.
    let filler = disk.fill_up();
    assert!(disk.free() < 64 << 10, "{} bytes free", disk.free());
    let (kept_path, kept_body) = kept[0];
    fetch_checked(&ad, kept_path, kept_body).await;
    assert_eq!(origin.hits(kept_path), 1, "a hit on a full disk");
    let small = pattern_bytes(300_000, 7);
    origin.put("/new/small.bin", OriginFile::new(small.clone()));
    for round in 1..=2 {
        fetch_checked(&ad, "/new/small.bin", &small).await;
        assert_eq!(origin.hits("/new/small.bin"), round, "not kept");
    }

    // Space returns: caching resumes without a restart.
    std::fs::remove_file(filler).unwrap();
    for _ in 0..3 {
        fetch_checked(&ad, "/new/small.bin", &small).await;
    }
    assert_eq!(origin.hits("/new/small.bin"), 3, "kept once space returned");
    // One warning covers them all.
    let warned = ad.log_text().matches("served without being kept").count();
    assert_eq!(warned, 1, "one line a minute, not one a miss");
    drop(ad);
    drop(disk);
}

#[tokio::test]
async fn a_fill_that_runs_out_of_space_midway_still_serves_every_byte() {
    let origin = Origin::start().await;
    let body = pattern_bytes(6 << 20, 5);
    origin.put("/slow.bin", OriginFile::new(body.clone()).rate(3 << 20));
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("store"), "24m");
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, ""), "").await;
    let leader = fetch_checked(&ad, "/slow.bin", &body);
    let follower = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        fetch_checked(&ad, "/slow.bin", &body).await;
    };
    // Another writer takes all the space while the fill is under way.
    let filler = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let store = disk.0.clone();
        tokio::task::spawn_blocking(move || fill_up(&store))
            .await
            .unwrap()
    };
    let ((), (), filler) = tokio::join!(leader, follower, filler);
    assert_eq!(origin.hits("/slow.bin"), 1, "the follower read the fill");
    assert_eq!(unstored(&ad, "write_failed").await, 1);
    std::fs::remove_file(filler).unwrap();
    // Nothing was committed: the next request fetches it again, whole.
    fetch_checked(&ad, "/slow.bin", &body).await;
    assert_eq!(origin.hits("/slow.bin"), 2);
    drop(ad);
    drop(disk);
}

/// `cache.min_free` over small objects, whose bodies live in their records
/// in segments: evicting one frees no disk space until its segment is
/// compacted. Eviction counts what it evicted and compacts the segments
/// it emptied most, so the cache keeps about what fits above the floor
/// (here ~600 of 64 KiB), not a fraction of it, and the floor holds.
#[tokio::test]
async fn min_free_over_records_in_segments_evicts_only_what_the_floor_needs() {
    let origin = Origin::start().await;
    let body = |i: usize| pattern_bytes(64 << 10, 1000 + i as u64);
    for i in 0..700 {
        origin.put(&format!("/s/{i}.bin"), OriginFile::new(body(i)));
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("store"), "64m");
    let extra = "cache:\n  min_free: 24MiB\n  segment_size: 1MiB\n";
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, ""), extra).await;
    let fetch_range =
        |range: std::ops::Range<usize>| {
            let ad = &ad;
            futures::stream::iter(range.map(move |i| async move {
                fetch_checked(ad, &format!("/s/{i}.bin"), &body(i)).await
            }))
            .buffer_unordered(8)
            .collect::<Vec<()>>()
        };
    fetch_range(0..500).await;
    // Every other one used again: the least recently used are spread over
    // every segment, so evicting them empties none.
    for i in (0..500).step_by(2) {
        fetch_checked(&ad, &format!("/s/{i}.bin"), &body(i)).await;
    }
    fetch_range(500..700).await;

    let objects = metric_sum(&ad, "artifactd_cache_objects", &[]).await;
    let evicted = metric_sum(&ad, "artifactd_cache_evictions_total", &[]).await;
    let free = disk.free();
    assert!(free >= 23 << 20, "the floor: {free} bytes free");
    assert!(
        objects >= 540,
        "{objects} objects kept, {evicted} evicted: more than the floor needed"
    );
    assert_eq!(objects + evicted, 700, "every fill committed");
    // What is kept is served from the cache, byte for byte, also where
    // compaction moved its record.
    let before = origin.total_hits();
    for i in 600..700 {
        fetch_checked(&ad, &format!("/s/{i}.bin"), &body(i)).await;
    }
    assert_eq!(origin.total_hits(), before, "the newest 100 are all hits");
    drop(ad);
    drop(disk);
}
