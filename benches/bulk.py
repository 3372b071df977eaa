"""Scenario 10: a cache of ten million 1 KiB objects.

Filled by `artifactd import` from a manifest on standard input (every path
names the origin's 1k.bin), not by ten million misses. Then the node is
started again and the figures are what a mirror of that size costs: the
import's rate, the start-up time (the index comes from its snapshot; no
walk of the store), resident memory per cached object (RSS beyond the same
node's empty RSS, the larger of right after start and once start-up work
such as the store's reconciliation is done, so that what it keeps counts)
and wrk hits spread uniformly over every key, with the server's CPU per
request. The RSS after the hits is noted beside it: it adds what the
memory tier took in (hot records and small bodies, bounded by
`cache.memory_bytes` whatever the object count), more the faster the
hits ran, so it says little per object.

nginx is not filled: it has no bulk loader, so its cache could only be
filled by as many misses (hours at this scale on two cores) and its cache
loader would walk ten million files at every start.
"""

from __future__ import annotations

import subprocess
import time
from typing import Callable

MANIFEST_LINES_PER_WRITE = 10_000
IMPORT_TIMEOUT_S = 3600
# Start-up work (the store's reconciliation) is done well within this.
AT_REST_AFTER_S = 10


def bench_bulk(bench, artifactd_cls, generic_remotes: Callable[[int, int], dict],
               wrk: Callable[..., dict]) -> None:
    """Runs scenario 10; results go to `bench.bulk_results`."""
    count = bench.plan.bulk_objects
    bench.say(f"10. {count:,} cached 1 KiB objects, filled by `artifactd import`")
    workdir = bench.work / "artifactd-bulk"
    remotes = generic_remotes(bench.origin.port, 10)
    # Room for every entry in the memory index, so none is evicted.
    extra = f"cache:\n  memory_index_entries: {count + count // 5}\n"
    node = artifactd_cls(bench.binary, workdir, remotes, bench.plan, extra)
    empty_rss_kib = node.memory_kib("VmRSS")
    node.stop()

    started = time.monotonic()
    summary = run_import(bench.binary, workdir, count, str(bench.origin.files / "1k.bin"))
    import_s = time.monotonic() - started
    expected = f"imported {count} objects"
    if expected not in summary:
        raise SystemExit(f"import: expected '{expected}', got: {summary}")

    started = time.monotonic()
    node = artifactd_cls(bench.binary, workdir, remotes, bench.plan, extra)
    start_s = time.monotonic() - started
    try:
        started_rss_kib = node.memory_kib("VmRSS")
        time.sleep(AT_REST_AFTER_S)
        rest_rss_kib = node.memory_kib("VmRSS")
        run = wrk(node.port, "", bench.plan.wrk_seconds, 16, bench.plan.threads,
                  [node.url("b", "small/bulk/"), str(count)], server=node)
        if run["errors"]:
            raise SystemExit(f"scenario 10: {run['errors']} errors among the hits")
        served_rss_kib = node.memory_kib("VmRSS")
        rss_kib = max(started_rss_kib, rest_rss_kib)
    finally:
        node.stop()
    scen = f"10. {count:,} cached 1 KiB objects"
    rows = [
        ("import rate", "objects/s", count / import_s, f"{import_s:.0f} s for the whole import"),
        ("start-up time", "s", start_s, "from exec to listening, index read from its snapshot"),
        ("memory per cached object", "B", (rss_kib - empty_rss_kib) * 1024 / count,
         f"RSS {started_rss_kib / 1024:,.0f} MiB full at start, {rest_rss_kib / 1024:,.0f} MiB "
         f"{AT_REST_AFTER_S} s later (the larger counts), {empty_rss_kib / 1024:,.0f} MiB empty; "
         f"{served_rss_kib / 1024:,.0f} MiB after the hits, with the memory tier's hot records "
         f"and bodies (up to cache.memory_bytes)"),
        ("hits, 16 connections, uniform over every key", "req/s", run["rps"],
         f"p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms"),
        ("server CPU per request", "µs", run["cpu_us"], "utime+stime over the wrk run's requests"),
    ]
    for metric, unit, value, note in rows:
        bench.bulk_results.setdefault(scen, []).append(
            {"metric": metric, "unit": unit, "artifactd": value, "note": note})
        bench.say(f"  {metric}: {value:,.3f} {unit} ({note})")


def run_import(binary, workdir, count: int, file: str) -> str:
    """Imports `count` paths, all naming `file`; returns the summary line."""
    with open(workdir / "import.log", "wb") as log:
        proc = subprocess.Popen(
            [str(binary), "--config", str(workdir / "artifactd.yaml"), "import", "b", "--manifest", "-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        assert proc.stdin is not None and proc.stdout is not None
        for first in range(0, count, MANIFEST_LINES_PER_WRITE):
            last = min(first + MANIFEST_LINES_PER_WRITE, count)
            proc.stdin.write("".join(f"small/bulk/k{i}.bin\t{file}\n"
                                     for i in range(first, last)).encode())
        proc.stdin.close()
        summary = proc.stdout.read().decode().strip()
        if proc.wait(IMPORT_TIMEOUT_S) != 0:
            raise SystemExit(f"import failed ({proc.returncode}): {summary}; see {workdir / 'import.log'}")
    return summary


def render_bulk(results: dict, fmt: Callable[[object], str]) -> list[str]:
    """The bulk table of latest.md, numbers written by `fmt`."""
    if not results:
        return []
    lines = ["", "## A cache of ten million objects (artifactd only)", "",
             "nginx has no bulk loader: filling it would take as many misses, so it is not "
             "measured here (see benches/bulk.py).", "",
             "| scenario | metric | artifactd | note |", "|---|---|---:|---|"]
    for scenario, rows in results.items():
        for row in rows:
            lines.append(f"| {scenario} | {row['metric']} ({row['unit']}) | {fmt(row['artifactd'])} "
                         f"| {row['note']} |")
    return lines
