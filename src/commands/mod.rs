//! The client commands of the binary: `warm` pre-fills a running
//! artifactd, `cache ls|du|rm|verify` inspects it through the admin API.
//! They talk HTTP to the server (`--url`), so they work from any host and
//! need no access to its storage.
//!
//! - [`client`]: the server URL, the admin token and HTTP errors.
//! - [`warm`]: bounded-concurrency pre-fill with progress, resumable.
//! - [`cache`]: listing, usage, removal and verification.
//! - [`audit`]: who received a release, from the audit trail.
//! - [`probe`]: the container health check (`/readyz`).
//! - [`containerd_hosts`]: containerd `hosts.toml` files that pull through
//!   artifactd.

pub mod audit;
pub mod cache;
pub mod client;
pub mod containerd_hosts;
pub mod probe;
pub mod warm;

/// Runs a client command on its own runtime (these commands never start
/// pingora, so a plain tokio runtime is the whole process), logging as
/// text: they read no server config.
pub fn block_on<F: std::future::Future<Output = anyhow::Result<std::process::ExitCode>>>(
    command: F,
) -> anyhow::Result<std::process::ExitCode> {
    crate::access_log::init(crate::access_log::LogFormat::Text);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(command)
}
