"""Large objects from an origin that caps each connection's speed.

One file (2 GiB; 128 MiB in the quick run) behind an origin that sends at
most 50 MiB/s per connection (benches/capped_origin.py), fetched through
artifactd (which fills it in parallel ranges), nginx `proxy_cache`, nginx
with the `slice` module at 8 MiB, and from the origin directly. Each
fetch is of a path no one asked for before, so every one is cold.

Scenario 12:
  a. the whole object, cold: time to the last byte, whether it arrived
     whole (sha256), upstream requests (the origin's log) and the server's
     CPU time;
  b. the same with the origin cutting every connection after 256 MiB
     (32 MiB in the quick run): each setup's outcome;
  c. a footer-first read (`Range: bytes=-65536`, as SOCI and eStargz read a
     layer) of the cold object: time to the first byte and to the last.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from procs import stop_process

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024
RATE = 50 * MiB
FOOTER = 65536
SETUPS = ["artifactd", "nginx", "nginx slice", "origin"]


class CappedOrigin:
    """benches/capped_origin.py, running."""

    def __init__(self, work: Path, file: Path, port: int, cut: int | None, wait_port) -> None:
        self.port = port
        self.log = work / f"capped-origin-{port}.log"
        cmd = [sys.executable, str(HERE / "capped_origin.py"), str(port), str(file), str(RATE),
               str(self.log)] + (["--cut", str(cut)] if cut else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, self.proc, "capped origin")

    def requests(self, name: str) -> int:
        """Requests whose path ends with `name`."""
        if not self.log.exists():
            return 0
        return sum(1 for line in self.log.read_text().splitlines() if line.split(" ", 1)[0].endswith(name))

    def stop(self) -> None:
        stop_process(self.proc)


def fetch(port: int, path: str, headers: dict | None = None, timeout: float = 180) -> dict:
    """GETs `path`; what arrived, when, and how the transfer ended."""
    began = time.perf_counter()
    digest, got, first, error, status, length = hashlib.sha256(), 0, None, None, 0, None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        status, length = resp.status, resp.getheader("content-length")
        while True:
            chunk = resp.read1(1 << 20)
            if not chunk:
                break
            first = first or time.perf_counter()
            digest.update(chunk)
            got += len(chunk)
    except (OSError, http.client.HTTPException) as e:
        error = f"{type(e).__name__}"
    finally:
        conn.close()
    if error is None and length is not None and got != int(length):
        error = f"short body ({got} of {length} bytes)"
    return {"status": status, "bytes": got, "sha256": digest.hexdigest(), "error": error,
            "seconds": time.perf_counter() - began,
            "ttfb_ms": (first - began) * 1000 if first else None}


def wait_for_fills(port: int, limit: float = 300) -> None:
    """Waits until artifactd's status page lists no fill in progress."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/status", headers={"Accept": "application/json"})
        fills = json.loads(conn.getresponse().read()).get("fills", [])
        conn.close()
        if not fills:
            return
        time.sleep(0.2)
    raise SystemExit("artifactd's fill did not finish")


def outcome(result: dict, want_bytes: int, want_sha: str) -> str:
    if result["error"] is None and result["bytes"] == want_bytes and result["sha256"] == want_sha:
        return "whole"
    if result["error"] is None and result["bytes"] == want_bytes:
        return "CORRUPT"
    why = result["error"] or f"status {result['status']}"
    detail = "" if why.startswith("short body") else f" ({why})"
    return f"failed at {result['bytes'] / MiB:.0f} MiB{detail}"


def bench_large(bench, artifactd_cls, nginx_cls, slice_cls, generic_remotes, free_port, wait_port) -> None:
    """Runs scenario 12; results go to `bench.large_results`."""
    quick = bench.plan.rounds == 1
    size = (128 if quick else 2048) * MiB
    cut = (32 if quick else 256) * MiB
    work = bench.work / "large"
    work.mkdir(parents=True, exist_ok=True)
    file = work / "large.bin"
    block = os.urandom(MiB + 7)  # a prime-ish period: a byte out of place shows
    whole = hashlib.sha256()
    with open(file, "wb") as f:
        written = 0
        while written < size:
            piece = block[: min(len(block), size - written)]
            f.write(piece)
            whole.update(piece)
            written += len(piece)
    want_sha = whole.hexdigest()
    with open(file, "rb") as f:
        f.seek(size - FOOTER)
        footer_sha = hashlib.sha256(f.read()).hexdigest()

    results: dict[str, dict] = {s: {} for s in SETUPS}
    for label, cut_at in (("plain", None), ("cut", cut)):
        origin = CappedOrigin(work, file, free_port(), cut_at, wait_port)
        servers = {}
        try:
            remotes = generic_remotes(origin.port, 10)
            servers["artifactd"] = artifactd_cls(bench.binary, work / f"artifactd-{label}", remotes, bench.plan)
            servers["nginx"] = nginx_cls(work / f"nginx-{label}", origin.port, bench.plan, 10)
            servers["nginx slice"] = slice_cls(work / f"slice-{label}", origin.port, bench.plan)
            for setup in SETUPS:
                server = servers.get(setup)
                port = server.port if server else origin.port
                prefix = "/api/v1/remote/b" if server else ""
                name = f"{label}-{setup.replace(' ', '-')}"
                cpu = server.cpu_seconds() if server else None
                got = fetch(port, f"{prefix}/large/{name}.bin")
                if server:
                    got["cpu_s"] = server.cpu_seconds() - cpu
                got["outcome"] = outcome(got, size, want_sha)
                got["upstream"] = origin.requests(f"/large/{name}.bin")
                results[setup][label] = got
                if setup == "artifactd":
                    wait_for_fills(port)
                bench.say(f"  {label} {setup}: {got['outcome']} in {got['seconds']:.1f} s, "
                          f"{got['upstream']} upstream requests")
                if label == "plain":
                    footer = fetch(port, f"{prefix}/large/footer-{name}.bin", {"Range": f"bytes=-{FOOTER}"})
                    footer["outcome"] = outcome(footer, FOOTER, footer_sha)
                    results[setup]["footer"] = footer
                    bench.say(f"  footer {setup}: {footer['outcome']}, first byte after "
                              f"{footer['ttfb_ms'] or 0:.0f} ms")
                    if setup == "artifactd":
                        # Its fill of the whole goes on: not beside the next setup's run.
                        wait_for_fills(port)
        finally:
            for server in servers.values():
                server.stop()
            origin.stop()

    scen_a = f"12a. {size // MiB} MiB cold, {RATE // MiB} MiB/s per connection"
    scen_b = f"12b. the same, every connection cut after {cut // MiB} MiB"
    scen_c = f"12c. footer read (bytes=-{FOOTER}) of the cold {size // MiB} MiB object"

    def row(scen: str, metric: str, unit: str, key: str, label: str, better: str, note: str = "",
            whole_only: bool = True) -> None:
        values = {}
        for setup in SETUPS:
            r = results[setup][label]
            values[setup] = r.get(key) if (r["outcome"] == "whole" or not whole_only) else None
        bench.large_results.setdefault(scen, []).append(
            {"metric": metric, "unit": unit, **values, "better": better, "note": note})

    def outcomes(scen: str, label: str) -> None:
        bench.large_results.setdefault(scen, []).append(
            {"metric": "outcome", "unit": "", **{s: results[s][label]["outcome"] for s in SETUPS},
             "better": "whole", "note": "whole: every byte, sha256 checked"})

    outcomes(scen_a, "plain")
    row(scen_a, "time to the last byte", "s", "seconds", "plain", "lower")
    row(scen_a, "upstream requests", "count", "upstream", "plain", "lower", whole_only=False)
    row(scen_a, "server CPU", "s", "cpu_s", "plain", "lower", "utime+stime of the server's processes")
    outcomes(scen_b, "cut")
    row(scen_b, "time to the last byte", "s", "seconds", "cut", "lower")
    row(scen_b, "upstream requests", "count", "upstream", "cut", "lower", whole_only=False)
    outcomes(scen_c, "footer")
    row(scen_c, "time to the first byte", "ms", "ttfb_ms", "footer", "lower")
    row(scen_c, "time to the last byte", "s", "seconds", "footer", "lower")


def render_large(results: dict, fmt: Callable[[object], str]) -> list[str]:
    """The large objects table of latest.md, numbers written by `fmt`."""
    if not results:
        return []
    lines = ["", "## Large objects: artifactd vs nginx proxy_cache, plain and with slice 8m", "",
             "One object behind an origin capped at 50 MiB/s per connection; every fetch cold. "
             "A time is given only for a transfer that arrived whole. Ratios are artifactd over each.",
             "",
             "| scenario | metric | artifactd | nginx | nginx slice | origin direct | vs nginx "
             "| vs slice | vs origin | better | note |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for scenario, rows in results.items():
        for row in rows:
            a = row["artifactd"]
            ratios = [fmt(_ratio(a, row[s])) for s in SETUPS[1:]]
            unit = f" ({row['unit']})" if row["unit"] else ""
            lines.append(f"| {scenario} | {row['metric']}{unit} | {fmt(a)} | {fmt(row['nginx'])} | "
                         f"{fmt(row['nginx slice'])} | {fmt(row['origin'])} | {' | '.join(ratios)} | "
                         f"{row['better']} | {row['note']} |")
    return lines


def _ratio(a: object, b: object) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return a / b
    return None
