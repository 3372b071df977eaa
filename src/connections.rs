//! Client connections: how many are open, which wait idle for their next
//! request, and closing the longest idle ones when a new client needs the
//! room.
//!
//! Why: a limit on connections (`limits.max_connections`) keeps a flood of
//! them from exhausting descriptors and memory, but a plain limit would let
//! thousands of idle keep-alive connections (or abandoned ones) lock every
//! new client out. So, as nginx reuses its keep-alive connections when
//! `worker_connections` runs out, a new connection past the limit closes
//! the connections idle the longest; only when none is idle is it refused.
//!
//! A connection registers once when it opens; between requests it marks
//! itself idle and busy with one atomic store each, so the hit path pays no
//! lock for any of this.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;

/// Idle connections closed at once when the limit is reached (nginx
/// drains 32): one scan of the registry makes room for several newcomers.
const RECLAIM_BATCH: usize = 16;
/// [`Slot::state`] of a connection reading or answering a request.
const BUSY: u64 = 0;
/// [`Slot::state`] of a connection told to close.
const CLOSING: u64 = u64::MAX;

#[derive(Default)]
pub struct Connections {
    /// Open connections, those told to close included.
    open: AtomicUsize,
    /// Told to close and not yet closed.
    closing: AtomicUsize,
    next_id: AtomicU64,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    epoch: EpochMs,
}

/// One open connection as the registry sees it.
pub struct Slot {
    /// [`BUSY`], [`CLOSING`], or 1 + the millisecond it became idle.
    state: AtomicU64,
    /// Notified when the connection is to close.
    pub close: Notify,
}

/// A registered connection; dropping it unregisters it.
pub struct Open {
    connections: Arc<Connections>,
    id: u64,
    pub slot: Arc<Slot>,
}

/// A connection that could not be given room: every other one is busy.
#[derive(Debug)]
pub struct Full;

/// Milliseconds since the registry started.
struct EpochMs(Instant);

impl Default for EpochMs {
    fn default() -> Self {
        EpochMs(Instant::now())
    }
}

impl EpochMs {
    fn now(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

impl Connections {
    /// Registers a new connection, closing idle ones when more than `max`
    /// would be open.
    pub fn open(self: &Arc<Self>, max: usize) -> Result<Open, Full> {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        let staying = open.saturating_sub(self.closing.load(Ordering::Acquire));
        if staying > max {
            let wanted = (staying - max).max(RECLAIM_BATCH);
            if self.reclaim(wanted) == 0 {
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Full);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            state: AtomicU64::new(BUSY),
            close: Notify::new(),
        });
        self.slots.lock().insert(id, slot.clone());
        Ok(Open {
            connections: self.clone(),
            id,
            slot,
        })
    }

    /// Open client connections.
    pub fn count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Tells up to `wanted` of the longest idle connections to close;
    /// how many it told.
    fn reclaim(&self, wanted: usize) -> usize {
        let slots = self.slots.lock();
        let mut idle: Vec<(u64, &Arc<Slot>)> = slots
            .values()
            .filter_map(|slot| {
                let state = slot.state.load(Ordering::Acquire);
                (state != BUSY && state != CLOSING).then_some((state, slot))
            })
            .collect();
        if idle.len() > wanted {
            idle.select_nth_unstable_by_key(wanted, |(since, _)| *since);
            idle.truncate(wanted);
        }
        let mut told = 0;
        for (since, slot) in idle {
            // A connection whose request arrived meanwhile stays.
            let closing =
                slot.state
                    .compare_exchange(since, CLOSING, Ordering::AcqRel, Ordering::Acquire);
            if closing.is_ok() {
                self.closing.fetch_add(1, Ordering::AcqRel);
                slot.close.notify_one();
                told += 1;
            }
        }
        told
    }
}

impl Open {
    /// The connection waits for its next request.
    pub fn idle(&self) {
        let since = 1 + self.connections.epoch.now();
        // A connection told to close stays closing.
        let _ = self
            .slot
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state != CLOSING).then_some(since)
            });
    }

    /// A request arrived; false when the connection was told to close
    /// first (the client retries, as after any keep-alive close).
    pub fn busy(&self) -> bool {
        self.slot
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state != CLOSING).then_some(BUSY)
            })
            .is_ok()
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.connections.slots.lock().remove(&self.id);
        if self.slot.state.load(Ordering::Acquire) == CLOSING {
            self.connections.closing.fetch_sub(1, Ordering::AcqRel);
        }
        self.connections.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_limit_the_longest_idle_close_first() {
        let connections = Arc::new(Connections::default());
        let first = connections.open(2).unwrap();
        let second = connections.open(2).unwrap();
        first.idle();
        std::thread::sleep(std::time::Duration::from_millis(3));
        second.idle();
        // Room for the third: the batch tells both idle ones to close,
        // the longest idle first.
        let third = connections.open(2).unwrap();
        assert!(!first.busy(), "told to close");
        assert!(!second.busy(), "told to close");
        assert!(third.busy());
        assert_eq!(connections.count(), 3);
        drop((first, second));
        assert_eq!(connections.count(), 1);
        assert_eq!(connections.closing.load(Ordering::Acquire), 0);
    }

    #[test]
    fn without_an_idle_connection_a_new_one_is_refused() {
        let connections = Arc::new(Connections::default());
        let busy = connections.open(1).unwrap();
        assert!(connections.open(1).is_err());
        assert_eq!(connections.count(), 1);
        busy.idle();
        let newcomer = connections.open(1).unwrap();
        assert!(!busy.busy());
        // Told to close: no longer counted against the limit.
        drop(newcomer);
        assert!(connections.open(1).is_ok());
    }

    #[test]
    fn a_connection_that_got_its_request_is_not_reclaimed() {
        let connections = Arc::new(Connections::default());
        let conn = connections.open(1).unwrap();
        conn.idle();
        assert!(conn.busy());
        assert!(connections.open(1).is_err());
    }
}
