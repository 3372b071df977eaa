#!/usr/bin/env python3
"""artifactd against nginx proxy_cache, side by side, on loopback.

One origin (nginx serving generated files, logging every request), then
artifactd and nginx (proxy_cache, cache lock on) both in front of it, driven
by the same load generator (wrk) and the same Python clients, in alternating
runs so machine noise hits both. Every load loop is bounded in requests and
in time. Results go to benches/results/latest.{md,json}.

Scenarios:
  1. hit RPS and p50/p99 latency, 1 KiB objects, 64 connections, warmed keys
     (2,000 keys; 1c: 20,000 keys); then p99 again at an equal offered load
     (each connection pausing between requests), and flat out with wrk and
     a one-worker server each bound to a CPU of its own
  2. hit throughput for one big object, 8 connections
  3. cold miss latency overhead versus fetching from the origin directly,
     64 KiB objects (3b: 4 MiB, spilled to a body file; 3c: 32 MiB,
     assembled from ranges)
  4. thundering herd on one slow object: upstream fetches (origin log),
     p100 client time relative to one cold fetch, and each follower's time
     to first byte relative to the first client's
  5. peak RSS while streaming a huge object cold, then warm
  6. hit latency as cached objects grow, and as the pattern count grows
  7. container images against the distribution registry's proxy mode
     (benches/images.py)
  9. a 16 MB npm document asked for by 64 clients at once: artifactd, artifactd
     rewriting every response, and verdaccio 6.8 as a proxy of the same origin
     (benches/documents.py)
  10. a cache of ten million 1 KiB objects filled by `artifactd import`:
     import rate, start-up time, memory per object, hits over every key
     (benches/bulk.py; artifactd only)
  12. a large object from an origin capped at 50 MiB/s per connection:
     cold, with every connection cut, and a footer-first read; artifactd
     against nginx plain and with the slice module (benches/large.py;
     results in large.{md,json})
  8. the cluster shape (three nodes on S3 + Redis + PostgreSQL) against one
     node on the filesystem default (benches/cluster.py; results in
     cluster.{md,json})

Usage: run.py [--quick] [--cluster-only | --audit-only | --large-only] [--binary PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

from audit import bench_audit, render_audit
from bulk import bench_bulk, render_bulk
from cluster import bench_cluster, render_cluster
from filler import fill_fast
from filler import herd as herd_clients
from documents import bench_documents, render_documents
from images import bench_images, render_images
from large import bench_large, render_large
from procs import CountingNginx, free_port, stop_process, wait_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MiB = 1024 * 1024


@dataclass
class Plan:
    """Sizes and counts; QUICK shrinks everything so the harness runs in ~1 min."""

    rounds: int
    wrk_seconds: int
    hit_keys: int
    many_hit_keys: int
    big_bytes: int
    cold_objects: int
    cold_large_objects: int
    herd_clients: int
    herd_bytes: int
    slow_rate: str
    slow_bytes_per_s: int
    huge_bytes: int
    object_counts: list[int]
    pattern_counts: list[int]
    bulk_objects: int
    threads: int = 2

    @staticmethod
    def full() -> "Plan":
        return Plan(3, 8, 2000, 20000, 100 * MiB, 1000, 40, 100, 50 * MiB, "25m", 25 * 1000 * 1000,
                    2048 * MiB, [1000, 10000, 100000, 1000000], [10, 100, 1000], 10_000_000)

    @staticmethod
    def quick() -> "Plan":
        return Plan(1, 2, 200, 2000, 16 * MiB, 100, 8, 20, 8 * MiB, "25m", 25 * 1000 * 1000,
                    128 * MiB, [100, 1000], [10, 100], 20_000)


def render(template: Path, out: Path, **fields: object) -> Path:
    text = template.read_text()
    for key, value in fields.items():
        text = text.replace("{{" + key + "}}", str(value))
    leftover = re.findall(r"\{\{\w+\}\}", text)
    if leftover:
        raise SystemExit(f"{template}: unfilled {leftover}")
    out.write_text(text)
    return out


def patterns(n: int) -> list[str]:
    """n allow patterns; only the last one matches the benchmark keys."""
    return [f"^other{i}/.*\\.bin$" for i in range(n - 1)] + ["^small/"]


class Proxy:
    """A running proxy under test."""

    name: str
    port: int
    proc: subprocess.Popen

    def url(self, remote: str, path: str) -> str:
        return f"/api/v1/remote/{remote}/{path}"

    def pids(self) -> list[int]:
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        return pids

    def memory_kib(self, field: str) -> int:
        """Sum of a /proc status field (VmRSS, VmHWM) over the proxy's processes."""
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far of the proxy's processes (every
        thread; nginx's master and workers)."""
        ticks = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
            except (OSError, IndexError, ValueError):
                pass
        return ticks / os.sysconf("SC_CLK_TCK")

    def reset_peak(self) -> None:
        """Resets VmHWM to the current RSS (clear_refs 5), so a phase's peak is its own."""
        for pid in self.pids():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass

    def stop(self) -> None:
        stop_process(self.proc)


def generic_remotes(origin_port: int, pattern_count: int) -> dict:
    """Remote "b" allows everything, remote "p" only what its patterns allow."""
    return {"remotes": {
        "b": {"base_url": f"http://127.0.0.1:{origin_port}", "package": "generic"},
        "p": {"base_url": f"http://127.0.0.1:{origin_port}", "package": "generic",
              "immutable_patterns": patterns(pattern_count)},
    }}


def on_cpu(cpu: int | None):
    """A `preexec_fn` binding a child, and every thread it starts, to one CPU."""
    return None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))


def own_cores() -> tuple[int, int] | None:
    """(the load generator's CPU, the server's CPU) when there are two.

    Flat out on shared cores, wrk's two threads and the server's threads
    all stay runnable, and a request's tail is mostly the time one of them
    waits for a CPU; a faster server keeps wrk busier and so lengthens its
    own measured tail. With one wrk thread on one core and a one-worker
    server on the other, nothing else competes for either, and the tail
    is the server's."""
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else None


class Artifactd(Proxy):
    def __init__(self, binary: Path, workdir: Path, remotes: dict, plan: Plan, extra: str = "",
                 cpu: int | None = None):
        self.name = "artifactd"
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "remotes.yaml").write_text(json.dumps(remotes))  # JSON is YAML
        (workdir / "artifactd.yaml").write_text(
            f"listen: 127.0.0.1:{self.port}\nthreads: {plan.threads}\nremotes: remotes.yaml\n"
            f"storage: fs://store\n{extra}")
        log = open(workdir / "artifactd.log", "ab")
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen([str(binary), "--config", str(workdir / "artifactd.yaml"), "serve"],
                                     stdout=log, stderr=log, env=env, preexec_fn=on_cpu(cpu))
        wait_port(self.port, self.proc, "artifactd")

    def fast_path_hits(self, remote: str = "b") -> int:
        """Hits of `remote` the fast path answered so far (the rest of a hit
        run went through pingora's phases: a record not in the page cache)."""
        return fast_path_hits(self.port, remote)


def fast_path_hits(port: int, remote: str) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120).read().decode()
    found = re.search(rf'artifactd_fast_path_hits_total\{{remote="{remote}"\}} (\S+)', text)
    return int(float(found.group(1))) if found else 0


class NginxProxy(Proxy):
    def __init__(self, workdir: Path, origin_port: int, plan: Plan, pattern_count: int,
                 cpu: int | None = None):
        self.name = "nginx"
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        lines = [f'        "~{p}" 1;' for p in patterns(pattern_count)]
        # Remote "b" allows everything, remote "p" only what its patterns allow.
        pattern_map = "\n".join(
            ['        "~^/api/v1/remote/b/" 1;'] +
            [line.replace('"~^', '"~^/api/v1/remote/p/') for line in lines])
        conf = render(HERE / "nginx-proxy.conf", workdir / "nginx-proxy.conf", dir=workdir,
                      workers=plan.threads, origin_port=origin_port, port=self.port,
                      pattern_map=pattern_map)
        self.launch(workdir, conf, cpu)

    def launch(self, workdir: Path, conf: Path, cpu: int | None = None) -> None:
        self.proc = subprocess.Popen(["nginx", "-p", str(workdir), "-c", str(conf), "-e",
                                      str(workdir / "nginx-proxy-error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=on_cpu(cpu))
        wait_port(self.port, self.proc, "nginx proxy")


class TemplateNginxProxy(NginxProxy):
    """nginx from one of the single-remote templates (remote "b" only),
    named by the subclass."""

    name = ""
    template = ""

    def __init__(self, workdir: Path, origin_port: int, plan: Plan):
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = render(HERE / self.template, workdir / "nginx-proxy.conf", dir=workdir,
                      workers=plan.threads, origin_port=origin_port, port=self.port)
        self.launch(workdir, conf)


class LightNginxProxy(TemplateNginxProxy):
    """nginx with the lightest proxy_cache configuration: what a hit costs
    nginx when it does nothing else."""

    name = "nginx-light"
    template = "nginx-proxy-light.conf"


class SliceNginxProxy(TemplateNginxProxy):
    """nginx proxy_cache with the slice module at 8 MiB: the nearest nginx
    comes to filling a large object from ranges."""

    name = "nginx-slice"
    template = "nginx-proxy-slice.conf"


class Origin(CountingNginx):
    def __init__(self, workdir: Path, plan: Plan):
        self.port = free_port()
        files = workdir / "files"
        files.mkdir(parents=True, exist_ok=True)
        self.files = files
        (files / "1k.bin").write_bytes(os.urandom(1024))
        (files / "64k.bin").write_bytes(os.urandom(64 * 1024))
        (files / "4m.bin").write_bytes(os.urandom(4 * MiB))
        (files / "32m.bin").write_bytes(os.urandom(32 * MiB))
        for name, size in [("herd.bin", plan.herd_bytes), ("big.bin", plan.big_bytes)]:
            with open(files / name, "wb") as f:
                for _ in range(size // MiB):
                    f.write(os.urandom(MiB))
        with open(files / "huge.bin", "wb") as f:
            f.truncate(plan.huge_bytes)  # sparse: costs no disk on the origin side
        conf = render(HERE / "nginx-origin.conf", workdir / "nginx-origin.conf", dir=workdir,
                      files=files, origin_port=self.port, slow_rate=plan.slow_rate)
        self.launch(workdir, conf)


# --- clients -----------------------------------------------------------------

def get(port: int, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, int, dict]:
    """GET, draining the body; returns (status, bytes, headers)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", path)
    resp = conn.getresponse()
    total = 0
    while True:
        chunk = resp.read(1 << 20)
        if not chunk:
            break
        total += len(chunk)
    headers = {k.lower(): v for k, v in resp.getheaders()}
    if own:
        conn.close()
    return resp.status, total, headers


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_bytes(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)([KMGT]?B)", text.strip())
    scale = {"B": 1, "KB": 1024, "MB": MiB, "GB": 1024 * MiB, "TB": MiB * MiB}
    return float(m.group(1)) * scale[m.group(2)] if m else 0.0


# The pause of each connection before each request in the paced runs: at
# 64 connections at most 32,000 requests/s, below either server's maximum
# here, so both carry the same load.
PACE_MS = 2


def wrk(port: int, path_or_script: str, seconds: int, connections: int, threads: int,
        script_args: list[str] | None = None, server: "Proxy | None" = None,
        script: str = "keys.lua", cpu: int | None = None) -> dict:
    """Runs wrk for a bounded time (on `cpu` only, if given); returns rps,
    p50/p99 ms, bytes/s, errors and, given the server, its CPU time per
    request (µs): on a machine whose load generator shares the cores, the
    figure that says what a request costs."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if script_args is not None:
        cmd += ["-s", str(HERE / script), f"http://127.0.0.1:{port}", "--"] + script_args
    else:
        cmd += [f"http://127.0.0.1:{port}{path_or_script}"]
    cpu_before = server.cpu_seconds() if server else 0.0
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,
                         preexec_fn=on_cpu(cpu)).stdout
    cpu = server.cpu_seconds() - cpu_before if server else 0.0
    result = {"rps": 0.0, "p50_ms": None, "p99_ms": None, "bytes_per_s": 0.0, "errors": 0,
              "requests": 0, "cpu_us": None}
    for line in out.splitlines():
        line = line.strip()
        if re.match(r"^\d+ requests in", line):
            result["requests"] = int(line.split()[0])
        elif line.startswith("Requests/sec:"):
            result["rps"] = float(line.split()[1])
        elif line.startswith("Transfer/sec:"):
            result["bytes_per_s"] = parse_bytes(line.split()[1])
        elif re.match(r"^50(\.0+)?%", line):
            result["p50_ms"] = parse_ms(line.split()[1])
        elif re.match(r"^99(\.0+)?%", line):
            result["p99_ms"] = parse_ms(line.split()[1])
        elif line.startswith("Non-2xx") or line.startswith("Socket errors"):
            result["errors"] += sum(int(n) for n in re.findall(r"\d+", line.split(":", 1)[1]))
    if "Requests/sec:" not in out:
        raise SystemExit(f"wrk produced no result:\n{' '.join(cmd)}\n{out}")
    if server and result["requests"]:
        result["cpu_us"] = cpu * 1e6 / result["requests"]
    # A proxy that answered nothing in the whole run (seen once with nginx
    # after filling 20,000 keys) scores zero rather than ending the bench.
    return result


def median_of(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    return {k: statistics.median([r[k] for r in runs]) if all(isinstance(r[k], (int, float)) for r in runs)
            else runs[0][k] for k in keys}


CPU_NOTE = "utime+stime of every server process across the wrk run, over its requests"


# --- the run -------------------------------------------------------------------

@dataclass
class Bench:
    plan: Plan
    binary: Path
    work: Path
    origin: Origin
    results: dict = field(default_factory=dict)
    image_results: dict = field(default_factory=dict)
    document_results: dict = field(default_factory=dict)
    bulk_results: dict = field(default_factory=dict)
    large_results: dict = field(default_factory=dict)
    cluster_results: dict = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        print(text, flush=True)

    def start(self, which: str, tag: str, pattern_count: int = 10, cpu: int | None = None) -> Proxy:
        """artifactd or nginx; on `cpu` alone with one worker, if given."""
        workdir = self.work / f"{which}-{tag}"
        plan = self.plan if cpu is None else replace(self.plan, threads=1)
        if which == "artifactd":
            return Artifactd(self.binary, workdir, generic_remotes(self.origin.port, pattern_count),
                             plan, cpu=cpu)
        return NginxProxy(workdir, self.origin.port, plan, pattern_count, cpu=cpu)

    def both(self, tag: str, pattern_count: int = 10) -> list[Proxy]:
        return [self.start("artifactd", tag, pattern_count), self.start("nginx", tag, pattern_count)]

    def record(self, scenario: str, metric: str, unit: str, values: dict, better: str, note: str = "") -> None:
        a, n = values["artifactd"], values["nginx"]
        ratio = (a / n) if a is not None and n else None
        self.results.setdefault(scenario, []).append(
            {"metric": metric, "unit": unit, "artifactd": a, "nginx": n, "ratio": ratio,
             "better": better, "note": note})
        self.say(f"  {metric}: artifactd {fmt(a)} {unit}, nginx {fmt(n)} {unit}, ratio {fmt(ratio)}")

    def record_images(self, scenario: str, metric: str, unit: str, values: dict, better: str,
                      note: str = "") -> None:
        """A row of the images table: artifactd, the distribution proxy and, when
        measured, the upstream registry directly."""
        a, d = values["artifactd"], values["distribution"]
        ratio = (a / d) if a is not None and d else None
        self.image_results.setdefault(scenario, []).append(
            {"metric": metric, "unit": unit, "artifactd": a, "distribution": d, "ratio": ratio,
             "upstream": values.get("upstream"), "better": better, "note": note})
        self.say(f"  {metric}: artifactd {fmt(a)} {unit}, distribution {fmt(d)} {unit}, ratio {fmt(ratio)}"
                 + (f", upstream {fmt(values['upstream'])} {unit}" if "upstream" in values else ""))

    def record_hit_run(self, scenario: str, med: dict) -> None:
        """Records a wrk hit run of both proxies: p99 (with p50 noted) and RPS."""
        p50 = f"p50 artifactd {fmt(med['artifactd']['p50_ms'])} ms, nginx {fmt(med['nginx']['p50_ms'])} ms"
        self.record(scenario, "p99 latency", "ms", {k: v["p99_ms"] for k, v in med.items()}, "lower", p50)
        self.record(scenario, "requests/s", "req/s", {k: v["rps"] for k, v in med.items()}, "higher")
        self.record_cpu(scenario, med)

    def record_cpu(self, scenario: str, med: dict) -> None:
        """The servers' CPU time per request of a wrk run (see `wrk`)."""
        self.record(scenario, "server CPU per request", "µs", {k: v["cpu_us"] for k, v in med.items()},
                    "lower", CPU_NOTE)

    # 1. ----------------------------------------------------------------------
    def hits_small(self, proxies: list[Proxy], keys: int, scen: str, prefix: str,
                   own_core: list[Proxy] | None = None) -> None:
        self.say(f"{scen}: hit RPS, 1 KiB objects, {keys} keys, 64 connections")
        for p in proxies + (own_core or []):
            fill_fast(p.port, [p.url("b", f"{prefix}/k{i}.bin") for i in range(keys)], 1024)
        med = self.flat_out_rounds(proxies, prefix, keys, self.plan.threads)
        self.record(scen, "requests/s", "req/s", {k: v["rps"] for k, v in med.items()}, "higher")
        self.record_cpu(scen, med)
        self.record(scen, "p50 latency", "ms", {k: v["p50_ms"] for k, v in med.items()}, "lower")
        self.record(scen, "p99 latency", "ms", {k: v["p99_ms"] for k, v in med.items()}, "lower")
        self.record(scen, "errors", "count", {k: v["errors"] for k, v in med.items()}, "lower")
        self.paced_latency(proxies, scen, prefix, keys)
        if own_core:
            self.own_core_runs(own_core, scen, prefix, keys)
        if "nginx-light" in med:
            light = {"artifactd": med["artifactd"], "nginx": med["nginx-light"]}
            note = "against nginx-proxy-light.conf: no ACL map, no regex location, no added header"
            self.record(scen, "requests/s, light nginx", "req/s",
                        {k: v["rps"] for k, v in light.items()}, "higher", note)
            self.record(scen, "server CPU per request, light nginx", "µs",
                        {k: v["cpu_us"] for k, v in light.items()}, "lower", note)
            self.record(scen, "p99 latency, light nginx", "ms",
                        {k: v["p99_ms"] for k, v in light.items()}, "lower", note)

    def paced_latency(self, proxies: list[Proxy], scen: str, prefix: str, keys: int) -> None:
        """p99 at an equal, bounded load: each connection pauses before each
        request. Flat out, both servers and wrk are runnable all the time on
        two cores, and the tail is mostly whose thread waits for a CPU; at
        the same offered load it is what each server makes a request wait."""
        pair = [p for p in proxies if p.name in ("artifactd", "nginx")]
        med = {p.name: wrk(p.port, "", self.plan.wrk_seconds, 64, self.plan.threads,
                           [p.url("b", f"{prefix}/"), str(keys), str(PACE_MS)], server=p,
                           script="keys_paced.lua")
               for p in pair}
        note = (f"64 connections, each pausing {PACE_MS} ms before each request; "
                f"requests/s artifactd {fmt(med['artifactd']['rps'])}, nginx {fmt(med['nginx']['rps'])}")
        self.record(scen, "p99 latency at equal paced load", "ms",
                    {k: v["p99_ms"] for k, v in med.items()}, "lower", note)
        self.record(scen, "server CPU per request at equal paced load", "µs",
                    {k: v["cpu_us"] for k, v in med.items()}, "lower", CPU_NOTE)

    def flat_out_rounds(self, proxies: list[Proxy], prefix: str, keys: int, threads: int,
                        cpu: int | None = None) -> dict[str, dict]:
        """Each proxy's median of `rounds` flat-out wrk runs (64 connections,
        `threads` wrk threads, on `cpu` if given), the proxies alternating."""
        runs: dict[str, list[dict]] = {p.name: [] for p in proxies}
        for _ in range(self.plan.rounds):
            for p in proxies:
                runs[p.name].append(wrk(p.port, "", self.plan.wrk_seconds, 64, threads,
                                        [p.url("b", f"{prefix}/"), str(keys)], server=p, cpu=cpu))
        return {name: median_of(r) for name, r in runs.items()}

    def own_core_runs(self, proxies: list[Proxy], scen: str, prefix: str, keys: int) -> None:
        """The flat-out run again with the load generator and the server each
        on a core of its own (see `own_cores`): one wrk thread, one worker."""
        client_cpu, server_cpu = own_cores()
        med = self.flat_out_rounds(proxies, prefix, keys, 1, client_cpu)
        note = (f"wrk (one thread) on CPU {client_cpu}, the server on CPU {server_cpu} with one worker "
                f"(threads: 1, worker_processes 1)")
        p50 = f"; p50 artifactd {fmt(med['artifactd']['p50_ms'])} ms, nginx {fmt(med['nginx']['p50_ms'])} ms"
        self.record(scen, "requests/s, each on its own core", "req/s",
                    {k: v["rps"] for k, v in med.items()}, "higher", note)
        self.record(scen, "server CPU per request, each on its own core", "µs",
                    {k: v["cpu_us"] for k, v in med.items()}, "lower", note)
        self.record(scen, "p99 latency, each on its own core", "ms",
                    {k: v["p99_ms"] for k, v in med.items()}, "lower", note + p50)

    # 2. ----------------------------------------------------------------------
    def hits_big(self, proxies: list[Proxy]) -> None:
        self.say(f"2. hit throughput, one {self.plan.big_bytes // MiB} MiB object, 8 connections")
        for p in proxies:
            status, size, _ = get(p.port, p.url("b", "big/one.bin"))
            assert status == 200 and size == self.plan.big_bytes, (p.name, status, size)
        runs: dict[str, list[dict]] = {p.name: [] for p in proxies}
        for _ in range(self.plan.rounds):
            for p in proxies:
                runs[p.name].append(wrk(p.port, p.url("b", "big/one.bin"), self.plan.wrk_seconds, 8,
                                        self.plan.threads, server=p))
        med = {name: median_of(r) for name, r in runs.items()}
        scen = f"2. hit, {self.plan.big_bytes // MiB} MiB, 8 conns"
        self.record(scen, "throughput", "MiB/s", {k: v["bytes_per_s"] / MiB for k, v in med.items()}, "higher")
        self.record(scen, "server CPU per MiB", "ms",
                    {k: 1000 * v["cpu_us"] / 1e6 / (self.plan.big_bytes / MiB) if v["cpu_us"] else None
                     for k, v in med.items()}, "lower", CPU_NOTE)

    # 3. ----------------------------------------------------------------------
    def cold(self, proxies: list[Proxy], scen: str = "3. cold miss, 64 KiB", prefix: str = "cold",
             size: int = 64 * 1024, n: int | None = None) -> None:
        n = n or self.plan.cold_objects
        self.say(f"{scen}: {n} distinct objects, one client")
        medians: dict[str, float] = {}

        def timed(port: int, paths: list[str]) -> float:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            times = []
            for path in paths:
                start = time.perf_counter()
                status, got, _ = get(port, path, conn)
                times.append((time.perf_counter() - start) * 1000)
                assert status == 200 and got == size, (path, status, got)
            conn.close()
            return statistics.median(times)

        # Direct and proxied fetches alternate in slices, each key cold for its proxy.
        slices = 4
        per = n // slices
        acc: dict[str, list[float]] = {"origin": [], "artifactd": [], "nginx": []}
        for s in range(slices):
            keys = range(s * per, (s + 1) * per)
            acc["origin"].append(timed(self.origin.port, [f"/{prefix}/direct/c{i}.bin" for i in keys]))
            for p in proxies:
                acc[p.name].append(timed(p.port, [p.url("b", f"{prefix}/{p.name}/c{i}.bin") for i in keys]))
        medians = {k: statistics.median(v) for k, v in acc.items()}
        self.record(scen, "median latency", "ms", {"artifactd": medians["artifactd"], "nginx": medians["nginx"]},
                    "lower", f"origin direct {fmt(medians['origin'])} ms")
        self.record(scen, "overhead vs origin", "x",
                    {p: medians[p] / medians["origin"] for p in ("artifactd", "nginx")}, "lower")

    def cold_large(self, proxies: list[Proxy]) -> None:
        """Misses of bodies that spill to a file (3b) and of bodies
        assembled from ranges (3c), where hashing and the commit weigh."""
        self.cold(proxies, "3b. cold miss, 4 MiB", "cold4m", 4 * MiB, self.plan.cold_large_objects)
        self.cold(proxies, "3c. cold miss, 32 MiB", "cold32m", 32 * MiB, self.plan.cold_large_objects)

    # 4. ----------------------------------------------------------------------
    def herd(self, proxies: list[Proxy]) -> None:
        n, size = self.plan.herd_clients, self.plan.herd_bytes
        self.say(f"4. thundering herd, {n} clients, one {size // MiB} MiB object at {self.plan.slow_rate}B/s")
        fetches, p100, single = {}, {}, {}
        ttfb_p50, ttfb_p100, leader_ttfb = {}, {}, {}
        for p in proxies:
            start = time.perf_counter()
            status, got, _ = get(p.port, p.url("b", f"slow/{p.name}/single.bin"))
            single[p.name] = time.perf_counter() - start
            assert status == 200 and got == size
            uri = f"/slow/{p.name}/herd.bin"
            runs = herd_clients(p.port, p.url("b", uri.lstrip("/")), n)
            assert all(got2 == size for _, _, _, got2 in runs), p.name
            p100[p.name] = max(end - t0 for t0, _, end, _ in runs)
            fetches[p.name] = self.origin.fetches(uri)
            # The leader is the client whose first byte came first; each
            # follower's wait is its own time to first byte beyond that.
            ttfbs = sorted(first - t0 for t0, first, _, _ in runs)
            leader_ttfb[p.name] = ttfbs[0]
            extra = [t - ttfbs[0] for t in ttfbs[1:]]
            ttfb_p50[p.name] = statistics.median(extra) * 1000
            ttfb_p100[p.name] = max(extra) * 1000
        scen = f"4. herd, {n} x {size // MiB} MiB"
        self.record(scen, "upstream fetches (origin log)", "count", fetches, "lower")
        self.record(scen, "p100 client time", "s", p100, "lower")
        self.record(scen, "p100 / one cold fetch", "x", {k: p100[k] / single[k] for k in p100}, "lower",
                    f"one cold fetch: artifactd {fmt(single['artifactd'])} s, nginx {fmt(single['nginx'])} s")
        note = (f"leader's time to first byte: artifactd {fmt(leader_ttfb['artifactd'] * 1000)} ms, "
                f"nginx {fmt(leader_ttfb['nginx'] * 1000)} ms")
        self.record(scen, "follower first byte after the leader's, p50", "ms", ttfb_p50, "lower", note)
        self.record(scen, "follower first byte after the leader's, p100", "ms", ttfb_p100, "lower")

    # 5. ----------------------------------------------------------------------
    def rss(self, proxies: list[Proxy]) -> None:
        size = self.plan.huge_bytes
        self.say(f"5. peak RSS streaming one {size // MiB} MiB object, cold then warm")
        cold, warm, base = {}, {}, {}
        for p in proxies:
            base[p.name] = p.memory_kib("VmRSS") / 1024
            for phase, out in (("cold", cold), ("warm", warm)):
                p.reset_peak()
                status, got, _ = get(p.port, p.url("b", "huge/object.bin"))
                assert status == 200 and got == size, (p.name, phase, status, got)
                out[p.name] = p.memory_kib("VmHWM") / 1024
        scen = f"5. RSS, {size // MiB} MiB object"
        self.record(scen, "peak RSS cold", "MiB", cold, "lower",
                    f"idle before: artifactd {fmt(base['artifactd'])} MiB, nginx {fmt(base['nginx'])} MiB")
        self.record(scen, "peak RSS warm", "MiB", warm, "lower")

    # 6. ----------------------------------------------------------------------
    def growth(self) -> None:
        self.say("6. hit latency as cached objects and pattern count grow")
        proxies = self.both("growth")
        try:
            filled = 0
            for count in self.plan.object_counts:
                for p in proxies:
                    fill_fast(p.port, [p.url("b", f"small/grow/k{i}.bin") for i in range(filled, count)],
                              1024)
                filled = count
                med = {}
                fast = 0.0
                for p in proxies:
                    before = p.fast_path_hits() if isinstance(p, Artifactd) else 0
                    med[p.name] = wrk(p.port, "", self.plan.wrk_seconds, 16, self.plan.threads,
                                      [p.url("b", "small/grow/"), str(count)], server=p)
                    if isinstance(p, Artifactd) and med[p.name]["requests"]:
                        # The server counts the hits of requests wrk
                        # cut off at its deadline too.
                        fast = min(1.0, (p.fast_path_hits() - before) / med[p.name]["requests"])
                scen = f"6a. hit with {count} cached objects"
                self.record_hit_run(scen, med)
                self.record(scen, "answered by the fast path", "%", {"artifactd": 100 * fast, "nginx": None},
                            "higher", "the rest went through pingora's phases (a record the page cache "
                            "did not hold)")
        finally:
            for p in proxies:
                p.stop()
        for count in self.plan.pattern_counts:
            proxies = self.both(f"patterns-{count}", count)
            try:
                keys = min(self.plan.hit_keys, 2000)
                for p in proxies:
                    fill_fast(p.port, [p.url("p", f"small/pat/k{i}.bin") for i in range(keys)], 1024)
                    status, _, _ = get(p.port, p.url("p", "denied/x.bin"))
                    assert status == 403, (p.name, status)
                med = {p.name: wrk(p.port, "", self.plan.wrk_seconds, 16, self.plan.threads,
                                   [p.url("p", "small/pat/"), str(keys)], server=p) for p in proxies}
                self.record_hit_run(f"6b. hit with {count} patterns", med)
            finally:
                for p in proxies:
                    p.stop()


def fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def machine_facts(binary: Path) -> dict:
    def out(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except Exception as e:  # noqa: BLE001 - facts are best effort
            return f"unknown ({e})"
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "artifactd": out([str(binary), "--version"]),
        "nginx": out(["nginx", "-v"]),
        "wrk": out(["wrk", "-v"]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def write_results(out_dir: Path, bench: Bench, facts: dict, quick: bool, elapsed: float) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"quick": quick, "elapsed_seconds": round(elapsed, 1), "machine": facts, "scenarios": bench.results,
           "image_scenarios": bench.image_results, "document_scenarios": bench.document_results,
           "bulk_scenarios": bench.bulk_results}
    (out_dir / "latest.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# artifactd vs nginx proxy_cache" + (" (QUICK run: smoke sizes, not comparable)" if quick else ""),
        "",
        f"Machine: {facts['cores']} cores ({facts['cpu']}), kernel {facts['kernel']}; "
        f"{facts['artifactd']}; {facts['nginx']}; {facts['wrk']}; {facts['date']}. "
        f"Run took {elapsed:.0f} s. Ratio is artifactd / nginx; the `better` column says "
        "which direction wins.",
        "",
        "| scenario | metric | artifactd | nginx | ratio | better | note |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for scenario, rows in bench.results.items():
        for row in rows:
            lines.append(f"| {scenario} | {row['metric']} ({row['unit']}) | {fmt(row['artifactd'])} | "
                         f"{fmt(row['nginx'])} | {fmt(row['ratio'])} | {row['better']} | {row['note']} |")
    lines += render_images(bench.image_results, fmt)
    lines += render_documents(bench.document_results, fmt)
    lines += render_bulk(bench.bulk_results, fmt)
    (out_dir / "latest.md").write_text("\n".join(lines) + "\n")
    write_cluster_results(out_dir, bench, facts, quick)
    write_large_results(out_dir, bench, facts, quick)


def write_large_results(out_dir: Path, bench: Bench, facts: dict, quick: bool) -> None:
    """Scenario 12 in large.{md,json}: it runs alone too (--large-only)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"quick": quick, "machine": facts, "scenarios": bench.large_results}
    (out_dir / "large.json").write_text(json.dumps(doc, indent=2) + "\n")
    title = "# Large objects" + (" (QUICK run: smoke sizes, not comparable)" if quick else "")
    lines = [title, "", f"Machine: {facts['cores']} cores ({facts['cpu']}), kernel {facts['kernel']}; "
             f"{facts['artifactd']}; {facts['nginx']}; {facts['date']}."]
    lines += render_large(bench.large_results, fmt)
    (out_dir / "large.md").write_text("\n".join(lines) + "\n")


def write_cluster_results(out_dir: Path, bench: Bench, facts: dict, quick: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    cluster = {"quick": quick, "machine": facts, "scenarios": bench.cluster_results}
    (out_dir / "cluster.json").write_text(json.dumps(cluster, indent=2) + "\n")
    (out_dir / "cluster.md").write_text(render_cluster(bench.cluster_results, facts, quick, fmt))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the harness, not the ratios")
    parser.add_argument("--binary", type=Path, default=ROOT / "target/release/artifactd")
    parser.add_argument("--out", type=Path, help="results directory (default: benches/results, "
                        "or target/bench-quick for --quick so smoke runs never replace real results)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--large-only", action="store_true",
                        help="only scenario 12; writes large.{md,json} and leaves latest.* alone")
    parser.add_argument("--audit-only", action="store_true",
                        help="only scenario 11; writes audit.{md,json} and leaves latest.* alone")
    parser.add_argument("--cluster-only", action="store_true",
                        help="only scenario 8; writes cluster.{md,json} and leaves latest.* alone")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: run scripts/install-deps.sh bench")
    if not args.binary.exists():
        raise SystemExit(f"{args.binary} not found: build artifactd first")
    plan = Plan.quick() if args.quick else Plan.full()
    args.out = args.out or (ROOT / "target/bench-quick" if args.quick else HERE / "results")
    work = Path(tempfile.mkdtemp(prefix="artifactd-bench-"))
    started = time.monotonic()
    origin = Origin(work / "origin", plan)
    bench = Bench(plan, args.binary.resolve(), work, origin)
    audit = None
    try:
        if args.large_only:
            run_large_scenario(bench)
            write_large_results(args.out, bench, machine_facts(args.binary), args.quick)
            print(f"results: {args.out / 'large.md'}")
            return 0
        if not (args.cluster_only or args.audit_only):
            run_single_node_scenarios(bench)
        if not args.cluster_only:
            audit = bench_audit(bench, Artifactd, generic_remotes, wrk, median_of, fill_fast)
        if not args.audit_only:
            bench.cluster_results = bench_cluster(bench, Artifactd, generic_remotes, wrk, median_of,
                                                  free_port, wait_port)
    finally:
        origin.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}")
    elapsed = time.monotonic() - started
    facts = machine_facts(args.binary)
    if audit is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "audit.json").write_text(json.dumps({"quick": args.quick, "machine": facts, **audit},
                                                       indent=2) + "\n")
        (args.out / "audit.md").write_text(render_audit(audit, facts, args.quick, fmt))
    if args.audit_only:
        print(f"results: {args.out / 'audit.md'} ({elapsed:.0f} s)")
        return 0
    if len(bench.cluster_results) != 4:
        raise SystemExit(f"expected 4 cluster scenario groups, got {len(bench.cluster_results)}")
    if args.cluster_only:
        write_cluster_results(args.out, bench, facts, args.quick)
        print(f"results: {args.out / 'cluster.md'} ({elapsed:.0f} s)")
        return 0
    write_results(args.out, bench, facts, args.quick, elapsed)
    expected = 8 + len(plan.object_counts) + len(plan.pattern_counts)
    if len(bench.results) != expected:
        raise SystemExit(f"expected {expected} scenario groups, got {len(bench.results)}")
    if len(bench.image_results) != 2:
        raise SystemExit(f"expected 2 image scenario groups, got {len(bench.image_results)}")
    if len(bench.document_results) != 1:
        raise SystemExit(f"expected 1 document scenario group, got {len(bench.document_results)}")
    if len(bench.bulk_results) != 1:
        raise SystemExit(f"expected 1 bulk scenario group, got {len(bench.bulk_results)}")
    if len(bench.large_results) != 3:
        raise SystemExit(f"expected 3 large object scenario groups, got {len(bench.large_results)}")
    print(f"results: {args.out / 'latest.md'} ({elapsed:.0f} s)")
    return 0


def run_single_node_scenarios(bench: Bench) -> None:
    """Scenarios 1-7, 9, 10 and 12: artifactd against nginx, the distribution
    proxy and verdaccio, and artifactd alone at ten million objects."""
    plan = bench.plan
    proxies = bench.both("main")
    light = LightNginxProxy(bench.work / "nginx-light-main", bench.origin.port, plan)
    cores = own_cores()
    own_core = [bench.start(which, "own-core", cpu=cores[1]) for which in ("artifactd", "nginx")
                if cores]
    if not cores:
        bench.say("  one CPU only: no runs with each on its own core")
    try:
        bench.hits_small(proxies + [light], plan.hit_keys, "1. hit, 1 KiB, 64 conns", "small/hit", own_core)
        bench.hits_small(proxies + [light], plan.many_hit_keys,
                         f"1c. hit, 1 KiB, {plan.many_hit_keys:,} keys, 64 conns", "small/many", own_core)
        light.stop()
        for p in own_core:
            p.stop()
        bench.hits_big(proxies)
        bench.cold(proxies)
        bench.cold_large(proxies)
        bench.herd(proxies)
    finally:
        for p in proxies + [light] + own_core:
            p.stop()
    # Fresh processes, so the peak belongs to the stream and not to the
    # load of the scenarios before it.
    proxies = bench.both("rss")
    try:
        bench.rss(proxies)
    finally:
        for p in proxies:
            p.stop()
    bench.growth()
    bench_images(bench, Artifactd, free_port, wait_port)
    bench_documents(bench, Artifactd, free_port, wait_port)
    bench_bulk(bench, Artifactd, generic_remotes, wrk)
    run_large_scenario(bench)


def run_large_scenario(bench: Bench) -> None:
    """Scenario 12: artifactd, nginx plain and sliced, and the origin direct."""
    bench.say("12. large objects from an origin capped per connection")
    bench_large(bench, Artifactd, NginxProxy, SliceNginxProxy, generic_remotes, free_port, wait_port)


if __name__ == "__main__":
    sys.exit(main())
