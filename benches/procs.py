"""Process helpers shared by the benchmark scripts."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port} within {timeout}s")


def stop_process(proc: subprocess.Popen) -> None:
    """Terminates `proc`, killing it if it has not exited within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class CountingNginx:
    """An nginx origin from a rendered config whose access log (one
    `$request_uri ...` line a request) counts the fetches of each URI."""

    port: int

    def launch(self, workdir: Path, conf: Path) -> None:
        self.log = workdir / "origin-access.log"
        self.proc = subprocess.Popen(["nginx", "-p", str(workdir), "-c", str(conf), "-e",
                                      str(workdir / "nginx-origin-error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, "origin")

    def fetches(self, uri: str) -> int:
        time.sleep(0.3)  # the access log is flushed every 100 ms
        if not self.log.exists():
            return 0
        return sum(1 for line in self.log.read_text().splitlines() if line.split(" ", 1)[0] == uri)

    def stop(self) -> None:
        stop_process(self.proc)
