//! A real PyPI upstream for the package-format tests: `pypiserver` from
//! the test venv (`target/tools/venv`, made by `scripts/install-deps.sh
//! test`) serving wheels built by `tests/tools/make_wheel.py`, plus the
//! clients `pip` and `uv` from the same venv.
//!
//! pypiserver's access log (with `-v`) is the count of upstream requests.

use super::artifactd::free_port;
use super::SpawnLogged;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// A tool of the test venv.
pub fn tool(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/tools/venv/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-deps.sh test",
        path.display()
    );
    path
}

pub struct PypiServer {
    child: Option<Child>,
    pub port: u16,
    pub packages: PathBuf,
    log: PathBuf,
}

impl PypiServer {
    /// Starts pypiserver on `dir/packages` (sha256 hashes, no fallback to
    /// the public index).
    pub async fn start(dir: &Path) -> PypiServer {
        let packages = dir.join("packages");
        std::fs::create_dir_all(&packages).expect("packages dir");
        let mut server = PypiServer {
            child: None,
            port: free_port(),
            log: dir.join("pypiserver.log"),
            packages,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let child = Command::new(tool("pypi-server"))
            .args(["run", "-v", "-i", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args([
                "--disable-fallback",
                "--hash-algo",
                "sha256",
                "-a",
                ".",
                "-P",
                ".",
            ])
            .arg(&self.packages)
            .spawn_logged(&self.log);
        self.child = Some(child);
        if !super::answers_ok(&format!("{}/simple/", self.url()), 20).await {
            panic!(
                "pypiserver not ready:
{}",
                self.log_text()
            );
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Builds a wheel of `name` `version` requiring `requires` into the
    /// served directory and returns its path.
    pub fn add_wheel(&self, name: &str, version: &str, requires: &[&str]) -> PathBuf {
        build_wheel(&self.packages, name, version, requires)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Paths of the GET requests served so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter_map(|line| line.split_once("\"GET ")?.1.split_once(' '))
            .map(|(path, _)| path.to_string())
            .collect()
    }

    /// How many GETs asked for `path`.
    pub fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|p| *p == path).count()
    }

    /// Waits until the access log has not grown for 300 ms (at most 3 s).
    pub async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut last = self.log_text().len();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = self.log_text().len();
            if now == last {
                return;
            }
            last = now;
        }
    }

    /// [`PypiServer::count`] once it reaches `expected` (pypiserver logs a
    /// request after answering it), or after 3 s.
    pub async fn count_reaching(&self, path: &str, expected: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let count = self.count(path);
            if count >= expected || Instant::now() > deadline {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

/// Runs a client command in a clean environment (no user or machine
/// pip/uv configuration, no cache, no indexes from the environment);
/// returns (success, combined output).
pub async fn run_clean(command: &mut Command) -> (bool, String) {
    for var in [
        "PIP_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "PIP_FIND_LINKS",
        "UV_INDEX_URL",
        "UV_EXTRA_INDEX_URL",
        "UV_INDEX",
        "UV_DEFAULT_INDEX",
        "UV_FIND_LINKS",
    ] {
        command.env_remove(var);
    }
    command
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("UV_NO_CONFIG", "1")
        .env("UV_NO_CACHE", "1")
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env("NO_PROXY", "*");
    super::run_client(command).await
}

/// Builds a wheel (`tests/tools/make_wheel.py`) into `dir`; its path.
pub fn build_wheel(dir: &Path, name: &str, version: &str, requires: &[&str]) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/make_wheel.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(dir)
        .args([name, version])
        .args(requires)
        .output()
        .expect("make_wheel.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The PEP 691 form of `simple/{project}/` of `remote`.
pub async fn simple_json(ad: &super::Artifactd, remote: &str, project: &str) -> serde_json::Value {
    super::client()
        .get(ad.artifact(remote, &format!("simple/{project}/")))
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .await
        .expect("response")
        .json()
        .await
        .expect("a PEP 691 page")
}

/// Runs `tests/tools/SCRIPT` with the venv's Python (whose oras-py the
/// OCI tools use).
pub async fn python_tool(script: &str, args: &[&str]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tools")
        .join(script);
    let mut command = Command::new(tool("python"));
    command.arg(script).args(args).env("NO_PROXY", "*");
    super::run_client(&mut command).await
}

/// `pip install --target TARGET --index-url INDEX PACKAGES…`.
pub async fn pip_install(index: &str, target: &Path, packages: &[&str]) -> (bool, String) {
    let mut command = Command::new(tool("pip"));
    command
        .args(["install", "--no-cache-dir", "--no-compile", "--target"])
        .arg(target)
        .args(["--index-url", index])
        .args(packages);
    run_clean(&mut command).await
}

/// `uv pip install --target TARGET --index-url INDEX PACKAGES…`.
pub async fn uv_install(index: &str, target: &Path, packages: &[&str]) -> (bool, String) {
    let mut command = Command::new(tool("uv"));
    command
        .args(["pip", "install", "--no-cache", "--python"])
        .arg(tool("python"))
        .arg("--target")
        .arg(target)
        .args(["--index-url", index])
        .args(packages);
    run_clean(&mut command).await
}

/// The `VERSION` a test wheel's module carries, as installed in `target`.
pub fn installed_version(target: &Path, module: &str) -> Option<String> {
    let text = std::fs::read_to_string(target.join(module).join("__init__.py")).ok()?;
    let quoted = text.trim().strip_prefix("VERSION = ")?;
    Some(quoted.trim_matches('\'').to_string())
}
