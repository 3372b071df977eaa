//! `artifactd probe`: the container's health check. A scratch image has no
//! curl, so the binary asks its own server whether it is ready (`/readyz`,
//! or `--path /livez`) and exits 0 only on a 2xx within the timeout.

use super::client::{Server, ServerArgs};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The probe to ask.
    #[arg(long, default_value = "/readyz")]
    pub path: String,
    /// How long the answer may take, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub timeout: f64,
}

pub async fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let server = Server::connect(&args.server)?;
    let url = server.url(&args.path);
    let answer = (server.http.get(&url))
        .timeout(Duration::from_secs_f64(args.timeout))
        .send()
        .await;
    match answer {
        Ok(response) if response.status().is_success() => {
            println!("{url}: {}", response.status());
            Ok(ExitCode::SUCCESS)
        }
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            eprintln!("{url}: {status}: {}", body.trim());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
