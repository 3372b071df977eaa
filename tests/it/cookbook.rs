//! The client cookbook (`docs/clients.md`) as a newcomer follows it: each
//! snippet marked `<!-- snippet: NAME -->` is read from the file, pointed
//! at a real artifactd, and used by the real client against a real
//! upstream — containerd, pip, uv, npm and apt. A snippet edited into
//! something that does not work fails here.

use crate::harness::apt::{AptClient, AptRepo, SUITE};
use crate::harness::npm::{node_bin, node_command, run_npm, Verdaccio};
use crate::harness::pypi::{installed_version, tool, PypiServer};
use crate::harness::registry::{registry_digest, Containerd, Registry};
use crate::harness::{run_client, Artifactd, Origin};
use std::path::Path;

/// Where the cookbook's clients reach artifactd.
const PLACEHOLDER: &str = "artifactd.example:8080";

/// The fenced block after `<!-- snippet: NAME -->` in docs/clients.md.
fn snippet(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/clients.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let marker = format!("<!-- snippet: {name} -->\n");
    let after = doc
        .split_once(&marker)
        .unwrap_or_else(|| panic!("no {marker:?} in {}", path.display()))
        .1;
    let (fence, rest) = after.split_once('\n').unwrap();
    assert!(
        fence.starts_with("```"),
        "{name}: the marker is not followed by a fenced block"
    );
    rest.split_once("```").unwrap().0.to_string()
}

/// The snippet `name`, pointed at `ad`.
fn pointed_at(name: &str, ad: &Artifactd) -> String {
    let text = snippet(name);
    assert!(
        text.contains(PLACEHOLDER),
        "{name} never names {PLACEHOLDER}"
    );
    text.replace(PLACEHOLDER, &ad.addr.to_string())
        .replace("artifactd.example", &ad.addr.ip().to_string())
}

#[tokio::test]
async fn containerd_pulls_through_the_documented_hosts_toml() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None).await;
    let layout = crate::oci::app_layout(dir.path(), 2, 30_000, 40).await;
    layout.push("app", &registry, "team/app", &[]).await;
    let digest = registry_digest(&registry, "team/app", "app", crate::oci::OCI_MANIFEST).await;
    let remotes = format!(
        "remotes:\n  hub:\n    base_url: \"{}\"\n    package: docker\n    mirror_of: [\"registry.example\"]\n",
        registry.url()
    );
    let ad = Artifactd::start(&dir.path().join("ad"), &remotes, "").await;
    let containerd = Containerd::start(dir.path()).await;
    let hosts = pointed_at("containerd-hosts.toml", &ad);
    let file = containerd.hosts_dir.join("registry.example/hosts.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &hosts).unwrap();

    let out = containerd.pull("registry.example/team/app:app").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        containerd
            .image_digest("registry.example/team/app:app")
            .await,
        digest
    );
    assert!(
        ad.log_text()
            .contains("/v2/team/app/manifests/app\" remote=hub"),
        "{}",
        ad.log_text()
    );

    // The documented command writes the documented file.
    containerd.mirror(&format!("http://{}", ad.addr), &["registry.example"]);
    let written = std::fs::read_to_string(&file).unwrap();
    let without_comment: String = written
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(without_comment, hosts);
}

#[tokio::test]
async fn pip_and_uv_install_with_the_documented_config_files() {
    let dir = tempfile::tempdir().unwrap();
    let server = PypiServer::start(dir.path()).await;
    server.add_wheel("Demo.App", "1.0", &["tiny-dep>=1"]);
    server.add_wheel("tiny-dep", "1.1", &[]);
    let remotes = format!(
        "remotes:\n  pypi:\n    base_url: \"{}\"\n    package: pypi\n",
        server.url()
    );
    let ad = Artifactd::start(&dir.path().join("ad"), &remotes, "").await;

    let pip_conf = dir.path().join("pip.conf");
    std::fs::write(&pip_conf, pointed_at("pip.conf", &ad)).unwrap();
    let target = dir.path().join("pip-target");
    let mut pip = tokio::process::Command::new(tool("pip"));
    pip.args(["install", "--no-cache-dir", "--no-compile", "--target"])
        .arg(&target)
        .arg("demo-app")
        .env("PIP_CONFIG_FILE", &pip_conf)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env_remove("PIP_INDEX_URL")
        .env("NO_PROXY", "*");
    let (ok, out) = run_client(&mut pip).await;
    assert!(ok, "pip: {out}");
    assert_eq!(
        installed_version(&target, "tiny_dep").as_deref(),
        Some("1.1")
    );

    let uv_toml = dir.path().join("uv.toml");
    std::fs::write(&uv_toml, pointed_at("uv.toml", &ad)).unwrap();
    let target = dir.path().join("uv-target");
    let mut uv = tokio::process::Command::new(tool("uv"));
    uv.args(["pip", "install", "--no-cache", "--config-file"])
        .arg(&uv_toml)
        .arg("--python")
        .arg(tool("python"))
        .arg("--target")
        .arg(&target)
        .arg("demo-app")
        .env_remove("UV_INDEX_URL")
        .env_remove("UV_DEFAULT_INDEX")
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env("NO_PROXY", "*");
    let (ok, out) = run_client(&mut uv).await;
    assert!(ok, "uv: {out}");
    assert_eq!(
        installed_version(&target, "tiny_dep").as_deref(),
        Some("1.1")
    );
    // Both reached the upstream through artifactd: the wheel once.
    assert_eq!(server.count("/packages/tiny_dep-1.1-py3-none-any.whl"), 1);
}

#[tokio::test]
async fn npm_installs_with_the_documented_npmrc() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Verdaccio::start(dir.path()).await;
    upstream.publish("tiny-dep", "1.0.0", &[]).await;
    let remotes = format!(
        "remotes:\n  npm:\n    base_url: \"{}\"\n    package: npm\n",
        upstream.url()
    );
    let ad = Artifactd::start(&dir.path().join("ad"), &remotes, "").await;
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("package.json"),
        r#"{"name":"project","version":"1.0.0","private":true}"#,
    )
    .unwrap();
    std::fs::write(project.join(".npmrc"), pointed_at(".npmrc", &ad)).unwrap();
    std::fs::write(dir.path().join("empty-user-npmrc"), "").unwrap();
    let mut npm = node_command(node_bin().join("npm"));
    npm.current_dir(&project)
        .arg("install")
        .arg("--userconfig")
        .arg(dir.path().join("empty-user-npmrc"))
        .arg("--cache")
        .arg(dir.path().join("npm-cache"))
        .arg("tiny-dep");
    let (ok, out) = run_npm(&mut npm).await;
    assert!(ok, "npm: {out}");
    assert_eq!(
        crate::harness::npm::installed_version(&project, "tiny-dep").as_deref(),
        Some("1.0.0")
    );
    let lock = std::fs::read_to_string(project.join("package-lock.json")).unwrap();
    assert!(
        lock.contains(&format!("http://{}/api/v1/remote/npm/", ad.addr)),
        "{lock}"
    );
}

#[tokio::test]
async fn apt_updates_and_downloads_with_the_documented_sources_list() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let mut repo = AptRepo::new(dir.path(), "/debian");
    repo.build("adtest", "1.0", None);
    repo.publish(&origin);
    let remotes = format!(
        "remotes:\n  debian:\n    base_url: \"{}/debian\"\n    package: apt\n",
        origin.base_url()
    );
    let ad = Artifactd::start(&dir.path().join("ad"), &remotes, "").await;
    // The documented line, with this test's suite and signing key.
    let sources = pointed_at("sources.list", &ad)
        .replace(
            "/usr/share/keyrings/debian-archive-keyring.gpg",
            &repo.key.display().to_string(),
        )
        .replace(" bookworm ", &format!(" {SUITE} "));
    let apt = AptClient::with_sources(&dir.path().join("apt"), sources, None);
    let (ok, out) = apt.update_and_download("adtest").await;
    assert!(ok, "{out}");
    assert_eq!(
        apt.downloaded("adtest", "1.0"),
        Some(std::fs::read(repo.deb("adtest", "1.0")).unwrap())
    );
}
