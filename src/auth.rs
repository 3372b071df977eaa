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

/// Whether `req` carries `expected` as a bearer token, or as the password
/// of basic authentication (any user name): what a browser can be made to
/// send for a page, by answering 401 with `WWW-Authenticate: Basic`.
pub fn bearer_or_basic_allows(req: &RequestHeader, expected: &Secret) -> bool {
    (req.headers.get(http::header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|value| authorization_allows(value, expected))
}

/// Whether an `Authorization` value carries `expected` as a bearer token
/// or as a basic password.
pub fn authorization_allows(value: &str, expected: &Secret) -> bool {
    use base64::Engine;
    let expected = expected.expose().as_bytes();
    let bearer = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "));
    if let Some(token) = bearer {
        return constant_time_eq(token.trim().as_bytes(), expected);
    }
    let password = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .and_then(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|pair| {
            let colon = pair.iter().position(|b| *b == b':')?;
            Some(pair[colon + 1..].to_vec())
        });
    password.is_some_and(|p| constant_time_eq(&p, expected))
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
    fn basic_authentication_carries_the_token_as_its_password() {
        let t = Secret::new("s3cret".into());
        assert!(bearer_or_basic_allows(&req(Some("Bearer s3cret")), &t));
        // "ops:s3cret" and "ops:wrong"
        assert!(bearer_or_basic_allows(
            &req(Some("Basic b3BzOnMzY3JldA==")),
            &t
        ));
        assert!(!bearer_or_basic_allows(
            &req(Some("Basic b3BzOndyb25n")),
            &t
        ));
        assert!(!bearer_or_basic_allows(&req(Some("Basic !!")), &t));
        assert!(!bearer_or_basic_allows(&req(None), &t));
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
