//! HTTP/1 request heads as the hit fast path reads them: parsed once, with
//! the few headers a cached answer depends on picked out, and a verdict on
//! whether the request is simple enough to answer without pingora.
//!
//! The fast path never guesses: anything unusual (a body, `Expect`,
//! `Upgrade`, an absolute or odd target, a header this parser does not
//! accept, more headers than it holds) makes [`Head::plain`] false, and the
//! request goes to pingora with its bytes, which parses it as if it had
//! read it itself and gives the answer it always gave.

/// Headers held while parsing; a request with more goes to pingora.
pub const MAX_HEADERS: usize = 48;

/// The outcome of parsing the bytes read so far.
#[derive(Debug)]
// Returned by value once per request: boxing the head would allocate on
// every hit the fast path answers.
#[allow(clippy::large_enum_variant)]
pub enum Parsed<'a> {
    /// A whole head of `len` bytes.
    Complete { head: Head<'a>, len: usize },
    /// More bytes are needed.
    Partial,
    /// Not a head this parser accepts (pingora decides what it is).
    Other,
}

/// A parsed request head.
#[derive(Debug, Default)]
pub struct Head<'a> {
    pub method: &'a str,
    /// The request target as sent: path and query.
    pub target: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub accept: Option<&'a str>,
    pub request_id: Option<&'a str>,
    /// For the access log only: the answer does not depend on it.
    pub user_agent: Option<&'a str>,
    /// For the audit trail only (which token the client bore).
    pub authorization: Option<&'a str>,
    /// `Host` and `X-Forwarded-Proto`: where a rewritten index document's
    /// links point.
    pub host: Option<&'a str>,
    pub forwarded_proto: Option<&'a str>,
    /// `If-None-Match`, `If-Modified-Since`, `Range` or `If-Range`: the
    /// answer depends on the stored header's validators or on ranges.
    pub conditional: bool,
    pub if_none_match: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
    pub range: Option<&'a str>,
    pub if_range: Option<&'a str>,
    /// `Connection: close` (1.1) or no `Connection: keep-alive` (1.0).
    close: bool,
    keep_alive_asked: bool,
    /// A body follows the head (`Content-Length` other than 0, or
    /// `Transfer-Encoding`): pingora reads it from the connection.
    body: bool,
    /// Something only pingora handles: `Expect`, `Upgrade`, a repeated
    /// header this parser reads.
    unusual: bool,
}

impl<'a> Head<'a> {
    /// Whether the connection stays open after the answer (RFC 9112 §9.3).
    pub fn keep_alive(&self) -> bool {
        match self.minor_version {
            1 => !self.close,
            _ => self.keep_alive_asked && !self.close,
        }
    }

    /// Whether this is a GET or HEAD the fast path may answer: no body, no
    /// protocol switch, an origin-form target of plain characters.
    pub fn plain(&self) -> bool {
        !self.unusual
            && !self.body
            && matches!(self.method, "GET" | "HEAD")
            && self.target.starts_with('/')
            && self.target.bytes().all(|b| PLAIN_TARGET[b as usize])
    }

    /// The target's path and query.
    pub fn path_and_query(&self) -> (&'a str, Option<&'a str>) {
        match self.target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (self.target, None),
        }
    }

    /// Whether the request ends with its head, so the bytes after it are
    /// the next request's.
    pub fn bodiless(&self) -> bool {
        !self.body
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// Bytes of an origin-form target that every URI parser reads alike
/// (RFC 3986 unreserved, sub-delims, `:@/?%`); anything else goes to
/// pingora, whose parser decides.
const PLAIN_TARGET: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"-._~!$&'()*+,;=:@/?%";
    let mut i = 0;
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

/// Parses `buf` as an HTTP/1 request head.
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // More headers than held: still a head whose end must be read
        // (within the header timeout and size) before pingora parses it.
        Err(httparse::Error::TooManyHeaders) if !has_end_of_head(buf) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Parsed::Other;
    };
    let mut head = Head {
        method,
        target,
        minor_version,
        ..Head::default()
    };
    for header in req.headers.iter() {
        let Some(which) = Known::of(header.name) else {
            continue;
        };
        let Ok(value) = std::str::from_utf8(header.value) else {
            return Parsed::Other;
        };
        read_header(&mut head, which, value.trim());
    }
    Parsed::Complete { head, len }
}

/// Whether `buf` holds the blank line that ends a head.
fn has_end_of_head(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

/// The headers the fast path reads; the others it passes by unread.
#[derive(Clone, Copy)]
enum Known {
    Accept,
    RequestId,
    UserAgent,
    Authorization,
    Host,
    ForwardedProto,
    IfNoneMatch,
    IfModifiedSince,
    Range,
    IfRange,
    Connection,
    ContentLength,
    TransferEncoding,
    /// `Expect` or `Upgrade`.
    Unusual,
}

impl Known {
    fn of(name: &str) -> Option<Known> {
        const NAMES: [(&str, Known); 15] = [
            ("accept", Known::Accept),
            ("x-request-id", Known::RequestId),
            ("user-agent", Known::UserAgent),
            ("authorization", Known::Authorization),
            ("host", Known::Host),
            ("x-forwarded-proto", Known::ForwardedProto),
            ("if-none-match", Known::IfNoneMatch),
            ("if-modified-since", Known::IfModifiedSince),
            ("range", Known::Range),
            ("if-range", Known::IfRange),
            ("connection", Known::Connection),
            ("content-length", Known::ContentLength),
            ("transfer-encoding", Known::TransferEncoding),
            ("expect", Known::Unusual),
            ("upgrade", Known::Unusual),
        ];
        NAMES
            .iter()
            .find(|(known, _)| known.len() == name.len() && known.eq_ignore_ascii_case(name))
            .map(|(_, which)| *which)
    }
}

fn read_header<'a>(head: &mut Head<'a>, which: Known, value: &'a str) {
    let set = |slot: &mut Option<&'a str>, unusual: &mut bool| {
        // A repeated header the answer depends on: let pingora judge it.
        *unusual |= slot.replace(value).is_some();
    };
    match which {
        Known::Accept => set(&mut head.accept, &mut head.unusual),
        Known::RequestId => set(&mut head.request_id, &mut head.unusual),
        Known::UserAgent => head.user_agent = Some(value),
        Known::Authorization => head.authorization = Some(value),
        Known::Host => set(&mut head.host, &mut head.unusual),
        Known::ForwardedProto => set(&mut head.forwarded_proto, &mut head.unusual),
        Known::IfNoneMatch => set(&mut head.if_none_match, &mut head.unusual),
        Known::IfModifiedSince => set(&mut head.if_modified_since, &mut head.unusual),
        Known::Range => set(&mut head.range, &mut head.unusual),
        Known::IfRange => set(&mut head.if_range, &mut head.unusual),
        Known::Connection => {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    head.close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    head.keep_alive_asked = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    head.unusual = true;
                }
            }
        }
        Known::ContentLength => head.body |= value != "0",
        Known::TransferEncoding => head.body = true,
        Known::Unusual => head.unusual = true,
    }
    head.conditional |= matches!(
        which,
        Known::IfNoneMatch | Known::IfModifiedSince | Known::Range | Known::IfRange
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head<'_> {
        match parse(text.as_bytes()) {
            Parsed::Complete { head, len } => {
                assert_eq!(len, text.len());
                head
            }
            other => panic!("not complete: {other:?}"),
        }
    }

    #[test]
    fn a_plain_get_is_plain_and_keeps_the_connection() {
        let h = head("GET /api/v1/remote/b/a.bin?x=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n");
        assert!(h.plain());
        assert!(h.keep_alive());
        assert!(!h.conditional);
        assert_eq!(h.path_and_query(), ("/api/v1/remote/b/a.bin", Some("x=1")));
        assert_eq!(h.accept, Some("*/*"));
        assert_eq!(h.host, Some("h"));
        assert_eq!(h.forwarded_proto, None);
        let h = head("GET / HTTP/1.1\r\nhost: a:1\r\nX-Forwarded-Proto: https\r\n\r\n");
        assert_eq!((h.host, h.forwarded_proto), (Some("a:1"), Some("https")));
        assert_eq!(h.user_agent, None);
    }

    #[test]
    fn the_user_agent_is_read_for_the_log_and_changes_nothing_else() {
        let h = head("GET /a HTTP/1.1\r\nUser-Agent: pip/24.0\r\nuser-agent: again\r\n\r\n");
        assert_eq!(h.user_agent, Some("again"));
        assert!(
            h.plain(),
            "a repeated User-Agent is no reason to leave the fast path"
        );
    }

    #[test]
    fn connection_semantics_follow_the_version() {
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
        assert!(!head("GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n").keep_alive());
    }

    #[test]
    fn anything_unusual_goes_to_pingora() {
        for text in [
            "POST /a HTTP/1.1\r\n\r\n",
            "GET /a HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            "GET /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /a HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            "GET http://host/a HTTP/1.1\r\n\r\n",
            "GET /a\"b HTTP/1.1\r\n\r\n",
            "GET /a HTTP/1.1\r\nAccept: a\r\nAccept: b\r\n\r\n",
            "GET /a HTTP/1.1\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            if let Parsed::Complete { head, .. } = parse(text.as_bytes()) {
                assert!(!head.plain(), "{text:?}");
            }
        }
        assert!(head("GET /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n").plain());
        assert!(head("POST /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n").bodiless());
        assert!(!head("PUT /a HTTP/1.1\r\nContent-Length: 3\r\n\r\n").bodiless());
        assert!(!head("PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").bodiless());
    }

    #[test]
    fn validators_and_ranges_mark_the_request_conditional() {
        for name in ["If-None-Match", "If-Modified-Since", "Range", "If-Range"] {
            let text = format!("GET /a HTTP/1.1\r\n{name}: x\r\n\r\n");
            assert!(head(&text).conditional, "{name}");
        }
    }

    #[test]
    fn partial_and_foreign_input_is_told_apart() {
        assert!(matches!(parse(b"GET /a HTTP/1.1\r\nHost"), Parsed::Partial));
        assert!(matches!(parse(b"GET"), Parsed::Partial));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let begun = format!("GET /a HTTP/1.1\r\n{many}");
        assert!(matches!(parse(begun.as_bytes()), Parsed::Partial));
        let ended = format!("{begun}\r\n");
        assert!(matches!(parse(ended.as_bytes()), Parsed::Other));
        assert!(matches!(
            parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Parsed::Other
        ));
        assert!(matches!(parse(b"\x16\x03\x01"), Parsed::Other));
    }

    #[test]
    fn a_pipelined_request_is_left_in_the_buffer() {
        let two = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        match parse(two) {
            Parsed::Complete { head, len } => {
                assert_eq!(head.target, "/a");
                assert_eq!(&two[len..], b"GET /b HTTP/1.1\r\n\r\n");
            }
            other => panic!("{other:?}"),
        }
    }
}
