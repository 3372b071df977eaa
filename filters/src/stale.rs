//! Whether an expired cached copy may stand in for a failing upstream.
//!
//! Seed 002's rule: clients keep getting the cached copy while the upstream
//! fails (connection refused, DNS, timeouts, TLS, 5xx, 429), until the copy
//! has been stale for longer than the remote's `stale_if_error` period.

use std::time::{Duration, SystemTime};

/// The verdict for one failed upstream attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// Serve the cached copy; it has been stale for this long.
    Serve { stale_for: Duration },
    /// Pass the failure on to the client.
    Refuse,
}

/// Decides for a copy fresh until `fresh_until`, at `now`, with the remote's
/// `period` (zero disables serving stale).
pub fn decide(fresh_until: SystemTime, now: SystemTime, period: Duration) -> Stale {
    if period.is_zero() {
        return Stale::Refuse;
    }
    // A copy that is still fresh is "stale for zero" (revalidation forced by
    // a client, or a clock step backwards).
    let stale_for = now.duration_since(fresh_until).unwrap_or(Duration::ZERO);
    if stale_for <= period {
        Stale::Serve { stale_for }
    } else {
        Stale::Refuse
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn within_the_period_serves() {
        let now = SystemTime::UNIX_EPOCH + 1000 * HOUR;
        assert_eq!(
            decide(now - HOUR, now, 2 * HOUR),
            Stale::Serve { stale_for: HOUR }
        );
    }

    #[test]
    fn past_the_period_refuses_and_zero_disables() {
        let now = SystemTime::UNIX_EPOCH + 1000 * HOUR;
        assert_eq!(decide(now - 3 * HOUR, now, 2 * HOUR), Stale::Refuse);
        assert_eq!(
            decide(now - Duration::from_secs(1), now, Duration::ZERO),
            Stale::Refuse
        );
    }

    #[test]
    fn clock_edges() {
        let now = SystemTime::UNIX_EPOCH + 1000 * HOUR;
        // Exactly at the end of the period: still served; one second later: not.
        assert_eq!(
            decide(now - HOUR, now, HOUR),
            Stale::Serve { stale_for: HOUR }
        );
        assert_eq!(
            decide(now - HOUR - Duration::from_secs(1), now, HOUR),
            Stale::Refuse
        );
        // Fresh-until in the future (clock stepped back): stale for zero.
        assert_eq!(
            decide(now + HOUR, now, HOUR),
            Stale::Serve {
                stale_for: Duration::ZERO
            }
        );
    }
}
