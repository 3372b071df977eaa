//! The audit trail: every artifact served, to whom, recorded in the
//! catalog, so that "who received MAL-2026-1234?" has an answer
//! (`GET /api/v1/audit`, `artifactd audit who`).
//!
//! A request only counts its delivery in memory ([`pending`]); every five
//! seconds, and at a stop, the rows (deliveries alike in all but time as one, with their
//! count) go to the catalog writer, which writes them in batches and
//! drops (and counts) them rather than grow without bound when the
//! catalog falls behind. A row's sha256 is that of the body the request
//! delivered, read from the record it was served from; where the
//! request's path does not carry it (the phases), it is the catalog's for
//! the path, filled in as the row is written. Rows older than
//! `audit.retain` are deleted hourly.

pub mod pending;

use crate::app::App;
use crate::catalog::{AuditQuery, AuditRow};
use crate::config::ServerConfig;
use crate::reply::Reply;
use filters::ecosystem::PackageVersion;
use http::StatusCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One artifact served, as the request's end knows it.
pub struct Served<'a> {
    pub remote: &'a str,
    /// The decoded remote path (the cache key's path).
    pub path: &'a str,
    pub release: Option<&'a PackageVersion>,
    /// The client's IP address (its port says nothing of who it is).
    pub client: Option<std::net::IpAddr>,
    /// The request's `Authorization` value, to name the token it bore.
    pub authorization: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    /// The sha256 of the body delivered, when the request knows it.
    pub sha256: Option<BodyDigest>,
}

/// A body's hex sha256, copied out of the record a hit was answered from
/// (which lies in a buffer that is reused) without an allocation.
#[derive(Clone, Copy)]
pub struct BodyDigest([u8; 64]);

impl BodyDigest {
    /// `hex` if it is a sha256's length (a record written before digests
    /// were kept has none).
    pub fn of(hex: &str) -> Option<BodyDigest> {
        Some(BodyDigest(hex.as_bytes().try_into().ok()?))
    }

    pub fn as_str(&self) -> &str {
        // Whole 64 bytes of a `str`, so always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The first 16 hex digits (64 bits), enough to tell two copies of
    /// one path apart, for a delivery's key: hashing all 64 characters,
    /// twice, cost a hundred instructions a hit.
    fn tag(&self) -> u128 {
        let mut first = [0u8; 16];
        first.copy_from_slice(&self.0[..16]);
        u128::from_le_bytes(first)
    }
}

/// Whether a response delivered an artifact: a GET answered with its body
/// (or part of it).
pub fn delivered(method: &str, status: u16) -> bool {
    method == "GET" && (status == 200 || status == 206)
}

/// Counts an artifact delivered, the trail known to be on (the fast path
/// knows it from the decision it keeps, made under the configuration in
/// force; the phases ask the configuration).
pub fn count(app: &App, served: Served<'_>) {
    let token = served
        .authorization
        .and_then(|authorization| token_name(&app.config().server, authorization));
    let delivery = pending::Delivery {
        remote: served.remote,
        path: served.path,
        client: served.client,
        token,
        user_agent: served.user_agent,
        copy: served.sha256.as_ref().map(BodyDigest::tag),
    };
    app.audit.add(&delivery, || AuditRow {
        at_ms: now_ms(),
        remote: served.remote.to_string(),
        path: served.path.to_string(),
        package: served.release.map(|r| r.name.clone()),
        version: served.release.map(|r| r.version.clone()),
        sha256: (served.sha256.as_ref()).map(|digest| digest.as_str().to_string()),
        client: served.client.map(address_text),
        token: delivery.token.map(str::to_string),
        user_agent: served.user_agent.map(str::to_string),
        deliveries: 1,
    });
}

/// `ip` as `Display` writes it. An IPv4 address is written digit by digit:
/// through `fmt` it cost a thousand instructions, and a spread of objects
/// makes nearly every delivery a row of its own.
fn address_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// How often counted rows go to the catalog writer. Deliveries alike
/// within it are one row, so it bounds the writes a hot artifact costs
/// (at 500 ms, writing the rows of a 2,000-key hit benchmark cost 3% of
/// its CPU); a stop hands over what is left.
const HAND_OVER_EVERY: Duration = Duration::from_secs(5);

/// Hands the counted rows to the catalog writer every [`HAND_OVER_EVERY`].
pub async fn hand_over(app: Arc<App>) {
    let mut every = tokio::time::interval(HAND_OVER_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        app.audit.hand_over(&app.catalog_writer);
    }
}

/// The IP address of a client of pingora's.
pub fn client_ip(addr: &pingora::protocols::l4::socket::SocketAddr) -> Option<std::net::IpAddr> {
    addr.as_inet().map(|inet| inet.ip())
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// The name of the configured token `authorization` bears (`Bearer` or
/// basic with the token as password), if it bears one.
fn token_name(server: &ServerConfig, authorization: &str) -> Option<&'static str> {
    let tokens = [
        ("admin", &server.admin_token),
        ("write", &server.write_token),
        ("metrics", &server.metrics_token),
    ];
    tokens.into_iter().find_map(|(name, token)| {
        let token = token.as_ref()?;
        crate::auth::authorization_allows(authorization, token).then_some(name)
    })
}

/// Deletes rows older than `audit.retain`, at start and hourly.
pub async fn prune(app: Arc<App>) {
    loop {
        let retain = app.config().server.audit.retain;
        let before = now_ms().saturating_sub(i64::try_from(retain.as_millis()).unwrap_or(i64::MAX));
        match app.catalog.prune_audit(before).await {
            Ok(0) => {}
            Ok(n) => log::info!(
                "audit: deleted {n} rows older than {}",
                humantime::format_duration(retain)
            ),
            Err(e) => log::warn!("audit: cannot delete old rows: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// The most rows one answer lists.
const MAX_ROWS: u32 = 10_000;

/// `GET /api/v1/audit?remote=&package=&version=&digest=&since=&limit=`:
/// who received what, newest first. `since` is RFC 3339 or a duration
/// back from now (`24h`).
pub async fn answer(app: &App, query: Option<&str>) -> Reply {
    let query = match parse_query(query, SystemTime::now()) {
        Ok(query) => query,
        Err(message) => return Reply::text(StatusCode::BAD_REQUEST, message),
    };
    match app.catalog.audit(&query).await {
        Ok(rows) => Reply::json(
            StatusCode::OK,
            &serde_json::json!({ "count": rows.len(), "records": rows }),
        ),
        Err(e) => Reply::text(StatusCode::SERVICE_UNAVAILABLE, format!("audit: {e}")),
    }
}

fn parse_query(query: Option<&str>, now: SystemTime) -> Result<AuditQuery, String> {
    let mut audit = AuditQuery {
        limit: 1000,
        ..AuditQuery::default()
    };
    for (name, value) in filters::route::query_pairs(query) {
        match name.as_str() {
            "remote" => audit.remote = Some(value),
            "package" => audit.package = Some(value),
            "version" => audit.version = Some(value),
            "digest" => audit.digest = Some(value),
            "since" => audit.since_ms = Some(since_ms(&value, now)?),
            "limit" => {
                audit.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_ROWS).contains(n))
                    .ok_or_else(|| format!("limit must be 1 to {MAX_ROWS}, not {value:?}"))?;
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?}: remote, package, version, digest, since, limit"
                ))
            }
        }
    }
    Ok(audit)
}

/// `since` as milliseconds since the epoch.
fn since_ms(text: &str, now: SystemTime) -> Result<i64, String> {
    let at = match humantime::parse_rfc3339_weak(text) {
        Ok(at) => at,
        Err(_) => {
            let back = filters::duration::parse(text).map_err(|_| {
                format!("since must be RFC 3339 or a duration back from now, not {text:?}")
            })?;
            now.checked_sub(back).unwrap_or(UNIX_EPOCH)
        }
    };
    let ms = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    Ok(i64::try_from(ms).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut addresses: Vec<std::net::IpAddr> = (0..=255u8)
            .flat_map(|a| [[a, 0, 9, 10], [99, a, 100, 255], [1, 2, a, a]])
            .map(|octets| std::net::Ipv4Addr::from(octets).into())
            .collect();
        addresses.push("::ffff:10.1.2.3".parse().unwrap());
        addresses.push("2001:db8::1".parse().unwrap());
        for ip in addresses {
            assert_eq!(address_text(ip), ip.to_string());
        }
    }

    #[test]
    fn queries_read_filters_and_refuse_what_they_do_not_know() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let query =
            parse_query(Some("package=acc-demo&version=1.1.0&since=1h&limit=5"), now).unwrap();
        assert_eq!(query.package.as_deref(), Some("acc-demo"));
        assert_eq!(query.version.as_deref(), Some("1.1.0"));
        assert_eq!(query.since_ms, Some((1_800_000_000 - 3600) * 1000));
        assert_eq!(query.limit, 5);
        let at = parse_query(Some("since=2027-01-15T00:00:00Z"), now).unwrap();
        assert_eq!(at.since_ms, Some(1_799_971_200_000));
        assert!(parse_query(Some("pkg=x"), now)
            .unwrap_err()
            .contains("unknown parameter"));
        assert!(parse_query(Some("limit=0"), now).is_err());
        assert!(parse_query(Some("since=soon"), now).is_err());
    }

    #[test]
    fn body_digests_are_kept_whole_or_not_at_all() {
        let hex = "ab".repeat(32);
        assert_eq!(BodyDigest::of(&hex).unwrap().as_str(), hex);
        assert!(BodyDigest::of("").is_none());
        assert!(BodyDigest::of(&hex[1..]).is_none());
    }

    #[test]
    fn only_delivered_bodies_are_recorded() {
        assert!(delivered("GET", 200) && delivered("GET", 206));
        assert!(!delivered("HEAD", 200) && !delivered("GET", 304) && !delivered("GET", 403));
    }
}
