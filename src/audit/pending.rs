//! Deliveries not yet handed to the catalog writer, counted in place.
//!
//! A hot artifact is delivered to the same client thousands of times a
//! second; a queue entry per delivery cost a quarter of a hit's CPU and
//! overflowed the writer's queue. Here a delivery is two hashes, one
//! uncontended lock and one increment of the count it shares with every
//! delivery alike in all but time on its thread (the catalog writer merges
//! the threads' rows); [`Pending::hand_over`] hands the rows over (a
//! leaf, so the application state can hold it).
//!
//! What a hit touches is kept small: a delivery is known by 96 bits of
//! two foldhash hashes seeded at random for the process, and its count
//! sits beside them in the table (16 bytes a row), so a hit does not read
//! the row's strings, which a busy node's other work has long pushed out
//! of the CPU's caches (reading them, and a table of 240-byte buckets,
//! cost as much as the rest of the count). The keyed hashes stand in for
//! comparing the strings: a client cannot aim its user agent at another
//! row's key without the seeds, and two alike by chance among a shard's
//! rows are a 2^-72 event.

use crate::catalog::{AuditRow, CatalogEvent, CatalogWriter};
use foldhash::fast::RandomState;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Shards, one per serving thread (round robin past this many), so that a
/// thread counts into memory no other thread writes: sharing one across
/// cores cost more than the count itself.
const SHARDS: usize = 16;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local!(static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
/// Distinct rows one shard holds between two hand-overs; past it,
/// deliveries are dropped and counted.
const MAX_ROWS_PER_SHARD: usize = 4096;

/// One shard's rows: by the first hash, 32 bits of the second and the
/// count so far (the row's own count is set as it is taken).
#[derive(Default)]
struct Shard {
    counts: HashMap<u64, (u32, u32), BuildHasherDefault<Prehashed>>,
    rows: Vec<(u64, AuditRow)>,
}

/// The map's hasher for keys that are hashes already: hashing them again
/// would cost as much as the first time.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

impl Shard {
    /// The shard's rows, leaving it room for as many: a busy node's next
    /// second looks like its last, and growing the tables again row by
    /// row copied every row at each doubling.
    fn take(&mut self) -> Shard {
        let fresh = Shard {
            counts: HashMap::with_capacity_and_hasher(self.counts.len(), Default::default()),
            rows: Vec::with_capacity(self.rows.len()),
        };
        std::mem::replace(self, fresh)
    }
}

pub struct Pending {
    shards: [Mutex<Shard>; SHARDS],
    seeds: [RandomState; 2],
    dropped: AtomicU64,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            shards: Default::default(),
            seeds: [RandomState::default(), RandomState::default()],
            dropped: AtomicU64::new(0),
        }
    }
}

/// What tells deliveries apart.
#[derive(Hash)]
pub struct Delivery<'a> {
    pub remote: &'a str,
    pub path: &'a str,
    pub client: Option<IpAddr>,
    pub token: Option<&'static str>,
    pub user_agent: Option<&'a str>,
    /// Which copy of the path was delivered (a tag of its digest): two
    /// bodies served under one path (one replaced the other between two
    /// hand-overs) are two rows.
    pub copy: Option<u128>,
}

impl Pending {
    /// The table's key and the check beside it.
    fn key(&self, delivery: &Delivery<'_>) -> (u64, u32) {
        let [key, check] = &self.seeds;
        (key.hash_one(delivery), check.hash_one(delivery) as u32)
    }

    /// Counts a delivery; `row` builds its row when it is the first alike.
    pub fn add(&self, delivery: &Delivery<'_>, row: impl FnOnce() -> AuditRow) {
        let (key, check) = self.key(delivery);
        let mut shard = self.shards[SHARD.with(|at| *at)].lock();
        let Shard { counts, rows } = &mut *shard;
        match counts.get_mut(&key) {
            Some((checked, count)) if *checked == check => *count = count.saturating_add(1),
            None if rows.len() < MAX_ROWS_PER_SHARD => {
                counts.insert(key, (check, 1));
                rows.push((key, row()));
            }
            // Another delivery under the same first hash, or a full
            // shard: dropped and counted rather than counted as another's.
            _ => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Hands the rows counted so far to the catalog writer (and counts
    /// the deliveries dropped as the writer's own drops).
    pub fn hand_over(&self, writer: &CatalogWriter) {
        for row in self.take() {
            writer.record(CatalogEvent::Served(row));
        }
        writer.add_dropped(self.take_dropped());
    }

    /// Every row counted since the last call.
    fn take(&self) -> Vec<AuditRow> {
        let mut taken = Vec::new();
        for shard in &self.shards {
            let Shard { counts, rows } = shard.lock().take();
            taken.extend(rows.into_iter().map(|(key, mut row)| {
                row.deliveries = counts.get(&key).map_or(1, |&(_, count)| i64::from(count));
                row
            }));
        }
        taken
    }

    /// Deliveries dropped (a shard full, a first hash taken by another)
    /// since the last call.
    fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str) -> AuditRow {
        AuditRow {
            at_ms: 1,
            remote: "r".into(),
            path: path.into(),
            package: None,
            version: None,
            sha256: None,
            client: Some("127.0.0.1".into()),
            token: None,
            user_agent: Some("pip/26".into()),
            deliveries: 1,
        }
    }

    fn delivery<'a>(path: &'a str, user_agent: &'static str) -> Delivery<'a> {
        Delivery {
            remote: "r",
            path,
            client: Some([127, 0, 0, 1].into()),
            token: None,
            user_agent: Some(user_agent),
            copy: None,
        }
    }

    #[test]
    fn alike_deliveries_share_a_row_until_taken() {
        let pending = Pending::default();
        for _ in 0..3 {
            pending.add(&delivery("a", "pip/26"), || row("a"));
        }
        pending.add(&delivery("b", "pip/26"), || row("b"));
        // The same path to another user agent is another row.
        pending.add(&delivery("a", "uv/0.9"), || row("a2"));
        let mut rows = pending.take();
        rows.sort_by(|x, y| x.path.cmp(&y.path));
        let counts: Vec<(&str, i64)> = rows
            .iter()
            .map(|r| (r.path.as_str(), r.deliveries))
            .collect();
        assert_eq!(counts, [("a", 3), ("a2", 1), ("b", 1)]);
        assert!(pending.take().is_empty());
        assert_eq!(pending.take_dropped(), 0);
    }

    #[test]
    fn a_full_shard_drops_and_counts_new_rows_but_still_counts_its_own() {
        let pending = Pending::default();
        let paths: Vec<String> = (0..=MAX_ROWS_PER_SHARD).map(|i| format!("p{i}")).collect();
        for path in &paths {
            pending.add(&delivery(path, "pip/26"), || row(path));
        }
        pending.add(&delivery("p0", "pip/26"), || row("p0"));
        assert_eq!(pending.take_dropped(), 1);
        let rows = pending.take();
        assert_eq!(rows.len(), MAX_ROWS_PER_SHARD);
        let first = rows.iter().find(|r| r.path == "p0").unwrap();
        assert_eq!(first.deliveries, 2);
    }
}
