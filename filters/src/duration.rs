//! Durations as operators write them: `30` (seconds), `30s`, `15m`, `1h`,
//! `1h30m`, `7d`.
//!
//! A bare number is seconds, which is what every duration in the reference
//! system's `remotes.yaml` is; anything else goes to `humantime`, whose
//! units (`ms`, `s`, `m`, `h`, `d`, `w`, and their long names) match what
//! systemd and Go's `time.ParseDuration` users type.

use std::time::Duration;

/// Parses a duration; the error says what was expected.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(filters::duration::parse("90"), Ok(Duration::from_secs(90)));
/// assert_eq!(filters::duration::parse("1h 30m"), Ok(Duration::from_secs(5400)));
/// assert!(filters::duration::parse("soon").is_err());
/// ```
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if let Ok(seconds) = trimmed.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(trimmed)
        .map_err(|e| format!("{text:?} is not a duration like 30, 30s, 15m, 1h or 7d ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse(" 15m "), Ok(Duration::from_secs(900)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse("").is_err());
        assert!(parse("-5s").is_err());
        assert!(parse("5 parsecs").is_err());
    }
}
