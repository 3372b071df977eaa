"""Scenario 11: what the audit trail costs a hit.

The 1 KiB hit run of scenario 1 (64 connections, the same keys) against
two artifactd processes that differ only in `audit.enabled`: on (the
default: every delivery counted in memory, its rows written by the
catalog writer) and off. Rounds alternate between them, in an order
swapped each round, so drift on the shared cores falls on both. The
figures that decide are requests/s and the server's CPU time per
request; the rows the catalog took and dropped say what the trail kept
at that rate.
"""
from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path


def dropped_events(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    match = re.search(r"^artifactd_catalog_events_dropped_total (\d+)", text, re.M)
    return int(match.group(1)) if match else 0


def audit_rows(port: int) -> int:
    url = f"http://127.0.0.1:{port}/api/v1/audit?limit=10000"
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.load(resp)["count"]


def bench_audit(bench, Artifactd, generic_remotes, wrk, median_of, fill_fast) -> dict:
    plan = bench.plan
    keys = plan.hit_keys
    bench.say(f"11. audit trail on vs off: hit RPS, 1 KiB objects, {keys} keys, 64 connections")
    servers = {}
    for name, extra in [("audit on", ""), ("audit off", "audit:\n  enabled: false\n")]:
        workdir = bench.work / name.replace(" ", "-")
        server = Artifactd(bench.binary, workdir, generic_remotes(bench.origin.port, 10), plan, extra)
        server.name = name
        servers[name] = server
    try:
        for server in servers.values():
            fill_fast(server.port, [server.url("b", f"small/audit/k{i}.bin") for i in range(keys)], 1024)
        runs = {name: [] for name in servers}
        dropped_before = dropped_events(servers["audit on"].port)
        # More rounds than the other scenarios, and the order swapped each
        # round: the difference sought is a few percent, about the spread
        # of one round on shared cores, and whichever server runs second
        # in a round finds the caches and clocks the first one left.
        order = list(servers.values())
        for _ in range(2 * plan.rounds + 1):
            for server in order:
                runs[server.name].append(wrk(server.port, "", plan.wrk_seconds, 64, plan.threads,
                                             [server.url("b", "small/audit/"), str(keys)], server=server))
            order.reverse()
        med = {name: median_of(r) for name, r in runs.items()}
        requests = sum(r["requests"] for r in runs["audit on"])
        dropped = dropped_events(servers["audit on"].port) - dropped_before
        rows = audit_rows(servers["audit on"].port)
        result = {
            "keys": keys,
            "median": {name: {k: m[k] for k in ("rps", "cpu_us", "p50_ms", "p99_ms")} for name, m in med.items()},
            "rps_ratio": med["audit on"]["rps"] / med["audit off"]["rps"],
            "cpu_ratio": med["audit on"]["cpu_us"] / med["audit off"]["cpu_us"],
            "runs": {name: [r["rps"] for r in rs] for name, rs in runs.items()},
            "requests_with_audit": requests,
            "dropped_events": dropped,
            "rows_listed": rows,
        }
        bench.say(f"  requests/s: on {result['median']['audit on']['rps']:.0f}, "
                  f"off {result['median']['audit off']['rps']:.0f}, ratio {result['rps_ratio']:.3f}; "
                  f"CPU per request ratio {result['cpu_ratio']:.3f}; {dropped} audit rows dropped "
                  f"of {requests}")
        return result
    finally:
        for server in servers.values():
            server.stop()


def render_audit(result: dict, facts: dict, quick: bool, fmt) -> str:
    on, off = result["median"]["audit on"], result["median"]["audit off"]
    lines = [
        "# 11. The audit trail's cost on hits" + (" (QUICK run: smoke sizes)" if quick else ""),
        "",
        f"Machine: {facts['cores']} cores ({facts['cpu']}); {facts['artifactd']}; {facts['date']}.",
        f"1 KiB hits on {result['keys']:,} keys, 64 connections, medians of alternating rounds.",
        "",
        "| metric | audit on (default) | audit off | on / off |",
        "|---|---:|---:|---:|",
        f"| requests/s | {fmt(on['rps'])} | {fmt(off['rps'])} | {fmt(result['rps_ratio'])} |",
        f"| server CPU per request (µs) | {fmt(on['cpu_us'])} | {fmt(off['cpu_us'])} | {fmt(result['cpu_ratio'])} |",
        f"| p50 latency (ms) | {fmt(on['p50_ms'])} | {fmt(off['p50_ms'])} | |",
        f"| p99 latency (ms) | {fmt(on['p99_ms'])} | {fmt(off['p99_ms'])} | |",
        "",
        f"Each round's requests/s: on {', '.join(fmt(r) for r in result['runs']['audit on'])}; "
        f"off {', '.join(fmt(r) for r in result['runs']['audit off'])}.",
        f"Of {result['requests_with_audit']:,} deliveries with the trail on, the catalog writer dropped "
        f"{result['dropped_events']:,} rows (its queue is bounded; drops are counted in "
        "`artifactd_catalog_events_dropped_total`); the newest 10,000 rows listed: "
        f"{result['rows_listed']:,}.",
        "",
    ]
    return "\n".join(lines)
