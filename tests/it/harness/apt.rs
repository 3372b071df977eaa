//! APT repositories for the package-format tests: packages built with
//! `dpkg-deb`, a suite with `apt-ftparchive` (by-hash, as Debian
//! publishes), `InRelease` and `Release.gpg` signed with a throwaway `gpg`
//! key, published to the counting origin; and the machine's own `apt-get`
//! with a private state, cache and sources list as the client.

use super::origin::mirror_dir;
use super::Origin;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The suite every test repository has: `stable`, component `main`,
/// architecture `amd64`.
pub const SUITE: &str = "stable";

/// A repository directory mirrored onto the origin under `prefix`.
pub struct AptRepo {
    pub dir: PathBuf,
    work: PathBuf,
    gnupg: PathBuf,
    /// The public key clients trust (`signed-by`).
    pub key: PathBuf,
    prefix: String,
    published: BTreeSet<String>,
}

fn run(command: &mut Command) -> Vec<u8> {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl AptRepo {
    /// An empty repository with a new signing key.
    pub fn new(dir: &Path, prefix: &str) -> AptRepo {
        let repo = AptRepo {
            dir: dir.join("apt-repo"),
            work: dir.join("apt-build"),
            gnupg: dir.join("gnupg"),
            key: dir.join("apt-key.gpg"),
            prefix: prefix.trim_end_matches('/').to_string(),
            published: BTreeSet::new(),
        };
        std::fs::create_dir_all(repo.dir.join("pool/main")).unwrap();
        std::fs::create_dir_all(repo.dir.join(format!("dists/{SUITE}/main/binary-amd64"))).unwrap();
        std::fs::create_dir_all(&repo.work).unwrap();
        std::fs::create_dir_all(&repo.gnupg).unwrap();
        std::fs::set_permissions(
            &repo.gnupg,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        run(repo.gpg().args([
            "--passphrase",
            "",
            "--quick-gen-key",
            "artifactd test <test@artifactd.invalid>",
            "ed25519",
            "sign",
            "never",
        ]));
        let public = run(repo.gpg().arg("--export"));
        std::fs::write(&repo.key, public).unwrap();
        repo
    }

    fn gpg(&self) -> Command {
        let mut command = Command::new("gpg");
        command
            .env("GNUPGHOME", &self.gnupg)
            .args(["--batch", "--yes"]);
        command
    }

    /// Builds `pool/main/{name}_{version}_all.deb`, which installs
    /// `/usr/share/{name}/version`; `depends` becomes its `Depends`.
    pub fn build(&self, name: &str, version: &str, depends: Option<&str>) -> PathBuf {
        let root = self.work.join(format!("{name}-{version}"));
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::create_dir_all(root.join(format!("usr/share/{name}"))).unwrap();
        std::fs::write(root.join(format!("usr/share/{name}/version")), version).unwrap();
        let depends = depends.map_or(String::new(), |d| format!("Depends: {d}\n"));
        let control = format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: artifactd <test@artifactd.invalid>\n{depends}Description: test package {name}\n"
        );
        std::fs::write(root.join("DEBIAN/control"), control).unwrap();
        let deb = self.deb(name, version);
        run(Command::new("dpkg-deb")
            .args(["-Zgzip", "--root-owner-group", "--build"])
            .arg(&root)
            .arg(&deb));
        deb
    }

    /// Where the package `name` `version` is in the repository.
    pub fn deb(&self, name: &str, version: &str) -> PathBuf {
        self.dir.join(format!("pool/main/{name}_{version}_all.deb"))
    }

    /// Regenerates the suite (package lists in three compressions and
    /// their by-hash copies, `Release`, `InRelease`, `Release.gpg`) and
    /// mirrors the directory onto `origin`, the suite's release files last.
    pub fn publish(&mut self, origin: &Origin) {
        let config = self.work.join("generate.conf");
        std::fs::write(
            &config,
            format!(
                "Dir {{ ArchiveDir \"{}\"; CacheDir \"{}\"; }};\n\
                 Default {{ Packages::Compress \". gzip xz\"; Contents::Compress \"gzip\"; }};\n\
                 TreeDefault {{ Directory \"pool/$(SECTION)\"; }};\n\
                 Tree \"dists/{SUITE}\" {{ Sections \"main\"; Architectures \"amd64\"; }};\n",
                self.dir.display(),
                self.work.display()
            ),
        )
        .unwrap();
        run(Command::new("apt-ftparchive").arg("generate").arg(&config));
        let suite = self.dir.join(format!("dists/{SUITE}"));
        for stale in ["Release", "InRelease", "Release.gpg"] {
            let _ = std::fs::remove_file(suite.join(stale));
        }
        let release = run(Command::new("apt-ftparchive")
            .args([
                "-o",
                "APT::FTPArchive::DoByHash=1",
                "-o",
                "APT::FTPArchive::Release::Acquire-By-Hash=yes",
                "-o",
                &format!("APT::FTPArchive::Release::Suite={SUITE}"),
                "-o",
                &format!("APT::FTPArchive::Release::Codename={SUITE}"),
                "-o",
                "APT::FTPArchive::Release::Architectures=amd64",
                "-o",
                "APT::FTPArchive::Release::Components=main",
                "release",
            ])
            .arg(&suite));
        std::fs::write(suite.join("Release"), release).unwrap();
        let release_path = suite.join("Release");
        run(self
            .gpg()
            .arg("--clearsign")
            .arg("-o")
            .arg(suite.join("InRelease"))
            .arg(&release_path));
        run(self
            .gpg()
            .arg("-abs")
            .arg("-o")
            .arg(suite.join("Release.gpg"))
            .arg(&release_path));
        let prefix = self.prefix.clone();
        mirror_dir(origin, &self.dir, &prefix, &mut self.published, |p| {
            p.ends_with("Release") || p.ends_with("Release.gpg")
        });
    }

    /// The suite's package lists and their by-hash copies, as published.
    pub fn package_lists(&self) -> Vec<String> {
        self.published
            .iter()
            .filter(|p| p.contains("/binary-amd64/"))
            .cloned()
            .collect()
    }
}

/// How an `apt-get` reaches artifactd.
pub enum Via {
    /// `deb http://ARTIFACTD/api/v1/remote/REMOTE stable main`.
    Mirror(String),
    /// `deb UPSTREAM-URL stable main` with `Acquire::http::Proxy`.
    Proxy { upstream: String, proxy: String },
}

/// A private apt client: its own state, cache and sources list under
/// `dir`, and an empty dpkg status (nothing installed).
pub struct AptClient {
    dir: PathBuf,
    sources: String,
    proxy: Option<String>,
}

impl AptClient {
    pub fn new(dir: &Path, via: &Via, key: &Path) -> AptClient {
        let (url, proxy) = match via {
            Via::Mirror(url) => (url.clone(), None),
            Via::Proxy { upstream, proxy } => (upstream.clone(), Some(proxy.clone())),
        };
        let sources = format!("deb [signed-by={}] {url} {SUITE} main\n", key.display());
        AptClient::with_sources(dir, sources, proxy)
    }

    /// A client reading `sources` as its `sources.list`, through `proxy`
    /// if given.
    pub fn with_sources(dir: &Path, sources: String, proxy: Option<String>) -> AptClient {
        for sub in ["state/lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("status"), "").unwrap();
        std::fs::write(dir.join("sources.list"), &sources).unwrap();
        AptClient {
            dir: dir.to_path_buf(),
            sources,
            proxy,
        }
    }

    fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("apt-get");
        let dir = self.dir.display();
        let options = [
            format!("Dir::State={dir}/state"),
            format!("Dir::State::status={dir}/status"),
            format!("Dir::Cache={dir}/cache"),
            format!("Dir::Etc::SourceList={dir}/sources.list"),
            "Dir::Etc::SourceParts=/nonexistent".to_string(),
            "Dir::Etc::Preferences=/nonexistent".to_string(),
            "Dir::Etc::PreferencesParts=/nonexistent".to_string(),
            "Debug::NoLocking=1".to_string(),
            "APT::Sandbox::User=root".to_string(),
            "Acquire::Languages=none".to_string(),
            "APT::Architecture=amd64".to_string(),
            "APT::Architectures=amd64".to_string(),
            "Acquire::Retries=0".to_string(),
        ];
        let proxy = self
            .proxy
            .iter()
            .map(|p| format!("Acquire::http::Proxy={p}"));
        command.arg("-q");
        for option in options.into_iter().chain(proxy) {
            command.arg("-o").arg(option);
        }
        // apt reads /etc/apt/apt.conf.d of the machine too; these options
        // override what matters. A proxy in the environment must not.
        command.env_remove("http_proxy").env_remove("HTTP_PROXY");
        command
    }

    /// `apt-get update`; a failed fetch (a hash mismatch among them) fails
    /// it, as `update` only warns on some.
    pub async fn update(&self) -> (bool, String) {
        let (ok, out) = super::run_client(self.command().arg("update")).await;
        let clean = ok && !out.contains("Err:") && !out.contains("W: ") && !out.contains("E: ");
        (clean, format!("{}{out}", self.sources))
    }

    /// `apt-get install --download-only PACKAGE`.
    pub async fn download(&self, package: &str) -> (bool, String) {
        let mut command = self.command();
        command.args(["install", "-y", "--download-only", package]);
        let (ok, out) = super::run_client(&mut command).await;
        (ok, format!("{}{out}", self.sources))
    }

    /// `update`, then `download`; the output of both.
    pub async fn update_and_download(&self, package: &str) -> (bool, String) {
        let (ok, out) = self.update().await;
        if !ok {
            return (false, out);
        }
        let (ok, more) = self.download(package).await;
        (ok, format!("{out}{more}"))
    }

    /// The bytes of a downloaded package, if it was downloaded.
    pub fn downloaded(&self, name: &str, version: &str) -> Option<Vec<u8>> {
        let file = format!("{name}_{version}_all.deb");
        std::fs::read(self.dir.join("cache/archives").join(file)).ok()
    }
}
