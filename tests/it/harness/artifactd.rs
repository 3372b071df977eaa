//! Runs the real artifactd binary on a free loopback port with a config
//! written into a test directory, and kills it on drop.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Artifactd {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// The TLS listener, when started with one.
    pub tls_addr: Option<SocketAddr>,
    pub log: PathBuf,
    dir: PathBuf,
}

/// The lowest port [`free_port`] hands out, and how many above it.
const OWN_PORTS: (u16, u16) = (12_000, 20_000);

/// A port for a server the test starts, free when probed.
///
/// Servers bind it after the probe released it, so a port the kernel
/// hands out (a listener on port 0, any connection's source port) could
/// take it in between: two tests once shared one artifactd that way, and
/// one of them read the other's upstream. The kernel hands those out from
/// `ip_local_port_range` (32768 and up here), so these come from below
/// it, each once per test process, starting where the process id puts
/// them so that two test processes rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let (low, count) = OWN_PORTS;
    let start = (std::process::id() % u32::from(count)) as u16;
    for _ in 0..count {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low + ((u32::from(start) + u32::from(n)) % u32::from(count)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port from {low} to {}", low + count - 1);
}

/// How to start artifactd beyond the config lines.
#[derive(Default)]
pub struct Options {
    /// Also listen with TLS on a second port, with these PEM files.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// The `storage`/`state`/`catalog` lines; default: the shape's.
    pub backends: Option<String>,
    /// The binary to run; default: the one cargo built.
    pub binary: Option<PathBuf>,
}

/// Which deployment shape the suites run against: `embedded` (the
/// default: filesystem, embedded state, SQLite) or, with
/// `ARTIFACTD_TEST_SHAPE=cluster`, the shared S3 + Redis + PostgreSQL
/// services (see `services`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Embedded,
    Cluster,
}

pub fn shape() -> Shape {
    match std::env::var("ARTIFACTD_TEST_SHAPE").as_deref() {
        Ok("cluster") => Shape::Cluster,
        Ok("embedded") | Err(_) => Shape::Embedded,
        Ok(other) => panic!("ARTIFACTD_TEST_SHAPE={other:?}: expected embedded or cluster"),
    }
}

/// A name unique to a test directory, so that a restart on the same
/// directory finds its database, bucket prefix and keys again.
pub fn namespace(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut hasher);
    format!("t{:016x}", hasher.finish())
}

/// The backend lines of a node on the shared cluster services, namespaced
/// by `dir`.
pub fn cluster_backends(dir: &Path) -> String {
    let services = super::services::shared();
    let ns = namespace(dir);
    cluster_backends_on(
        &services.s3.url(),
        &format!("{}/{ns}", super::services::SHARED_BUCKET),
        &services.redis.url(),
        &ns,
        &services.postgres.database(&ns),
    )
}

/// Backend lines for an S3 endpoint and `bucket/prefix`, a Redis URL with
/// a key prefix, and a PostgreSQL URL.
pub fn cluster_backends_on(
    s3_url: &str,
    location: &str,
    redis_url: &str,
    key_prefix: &str,
    postgres_url: &str,
) -> String {
    format!(
        "storage: \"s3://{location}\"\n\
         s3: {{endpoint: \"{s3_url}\", allow_http: true, access_key_id: test, secret_access_key: test, timeout: 5s}}\n\
         state: \"{redis_url}\"\n\
         redis: {{key_prefix: \"{key_prefix}\"}}\n\
         catalog: \"{postgres_url}\"\n"
    )
}

impl Artifactd {
    /// Writes `remotes` and a server config (plus `extra` YAML lines) into
    /// `dir`, with bodies under `dir/store`, and starts artifactd on them.
    /// Starting twice on the same `dir` is a restart on the same storage.
    pub async fn start(dir: &Path, remotes: &str, extra: &str) -> Artifactd {
        Self::start_with(dir, remotes, extra, Options::default()).await
    }

    pub async fn start_with(dir: &Path, remotes: &str, extra: &str, options: Options) -> Artifactd {
        std::fs::create_dir_all(dir).expect("test dir");
        std::fs::write(dir.join("remotes.yaml"), remotes).expect("write remotes");
        let port = free_port();
        let tls_port = options.tls.as_ref().map(|_| free_port());
        let listen = match (&options.tls, tls_port) {
            (Some((cert, key)), Some(tls_port)) => format!(
                "listen:\n  - \"127.0.0.1:{port}\"\n  - address: \"127.0.0.1:{tls_port}\"\n    tls: {{cert: \"{}\", key: \"{}\"}}\n",
                cert.display(),
                key.display()
            ),
            _ => format!("listen: \"127.0.0.1:{port}\"\n"),
        };
        let backends = match (options.backends, shape()) {
            (None, Shape::Embedded) => "storage: \"fs://store\"\n".into(),
            // Beside the test's files: a bucket's default socket (and pid
            // file) would be in the temp folder, left there by a killed node.
            (lines, _) => format!(
                "{}process: {{upgrade_socket: artifactd-upgrade.sock}}\n",
                lines.unwrap_or_else(|| cluster_backends(dir))
            ),
        };
        let config = format!("{listen}threads: 2\nremotes: remotes.yaml\n{backends}{extra}");
        std::fs::write(dir.join("artifactd.yaml"), config).expect("write config");
        let binary = (options.binary.clone()).unwrap_or(env!("CARGO_BIN_EXE_artifactd").into());
        let mut artifactd = Self::spawn(&binary, dir, port, &options.env, &["serve"]);
        artifactd.tls_addr = tls_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        artifactd.wait_ready().await;
        artifactd
    }

    /// Runs the binary on `dir`'s config with `args`, logging to a file.
    fn spawn(
        binary: &Path,
        dir: &Path,
        port: u16,
        env: &[(String, String)],
        args: &[&str],
    ) -> Artifactd {
        let log = dir.join(format!("artifactd-{port}-{}.log", args.join("")));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary)
            .arg("--config")
            .arg(dir.join("artifactd.yaml"))
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("ARTIFACTD_TEST_LOG").unwrap_or("info".into()),
            )
            .env_remove("ARTIFACTD_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn artifactd");
        Artifactd {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            tls_addr: None,
            log,
            dir: dir.to_path_buf(),
        }
    }

    /// Starts a new process with `serve -u` on the same config: it takes
    /// over the listeners, and this one finishes its transfers and exits.
    /// Returns once the new process serves (it has written the pid file).
    pub async fn upgrade(&self) -> Artifactd {
        let binary = Path::new(env!("CARGO_BIN_EXE_artifactd"));
        let mut next = Self::spawn(binary, &self.dir, self.addr.port(), &[], &["serve", "-u"]);
        next.tls_addr = self.tls_addr;
        let pid_file = self.dir.join("artifactd-upgrade.pid");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let recorded = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if recorded.trim() == next.pid().to_string() {
                return next;
            }
            if let Some(status) = next
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "upgraded artifactd exited with {status}:\n{}",
                    next.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "upgraded artifactd not serving in 30 s:\n{}",
            next.log_text()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: sends a signal to our own child.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, signal) }, 0);
    }

    /// Waits up to `limit` for the process to exit by itself.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().ok().flatten() {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = super::client();
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("artifactd exited with {status}:\n{}", self.log_text());
            }
            if client.get(self.url("/")).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("artifactd not ready in 30 s:\n{}", self.log_text());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// URL of an artifact of remote `remote`.
    pub fn artifact(&self, remote: &str, path: &str) -> String {
        self.url(&format!("/api/v1/remote/{remote}/{path}"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until every miss whose client has its body is committed (a
    /// miss commits just after its client has the last byte, and an admin
    /// request other than a probe is answered only once those commits have
    /// ended).
    pub async fn committed(&self) {
        let metrics = super::client().get(self.url("/metrics")).send();
        metrics.await.expect("an answer from /metrics");
    }

    /// Stops the process at once (SIGKILL): nothing gets a chance to flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Artifactd {
    /// Also fails the test if artifactd panicked anywhere along the way: a
    /// panic in a request task is invisible to the client that hung on it.
    fn drop(&mut self) {
        self.kill();
        let log = self.log_text();
        if !std::thread::panicking() && log.contains("panicked") {
            panic!("artifactd panicked during the test:\n{log}");
        }
    }
}
