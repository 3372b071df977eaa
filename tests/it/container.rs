//! The container image: `make image` builds it with podman from this
//! machine's files, and the image serves from a mounted configuration as a
//! non-root user on a read-only root file system — a generic file fetched
//! with curl and an image copied with skopeo, each from its upstream once.

use crate::harness::artifactd::free_port;
use crate::harness::registry::{pull_checked, registry_digest, Registry};
use crate::harness::{pattern_bytes, sha256_hex, Origin, OriginFile};
use std::path::Path;
use std::process::{Command, Output};

const IMAGE: &str = "artifactd:latest";
/// The user the image runs as (scripts/image.sh).
const IMAGE_UID: &str = "65532";

/// Runs podman as these machines run containers: runc, cgroupfs, the
/// host's network, and a containers.conf without default ulimits.
fn podman(dir: &Path, args: &[&str]) -> Output {
    let conf = dir.join("containers.conf");
    if !conf.exists() {
        std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
    }
    Command::new("podman")
        .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
        .args(args)
        .env("CONTAINERS_CONF", &conf)
        .output()
        .expect("run podman")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `make image`, as a user runs it; its report line.
fn make_image() -> String {
    let out = Command::new("make")
        .args(["-s", "image"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run make image");
    assert!(out.status.success(), "make image:\n{}", text(&out));
    let report = text(&out);
    let line = report
        .lines()
        .find(|l| l.starts_with("image "))
        .unwrap_or_else(|| panic!("{report}"));
    line.to_string()
}

/// A running container, removed when the test ends.
struct Container {
    name: String,
    dir: std::path::PathBuf,
}

impl Drop for Container {
    fn drop(&mut self) {
        podman(&self.dir, &["rm", "-f", "-t", "0", &self.name]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_serves_files_and_images_as_a_non_root_user() {
    let report = make_image();
    eprintln!("{report}");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let inspect = podman(root, &["image", "inspect", "--format", "{{.Size}}", IMAGE]);
    let size: u64 = String::from_utf8_lossy(&inspect.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}", text(&inspect)));
    assert!(size < 40_000_000, "the image is {size} bytes");
    let revision = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let labels = podman(
        root,
        &[
            "image",
            "inspect",
            "--format",
            "{{index .Labels \"org.opencontainers.image.revision\"}}",
            IMAGE,
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&labels.stdout).trim(),
        String::from_utf8_lossy(&revision.stdout).trim()
    );

    // Upstreams: a file server and a registry holding one image.
    let origin = Origin::start().await;
    let tarball = pattern_bytes(300_000, 21);
    origin.put(
        "/releases/tool-1.0.tar.gz",
        OriginFile::new(tarball.clone()),
    );
    let registry = Registry::start(root, None).await;
    let layout = crate::oci::app_layout(root, 2, 50_000, 5).await;
    layout.push("app", &registry, "team/app", &[]).await;
    let digest = registry_digest(&registry, "team/app", "app", crate::oci::OCI_MANIFEST).await;

    // The mounted configuration folder, and the cache volume the image's
    // user owns.
    let port = free_port();
    let conf = root.join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("artifactd.yaml"),
        format!("listen: \"127.0.0.1:{port}\"\nremotes: /etc/artifactd/remotes.yaml\nstorage: fs:///var/cache/artifactd/objects\nprocess: {{upgrade_socket: /var/cache/artifactd/artifactd-upgrade.sock}}\n"),
    )
    .unwrap();
    std::fs::write(
        conf.join("remotes.yaml"),
        format!(
            "remotes:\n  files:\n    base_url: \"{}\"\n    type: remote\n    package: generic\n  hub:\n    base_url: \"{}\"\n    type: remote\n    package: docker\n",
            origin.base_url(),
            registry.url()
        ),
    )
    .unwrap();
    let cache = root.join("cache");
    std::fs::create_dir(&cache).unwrap();
    let chown = Command::new("chown")
        .args([&format!("{IMAGE_UID}:{IMAGE_UID}"), cache.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chown.success());

    let name = format!("artifactd-test-{port}");
    let started = podman(
        root,
        &[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "host",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "-v",
            &format!("{}:/etc/artifactd:ro", conf.display()),
            "-v",
            &format!("{}:/var/cache/artifactd", cache.display()),
            IMAGE,
        ],
    );
    assert!(started.status.success(), "podman run: {}", text(&started));
    let container = Container {
        name: name.clone(),
        dir: root.to_path_buf(),
    };
    let base = format!("http://127.0.0.1:{port}");
    if !crate::harness::answers_ok(&format!("{base}/readyz"), 30).await {
        panic!(
            "not ready in 30 s:\n{}",
            text(&podman(root, &["logs", &name]))
        );
    }

    // Runs as the image's user, not root.
    let pid = podman(root, &["inspect", "--format", "{{.State.Pid}}", &name]);
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uids.split_whitespace().skip(1).collect::<Vec<_>>(),
        [IMAGE_UID; 4],
        "{uids}"
    );
    let health = podman(root, &["healthcheck", "run", &name]);
    assert!(health.status.success(), "health check: {}", text(&health));

    // A file with curl, twice: fetched once, then served from the volume.
    let url = format!("{base}/api/v1/remote/files/releases/tool-1.0.tar.gz");
    for source in ["remote", "cache"] {
        let saved = root.join("tool.tar.gz");
        let out = Command::new("curl")
            .args(["-sS", "-D", "-", "-o", saved.to_str().unwrap(), &url])
            .output()
            .unwrap();
        let head = text(&out);
        assert!(
            out.status.success() && head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("x-artifact-source: {source}")),
            "{head}"
        );
        assert_eq!(
            sha256_hex(&std::fs::read(&saved).unwrap()),
            sha256_hex(&tarball)
        );
    }
    assert_eq!(origin.hits("/releases/tool-1.0.tar.gz"), 1);

    // An image with skopeo through the docker remote.
    let copy = root.join("copy");
    let reference = format!("docker://127.0.0.1:{port}/hub/team/app:app");
    for _ in 0..2 {
        pull_checked(&reference, &copy, &digest).await;
    }
    assert_eq!(
        registry.gets("/blobs/"),
        3,
        "config and two layers, once each"
    );
    drop(container);
}
