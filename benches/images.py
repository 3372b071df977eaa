"""Container images: artifactd against the distribution registry's proxy
mode (Debian's docker-registry with `proxy.remoteurl`), both in front of
the same upstream registry on loopback, pulled with the same skopeo.

Scenarios:
  7a. five concurrent cold `skopeo copy` of a 4-layer image: blob GETs
      that reached the upstream (its access log) and wall time
  7b. warm pull time: through artifactd, through the distribution proxy,
      and directly from the upstream registry (the floor)

Every pull is bounded by a timeout; loops are bounded in count.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

from procs import stop_process

MiB = 1024 * 1024
TOOLS = ("docker-registry", "skopeo", "umoci")
PULL_TIMEOUT = 300


def run(cmd: list[str], timeout: int = PULL_TIMEOUT) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)


class Registry:
    """A docker-registry process; `remote_url` makes it a pull-through proxy."""

    def __init__(self, workdir: Path, port: int, remote_url: str | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.log_path = workdir / "access.log"
        proxy = f"proxy:\n  remoteurl: {remote_url}\n" if remote_url else ""
        config = (f"version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n"
                  f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n"
                  f"http:\n  addr: 127.0.0.1:{port}\n  secret: artifactd-bench\n{proxy}")
        (workdir / "config.yml").write_text(config)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(workdir / "config.yml")],
                                     stdout=log, stderr=log)

    def blob_gets(self) -> int:
        count = 0
        for line in self.log_path.read_text(errors="replace").splitlines():
            parts = line.split('"')
            if len(parts) > 2 and parts[1].startswith("GET ") and "/blobs/sha256:" in parts[1] \
                    and parts[2].split()[:1] == ["200"]:
                count += 1
        return count

    def stop(self) -> None:
        stop_process(self.proc)


def build_image(layout: Path, layers: int, layer_bytes: int) -> None:
    """An OCI layout tagged `app` with `layers` layers of incompressible bytes."""
    run(["umoci", "init", "--layout", str(layout)])
    run(["umoci", "new", "--image", f"{layout}:app"])
    scratch = layout.with_suffix(".files")
    scratch.mkdir(parents=True, exist_ok=True)
    for i in range(layers):
        path = scratch / f"layer{i}"
        path.write_bytes(os.urandom(layer_bytes))
        run(["umoci", "insert", "--image", f"{layout}:app", str(path), f"/layer{i}"])


def pull(port: int, image: str, dest: Path) -> float | None:
    """One `skopeo copy` into a `dir:`; returns its wall time in seconds, or
    None if it failed (counted as a figure, not the end of the bench: the
    distribution proxy fails one of five concurrent cold pulls now and then)."""
    shutil.rmtree(dest, ignore_errors=True)
    started = time.monotonic()
    try:
        run(["skopeo", "copy", "--src-tls-verify=false", "--retry-times", "0",
             f"docker://127.0.0.1:{port}/{image}", f"dir:{dest}"])
    except subprocess.CalledProcessError as e:
        reason = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        print(f"  pull of {image} from port {port} failed: {' '.join(reason)}", flush=True)
        return None
    return time.monotonic() - started


def concurrent_pulls(port: int, image: str, work: Path, clients: int) -> tuple[float, int]:
    """`clients` cold pulls at once; returns the time until the last ended and
    how many failed."""
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(pull, port, image, work / f"herd-{port}-{i}") for i in range(clients)]
        failed = sum(f.result() is None for f in futures)
    return time.monotonic() - started, failed


def bench_images(bench, artifactd_cls, free_port, wait_port) -> None:
    """Runs scenarios 7a and 7b; results go to `bench.image_results`."""
    for tool in TOOLS:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: run scripts/install-deps.sh bench")
    quick = bench.plan.rounds == 1
    layer_bytes = (1 if quick else 8) * MiB
    clients = 5
    work = bench.work / "images"
    bench.say(f"7. container images: 4 layers of {layer_bytes // MiB} MiB, {clients} clients")
    upstream = Registry(work / "upstream", free_port())
    proxy = None
    artifactd = None
    try:
        wait_port(upstream.port, upstream.proc, "upstream registry")
        build_image(work / "layout", 4, layer_bytes)
        run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{work / 'layout'}:app",
             f"docker://127.0.0.1:{upstream.port}/bench/app:app"])
        proxy = Registry(work / "distribution", free_port(), f"http://127.0.0.1:{upstream.port}")
        wait_port(proxy.port, proxy.proc, "distribution proxy")
        remotes = {"remotes": {"hub": {"base_url": f"http://127.0.0.1:{upstream.port}",
                                       "package": "docker"}}}
        artifactd = artifactd_cls(bench.binary, work / "artifactd", remotes, bench.plan)
        peers = {"artifactd": (artifactd.port, "hub/bench/app:app"),
                 "distribution": (proxy.port, "bench/app:app")}

        gets: dict[str, int] = {}
        herd_time: dict[str, float] = {}
        herd_failed: dict[str, int] = {}
        for name, (port, image) in peers.items():
            before = upstream.blob_gets()
            herd_time[name], herd_failed[name] = concurrent_pulls(port, image, work, clients)
            gets[name] = upstream.blob_gets() - before
        bench.record_images("7a. 5 concurrent cold pulls", "upstream blob GETs", "count", gets, "lower",
                            "4 layers + 1 config blob")
        bench.record_images("7a. 5 concurrent cold pulls", "time to the last client", "s", herd_time,
                            "lower")
        bench.record_images("7a. 5 concurrent cold pulls", "failed pulls", "count", herd_failed, "lower")

        warm: dict[str, list[float | None]] = {name: [] for name in (*peers, "upstream")}
        targets = {**peers, "upstream": (upstream.port, "bench/app:app")}
        for _ in range(bench.plan.rounds * 2 + 1):
            for name, (port, image) in targets.items():
                warm[name].append(pull(port, image, work / f"warm-{name}"))
        done = {name: [t for t in times if t is not None] for name, times in warm.items()}
        bench.record_images("7b. warm pull", "median pull time", "s",
                            {name: statistics.median(times) if times else None for name, times in done.items()},
                            "lower", f"median of the successful ones of {len(warm['artifactd'])} skopeo copies")
        bench.record_images("7b. warm pull", "failed pulls", "count",
                            {name: len(warm[name]) - len(times) for name, times in done.items()}, "lower")
    finally:
        for peer in (artifactd, proxy, upstream):
            if peer is not None:
                peer.stop()


def render_images(results: dict, fmt: Callable[[object], str]) -> list[str]:
    """The images table of latest.md, numbers written by `fmt`."""
    if not results:
        return []
    lines = ["", "## Container images: artifactd vs the distribution registry's proxy mode", "",
             "Same upstream registry and the same skopeo for both; `upstream` pulls directly from it. "
             "Ratio is artifactd / distribution.", "",
             "| scenario | metric | artifactd | distribution proxy | ratio | upstream direct | better | note |",
             "|---|---|---:|---:|---:|---:|---|---|"]
    for scenario, rows in results.items():
        for row in rows:
            lines.append(f"| {scenario} | {row['metric']} ({row['unit']}) | {fmt(row['artifactd'])} | "
                         f"{fmt(row['distribution'])} | {fmt(row['ratio'])} | {fmt(row.get('upstream'))} | "
                         f"{row['better']} | {row['note']} |")
    return lines


if __name__ == "__main__":
    print(json.dumps({"tools": {t: bool(shutil.which(t)) for t in TOOLS}}))
