//! A small JWT token issuer for the registry's token auth: answers
//! `GET /token?service=…&scope=…` with an RS256 token the registry trusts
//! (its certificate travels in the `x5c` header and is the registry's
//! `rootcertbundle`), and records every request, so tests can count token
//! requests per scope and see which credentials came with them.
//!
//! Keys come from the `openssl` command line, which also signs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const SERVICE: &str = "artifactd-test-registry";
const ISSUER: &str = "artifactd-test-issuer";

/// One token request as the issuer saw it.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub scopes: Vec<String>,
    pub authorization: Option<String>,
}

struct Keys {
    key: PathBuf,
    cert: PathBuf,
    /// The certificate, DER, base64 (standard alphabet, as `x5c` wants).
    cert_der_b64: String,
}

pub struct TokenIssuer {
    pub addr: SocketAddr,
    keys: Arc<Keys>,
    seen: Arc<Mutex<Vec<TokenRequest>>>,
    task: JoinHandle<()>,
}

impl TokenIssuer {
    /// Starts an issuer with a fresh key pair under `dir`; tokens live
    /// `expires_in` seconds.
    pub async fn start(dir: &Path, expires_in: u64) -> TokenIssuer {
        use base64::Engine;
        std::fs::create_dir_all(dir).expect("issuer dir");
        let (key, cert) = (dir.join("issuer.key"), dir.join("issuer.pem"));
        super::registry::run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=artifactd-test-issuer",
                "-keyout",
                &key.display().to_string(),
                "-out",
                &cert.display().to_string(),
            ],
        )
        .await;
        let der = tokio::process::Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .await
            .expect("openssl x509");
        let keys = Arc::new(Keys {
            key,
            cert,
            cert_der_b64: base64::engine::general_purpose::STANDARD.encode(der.stdout),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind issuer");
        let addr = listener.local_addr().expect("issuer addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (task_keys, task_seen) = (keys.clone(), seen.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (keys, seen) = (task_keys.clone(), task_seen.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, keys, seen, expires_in).await;
                });
            }
        });
        TokenIssuer {
            addr,
            keys,
            seen,
            task,
        }
    }

    /// The registry's `auth:` section trusting this issuer.
    pub fn registry_config(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: http://{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.addr,
            self.keys.cert.display()
        )
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.seen.lock().unwrap().clone()
    }

    /// Forgets the requests seen so far (those of pushing the test images).
    pub fn reset(&self) {
        self.seen.lock().unwrap().clear();
    }

    /// Token requests that asked for `scope`.
    pub fn requests_for(&self, scope: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.scopes.iter().any(|s| s == scope))
            .count()
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    stream: TcpStream,
    keys: Arc<Keys>,
    seen: Arc<Mutex<Vec<TokenRequest>>>,
    expires_in: u64,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let Some(head) = super::read_request_head(&mut reader).await? else {
            return Ok(());
        };
        let (target, headers) = (head.target, head.headers);
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
        let scopes: Vec<String> = filters::route::query_params(Some(query), "scope").collect();
        seen.lock().unwrap().push(TokenRequest {
            scopes: scopes.clone(),
            authorization: headers.get("authorization").cloned(),
        });
        let token = sign(&keys, &scopes, expires_in).await;
        let body =
            serde_json::json!({"token": token, "access_token": token, "expires_in": expires_in})
                .to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        write.write_all(head.as_bytes()).await?;
        write.write_all(body.as_bytes()).await?;
    }
}

/// A JWT granting every action asked for in `scopes`.
async fn sign(keys: &Keys, scopes: &[String], expires_in: u64) -> String {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [keys.cert_der_b64]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "artifactd", "aud": SERVICE,
        "exp": now + expires_in, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", uuid::Uuid::new_v4()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut child = tokio::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&keys.key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl dgst");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(signing_input.as_bytes())
        .await
        .expect("sign input");
    drop(stdin);
    let signature = child.wait_with_output().await.expect("signature").stdout;
    format!("{signing_input}.{}", b64(&signature))
}
