//! Small responses written directly from `request_filter`: admin answers,
//! errors and local-repository reads.
//!
//! They go through `Session::write_response_header` so downstream modules
//! run (STYLE §7.12), carry `Content-Length`, and omit the body for HEAD.

use bytes::Bytes;
use http::{Method, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// A complete small response.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
    pub headers: Vec<(&'static str, String)>,
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
        }
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

/// Writes `reply` and ends the response.
pub async fn send(session: &mut Session, reply: Reply) -> Result<()> {
    let mut headers = reply.headers;
    headers.push(("content-type", reply.content_type.to_string()));
    let resp = header(reply.status, reply.body.len() as u64, &headers)?;
    let is_head = session.req_header().method == Method::HEAD;
    if is_head || reply.body.is_empty() {
        session.write_response_header(Box::new(resp), true).await
    } else {
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(reply.body), true).await
    }
}

/// Sends `reply` to a request whose body was not read: the connection
/// cannot be reused, since unread body bytes would follow.
pub async fn send_and_close(session: &mut Session, reply: Reply) -> Result<()> {
    session.set_keepalive(None);
    send(session, reply).await
}
