//! Pacing bytes to a rate that many streams share: how long a stream waits
//! after a chunk so that together they stay under a remote's
//! `max_upstream_bytes_per_second`.
//!
//! This is the virtual-scheduling form of a token bucket (GCRA): one
//! theoretical arrival time for all the remote's streams, advanced by each
//! chunk's length over the rate. A chunk that puts it more than `burst`
//! ahead of now waits the difference; while a stream waits it reads no
//! more, and TCP holds the upstream back.

use std::time::Duration;

/// The shared schedule of one remote's upstream bytes.
#[derive(Debug, Clone)]
pub struct Pace {
    bytes_per_second: u64,
    burst: Duration,
    /// When the bytes taken so far are paid for, as time since the start.
    paid_until: Duration,
}

impl Pace {
    /// A pace of `bytes_per_second`, letting a quarter second of it through
    /// at once.
    pub fn new(bytes_per_second: u64) -> Pace {
        Pace {
            bytes_per_second: bytes_per_second.max(1),
            burst: Duration::from_millis(250),
            paid_until: Duration::ZERO,
        }
    }

    /// Takes `bytes` that arrived at `now` (time since a fixed start);
    /// returns how long their stream waits before reading on.
    pub fn take(&mut self, now: Duration, bytes: u64) -> Duration {
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
        self.paid_until = self.paid_until.max(now) + cost;
        self.paid_until.saturating_sub(now + self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Streams that read whenever their wait is over: the bytes each
    /// moves by `until`.
    fn simulate(streams: usize, chunk: u64, rate: u64, until: Duration) -> Vec<u64> {
        let mut pace = Pace::new(rate);
        let mut ready = vec![Duration::ZERO; streams];
        let mut moved = vec![0u64; streams];
        loop {
            let (i, now) = (ready.iter().copied().enumerate())
                .min_by_key(|(_, at)| *at)
                .unwrap();
            if now >= until {
                return moved;
            }
            moved[i] += chunk;
            ready[i] = now + pace.take(now, chunk) + Duration::from_micros(10);
        }
    }

    #[test]
    fn streams_together_keep_to_the_rate() {
        let rate = 1 << 20;
        let moved = simulate(4, 64 << 10, rate, Duration::from_secs(10));
        let total: u64 = moved.iter().sum();
        // Ten seconds' worth, plus the burst.
        let expected = 10 * rate;
        assert!(
            total >= expected && total <= expected + rate / 4 + ((4 * 64) << 10),
            "{total} bytes in 10 s at {rate}/s"
        );
        // Shared fairly: every stream moved.
        assert!(moved.iter().all(|m| *m > expected / 8), "{moved:?}");
    }

    #[test]
    fn a_burst_passes_and_an_idle_spell_is_not_saved_up() {
        let mut pace = Pace::new(1000);
        assert_eq!(pace.take(Duration::ZERO, 250), Duration::ZERO);
        assert_eq!(pace.take(Duration::ZERO, 250), Duration::from_millis(250));
        // After an hour idle, the same: no credit for the hour.
        let later = Duration::from_secs(3600);
        assert_eq!(pace.take(later, 250), Duration::ZERO);
        assert_eq!(pace.take(later, 500), Duration::from_millis(500));
    }
}
