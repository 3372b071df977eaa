//! The Redis connection shared by the state store and cluster coordination.
//!
//! redis-rs's `ConnectionManager` reconnects by itself, but it must first
//! connect once, and a command sent while the server is down waits for its
//! reconnection attempts. A node must neither refuse to start nor stall
//! requests because Redis is away, so this wrapper connects lazily, bounds
//! every command by the configured timeout, and after a failure fails fast
//! for [`RETRY_AFTER`] before letting one command try again. Failures are
//! logged once per [`LOG_EVERY`], with the count since the last line.
//!
//! Which server that is, and how the connection reaches it, is
//! `redis_target`'s.

use super::redis_target::{Connection, Target};
use crate::config::backends::RedisSettings;
use parking_lot::Mutex;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long after a failure commands fail without trying.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// At most one log line per this.
const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct RedisLink {
    target: Target,
    key_prefix: String,
    timeout: Duration,
    connection: tokio::sync::Mutex<Option<Connection>>,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// Fail fast until then.
    down_until: Option<Instant>,
    last_log: Option<Instant>,
    unlogged: u64,
}

/// Redis could not answer (down, slow, or refusing): the caller carries on
/// without it.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct Unavailable(pub String);

impl RedisLink {
    pub fn new(settings: &RedisSettings) -> anyhow::Result<RedisLink> {
        let target = Target::open(settings).map_err(|e| anyhow::anyhow!("state: {e}"))?;
        Ok(RedisLink {
            key_prefix: target.hash_tag(&settings.key_prefix),
            target,
            timeout: settings.timeout,
            connection: tokio::sync::Mutex::new(None),
            health: Mutex::new(Health::default()),
        })
    }

    /// `{prefix}:{rest}`: every key this node uses.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.key_prefix)
    }

    /// A client for the server to use now (for connections of their own,
    /// such as a subscription).
    pub async fn client(&self) -> redis::RedisResult<redis::Client> {
        self.target.client().await
    }

    /// The longest one command may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `command` on the shared connection, bounded by the timeout.
    pub async fn run<T, F, Fut>(&self, what: &str, command: F) -> Result<T, Unavailable>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if let Some(until) = self.health.lock().down_until {
            if Instant::now() < until {
                return Err(Unavailable("unavailable (retrying shortly)".into()));
            }
        }
        let outcome = tokio::time::timeout(self.timeout, async {
            let connection = self.connection().await?;
            command(connection).await
        })
        .await;
        let reason = match outcome {
            Ok(Ok(value)) => {
                self.recovered();
                return Ok(value);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        if self.target.moves() {
            self.connection.lock().await.take();
        }
        Err(self.failed(what, reason))
    }

    async fn connection(&self) -> redis::RedisResult<Connection> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = self.target.connect(self.timeout).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    fn failed(&self, what: &str, reason: String) -> Unavailable {
        let now = Instant::now();
        let mut health = self.health.lock();
        health.down_until = Some(now + RETRY_AFTER);
        health.unlogged += 1;
        if health
            .last_log
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
        {
            log::warn!(
                "redis {what}: {reason}; carrying on without it ({} failures since the last report)",
                health.unlogged
            );
            health.last_log = Some(now);
            health.unlogged = 0;
        }
        Unavailable(format!("{what}: {reason}"))
    }

    fn recovered(&self) {
        let mut health = self.health.lock();
        if health.down_until.take().is_some() {
            log::info!("redis is reachable again");
        }
    }
}
