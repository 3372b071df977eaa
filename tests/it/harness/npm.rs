//! A real npm upstream for the package-format tests: verdaccio
//! (`target/tools/npm`, installed by `scripts/install-deps.sh test`) with
//! no uplinks, packages published to it with `npm`, and `npm install` as
//! the client, both on the Node.js that script pins (`target/tools/node`),
//! never the machine's own.
//!
//! verdaccio's request log (its stdout) is the count of upstream
//! requests: one `requested 'GET …'` line each. It is written
//! asynchronously, so counts wait for it to settle.

use super::artifactd::free_port;
use super::SpawnLogged;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub struct Verdaccio {
    child: Option<Child>,
    pub port: u16,
    pub storage: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    /// `.npmrc` with a publish token.
    npmrc: PathBuf,
}

impl Verdaccio {
    pub async fn start(dir: &Path) -> Verdaccio {
        let dir = dir.join("verdaccio");
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).expect("verdaccio dir");
        let config = format!(
            "storage: {}\nauth:\n  htpasswd:\n    file: {}\n    max_users: 100\nuplinks: {{}}\npackages:\n  '**':\n    access: $all\n    publish: $authenticated\n    unpublish: $authenticated\nlog: {{ type: stdout, format: pretty, level: http }}\n",
            storage.display(),
            dir.join("htpasswd").display()
        );
        std::fs::write(dir.join("config.yaml"), config).expect("verdaccio config");
        let mut server = Verdaccio {
            child: None,
            port: free_port(),
            storage,
            log: dir.join("verdaccio.log"),
            npmrc: dir.join("npmrc"),
            dir,
        };
        server.spawn().await;
        server.login().await;
        server
    }

    async fn spawn(&mut self) {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/tools/npm/node_modules/.bin/verdaccio");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/install-deps.sh test",
            bin.display()
        );
        let child = node_command(bin)
            .arg("--config")
            .arg(self.dir.join("config.yaml"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .spawn_logged(&self.log);
        self.child = Some(child);
        if !super::answers_ok(&format!("{}/-/ping", self.url()), 30).await {
            panic!(
                "verdaccio not ready:
{}",
                self.log_text()
            );
        }
    }

    /// Creates a user and writes its token into the publishing `.npmrc`.
    async fn login(&self) {
        let resp: serde_json::Value = super::client()
            .put(format!("{}/-/user/org.couchdb.user:tests", self.url()))
            .json(&serde_json::json!({"name": "tests", "password": "tests-password"}))
            .send()
            .await
            .expect("verdaccio adduser")
            .json()
            .await
            .expect("adduser answer");
        let token = resp["token"].as_str().expect("a token");
        let npmrc = format!("//127.0.0.1:{}/:_authToken={token}\n", self.port);
        std::fs::write(&self.npmrc, npmrc).expect("npmrc");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Publishes `name@version` with `dependencies` (name → range); its
    /// `index.js` exports the version.
    pub async fn publish(&self, name: &str, version: &str, dependencies: &[(&str, &str)]) {
        let package = tempfile::tempdir().expect("package dir");
        let deps: serde_json::Map<String, serde_json::Value> = dependencies
            .iter()
            .map(|(n, r)| (n.to_string(), serde_json::Value::from(*r)))
            .collect();
        let manifest = serde_json::json!({
            "name": name, "version": version, "main": "index.js", "dependencies": deps
        });
        std::fs::write(package.path().join("package.json"), manifest.to_string()).unwrap();
        std::fs::write(
            package.path().join("index.js"),
            format!("module.exports = '{version}';\n"),
        )
        .unwrap();
        let mut command = node_command(node_bin().join("npm"));
        command
            .current_dir(package.path())
            .args(["publish", "--registry", &format!("{}/", self.url())])
            .arg("--userconfig")
            .arg(&self.npmrc);
        let (ok, out) = run_npm(&mut command).await;
        assert!(ok, "npm publish {name}@{version}: {out}");
    }

    /// Unpublishes `name@version`, as its author would.
    pub async fn unpublish(&self, name: &str, version: &str) {
        let mut command = node_command(node_bin().join("npm"));
        command
            .args(["unpublish", &format!("{name}@{version}")])
            .args(["--registry", &format!("{}/", self.url())])
            .arg("--userconfig")
            .arg(&self.npmrc);
        let (ok, out) = run_npm(&mut command).await;
        assert!(ok, "npm unpublish {name}@{version}: {out}");
    }

    /// The stored tarball of `name@version`.
    pub fn tarball(&self, name: &str, version: &str) -> PathBuf {
        let base = name.rsplit('/').next().unwrap_or(name);
        self.storage
            .join(name)
            .join(format!("{base}-{version}.tgz"))
    }

    /// Sets the publish time of `name@version` in verdaccio's storage.
    pub fn set_publish_time(&self, name: &str, version: &str, rfc3339: &str) {
        let path = self.storage.join(name).join("package.json");
        let mut doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("stored document")).unwrap();
        doc["time"][version] = serde_json::Value::from(rfc3339);
        std::fs::write(&path, doc.to_string()).unwrap();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Paths of the GET requests logged so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter_map(|line| line.split_once("requested 'GET ")?.1.split_once('\''))
            .map(|(path, _)| path.to_string())
            .collect()
    }

    /// Waits until the log has not grown for a second (at most 10 s), so
    /// that counts include every request made so far.
    pub async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = self.log_text().len();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = self.log_text().len();
            if now == last {
                return;
            }
            last = now;
        }
    }

    /// How many logged GETs asked for `path` (see [`Verdaccio::settle`]).
    pub fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|p| *p == path).count()
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

/// The folder of the pinned `node`, `npm` and `npx`.
pub fn node_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/node/bin")
}

/// `program` with the pinned Node.js first on its `PATH`, where the
/// `#!/usr/bin/env node` of npm and verdaccio finds it.
pub fn node_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let bin = node_bin();
    assert!(
        bin.join("node").exists(),
        "{} is missing: run scripts/install-deps.sh test",
        bin.join("node").display()
    );
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)))
        .expect("PATH");
    let mut command = Command::new(program);
    command.env("PATH", path);
    command
}

/// Runs npm with no user or global configuration and no update check;
/// returns (success, combined output).
pub async fn run_npm(command: &mut Command) -> (bool, String) {
    for var in ["NPM_CONFIG_REGISTRY", "npm_config_registry"] {
        command.env_remove(var);
    }
    // npm refuses one file as both user and global config: an empty file
    // of its own for the global one.
    let global = std::env::temp_dir().join("artifactd-tests-npmrc-global");
    std::fs::write(&global, "").expect("empty global npmrc");
    command
        .env("NPM_CONFIG_GLOBALCONFIG", global)
        .env("NPM_CONFIG_UPDATE_NOTIFIER", "false")
        .env("NPM_CONFIG_AUDIT", "false")
        .env("NPM_CONFIG_FUND", "false")
        .env("NO_PROXY", "*");
    super::run_client(command).await
}

/// `npm install PACKAGES…` in a fresh project `dir` against `registry`,
/// with its own cache (nothing from an earlier run is reused).
pub async fn npm_install(registry: &str, dir: &Path, packages: &[&str]) -> (bool, String) {
    std::fs::create_dir_all(dir).expect("project dir");
    let manifest = dir.join("package.json");
    if !manifest.exists() {
        std::fs::write(
            &manifest,
            r#"{"name":"project","version":"1.0.0","private":true}"#,
        )
        .unwrap();
    }
    std::fs::write(dir.join(".npmrc-empty"), "").unwrap();
    let mut command = node_command(node_bin().join("npm"));
    command
        .current_dir(dir)
        .args(["install", "--registry", registry, "--userconfig"])
        .arg(dir.join(".npmrc-empty"))
        .arg("--cache")
        .arg(dir.join(".npm-cache"))
        .args(["--prefer-online", "--fetch-retries", "0"])
        .args(packages);
    run_npm(&mut command).await
}

/// The version of `name` installed in project `dir`.
pub fn installed_version(dir: &Path, name: &str) -> Option<String> {
    let path = dir.join("node_modules").join(name).join("package.json");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    doc["version"].as_str().map(str::to_string)
}
