//! Index documents rewritten once per upstream version, client base URL
//! and form: kept copies served on the fast path, byte for byte what a
//! rewrite per response sends, never a copy of an older version.

use crate::cache::source;
use crate::harness::{client, metric, remote_metric, Artifactd, Origin, OriginFile};

const DOC: &str = "/demo";

/// An npm package document whose one tarball lives on `origin`.
fn npm_document(origin: &Origin, version: &str) -> OriginFile {
    let base = origin.base_url();
    let body = format!(
        r#"{{"name":"demo","dist-tags":{{"latest":"{version}"}},"versions":{{"{version}":{{"name":"demo","version":"{version}","dist":{{"tarball":"{base}/demo/-/demo-{version}.tgz","shasum":"0000000000000000000000000000000000000000"}}}}}}}}"#
    );
    OriginFile::new(body).content_type("application/json")
}

fn npm_remote(origin: &Origin) -> String {
    format!(
        "remotes:\n  npm:\n    base_url: \"{}\"\n    type: remote\n    package: npm\n",
        origin.base_url()
    )
}

async fn counter(ad: &Artifactd, name: &str) -> u64 {
    remote_metric(ad, name, "npm").await
}

/// The document as a client reaching artifactd at `host` gets it: source,
/// headers worth comparing, body.
async fn fetch(
    ad: &Artifactd,
    host: &str,
    method: reqwest::Method,
) -> (String, Vec<(String, String)>, String) {
    let resp = client()
        .request(method, ad.artifact("npm", "demo"))
        .header("host", host)
        .header("if-none-match", "\"anything\"")
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "validators and ranges are ignored");
    let mut headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter(|(name, _)| {
            ![
                "age",
                "date",
                "x-request-id",
                "content-length",
                "transfer-encoding",
            ]
            .contains(&name.as_str())
        })
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_string()))
        .collect();
    headers.sort();
    let source = source(&resp);
    let length = resp.content_length();
    let body = resp.text().await.unwrap();
    if let Some(length) = length {
        assert_eq!(length as usize, body.len());
    }
    (source, headers, body)
}

#[tokio::test]
async fn a_document_is_rewritten_once_per_version_and_client_base() {
    let origin = Origin::start().await;
    origin.put(DOC, npm_document(&origin, "1.0.0"));
    let remotes = npm_remote(&origin);
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    // The same requests to a node that rewrites every response.
    let every_dir = tempfile::tempdir().unwrap();
    let every =
        Artifactd::start(every_dir.path(), &remotes, "cache:\n  rewritten_bytes: 0\n").await;

    let get = reqwest::Method::GET;
    let (first, _, rewritten) = fetch(&ad, "a.example:8080", get.clone()).await;
    assert_eq!(first, "remote");
    assert!(
        rewritten.contains("\"http://a.example:8080/api/v1/remote/npm/demo/-/demo-1.0.0.tgz\""),
        "{rewritten}"
    );
    // The first hit rewrites and keeps the copy; the next are the copy,
    // answered on the fast path.
    let (_, phases_headers, from_phases) = fetch(&ad, "a.example:8080", get.clone()).await;
    assert_eq!(from_phases, rewritten);
    assert_eq!(counter(&ad, "artifactd_fast_path_hits_total").await, 0);
    for _ in 0..3 {
        let (source, headers, body) = fetch(&ad, "a.example:8080", get.clone()).await;
        assert_eq!(
            (source.as_str(), &headers, &body),
            ("cache", &phases_headers, &rewritten)
        );
    }
    assert_eq!(counter(&ad, "artifactd_fast_path_hits_total").await, 3);
    let (_, head_headers, empty) = fetch(&ad, "a.example:8080", reqwest::Method::HEAD).await;
    assert!(empty.is_empty());
    assert_eq!(head_headers, phases_headers);
    assert_eq!(counter(&ad, "artifactd_fast_path_hits_total").await, 4);

    // Another base URL is another copy, with its own links.
    let (_, _, for_b) = fetch(&ad, "b.example", get.clone()).await;
    assert!(for_b.contains("\"http://b.example/api/v1/remote/npm/demo/-/demo-1.0.0.tgz\""));
    let (_, _, again_b) = fetch(&ad, "b.example", get.clone()).await;
    assert_eq!(again_b, for_b);
    assert_eq!(counter(&ad, "artifactd_fast_path_hits_total").await, 5);
    let kept = metric(&ad, "artifactd_rewritten_documents").await;
    assert_eq!(kept, 2);

    // A node rewriting every response sends the same bytes and headers.
    let (missed, _, body) = fetch(&every, "a.example:8080", get.clone()).await;
    assert_eq!((missed.as_str(), &body), ("remote", &rewritten));
    let (_, headers, body) = fetch(&every, "a.example:8080", get.clone()).await;
    assert_eq!((&headers, &body), (&phases_headers, &rewritten));
    let (_, _, body) = fetch(&every, "b.example", get.clone()).await;
    assert_eq!(body, for_b);
    assert_eq!(counter(&every, "artifactd_fast_path_hits_total").await, 0);
    assert_eq!(metric(&every, "artifactd_rewritten_documents").await, 0);

    // A new upstream version is rewritten anew, never answered with the
    // copy of the old one.
    origin.put(DOC, npm_document(&origin, "1.1.0"));
    let deleted = client()
        .delete(ad.url("/api/v1/cache/npm/demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    for _ in 0..4 {
        let (_, _, body) = fetch(&ad, "a.example:8080", get.clone()).await;
        assert!(
            body.contains("demo-1.1.0.tgz") && !body.contains("1.0.0"),
            "{body}"
        );
    }
    assert_eq!(counter(&ad, "artifactd_fast_path_hits_total").await, 7);
    assert_eq!(origin.hits(DOC), 3, "once per node, and the new version");
    let made = metric(&ad, "artifactd_rewritten_documents_made_total").await;
    assert_eq!(made, 3, "a.example, b.example, a.example for 1.1.0");
}

#[tokio::test]
async fn clients_asking_at_once_wait_for_one_rewrite() {
    let origin = Origin::start().await;
    origin.put(DOC, npm_document(&origin, "2.0.0"));
    let dir = tempfile::tempdir().unwrap();
    let ad = Artifactd::start(dir.path(), &npm_remote(&origin), "").await;
    let (first, _, expected) = fetch(&ad, "mirror", reqwest::Method::GET).await;
    assert_eq!(first, "remote");
    let clients = (0..16).map(|_| fetch(&ad, "mirror", reqwest::Method::GET));
    for (source, _, body) in futures::future::join_all(clients).await {
        assert_eq!((source.as_str(), &body), ("cache", &expected));
    }
    let made = metric(&ad, "artifactd_rewritten_documents_made_total").await;
    assert_eq!(made, 1);
    assert_eq!(origin.hits(DOC), 1);
}
