//! The Redis deployments `state:` can name: one server (`redis://`,
//! `rediss://`, parsed by redis-rs), a master watched by Redis Sentinel, or
//! a Redis Cluster.
//!
//! redis-rs has Sentinel and Cluster clients but no URL for either, so
//! this module reads the forms other clients use:
//! - `redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT…]/SERVICE[/DB]`
//!   (`rediss+sentinel://` for TLS to the Sentinels and the servers). The
//!   credentials are the Redis servers'; Sentinels that want their own
//!   password take it from `redis.sentinel_password`.
//! - `redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT…]`
//!   (`rediss+cluster://` for TLS): any of the cluster's nodes, from which
//!   the client learns the rest.

use super::secret::Secret;
use percent_encoding::percent_decode_str;

/// The Sentinel port when a host names none.
const SENTINEL_PORT: u16 = 26379;
/// The Redis port when a cluster node's address names none.
const REDIS_PORT: u16 = 6379;

/// Which Redis deployment a `state:` URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisServers {
    /// `redis://` or `rediss://`.
    One,
    Sentinel(SentinelUrl),
    Cluster(ClusterUrl),
}

/// A master found through Sentinel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    pub tls: bool,
    /// Asked in order until one answers.
    pub sentinels: Vec<(String, u16)>,
    /// The master's name in the Sentinels' configuration.
    pub service: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// A Redis Cluster, known by some of its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    pub tls: bool,
    pub nodes: Vec<(String, u16)>,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// Whether `text` names a Sentinel-watched master (whatever else is wrong
/// with it).
pub fn is_sentinel(text: &str) -> bool {
    text.starts_with("redis+sentinel://") || text.starts_with("rediss+sentinel://")
}

/// Whether `text` names a Redis Cluster (whatever else is wrong with it).
pub fn is_cluster(text: &str) -> bool {
    text.starts_with("redis+cluster://") || text.starts_with("rediss+cluster://")
}

/// What the Sentinel and Cluster URLs share: a scheme with and without
/// TLS, credentials, and a list of addresses.
struct Servers<'a> {
    tls: bool,
    addresses: Vec<(String, u16)>,
    username: Option<String>,
    password: Option<Secret>,
    path: &'a str,
}

fn servers<'a>(text: &'a str, kind: &str, default_port: u16) -> Result<Servers<'a>, String> {
    let (tls, rest) = if let Some(rest) = text.strip_prefix(&format!("redis+{kind}://")) {
        (false, rest)
    } else if let Some(rest) = text.strip_prefix(&format!("rediss+{kind}://")) {
        (true, rest)
    } else {
        return Err(format!("expected redis+{kind}:// or rediss+{kind}://"));
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (Some(credentials), hosts),
        None => (None, authority),
    };
    let (username, password) = match credentials {
        None => (None, None),
        Some(credentials) => {
            let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
            (
                Some(decode(user)?).filter(|u| !u.is_empty()),
                Some(decode(password)?)
                    .filter(|p| !p.is_empty())
                    .map(Secret::new),
            )
        }
    };
    let addresses = hosts
        .split(',')
        .map(|host| host_port(host, default_port))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Servers {
        tls,
        addresses,
        username,
        password,
        path,
    })
}

/// Reads a `redis+sentinel://` or `rediss+sentinel://` URL; the error says
/// what is wrong, without the password.
pub fn parse_sentinel(text: &str) -> Result<SentinelUrl, String> {
    let Servers {
        tls,
        addresses: sentinels,
        username,
        password,
        path,
    } = servers(text, "sentinel", SENTINEL_PORT)?;
    let mut segments = path.split('/');
    let service = decode(segments.next().unwrap_or(""))?;
    if service.is_empty() {
        return Err("names no master: add /SERVICE after the Sentinel addresses".into());
    }
    let db = match segments.next() {
        None | Some("") => 0,
        Some(db) => db
            .parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or_else(|| format!("database {db:?} is not a number"))?,
    };
    if segments.any(|s| !s.is_empty()) {
        return Err("has more path than /SERVICE/DB".into());
    }
    Ok(SentinelUrl {
        tls,
        sentinels,
        service,
        db,
        username,
        password,
    })
}

/// Reads a `redis+cluster://` or `rediss+cluster://` URL; the error says
/// what is wrong, without the password.
pub fn parse_cluster(text: &str) -> Result<ClusterUrl, String> {
    let Servers {
        tls,
        addresses: nodes,
        username,
        password,
        path,
    } = servers(text, "cluster", REDIS_PORT)?;
    if !matches!(path, "" | "0") {
        return Err("has a path, but a cluster has one database and no name".into());
    }
    Ok(ClusterUrl {
        tls,
        nodes,
        username,
        password,
    })
}

fn host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
    if text.is_empty() {
        return Err("names no server address (HOST:PORT, comma-separated)".into());
    }
    // `[v6]:port`, `[v6]`, `host:port` or `host`.
    let (host, port) = match text.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: unclosed ["))?;
            (host, after.strip_prefix(':'))
        }
        None => match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        },
    };
    let port = match port {
        None => default_port,
        Some(port) => port
            .parse()
            .map_err(|_| format!("{text:?}: port {port:?} is not a number"))?,
    };
    if host.is_empty() {
        return Err(format!("{text:?}: no host"));
    }
    Ok((host.to_string(), port))
}

fn decode(text: &str) -> Result<String, String> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| "credentials or service are not UTF-8 once decoded".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_sentinel_url_reads_every_part() {
        let url =
            parse_sentinel("rediss+sentinel://app:p%40ss@s1:26380,[::1]:26381,s3/cache/2").unwrap();
        assert!(url.tls);
        assert_eq!(
            url.sentinels,
            vec![
                ("s1".to_string(), 26380),
                ("::1".to_string(), 26381),
                ("s3".to_string(), 26379)
            ]
        );
        assert_eq!(url.service, "cache");
        assert_eq!(url.db, 2);
        assert_eq!(url.username.as_deref(), Some("app"));
        assert_eq!(url.password.as_ref().map(Secret::expose), Some("p@ss"));
    }

    #[test]
    fn a_password_alone_and_no_database() {
        let url = parse_sentinel("redis+sentinel://:pw@127.0.0.1:26379/mymaster").unwrap();
        assert!(!url.tls);
        assert_eq!(url.username, None);
        assert_eq!(url.password.as_ref().map(Secret::expose), Some("pw"));
        assert_eq!(url.db, 0);
        assert!(is_sentinel("redis+sentinel://h/m"));
        assert!(!is_sentinel("redis://h"));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("redis+sentinel://h:1", "names no master"),
            ("redis+sentinel://h:1/", "names no master"),
            ("redis+sentinel://h:x/m", "is not a number"),
            ("redis+sentinel://h:1,/m", "no server address"),
            ("redis+sentinel://h:1/m/-1", "database"),
            ("redis+sentinel://h:1/m/0/extra", "more path"),
            ("redis+sentinel://[::1/m", "unclosed"),
            ("redis://h/m", "expected"),
        ] {
            let e = parse_sentinel(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        let e = parse_sentinel("redis+sentinel://:secret@h:x/m").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn cluster_urls_list_nodes_and_refuse_paths() {
        let url = parse_cluster("redis+cluster://:pw@n1:7000,n2").unwrap();
        assert!(!url.tls);
        assert_eq!(
            url.nodes,
            vec![("n1".to_string(), 7000), ("n2".to_string(), 6379)]
        );
        assert_eq!(url.password.as_ref().map(Secret::expose), Some("pw"));
        assert!(parse_cluster("rediss+cluster://n1:7000/").unwrap().tls);
        assert!(parse_cluster("redis+cluster://n1/0").is_ok());
        let e = parse_cluster("redis+cluster://n1/cache").unwrap_err();
        assert!(e.contains("has a path"), "{e}");
        let e = parse_cluster("redis+sentinel://n1/m").unwrap_err();
        assert!(e.contains("expected redis+cluster://"), "{e}");
        assert!(is_cluster("rediss+cluster://n"));
        assert!(!is_cluster("redis+sentinel://n/m"));
    }
}
