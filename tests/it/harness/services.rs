//! The real services of the cluster shape on free loopback ports: Redis
//! (`redis-server`), PostgreSQL (a private cluster made by `initdb`, run
//! as the postgres user) and an S3 server (SeaweedFS's `weed server -s3`).
//!
//! A test that stops or breaks a service starts its own; every other test
//! shares one set per test process ([`shared`]), each artifactd on it in
//! its own database, bucket prefix and key prefix. The shared servers are
//! started from a thread that lives as long as the process and die with it
//! (`PR_SET_PDEATHSIG`), so no test run leaves servers behind. A service
//! that cannot start fails the test; nothing is skipped.

use super::artifactd::free_port;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

/// Where `scripts/install-deps.sh test` puts SeaweedFS.
fn weed_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/venv/bin/weed")
}

/// The newest PostgreSQL the postgresql package installed.
fn postgres_bin(program: &str) -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL under /usr/lib/postgresql (the postgresql package)");
    let newest = versions
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .max()
        .expect("a PostgreSQL version under /usr/lib/postgresql");
    PathBuf::from(format!("/usr/lib/postgresql/{newest}/bin/{program}"))
}

/// How a service's process is started: the command, its log, and whether
/// it dies with the test process.
fn spawn(command: &mut Command, log: &Path, with_process: bool) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("service log");
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("service log"))
        .stderr(file);
    if with_process {
        // SAFETY: prctl is async-signal-safe; it only sets this process's
        // parent-death signal.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    command
        .spawn()
        .unwrap_or_else(|e| panic!("starting {:?}: {e}", command.get_program()))
}

/// Polls `ready` until it holds, failing with the service's log.
fn wait_until(what: &str, log: &Path, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{what} did not start within {limit:?}:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn connects(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A free port whose neighbour 10000 above is free too (SeaweedFS puts
/// each server's gRPC port there).
fn free_port_pair() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// `N` ports from [`free_port_pair`], no two alike and none another's
/// neighbour: each probe frees its port, so two probes can draw the same
/// one (seen once: SeaweedFS's filer and S3 gateway on one port).
fn distinct_port_pairs<const N: usize>() -> [u16; N] {
    let mut ports = [0u16; N];
    let mut found = 0;
    while found < N {
        let port = free_port_pair();
        let clashes = |p: &u16| *p == port || p.abs_diff(port) == 10_000;
        if !ports[..found].iter().any(clashes) {
            ports[found] = port;
            found += 1;
        }
    }
    ports
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A master, its replica and one Sentinel (quorum 1) that promotes the
/// replica half a second after the master stops answering.
pub struct Sentinel {
    pub master: Redis,
    pub replica: Redis,
    sentinel: Option<Child>,
    pub port: u16,
}

/// The master's name in the Sentinel's configuration.
pub const SENTINEL_SERVICE: &str = "artifactd-test";

impl Sentinel {
    pub fn start(dir: &Path) -> Sentinel {
        let master = Redis::start(&dir.join("master"));
        let replica = Redis::start_replica(&dir.join("replica"), &master);
        let port = free_port();
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                 sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_SERVICE} 500\n\
                 sentinel failover-timeout {SENTINEL_SERVICE} 3000\n",
                dir.display(),
                master.port
            ),
        )
        .expect("sentinel.conf");
        let log = dir.join("sentinel.log");
        let child = spawn(
            Command::new("redis-server").arg(&config).arg("--sentinel"),
            &log,
            false,
        );
        let sentinel = Sentinel {
            master,
            replica,
            sentinel: Some(child),
            port,
        };
        // Only a replica the Sentinel knows of can be promoted.
        let replica_port = sentinel.replica.port.to_string();
        wait_until("the Sentinel", &log, Duration::from_secs(30), || {
            sentinel
                .cli(&["SENTINEL", "REPLICAS", SENTINEL_SERVICE])
                .contains(&replica_port)
        });
        sentinel
    }

    /// The URL artifactd's `state:` takes.
    pub fn url(&self) -> String {
        format!(
            "redis+sentinel://127.0.0.1:{}/{SENTINEL_SERVICE}",
            self.port
        )
    }

    /// The port of the server the Sentinel names master.
    pub fn master_port(&self) -> Option<u16> {
        let answer = self.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE]);
        answer.lines().nth(1)?.trim().parse().ok()
    }

    fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }
}

impl std::fmt::Debug for Sentinel {
    /// What the Sentinel says of the master, for a failure message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let master = self.cli(&["SENTINEL", "MASTER", SENTINEL_SERVICE]);
        write!(f, "sentinel {}: {}", self.port, master.replace('\n', " "))
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        stop(&mut self.sentinel);
    }
}

/// A Redis Cluster of three masters, each with a replica that takes over
/// a second after its master stops answering.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start(dir: &Path) -> RedisCluster {
        let nodes: Vec<Redis> = (0..6)
            .map(|i| {
                let node_dir = dir.join(format!("node{i}"));
                // The cluster bus listens 10000 above the port.
                Redis::start_as(
                    &node_dir,
                    free_port_pair(),
                    false,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-config-file",
                        &node_dir.join("nodes.conf").to_string_lossy(),
                    ],
                )
            })
            .collect();
        let log = dir.join("create.log");
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        create.args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let status = spawn(&mut create, &log, false).wait().expect("redis-cli");
        assert!(
            status.success(),
            "redis-cli --cluster create: {status}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let cluster = RedisCluster { nodes };
        // A replica that has not synced once cannot take over.
        wait_until("the cluster", &log, Duration::from_secs(30), || {
            cluster.nodes.iter().all(|n| {
                let replication = n.cli(&["INFO", "replication"]);
                n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            })
        });
        cluster
    }

    /// The URL artifactd's `state:` takes: the first three nodes.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes[..3]
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The live node that every live node names master of `key`'s slot
    /// (None while the slot's master is dead and no replica has taken
    /// over, or while the nodes' views of it differ).
    pub fn master_of(&self, key: &str) -> Option<&Redis> {
        let live: Vec<&Redis> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
        let slot: u16 = live
            .first()?
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .ok()?;
        let views: Vec<Option<u16>> = live.iter().map(|n| slot_master(n, slot)).collect();
        let port = views.first().copied().flatten()?;
        if views.iter().any(|view| *view != Some(port)) {
            return None;
        }
        live.into_iter().find(|n| n.port == port)
    }
}

impl std::fmt::Debug for RedisCluster {
    /// Every live node's view of the cluster, for a failure message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let log = std::fs::read_to_string(node.dir.join("redis.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let view = node.cli(&["CLUSTER", "NODES"]);
            writeln!(f, "node {}:\n{view}log:\n{}", node.port, tail.join("\n"))?;
        }
        Ok(())
    }
}

/// The port of the master of `slot` in `node`'s view of the cluster.
fn slot_master(node: &Redis, slot: u16) -> Option<u16> {
    let table = node.cli(&["CLUSTER", "NODES"]);
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let serves = fields.get(8..)?.iter().any(|range| {
            let (low, high) = range.split_once('-').unwrap_or((range, range));
            matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(l), Ok(h)) if l <= slot && slot <= h)
        });
        let master = fields.get(2)?.contains("master") && !fields[2].contains("fail");
        let port = fields.get(1)?.split(['@', ',']).next()?.rsplit(':').next()?;
        (serves && master).then(|| port.parse::<u16>().ok()).flatten()
    })
}

/// A `redis-server` without persistence.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Redis {
    pub fn start(dir: &Path) -> Redis {
        Self::start_on(dir, free_port(), false)
    }

    fn start_on(dir: &Path, port: u16, with_process: bool) -> Redis {
        Self::start_as(dir, port, with_process, &[])
    }

    /// A replica of the server on `master`, once it holds the master's data.
    pub fn start_replica(dir: &Path, master: &Redis) -> Redis {
        let master_port = master.port.to_string();
        let replica = Self::start_as(
            dir,
            free_port(),
            false,
            &["--replicaof", "127.0.0.1", &master_port],
        );
        wait_until(
            "the replica's sync",
            &dir.join("redis.log"),
            Duration::from_secs(20),
            || {
                replica
                    .cli(&["INFO", "replication"])
                    .contains("master_link_status:up")
            },
        );
        replica
    }

    fn start_as(dir: &Path, port: u16, with_process: bool, extra: &[&str]) -> Redis {
        std::fs::create_dir_all(dir).expect("redis dir");
        let log = dir.join("redis.log");
        let child = spawn(
            Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(dir)
                .args(extra),
            &log,
            with_process,
        );
        wait_until("redis-server", &log, Duration::from_secs(20), || {
            connects(port)
        });
        Redis {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (its data is gone: nothing persists).
    pub fn kill(&mut self) {
        stop(&mut self.child);
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        *self = Self::start_on(&self.dir.clone(), self.port, false);
    }

    /// Runs a `redis-cli` command and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }
}

/// Runs a `redis-cli` command against the server on `port`.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--raw"])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private PostgreSQL cluster, trusting local connections.
pub struct Postgres {
    child: Option<Child>,
    pub port: u16,
    data: PathBuf,
    root: PathBuf,
    with_process: bool,
}

impl Postgres {
    pub fn start(dir: &Path) -> Postgres {
        Self::init(dir, false)
    }

    fn init(dir: &Path, with_process: bool) -> Postgres {
        std::fs::create_dir_all(dir).expect("postgres dir");
        // The postgres user must reach its directory through the test's.
        if let Some(parent) = dir.parent() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755));
        }
        let (uid, gid) = postgres_ids();
        // initdb and the server refuse to run as root.
        chown(dir, uid, gid);
        let data = dir.join("data");
        let log = dir.join("initdb.log");
        let status = Command::new(postgres_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("initdb log"))
            .status()
            .expect("initdb");
        assert!(
            status.success(),
            "initdb failed:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let mut postgres = Postgres {
            child: None,
            port: free_port(),
            data,
            root: dir.to_path_buf(),
            with_process,
        };
        postgres.run();
        postgres
    }

    fn run(&mut self) {
        let (uid, gid) = postgres_ids();
        let log = self.root.join("postgres.log");
        let child = spawn(
            Command::new(postgres_bin("postgres"))
                .arg("-D")
                .arg(&self.data)
                .args(["-p", &self.port.to_string(), "-k"])
                .arg(&self.root)
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                .args(["-c", "full_page_writes=off"])
                .uid(uid)
                .gid(gid),
            &log,
            self.with_process,
        );
        self.child = Some(child);
        let port = self.port;
        wait_until("postgres", &log, Duration::from_secs(30), || {
            psql(port, "postgres", "SELECT 1").is_ok()
        });
    }

    /// Stops the server as an operator would (a fast shutdown: sessions
    /// are cut, nothing committed is lost); [`Postgres::start_again`]
    /// resumes it. SIGKILL would leave orphaned backends answering.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signals our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn start_again(&mut self) {
        self.stop();
        self.run();
    }

    /// Creates database `name` (if new) and returns its URL.
    pub fn database(&self, name: &str) -> String {
        let exists = psql(
            self.port,
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
        )
        .expect("psql");
        if exists.trim() != "1" {
            psql(self.port, "postgres", &format!("CREATE DATABASE {name}"))
                .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        }
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs one SQL statement in `database`: its rows, `|`-separated.
    pub fn query(&self, database: &str, sql: &str) -> String {
        psql(self.port, database, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn psql(port: u16, database: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(["-d", database, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "3")
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn postgres_ids() -> (u32, u32) {
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .expect("id");
    let uid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a postgres user (installed with the postgresql package)");
    let out = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .expect("id");
    let gid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("postgres group");
    (uid, gid)
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
}

/// SeaweedFS with its S3 gateway: master, volume server, filer and S3 in
/// one process.
pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    ports: [u16; 3],
    /// Prometheus metrics: the gateway's requests, counted by bucket,
    /// status and type.
    metrics_port: u16,
    dir: PathBuf,
    with_process: bool,
}

impl S3Server {
    pub fn start(dir: &Path) -> S3Server {
        Self::start_with(dir, false)
    }

    fn start_with(dir: &Path, with_process: bool) -> S3Server {
        std::fs::create_dir_all(dir.join("data")).expect("s3 dir");
        let [port, ports @ ..] = distinct_port_pairs::<4>();
        let mut server = S3Server {
            child: None,
            port,
            ports,
            metrics_port: super::artifactd::free_port(),
            dir: dir.to_path_buf(),
            with_process,
        };
        server.run();
        server
    }

    fn run(&mut self) {
        let [master, volume, filer] = self.ports;
        let log = self.dir.join("weed.log");
        let port = |p: u16| p.to_string();
        let child = spawn(
            Command::new(weed_binary())
                .args(["server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
                .arg(format!("-dir={}", self.dir.join("data").display()))
                .arg(format!("-master.port={}", port(master)))
                .arg(format!("-volume.port={}", port(volume)))
                .arg(format!("-filer.port={}", port(filer)))
                .arg(format!("-s3.port={}", port(self.port)))
                .arg(format!("-metricsPort={}", port(self.metrics_port)))
                .args([
                    "-s3",
                    "-master.telemetry=false",
                    "-master.volumeSizeLimitMB=512",
                ])
                // Other gateways SeaweedFS starts on fixed ports by default.
                .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
                .arg("-volume.max=64"),
            &log,
            self.with_process,
        );
        self.child = Some(child);
        let url = self.url();
        wait_until("SeaweedFS", &log, Duration::from_secs(60), || {
            // The gateway answers once the filer behind it does.
            Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "-m", "2", &url])
                .status()
                .is_ok_and(|s| s.success())
        });
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` (if new).
    pub fn bucket(&self, bucket: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
                .arg(format!("{}/{bucket}", self.url()))
                .output()
                .expect("curl");
            let code = String::from_utf8_lossy(&status.stdout).to_string();
            if code == "200" || code == "409" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "creating bucket {bucket}: HTTP {code}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Requests the gateway has answered for `bucket` that change it
    /// (PUT, POST, DELETE, and the multipart calls), from its metrics.
    pub fn writes(&self, bucket: &str) -> u64 {
        let out = Command::new("curl")
            .args([
                "-sf",
                &format!("http://127.0.0.1:{}/metrics", self.metrics_port),
            ])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.contains("SeaweedFS_s3_request_total"),
            "no S3 metrics:\n{text}"
        );
        text.lines()
            .filter(|line| line.starts_with("SeaweedFS_s3_request_total{"))
            .filter(|line| line.contains(&format!("bucket=\"{bucket}\"")))
            .filter(|line| !line.contains("type=\"GET\"") && !line.contains("type=\"HEAD\""))
            .filter(|line| !line.contains("type=\"LIST\""))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// The keys under `prefix` in `bucket` (ListObjectsV2, every page).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}/{bucket}?list-type=2&prefix={prefix}", self.url());
            if let Some(token) = &token {
                url.push_str(&format!("&continuation-token={token}"));
            }
            let out = Command::new("curl")
                .args(["-sf", &url])
                .output()
                .expect("curl");
            let body = String::from_utf8_lossy(&out.stdout).into_owned();
            keys.extend(tag_values(&body, "Key"));
            token = tag_values(&body, "NextContinuationToken")
                .into_iter()
                .next();
            if token.is_none() {
                return keys;
            }
        }
    }

    /// Deletes `key` from `bucket`, behind any node's back.
    pub fn delete(&self, bucket: &str, key: &str) {
        let status = Command::new("curl")
            .args(["-sf", "-X", "DELETE"])
            .arg(format!("{}/{bucket}/{key}", self.url()))
            .status()
            .expect("curl");
        assert!(status.success(), "deleting {bucket}/{key}: {status}");
    }

    /// Stops the server at once; [`S3Server::start_again`] resumes it with
    /// its data on the same ports.
    pub fn stop(&mut self) {
        stop(&mut self.child);
    }

    pub fn start_again(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tag_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(value, _)| value.to_string()))
        .collect()
}

/// Removes what the shared services of test processes that no longer
/// run left in the temp directory.
fn remove_dead_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("artifactd-it-services-") else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// One Redis, PostgreSQL and S3 server shared by the tests of a process.
pub struct Services {
    pub redis: Redis,
    pub postgres: Postgres,
    pub s3: S3Server,
}

pub const SHARED_BUCKET: &str = "artifactd-tests";

/// The shared services, started on first use by a thread that lives as
/// long as the process (their parent-death signal is tied to it).
/// A service that failed to start fails every test that needs it, with
/// the reason, without each trying again.
pub fn shared() -> &'static Services {
    static SERVICES: OnceLock<Result<&'static Services, String>> = OnceLock::new();
    let started = SERVICES.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("test-services".into())
            .spawn(move || {
                let root = std::env::temp_dir()
                    .join(format!("artifactd-it-services-{}", std::process::id()));
                remove_dead_runs();
                let _ = std::fs::remove_dir_all(&root);
                let started = std::panic::catch_unwind(|| {
                    // One after the other, from this thread: the parent-death
                    // signal follows the thread that started the process.
                    let redis = Redis::start_on(&root.join("redis"), free_port(), true);
                    let postgres = Postgres::init(&root.join("postgres"), true);
                    let s3 = S3Server::start_with(&root.join("s3"), true);
                    s3.bucket(SHARED_BUCKET);
                    &*Box::leak(Box::new(Services {
                        redis,
                        postgres,
                        s3,
                    }))
                });
                let started = started.map_err(|_| {
                    format!(
                        "the shared test services did not start; their logs are in {}",
                        root.display()
                    )
                });
                tx.send(started).expect("test thread");
                loop {
                    std::thread::park();
                }
            })
            .expect("services thread");
        rx.recv()
            .unwrap_or_else(|_| Err("the test services thread died".into()))
    });
    match started {
        Ok(services) => services,
        Err(reason) => panic!("{reason}"),
    }
}
