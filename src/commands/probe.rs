//! `artifactd probe`: the container's health check. A scratch image has no
//! curl, so the binary asks its own server whether it is ready (`/readyz`,
//! or `--path /livez`) and exits 0 only on a 2xx within the timeout. The
//! server is found in the configuration (its first plain listener, as
//! artifactd's requests to itself do), or given with `--url`.

use crate::loopback::Loopback;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// The server to ask; by default this configuration's listener.
    #[arg(long, env = "ARTIFACTD_URL")]
    pub url: Option<String>,
    /// The probe to ask.
    #[arg(long, default_value = "/readyz")]
    pub path: String,
    /// How long the answer may take, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub timeout: f64,
}

/// Asks the server at `url`, or the one `config` describes.
pub fn run(args: &ProbeArgs, config: Option<&crate::config::Config>) -> anyhow::Result<ExitCode> {
    let request = match (&args.url, config) {
        (Some(url), _) => reqwest::Client::builder().no_proxy().build()?.get(format!(
            "{}{}",
            url.trim_end_matches('/'),
            args.path
        )),
        (None, Some(config)) => {
            Loopback::new(&config.server.listen)?.request(reqwest::Method::GET, &args.path)
        }
        (None, None) => anyhow::bail!("probe: no --url and no configuration"),
    };
    let request = request.timeout(Duration::from_secs_f64(args.timeout));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                println!("{}: {}", response.url(), response.status());
                Ok(ExitCode::SUCCESS)
            }
            Ok(response) => {
                let (url, status) = (response.url().clone(), response.status());
                let body = response.text().await.unwrap_or_default();
                eprintln!("{url}: {status}: {}", body.trim());
                Ok(ExitCode::FAILURE)
            }
            Err(e) => {
                eprintln!("probe: {e}");
                Ok(ExitCode::FAILURE)
            }
        }
    })
}
