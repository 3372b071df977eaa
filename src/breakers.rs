//! The circuit breakers of all remotes (`filters::breaker` decides; this
//! holds the state).
//!
//! A breaker is only consulted when a request is about to go upstream, never
//! on a cache hit, so its lock is not on the hit path.

use filters::breaker::{Admit, Breaker, State};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

struct RemoteBreaker {
    state: Mutex<State>,
    rejected: AtomicU64,
}

pub struct Breakers {
    policy: Breaker,
    epoch: Instant,
    remotes: BTreeMap<String, RemoteBreaker>,
}

impl Breakers {
    pub fn new<'a>(policy: Breaker, remotes: impl IntoIterator<Item = &'a String>) -> Self {
        Breakers {
            policy,
            epoch: Instant::now(),
            remotes: remotes
                .into_iter()
                .map(|name| {
                    let breaker = RemoteBreaker {
                        state: Mutex::new(State::default()),
                        rejected: AtomicU64::new(0),
                    };
                    (name.clone(), breaker)
                })
                .collect(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether a request of `remote` may go upstream now.
    pub fn admit(&self, remote: &str) -> Admit {
        let Some(breaker) = self.remotes.get(remote) else {
            return Admit::Yes;
        };
        let mut state = breaker.state.lock().unwrap_or_else(|e| e.into_inner());
        let (admit, next) = self.policy.admit(*state, self.now_ms());
        if next != *state {
            log::info!("remote {remote}: probing the upstream after its back-off");
        }
        *state = next;
        if let Admit::No { .. } = admit {
            breaker.rejected.fetch_add(1, Ordering::Relaxed);
        }
        admit
    }

    /// Records how an admitted request's upstream exchange went.
    pub fn record(&self, remote: &str, admitted: Admit, success: bool) {
        let Some(breaker) = self.remotes.get(remote) else {
            return;
        };
        let mut state = breaker.state.lock().unwrap_or_else(|e| e.into_inner());
        let next = self.policy.record(*state, admitted, success, self.now_ms());
        match (state.is_up(), next.is_up()) {
            (true, false) | (false, false)
                if next != *state && matches!(next, State::Open { .. }) =>
            {
                log::warn!(
                    "remote {remote}: marked down for {} ms after upstream failures",
                    self.policy.backoff_ms
                )
            }
            (false, true) => log::info!("remote {remote}: upstream recovered"),
            _ => {}
        }
        *state = next;
    }

    /// `up`, `down` or `probing` per remote.
    pub fn states(&self) -> BTreeMap<&str, &'static str> {
        self.remotes
            .iter()
            .map(|(name, b)| {
                let state = *b.state.lock().unwrap_or_else(|e| e.into_inner());
                let word = match state {
                    State::Closed { .. } => "up",
                    State::Open { .. } => "down",
                    State::Probing => "probing",
                };
                (name.as_str(), word)
            })
            .collect()
    }

    /// Requests a down remote turned away from its upstream, per remote.
    pub fn rejections(&self) -> Vec<(&str, u64)> {
        self.remotes
            .iter()
            .map(|(name, b)| (name.as_str(), b.rejected.load(Ordering::Relaxed)))
            .collect()
    }
}
