//! Per-remote bounds on what this node asks of an upstream at once:
//! connections (`max_upstream_connections`) and bytes per second
//! (`max_upstream_bytes_per_second`), shared by every request of the
//! remote, the range requests of fills included, so a parallel fill never
//! trips an upstream's rate limit and a thin shared link stays usable.
//!
//! A remote without its own `max_upstream_connections` gets the server's
//! `upstream.max_connections_per_remote`: a cold start of a whole fleet
//! never opens thousands of connections to one upstream.
//!
//! A request takes a slot when it picks its upstream peer and holds it
//! until it ends or stops using the upstream: the slot stands for the
//! upstream connection. A request waits for a slot as long as it would
//! wait for another request's fill (`cache.lock_timeout`), then fails
//! with 503. The bytes are paced by [`filters::pace`]: the body filter
//! waits after each chunk, and TCP holds the upstream back meanwhile.

use crate::config::remotes::{Remote, UpstreamBounds};
use filters::pace::Pace;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Every bounded remote's slots and pace, by name.
pub struct UpstreamLimits {
    remotes: parking_lot::Mutex<HashMap<String, Arc<RemoteLimit>>>,
    started: Instant,
}

impl Default for UpstreamLimits {
    fn default() -> Self {
        UpstreamLimits {
            remotes: parking_lot::Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }
}

struct RemoteLimit {
    bounds: UpstreamBounds,
    slots: Option<Arc<Semaphore>>,
    pace: Option<parking_lot::Mutex<Pace>>,
}

/// A request's share of its remote's bounds, held until it ends.
pub struct UpstreamSlot {
    limit: Arc<RemoteLimit>,
    permit: Option<OwnedSemaphorePermit>,
    started: Instant,
}

impl UpstreamLimits {
    /// The remote's limits; new ones when a reload changed its bounds
    /// (requests holding the old slots finish on them).
    fn of(&self, remote: &Remote, bounds: UpstreamBounds) -> Arc<RemoteLimit> {
        let mut remotes = self.remotes.lock();
        if let Some(limit) = remotes.get(&remote.name).filter(|l| l.bounds == bounds) {
            return limit.clone();
        }
        let limit = Arc::new(RemoteLimit {
            bounds,
            slots: (bounds.connections).map(|n| Arc::new(Semaphore::new(n as usize))),
            pace: (bounds.bytes_per_second).map(|rate| parking_lot::Mutex::new(Pace::new(rate))),
        });
        remotes.insert(remote.name.clone(), limit.clone());
        limit
    }

    /// A slot of `remote`'s upstream, waiting up to `wait` for one;
    /// `default_connections` bounds a remote without a bound of its own.
    /// `None` for a remote without bounds.
    pub async fn take(
        &self,
        remote: &Remote,
        default_connections: Option<u32>,
        wait: Duration,
    ) -> Result<Option<UpstreamSlot>, String> {
        let bounds = UpstreamBounds {
            connections: remote.upstream_bounds.connections.or(default_connections),
            ..remote.upstream_bounds
        };
        if !bounds.any() {
            return Ok(None);
        }
        let limit = self.of(remote, bounds);
        let permit = match &limit.slots {
            None => None,
            Some(slots) => match tokio::time::timeout(wait, slots.clone().acquire_owned()).await {
                Ok(Ok(permit)) => Some(permit),
                _ => {
                    return Err(format!(
                        "remote '{}': all {} of its upstream connections stayed busy for {} s",
                        remote.name,
                        limit.bounds.connections.unwrap_or(0),
                        wait.as_secs()
                    ))
                }
            },
        };
        Ok(Some(UpstreamSlot {
            limit,
            permit,
            started: self.started,
        }))
    }
}

impl UpstreamSlot {
    /// How long the request waits after `bytes` arrived from its upstream.
    pub fn pace(&self, bytes: usize) -> Option<std::time::Duration> {
        let pace = self.limit.pace.as_ref()?;
        let wait = pace.lock().take(self.started.elapsed(), bytes as u64);
        (!wait.is_zero()).then_some(wait)
    }

    /// The request no longer uses its upstream connection (it serves the
    /// rest of its response from a fill): another request may.
    pub fn release_connection(&mut self) {
        self.permit = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(connections: Option<u32>, bytes_per_second: Option<u64>) -> Remote {
        let mut yaml = "remotes:\n  r:\n    base_url: \"http://127.0.0.1:1\"\n    type: remote\n    package: generic\n".to_string();
        if let Some(n) = connections {
            yaml.push_str(&format!("    max_upstream_connections: {n}\n"));
        }
        if let Some(rate) = bytes_per_second {
            yaml.push_str(&format!("    max_upstream_bytes_per_second: {rate}\n"));
        }
        let path = std::path::Path::new("remotes.yaml");
        let (_, mut remotes, _) = crate::config::remotes::parse_remotes(path, &yaml).unwrap();
        remotes.remove(0)
    }

    #[tokio::test]
    async fn slots_bound_connections_and_come_back_when_released() {
        let limits = UpstreamLimits::default();
        let r = remote(Some(2), None);
        let wait = Duration::from_millis(50);
        let mut first = limits.take(&r, None, wait).await.unwrap().unwrap();
        let _second = limits.take(&r, None, wait).await.unwrap().unwrap();
        let third = limits.take(&r, None, wait).await;
        assert!(third
            .err()
            .unwrap()
            .contains("all 2 of its upstream connections"));
        first.release_connection();
        assert!(limits.take(&r, None, wait).await.is_ok());
        assert!(limits
            .take(&remote(None, None), None, wait)
            .await
            .unwrap()
            .is_none());
        // The server's default bounds a remote without its own.
        let unbounded = remote(None, None);
        let _only = limits.take(&unbounded, Some(1), wait).await.unwrap();
        assert!(limits.take(&unbounded, Some(1), wait).await.is_err());
        assert!(
            limits.take(&r, Some(1), wait).await.is_ok(),
            "its own bound wins"
        );
    }

    #[tokio::test]
    async fn a_reload_with_other_bounds_starts_afresh() {
        let limits = UpstreamLimits::default();
        let wait = Duration::from_millis(50);
        let _held = limits
            .take(&remote(Some(1), None), None, wait)
            .await
            .unwrap();
        assert!(limits
            .take(&remote(Some(1), None), None, wait)
            .await
            .is_err());
        assert!(limits
            .take(&remote(Some(3), None), None, wait)
            .await
            .is_ok());
        let paced = limits.take(&remote(None, Some(1024)), None, wait).await;
        let paced = paced.unwrap().unwrap();
        assert_eq!(paced.pace(256), None, "within the burst");
        assert!(paced.pace(4096).unwrap() > Duration::from_secs(3));
    }
}
