//! Sizes and durations as configuration files write them: a plain number
//! (bytes, seconds — what the reference system's files hold) or a string
//! with a unit (`50GiB`, `30s`, `1h`), and switches as environment
//! variables write them. Parsing of sizes and durations lives in `filters`.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A byte size: a number of bytes or a string with a unit (`50GiB`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

impl RawSize {
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            RawSize::Bytes(n) => Ok(*n),
            RawSize::Text(text) => filters::size::parse(text),
        }
    }
}

/// A duration: a number of seconds or a string with a unit (`30s`, `1h`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawDuration {
    Seconds(u64),
    Text(String),
}

impl RawDuration {
    pub fn duration(&self) -> Result<Duration, String> {
        match self {
            RawDuration::Seconds(n) => Ok(Duration::from_secs(*n)),
            RawDuration::Text(text) => filters::duration::parse(text),
        }
    }
}

impl From<u64> for RawDuration {
    fn from(seconds: u64) -> Self {
        RawDuration::Seconds(seconds)
    }
}

/// A switch from the environment: `1`/`true`/`yes`/`on` or
/// `0`/`false`/`no`/`off`, any case.
/// A duration setting that must be positive, `default` when absent; `Err`
/// is the message for its field.
pub fn positive_duration(
    value: &Option<RawDuration>,
    default: Duration,
) -> Result<Duration, String> {
    let duration = match value {
        None => default,
        Some(v) => v.duration()?,
    };
    if duration.is_zero() {
        return Err("must be positive".into());
    }
    Ok(duration)
}

pub fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{value:?} is not true or false")),
    }
}
