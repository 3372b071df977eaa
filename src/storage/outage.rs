//! Lookups that failed because the store could not be reached, kept a
//! moment for the proxy to answer them.
//!
//! pingora treats a failed lookup as a miss and goes upstream. For a
//! bucket that is down, that is right for objects not cached (they pass
//! through, or get a 503 with `s3.on_failure: fail`) but not for cached
//! ones: their bytes are in the bucket, and sending every cached request
//! of a cluster to the upstream at once is how rate limits are hit. So a
//! failed lookup is noted here with whether the index knew the entry, and
//! the proxy's upstream phase takes the note to decide.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A note older than this belongs to no request still deciding.
const KEEP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupFailure {
    /// The index knew a committed entry for the key.
    pub cached: bool,
    pub reason: String,
}

#[derive(Default)]
pub struct Outages {
    recent: Mutex<HashMap<u128, (Instant, LookupFailure)>>,
}

impl Outages {
    pub fn note(&self, id: u128, failure: LookupFailure) {
        let now = Instant::now();
        let mut recent = self.recent.lock();
        recent.retain(|_, (at, _)| now.duration_since(*at) < KEEP);
        recent.insert(id, (now, failure));
    }

    pub fn take(&self, id: u128) -> Option<LookupFailure> {
        let (at, failure) = self.recent.lock().remove(&id)?;
        (at.elapsed() < KEEP).then_some(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_taken_once() {
        let outages = Outages::default();
        assert_eq!(outages.take(1), None);
        let failure = LookupFailure {
            cached: true,
            reason: "down".into(),
        };
        outages.note(1, failure.clone());
        assert_eq!(outages.take(2), None);
        assert_eq!(outages.take(1), Some(failure));
        assert_eq!(outages.take(1), None);
    }
}
