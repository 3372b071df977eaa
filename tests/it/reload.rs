//! SIGHUP re-reads `remotes.yaml` and the server file: remotes added,
//! removed and changed take effect without a restart and without a failed
//! request; an invalid edit is refused with its location and the running
//! configuration keeps serving.

use crate::harness::{
    client, get_bytes, log_says, metric, pattern_bytes, Artifactd, ClientLoop, Origin, OriginFile,
};

fn remote(name: &str, origin: &Origin, include: &str) -> String {
    format!(
        "  {name}:\n    base_url: \"{}\"\n    type: remote\n    package: generic\n    include_patterns: ['{include}']\n",
        origin.base_url()
    )
}

/// GETs of `url` in a loop (at most `max`), each a failure unless it
/// answers `expected`.
fn hits_of(url: String, expected: Vec<u8>, max: usize) -> ClientLoop {
    ClientLoop::start(max, move |_| {
        let (url, expected) = (url.clone(), expected.clone());
        async move {
            match client().get(&url).send().await {
                Ok(resp) if resp.status() == 200 => match resp.bytes().await {
                    Ok(body) if body == expected => (true, String::new()),
                    Ok(body) => (false, format!("{} bytes differ", body.len())),
                    Err(e) => (false, e.to_string()),
                },
                Ok(resp) => (false, format!("status {}", resp.status())),
                Err(e) => (false, e.to_string()),
            }
        }
    })
}

async fn status_of(url: String) -> u16 {
    client().get(url).send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remotes_edited_and_reloaded_on_sighup_serve_without_a_failed_request() {
    let origin = Origin::start().await;
    let tarball = pattern_bytes(40_000, 11);
    origin.put("/r/a.tgz", OriginFile::new(tarball.clone()));
    origin.put("/r/b.json", OriginFile::new("{\"b\":1}"));
    let dir = tempfile::tempdir().unwrap();
    let before = format!(
        "remotes:\n{}{}",
        remote("gen", &origin, "\\.tgz$"),
        remote("old", &origin, ".*")
    );
    let ad = Artifactd::start(dir.path(), &before, "").await;
    assert_eq!(status_of(ad.artifact("gen", "r/b.json")).await, 403);
    assert_eq!(status_of(ad.artifact("old", "r/a.tgz")).await, 200);
    assert_eq!(status_of(ad.artifact("new", "r/a.tgz")).await, 404);

    // Hits of a remote that stays, all through the reloads.
    let hits = hits_of(ad.artifact("gen", "r/a.tgz"), tarball.clone(), 5_000);

    let after = format!(
        "remotes:\n{}{}",
        remote("gen", &origin, "\\.(tgz|json)$"),
        remote("new", &origin, ".*")
    );
    std::fs::write(dir.path().join("remotes.yaml"), &after).unwrap();
    ad.signal(libc::SIGHUP);
    log_says(&ad, "remotes added: new; removed: old; changed: gen").await;
    let json = client()
        .get(ad.artifact("gen", "r/b.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 200, "gen's new pattern is in force");
    assert_eq!(json.bytes().await.unwrap(), "{\"b\":1}");
    assert_eq!(status_of(ad.artifact("old", "r/a.tgz")).await, 404);
    let before_new = origin.hits("/r/a.tgz");
    for _ in 0..2 {
        let body = client()
            .get(ad.artifact("new", "r/a.tgz"))
            .send()
            .await
            .unwrap();
        assert_eq!(body.status(), 200);
        assert_eq!(body.bytes().await.unwrap(), tarball);
    }
    assert_eq!(
        origin.hits("/r/a.tgz"),
        before_new + 1,
        "new caches its own copy once"
    );
    assert_eq!(crate::harness::requests_from(&ad, "new", "miss").await, 1);
    assert_eq!(crate::harness::requests_from(&ad, "new", "hit").await, 1);

    // A broken edit: refused with file and line, the running config stays.
    let broken = format!(
        "{after}  bad:\n    base_url: \"{}\"\n    immutable_patterns:\n      - \"\\.tgz$\"\n",
        origin.base_url()
    );
    std::fs::write(dir.path().join("remotes.yaml"), &broken).unwrap();
    ad.signal(libc::SIGHUP);
    log_says(&ad, "SIGHUP: kept the running configuration").await;
    let log = ad.log_text();
    let line = broken
        .lines()
        .position(|l| l.contains("- \"\\.tgz$\""))
        .unwrap()
        + 1;
    assert!(log.contains(&format!("remotes.yaml:{line}:")), "{log}");
    assert_eq!(status_of(ad.artifact("gen", "r/b.json")).await, 200);
    assert_eq!(status_of(ad.artifact("bad", "r/a.tgz")).await, 404);
    assert_eq!(
        metric(&ad, "artifactd_config_reloads_total{result=\"applied\"}").await,
        1
    );
    assert_eq!(
        metric(&ad, "artifactd_config_reloads_total{result=\"refused\"}").await,
        1
    );

    // A setting read only at start is named and keeps its running value.
    let server = std::fs::read_to_string(dir.path().join("artifactd.yaml")).unwrap();
    std::fs::write(dir.path().join("remotes.yaml"), &after).unwrap();
    std::fs::write(
        dir.path().join("artifactd.yaml"),
        server.replace("threads: 2", "threads: 3"),
    )
    .unwrap();
    ad.signal(libc::SIGHUP);
    log_says(&ad, "SIGHUP: threads changed in").await;
    assert_eq!(
        metric(&ad, "artifactd_config_reloads_total{result=\"applied\"}").await,
        2
    );
    hits.stop_without_failures("hit").await;
}

/// A process the test did not start as its child (the new binary, started
/// by `artifactd reload`): stopped when the test ends, pass or fail.
struct Adopted(i32);

impl Drop for Adopted {
    fn drop(&mut self) {
        // SAFETY: sends a signal to the process the test made.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// Every datagram sent to `socket` so far, as text.
fn notices(socket: &std::os::unix::net::UnixDatagram) -> Vec<String> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buffer) {
        seen.push(String::from_utf8_lossy(&buffer[..n]).to_string());
    }
    seen
}

/// `artifactd reload` as `systemctl reload` runs it (`ExecReload`), with
/// its output and that of anything it starts in `log`.
fn reload_command(binary: &std::path::Path, dir: &std::path::Path, notify: &str) -> String {
    let log = dir.join("reload.log");
    let out = std::process::Command::new(binary)
        .arg("--config")
        .arg(dir.join("artifactd.yaml"))
        .arg("reload")
        .env("NOTIFY_SOCKET", notify)
        .env_remove("ARTIFACTD_CONFIG")
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap(),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_after_replacing_the_binary_hands_over_without_a_failed_request() {
    let origin = Origin::start().await;
    let tarball = pattern_bytes(60_000, 12);
    origin.put("/r/a.tgz", OriginFile::new(tarball.clone()));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("bin")).unwrap();
    let binary = root.join("bin/artifactd");
    std::fs::copy(env!("CARGO_BIN_EXE_artifactd"), &binary).unwrap();
    // systemd's notification socket, as a unit with NotifyAccess=all has.
    let notify_path = root.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_nonblocking(true).unwrap();
    let notify_env = notify_path.display().to_string();
    let options = crate::harness::artifactd::Options {
        binary: Some(binary.clone()),
        env: vec![("NOTIFY_SOCKET".into(), notify_env.clone())],
        ..Default::default()
    };
    let remotes = format!("remotes:\n{}", remote("gen", &origin, ".*"));
    let mut ad = Artifactd::start_with(root, &remotes, "", options).await;
    let url = ad.artifact("gen", "r/a.tgz");
    assert_eq!(get_bytes(&client(), &url).await, tarball);
    let started = notices(&notify);
    assert!(started.iter().any(|n| n.contains("READY=1")), "{started:?}");

    // Same binary: a plain reload of the configuration.
    let said = reload_command(&binary, root, &notify_env);
    assert!(
        said.contains(&format!("asked process {}", ad.pid())),
        "{said}"
    );
    log_says(&ad, "SIGHUP: reloaded").await;

    let hits = hits_of(url.clone(), tarball.clone(), 20_000);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // A new binary installed over the old one (a new file, as `install`
    // makes): the reload hands the service over to it.
    let staged = root.join("bin/artifactd.new");
    std::fs::copy(env!("CARGO_BIN_EXE_artifactd"), &staged).unwrap();
    std::fs::rename(&staged, &binary).unwrap();
    let old = ad.pid();
    let said = tokio::task::spawn_blocking({
        let (binary, root, notify_env) = (binary.clone(), root.to_path_buf(), notify_env.clone());
        move || reload_command(&binary, &root, &notify_env)
    })
    .await
    .unwrap();
    let successor: i32 = said
        .split("to process ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    let _adopted = Adopted(successor);
    assert_ne!(successor as u32, old);
    let pid_file = std::fs::read_to_string(root.join("store/artifactd-upgrade.pid"))
        .or_else(|_| std::fs::read_to_string(root.join("artifactd-upgrade.pid")))
        .unwrap_or_default();
    assert_eq!(pid_file.trim(), successor.to_string());
    let status = ad.exited_within(std::time::Duration::from_secs(40)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "old process: {status:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    hits.stop_without_failures("hit").await;
    assert_eq!(get_bytes(&client(), &url).await, tarball);
    assert_eq!(
        origin.hits("/r/a.tgz"),
        1,
        "the new process serves the same cache"
    );

    let handover = notices(&notify);
    assert!(
        handover
            .iter()
            .any(|n| n.contains(&format!("MAINPID={successor}")) && n.contains("READY=1")),
        "{handover:?}"
    );
    assert!(
        !handover.iter().any(|n| n.contains("STOPPING=1")),
        "the hand-over is no stop to systemd: {handover:?}"
    );
}

/// An object cached before its remote's quarantine was switched on (by a
/// reload) is refused on a hit, from its stored `Last-Modified`, without
/// asking the upstream; an old one is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_switched_on_by_reload_refuses_what_was_cached_before() {
    let origin = Origin::start().await;
    let now = std::time::SystemTime::now();
    let day = std::time::Duration::from_secs(86_400);
    for (path, published) in [("/r/new.tgz", now - day), ("/r/old.tgz", now - day * 30)] {
        let mut file = OriginFile::new(pattern_bytes(5_000, 3));
        file.last_modified = Some(httpdate::fmt_http_date(published));
        origin.put(path, file);
    }
    let dir = tempfile::tempdir().unwrap();
    let before = format!("remotes:\n{}", remote("gen", &origin, "\\.tgz$"));
    let ad = Artifactd::start(dir.path(), &before, "").await;
    for path in ["r/new.tgz", "r/old.tgz"] {
        for _ in 0..2 {
            assert_eq!(status_of(ad.artifact("gen", path)).await, 200, "{path}");
        }
    }
    let after = format!("{before}    quarantine_new: true\n    quarantine_days: 3\n");
    std::fs::write(dir.path().join("remotes.yaml"), after).unwrap();
    ad.signal(libc::SIGHUP);
    log_says(&ad, "changed: gen").await;

    let held = client()
        .get(ad.artifact("gen", "r/new.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 404);
    assert!(
        held.headers().contains_key("x-artifact-quarantine"),
        "{:?}",
        held.headers()
    );
    assert!(held.text().await.unwrap().contains("quarantine"));
    let old = client()
        .get(ad.artifact("gen", "r/old.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 200);
    assert_eq!(old.headers()["x-artifact-source"], "cache");
    assert_eq!(origin.hits("/r/new.tgz"), 1, "refused from the cached copy");
    assert_eq!(origin.hits("/r/old.tgz"), 1);
}
