//! Which Redis the link's commands go to: one server, the master Redis
//! Sentinel names, or a Redis Cluster; and the connection to it.
//!
//! Behind Sentinel the master is whichever the Sentinels name now. A
//! failover moves it, and the old master, once back, is a replica that
//! refuses writes without closing the connection; so the link drops its
//! connection after any failure ([`Target::moves`]) and the next one asks
//! the Sentinels again rather than returning to the address it knew.
//!
//! In a cluster, every key of one node shares a hash slot (the key prefix
//! is a hash tag, see [`Target::hash_tag`]), so scripts, multi-key commands
//! and the prefix walk of a flush see all of them on one shard: artifactd's
//! state is small, and a cluster gives it failover, not sharding.

use crate::config::backends::RedisSettings;
use crate::config::redis_url::{ClusterUrl, RedisServers, SentinelUrl};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, ConnectionAddr, ConnectionInfo, Pipeline, RedisConnectionInfo, RedisFuture};
use redis::{TlsMode, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub enum Target {
    /// `redis://` or `rediss://`: one server.
    One(redis::Client),
    /// The master the Sentinels name, asked again after every failure.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    Cluster {
        client: ClusterClient,
        /// The URL's nodes, taken in turn for connections of their own
        /// (a subscription: any node hears what is published on any).
        nodes: Vec<ConnectionInfo>,
        next: AtomicUsize,
    },
}

/// A connection to the target: commands go through [`ConnectionLike`], so
/// callers need not know which it is.
#[derive(Clone)]
pub enum Connection {
    One(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Target {
    pub fn open(settings: &RedisSettings) -> redis::RedisResult<Target> {
        Ok(match &settings.servers {
            RedisServers::One => Target::One(redis::Client::open(settings.url.expose())?),
            RedisServers::Sentinel(url) => Target::Sentinel(tokio::sync::Mutex::new(
                sentinel_client(url, settings.sentinel_password.as_ref().map(|p| p.expose()))?,
            )),
            RedisServers::Cluster(url) => {
                let nodes = cluster_nodes(url);
                let mut builder = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(settings.timeout)
                    .response_timeout(settings.timeout)
                    .retries(2)
                    .min_retry_wait(50)
                    .max_retry_wait(settings.timeout.as_millis() as u64);
                if url.tls {
                    builder = builder.tls(TlsMode::Secure);
                }
                Target::Cluster {
                    client: builder.build()?,
                    nodes,
                    next: AtomicUsize::new(0),
                }
            }
        })
    }

    /// Whether the server may change under the link (so a failure calls for
    /// finding it again).
    pub fn moves(&self) -> bool {
        !matches!(self, Target::One(_))
    }

    /// How the key prefix is written: a hash tag in a cluster.
    pub fn hash_tag(&self, prefix: &str) -> String {
        match self {
            Target::Cluster { .. } => format!("{{{prefix}}}"),
            _ => prefix.to_string(),
        }
    }

    /// A client for one server to use now, for a connection of its own.
    pub async fn client(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Target::One(client) => Ok(client.clone()),
            Target::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
            Target::Cluster { nodes, next, .. } => {
                let turn = next.fetch_add(1, Ordering::Relaxed) % nodes.len();
                redis::Client::open(nodes[turn].clone())
            }
        }
    }

    /// A new connection, each command bounded by `timeout`.
    pub async fn connect(&self, timeout: Duration) -> redis::RedisResult<Connection> {
        if let Target::Cluster { client, .. } = self {
            return Ok(Connection::Cluster(client.get_async_connection().await?));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(1)
            .set_max_delay(timeout.as_millis() as u64);
        let manager = ConnectionManager::new_with_config(self.client().await?, config).await?;
        Ok(Connection::One(manager))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::One(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::One(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::One(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

fn address(tls: bool, host: &str, port: u16) -> ConnectionAddr {
    match tls {
        false => ConnectionAddr::Tcp(host.to_string(), port),
        true => ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: false,
            tls_params: None,
        },
    }
}

fn sentinel_client(
    url: &SentinelUrl,
    sentinel_password: Option<&str>,
) -> redis::RedisResult<SentinelClient> {
    let sentinels = url
        .sentinels
        .iter()
        .map(|(host, port)| ConnectionInfo {
            addr: address(url.tls, host, *port),
            redis: RedisConnectionInfo {
                password: sentinel_password.map(str::to_string),
                ..RedisConnectionInfo::default()
            },
        })
        .collect();
    let servers = SentinelNodeConnectionInfo {
        tls_mode: url.tls.then_some(TlsMode::Secure),
        redis_connection_info: Some(RedisConnectionInfo {
            db: url.db,
            username: url.username.clone(),
            password: url.password.as_ref().map(|p| p.expose().to_string()),
            ..RedisConnectionInfo::default()
        }),
    };
    SentinelClient::build(
        sentinels,
        url.service.clone(),
        Some(servers),
        SentinelServerType::Master,
    )
}

fn cluster_nodes(url: &ClusterUrl) -> Vec<ConnectionInfo> {
    url.nodes
        .iter()
        .map(|(host, port)| ConnectionInfo {
            addr: address(url.tls, host, *port),
            redis: RedisConnectionInfo {
                username: url.username.clone(),
                password: url.password.as_ref().map(|p| p.expose().to_string()),
                ..RedisConnectionInfo::default()
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_a_cluster_the_prefix_is_a_hash_tag() {
        let url = ClusterUrl {
            tls: false,
            nodes: vec![("127.0.0.1".into(), 7000)],
            username: None,
            password: None,
        };
        let cluster = Target::Cluster {
            client: ClusterClient::new(cluster_nodes(&url)).unwrap(),
            nodes: cluster_nodes(&url),
            next: AtomicUsize::new(0),
        };
        assert_eq!(cluster.hash_tag("artifactd"), "{artifactd}");
        let one = Target::One(redis::Client::open("redis://127.0.0.1:6379").unwrap());
        assert_eq!(one.hash_tag("artifactd"), "artifactd");
        assert!(cluster.moves() && !one.moves());
    }
}
