//! Upstreams that answer garbage: a 10 MB header, an endless chunked body,
//! a body shorter than its `Content-Length`, resets mid-body, a redirect
//! loop, a gzip bomb in an npm document, index documents that are not
//! well-formed. Each ends in a clear error for the client, nothing is
//! committed (the next request reaches the upstream again), and
//! artifactd's memory stays bounded.

use crate::harness::{client, read_request_head, Artifactd};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that answers each path with a crafted response, and counts
/// the requests per path.
struct Hostile {
    addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Hostile {
    async fn start() -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, counted.clone()));
            }
        });
        Hostile { addr, hits }
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// 10 MiB of zeros, gzipped (about 10 KiB).
fn gzip_bomb() -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..10 {
        encoder.write_all(&zeros).unwrap();
    }
    encoder.finish().unwrap()
}

async fn answer(stream: TcpStream, hits: Arc<Mutex<HashMap<String, usize>>>) {
    let mut stream = BufReader::new(stream);
    while let Ok(Some(head)) = read_request_head(&mut stream).await {
        let path = head.target.clone();
        *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
        let stream = stream.get_mut();
        let plain = |body: &str, content_type: &str| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        };
        let response: Vec<u8> = match path.as_str() {
            "/huge-header.bin" => {
                let big = "a".repeat(10 << 20);
                format!("HTTP/1.1 200 OK\r\nX-Big: {big}\r\nContent-Length: 2\r\n\r\nok")
                    .into_bytes()
            }
            "/endless.bin" => {
                let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                if stream.write_all(head).await.is_err() {
                    return;
                }
                let chunk = format!("10000\r\n{}\r\n", "e".repeat(0x10000));
                // Bounded: 60 s or 4 GiB, whichever ends first.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                for _ in 0..65_536 {
                    let write = stream.write_all(chunk.as_bytes());
                    match tokio::time::timeout_at(deadline, write).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
                return;
            }
            "/short.bin" => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                    .await;
                let _ = stream.write_all(&[b's'; 50_000]).await;
                return;
            }
            "/reset.bin" => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                    .await;
                let _ = stream.write_all(&[b'r'; 300_000]).await;
                let _ = stream.flush().await;
                // SO_LINGER 0: the close is a reset.
                let _ = stream.set_zero_linger();
                return;
            }
            "/loop.bin" => {
                b"HTTP/1.1 302 Found\r\nLocation: /loop.bin\r\nContent-Length: 0\r\n\r\n".to_vec()
            }
            "/bomb" => {
                let bomb = gzip_bomb();
                let mut response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
                    bomb.len()
                )
                .into_bytes();
                response.extend_from_slice(&bomb);
                response
            }
            "/broken" => plain(
                r#"{"name": "broken", "versions": {"1.0.0": {"dist": "#,
                "application/json",
            ),
            "/pypi/broken/json" => plain(
                r#"{"info": {"name": "broken"}, "urls": ["#,
                "application/json",
            ),
            "/index.yaml" => plain(
                "apiVersion: v1\nentries:\n  a: [{version: 1.0.0, urls: [x]\n",
                "application/x-yaml",
            ),
            _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        };
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
}

fn remotes(hostile: &Hostile) -> String {
    let base = format!("http://{}", hostile.addr);
    format!(
        "remotes:
  gen:
    base_url: \"{base}\"
    type: remote
    package: generic
    timeouts: {{connect: 1, read: 2}}
  npm:
    base_url: \"{base}\"
    type: remote
    package: npm
  pypi:
    base_url: \"{base}\"
    type: remote
    package: pypi
  helm:
    base_url: \"{base}\"
    type: remote
    package: helm
"
    )
}

/// A GET through artifactd: the status (0 when none came) and whether the
/// body arrived whole.
async fn get(ad: &Artifactd, path: &str) -> (u16, Result<usize, String>) {
    let response = match client().get(ad.url(path)).send().await {
        Ok(response) => response,
        Err(e) => return (0, Err(e.to_string())),
    };
    let status = response.status().as_u16();
    (
        status,
        response
            .bytes()
            .await
            .map(|b| b.len())
            .map_err(|e| e.to_string()),
    )
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

#[tokio::test]
async fn garbage_from_upstreams_is_a_clear_error_and_nothing_is_committed() {
    let hostile = Hostile::start().await;
    let dir = tempfile::tempdir().unwrap();
    // No breaker: each case answers for itself, not for the ones before.
    let extra = "cache:\n  max_object_size: 8MiB\nupstream:\n  breaker_failures: 0\n";
    let ad = Artifactd::start(dir.path(), &remotes(&hostile), extra).await;
    let rss_before = rss(ad.pid());
    // (path asked of artifactd, path the upstream sees, what the client gets)
    let cases: [(&str, &str, &str); 9] = [
        (
            "/api/v1/remote/gen/huge-header.bin",
            "/huge-header.bin",
            "502",
        ),
        ("/api/v1/remote/gen/endless.bin", "/endless.bin", "cut"),
        ("/api/v1/remote/gen/short.bin", "/short.bin", "cut"),
        ("/api/v1/remote/gen/reset.bin", "/reset.bin", "cut"),
        ("/api/v1/remote/gen/loop.bin", "/loop.bin", "502"),
        ("/api/v1/remote/npm/bomb", "/bomb", "502"),
        ("/api/v1/remote/npm/broken", "/broken", "cut"),
        (
            "/api/v1/remote/pypi/pypi/broken/json",
            "/pypi/broken/json",
            "cut",
        ),
        ("/api/v1/remote/helm/index.yaml", "/index.yaml", "cut"),
    ];
    for (path, upstream_path, expected) in cases {
        for round in 1..=2 {
            let (status, body) = get(&ad, path).await;
            match expected {
                "502" => assert_eq!(status, 502, "{path}: {body:?}"),
                _ => assert!(
                    body.is_err() || status >= 500,
                    "{path}: {status} with a whole body of {body:?} bytes"
                ),
            }
            let asked = hostile.hits(upstream_path);
            assert!(
                asked >= round,
                "{path}: nothing kept, asked again ({asked})"
            );
        }
    }
    let invalid = crate::harness::metric_sum(&ad, "artifactd_invalid_documents_total", &[]).await;
    assert_eq!(
        invalid,
        2 * 4,
        "the bomb, the broken JSON (twice each form) and YAML"
    );
    let grown = rss(ad.pid()).saturating_sub(rss_before);
    assert!(grown < 200 << 20, "RSS grew {} MiB", grown >> 20);
    // Nothing half-written is left behind either.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = get(&ad, "/api/v1/remote/gen/absent.bin").await;
    assert_eq!(status, 404);
}
