//! Local repositories: upload, read, delete, limits, tokens, atomicity.

use crate::cache::walk;
use crate::harness::{client, pattern_bytes, raw_request, Artifactd};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOCAL: &str = "remotes:\n  files:\n    type: local\n    package: generic\n";
const TOKEN: &str = "tokens:\n  write: \"w-token\"\nlimits:\n  max_upload_bytes: 100000\n";

#[tokio::test]
async fn upload_read_delete_round_trip_with_token() {
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), LOCAL, TOKEN).await;
    let http = client();
    let url = ad.artifact("files", "tools/v1/tool.bin");
    let body = pattern_bytes(70_000, 7);

    let anonymous = http.put(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = http
        .put(&url)
        .bearer_auth("nope")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(crate::harness::status(http.get(&url)).await, 404);

    let put = http
        .put(&url)
        .bearer_auth("w-token")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let receipt: serde_json::Value = put.json().await.unwrap();
    assert_eq!(receipt["size"], 70_000);
    assert_eq!(receipt["sha256"], crate::harness::sha256_hex(&body));

    let get = http.get(&url).send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.bytes().await.unwrap(), body);
    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], "70000");
    let range = http
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    assert_eq!(range.bytes().await.unwrap(), body[10..20]);
    // RFC 9110: a last position past the end is clamped to the end, even
    // the largest one a client can write.
    let whole = http
        .get(&url)
        .header("range", "bytes=0-18446744073709551615")
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), 206);
    assert_eq!(whole.headers()["content-range"], "bytes 0-69999/70000");
    assert_eq!(whole.bytes().await.unwrap(), body);

    assert_eq!(crate::harness::status(http.delete(&url)).await, 401);
    assert_eq!(
        crate::harness::status(http.delete(&url).bearer_auth("w-token")).await,
        204
    );
    assert_eq!(crate::harness::status(http.get(&url)).await, 404);
    assert_eq!(
        crate::harness::status(http.delete(&url).bearer_auth("w-token")).await,
        404
    );
}

#[tokio::test]
async fn uploads_over_the_limit_get_413_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), LOCAL, TOKEN).await;
    let http = client();
    let url = ad.artifact("files", "big.bin");
    // Raw requests: an HTTP client sending a body the server refuses may
    // see its write fail before it reads the answer.
    let head = |framing: &str| {
        format!(
            "PUT /api/v1/remote/files/big.bin HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer w-token\r\nConnection: close\r\n{framing}\r\n\r\n"
        )
    };
    // A declared length over the limit is refused before any body byte.
    let (status, response) = raw_request(ad.addr, head("Content-Length: 100001").as_bytes()).await;
    assert_eq!(status, 413, "{response}");
    // A chunked body has no declared length: the limit is enforced while
    // streaming. Every byte sent is one the server reads, so its answer is
    // not lost to a reset.
    let mut chunked = head("Transfer-Encoding: chunked").into_bytes();
    for _ in 0..10 {
        chunked.extend_from_slice(format!("{:x}\r\n", 10_000).as_bytes());
        chunked.extend_from_slice(&[2u8; 10_000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"1\r\n\x02");
    let (status, response) = raw_request(ad.addr, &chunked).await;
    assert_eq!(status, 413, "{response}");
    assert_eq!(crate::harness::status(http.get(&url)).await, 404);
    let exact = http
        .put(&url)
        .bearer_auth("w-token")
        .body(vec![3u8; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(exact.status(), 201);
}

#[tokio::test]
async fn interrupted_upload_leaves_no_object() {
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), LOCAL, TOKEN).await;
    let mut stream = tokio::net::TcpStream::connect(ad.addr).await.unwrap();
    let head = "PUT /api/v1/remote/files/cut.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer w-token\r\nContent-Length: 90000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![9u8; 30_000]).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let resp = client()
        .get(ad.artifact("files", "cut.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let files = walk(&dir.path().join("store"));
    assert!(
        files
            .iter()
            .all(|p| !p.to_string_lossy().contains("cut.bin")),
        "partial upload left behind: {files:?}"
    );
}

#[tokio::test]
async fn expect_100_continue_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), LOCAL, TOKEN).await;
    let mut stream = tokio::net::TcpStream::connect(ad.addr).await.unwrap();
    let head = "PUT /api/v1/remote/files/c.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer w-token\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let interim = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    stream.write_all(b"hello").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let final_response = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        final_response.starts_with("HTTP/1.1 201"),
        "{final_response}"
    );
    let get = client()
        .get(ad.artifact("files", "c.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.text().await.unwrap(), "hello");

    // Over the limit with Expect: refused before the body is sent.
    let big = "PUT /api/v1/remote/files/d.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer w-token\r\nContent-Length: 999999\r\nExpect: 100-continue\r\n\r\n";
    let (status, _) = raw_request(ad.addr, big.as_bytes()).await;
    assert_eq!(status, 413);
}

/// An upload labelled only `application/octet-stream` is served with the
/// media type its name says and a `Content-Disposition` naming it.
#[tokio::test]
async fn an_upload_is_labelled_by_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), LOCAL, TOKEN).await;
    let http = client();
    let url = ad.artifact("files", "tools/v1/tool-1.0.tar.gz");
    let body = pattern_bytes(5_000, 4);
    let put = http
        .put(&url)
        .bearer_auth("w-token")
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let get = http.get(&url).send().await.unwrap();
    assert_eq!(get.headers()["content-type"], "application/gzip");
    assert_eq!(
        get.headers()["content-disposition"],
        "attachment; filename=\"tool-1.0.tar.gz\""
    );
    assert_eq!(get.bytes().await.unwrap(), body);
}
