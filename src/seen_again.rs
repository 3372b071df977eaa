//! Whether a key came up before, recently, on this thread: a doorkeeper in
//! front of a memory tier's own admission.
//!
//! A bounded memory tier that weighs frequency (TinyUFO) still pays for
//! every offer: its frequency sketch is updated, a victim is weighed and,
//! more often than not, the offer is turned away. When requests spread
//! over far more keys than the tier holds (a million objects asked
//! uniformly), nearly every offer is such waste. So a key's first sighting
//! only notes a tag in a small direct-mapped table, and the key is offered
//! when it comes up again while its tag is still there: a hot set is
//! offered from its second request, and a spread many times wider than
//! the table is almost never offered. The table is per thread, so noting a
//! key is a plain store, never a cache line shared between cores.

use std::cell::Cell;
use std::thread::LocalKey;

/// A use's tags on each thread: `thread_local!(static X: Recent<N> = const
/// { Recent::new() })`, `N` a power of two.
pub struct Recent<const SLOTS: usize> {
    tags: [Cell<u32>; SLOTS],
}

impl<const SLOTS: usize> Recent<SLOTS> {
    pub const fn new() -> Self {
        // The slot is the key's low bits, masked: any other size would
        // leave slots unused, silently.
        const { assert!(SLOTS.is_power_of_two(), "a table of 2^n slots") };
        Recent {
            tags: [const { Cell::new(0) }; SLOTS],
        }
    }
}

/// True when `key` (a hash: its low bits pick the slot, its high bits are
/// the tag) was noted on this thread and no other key has taken its slot
/// since; otherwise notes it and returns false.
pub fn seen_again<const SLOTS: usize>(recent: &'static LocalKey<Recent<SLOTS>>, key: u64) -> bool {
    recent.with(|recent| {
        let slot = &recent.tags[key as usize & (SLOTS - 1)];
        // Never 0, so an empty slot matches no key.
        let tag = (key >> 32) as u32 | 1;
        let seen = slot.get() == tag;
        slot.set(tag);
        seen
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local!(static SMALL: Recent<16> = const { Recent::new() });
    thread_local!(static OTHER: Recent<16> = const { Recent::new() });

    fn key(slot: u64, tag: u64) -> u64 {
        tag << 32 | slot
    }

    #[test]
    fn a_key_is_seen_again_from_its_second_sighting() {
        assert!(!seen_again(&SMALL, key(3, 7)));
        assert!(seen_again(&SMALL, key(3, 7)));
        assert!(seen_again(&SMALL, key(3, 7)));
    }

    #[test]
    fn a_key_whose_slot_another_took_is_new_again() {
        assert!(!seen_again(&SMALL, key(5, 1)));
        assert!(!seen_again(&SMALL, key(5 + 16, 2)));
        assert!(!seen_again(&SMALL, key(5, 1)));
        assert!(seen_again(&SMALL, key(5, 1)));
    }

    #[test]
    fn uses_and_threads_keep_their_own_tags() {
        assert!(!seen_again(&OTHER, key(9, 4)));
        assert!(!std::thread::spawn(|| seen_again(&OTHER, key(9, 4)))
            .join()
            .unwrap());
        assert!(!seen_again(&SMALL, key(9, 4)));
        assert!(seen_again(&OTHER, key(9, 4)));
    }

    #[test]
    fn a_spread_wider_than_the_table_is_rarely_seen_again() {
        // 64 keys over 16 slots, asked in turn: each slot is taken by
        // three others before its key comes back.
        let keys: Vec<u64> = (0..64).map(|i| key(i, i + 1)).collect();
        let seen = (0..10)
            .flat_map(|_| keys.iter())
            .filter(|&&k| seen_again(&OTHER, k))
            .count();
        assert_eq!(seen, 0);
    }
}
