//! A real Prometheus (Debian's `prometheus`, installed by
//! `scripts/install-deps.sh test`) on a loopback port, scraping one
//! artifactd every second and evaluating rule files every second, and its
//! HTTP API: instant queries, alerts and rule health.

use super::artifactd::free_port;
use super::SpawnLogged;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::{Child, Command};

pub struct Prometheus {
    _child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Prometheus {
    /// Scrapes `target`'s `/metrics` (with `bearer` as its token, if any)
    /// as job `artifactd`, with `rule_files` loaded.
    pub async fn start(
        dir: &Path,
        target: SocketAddr,
        bearer: Option<&str>,
        rule_files: &[&Path],
    ) -> Prometheus {
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let rules: Vec<String> = (rule_files.iter())
            .map(|p| format!("\"{}\"", p.display()))
            .collect();
        let authorization = bearer.map_or(String::new(), |token| {
            format!("    authorization:\n      type: Bearer\n      credentials: \"{token}\"\n")
        });
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{}]\n\
             scrape_configs:\n  - job_name: artifactd\n    scrape_interval: 1s\n{authorization}\
             \x20   static_configs:\n      - targets: [\"{target}\"]\n",
            rules.join(", "),
        );
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("prometheus config");
        let port = free_port();
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .spawn_logged(&log);
        let prometheus = Prometheus {
            _child: child,
            port,
            log,
        };
        let ready = format!("http://127.0.0.1:{port}/-/ready");
        if !super::answers_ok(&ready, 30).await {
            panic!("prometheus not ready:\n{}", prometheus.log_text());
        }
        prometheus
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}/api/v1/{path}", self.port);
        let resp = super::client().get(url).query(query).send().await;
        let body: serde_json::Value = resp.expect("prometheus api").json().await.unwrap();
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// The result of an instant query now: its samples.
    pub async fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let data = self.api("query", &[("query", expr)]).await;
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The one value of `expr` now (the sum of its samples).
    pub async fn value(&self, expr: &str) -> f64 {
        let samples = self.query(expr).await;
        assert!(!samples.is_empty(), "no data for {expr}");
        (samples.iter())
            .map(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap())
            .sum()
    }

    /// The alerts pending or firing now.
    pub async fn alerts(&self) -> Vec<serde_json::Value> {
        let data = self.api("alerts", &[]).await;
        data["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// Whether `name` fires now for a series labelled `label` = `value`.
    pub async fn firing(&self, name: &str, label: &str, value: &str) -> bool {
        self.alerts().await.iter().any(|a| {
            a["labels"]["alertname"] == name
                && a["labels"][label] == value
                && a["state"] == "firing"
        })
    }

    /// Every rule of every group, as `/api/v1/rules` reports them (with
    /// `health` and `lastError`).
    pub async fn rules(&self) -> Vec<serde_json::Value> {
        let data = self.api("rules", &[]).await;
        (data["groups"].as_array().into_iter().flatten())
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Waits until the target has been scraped (`up` is 1).
    pub async fn until_scraped(&self) {
        for _ in 0..60 {
            let up = self.query("up{job=\"artifactd\"} == 1").await;
            if !up.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("artifactd never scraped:\n{}", self.log_text());
    }
}
