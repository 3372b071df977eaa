//! `artifactd reload`: what `systemctl reload` runs. It reloads the running
//! artifactd in place (SIGHUP: configuration and certificates), or, when the
//! binary on disk is no longer the one running, hands the service over to
//! the new binary (`serve -u`), so an upgrade is "install, reload".
//!
//! Run as the unit's `ExecReload`, the new process starts inside the
//! service's cgroup and inherits `NOTIFY_SOCKET`; once it serves it names
//! itself the main process (`MAINPID=`, with `NotifyAccess=all`) and the old
//! one finishes its transfers and exits. Listening sockets pass from one to
//! the other, so no connection is refused.

use crate::config::Config;
use anyhow::{bail, Context};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// How long the new process may take to serve.
const START_WAIT: Duration = Duration::from_secs(90);

pub fn run(config: &Config, config_path: &Path) -> anyhow::Result<ExitCode> {
    let pid_file = crate::lifecycle::pid_file(&config.server);
    let running = crate::lifecycle::recorded_process(&pid_file)?;
    if !binary_replaced(running)? {
        // SAFETY: sends a signal; no memory is touched.
        if unsafe { libc::kill(running, libc::SIGHUP) } != 0 {
            bail!(
                "SIGHUP to process {running}: {}",
                std::io::Error::last_os_error()
            );
        }
        println!("asked process {running} to reload its configuration and certificates");
        return Ok(ExitCode::SUCCESS);
    }
    let successor = start_successor(config_path, &pid_file, running)?;
    println!("process {running} handed the service over to process {successor} (the new binary)");
    Ok(ExitCode::SUCCESS)
}

/// Whether process `pid` runs another file than this command's binary
/// (replaced on disk since it started).
fn binary_replaced(pid: i32) -> anyhow::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let running = std::fs::metadata(format!("/proc/{pid}/exe"))
        .with_context(|| format!("reading the binary of process {pid}"))?;
    let here = std::env::current_exe().context("finding this binary")?;
    let on_disk =
        std::fs::metadata(&here).with_context(|| format!("reading {}", here.display()))?;
    Ok((running.dev(), running.ino()) != (on_disk.dev(), on_disk.ino()))
}

/// Starts `serve -u` from this binary, detached from this command, and
/// waits until it serves (it writes the pid file then).
fn start_successor(config_path: &Path, pid_file: &Path, running: i32) -> anyhow::Result<u32> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("--config")
        .arg(config_path)
        .args(["serve", "--upgrade"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: setsid is async-signal-safe; the child leaves this command's
    // session, so it outlives it (systemd's ExecReload ends here).
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn().context("starting the new binary")?;
    let successor = child.id();
    let started = Instant::now();
    while started.elapsed() < START_WAIT {
        if crate::lifecycle::read_pid(pid_file) == Some(successor as i32) {
            return Ok(successor);
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the new binary exited ({status}) before serving; process {running} still serves"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the new binary (process {successor}) did not serve within {START_WAIT:?}")
}
