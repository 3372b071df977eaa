//! `X-Request-Id`: kept from the client when it sent a sane one, generated
//! otherwise, and returned on every response.
//!
//! A downstream module does it, because pingora runs modules on every
//! response, whichever phase wrote it (a proxied or cached artifact, an
//! admin reply, an error page). The id is written into the request header
//! itself, so the access log reads it there and the upstream request,
//! copied from the client's, carries it on.

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::{HttpModule, HttpModuleBuilder, Module};
use pingora::Result;
use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub const HEADER: &str = "x-request-id";

/// Whether a client's id is safe to keep (and to write into logs).
fn acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// A new id: a random per-process prefix and a counter, so making one
/// costs no system call on the request path and ids never repeat across
/// restarts.
fn new_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = (u128::from(prefix) << 64) | u128::from(count);
    // Neither `format!` nor `hex::encode` (which pushes a char at a time):
    // each cost a thousand instructions more, on every request.
    let mut text = [0u8; 32];
    hex::encode_to_slice(id.to_be_bytes(), &mut text).expect("16 bytes are 32 hex digits");
    String::from_utf8(text.to_vec()).unwrap_or_default()
}

/// The id a request gets: the client's own when it is sane, else a new one.
pub fn pick(client: Option<&str>) -> String {
    client
        .filter(|id| acceptable(id))
        .map_or_else(new_id, str::to_string)
}

/// The request's id (present once the module has run).
pub fn of(req: &RequestHeader) -> &str {
    req.headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

#[derive(Default)]
pub struct RequestIdModule {
    id: Option<String>,
}

#[async_trait]
impl HttpModule for RequestIdModule {
    async fn request_header_filter(&mut self, req: &mut RequestHeader) -> Result<()> {
        let id = pick(req.headers.get(HEADER).and_then(|v| v.to_str().ok()));
        req.insert_header(HEADER, &id)?;
        self.id = Some(id);
        Ok(())
    }

    async fn response_header_filter(
        &mut self,
        resp: &mut ResponseHeader,
        _end_of_stream: bool,
    ) -> Result<()> {
        if let Some(id) = &self.id {
            resp.insert_header(HEADER, id)?;
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

pub struct RequestIdModuleBuilder;

impl HttpModuleBuilder for RequestIdModuleBuilder {
    fn init(&self) -> Module {
        Box::new(RequestIdModule::default())
    }
}

#[cfg(test)]
mod tests {
    use super::{acceptable, new_id};

    #[test]
    fn client_ids_are_kept_only_when_sane() {
        assert!(acceptable("abc-123_x.Y"));
        assert!(!acceptable(""));
        assert!(!acceptable("has space"));
        assert!(!acceptable("quote\"d"));
        assert!(!acceptable(&"x".repeat(129)));
    }

    #[test]
    fn new_ids_are_32_hex_digits_that_count_up() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(a[..16], b[..16], "one prefix per process");
        let count = |id: &str| u64::from_str_radix(&id[16..], 16).unwrap();
        assert!(count(&b) > count(&a));
    }
}
