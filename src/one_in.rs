//! One call in N, counted per thread: for work that is worth doing for a
//! sample of events rather than each one (admitting to a memory tier whose
//! own filter weighs frequency), where a random draw would cost more than
//! the choice saves.

use std::cell::Cell;

thread_local!(static CALLS: Cell<u32> = const { Cell::new(0) });

/// True on every `n`th call on this thread (counting calls for any `n`).
pub fn one_in(n: u32) -> bool {
    CALLS.with(|calls| {
        let count = calls.get().wrapping_add(1);
        calls.set(count);
        count % n == 0
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_call_in_n_is_chosen() {
        let chosen = (0..400).filter(|_| super::one_in(4)).count();
        assert_eq!(chosen, 100);
    }
}
