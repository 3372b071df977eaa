//! The shipped Grafana dashboard (`deploy/grafana/artifactd.json`) and
//! alert rules (`deploy/prometheus/alerts.yaml`) against a real Prometheus
//! scraping artifactd every second through a bounded mixed load: hits,
//! misses, 404s, a tampered chart and an upstream stopped and started
//! again. Every expression returns data; the hit ratio and egress saved
//! match the test's own request log; the upstream alert fires during the
//! outage and resolves after; promtool finds the rules and a scrape clean.

use crate::harness::prometheus::Prometheus;
use crate::harness::{client, sha256_hex, Artifactd, Origin, OriginFile};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TOKEN: &str = "metrics-token-0123";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Each target's `expr` of the dashboard, with its panel's title.
fn dashboard_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_file("deploy/grafana/artifactd.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap().to_string();
            exprs.push((title, target["expr"].as_str().unwrap().to_string()));
        }
    }
    exprs
}

/// What Grafana substitutes before it asks Prometheus: every remote, node
/// and job; a rate window of a minute; a range covering the whole test.
fn as_grafana_sends(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$instance", ".*")
        .replace("$remote", ".*")
        .replace("$job", ".*")
}

/// Each alert's name and expression.
fn alert_rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yaml")).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("alerts YAML");
    let groups = doc["groups"].as_sequence().expect("groups");
    let rules = groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap());
    rules
        .map(|r| {
            let name = r["alert"].as_str().expect("alert rules only");
            (name.to_string(), r["expr"].as_str().unwrap().to_string())
        })
        .collect()
}

/// The quantity an alert compares: its expression before the last
/// comparison outside parentheses (`QUANTITY > 0.9` gives `QUANTITY`).
fn quantity(expr: &str) -> &str {
    let mut depth = 0i32;
    let mut cut = None;
    let bytes = expr.as_bytes();
    for (at, byte) in bytes.iter().enumerate() {
        match byte {
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            b'>' | b'<' if depth == 0 => cut = Some(at),
            b'=' if depth == 0 && at > 0 && bytes[at - 1] == b'=' => cut = Some(at - 1),
            _ => {}
        }
    }
    let cut = cut.unwrap_or_else(|| panic!("no comparison in {expr}"));
    expr[..cut].trim()
}

/// The client's own count of what it asked for.
#[derive(Default, Debug)]
struct RequestLog {
    /// Artifact requests answered from the cache (`X-Artifact-Source: cache`).
    cached: u64,
    /// Artifact requests answered otherwise: from the upstream, or an error.
    fetched: u64,
    cached_bytes: u64,
}

impl RequestLog {
    async fn get(&mut self, url: &str) -> u16 {
        let resp = client().get(url).send().await.expect("response");
        let status = resp.status().as_u16();
        let cached = resp
            .headers()
            .get("x-artifact-source")
            .is_some_and(|v| v == "cache");
        // A tampered body ends in an error: what arrived was still sent.
        let bytes = resp.bytes().await.map_or(0, |b| b.len() as u64);
        if cached {
            self.cached += 1;
            self.cached_bytes += bytes;
        } else {
            self.fetched += 1;
        }
        status
    }

    fn hit_ratio(&self) -> f64 {
        self.cached as f64 / (self.cached + self.fetched) as f64
    }
}

fn within_5_percent(measured: f64, expected: f64, what: &str) {
    let off = (measured - expected).abs() / expected;
    assert!(
        off <= 0.05,
        "{what}: Prometheus says {measured}, the log {expected}"
    );
}

/// A chart index publishing the digest of `good` for `demo-1.0.0.tgz`.
fn chart_index(good: &[u8]) -> String {
    format!(
        "apiVersion: v1\nentries:\n  demo:\n  - apiVersion: v2\n    name: demo\n    version: 1.0.0\n    digest: {}\n    urls:\n    - demo-1.0.0.tgz\ngenerated: \"2026-11-01T00:00:00Z\"\n",
        sha256_hex(good)
    )
}

#[tokio::test]
async fn dashboard_and_alerts_hold_against_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let flaky_origin = Origin::start().await;
    let files: Vec<Vec<u8>> = (0..20)
        .map(|i| crate::harness::pattern_bytes(1_000 + i * 3_517, i as u64))
        .collect();
    for (i, body) in files.iter().enumerate() {
        origin.put(&format!("/f{i}.bin"), OriginFile::new(body.clone()));
    }
    let good_chart = crate::harness::pattern_bytes(9_000, 77);
    let mut tampered = good_chart.clone();
    tampered[4_500] ^= 1;
    origin.put(
        "/charts/index.yaml",
        OriginFile::new(chart_index(&good_chart)),
    );
    origin.put("/charts/demo-1.0.0.tgz", OriginFile::new(tampered));
    flaky_origin.put("/kept.bin", OriginFile::new(vec![7u8; 20_000]));
    for i in 0..400 {
        flaky_origin.put(&format!("/new{i}.bin"), OriginFile::new(vec![9u8; 500]));
    }
    let immutable = "    immutable_patterns: ['\\.bin$', '\\.tgz$']\n";
    let remotes = format!(
        "remotes:\n  gen:\n    base_url: \"{}\"\n    package: generic\n{immutable}  charts:\n    base_url: \"{}/charts\"\n    package: helm\n{immutable}  flaky:\n    base_url: \"{}\"\n    package: generic\n{immutable}",
        origin.base_url(),
        origin.base_url(),
        flaky_origin.base_url(),
    );
    let extra = format!(
        "tokens:\n  metrics: \"{TOKEN}\"\ncache:\n  max_size: 256MiB\nupstream:\n  breaker_failures: 3\n  breaker_backoff: 2s\n"
    );
    let ad = Artifactd::start(dir.path(), &remotes, &extra).await;
    let alerts = repo_file("deploy/prometheus/alerts.yaml");
    let prometheus = Prometheus::start(dir.path(), ad.addr, Some(TOKEN), &[&alerts]).await;
    prometheus.until_scraped().await;

    // Hits and misses, 404s, a tampered chart.
    let mut log = RequestLog::default();
    for _ in 0..3 {
        for i in 0..files.len() {
            assert_eq!(
                log.get(&ad.artifact("gen", &format!("f{i}.bin"))).await,
                200
            );
        }
    }
    for i in 0..3 {
        assert_eq!(
            log.get(&ad.artifact("gen", &format!("missing{i}.bin")))
                .await,
            404
        );
    }
    for _ in 0..2 {
        assert_eq!(log.get(&ad.artifact("charts", "index.yaml")).await, 200);
    }
    log.get(&ad.artifact("charts", "demo-1.0.0.tgz")).await;
    for _ in 0..2 {
        assert_eq!(log.get(&ad.artifact("flaky", "kept.bin")).await, 200);
    }

    // The upstream stops: uncached paths fail, the cached one is served.
    flaky_origin.stop();
    let outage = Instant::now();
    let mut asked = 0;
    let mut fired = false;
    while outage.elapsed() < Duration::from_secs(90) && asked < 300 {
        assert!(
            log.get(&ad.artifact("flaky", &format!("new{asked}.bin")))
                .await
                >= 500
        );
        asked += 1;
        if asked % 4 == 0 {
            assert_eq!(log.get(&ad.artifact("flaky", "kept.bin")).await, 200);
            let name = "ArtifactdUpstreamFailingNoStaleCopy";
            if prometheus.firing(name, "remote", "flaky").await {
                fired = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(fired, "the upstream alert fired within 90 s of the outage");
    assert!(
        !prometheus
            .firing("ArtifactdUpstreamFailingNoStaleCopy", "remote", "gen")
            .await,
        "only the stopped upstream's remote"
    );

    // Back: once requests succeed again the alert resolves.
    flaky_origin.resume().await;
    let back = Instant::now();
    let mut served = false;
    while back.elapsed() < Duration::from_secs(30) && !served {
        tokio::time::sleep(Duration::from_millis(500)).await;
        served = log.get(&ad.artifact("flaky", "new0.bin")).await == 200;
    }
    assert!(served, "the remote serves again once its upstream is back");
    let mut resolved = false;
    while back.elapsed() < Duration::from_secs(150) && !resolved {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let alerts = prometheus.alerts().await;
        resolved = !alerts
            .iter()
            .any(|a| a["labels"]["alertname"] == "ArtifactdUpstreamFailingNoStaleCopy");
    }
    assert!(
        resolved,
        "the upstream alert resolved within 150 s of the upstream's return"
    );

    // Every scrape so far has the last requests: every expression answers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (title, expr) in dashboard_exprs() {
        let expr = as_grafana_sends(&expr);
        let samples = prometheus.query(&expr).await;
        assert!(!samples.is_empty(), "panel {title:?}: no data for {expr}");
    }
    let by_title = |wanted: &str| {
        let exprs = dashboard_exprs();
        let found = exprs.into_iter().find(|(title, _)| title == wanted);
        as_grafana_sends(&found.unwrap_or_else(|| panic!("no panel {wanted}")).1)
    };
    let hit_ratio = prometheus.value(&by_title("Hit ratio (requests)")).await;
    within_5_percent(hit_ratio, log.hit_ratio(), "hit ratio");
    let saved = prometheus.value(&by_title("Egress saved")).await;
    within_5_percent(saved, log.cached_bytes as f64, "egress saved");
    assert!(log.cached >= 42 && log.fetched >= 30, "{log:?}");

    for (name, expr) in alert_rules() {
        let samples = prometheus.query(quantity(&expr)).await;
        assert!(
            !samples.is_empty(),
            "alert {name}: no data for {}",
            quantity(&expr)
        );
    }
    for rule in prometheus.rules().await {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    assert!(
        prometheus
            .firing("ArtifactdChecksumMismatch", "remote", "charts")
            .await,
        "the tampered chart is alerted"
    );

    promtool_is_clean(&["check", "rules", alerts.to_str().unwrap()], None);
    let scrape = client()
        .get(ad.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let scrape = scrape.text().await.unwrap();
    promtool_is_clean(&["check", "metrics"], Some(&scrape));
}

/// Runs promtool: success and no finding.
fn promtool_is_clean(args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/install-deps.sh test installs it)");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {said}");
    let findings = said.lines().filter(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with("Checking ") && !l.starts_with("SUCCESS")
    });
    assert_eq!(findings.count(), 0, "promtool {args:?}: {said}");
}

#[test]
fn an_alerts_quantity_is_what_it_compares() {
    assert_eq!(
        quantity("sum by (a) (rate(x{y=\"z\"}[1m])) > 0"),
        "sum by (a) (rate(x{y=\"z\"}[1m]))"
    );
    assert_eq!(quantity("a / on (i) b > 0.9"), "a / on (i) b");
    assert_eq!(quantity("min(up{job=\"a\"}) < 1"), "min(up{job=\"a\"})");
    assert_eq!(quantity("x == 0"), "x");
}

/// The hit ratio `/metrics` gives: requests from the cache of those from
/// the cache or the upstream, every remote.
fn metrics_hit_ratio(text: &str) -> f64 {
    let sum = |source| {
        let labels = [("source", source)];
        crate::harness::sample_sum(text, "artifactd_requests_total", &labels)
    };
    let cached = sum("hit") + sum("stale") + sum("revalidated");
    cached / (cached + sum("miss"))
}

/// The width and height a PNG's header gives.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[1..4], b"PNG", "not a PNG");
    let word = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (word(16), word(20))
}

#[tokio::test]
async fn the_status_page_in_a_browser_shows_fills_outages_and_the_metrics_ratio() {
    use crate::harness::chromium::{attribute_of_tags, load, screenshot};
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let flaky_origin = Origin::start().await;
    let big = crate::harness::pattern_bytes(8 << 20, 5);
    let mut slow = OriginFile::new(big.clone());
    // 128 chunks of 64 KiB, 150 ms apart: a fill of about 19 s.
    slow.chunk_delay = Some(Duration::from_millis(150));
    origin.put("/big.bin", slow);
    for i in 0..4 {
        let body = crate::harness::pattern_bytes(10_000 * (i + 1), i as u64);
        origin.put(&format!("/small{i}.bin"), OriginFile::new(body));
    }
    let immutable = "    immutable_patterns: ['\\.bin$']\n";
    let remotes = format!(
        "remotes:\n  gen:\n    base_url: \"{}\"\n    package: generic\n{immutable}  flaky:\n    base_url: \"{}\"\n    package: generic\n{immutable}",
        origin.base_url(),
        flaky_origin.base_url(),
    );
    let extra = format!(
        "tokens:\n  metrics: \"{TOKEN}\"\ncache:\n  max_size: 64MiB\nupstream:\n  breaker_failures: 3\n  breaker_backoff: 10m\n"
    );
    let ad = Artifactd::start(dir.path(), &remotes, &extra).await;
    let http = client();

    // Behind the token, as /metrics is; a browser is asked for it.
    let refused = http.get(ad.url("/status")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let browser_root = http
        .get(ad.url("/"))
        .header("accept", "text/html,*/*;q=0.8");
    assert_eq!(crate::harness::status(browser_root).await, 401);
    let json = http
        .get(ad.url("/status"))
        .bearer_auth(TOKEN)
        .header("accept", "application/json");
    let json: serde_json::Value = json.send().await.unwrap().json().await.unwrap();
    assert_eq!(json["remotes"].as_array().unwrap().len(), 2);

    // Misses and hits, and a remote whose upstream is down.
    for _ in 0..3 {
        for i in 0..4 {
            let url = ad.artifact("gen", &format!("small{i}.bin"));
            http.get(&url).send().await.unwrap().bytes().await.unwrap();
        }
    }
    // The top lists come from the catalog, written in the background.
    let mut largest = Vec::new();
    let catalog_wait = Instant::now();
    while largest.len() < 4 {
        assert!(
            catalog_wait.elapsed() < Duration::from_secs(10),
            "{largest:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let req = http.get(ad.url("/status")).bearer_auth(TOKEN);
        let req = req.header("accept", "application/json");
        let json: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
        largest = (json["largest"].as_array().unwrap().iter())
            .map(|e| e["path"].as_str().unwrap().to_string())
            .collect();
    }
    assert_eq!(
        largest,
        ["small3.bin", "small2.bin", "small1.bin", "small0.bin"]
    );
    flaky_origin.stop();
    for i in 0..4 {
        let resp = http
            .get(ad.artifact("flaky", &format!("gone{i}.bin")))
            .send()
            .await;
        assert!(resp.unwrap().status().as_u16() >= 500);
    }

    // A slow fill with a follower.
    let fills: Vec<_> = (0..2)
        .map(|_| {
            let url = ad.artifact("gen", "big.bin");
            tokio::spawn(async move {
                let resp = client().get(url).send().await.unwrap();
                resp.bytes().await.unwrap()
            })
        })
        .collect();
    let status_json = || async {
        let req = client()
            .get(ad.url("/status"))
            .bearer_auth(TOKEN)
            .header("accept", "application/json");
        req.send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let started = Instant::now();
    while status_json().await["fills"][0]["written"]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the fill started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let page = ad
        .url("/status")
        .replacen("http://", &format!("http://ops:{TOKEN}@"), 1);
    let first = load(dir.path(), &page).await;
    let metrics = http
        .get(ad.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    let shots = repo_file("target/test-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    for (width, height) in [(1280, 800), (390, 844)] {
        let png = shots.join(format!("status-{width}x{height}.png"));
        screenshot(dir.path(), &page, (width, height), &png).await;
        assert_eq!(png_size(&std::fs::read(&png).unwrap()), (width, height));
    }
    let second = load(dir.path(), &page).await;

    // The fill advanced between the two loads, toward its whole length.
    let written = |dom: &str| -> u64 {
        let values = attribute_of_tags(dom, "class=\"fill\"", "data-written");
        assert_eq!(values.len(), 1, "one fill row:\n{dom}");
        values[0].parse().unwrap()
    };
    let (before, after) = (written(&first.dom), written(&second.dom));
    assert!(before > 0 && after > before, "{before} then {after} bytes");
    assert!(after < big.len() as u64, "still in progress");
    let expected = attribute_of_tags(&second.dom, "class=\"fill\"", "data-expected");
    assert_eq!(expected, [big.len().to_string()]);
    // The down remote is marked; the other is not.
    for (remote, state) in [("flaky", "down"), ("gen", "up")] {
        let marker = format!("class=\"remote\" data-remote=\"{remote}\"");
        let breaker = attribute_of_tags(&first.dom, &marker, "data-breaker");
        assert_eq!(breaker, [state], "{remote}");
    }
    assert!(first.dom.contains("<span class=\"badge down\">down</span>"));
    let largest_section = &first.dom[first.dom.find("id=\"largest\"").unwrap()..];
    assert!(
        largest_section.contains("small3.bin"),
        "the largest artifacts are listed"
    );
    // The page's hit ratio is /metrics' (no request ended between them).
    let shown = attribute_of_tags(&first.dom, "id=\"summary\"", "data-hit-ratio");
    let shown: f64 = shown[0].parse().unwrap();
    let from_metrics = metrics_hit_ratio(&metrics);
    assert!(
        (shown - from_metrics).abs() < 1e-6,
        "{shown} vs {from_metrics}"
    );
    assert!(
        (shown - 8.0 / 16.0).abs() < 1e-6,
        "8 hits of 16 answered: {shown}"
    );
    // Nothing but the page itself was requested.
    for loaded in [&first, &second] {
        assert_eq!(loaded.page_requests.len(), 1, "{:?}", loaded.page_requests);
        let asked = &loaded.page_requests[0];
        assert!(asked.starts_with(&ad.url("/status")), "{asked}");
    }

    for fill in fills {
        assert!(
            fill.await.unwrap() == big,
            "both clients got the whole body"
        );
    }
    if std::env::var_os("ARTIFACTD_DOCS_SCREENSHOT").is_some() {
        let docs = repo_file("docs/status-page.png");
        std::fs::copy(shots.join("status-1280x800.png"), docs).unwrap();
    }
}
