"""The chaos harness's parts: a corpus of distinct files served by nginx,
artifactd nodes that can be killed and restarted on the same store, and a
bounded mixed load that checks every byte it gets against the corpus."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from procs import CountingNginx, free_port, stop_process, wait_port

HERE = Path(__file__).resolve().parent
MiB = 1 << 20


class Corpus:
    """Distinct files (so a body served for the wrong key is caught), their
    digests, and npm package documents naming tarballs."""

    def __init__(self, root: Path, origin: str, small: int, medium: int, large: int, large_bytes: int,
                 docs: int):
        self.root = root
        self.digest: dict[str, str] = {}
        self.size: dict[str, int] = {}
        rng = random.Random(28)
        for i in range(small):
            self._write(f"small/{i}.bin", rng.randbytes(rng.randint(1, 64) * 1024))
        for i in range(medium):
            self._write(f"medium/{i}.bin", rng.randbytes(2 * MiB))
        for i in range(large):
            self._write(f"large/{i}.bin", rng.randbytes(large_bytes))
        self.versions: dict[str, list[str]] = {}
        for i in range(docs):
            name = f"pkg{i}"
            versions = [f"1.{v}.0" for v in range(rng.randint(3, 30))]
            doc = {"name": name, "versions": {
                v: {"name": name, "version": v,
                    "dist": {"tarball": f"{origin}/npm/{name}/-/{name}-{v}.tgz"}}
                for v in versions}}
            self._write(f"npm/{name}", json.dumps(doc).encode())
            self.versions[name] = versions
        self.small = [f"small/{i}.bin" for i in range(small)]
        self.medium = [f"medium/{i}.bin" for i in range(medium)]
        self.large = [f"large/{i}.bin" for i in range(large)]

    def _write(self, path: str, body: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        self.digest[path] = hashlib.sha256(body).hexdigest()
        self.size[path] = len(body)

    def slice_digest(self, path: str, start: int, end: int) -> str:
        with open(self.root / path, "rb") as f:
            f.seek(start)
            return hashlib.sha256(f.read(end - start + 1)).hexdigest()


class Origin(CountingNginx):
    """nginx serving the corpus, logging every request."""

    def __init__(self, workdir: Path, corpus: Corpus, port: int):
        self.port = port
        conf = (HERE / "nginx-chaos-origin.conf").read_text()
        for key, value in {"dir": workdir, "files": corpus.root, "origin_port": self.port}.items():
            conf = conf.replace("{{" + key + "}}", str(value))
        (workdir / "nginx-chaos-origin.conf").write_text(conf)
        self.launch(workdir, workdir / "nginx-chaos-origin.conf")


class Node:
    """One artifactd on a work directory, killable and restartable on the
    same store and port."""

    def __init__(self, binary: Path, workdir: Path, remotes: dict, extra: str = "",
                 tls: tuple[Path, Path] | None = None):
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "remotes.yaml").write_text(json.dumps(remotes))  # JSON is YAML
        listen = f"listen:\n  - 127.0.0.1:{self.port}\n"
        if tls:
            listen += f"  - address: 127.0.0.1:{self.tls_port}\n    tls: {{cert: {tls[0]}, key: {tls[1]}}}\n"
        (workdir / "artifactd.yaml").write_text(
            f"{listen}threads: 2\nremotes: remotes.yaml\nstorage: fs://store\n{extra}")
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        log = open(self.workdir / "artifactd.log", "ab")
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen([str(self.binary), "--config", str(self.workdir / "artifactd.yaml"), "serve"],
                                     stdout=log, stderr=log, env=env)
        wait_port(self.port, self.proc, "artifactd")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def status(self, field: str) -> int:
        """A /proc status field in KiB (VmRSS, VmHWM) or count (Threads)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def descriptors(self) -> int:
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The sum of a metric's samples matching `labels`, from /metrics."""
        status, body, _ = request(self.port, "GET", "/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            if not line.startswith(name):
                continue
            series, _, value = line.rpartition(" ")
            if series.split("{", 1)[0] != name:
                continue
            if all(f'{k}="{v}"' in series for k, v in (labels or {}).items()):
                total += float(value)
        return total

    def log_lines(self, text: str) -> int:
        return (self.workdir / "artifactd.log").read_text(errors="replace").count(text)


def request(port: int, method: str, path: str, headers: dict | None = None,
            timeout: float = 30) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, body, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


class Tally:
    """What a load saw: requests, failures by reason, wrong bodies, and
    latencies of the successful ones."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.failed: Counter[str] = Counter()
        self.wrong: list[str] = []
        self.latencies: list[float] = []

    def add(self, outcome: str, seconds: float) -> None:
        with self.lock:
            self.sent += 1
            if outcome == "ok":
                self.latencies.append(seconds)
            elif outcome.startswith("WRONG"):
                self.wrong.append(outcome)
            else:
                self.failed[outcome] += 1

    def p99_ms(self) -> float | None:
        with self.lock:
            if not self.latencies:
                return None
            ordered = sorted(self.latencies)
            return round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1)

    def summary(self) -> dict:
        with self.lock:
            return {"requests": self.sent, "failed": sum(self.failed.values()),
                    "failed_by": dict(self.failed.most_common(6)), "wrong": len(self.wrong),
                    "wrong_examples": self.wrong[:5]}


class Load:
    """`clients` threads sending a mix of requests until stopped (or
    `max_requests` each), checking every body against the corpus:
    hot small files (hits), files never asked before (misses), large files
    whole and in ranges (large fills), npm documents (rewritten, checked
    by their versions and links)."""

    MIX = (("hit", 55), ("miss", 20), ("large", 10), ("doc", 15))

    def __init__(self, port: int, corpus: Corpus, clients: int = 4, max_requests: int = 100_000,
                 mix: tuple = MIX, miss_pool: list[str] | None = None, timeout: float = 60):
        self.port = port
        self.corpus = corpus
        self.tally = Tally()
        self.stop_event = threading.Event()
        self.mix = mix
        self.timeout = timeout
        self.max_requests = max_requests
        self.hot = corpus.small[:50]
        self.misses = list(miss_pool if miss_pool is not None else corpus.small[50:])
        self.miss_lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(seed,), daemon=True) for seed in range(clients)]

    def start(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> dict:
        self.stop_event.set()
        for t in self.threads:
            t.join(self.timeout + 10)
        return self.tally.summary()

    def _next_miss(self, rng: random.Random) -> str:
        with self.miss_lock:
            if self.misses:
                return self.misses.pop()
        return rng.choice(self.hot)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        kinds = [k for k, w in self.mix for _ in range(w)]
        conn: http.client.HTTPConnection | None = None
        for _ in range(self.max_requests):
            if self.stop_event.is_set():
                break
            asked = self._choose(rng.choice(kinds), rng)
            started = time.monotonic()
            # As HTTP clients do, a request on a kept-alive connection the
            # server closed before answering is sent again on a new one.
            for attempt in (1, 2):
                reused = conn is not None
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                    outcome = self._send(conn, asked)
                    break
                except (OSError, http.client.HTTPException) as e:
                    outcome = f"error:{type(e).__name__}"
                    if conn is not None:
                        conn.close()
                    conn = None
                    unanswered = isinstance(e, (http.client.RemoteDisconnected, ConnectionResetError,
                                                BrokenPipeError))
                    if not (reused and unanswered and attempt == 1):
                        time.sleep(0.05)  # a node being restarted: do not spin
                        break
            self.tally.add(outcome, time.monotonic() - started)
        if conn is not None:
            conn.close()

    def _choose(self, kind: str, rng: random.Random) -> tuple[str, str, str, dict]:
        """What to ask: (kind, corpus path, URL path, headers)."""
        if kind == "doc":
            name = rng.choice(list(self.corpus.versions))
            return kind, f"npm/{name}", f"/api/v1/remote/npm/{name}", {}
        path = {"hit": lambda: rng.choice(self.hot), "miss": lambda: self._next_miss(rng),
                "large": lambda: rng.choice(self.corpus.large or self.hot)}[kind]()
        headers = {}
        if kind == "large" and rng.random() < 0.5:
            size = self.corpus.size[path]
            start = rng.randrange(size)
            end = min(size - 1, start + rng.randrange(4 * MiB))
            headers["Range"] = f"bytes={start}-{end}"
        return kind, path, f"/api/v1/remote/gen/{path}", headers

    def _send(self, conn: http.client.HTTPConnection, asked: tuple[str, str, str, dict]) -> str:
        kind, path, url, headers = asked
        conn.request("GET", url, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status not in (200, 206):
            return f"status:{resp.status}"
        if kind == "doc":
            return self._check_doc(path, body)
        if resp.status == 206:
            start, end = (int(x) for x in headers["Range"][6:].split("-"))
            expected = self.corpus.slice_digest(path, start, end)
        else:
            expected = self.corpus.digest[path]
        if hashlib.sha256(body).hexdigest() != expected:
            return f"WRONG {path} {headers.get('Range', '')} ({len(body)} bytes)"
        return "ok"

    def _check_doc(self, path: str, body: bytes) -> str:
        name = path.split("/", 1)[1]
        try:
            doc = json.loads(body)
        except ValueError:
            return f"WRONG {path}: not JSON ({len(body)} bytes)"
        if sorted(doc.get("versions", {})) != sorted(self.corpus.versions[name]):
            return f"WRONG {path}: versions differ"
        for version in doc["versions"].values():
            tarball = version["dist"]["tarball"]
            if f"127.0.0.1:{self.port}" not in tarball:
                return f"WRONG {path}: link not rewritten: {tarball}"
        return "ok"


def remotes(origin_port: int) -> dict:
    base = f"http://127.0.0.1:{origin_port}"
    return {"remotes": {
        "gen": {"base_url": base, "package": "generic"},
        "npm": {"base_url": f"{base}/npm", "package": "npm"},
    }}
