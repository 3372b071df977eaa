//! The command line.

use crate::config::Config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "artifactd",
    version,
    about = "A pull-through caching proxy for software artifacts"
)]
pub struct Cli {
    /// Server configuration file.
    #[arg(
        short,
        long,
        env = "ARTIFACTD_CONFIG",
        default_value = "/etc/artifactd/artifactd.yaml",
        global = true
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve (the default).
    Serve(ServeArgs),
    /// Validate the configuration, `remotes.yaml`, token and certificate
    /// files, then exit (the same as `serve -t`).
    CheckConfig,
    /// Reload the running artifactd: its configuration and certificates
    /// (SIGHUP), or, when its binary was replaced on disk, a hand-over to
    /// the new one without dropping a connection (what `systemctl reload`
    /// runs).
    Reload,
    /// Pre-fill a running artifactd with paths or images.
    Warm(crate::commands::warm::WarmArgs),
    /// Ask the running artifactd of this configuration (or `--url`) whether
    /// it is ready, a container's health check: exit 0 on a 2xx from
    /// `/readyz`.
    Probe(crate::commands::probe::ProbeArgs),
    /// Write containerd `hosts.toml` files so this host's containerd pulls
    /// the given registries through artifactd.
    ContainerdHosts(crate::commands::containerd_hosts::ContainerdHostsArgs),
    /// Inspect a running artifactd's cache: ls, du, rm, verify.
    Cache(crate::commands::cache::CacheArgs),
    /// Ask a running artifactd's audit trail who received a release.
    Audit(crate::commands::audit::AuditArgs),
    /// Store files in the cache of a stopped artifactd, without an
    /// upstream: a directory's files, or the paths a manifest lists.
    Import(crate::import::ImportArgs),
}

#[derive(Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// Test the configuration and exit, like `nginx -t`.
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Take over the listening sockets of the running artifactd (found
    /// through its pid file), which then finishes its in-flight transfers
    /// and exits.
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The client commands talk to a server; they need no local config.
    let cli = match cli.command {
        Some(Command::Warm(args)) => {
            return crate::commands::block_on(crate::commands::warm::run(args))
        }
        Some(Command::Cache(args)) => {
            return crate::commands::block_on(crate::commands::cache::run(args))
        }
        Some(Command::Audit(args)) => {
            return crate::commands::block_on(crate::commands::audit::run(args))
        }
        Some(Command::ContainerdHosts(args)) => {
            return crate::commands::containerd_hosts::run(&args)
        }
        Some(Command::Probe(args)) if args.url.is_some() => {
            return crate::commands::probe::run(&args, None)
        }
        _ => cli,
    };
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(1));
        }
    };
    crate::access_log::init(config.server.log_format);
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    let command = cli
        .command
        .unwrap_or_else(|| Command::Serve(ServeArgs::default()));
    match command {
        Command::CheckConfig | Command::Serve(ServeArgs { test: true, .. }) => {
            if let Err(errors) = crate::preflight::check(&cli.config, &config) {
                eprintln!("{errors}");
                return Ok(ExitCode::from(1));
            }
            let server = &config.server;
            println!(
                "{}: ok ({} remotes from {}; listening on {})\n  {}",
                cli.config.display(),
                config.remotes.len(),
                server.remotes_file.display(),
                crate::config::server::describe(&server.listen),
                server.describe_backends()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            crate::server::serve(config, &cli.config, args.upgrade)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import(args) => crate::import::run(config, args),
        Command::Reload => crate::handover::run(&config, &cli.config),
        Command::Probe(args) => crate::commands::probe::run(&args, Some(&config)),
        Command::Warm(_) | Command::Cache(_) | Command::Audit(_) | Command::ContainerdHosts(_) => {
            unreachable!("client commands return above")
        }
    }
}
