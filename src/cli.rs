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
    Serve,
    /// Validate the configuration and `remotes.yaml`, then exit.
    CheckConfig,
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(1));
        }
    };
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            println!(
                "{}: ok ({} remotes from {})",
                cli.config.display(),
                config.remotes.len(),
                config.server.remotes_file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => {
            crate::server::serve(config)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
