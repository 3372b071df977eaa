//! artifactd: a pull-through caching proxy for software artifacts.
//!
//! # Layout
//! - [`cli`]: command line (`serve [-t] [-u]`, `check-config`, `warm`,
//!   `cache`, `import`). [`commands`]: the client commands, over HTTP.
//!   [`import`]: files into a stopped node's cache, without an upstream;
//!   [`store_lock`]: servers or one import on a local store.
//! - [`config`]: server config and `remotes.yaml`, validated at start.
//!   [`preflight`]: what `check-config` checks a start will find.
//! - [`server`]: wires storage, state, catalog and the proxy into Pingora.
//! - [`proxy`]: the `ProxyHttp` implementation, one delegate per phase.
//! - [`audit`]: the audit trail of what was served to whom.
//! - [`firewall`]: the artifact firewall at run time: judging requests by
//!   the rules in force, reloading them, purging what they refuse.
//! - [`fast_path`]: fresh hits held in memory answered from the connection,
//!   before pingora's phases; the same loop enforces the client limits
//!   (header timeout and size, idle timeout), and [`connections`] counts
//!   the connections and closes idle ones when a newcomer needs the room.
//! - [`storage`]: the `pingora_cache::Storage` backend over `object_store`.
//! - [`state`]: freshness state store. [`catalog`]: what is cached.
//! - [`reply`]: small complete responses and the admin token guard (a
//!   leaf, used by whoever answers).
//! - [`admin`], [`local`]: endpoints answered without an upstream.
//!   [`cache_api`]: `/api/v1/cache` (list, usage, inspect, delete,
//!   verify). [`prefill`]: `POST /cache-artifact`. [`jobs`]: the
//!   background jobs those start.
//! - [`metrics`], [`auth`], [`app`]: counters, tokens, shared state.
//!   [`served_from`]: where a response came from (one value for the
//!   header, the metrics and the access log).
//! - [`checksums`]: what index documents publish, for verified downloads;
//!   [`digest`]: hashing a body in the algorithm its digest names.
//!   [`virtual_repo`], [`local_index`]: virtual repositories and the
//!   indexes of local ones. [`loopback`]: artifactd's requests to itself.
//! - [`cluster`]: what nodes share through Redis (change feed, fill and
//!   eviction leases, another node's fill).
//! - [`access_log`]: text or JSON logs, one access line per request;
//!   [`request_id`]: `X-Request-Id` kept or made, and returned.
//! - [`breakers`]: per-remote circuit breakers.
//! - [`credentials`]: per-remote upstream credentials (basic, registry tokens).
//! - [`fill_lock`]: pingora's cache lock, minus second fetches of fresh fills.
//! - [`reload`]: SIGHUP re-reads the certificates and the configuration;
//!   [`handover`]: `artifactd reload`, SIGHUP or a hand-over to a new binary.
//! - [`tls`]: TLS listener certificates.
//!   [`upstream_tls`]: per-remote upstream verification (`ca_file`).
//! - [`lifecycle`]: readiness (sd_notify, pid file), graceful stop and
//!   upgrade around pingora's server.
//!
//! There is no `#[tokio::main]`: Pingora owns its runtimes and may exit the
//! process from `run_forever` (STYLE §7.13). Async start-up work runs on a
//! separate background runtime that lives as long as the process.
// The proxy's phase futures nest deeply enough (admin, cache, fills)
// that computing their layout passes the default query depth of 128.
#![recursion_limit = "256"]

mod access_log;
mod admin;
mod app;
mod audit;
mod auth;
mod breakers;
mod cache_api;
mod catalog;
mod checksums;
mod cli;
mod cluster;
mod commands;
mod config;
mod connections;
mod credentials;
mod digest;
mod fast_path;
mod fill_lock;
mod firewall;
mod handover;
mod import;
mod jobs;
mod lifecycle;
mod local;
mod local_index;
mod loopback;
mod metrics;
mod one_in;
mod prefill;
mod preflight;
mod proxy;
mod reload;
mod reply;
mod request_id;
mod rewrites;
mod seen_again;
mod served_from;
mod server;
mod state;
mod status;
mod storage;
mod store_lock;
mod tls;
mod upstream_limits;
mod upstream_tls;
mod virtual_repo;

use std::process::ExitCode;

/// mimalloc: with glibc's malloc, a fifth of the CPU of hits at a few
/// hundred thousand cached objects went to consolidating and unlinking
/// chunks (records parsed, hot-tier entries evicted); with mimalloc a hit
/// there costs about a third less, and a hot 1 KiB hit a fifth less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = <cli::Cli as clap::Parser>::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("artifactd: {e:#}");
            ExitCode::from(2)
        }
    }
}
