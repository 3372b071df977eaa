//! Runs the real artifactd binary on a free loopback port with a config
//! written into a test directory, and kills it on drop.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Artifactd {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

/// A port that was free a moment ago. Pingora binds by address, so the
/// listener is released for it; the window for a clash is tiny.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Artifactd {
    /// Writes `remotes` and a server config (plus `extra` YAML lines) into
    /// `dir`, with bodies under `dir/store`, and starts artifactd on them.
    /// Starting twice on the same `dir` is a restart on the same storage.
    pub async fn start(dir: &Path, remotes: &str, extra: &str) -> Artifactd {
        std::fs::create_dir_all(dir).expect("test dir");
        std::fs::write(dir.join("remotes.yaml"), remotes).expect("write remotes");
        let port = free_port();
        let config = format!(
            "listen: \"127.0.0.1:{port}\"\nthreads: 2\nremotes: remotes.yaml\nstorage: \"fs://store\"\n{extra}"
        );
        std::fs::write(dir.join("artifactd.yaml"), config).expect("write config");
        let log = dir.join(format!("artifactd-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_artifactd"))
            .arg("--config")
            .arg(dir.join("artifactd.yaml"))
            .env(
                "RUST_LOG",
                std::env::var("ARTIFACTD_TEST_LOG").unwrap_or("info".into()),
            )
            .env_remove("ARTIFACTD_CONFIG")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn artifactd");
        let mut artifactd = Artifactd {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        artifactd.wait_ready().await;
        artifactd
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
