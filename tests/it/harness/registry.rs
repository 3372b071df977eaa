//! A real upstream registry for the OCI tests: the CNCF distribution
//! registry (`docker-registry` from Debian) on a free loopback port,
//! optionally with token auth through [`TokenIssuer`], plus images built
//! with `umoci` and pushed with `skopeo`.
//!
//! The registry's access log (its stdout) is the count of upstream
//! requests the tests assert on.

use super::artifactd::free_port;
use super::token::TokenIssuer;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub struct Registry {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    log: PathBuf,
}

/// One request line of the registry's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
}

impl Registry {
    /// Starts a registry storing under `dir/registry`, with token auth
    /// when `token` is given.
    pub async fn start(dir: &Path, token: Option<&TokenIssuer>) -> Registry {
        let dir = dir.join("registry");
        std::fs::create_dir_all(&dir).expect("registry dir");
        let port = free_port();
        let auth = token.map(|t| t.registry_config()).unwrap_or_default();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: artifactd-tests\n{auth}",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config).expect("registry config");
        let mut registry = Registry {
            child: None,
            port,
            log: dir.join("access.log"),
            dir,
        };
        registry.spawn().await;
        registry
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.join("config.yml"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("docker-registry (Debian package docker-registry) must be installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = super::client();
        while Instant::now() < deadline {
            if let Ok(resp) = client.get(format!("{}/v2/", self.url())).send().await {
                if resp.status() == 200 || resp.status() == 401 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("registry not ready:\n{}", self.log_text());
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, as image references name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every request the registry logged so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.log_text()
            .lines()
            .filter_map(|line| {
                let request = line.split('"').nth(1)?;
                let status = line
                    .split('"')
                    .nth(2)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                let mut parts = request.split_whitespace();
                Some(LoggedRequest {
                    method: parts.next()?.to_string(),
                    path: parts.next()?.to_string(),
                    status,
                })
            })
            .collect()
    }

    /// How many `GET`s the registry answered for paths containing `needle`.
    pub fn gets(&self, needle: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains(needle))
            .count()
    }

    /// Stops the registry (SIGKILL): the upstream is gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

/// Runs a command to completion and returns its stdout; panics with its
/// output when it fails.
pub async fn run(program: &str, args: &[&str]) -> String {
    let output = run_output(program, args).await;
    if !output.status.success() {
        panic!(
            "{program} {args:?} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a command to completion (bounded to two minutes).
pub async fn run_output(program: &str, args: &[&str]) -> std::process::Output {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish in 120 s"))
        .unwrap_or_else(|e| panic!("{program} could not start: {e}"))
}

/// An OCI image layout built with umoci.
pub struct Layout {
    pub path: PathBuf,
}

impl Layout {
    pub async fn init(path: &Path) -> Layout {
        let layout = path.display().to_string();
        run("umoci", &["init", "--layout", &layout]).await;
        Layout {
            path: path.to_path_buf(),
        }
    }

    fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.path.display())
    }

    /// Creates `tag` with one layer per file (`(name, bytes)`), on top of
    /// `base` when given (so its layers are shared byte for byte).
    pub async fn build(&self, tag: &str, base: Option<&str>, files: &[(&str, Vec<u8>)]) {
        let scratch = self.path.with_extension("files");
        std::fs::create_dir_all(&scratch).expect("scratch dir");
        match base {
            Some(base) => {
                run("umoci", &["tag", "--image", &self.image(base), tag]).await;
            }
            None => {
                run("umoci", &["new", "--image", &self.image(tag)]).await;
            }
        }
        for (name, bytes) in files {
            let file = scratch.join(name);
            std::fs::write(&file, bytes).expect("layer file");
            run(
                "umoci",
                &[
                    "insert",
                    "--image",
                    &self.image(tag),
                    &file.display().to_string(),
                    &format!("/{name}"),
                ],
            )
            .await;
        }
    }

    /// Sets the platform architecture of `tag`, so an index can tell
    /// images apart.
    pub async fn set_arch(&self, tag: &str, arch: &str) {
        run(
            "umoci",
            &[
                "config",
                "--image",
                &self.image(tag),
                &format!("--architecture={arch}"),
            ],
        )
        .await;
    }

    /// The manifest descriptor (digest, size, media type) of `tag`.
    pub fn descriptor(&self, tag: &str) -> serde_json::Value {
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.path.join("index.json")).expect("index.json"),
        )
        .expect("index json");
        index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .cloned()
            .unwrap_or_else(|| panic!("no tag {tag} in layout"))
    }

    /// Adds an image index tagged `tag` over the images `tags` (each with
    /// its platform), as a multi-arch image is published.
    pub fn add_index(&self, tag: &str, tags: &[(&str, &str)]) {
        let manifests: Vec<serde_json::Value> = tags
            .iter()
            .map(|(image, arch)| {
                let d = self.descriptor(image);
                serde_json::json!({
                    "mediaType": d["mediaType"], "digest": d["digest"], "size": d["size"],
                    "platform": {"architecture": arch, "os": "linux"},
                })
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let bytes = serde_json::to_vec(&index).expect("index");
        let digest = super::sha256_hex(&bytes);
        std::fs::write(self.path.join("blobs/sha256").join(&digest), &bytes).expect("index blob");
        let path = self.path.join("index.json");
        let mut top: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("index.json")).expect("json");
        top["manifests"]
            .as_array_mut()
            .expect("manifests")
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": format!("sha256:{digest}"),
                "size": bytes.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }));
        std::fs::write(&path, serde_json::to_vec(&top).expect("json")).expect("index.json");
    }

    /// Pushes `tag` to `registry` as `repository:tag` (with `extra` skopeo
    /// flags, such as `--format v2s2` or `--all`).
    pub async fn push(&self, tag: &str, registry: &Registry, repository: &str, extra: &[&str]) {
        let source = format!("oci:{}", self.image(tag));
        let dest = format!("docker://{}/{repository}:{tag}", registry.host());
        let mut args = vec![
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "pusher:secret",
        ];
        args.extend_from_slice(extra);
        args.push(&source);
        args.push(&dest);
        run("skopeo", &args).await;
    }
}

/// The digest the registry serves for `repository:reference` with `accept`.
pub async fn registry_digest(
    registry: &Registry,
    repository: &str,
    reference: &str,
    accept: &str,
) -> String {
    let resp = super::client()
        .head(format!(
            "{}/v2/{repository}/manifests/{reference}",
            registry.url()
        ))
        .header("accept", accept)
        .send()
        .await
        .expect("registry HEAD");
    assert_eq!(
        resp.status(),
        200,
        "HEAD {repository}:{reference} on the registry"
    );
    resp.headers()["docker-content-digest"]
        .to_str()
        .expect("digest")
        .to_string()
}

/// `skopeo copy` from artifactd into a `dir:` directory; returns the output.
pub async fn pull_to_dir(reference: &str, dest: &Path, extra: &[&str]) -> std::process::Output {
    let _ = std::fs::remove_dir_all(dest);
    let dest = format!("dir:{}", dest.display());
    let mut args = vec!["copy", "--src-tls-verify=false", "--retry-times", "0"];
    args.extend_from_slice(extra);
    args.push(reference);
    args.push(&dest);
    run_output("skopeo", &args).await
}

/// `skopeo copy` from artifactd into a `dir:` directory, which must succeed
/// with the image of manifest `digest` whole.
pub async fn pull_checked(reference: &str, dest: &Path, digest: &str) {
    let out = pull_to_dir(reference, dest, &[]).await;
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_dir_copy(dest, digest);
}

/// Checks a `dir:` copy: the manifest hashes to `digest` and every blob
/// file hashes to its name.
pub fn assert_dir_copy(dir: &Path, digest: &str) {
    let manifest = std::fs::read(dir.join("manifest.json")).expect("manifest.json");
    assert_eq!(format!("sha256:{}", super::sha256_hex(&manifest)), digest);
    for entry in std::fs::read_dir(dir).expect("copy dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()) {
            let bytes = std::fs::read(&path).expect("blob");
            assert_eq!(super::sha256_hex(&bytes), name, "blob {name} intact");
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A private containerd (Debian's, run as root like on a node) with its
/// own root, state and socket under a test directory; `ctr` talks to it.
pub struct Containerd {
    child: Child,
    socket: PathBuf,
    pub hosts_dir: PathBuf,
}

impl Containerd {
    pub async fn start(dir: &Path) -> Containerd {
        let dir = dir.join("containerd");
        let hosts_dir = dir.join("hosts");
        std::fs::create_dir_all(&hosts_dir).expect("containerd dir");
        let socket = dir.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\n[grpc]\n  address = \"{}\"\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n",
            dir.join("root").display(),
            dir.join("state").display(),
            socket.display()
        );
        std::fs::write(dir.join("config.toml"), config).expect("containerd config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("containerd (Debian package containerd) must be installed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "containerd did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Containerd {
            child,
            socket,
            hosts_dir,
        }
    }

    pub fn socket(&self) -> String {
        self.socket.display().to_string()
    }

    /// Writes `hosts.toml` files with `artifactd containerd-hosts`, as
    /// the docs and the DaemonSet do: each of `registries` (`REGISTRY` or
    /// `REGISTRY=REMOTE`) pulls through artifactd at `artifactd_url`.
    pub fn mirror(&self, artifactd_url: &str, registries: &[&str]) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_artifactd"))
            .arg("containerd-hosts")
            .arg("--dir")
            .arg(&self.hosts_dir)
            .args(["--mirror", artifactd_url])
            .args(registries)
            .output()
            .expect("run artifactd containerd-hosts");
        assert!(
            out.status.success(),
            "containerd-hosts: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ctr images pull` of `reference` through the configured mirrors.
    pub async fn pull(&self, reference: &str) -> std::process::Output {
        let socket = self.socket.display().to_string();
        let hosts = self.hosts_dir.display().to_string();
        run_output(
            "ctr",
            &[
                "-a",
                &socket,
                "images",
                "pull",
                "--hosts-dir",
                &hosts,
                "--snapshotter",
                "native",
                reference,
            ],
        )
        .await
    }

    /// The digest containerd recorded for `reference`.
    pub async fn image_digest(&self, reference: &str) -> String {
        let socket = self.socket.display().to_string();
        let list = run("ctr", &["-a", &socket, "images", "ls"]).await;
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(reference))
            .and_then(|l| l.split_whitespace().find(|w| w.starts_with("sha256:")))
            .unwrap_or_else(|| panic!("{reference} not in:\n{list}"))
            .to_string()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
