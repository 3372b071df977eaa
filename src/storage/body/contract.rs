//! The contract every [`BodyStore`] keeps, run against the filesystem store
//! and against an in-memory `object_store` that counts what is asked of it
//! (after distribution's `statsBlobStore`).

use super::fs::FsBodyStore;
use super::object::ObjectBodyStore;
use super::{BodyStore, Opened};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An in-memory store that counts reads and the bytes they asked for.
#[derive(Debug, Default)]
struct Counting {
    inner: InMemory,
    gets: AtomicU64,
    bytes_requested: AtomicU64,
}

impl std::fmt::Display for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let result = self.inner.get_opts(location, options).await?;
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.bytes_requested
            .fetch_add(result.range.end - result.range.start, Ordering::Relaxed);
        Ok(result)
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

/// A store under test, with what the test may inspect.
struct Subject {
    name: &'static str,
    store: Box<dyn BodyStore>,
    counting: Option<Arc<Counting>>,
    dir: tempfile::TempDir,
}

fn subjects() -> Vec<Subject> {
    let fs_dir = tempfile::tempdir().unwrap();
    let fs = FsBodyStore::open(fs_dir.path(), false).unwrap();
    let object_dir = tempfile::tempdir().unwrap();
    let counting = Arc::new(Counting::default());
    // Small parts, so that multi-part uploads happen in a test.
    let object = ObjectBodyStore::new(
        counting.clone(),
        64 * 1024,
        object_dir.path().into(),
        Duration::from_secs(10),
    );
    vec![
        Subject {
            name: "filesystem",
            store: Box::new(fs),
            counting: None,
            dir: fs_dir,
        },
        Subject {
            name: "object_store (in memory)",
            store: Box::new(object),
            counting: Some(counting),
            dir: object_dir,
        },
    ]
}

/// Deterministic, position-dependent bytes: a shifted read shows.
fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

async fn read_all(store: &dyn BodyStore, key: &str, range: std::ops::Range<u64>) -> Vec<u8> {
    let chunks: Vec<Bytes> = store
        .read_range(key, range)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

/// Files holding bytes anywhere under `dir` (the filesystem store's root,
/// or the spool directory of the object store). Empty staging files the
/// filesystem store created ahead of use hold nothing and do not count.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(files_under(&entry.path()));
        } else if entry.metadata().unwrap().len() > 0 {
            out.push(entry.path());
        }
    }
    out
}

/// Nothing is readable or listed under the cache prefix.
async fn assert_invisible(s: &Subject, key: &str) {
    assert!(s.store.open(key).await.unwrap().is_none(), "{}", s.name);
    assert!(
        s.store.list("cache").await.unwrap().is_empty(),
        "{}",
        s.name
    );
}

#[tokio::test]
async fn a_body_is_invisible_until_committed_and_a_dropped_writer_leaves_nothing() {
    for s in subjects() {
        let data = body(300_000);
        let mut writer = s.store.create("cache/r/ab/x.body").await.unwrap();
        for chunk in data.chunks(100_000) {
            writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        assert_invisible(&s, "cache/r/ab/x.body").await;
        // Readers of the fill in progress see what was written.
        let mut head = vec![0u8; 1000];
        writer.local_file().read_exact_at(&mut head, 5000).unwrap();
        assert_eq!(head, data[5000..6000], "{}", s.name);
        drop(writer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_invisible(&s, "cache/r/ab/x.body").await;
        assert_eq!(
            files_under(s.dir.path()),
            Vec::<std::path::PathBuf>::new(),
            "{}",
            s.name
        );
    }
}

#[tokio::test]
async fn a_committed_body_reads_back_whole_and_by_range_costing_only_the_range() {
    for s in subjects() {
        let data = body(1_000_000);
        let mut writer = s.store.create("cache/r/cd/y.body").await.unwrap();
        for chunk in data.chunks(65_536) {
            writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        let spool = writer.local_file();
        writer.commit().await.unwrap();
        let opened = s.store.open("cache/r/cd/y.body").await.unwrap().unwrap();
        assert_eq!(opened.size(), data.len() as u64, "{}", s.name);
        if let Opened::File { file, .. } = &opened {
            let mut tail = vec![0u8; 10];
            file.read_exact_at(&mut tail, 999_990).unwrap();
            assert_eq!(tail, data[999_990..], "{}", s.name);
        }
        // The writer's file stays readable after the commit: followers of
        // the fill finish from it.
        let mut early = vec![0u8; 100];
        spool.read_exact_at(&mut early, 0).unwrap();
        assert_eq!(early, data[..100], "{}", s.name);

        let before = s
            .counting
            .as_ref()
            .map(|c| c.bytes_requested.load(Ordering::Relaxed));
        let middle = read_all(&*s.store, "cache/r/cd/y.body", 400_000..400_999).await;
        assert_eq!(middle, data[400_000..400_999], "{}", s.name);
        if let (Some(counting), Some(before)) = (&s.counting, before) {
            let asked = counting.bytes_requested.load(Ordering::Relaxed) - before;
            assert_eq!(asked, 999, "a range read transfers the range only");
        }
        let clamped = read_all(&*s.store, "cache/r/cd/y.body", 999_000..2_000_000).await;
        assert_eq!(clamped, data[999_000..], "{}", s.name);
        let whole = read_all(&*s.store, "cache/r/cd/y.body", 0..u64::MAX).await;
        assert_eq!(whole.len(), data.len(), "{}", s.name);
        assert!(whole == data, "{}", s.name);
        let listed = s.store.list("cache/r").await.unwrap();
        assert_eq!(listed.len(), 1, "{}", s.name);
        assert_eq!(listed[0].key, "cache/r/cd/y.body", "{}", s.name);
        assert_eq!(listed[0].size, data.len() as u64, "{}", s.name);
    }
}

#[tokio::test]
async fn small_objects_replace_atomically_and_deletes_report_existence() {
    for s in subjects() {
        let key = "cache/r/ef/z.meta";
        assert_eq!(s.store.get_small(key).await.unwrap(), None, "{}", s.name);
        s.store.put(key, Bytes::from_static(b"one")).await.unwrap();
        s.store.put(key, Bytes::from_static(b"two!")).await.unwrap();
        assert_eq!(
            s.store.get_small(key).await.unwrap().as_deref(),
            Some(&b"two!"[..]),
            "{}",
            s.name
        );
        assert!(s.store.delete(key).await.unwrap(), "{}", s.name);
        assert!(!s.store.delete(key).await.unwrap(), "{}", s.name);
        assert_eq!(s.store.get_small(key).await.unwrap(), None, "{}", s.name);
    }
}

#[tokio::test]
async fn deleting_a_prefix_removes_exactly_that_prefix() {
    for s in subjects() {
        for key in [
            "cache/a/01/x.meta",
            "cache/a/02/y.meta",
            "cache/ab/01/z.meta",
            "local/a/f",
        ] {
            s.store.put(key, Bytes::from_static(b"v")).await.unwrap();
        }
        let mut deleted = s.store.delete_prefix("cache/a").await.unwrap();
        deleted.sort();
        assert_eq!(
            deleted,
            ["cache/a/01/x.meta", "cache/a/02/y.meta"],
            "{}",
            s.name
        );
        let mut left: Vec<String> = s
            .store
            .list("cache")
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect();
        left.extend(
            s.store
                .list("local")
                .await
                .unwrap()
                .into_iter()
                .map(|l| l.key),
        );
        left.sort();
        assert_eq!(left, ["cache/ab/01/z.meta", "local/a/f"], "{}", s.name);
        assert!(
            s.store
                .delete_prefix("cache/none")
                .await
                .unwrap()
                .is_empty(),
            "{}",
            s.name
        );
    }
}

#[tokio::test]
async fn the_filesystem_sweep_removes_only_staging_files_of_dead_processes() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBodyStore::open(dir.path(), false).unwrap();
    let staging = dir.path().join(super::fs::STAGING_DIR);
    std::fs::write(staging.join("4194304.dead.part"), vec![0u8; 5000]).unwrap();
    let live = store.create("cache/r/00/live.body").await.unwrap();
    let mut live = live;
    live.write(Bytes::from(vec![1u8; 700])).await.unwrap();
    assert_eq!(store.sweep_staging(Duration::ZERO).await.unwrap(), 5000);
    assert_eq!(
        files_under(&staging).len(),
        1,
        "the live writer's file stays"
    );
    live.commit().await.unwrap();
    assert!(files_under(&staging).is_empty());
    assert_eq!(
        store
            .open("cache/r/00/live.body")
            .await
            .unwrap()
            .unwrap()
            .size(),
        700
    );
}
