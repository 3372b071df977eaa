//! The proxy's own answers to failures: which status an error gets and
//! the short reason its body gives.

use crate::reply::Reply;
use http::StatusCode;

/// The status for a request that failed: the error's own HTTP status,
/// 504 for an upstream that timed out, 502 for any other upstream failure,
/// 400 for a malformed request, 500 for artifactd's own failures, and 0
/// when the client is already gone.
pub fn error_status(e: &pingora::Error) -> u16 {
    use pingora::{ErrorSource, ErrorType};
    match (e.etype(), e.esource()) {
        // The upstream's own failure status, as a gateway reports it.
        (ErrorType::HTTPStatus(code), ErrorSource::Upstream) => match code {
            502..=504 => *code,
            429 => 503,
            _ => 502,
        },
        (ErrorType::HTTPStatus(code), _) => *code,
        (
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ErrorSource::Upstream,
        ) => 504,
        (_, ErrorSource::Upstream) => 502,
        (
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => 0,
        (_, ErrorSource::Downstream) => 400,
        _ => 500,
    }
}

/// A one-line body saying why, without internal detail such as addresses.
pub fn error_reply(code: u16, e: &pingora::Error, remote: Option<&str>) -> Reply {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
    let reason = status.canonical_reason().unwrap_or("error");
    let text = match (super::cache::upstream_failure(e), remote) {
        (Some(failure), Some(remote)) => format!("{reason}: remote '{remote}': {failure}"),
        _ => format!("{reason} ({})", e.etype().as_str()),
    };
    Reply::text(status, text)
}

/// 404 for an artifact held in quarantine until `until` (RFC 3339).
pub fn quarantine_reply(until: &str) -> Reply {
    Reply::text(
        StatusCode::NOT_FOUND,
        format!("artifact is in quarantine until {until}: published too recently"),
    )
    .header("x-artifact-quarantine", format!("until {until}"))
}

/// 503 with `Retry-After` for a request of a remote the circuit breaker
/// marked down.
pub fn remote_down_reply(remote: &str, retry_after_ms: u64) -> Reply {
    Reply::text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("Service Unavailable: remote '{remote}' is marked down after repeated upstream failures"),
    )
    .header("retry-after", retry_after_ms.div_ceil(1000).max(1).to_string())
}

/// 503 for a request the cache storage could not serve or take: the
/// bucket is unreachable (details are in the log, not for clients).
pub fn storage_down_reply() -> Reply {
    Reply::text(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service Unavailable: the cache storage cannot be reached; retry shortly",
    )
    .header("retry-after", "5")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::{Error, ErrorType};

    #[test]
    fn statuses_follow_the_error_source() {
        assert_eq!(error_status(&Error::new_up(ErrorType::ConnectRefused)), 502);
        assert_eq!(
            error_status(&Error::new_up(ErrorType::HTTPStatus(500))),
            502
        );
        assert_eq!(
            error_status(&Error::new_up(ErrorType::HTTPStatus(503))),
            503
        );
        assert_eq!(
            error_status(&Error::new_up(ErrorType::HTTPStatus(429))),
            503
        );
        assert_eq!(
            error_status(&Error::new_up(ErrorType::ConnectTimedout)),
            504
        );
        assert_eq!(error_status(&Error::new_up(ErrorType::ReadTimedout)), 504);
        assert_eq!(error_status(&Error::new(ErrorType::HTTPStatus(403))), 403);
        assert_eq!(error_status(&Error::new_down(ErrorType::WriteError)), 0);
        assert_eq!(error_status(&Error::new_in(ErrorType::InternalError)), 500);
    }

    #[test]
    fn reply_names_the_remote_for_upstream_failures() {
        let reply = error_reply(502, &Error::new_up(ErrorType::ConnectRefused), Some("gen"));
        let text = String::from_utf8(reply.body.to_vec()).unwrap();
        assert_eq!(
            text,
            "Bad Gateway: remote 'gen': upstream refused the connection\n"
        );
    }
}
