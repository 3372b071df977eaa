//! Abusive clients against the `limits` of a client connection: slow
//! heads, oversized heads, idle connections by the hundred. Each is
//! refused with its status while other clients keep being served, and
//! nothing of a refused request reaches the upstream.

use crate::harness::{client, generic_remote, metric_sum, pattern_bytes, Artifactd, Origin};
use crate::harness::{raw_request, OriginFile};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An origin with one file, and artifactd before it with `limits`.
async fn start(limits: &str) -> (Origin, Artifactd, Vec<u8>, tempfile::TempDir) {
    let origin = Origin::start().await;
    let body = pattern_bytes(100_000, 28);
    origin.put("/pkg/file.bin", OriginFile::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &generic_remote(&origin, ""), limits).await;
    (origin, ad, body, dir)
}

/// A plain client's GET of the file, checked byte for byte.
async fn fetch_whole(ad: &Artifactd, body: &[u8]) {
    let response = client()
        .get(ad.url("/api/v1/remote/gen/pkg/file.bin"))
        .send()
        .await
        .expect("a plain client is served");
    assert_eq!(response.status(), 200);
    assert_eq!(&response.bytes().await.unwrap()[..], body);
}

/// Reads until the server closes; what it sent and when it closed.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> (String, Option<Instant>) {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut got)).await;
    let closed = read.is_ok().then(Instant::now);
    (String::from_utf8_lossy(&got).to_string(), closed)
}

#[tokio::test]
async fn a_head_sent_slowly_gets_408_at_the_header_timeout_while_others_are_served() {
    let (origin, ad, body, _dir) = start("limits:\n  header_timeout: 1s\n").await;
    let mut slow = TcpStream::connect(ad.addr).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /api/v1/remote/gen/pkg/file.bin HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A header line every 200 ms: each read is quick, the head never ends.
    let (mut reader, mut writer) = slow.into_split();
    let drip = tokio::spawn(async move {
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let line = format!("X-Drip-{i}: still coming\r\n");
            if writer.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    fetch_whole(&ad, &body).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut got)).await;
    let took = started.elapsed();
    drip.abort();
    let text = String::from_utf8_lossy(&got);
    assert!(read.is_ok(), "the connection stays open after {took:?}");
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(2500)).contains(&took),
        "408 after {took:?}, for a 1 s header timeout"
    );
    assert_eq!(
        origin.hits("/pkg/file.bin"),
        1,
        "only the plain client's fetch"
    );
    let refused = metric_sum(
        &ad,
        "artifactd_client_refusals_total",
        &[("reason", "header_timeout")],
    );
    assert_eq!(refused.await, 1);
}

#[tokio::test]
async fn a_quiet_connection_closes_at_the_idle_timeout() {
    let (_origin, ad, _body, _dir) = start("limits:\n  idle_timeout: 1s\n").await;
    let mut stream = TcpStream::connect(ad.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let answered = Instant::now();
    let (_, closed) = until_closed(&mut stream, Duration::from_secs(5)).await;
    let quiet = closed.expect("closed by the server") - answered;
    assert!(
        (Duration::from_millis(800)..Duration::from_millis(2500)).contains(&quiet),
        "closed after {quiet:?} quiet, for a 1 s idle timeout"
    );
}

#[tokio::test]
async fn oversized_heads_get_431_and_long_targets_414_without_reaching_the_upstream() {
    let (origin, ad, body, _dir) = start("limits:\n  max_header_size: 4KiB\n").await;
    let big = "x".repeat(6000);
    let cases = [
        (
            format!(
                "GET /api/v1/remote/gen/pkg/file.bin HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"
            ),
            431,
        ),
        (
            format!("GET /api/v1/remote/gen/pkg/{big} HTTP/1.1\r\nHost: x\r\n\r\n"),
            414,
        ),
        // Many small headers make a large head too.
        (
            format!(
                "GET /api/v1/remote/gen/pkg/file.bin HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..600)
                    .map(|i| format!("X-{i}: v\r\n"))
                    .collect::<String>()
            ),
            431,
        ),
    ];
    for (request, expected) in cases {
        let (status, text) = raw_request(ad.addr, request.as_bytes()).await;
        assert_eq!(status, expected, "{text}");
    }
    assert_eq!(origin.total_hits(), 0);
    // A head just within the limit is served.
    let within = "y".repeat(3000);
    let request = format!(
        "GET /api/v1/remote/gen/pkg/file.bin HTTP/1.1\r\nHost: x\r\nX-Fits: {within}\r\nConnection: close\r\n\r\n"
    );
    let (status, text) = raw_request(ad.addr, request.as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    fetch_whole(&ad, &body).await;
    assert_eq!(origin.hits("/pkg/file.bin"), 1);
}

/// Connections that each sent nothing yet.
async fn open_idle(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut idle = Vec::with_capacity(count);
    for _ in 0..count {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    idle
}

#[tokio::test]
async fn idle_connections_past_the_limit_make_room_and_busy_ones_get_503() {
    let limits = "limits:\n  max_connections: 40\n  header_timeout: 20s\n";
    let (_origin, ad, body, _dir) = start(limits).await;
    let mut idle = open_idle(ad.addr, 400).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    fetch_whole(&ad, &body).await;
    // The server closed most idle connections to make room: nothing sent
    // on them, they end without an answer.
    let mut closed = 0;
    for stream in &mut idle {
        let (text, at) = until_closed(stream, Duration::from_millis(20)).await;
        if at.is_some() {
            assert!(text.is_empty(), "an idle connection closed with {text:?}");
            closed += 1;
        }
    }
    assert!(
        closed >= 400 - 40,
        "{closed} of 400 idle connections closed"
    );
    let open = metric_sum(&ad, "artifactd_client_connections", &[]).await;
    assert!(open <= 40 + 16, "{open} connections open for a limit of 40");
    drop(idle);

    // Connections mid-head are busy: with every slot taken by them, a
    // newcomer is refused, and served again once they are gone.
    // (Each sends its first bytes at once: a connection that has sent
    // nothing yet is idle, and would be closed for the next.)
    let mut busy = Vec::new();
    for _ in 0..60 {
        let mut stream = TcpStream::connect(ad.addr).await.unwrap();
        let _ = stream.write_all(b"GET /api/v1/remote/gen/pkg/").await;
        busy.push(stream);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, text) = raw_request(ad.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("too many connections"), "{text}");
    drop(busy);
    tokio::time::sleep(Duration::from_millis(300)).await;
    fetch_whole(&ad, &body).await;
    let refused = metric_sum(
        &ad,
        "artifactd_client_refusals_total",
        &[("reason", "connections")],
    );
    assert!(refused.await >= 1);
}
