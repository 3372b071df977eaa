//! The Redis connection shared by the state store and cluster coordination.
//!
//! redis-rs's `ConnectionManager` reconnects by itself, but it must first
//! connect once, and a command sent while the server is down waits for its
//! reconnection attempts. A node must neither refuse to start nor stall
//! requests because Redis is away, so this wrapper connects lazily, bounds
//! every command by the configured timeout, and after a failure fails fast
//! for [`RETRY_AFTER`] before letting one command try again. Failures are
//! logged once per [`LOG_EVERY`], with the count since the last line.

use crate::config::backends::RedisSettings;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::future::Future;
use std::time::{Duration, Instant};

/// How long after a failure commands fail without trying.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// At most one log line per this.
const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct RedisLink {
    client: redis::Client,
    key_prefix: String,
    timeout: Duration,
    connection: tokio::sync::Mutex<Option<ConnectionManager>>,
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
        let client = redis::Client::open(settings.url.expose())
            .map_err(|e| anyhow::anyhow!("state: {e}"))?;
        Ok(RedisLink {
            client,
            key_prefix: settings.key_prefix.clone(),
            timeout: settings.timeout,
            connection: tokio::sync::Mutex::new(None),
            health: Mutex::new(Health::default()),
        })
    }

    /// `{prefix}:{rest}`: every key this node uses.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.key_prefix)
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The longest one command may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `command` on the shared connection, bounded by the timeout.
    pub async fn run<T, F, Fut>(&self, what: &str, command: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
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
        match outcome {
            Ok(Ok(value)) => {
                self.recovered();
                Ok(value)
            }
            Ok(Err(e)) => Err(self.failed(what, e.to_string())),
            Err(_) => Err(self.failed(what, format!("no answer within {:?}", self.timeout))),
        }
    }

    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1)
            .set_max_delay(self.timeout.as_millis() as u64);
        let connection = ConnectionManager::new_with_config(self.client.clone(), config).await?;
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
