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
    /// Until the upstream's response header; `None` when not asked.
    pub upstream_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Whether access lines are logged at all (checked before one is built).
pub fn enabled() -> bool {
    log::log_enabled!(target: TARGET, log::Level::Info)
}

impl Access<'_> {
    pub fn write(&self) {
        match FORMAT.get().copied().unwrap_or_default() {
            LogFormat::Json => {
                let json = serde_json::to_string(self).unwrap_or_default();
                log::info!(target: TARGET, "{json}");
            }
            LogFormat::Text => {
                let upstream = self
                    .upstream_ms
                    .map_or("-".to_string(), |ms| format!("{ms:.1}"));
                let error = self
                    .error
                    .as_ref()
                    .map(|e| format!(" error={e:?}"))
                    .unwrap_or_default();
                log::info!(
                    target: TARGET,
                    "{} {} \"{} {}\" remote={} status={} source={} bytes={} ms={:.1} upstream_ms={upstream}{error}",
                    self.request_id,
                    self.client,
                    self.method,
                    self.path,
                    self.remote,
                    self.status,
                    self.source,
                    self.bytes,
                    self.ms,
                );
            }
        }
    }
}
