//! Bearer-token checks for writes and administration.

use crate::config::Secret;
use pingora::http::RequestHeader;

/// Whether `req` carries `Authorization: Bearer <expected>`; always true
/// when no token is configured.
pub fn bearer_allows(req: &RequestHeader, expected: Option<&Secret>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let presented = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    presented.is_some_and(|token| constant_time_eq(token.as_bytes(), expected.expose().as_bytes()))
}

/// Compares without an early exit, so timing does not leak a prefix match.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("PUT", b"/x", None).unwrap();
        if let Some(a) = auth {
            r.insert_header("authorization", a).unwrap();
        }
        r
    }

    #[test]
    fn tokens() {
        let t = Secret::new("t".into());
        let t = Some(&t);
        assert!(bearer_allows(&req(None), None));
        assert!(!bearer_allows(&req(None), t));
        assert!(!bearer_allows(&req(Some("Bearer x")), t));
        assert!(!bearer_allows(&req(Some("Basic t")), t));
        assert!(bearer_allows(&req(Some("Bearer t")), t));
    }
}
