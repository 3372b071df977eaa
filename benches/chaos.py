#!/usr/bin/env python3
"""Chaos: artifactd under a bounded mixed load (hits, misses, large fills,
npm documents; every body checked against the origin's bytes) while faults
are injected, one scenario at a time:

  1. kill -9 every few seconds, restarted on the same store;
  2. the store's filesystem (a tmpfs of its own) filled to 100 %;
  3. upstreams that answer garbage;
  4. abusive clients (slowloris, idle floods, oversized heads, smuggling
     shapes, HTTP/2 rapid reset), with other clients' p99 beside them;
  5. hostile configuration (alias bombs, huge pattern lists, deep nesting).

Writes benches/results/chaos.{md,json}. Exits non-zero when a wrong byte
was served, something half-written was committed, or a limit did not hold,
so its --quick pass in `make test` guards all of that. Every loop is
bounded in count and time; everything runs on loopback. Needs root (the
tmpfs mount).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chaos_abuse as abuse  # noqa: E402
from chaos_load import MiB, Corpus, Load, Node, Origin, free_port, remotes, request  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass
class Plan:
    kill_cycles: int
    kill_every: float
    disk_mib: int
    phase_seconds: float
    idle_connections: int
    slowloris: int
    rapid_reset_streams: int
    large_bytes: int
    soak: bool = False

    @staticmethod
    def full() -> "Plan":
        return Plan(20, 3.0, 64, 15, 10_000, 200, 100_000, 32 * MiB)

    @staticmethod
    def quick() -> "Plan":
        return Plan(3, 2.0, 32, 4, 1_000, 20, 5_000, 8 * MiB)


class Chaos:
    def __init__(self, plan: Plan, binary: Path, work: Path):
        self.plan = plan
        self.binary = binary
        self.work = work
        self.rows: list[dict] = []
        self.problems: list[str] = []
        origin_port = free_port()
        self.corpus = Corpus(work / "files", f"http://127.0.0.1:{origin_port}", small=2000, medium=40,
                             large=3, large_bytes=plan.large_bytes, docs=20)
        self.origin = Origin(work, self.corpus, origin_port)
        # Large fills assembled from ranges and in parallel parts.
        self.fills = ("cache:\n  resumable_fill_min: 4MiB\n  parallel_fill_min: 8MiB\n"
                      "  parallel_fill_part: 2MiB\n")

    def say(self, text: str) -> None:
        print(f"[chaos] {text}", flush=True)

    def row(self, scenario: str, fault: str, load: dict | None, **facts: object) -> None:
        row = {"scenario": scenario, "fault": fault, **(load or {}), **facts}
        self.rows.append(row)
        if load and load.get("wrong"):
            self.problems.append(f"{scenario} / {fault}: {load['wrong']} wrong bodies: {load['wrong_examples']}")

    def require(self, ok: bool, what: str) -> None:
        if not ok:
            self.problems.append(what)
            self.say(f"PROBLEM: {what}")

    def node(self, name: str, extra: str = "", remotes_extra: dict | None = None,
             tls: tuple[Path, Path] | None = None) -> Node:
        config = remotes(self.origin.port)
        config["remotes"].update(remotes_extra or {})
        return Node(self.binary, self.work / name, config, self.fills + extra, tls)

    # --- 1 -------------------------------------------------------------------

    def kill9(self) -> None:
        plan = self.plan
        self.say(f"1. kill -9 every {plan.kill_every} s, {plan.kill_cycles} times, under load")
        node = self.node("kill9")
        load = Load(node.port, self.corpus, clients=4).start()
        staging = node.workdir / "store" / "staging"
        orphan_seconds, orphan_bytes = 0.0, 0
        for _ in range(plan.kill_cycles):
            time.sleep(plan.kill_every)
            dead_pid = node.proc.pid
            node.kill9()
            orphan_bytes = max(orphan_bytes, staged_bytes(staging, dead_pid))
            node.start()
            started = time.monotonic()
            while staged_bytes(staging, dead_pid) and time.monotonic() - started < 30:
                time.sleep(0.1)
            left = staged_bytes(staging, dead_pid)
            self.require(left == 0, f"kill -9: {left} staged bytes of the killed process left after 30 s")
            orphan_seconds = max(orphan_seconds, time.monotonic() - started)
        time.sleep(plan.kill_every)
        summary = load.stop()
        verified = verify(node)
        self.require(verified.get("failed_count", 1) == 0, f"kill -9: verify found damage: {verified}")
        self.row("1. kill -9", f"{plan.kill_cycles} × kill -9, every {plan.kill_every} s", summary,
                 orphaned_staging=f"up to {orphan_bytes} bytes, gone {orphan_seconds:.1f} s after restart",
                 verified=f"{verified.get('ok')} of {verified.get('total')} entries whole")
        node.stop()

    # --- 2 -------------------------------------------------------------------

    def disk_full(self) -> None:
        plan = self.plan
        self.say(f"2. the store on a {plan.disk_mib} MiB tmpfs, filled to 100 %")
        workdir = self.work / "full"
        store = workdir / "store"
        store.mkdir(parents=True)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={plan.disk_mib}m", "tmpfs", str(store)])
        self.require(mounted.returncode == 0, "disk full: cannot mount a tmpfs (needs root)")
        if mounted.returncode != 0:
            return
        try:
            misses = self.corpus.medium + self.corpus.small[1000:]
            node = self.node("full")
            # Phase 1: more asked than the disk holds.
            load = Load(node.port, self.corpus, clients=4, miss_pool=misses,
                        mix=(("hit", 40), ("miss", 45), ("doc", 15))).start()
            time.sleep(plan.phase_seconds)
            # Phase 2: full to the last byte.
            filler = store / "filler"
            try:
                with open(filler, "wb") as f:
                    while True:
                        f.write(b"\0" * (1 << 16))
            except OSError:
                pass  # full; or so full already that not even its name fits
            free_at_full = shutil.disk_usage(store).free
            hot_before = self.origin_hits(load.hot)
            time.sleep(plan.phase_seconds)
            summary = load.stop()
            summary_full = summary
            # Phase 3: space returns: the filler goes, and an operator flushes
            # the remote that filled the disk.
            filler.unlink(missing_ok=True)
            flushed, _, _ = request(node.port, "PUT", "/cache/flush?remote=gen")
            self.require(flushed == 200, f"disk full: flush answered {flushed}")
            deadline = time.monotonic() + 30
            while shutil.disk_usage(store).free < plan.disk_mib * MiB // 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            free_after = shutil.disk_usage(store).free
            # Fresh files, each asked twice, until one is kept (its second
            # answer from the cache): within 10 s, and how long it took.
            resumed_after = None
            started_resume = time.monotonic()
            sources = []
            for fresh in reversed(self.corpus.small[990:1000]):
                _, _, first = request(node.port, "GET", f"/api/v1/remote/gen/{fresh}")
                _, _, second = request(node.port, "GET", f"/api/v1/remote/gen/{fresh}")
                sources.append(f"{first.get('x-artifact-source')}/{second.get('x-artifact-source')}")
                if second.get("x-artifact-source") == "cache":
                    resumed_after = round(time.monotonic() - started_resume, 1)
                    break
                time.sleep(1)
            resumed = resumed_after is not None
            if not resumed:
                fills = node.metric("artifactd_fills_in_progress")
                self.say(f"disk full: not resumed: {sources}; fills in progress {fills}; "
                         f"free {shutil.disk_usage(store).free}")
            no_room = node.metric("artifactd_cache_unstored_total", {"reason": "no_room"})
            write_failed = node.metric("artifactd_cache_unstored_total", {"reason": "write_failed"})
            warned = node.log_lines("served without being kept")
            verified = verify(node)
            self.require(resumed, "disk full: caching did not resume when space returned")
            self.require(verified.get("failed_count", 1) == 0, f"disk full: verify found damage: {verified}")
            self.require(summary["failed"] == 0, f"disk full: {summary['failed']} requests failed: "
                                                 f"{summary['failed_by']}")
            self.row("2. disk full", f"{plan.disk_mib} MiB store, then filled to {free_at_full} bytes free",
                     summary, misses_not_kept=int(no_room + write_failed),
                     warnings_logged=warned, hot_refetched_while_full=self.origin_hits(load.hot) - hot_before,
                     failed_while_full=summary_full["failed"], free_after_flush=free_after,
                     caching_resumed=f"after {resumed_after} s" if resumed else "no",
                     verified=f"{verified.get('ok')} of {verified.get('total')} entries whole")
            node.stop()
        finally:
            subprocess.run(["umount", "-l", str(store)])

    def origin_hits(self, paths: list[str]) -> int:
        return sum(self.origin.fetches(f"/{p}") for p in paths[:10])

    # --- 3 -------------------------------------------------------------------

    def broken_upstreams(self) -> None:
        self.say("3. upstreams that answer garbage")
        hostile = abuse.HostileUpstream(silence=30)
        extra = "  max_object_size: 64MiB\nupstream:\n  breaker_failures: 0\n"
        node = self.node("broken", extra, abuse.hostile_remotes(hostile.port, read_timeout=5))
        load = Load(node.port, self.corpus, clients=2, mix=(("hit", 80), ("doc", 20))).start()
        rss_before = node.status("VmRSS")
        for upstream_path, what in abuse.BROKEN_CASES.items():
            outcomes = []
            for _ in range(2):
                outcomes.append(outcome_of(node.port, abuse.client_path(upstream_path)))
            asked = hostile.count(upstream_path)
            committed = asked < 2 and upstream_path != "/loop.bin"
            self.require(not committed, f"broken upstream: {what}: asked only {asked} times for 2 requests")
            self.require(all(o != "200 whole" for o in outcomes), f"broken upstream: {what}: served {outcomes}")
            self.row("3. broken upstream", what, None, client_saw=", ".join(sorted(set(outcomes))),
                     upstream_asked=asked, committed=committed)
        summary = load.stop()
        peak = node.status("VmHWM")
        self.row("3. broken upstream", "other clients meanwhile", summary,
                 rss_mib=f"{rss_before >> 10} → {node.status('VmRSS') >> 10} (peak {peak >> 10})")
        self.require(peak < rss_before + 512 * 1024, f"broken upstream: RSS peaked at {peak >> 10} MiB")
        node.stop()
        hostile.stop()

    # --- 4 -------------------------------------------------------------------

    def abusive_clients(self) -> None:
        plan = self.plan
        self.say("4. abusive clients")
        limit = plan.idle_connections // 5
        extra = f"limits:\n  header_timeout: 3s\n  max_connections: {limit}\n"
        node = self.node("abuse", extra, tls=abuse.self_signed(self.work))
        hits = (("hit", 100),)
        baseline = Load(node.port, self.corpus, clients=2, mix=hits).start()
        time.sleep(plan.phase_seconds)
        base = baseline.stop()
        self.row("4. abusive clients", "none (baseline)", base, p99_ms=baseline.tally.p99_ms())
        others = Load(node.port, self.corpus, clients=2, mix=hits).start()

        answered, other = abuse.slowloris(node.port, plan.slowloris, seconds=8)
        self.require(answered == plan.slowloris, f"slowloris: {answered} of {plan.slowloris} got 408")
        self.row("4. abusive clients", f"slowloris: {plan.slowloris} heads dripped a line a second",
                 None, refused=f"{answered} × 408 (header_timeout 3 s)")

        socks, refused = abuse.idle_flood(node.port, plan.idle_connections)
        time.sleep(1)
        status, body, _ = request(node.port, "GET", f"/api/v1/remote/gen/{self.corpus.small[0]}")
        closed = abuse.closed_by_server(socks)
        open_now = node.metric("artifactd_client_connections")
        for sock in socks:
            sock.close()
        self.require(status == 200, f"idle flood: a new client got {status}")
        self.require(open_now <= limit + 16, f"idle flood: {open_now} connections open, limit {limit}")
        self.row("4. abusive clients", f"{plan.idle_connections} idle connections", None,
                 refused=f"{closed} idle closed to make room, {refused} not opened",
                 new_client=status, open_connections=int(open_now))

        for name, data in abuse.SMUGGLING.items():
            statuses, closed_after = abuse.raw_exchange(node.port, data, timeout=5)
            smuggled = sum(self.origin.fetches(f"/smuggled/{i}") for i in (1, 2, 3))
            refused = bool(statuses) and statuses[0] in (400, 414, 431, 501)
            answered_once = len(statuses) == 1 and closed_after
            self.require(smuggled == 0, f"smuggling: {name}: a smuggled request reached the upstream")
            self.require(refused or answered_once, f"smuggling: {name}: answered {statuses}, closed {closed_after}")
            self.row("4. abusive clients", f"smuggling: {name}", None,
                     refused=f"{statuses} then {'closed' if closed_after else 'open'}", reached_upstream=smuggled)

        mismatch = abuse.h2_length_mismatch(node.tls_port, self.origin.fetches)
        refused = mismatch["outcome"].startswith(("stream reset", "GOAWAY", "status 4"))
        self.require(refused and not mismatch["reached_upstream"], f"h2 content-length mismatch: {mismatch}")
        self.row("4. abusive clients", "smuggling: h2 content-length 10, DATA 20 bytes", None,
                 refused=mismatch["outcome"], reached_upstream=mismatch["reached_upstream"])

        reset = abuse.rapid_reset(node.tls_port, plan.rapid_reset_streams, seconds=10)
        calmed = node.log_lines("remotely-reset pending-accept streams reached limit")
        self.require(reset["goaway"] or reset["closed"], f"rapid reset: {reset['streams']} streams, not stopped")
        after_status, _, _ = request(node.port, "GET", f"/api/v1/remote/gen/{self.corpus.small[1]}")
        self.require(after_status == 200, "rapid reset: the node stopped serving")
        self.row("4. abusive clients", "HTTP/2 rapid reset", None,
                 refused=f"connection closed after {reset['streams']} streams sent "
                         f"(GOAWAY seen: {reset['goaway']}; the server logged its limit of 20 "
                         f"reset streams pending accept {calmed} time(s))", new_client=after_status)
        summary = others.stop()
        p99 = others.tally.p99_ms()
        self.require(summary["failed"] == 0, f"abusive clients: other clients failed: {summary['failed_by']}")
        self.row("4. abusive clients", "other clients during all of it", summary, p99_ms=p99)
        node.stop()

    # --- 5 -------------------------------------------------------------------

    def hostile_config(self) -> None:
        self.say("5. hostile configuration")
        bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
        bomb_text = "\n".join(bomb) + "\n"
        remote = 'remotes:\n  gen:\n    base_url: "http://127.0.0.1:9"\n'
        cases = {
            "YAML alias bomb (10^10 nodes)": bomb_text + remote + "    bomb: *a9\n",
            "100,000 patterns": remote + "    immutable_patterns:\n" +
                                "".join(f"      - '^pkg{i}/'\n" for i in range(100_000)),
            "100,000 nested [": remote + "    nested: " + "[" * 100_000 + "1" + "]" * 100_000 + "\n",
            "a pattern that backtracks": remote + "    immutable_patterns: ['^(?!x)(a|aa)+$']\n",
        }
        for what, text in cases.items():
            work = self.work / "config"
            work.mkdir(exist_ok=True)
            (work / "remotes.yaml").write_text(text)
            (work / "artifactd.yaml").write_text("remotes: remotes.yaml\nstorage: fs://store\n")
            started = time.monotonic()
            # Under a memory limit: a start that would balloon fails instead
            # (a child's peak RSS cannot be read: it inherits the forking
            # Python's at exec).
            proc = subprocess.run([str(self.binary), "--config", str(work / "artifactd.yaml"), "check-config"],
                                  capture_output=True, text=True, timeout=60, preexec_fn=memory_limit)
            stdout, stderr = proc.stdout, proc.stderr
            took = time.monotonic() - started
            first = (stderr or stdout).strip().splitlines()[:1]
            accepted = proc.returncode == 0
            if what == "a pattern that backtracks":
                self.require(accepted and took < 1, f"config: {what}: {took:.1f} s")
                outcome = "accepted; a match gives up after 10,000 steps"
            else:
                self.require(not accepted and took < 1, f"config: {what}: accepted={accepted} in {took:.1f} s")
                message = first[0].split("remotes.yaml", 1)[-1] if first else ""
                outcome = f"refused: remotes.yaml{message[:170]}"
            self.row("5. hostile config", what, None, outcome=outcome, seconds=round(took, 2),
                     memory_limit=f"{CONFIG_MEMORY >> 20} MiB (RLIMIT_DATA)")


# The memory a check-config of a hostile file runs within; the shipped
# configuration needs a fraction of it.
CONFIG_MEMORY = 128 * MiB


def memory_limit() -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_DATA, (CONFIG_MEMORY, CONFIG_MEMORY))


def staged_bytes(staging: Path, pid: int) -> int:
    """Bytes of staging files named by process `pid` (`{pid}.{uuid}.part`)."""
    total = 0
    for path in staging.rglob(f"{pid}.*"):
        try:
            total += path.stat().st_size
        except OSError:
            pass
    return total


def outcome_of(port: int, path: str) -> str:
    """What a client got: a status and whether the body was whole, or how
    the transfer failed."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        try:
            resp.read()
            return f"{resp.status} whole"
        except (http.client.IncompleteRead, OSError):
            return f"{resp.status} cut"
    except (OSError, http.client.HTTPException) as e:
        return f"no answer ({type(e).__name__})"
    finally:
        conn.close()


def verify(node: Node) -> dict:
    """Runs `POST /api/v1/cache/verify` and waits for the job."""
    status, body, _ = request(node.port, "POST", "/api/v1/cache/verify")
    if status != 202 and status != 200:
        return {"error": f"{status} {body[:200]!r}"}
    job = json.loads(body)
    url = job.get("status_url") or f"/api/v1/jobs/{job['id']}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        _, body, _ = request(node.port, "GET", url)
        state = json.loads(body)
        if state.get("state") in ("done", "failed"):
            return state
        time.sleep(0.5)
    return {"error": "verify did not finish"}


def render(rows: list[dict], facts: dict, quick: bool, problems: list[str], elapsed: float,
           rerun: list[int] | None) -> str:
    took = f"Run took {elapsed:.0f} s"
    if rerun:
        took = f"Scenario(s) {', '.join(map(str, rerun))} rerun in {elapsed:.0f} s, the others from the run before"
    lines = [
        "# artifactd under chaos" + (" (QUICK run: smoke sizes)" if quick else ""),
        "",
        f"Machine: {facts['cores']} cores, kernel {facts['kernel']}; {facts['artifactd']}; {facts['date']}. "
        f"{took} (`make chaos`). Each scenario runs a bounded mixed load (hits, misses, "
        "large fills whole and in ranges, npm documents); every body is checked against the origin's bytes "
        "(documents by their versions and links). **Wrong** counts bodies that arrived complete with other "
        "bytes than the origin's: it must be 0. **Failed** counts requests that got an error or a cut "
        "transfer (a node being restarted refuses connections).",
        "",
        "| scenario | fault | requests | failed | wrong | what happened |",
        "|---|---|---:|---:|---:|---|",
    ]
    skip = {"scenario", "fault", "requests", "failed", "wrong", "wrong_examples", "failed_by"}
    for row in rows:
        facts_text = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in row.items() if k not in skip)
        if row.get("failed_by"):
            facts_text += f"; failures: {row['failed_by']}"
        lines.append(f"| {row['scenario']} | {row['fault']} | {row.get('requests', '')} | "
                     f"{row.get('failed', '')} | {row.get('wrong', '')} | {facts_text} |")
    lines += ["", "Problems: " + ("none." if not problems else "")]
    lines += [f"- {p}" for p in problems]
    return "\n".join(lines) + "\n"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    options = {
        "--quick": {"action": "store_true", "help": "short bounded pass (make test)"},
        "--binary": {"type": Path, "default": ROOT / "target/release/artifactd"},
        "--out": {"type": Path, "help": "results (default: benches/results; target/chaos-quick with --quick)"},
        "--only": {"type": int, "action": "append", "help": "run only these scenarios (1-5)"},
    }
    for flag, option in options.items():
        parser.add_argument(flag, **option)
    return parser.parse_args()


def main() -> int:
    args = arguments()
    if os.geteuid() != 0:
        raise SystemExit("chaos needs root: it mounts a tmpfs for the full disk")
    plan = Plan.quick() if args.quick else Plan.full()
    out = args.out or (ROOT / "target/chaos-quick" if args.quick else HERE / "results")
    work = Path(tempfile.mkdtemp(prefix="artifactd-chaos-"))
    started = time.monotonic()
    chaos = Chaos(plan, args.binary.resolve(), work)
    scenarios = [chaos.kill9, chaos.disk_full, chaos.broken_upstreams, chaos.abusive_clients, chaos.hostile_config]
    try:
        for number, scenario in enumerate(scenarios, 1):
            if not args.only or number in args.only:
                scenario()
    finally:
        chaos.origin.stop()
        if os.environ.get("CHAOS_KEEP"):
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started
    rows = chaos.rows
    if args.only and (out / "chaos.json").exists():
        # A rerun of some scenarios keeps the others' rows from the last run.
        kept = json.loads((out / "chaos.json").read_text())["rows"]
        rows = [r for r in kept if int(r["scenario"].split(".")[0]) not in args.only] + rows
        rows.sort(key=lambda r: int(r["scenario"].split(".")[0]))
    version = subprocess.run([str(args.binary), "--version"], capture_output=True, text=True).stdout.strip()
    facts = {"cores": os.cpu_count(), "kernel": platform.release(), "artifactd": version,
             "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    out.mkdir(parents=True, exist_ok=True)
    (out / "chaos.json").write_text(json.dumps({"quick": args.quick, "machine": facts, "rows": rows,
                                                "problems": chaos.problems}, indent=2) + "\n")
    (out / "chaos.md").write_text(render(rows, facts, args.quick, chaos.problems, elapsed, args.only))
    print(f"results: {out / 'chaos.md'} ({elapsed:.0f} s)")
    if chaos.problems:
        print("PROBLEMS:\n" + "\n".join(f"  {p}" for p in chaos.problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
