//! Sets `ARTIFACTD_REVISION`, the commit `artifactd_build_info` and the
//! status page name: from the environment when a packager sets it (a
//! source tarball has no `.git`), else from git, else `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ARTIFACTD_REVISION");
    let git = Path::new(".git");
    if git.is_dir() {
        // A new commit moves the branch the HEAD names, or packs its refs.
        println!("cargo:rerun-if-changed=.git/HEAD");
        println!("cargo:rerun-if-changed=.git/packed-refs");
        if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
            if let Some(branch) = head.trim().strip_prefix("ref: ") {
                println!("cargo:rerun-if-changed=.git/{branch}");
            }
        }
    }
    let revision = std::env::var("ARTIFACTD_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(from_git)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=ARTIFACTD_REVISION={revision}");
}

fn from_git() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let revision = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !revision.is_empty()).then_some(revision)
}
