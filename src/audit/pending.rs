//! Deliveries not yet handed to the catalog writer, counted in place.
//!
//! A hot artifact is delivered to the same client thousands of times a
//! second; a queue entry per delivery cost a quarter of a hit's CPU and
//! overflowed the writer's queue. Here a delivery is one hash, one
//! uncontended lock and one increment of the row it shares with every
//! delivery alike in all but time on its thread (the catalog writer merges
//! the threads' rows); [`Pending::take`] hands the rows over
//! every half second (a leaf, so the application state can hold it).

use crate::catalog::AuditRow;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
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

/// Rows by the hash of what tells them apart, with the client's address
/// as counted (compared without formatting it).
type Shard = Mutex<HashMap<u64, (Option<IpAddr>, AuditRow)>>;

#[derive(Default)]
pub struct Pending {
    shards: [Shard; SHARDS],
    dropped: AtomicU64,
}

/// What tells deliveries apart.
pub struct Delivery<'a> {
    pub remote: &'a str,
    pub path: &'a str,
    pub client: Option<IpAddr>,
    pub token: Option<&'static str>,
    pub user_agent: Option<&'a str>,
}

impl Delivery<'_> {
    fn key(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            self.remote,
            self.path,
            self.client,
            self.token,
            self.user_agent,
        )
            .hash(&mut hasher);
        hasher.finish()
    }

    fn is(&self, (client, row): &(Option<IpAddr>, AuditRow)) -> bool {
        row.remote == self.remote
            && row.path == self.path
            && *client == self.client
            && row.token.as_deref() == self.token
            && row.user_agent.as_deref() == self.user_agent
    }
}

impl Pending {
    /// Counts a delivery; `row` builds its row when it is the first alike.
    pub fn add(&self, delivery: &Delivery<'_>, row: impl FnOnce() -> AuditRow) {
        let key = delivery.key();
        let mut shard = self.shards[SHARD.with(|at| *at)].lock();
        let full = shard.len() >= MAX_ROWS_PER_SHARD;
        match shard.get_mut(&key) {
            Some(existing) if delivery.is(existing) => existing.1.deliveries += 1,
            // A 64-bit collision, or a full shard: dropped and counted
            // rather than counted as another's.
            Some(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            None if full => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                shard.insert(key, (delivery.client, row()));
            }
        }
    }

    /// Every row counted since the last call.
    pub fn take(&self) -> Vec<AuditRow> {
        let mut rows = Vec::new();
        for shard in &self.shards {
            let taken = std::mem::take(&mut *shard.lock());
            rows.extend(taken.into_values().map(|(_, row)| row));
        }
        rows
    }

    /// Deliveries dropped so far (a shard full, a hash collision).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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

    #[test]
    fn alike_deliveries_share_a_row_until_taken() {
        let pending = Pending::default();
        let delivery = |path| Delivery {
            remote: "r",
            path,
            client: Some([127, 0, 0, 1].into()),
            token: None,
            user_agent: Some("pip/26"),
        };
        for _ in 0..3 {
            pending.add(&delivery("a"), || row("a"));
        }
        pending.add(&delivery("b"), || row("b"));
        let mut rows = pending.take();
        rows.sort_by(|x, y| x.path.cmp(&y.path));
        let counts: Vec<(&str, i64)> = rows
            .iter()
            .map(|r| (r.path.as_str(), r.deliveries))
            .collect();
        assert_eq!(counts, [("a", 3), ("b", 1)]);
        assert!(pending.take().is_empty());
        assert_eq!(pending.dropped(), 0);
    }
}
