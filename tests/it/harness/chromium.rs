//! Headless Chromium (Debian's `chromium`, installed by
//! `scripts/install-deps.sh test`) loading a page as a browser does: the
//! DOM after load (`--dump-dom`), screenshots at a window size, and every
//! request the page made, from Chromium's own network log. No name
//! resolves (tests talk to loopback only), and each run has a profile of
//! its own.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

/// A page as Chromium loaded it.
pub struct Loaded {
    pub dom: String,
    /// The URLs the page's own frame asked for (not the browser's
    /// background requests), credentials redacted as Chromium logs them.
    pub page_requests: Vec<String>,
}

fn base_command(profile: &Path) -> Command {
    let mut command = Command::new("chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args([
            "--no-first-run",
            "--disable-background-networking",
            "--disable-sync",
        ])
        .args(["--disable-component-update", "--disable-default-apps"])
        .arg("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

async fn run(mut command: Command) -> std::process::Output {
    let out = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium (scripts/install-deps.sh test installs it)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Loads `url` and returns its DOM and the requests its frame made.
pub async fn load(dir: &Path, url: &str) -> Loaded {
    let profile = tempfile::tempdir_in(dir).unwrap();
    let net_log = profile.path().join("netlog.json");
    let mut command = base_command(&profile.path().join("profile"));
    command
        .arg(format!("--log-net-log={}", net_log.display()))
        .args(["--window-size=1280,800", "--dump-dom", url]);
    let out = run(command).await;
    Loaded {
        dom: String::from_utf8_lossy(&out.stdout).to_string(),
        page_requests: page_requests(&net_log),
    }
}

/// Saves a screenshot of `url` in a `width` × `height` window as `png`.
pub async fn screenshot(dir: &Path, url: &str, (width, height): (u32, u32), png: &Path) {
    let profile = tempfile::tempdir_in(dir).unwrap();
    let mut command = base_command(&profile.path().join("profile"));
    command
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(url);
    run(command).await;
    assert!(png.exists(), "no screenshot at {}", png.display());
}

/// The URLs of the requests started for a page on 127.0.0.1 (its network
/// isolation key names that site): the page and anything it pulled in.
fn page_requests(net_log: &PathBuf) -> Vec<String> {
    let text = std::fs::read_to_string(net_log).expect("chromium's net log");
    // Chromium leaves the closing brackets off when it exits at once.
    let log: serde_json::Value = serde_json::from_str(&text)
        .or_else(|_| serde_json::from_str(&format!("{}]}}", text.trim_end().trim_end_matches(','))))
        .expect("net log JSON");
    let types = &log["constants"]["logEventTypes"];
    let start_job = types["URL_REQUEST_START_JOB"].as_u64().unwrap();
    (log["events"].as_array().into_iter().flatten())
        .filter(|e| e["type"].as_u64() == Some(start_job))
        .filter(|e| {
            let key = e["params"]["network_isolation_key"].as_str().unwrap_or("");
            key.starts_with("http://127.0.0.1")
        })
        .map(|e| e["params"]["url"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The value of `attribute` on each tag of `dom` that has `marker` in it
/// (`class="fill"`, `data-remote="x"`), in document order.
pub fn attribute_of_tags(dom: &str, marker: &str, attribute: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find(marker) {
        let start = rest[..at].rfind('<').unwrap_or(0);
        let end = at + rest[at..].find('>').unwrap_or(rest.len() - at);
        let tag = &rest[start..end];
        let needle = format!("{attribute}=\"");
        if let Some(from) = tag.find(&needle) {
            let value = &tag[from + needle.len()..];
            values.push(value[..value.find('"').unwrap_or(value.len())].to_string());
        }
        rest = &rest[end..];
    }
    values
}
