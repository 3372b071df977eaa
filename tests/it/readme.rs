//! The README's commands as a newcomer runs them, so a shipped file that
//! cannot start never lands green again.
//!
//! `make run` runs in a copy of the repository as a fresh clone has it
//! (tracked files only: no `var/`, no `target/` but the binary this build
//! made, put where `make run` builds it). The systemd unit's own commands
//! and environment run on the shipped `systemd/artifactd.yaml`, with the
//! config, remotes and token files where `make install` puts them and the
//! state and runtime folders systemd makes. Each runs in network and mount
//! namespaces of its own (so as root), so the shipped addresses, 127.0.0.1:8080
//! and 0.0.0.0:8080, and the shipped absolute paths are used unchanged and
//! meet no other test, process or file of the machine; requests reach the
//! server through `nsenter` and curl.

use crate::harness::{pattern_bytes, sha256_hex};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const BINARY: &str = env!("CARGO_BIN_EXE_artifactd");

/// The tracked files of the repository, copied into `dest`.
fn fresh_clone(dest: &Path) {
    let listed = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(REPO)
        .output()
        .expect("git ls-files");
    assert!(listed.status.success(), "git ls-files failed");
    for name in listed.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name).expect("a UTF-8 file name");
        let (from, to) = (Path::new(REPO).join(name), dest.join(name));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let meta = from.symlink_metadata().expect(name);
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &to).unwrap();
        } else if meta.is_file() {
            std::fs::copy(&from, &to).expect(name);
        }
    }
}

/// A process started in fresh network and mount namespaces, loopback up,
/// after `setup` (shell lines run inside first); the whole process group
/// is stopped on drop.
struct Namespaced {
    child: Child,
    log: PathBuf,
}

impl Namespaced {
    fn start(log: PathBuf, setup: &str, program: &[&str], env: &[(String, String)]) -> Namespaced {
        let out = std::fs::File::create(&log).unwrap();
        let script = format!("set -e\nip link set lo up\n{setup}\nexec \"$@\"");
        let mut command = Command::new("unshare");
        command
            .args(["--net", "--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", &script, "sh"])
            .args(program)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
        // As a shell a newcomer types in: nothing of this test run's own.
        for (name, _) in std::env::vars() {
            if name.starts_with("ARTIFACTD_") || name.starts_with("MAKE") || name == "MFLAGS" {
                command.env_remove(name);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let child = command.spawn().expect("unshare");
        Namespaced { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the child is in its own network namespace: until it
    /// has run `unshare`, `nsenter` would reach this machine's loopback,
    /// and whatever listens on its 8080 (a developer's `make run`).
    fn own_namespace(&self) {
        let net = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        let deadline = Instant::now() + Duration::from_secs(10);
        while net(&self.child.id().to_string()) == net("self") {
            assert!(Instant::now() < deadline, "no namespace of its own");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// curl inside the namespace: status, headers and body.
    fn curl(&self, args: &[&str]) -> Response {
        self.own_namespace();
        let dir = tempfile::tempdir().unwrap();
        let (headers, body) = (dir.path().join("headers"), dir.path().join("body"));
        let out = Command::new("nsenter")
            .args(["-t", &self.child.id().to_string(), "-n", "--"])
            .args(["curl", "-sS", "--max-time", "30", "-D"])
            .arg(&headers)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .args(args)
            .output()
            .expect("nsenter curl");
        Response {
            status: String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0),
            headers: std::fs::read_to_string(headers)
                .unwrap_or_default()
                .to_ascii_lowercase(),
            body: std::fs::read(body).unwrap_or_default(),
        }
    }

    /// Waits for `/health` to answer 200 (a start takes the build's
    /// time when `make run` builds; here the binary is built).
    fn wait_healthy(&mut self, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("exited ({status}) before answering:\n{}", self.log());
            }
            if self.curl(&[url]).status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "no /health:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM to the group (make and the server it started), then waits.
    fn stop(&mut self) {
        // SAFETY: kill only sends a signal to the group this test started.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "no stop:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Namespaced {
    fn drop(&mut self) {
        // SAFETY: as in `stop`.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

struct Response {
    status: u16,
    /// Lower-cased.
    headers: String,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }
}

/// Uploads `body` to the shipped local repository and reads it back whole.
fn local_round_trip(server: &Namespaced, base: &str, token: Option<&str>, body_file: &Path) {
    let url = format!("{base}/api/v1/remote/local-generic/tools/v1/tool.bin");
    let body = std::fs::read(body_file).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut put = vec!["-X", "PUT", "--data-binary"];
    let upload = format!("@{}", body_file.display());
    put.push(&upload);
    if let Some(auth) = &auth {
        put.extend(["-H", auth]);
    }
    put.push(&url);
    let uploaded = server.curl(&put);
    assert_eq!(uploaded.status, 201, "{}", server.log());
    assert_eq!(uploaded.json()["sha256"], sha256_hex(&body));
    let read = server.curl(&[&url]);
    assert_eq!(read.status, 200);
    let length = format!("content-length: {}\r\n", body.len());
    assert!(read.headers.contains(&length), "{}", read.headers);
    assert!(read.body == body, "the download differs from the upload");
}

fn resolved(config: &serde_json::Value, field: &str) -> String {
    config["resolved"][field]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn make_run_serves_from_a_fresh_clone() {
    let dir = tempfile::tempdir().unwrap();
    let clone = dir.path().join("artifactd");
    fresh_clone(&clone);
    assert!(!clone.join("var").exists());
    // `make run` builds the release binary first: this build's binary,
    // where that step puts it, and a build command that does nothing.
    std::fs::create_dir_all(clone.join("target/release")).unwrap();
    std::os::unix::fs::symlink(BINARY, clone.join("target/release/artifactd")).unwrap();
    let clone = clone.canonicalize().unwrap();
    let body_file = dir.path().join("tool.bin");
    std::fs::write(&body_file, pattern_bytes(300_000, 21)).unwrap();

    let run = |log: &str| {
        let mut server = Namespaced::start(
            dir.path().join(log),
            &format!("cd {}", clone.display()),
            &["make", "run", "CARGO=true"],
            &[],
        );
        server.wait_healthy("http://127.0.0.1:8080/health");
        server
    };
    let mut server = run("first.log");
    let log = server.log();
    assert!(log.contains("conf/artifactd.yaml: ok ("), "{log}");
    let catalog = format!("sqlite://{}/var/catalog.db", clone.display());
    let storage = format!("fs://{}/var/objects", clone.display());
    assert!(
        log.contains(&catalog),
        "check-config and the start name {catalog}:\n{log}"
    );
    let config = server.curl(&["http://127.0.0.1:8080/config"]).json();
    assert_eq!(resolved(&config, "catalog"), catalog);
    assert_eq!(resolved(&config, "storage"), storage);
    let index = server.curl(&["http://127.0.0.1:8080/"]);
    assert_eq!(index.status, 200);
    assert!(index.json()["remotes"]
        .to_string()
        .contains("local-generic"));
    local_round_trip(&server, "http://127.0.0.1:8080", None, &body_file);
    server.stop();
    assert!(clone.join("var/catalog.db").is_file());
    assert!(clone.join("var/objects").is_dir());
    assert!(!clone.join("conf/var").exists(), "a path resolved twice");

    // Again, now that var/ exists: the upload is still there.
    let mut again = run("again.log");
    let url = "http://127.0.0.1:8080/api/v1/remote/local-generic/tools/v1/tool.bin";
    let read = again.curl(&[url]);
    assert_eq!(read.status, 200, "{}", again.log());
    assert!(read.body == std::fs::read(&body_file).unwrap());
    again.stop();
}

/// `KEY=VALUE` of every `Environment=` line of the unit, `%d` (the
/// credentials folder) replaced; and its `ExecStartPre=` and `ExecStart=`.
fn unit_commands(unit: &str, credentials: &Path) -> (Vec<(String, String)>, Vec<String>) {
    let mut env = Vec::new();
    let mut exec = Vec::new();
    for line in unit.lines() {
        if let Some(assignment) = line.strip_prefix("Environment=") {
            let assignment = assignment.replace("%d", &credentials.display().to_string());
            let (key, value) = assignment.split_once('=').expect("KEY=VALUE");
            env.push((key.to_string(), value.to_string()));
        } else if let Some(command) = line
            .strip_prefix("ExecStartPre=")
            .or_else(|| line.strip_prefix("ExecStart="))
        {
            exec.push(command.replace("/usr/local/bin/artifactd", BINARY));
        }
    }
    (env, exec)
}

#[test]
fn the_systemd_unit_starts_on_its_shipped_config_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let repo = Path::new(REPO);
    // What `make install` writes into /etc/artifactd, and the
    // credentials systemd passes from there (LoadCredential=).
    let etc = root.join("etc-upper/artifactd");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::copy(
        repo.join("systemd/artifactd.yaml"),
        etc.join("artifactd.yaml"),
    )
    .unwrap();
    std::fs::copy(repo.join("conf/remotes.yaml"), etc.join("remotes.yaml")).unwrap();
    let credentials = root.join("credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    let tokens = [
        ("admin", "admin-token-of-the-test-0123"),
        ("write", "write-token-of-the-test-4567"),
    ];
    for (name, token) in tokens {
        std::fs::write(etc.join(format!("{name}.token")), format!("{token}\n")).unwrap();
        std::fs::write(
            credentials.join(format!("{name}-token")),
            format!("{token}\n"),
        )
        .unwrap();
    }
    // StateDirectory=, CacheDirectory= and RuntimeDirectory=, as systemd
    // makes them.
    for made in [
        "var-lib-upper/artifactd",
        "var-cache-upper/artifactd",
        "run-upper/artifactd",
    ] {
        std::fs::create_dir_all(root.join(made)).unwrap();
    }
    let mut setup = String::from("umask 0077\n");
    for (target, name) in [
        ("/etc", "etc"),
        ("/var/lib", "var-lib"),
        ("/var/cache", "var-cache"),
        ("/run", "run"),
    ] {
        let (upper, work) = (
            root.join(format!("{name}-upper")),
            root.join(format!("{name}-work")),
        );
        std::fs::create_dir_all(&work).unwrap();
        setup += &format!(
            "mount -t overlay overlay -o lowerdir={target},upperdir={},workdir={} {target}\n",
            upper.display(),
            work.display()
        );
    }
    let unit = std::fs::read_to_string(repo.join("systemd/artifactd.service")).unwrap();
    let (env, exec) = unit_commands(&unit, &credentials);
    assert_eq!(exec.len(), 2, "ExecStartPre= and ExecStart= in the unit");
    let script = format!("{} && exec {}", exec[0], exec[1]);
    let mut server = Namespaced::start(
        root.join("server.log"),
        &setup,
        &["sh", "-c", &script],
        &env,
    );
    server.wait_healthy("http://127.0.0.1:8080/health");
    let log = server.log();
    assert!(log.contains("/etc/artifactd/artifactd.yaml: ok ("), "{log}");
    assert!(
        log.contains("sqlite:///var/lib/artifactd/catalog.db"),
        "{log}"
    );

    let base = "http://127.0.0.1:8080";
    let body_file = root.join("tool.bin");
    std::fs::write(&body_file, pattern_bytes(200_000, 22)).unwrap();
    let anonymous = server.curl(&[
        "-X",
        "PUT",
        "--data-binary",
        "anything",
        &format!("{base}/api/v1/remote/local-generic/tools/v1/tool.bin"),
    ]);
    assert_eq!(
        anonymous.status, 401,
        "a public listener wants the write token"
    );
    local_round_trip(&server, base, Some(tokens[1].1), &body_file);
    let usage = format!("{base}/api/v1/cache/usage");
    assert_eq!(
        server.curl(&[&usage]).status,
        401,
        "the admin token is asked"
    );
    let admin = format!("Authorization: Bearer {}", tokens[0].1);
    let usage = server.curl(&["-H", &admin, &usage]);
    assert_eq!(usage.status, 200, "{}", server.log());
    let config_url = format!("{base}/config");
    assert_eq!(
        server.curl(&[&config_url]).status,
        401,
        "/config is the admin's"
    );
    let config = server.curl(&["-H", &admin, &config_url]).json();
    assert_eq!(
        resolved(&config, "storage"),
        "fs:///var/cache/artifactd/objects"
    );
    assert_eq!(
        resolved(&config, "catalog"),
        "sqlite:///var/lib/artifactd/catalog.db"
    );
    assert_eq!(config["resolved"]["admin_token_set"], true);
    assert_eq!(config["resolved"]["write_token_set"], true);
    for (_, token) in tokens {
        assert!(!config.to_string().contains(token), "a token in /config");
    }
    server.stop();
    // The catalog in the state folder, bodies in the cache folder.
    let state = root.join("var-lib-upper/artifactd");
    assert!(state.join("catalog.db").is_file());
    assert!(!state.join("objects").exists());
    assert!(root.join("var-cache-upper/artifactd/objects").is_dir());
}
