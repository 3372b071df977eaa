//! The cluster shape's own behaviour: what a flush removes from the
//! bucket, Redis and PostgreSQL, and serving on while Redis is away. (The
//! foundation, resilience, eviction and OCI suites also run against this
//! shape: `make it-cluster`.)

use crate::cache::source;
use crate::harness::artifactd::{cluster_backends, cluster_backends_on, namespace, Options};
use crate::harness::registry::Registry;
use crate::harness::services::{
    self, Postgres, Redis, RedisCluster, S3Server, Sentinel, SHARED_BUCKET,
};
use crate::harness::token::TokenIssuer;
use crate::harness::{client, pattern_bytes, remote_metric, Artifactd, Origin, OriginFile};
use std::time::{Duration, Instant};

fn two_remotes(origin: &Origin) -> String {
    let remote = |name: &str| {
        format!(
            "  {name}:\n    base_url: \"{}/{name}\"\n    package: generic\n    immutable_patterns: ['\\.tgz$']\n    mutable_patterns: ['index\\.yaml$']\n    check_mutable_updates: true\n    cache:\n      mutable_ttl: 1\n",
            origin.base_url()
        )
    };
    format!("remotes:\n{}{}", remote("gen"), remote("other"))
}

/// Starts a node on `dir` with these backend lines and `extra` lines.
async fn start_node(
    dir: &std::path::Path,
    remotes: &str,
    backends: String,
    extra: &str,
) -> Artifactd {
    let options = Options {
        backends: Some(backends),
        ..Options::default()
    };
    Artifactd::start_with(dir, remotes, extra, options).await
}

/// Backend lines on the shared bucket and PostgreSQL, in namespace `ns`,
/// with the Redis at `redis_url`.
fn shared_backends_with(ns: &str, redis_url: &str) -> String {
    let shared = services::shared();
    cluster_backends_on(
        &shared.s3.url(),
        &format!("{SHARED_BUCKET}/{ns}"),
        redis_url,
        ns,
        &shared.postgres.database(ns),
    )
}

/// Polls `count` until it returns `want`, for up to 10 s.
async fn eventually(what: &str, want: usize, mut count: impl FnMut() -> usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = count();
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {now}, expected {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn flushing_a_remote_clears_its_objects_keys_and_rows_and_nothing_else() {
    let origin = Origin::start().await;
    for remote in ["gen", "other"] {
        origin.put(
            &format!("/{remote}/a.tgz"),
            OriginFile::new(pattern_bytes(300_000, 1)),
        );
        origin.put(
            &format!("/{remote}/index.yaml"),
            OriginFile::new(format!("{remote}: v1\n")).etag("\"v1\""),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let backends = cluster_backends(dir.path());
    let ad = start_node(dir.path(), &two_remotes(&origin), backends, "").await;
    let http = client();
    for remote in ["gen", "other"] {
        for path in ["a.tgz", "index.yaml"] {
            let resp = http.get(ad.artifact(remote, path)).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.bytes().await.unwrap();
        }
    }
    // A revalidation (304) writes the index's freshness to Redis.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for remote in ["gen", "other"] {
        let resp = http
            .get(ad.artifact(remote, "index.yaml"))
            .send()
            .await
            .unwrap();
        assert_eq!(source(&resp), "cache");
    }

    let shared = services::shared();
    let ns = namespace(dir.path());
    let objects = |remote: &str| {
        shared
            .s3
            .keys(SHARED_BUCKET, &format!("{ns}/cache/{remote}/"))
            .len()
    };
    let state_keys = |remote: &str| {
        shared
            .redis
            .cli(&["--scan", "--pattern", &format!("{ns}:state:{remote}/*")])
            .lines()
            .count()
    };
    let rows = |remote: &str| {
        let sql = format!(
            "SELECT (SELECT count(*) FROM artifacts WHERE remote = '{remote}')
                  + (SELECT count(*) FROM entries WHERE remote = '{remote}')"
        );
        shared
            .postgres
            .query(&ns, &sql)
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    for remote in ["gen", "other"] {
        // Two entries, each a record and (past the inline size) a body.
        assert_eq!(objects(remote), 3, "{remote} in the bucket");
        assert_eq!(state_keys(remote), 1, "{remote} in redis");
        eventually(&format!("{remote} catalog rows"), 4, || rows(remote)).await;
    }

    let resp = http
        .put(ad.url("/cache/flush?remote=gen"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(objects("gen"), 0);
    assert_eq!(state_keys("gen"), 0);
    eventually("gen catalog rows", 0, || rows("gen")).await;
    assert_eq!(objects("other"), 3);
    assert_eq!(state_keys("other"), 1);
    assert_eq!(rows("other"), 4);

    // Flushed means gone: the next request goes upstream.
    let hits = origin.hits("/gen/a.tgz");
    let again = http.get(ad.artifact("gen", "a.tgz")).send().await.unwrap();
    assert_eq!(source(&again), "remote");
    assert_eq!(again.bytes().await.unwrap(), pattern_bytes(300_000, 1));
    assert_eq!(origin.hits("/gen/a.tgz"), hits + 1);
    let kept = http
        .get(ad.artifact("other", "a.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(source(&kept), "cache");
}

#[tokio::test]
async fn a_record_deleted_from_the_bucket_while_down_leaves_the_index_at_start() {
    let origin = Origin::start().await;
    forty_objects(&origin);
    let dir = tempfile::tempdir().unwrap();
    let remotes = two_remotes(&origin);
    let backends = cluster_backends(dir.path());
    let mut ad = start_node(dir.path(), &remotes, backends.clone(), "").await;
    let http = client();
    cache_objects(&http, &ad, 3).await;
    assert_eq!(
        remote_metric(&ad, "artifactd_cache_objects", "gen").await,
        3
    );
    ad.signal(libc::SIGTERM);
    assert!(ad.exited_within(Duration::from_secs(20)).await.is_some());

    let shared = services::shared();
    let prefix = format!("{}/cache/gen/", namespace(dir.path()));
    let records: Vec<String> = (shared.s3.keys(SHARED_BUCKET, &prefix).into_iter())
        .filter(|key| key.ends_with(".meta"))
        .collect();
    assert_eq!(records.len(), 3, "{records:?}");
    shared.s3.delete(SHARED_BUCKET, &records[0]);

    // The catalog still lists three entries; the walk of the bucket at
    // start finds one without its record and drops it.
    let ad = start_node(dir.path(), &remotes, backends, "").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let objects = remote_metric(&ad, "artifactd_cache_objects", "gen").await;
        if objects == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the index counts {objects} objects"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fetched = |i: usize| origin.hits(&format!("/gen/f{i}.tgz"));
    let before: usize = (0..3).map(fetched).sum();
    cache_objects(&http, &ad, 3).await;
    assert_eq!(
        (0..3).map(fetched).sum::<usize>(),
        before + 1,
        "one refetch"
    );
}

/// Forty objects `gen/f{i}.tgz` and an expiring `gen/index.yaml`.
fn forty_objects(origin: &Origin) {
    for i in 0..40 {
        origin.put(
            &format!("/gen/f{i}.tgz"),
            OriginFile::new(pattern_bytes(20_000 + i, i as u64)),
        );
    }
    origin.put("/gen/index.yaml", OriginFile::new("v1\n").etag("\"v1\""));
}

/// GETs the first `count` of [`forty_objects`] through `node`.
async fn cache_objects(http: &reqwest::Client, node: &Artifactd, count: usize) {
    for i in 0..count {
        let resp = http
            .get(node.artifact("gen", &format!("f{i}.tgz")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.bytes().await.unwrap(),
            pattern_bytes(20_000 + i, i as u64)
        );
    }
}

/// A bounded load over `nodes` in turn: ten cached objects of
/// [`forty_objects`], then all forty (half of them uncached) and every
/// seventh request the expiring index, for up to 400 requests or 6 s;
/// `before(round)` runs ahead of each. How many were served, and every
/// failure.
async fn bounded_load(
    http: &reqwest::Client,
    nodes: &[&Artifactd],
    mut before: impl FnMut(usize),
) -> (usize, Vec<String>) {
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut served = 0;
    for round in 0..400 {
        before(round);
        if started.elapsed() > Duration::from_secs(6) {
            break;
        }
        let i = if round < 10 { round } else { round % 40 };
        let path = if round % 7 == 0 {
            "index.yaml".to_string()
        } else {
            format!("f{i}.tgz")
        };
        let node = nodes[round % nodes.len()];
        match http.get(node.artifact("gen", &path)).send().await {
            Ok(resp) if resp.status() == 200 => {
                let body = resp.bytes().await.unwrap();
                if path.ends_with(".tgz") {
                    assert_eq!(body, pattern_bytes(20_000 + i, i as u64), "{path}");
                }
                served += 1;
            }
            Ok(resp) => failures.push(format!("{path}: {}", resp.status())),
            Err(e) => failures.push(format!("{path}: {e}")),
        }
    }
    (served, failures)
}

#[tokio::test]
async fn a_node_serves_on_while_redis_is_killed_and_uses_it_again_when_back() {
    let origin = Origin::start().await;
    forty_objects(&origin);
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(&dir.path().join("redis"));
    let ns = namespace(dir.path());
    let backends = shared_backends_with(&ns, &redis.url());
    let ad = start_node(
        &dir.path().join("node"),
        &two_remotes(&origin),
        backends,
        "",
    )
    .await;
    let http = client();
    cache_objects(&http, &ad, 20).await;

    // Ten cached requests with Redis up, then the kill, then the rest: the
    // uncached objects (20..40) all come after it.
    let mut killed = false;
    let (served, failures) = bounded_load(&http, &[&ad], |round| {
        if round == 10 {
            redis.kill();
            killed = true;
        }
    })
    .await;
    assert!(killed);
    assert_eq!(failures, Vec::<String>::new(), "after {served} served");
    assert!(served >= 40, "{served}");
    let log = ad.log_text();
    assert!(
        log.contains("carrying on without it"),
        "the outage is logged:\n{log}"
    );
    // Serving does not wait on Redis, so neither does readiness.
    let (status, ready) = readiness(&http, &ad).await;
    assert_eq!(status, 200);
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["checks"]["redis"]["ok"], false, "{ready}");

    // Back: freshness is written to Redis again without a restart.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let resp = http
            .get(ad.artifact("gen", "index.yaml"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let keys = redis.cli(&["--scan", "--pattern", &format!("{ns}:state:gen/*")]);
        if keys.lines().count() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no state written after Redis came back"
        );
    }
    let ready: serde_json::Value = crate::harness::get_json(&http, ad.url("/readyz")).await;
    assert_eq!(ready["status"], "ok", "{ready}");
    assert_eq!(ready["checks"]["redis"]["ok"], true, "{ready}");
    // And a fresh object is fetched once for concurrent requests.
    fetched_once(&http, &[&ad], &origin).await;
}

/// `/readyz` of `node`, which must answer within a second whatever its
/// backends do: its status and JSON.
async fn readiness(http: &reqwest::Client, node: &Artifactd) -> (u16, serde_json::Value) {
    let asked = Instant::now();
    let resp = http.get(node.url("/readyz")).send().await.unwrap();
    let waited = asked.elapsed();
    assert!(waited < Duration::from_secs(1), "/readyz took {waited:?}");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Eight concurrent requests for a new object, spread over `nodes`, cost
/// one upstream fetch and all get its bytes.
async fn fetched_once(http: &reqwest::Client, nodes: &[&Artifactd], origin: &Origin) {
    origin.put("/gen/new.tgz", OriginFile::new(pattern_bytes(2_000_000, 9)));
    let fetches: Vec<_> = (0..8)
        .map(|i| {
            let url = nodes[i % nodes.len()].artifact("gen", "new.tgz");
            let http = http.clone();
            tokio::spawn(async move { http.get(url).send().await.unwrap().bytes().await.unwrap() })
        })
        .collect();
    for fetch in fetches {
        assert_eq!(fetch.await.unwrap(), pattern_bytes(2_000_000, 9));
    }
    // The nodes' last warnings, read only when the count is wrong.
    let warnings = || -> Vec<String> {
        let logs: Vec<String> = nodes.iter().map(|n| n.log_text()).collect();
        let lines: Vec<String> = logs
            .iter()
            .flat_map(|log| log.lines().filter(|l| l.contains(" WARN ")))
            .map(String::from)
            .collect();
        lines[lines.len().saturating_sub(12)..].to_vec()
    };
    let hits = origin.hits("/gen/new.tgz");
    assert!(
        hits == 1,
        "{hits} fetches; last warnings: {:#?}",
        warnings()
    );
}

/// A Redis deployment that outlives its master: Sentinel's or a cluster's.
trait Failover: std::fmt::Debug {
    fn url(&self) -> String;
    /// How the nodes' key prefix `ns` is written in key names.
    fn prefix(&self, ns: &str) -> String;
    /// The master now of keys starting with `prefix`.
    fn master(&self, prefix: &str) -> &Redis;
    fn kill_master(&mut self, prefix: &str);
    /// Whether a replica has taken over from the killed master.
    fn failed_over(&self, prefix: &str) -> bool;
}

impl Failover for Sentinel {
    fn url(&self) -> String {
        Sentinel::url(self)
    }

    fn prefix(&self, ns: &str) -> String {
        ns.to_string()
    }

    fn master(&self, _prefix: &str) -> &Redis {
        match self.master_port() == Some(self.replica.port) {
            true => &self.replica,
            false => &self.master,
        }
    }

    fn kill_master(&mut self, _prefix: &str) {
        self.master.kill();
    }

    fn failed_over(&self, _prefix: &str) -> bool {
        self.master_port() == Some(self.replica.port)
    }
}

impl Failover for RedisCluster {
    fn url(&self) -> String {
        RedisCluster::url(self)
    }

    fn prefix(&self, ns: &str) -> String {
        format!("{{{ns}}}")
    }

    fn master(&self, prefix: &str) -> &Redis {
        self.master_of(prefix).expect("a master of the nodes' slot")
    }

    fn kill_master(&mut self, prefix: &str) {
        let port = self.master(prefix).port;
        let node = self.nodes.iter_mut().find(|n| n.port == port).unwrap();
        node.kill();
    }

    fn failed_over(&self, prefix: &str) -> bool {
        self.master_of(prefix).is_some()
    }
}

#[tokio::test]
async fn a_sentinel_failover_moves_every_node_to_the_new_master_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let sentinel = Sentinel::start(&dir.path().join("sentinel"));
    nodes_serve_through_a_failover(dir.path(), sentinel).await;
}

#[tokio::test]
async fn a_redis_cluster_failover_keeps_every_node_serving_and_sharing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start(&dir.path().join("redis-cluster"));
    nodes_serve_through_a_failover(dir.path(), cluster).await;
}

/// Two nodes on `redis`: state shared through its master, no failed
/// request while the master is killed and a replica takes over, state
/// shared and fetches coalesced through the new master without a restart,
/// and a flush that finds every key of a remote.
async fn nodes_serve_through_a_failover(dir: &std::path::Path, mut redis: impl Failover) {
    let origin = Origin::start().await;
    forty_objects(&origin);
    origin.put("/other/index.yaml", OriginFile::new("o1\n").etag("\"o1\""));
    let ns = namespace(dir);
    let backends = shared_backends_with(&ns, &redis.url());
    let remotes = two_remotes(&origin);
    let a = start_node(&dir.join("a"), &remotes, backends.clone(), CLUSTER).await;
    let b = start_node(&dir.join("b"), &remotes, backends, CLUSTER).await;
    let http = client();
    let prefix = redis.prefix(&ns);
    let state_keys = |redis: &dyn Failover, remote: &str| {
        let pattern = format!("{prefix}:state:{remote}/*");
        let master = redis.master(&prefix);
        master
            .cli(&["--scan", "--pattern", &pattern])
            .lines()
            .count()
    };

    // Through the master: a revalidation on A is fresh on B.
    get_gen(&http, &a, "index.yaml").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    get_gen(&http, &a, "index.yaml").await;
    get_gen(&http, &b, "index.yaml").await;
    assert_eq!(origin.hits("/gen/index.yaml"), 2);
    assert_eq!(state_keys(&redis, "gen"), 1);
    cache_objects(&http, &a, 20).await;

    // The master killed ten requests into a load over both nodes; a
    // replica takes over meanwhile.
    let (served, failures) = bounded_load(&http, &[&a, &b], |round| {
        if round == 10 {
            redis.kill_master(&prefix);
        }
    })
    .await;
    assert_eq!(failures, Vec::<String>::new(), "after {served} served");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !redis.failed_over(&prefix) {
        assert!(
            Instant::now() < deadline,
            "no replica took over:\n{redis:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Both nodes use the new master without a restart: A's revalidation
    // lands there and B finds it fresh.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let before = origin.hits("/other/index.yaml");
        for node in [&a, &b] {
            let resp = http.get(node.artifact("other", "index.yaml")).send().await;
            assert_eq!(resp.unwrap().status(), 200);
        }
        if state_keys(&redis, "other") == 1 && origin.hits("/other/index.yaml") == before + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes do not share state through the new master"
        );
    }
    // A new object is fetched once for requests spread over both.
    fetched_once(&http, &[&a, &b], &origin).await;
    assert!(
        a.log_text().contains("carrying on without it"),
        "the outage is logged"
    );
    // A flush finds the remote's keys on the new master, and only them.
    let resp = http
        .put(a.url("/cache/flush?remote=other"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(state_keys(&redis, "other"), 0);
    assert_eq!(state_keys(&redis, "gen"), 1);
}

#[tokio::test]
async fn postgres_away_fails_no_request_nor_a_start_and_the_rows_catch_up() {
    let origin = Origin::start().await;
    for i in 0..31 {
        origin.put(
            &format!("/gen/f{i}.tgz"),
            OriginFile::new(pattern_bytes(30_000, i)),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut postgres = Postgres::start(&dir.path().join("postgres"));
    let shared = services::shared();
    let ns = namespace(dir.path());
    let backends = cluster_backends_on(
        &shared.s3.url(),
        &format!("{SHARED_BUCKET}/{ns}"),
        &shared.redis.url(),
        &ns,
        &postgres.database("cache"),
    );
    let mut ad = start_node(
        &dir.path().join("node"),
        &two_remotes(&origin),
        backends.clone(),
        "",
    )
    .await;
    let http = client();
    let fetch = |node: &Artifactd, i: u64| {
        let (http, url) = (http.clone(), node.artifact("gen", &format!("f{i}.tgz")));
        async move {
            let resp = http.get(url).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.bytes().await.unwrap(), pattern_bytes(30_000, i));
        }
    };
    for i in 0..10 {
        fetch(&ad, i).await;
    }
    let rows = |postgres: &Postgres| {
        postgres
            .query("cache", "SELECT count(*) FROM artifacts")
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    eventually("rows before the outage", 10, || rows(&postgres)).await;

    postgres.stop();
    // Readiness does not wait on the catalog either: still ready, the
    // catalog reported, within a second.
    let (status, ready) = readiness(&http, &ad).await;
    assert_eq!(status, 200);
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["checks"]["catalog"]["ok"], false, "{ready}");
    assert_eq!(ready["checks"]["storage"]["ok"], true, "{ready}");
    // Misses and hits while the catalog is down: none waits on it.
    for i in 0..30 {
        let asked = Instant::now();
        fetch(&ad, i).await;
        assert!(asked.elapsed() < Duration::from_secs(2), "f{i} waited");
    }
    // Longer than a batch waits for a connection (5 s): the batch fails
    // and is retried.
    tokio::time::sleep(Duration::from_secs(6)).await;
    postgres.start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    while rows(&postgres) != 30 {
        assert!(
            Instant::now() < deadline,
            "rows after the outage: {}\n{}",
            rows(&postgres),
            ad.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = ad.log_text();
    assert!(
        log.contains("catalog unreachable"),
        "the outage is logged:\n{log}"
    );
    assert_eq!(origin.hits("/gen/f0.tgz"), 1);
    assert_eq!(origin.hits("/gen/f29.tgz"), 1);

    // A node started while PostgreSQL is away serves what the bucket
    // holds, fetches what it does not, and its rows arrive once the
    // database answers.
    ad.kill();
    postgres.stop();
    let restarted = start_node(
        &dir.path().join("node"),
        &two_remotes(&origin),
        backends,
        "",
    )
    .await;
    for i in [0, 15, 29, 30] {
        fetch(&restarted, i).await;
    }
    for i in [0, 15, 29, 30] {
        assert_eq!(origin.hits(&format!("/gen/f{i}.tgz")), 1, "f{i}");
    }
    postgres.start_again();
    let deadline = Instant::now() + Duration::from_secs(40);
    while rows(&postgres) != 31 {
        assert!(
            Instant::now() < deadline,
            "rows after a start without the catalog: {}\n{}",
            rows(&postgres),
            restarted.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(restarted.log_text().contains("starting without it"));
}

const CLUSTER: &str = "cluster:\n  secret: test-cluster-secret-0123456789\n  lock_ttl: 3s\n";

/// Starts `count` nodes on one bucket prefix, Redis key prefix and
/// database, each advertising its listener to the others.
async fn nodes(dir: &std::path::Path, remotes: &str, count: usize) -> Vec<Artifactd> {
    nodes_with(dir, remotes, count, CLUSTER).await
}

/// [`nodes`] with these server lines (which must hold the cluster's).
async fn nodes_with(
    dir: &std::path::Path,
    remotes: &str,
    count: usize,
    extra: &str,
) -> Vec<Artifactd> {
    let backends = cluster_backends(&dir.join("shared"));
    let mut nodes = Vec::new();
    for i in 0..count {
        let node = start_node(
            &dir.join(format!("node{i}")),
            remotes,
            backends.clone(),
            extra,
        )
        .await;
        nodes.push(node);
    }
    nodes
}

/// GETs `path` of remote `gen` from `node`, which must answer 200: its
/// `X-Artifact-Source` and body.
async fn get_gen(http: &reqwest::Client, node: &Artifactd, path: &str) -> (String, bytes::Bytes) {
    let resp = http.get(node.artifact("gen", path)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let source = source(&resp);
    (source, resp.bytes().await.unwrap())
}

/// How long a change on one node may take to reach another.
const PUBSUB_DELIVERY: Duration = Duration::from_millis(100);

#[tokio::test]
async fn nodes_share_commits_revalidations_and_flushes_within_100_ms() {
    let origin = Origin::start().await;
    let body = pattern_bytes(500_000, 3);
    origin.put("/gen/a.tgz", OriginFile::new(body.clone()));
    origin.put("/gen/index.yaml", OriginFile::new("v1\n").etag("\"v1\""));
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), &two_remotes(&origin), 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let http = client();
    let get = |node, path| get_gen(&http, node, path);

    // Committed on A, a hit on B.
    assert_eq!(
        get(a, "a.tgz").await,
        ("remote".to_string(), body.clone().into())
    );
    assert_eq!(
        get(b, "a.tgz").await,
        ("cache".to_string(), body.clone().into())
    );
    assert_eq!(origin.hits("/gen/a.tgz"), 1);

    // A mutable index: fetched on A, fresh on B within its TTL.
    assert_eq!(get(a, "index.yaml").await.0, "remote");
    assert_eq!(get(b, "index.yaml").await.0, "cache");
    assert_eq!(origin.hits("/gen/index.yaml"), 1);
    // Expired: A revalidates (304); B takes A's new freshness. The change
    // is published before A answers, but B applies it on its own thread:
    // the next request may come within a millisecond on a loaded machine,
    // so B is given PUBSUB_DELIVERY.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(get(a, "index.yaml").await.0, "cache");
    assert_eq!(origin.hits("/gen/index.yaml"), 2);
    tokio::time::sleep(PUBSUB_DELIVERY).await;
    assert_eq!(
        get(b, "index.yaml").await,
        ("cache".to_string(), "v1\n".into())
    );
    assert_eq!(
        origin.hits("/gen/index.yaml"),
        2,
        "B did not ask again:\nA:\n{}\nB:\n{}",
        a.log_text(),
        b.log_text()
    );

    // A new version replaces the old on A; B serves the new one at once.
    origin.put("/gen/index.yaml", OriginFile::new("v2\n").etag("\"v2\""));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        get(a, "index.yaml").await,
        ("remote".to_string(), "v2\n".into())
    );
    tokio::time::sleep(PUBSUB_DELIVERY).await;
    assert_eq!(
        get(b, "index.yaml").await,
        ("cache".to_string(), "v2\n".into())
    );
    assert_eq!(origin.hits("/gen/index.yaml"), 3);

    // A flush on A is a miss on B at once.
    let resp = http
        .put(a.url("/cache/flush?remote=gen"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        get(b, "a.tgz").await,
        ("remote".to_string(), body.clone().into())
    );
    assert_eq!(origin.hits("/gen/a.tgz"), 2);
    assert_eq!(get(a, "a.tgz").await, ("cache".to_string(), body.into()));
}

#[tokio::test]
async fn a_deletion_or_flush_on_one_node_ends_fast_hits_on_the_others() {
    let origin = Origin::start().await;
    let version = |n: u64| pattern_bytes(1024, 40 + n);
    origin.put("/gen/hot.tgz", OriginFile::new(version(1)));
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), &two_remotes(&origin), 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let http = client();
    let get = |node, path| get_gen(&http, node, path);
    let fast_hits = |node| remote_metric(node, "artifactd_fast_path_hits_total", "gen");

    assert_eq!(
        get(a, "hot.tgz").await,
        ("remote".into(), version(1).into())
    );
    for _ in 0..3 {
        assert_eq!(get(b, "hot.tgz").await, ("cache".into(), version(1).into()));
    }
    assert!(fast_hits(b).await >= 1, "hot on B:\n{}", b.log_text());

    // Deleted on A: B's hot copy is gone as soon as the change arrives.
    origin.put("/gen/hot.tgz", OriginFile::new(version(2)));
    let deleted = http.delete(a.url("/api/v1/cache/gen/hot.tgz")).send().await;
    assert_eq!(deleted.unwrap().status(), 200);
    tokio::time::sleep(PUBSUB_DELIVERY).await;
    assert_eq!(
        get(b, "hot.tgz").await,
        ("remote".into(), version(2).into())
    );
    let hot_again = fast_hits(b).await;
    assert_eq!(get(b, "hot.tgz").await, ("cache".into(), version(2).into()));
    assert_eq!(get(b, "hot.tgz").await, ("cache".into(), version(2).into()));
    assert!(fast_hits(b).await > hot_again, "hot on B again");

    // Flushed on A: the same.
    origin.put("/gen/hot.tgz", OriginFile::new(version(3)));
    let flushed = http.put(a.url("/cache/flush?remote=gen")).send().await;
    assert_eq!(flushed.unwrap().status(), 200);
    tokio::time::sleep(PUBSUB_DELIVERY).await;
    assert_eq!(
        get(b, "hot.tgz").await,
        ("remote".into(), version(3).into())
    );
    assert_eq!(origin.hits("/gen/hot.tgz"), 3);
}

#[tokio::test]
async fn a_remote_one_node_finds_down_is_down_on_all_and_back_on_all() {
    let origin = Origin::start().await;
    origin.put("/gen/u.tgz", OriginFile::failing(503));
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{CLUSTER}upstream:\n  breaker_failures: 3\n  breaker_backoff: 3\n");
    let nodes = nodes_with(dir.path(), &two_remotes(&origin), 2, &extra).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let http = client();
    let status = |node: &Artifactd, remote: &str| {
        let request = http.get(node.artifact(remote, "u.tgz"));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let upstream_state = |node: &Artifactd, remote: &'static str| {
        let url = node.url("/health");
        let http = http.clone();
        async move {
            let health: serde_json::Value = crate::harness::get_json(&http, url).await;
            health["upstreams"][remote]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
    };

    for _ in 0..3 {
        assert_eq!(status(a, "gen").await, 503);
    }
    assert_eq!(origin.hits("/gen/u.tgz"), 3);
    tokio::time::sleep(PUBSUB_DELIVERY).await;
    // B never saw a failure, yet keeps its requests off the failing upstream.
    assert_eq!(
        upstream_state(b, "gen").await,
        "down",
        "B:\n{}",
        b.log_text()
    );
    assert_eq!(upstream_state(b, "other").await, "up");
    let started = Instant::now();
    assert_eq!(status(b, "gen").await, 503);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(origin.hits("/gen/u.tgz"), 3, "B sent nothing upstream");
    assert!(b.log_text().contains("as another node found it failing"));

    // A's probe after the back-off finds it back: B hears so at once.
    origin.put("/gen/u.tgz", OriginFile::new(pattern_bytes(1000, 4)));
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(upstream_state(b, "gen").await, "down", "still down on B");
    assert_eq!(status(a, "gen").await, 200);
    assert_eq!(origin.hits("/gen/u.tgz"), 4);
    tokio::time::sleep(PUBSUB_DELIVERY).await;
    assert_eq!(upstream_state(b, "gen").await, "up");
    assert_eq!(status(b, "gen").await, 200);
    assert_eq!(origin.hits("/gen/u.tgz"), 4, "B's request was a hit");
}

#[tokio::test]
async fn one_node_evicts_the_shared_bucket_down_to_its_bound_in_catalog_order() {
    let origin = Origin::start().await;
    let names: Vec<String> = (0..6).map(|i| format!("e{i}.tgz")).collect();
    for (i, name) in names.iter().enumerate() {
        let body = pattern_bytes(1 << 20, 40 + i as u64);
        origin.put(&format!("/gen/{name}"), OriginFile::new(body));
    }
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{CLUSTER}cache:\n  max_size: 3MiB\n");
    let nodes = nodes_with(dir.path(), &two_remotes(&origin), 2, &extra).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let http = client();
    let http = &http;
    let get = |node, name| async move { get_gen(http, node, name).await.0 };
    // Three on each node: neither sees more than its bound, the bucket
    // holds twice it.
    for (i, name) in names.iter().enumerate() {
        let node = if i < 3 { a } else { b };
        assert_eq!(get(node, name).await, "remote");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let ns = namespace(&dir.path().join("shared"));
    let objects = || {
        services::shared()
            .s3
            .keys(SHARED_BUCKET, &format!("{ns}/cache/gen/"))
            .len()
    };
    // A record and a body each; down to the low watermark (2.85 MiB):
    // the two used last stay.
    let deadline = Instant::now() + Duration::from_secs(20);
    while objects() > 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(objects(), 4, "A:\n{}\nB:\n{}", a.log_text(), b.log_text());
    let evictions = |node| crate::evict::metric(node, "artifactd_cache_evictions_total");
    let mut counts = [evictions(a).await, evictions(b).await];
    counts.sort_unstable();
    assert_eq!(counts, [0, 4], "one node evicted all four");
    for node in [a, b] {
        assert_eq!(get(node, &names[4]).await, "cache");
        assert_eq!(get(node, &names[5]).await, "cache");
    }
    assert_eq!(get(b, &names[0]).await, "remote", "the oldest was evicted");
    assert_eq!(origin.hits("/gen/e0.tgz"), 2);
}

#[tokio::test]
async fn a_token_one_node_fetched_serves_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = TokenIssuer::start(&dir.path().join("issuer"), 300).await;
    let registry = Registry::start(dir.path(), Some(&issuer)).await;
    let layout = crate::oci::app_layout(dir.path(), 1, 10_000, 30).await;
    layout.push("app", &registry, "team/a", &[]).await;
    issuer.reset();
    let remotes = crate::oci::hub_remote(
        &registry.url(),
        "    username: puller\n    password: pull-secret\n",
    );
    let nodes = nodes(&dir.path().join("ad"), &remotes, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let manifest = |node: &Artifactd, tag: &str| {
        client()
            .get(node.url(&format!("/v2/hub/team/a/manifests/{tag}")))
            .header("accept", crate::oci::OCI_MANIFEST)
            .send()
    };
    assert_eq!(manifest(a, "app").await.unwrap().status(), 200);
    assert_eq!(issuer.requests_for("repository:team/a:pull"), 1);
    // B has never talked to the registry: its first request meets the
    // challenge, and the answer is the token A fetched.
    let before = registry.requests().len();
    assert_eq!(manifest(b, "missing").await.unwrap().status(), 404);
    assert_eq!(
        issuer.requests_for("repository:team/a:pull"),
        1,
        "{:?}",
        issuer.requests()
    );
    let statuses: Vec<u16> = registry.requests()[before..]
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [401, 404], "the shared token was accepted");
}

/// What one client got: time to its first body byte, and the body's length
/// and sha256 (or the error that ended it).
struct Transfer {
    first_byte: Duration,
    body: Result<(usize, String), String>,
}

async fn fetch(http: reqwest::Client, url: String) -> Transfer {
    use sha2::Digest;
    let started = Instant::now();
    let mut resp = http.get(&url).send().await.expect("response head");
    assert_eq!(resp.status(), 200, "{url}");
    let (mut hasher, mut len, mut first_byte) = (sha2::Sha256::new(), 0, None);
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                first_byte.get_or_insert_with(|| started.elapsed());
                hasher.update(&chunk);
                len += chunk.len();
            }
            Ok(None) => break,
            Err(e) => {
                return Transfer {
                    first_byte: first_byte.unwrap_or_else(|| started.elapsed()),
                    body: Err(format!("{e} after {len} bytes")),
                }
            }
        }
    }
    Transfer {
        first_byte: first_byte.unwrap_or_else(|| started.elapsed()),
        body: Ok((len, hex::encode(hasher.finalize()))),
    }
}

/// Each node's status page lists every node heard from, by the address
/// it advertises.
#[tokio::test]
async fn the_status_page_lists_every_node_of_the_cluster() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), &two_remotes(&origin), 2).await;
    let http = client();
    let mut expected: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    expected.sort();
    for node in &nodes {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let req = http
                .get(node.url("/status"))
                .header("accept", "application/json");
            let status: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
            let cluster = &status["cluster"];
            assert_eq!(cluster["this_node"], node.addr.to_string());
            let listed: Vec<String> = serde_json::from_value(cluster["nodes"].clone()).unwrap();
            if listed == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{listed:?}, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
async fn thirty_cold_requests_over_three_nodes_fetch_once_and_stream_at_once() {
    let origin = Origin::start().await;
    let body = pattern_bytes(50 << 20, 50);
    let digest = crate::harness::sha256_hex(&body);
    // Rate-limited: the fill takes about 8 s.
    origin.put("/gen/big.tgz", crate::fill::slow_file(&body, 8.0));
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), &two_remotes(&origin), 3).await;
    let http = client();
    let transfers: Vec<_> = (0..30)
        .map(|i| {
            let url = nodes[i % 3].artifact("gen", "big.tgz");
            tokio::spawn(fetch(http.clone(), url))
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for (i, transfer) in transfers.into_iter().enumerate() {
        let transfer = transfer.await.unwrap();
        assert_eq!(
            transfer.body,
            Ok((body.len(), digest.clone())),
            "request {i} (node {})",
            i % 3
        );
        slowest = slowest.max(transfer.first_byte);
    }
    let logs: String = nodes
        .iter()
        .map(|n| n.log_text())
        .flat_map(|t| {
            t.lines()
                .filter(|l| !l.contains("access]"))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .take(60)
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        origin.hits("/gen/big.tgz"),
        1,
        "one upstream fetch in all:\n{logs}"
    );
    assert!(
        slowest < Duration::from_millis(1500),
        "slowest first byte {slowest:?}"
    );
    // Committed once, and a hit on every node afterwards.
    for node in &nodes {
        let resp = http
            .get(node.artifact("gen", "big.tgz"))
            .send()
            .await
            .unwrap();
        assert_eq!(source(&resp), "cache");
        assert_eq!(resp.bytes().await.unwrap().len(), body.len());
    }
    assert_eq!(origin.hits("/gen/big.tgz"), 1);
    let ns = namespace(&dir.path().join("shared"));
    let bodies = services::shared()
        .s3
        .keys(SHARED_BUCKET, &format!("{ns}/cache/gen/"))
        .into_iter()
        .filter(|k| k.ends_with(".body"))
        .count();
    assert_eq!(bodies, 1, "one body in the bucket");
}

#[tokio::test]
async fn a_stopped_bucket_gets_503_for_cached_objects_and_passes_misses_until_it_is_back() {
    let origin = Origin::start().await;
    for name in ["a", "b", "c"] {
        origin.put(
            &format!("/gen/{name}.tgz"),
            OriginFile::new(pattern_bytes(200_000, name.len() as u64 + 7)),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::start(&dir.path().join("s3"));
    s3.bucket("cache");
    let shared = services::shared();
    let ns = namespace(dir.path());
    let remotes = two_remotes(&origin);
    let mut started = Vec::new();
    for mode in ["pass", "fail"] {
        let backends = format!(
            "storage: \"s3://cache/{mode}\"\n\
             s3: {{endpoint: \"{}\", allow_http: true, access_key_id: t, secret_access_key: t, timeout: 2s, on_failure: {mode}}}\n\
             state: \"{}\"\nredis: {{key_prefix: \"{ns}{mode}\"}}\ncatalog: \"{}\"\n",
            s3.url(),
            shared.redis.url(),
            shared.postgres.database(&format!("{ns}{mode}")),
        );
        started.push(start_node(&dir.path().join(mode), &remotes, backends, "").await);
    }
    let (pass, fail) = (&started[0], &started[1]);
    let http = client();
    for ad in [pass, fail] {
        let resp = http.get(ad.artifact("gen", "a.tgz")).send().await.unwrap();
        assert_eq!(source(&resp), "remote");
        resp.bytes().await.unwrap();
    }
    // Probes only read: the bucket sees no write from twenty of them.
    let writes = s3.writes("cache");
    assert!(writes > 0, "the fills above were counted");
    for _ in 0..10 {
        for ad in [pass, fail] {
            assert_eq!(
                crate::harness::status(http.get(ad.url("/readyz"))).await,
                200
            );
        }
    }
    assert_eq!(s3.writes("cache"), writes, "a probe wrote to the bucket");

    s3.stop();
    for ad in [pass, fail] {
        // Cached objects cannot be served: not ready, and said at once.
        let (status, ready) = readiness(&http, ad).await;
        assert_eq!(status, 503);
        assert_eq!(ready["checks"]["storage"]["ok"], false, "{ready}");
        assert_eq!(
            crate::harness::status(http.get(ad.url("/livez"))).await,
            200
        );
        let asked = Instant::now();
        let resp = http.get(ad.artifact("gen", "a.tgz")).send().await.unwrap();
        assert_eq!(resp.status(), 503, "a cached object without its bucket");
        assert_eq!(resp.headers()["retry-after"], "5");
        let text = resp.text().await.unwrap();
        assert!(text.contains("cache storage"), "{text}");
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "{:?}",
            asked.elapsed()
        );
    }
    assert_eq!(
        origin.hits("/gen/a.tgz"),
        2,
        "cached objects never go upstream"
    );
    // A miss passes through uncached, or gets a 503 with on_failure: fail.
    let resp = http
        .get(pass.artifact("gen", "b.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", pass.log_text());
    assert_eq!(source(&resp), "remote");
    assert_eq!(resp.bytes().await.unwrap(), pattern_bytes(200_000, 8));
    let resp = http
        .get(fail.artifact("gen", "c.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(origin.hits("/gen/c.tgz"), 0);

    // Back: served again without a restart, and misses are stored again.
    s3.start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = http
            .get(pass.artifact("gen", "a.tgz"))
            .send()
            .await
            .unwrap();
        // A server just started may answer before all of it serves (a
        // cut transfer, which the client sees): ask again until it serves.
        if resp.status() == 200 {
            assert_eq!(source(&resp), "cache");
            if let Ok(bytes) = resp.bytes().await {
                assert_eq!(bytes, pattern_bytes(200_000, 8));
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not served after the bucket came back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for expected in ["remote", "cache"] {
        let resp = http
            .get(pass.artifact("gen", "b.tgz"))
            .send()
            .await
            .unwrap();
        assert_eq!(source(&resp), expected);
        resp.bytes().await.unwrap();
    }
    assert_eq!(origin.hits("/gen/a.tgz"), 2);
    assert_eq!(origin.hits("/gen/b.tgz"), 2);
    for ad in [pass, fail] {
        assert_eq!(
            crate::harness::status(http.get(ad.url("/readyz"))).await,
            200
        );
    }
}

#[tokio::test]
async fn a_leader_killed_mid_fill_is_taken_over_and_nothing_partial_is_stored() {
    let origin = Origin::start().await;
    let body = pattern_bytes(20 << 20, 44);
    let digest = crate::harness::sha256_hex(&body);
    origin.put("/gen/big.tgz", crate::fill::slow_file(&body, 6.0));
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = nodes(dir.path(), &two_remotes(&origin), 2).await;
    let http = client();

    // The leader's client has some bytes; a follower on the other node too.
    let mut leading = http
        .get(nodes[0].artifact("gen", "big.tgz"))
        .send()
        .await
        .unwrap();
    let mut received = 0;
    while received < 2 << 20 {
        received += leading.chunk().await.unwrap().unwrap().len();
    }
    let mut following = http
        .get(nodes[1].artifact("gen", "big.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(following.status(), 200);
    following.chunk().await.unwrap().unwrap();

    nodes[0].kill();
    let killed = Instant::now();
    // Both transfers fail rather than end short as if whole.
    let mut cut = 0;
    loop {
        match following.chunk().await {
            Ok(Some(chunk)) => cut += chunk.len(),
            Ok(None) => panic!("the follower's transfer ended as if whole at {cut} bytes"),
            Err(_) => break,
        }
    }
    assert!(leading.bytes().await.is_err());

    // The next request on the surviving node takes the fetch over once the
    // dead leader's claim lapses (3 s), and stores it.
    let transfer = fetch(http.clone(), nodes[1].artifact("gen", "big.tgz")).await;
    assert_eq!(transfer.body, Ok((body.len(), digest)));
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(3 + 6 + 4),
        "taken over after {took:?}"
    );
    assert_eq!(origin.hits("/gen/big.tgz"), 2);
    let resp = http
        .get(nodes[1].artifact("gen", "big.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(source(&resp), "cache");
    assert_eq!(resp.bytes().await.unwrap().len(), body.len());
    // One whole body in the bucket; the dead leader's upload never shows.
    let ns = namespace(&dir.path().join("shared"));
    let bodies: Vec<String> = services::shared()
        .s3
        .keys(SHARED_BUCKET, &format!("{ns}/cache/gen/"))
        .into_iter()
        .filter(|k| k.ends_with(".body"))
        .collect();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
}

/// Peak resident memory of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

#[tokio::test]
async fn two_gib_through_the_bucket_cold_and_warm_in_under_100_mb() {
    // 2 GiB of 1 MiB blocks, each with its index, so no two blocks match.
    let block = pattern_bytes(1 << 20, 77);
    let mut body = Vec::with_capacity(2 << 30);
    for i in 0u32..2048 {
        body.extend_from_slice(&i.to_be_bytes());
        body.extend_from_slice(&block[4..]);
    }
    let digest = crate::harness::sha256_hex(&body);
    let origin = Origin::start().await;
    origin.put("/gen/huge.tgz", OriginFile::new(body));
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), &two_remotes(&origin), 1).await;
    let node = &nodes[0];
    let http = client();
    let mut figures = Vec::new();
    for pass in ["cold", "warm"] {
        let started = Instant::now();
        let transfer = fetch(http.clone(), node.artifact("gen", "huge.tgz")).await;
        assert_eq!(transfer.body, Ok((2 << 30, digest.clone())), "{pass}");
        let rss = peak_rss(node.pid());
        figures.push(format!(
            "{pass}: {:.1} s, peak RSS {:.1} MiB",
            started.elapsed().as_secs_f64(),
            rss as f64 / (1 << 20) as f64
        ));
        assert!(rss < 100_000_000, "{pass}: peak RSS {rss} bytes");
    }
    assert_eq!(origin.hits("/gen/huge.tgz"), 1);
    // The figures the issue asks for, in the test output (--nocapture).
    println!("2 GiB through S3: {}", figures.join("; "));
}
