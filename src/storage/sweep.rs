//! Removing what killed processes left in the body store's staging area.
//!
//! Runs once at start, before the first request could be a fill of ours,
//! and then periodically (a second process sharing the root, such as the
//! old binary of a graceful upgrade, may die later). The store decides what
//! is orphaned; see [`super::body::fs`].

use super::body::BodyStore;
use std::sync::Arc;
use std::time::Duration;

/// How often the periodic sweep runs.
const SWEEP_EVERY: Duration = Duration::from_secs(300);
/// A staging file younger than this is left alone by the periodic sweep,
/// however it looks: its writer may be starting up.
const MIN_AGE: Duration = Duration::from_secs(60);

/// Sweeps once now, then every [`SWEEP_EVERY`] on `runtime`.
pub fn start(bodies: Arc<dyn BodyStore>, runtime: &tokio::runtime::Handle) {
    runtime.block_on(sweep(&*bodies, Duration::ZERO));
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            sweep(&*bodies, MIN_AGE).await;
        }
    });
}

async fn sweep(bodies: &dyn BodyStore, min_age: Duration) {
    match bodies.sweep_staging(min_age).await {
        Ok(0) => {}
        Ok(bytes) => log::info!("removed {bytes} bytes of abandoned staging files"),
        Err(e) => log::warn!("sweeping staging files: {e}"),
    }
}
