//! `artifactd audit who`: who received a release, from the audit trail of
//! a running artifactd (`GET /api/v1/audit`).

use super::client::{Server, ServerArgs};
use reqwest::Method;
use serde_json::Value;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Who received a package (a version, a digest), newest first.
    Who {
        #[arg(long)]
        package: Option<String>,
        #[arg(long)]
        version: Option<String>,
        /// The body's sha256 (`sha256:hex` or hex).
        #[arg(long)]
        digest: Option<String>,
        #[arg(long)]
        remote: Option<String>,
        /// RFC 3339, or a duration back from now (`7d`).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let server = Server::connect(&args.server)?;
    let AuditCommand::Who {
        package,
        version,
        digest,
        remote,
        since,
        limit,
    } = args.command;
    if package.is_none() && digest.is_none() {
        anyhow::bail!("say which release: --package (with --version) or --digest");
    }
    let mut path = format!("/api/v1/audit?limit={limit}");
    for (name, value) in [
        ("package", &package),
        ("version", &version),
        ("digest", &digest),
        ("remote", &remote),
        ("since", &since),
    ] {
        if let Some(value) = value {
            path.push_str(&format!("&{name}={}", super::cache::query_value(value)));
        }
    }
    let answer = server.admin_json(Method::GET, &path).await?;
    let records = answer["records"].as_array().cloned().unwrap_or_default();
    if server.json {
        println!("{}", Value::Array(records));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<22} {:<8} {:<40} ARTIFACT",
        "TIME", "CLIENT", "TOKEN", "USER AGENT"
    );
    for row in &records {
        let at = row["at_ms"].as_i64().unwrap_or(0).max(0) as u64;
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at);
        let text = |field: &str| row[field].as_str().unwrap_or("-").to_string();
        println!(
            "{:<24} {:>6} {:<16} {:<8} {:<40} {}/{}",
            humantime::format_rfc3339_millis(when).to_string(),
            row["deliveries"].as_i64().unwrap_or(1),
            text("client"),
            text("token"),
            text("user_agent"),
            text("remote"),
            text("path"),
        );
    }
    if records.is_empty() {
        eprintln!("nobody received it (within the audit trail's retention)");
    }
    Ok(ExitCode::SUCCESS)
}
