//! The last problems seen (upstream failures, refused bodies), kept for
//! the status page: a counter says how many, this says which artifact and
//! why. Bounded, and written only when something went wrong, so the hit
//! path never touches it.

use std::collections::VecDeque;
use std::time::SystemTime;

/// How many problems are kept.
const KEPT: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The upstream failed or answered 5xx and the client got no copy.
    UpstreamError,
    /// The upstream failed and a stale copy was served instead.
    ServedStale,
    /// A package file did not match the checksum its index published.
    ChecksumMismatch,
    /// A manifest or blob did not match its digest.
    DigestMismatch,
    /// An index document was not well-formed in its syntax.
    InvalidDocument,
}

/// One problem, as the status page lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// Unix seconds.
    pub at: u64,
    pub kind: ProblemKind,
    pub remote: String,
    pub path: String,
    pub detail: String,
}

impl Problem {
    pub fn new(kind: ProblemKind, remote: &str, path: &str, detail: String) -> Problem {
        Problem {
            at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            kind,
            remote: remote.to_string(),
            path: path.to_string(),
            detail,
        }
    }
}

#[derive(Default)]
pub struct Recent {
    problems: parking_lot::Mutex<VecDeque<Problem>>,
}

impl Recent {
    pub fn add(&self, problem: Problem) {
        let mut problems = self.problems.lock();
        if problems.len() == KEPT {
            problems.pop_front();
        }
        problems.push_back(problem);
    }

    /// Newest first.
    pub fn newest(&self) -> Vec<Problem> {
        self.problems.lock().iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_fifty_newest_first() {
        let recent = Recent::default();
        for i in 0..60 {
            let path = format!("/f{i}");
            recent.add(Problem::new(
                ProblemKind::UpstreamError,
                "r",
                &path,
                String::new(),
            ));
        }
        let newest = recent.newest();
        assert_eq!(newest.len(), KEPT);
        assert_eq!(newest[0].path, "/f59");
        assert_eq!(newest[KEPT - 1].path, "/f10");
    }
}
