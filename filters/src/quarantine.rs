//! Quarantine of newly published artifacts: the minimum age of the
//! artifact firewall ([`crate::firewall`]), of which a remote's
//! `quarantine_new: true` is one rule.
//!
//! Immutable artifacts whose upstream `Last-Modified` is less than the
//! minimum age old are refused, giving time to
//! notice a malicious release before anything installs it. The decision fails
//! open: no or an unparsable `Last-Modified` allows the artifact, since the
//! alternative would block everything from upstreams that omit the header.
//! Mutable files (indexes, tag manifests) are never held: holding an index
//! would hide every version, old ones included.

use crate::ecosystem::ArtifactClass;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The verdict for one upstream response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quarantine {
    Allow,
    /// Refuse until this instant.
    Hold {
        until: SystemTime,
    },
}

/// Decides whether an artifact is held, given its class, the upstream's
/// `Last-Modified` value, the minimum age that applies (`None`: none; the
/// firewall's `min_age` rules and a remote's `quarantine_days`) and the
/// current time.
pub fn decide(
    class: ArtifactClass,
    last_modified: Option<&str>,
    min_age: Option<Duration>,
    now: SystemTime,
) -> Quarantine {
    let (Some(min_age), ArtifactClass::Immutable) = (min_age, class) else {
        return Quarantine::Allow;
    };
    let Some(published) = last_modified.and_then(|v| httpdate::parse_http_date(v.trim()).ok())
    else {
        return Quarantine::Allow;
    };
    let until = published + min_age;
    if now < until {
        Quarantine::Hold { until }
    } else {
        Quarantine::Allow
    }
}

/// Formats an instant as RFC 3339 in UTC (`2026-11-30T08:00:00Z`), the
/// form of the `X-Artifact-Quarantine: until …` header.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time.max(UNIX_EPOCH)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn http(time: SystemTime) -> String {
        httpdate::fmt_http_date(time)
    }

    fn days(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n * DAY))
    }

    const NOW: u64 = 1_795_000_000;

    #[test]
    fn recent_immutable_artifact_is_held_until_the_period_ends() {
        let lm = http(at(NOW - DAY));
        let verdict = decide(ArtifactClass::Immutable, Some(&lm), days(7), at(NOW));
        assert_eq!(
            verdict,
            Quarantine::Hold {
                until: at(NOW + 6 * DAY)
            }
        );
    }

    #[test]
    fn old_artifact_missing_or_malformed_date_is_allowed() {
        let old = http(at(NOW - 30 * DAY));
        assert_eq!(
            decide(ArtifactClass::Immutable, Some(&old), days(7), at(NOW)),
            Quarantine::Allow
        );
        assert_eq!(
            decide(ArtifactClass::Immutable, None, days(7), at(NOW)),
            Quarantine::Allow
        );
        assert_eq!(
            decide(
                ArtifactClass::Immutable,
                Some("yesterday"),
                days(7),
                at(NOW)
            ),
            Quarantine::Allow
        );
        assert_eq!(
            decide(ArtifactClass::Immutable, Some(""), days(7), at(NOW)),
            Quarantine::Allow
        );
    }

    #[test]
    fn mutable_files_and_remotes_without_quarantine_are_never_held() {
        let lm = http(at(NOW - 60));
        let index = ArtifactClass::Mutable {
            user_defined: false,
        };
        assert_eq!(
            decide(index, Some(&lm), days(7), at(NOW)),
            Quarantine::Allow
        );
        assert_eq!(
            decide(ArtifactClass::Immutable, Some(&lm), None, at(NOW)),
            Quarantine::Allow
        );
    }

    #[test]
    fn clock_edges() {
        let published = NOW - 3 * DAY;
        let lm = http(at(published));
        // One second before the end: held; at the end: allowed.
        let end = published + 3 * DAY;
        assert!(matches!(
            decide(ArtifactClass::Immutable, Some(&lm), days(3), at(end - 1)),
            Quarantine::Hold { .. }
        ));
        assert_eq!(
            decide(ArtifactClass::Immutable, Some(&lm), days(3), at(end)),
            Quarantine::Allow
        );
        // A Last-Modified in the future (clock skew) is held for the full period after it.
        let future = http(at(NOW + DAY));
        assert_eq!(
            decide(ArtifactClass::Immutable, Some(&future), days(1), at(NOW)),
            Quarantine::Hold {
                until: at(NOW + 2 * DAY)
            }
        );
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_795_000_000)), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(at(4_102_444_799)), "2099-12-31T23:59:59Z");
    }
}
