//! The process lifecycle around pingora's server: readiness, graceful stop
//! and graceful upgrade.
//!
//! Pingora handles the signals (SIGTERM: stop accepting, then wait out the
//! grace period; SIGQUIT: hand the listening sockets to a new process over
//! the upgrade socket, then the same) but always sleeps the *whole* grace
//! period, and knows nothing of systemd. This module adds:
//! - readiness: `READY=1` to systemd once every listener accepts, and a
//!   pid file, so `systemctl start` and scripts know when to proceed;
//! - an early exit: once no request is in flight during the grace period,
//!   and no commit runs after its client got the body, the catalog queue
//!   and the index snapshot are written and the process
//!   exits, instead of idling until the period ends;
//! - `serve -u` as one command: the new process finds the old one through
//!   the pid file and sends it SIGQUIT once it is waiting for the sockets;
//! - no connection lost at the stop: pingora drops every connection still
//!   waiting for its request header the moment it stops listening, and a
//!   connection accepted a moment before the stop has not sent it yet. So
//!   connections count as in flight as well as requests ([`Counted`]), and
//!   pingora's drop waits [`SETTLE`] for those requests to arrive.

use crate::catalog::CatalogWriter;
use crate::config::ServerConfig;
use anyhow::{bail, Context};
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use sd_notify::NotifyState;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, Notify};

/// Connections open and requests being served, so a stopping process
/// knows when it is done.
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// Held by each connection's task and each request's context; dropped when
/// the connection closes or pingora drops the context after the response is
/// fully written and logged.
pub struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    pub fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    async fn until_idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.current() == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// How long a stopping process gives connections it accepted just before
/// the stop to send their request (a round trip, or a TLS handshake and a
/// round trip) before pingora drops those still silent.
pub const SETTLE: Duration = Duration::from_secs(1);

/// A pingora app whose open connections count as in flight, and whose
/// cleanup (pingora's drop of connections waiting for a request) waits
/// [`SETTLE`] after the listeners close.
pub struct Counted<A> {
    inner: Arc<A>,
    in_flight: Arc<InFlight>,
}

impl<A> Counted<A> {
    pub fn new(inner: A, in_flight: Arc<InFlight>) -> Self {
        Self {
            inner: Arc::new(inner),
            in_flight,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Counted<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = self.in_flight.enter();
        self.inner.process_new(session, shutdown).await
    }

    async fn cleanup(&self) {
        tokio::time::sleep(SETTLE).await;
        self.inner.cleanup().await;
    }
}

/// What the supervisor needs of the running server.
pub struct Supervised {
    pub in_flight: Arc<InFlight>,
    pub catalog_writer: Arc<CatalogWriter>,
    /// Audited deliveries not yet handed to the catalog writer.
    pub audit: Arc<crate::audit::pending::Pending>,
    /// Writes its index snapshot at the end, for the next start.
    pub storage: &'static crate::storage::CacheStorage,
    pub listeners: Vec<std::net::SocketAddr>,
    pub pid_file: PathBuf,
    /// Started with `serve -u`: this process takes the service over.
    pub took_over: bool,
}

/// Follows pingora's execution phases on `runtime` until the process ends.
pub fn supervise(
    mut phases: broadcast::Receiver<ExecutionPhase>,
    supervised: Supervised,
    runtime: &tokio::runtime::Handle,
) {
    runtime.spawn(async move {
        let mut handed_over = false;
        loop {
            let phase = match phases.recv().await {
                Ok(phase) => phase,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            match phase {
                ExecutionPhase::Running => ready(&supervised).await,
                ExecutionPhase::GracefulTerminate => stopping("SIGTERM: stopping"),
                ExecutionPhase::GracefulUpgradeTransferringFds => {
                    handed_over = true;
                    handing_over()
                }
                ExecutionPhase::ShutdownGracePeriod => {
                    if handed_over {
                        until_successor_serves(&supervised.pid_file).await;
                    }
                    finish(&supervised).await
                }
                _ => {}
            }
        }
    });
}

async fn ready(supervised: &Supervised) {
    for address in &supervised.listeners {
        if !accepts(*address).await {
            log::error!("listener {address} does not accept connections");
        }
    }
    let status = format!("serving on {} listener(s)", supervised.listeners.len());
    // A successor names itself the service's main process (the unit needs
    // `NotifyAccess=all`) before the pid file tells its predecessor it may
    // exit: systemd reads notifications before exits, so it never sees the
    // main process gone while one still serves.
    let pid = std::process::id();
    let mut notice = vec![NotifyState::Ready, NotifyState::Status(&status)];
    if supervised.took_over {
        notice.push(NotifyState::MainPid(pid));
    }
    if let Err(e) = sd_notify::notify(&notice) {
        log::warn!("could not notify systemd of readiness: {e}");
    }
    if let Err(e) = write_pid_file(&supervised.pid_file) {
        log::warn!("pid file {}: {e}", supervised.pid_file.display());
    }
}

fn stopping(why: &str) {
    log::info!("{why}; in-flight transfers may finish within the grace period");
    let _ = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status(why)]);
}

/// The service goes on in the new process, so this is no stop to systemd.
fn handing_over() {
    let why = "SIGQUIT: handing the listeners to a new process";
    log::info!("{why}; in-flight transfers may finish within the grace period");
    let _ = sd_notify::notify(&[NotifyState::Status(why)]);
}

/// Waits (up to [`SUCCESSOR_WAIT`]) until the pid file names another
/// process, which it writes once it serves and has told systemd so.
async fn until_successor_serves(pid_file: &Path) {
    let ours = std::process::id() as i32;
    let deadline = tokio::time::Instant::now() + SUCCESSOR_WAIT;
    while tokio::time::Instant::now() < deadline {
        if read_pid(pid_file).is_some_and(|pid| pid != ours) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log::warn!(
        "the new process did not record itself in {} within {SUCCESSOR_WAIT:?}",
        pid_file.display()
    );
}

/// How long a process that handed its listeners over waits for the new
/// one to serve before it may exit.
const SUCCESSOR_WAIT: Duration = Duration::from_secs(30);

/// During the grace period: exits as soon as nothing is in flight (pingora
/// ends the process itself when the period runs out first).
async fn finish(supervised: &Supervised) {
    // Connections accepted just before the stop are counted once their
    // task runs; they all have by the time pingora's cleanup does.
    tokio::time::sleep(SETTLE).await;
    let waiting = supervised.in_flight.current();
    if waiting > 0 {
        log::info!("waiting for {waiting} open connection(s) and request(s) to finish");
    }
    supervised.in_flight.until_idle().await;
    supervised.storage.all_committed().await;
    supervised.audit.hand_over(&supervised.catalog_writer);
    supervised
        .storage
        .report_pending_hits(Duration::from_secs(5))
        .await;
    if !supervised
        .catalog_writer
        .drain(Duration::from_secs(5))
        .await
    {
        log::warn!("catalog writes still queued at exit");
    }
    supervised.storage.snapshot_now().await;
    remove_pid_file_if_ours(&supervised.pid_file);
    log::info!("nothing in flight; exiting");
    std::process::exit(0);
}

/// Whether a TCP connection to `address` (on loopback when unspecified)
/// succeeds within a few seconds.
async fn accepts(address: std::net::SocketAddr) -> bool {
    let target = crate::loopback::reachable(address);
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(target).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Where the pid file goes: next to the upgrade socket.
pub fn pid_file(server: &ServerConfig) -> PathBuf {
    server.upgrade_socket.with_extension("pid")
}

fn write_pid_file(path: &Path) -> std::io::Result<()> {
    let temporary = path.with_extension("pid.tmp");
    std::fs::write(&temporary, format!("{}\n", std::process::id()))?;
    std::fs::rename(&temporary, path)
}

pub(crate) fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The running artifactd the pid file names, or why there is none (for
/// `serve -u` and `artifactd reload`).
pub(crate) fn recorded_process(pid_file: &Path) -> anyhow::Result<i32> {
    let Some(pid) = read_pid(pid_file) else {
        bail!("no running artifactd recorded in {}", pid_file.display());
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        bail!("process {pid} from {} is not running", pid_file.display());
    }
    Ok(pid)
}

fn remove_pid_file_if_ours(path: &Path) {
    if read_pid(path) == Some(std::process::id() as i32) {
        let _ = std::fs::remove_file(path);
    }
}

/// For `serve -u`: finds the running artifactd through the pid file and
/// sends it SIGQUIT once this process listens on the upgrade socket (which
/// pingora's bootstrap creates), so the old process hands its listeners
/// over. Fails before anything starts when there is no old process.
pub fn take_over(pid_file: &Path, upgrade_socket: &Path) -> anyhow::Result<()> {
    let old = recorded_process(pid_file).map_err(|e| anyhow::anyhow!("serve -u: {e}"))?;
    let socket = upgrade_socket.to_path_buf();
    // A socket left by an earlier attempt would look like ours appearing.
    let _ = std::fs::remove_file(&socket);
    std::thread::Builder::new()
        .name("artifactd-upgrade".into())
        .spawn(move || {
            for _ in 0..600 {
                if socket.exists() {
                    log::info!("asking process {old} to hand over its listeners");
                    // SAFETY: sends a signal; no memory is touched.
                    unsafe { libc::kill(old, libc::SIGQUIT) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            log::error!("upgrade socket {} never appeared", socket.display());
        })
        .context("starting the upgrade thread")?;
    Ok(())
}
