#!/usr/bin/env python3
"""Soak: artifactd under the chaos harness's mixed load (hits, misses,
large fills whole and in ranges, npm documents; every body checked) for a
bounded time, sampling its resident memory, open descriptors and threads.
Flat means within 10 % from the first sample after warm-up to the last.

Writes benches/results/soak.{md,json}; exits non-zero on a wrong byte or
growth past 10 %. `make soak` runs 30 minutes; --minutes shortens it.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_load import MiB, Corpus, Load, Node, Origin, free_port, remotes  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WARM_UP = 60  # seconds before the first sample counts: caches fill, pools grow


FIELDS = (("rss_kib", "RSS (MiB)", 1024), ("descriptors", "open descriptors", 1),
          ("threads", "threads (tasks run on these)", 1))


def render(doc: dict) -> tuple[str, bool]:
    """The table of a run's samples, and whether they stayed flat."""
    facts, summary, samples = doc["machine"], doc["load"], doc["samples"]
    minutes = facts["minutes"]
    counted = [s for s in samples if s["at_s"] >= min(WARM_UP, minutes * 60 / 4)] or samples
    first, last = counted[0], counted[-1]
    growth = {k: round((last[k] - first[k]) / max(first[k], 1) * 100, 1) for k, _, _ in FIELDS}
    flat = all(g <= 10 for g in growth.values())
    lines = [
        "# artifactd soak",
        "",
        f"Machine: {facts['cores']} cores, kernel {facts['kernel']}; {facts['artifactd']}; {facts['date']}. "
        f"{minutes:g} minutes of the chaos harness's mixed load (4 clients: hits, misses, large fills "
        f"whole and in ranges, npm documents; every body checked), with `cache.max_size` below the corpus so "
        f"eviction runs throughout, sampled every 10 s. Start is the first sample after {WARM_UP} s of warm-up; "
        "lowest and highest are over every sample from there (the hot tier and the fills in flight "
        "come and go).",
        "",
        f"Requests: {summary['requests']}, failed: {summary['failed']}, wrong: {summary['wrong']}.",
        "",
        "| | start | end | growth | lowest | highest |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, name, scale in FIELDS:
        values = [s[key] / scale for s in counted]
        lines.append(f"| {name} | {first[key] / scale:.0f} | {last[key] / scale:.0f} | {growth[key]} % | "
                     f"{min(values):.0f} | {max(values):.0f} |")
    lines += ["", f"Flat within 10 %: {'yes' if flat else 'NO'}."]
    return "\n".join(lines) + "\n", flat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--binary", type=Path, default=ROOT / "target/release/artifactd")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--render", action="store_true", help="only render soak.md from soak.json")
    args = parser.parse_args()
    if args.render:
        text, _ = render(json.loads((args.out / "soak.json").read_text()))
        (args.out / "soak.md").write_text(text)
        return 0
    work = Path(tempfile.mkdtemp(prefix="artifactd-soak-"))
    origin_port = free_port()
    corpus = Corpus(work / "files", f"http://127.0.0.1:{origin_port}", small=4_000, medium=0, large=4,
                    large_bytes=16 * MiB, docs=50)
    origin = Origin(work, corpus, origin_port)
    # A cache smaller than the corpus: eviction runs throughout.
    extra = "cache:\n  max_size: 128MiB\n  resumable_fill_min: 4MiB\n  parallel_fill_min: 8MiB\n"
    node = Node(args.binary.resolve(), work / "node", remotes(origin.port), extra)
    samples = []
    started = time.monotonic()
    load = Load(node.port, corpus, clients=4, max_requests=100_000_000, timeout=60).start()
    # Misses are never exhausted: once every file was asked, "miss" falls
    # back to evicted ones, which are misses again.
    load.misses = corpus.small[50:] * 200
    try:
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(min(10, args.minutes * 6))
            samples.append({"at_s": round(time.monotonic() - started), "rss_kib": node.status("VmRSS"),
                            "descriptors": node.descriptors(), "threads": node.status("Threads"),
                            "requests": load.tally.sent})
    finally:
        summary = load.stop()
        node.stop()
        origin.stop()
        shutil.rmtree(work, ignore_errors=True)
    version = subprocess.run([str(args.binary), "--version"], capture_output=True, text=True).stdout.strip()
    facts = {"cores": os.cpu_count(), "kernel": platform.release(), "artifactd": version,
             "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "minutes": args.minutes}
    doc = {"machine": facts, "load": summary, "samples": samples}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(doc, indent=2) + "\n")
    text, flat = render(doc)
    (args.out / "soak.md").write_text(text)
    print(f"results: {args.out / 'soak.md'}")
    return 0 if flat and summary["wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
