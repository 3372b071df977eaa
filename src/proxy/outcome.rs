//! What an upstream response means for the request, decided once in
//! `upstream_response_filter` and kept in the request context, so that
//! `fail_to_proxy`, stale serving, logging and the circuit breakers all read
//! the same answer instead of working it out again from errors.
//!
//! Connection-level failures (refused, timeouts, TLS, DNS) produce no
//! response and so no outcome: those phases read pingora's error for them.

use super::artifact::Artifact;
use super::upstream::{self, Redirect};
use crate::config::Upstream;
use filters::quarantine::Quarantine;
use filters::ArtifactClass;
use pingora::http::ResponseHeader;
use std::time::SystemTime;

/// The meaning of one upstream response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// Passed on to the client, and to the cache when cacheable: 2xx, 304,
    /// and 4xx answers that are the upstream's to give.
    Passed { status: u16 },
    /// A redirect artifactd follows itself to this next hop.
    Redirect(Redirect),
    /// A 401 challenge that credentials may answer.
    Challenge { www_authenticate: String },
    /// 404/410 for an immutable artifact that is cached: the upstream
    /// deleted it, the cached copy stays served. Not an upstream failure.
    Vanished { status: u16 },
    /// 5xx or 429: the upstream failed; a cached copy may stand in.
    Failed {
        status: u16,
        retry_after: Option<String>,
    },
    /// A newly published artifact held back until this RFC 3339 time.
    Quarantined { until: String },
}

/// What the classification needs besides the response.
pub struct Context<'a> {
    pub artifact: &'a Artifact,
    /// Whether a cached copy of the artifact exists (expired or not).
    pub has_copy: bool,
    /// The hop that answered, for resolving a relative `Location`.
    pub hop: &'a Upstream,
    /// Whether a challenge was answered already for this request.
    pub challenged: bool,
    pub now: SystemTime,
}

pub(super) fn header(resp: &ResponseHeader, name: http::header::HeaderName) -> Option<&str> {
    resp.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Classifies `resp`. The order matters: a vanished immutable artifact is
/// checked before anything else, a redirect before quarantine (which looks
/// at the final `200` only).
pub fn classify(resp: &ResponseHeader, cx: &Context<'_>) -> UpstreamOutcome {
    let status = resp.status.as_u16();
    let immutable = cx.artifact.class == ArtifactClass::Immutable;
    if cx.has_copy && immutable && matches!(status, 404 | 410) {
        return UpstreamOutcome::Vanished { status };
    }
    if status == 401 && !cx.challenged {
        if let Some(challenge) = header(resp, http::header::WWW_AUTHENTICATE) {
            return UpstreamOutcome::Challenge {
                www_authenticate: challenge.to_string(),
            };
        }
    }
    let location = header(resp, http::header::LOCATION);
    if let Some(target) = upstream::redirect_target(status, location, cx.hop) {
        return UpstreamOutcome::Redirect(target);
    }
    if status >= 500 || status == 429 {
        return UpstreamOutcome::Failed {
            status,
            retry_after: header(resp, http::header::RETRY_AFTER).map(str::to_string),
        };
    }
    if status == 200 {
        if let Some(hold) = quarantined(
            cx.artifact,
            header(resp, http::header::LAST_MODIFIED),
            cx.now,
        ) {
            return hold;
        }
    }
    UpstreamOutcome::Passed { status }
}

/// The hold on an immutable artifact published (by its `Last-Modified`)
/// less than its minimum age ago (a remote's quarantine, a firewall
/// `min_age` rule): for a
/// response from the upstream, and for a cached one, since the remote's
/// quarantine may have been switched on after it was cached.
pub fn quarantined(
    artifact: &Artifact,
    last_modified: Option<&str>,
    now: std::time::SystemTime,
) -> Option<UpstreamOutcome> {
    let verdict =
        filters::quarantine::decide(artifact.class, last_modified, artifact.judged.min_age, now);
    match verdict {
        Quarantine::Hold { until } => Some(UpstreamOutcome::Quarantined {
            until: filters::quarantine::rfc3339(until),
        }),
        Quarantine::Allow => None,
    }
}

impl UpstreamOutcome {
    /// Whether this response counts against the remote's circuit breaker.
    pub fn is_upstream_failure(&self) -> bool {
        matches!(self, UpstreamOutcome::Failed { .. })
    }

    /// The upstream's status when it failed, for the client's answer.
    pub fn failed_status(&self) -> Option<u16> {
        match self {
            UpstreamOutcome::Failed { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::remotes::parse_remotes;
    use crate::proxy::artifact::ArtifactKind;
    use std::sync::Arc;
    use std::time::Duration;

    fn artifact(class: ArtifactClass, quarantine: bool) -> Artifact {
        let yaml = format!(
            "remotes:\n  r:\n    base_url: http://up.example\n{}",
            if quarantine {
                "    quarantine_new: true\n    quarantine_days: 3\n"
            } else {
                ""
            }
        );
        let (_, mut remotes, _) = parse_remotes(std::path::Path::new("r.yaml"), &yaml).unwrap();
        Artifact {
            remote: Arc::new(remotes.remove(0)),
            raw_path: "a".into(),
            key_parts: vec!["a".into()],
            class,
            kind: ArtifactKind::File,
            // What the firewall makes of the remote's quarantine.
            judged: crate::proxy::artifact::Judged {
                min_age: quarantine.then(|| Duration::from_secs(3 * 86_400)),
                ..Default::default()
            },
        }
    }

    fn hop() -> Upstream {
        Upstream {
            tls: false,
            host: "up.example".into(),
            port: 80,
            base_path: String::new(),
            basic_auth: None,
        }
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut resp = ResponseHeader::build(status, None).unwrap();
        for (name, value) in headers {
            resp.insert_header(name.to_string(), *value).unwrap();
        }
        resp
    }

    fn classify_with(
        resp: &ResponseHeader,
        artifact: &Artifact,
        has_copy: bool,
        challenged: bool,
    ) -> UpstreamOutcome {
        let hop = hop();
        let cx = Context {
            artifact,
            has_copy,
            hop: &hop,
            challenged,
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000),
        };
        classify(resp, &cx)
    }

    #[test]
    fn failures_and_vanished_artifacts() {
        let immutable = artifact(ArtifactClass::Immutable, false);
        let mutable = artifact(
            ArtifactClass::Mutable {
                user_defined: false,
            },
            false,
        );
        let failed = classify_with(
            &response(503, &[("retry-after", "7")]),
            &mutable,
            true,
            false,
        );
        assert_eq!(
            failed,
            UpstreamOutcome::Failed {
                status: 503,
                retry_after: Some("7".into())
            }
        );
        assert!(failed.is_upstream_failure());
        assert!(classify_with(&response(429, &[]), &mutable, false, false).is_upstream_failure());
        assert_eq!(
            classify_with(&response(404, &[]), &immutable, true, false),
            UpstreamOutcome::Vanished { status: 404 }
        );
        // Without a copy, or for a mutable path, a 404 is just an answer.
        assert_eq!(
            classify_with(&response(404, &[]), &immutable, false, false),
            UpstreamOutcome::Passed { status: 404 }
        );
        assert_eq!(
            classify_with(&response(410, &[]), &mutable, true, false),
            UpstreamOutcome::Passed { status: 410 }
        );
    }

    #[test]
    fn redirects_challenges_and_quarantine() {
        let immutable = artifact(ArtifactClass::Immutable, true);
        let redirect = classify_with(
            &response(307, &[("location", "http://cdn.example/x")]),
            &immutable,
            false,
            false,
        );
        assert!(matches!(redirect, UpstreamOutcome::Redirect(r) if r.host == "cdn.example"));
        let challenge = response(401, &[("www-authenticate", "Bearer realm=\"x\"")]);
        assert!(matches!(
            classify_with(&challenge, &immutable, false, false),
            UpstreamOutcome::Challenge { .. }
        ));
        // Answered once already: the 401 goes to the client.
        assert_eq!(
            classify_with(&challenge, &immutable, false, true),
            UpstreamOutcome::Passed { status: 401 }
        );
        let fresh = response(200, &[("last-modified", "Tue, 17 May 2033 03:33:20 GMT")]);
        assert!(matches!(
            classify_with(&fresh, &immutable, false, false),
            UpstreamOutcome::Quarantined { .. }
        ));
        let old = response(200, &[("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")]);
        assert_eq!(
            classify_with(&old, &immutable, false, false),
            UpstreamOutcome::Passed { status: 200 }
        );
    }
}
