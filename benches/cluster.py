"""The cluster shape: three artifactd nodes on one S3 bucket (SeaweedFS),
Redis and PostgreSQL, next to one node on the embedded default
(filesystem), in front of the same origin.

Scenarios (results: benches/results/cluster.{md,json}):
  8a. concurrent cold requests for one slow object: spread over the three
      nodes, against all on the one filesystem node. Upstream fetches (the
      origin's log), each follower's time to first byte beyond the first
      client's, and the slowest client's time.
  8b. hit RPS and p99, 1 KiB objects (served from memory once hot), on one
      cluster node against the filesystem node.
  8c. hit throughput of one large object, whose body is read from the
      bucket on every request, against the filesystem node's page cache.
  8d. all three cluster nodes driven at once (one wrk each): total RPS
      against the one filesystem node's.

The services run on loopback ports of their own: `redis-server` without
persistence, a private PostgreSQL cluster (`initdb` as the postgres user),
and SeaweedFS (`weed server -s3`, from the venv `install-deps.sh bench`
makes). Every load loop is bounded in time.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

from filler import fill_fast, herd_spread
from procs import stop_process

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MiB = 1024 * 1024
WEED = ROOT / "target/tools/venv/bin/weed"
NODES = 3
BUCKET = "bench"
SECRET = "bench-cluster-secret-0123456789"


def postgres_bin(name: str) -> str:
    """The newest installed PostgreSQL's `name` binary."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not versions:
        raise SystemExit("PostgreSQL not found: run scripts/install-deps.sh bench")
    return str(versions[-1] / name)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"{what} not ready within {timeout:.0f}s")


def quiet(cmd: list[str], timeout: float = 10) -> bool:
    try:
        return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def as_postgres() -> dict:
    """Runs a process as the postgres user and group only (root's groups
    would make directories' group bits apply instead of others')."""
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


class Services:
    """Redis, PostgreSQL and SeaweedFS for the nodes, each on its own ports."""

    def __init__(self, work: Path, free_port: Callable[[], int]):
        if not WEED.exists():
            raise SystemExit(f"{WEED} not found: run scripts/install-deps.sh bench")
        self.procs: list[subprocess.Popen] = []
        work.mkdir(parents=True, exist_ok=True)
        self.redis_port = free_port()
        self._start(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--dir", str(work)], work / "redis.log")
        wait_for("redis", lambda: quiet(["redis-cli", "-p", str(self.redis_port), "ping"]))

        self.pg_port = free_port()
        pg = work / "postgres"
        pg.mkdir()
        user = pwd.getpwnam("postgres")
        # initdb and postgres refuse root; the work directory must let them in.
        for parent in [pg, *pg.parents]:
            if parent == Path("/"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o005)
        os.chown(pg, user.pw_uid, user.pw_gid)
        initdb = subprocess.run([postgres_bin("initdb"), "-A", "trust", "-U", "postgres", "--no-sync",
                                 "-D", str(pg / "data")], cwd=pg, **as_postgres(),
                                capture_output=True, text=True, timeout=120)
        if initdb.returncode != 0:
            raise SystemExit(f"initdb failed:\n{initdb.stderr}")
        self._start([postgres_bin("postgres"), "-D", str(pg / "data"), "-p", str(self.pg_port),
                     "-k", str(pg), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                     "-c", "full_page_writes=off"], pg / "postgres.log", cwd=pg, **as_postgres())
        psql = ["psql", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "-c"]
        wait_for("postgres", lambda: quiet(psql + ["SELECT 1"]))
        subprocess.run(psql + ["CREATE DATABASE bench"], check=True, stdout=subprocess.DEVNULL,
                       timeout=30)

        ports = [self._port_pair(free_port) for _ in range(3)]
        self.s3_port = self._port_pair(free_port)
        self._start([str(WEED), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                     f"-dir={work / 'weed'}", f"-master.port={ports[0]}", f"-volume.port={ports[1]}",
                     f"-filer.port={ports[2]}", f"-s3.port={self.s3_port}", "-s3",
                     "-master.telemetry=false", "-master.volumeSizeLimitMB=512",
                     "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=64"], work / "weed.log")
        (work / "weed").mkdir(exist_ok=True)
        s3 = f"http://127.0.0.1:{self.s3_port}"
        wait_for("SeaweedFS", lambda: quiet(["curl", "-sf", "-o", "/dev/null", "-m", "2", s3]))
        wait_for("the bucket", lambda: subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", f"{s3}/{BUCKET}"],
            capture_output=True, text=True, timeout=10).stdout in ("200", "409"), 30)

    @staticmethod
    def _port_pair(free_port: Callable[[], int]) -> int:
        """A free port whose neighbour 10000 above is free too (SeaweedFS puts
        each server's gRPC port there, the S3 gateway's too)."""
        while True:
            port = free_port()
            if port >= 55000:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                    return port
                except OSError:
                    continue

    def _start(self, cmd: list[str], log: Path, cwd: Path | None = None, **identity) -> None:
        out = open(log, "ab")
        self.procs.append(subprocess.Popen(cmd, stdout=out, stderr=out, cwd=cwd,
                                           start_new_session=True, **identity))

    def backends(self) -> str:
        return (f'storage: "s3://{BUCKET}/c"\n'
                f's3: {{endpoint: "http://127.0.0.1:{self.s3_port}", allow_http: true, '
                f'access_key_id: bench, secret_access_key: bench, timeout: 5s}}\n'
                f'state: "redis://127.0.0.1:{self.redis_port}"\n'
                f'redis: {{key_prefix: "bench"}}\n'
                f'catalog: "postgres://postgres@127.0.0.1:{self.pg_port}/bench"\n'
                f'cluster: {{secret: "{SECRET}"}}\n')

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)


class ClusterNode:
    """One artifactd node of the cluster (the harness's Proxy interface)."""

    def __init__(self, binary: Path, workdir: Path, remotes: dict, threads: int,
                 services: Services, free_port: Callable[[], int], wait_port: Callable) -> None:
        self.name = workdir.name
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "remotes.yaml").write_text(json.dumps(remotes))  # JSON is YAML
        (workdir / "artifactd.yaml").write_text(
            f"listen: 127.0.0.1:{self.port}\nthreads: {threads}\nremotes: remotes.yaml\n"
            + services.backends())
        log = open(workdir / "artifactd.log", "ab")
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen([str(binary), "--config", str(workdir / "artifactd.yaml"), "serve"],
                                     stdout=log, stderr=log, env=env)
        wait_port(self.port, self.proc, f"artifactd {self.name}")

    def url(self, remote: str, path: str) -> str:
        return f"/api/v1/remote/{remote}/{path}"

    def stop(self) -> None:
        stop_process(self.proc)


def herd_figures(runs: list[tuple[float, float, float, int]]) -> dict:
    """The slowest client's time, and followers' first bytes beyond the first client's."""
    ttfbs = sorted(first - t0 for t0, first, _, _ in runs)
    extra = [t - ttfbs[0] for t in ttfbs[1:]]
    return {"p100_s": max(end - t0 for t0, _, end, _ in runs),
            "leader_ttfb_ms": ttfbs[0] * 1000,
            "follower_p50_ms": statistics.median(extra) * 1000,
            "follower_p100_ms": max(extra) * 1000}


def bench_cluster(bench, artifactd_class, generic_remotes, wrk, median_of, free_port, wait_port) -> dict:
    """Runs scenarios 8a-8d; returns {scenario: [rows]} with `cluster` and
    `one node` (filesystem) values."""
    plan = bench.plan
    results: dict[str, list[dict]] = {}

    def record(scenario: str, metric: str, unit: str, cluster: float, single: float, better: str,
               note: str = "") -> None:
        ratio = cluster / single if single else None
        results.setdefault(scenario, []).append(
            {"metric": metric, "unit": unit, "cluster": cluster, "single": single, "ratio": ratio,
             "better": better, "note": note})
        bench.say(f"  {metric}: cluster {cluster:.4g} {unit}, one node {single:.4g} {unit}")

    work = bench.work / "cluster"
    services = Services(work / "services", free_port)
    remotes = generic_remotes(bench.origin.port, 10)
    nodes: list[ClusterNode] = []
    single = None
    try:
        for i in range(NODES):
            nodes.append(ClusterNode(bench.binary, work / f"node{i}", remotes, plan.threads, services,
                                     free_port, wait_port))
        single = artifactd_class(bench.binary, work / "fs", remotes, plan)

        n, size = plan.herd_clients, plan.herd_bytes
        clients = min(n, 30)
        bench.say(f"8a. {clients} concurrent cold requests for one {size // MiB} MiB object at "
                  f"{plan.slow_rate}B/s: over {NODES} cluster nodes, and on one filesystem node")
        figures, fetches = {}, {}
        for which, ports in (("cluster", [p.port for p in nodes]), ("single", [single.port])):
            uri = f"/slow/{which}/spread.bin"
            runs = herd_spread(ports, nodes[0].url("b", uri.lstrip("/")), clients)
            if not all(got == size for _, _, _, got in runs):
                raise SystemExit(f"8a {which}: a short body")
            figures[which] = herd_figures(runs)
            fetches[which] = bench.origin.fetches(uri)
        scen = f"8a. {clients} cold requests, {size // MiB} MiB, over {NODES} nodes"
        c, s = figures["cluster"], figures["single"]
        record(scen, "upstream fetches (origin log)", "count", fetches["cluster"], fetches["single"], "lower")
        record(scen, "follower first byte after the first client's, p50", "ms",
               c["follower_p50_ms"], s["follower_p50_ms"], "lower",
               f"first client's first byte: cluster {c['leader_ttfb_ms']:.1f} ms, "
               f"one node {s['leader_ttfb_ms']:.1f} ms")
        record(scen, "follower first byte after the first client's, p100", "ms",
               c["follower_p100_ms"], s["follower_p100_ms"], "lower")
        record(scen, "slowest client's time", "s", c["p100_s"], s["p100_s"], "lower")

        keys = plan.hit_keys
        bench.say(f"8b. hit RPS, 1 KiB objects, {keys} keys, 64 connections: one cluster node, one fs node")
        for proxy in (nodes[0], single):
            fill_fast(proxy.port, [proxy.url("b", f"small/c/k{i}.bin") for i in range(keys)], 1024)
        runs: dict[str, list[dict]] = {"cluster": [], "single": []}
        for _ in range(plan.rounds):
            for which, proxy in (("cluster", nodes[0]), ("single", single)):
                runs[which].append(wrk(proxy.port, "", plan.wrk_seconds, 64, plan.threads,
                                       [proxy.url("b", "small/c/"), str(keys)]))
        med = {k: median_of(v) for k, v in runs.items()}
        scen = "8b. hit, 1 KiB, one node"
        record(scen, "requests/s", "req/s", med["cluster"]["rps"], med["single"]["rps"], "higher")
        record(scen, "p99 latency", "ms", med["cluster"]["p99_ms"], med["single"]["p99_ms"], "lower",
               f"p50 cluster {med['cluster']['p50_ms']:.3g} ms, one node {med['single']['p50_ms']:.3g} ms")

        big = plan.big_bytes
        bench.say(f"8c. hit throughput, one {big // MiB} MiB object, 8 connections")
        runs = {"cluster": [], "single": []}
        for which, proxy in (("cluster", nodes[0]), ("single", single)):
            fill_fast(proxy.port, [proxy.url("b", "big/one.bin")], big)
        for _ in range(plan.rounds):
            for which, proxy in (("cluster", nodes[0]), ("single", single)):
                runs[which].append(wrk(proxy.port, proxy.url("b", "big/one.bin"), plan.wrk_seconds, 8,
                                       plan.threads))
        med = {k: median_of(v) for k, v in runs.items()}
        record(f"8c. hit, {big // MiB} MiB, body read from the bucket", "throughput", "MiB/s",
               med["cluster"]["bytes_per_s"] / MiB, med["single"]["bytes_per_s"] / MiB, "higher")

        bench.say(f"8d. hit RPS, 1 KiB objects, all {NODES} cluster nodes at once (one wrk each)")
        for node in nodes[1:]:
            fill_fast(node.port, [node.url("b", f"small/c/k{i}.bin") for i in range(keys)], 1024)
        totals, single_rps = [], []
        for _ in range(plan.rounds):
            procs = [subprocess.Popen(["wrk", "-t1", "-c32", f"-d{plan.wrk_seconds}s", "--timeout", "10s",
                                       "-s", str(HERE / "keys.lua"), f"http://127.0.0.1:{node.port}", "--",
                                       node.url("b", "small/c/"), str(keys)],
                                      stdout=subprocess.PIPE, text=True) for node in nodes]
            total = 0.0
            for proc in procs:
                out, _ = proc.communicate(timeout=plan.wrk_seconds + 60)
                rps = [float(line.split()[1]) for line in out.splitlines()
                       if line.strip().startswith("Requests/sec:")]
                if not rps:
                    raise SystemExit(f"8d: wrk produced no result:\n{out}")
                total += rps[0]
            totals.append(total)
            single_rps.append(wrk(single.port, "", plan.wrk_seconds, 96, plan.threads,
                                  [single.url("b", "small/c/"), str(keys)])["rps"])
        record(f"8d. hit, 1 KiB, {NODES} nodes at once", "total requests/s", "req/s",
               statistics.median(totals), statistics.median(single_rps), "higher",
               f"{os.cpu_count()} cores shared by the nodes, the services and wrk")
    finally:
        for node in nodes:
            node.stop()
        if single is not None:
            single.stop()
        services.stop()
    return results


def render_cluster(results: dict, facts: dict, quick: bool, fmt: Callable[[object], str]) -> str:
    lines = [
        "# The cluster shape: three nodes on S3 + Redis + PostgreSQL"
        + (" (QUICK run: smoke sizes, not comparable)" if quick else ""),
        "",
        f"Machine: {facts['cores']} cores ({facts['cpu']}); {facts['artifactd']}; {facts['date']}. "
        f"{NODES} artifactd nodes on one SeaweedFS bucket, one redis-server and one PostgreSQL, all "
        "on this machine, against one node on the embedded default (filesystem). Ratio is "
        "cluster / one node; the `better` column says which direction wins.",
        "",
        "| scenario | metric | cluster | one node | ratio | better | note |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for scenario, rows in results.items():
        for row in rows:
            lines.append(f"| {scenario} | {row['metric']} ({row['unit']}) | {fmt(row['cluster'])} | "
                         f"{fmt(row['single'])} | {fmt(row['ratio'])} | {row['better']} | {row['note']} |")
    return "\n".join(lines) + "\n"
