//! RPM repositories for the package-format tests: packages built with
//! `rpmbuild`, metadata with `createrepo_c`, published to the counting
//! origin (so a regeneration removes the old repodata as a real mirror
//! does), and `dnf --installroot` as the client.

use super::Origin;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A repository directory mirrored onto the origin under `prefix`.
pub struct RpmRepo {
    pub dir: PathBuf,
    work: PathBuf,
    prefix: String,
    published: BTreeSet<String>,
}

impl RpmRepo {
    pub fn new(dir: &Path, prefix: &str) -> RpmRepo {
        let repo = dir.join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        RpmRepo {
            dir: repo,
            work: dir.join("rpmbuild"),
            prefix: prefix.trim_end_matches('/').to_string(),
            published: BTreeSet::new(),
        }
    }

    /// Builds a noarch package `name-version-1` that installs
    /// `/usr/share/NAME/VERSION` containing the version.
    pub fn build(&self, name: &str, version: &str) -> PathBuf {
        let spec = self.work.join(format!("{name}.spec"));
        std::fs::create_dir_all(&self.work).unwrap();
        let text = format!(
            "Name: {name}\nVersion: {version}\nRelease: 1\nSummary: test package\nLicense: MIT\nBuildArch: noarch\n%description\nA test package.\n%install\nmkdir -p %{{buildroot}}/usr/share/{name}\necho {version} > %{{buildroot}}/usr/share/{name}/VERSION\n%files\n/usr/share/{name}/VERSION\n"
        );
        std::fs::write(&spec, text).unwrap();
        let out = std::process::Command::new("rpmbuild")
            .arg("-bb")
            .arg("--define")
            .arg(format!("_topdir {}", self.work.display()))
            .arg(&spec)
            .output()
            .expect("rpmbuild (Debian package rpm) must be installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = format!("{name}-{version}-1.noarch.rpm");
        let built = self.work.join("RPMS/noarch").join(&file);
        let target = self.dir.join(&file);
        std::fs::copy(built, &target).unwrap();
        target
    }

    /// Regenerates the metadata and mirrors the directory onto `origin`:
    /// new files first, then the ones that are gone are removed.
    pub fn publish(&mut self, origin: &Origin) {
        let out = std::process::Command::new("createrepo_c")
            .arg("-q")
            .arg(&self.dir)
            .output()
            .expect("createrepo_c (Debian package createrepo-c) must be installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // repomd.xml last: a mirror syncs the files it names first.
        let prefix = self.prefix.clone();
        super::origin::mirror_dir(origin, &self.dir, &prefix, &mut self.published, |p| {
            p.ends_with("repomd.xml")
        });
    }

    /// The files `repodata/` holds now.
    pub fn repodata(&self) -> Vec<String> {
        self.published
            .iter()
            .filter(|p| p.starts_with("repodata/"))
            .cloned()
            .collect()
    }
}

/// `dnf install PACKAGE` into a fresh installroot from the repository at
/// `url` only, metadata always fetched anew; returns (success, output).
pub async fn dnf_install(url: &str, root: &Path, package: &str) -> (bool, String) {
    let mut command = tokio::process::Command::new("dnf");
    command
        .args(["-y", "--installroot"])
        .arg(root)
        .args([
            "--setopt=reposdir=/dev/null",
            "--noplugins",
            "--releasever=1",
        ])
        .arg(format!("--repofrompath=t,{url}"))
        .args([
            "--setopt=t.gpgcheck=0",
            "--setopt=skip_if_unavailable=False",
            "--setopt=t.metadata_expire=0",
            "--setopt=install_weak_deps=False",
        ])
        .arg(format!(
            "--setopt=cachedir={}",
            root.join("cache").display()
        ))
        .args(["install", package]);
    super::run_client(&mut command).await
}
