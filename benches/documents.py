"""Index documents: one large npm package document asked for by many
clients at once, through artifactd (rewritten copies kept), through
artifactd with `cache.rewritten_bytes: 0` (every response rewritten: what
a kept copy saves), and through verdaccio 6.8 as a proxy of the same
upstream (the origin nginx, serving a generated document).

Scenario:
  9. 64 concurrent clients (8 in the quick run), each fetching the whole
     document, in bounded rounds after one warm-up fetch: p50/p99 time to
     the last byte, the server's CPU per request (utime+stime of its
     processes across the rounds) and how many bodies differ from the one
     a single client got from the same server.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

from procs import stop_process

ROOT = Path(__file__).resolve().parent.parent
NODE_BIN = ROOT / "target/tools/node/bin"
VERDACCIO = ROOT / "target/tools/npm/node_modules/.bin/verdaccio"
MiB = 1024 * 1024
FETCH_TIMEOUT = 120
PACKAGE = "bigdoc"


def npm_document(tarball_base: str, target_bytes: int) -> bytes:
    """A package document of about `target_bytes`: versions with the
    fields a registry publishes, each linking its tarball upstream."""
    versions, times = {}, {}
    size, i = 0, 0
    while size < target_bytes:
        version = f"{i // 1000}.{i % 1000}.0"
        digest = hashlib.sha1(version.encode()).hexdigest()
        entry = {
            "name": PACKAGE, "version": version,
            "description": "a generated package with many releases " * 8,
            "dependencies": {f"dep-{j}": f"^{j}.0.0" for j in range(12)},
            "dist": {"tarball": f"{tarball_base}/{PACKAGE}/-/{PACKAGE}-{version}.tgz",
                     "shasum": digest,
                     "integrity": "sha512-" + hashlib.sha512(version.encode()).hexdigest()},
        }
        versions[version] = entry
        times[version] = "2020-01-01T00:00:00.000Z"
        size += len(json.dumps(entry)) + 40
        i += 1
    latest = max(versions, key=lambda v: tuple(int(p) for p in v.split(".")))
    doc = {"name": PACKAGE, "dist-tags": {"latest": latest}, "versions": versions, "time": times}
    return json.dumps(doc).encode()


def fetch(port: int, path: str) -> tuple[float, str, int]:
    """One GET of the whole body: (seconds to the last byte, sha256, bytes)."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=FETCH_TIMEOUT)
    try:
        conn.request("GET", path, headers={"Host": "mirror.bench", "Accept": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise SystemExit(f"GET {path} on port {port}: {resp.status}")
    finally:
        conn.close()
    return time.monotonic() - started, hashlib.sha256(body).hexdigest(), len(body)


class Verdaccio:
    """verdaccio with one uplink: the origin."""

    name = "verdaccio"

    def __init__(self, workdir: Path, port: int, uplink: str):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port
        config = (f"storage: {workdir / 'storage'}\n"
                  f"uplinks:\n  origin:\n    url: {uplink}\n    timeout: 60s\n    maxage: 60m\n"
                  "packages:\n  '**':\n    access: $all\n    proxy: origin\n"
                  "server:\n  keepAliveTimeout: 60\n"
                  "max_body_size: 100mb\n"
                  "log: { type: stdout, format: pretty, level: warn }\n")
        (workdir / "config.yaml").write_text(config)
        env = dict(os.environ, PATH=f"{NODE_BIN}:{os.environ.get('PATH', '')}")
        log = open(workdir / "verdaccio.log", "ab")
        self.proc = subprocess.Popen([str(VERDACCIO), "--config", str(workdir / "config.yaml"),
                                      "--listen", f"127.0.0.1:{port}"],
                                     stdout=log, stderr=log, env=env)

    def path(self) -> str:
        return f"/{PACKAGE}"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        stop_process(self.proc)


def measure(server, port: int, path: str, clients: int, rounds: int) -> dict:
    """A warm-up fetch and a single client's reference body, then `rounds`
    bursts of `clients` fetches at once."""
    fetch(port, path)
    _, reference, size = fetch(port, path)
    times: list[float] = []
    differing = 0
    cpu_before = server.cpu_seconds()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for _ in range(rounds):
            for took, digest, _ in pool.map(lambda _: fetch(port, path), range(clients)):
                times.append(took)
                differing += digest != reference
    cpu = server.cpu_seconds() - cpu_before
    times.sort()
    return {"p50_ms": statistics.median(times) * 1000,
            "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1000,
            "cpu_ms": cpu * 1000 / len(times), "differing": differing, "bytes": size,
            "requests": len(times)}


def bench_documents(bench, artifactd_cls, free_port, wait_port) -> None:
    """Runs scenario 9; results go to `bench.document_results`."""
    if not VERDACCIO.exists():
        raise SystemExit(f"{VERDACCIO} not found: run scripts/install-deps.sh bench")
    quick = bench.plan.rounds == 1
    doc_bytes = (1 if quick else 16) * MiB
    clients = 8 if quick else 64
    rounds = 1 if quick else 3
    origin_url = f"http://127.0.0.1:{bench.origin.port}/npm"
    document = npm_document(origin_url, doc_bytes)
    (bench.origin.files / "npm-bigdoc.json").write_bytes(document)
    scen = f"9. {len(document) / MiB:.0f} MB npm document, {clients} clients at once"
    bench.say(f"{scen}, {rounds} rounds")
    work = bench.work / "documents"
    remotes = {"remotes": {"npm": {"base_url": origin_url, "package": "npm"}}}
    servers = {}
    try:
        servers["artifactd"] = artifactd_cls(bench.binary, work / "kept", remotes, bench.plan)
        servers["rewrite each"] = artifactd_cls(bench.binary, work / "every", remotes, bench.plan,
                                                "cache:\n  rewritten_bytes: 0\n")
        verdaccio = Verdaccio(work / "verdaccio", free_port(), origin_url + "/")
        servers["verdaccio"] = verdaccio
        wait_port(verdaccio.port, verdaccio.proc, "verdaccio", timeout=60)
        results = {}
        for name, server in servers.items():
            path = server.path() if name == "verdaccio" else server.url("npm", PACKAGE)
            results[name] = measure(server, server.port, path, clients, rounds)
            bench.say(f"  {name}: {results[name]}")
    finally:
        for server in servers.values():
            server.stop()
    note = f"{rounds} rounds of {clients}; body {results['artifactd']['bytes']:,} bytes through artifactd"
    for metric, unit, key in [("p50 time to the last byte", "ms", "p50_ms"),
                              ("p99 time to the last byte", "ms", "p99_ms"),
                              ("server CPU per request", "ms", "cpu_ms"),
                              ("bodies unlike a single client's", "count", "differing")]:
        values = {name: r[key] for name, r in results.items()}
        bench.document_results.setdefault(scen, []).append(
            {"metric": metric, "unit": unit, **values, "better": "lower", "note": note})


def render_documents(results: dict, fmt: Callable[[object], str]) -> list[str]:
    """The index documents table of latest.md, numbers written by `fmt`."""
    if not results:
        return []
    lines = ["", "## Index documents: artifactd vs verdaccio 6.8", "",
             "The same generated npm document on the same origin; `rewrite each` is artifactd with "
             "`cache.rewritten_bytes: 0` (every response rewritten). Ratios are artifactd over each.", "",
             "| scenario | metric | artifactd | rewrite each | verdaccio | vs rewrite each | vs verdaccio "
             "| better | note |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for scenario, rows in results.items():
        for row in rows:
            a, every, v = row["artifactd"], row["rewrite each"], row["verdaccio"]
            lines.append(f"| {scenario} | {row['metric']} ({row['unit']}) | {fmt(a)} | {fmt(every)} | "
                         f"{fmt(v)} | {fmt(_ratio(a, every))} | {fmt(_ratio(a, v))} | {row['better']} "
                         f"| {row['note']} |")
    return lines


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None

