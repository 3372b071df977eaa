//! The circuit breakers of all remotes (`filters::breaker` decides; this
//! holds the state).
//!
//! A breaker is only consulted when a request is about to go upstream, never
//! on a cache hit, so its lock is not on the hit path.
//!
//! In a cluster a breaker that opens or recovers is told to the other
//! nodes (over the change feed, `cluster::changes`), so one node's
//! discovery that an upstream is down protects all of them.

use arc_swap::ArcSwap;
use filters::breaker::{Admit, Breaker, News, State};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tokio::sync::mpsc;

/// A breaker's news about one remote, as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteNews {
    pub remote: String,
    pub news: News,
}

impl RemoteNews {
    /// `b {remote} down {ms}` or `b {remote} up` (remote names hold no
    /// spaces).
    pub fn encode(&self) -> String {
        match self.news {
            News::Down { for_ms } => format!("b {} down {for_ms}", self.remote),
            News::Up => format!("b {} up", self.remote),
        }
    }

    pub fn decode(text: &str) -> Option<RemoteNews> {
        let mut words = text.split(' ');
        if words.next()? != "b" {
            return None;
        }
        let remote = words.next().filter(|r| !r.is_empty())?.to_string();
        let news = match (words.next()?, words.next()) {
            ("up", None) => News::Up,
            ("down", Some(ms)) => News::Down {
                for_ms: ms.parse().ok()?,
            },
            _ => return None,
        };
        words
            .next()
            .is_none()
            .then_some(RemoteNews { remote, news })
    }
}

struct RemoteBreaker {
    state: Mutex<State>,
    rejected: AtomicU64,
}

pub struct Breakers {
    policy: Breaker,
    epoch: Instant,
    /// One breaker per remote; a reload adds the new ones.
    remotes: ArcSwap<BTreeMap<String, Arc<RemoteBreaker>>>,
    /// Where this node's news goes, in a cluster.
    others: OnceLock<mpsc::UnboundedSender<RemoteNews>>,
}

impl Breakers {
    pub fn new<'a>(policy: Breaker, remotes: impl IntoIterator<Item = &'a String>) -> Self {
        Breakers {
            policy,
            epoch: Instant::now(),
            remotes: ArcSwap::default(),
            others: OnceLock::new(),
        }
        .with(remotes)
    }

    fn with<'a>(self, remotes: impl IntoIterator<Item = &'a String>) -> Self {
        self.add(remotes);
        self
    }

    /// Gives remotes a reload added a closed breaker; the others keep theirs.
    pub fn add<'a>(&self, remotes: impl IntoIterator<Item = &'a String>) {
        let names: Vec<&String> = remotes.into_iter().collect();
        self.remotes.rcu(|known| {
            let mut grown = BTreeMap::clone(known);
            for name in &names {
                grown.entry(name.to_string()).or_insert_with(|| {
                    Arc::new(RemoteBreaker {
                        state: Mutex::new(State::default()),
                        rejected: AtomicU64::new(0),
                    })
                });
            }
            grown
        });
    }

    fn of(&self, remote: &str) -> Option<Arc<RemoteBreaker>> {
        self.remotes.load().get(remote).cloned()
    }

    /// From now on, every breaker that opens or recovers here is sent on
    /// the returned channel, for the other nodes.
    pub fn tell_others(&self) -> mpsc::UnboundedReceiver<RemoteNews> {
        let (send, receive) = mpsc::unbounded_channel();
        if self.others.set(send).is_err() {
            log::warn!("breaker news wired twice; keeping the first");
        }
        receive
    }

    /// Applies what another node saw of a remote.
    pub fn learn(&self, heard: &RemoteNews) {
        let Some(breaker) = self.of(&heard.remote) else {
            return;
        };
        let mut state = breaker.state.lock().unwrap_or_else(|e| e.into_inner());
        let next = self.policy.learn(*state, heard.news, self.now_ms());
        if next != *state {
            match heard.news {
                News::Down { for_ms } => log::warn!(
                    "remote {}: marked down for {for_ms} ms, as another node found it failing",
                    heard.remote
                ),
                News::Up => log::info!("remote {}: another node found it recovered", heard.remote),
            }
        }
        *state = next;
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether a request of `remote` may go upstream now.
    pub fn admit(&self, remote: &str) -> Admit {
        let Some(breaker) = self.of(remote) else {
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
        let Some(breaker) = self.of(remote) else {
            return;
        };
        let mut state = breaker.state.lock().unwrap_or_else(|e| e.into_inner());
        let now_ms = self.now_ms();
        let next = self.policy.record(*state, admitted, success, now_ms);
        let news = self.policy.news(*state, next, now_ms);
        *state = next;
        drop(state);
        // What is news for the other nodes is what this node logs.
        let Some(news) = news else {
            return;
        };
        match news {
            News::Down { for_ms } => {
                log::warn!("remote {remote}: marked down for {for_ms} ms after upstream failures")
            }
            News::Up => log::info!("remote {remote}: upstream recovered"),
        }
        if let Some(others) = self.others.get() {
            let _ = others.send(RemoteNews {
                remote: remote.to_string(),
                news,
            });
        }
    }

    /// `up`, `down` or `probing` per remote.
    pub fn states(&self) -> BTreeMap<String, &'static str> {
        self.remotes
            .load()
            .iter()
            .map(|(name, b)| {
                let state = *b.state.lock().unwrap_or_else(|e| e.into_inner());
                let word = match state {
                    State::Closed { .. } => "up",
                    State::Open { .. } => "down",
                    State::Probing => "probing",
                };
                (name.clone(), word)
            })
            .collect()
    }

    /// Requests a down remote turned away from its upstream, per remote.
    pub fn rejections(&self) -> Vec<(String, u64)> {
        self.remotes
            .load()
            .iter()
            .map(|(name, b)| (name.clone(), b.rejected.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn news_reads_back_as_written() {
        for news in [News::Up, News::Down { for_ms: 30_000 }] {
            let sent = RemoteNews {
                remote: "oci-mirror".into(),
                news,
            };
            assert_eq!(RemoteNews::decode(&sent.encode()), Some(sent));
        }
        for bad in [
            "b",
            "b gen",
            "b gen down",
            "b gen down x",
            "b gen up 3",
            "e gen up",
        ] {
            assert_eq!(RemoteNews::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_remote_failing_here_is_told_and_news_from_elsewhere_applies() {
        let policy = Breaker {
            threshold: 2,
            backoff_ms: 60_000,
        };
        let names = ["gen".to_string(), "other".to_string()];
        let here = Breakers::new(policy, &names);
        let mut told = here.tell_others();
        for _ in 0..2 {
            let admit = here.admit("gen");
            here.record("gen", admit, false);
        }
        let news = told.try_recv().expect("news of the opening");
        assert_eq!(news.remote, "gen");
        assert!(matches!(news.news, News::Down { for_ms } if for_ms > 59_000));
        assert!(told.try_recv().is_err(), "told once");

        let there = Breakers::new(policy, &names);
        there.learn(&news);
        assert!(matches!(there.admit("gen"), Admit::No { .. }));
        assert_eq!(there.admit("other"), Admit::Yes);
        there.learn(&RemoteNews {
            remote: "gen".into(),
            news: News::Up,
        });
        assert_eq!(there.admit("gen"), Admit::Yes);
    }
}
