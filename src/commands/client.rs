//! Where the client commands find the server and how they authenticate:
//! `--url` (or `ARTIFACTD_URL`), and the admin token from
//! `ARTIFACTD_ADMIN_TOKEN` or `--token-file`.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::time::Duration;

/// An admin endpoint's answer other than success, kept typed so that a
/// command can tell "not there" (404) from a failure.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {status}: {body}")]
pub struct Refused {
    pub path: String,
    pub status: reqwest::StatusCode,
    pub body: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The running artifactd.
    #[arg(
        long,
        global = true,
        env = "ARTIFACTD_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// File holding the admin token (otherwise ARTIFACTD_ADMIN_TOKEN).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Accept a server certificate no CA vouches for (a lab server).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A connection to one server.
pub struct Server {
    pub base: String,
    pub http: reqwest::Client,
    token: Option<String>,
    pub json: bool,
}

impl Server {
    pub fn connect(args: &ServerArgs) -> anyhow::Result<Server> {
        let token = match &args.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("ARTIFACTD_ADMIN_TOKEN").ok(),
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .danger_accept_invalid_certs(args.insecure)
            .user_agent(concat!("artifactd-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Server {
            base: args.url.trim_end_matches('/').to_string(),
            http,
            token: token.filter(|t| !t.is_empty()),
            json: args.json,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to the admin API, with the token when there is one.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends an admin request and reads its JSON answer; errors carry the
    /// server's own explanation.
    pub async fn admin_json(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let response = self
            .admin(method, path)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .with_context(|| format!("{} unreachable", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            bail!("{path}: the admin token is missing or wrong (ARTIFACTD_ADMIN_TOKEN or --token-file)");
        }
        if !status.is_success() {
            return Err(Refused {
                path: path.to_string(),
                status,
                body: text.trim().to_string(),
            }
            .into());
        }
        serde_json::from_str(&text).with_context(|| format!("{path}: not JSON: {text}"))
    }
}
