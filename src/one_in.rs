//! One call in N, counted per thread: for work that is worth doing for a
//! sample of events rather than each one (admitting to a memory tier whose
//! own filter weighs frequency), where a random draw would cost more than
//! the choice saves.
//!
//! Each use keeps its own counter: two uses sharing one, called in turn,
//! would each see only every other count, and a rate of one in an even N
//! could then never (or always) be chosen.

use std::cell::Cell;
use std::thread::LocalKey;

/// A use's calls on each thread: `thread_local!(static X: Calls = ...)`.
pub type Calls = Cell<u32>;

/// True on every `n`th call counted in `calls` on this thread.
pub fn one_in(calls: &'static LocalKey<Calls>, n: u32) -> bool {
    calls.with(|calls| {
        let count = calls.get().wrapping_add(1);
        calls.set(count);
        count % n == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local!(static FOURS: Calls = const { Cell::new(0) });
    thread_local!(static SIXTEENS: Calls = const { Cell::new(0) });

    #[test]
    fn uses_called_in_turn_each_get_their_rate() {
        let (mut fours, mut sixteens) = (0, 0);
        for _ in 0..1600 {
            fours += usize::from(one_in(&FOURS, 4));
            sixteens += usize::from(one_in(&SIXTEENS, 16));
        }
        assert_eq!((fours, sixteens), (400, 100));
    }
}
