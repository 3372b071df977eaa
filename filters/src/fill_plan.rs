//! Which bytes of a large object to fetch next, and over how many upstream
//! connections: the plan a fill assembled from ranges follows.
//!
//! A fill knows the spans it has written and the fetches in flight, each
//! with the position it has reached (`at`) and where it stops (`end`, which
//! the plan may move closer, never further). Three rules, in order:
//!
//! 1. **A reader of a range waits for no one far away.** A byte a reader
//!    waits on that no fetch reaches within `near` bytes gets a fetch of its
//!    own at once: in a gap, one starts there; inside a fetch's span far
//!    ahead of its position, that fetch stops there and a new one takes the
//!    rest. So a footer-first reader gets its footer in one round trip,
//!    while the object still fills.
//! 2. **Parallel parts stay near the front.** With `part` set, every fetch
//!    stops at the first part boundary past its position. The fetches side
//!    by side are then the next few parts after the contiguous prefix, and
//!    a reader streaming from the start sees the prefix grow at the sum of
//!    their speeds, not at one connection's.
//! 3. **Free connections take the first gaps.** Up to `slots` fetches (those
//!    started for readers not counted) fill gaps in order; a fetch that
//!    broke leaves its unfetched rest as a gap, so a resume is simply the
//!    next fetch of that gap.

use std::ops::Range;

/// A fetch in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetching {
    /// Every byte of its span below this is written.
    pub at: u64,
    /// Where it stops.
    pub end: u64,
    /// Started for a reader's range (rule 1): outside the slot count.
    pub for_reader: bool,
}

/// What the fill does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Fetch number `fetch` (an index into [`Plan::fetching`]) stops at
    /// `at` instead of its end.
    Stop { fetch: usize, at: u64 },
    /// A new fetch of `span`.
    Fetch { span: Range<u64>, for_reader: bool },
}

/// The state of one fill and its limits.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    pub length: u64,
    /// Written spans, sorted and disjoint.
    pub written: &'a [Range<u64>],
    pub fetching: &'a [Fetching],
    /// Fetches in flight at most, those for readers not counted.
    pub slots: usize,
    /// Part size in parallel mode (rule 2); `None`: fetches run to the
    /// end of their gap.
    pub part: Option<u64>,
    /// How close a fetch must be to a waiting reader's byte to be waited for.
    pub near: u64,
}

impl Plan<'_> {
    /// The steps that bring the fill in line with the three rules, given
    /// the bytes readers of ranges wait on.
    pub fn steps(&self, wants: &[u64]) -> Vec<Step> {
        let mut ends: Vec<u64> = self.fetching.iter().map(|f| f.end).collect();
        let mut started: Vec<(Range<u64>, bool)> = Vec::new();
        for &want in wants {
            if want >= self.length || self.covering_end(want, &ends, &started).is_some() {
                if let Some(i) = self.fetch_far_behind(want, &ends) {
                    started.push((want..ends[i], true));
                    ends[i] = want;
                }
                continue;
            }
            let end = self.next_covered(want, &ends, &started);
            started.push((want..end, true));
        }
        if let Some(part) = self.part {
            for (i, fetch) in self.fetching.iter().enumerate() {
                ends[i] = ends[i].min(self.boundary_after(fetch.at, part));
            }
            for (span, _) in started.iter_mut() {
                span.end = span.end.min(self.boundary_after(span.start, part));
            }
        }
        let running = |ends: &[u64]| {
            let fetching = self.fetching.iter().zip(ends);
            fetching
                .filter(|(f, end)| !f.for_reader && f.at < **end)
                .count()
        };
        let mut busy = running(&ends) + started.iter().filter(|(_, r)| !r).count();
        while busy < self.slots {
            let Some(gap) = self.first_gap(&ends, &started) else {
                break;
            };
            let end = match self.part {
                Some(part) => gap.end.min(self.boundary_after(gap.start, part)),
                None => gap.end,
            };
            started.push((gap.start..end, false));
            busy += 1;
        }
        let stops = self.fetching.iter().zip(&ends).enumerate();
        let stops = stops
            .filter(|(_, (f, end))| **end < f.end)
            .map(|(fetch, (_, end))| Step::Stop { fetch, at: *end });
        let fetches = started
            .into_iter()
            .filter(|(span, _)| !span.is_empty())
            .map(|(span, for_reader)| Step::Fetch { span, for_reader });
        stops.chain(fetches).collect()
    }

    /// The fetch whose span holds `want` too far past its position to wait
    /// for (rule 1).
    fn fetch_far_behind(&self, want: u64, ends: &[u64]) -> Option<usize> {
        let i =
            (self.fetching.iter().enumerate()).position(|(i, f)| f.at <= want && want < ends[i])?;
        (want - self.fetching[i].at > self.near).then_some(i)
    }

    /// Where the written span, fetch or new fetch holding `position` ends.
    fn covering_end(
        &self,
        position: u64,
        ends: &[u64],
        started: &[(Range<u64>, bool)],
    ) -> Option<u64> {
        let written = self.written.iter().find(|s| s.contains(&position));
        let fetching = (self.fetching.iter().zip(ends))
            .find(|(f, end)| f.at <= position && position < **end)
            .map(|(_, end)| *end);
        let new = started.iter().find(|(s, _)| s.contains(&position));
        written
            .map(|s| s.end)
            .or(fetching)
            .or(new.map(|(s, _)| s.end))
    }

    /// Where the first covered byte after the uncovered `position` is.
    fn next_covered(&self, position: u64, ends: &[u64], started: &[(Range<u64>, bool)]) -> u64 {
        let written = self.written.iter().map(|s| s.start);
        let fetching = (self.fetching.iter().zip(ends))
            .filter(|(f, end)| f.at < **end)
            .map(|(f, _)| f.at);
        let new = started.iter().map(|(s, _)| s.start);
        written
            .chain(fetching)
            .chain(new)
            .filter(|start| *start > position)
            .fold(self.length, u64::min)
    }

    fn first_gap(&self, ends: &[u64], started: &[(Range<u64>, bool)]) -> Option<Range<u64>> {
        let mut position = 0;
        while position < self.length {
            match self.covering_end(position, ends, started) {
                Some(end) => position = end,
                None => return Some(position..self.next_covered(position, ends, started)),
            }
        }
        None
    }

    fn boundary_after(&self, at: u64, part: u64) -> u64 {
        ((at / part.max(1) + 1) * part.max(1)).min(self.length)
    }
}

#[cfg(test)]
// Written spans are lists of ranges, often of one.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn plan<'a>(written: &'a [Range<u64>], fetching: &'a [Fetching]) -> Plan<'a> {
        Plan {
            length: 1024 * MIB,
            written,
            fetching,
            slots: 1,
            part: None,
            near: 2 * MIB,
        }
    }

    fn leader(at: u64, end: u64) -> Fetching {
        Fetching {
            at,
            end,
            for_reader: false,
        }
    }

    #[test]
    fn a_footer_far_from_the_leader_gets_its_own_fetch() {
        let length = 1024 * MIB;
        let fetching = [leader(MIB, length)];
        let written = [0..MIB];
        let footer = length - 65536;
        assert_eq!(
            plan(&written, &fetching).steps(&[footer]),
            vec![
                Step::Stop {
                    fetch: 0,
                    at: footer
                },
                Step::Fetch {
                    span: footer..length,
                    for_reader: true
                },
            ]
        );
    }

    #[test]
    fn a_reader_near_a_fetch_or_on_written_bytes_waits() {
        let fetching = [leader(10 * MIB, 1024 * MIB)];
        let written = [0..10 * MIB];
        let p = plan(&written, &fetching);
        assert_eq!(p.steps(&[11 * MIB, 5 * MIB]), vec![]);
        assert_eq!(p.steps(&[]), vec![]);
    }

    #[test]
    fn a_reader_in_a_gap_gets_a_fetch_up_to_the_next_covered_byte() {
        // The leader broke at 100 MiB; a reader waits at 600 MiB; bytes from
        // 800 MiB were fetched for another reader.
        let written = [0..100 * MIB, 800 * MIB..1024 * MIB];
        let p = plan(&written, &[]);
        assert_eq!(
            p.steps(&[600 * MIB]),
            vec![
                Step::Fetch {
                    span: 600 * MIB..800 * MIB,
                    for_reader: true
                },
                Step::Fetch {
                    span: 100 * MIB..600 * MIB,
                    for_reader: false
                },
            ]
        );
    }

    #[test]
    fn a_broken_fetch_leaves_a_gap_the_next_fetch_resumes() {
        let written = [0..300 * MIB];
        assert_eq!(
            plan(&written, &[]).steps(&[]),
            vec![Step::Fetch {
                span: 300 * MIB..1024 * MIB,
                for_reader: false
            }]
        );
        let done = [0..1024 * MIB];
        assert_eq!(plan(&done, &[]).steps(&[]), vec![]);
    }

    #[test]
    fn parallel_parts_follow_the_leader_in_order() {
        let fetching = [leader(MIB, 1024 * MIB)];
        let written = [0..MIB];
        let p = Plan {
            slots: 4,
            part: Some(16 * MIB),
            ..plan(&written, &fetching)
        };
        let fetch = |from: u64| Step::Fetch {
            span: from * MIB..(from + 16) * MIB,
            for_reader: false,
        };
        assert_eq!(
            p.steps(&[]),
            vec![
                Step::Stop {
                    fetch: 0,
                    at: 16 * MIB
                },
                fetch(16),
                fetch(32),
                fetch(48),
            ]
        );
        // With the leader's part and the next done, a slot takes part 4.
        let fetching = [leader(40 * MIB, 48 * MIB), leader(50 * MIB, 64 * MIB)];
        let written = [0..40 * MIB, 48 * MIB..50 * MIB];
        let p = Plan {
            slots: 4,
            part: Some(16 * MIB),
            ..plan(&written, &fetching)
        };
        assert_eq!(p.steps(&[]), vec![fetch(64), fetch(80)]);
    }

    #[test]
    fn readers_fetches_do_not_take_slots_and_stop_at_a_part_boundary() {
        let length = 1024 * MIB;
        let fetching = [leader(0, 16 * MIB)];
        let p = Plan {
            slots: 2,
            part: Some(16 * MIB),
            ..plan(&[], &fetching)
        };
        let footer = length - 65536;
        assert_eq!(
            p.steps(&[footer]),
            vec![
                Step::Fetch {
                    span: footer..length,
                    for_reader: true
                },
                Step::Fetch {
                    span: 16 * MIB..32 * MIB,
                    for_reader: false
                },
            ]
        );
        let mid = 500 * MIB + 3;
        let steps = p.steps(&[mid]);
        assert_eq!(
            steps[0],
            Step::Fetch {
                span: mid..512 * MIB,
                for_reader: true
            }
        );
    }

    #[test]
    fn a_small_object_is_one_part_and_bytes_past_the_end_are_no_want() {
        let written = [];
        let p = Plan {
            length: 10,
            slots: 4,
            part: Some(16 * MIB),
            ..plan(&written, &[])
        };
        assert_eq!(
            p.steps(&[10, 99]),
            vec![Step::Fetch {
                span: 0..10,
                for_reader: false
            }]
        );
    }
}
