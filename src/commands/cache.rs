//! `artifactd cache ls|du|rm|verify`: the cache API from a shell.

use super::client::{Refused, Server, ServerArgs};
use anyhow::Context;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct CacheArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    /// List cached artifacts (path, size, hits, last access).
    Ls {
        #[arg(long)]
        remote: Option<String>,
        /// Only paths starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// List at most this many.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Objects and bytes per remote.
    Du,
    /// Remove artifacts from the cache (they are fetched again on use).
    Rm {
        #[arg(long)]
        remote: String,
        /// Paths to remove.
        #[arg(required_unless_present = "pattern")]
        paths: Vec<String>,
        /// Remove every path matching this regex instead.
        #[arg(long)]
        pattern: Option<String>,
    },
    /// Re-hash stored bodies against their recorded sha256.
    Verify {
        #[arg(long)]
        remote: Option<String>,
        /// Remove damaged objects so they are fetched again.
        #[arg(long)]
        repair: bool,
    },
}

pub async fn run(args: CacheArgs) -> anyhow::Result<ExitCode> {
    let server = Server::connect(&args.server)?;
    match args.command {
        CacheCommand::Ls {
            remote,
            prefix,
            limit,
        } => ls(&server, remote, prefix, limit).await,
        CacheCommand::Du => du(&server).await,
        CacheCommand::Rm {
            remote,
            paths,
            pattern,
        } => rm(&server, &remote, &paths, pattern.as_deref()).await,
        CacheCommand::Verify { remote, repair } => verify(&server, remote, repair).await,
    }
}

/// A query parameter's value, percent-encoded.
pub(super) fn query_value(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn ls(
    server: &Server,
    remote: Option<String>,
    prefix: Option<String>,
    limit: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let wanted = limit.map_or(1000, |l| (l - rows.len() as u64).min(1000));
        if wanted == 0 {
            break;
        }
        let mut path = format!("/api/v1/cache?limit={wanted}");
        for (name, value) in [
            ("remote", &remote),
            ("prefix", &prefix),
            ("cursor", &cursor),
        ] {
            if let Some(value) = value {
                path.push_str(&format!("&{name}={}", query_value(value)));
            }
        }
        let page = server.admin_json(Method::GET, &path).await?;
        rows.extend(page["artifacts"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    if server.json {
        println!("{}", Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>10} {:>7} {:<20} ARTIFACT",
        "SIZE", "HITS", "LAST ACCESS"
    );
    for row in &rows {
        let last = row["last_access"].as_i64().unwrap_or(0);
        let when = std::time::UNIX_EPOCH + Duration::from_secs(last.max(0) as u64);
        println!(
            "{:>10} {:>7} {:<20} {}/{}",
            HumanBytes(row["size"].as_u64().unwrap_or(0)).to_string(),
            row["hits"].as_i64().unwrap_or(0),
            humantime::format_rfc3339_seconds(when).to_string(),
            row["remote"].as_str().unwrap_or(""),
            row["path"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn du(server: &Server) -> anyhow::Result<ExitCode> {
    let usage = server
        .admin_json(Method::GET, "/api/v1/cache/usage")
        .await?;
    if server.json {
        println!("{usage}");
        return Ok(ExitCode::SUCCESS);
    }
    for row in usage["remotes"].as_array().into_iter().flatten() {
        println!(
            "{:>10} {:>9} objects  {}",
            HumanBytes(row["bytes"].as_u64().unwrap_or(0)).to_string(),
            row["objects"].as_i64().unwrap_or(0),
            row["remote"].as_str().unwrap_or("")
        );
    }
    println!(
        "{:>10} {:>9} objects  total",
        HumanBytes(usage["bytes"].as_u64().unwrap_or(0)).to_string(),
        usage["objects"].as_i64().unwrap_or(0)
    );
    Ok(ExitCode::SUCCESS)
}

async fn rm(
    server: &Server,
    remote: &str,
    paths: &[String],
    pattern: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let mut results = Vec::new();
    let mut missing = 0;
    if let Some(pattern) = pattern {
        let path = format!(
            "/cache/flush?remote={}&pattern={}",
            query_value(remote),
            query_value(pattern)
        );
        let flushed = server.admin_json(Method::PUT, &path).await?;
        results.push(flushed);
    }
    for path in paths {
        let url = format!("/api/v1/cache/{remote}/{}", path.trim_start_matches('/'));
        match server.admin_json(Method::DELETE, &url).await {
            Ok(removed) => results.push(removed),
            Err(e) if e.downcast_ref::<Refused>().is_some_and(|r| r.status == 404) => {
                missing += 1;
                results.push(json!({"not_cached": {"remote": remote, "path": path}}));
            }
            Err(e) => return Err(e),
        }
    }
    if server.json {
        println!("{}", Value::Array(results));
    } else {
        for result in &results {
            if let Some(removed) = result.get("removed") {
                println!(
                    "removed {remote}/{}",
                    removed["path"].as_str().unwrap_or("")
                );
            } else if let Some(flushed) = result.get("flushed") {
                println!(
                    "removed {} objects matching {:?}",
                    flushed["objects_deleted"],
                    pattern.unwrap_or("")
                );
            } else if let Some(gone) = result.get("not_cached") {
                println!(
                    "not cached: {remote}/{}",
                    gone["path"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn verify(server: &Server, remote: Option<String>, repair: bool) -> anyhow::Result<ExitCode> {
    let mut path = format!("/api/v1/cache/verify?repair={repair}");
    if let Some(remote) = &remote {
        path.push_str(&format!("&remote={}", query_value(remote)));
    }
    let started = server.admin_json(Method::POST, &path).await?;
    let status_url = started["status_url"]
        .as_str()
        .context("no job status URL")?
        .to_string();
    let bar = if std::io::stderr().is_terminal() && !server.json {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template(
        "{spinner} verifying [{wide_bar}] {pos}/{len} objects, {msg}",
    )?);
    let status = loop {
        let status = server.admin_json(Method::GET, &status_url).await?;
        bar.set_length(status["total"].as_u64().unwrap_or(0));
        bar.set_position(
            status["ok"].as_u64().unwrap_or(0) + status["failed_count"].as_u64().unwrap_or(0),
        );
        bar.set_message(format!("{} damaged", status["failed_count"]));
        if status["state"] != "running" {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    bar.finish_and_clear();
    let damaged = status["failed_count"].as_u64().unwrap_or(0);
    if server.json {
        println!("{status}");
    } else {
        println!(
            "verified {} objects ({}): {damaged} damaged{}",
            status["ok"].as_u64().unwrap_or(0) + damaged,
            HumanBytes(status["bytes"].as_u64().unwrap_or(0)),
            if repair && damaged > 0 {
                ", removed to be fetched again"
            } else {
                ""
            }
        );
        for item in status["failed"].as_array().into_iter().flatten() {
            println!(
                "damaged: {}: {}",
                item["path"].as_str().unwrap_or(""),
                item["reason"].as_str().unwrap_or("")
            );
        }
        if let Some(error) = status["error"].as_str() {
            println!("verify failed: {error}");
        }
    }
    let clean = damaged == 0 && status["state"] == "done";
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
