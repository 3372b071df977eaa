//! Paths are validated before anything touches storage or an upstream.

use crate::cache::walk;
use crate::harness::{generic_remote, raw_request, Artifactd, Origin, OriginFile};

#[tokio::test]
async fn traversal_and_encoded_separators_get_400_and_touch_nothing() {
    let origin = Origin::start().await;
    origin.put("/etc/passwd", OriginFile::new("root:x:0:0"));
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    let remotes = format!("{}  files:\n    type: local\n", generic_remote(&origin, ""));
    let ad = Artifactd::start(&dir, &remotes, "limits:\n  max_path_bytes: 256\n").await;
    let long = "a/".repeat(200);
    let attempts = [
        "gen/../../etc/passwd",
        "gen/a/../../../etc/passwd",
        "gen/%2e%2e/%2e%2e/etc/passwd",
        "gen/a/%2E%2e/b",
        "gen/a%2Fb",
        "gen/a%2f..%2f..%2fetc%2fpasswd",
        "gen/a%5C..%5Cb",
        "gen/a%00b",
        "gen//etc/passwd",
        "gen/a//b",
        long.as_str(),
        "files/../../escape.txt",
        "files/%2e%2e/escape.txt",
        "files/a%2F..%2F..%2Fescape.txt",
    ];
    for attempt in attempts {
        let path = if attempt.starts_with("a/") {
            format!("gen/{attempt}")
        } else {
            attempt.to_string()
        };
        for method in ["GET", "PUT"] {
            let request = format!(
                "{method} /api/v1/remote/{path} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nevil"
            );
            let (status, text) = raw_request(ad.addr, request.as_bytes()).await;
            assert!(status == 400, "{method} {path}: {status}\n{text}");
        }
    }
    assert_eq!(origin.total_hits(), 0, "no upstream request for a bad path");
    // Nothing was written outside the node's own directory.
    let outside: Vec<_> = walk(root.path())
        .into_iter()
        .filter(|p| !p.starts_with(&dir))
        .collect();
    assert!(outside.is_empty(), "{outside:?}");
    let escaped: Vec<_> = walk(&dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("escape"))
        .collect();
    assert!(escaped.is_empty(), "{escaped:?}");
}

/// artifactd is not an open proxy: an absolute-URI request (a client
/// using it as its HTTP proxy) for a host no remote mirrors is refused,
/// even when a remote's upstream is that host.
#[tokio::test]
async fn absolute_uri_requests_for_unmirrored_hosts_get_403_and_reach_nothing() {
    let origin = Origin::start().await;
    origin.put("/f.txt", OriginFile::new("upstream bytes"));
    let root = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(root.path(), &generic_remote(&origin, ""), "").await;
    let origin_host = origin.base_url().replace("http://", "");
    for host in [origin_host.as_str(), "example.com", "127.0.0.1:1"] {
        let request = format!(
            "GET http://{host}/f.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        );
        let (status, text) = raw_request(ad.addr, request.as_bytes()).await;
        assert_eq!(status, 403, "{host}: {text}");
        assert!(text.contains("not an open proxy"), "{host}: {text}");
    }
    assert_eq!(origin.total_hits(), 0);
    // The same path in origin form is the remote's, as ever.
    let request = "GET /api/v1/remote/gen/f.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (status, text) = raw_request(ad.addr, request.as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("upstream bytes"), "{text}");
}
