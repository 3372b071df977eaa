//! Process logging and the access log: `log.format: text` (env_logger's
//! lines) or `json` (one JSON object per line, for log shippers), and one
//! access line per request.
//!
//! Access lines go to the `access` target, so `RUST_LOG=access=off`
//! silences them and `RUST_LOG=warn,access=info` keeps only them and
//! problems.

use serde::Serialize;
use std::io::Write;
use std::sync::OnceLock;

pub const TARGET: &str = "access";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not a log format; use text or json")),
        }
    }
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Starts the process logger (once; later calls change nothing).
pub fn init(format: LogFormat) {
    if FORMAT.set(format).is_err() {
        return;
    }
    let mut builder = env_logger::Builder::new();
    // redis-rs warns of every failed connection to a cluster node, many a
    // second while one is down; the Redis link reports outages itself, once
    // per interval. `RUST_LOG=redis=warn` still shows them.
    builder.filter_module("redis", log::LevelFilter::Error);
    builder.parse_env(env_logger::Env::default().default_filter_or("info"));
    builder.format_timestamp_millis();
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now());
            let level = record.level();
            if record.target() == TARGET {
                // The access record is a JSON object already; its fields
                // join the line's.
                let fields = record.args().to_string();
                let inner = fields.strip_prefix('{').unwrap_or(&fields);
                writeln!(buf, "{{\"ts\":\"{ts}\",\"level\":\"{level}\",\"target\":\"{TARGET}\",{inner}")
            } else {
                let target = serde_json::to_string(record.target()).unwrap_or_default();
                let message = serde_json::to_string(&record.args().to_string()).unwrap_or_default();
                writeln!(buf, "{{\"ts\":\"{ts}\",\"level\":\"{level}\",\"target\":{target},\"msg\":{message}}}")
            }
        });
    }
    let _ = builder.try_init();
}

/// The cache key of an artifact request after its remote: the decoded
/// path patterns match and the catalog lists, and what tells variants of
/// it apart (an `Accept` class, a query), if anything does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyPath {
    #[serde(rename = "key_path")]
    pub path: Box<str>,
    #[serde(rename = "key_variant", skip_serializing_if = "Option::is_none")]
    pub variant: Option<Box<str>>,
}

impl KeyPath {
    pub fn of(parts: &[String]) -> KeyPath {
        KeyPath {
            path: parts.first().map_or("", String::as_str).into(),
            variant: (parts.len() > 1).then(|| parts[1..].join(" ").into()),
        }
    }
}

/// One finished request.
#[derive(Debug, Serialize)]
pub struct Access<'a> {
    pub request_id: &'a str,
    pub client: String,
    pub method: &'a str,
    pub remote: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub source: &'a str,
    pub bytes: u64,
    pub ms: f64,
    pub user_agent: Option<&'a str>,
    /// Until the upstream's response header; `None` when not asked.
    pub upstream_ms: Option<f64>,
    /// The last upstream response's status; `None` when none arrived.
    pub upstream_status: Option<u16>,
    /// Body bytes received from the upstream for this request.
    pub upstream_bytes: u64,
    /// The cache key's remote, for artifact requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_remote: Option<&'a str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a KeyPath>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Whether access lines are logged at all (checked before one is built).
pub fn enabled() -> bool {
    log::log_enabled!(target: TARGET, log::Level::Info)
}

impl Access<'_> {
    /// The text format's line: the request, then `name=value` fields.
    fn text(&self) -> String {
        let dash = || "-".to_string();
        let upstream_ms = self.upstream_ms.map_or_else(dash, |ms| format!("{ms:.1}"));
        let upstream_status = self.upstream_status.map_or_else(dash, |s| s.to_string());
        let mut line = format!(
            "{} {} \"{} {}\" remote={} status={} source={} bytes={} ms={:.1} upstream_ms={upstream_ms} upstream_status={upstream_status} upstream_bytes={} ua={:?}",
            self.request_id,
            self.client,
            self.method,
            self.path,
            self.remote,
            self.status,
            self.source,
            self.bytes,
            self.ms,
            self.upstream_bytes,
            self.user_agent.unwrap_or("-"),
        );
        if let (Some(remote), Some(key)) = (self.key_remote, self.key) {
            line.push_str(&format!(" key={remote}:{:?}", key.path));
            if let Some(variant) = &key.variant {
                line.push_str(&format!(" key_variant={variant:?}"));
            }
        }
        if let Some(error) = &self.error {
            line.push_str(&format!(" error={error:?}"));
        }
        line
    }

    pub fn write(&self) {
        match FORMAT.get().copied().unwrap_or_default() {
            LogFormat::Json => {
                let json = serde_json::to_string(self).unwrap_or_default();
                log::info!(target: TARGET, "{json}");
            }
            LogFormat::Text => log::info!(target: TARGET, "{}", self.text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access<'a>(key: Option<&'a KeyPath>) -> Access<'a> {
        Access {
            request_id: "r1",
            client: "127.0.0.1:5000".into(),
            method: "GET",
            remote: "pypi",
            path: "/api/pypi/pypi/packages/a.whl",
            status: 200,
            source: "miss",
            bytes: 10,
            ms: 1.25,
            user_agent: Some("pip/24.0 \"x\""),
            upstream_ms: Some(0.5),
            upstream_status: Some(200),
            upstream_bytes: 10,
            key_remote: key.map(|_| "pypi"),
            key,
            error: None,
        }
    }

    #[test]
    fn json_lines_carry_the_upstream_and_the_cache_key() {
        let key = KeyPath::of(&["packages/a.whl".to_string(), "accept:v2".to_string()]);
        let json: serde_json::Value = serde_json::to_value(access(Some(&key))).unwrap();
        assert_eq!(json["user_agent"], "pip/24.0 \"x\"");
        assert_eq!(json["upstream_status"], 200);
        assert_eq!(json["upstream_bytes"], 10);
        assert_eq!(json["key_remote"], "pypi");
        assert_eq!(json["key_path"], "packages/a.whl");
        assert_eq!(json["key_variant"], "accept:v2");
        let plain = serde_json::to_value(access(None)).unwrap();
        assert!(plain.get("key_path").is_none() && plain.get("key_remote").is_none());
    }

    #[test]
    fn text_lines_quote_what_may_hold_spaces() {
        let key = KeyPath::of(&["packages/a b.whl".to_string()]);
        let line = access(Some(&key)).text();
        assert!(
            line.contains(" upstream_status=200 upstream_bytes=10 "),
            "{line}"
        );
        assert!(line.contains(r#"ua="pip/24.0 \"x\"""#), "{line}");
        assert!(line.ends_with(r#"key=pypi:"packages/a b.whl""#), "{line}");
    }
}
