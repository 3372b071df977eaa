//! The artifact firewall with real clients: known-malicious releases from
//! an OSV feed hidden from indexes and refused in pip's and npm's own
//! words; revocation of what is cached when an advisory arrives (no
//! restart), with purge; dry run; deny and allow lists and an exemption
//! to the age rule from a policy file read again at run time.

use crate::harness::npm::{self, npm_install, Verdaccio};
use crate::harness::pypi::{self, pip_install, uv_install, PypiServer};
use crate::harness::{client, Artifactd};
use std::path::Path;
use std::time::{Duration, Instant};

const ADVISORY: &str = "MAL-2026-1234";
const BAD_WHEEL: &str = "/packages/acc_demo-1.1.0-py3-none-any.whl";
const BAD_TARBALL: &str = "/acc-npm-demo/-/acc-npm-demo-1.1.0.tgz";

/// Two upstreams, each with a good 1.0.0 and a bad 1.1.0.
struct Upstreams {
    pypi: PypiServer,
    npm: Verdaccio,
}

impl Upstreams {
    async fn start(dir: &Path) -> Upstreams {
        let pypi = PypiServer::start(dir).await;
        pypi.add_wheel("acc-demo", "1.0.0", &[]);
        pypi.add_wheel("acc-demo", "1.1.0", &[]);
        let npm = Verdaccio::start(dir).await;
        npm.publish("acc-npm-demo", "1.0.0", &[]).await;
        npm.publish("acc-npm-demo", "1.1.0", &[]).await;
        Upstreams { pypi, npm }
    }

    fn remotes(&self) -> String {
        format!(
            "remotes:\n  pypi:\n    base_url: \"{}\"\n    package: pypi\n    immutable_patterns: [\"packages/\"]\n  npm:\n    base_url: \"{}\"\n    package: npm\n    immutable_patterns: [\"\\\\.tgz$\"]\n    mutable_patterns: [\"^(?!.*\\\\.tgz$).*\"]\n",
            self.pypi.url(),
            self.npm.url()
        )
    }
}

/// The OSV record of the malicious-packages data set naming both bad
/// releases.
fn osv_record() -> String {
    serde_json::json!({
        "schema_version": "1.5.0",
        "id": ADVISORY,
        "summary": "Malicious code in acc-demo and acc-npm-demo",
        "affected": [
            {"package": {"ecosystem": "PyPI", "name": "acc-demo"}, "versions": ["1.1.0"]},
            {"package": {"ecosystem": "npm", "name": "acc-npm-demo"},
             "ranges": [{"type": "SEMVER", "events": [{"introduced": "1.1.0"}, {"fixed": "1.2.0"}]}]}
        ]
    })
    .to_string()
}

/// Server lines for a feed in `feed_dir`, looked at every second.
fn feed_config(feed_dir: &Path, extra: &str) -> String {
    format!(
        "firewall:\n  refresh: 1s\n  feeds:\n    - name: malicious-packages\n      path: \"{}\"\n{extra}",
        feed_dir.display()
    )
}

/// `npm install SPEC` in a fresh project `dir` through `registry`, which
/// must succeed; the version of the package installed.
async fn npm_installs(registry: &str, dir: &Path, spec: &str) -> Option<String> {
    let (ok, out) = npm_install(registry, dir, &[spec]).await;
    assert!(ok, "npm install {spec} in {}: {out}", dir.display());
    let name = spec.split('@').next().unwrap_or(spec);
    npm::installed_version(dir, name)
}

/// An empty folder of OSV records in `dir`; [`advise`] adds the record.
fn feed_folder(dir: &Path) -> std::path::PathBuf {
    let feed = dir.join("osv");
    std::fs::create_dir_all(&feed).unwrap();
    feed
}

/// Publishes the advisory into the feed folder.
fn advise(feed: &Path) {
    std::fs::write(feed.join(format!("{ADVISORY}.json")), osv_record()).unwrap();
}

/// A client on its own loopback address with its own user agent, as the
/// audit trail tells clients apart.
fn client_at(address: [u8; 4], user_agent: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(address))
        .user_agent(user_agent)
        .no_proxy()
        .build()
        .unwrap()
}

/// Polls `url` until it answers `status` (at most 10 s); the last answer.
async fn answers(url: &str, status: u16) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = client().get(url).send().await.unwrap();
        if resp.status() == status || Instant::now() > deadline {
            return resp;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn known_malicious_releases_are_hidden_and_refused_with_the_advisory() {
    let dir = tempfile::tempdir().unwrap();
    let upstreams = Upstreams::start(dir.path()).await;
    let feed = feed_folder(dir.path());
    advise(&feed);
    let ad = Artifactd::start(dir.path(), &upstreams.remotes(), &feed_config(&feed, "")).await;

    // pip and uv resolve the good release; asked for the bad one, both say
    // why, naming the advisory.
    let index = ad.artifact("pypi", "simple/");
    let target = dir.path().join("pip");
    let (ok, out) = pip_install(&index, &target, &["acc-demo"]).await;
    assert!(ok, "pip install: {out}");
    assert_eq!(
        pypi::installed_version(&target, "acc_demo").as_deref(),
        Some("1.0.0")
    );
    let (ok, out) = pip_install(&index, &dir.path().join("pip-bad"), &["acc-demo==1.1.0"]).await;
    assert!(
        !ok && out.contains(ADVISORY),
        "pip install acc-demo==1.1.0: {out}"
    );
    let (ok, out) = uv_install(&index, &dir.path().join("uv-bad"), &["acc-demo==1.1.0"]).await;
    assert!(
        !ok && out.contains(ADVISORY),
        "uv pip install acc-demo==1.1.0: {out}"
    );

    let registry = ad.artifact("npm", "");
    let project = dir.path().join("npm");
    assert_eq!(
        npm_installs(&registry, &project, "acc-npm-demo")
            .await
            .as_deref(),
        Some("1.0.0")
    );
    let (ok, out) = npm_install(
        &registry,
        &dir.path().join("npm-bad"),
        &["acc-npm-demo@1.1.0"],
    )
    .await;
    assert!(
        !ok && out.contains(ADVISORY),
        "npm install acc-npm-demo@1.1.0: {out}"
    );

    // Asked for directly, the files are refused in each client's form.
    let wheel = client()
        .get(ad.artifact("pypi", &BAD_WHEEL[1..]))
        .send()
        .await
        .unwrap();
    assert_eq!(wheel.status(), 403);
    assert!(wheel.text().await.unwrap().contains(ADVISORY));
    let tarball = client()
        .get(ad.artifact("npm", &BAD_TARBALL[1..]))
        .send()
        .await
        .unwrap();
    assert_eq!(tarball.status(), 403);
    let error: serde_json::Value = tarball.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains(ADVISORY),
        "{error}"
    );

    // Nothing of the bad releases was asked of the upstreams.
    upstreams.pypi.settle().await;
    upstreams.npm.settle().await;
    assert_eq!(upstreams.pypi.count(BAD_WHEEL), 0);
    assert_eq!(upstreams.npm.count(BAD_TARBALL), 0);
    assert!(
        upstreams
            .pypi
            .count("/packages/acc_demo-1.0.0-py3-none-any.whl")
            >= 1
    );
    let refused = crate::harness::metric_sum(
        &ad,
        "artifactd_firewall_decisions_total",
        &[("rule", "malicious-packages"), ("action", "refused")],
    )
    .await;
    assert!(refused >= 3, "refusals counted: {refused}");
}

#[tokio::test]
async fn an_advisory_arriving_revokes_and_purges_what_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let upstreams = Upstreams::start(dir.path()).await;
    let feed = feed_folder(dir.path());
    let config = feed_config(&feed, "      purge: true\n");
    let ad = Artifactd::start(dir.path(), &upstreams.remotes(), &config).await;

    // Cached first, while nothing is known against it.
    let project = dir.path().join("before");
    let (ok, out) = npm_install(&ad.artifact("npm", ""), &project, &["acc-npm-demo@1.1.0"]).await;
    assert!(ok, "npm install before the advisory: {out}");
    let (ok, out) = pip_install(
        &ad.artifact("pypi", "simple/"),
        &dir.path().join("pip-before"),
        &["acc-demo==1.1.0"],
    )
    .await;
    assert!(ok, "pip install before the advisory: {out}");
    let cached = |path: &str| ad.url(&format!("/api/v1/cache/{path}"));
    let tarball_entry = cached(&format!("npm{BAD_TARBALL}"));
    let wheel_entry = cached(&format!("pypi{BAD_WHEEL}"));
    assert_eq!(answers(&tarball_entry, 200).await.status(), 200);
    assert_eq!(answers(&wheel_entry, 200).await.status(), 200);

    // The advisory arrives; no restart, no reload.
    advise(&feed);
    let refused = answers(&ad.artifact("npm", &BAD_TARBALL[1..]), 403).await;
    assert_eq!(refused.status(), 403, "refused within the refresh interval");
    let refused = answers(&ad.artifact("pypi", &BAD_WHEEL[1..]), 403).await;
    assert_eq!(refused.status(), 403);

    // Gone from the cached indexes: npm finds it only to say why not,
    // PyPI's pages yank it with the advisory.
    let doc = crate::harness::get_json(&client(), ad.artifact("npm", "acc-npm-demo")).await;
    assert!(doc["versions"].get("1.1.0").is_none(), "{doc}");
    assert!(
        doc["policyRestrictions"]["versions"].get("1.1.0").is_some(),
        "{doc}"
    );
    assert_eq!(doc["dist-tags"]["latest"], "1.0.0");
    let page = pypi::simple_json(&ad, "pypi", "acc-demo").await;
    for file in page["files"].as_array().unwrap() {
        let bad = file["filename"].as_str().unwrap().contains("1.1.0");
        let yanked = file["yanked"].as_str().unwrap_or_default();
        assert_eq!(yanked.contains(ADVISORY), bad, "{file}");
    }
    let html = crate::harness::get_text(&client(), ad.artifact("pypi", "simple/acc-demo/")).await;
    assert_eq!(html.matches("data-yanked=").count(), 1, "{html}");

    // And gone from storage: `purge: true`.
    assert_eq!(answers(&tarball_entry, 404).await.status(), 404);
    assert_eq!(answers(&wheel_entry, 404).await.status(), 404);
    let purged = crate::harness::metric_sum(
        &ad,
        "artifactd_firewall_decisions_total",
        &[("action", "purged")],
    )
    .await;
    assert!(purged >= 2, "purges counted: {purged}");
    // A fresh install resolves the good release.
    let after = dir.path().join("after");
    let installed = npm_installs(&ad.artifact("npm", ""), &after, "acc-npm-demo").await;
    assert_eq!(installed.as_deref(), Some("1.0.0"));
}

#[tokio::test]
async fn a_dry_run_serves_marks_logs_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let upstreams = Upstreams::start(dir.path()).await;
    let feed = feed_folder(dir.path());
    advise(&feed);
    let config = feed_config(&feed, "      mode: dry_run\n");
    let ad = Artifactd::start(dir.path(), &upstreams.remotes(), &config).await;

    let project = dir.path().join("npm");
    let installed = npm_installs(&ad.artifact("npm", ""), &project, "acc-npm-demo@1.1.0").await;
    assert_eq!(installed.as_deref(), Some("1.1.0"));
    for _ in 0..2 {
        let resp = client()
            .get(ad.artifact("npm", &BAD_TARBALL[1..]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mark = resp.headers()["x-artifact-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(
            mark,
            format!("dry_run; rule=\"malicious-packages\"; advisory={ADVISORY}")
        );
        let expected = std::fs::read(upstreams.npm.tarball("acc-npm-demo", "1.1.0")).unwrap();
        assert_eq!(resp.bytes().await.unwrap(), expected);
    }
    let good = client()
        .get(ad.artifact("npm", "acc-npm-demo/-/acc-npm-demo-1.0.0.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    assert!(good.headers().get("x-artifact-policy").is_none());
    let doc = crate::harness::get_json(&client(), ad.artifact("npm", "acc-npm-demo")).await;
    assert!(doc["versions"].get("1.1.0").is_some() && doc.get("policyRestrictions").is_none());
    let marked = crate::harness::metric_sum(
        &ad,
        "artifactd_firewall_decisions_total",
        &[("remote", "npm"), ("action", "dry_run")],
    )
    .await;
    assert_eq!(marked, 3, "npm's download and two GETs");
    crate::harness::log_says(
        &ad,
        &format!("served under a dry-run rule 'malicious-packages' ({ADVISORY})"),
    )
    .await;
}

#[tokio::test]
async fn deny_and_allow_lists_and_an_age_exemption_from_a_policy_file() {
    let dir = tempfile::tempdir().unwrap();
    let upstreams = Upstreams::start(dir.path()).await;
    upstreams.npm.publish("tiny-dep", "1.0.0", &[]).await;
    upstreams.npm.publish("tiny-dep", "1.1.0", &[]).await;
    let ago = |days: u64| {
        let t = std::time::SystemTime::now() - Duration::from_secs(days * 86_400);
        humantime::format_rfc3339_millis(t).to_string()
    };
    for name in ["acc-npm-demo", "tiny-dep"] {
        upstreams.npm.set_publish_time(name, "1.0.0", &ago(30));
        upstreams.npm.set_publish_time(name, "1.1.0", &ago(1));
    }
    let feed = feed_folder(dir.path());
    advise(&feed);
    // The PyPI release the feed names is waived (a known false positive);
    // npm releases under a week old are held except acc-npm-*; tiny-dep
    // 1.0.x is denied.
    let policy = dir.path().join("policy.yaml");
    let rules = "rules:\n  - name: waiver\n    allow:\n      - {ecosystem: pypi, package: acc-demo, versions: [\"==1.1.0\"]}\n  - name: a-week\n    min_age: 7d\n    remotes: [npm]\n    exempt:\n      - {ecosystem: npm, package: \"acc-npm-*\"}\n";
    std::fs::write(&policy, rules).unwrap();
    let config = format!(
        "{}  policy_file: \"{}\"\n",
        feed_config(&feed, ""),
        policy.display()
    );
    let ad = Artifactd::start(dir.path(), &upstreams.remotes(), &config).await;
    let registry = ad.artifact("npm", "");
    let index = ad.artifact("pypi", "simple/");

    // The allow rule waives the advisory: pip installs the release.
    let target = dir.path().join("pip");
    let (ok, out) = pip_install(&index, &target, &["acc-demo==1.1.0"]).await;
    assert!(ok, "pip install of a waived release: {out}");
    assert_eq!(
        pypi::installed_version(&target, "acc_demo").as_deref(),
        Some("1.1.0")
    );
    // The age rule holds tiny-dep 1.1.0 back, not the exempt package
    // (whose 1.1.0 the feed still refuses; 1.0.0 is a month old).
    let project = dir.path().join("npm");
    assert_eq!(
        npm_installs(&registry, &project, "tiny-dep")
            .await
            .as_deref(),
        Some("1.0.0")
    );
    let doc = crate::harness::get_json(&client(), ad.artifact("npm", "acc-npm-demo")).await;
    assert!(
        doc["policyRestrictions"]["versions"].get("1.1.0").is_some(),
        "{doc}"
    );

    // The policy file changes while artifactd runs: tiny-dep 1.0.x is
    // denied, and the exemption now covers tiny-dep, so 1.1.0 shows.
    let rules = "rules:\n  - name: no-old-tiny\n    deny:\n      - {ecosystem: npm, package: tiny-dep, versions: [\"<1.1.0\"]}\n  - name: a-week\n    min_age: 7d\n    remotes: [npm]\n    exempt:\n      - {ecosystem: npm, package: \"tiny-*\"}\n";
    std::fs::write(&policy, rules).unwrap();
    let old = ad.artifact("npm", "tiny-dep/-/tiny-dep-1.0.0.tgz");
    let refused = answers(&old, 403).await;
    assert_eq!(refused.status(), 403);
    let error: serde_json::Value = refused.json().await.unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("rule 'no-old-tiny'"),
        "{error}"
    );
    let project = dir.path().join("npm-after");
    assert_eq!(
        npm_installs(&registry, &project, "tiny-dep")
            .await
            .as_deref(),
        Some("1.1.0")
    );
    let (ok, out) = npm_install(&registry, &dir.path().join("npm-old"), &["tiny-dep@1.0.0"]).await;
    assert!(
        !ok && out.contains("no-old-tiny"),
        "npm install tiny-dep@1.0.0: {out}"
    );
    // The waiver is gone with the old file: pip is refused now.
    let (ok, out) = pip_install(&index, &dir.path().join("pip-after"), &["acc-demo==1.1.0"]).await;
    assert!(
        !ok && out.contains(ADVISORY),
        "pip install after the waiver went: {out}"
    );

    // A broken edit keeps the rules in force.
    std::fs::write(
        &policy,
        "rules:\n  - name: broken\n    deny: [{package: x, versions: [\"1\"]}]\n",
    )
    .unwrap();
    crate::harness::log_says(&ad, "the changed rules are refused").await;
    assert_eq!(answers(&old, 403).await.status(), 403);
}

#[tokio::test]
async fn releases_withdrawn_upstream_are_refused_where_the_remote_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let upstreams = Upstreams::start(dir.path()).await;
    let remote = |name: &str, extra: &str| {
        format!(
            "  {name}:\n    base_url: \"{}\"\n    package: npm\n    immutable_patterns: [\"\\\\.tgz$\"]\n    mutable_patterns: [\"^(?!.*\\\\.tgz$).*\"]\n    cache: {{mutable_ttl: 1}}\n{extra}",
            upstreams.npm.url()
        )
    };
    let remotes = format!(
        "remotes:\n{}{}",
        remote("kept", ""),
        remote("strict", "    on_upstream_removed: refuse\n")
    );
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let bytes = std::fs::read(upstreams.npm.tarball("acc-npm-demo", "1.1.0")).unwrap();
    for name in ["kept", "strict"] {
        let project = dir.path().join(name);
        let (ok, out) =
            npm_install(&ad.artifact(name, ""), &project, &["acc-npm-demo@1.1.0"]).await;
        assert!(ok, "npm install through {name}: {out}");
    }

    upstreams.npm.unpublish("acc-npm-demo", "1.1.0").await;
    // The next refresh of the package document learns it.
    for name in ["kept", "strict"] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let doc = crate::harness::get_json(&client(), ad.artifact(name, "acc-npm-demo")).await;
            if doc["versions"].get("1.1.0").is_none() {
                break;
            }
            assert!(Instant::now() < deadline, "{name} never refreshed: {doc}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let tarball = &BAD_TARBALL[1..];
    let kept = client()
        .get(ad.artifact("kept", tarball))
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 200, "the default keeps serving it");
    assert_eq!(kept.bytes().await.unwrap(), bytes);
    let strict = client()
        .get(ad.artifact("strict", tarball))
        .send()
        .await
        .unwrap();
    assert_eq!(strict.status(), 403);
    let error: serde_json::Value = strict.json().await.unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("withdrawn upstream"),
        "{error}"
    );
    let good = client()
        .get(ad.artifact("strict", "acc-npm-demo/-/acc-npm-demo-1.0.0.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        good.status(),
        200,
        "what the index still lists stays served"
    );
    let again = dir.path().join("again");
    let installed = npm_installs(&ad.artifact("strict", ""), &again, "acc-npm-demo").await;
    assert_eq!(installed.as_deref(), Some("1.0.0"));
}

#[tokio::test]
async fn the_audit_trail_says_who_received_a_release() {
    let dir = tempfile::tempdir().unwrap();
    let upstreams = Upstreams::start(dir.path()).await;
    let config = "tokens:\n  admin: \"adm-audit\"\n  write: \"wr-audit\"\n";
    let mut ad = Artifactd::start(dir.path(), &upstreams.remotes(), config).await;

    // Two clients: pip on 127.0.0.1, and a CI runner on 127.0.0.2 that
    // bears the write token and asks twice (a miss's follower, then a hit
    // the fast path answers).
    let target = dir.path().join("pip");
    let (ok, out) = pip_install(
        &ad.artifact("pypi", "simple/"),
        &target,
        &["acc-demo==1.0.0"],
    )
    .await;
    assert!(ok, "pip install: {out}");
    let runner = client_at([127, 0, 0, 2], "ci-runner/1.0");
    let wheel = ad.artifact("pypi", "packages/acc_demo-1.0.0-py3-none-any.whl");
    for _ in 0..2 {
        let resp = runner
            .get(&wheel)
            .bearer_auth("wr-audit")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    // Neither a HEAD nor an index page is a delivery.
    let head = runner.head(&wheel).send().await.unwrap();
    assert_eq!(head.status(), 200);

    let expected = crate::harness::sha256_hex(
        &std::fs::read(
            upstreams
                .pypi
                .packages
                .join("acc_demo-1.0.0-py3-none-any.whl"),
        )
        .unwrap(),
    );
    let args = [
        "audit",
        "who",
        "--package",
        "acc-demo",
        "--version",
        "1.0.0",
        "--json",
    ];
    // Deliveries alike in all but time are one row per write batch, with
    // their count.
    let deliveries = |records: &[serde_json::Value], client: &str| -> i64 {
        records
            .iter()
            .filter(|r| r["client"] == client)
            .map(|r| r["deliveries"].as_i64().unwrap())
            .sum()
    };
    // Rows are handed to the catalog every 5 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let records = loop {
        let (code, out, err) = crate::harness::artifactd_cli(&ad, Some("adm-audit"), &args).await;
        assert_eq!(code, 0, "{out}{err}");
        let records: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        let all = deliveries(&records, "127.0.0.1") + deliveries(&records, "127.0.0.2");
        if all >= 3 || Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(deliveries(&records, "127.0.0.1"), 1, "{records:#?}");
    assert_eq!(deliveries(&records, "127.0.0.2"), 2, "{records:#?}");
    for row in &records {
        let pip = row["client"] == "127.0.0.1";
        let agent = row["user_agent"].as_str().unwrap();
        assert_eq!(agent.starts_with("pip/"), pip, "{row}");
        assert_eq!(agent == "ci-runner/1.0", !pip, "{row}");
        let token = if pip {
            serde_json::Value::Null
        } else {
            "write".into()
        };
        assert_eq!(row["token"], token, "{row}");
    }
    for row in &records {
        assert_eq!(row["remote"], "pypi");
        assert_eq!(row["path"], "packages/acc_demo-1.0.0-py3-none-any.whl");
        assert_eq!(row["sha256"], expected.as_str());
    }
    // The same answer by digest, and the table form names both clients.
    let refused = client()
        .get(ad.url("/api/v1/audit?package=acc-demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "the trail is for admins");
    let listed = client()
        .get(ad.url(&format!("/api/v1/audit?digest=sha256:{expected}")))
        .bearer_auth("adm-audit")
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(listed["count"].as_u64(), Some(records.len() as u64));
    let who = |version: &'static str| {
        let args = [
            "audit",
            "who",
            "--package",
            "acc-demo",
            "--version",
            version,
        ];
        let ad = &ad;
        async move { crate::harness::artifactd_cli(ad, Some("adm-audit"), &args).await }
    };
    let (code, table, _) = who("1.0.0").await;
    assert_eq!(code, 0);
    assert!(
        table.contains("127.0.0.2") && table.contains("ci-runner/1.0") && table.contains("pip/"),
        "{table}"
    );
    let (_, nobody, err) = who("1.1.0").await;
    assert!(!nobody.contains("127.0.0."), "{nobody}");
    assert!(err.contains("nobody received it"), "{err}");

    // A delivery just before a stop is handed over as the process ends,
    // and is on record after the restart.
    let late = client_at([127, 0, 0, 3], "late-runner/2.0");
    let resp = late.get(&wheel).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    ad.signal(libc::SIGTERM);
    assert!(ad.exited_within(Duration::from_secs(20)).await.is_some());
    let ad = Artifactd::start(dir.path(), &upstreams.remotes(), config).await;
    let (code, out, err) = crate::harness::artifactd_cli(&ad, Some("adm-audit"), &args).await;
    assert_eq!(code, 0, "{out}{err}");
    let records: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(deliveries(&records, "127.0.0.3"), 1, "{records:#?}");
    assert_eq!(deliveries(&records, "127.0.0.2"), 2, "{records:#?}");
}

/// A zip of OSV records, one file each, as OSV publishes a data set.
fn zipped(records: &[(&str, String)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, record) in records {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        writer.start_file(*name, options).unwrap();
        std::io::Write::write_all(&mut writer, record.as_bytes()).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// A feed fetched through a remote on a schedule: a new advisory in the
/// published zip is in force within seconds, a broken download keeps the
/// feed as it was, and a restart with the feed's host down keeps it too.
#[tokio::test]
async fn a_feed_fetched_through_a_remote_revokes_on_its_next_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let upstreams = Upstreams::start(dir.path()).await;
    let osv_host = crate::harness::Origin::start().await;
    let unrelated = serde_json::json!({
        "id": "MAL-2026-0001",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "other-pkg"}, "versions": ["9.9.9"]}]
    })
    .to_string();
    let zip_file = |records: &[(&str, String)]| crate::harness::OriginFile::new(zipped(records));
    osv_host.put(
        "/osv/PyPI/all.zip",
        zip_file(&[("MAL-2026-0001.json", unrelated.clone())]),
    );
    let remotes = format!(
        "{}  osv:\n    base_url: \"{}\"\n    mutable_patterns: [\"\\\\.zip$\"]\n    cache:\n      mutable_ttl: 1\n",
        upstreams.remotes(),
        osv_host.base_url()
    );
    let kept = dir.path().join("feeds/pypi-malicious.zip");
    let config = format!(
        "firewall:\n  refresh: 1s\n  feeds:\n    - name: osv-pypi\n      path: \"{}\"\n      fetch: {{remote: osv, path: osv/PyPI/all.zip, every: 1s}}\n",
        kept.display()
    );
    let mut ad = Artifactd::start(dir.path(), &remotes, &config).await;
    let wheel = ad.artifact("pypi", &BAD_WHEEL[1..]);

    let deadline = Instant::now() + Duration::from_secs(10);
    while !kept.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(kept.exists(), "the feed was never fetched");
    assert_eq!(answers(&wheel, 200).await.status(), 200);

    // The advisory is published: the next fetch puts it in force.
    osv_host.put(
        "/osv/PyPI/all.zip",
        zip_file(&[
            ("MAL-2026-0001.json", unrelated.clone()),
            (&format!("{ADVISORY}.json"), osv_record()),
        ]),
    );
    let refused = answers(&wheel, 403).await;
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains(ADVISORY));

    // A broken download does not replace the feed.
    let fetched = std::fs::read(&kept).unwrap();
    osv_host.put(
        "/osv/PyPI/all.zip",
        crate::harness::OriginFile::new("<html>maintenance</html>"),
    );
    let hits = osv_host.hits("/osv/PyPI/all.zip");
    let deadline = Instant::now() + Duration::from_secs(15);
    while osv_host.hits("/osv/PyPI/all.zip") < hits + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        osv_host.hits("/osv/PyPI/all.zip") >= hits + 2,
        "fetched again"
    );
    assert_eq!(std::fs::read(&kept).unwrap(), fetched);
    assert_eq!(client().get(&wheel).send().await.unwrap().status(), 403);
    assert!(ad.log_text().contains("not a feed"), "{}", ad.log_text());

    // A restart while the feed's host is down reads the kept copy.
    ad.kill();
    osv_host.stop();
    let ad = Artifactd::start(dir.path(), &remotes, &config).await;
    let refused = client()
        .get(ad.artifact("pypi", &BAD_WHEEL[1..]))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains(ADVISORY));
}
