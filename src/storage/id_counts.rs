//! How many holders each entry id has: entries being read (eviction keeps
//! away from them) and entries being committed (lookups wait for them).

use parking_lot::Mutex;
use std::collections::HashMap;

/// A count per entry id; an id with none is absent.
#[derive(Default)]
pub struct IdCounts(Mutex<HashMap<u128, u32>>);

impl IdCounts {
    pub fn add(&self, id: u128) {
        *self.0.lock().entry(id).or_default() += 1;
    }

    /// Takes one of `id`'s counts away (the last one removes it).
    pub fn remove_one(&self, id: u128) {
        let mut counts = self.0.lock();
        if let Some(count) = counts.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&id);
            }
        }
    }

    pub fn contains(&self, id: u128) -> bool {
        self.0.lock().contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_stays_until_its_last_count_goes() {
        let counts = IdCounts::default();
        counts.add(5);
        counts.add(5);
        counts.remove_one(5);
        assert!(counts.contains(5));
        counts.remove_one(5);
        assert!(!counts.contains(5));
        counts.remove_one(5);
        assert!(
            !counts.contains(5),
            "one count too many taken away is no count"
        );
    }
}
