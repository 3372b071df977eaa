//! SIGHUP (`systemctl reload`): TLS certificates and the configuration,
//! re-read without a restart.
//!
//! The server file and `remotes.yaml` are read and validated whole, and only
//! then put in force, in one swap of [`App::config`]. A request decides its
//! remote once, when it starts, and holds that remote's `Arc` until it ends,
//! so a transfer in flight finishes on the patterns, TTLs and upstream it
//! started with while new requests see the new files. An invalid file
//! changes nothing: its located error (file, line, remote, field) is logged
//! and counted (`artifactd_config_reloads{result="refused"}`).
//!
//! What the node built from the remotes at start grows with them first, so
//! no request of an added remote finds a part missing: index positions,
//! breakers, metric series, upstream clients and credentials. A removed
//! remote keeps its cached entries (eviction frees them; adding it back
//! finds them). Settings read only at start (listeners, storage, state,
//! catalog, memory sizes, ...) keep their running values; a reload that
//! changes them names them, for the next restart.

use crate::app::App;
use crate::config::Config;
use crate::metrics::ReloadResult;
use crate::tls::ReloadableCert;
use std::path::PathBuf;
use std::sync::Arc;

/// What a SIGHUP re-reads.
pub struct Reloadable {
    /// The server file the process started with (`--config`).
    pub config_path: PathBuf,
    pub app: Arc<App>,
    pub certs: Vec<Arc<ReloadableCert>>,
}

/// Reloads on every SIGHUP, for as long as the process runs.
pub fn on_sighup(reloadable: Reloadable, runtime: &tokio::runtime::Handle) {
    let _guard = runtime.enter();
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(e) => {
            log::error!("cannot watch SIGHUP, nothing will reload: {e}");
            return;
        }
    };
    runtime.spawn(async move {
        while hangups.recv().await.is_some() {
            reload_certs(&reloadable.certs);
            let (app, path) = (reloadable.app.clone(), reloadable.config_path.clone());
            // Reading files and building HTTP clients blocks.
            let reloaded = tokio::task::spawn_blocking(move || reload_config(&app, &path)).await;
            if let Err(e) = reloaded {
                log::error!("SIGHUP: the reload stopped: {e}");
            }
        }
    });
}

fn reload_certs(certs: &[Arc<ReloadableCert>]) {
    for cert in certs {
        let file = cert.files().cert.display();
        match cert.reload() {
            Ok(()) => log::info!("SIGHUP: reloaded TLS certificate {file}"),
            Err(e) => log::error!("SIGHUP: kept the previous certificate of {file}: {e:#}"),
        }
    }
}

/// Reads the configuration again and puts it in force, or keeps the
/// running one and says why.
pub fn reload_config(app: &App, path: &std::path::Path) {
    match apply(app, path) {
        Ok(()) => app.metrics.reloaded(ReloadResult::Applied),
        Err(why) => {
            log::error!("SIGHUP: kept the running configuration: {why}");
            app.metrics.reloaded(ReloadResult::Refused);
        }
    }
}

fn apply(app: &App, path: &std::path::Path) -> Result<(), String> {
    let mut loaded = Config::load(path).map_err(|errors| errors.to_string())?;
    let running = app.config();
    let credentials = (app.credentials().reconfigured(loaded.remotes.values()))
        .map_err(|e| format!("remote credentials: {e:#}"))?;
    app.snapshots
        .reconfigure(loaded.remotes.values())
        .map_err(|e| format!("remote upstream clients: {e:#}"))?;
    for warning in &loaded.warnings {
        log::warn!("{warning}");
    }
    let kept = loaded.keep_start_settings(&running);
    let changes = loaded.remote_changes(&running);
    let names = || loaded.remotes.keys();
    app.storage.know_remotes(names());
    app.breakers.add(names());
    app.metrics.add_remotes(names());
    app.firewall
        .reload(&loaded)
        .map_err(|e| format!("firewall: {e}"))?;
    app.replace_config(loaded, credentials);
    log::info!("SIGHUP: reloaded {}: {changes}", path.display());
    if !kept.is_empty() {
        log::warn!(
            "SIGHUP: {} changed in {} and take effect at the next restart; the running values stay",
            kept.join(", "),
            path.display()
        );
    }
    Ok(())
}
