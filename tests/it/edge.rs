//! Edge-node operations: TLS listeners and certificate rotation, graceful
//! stop and upgrade with transfers in flight, readiness for systemd, safe
//! defaults for public listeners, tokens from files, the shipped unit.

use crate::harness::artifactd::Options;
use crate::harness::tls::{served_common_name, TestCa};
use crate::harness::{
    client, generic_remote, pattern_bytes, sha256_hex, status, Artifactd, Origin, OriginFile,
};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

const BIG: usize = 200 << 20;

/// An origin with one 200 MiB artifact and one small one, cached through
/// `ad` before the test starts (so transfers come from artifactd alone).
async fn cached_big(ad: &Artifactd, origin: &Origin) -> String {
    let body = pattern_bytes(BIG, 11);
    let digest = sha256_hex(&body);
    origin.put("/big.bin", OriginFile::new(body));
    origin.put("/small.bin", OriginFile::new(pattern_bytes(1000, 12)));
    let http = client();
    for path in ["big.bin", "small.bin"] {
        let resp = http.get(ad.artifact("gen", path)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    digest
}

/// A rate-limited curl download of `url` into `out` (about 5 s for 200 MiB).
fn slow_download(url: &str, out: &Path, extra: &[&str]) -> tokio::process::Child {
    Command::new("curl")
        .args(["-sS", "--fail", "--limit-rate", "40M", "-o"])
        .arg(out)
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .spawn()
        .expect("curl")
}

async fn finished_intact(mut download: tokio::process::Child, out: &Path, digest: &str) {
    let status = tokio::time::timeout(Duration::from_secs(120), download.wait())
        .await
        .expect("download finished")
        .unwrap();
    assert!(status.success(), "download failed: {status}");
    let bytes = std::fs::read(out).unwrap();
    assert_eq!(bytes.len(), BIG);
    assert_eq!(sha256_hex(&bytes), digest, "the download is intact");
}

async fn curl(args: &[&str]) -> (bool, String) {
    crate::harness::run_client(Command::new("curl").args(args)).await
}

#[tokio::test]
async fn https_with_http2_and_http11_and_certificates_rotated_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"));
    let (first_cert, first_key) = ca.issue("first");
    let (second_cert, second_key) = ca.issue("second");
    let (cert, key) = (dir.path().join("live.pem"), dir.path().join("live.key"));
    std::fs::copy(&first_cert, &cert).unwrap();
    std::fs::copy(&first_key, &key).unwrap();
    let origin = Origin::start().await;
    let options = Options {
        tls: Some((cert.clone(), key.clone())),
        ..Options::default()
    };
    let ad = Artifactd::start_with(dir.path(), &generic_remote(&origin, ""), "", options).await;
    let digest = cached_big(&ad, &origin).await;
    let tls_port = ad.tls_addr.unwrap().port();
    let https = |path: &str| format!("https://localhost:{tls_port}/api/v1/remote/gen/{path}");
    let ca_file = ca.cert.to_string_lossy().to_string();
    let small = pattern_bytes(1000, 12);

    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = dir.path().join(format!("small-{version}"));
        let (ok, text) = curl(&[
            "-sS",
            "--fail",
            "--cacert",
            &ca_file,
            flag,
            "-w",
            "%{http_version}",
            "-o",
            &out.to_string_lossy(),
            &https("small.bin"),
        ])
        .await;
        assert!(ok, "{text}");
        assert_eq!(text.trim(), version, "negotiated HTTP version");
        assert_eq!(std::fs::read(&out).unwrap(), small);
    }
    let (ok, text) = curl(&["-sS", "--fail", &https("small.bin")]).await;
    assert!(!ok, "an unknown CA is refused: {text}");
    assert_eq!(served_common_name(tls_port), "first");

    let out = dir.path().join("big.out");
    let download = slow_download(&https("big.bin"), &out, &["--cacert", &ca_file, "--http2"]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Replaced as renewal tools do: new files renamed over the old ones.
    std::fs::copy(&second_cert, dir.path().join("next.pem")).unwrap();
    std::fs::copy(&second_key, dir.path().join("next.key")).unwrap();
    std::fs::rename(dir.path().join("next.pem"), &cert).unwrap();
    std::fs::rename(dir.path().join("next.key"), &key).unwrap();
    ad.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_common_name(tls_port) != "second" {
        assert!(
            Instant::now() < deadline,
            "new certificate not served:\n{}",
            ad.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ad.log_text().contains("reloaded TLS certificate"));
    finished_intact(download, &out, &digest).await;

    // A broken replacement keeps the working certificate.
    std::fs::write(&cert, "not a certificate").unwrap();
    ad.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(served_common_name(tls_port), "second");
    assert!(ad.log_text().contains("kept the previous certificate"));
}

#[tokio::test]
async fn graceful_upgrade_hands_over_without_refusing_or_cutting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let mut old = Artifactd::start(
        dir.path(),
        &generic_remote(&origin, ""),
        "process:\n  grace_period: 60s\n",
    )
    .await;
    let digest = cached_big(&old, &origin).await;
    let out = dir.path().join("big.out");
    let download = slow_download(&old.artifact("gen", "big.bin"), &out, &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A bounded loop of fresh connections for the whole hand-over.
    let url = old.artifact("gen", "small.bin");
    let loop_task = tokio::spawn(async move {
        let fresh = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let (mut ok, mut failed) = (0u32, Vec::new());
        let until = Instant::now() + Duration::from_secs(14);
        while Instant::now() < until && ok + (failed.len() as u32) < 3000 {
            let outcome = match fresh.get(&url).send().await {
                Ok(r) if r.status() == 200 => match r.bytes().await {
                    Ok(b) if b.len() == 1000 => Ok(()),
                    Ok(b) => Err(format!("{} bytes", b.len())),
                    Err(e) => Err(e.to_string()),
                },
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(()) => ok += 1,
                Err(e) => failed.push(e),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (ok, failed)
    });
    let new = old.upgrade().await;
    assert_ne!(new.pid(), old.pid());
    let (ok, failed) = loop_task.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "the loop ran: {ok}");
    finished_intact(download, &out, &digest).await;
    let exited = old.exited_within(Duration::from_secs(20)).await;
    assert!(
        exited.is_some_and(|s| s.success()),
        "old process exits after its transfer: {exited:?}\n{}",
        old.log_text()
    );
    // Only the new process is left, and it serves.
    let resp = client()
        .get(new.artifact("gen", "small.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(old
        .log_text()
        .contains("handing the listeners to a new process"));
}

#[tokio::test]
async fn sigterm_lets_transfers_finish_and_tells_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let origin = Origin::start().await;
    let options = Options {
        env: vec![("NOTIFY_SOCKET".into(), notify_path.to_string_lossy().into())],
        ..Options::default()
    };
    let mut ad = Artifactd::start_with(
        dir.path(),
        &generic_remote(&origin, ""),
        "process:\n  grace_period: 1m\n",
        options,
    )
    .await;
    let mut message = [0u8; 512];
    let n = notify.recv(&mut message).expect("a readiness notice");
    let text = String::from_utf8_lossy(&message[..n]).to_string();
    assert!(text.contains("READY=1"), "{text}");
    // Ready means accepting: the notice came after the listener worked.
    assert!(std::net::TcpStream::connect(ad.addr).is_ok());

    let digest = cached_big(&ad, &origin).await;
    let out = dir.path().join("big.out");
    let started = Instant::now();
    let download = slow_download(&ad.artifact("gen", "big.bin"), &out, &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    ad.signal(libc::SIGTERM);
    let n = notify.recv(&mut message).expect("a stopping notice");
    assert!(String::from_utf8_lossy(&message[..n]).contains("STOPPING=1"));
    finished_intact(download, &out, &digest).await;
    let exited = ad.exited_within(Duration::from_secs(15)).await;
    assert!(
        exited.is_some_and(|s| s.success()),
        "{exited:?}\n{}",
        ad.log_text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "exited when idle, not after the whole 60 s grace period"
    );
    assert!(
        std::net::TcpStream::connect(ad.addr).is_err(),
        "stopped listening"
    );
}

fn check_config(dir: &Path, config: &str, env: &[(&str, &str)]) -> (bool, String) {
    std::fs::write(dir.join("artifactd.yaml"), config).unwrap();
    if !dir.join("remotes.yaml").exists() {
        std::fs::write(
            dir.join("remotes.yaml"),
            "remotes:\n  files:\n    type: local\n    package: generic\n",
        )
        .unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_artifactd"))
        .arg("--config")
        .arg(dir.join("artifactd.yaml"))
        .args(["serve", "-t"])
        .env_remove("ARTIFACTD_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn public_listeners_need_tokens_or_an_explicit_opt_out() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (ok, text) = check_config(dir, "listen: \"0.0.0.0:8080\"\n", &[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("tokens.admin") && text.contains("allow_anonymous_admin"),
        "{text}"
    );
    assert!(text.contains("artifactd.yaml"), "names the file: {text}");

    std::fs::write(dir.join("admin.token"), "a-secret-admin-token\n").unwrap();
    let with_admin = "listen: \"0.0.0.0:8080\"\ntokens:\n  admin_file: admin.token\n";
    let (ok, text) = check_config(dir, with_admin, &[]);
    assert!(
        !ok,
        "the local repository still takes anonymous uploads: {text}"
    );
    assert!(text.contains("tokens.write"), "{text}");
    let (ok, text) = check_config(dir, with_admin, &[("ARTIFACTD_WRITE_TOKEN", "w")]);
    assert!(ok, "{text}");
    assert!(!text.contains("a-secret-admin-token"), "{text}");

    let (ok, text) = check_config(
        dir,
        "listen: \"0.0.0.0:8080\"\nallow_anonymous_admin: true\n",
        &[],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("allow_anonymous_admin: true"),
        "warns: {text}"
    );
    let (ok, text) = check_config(dir, "listen: \"127.0.0.1:8080\"\n", &[]);
    assert!(ok, "loopback is safe: {text}");
}

#[test]
fn serve_test_checks_certificates_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"));
    let (cert, key) = ca.issue("one");
    let (_, other_key) = ca.issue("two");
    let listen = |cert: &Path, key: &Path| {
        format!(
            "listen:\n  - address: \"127.0.0.1:8443\"\n    tls: {{cert: \"{}\", key: \"{}\"}}\n",
            cert.display(),
            key.display()
        )
    };
    let (ok, text) = check_config(dir.path(), &listen(&cert, &key), &[]);
    assert!(ok, "{text}");
    assert!(text.contains("https://127.0.0.1:8443"), "{text}");
    let (ok, text) = check_config(dir.path(), &listen(&cert, &other_key), &[]);
    assert!(
        !ok && text.contains("is not the key of the certificate"),
        "{text}"
    );
    let missing = dir.path().join("missing.pem");
    let (ok, text) = check_config(dir.path(), &listen(&missing, &key), &[]);
    assert!(!ok && text.contains("missing.pem"), "{text}");
}

#[tokio::test]
async fn tokens_from_files_guard_admin_and_metrics_and_never_leak() {
    let dir = tempfile::tempdir().unwrap();
    let admin = "adm-7f3e9c-secret";
    let metrics = "met-2b8d41-secret";
    std::fs::write(dir.path().join("admin.token"), format!("{admin}\n")).unwrap();
    let origin = Origin::start().await;
    origin.put("/a.bin", OriginFile::new(pattern_bytes(100, 1)));
    let options = Options {
        env: vec![("ARTIFACTD_METRICS_TOKEN".into(), metrics.into())],
        ..Options::default()
    };
    let ad = Artifactd::start_with(
        dir.path(),
        &generic_remote(&origin, ""),
        "tokens:\n  admin_file: admin.token\n",
        options,
    )
    .await;
    let http = client();
    assert_eq!(status(http.get(ad.artifact("gen", "a.bin"))).await, 200);
    let flush = ad.url("/cache/flush?remote=gen");
    let list = ad.url("/artifacts/gen");
    for (request, token, expected) in [
        (http.put(&flush), None, 401),
        (http.put(&flush), Some("wrong"), 401),
        (http.put(&flush), Some(admin), 200),
        (http.get(&list), None, 401),
        (http.get(&list), Some(admin), 200),
    ] {
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        assert_eq!(status(request).await, expected, "{token:?}");
    }
    let metrics_url = ad.url("/metrics");
    assert_eq!(http.get(&metrics_url).send().await.unwrap().status(), 401);
    for token in [metrics, admin] {
        let resp = http
            .get(&metrics_url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.text().await.unwrap().contains("artifactd_"));
    }
    let config = crate::harness::text(http.get(ad.url("/config")).bearer_auth(admin)).await;
    for secret in [admin, metrics] {
        assert!(!config.contains(secret), "/config shows a token");
        assert!(!ad.log_text().contains(secret), "the log shows a token");
    }
}

/// The shipped unit, pointed at the binary under test so `verify` can
/// check its commands.
fn unit_under_test(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/artifactd.service"
    ))
    .unwrap();
    let path = dir.join("artifactd.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/artifactd", env!("CARGO_BIN_EXE_artifactd")),
    )
    .unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_and_scores_below_two() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (make test-deps installs systemd)");
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );

    let security = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let score: f64 = report
        .lines()
        .find_map(|l| l.split("artifactd.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{report}"));
    println!("systemd-analyze security exposure: {score}");
    assert!(score < 2.0, "exposure {score}:\n{report}");
    for hardening in [
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "Type=notify",
        "TimeoutStopSec=",
    ] {
        assert!(
            std::fs::read_to_string(&unit).unwrap().contains(hardening),
            "{hardening}"
        );
    }
}

#[test]
fn the_shipped_system_config_refuses_to_start_without_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/artifactd.yaml"
    ))
    .unwrap();
    let config = shipped
        .replace("/etc/artifactd/remotes.yaml", "remotes.yaml")
        .replace("/var/lib/artifactd", &dir.path().to_string_lossy())
        .replace("/var/cache/artifactd", &dir.path().to_string_lossy())
        .replace("/run/artifactd", &dir.path().to_string_lossy());
    let (ok, text) = check_config(dir.path(), &config, &[]);
    assert!(!ok && text.contains("tokens.admin"), "{text}");
    std::fs::write(dir.path().join("a"), "admin\n").unwrap();
    std::fs::write(dir.path().join("w"), "write\n").unwrap();
    let a = dir.path().join("a").to_string_lossy().to_string();
    let w = dir.path().join("w").to_string_lossy().to_string();
    let env = [
        ("ARTIFACTD_ADMIN_TOKEN_FILE", a.as_str()),
        ("ARTIFACTD_WRITE_TOKEN_FILE", w.as_str()),
    ];
    let (ok, text) = check_config(dir.path(), &config, &env);
    assert!(ok, "{text}");
}

#[tokio::test]
async fn upstream_tls_verifies_against_the_remote_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"));
    let (cert, key) = ca.issue("upstream");
    let origin = Origin::start().await;
    let body = pattern_bytes(5000, 3);
    origin.put("/lab.bin", OriginFile::new(body.clone()));
    let options = Options {
        tls: Some((cert, key)),
        ..Options::default()
    };
    // The "lab registry": an artifactd serving HTTPS with a private CA.
    let lab = Artifactd::start_with(
        &dir.path().join("lab"),
        &generic_remote(&origin, ""),
        "",
        options,
    )
    .await;
    let base = format!(
        "https://localhost:{}/api/v1/remote/gen/",
        lab.tls_addr.unwrap().port()
    );
    let remote = |name: &str, extra: &str| {
        format!(
            "  {name}:\n    base_url: \"{base}\"\n    type: remote\n    package: generic\n{extra}"
        )
    };
    let remotes = format!(
        "remotes:\n{}{}{}",
        remote(
            "trusted",
            &format!("    ca_file: \"{}\"\n", ca.cert.display())
        ),
        remote("insecure", "    tls_insecure: true\n"),
        remote("untrusted", ""),
    );
    let edge = Artifactd::start(&dir.path().join("edge"), &remotes, "").await;
    let http = client();
    for name in ["trusted", "insecure"] {
        let resp = http
            .get(edge.artifact(name, "lab.bin"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        assert_eq!(resp.bytes().await.unwrap(), body, "{name}");
    }
    let resp = http
        .get(edge.artifact("untrusted", "lab.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        502,
        "the system roots do not know the lab CA"
    );
    assert!(
        edge.log_text().contains("tls_insecure"),
        "tls_insecure is warned about"
    );
}
