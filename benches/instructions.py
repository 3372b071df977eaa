#!/usr/bin/env python3
"""Instructions per fast-path hit, counted by callgrind: a figure that does
not move with the machine.

On these 2-core machines the server's CPU per request swings by a third
between runs of one binary (thread placement, other tenants), so a change
worth a tenth of a hit cannot be told from noise by timing it. callgrind
counts what the server executes in user space while it serves a fixed,
seeded sequence of requests: one binary gives one count, to within a few
tenths of a percent. It sees neither the kernel (socket and page-cache
work) nor cache misses, so it stands beside the timed benchmark
(`make bench`), never in its place.

The store is filled by `artifactd import` (1 KiB objects, as scenario 10
fills it). The server runs under callgrind, collecting only inside its
connection task (`FastPath::process_new`); a warm-up, then the counted
requests, each for a key drawn uniformly from the first N objects, go over
one keep-alive connection. Requests that left the fast path (pingora's
phases: a record the page cache had dropped, the closing `/metrics`) are
taken out with the instructions spent in `to_pingora`.

Usage: instructions.py [--binary PATH] [--objects N ...] [--requests N]
Writes benches/results/instructions.{md,json}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import subprocess
import tempfile
import time
from pathlib import Path

from bulk import run_import
from procs import free_port, wait_port
import run

HERE = Path(__file__).resolve().parent
WARM_UP = 2000
SEED = 42
START_TIMEOUT_S = 600
COLLECTED = "*FastPath*process_new*"
SLOW_PATH = "to_pingora::{{closure}}"


def serve_under_callgrind(binary: Path, workdir: Path, port: int, out: Path) -> subprocess.Popen:
    log = open(workdir / "callgrind.log", "wb")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--collect-atstart=no", f"--toggle-collect={COLLECTED}",
         f"--callgrind-out-file={out}", str(binary), "--config", str(workdir / "artifactd.yaml"),
         "serve"],
        stdout=log, stderr=log, env=dict(os.environ, RUST_LOG="warn"))
    wait_port(port, proc, "artifactd under callgrind", timeout=START_TIMEOUT_S)
    return proc


def ask(port: int, keys: int, count: int, rng: random.Random) -> None:
    """`count` GETs of seeded random keys over one connection, each answered 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for _ in range(count):
            path = f"/api/v1/remote/b/small/bulk/k{rng.randrange(keys)}.bin"
            status, _, _ = run.get(port, path, conn)
            if status != 200:
                raise SystemExit(f"{path}: {status}")
    finally:
        conn.close()


def annotate(out: Path, inclusive: bool) -> list[tuple[int, str]]:
    """(instructions, function) rows of callgrind_annotate, largest first."""
    text = subprocess.run(["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}",
                           "--threshold=100", str(out)],
                          capture_output=True, text=True, check=True).stdout
    rows = []
    for line in text.splitlines():
        found = re.match(r"^\s*([\d,]+) \([^)]*\)\s+(?:\*\s+)?(\S.*)$", line)
        if found and "PROGRAM TOTALS" not in line:
            rows.append((int(found.group(1).replace(",", "")), found.group(2)))
    return rows


def bare(function: str) -> str:
    """A function as callgrind names it, without its file ("???" when the
    binary has no line tables) and object."""
    function = function.split(" [")[0]
    return re.sub(r"^(\?\?\?|\S+\.[Sch]):", "", function)


def measure(binary: Path, workdir: Path, keys: int, requests: int) -> dict:
    port = free_port()
    config = (workdir / "artifactd.yaml").read_text()
    (workdir / "artifactd.yaml").write_text(re.sub(r"listen: 127.0.0.1:\d+", f"listen: 127.0.0.1:{port}",
                                                   config))
    out = workdir / f"callgrind.{keys}.out"
    out.unlink(missing_ok=True)
    proc = serve_under_callgrind(binary, workdir, port, out)
    try:
        rng = random.Random(SEED)
        ask(port, keys, WARM_UP, rng)
        ask(port, keys, requests, rng)
        fast = run.fast_path_hits(port, "b")
        if not fast:
            raise SystemExit("no fast-path hit counted in /metrics")
    finally:
        proc.terminate()
        proc.wait(300)
    total = sum(int(line.split()[1]) for line in out.read_text().splitlines()
                if line.startswith("summary:"))
    slow = sum(n for n, function in annotate(out, inclusive=True) if SLOW_PATH in function)
    top = [(n, bare(function)) for n, function in annotate(out, inclusive=False)[:12]]
    return {
        "keys": keys,
        "requests": WARM_UP + requests,
        "fast_path_hits": fast,
        "instructions_per_hit": round((total - slow) / fast),
        "top": [{"instructions_per_hit": round(n / fast), "function": f} for n, f in top],
    }


def render(results: list[dict], binary: Path) -> str:
    lines = ["# Instructions per fast-path hit (callgrind)", "",
             f"{binary.name}, {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}. "
             "User-space instructions inside the connection task per fast-path hit, for 1 KiB "
             "objects imported into the store and keys drawn uniformly (seeded) from the first N; "
             "requests that left the fast path are taken out. See benches/instructions.py.", "",
             "| objects asked | requests | fast-path hits | instructions per hit |",
             "|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['keys']:,} | {r['requests']:,} | {r['fast_path_hits']:,} "
                     f"| {r['instructions_per_hit']:,} |")
    for r in results:
        lines += ["", f"## Where they go, {r['keys']:,} objects (own instructions per hit)", "",
                  "| instructions | function |", "|---:|---|"]
        lines += [f"| {t['instructions_per_hit']:,} | `{t['function']}` |" for t in r["top"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", type=Path, default=run.ROOT / "target/release/artifactd")
    parser.add_argument("--objects", type=int, nargs="+", default=[1000, 1_000_000])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    binary = args.binary.resolve()
    plan = run.Plan.quick()
    with tempfile.TemporaryDirectory(prefix="artifactd-instructions-") as tmp:
        work = Path(tmp)
        origin = run.Origin(work / "origin", plan)
        try:
            stored = max(args.objects)
            extra = f"cache:\n  memory_index_entries: {stored + stored // 5}\n"
            node = run.Artifactd(binary, work / "node", run.generic_remotes(origin.port, 10), plan, extra)
            node.stop()
            print(run_import(binary, work / "node", stored, str(origin.files / "1k.bin")), flush=True)
            results = []
            for keys in args.objects:
                result = measure(binary, work / "node", keys, args.requests)
                print(f"{keys:,} objects: {result['instructions_per_hit']:,} instructions per fast-path "
                      f"hit ({result['fast_path_hits']:,} of {result['requests']:,} requests)", flush=True)
                results.append(result)
        finally:
            origin.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "instructions.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "instructions.md").write_text(render(results, binary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
