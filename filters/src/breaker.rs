//! A per-remote circuit breaker, as a pure state machine.
//!
//! After `threshold` consecutive upstream failures a remote is *open*
//! (marked down) for `backoff`: requests are not sent upstream at all, so
//! cached objects are answered from cache at once and uncached ones fail
//! fast. When the back-off has passed, exactly one request is admitted as a
//! *probe*; its success closes the breaker, its failure opens it again.
//! Time is milliseconds on any monotonic clock the caller chooses.

/// The breaker of one remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests flow; `failures` consecutive failures so far.
    Closed { failures: u32 },
    /// Marked down until `until_ms`.
    Open { until_ms: u64 },
    /// One probe is in flight; everything else is refused meanwhile.
    Probing,
}

impl Default for State {
    fn default() -> Self {
        State::Closed { failures: 0 }
    }
}

impl State {
    /// Whether requests currently reach the upstream.
    pub fn is_up(&self) -> bool {
        matches!(self, State::Closed { .. })
    }
}

/// Whether a request may go upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Yes, as the one probe of a remote that was down.
    Probe,
    /// No: the remote is down; try again in about this long.
    No {
        retry_after_ms: u64,
    },
}

/// Thresholds of a breaker. A `threshold` of 0 disables it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    pub threshold: u32,
    pub backoff_ms: u64,
}

impl Breaker {
    /// Decides for a request at `now_ms`, returning the new state.
    pub fn admit(&self, state: State, now_ms: u64) -> (Admit, State) {
        if self.threshold == 0 {
            return (Admit::Yes, State::default());
        }
        match state {
            State::Closed { .. } => (Admit::Yes, state),
            State::Open { until_ms } if now_ms >= until_ms => (Admit::Probe, State::Probing),
            State::Open { until_ms } => (
                Admit::No {
                    retry_after_ms: until_ms - now_ms,
                },
                state,
            ),
            State::Probing => (
                Admit::No {
                    retry_after_ms: self.backoff_ms.min(1000),
                },
                state,
            ),
        }
    }

    /// Records the outcome of a request that `admit` let through.
    pub fn record(&self, state: State, admitted: Admit, success: bool, now_ms: u64) -> State {
        if self.threshold == 0 {
            return State::default();
        }
        let open = State::Open {
            until_ms: now_ms.saturating_add(self.backoff_ms),
        };
        match (admitted, success, state) {
            (Admit::Probe, true, _) => State::Closed { failures: 0 },
            (Admit::Probe, false, _) => open,
            (Admit::Yes, true, State::Closed { .. }) => State::Closed { failures: 0 },
            (Admit::Yes, false, State::Closed { failures })
                if failures.saturating_add(1) >= self.threshold =>
            {
                open
            }
            (Admit::Yes, false, State::Closed { failures }) => State::Closed {
                failures: failures.saturating_add(1),
            },
            // A request admitted before the breaker opened, finishing late,
            // or one that was refused: no change.
            (_, _, state) => state,
        }
    }
}

/// What another node of a cluster saw of the same remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum News {
    /// It marked the remote down for this long from now.
    Down { for_ms: u64 },
    /// Its probe found the remote back.
    Up,
}

impl Breaker {
    /// The state after hearing `news` at `now_ms`. A closed breaker opens
    /// on another node's discovery (its requests would only add failures);
    /// an open one closes on another's recovery. A probe in flight here
    /// decides for itself.
    pub fn learn(&self, state: State, news: News, now_ms: u64) -> State {
        if self.threshold == 0 {
            return State::default();
        }
        match (news, state) {
            (News::Down { for_ms }, State::Closed { .. }) => State::Open {
                until_ms: now_ms.saturating_add(for_ms),
            },
            (News::Up, State::Open { .. }) => State::Closed { failures: 0 },
            (_, state) => state,
        }
    }

    /// What to tell the other nodes of a change from `before` to `after`.
    pub fn news(&self, before: State, after: State, now_ms: u64) -> Option<News> {
        match (before, after) {
            (State::Open { .. }, State::Open { .. }) => None,
            (_, State::Open { until_ms }) => Some(News::Down {
                for_ms: until_ms.saturating_sub(now_ms),
            }),
            (State::Open { .. } | State::Probing, State::Closed { .. }) => Some(News::Up),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Breaker = Breaker {
        threshold: 3,
        backoff_ms: 1000,
    };

    fn fail(state: State, now: u64) -> State {
        let (admit, state) = B.admit(state, now);
        B.record(state, admit, false, now)
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let mut s = State::default();
        s = fail(s, 0);
        s = fail(s, 1);
        assert_eq!(s, State::Closed { failures: 2 });
        s = fail(s, 2);
        assert_eq!(s, State::Open { until_ms: 1002 });
        assert!(!s.is_up());
        assert_eq!(
            B.admit(s, 500).0,
            Admit::No {
                retry_after_ms: 502
            }
        );
    }

    #[test]
    fn a_success_resets_the_count() {
        let s = fail(fail(State::default(), 0), 1);
        let (admit, s) = B.admit(s, 2);
        assert_eq!(B.record(s, admit, true, 2), State::Closed { failures: 0 });
    }

    #[test]
    fn one_probe_at_a_time_then_close_or_reopen() {
        let open = State::Open { until_ms: 1000 };
        // Clock edge: one millisecond early is refused, on time is a probe.
        assert!(matches!(
            B.admit(open, 999).0,
            Admit::No { retry_after_ms: 1 }
        ));
        let (admit, probing) = B.admit(open, 1000);
        assert_eq!((admit, probing), (Admit::Probe, State::Probing));
        assert!(matches!(B.admit(probing, 1001).0, Admit::No { .. }));
        assert_eq!(
            B.record(probing, Admit::Probe, true, 1100),
            State::Closed { failures: 0 }
        );
        assert_eq!(
            B.record(probing, Admit::Probe, false, 1100),
            State::Open { until_ms: 2100 }
        );
    }

    #[test]
    fn late_results_of_earlier_requests_do_not_change_an_open_breaker() {
        let open = State::Open { until_ms: 1000 };
        assert_eq!(B.record(open, Admit::Yes, true, 10), open);
        assert_eq!(B.record(open, Admit::Yes, false, 10), open);
    }

    #[test]
    fn another_nodes_discovery_opens_and_its_recovery_closes() {
        let closed = State::Closed { failures: 1 };
        let down = News::Down { for_ms: 700 };
        assert_eq!(B.learn(closed, down, 100), State::Open { until_ms: 800 });
        let open = State::Open { until_ms: 800 };
        assert_eq!(
            B.learn(open, down, 200),
            open,
            "an open breaker keeps its end"
        );
        assert_eq!(B.learn(open, News::Up, 300), State::Closed { failures: 0 });
        assert_eq!(B.learn(State::Probing, News::Up, 300), State::Probing);
        assert_eq!(B.learn(State::Probing, down, 300), State::Probing);
    }

    #[test]
    fn only_openings_and_recoveries_are_news() {
        let after = fail(fail(fail(State::default(), 0), 1), 2);
        let before = State::Closed { failures: 2 };
        assert_eq!(B.news(before, after, 2), Some(News::Down { for_ms: 1000 }));
        assert_eq!(
            B.news(State::Probing, after, 2),
            Some(News::Down { for_ms: 1000 })
        );
        assert_eq!(B.news(State::Probing, State::default(), 9), Some(News::Up));
        assert_eq!(B.news(State::default(), before, 9), None);
        assert_eq!(B.news(after, after, 9), None);
        let (_, probing) = B.admit(after, 1002);
        assert_eq!(
            B.news(after, probing, 1002),
            None,
            "starting a probe is not news"
        );
    }

    #[test]
    fn threshold_zero_disables() {
        let off = Breaker {
            threshold: 0,
            backoff_ms: 1000,
        };
        let mut s = State::default();
        for now in 0..10 {
            let (admit, next) = off.admit(s, now);
            assert_eq!(admit, Admit::Yes);
            s = off.record(next, admit, false, now);
        }
        assert!(s.is_up());
    }
}
