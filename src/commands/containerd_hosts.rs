//! `artifactd containerd-hosts`: writes containerd's `hosts.toml` for each
//! mirrored registry, so a node's containerd pulls through artifactd. The
//! Kubernetes DaemonSet (`deploy/kubernetes/containerd-mirror`) runs it on
//! every node; on a single host it is run once.
//!
//! Two forms, the two artifactd answers:
//! - `REGISTRY`: a docker remote lists it in `mirror_of`; containerd sends
//!   `/v2/{name}/…?ns=REGISTRY` to the mirror and artifactd picks the remote.
//! - `REGISTRY=REMOTE`: the remote's own prefix, `/v2/REMOTE/{name}/…`, with
//!   `override_path`, for a registry no remote lists.
//!
//! Each file is written whole (a temporary file renamed over it) and only
//! when it changes; `--keep-running` checks again every minute, so a file
//! removed by hand comes back.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct ContainerdHostsArgs {
    /// artifactd as this host reaches it, e.g. `http://10.0.0.5:30080`.
    #[arg(long)]
    pub mirror: String,
    /// containerd's `config_path` (its CRI registry setting).
    #[arg(long, default_value = "/etc/containerd/certs.d")]
    pub dir: PathBuf,
    /// Keep running and rewrite a file that changed or went away (for a
    /// DaemonSet, whose pods must not exit).
    #[arg(long)]
    pub keep_running: bool,
    /// `REGISTRY` (a docker remote's `mirror_of`) or `REGISTRY=REMOTE`.
    #[arg(required = true)]
    pub registries: Vec<String>,
}

/// One registry's mirror: where containerd sends its requests.
#[derive(Debug, PartialEq, Eq)]
struct Mirror<'a> {
    registry: &'a str,
    remote: Option<&'a str>,
}

fn parse(spec: &str) -> anyhow::Result<Mirror<'_>> {
    let (registry, remote) = match spec.split_once('=') {
        Some((registry, remote)) => (registry, Some(remote)),
        None => (spec, None),
    };
    let valid_host = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
    };
    if !valid_host(registry) {
        bail!("{spec:?}: {registry:?} is not a registry host (host or host:port)");
    }
    if let Some(remote) = remote.filter(|r| r.is_empty() || r.contains('/')) {
        bail!("{spec:?}: {remote:?} is not a remote name");
    }
    Ok(Mirror { registry, remote })
}

/// The `hosts.toml` of `mirror`, with `base` the mirror's URL. The
/// registry itself stays the `server`: containerd falls back to it when
/// artifactd cannot answer.
fn hosts_toml(mirror: &Mirror<'_>, base: &str) -> String {
    let base = base.trim_end_matches('/');
    let (host, override_path) = match mirror.remote {
        Some(remote) => (format!("{base}/v2/{remote}"), "  override_path = true\n"),
        None => (base.to_string(), ""),
    };
    format!(
        "# Written by artifactd containerd-hosts: pulls of {registry} go through artifactd.\nserver = \"https://{registry}\"\n\n[host.\"{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n{override_path}",
        registry = mirror.registry
    )
}

/// Writes `content` to `path` unless it already holds it; whether it wrote.
fn write_if_changed(path: &Path, content: &str) -> anyhow::Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|current| current == content) {
        return Ok(false);
    }
    let dir = path.parent().context("a hosts.toml path has a folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let temporary = path.with_extension("toml.tmp");
    std::fs::write(&temporary, content)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(true)
}

pub fn run(args: &ContainerdHostsArgs) -> anyhow::Result<ExitCode> {
    if !(args.mirror.starts_with("http://") || args.mirror.starts_with("https://")) {
        bail!("--mirror {:?}: an http:// or https:// URL", args.mirror);
    }
    let mirrors: Vec<Mirror<'_>> = args
        .registries
        .iter()
        .map(|s| parse(s))
        .collect::<anyhow::Result<_>>()?;
    loop {
        for mirror in &mirrors {
            let path = args.dir.join(mirror.registry).join("hosts.toml");
            if write_if_changed(&path, &hosts_toml(mirror, &args.mirror))? {
                println!(
                    "{}: pulls of {} go through {}",
                    path.display(),
                    mirror.registry,
                    args.mirror
                );
            }
        }
        if !args.keep_running {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirror_of_registry_sends_ns_and_a_named_remote_overrides_the_path() {
        let by_ns = hosts_toml(
            &parse("registry.example").unwrap(),
            "http://10.0.0.5:30080/",
        );
        assert_eq!(
            by_ns,
            "# Written by artifactd containerd-hosts: pulls of registry.example go through artifactd.\nserver = \"https://registry.example\"\n\n[host.\"http://10.0.0.5:30080\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        );
        let by_path = hosts_toml(&parse("quay.example:5000=hub").unwrap(), "http://a:1");
        assert!(
            by_path.contains("[host.\"http://a:1/v2/hub\"]\n"),
            "{by_path}"
        );
        assert!(by_path.ends_with("  override_path = true\n"), "{by_path}");
    }

    #[test]
    fn bad_registries_and_remotes_are_refused_by_name() {
        for spec in ["", "a/b", "reg.example=", "reg.example=a/b", "bad host"] {
            let error = parse(spec).unwrap_err().to_string();
            assert!(error.starts_with(&format!("{spec:?}")), "{error}");
        }
    }

    #[test]
    fn a_file_is_rewritten_only_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.example/hosts.toml");
        assert!(write_if_changed(&path, "a").unwrap());
        assert!(!write_if_changed(&path, "a").unwrap());
        assert!(write_if_changed(&path, "b").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b");
        assert!(!path.with_extension("toml.tmp").exists());
    }
}
