//! Small complete responses any part of artifactd writes itself (the
//! proxy's refusals, admin and cache API answers, local repositories,
//! another node's fill), and the token guard of admin endpoints: a leaf
//! module, so that whoever answers needs nothing else of artifactd.
//!
//! They go through `Session::write_response_header` so downstream modules
//! run, carry `Content-Length`, and omit the body for HEAD.

use bytes::Bytes;
use http::{Method, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// A complete small response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
    pub headers: Vec<(&'static str, String)>,
    /// A reason phrase in place of the status's own: pip prints it.
    pub reason: Option<String>,
}

impl Reply {
    pub fn text(status: StatusCode, text: impl Into<String>) -> Reply {
        let mut body = text.into();
        if !body.is_empty() && !body.ends_with('\n') {
            body.push('\n');
        }
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from(body),
            headers: Vec::new(),
            reason: None,
        }
    }

    /// The reply as the route's clients expect an error: on `/api/` the
    /// reference system's FastAPI form, `{"detail": "..."}`; elsewhere (probes,
    /// `/cache/flush`, registry routes with their own JSON) as it is.
    pub fn in_the_form_of(self, path: &str) -> Reply {
        let plain_error =
            self.status.as_u16() >= 400 && self.content_type.starts_with("text/plain");
        if !(plain_error && path.starts_with("/api/")) {
            return self;
        }
        let detail = String::from_utf8_lossy(&self.body).trim().to_string();
        // One line, as FastAPI writes it (and as a one-line reason reads).
        let mut body =
            serde_json::to_vec(&serde_json::json!({ "detail": detail })).unwrap_or_default();
        body.push(b'\n');
        Reply {
            content_type: "application/json",
            body: Bytes::from(body),
            ..self
        }
    }

    pub fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Reply {
            status,
            content_type: "application/json",
            body: Bytes::from(body),
            headers: Vec::new(),
            reason: None,
        }
    }

    pub fn html(status: StatusCode, html: String) -> Reply {
        Reply {
            status,
            content_type: "text/html; charset=utf-8",
            body: Bytes::from(html),
            headers: Vec::new(),
            reason: None,
        }
    }

    /// The reply with `reason` as its status line's reason phrase (one
    /// line, visible ASCII).
    pub fn reason(mut self, reason: &str) -> Reply {
        let line: String = reason
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        self.reason = Some(line);
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// Builds a response header with `Content-Length` and the given extras.
pub fn header(
    status: StatusCode,
    content_length: u64,
    headers: &[(&'static str, String)],
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(headers.len() + 2))?;
    if status != StatusCode::NO_CONTENT && status != StatusCode::NOT_MODIFIED {
        resp.insert_header(http::header::CONTENT_LENGTH, content_length.to_string())?;
    }
    for (name, value) in headers {
        resp.append_header(*name, value.as_str())?;
    }
    Ok(resp)
}

impl Reply {
    /// The response header that sends this reply, and its body.
    pub fn into_parts(self) -> Result<(ResponseHeader, Bytes)> {
        let mut headers = self.headers;
        headers.push(("content-type", self.content_type.to_string()));
        let mut resp = header(self.status, self.body.len() as u64, &headers)?;
        if let Some(reason) = &self.reason {
            resp.set_reason_phrase(Some(reason))?;
        }
        Ok((resp, self.body))
    }
}

/// Writes `reply` and ends the response.
pub async fn send(session: &mut Session, reply: Reply) -> Result<()> {
    let reply = reply.in_the_form_of(session.req_header().uri.path());
    let (resp, body) = reply.into_parts()?;
    let is_head = session.req_header().method == Method::HEAD;
    if is_head || body.is_empty() {
        session.write_response_header(Box::new(resp), true).await
    } else {
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await
    }
}

/// Sends `reply` to a request whose body was not read: the connection
/// cannot be reused, since unread body bytes would follow.
pub async fn send_and_close(session: &mut Session, reply: Reply) -> Result<()> {
    session.set_keepalive(None);
    send(session, reply).await
}

/// Sends `reply` without reading the request body, keeping the connection
/// only when the request has no body to leave unread (registry clients
/// ping `/v2/` on connections they go on using).
pub async fn send_unread(session: &mut Session, reply: Reply) -> Result<()> {
    let headers = &session.req_header().headers;
    let bodyless = !headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers
            .get(http::header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0");
    if bodyless {
        send(session, reply).await
    } else {
        send_and_close(session, reply).await
    }
}

/// The 401 for a request without the admin token, when one is set.
pub fn require_admin(
    admin_token: Option<&crate::config::Secret>,
    req: &pingora::http::RequestHeader,
) -> Option<Reply> {
    (!crate::auth::bearer_allows(req, admin_token)).then(|| {
        Reply::text(StatusCode::UNAUTHORIZED, "admin token required")
            .header("www-authenticate", "Bearer")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_take_the_fastapi_form_and_nothing_else_changes() {
        let refused = Reply::text(StatusCode::NOT_FOUND, "unknown remote 'x'").header("x-a", "1");
        let json = refused.clone().in_the_form_of("/api/v1/remote/x/f");
        assert_eq!(json.content_type, "application/json");
        assert_eq!(&json.body[..], b"{\"detail\":\"unknown remote 'x'\"}\n");
        assert_eq!(json.status, StatusCode::NOT_FOUND);
        assert_eq!(json.headers, [("x-a", "1".to_string())]);
        for path in ["/health", "/cache/flush", "/v2/hub/a/manifests/1"] {
            assert_eq!(
                refused.clone().in_the_form_of(path).body,
                refused.body,
                "{path}"
            );
        }
        let ok = Reply::text(StatusCode::OK, "fine");
        assert_eq!(ok.clone().in_the_form_of("/api/v1/x").body, ok.body);
    }
}
