//! Room for fills on the body store's filesystem, and the misses served
//! whole without being kept.
//!
//! Why: a fill that runs out of space midway has written bytes for
//! nothing, and its readers (its own client first of all) read the fill.
//! So a miss is kept only when the space it will take is free beside what
//! the fills already in flight have still to write: its `Content-Length`,
//! plus [`FLOOR`] for records and the filesystem's own blocks. Otherwise it
//! passes through uncached, and caching resumes by itself once space
//! returns (eviction under `cache.min_free`, or an operator). When storing
//! fails anyway (another writer filled the disk, a length not known ahead)
//! the fill still serves its readers every byte ([`super::miss`]) and is
//! not committed.
//!
//! Both are counted (`artifactd_cache_unstored_total`) and logged at most
//! once a minute, so a full disk under load is one line, not one a request.
//! A bucket has no free space to ask about: every fill is admitted.
//!
//! Asking the filesystem (`statvfs`) costs a miss a few microseconds, twice,
//! so admission reuses a sample for [`SAMPLE_FOR`] while the sample shows
//! at least [`PLENTY`] free: no fill can write that much in so short a
//! time on any disk we run on. Below it every admission asks afresh, so a
//! nearly full disk is judged by its exact figure. Eviction and the metrics
//! always ask afresh: they watch the figure move.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Free space kept beyond a fill's length: its record, and the blocks and
/// inodes the filesystem itself takes.
pub const FLOOR: u64 = 2 << 20;
/// At most one log line per this interval.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// How long an admission may reuse a sample of the free space.
const SAMPLE_FOR: Duration = Duration::from_millis(100);
/// Free space above which a sample may be reused.
const PLENTY: u64 = 1 << 30;

/// Whether a fill of `incoming` bytes fits: `free` on the filesystem (none
/// known: a bucket), less what fills in flight have still to write.
pub fn admits(free: Option<u64>, reserved: u64, incoming: u64) -> bool {
    free.is_none_or(|free| free.saturating_sub(reserved) >= incoming.saturating_add(FLOOR))
}

/// Why a miss was served without being kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unstored {
    /// Not admitted: too little free space.
    NoRoom,
    /// Storing failed midway; the readers were served from the fill.
    WriteFailed,
}

impl Unstored {
    pub fn as_str(self) -> &'static str {
        match self {
            Unstored::NoRoom => "no_room",
            Unstored::WriteFailed => "write_failed",
        }
    }
}

/// Counts of misses served whole without being kept.
pub struct Room {
    no_room: AtomicU64,
    write_failed: AtomicU64,
    /// Counted since the last log line.
    unlogged: AtomicU64,
    /// Milliseconds after `epoch` of the last log line, plus one (0: none yet).
    logged_at: AtomicU64,
    epoch: Instant,
    /// Free bytes at the last sample worth reusing (0: none).
    sampled_free: AtomicU64,
    /// Milliseconds after `epoch` of that sample.
    sampled_at: AtomicU64,
}

impl Default for Room {
    fn default() -> Self {
        Room {
            no_room: AtomicU64::new(0),
            write_failed: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
            logged_at: AtomicU64::new(0),
            epoch: Instant::now(),
            sampled_free: AtomicU64::new(0),
            sampled_at: AtomicU64::new(0),
        }
    }
}

impl Room {
    /// Counts a miss served without being kept, and logs it unless a line
    /// was written within [`LOG_EVERY`]; `detail` says what happened to
    /// this one.
    pub fn unstored(&self, why: Unstored, detail: impl FnOnce() -> String) {
        match why {
            Unstored::NoRoom => &self.no_room,
            Unstored::WriteFailed => &self.write_failed,
        }
        .fetch_add(1, Ordering::Relaxed);
        let unlogged = self.unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        let now = 1 + self.epoch.elapsed().as_millis() as u64;
        let last = self.logged_at.load(Ordering::Relaxed);
        let due = last == 0 || now - last >= LOG_EVERY.as_millis() as u64;
        let claimed = due
            && self
                .logged_at
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
        if claimed {
            self.unlogged.fetch_sub(unlogged, Ordering::Relaxed);
            log::warn!(
                "storage: {unlogged} miss(es) served without being kept since the last such line ({}: {}); \
                 at most one line a minute",
                why.as_str(),
                detail()
            );
        }
    }

    /// The free space to admit a fill against: a recent sample while it
    /// shows [`PLENTY`], else `ask()` (a bucket's `None` included).
    pub fn free_for_admission(&self, ask: impl FnOnce() -> Option<u64>) -> Option<u64> {
        let now = self.epoch.elapsed().as_millis() as u64;
        let sampled = self.sampled_free.load(Ordering::Relaxed);
        if sampled != 0
            && now.saturating_sub(self.sampled_at.load(Ordering::Relaxed))
                < SAMPLE_FOR.as_millis() as u64
        {
            return Some(sampled);
        }
        let free = ask();
        let reusable = free.filter(|free| *free >= PLENTY).unwrap_or(0);
        self.sampled_at.store(now, Ordering::Relaxed);
        self.sampled_free.store(reusable, Ordering::Relaxed);
        free
    }

    /// Misses served without being kept, since start: (no room, write failed).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.no_room.load(Ordering::Relaxed),
            self.write_failed.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_fits_beside_what_the_fills_in_flight_still_write() {
        let mib = 1 << 20;
        assert!(
            admits(None, u64::MAX, u64::MAX),
            "a bucket takes everything"
        );
        assert!(admits(Some(20 * mib), 0, 18 * mib));
        assert!(!admits(Some(20 * mib), 0, 19 * mib), "the floor stays free");
        assert!(!admits(Some(20 * mib), 10 * mib, 9 * mib));
        assert!(admits(Some(20 * mib), 10 * mib, 8 * mib));
        assert!(!admits(Some(mib), 2 * mib, 0), "reserved past what is free");
    }

    #[test]
    fn plenty_of_free_space_is_sampled_and_little_is_asked_each_time() {
        let room = Room::default();
        let asked = std::cell::Cell::new(0);
        let ask = |free: Option<u64>| {
            asked.set(asked.get() + 1);
            free
        };
        for _ in 0..3 {
            assert_eq!(room.free_for_admission(|| ask(Some(PLENTY))), Some(PLENTY));
        }
        assert_eq!(asked.get(), 1, "a sample showing plenty is reused");

        let room = Room::default();
        asked.set(0);
        for _ in 0..3 {
            assert_eq!(
                room.free_for_admission(|| ask(Some(PLENTY - 1))),
                Some(PLENTY - 1)
            );
            assert_eq!(room.free_for_admission(|| ask(None)), None, "a bucket");
        }
        assert_eq!(asked.get(), 6, "little free space is asked every time");

        let room = Room::default();
        room.free_for_admission(|| Some(PLENTY));
        std::thread::sleep(SAMPLE_FOR + Duration::from_millis(5));
        assert_eq!(
            room.free_for_admission(|| Some(3)),
            Some(3),
            "an old sample is taken again"
        );
    }

    #[test]
    fn every_miss_is_counted_and_one_line_covers_a_minute() {
        let room = Room::default();
        for _ in 0..5 {
            room.unstored(Unstored::NoRoom, String::new);
        }
        room.unstored(Unstored::WriteFailed, String::new);
        assert_eq!(room.counts(), (5, 1));
        assert_ne!(
            room.logged_at.load(Ordering::Relaxed),
            0,
            "the first was logged"
        );
        // The five after it wait for the next line.
        assert_eq!(room.unlogged.load(Ordering::Relaxed), 5);
    }
}
